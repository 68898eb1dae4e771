//! The session state machine (RFC 3501 §3): what a session holds and which handler answers
//! each command.
//!
//! States: not authenticated → authenticated ⇄ selected → logout. The handlers live in
//! `op`, one file per command group, as methods on [`Session`]; this file only
//! routes a command to its handler by state. A handler answers with imap-types responses
//! ([`Out`]); the connection loop encodes and writes them. The session keeps the client's view
//! of the selected mailbox (UIDs in sequence order, their flags, the store version it last saw)
//! so that it can tell the client what other sessions changed with untagged EXISTS / EXPUNGE /
//! FETCH (RFC 3501 §7.3.1, §7.4.1, §7.4.2).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{Tag, Vec1};
use imap_next::imap_types::fetch::MessageDataItem;
use imap_next::imap_types::mailbox::Mailbox;
use imap_next::imap_types::response::{Data, Status};
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use imap_next::server::Error as ProtocolError;
use tokio::sync::broadcast;

use super::context::{
    AccountSlot, ConnectionInfo, Limits, ListenerScope, LoginWait, Security, Shared,
};
use super::fetch_items;
use super::reply::{
    After, Handled, Out, Reply, bad, bye, describe, explain_malformed, tag_of, text,
};
use crate::flags::{flag_fetch, same_flags};
use crate::mailstore::{Flag, LoggedIn, MailStoreError, MailboxId, MailboxSnapshot, MessageMeta};

/// The client's view of the selected mailbox.
pub(crate) struct Selected {
    pub(crate) id: MailboxId,
    pub(crate) name: String,
    pub(crate) read_only: bool,
    /// UIDs in sequence-number order, as the client was last told.
    pub(crate) uids: Vec<u32>,
    pub(crate) flags: Vec<Vec<Flag>>,
    pub(crate) metas: Vec<MessageMeta>,
    pub(crate) version: u64,
}

impl Selected {
    pub(crate) fn from_snapshot(name: String, read_only: bool, snapshot: &MailboxSnapshot) -> Self {
        Selected {
            id: snapshot.status.id,
            name,
            read_only,
            uids: snapshot.messages.iter().map(|m| m.uid).collect(),
            flags: snapshot.messages.iter().map(|m| m.flags.clone()).collect(),
            metas: snapshot.messages.clone(),
            version: snapshot.status.version,
        }
    }

    pub(crate) fn seq_of(&self, uid: u32) -> Option<u32> {
        self.uids
            .binary_search(&uid)
            .ok()
            .map(|index| index as u32 + 1)
    }
}

pub(crate) enum Auth {
    None,
    /// AUTHENTICATE PLAIN waiting for the client's response.
    Pending(Tag<'static>),
}

pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) info: ConnectionInfo,
    pub(crate) account: Option<LoggedIn>,
    pub(crate) slot: Option<AccountSlot>,
    pub(crate) selected: Option<Selected>,
    pub(crate) auth: Auth,
    pub(crate) idle_tag: Option<Tag<'static>>,
    pub(crate) logged_out: bool,
    /// A FETCH answered in slices (see [`Session::fetch_step`]).
    pub(crate) pending_fetch: Option<PendingFetch>,
    /// The selected mailbox was deleted or renamed by another session.
    pub(crate) selected_vanished: bool,
    /// Failed logins on this connection; the listener backs off per login and per peer
    /// ([`ListenerScope`]), and a connection that keeps guessing is closed as well.
    pub(crate) failed_logins: u32,
    /// The state this session shares with the other sessions of its listener.
    pub(crate) scope: ListenerScope,
    /// This connection's place among those waiting to log in; released at login.
    pub(crate) login_wait: Option<LoginWait>,
}

/// What is left of a FETCH being answered in slices.
pub(crate) struct PendingFetch {
    pub(crate) tag: Tag<'static>,
    pub(crate) plan: fetch_items::Plan,
    pub(crate) uids: Vec<u32>,
    pub(crate) next: usize,
    pub(crate) seen_now: HashMap<u32, Vec<Flag>>,
    pub(crate) uid: bool,
}

/// Failed logins after which a connection is closed.
const MAX_FAILED_LOGINS_PER_CONNECTION: u32 = 5;

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        scope: ListenerScope,
        info: ConnectionInfo,
        login_wait: Option<LoginWait>,
    ) -> Self {
        Session {
            shared,
            info,
            account: None,
            slot: None,
            selected: None,
            auth: Auth::None,
            idle_tag: None,
            logged_out: false,
            failed_logins: 0,
            pending_fetch: None,
            selected_vanished: false,
            scope,
            login_wait,
        }
    }

    /// Why the session must end now, once: too many failed logins, or the selected mailbox
    /// vanished. The connection answers with BYE and closes.
    pub(crate) fn take_close_reason(&mut self) -> Option<&'static str> {
        if self.logged_out {
            return None;
        }
        if self.failed_logins >= MAX_FAILED_LOGINS_PER_CONNECTION {
            self.logged_out = true;
            return Some("too many failed logins on this connection");
        }
        if self.selected_vanished {
            self.logged_out = true;
            return Some("selected mailbox was deleted or renamed by another session");
        }
        None
    }

    pub(crate) fn tls_started(&mut self) {
        self.info.security = Security::Tls;
        self.info.starttls = false;
    }

    pub(crate) fn watch(&self) -> Option<broadcast::Receiver<MailboxId>> {
        self.account
            .as_ref()
            .map(|account| self.shared.store.watch(&account.account_id))
    }

    pub(crate) fn is_idling(&self) -> bool {
        self.idle_tag.is_some()
    }

    pub(crate) fn is_selected(&self, id: MailboxId) -> bool {
        self.selected.as_ref().is_some_and(|s| s.id == id)
    }

    /// Whether a login has succeeded on this connection.
    pub(crate) fn is_authenticated(&self) -> bool {
        self.account.is_some()
    }

    pub(crate) async fn finish(&mut self) {
        self.selected = None;
        self.slot = None;
    }

    /// Answers what imap-next could not parse or accept. Returns the responses and whether to
    /// close the connection.
    pub(crate) fn protocol_error(
        &mut self,
        error: &ProtocolError,
        limits: &Limits,
    ) -> (Vec<Out>, bool) {
        match error {
            ProtocolError::LiteralTooLong { .. } => {
                // imap-next already answered the command with a tagged BAD [TOOBIG] before
                // the client sent the literal (RFC 3501 §7.5: a synchronizing literal is only
                // sent after the continuation request).
                (Vec::new(), false)
            }
            ProtocolError::CommandTooLong { .. } => {
                // The rest of the line (or a non-synchronizing literal, RFC 7888 §4) is still
                // on its way and cannot be told apart from commands: say why and close.
                let text = format!(
                    "line too long (limit {} octets per command line, {} per literal)",
                    limits.max_line, limits.max_message_size
                );
                (vec![Out::Status(bye(&text))], true)
            }
            ProtocolError::MalformedMessage { discarded_bytes }
            | ProtocolError::ExpectedCrlfGotLf { discarded_bytes } => {
                let bytes = discarded_bytes.declassify();
                let why = explain_malformed(bytes).unwrap_or_else(|| describe(error).to_owned());
                let status = match tag_of(bytes) {
                    Some(tag) => Status::bad(Some(tag), None, text(&why)),
                    None => Status::bad(None, None, text(&why)),
                }
                .expect("text is valid");
                (vec![Out::Status(status)], false)
            }
        }
    }

    pub(crate) async fn handle(&mut self, command: Command<'static>) -> Reply {
        if self.logged_out {
            return Reply::done(Vec::new());
        }
        let tag = command.tag.clone();
        let name = command.body.name();
        let may_report_expunges = command_allows_expunge(&command.body);
        let result = self.dispatch(tag.clone(), command.body).await;
        let (mut out, after) = match result {
            Ok((out, after)) => (out, after),
            Err(status) => (vec![Out::Status(status)], After::Continue),
        };
        // RFC 3501 §7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH (by sequence
        // number); other commands end with what other sessions changed. A FETCH still being
        // answered does that in its last slice.
        if self.pending_fetch.is_some() {
            return Reply { out, after };
        }
        if may_report_expunges && matches!(after, After::Continue) && self.selected.is_some() {
            let updates = self.resync_selected().await;
            // Untagged updates go before the tagged completion.
            let tagged = out.pop();
            out.extend(updates);
            out.extend(tagged);
        }
        tracing::debug!(command = name, "imap command handled");
        Reply { out, after }
    }

    async fn dispatch(
        &mut self,
        tag: Tag<'static>,
        body: CommandBody<'static>,
    ) -> Result<(Vec<Out>, After), Status<'static>> {
        // Commands valid in any state (RFC 3501 §6.1).
        match body {
            CommandBody::Capability => return Ok((self.capability(&tag), After::Continue)),
            CommandBody::Noop => return Ok((self.noop(&tag), After::Continue)),
            CommandBody::Logout => return Ok((self.logout(&tag), After::Close)),
            CommandBody::Id { .. } => return Ok((self.id(&tag), After::Continue)),
            _ => {}
        }
        if self.account.is_none() {
            return self.not_authenticated(tag, body).await;
        }
        let out = self.authenticated(tag, body).await;
        Ok((
            out.unwrap_or_else(|status| vec![Out::Status(status)]),
            After::Continue,
        ))
    }

    /// The not-authenticated state (RFC 3501 §6.2). AUTHENTICATE arrives through
    /// [`Session::authenticate`] instead, because imap-next drives its continuations.
    async fn not_authenticated(
        &mut self,
        tag: Tag<'static>,
        body: CommandBody<'static>,
    ) -> Result<(Vec<Out>, After), Status<'static>> {
        match body {
            CommandBody::StartTLS => self.starttls(&tag),
            CommandBody::Login { username, password } => {
                let username = string_of(username.as_ref());
                let password = string_of(password.declassify().as_ref());
                let status = self.login(&tag, &username, &password).await;
                Ok((vec![Out::Status(status)], After::Continue))
            }
            other => Err(bad(
                &tag,
                &format!("{} is not valid before login; log in first", other.name()),
            )),
        }
    }

    /// The authenticated state (RFC 3501 §6.3) and a few extensions that need no mailbox.
    async fn authenticated(&mut self, tag: Tag<'static>, body: CommandBody<'static>) -> Handled {
        match body {
            CommandBody::StartTLS
            | CommandBody::Login { .. }
            | CommandBody::Authenticate { .. } => Err(bad(&tag, "already authenticated")),
            CommandBody::Select { mailbox, .. } => self.select(&tag, mailbox, false).await,
            CommandBody::Examine { mailbox, .. } => self.select(&tag, mailbox, true).await,
            CommandBody::Create { mailbox } => self.create(&tag, mailbox).await,
            CommandBody::Delete { mailbox } => self.delete(&tag, mailbox).await,
            CommandBody::Rename { from, to } => self.rename(&tag, from, to).await,
            CommandBody::Subscribe { mailbox } => self.subscribe(&tag, mailbox, true).await,
            CommandBody::Unsubscribe { mailbox } => self.subscribe(&tag, mailbox, false).await,
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => self.list(&tag, reference, mailbox_wildcard, false).await,
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => self.list(&tag, reference, mailbox_wildcard, true).await,
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status(&tag, mailbox, &item_names).await,
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => self.append(&tag, mailbox, flags, date, message).await,
            CommandBody::Namespace => Ok(self.namespace(&tag)),
            CommandBody::Enable { capabilities } => Ok(self.enable(&tag, capabilities)),
            CommandBody::GetQuota { root } => self.get_quota(&tag, root).await,
            CommandBody::GetQuotaRoot { mailbox } => self.get_quota_root(&tag, mailbox).await,
            CommandBody::SetQuota { .. } => Err(self.set_quota(&tag)),
            CommandBody::Idle => Err(bad(&tag, "IDLE is handled by the connection")),
            other => self.selected_command(tag, other).await,
        }
    }

    /// The selected state (RFC 3501 §6.4), with UID EXPUNGE, MOVE and UNSELECT.
    async fn selected_command(&mut self, tag: Tag<'static>, body: CommandBody<'static>) -> Handled {
        if self.selected.is_none() {
            return Err(bad(
                &tag,
                &format!("{} needs a selected mailbox; SELECT one first", body.name()),
            ));
        }
        match body {
            CommandBody::Check => Ok(self.check(&tag)),
            CommandBody::Close => Ok(self.close(&tag).await),
            CommandBody::Unselect => Ok(self.unselect(&tag)),
            CommandBody::Expunge => self.expunge(&tag, None).await,
            CommandBody::ExpungeUid { sequence_set } => {
                let uids = self.resolve(&sequence_set, true);
                self.expunge(&tag, Some(uids)).await
            }
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => self.search(&tag, charset, criteria, uid).await,
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => {
                self.fetch(&tag, &sequence_set, macro_or_item_names, uid)
                    .await
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => {
                self.store(&tag, &sequence_set, kind, response, &flags, uid)
                    .await
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(&tag, &sequence_set, mailbox, uid, false).await,
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(&tag, &sequence_set, mailbox, uid, true).await,
            other => Err(bad(&tag, &format!("{} is not supported", other.name()))),
        }
    }

    pub(crate) fn account_id(&self) -> &str {
        self.account
            .as_ref()
            .map(|a| a.account_id.as_str())
            .unwrap_or_default()
    }

    /// Maps a sequence set to UIDs of the client's view. `*` is the last message (RFC 3501
    /// §9 seq-number); non-existent UIDs are ignored (§6.4.8).
    pub(crate) fn resolve(&self, set: &SequenceSet, uid: bool) -> Vec<u32> {
        let Some(selected) = self.selected.as_ref() else {
            return Vec::new();
        };
        resolve_set(set, uid, &selected.uids)
    }

    /// Drops UIDs from the view, announcing each with EXPUNGE (RFC 3501 §7.4.1: each response
    /// renumbers the following messages, so the numbers go highest first).
    pub(crate) fn remove_from_view(&mut self, removed: &[u32]) -> Vec<Out> {
        let Some(selected) = self.selected.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut indexes: Vec<usize> = removed
            .iter()
            .filter_map(|uid| selected.uids.binary_search(uid).ok())
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        for index in indexes.into_iter().rev() {
            selected.uids.remove(index);
            selected.flags.remove(index);
            selected.metas.remove(index);
            if let Some(seq) = NonZeroU32::new(index as u32 + 1) {
                out.push(Out::Data(Data::Expunge(seq)));
            }
        }
        out
    }

    /// Tells the client what changed in the selected mailbox since it was last told: EXPUNGE
    /// for vanished UIDs, EXISTS for new ones, FETCH FLAGS for changed flags. Skipped cheaply
    /// when the store's version did not move.
    pub(crate) async fn resync_selected(&mut self) -> Vec<Out> {
        let account = self.account_id().to_owned();
        let Some(selected) = self.selected.as_ref() else {
            return Vec::new();
        };
        match self
            .shared
            .store
            .mailbox_version(&account, selected.id)
            .await
        {
            Ok(version) if version == selected.version => return Vec::new(),
            Ok(_) => {}
            Err(MailStoreError::NoSuchMailbox) => {
                self.selected = None;
                self.selected_vanished = true;
                return Vec::new();
            }
            // A store hiccup: try again after the next command or wake-up.
            Err(_) => return Vec::new(),
        }
        let name = selected.name.clone();
        let snapshot = match self.shared.store.open_mailbox(&account, &name).await {
            Ok(snapshot) if snapshot.status.id == selected.id => snapshot,
            // Deleted or renamed underneath us: RFC 3501 leaves this to the server; like
            // Dovecot, the session ends (the client reconnects and sees the new state).
            _ => {
                self.selected = None;
                self.selected_vanished = true;
                return Vec::new();
            }
        };
        let present: std::collections::HashSet<u32> =
            snapshot.messages.iter().map(|m| m.uid).collect();
        let gone: Vec<u32> = selected
            .uids
            .iter()
            .copied()
            .filter(|uid| !present.contains(uid))
            .collect();
        let mut out = self.remove_from_view(&gone);
        let Some(selected) = self.selected.as_mut() else {
            return out;
        };
        let last = selected.uids.last().copied().unwrap_or(0);
        let count_before = selected.uids.len();
        let mut flag_updates = Vec::new();
        for meta in &snapshot.messages {
            if meta.uid > last {
                selected.uids.push(meta.uid);
                selected.flags.push(meta.flags.clone());
                selected.metas.push(meta.clone());
            } else if let Ok(index) = selected.uids.binary_search(&meta.uid)
                && !same_flags(&selected.flags[index], &meta.flags)
            {
                selected.flags[index] = meta.flags.clone();
                selected.metas[index].flags = meta.flags.clone();
                flag_updates.push((index, meta.uid, meta.flags.clone()));
            }
        }
        if selected.uids.len() > count_before {
            out.push(Out::Data(Data::Exists(selected.uids.len() as u32)));
        }
        for (index, uid, flags) in flag_updates {
            let items = vec![
                MessageDataItem::Flags(flag_fetch(&flags)),
                MessageDataItem::Uid(NonZeroU32::new(uid).expect("uid > 0")),
            ];
            if let Some(seq) = NonZeroU32::new(index as u32 + 1) {
                out.push(Out::Data(Data::Fetch {
                    seq,
                    items: Vec1::try_from(items).expect("non-empty"),
                }));
            }
        }
        selected.version = snapshot.status.version;
        out
    }
}

fn command_allows_expunge(body: &CommandBody<'_>) -> bool {
    match body {
        CommandBody::Fetch { uid, .. }
        | CommandBody::Store { uid, .. }
        | CommandBody::Search { uid, .. }
        | CommandBody::Copy { uid, .. } => *uid,
        _ => true,
    }
}

pub(crate) fn resolve_set(set: &SequenceSet, uid: bool, uids: &[u32]) -> Vec<u32> {
    if uids.is_empty() {
        return Vec::new();
    }
    let largest = if uid {
        *uids.last().expect("non-empty")
    } else {
        uids.len() as u32
    };
    let value = |v: &SeqOrUid| match v {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => largest,
    };
    let mut wanted: Vec<u32> = Vec::new();
    for sequence in set.0.as_ref() {
        let (low, high) = match sequence {
            Sequence::Single(v) => (value(v), value(v)),
            Sequence::Range(a, b) => {
                let (a, b) = (value(a), value(b));
                (a.min(b), a.max(b))
            }
        };
        if uid {
            let start = uids.partition_point(|u| *u < low);
            let end = uids.partition_point(|u| *u <= high);
            wanted.extend_from_slice(&uids[start..end]);
        } else {
            let high = high.min(uids.len() as u32);
            if low >= 1 && low <= high {
                wanted.extend_from_slice(&uids[low as usize - 1..high as usize]);
            }
        }
    }
    wanted.sort_unstable();
    wanted.dedup();
    wanted
}

pub(crate) fn mailbox_name(mailbox: &Mailbox<'_>) -> String {
    match mailbox {
        Mailbox::Inbox => "INBOX".to_owned(),
        Mailbox::Other(other) => string_of(other.inner().as_ref()),
    }
}

pub(crate) fn string_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
