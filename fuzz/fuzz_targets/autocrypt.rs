//! Autocrypt headers (Level 1, §2.1 and §2.3) as they arrive in mail from any onion: the
//! attribute syntax, the address, the base64 keydata and the certificate inside it, and the
//! choice of the one header that names the From address among a message's fields.
//!
//! Input up to the first NUL is a header value; the rest (or everything, without a NUL) is a
//! message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onionpost_keys::autocrypt::AutocryptHeader;

fuzz_target!(|data: &[u8]| {
    let (value, message) = onionpost_fuzz::split_at_nul(data);
    if let Ok(value) = std::str::from_utf8(value) {
        let _ = AutocryptHeader::parse(value);
    }
    let _ = AutocryptHeader::from_message(if message.is_empty() { data } else { message });
});
