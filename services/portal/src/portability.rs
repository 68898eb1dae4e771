//! What lets an identity live beyond this carrier: its bundle (OpenPGP key and onion key under a
//! passphrase) to move it to another device or carrier and back; the carriers it asks its
//! correspondents to use while it is offline; and the carry requests it signs for a carrier.
//!
//! Every call names an identity the session's account owns ([`account::own_record`]); the keys
//! and the onion key stay in keys and onion, and a bundle is encrypted before it leaves keys.

use chrono::{DateTime, Utc};
use onionpost_proto::ServiceName;
use onionpost_proto::imap::v1 as imap;
use onionpost_proto::keys::v1 as keys;
use onionpost_runtime::time::timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::PortalState;
use crate::account::{self, Identity};
use crate::error::{PortalError, Upstream as _};

/// Shortest passphrase a bundle is sealed with: it is all that protects the keys in it.
const MIN_PASSPHRASE_CHARS: usize = 12;
const MAX_TEXT_BYTES: usize = 1024;
/// Largest bundle taken for import (a bundle is about 1 KiB).
pub const MAX_BUNDLE_BYTES: usize = 32 * 1024;
/// Carriers one identity may name (keys' limit).
const MAX_CARRIERS: usize = 16;

fn passphrase_ok(passphrase: &str) -> Result<(), PortalError> {
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(PortalError::invalid(
            "passphrase",
            format!("must be at least {MIN_PASSPHRASE_CHARS} characters"),
        ));
    }
    if passphrase.len() > MAX_TEXT_BYTES {
        return Err(PortalError::invalid("passphrase", "is too long"));
    }
    Ok(())
}

/// One of the account's identities packed with `passphrase`; the carrier keeps no copy.
pub async fn export_identity(
    state: &PortalState,
    account_id: &str,
    identity_id: &str,
    passphrase: &str,
) -> Result<Vec<u8>, PortalError> {
    let record = account::own_record(state, account_id, identity_id).await?;
    passphrase_ok(passphrase)?;
    let bundle = state
        .directory
        .keys()?
        .export_identity(keys::ExportIdentityRequest {
            identity_id: record.identity_id.clone(),
            passphrase: passphrase.to_owned(),
        })
        .await
        .upstream(ServiceName::Keys)?;
    tracing::info!(account_id, identity_id, "identity exported in the portal");
    Ok(bundle.bundle)
}

/// Brings an exported identity into the account, with the address and key it had.
pub async fn import_identity(
    state: &PortalState,
    account_id: &str,
    bundle: Vec<u8>,
    passphrase: &str,
    display_name: &str,
) -> Result<Identity, PortalError> {
    if bundle.is_empty() {
        return Err(PortalError::invalid("bundle", "choose the bundle file"));
    }
    if bundle.len() > MAX_BUNDLE_BYTES {
        return Err(PortalError::invalid("bundle", "is too large for a bundle"));
    }
    if passphrase.is_empty() || passphrase.len() > MAX_TEXT_BYTES {
        return Err(PortalError::invalid("passphrase", "is required"));
    }
    if display_name.chars().count() > 128 || display_name.chars().any(char::is_control) {
        return Err(PortalError::invalid(
            "display_name",
            "must be one line of at most 128 characters",
        ));
    }
    let recorded = state
        .directory
        .imap()?
        .import_identity(imap::ImportIdentityRequest {
            account_id: account_id.to_owned(),
            bundle,
            passphrase: passphrase.to_owned(),
            display_name: display_name.trim().to_owned(),
        })
        .await
        .upstream(ServiceName::Imap)
        .map_err(|error| match error {
            // A wrong passphrase and a damaged file read the same: the bundle cannot be opened.
            PortalError::Rejected(detail) => PortalError::invalid("bundle", detail),
            other => other,
        })?;
    tracing::info!(account_id, identity_id = %recorded.identity_id, "identity imported in the portal");
    account::describe_identity(state, recorded).await
}

/// Sets the carriers an identity asks its correspondents to use while it is offline; keys signs
/// the list with the identity's key.
pub async fn set_preferred_carriers(
    state: &PortalState,
    account_id: &str,
    identity_id: &str,
    carriers: &[String],
) -> Result<Identity, PortalError> {
    let record = account::own_record(state, account_id, identity_id).await?;
    if carriers.len() > MAX_CARRIERS {
        return Err(PortalError::invalid(
            "carriers",
            format!("at most {MAX_CARRIERS} carriers"),
        ));
    }
    if carriers
        .iter()
        .any(|carrier| carrier.len() > MAX_TEXT_BYTES)
    {
        return Err(PortalError::invalid("carriers", "an onion is too long"));
    }
    state
        .directory
        .keys()?
        .set_preferred_carriers(keys::SetPreferredCarriersRequest {
            identity_id: record.identity_id.clone(),
            carriers: carriers
                .iter()
                .map(|carrier| carrier.trim().to_owned())
                .collect(),
            signed_list: Vec::new(),
        })
        .await
        .upstream(ServiceName::Keys)
        .map_err(|error| match error {
            PortalError::Rejected(detail) => PortalError::invalid("carriers", detail),
            other => other,
        })?;
    account::describe_identity(state, record).await
}

/// What a carry statement asks of the carrier it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CarryKind {
    /// Hold my mail while I am offline.
    Request,
    /// Stop holding it.
    Withdraw,
}

/// A carry statement to sign.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCarryStatement {
    /// The carrier asked: its onion host, `<56 base32>.onion`.
    pub carrier: String,
    pub kind: CarryKind,
    /// When a request lapses on its own; absent leaves it to the carrier.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Also send it to the carrier, in mail to `postmaster@<carrier>` from the identity (the
    /// carrier verifies it and answers by its policy; a refusal comes back as a DSN).
    #[serde(default)]
    pub send: bool,
}

/// A signed carry statement (ASCII armour), to hand to the carrier it names.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CarryStatement {
    pub statement: String,
    /// Where it was sent (`postmaster@<carrier>`), when `send` asked for it.
    pub sent_to: Option<String>,
}

/// Signs a carry request or withdrawal with one of the account's identities.
pub async fn sign_carry_statement(
    state: &PortalState,
    account_id: &str,
    identity_id: &str,
    request: NewCarryStatement,
) -> Result<CarryStatement, PortalError> {
    let record = account::own_record(state, account_id, identity_id).await?;
    if request.carrier.trim().is_empty() || request.carrier.len() > MAX_TEXT_BYTES {
        return Err(PortalError::invalid("carrier", "give the carrier's onion"));
    }
    if request.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(PortalError::invalid("expires_at", "must be in the future"));
    }
    let signed = state
        .directory
        .keys()?
        .sign_carry_statement(keys::SignCarryStatementRequest {
            identity_id: record.identity_id.clone(),
            carrier: request.carrier.trim().to_owned(),
            kind: match request.kind {
                CarryKind::Request => keys::CarryStatementKind::Request,
                CarryKind::Withdraw => keys::CarryStatementKind::Withdraw,
            } as i32,
            expires_at: request
                .expires_at
                .map(|at| timestamp(at.timestamp_millis())),
        })
        .await
        .upstream(ServiceName::Keys)
        .map_err(|error| match error {
            PortalError::Rejected(detail) => PortalError::invalid("carrier", detail),
            other => other,
        })?;
    let statement = String::from_utf8(signed.statement).map_err(|_| {
        tracing::error!("keys signed a carry statement that is not text");
        PortalError::Internal
    })?;
    let sent_to = if request.send {
        // keys checked that the carrier is an onion when it signed.
        let mail = onionpost_runtime::carry_mail::statement_message(
            &record.account_id,
            &record.identity_id,
            &record.address,
            request.carrier.trim(),
            &statement,
        );
        let to = mail.recipients[0].address.clone();
        state
            .directory
            .queue()?
            .enqueue(mail)
            .await
            .upstream(ServiceName::Queue)?;
        tracing::info!(account_id, "carry statement sent in mail from the portal");
        Some(to)
    } else {
        None
    };
    Ok(CarryStatement { statement, sent_to })
}
