//! Opening received PGP/MIME mail (RFC 3156): the MIME structure around the ciphertext, the
//! OpenPGP packets (sequoia), decryption with Alice's key, the signature check against Bob's
//! certificate, and the inner message with its protected headers. Any onion can send Alice
//! such a message; the keys service opens it for carrier-custody identities.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onionpost_fuzz::{ALICE, BOB};
use onionpost_keys::pgp_mime;

/// The one panic `pgp_mime::open` catches itself (sequoia-openpgp 2.4.2 on an encrypted packet
/// cut short; see the comment there). libFuzzer's panic hook aborts before any unwinding, so
/// this panic is let through to be caught; every other still aborts. Tied to the version, so
/// that an upgrade that fixes it, or moves it, shows again.
const CAUGHT_SEQUOIA_PANIC: (&str, u32) = ("sequoia-openpgp-2.4.2/src/parse.rs", 6367);

fn let_caught_panic_unwind() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let caught = info.location().is_some_and(|at| {
            at.file().ends_with(CAUGHT_SEQUOIA_PANIC.0) && at.line() == CAUGHT_SEQUOIA_PANIC.1
        });
        if !caught {
            abort(info);
        }
    }));
}

fuzz_target!(init: let_caught_panic_unwind(), |message: &[u8]| {
    if let Ok(opened) = pgp_mime::open(message, &[&*ALICE], std::slice::from_ref(&*BOB)) {
        let _ = opened.verified_sender();
    }
});
