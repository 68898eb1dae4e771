//! Delivery-status notifications (RFC 3464, RFC 6522). onionpost parses no DSN: reports are
//! only written, by the queue, into the sender's INBOX. What a report is written from comes
//! from outside, though: the reverse path, ENVID and ORCPT the client gave (their DSN
//! parameters are parsed by smtp-proto in smtp-in, fuzzed by smtp_session), the text of the
//! remote server's reply, and the original message, returned whole or as its header.
//!
//! Input: a flags byte, then reverse path, Message-ID, ENVID, ORCPT, recipient, reply text and
//! the original message, separated by NUL. Checks that the report's own part keeps strict CRLF
//! line endings: a bare CR or LF from any of those would start a field of the sender's choosing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onionpost_queue::dsn::{self, Action, Reported};
use onionpost_queue::store::{
    DsnReturn, MessageRecord, Notify, Origin, RecipientRecord, RecipientState, Reply,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(8, |byte| *byte == 0);
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (reverse_path, message_id, envelope_id, orcpt, address, reply_text) =
        (text(), text(), text(), text(), text(), text());
    let original = parts.next().unwrap_or_default();

    let recipient = RecipientRecord {
        idx: 0,
        address,
        state: RecipientState::PermanentFailure,
        notify: vec![Notify::Failure, Notify::Success],
        original_recipient: orcpt,
        attempts: 1,
        last_attempt_at_ms: None,
        next_attempt_at_ms: None,
        last_reply: None,
        handed_to_carriers: Vec::new(),
        claimed_by: None,
        claimed_until_ms: None,
    };
    let message = MessageRecord {
        queue_id: "q1".to_owned(),
        idempotency_key: String::new(),
        origin: if flags & 4 == 0 {
            Origin::Submission
        } else {
            Origin::Carry
        },
        account_id: "acct-alice".to_owned(),
        sender_identity_id: "id-alice".to_owned(),
        reverse_path,
        message_id,
        envelope_id,
        dsn_return: if flags & 1 == 0 {
            DsnReturn::Headers
        } else {
            DsnReturn::Full
        },
        fan_out_immediately: false,
        body_digest: String::new(),
        size_bytes: original.len() as u64,
        held: false,
        enqueued_at_ms: 1_795_000_000_000,
        expires_at_ms: 1_795_432_000_000,
        recipients: vec![recipient.clone()],
    };
    // The enhanced status is digits the SMTP client formats itself, never the peer's text.
    let reply = (flags & 2 != 0).then(|| Reply {
        code: 550,
        enhanced_status: "5.1.1".to_owned(),
        text: reply_text,
    });
    let action = if flags & 8 == 0 {
        Action::Failed
    } else {
        Action::Delivered
    };
    let lines = [Reported {
        recipient: &recipient,
        action,
        reply,
        at_ms: 1_795_000_100_000,
    }];
    let report = dsn::build(&message, original, &lines, 1_795_000_200_000);

    // The report's own text ends where the returned message starts; nothing before that may
    // hold a CR or LF that is not part of a CRLF.
    let returned = [
        "Content-Type: message/rfc822\r\n\r\n",
        "Content-Type: text/rfc822-headers\r\n\r\n",
    ]
    .iter()
    .filter_map(|marker| find(&report, marker.as_bytes()))
    .min()
    .expect("the report returns the message");
    let own = &report[..returned];
    for (at, byte) in own.iter().enumerate() {
        match byte {
            b'\r' => assert_eq!(
                own.get(at + 1),
                Some(&b'\n'),
                "bare CR at {at}: {:?}",
                String::from_utf8_lossy(own)
            ),
            b'\n' => assert!(
                at > 0 && own[at - 1] == b'\r',
                "bare LF at {at}: {:?}",
                String::from_utf8_lossy(own)
            ),
            _ => {}
        }
    }
});

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
