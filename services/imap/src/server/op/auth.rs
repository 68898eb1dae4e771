//! STARTTLS, LOGIN and AUTHENTICATE PLAIN (RFC 3501 §6.2, RFC 4616): the not-authenticated
//! state's commands.
//!
//! Every refused login reads the same (`NO [AUTHENTICATIONFAILED] invalid credentials`): a wrong
//! password, an unknown login, another account's login through an identity's onion, and a login
//! while the listener backs off. The back-off is the listener's own ([`ListenerScope`]), so
//! failures through one identity's onion never change what another's answers (issue 18, item 4).
//!
//! [`ListenerScope`]: super::super::context::ListenerScope

use chrono::Utc;
use imap_next::imap_types::auth::AuthMechanism;
use imap_next::imap_types::core::Tag;
use imap_next::imap_types::response::{Code, Status};

use super::super::context::Security;
use super::super::reply::{
    After, AuthStep, Out, bad, code_other, invalid_credentials, ok, status_no, text,
};
use super::super::session::{Auth, Session};
use crate::mailstore::LoginError;

impl Session {
    /// RFC 3501 §6.2.1 STARTTLS: the connection starts the handshake once the OK is out.
    pub(crate) fn starttls(
        &mut self,
        tag: &Tag<'static>,
    ) -> Result<(Vec<Out>, After), Status<'static>> {
        if !self.info.starttls {
            let why = if self.info.security == Security::Tls {
                "TLS is already active"
            } else {
                "STARTTLS is not available on this connection"
            };
            return Err(bad(tag, why));
        }
        Ok((
            vec![ok(tag, None, "begin TLS negotiation now")],
            After::StartTls,
        ))
    }

    pub(crate) fn login_disabled(&self) -> bool {
        self.info.security == Security::Cleartext
    }

    /// RFC 3501 §6.2.3 LOGIN, and the end of AUTHENTICATE PLAIN.
    pub(crate) async fn login(
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
        // On an identity's onion its address stands for its owner's login.
        let username = match &self.info.login_alias {
            Some((address, login)) if username.trim().eq_ignore_ascii_case(address) => {
                login.as_str()
            }
            _ => username,
        }
        .to_owned();
        let username = username.as_str();
        let scope = self.scope.clone();
        let backoff = scope.backoff();
        let peer = self.info.connection_key.clone();
        if backoff.check(username, &peer, Utc::now()).is_some() {
            // The listener backs off this login (or this peer): the password is not even
            // checked, and the reply is the one a wrong password gets, so the back-off tells
            // nothing a wrong password would not.
            self.failed_logins += 1;
            return invalid_credentials(tag);
        }
        let logged = match self.shared.store.login(username, password).await {
            Ok(logged) => logged,
            Err(LoginError::Invalid | LoginError::Unavailable | LoginError::BackOff { .. }) => {
                backoff.failed(username, &peer, Utc::now());
                self.failed_logins += 1;
                return invalid_credentials(tag);
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
        // gets the words (and the back-off) a wrong password gets, so nobody learns that two
        // identities share a carrier (design.md, unlinkability).
        if let Some(required) = &self.info.required_account
            && required.as_deref() != Some(logged.account_id.as_str())
        {
            backoff.failed(username, &peer, Utc::now());
            self.failed_logins += 1;
            return invalid_credentials(tag);
        }
        backoff.succeeded(username);
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
        self.slot = Some(slot);
        self.account = Some(logged);
        self.login_wait = None;
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
    pub(crate) async fn finish_plain(
        &mut self,
        tag: &Tag<'static>,
        response: &[u8],
    ) -> Status<'static> {
        let fields: Vec<&[u8]> = response.split(|byte| *byte == 0).collect();
        if fields.len() != 3 {
            return bad(tag, "malformed PLAIN response (RFC 4616)");
        }
        let authzid = String::from_utf8_lossy(fields[0]).into_owned();
        let login = String::from_utf8_lossy(fields[1]).into_owned();
        let password = String::from_utf8_lossy(fields[2]).into_owned();
        if !authzid.is_empty() && authzid != login {
            return invalid_credentials(tag);
        }
        self.login(tag, &login, &password).await
    }
}
