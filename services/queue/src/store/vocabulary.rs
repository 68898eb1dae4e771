//! The queue's words: why a message is queued, where a recipient's delivery stands, what its
//! sender asked to be told (RFC 3461), and what recording a result did to a message. Each
//! stored word has one spelling (`as_str`) and is read back by `parse`, which refuses any other.

use super::StoreError;

/// Why a message is queued (queue.proto `Origin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Submission,
    Carry,
    /// Made by this carrier (a DSN); delivered to the imap service, not through smtp-out.
    Local,
    /// Received on an identity's onion MX from a sender with no pinned key: verified against
    /// the key from the sender's onion, then delivered to the imap service (queue.proto).
    Received,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Submission => "submission",
            Origin::Carry => "carry",
            Origin::Local => "local",
            Origin::Received => "received",
        }
    }

    pub(super) fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "submission" => Ok(Origin::Submission),
            "carry" => Ok(Origin::Carry),
            "local" => Ok(Origin::Local),
            "received" => Ok(Origin::Received),
            other => Err(StoreError::Corrupt(format!("unknown origin {other:?}"))),
        }
    }
}

/// Where a recipient's delivery stands (queue.proto `RecipientState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecipientState {
    Scheduled,
    Delivered,
    TemporaryFailure,
    PermanentFailure,
}

impl RecipientState {
    pub const ALL: [RecipientState; 4] = [
        RecipientState::Scheduled,
        RecipientState::Delivered,
        RecipientState::TemporaryFailure,
        RecipientState::PermanentFailure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Scheduled => "scheduled",
            RecipientState::Delivered => "delivered",
            RecipientState::TemporaryFailure => "temporary_failure",
            RecipientState::PermanentFailure => "permanent_failure",
        }
    }

    /// Delivered or failed for good: nothing more will be tried.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RecipientState::Delivered | RecipientState::PermanentFailure
        )
    }

    pub(super) fn parse(text: &str) -> Result<Self, StoreError> {
        RecipientState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown recipient state {text:?}")))
    }
}

/// RFC 3461 NOTIFY values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    Never,
    Success,
    Failure,
    Delay,
}

impl Notify {
    pub fn as_str(self) -> &'static str {
        match self {
            Notify::Never => "never",
            Notify::Success => "success",
            Notify::Failure => "failure",
            Notify::Delay => "delay",
        }
    }

    pub(super) fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "never" => Ok(Notify::Never),
            "success" => Ok(Notify::Success),
            "failure" => Ok(Notify::Failure),
            "delay" => Ok(Notify::Delay),
            other => Err(StoreError::Corrupt(format!("unknown notify {other:?}"))),
        }
    }
}

/// RFC 3461 RET.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DsnReturn {
    Unspecified,
    Full,
    Headers,
}

impl DsnReturn {
    pub fn as_str(self) -> &'static str {
        match self {
            DsnReturn::Unspecified => "",
            DsnReturn::Full => "full",
            DsnReturn::Headers => "headers",
        }
    }

    pub(super) fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "" => Ok(DsnReturn::Unspecified),
            "full" => Ok(DsnReturn::Full),
            "headers" => Ok(DsnReturn::Headers),
            other => Err(StoreError::Corrupt(format!("unknown dsn return {other:?}"))),
        }
    }
}

/// What happened to a message after results were recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterRecord {
    /// Some recipients are still unfinished.
    Pending,
    /// Every recipient is final: the message and its body are gone.
    Finished,
}

/// One UTC day in milliseconds: carried mail is counted per address and day.
pub const DAY_MS: i64 = 86_400_000;

/// The domain of an address, lower case (`carol@X.onion` → `x.onion`); a v3 onion in its
/// canonical form (`carol@www.X.onion` → `x.onion`), so one onion is one destination.
pub fn domain_of(address: &str) -> String {
    let domain = address
        .rsplit_once('@')
        .map(|(_, domain)| domain)
        .unwrap_or_default()
        .trim_end_matches('>');
    match onionpost_proto::address::OnionHost::parse(domain) {
        Ok(onion) => onion.to_string(),
        Err(_) => domain.to_ascii_lowercase(),
    }
}

/// Where a carry statement received in mail stands (queue.proto `CarryRequestState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CarryRequestState {
    Verifying,
    Pending,
    Accepted,
    Refused,
}

impl CarryRequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            CarryRequestState::Verifying => "verifying",
            CarryRequestState::Pending => "pending",
            CarryRequestState::Accepted => "accepted",
            CarryRequestState::Refused => "refused",
        }
    }

    pub(super) fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "verifying" => Ok(CarryRequestState::Verifying),
            "pending" => Ok(CarryRequestState::Pending),
            "accepted" => Ok(CarryRequestState::Accepted),
            "refused" => Ok(CarryRequestState::Refused),
            other => Err(StoreError::Corrupt(format!(
                "unknown carry request state {other:?}"
            ))),
        }
    }
}
