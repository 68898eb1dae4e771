//! An smtp-in session (onion MX or submission) fed the fuzzer's bytes as the client's side of
//! the conversation: command lines with their parameters (SIZE, BODY, SMTPUTF8, the DSN
//! parameters RET, ENVID, NOTIFY and ORCPT with xtext), AUTH PLAIN and LOGIN exchanges,
//! pipelining, DATA with dot-stuffing, and the message headers read after DATA.
//!
//! The first byte picks the listener: even, Alice's onion MX; odd, carrier-wide submission.
//! The backend answers like the in-memory tests' fake: Alice and Bob exist, Alice logs in
//! with "secret pass", every key lookup succeeds and every delivery is accepted.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use onionpost_proto::imap::v1::{
    Account, AccountState, AuthenticateResponse, DeliverRequest, DeliverResponse, Identity,
};
use onionpost_proto::keys::v1::{
    DecryptAndVerifyResponse, KeyCustody, RecipientKey, RecipientKeyStatus, SignAndEncryptRequest,
    SignatureStatus,
};
use onionpost_proto::queue::v1::{CheckCarryResponse, EnqueueRequest};
use onionpost_runtime::config::PlaintextPolicy;
use onionpost_smtp_in::backend::Correspondence;
use onionpost_smtp_in::{Backend, Limits, Mode, Policy, Session, SmtpInError, Stats};

const ALICE_ONION: &str = "mfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqwbfad.onion";
const BOB_ONION: &str = "mjrgeytcmjrgeytcmjrgeytcmjrgeytcmjrgeytcmjrgeytcmjrk3xyd.onion";

fn identity(name: &str, onion: &str) -> Identity {
    Identity {
        identity_id: format!("id-{name}"),
        account_id: format!("acct-{name}"),
        address: format!("{name}@{onion}"),
        onion: onion.to_owned(),
        account_state: AccountState::Active as i32,
        ..Default::default()
    }
}

/// Says yes to everything a well-behaved carrier would, so that input reaches every phase.
struct Yes;

#[async_trait::async_trait]
impl Backend for Yes {
    async fn identity(&self, identity_id: &str) -> Result<Identity, SmtpInError> {
        match identity_id {
            "id-alice" => Ok(identity("alice", ALICE_ONION)),
            "id-bob" => Ok(identity("bob", BOB_ONION)),
            _ => Err(SmtpInError::NotFound),
        }
    }

    async fn authenticate(
        &self,
        login: &str,
        password: &str,
        _connection_key: &str,
        _onion_identity: Option<&str>,
    ) -> Result<AuthenticateResponse, SmtpInError> {
        if login != "alice" || password != "secret pass" {
            return Err(SmtpInError::AuthRefused);
        }
        Ok(AuthenticateResponse {
            account: Some(Account {
                account_id: "acct-alice".to_owned(),
                ..Default::default()
            }),
            identities: vec![identity("alice", ALICE_ONION)],
        })
    }

    async fn deliver(&self, _request: DeliverRequest) -> Result<DeliverResponse, SmtpInError> {
        Ok(DeliverResponse::default())
    }

    async fn resolve_keys(
        &self,
        _sender: &str,
        recipients: &[String],
    ) -> Result<Vec<RecipientKey>, SmtpInError> {
        Ok(recipients
            .iter()
            .map(|address| RecipientKey {
                address: address.clone(),
                status: RecipientKeyStatus::Fetched as i32,
                ..Default::default()
            })
            .collect())
    }

    async fn sign_and_encrypt(
        &self,
        _request: SignAndEncryptRequest,
    ) -> Result<Vec<u8>, SmtpInError> {
        Ok(b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b--\r\n".to_vec())
    }

    async fn custody(&self, _identity_id: &str) -> Result<KeyCustody, SmtpInError> {
        Ok(KeyCustody::Carrier)
    }

    async fn decrypt_and_verify(
        &self,
        _recipient: &str,
        message: &[u8],
    ) -> Result<DecryptAndVerifyResponse, SmtpInError> {
        // The decrypted message is the ciphertext's own bytes: the fuzzer controls both.
        Ok(DecryptAndVerifyResponse {
            message: message.to_vec(),
            signature: SignatureStatus::Verified as i32,
            from_address: format!("bob@{BOB_ONION}"),
            signer_fingerprint: "B0B".to_owned(),
            ..Default::default()
        })
    }

    async fn corresponds(&self, _: &str, address: &str) -> Result<Correspondence, SmtpInError> {
        Ok(match address.split('@').next() {
            Some("alice") => Correspondence::Correspondent,
            Some("mallory") => Correspondence::Blocked,
            _ => Correspondence::Stranger,
        })
    }

    async fn learn_autocrypt(&self, _: &str, _: &str, _: &str) -> Result<(), SmtpInError> {
        Ok(())
    }

    async fn enqueue(&self, _request: EnqueueRequest) -> Result<(), SmtpInError> {
        Ok(())
    }

    async fn flush(&self, _onion: &str) -> Result<(), SmtpInError> {
        Ok(())
    }

    async fn submit_carry_statement(&self, _: Vec<u8>, _: &str) -> Result<(), SmtpInError> {
        Ok(())
    }

    async fn check_carry(
        &self,
        _: &str,
        _: &str,
        _: u64,
    ) -> Result<CheckCarryResponse, SmtpInError> {
        Ok(CheckCarryResponse {
            accepted: true,
            over_limit: false,
        })
    }
}

static POLICY: LazyLock<Arc<Policy>> = LazyLock::new(|| {
    let limits = Limits {
        // Large enough for any input libFuzzer makes (-max_len), small enough to be cheap.
        max_message_bytes: 1024 * 1024,
        ..Limits::default()
    };
    Arc::new(Policy::new(
        PlaintextPolicy::Quarantine,
        limits,
        // No rate limit: a long run sends millions of messages as the one account.
        u32::MAX,
        Stats::default(),
    ))
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode_byte, input)) = data.split_first() else {
        return;
    };
    let mode = if mode_byte % 2 == 0 {
        Mode::Ingress {
            identity_id: "id-alice".to_owned(),
        }
    } else {
        Mode::Submission {
            onion_identity: None,
            auth_allowed: true,
        }
    };
    let session = Session::new(Arc::new(Yes), POLICY.clone(), mode);
    onionpost_fuzz::block_on(onionpost_fuzz::converse(input, |stream| {
        session.run(stream)
    }));
});
