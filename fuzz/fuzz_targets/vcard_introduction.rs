//! Introductions (RFC 6350 vCards in an RFC 3156 multipart/signed entity): the MIME entity,
//! Bob's detached signature over the vCard part, and the vCard's EMAIL and KEY (a data: URI of
//! a certificate that must hold that address). A correspondent sends these inside mail.
//!
//! The whole input is tried as an introduction signed by Bob and, as UTF-8, as a bare vCard.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onionpost_fuzz::BOB;
use onionpost_keys::introduction;

fuzz_target!(|data: &[u8]| {
    let _ = introduction::verify(data, std::slice::from_ref(&*BOB));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = introduction::parse_vcard(text);
    }
});
