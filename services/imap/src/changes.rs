//! Mailbox changes across imap processes (issue 24). On PostgreSQL several imap processes share
//! one store, and a change any of them makes (an APPEND, a delivery from the queue, flags, an
//! expunge, a move) must wake the IDLE sessions of all of them, not only its own.
//!
//! A process announces its own changes on its in-process hub (`Hub` in `crate::service`) and,
//! right after the store has committed them, publishes them with `NOTIFY` on [`CHANNEL`]
//! (`Publisher`). Every process keeps one dedicated `LISTEN` connection (sqlx's
//! `PgListener`, [`Follower`]) and announces what it hears from the others on its own hub, so
//! IDLE and the updates after NOOP behave as if the writer were in the same process.
//!
//! The payload names the publishing process (a random token, so a process skips its own
//! notices instead of waking its sessions twice), the account id and the mailbox ids: values
//! the store keeps in clear in its `mailboxes` table, nothing about the mail.
//!
//! Why after the commit rather than inside the store's transaction: the store stays one
//! implementation for both backends, and every change announced in one process is announced in
//! all (the same call does both). PostgreSQL delivers a NOTIFY sent inside a transaction at the
//! commit anyway; what differs is a process that dies between its commit and its NOTIFY, whose
//! last change the other processes' sessions then see at their next command or wake-up.
//!
//! Notices are not kept: those sent while the listening connection is down are lost. So after
//! every (re)connection the follower wakes each watched account once (a session compares its
//! mailbox's version and reports only what changed), and when nothing has been heard for
//! `PING_INTERVAL` (30 s) it pings, because a connection cut by the network without a reset
//! gives no error until something is written to it.
//!
//! On SQLite one process owns the file and nothing here runs.

use std::time::Duration;

use onionpost_runtime::Database;
use onionpost_runtime::backoff::Backoff;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::crypto::os_random;
use crate::mailstore::MailboxId;
use crate::service::ImapService;

/// The PostgreSQL notification channel of mailbox changes.
pub const CHANNEL: &str = "onionpost_imap_changes";
/// The `application_name` of the listening connection, as `pg_stat_activity` shows it.
pub const LISTENER_NAME: &str = "onionpost-imap-changes";
/// Silence on the listening connection after which it is pinged.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may take before the connection is given up and opened again.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of the random token that names a process in its notices.
const ORIGIN_BYTES: usize = 8;

/// One change as it travels between processes: `<origin> <account id> <mailbox id>,…`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Notice {
    origin: String,
    account_id: String,
    mailboxes: Vec<MailboxId>,
}

impl Notice {
    fn payload(&self) -> String {
        let mailboxes: Vec<String> = self.mailboxes.iter().map(i64::to_string).collect();
        format!(
            "{} {} {}",
            self.origin,
            self.account_id,
            mailboxes.join(",")
        )
    }

    /// `None` for a payload this version does not write.
    fn parse(payload: &str) -> Option<Notice> {
        let mut fields = payload.split(' ');
        let (Some(origin), Some(account_id), Some(mailboxes), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        let mailboxes = mailboxes
            .split(',')
            .map(|id| id.parse().ok())
            .collect::<Option<Vec<MailboxId>>>()?;
        let valid = !origin.is_empty() && !account_id.is_empty();
        valid.then(|| Notice {
            origin: origin.to_owned(),
            account_id: account_id.to_owned(),
            mailboxes,
        })
    }
}

/// Publishes this process's mailbox changes to the other imap processes on the same
/// PostgreSQL database.
#[derive(Debug, Clone)]
pub(crate) struct Publisher {
    pool: PgPool,
    /// Names this process in its notices, so its own follower skips them.
    origin: String,
}

impl Publisher {
    /// A publisher on PostgreSQL; `None` on SQLite, which one process owns.
    pub(crate) fn for_database(database: &Database) -> Option<Publisher> {
        let Database::Postgres(pool) = database else {
            return None;
        };
        let mut origin = [0u8; ORIGIN_BYTES];
        os_random(&mut origin);
        Some(Publisher {
            pool: pool.clone(),
            origin: hex::encode(origin),
        })
    }

    /// Sends one notice for `mailboxes` of `account_id`. A failure is logged, not returned: the
    /// change itself is committed, and the other processes' sessions see it at their next
    /// command.
    pub(crate) async fn publish(&self, account_id: &str, mailboxes: &[MailboxId]) {
        if mailboxes.is_empty() {
            return;
        }
        let notice = Notice {
            origin: self.origin.clone(),
            account_id: account_id.to_owned(),
            mailboxes: mailboxes.to_vec(),
        };
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(notice.payload())
            .execute(&self.pool)
            .await;
        if let Err(error) = sent {
            tracing::warn!(%error, "a mailbox change was not published to the other imap processes");
        }
    }
}

/// Listens for the other imap processes' changes and announces them on this process's hub.
pub struct Follower {
    service: ImapService,
    /// The store's connection options: the listening connection goes to the same database.
    options: PgConnectOptions,
    origin: String,
}

/// Why following stopped.
enum Followed {
    Shutdown,
    Lost,
}

impl ImapService {
    /// The follower of other imap processes' changes, to be run for as long as the service
    /// serves IMAP; `None` on SQLite.
    pub fn change_follower(&self) -> Option<Follower> {
        let publisher = self.inner.publisher.as_ref()?;
        Some(Follower {
            service: self.clone(),
            options: (*publisher.pool.connect_options()).clone(),
            origin: publisher.origin.clone(),
        })
    }
}

impl Follower {
    /// Listens until `shutdown`: connects, wakes every watched account (what changed while it
    /// was not listening), then announces each notice it hears; on a lost connection it starts
    /// over after a back-off with jitter.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        loop {
            let connected = tokio::select! {
                () = shutdown.cancelled() => return,
                connected = self.connect() => connected,
            };
            match connected {
                Ok(mut listener) => {
                    tracing::info!("listening for other imap processes' mailbox changes");
                    backoff.reset();
                    self.wake_watched().await;
                    match self.follow(&mut listener, &shutdown).await {
                        Followed::Shutdown => return,
                        Followed::Lost => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for other imap processes' changes");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff.pause()) => {}
            }
        }
    }

    /// A listening connection of its own pool: a connection given up after a failed ping may
    /// take long to close, and must not hold the slot of the next one.
    async fn connect(&self) -> Result<PgListener, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(PING_TIMEOUT)
            .connect_lazy_with(self.options.clone().application_name(LISTENER_NAME));
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(listener)
    }

    async fn follow(&self, listener: &mut PgListener, shutdown: &CancellationToken) -> Followed {
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return Followed::Shutdown,
                received = tokio::time::timeout(PING_INTERVAL, listener.try_recv()) => received,
            };
            match received {
                Ok(Ok(Some(notification))) => self.heard(notification.payload()),
                // The connection was lost and sqlx has opened another, listening again; what
                // was published in between is lost.
                Ok(Ok(None)) => {
                    tracing::info!("listening again for other imap processes' mailbox changes");
                    self.wake_watched().await;
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "lost the listener of other imap processes' changes");
                    return Followed::Lost;
                }
                Err(_silence) => {
                    let ping = sqlx::query("SELECT 1").execute(&mut *listener);
                    match tokio::time::timeout(PING_TIMEOUT, ping).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => {
                            tracing::warn!(%error, "the listener of other imap processes' changes failed its ping");
                            return Followed::Lost;
                        }
                        Err(_late) => {
                            tracing::warn!(
                                "the listener of other imap processes' changes did not answer its ping"
                            );
                            return Followed::Lost;
                        }
                    }
                }
            }
        }
    }

    /// Announces another process's notice; this process's own were announced when made.
    fn heard(&self, payload: &str) {
        let Some(notice) = Notice::parse(payload) else {
            tracing::debug!("ignored an unreadable mailbox change notice");
            return;
        };
        if notice.origin == self.origin {
            return;
        }
        self.service
            .inner
            .hub
            .announce(&notice.account_id, &notice.mailboxes);
    }

    /// Announces every mailbox of every account someone watches in this process.
    async fn wake_watched(&self) {
        for account_id in self.service.inner.hub.watched_accounts() {
            match self.service.inner.store.mailboxes(&account_id).await {
                Ok(mailboxes) => {
                    let ids: Vec<MailboxId> = mailboxes.iter().map(|m| m.mailbox_id).collect();
                    self.service.inner.hub.announce(&account_id, &ids);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot list a watched account's mailboxes to wake it");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_reads_back_as_written() {
        let notice = Notice {
            origin: "0a1b2c3d4e5f6071".to_owned(),
            account_id: "acct_00112233445566778899aabb".to_owned(),
            mailboxes: vec![7, 12],
        };
        assert_eq!(
            notice.payload(),
            "0a1b2c3d4e5f6071 acct_00112233445566778899aabb 7,12"
        );
        assert_eq!(Notice::parse(&notice.payload()), Some(notice));
    }

    #[test]
    fn unreadable_notices_are_refused() {
        for payload in [
            "",
            "origin acct",
            "origin acct 1 extra",
            "origin acct x",
            "origin acct 1,,2",
            " acct 1",
            "origin  1",
        ] {
            assert_eq!(Notice::parse(payload), None, "{payload:?}");
        }
    }
}
