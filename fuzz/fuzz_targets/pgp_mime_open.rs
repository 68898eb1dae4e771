//! Opening received PGP/MIME mail (RFC 3156): the MIME structure around the ciphertext, the
//! OpenPGP packets (sequoia), decryption with Alice's key, the signature check against Bob's
//! certificate, and the inner message with its protected headers. Any onion can send Alice
//! such a message; the keys service opens it for carrier-custody identities.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onionpost_fuzz::{ALICE, BOB};
use onionpost_keys::pgp_mime;

// sequoia's known panic is caught by `pgp_mime::open` itself (onionpost_fuzz::CAUGHT_PANICS).
fuzz_target!(init: onionpost_fuzz::let_caught_panics_unwind(), |message: &[u8]| {
    if let Ok(opened) = pgp_mime::open(message, &[&*ALICE], std::slice::from_ref(&*BOB)) {
        let _ = opened.verified_sender();
    }
});
