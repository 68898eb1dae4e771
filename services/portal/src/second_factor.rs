//! The sign-in's optional second factor: RFC 6238 TOTP codes from an authenticator app
//! (totp-rs computes them: SHA-1, six digits, 30-second steps, as every app expects).
//!
//! Turning it on is two steps: [`begin`] makes a secret (160 random bits, sealed with the
//! carrier secret before it is stored) and shows it with its `otpauth://` link; [`confirm`] takes
//! a first code from the app, and from then on [`check`] asks for a code at every sign-in. A code
//! is accepted for the step before, the step of and the step after the carrier's clock, once:
//! the highest step taken is stored and nothing at or before it works again.
//!
//! Sign-in never says which of the login, the password or the code was wrong: a right password
//! with a wrong or missing code gets exactly the words of a wrong password, so the password
//! alone confirms nothing. Code attempts are counted per account ([`CODE_ATTEMPTS_PER_HOUR`]);
//! past that, sign-in fails the same way without a code being tried.

use onionpost_runtime::seal::Sealer;
use onionpost_runtime::time::now_ms;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use totp_rs::{Algorithm, Secret, TOTP};
use utoipa::ToSchema;

use crate::PortalState;
use crate::error::PortalError;
use crate::store::SecondFactorRecord;

/// The carrier-secret purpose the TOTP secrets are sealed under.
pub const SEAL_PURPOSE: &str = "portal-totp";
/// Seconds per code (RFC 6238's default, what every app uses).
const STEP_SECS: u64 = 30;
/// Code attempts per account and hour at sign-in (and when turning the factor off).
pub const CODE_ATTEMPTS_PER_HOUR: u32 = 20;
/// The issuer an authenticator app shows.
const ISSUER: &str = "onionpost";

/// Whether the account's sign-in asks for a code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecondFactor {
    pub enabled: bool,
}

/// A second factor being turned on: what to put in the authenticator app. Shown once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Enrolment {
    /// The secret, base32, to type into the app.
    pub secret: String,
    /// `otpauth://totp/…`: the same as a link or QR code for the app.
    pub otpauth_uri: String,
}

fn totp(secret: Vec<u8>) -> Result<TOTP, PortalError> {
    TOTP::new(Algorithm::SHA1, 6, 1, STEP_SECS, secret).map_err(|error| {
        tracing::error!(?error, "a stored TOTP secret is unusable");
        PortalError::Internal
    })
}

fn sealer(state: &PortalState) -> &Sealer {
    &state.totp_sealer
}

/// The time step `code` is the code of, among the step before, of and after `now_secs`.
fn matching_step(totp: &TOTP, code: &str, now_secs: u64) -> Option<i64> {
    let code = code.trim().replace(' ', "");
    let now_step = now_secs / STEP_SECS;
    let mut found = None;
    // Every candidate is computed and compared in constant time, whichever matches.
    for step in [now_step.saturating_sub(1), now_step, now_step + 1] {
        let expected = totp.generate(step * STEP_SECS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = i64::try_from(step).ok();
        }
    }
    found
}

fn now_secs() -> u64 {
    u64::try_from(now_ms() / 1000).unwrap_or_default()
}

/// Whether the account's sign-in asks for a code.
pub async fn status(state: &PortalState, account_id: &str) -> Result<SecondFactor, PortalError> {
    let stored = state.store.second_factor(account_id).await?;
    Ok(SecondFactor {
        enabled: stored.is_some_and(|factor| factor.confirmed),
    })
}

/// Makes a new secret for the account (replacing one not yet confirmed). Refused while one is on.
pub async fn begin(
    state: &PortalState,
    account_id: &str,
    login: &str,
) -> Result<Enrolment, PortalError> {
    let mut secret = vec![0_u8; 20];
    rand::rng().fill_bytes(&mut secret);
    let record = SecondFactorRecord {
        account_id: account_id.to_owned(),
        sealed_secret: sealer(state).seal(&secret, account_id.as_bytes()),
        confirmed: false,
        last_step: 0,
        created_at_ms: now_ms(),
    };
    if !state.store.begin_second_factor(&record).await? {
        return Err(PortalError::Conflict(
            "two-factor sign-in is already on; turn it off first".to_owned(),
        ));
    }
    let Secret::Encoded(encoded) = Secret::Raw(secret).to_encoded() else {
        return Err(PortalError::Internal);
    };
    let label: String = form_urlencoded::byte_serialize(format!("{ISSUER}:{login}").as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    Ok(Enrolment {
        otpauth_uri: format!(
            "otpauth://totp/{label}?secret={encoded}&issuer={ISSUER}&algorithm=SHA1&digits=6&period={STEP_SECS}"
        ),
        secret: encoded,
    })
}

/// Checks `code` against the account's factor and takes its step; false for a wrong, old or
/// reused code, or when the account has none.
async fn take(
    state: &PortalState,
    record: &SecondFactorRecord,
    code: &str,
) -> Result<bool, PortalError> {
    let secret = sealer(state)
        .open(&record.sealed_secret, record.account_id.as_bytes())
        .map_err(|_| {
            tracing::error!("a TOTP secret cannot be opened with the carrier secret");
            PortalError::Internal
        })?;
    let Some(step) = matching_step(&totp(secret.to_vec())?, code, now_secs()) else {
        return Ok(false);
    };
    Ok(state.store.take_step(&record.account_id, step).await?)
}

/// Confirms a factor begun with [`begin`] with a first code from the app: sign-in asks for codes
/// from now on.
pub async fn confirm(state: &PortalState, account_id: &str, code: &str) -> Result<(), PortalError> {
    let record = state
        .store
        .second_factor(account_id)
        .await?
        .filter(|factor| !factor.confirmed)
        .ok_or_else(|| {
            PortalError::Conflict("begin turning two-factor sign-in on first".to_owned())
        })?;
    if code.len() > 64 || !take(state, &record, code).await? {
        return Err(PortalError::invalid(
            "code",
            "is not the app's current code",
        ));
    }
    tracing::info!(account_id, "two-factor sign-in turned on in the portal");
    Ok(())
}

/// At sign-in, after the password: passes when the account has no confirmed factor, or `code`
/// is its current code. Any failure is [`PortalError::SignInFailed`], the words of a wrong
/// password.
pub async fn check(state: &PortalState, account_id: &str, code: &str) -> Result<(), PortalError> {
    let Some(record) = state
        .store
        .second_factor(account_id)
        .await?
        .filter(|factor| factor.confirmed)
    else {
        return Ok(());
    };
    if code.is_empty() || code.len() > 64 || !state.code_attempts.check(account_id) {
        return Err(PortalError::SignInFailed);
    }
    if take(state, &record, code).await? {
        Ok(())
    } else {
        Err(PortalError::SignInFailed)
    }
}

/// Turns the factor off, with a current code (the password was checked by the caller).
pub async fn disable(state: &PortalState, account_id: &str, code: &str) -> Result<(), PortalError> {
    let record = state
        .store
        .second_factor(account_id)
        .await?
        .filter(|factor| factor.confirmed)
        .ok_or_else(|| PortalError::Conflict("two-factor sign-in is not on".to_owned()))?;
    if code.len() > 64
        || !state.code_attempts.check(account_id)
        || !take(state, &record, code).await?
    {
        return Err(PortalError::invalid(
            "code",
            "is not the app's current code",
        ));
    }
    state.store.delete_second_factor(account_id).await?;
    tracing::info!(account_id, "two-factor sign-in turned off in the portal");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_rfc_6238_and_only_near_steps() {
        // RFC 6238 Appendix B, SHA-1, with its 20-byte ASCII key and 8 digits there; six here
        // are the last six of the same value (59 s: 94287082 → 287082).
        let totp = TOTP::new(Algorithm::SHA1, 6, 1, 30, b"12345678901234567890".to_vec()).unwrap();
        assert_eq!(totp.generate(59), "287082");
        assert_eq!(matching_step(&totp, "287082", 59), Some(1));
        assert_eq!(
            matching_step(&totp, "287 082", 59 + 30),
            Some(1),
            "the step before"
        );
        assert_eq!(matching_step(&totp, "287082", 59 + 90), None, "too old");
        assert_eq!(matching_step(&totp, "000000", 59), None);
        assert_eq!(matching_step(&totp, "", 59), None);
    }
}
