//! Delivery-status notifications (RFC 3464) for the sender's own INBOX.
//!
//! Only messages an account submitted get DSNs, and only as the sender asked (RFC 3461 NOTIFY:
//! FAILURE and DELAY when unspecified, NEVER for none). They never leave the carrier: the
//! report is queued as a local message and delivered by the imap service into the sending
//! identity's INBOX, so a remote peer never sees a bounce from us (no backscatter).
//!
//! The report is written by hand rather than with a MIME builder: it is three fixed parts of
//! plain text (RFC 3464 §2 fields, RFC 6522 `multipart/report`) whose exact bytes matter to
//! mail clients, and a builder would re-encode the returned headers we must pass on unchanged.

use rand::RngCore;

use crate::store::{DsnReturn, MessageRecord, Notify, Origin, RecipientRecord, Reply};

/// The reporting MTA, as RFC 3464 §2.2.2 requires one: deliberately no host name.
const REPORTING_MTA: &str = "dns; localhost";

/// What happened to a recipient, as a DSN reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delivered,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delivered => "delivered",
        }
    }
}

/// One recipient line of a report.
#[derive(Clone, Debug)]
pub struct Reported<'a> {
    pub recipient: &'a RecipientRecord,
    pub action: Action,
    pub reply: Option<Reply>,
    pub at_ms: i64,
}

/// Whether a recipient's NOTIFY asks for this kind of notice (RFC 3461 §4.1).
pub fn wants(notify: &[Notify], action: Action) -> bool {
    if notify.contains(&Notify::Never) {
        return false;
    }
    match action {
        // Unspecified NOTIFY means FAILURE (and DELAY).
        Action::Failed => notify.is_empty() || notify.contains(&Notify::Failure),
        Action::Delivered => notify.contains(&Notify::Success),
    }
}

/// Whether this message's sender can get DSNs at all: submitted by an account's identity, with
/// a reverse path to report to (a null reverse path never gets one, RFC 5321 §4.5.5).
pub fn sender_gets_dsns(message: &MessageRecord) -> bool {
    message.origin == Origin::Submission
        && !message.sender_identity_id.is_empty()
        && !message.reverse_path.is_empty()
}

/// The enhanced status code of a line (RFC 3463), from the reply or the action.
fn status(line: &Reported<'_>) -> String {
    match &line.reply {
        Some(reply) if !reply.enhanced_status.is_empty() => {
            // A failed recipient must have a 4.x.x or 5.x.x status; a lifetime expiry keeps
            // its 4.4.7 (RFC 3463: "delivery time expired") even though it is final.
            reply.enhanced_status.clone()
        }
        _ => match line.action {
            Action::Failed => "5.0.0".into(),
            Action::Delivered => "2.0.0".into(),
        },
    }
}

fn rfc5322_date(at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at_ms)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

/// The header section of a message (up to the first empty line), unchanged.
fn header_section(body: &[u8]) -> &[u8] {
    for pattern in [&b"\r\n\r\n"[..], &b"\n\n"[..]] {
        if let Some(position) = body.windows(pattern.len()).position(|w| w == pattern) {
            return &body[..position + pattern.len() / 2];
        }
    }
    body
}

/// One header field's value with CR and LF removed, so nothing a peer sent can add fields.
fn field(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Builds the report for `lines` of `message` (whose body is `original`), dated `now_ms`.
pub fn build(
    message: &MessageRecord,
    original: &[u8],
    lines: &[Reported<'_>],
    now_ms: i64,
) -> Vec<u8> {
    let mut random = [0u8; 16];
    rand::rng().fill_bytes(&mut random);
    let token = hex::encode(random);
    let boundary = format!("=_dsn_{token}");
    // The reverse path is the client's; like every other field taken from outside, its domain
    // loses CR and LF (the fuzz target dsn_build wrote a field of its own into From with one).
    let domain = field(&crate::store::domain_of(&message.reverse_path));
    let all_delivered = lines.iter().all(|line| line.action == Action::Delivered);
    let subject = if all_delivered {
        "Delivery Status Notification (Success)"
    } else {
        "Delivery Status Notification (Failure)"
    };
    let mut out = String::new();
    out.push_str(&format!(
        "From: Mail Delivery System <postmaster@{domain}>\r\n"
    ));
    out.push_str(&format!("To: <{}>\r\n", field(&message.reverse_path)));
    out.push_str(&format!("Subject: {subject}\r\n"));
    out.push_str(&format!("Date: {}\r\n", rfc5322_date(now_ms)));
    out.push_str(&format!("Message-ID: <dsn.{token}@{domain}>\r\n"));
    if !message.message_id.is_empty() {
        out.push_str(&format!("In-Reply-To: {}\r\n", field(&message.message_id)));
    }
    // RFC 3834: an automatic message, so no client auto-replies to it.
    out.push_str("Auto-Submitted: auto-replied\r\n");
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));

    // The human-readable part.
    out.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ));
    if all_delivered {
        out.push_str("Your message was delivered to the following recipients:\r\n\r\n");
    } else {
        out.push_str("Your message could not be delivered to the following recipients:\r\n\r\n");
    }
    for line in lines {
        out.push_str(&format!("  {}", field(&line.recipient.address)));
        match &line.reply {
            Some(reply) => out.push_str(&format!(
                ": {} {} {}\r\n",
                reply.code,
                reply.enhanced_status,
                field(&reply.text)
            )),
            None => out.push_str("\r\n"),
        }
    }
    if message.origin == Origin::Carry {
        out.push_str(
            "\r\nThe recipient was offline; this carrier held the message for them until they \
             came back.\r\n",
        );
    }
    if !message.message_id.is_empty() {
        out.push_str(&format!(
            "\r\nThe message's Message-ID was {}.\r\n",
            field(&message.message_id)
        ));
    }

    // The machine-readable part (RFC 3464 §2).
    out.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
    ));
    out.push_str(&format!("Reporting-MTA: {REPORTING_MTA}\r\n"));
    if !message.envelope_id.is_empty() {
        out.push_str(&format!(
            "Original-Envelope-Id: {}\r\n",
            field(&message.envelope_id)
        ));
    }
    out.push_str(&format!(
        "Arrival-Date: {}\r\n",
        rfc5322_date(message.enqueued_at_ms)
    ));
    for line in lines {
        out.push_str("\r\n");
        let orcpt = &line.recipient.original_recipient;
        if !orcpt.is_empty() {
            // ORCPT arrives as `addr-type;address` (RFC 3461 §4.2); a bare address is rfc822.
            if orcpt.contains(';') {
                out.push_str(&format!("Original-Recipient: {}\r\n", field(orcpt)));
            } else {
                out.push_str(&format!("Original-Recipient: rfc822; {}\r\n", field(orcpt)));
            }
        }
        out.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\n",
            field(&line.recipient.address)
        ));
        out.push_str(&format!("Action: {}\r\n", line.action.as_str()));
        out.push_str(&format!("Status: {}\r\n", status(line)));
        if let Some(reply) = &line.reply {
            out.push_str(&format!(
                "Diagnostic-Code: smtp; {} {} {}\r\n",
                reply.code,
                reply.enhanced_status,
                field(&reply.text)
            ));
        }
        out.push_str(&format!(
            "Last-Attempt-Date: {}\r\n",
            rfc5322_date(line.at_ms)
        ));
    }

    // The returned message: headers only unless RET=FULL (RFC 3461 §4.3).
    let mut bytes = out.into_bytes();
    if message.dsn_return == DsnReturn::Full {
        bytes.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n").as_bytes(),
        );
        bytes.extend_from_slice(original);
    } else {
        bytes.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n").as_bytes(),
        );
        bytes.extend_from_slice(header_section(original));
    }
    if !bytes.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DsnReturn, RecipientState};

    fn message(dsn_return: DsnReturn) -> MessageRecord {
        MessageRecord {
            queue_id: "q1".into(),
            idempotency_key: "k".into(),
            origin: Origin::Submission,
            account_id: "acct".into(),
            sender_identity_id: "id-a".into(),
            reverse_path: "alice@a.onion".into(),
            message_id: "<m1@a.onion>".into(),
            envelope_id: "env-7".into(),
            dsn_return,
            fan_out_immediately: false,
            body_digest: String::new(),
            size_bytes: 0,
            held: false,
            enqueued_at_ms: 0,
            expires_at_ms: 0,
            recipients: Vec::new(),
        }
    }

    fn recipient(address: &str, notify: Vec<Notify>) -> RecipientRecord {
        RecipientRecord {
            idx: 0,
            address: address.into(),
            state: RecipientState::PermanentFailure,
            notify,
            original_recipient: "rfc822;carol@c.onion".into(),
            attempts: 3,
            last_attempt_at_ms: None,
            next_attempt_at_ms: None,
            last_reply: None,
            handed_to_carriers: Vec::new(),
            claimed_by: None,
            claimed_until_ms: None,
        }
    }

    #[test]
    fn notify_semantics_follow_rfc_3461() {
        assert!(wants(&[], Action::Failed));
        assert!(!wants(&[], Action::Delivered));
        assert!(wants(&[Notify::Success], Action::Delivered));
        assert!(!wants(&[Notify::Success], Action::Failed));
        assert!(wants(&[Notify::Failure, Notify::Delay], Action::Failed));
        assert!(!wants(&[Notify::Never], Action::Failed));
    }

    /// Found by the fuzz target dsn_build: a CR in the reverse path's domain reached From and
    /// Message-ID unchanged, so the sender could add header fields to the report.
    #[test]
    fn a_cr_or_lf_in_the_reverse_path_adds_no_field() {
        let mut record = message(DsnReturn::Headers);
        record.reverse_path = "alice@a.onion\r\nBcc: eve@e.onion\rX-Evil: 1".into();
        let carol = recipient("carol@c.onion", vec![]);
        let lines = [Reported {
            recipient: &carol,
            action: Action::Failed,
            reply: None,
            at_ms: 0,
        }];
        let report = build(&record, b"Subject: hi\r\n\r\n", &lines, 0);
        let text = String::from_utf8(report).unwrap();
        let header = &text[..text.find("\r\n\r\n").unwrap()];
        for line in header.split("\r\n") {
            assert!(!line.contains(['\r', '\n']), "bare CR or LF in {line:?}");
            assert!(
                !line.starts_with("Bcc") && !line.starts_with("X-Evil"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn a_failure_report_has_the_three_parts_and_headers_only() {
        let original = b"From: alice@a.onion\r\nSubject: hello\r\n\r\nsecret body\r\n";
        let carol = recipient("carol@c.onion", vec![]);
        let lines = [Reported {
            recipient: &carol,
            action: Action::Failed,
            reply: Some(Reply {
                code: 550,
                enhanced_status: "5.1.1".into(),
                text: "mailbox unavailable".into(),
            }),
            at_ms: 1_000,
        }];
        let report = build(&message(DsnReturn::Unspecified), original, &lines, 2_000);
        let text = String::from_utf8(report).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status"));
        assert!(text.contains("Reporting-MTA: dns; localhost\r\n"));
        assert!(text.contains("Original-Envelope-Id: env-7\r\n"));
        assert!(text.contains("Original-Recipient: rfc822;carol@c.onion\r\n"));
        assert!(text.contains("Final-Recipient: rfc822; carol@c.onion\r\n"));
        assert!(text.contains("Action: failed\r\nStatus: 5.1.1\r\n"));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 mailbox unavailable\r\n"));
        assert!(text.contains(
            "Content-Type: text/rfc822-headers\r\n\r\nFrom: alice@a.onion\r\nSubject: hello\r\n"
        ));
        assert!(!text.contains("secret body"), "RET=HDRS returns no body");
        assert!(text.contains("To: <alice@a.onion>\r\n"));
        assert!(text.contains("From: Mail Delivery System <postmaster@a.onion>\r\n"));
        assert!(text.trim_end().ends_with("--"));
        let full = build(&message(DsnReturn::Full), original, &lines, 2_000);
        assert!(String::from_utf8(full).unwrap().contains("secret body"));
    }
}
