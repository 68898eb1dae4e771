//! Reading an OpenPGP message with a ceiling on what it may expand to.
//!
//! A compressed data packet (RFC 9580 §5.6) can turn a few KiB on the wire into gigabytes, and
//! every peer on the onion MX may send one: the carrier opens incoming mail automatically, so an
//! unbounded `read_to_end` is a memory bomb. Every message this crate opens is read through
//! [`read_bounded`]. Nesting needs no code here: sequoia's packet parser refuses containers
//! nested deeper than its recursion limit (16 levels).

use std::io::Read;

use crate::KeysError;

/// Most an opened PGP/MIME message may expand to, however small its ciphertext: above any size
/// limit the carrier accepts (smtp-in's default 25 MiB) with room for compression.
pub const MAX_OPENED_BYTES: usize = 64 * 1024 * 1024;
/// Least ceiling of an opened message, so short messages that compress well still open.
const MIN_OPENED_BYTES: usize = 4 * 1024 * 1024;
/// How much larger than its ciphertext a message may grow when decompressed: ordinary text
/// compresses three to ten times; a bomb, thousands.
const MAX_EXPANSION: usize = 32;
/// Most a signed statement (carry request, carrier list) or an identity bundle may expand to.
pub const MAX_STATEMENT_BYTES: usize = 1024 * 1024;

/// How much plaintext sequoia's decryptor and verifier may hold back while they check a
/// message (their default is 25 MiB, allocated whatever the ceiling above): beyond it they hand
/// out what they read before the signature is checked, which is safe here because every caller
/// reads to the end and only then looks at the verdict.
pub const PARSER_BUFFER_BYTES: usize = 1024 * 1024;

/// The ceiling for opening a message of `ciphertext_len` bytes.
pub fn opened_limit(ciphertext_len: usize) -> usize {
    ciphertext_len
        .saturating_mul(MAX_EXPANSION)
        .clamp(MIN_OPENED_BYTES, MAX_OPENED_BYTES)
}

/// Reads `reader` to its end into `into`, refusing anything that yields more than `limit`
/// bytes; `what` names the thing read in the error.
pub fn read_bounded(
    mut reader: impl Read,
    into: &mut Vec<u8>,
    limit: usize,
    what: &str,
) -> Result<(), KeysError> {
    let ceiling = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    (&mut reader)
        .take(ceiling)
        .read_to_end(into)
        .map_err(|error| KeysError::CorruptMessage(format!("{what}: {error}")))?;
    if into.len() > limit {
        into.clear();
        return Err(KeysError::TooLarge {
            what: what.to_owned(),
            limit,
        });
    }
    Ok(())
}
