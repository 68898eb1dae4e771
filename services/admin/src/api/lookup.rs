//! The owning service's record of an account or an identity, which many routes fetch first (to
//! answer 404 for an unknown id before asking another service). Kept apart from the resources'
//! routes so no route module imports another's.

use onionpost_proto::ServiceName;
use onionpost_proto::imap::v1 as imap;

use crate::AdminState;
use crate::error::{AdminError, Upstream as _};

/// An account as imap holds it.
pub async fn fetch_account(state: &AdminState, id: &str) -> Result<imap::Account, AdminError> {
    state
        .directory
        .imap()?
        .get_account(imap::GetAccountRequest {
            account: Some(imap::get_account_request::Account::AccountId(id.to_owned())),
        })
        .await
        .upstream(ServiceName::Imap)
}

/// An identity's record as imap holds it.
pub async fn fetch_identity(state: &AdminState, id: &str) -> Result<imap::Identity, AdminError> {
    state
        .directory
        .imap()?
        .get_identity(imap::GetIdentityRequest {
            identity: Some(imap::get_identity_request::Identity::IdentityId(
                id.to_owned(),
            )),
        })
        .await
        .upstream(ServiceName::Imap)
}
