//! Inbound clearnet mail at the gateway domain's MX, after DATA: mail-auth's message parser
//! (which every message from the internet meets first, for DKIM and DMARC) and the removal of
//! every Authentication-Results and X-Spam field that came with the message (RFC 8601 §5), in
//! any spelling, folded or not, before the gateway stamps its own.
//!
//! Checks, for messages the MX can receive (CRLF line endings only), besides not crashing,
//! that mail-auth's reading of the result (the gateway's own reader of inbound mail) finds no
//! such field left: a forged one that survives would tell the recipient a message passed DKIM
//! and DMARC, or was no spam, when nobody checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_auth::AuthenticatedMessage;
use onionpost_gateway::inbound::{is_verdict_field, without_verdict_fields};

/// Whether every CR and LF is part of a CRLF: the only messages the MX's DATA reader passes on
/// (onionpost-smtp-server refuses a bare CR or LF, RFC 5321 §2.3.8).
fn crlf_only(message: &[u8]) -> bool {
    message.iter().enumerate().all(|(at, byte)| match byte {
        b'\r' => message.get(at + 1) == Some(&b'\n'),
        b'\n' => at > 0 && message[at - 1] == b'\r',
        _ => true,
    })
}

fuzz_target!(|message: &[u8]| {
    let _ = AuthenticatedMessage::parse(message);
    if !crlf_only(message) {
        // Bare line endings never get this far, and lenient readers disagree about them.
        return;
    }
    let stripped = without_verdict_fields(message);
    let Some(parsed) = AuthenticatedMessage::parse(&stripped) else {
        return;
    };
    // A line without a colon is listed by mail-auth as a name without a value: it claims
    // nothing, so only fields with a value count.
    let forged = parsed.headers.iter().find(|(name, value)| {
        is_verdict_field(name.trim_ascii()) && !value.trim_ascii().is_empty()
    });
    assert!(
        forged.is_none(),
        "a forged Authentication-Results or X-Spam field survived: {:?}",
        String::from_utf8_lossy(&stripped)
    );
});
