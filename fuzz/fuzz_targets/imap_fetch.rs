//! A message as IMAP clients see it: the fuzzer's bytes are one message, APPENDed and then
//! FETCHed every way a client asks (ENVELOPE and BODYSTRUCTURE built with mail-parser, header
//! fields, numbered parts and their MIME headers, partial ranges) and searched. Mail reaches
//! the store from any onion or clearnet sender, so every byte of it is hostile.
#![no_main]

use libfuzzer_sys::fuzz_target;

const FETCHES: &str = "\
f1 FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY)\r\n\
f2 FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BODY.PEEK[TEXT]<0.64>)\r\n\
f3 FETCH 1 (BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2.1] BODY.PEEK[2.1.HEADER] BODY.PEEK[3.TEXT])\r\n\
f4 UID FETCH 1:* (RFC822.HEADER RFC822.TEXT RFC822)\r\n\
s1 SEARCH TEXT hello\r\n\
s2 SEARCH HEADER Subject hi\r\n\
z LOGOUT\r\n";

// mail-parser's known panic is caught by imap itself (onionpost_fuzz::CAUGHT_PANICS).
fuzz_target!(init: onionpost_fuzz::let_caught_panics_unwind(), |message: &[u8]| {
    let mut input = format!(
        "a LOGIN alice secret\r\nb APPEND INBOX {{{}+}}\r\n",
        message.len()
    )
    .into_bytes();
    input.extend_from_slice(message);
    input.extend_from_slice(b"\r\nc SELECT INBOX\r\n");
    input.extend_from_slice(FETCHES.as_bytes());

    onionpost_fuzz::imap_session(&input);
});
