//! An IMAP session (imap-next's state machine, imap-codec's parser, our command handlers) fed
//! the fuzzer's bytes as the client's side: commands, literals (synchronising and LITERAL+),
//! AUTHENTICATE continuations, IDLE and DONE, sequence sets, search keys and FETCH items.
//!
//! The first byte (modulo 3) picks where the input starts: 0 before login; 1 logged in as
//! alice; 2 logged in with one message in INBOX, selected. Every input gets a fresh in-memory
//! store (the integration tests' own, tests/imap_support) and server, so the login back-off
//! and appended mail of one input cannot change the next.
#![no_main]

use libfuzzer_sys::fuzz_target;

const MESSAGE: &str = "From: bob@example.org\r\nTo: alice@example.org\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\n";

fn prelude(choice: u8) -> String {
    let login = "p1 LOGIN alice secret\r\n";
    match choice % 3 {
        0 => String::new(),
        1 => login.to_owned(),
        _ => format!(
            "{login}p2 APPEND INBOX {{{}+}}\r\n{MESSAGE}\r\np3 SELECT INBOX\r\n",
            MESSAGE.len()
        ),
    }
}

// mail-parser's known panic is caught by imap itself (onionpost_fuzz::CAUGHT_PANICS).
fuzz_target!(init: onionpost_fuzz::let_caught_panics_unwind(), |data: &[u8]| {
    let Some((&choice, commands)) = data.split_first() else {
        return;
    };
    let mut input = prelude(choice).into_bytes();
    input.extend_from_slice(commands);
    onionpost_fuzz::imap_session(&input);
});
