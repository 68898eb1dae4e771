//! The session state machine (RFC 3501 §3) and one handler per command.
//!
//! States: not authenticated → authenticated ⇄ selected → logout. A handler answers with
//! imap-types responses ([`Out`]); the connection loop encodes and writes them. The session
//! keeps the client's view of the selected mailbox (UIDs in sequence order, their flags, the
//! store version it last saw) so that it can tell the client what other sessions changed with
//! untagged EXISTS / EXPUNGE / FETCH (RFC 3501 §7.3.1, §7.4.1, §7.4.2).

use std::borrow::Cow;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::Bytes;
use imap_next::imap_types::auth::AuthMechanism;
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{AString, Atom, IString, Tag, Vec1};
use imap_next::imap_types::datetime::DateTime as ImapDateTime;
use imap_next::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_next::imap_types::extensions::namespace::Namespace;
use imap_next::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_next::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_next::imap_types::fetch::{Macro, MacroOrMessageDataItemNames, MessageDataItem};
use imap_next::imap_types::flag::{Flag as ImapFlag, FlagNameAttribute, FlagPerm};
use imap_next::imap_types::flag::{StoreResponse, StoreType};
use imap_next::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_next::imap_types::response::{
    Capability, Code, CodeOther, Data, Greeting, GreetingKind, Status,
};
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use imap_next::imap_types::status::{StatusDataItem, StatusDataItemName};
use imap_next::server::Error as ProtocolError;
use tokio::sync::broadcast;

use super::connection::{ConnectionInfo, Security, bye, describe, tag_of, text};
use super::fetch;
use super::listen::{AccountSlot, Limits, Shared};
use super::search;
use crate::mailstore::{
    Flag, FlagOperation, LoggedIn, LoginError, MailStoreError, MailboxId, MailboxSnapshot,
    MessageMeta, SpecialUse,
};

/// One response to send.
pub(crate) enum Out {
    Data(Data<'static>),
    Status(Status<'static>),
}

/// What the connection does after sending a reply.
pub(crate) enum After {
    Continue,
    Close,
    StartTls,
}

pub(crate) struct Reply {
    pub out: Vec<Out>,
    pub after: After,
}

impl Reply {
    fn done(out: Vec<Out>) -> Self {
        Reply {
            out,
            after: After::Continue,
        }
    }
}

/// A step of AUTHENTICATE (RFC 3501 §6.2.2).
pub(crate) enum AuthStep {
    Continue,
    Finish(Status<'static>),
}

/// The client's view of the selected mailbox.
struct Selected {
    id: MailboxId,
    name: String,
    read_only: bool,
    /// UIDs in sequence-number order, as the client was last told.
    uids: Vec<u32>,
    flags: Vec<Vec<Flag>>,
    metas: Vec<MessageMeta>,
    version: u64,
}

impl Selected {
    fn from_snapshot(name: String, read_only: bool, snapshot: &MailboxSnapshot) -> Self {
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

    fn seq_of(&self, uid: u32) -> Option<u32> {
        self.uids
            .binary_search(&uid)
            .ok()
            .map(|index| index as u32 + 1)
    }
}

enum Auth {
    None,
    /// AUTHENTICATE PLAIN waiting for the client's response.
    Pending(Tag<'static>),
}

pub(crate) struct Session {
    shared: Arc<Shared>,
    info: ConnectionInfo,
    account: Option<LoggedIn>,
    _slot: Option<AccountSlot>,
    selected: Option<Selected>,
    auth: Auth,
    idle_tag: Option<Tag<'static>>,
    logged_out: bool,
    /// A FETCH answered in slices (see [`Session::fetch_step`]).
    pending_fetch: Option<PendingFetch>,
    /// The selected mailbox was deleted or renamed by another session.
    selected_vanished: bool,
    /// Failed logins on this connection; the store backs off per account and per peer, and a
    /// connection that keeps guessing is closed as well.
    failed_logins: u32,
}

/// What is left of a FETCH being answered in slices.
struct PendingFetch {
    tag: Tag<'static>,
    plan: fetch::Plan,
    uids: Vec<u32>,
    next: usize,
    seen_now: HashMap<u32, Vec<Flag>>,
    uid: bool,
}

/// Failed logins after which a connection is closed.
const MAX_FAILED_LOGINS_PER_CONNECTION: u32 = 5;

type Handled = Result<Vec<Out>, Status<'static>>;

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, info: ConnectionInfo) -> Self {
        Session {
            shared,
            info,
            account: None,
            _slot: None,
            selected: None,
            auth: Auth::None,
            idle_tag: None,
            logged_out: false,
            failed_logins: 0,
            pending_fetch: None,
            selected_vanished: false,
        }
    }

    /// RFC 3501 §7.1.1: the greeting carries the capabilities so clients save a round trip.
    pub(crate) fn greeting(&self) -> Greeting<'static> {
        Greeting::new(
            GreetingKind::Ok,
            Some(Code::Capability(self.capabilities())),
            "onionpost IMAP4rev1 ready",
        )
        .expect("greeting is valid")
    }

    fn login_disabled(&self) -> bool {
        self.info.security == Security::Cleartext
    }

    fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut caps = vec![Capability::Imap4Rev1];
        if self.account.is_none() {
            if self.info.starttls {
                caps.push(Capability::StartTls);
            }
            if self.login_disabled() {
                caps.push(Capability::LoginDisabled);
            } else {
                caps.push(Capability::Auth(AuthMechanism::Plain));
                caps.push(Capability::SaslIr);
            }
        }
        caps.extend([
            Capability::LiteralPlus,
            Capability::Idle,
            Capability::UidPlus,
            Capability::Move,
            Capability::Namespace,
            Capability::Enable,
            Capability::Unselect,
            Capability::Quota,
            Capability::QuotaRes(Resource::Storage),
            Capability::Id,
            other_capability("SPECIAL-USE"),
        ]);
        Vec1::try_from(caps).expect("non-empty")
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

    pub(crate) async fn finish(&mut self) {
        self.selected = None;
        self._slot = None;
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
            CommandBody::Capability => {
                let caps = Data::Capability(self.capabilities());
                return Ok((
                    vec![Out::Data(caps), ok(&tag, None, "CAPABILITY completed")],
                    After::Continue,
                ));
            }
            CommandBody::Noop => {
                return Ok((vec![ok(&tag, None, "NOOP completed")], After::Continue));
            }
            CommandBody::Logout => {
                self.logged_out = true;
                return Ok((
                    vec![
                        Out::Status(bye("onionpost logging out")),
                        ok(&tag, None, "LOGOUT completed"),
                    ],
                    After::Close,
                ));
            }
            CommandBody::Id { .. } => {
                // RFC 2971: a server may answer NIL and reveal nothing about itself.
                return Ok((
                    vec![
                        Out::Data(Data::Id { parameters: None }),
                        ok(&tag, None, "ID completed"),
                    ],
                    After::Continue,
                ));
            }
            _ => {}
        }
        if self.account.is_none() {
            return self.not_authenticated(tag, body).await;
        }
        let out = self.authenticated(tag.clone(), body).await;
        Ok((
            out.unwrap_or_else(|status| vec![Out::Status(status)]),
            After::Continue,
        ))
    }

    async fn not_authenticated(
        &mut self,
        tag: Tag<'static>,
        body: CommandBody<'static>,
    ) -> Result<(Vec<Out>, After), Status<'static>> {
        match body {
            CommandBody::StartTLS => {
                if !self.info.starttls {
                    let why = if self.info.security == Security::Tls {
                        "TLS is already active"
                    } else {
                        "STARTTLS is not available on this connection"
                    };
                    return Err(bad(&tag, why));
                }
                Ok((
                    vec![ok(&tag, None, "begin TLS negotiation now")],
                    After::StartTls,
                ))
            }
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

    /// RFC 3501 §6.2.3 LOGIN, and the end of AUTHENTICATE PLAIN.
    async fn login(
        &mut self,
        tag: &Tag<'static>,
        username: &str,
        password: &str,
    ) -> Status<'static> {
        if self.login_disabled() {
            // RFC 5530 PRIVACYREQUIRED; RFC 3501 §6.2.3 LOGINDISABLED.
            return status_no(
                tag,
                Some(code_other("PRIVACYREQUIRED")),
                "LOGIN is disabled on a cleartext connection; use STARTTLS first",
            );
        }
        let mut invalid = || {
            self.failed_logins += 1;
            status_no(
                tag,
                Some(code_other("AUTHENTICATIONFAILED")),
                "invalid credentials",
            )
        };
        let logged = match self
            .shared
            .store
            .login(username, password, &self.info.connection_key)
            .await
        {
            Ok(logged) => logged,
            Err(LoginError::Invalid | LoginError::Unavailable) => return invalid(),
            Err(LoginError::BackOff { retry_after_secs }) => {
                return status_no(
                    tag,
                    Some(code_other("UNAVAILABLE")),
                    &format!("too many failed logins; retry in {retry_after_secs} s"),
                );
            }
            Err(LoginError::Internal) => {
                return status_no(
                    tag,
                    Some(code_other("UNAVAILABLE")),
                    "login temporarily unavailable; retry later",
                );
            }
        };
        // Through an identity's onion only the owning account may log in; every other login
        // gets the words a wrong password gets, so nobody learns that two identities share a
        // carrier (design.md, unlinkability).
        if let Some(required) = &self.info.required_account
            && required.as_deref() != Some(logged.account_id.as_str())
        {
            return invalid();
        }
        let Some(slot) = self.shared.take_slot(&logged.account_id) else {
            return status_no(
                tag,
                Some(code_other("LIMIT")),
                &format!(
                    "too many connections for this account (limit {})",
                    self.shared.limits.max_connections_per_account
                ),
            );
        };
        self._slot = Some(slot);
        self.account = Some(logged);
        tracing::info!("imap login");
        Status::ok(
            Some(tag.clone()),
            Some(Code::Capability(self.capabilities())),
            "logged in",
        )
        .expect("valid")
    }

    pub(crate) async fn authenticate(
        &mut self,
        tag: Tag<'static>,
        mechanism: AuthMechanism<'static>,
        initial: Option<Vec<u8>>,
    ) -> AuthStep {
        if self.account.is_some() {
            return AuthStep::Finish(bad(&tag, "already authenticated"));
        }
        if mechanism != AuthMechanism::Plain {
            return AuthStep::Finish(status_no(
                &tag,
                Some(code_other("CANNOT")),
                "only AUTHENTICATE PLAIN is supported",
            ));
        }
        if self.login_disabled() {
            return AuthStep::Finish(status_no(
                &tag,
                Some(code_other("PRIVACYREQUIRED")),
                "authentication is disabled on a cleartext connection; use STARTTLS first",
            ));
        }
        match initial {
            Some(response) => AuthStep::Finish(self.finish_plain(&tag, &response).await),
            None => {
                self.auth = Auth::Pending(tag);
                AuthStep::Continue
            }
        }
    }

    pub(crate) async fn authenticate_data(&mut self, data: Option<Vec<u8>>) -> AuthStep {
        let Auth::Pending(tag) = std::mem::replace(&mut self.auth, Auth::None) else {
            // imap-next only reports data during an exchange we started; should it ever not,
            // the exchange ends with an untagged BAD rather than a guessed tag.
            let status =
                Status::bad(None, None, text("no authentication in progress")).expect("valid");
            return AuthStep::Finish(status);
        };
        match data {
            // RFC 3501 §6.2.2: "*" cancels with a tagged BAD.
            None => AuthStep::Finish(bad(&tag, "authentication cancelled")),
            Some(response) => AuthStep::Finish(self.finish_plain(&tag, &response).await),
        }
    }

    /// RFC 4616: `[authzid] NUL authcid NUL passwd`. An authzid other than the login is refused
    /// because accounts cannot act for each other.
    async fn finish_plain(&mut self, tag: &Tag<'static>, response: &[u8]) -> Status<'static> {
        let fields: Vec<&[u8]> = response.split(|byte| *byte == 0).collect();
        if fields.len() != 3 {
            return bad(tag, "malformed PLAIN response (RFC 4616)");
        }
        let authzid = String::from_utf8_lossy(fields[0]).into_owned();
        let login = String::from_utf8_lossy(fields[1]).into_owned();
        let password = String::from_utf8_lossy(fields[2]).into_owned();
        if !authzid.is_empty() && authzid != login {
            return status_no(
                tag,
                Some(code_other("AUTHENTICATIONFAILED")),
                "invalid credentials",
            );
        }
        self.login(tag, &login, &password).await
    }

    fn account_id(&self) -> &str {
        self.account
            .as_ref()
            .map(|a| a.account_id.as_str())
            .unwrap_or_default()
    }

    async fn authenticated(&mut self, tag: Tag<'static>, body: CommandBody<'static>) -> Handled {
        match body {
            CommandBody::StartTLS
            | CommandBody::Login { .. }
            | CommandBody::Authenticate { .. } => Err(bad(&tag, "already authenticated")),
            CommandBody::Select { mailbox, .. } => self.select(&tag, mailbox, false).await,
            CommandBody::Examine { mailbox, .. } => self.select(&tag, mailbox, true).await,
            CommandBody::Create { mailbox } => {
                let name = mailbox_name(&mailbox);
                let name = name.trim_end_matches('/');
                self.shared
                    .store
                    .create_mailbox(self.account_id(), name)
                    .await
                    .map_err(|e| store_error(&tag, e, false))?;
                Ok(vec![ok(&tag, None, "CREATE completed")])
            }
            CommandBody::Delete { mailbox } => {
                let name = mailbox_name(&mailbox);
                if self.selected.as_ref().is_some_and(|s| s.name == name) {
                    self.selected = None;
                }
                self.shared
                    .store
                    .delete_mailbox(self.account_id(), &name)
                    .await
                    .map_err(|e| store_error(&tag, e, false))?;
                Ok(vec![ok(&tag, None, "DELETE completed")])
            }
            CommandBody::Rename { from, to } => {
                self.shared
                    .store
                    .rename_mailbox(self.account_id(), &mailbox_name(&from), &mailbox_name(&to))
                    .await
                    .map_err(|e| store_error(&tag, e, false))?;
                Ok(vec![ok(&tag, None, "RENAME completed")])
            }
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
            CommandBody::Namespace => {
                // RFC 2342: one personal namespace, no prefix, "/" delimiter.
                let personal = vec![Namespace {
                    prefix: IString::try_from("").expect("valid"),
                    delimiter: Some('/'.try_into().expect("valid")),
                    extensions: Vec::new(),
                }];
                Ok(vec![
                    Out::Data(Data::Namespace {
                        personal,
                        other: Vec::new(),
                        shared: Vec::new(),
                    }),
                    ok(&tag, None, "NAMESPACE completed"),
                ])
            }
            CommandBody::Enable { capabilities } => {
                // RFC 5161 §3.2: none of what we support needs enabling, so nothing is enabled
                // whatever was asked for.
                drop(capabilities);
                Ok(vec![
                    Out::Data(Data::Enabled {
                        capabilities: Vec::new(),
                    }),
                    ok(&tag, None, "ENABLE completed"),
                ])
            }
            CommandBody::GetQuota { root } => {
                if !root.as_ref().is_empty() {
                    return Err(status_no(
                        &tag,
                        Some(code_other("NONEXISTENT")),
                        "no such quota root; the account's root is \"\"",
                    ));
                }
                let quota = self.quota_data(&tag).await?;
                Ok(vec![Out::Data(quota), ok(&tag, None, "GETQUOTA completed")])
            }
            CommandBody::GetQuotaRoot { mailbox } => {
                let name = mailbox_name(&mailbox);
                self.shared
                    .store
                    .status(self.account_id(), &name)
                    .await
                    .map_err(|e| store_error(&tag, e, false))?;
                let quota = self.quota_data(&tag).await?;
                Ok(vec![
                    Out::Data(Data::QuotaRoot {
                        mailbox,
                        roots: vec![AString::try_from("").expect("valid")],
                    }),
                    Out::Data(quota),
                    ok(&tag, None, "GETQUOTAROOT completed"),
                ])
            }
            CommandBody::SetQuota { .. } => Err(status_no(
                &tag,
                Some(code_other("NOPERM")),
                "quotas are set by the plan, not by the client",
            )),
            CommandBody::Idle => Err(bad(&tag, "IDLE is handled by the connection")),
            other => self.selected_command(tag, other).await,
        }
    }

    async fn quota_data(&self, tag: &Tag<'static>) -> Result<Data<'static>, Status<'static>> {
        let usage = self
            .shared
            .store
            .quota(self.account_id())
            .await
            .map_err(|e| store_error(tag, e, false))?;
        // RFC 9208 §5.1: STORAGE is in units of 1024 octets, rounded up.
        let quotas = vec![QuotaGet {
            resource: Resource::Storage,
            usage: usage.used_bytes.div_ceil(1024),
            limit: usage.limit_bytes / 1024,
        }];
        Ok(Data::Quota {
            root: AString::try_from("").expect("valid"),
            quotas: Vec1::try_from(quotas).expect("non-empty"),
        })
    }

    async fn select(
        &mut self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
        read_only: bool,
    ) -> Handled {
        // RFC 3501 §6.3.1: a SELECT deselects first, even when it fails.
        self.selected = None;
        let name = mailbox_name(&mailbox);
        let snapshot = self
            .shared
            .store
            .open_mailbox(self.account_id(), &name)
            .await
            .map_err(|e| store_error(tag, e, false))?;
        let selected = Selected::from_snapshot(name, read_only, &snapshot);
        let mut out = vec![
            Out::Data(Data::Flags(system_flags())),
            untagged_ok(
                Some(Code::PermanentFlags(if read_only {
                    Vec::new()
                } else {
                    let mut perm: Vec<FlagPerm> =
                        system_flags().into_iter().map(FlagPerm::Flag).collect();
                    perm.push(FlagPerm::Asterisk);
                    perm
                })),
                "flags permitted",
            ),
            Out::Data(Data::Exists(selected.uids.len() as u32)),
            Out::Data(Data::Recent(0)),
        ];
        if let Some(index) = snapshot
            .messages
            .iter()
            .position(|m| !has_flag(&m.flags, "\\Seen"))
            && let Some(seq) = NonZeroU32::new(index as u32 + 1)
        {
            out.push(untagged_ok(Some(Code::Unseen(seq)), "first unseen"));
        }
        if let Some(validity) = NonZeroU32::new(snapshot.status.uid_validity) {
            out.push(untagged_ok(Some(Code::UidValidity(validity)), "UIDs valid"));
        }
        if let Some(next) = NonZeroU32::new(snapshot.status.uid_next) {
            out.push(untagged_ok(Some(Code::UidNext(next)), "predicted next UID"));
        }
        let (code, verb) = if read_only {
            (Code::ReadOnly, "EXAMINE completed")
        } else {
            (Code::ReadWrite, "SELECT completed")
        };
        out.push(Out::Status(
            Status::ok(Some(tag.clone()), Some(code), verb).expect("valid"),
        ));
        self.selected = Some(selected);
        Ok(out)
    }

    async fn subscribe(
        &mut self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
        subscribed: bool,
    ) -> Handled {
        self.shared
            .store
            .set_subscribed(self.account_id(), &mailbox_name(&mailbox), subscribed)
            .await
            .map_err(|e| store_error(tag, e, false))?;
        let verb = if subscribed {
            "SUBSCRIBE completed"
        } else {
            "UNSUBSCRIBE completed"
        };
        Ok(vec![ok(tag, None, verb)])
    }

    /// LIST and LSUB (RFC 3501 §6.3.8, §6.3.9) with RFC 6154 special-use attributes.
    async fn list(
        &mut self,
        tag: &Tag<'static>,
        reference: Mailbox<'static>,
        wildcard: ListMailbox<'static>,
        lsub: bool,
    ) -> Handled {
        let reference = mailbox_name(&reference);
        let pattern = match &wildcard {
            ListMailbox::Token(token) => string_of(token.as_ref()),
            ListMailbox::String(string) => string_of(string.as_ref()),
        };
        let verb = if lsub {
            "LSUB completed"
        } else {
            "LIST completed"
        };
        if pattern.is_empty() {
            // RFC 3501 §6.3.8: an empty pattern asks for the delimiter and root.
            let out = vec![
                Out::Data(Data::List {
                    items: vec![FlagNameAttribute::Noselect],
                    delimiter: Some('/'.try_into().expect("valid")),
                    mailbox: Mailbox::try_from("".to_owned()).expect("valid"),
                }),
                ok(tag, None, verb),
            ];
            return Ok(out);
        }
        let full_pattern = format!("{reference}{pattern}");
        let mailboxes = self
            .shared
            .store
            .list_mailboxes(self.account_id())
            .await
            .map_err(|e| store_error(tag, e, false))?;
        let names: Vec<&str> = mailboxes.iter().map(|m| m.name.as_str()).collect();
        let mut out = Vec::new();
        for mailbox in &mailboxes {
            if lsub && !mailbox.subscribed {
                continue;
            }
            if !list_matches(&full_pattern, &mailbox.name) {
                continue;
            }
            let prefix = format!("{}/", mailbox.name);
            let mut items = vec![if names.iter().any(|n| n.starts_with(&prefix)) {
                extension_attribute("HasChildren")
            } else {
                extension_attribute("HasNoChildren")
            }];
            if !lsub {
                if let Some(special) = mailbox.special_use.and_then(special_use_attribute) {
                    items.push(extension_attribute(special));
                }
                if mailbox.subscribed {
                    items.push(extension_attribute("Subscribed"));
                }
            }
            let Ok(name) = Mailbox::try_from(mailbox.name.clone()) else {
                continue;
            };
            let delimiter = Some('/'.try_into().expect("valid"));
            out.push(Out::Data(if lsub {
                Data::Lsub {
                    items,
                    delimiter,
                    mailbox: name,
                }
            } else {
                Data::List {
                    items,
                    delimiter,
                    mailbox: name,
                }
            }));
        }
        // RFC 3501 §6.3.8: a parent that does not exist as a mailbox (`a` for `a/b`) is still
        // listed for `%`, as \Noselect, so clients can walk the hierarchy.
        if !lsub {
            let mut implied: Vec<String> = Vec::new();
            for name in &names {
                let mut parent = *name;
                while let Some((head, _)) = parent.rsplit_once('/') {
                    if !names.contains(&head) && !implied.iter().any(|n| n == head) {
                        implied.push(head.to_owned());
                    }
                    parent = head;
                }
            }
            for name in implied {
                if !list_matches(&full_pattern, &name) {
                    continue;
                }
                let Ok(mailbox) = Mailbox::try_from(name) else {
                    continue;
                };
                out.push(Out::Data(Data::List {
                    items: vec![
                        FlagNameAttribute::Noselect,
                        extension_attribute("HasChildren"),
                    ],
                    delimiter: Some('/'.try_into().expect("valid")),
                    mailbox,
                }));
            }
        }
        out.push(ok(tag, None, verb));
        Ok(out)
    }

    async fn status(
        &mut self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
        items: &[StatusDataItemName],
    ) -> Handled {
        let status = self
            .shared
            .store
            .status(self.account_id(), &mailbox_name(&mailbox))
            .await
            .map_err(|e| store_error(tag, e, false))?;
        let mut values = Vec::new();
        for item in items {
            match item {
                StatusDataItemName::Messages => {
                    values.push(StatusDataItem::Messages(status.messages))
                }
                StatusDataItemName::Recent => values.push(StatusDataItem::Recent(0)),
                StatusDataItemName::UidNext => {
                    if let Some(next) = NonZeroU32::new(status.uid_next) {
                        values.push(StatusDataItem::UidNext(next));
                    }
                }
                StatusDataItemName::UidValidity => {
                    if let Some(validity) = NonZeroU32::new(status.uid_validity) {
                        values.push(StatusDataItem::UidValidity(validity));
                    }
                }
                StatusDataItemName::Unseen => values.push(StatusDataItem::Unseen(status.unseen)),
                _ => {
                    return Err(bad(tag, "unsupported STATUS item"));
                }
            }
        }
        Ok(vec![
            Out::Data(Data::Status {
                mailbox,
                items: Cow::Owned(values),
            }),
            ok(tag, None, "STATUS completed"),
        ])
    }

    async fn append(
        &mut self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
        flags: Vec<ImapFlag<'static>>,
        date: Option<ImapDateTime>,
        message: LiteralOrLiteral8<'static>,
    ) -> Handled {
        let bytes: Vec<u8> = match message {
            LiteralOrLiteral8::Literal(literal) => literal.into_inner().into_owned(),
            LiteralOrLiteral8::Literal8(literal) => literal.data.into_owned(),
        };
        if bytes.len() as u64 > u64::from(self.shared.limits.max_message_size) {
            return Err(status_no(
                tag,
                Some(Code::TooBig),
                "message exceeds the maximum message size",
            ));
        }
        let flags: Vec<Flag> = flags.iter().map(flag_string).collect();
        let date = date.map(|d| d.as_ref().with_timezone(&chrono::Utc));
        let (validity, uid) = self
            .shared
            .store
            .append(
                self.account_id(),
                &mailbox_name(&mailbox),
                &flags,
                date,
                Bytes::from(bytes),
            )
            .await
            .map_err(|e| store_error(tag, e, true))?;
        let code = match (NonZeroU32::new(validity), NonZeroU32::new(uid)) {
            (Some(uid_validity), Some(uid)) => Some(Code::AppendUid { uid_validity, uid }),
            _ => None,
        };
        Ok(vec![ok(tag, code, "APPEND completed")])
    }

    async fn selected_command(&mut self, tag: Tag<'static>, body: CommandBody<'static>) -> Handled {
        let Some(selected) = self.selected.as_ref() else {
            return Err(bad(
                &tag,
                &format!("{} needs a selected mailbox; SELECT one first", body.name()),
            ));
        };
        let read_only = selected.read_only;
        match body {
            CommandBody::Check => Ok(vec![ok(&tag, None, "CHECK completed")]),
            CommandBody::Close => {
                if !read_only {
                    // RFC 3501 §6.4.2: CLOSE expunges silently.
                    let id = selected.id;
                    let _ = self.shared.store.expunge(self.account_id(), id, None).await;
                }
                self.selected = None;
                Ok(vec![ok(&tag, None, "CLOSE completed")])
            }
            CommandBody::Unselect => {
                self.selected = None;
                Ok(vec![ok(&tag, None, "UNSELECT completed")])
            }
            CommandBody::Expunge => self.expunge(&tag, None).await,
            CommandBody::ExpungeUid { sequence_set } => {
                let uids = self.resolve(&sequence_set, true);
                self.expunge(&tag, Some(uids)).await
            }
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => {
                if let Some(charset) = charset {
                    let name = charset.as_ref().to_ascii_uppercase();
                    if name != "UTF-8" && name != "US-ASCII" {
                        return Err(status_no(
                            &tag,
                            Some(Code::BadCharset {
                                allowed: vec![
                                    "UTF-8".try_into().expect("valid"),
                                    "US-ASCII".try_into().expect("valid"),
                                ],
                            }),
                            "unsupported charset",
                        ));
                    }
                }
                let key = match criteria.into_iter().collect::<Vec<_>>() {
                    mut keys if keys.len() == 1 => keys.remove(0),
                    keys => SearchKey::And(Vec1::try_from(keys).expect("non-empty")),
                };
                self.search(&tag, &key, uid).await
            }
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
                if read_only {
                    return Err(status_no(
                        &tag,
                        Some(Code::Other(CodeOther::unvalidated(b"READ-ONLY".as_slice()))),
                        "mailbox is read-only (EXAMINE)",
                    ));
                }
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
            } => {
                if read_only {
                    return Err(status_no(
                        &tag,
                        None,
                        "mailbox is read-only (EXAMINE); MOVE needs SELECT",
                    ));
                }
                self.copy(&tag, &sequence_set, mailbox, uid, true).await
            }
            other => Err(bad(&tag, &format!("{} is not supported", other.name()))),
        }
    }

    /// Maps a sequence set to UIDs of the client's view. `*` is the last message (RFC 3501
    /// §9 seq-number); non-existent UIDs are ignored (§6.4.8).
    fn resolve(&self, set: &SequenceSet, uid: bool) -> Vec<u32> {
        let Some(selected) = self.selected.as_ref() else {
            return Vec::new();
        };
        resolve_set(set, uid, &selected.uids)
    }

    async fn expunge(&mut self, tag: &Tag<'static>, uids: Option<Vec<u32>>) -> Handled {
        let Some(selected) = self.selected.as_ref() else {
            return Err(bad(tag, "no mailbox selected"));
        };
        if selected.read_only {
            return Err(status_no(tag, None, "mailbox is read-only (EXAMINE)"));
        }
        let id = selected.id;
        let removed = self
            .shared
            .store
            .expunge(self.account_id(), id, uids.as_deref())
            .await
            .map_err(|e| store_error(tag, e, false))?;
        let mut out = self.remove_from_view(&removed);
        out.push(ok(tag, None, "EXPUNGE completed"));
        Ok(out)
    }

    /// Drops UIDs from the view, announcing each with EXPUNGE (RFC 3501 §7.4.1: each response
    /// renumbers the following messages, so the numbers go highest first).
    fn remove_from_view(&mut self, removed: &[u32]) -> Vec<Out> {
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

    async fn search(&mut self, tag: &Tag<'static>, key: &SearchKey<'static>, uid: bool) -> Handled {
        let Some(selected) = self.selected.as_ref() else {
            return Err(bad(tag, "no mailbox selected"));
        };
        let need = search::need(key);
        let matches = search::run(
            self.shared.store.as_ref(),
            self.account_id(),
            selected.id,
            &selected.metas,
            key,
            need,
        )
        .await
        .map_err(|e| store_error(tag, e, false))?;
        let numbers: Vec<NonZeroU32> = matches
            .into_iter()
            .filter_map(|index| {
                let number = if uid {
                    selected.uids[index]
                } else {
                    index as u32 + 1
                };
                NonZeroU32::new(number)
            })
            .collect();
        Ok(vec![
            Out::Data(Data::Search(numbers)),
            ok(tag, None, "SEARCH completed"),
        ])
    }

    async fn fetch(
        &mut self,
        tag: &Tag<'static>,
        set: &SequenceSet,
        items: MacroOrMessageDataItemNames<'static>,
        uid: bool,
    ) -> Handled {
        let uids = self.resolve(set, uid);
        let Some(selected) = self.selected.as_ref() else {
            return Err(bad(tag, "no mailbox selected"));
        };
        let items = match items {
            MacroOrMessageDataItemNames::Macro(Macro::Fast) => fetch::fast(),
            MacroOrMessageDataItemNames::Macro(Macro::All) => fetch::all(),
            MacroOrMessageDataItemNames::Macro(Macro::Full) => fetch::full(),
            MacroOrMessageDataItemNames::Macro(_) => fetch::full(),
            MacroOrMessageDataItemNames::MessageDataItemNames(items) => items,
        };
        let plan = fetch::Plan::new(items, uid);
        let mailbox = selected.id;
        let read_only = selected.read_only;
        // RFC 3501 §6.4.5: BODY[...] (not PEEK) and RFC822/RFC822.TEXT set \Seen.
        let mut seen_now: HashMap<u32, Vec<Flag>> = HashMap::new();
        if plan.sets_seen && !read_only {
            let unseen: Vec<u32> = uids
                .iter()
                .copied()
                .filter(|uid| {
                    selected
                        .seq_of(*uid)
                        .is_some_and(|seq| !has_flag(&selected.flags[seq as usize - 1], "\\Seen"))
                })
                .collect();
            if !unseen.is_empty() {
                let changed = self
                    .shared
                    .store
                    .store_flags(
                        self.account_id(),
                        mailbox,
                        &unseen,
                        FlagOperation::Add,
                        &["\\Seen".to_owned()],
                    )
                    .await
                    .map_err(|e| store_error(tag, e, false))?;
                seen_now.extend(changed);
            }
        }
        let Some(selected) = self.selected.as_mut() else {
            return Err(bad(tag, "no mailbox selected"));
        };
        for (uid, flags) in &seen_now {
            if let Ok(index) = selected.uids.binary_search(uid) {
                selected.flags[index] = flags.clone();
                selected.metas[index].flags = flags.clone();
            }
        }
        self.pending_fetch = Some(PendingFetch {
            tag: tag.clone(),
            plan,
            uids,
            next: 0,
            seen_now,
            uid,
        });
        Ok(self.fetch_step().await)
    }

    /// Whether a FETCH is still being answered (the connection sends what is ready, then asks
    /// for the next slice before it reads more commands).
    pub(crate) fn has_pending_output(&self) -> bool {
        self.pending_fetch.is_some()
    }

    /// Answers the next slice of a pending FETCH: up to `Limits::fetch_slice_bytes` of message data,
    /// so `FETCH 1:* BODY[]` on a large mailbox streams instead of being built in memory
    /// whole. The last slice carries the tagged completion.
    pub(crate) async fn fetch_step(&mut self) -> Vec<Out> {
        let Some(mut pending) = self.pending_fetch.take() else {
            return Vec::new();
        };
        let account = self.account_id().to_owned();
        let Some(selected) = self.selected.as_ref() else {
            return vec![Out::Status(bad(&pending.tag, "no mailbox selected"))];
        };
        let mailbox = selected.id;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while pending.next < pending.uids.len() && bytes < self.shared.limits.fetch_slice_bytes {
            let end = (pending.next + fetch::BATCH).min(pending.uids.len());
            let chunk = &pending.uids[pending.next..end];
            pending.next = end;
            let bodies: HashMap<u32, Bytes> = match pending.plan.need {
                None => HashMap::new(),
                Some(part) => match self
                    .shared
                    .store
                    .fetch(&account, mailbox, chunk, part)
                    .await
                {
                    Ok(bodies) => bodies.into_iter().collect(),
                    Err(error) => {
                        out.push(Out::Status(store_error(&pending.tag, error, false)));
                        return out;
                    }
                },
            };
            for uid in chunk {
                let Ok(index) = selected.uids.binary_search(uid) else {
                    continue;
                };
                let body = bodies.get(uid);
                if pending.plan.need.is_some() && body.is_none() {
                    // Expunged by another session meanwhile: nothing to show (RFC 3501 §7.4.1
                    // allows omitting it; the EXPUNGE follows with the next resync).
                    continue;
                }
                bytes += body.map_or(64, |b| b.len());
                let items = fetch::items(
                    &pending.plan,
                    &selected.metas[index],
                    &selected.flags[index],
                    body.map(|b| b.as_ref()),
                    pending.seen_now.contains_key(uid),
                );
                if let (Some(seq), Ok(items)) =
                    (NonZeroU32::new(index as u32 + 1), Vec1::try_from(items))
                {
                    out.push(Out::Data(Data::Fetch { seq, items }));
                }
            }
        }
        if pending.next < pending.uids.len() {
            self.pending_fetch = Some(pending);
            return out;
        }
        // UID FETCH may report other sessions' changes (RFC 3501 §7.4.1); FETCH may not
        // report expunges.
        if pending.uid {
            out.extend(self.resync_selected().await);
        }
        out.push(ok(&pending.tag, None, "FETCH completed"));
        out
    }

    async fn store(
        &mut self,
        tag: &Tag<'static>,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags: &[ImapFlag<'static>],
        uid: bool,
    ) -> Handled {
        let uids = self.resolve(set, uid);
        let Some(selected) = self.selected.as_ref() else {
            return Err(bad(tag, "no mailbox selected"));
        };
        let mailbox = selected.id;
        let operation = match kind {
            StoreType::Add => FlagOperation::Add,
            StoreType::Remove => FlagOperation::Remove,
            StoreType::Replace => FlagOperation::Replace,
        };
        let flags: Vec<Flag> = flags.iter().map(flag_string).collect();
        let changed = if uids.is_empty() {
            Vec::new()
        } else {
            self.shared
                .store
                .store_flags(self.account_id(), mailbox, &uids, operation, &flags)
                .await
                .map_err(|e| store_error(tag, e, false))?
        };
        let Some(selected) = self.selected.as_mut() else {
            return Err(bad(tag, "no mailbox selected"));
        };
        let mut out = Vec::new();
        for (uid, flags) in changed {
            let Ok(index) = selected.uids.binary_search(&uid) else {
                continue;
            };
            selected.flags[index] = flags.clone();
            selected.metas[index].flags = flags.clone();
            if response == StoreResponse::Answer {
                // UID is always included: RFC 3501 §6.4.8 requires it for UID STORE, and it
                // lets pipelining clients match responses for plain STORE too.
                let items = vec![
                    MessageDataItem::Flags(fetch::flag_fetch(&flags)),
                    MessageDataItem::Uid(NonZeroU32::new(uid).expect("uid > 0")),
                ];
                if let Some(seq) = NonZeroU32::new(index as u32 + 1) {
                    out.push(Out::Data(Data::Fetch {
                        seq,
                        items: Vec1::try_from(items).expect("non-empty"),
                    }));
                }
            }
        }
        out.push(ok(tag, None, "STORE completed"));
        Ok(out)
    }

    async fn copy(
        &mut self,
        tag: &Tag<'static>,
        set: &SequenceSet,
        mailbox: Mailbox<'static>,
        uid: bool,
        is_move: bool,
    ) -> Handled {
        let uids = self.resolve(set, uid);
        let Some(selected) = self.selected.as_ref() else {
            return Err(bad(tag, "no mailbox selected"));
        };
        let verb = if is_move {
            "MOVE completed"
        } else {
            "COPY completed"
        };
        if uids.is_empty() {
            return Ok(vec![ok(tag, None, verb)]);
        }
        let destination = mailbox_name(&mailbox);
        let from = selected.id;
        let copied = if is_move {
            self.shared
                .store
                .move_messages(self.account_id(), from, &uids, &destination)
                .await
        } else {
            self.shared
                .store
                .copy(self.account_id(), from, &uids, &destination)
                .await
        }
        .map_err(|e| store_error(tag, e, true))?;
        let code = copyuid(&copied);
        if !is_move {
            return Ok(vec![ok(tag, code, verb)]);
        }
        // RFC 6851 §4.3: COPYUID goes in an untagged OK before the EXPUNGEs.
        let mut out = Vec::new();
        if let Some(code) = code {
            out.push(untagged_ok(Some(code), "moved"));
        }
        let moved: Vec<u32> = copied.uids.iter().map(|(source, _)| *source).collect();
        out.extend(self.remove_from_view(&moved));
        out.push(ok(tag, None, verb));
        Ok(out)
    }

    pub(crate) async fn idle_start(
        &mut self,
        tag: Tag<'static>,
    ) -> Result<Vec<Out>, Status<'static>> {
        if self.account.is_none() {
            return Err(bad(&tag, "IDLE is not valid before login; log in first"));
        }
        self.idle_tag = Some(tag);
        // Whatever changed before IDLE is reported right away (RFC 2177 §3).
        Ok(self.resync_selected().await)
    }

    pub(crate) async fn idle_done(&mut self) -> Vec<Out> {
        let Some(tag) = self.idle_tag.take() else {
            return Vec::new();
        };
        let mut out = self.resync_selected().await;
        out.push(ok(&tag, None, "IDLE terminated"));
        out
    }

    pub(crate) async fn mailbox_changed(&mut self, id: MailboxId) -> Vec<Out> {
        if !self.is_selected(id) {
            return Vec::new();
        }
        self.resync_selected().await
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
                MessageDataItem::Flags(fetch::flag_fetch(&flags)),
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

fn copyuid(copied: &crate::mailstore::Copied) -> Option<Code<'static>> {
    let validity = NonZeroU32::new(copied.uid_validity)?;
    let source = uid_set(copied.uids.iter().map(|(s, _)| *s))?;
    let destination = uid_set(copied.uids.iter().map(|(_, d)| *d))?;
    Some(Code::CopyUid {
        uid_validity: validity,
        source,
        destination,
    })
}

/// RFC 4315 §3 uid-set; order matters (source and destination correspond element by element),
/// so runs are only merged when consecutive in the given order.
fn uid_set(uids: impl Iterator<Item = u32>) -> Option<UidSet> {
    let mut elements: Vec<UidElement> = Vec::new();
    let mut run: Option<(u32, u32)> = None;
    for uid in uids {
        run = match run {
            Some((start, end)) if uid == end + 1 => Some((start, uid)),
            Some((start, end)) => {
                elements.push(uid_element(start, end)?);
                Some((uid, uid))
            }
            None => Some((uid, uid)),
        };
    }
    if let Some((start, end)) = run {
        elements.push(uid_element(start, end)?);
    }
    Vec1::try_from(elements).ok().map(UidSet)
}

fn uid_element(start: u32, end: u32) -> Option<UidElement> {
    let a = NonZeroU32::new(start)?;
    let b = NonZeroU32::new(end)?;
    Some(if a == b {
        UidElement::Single(a)
    } else {
        UidElement::Range(a, b)
    })
}

/// RFC 3501 §6.3.8: `*` matches anything, `%` anything but the hierarchy delimiter. INBOX
/// matches case-insensitively.
pub(crate) fn list_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some(b'%') => {
                let limit = n.iter().position(|c| *c == b'/').unwrap_or(n.len());
                (0..=limit).any(|i| go(&p[1..], &n[i..]))
            }
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let normalize = |value: &str| {
        if value.len() >= 5 && value[..5].eq_ignore_ascii_case("inbox") {
            format!("INBOX{}", &value[5..])
        } else {
            value.to_owned()
        }
    };
    go(normalize(pattern).as_bytes(), normalize(name).as_bytes())
}

fn same_flags(a: &[Flag], b: &[Flag]) -> bool {
    a.len() == b.len() && a.iter().all(|flag| has_flag(b, flag))
}

pub(crate) fn has_flag(flags: &[Flag], wanted: &str) -> bool {
    flags.iter().any(|f| f.eq_ignore_ascii_case(wanted))
}

fn system_flags() -> Vec<ImapFlag<'static>> {
    vec![
        ImapFlag::Answered,
        ImapFlag::Flagged,
        ImapFlag::Deleted,
        ImapFlag::Seen,
        ImapFlag::Draft,
    ]
}

fn flag_string(flag: &ImapFlag<'_>) -> Flag {
    match flag {
        ImapFlag::Answered => "\\Answered".to_owned(),
        ImapFlag::Deleted => "\\Deleted".to_owned(),
        ImapFlag::Draft => "\\Draft".to_owned(),
        ImapFlag::Flagged => "\\Flagged".to_owned(),
        ImapFlag::Seen => "\\Seen".to_owned(),
        other => other.to_string(),
    }
}

fn special_use_attribute(special: SpecialUse) -> Option<&'static str> {
    // RFC 6154 §2; INBOX has no special-use attribute, quarantine is listed as \Junk.
    match special {
        SpecialUse::Inbox => None,
        SpecialUse::Sent => Some("Sent"),
        SpecialUse::Drafts => Some("Drafts"),
        SpecialUse::Trash => Some("Trash"),
        SpecialUse::Junk | SpecialUse::Quarantine => Some("Junk"),
        SpecialUse::Archive => Some("Archive"),
    }
}

fn extension_attribute(name: &'static str) -> FlagNameAttribute<'static> {
    FlagNameAttribute::from(Atom::try_from(name).expect("valid atom"))
}

fn other_capability(name: &'static str) -> Capability<'static> {
    Capability::try_from(name).expect("valid capability")
}

pub(crate) fn mailbox_name(mailbox: &Mailbox<'_>) -> String {
    match mailbox {
        Mailbox::Inbox => "INBOX".to_owned(),
        Mailbox::Other(other) => string_of(other.inner().as_ref()),
    }
}

fn string_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn code_other(name: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(name.as_bytes()))
}

fn ok(tag: &Tag<'static>, code: Option<Code<'static>>, message: &str) -> Out {
    Out::Status(Status::ok(Some(tag.clone()), code, text(message)).expect("valid"))
}

fn untagged_ok(code: Option<Code<'static>>, message: &str) -> Out {
    Out::Status(Status::ok(None, code, text(message)).expect("valid"))
}

fn status_no(tag: &Tag<'static>, code: Option<Code<'static>>, message: &str) -> Status<'static> {
    Status::no(Some(tag.clone()), code, text(message)).expect("valid")
}

fn bad(tag: &Tag<'static>, message: &str) -> Status<'static> {
    Status::bad(Some(tag.clone()), None, text(message)).expect("valid")
}

/// Maps a store error to its reply (RFC 5530 response codes). `try_create` is for APPEND,
/// COPY and MOVE, where a missing destination is `[TRYCREATE]` (RFC 3501 §6.3.11).
fn store_error(tag: &Tag<'static>, error: MailStoreError, try_create: bool) -> Status<'static> {
    let message = error.to_string();
    let code = match error {
        MailStoreError::NoSuchMailbox if try_create => Code::TryCreate,
        MailStoreError::NoSuchMailbox => code_other("NONEXISTENT"),
        MailStoreError::MailboxExists => code_other("ALREADYEXISTS"),
        MailStoreError::Cannot(_) => code_other("CANNOT"),
        MailStoreError::OverQuota { .. } => Code::OverQuota,
        MailStoreError::NotAccepting(_) => code_other("CONTACTADMIN"),
        MailStoreError::Internal => code_other("UNAVAILABLE"),
    };
    status_no(tag, Some(code), &message)
}

/// Says what is wrong with a command imap-codec could not parse, as precisely as a cheap look
/// at its first words allows.
fn explain_malformed(bytes: &[u8]) -> Option<String> {
    let line = bytes.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end();
    let mut words = line.split(' ');
    let tag = words.next().unwrap_or_default();
    if tag.is_empty() {
        return Some("empty command line".to_owned());
    }
    let Some(name) = words.next().filter(|w| !w.is_empty()) else {
        return Some("missing command name after tag".to_owned());
    };
    let mut upper = name.to_ascii_uppercase();
    if upper == "UID" {
        let sub = words.next().unwrap_or_default().to_ascii_uppercase();
        upper = format!("UID {sub}");
    }
    const KNOWN: &[&str] = &[
        "CAPABILITY",
        "NOOP",
        "LOGOUT",
        "STARTTLS",
        "AUTHENTICATE",
        "LOGIN",
        "SELECT",
        "EXAMINE",
        "CREATE",
        "DELETE",
        "RENAME",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "LIST",
        "LSUB",
        "STATUS",
        "APPEND",
        "CHECK",
        "CLOSE",
        "EXPUNGE",
        "SEARCH",
        "FETCH",
        "STORE",
        "COPY",
        "MOVE",
        "UID FETCH",
        "UID STORE",
        "UID COPY",
        "UID MOVE",
        "UID SEARCH",
        "UID EXPUNGE",
        "IDLE",
        "NAMESPACE",
        "ENABLE",
        "GETQUOTA",
        "GETQUOTAROOT",
        "SETQUOTA",
        "UNSELECT",
        "ID",
    ];
    if KNOWN.contains(&upper.as_str()) {
        Some(format!("invalid arguments for {upper}"))
    } else {
        Some(format!("unknown command {upper}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_wildcards() {
        assert!(list_matches("*", "Work/Old"));
        assert!(list_matches("%", "Work"));
        assert!(!list_matches("%", "Work/Old"));
        assert!(list_matches("Work/%", "Work/Old"));
        assert!(list_matches("inbox", "INBOX"));
        assert!(!list_matches("Sent", "Sent Items"));
    }

    #[test]
    fn copyuid_sets_keep_order() {
        let copied = crate::mailstore::Copied {
            uid_validity: 7,
            uids: vec![(1, 10), (2, 11), (5, 12)],
        };
        let Some(Code::CopyUid {
            source,
            destination,
            ..
        }) = copyuid(&copied)
        else {
            panic!("no COPYUID");
        };
        assert_eq!(source.0.as_ref().len(), 2, "1:2,5");
        assert_eq!(destination.0.as_ref().len(), 1, "10:12");
    }
}
