//! What the fuzz targets share: one runtime per thread, a peer that writes the fuzzer's bytes
//! into an in-memory session and drains every reply, and the fixed OpenPGP keys of
//! `fuzz/fixtures/` (made once with GnuPG, so that seed messages encrypted to Alice and signed
//! by Bob reach past decryption and signature checks).
//!
//! Targets drive the services through their public entry points only, the same ones the
//! listeners and the in-memory tests use; nothing here reaches into a crate's privates.

use std::future::Future;
use std::sync::LazyLock;

use onionpost_keys::{Cert, IdentityKey, parse_cert};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

thread_local! {
    /// Building a runtime per input would cost more than most inputs take to parse.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
}

/// Runs `future` to its end on this thread's runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// Serves one session over an in-memory stream while its peer sends `input`, then closes its
/// side, and reads every reply until the session drops the stream. A session that neither
/// ends nor reads after EOF hangs here, which libFuzzer reports as a timeout.
pub async fn converse<F>(input: &[u8], serve: impl FnOnce(DuplexStream) -> F) -> Vec<u8>
where
    F: Future<Output = ()>,
{
    let (peer, session_side) = tokio::io::duplex(64 * 1024);
    let (mut from_session, mut to_session) = tokio::io::split(peer);
    let send = async move {
        // A session that closes early (QUIT, too many errors) refuses the rest: not an error.
        let _ = to_session.write_all(input).await;
        let _ = to_session.shutdown().await;
    };
    let drain = async move {
        let mut replies = Vec::new();
        let _ = from_session.read_to_end(&mut replies).await;
        replies
    };
    let ((), (), replies) = tokio::join!(serve(session_side), send, drain);
    replies
}

/// Alice's identity key, secret parts included: the recipient every seed message is for.
pub static ALICE: LazyLock<IdentityKey> = LazyLock::new(|| {
    IdentityKey::import_secret(include_bytes!("../fixtures/alice.key"), None)
        .expect("fuzz/fixtures/alice.key is an identity key")
});

/// Bob's certificate: the signer of the seed messages and statements.
pub static BOB: LazyLock<Cert> = LazyLock::new(|| {
    parse_cert(include_bytes!("../fixtures/bob.pub")).expect("fuzz/fixtures/bob.pub is a cert")
});

/// Splits the input at its first NUL: for targets that take two texts (a config file and its
/// environment, a header and a message).
pub fn split_at_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|byte| *byte == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

/// The integration tests' in-memory mail store, used as they use it.
#[allow(dead_code)]
#[path = "../../services/imap/tests/imap_support/mod.rs"]
mod imap_support;

/// One IMAP session over `input` through a fresh server and store (Alice, password "secret"),
/// so that the login back-off and the mail of one input cannot change the next.
pub fn imap_session(input: &[u8]) {
    use onionpost_imap::mailstore::SharedMailStore;
    use onionpost_imap::server::{ConnectionInfo, ImapServer, Limits, Security};

    let store: SharedMailStore = imap_support::MemStore::new(&[("alice", "secret")]);
    let limits = Limits {
        max_message_size: 1024 * 1024,
        ..Limits::default()
    };
    let server = ImapServer::new(store, limits, None);
    let info = ConnectionInfo {
        connection_key: "fuzz".to_owned(),
        security: Security::Loopback,
        starttls: false,
        required_account: None,
        login_alias: None,
    };
    block_on(converse(input, |stream| async move {
        server.serve_stream(Box::new(stream), info).await;
    }));
}

/// Panics the code under test catches itself, by where they are raised: a dependency's known
/// bug, caught where it is called and read as bad input (see each call site). libFuzzer's
/// panic hook aborts before any unwinding, so these are let through to be caught; every other
/// panic still aborts. Tied to the version, so that an upgrade that fixes one, or moves it,
/// shows again.
pub const CAUGHT_PANICS: &[(&str, u32)] = &[
    // keys::pgp_mime::open: an encrypted packet cut short.
    ("sequoia-openpgp-2.4.2/src/parse.rs", 6367),
    // imap's server::parse: a malformed multipart structure.
    ("mail-parser-0.11.9/src/parsers/message.rs", 485),
];

/// Installs a panic hook that lets [`CAUGHT_PANICS`] unwind to where they are caught and
/// aborts on every other panic, as libFuzzer's own hook does. For `fuzz_target!(init: …)`.
pub fn let_caught_panics_unwind() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let caught = info.location().is_some_and(|at| {
            CAUGHT_PANICS
                .iter()
                .any(|(file, line)| at.file().ends_with(file) && at.line() == *line)
        });
        if !caught {
            abort(info);
        }
    }));
}
