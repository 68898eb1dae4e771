//! The SMTP client (smtp-out to other onions, the gateway to the clearnet) reading a remote
//! server's replies: the fuzzer's bytes are everything the server says (greeting, EHLO
//! capabilities, multi-line and enhanced status replies), while the client runs a whole
//! transaction with DSN parameters and two recipients. Both a peer onion and any clearnet MX
//! are outside our control.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use onionpost_smtp_client::{DsnReturn, Envelope, Notify, Recipient, Timeouts, deliver};

static ENVELOPE: LazyLock<Envelope> = LazyLock::new(|| Envelope {
    reverse_path: "alice@mfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqwcylbmfqwbfad.onion".to_owned(),
    recipients: vec![
        Recipient {
            address: "bob@mjrgeytcmjrgeytcmjrgeytcmjrgeytcmjrgeytcmjrgeytcmjrk3xyd.onion"
                .to_owned(),
            notify: vec![Notify::Success, Notify::Failure],
            original_recipient: "rfc822;bob@example.org".to_owned(),
            // Sent when a fuzzed EHLO offers XSTAMP.
            stamp: Some("1.8.1800000000.00000000000000ff".to_owned()),
        },
        Recipient {
            address: "carol@example.org".to_owned(),
            notify: Vec::new(),
            original_recipient: String::new(),
            stamp: None,
        },
    ],
    envelope_id: "QQ314159".to_owned(),
    dsn_return: Some(DsnReturn::Headers),
});

const MESSAGE: &[u8] = b"Subject: hi\r\n\r\nhello\r\n.leading dot\r\n";

fuzz_target!(|data: &[u8]| {
    onionpost_fuzz::block_on(onionpost_fuzz::converse(data, |stream| async move {
        let _ = deliver(stream, &ENVELOPE, MESSAGE, Timeouts::default()).await;
    }));
});
