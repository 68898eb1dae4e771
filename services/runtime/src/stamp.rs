//! Proof-of-work stamps asked of strangers (design.md, "Spam and abuse"; issue 22).
//!
//! Every sender reaches an onion MX through tor, so no address says who is sending. A sender
//! the recipient identity does not correspond with pays for its message with work instead: a
//! stamp whose hash has `bits` leading zero bits, bound to this message and this recipient, so
//! it buys exactly one delivery. The receiving carrier states the difficulty in the SMTP
//! dialogue (the `XSTAMP` ESMTP keyword and the reply that asks for a stamp), remembers spent
//! stamps until they expire, and raises the difficulty with that identity's own load.
//!
//! The hash is SHA-256, as Hashcash's: verifying costs one compression (about a microsecond),
//! minting costs 2^bits of them on average, and every phone and server has SHA-256 in hardware,
//! so an honest sender is not far behind an attacker's CPU. Its weakness is the GPU, which
//! mints faster; Equi-X (tor's onion-service puzzle) would narrow that and fits the same
//! binding and wire format under a new version number.
//!
//! A stamp's hash covers: a domain tag and version, the recipient address, the sender (the
//! reverse path), the SHA-256 of the message exactly as sent (every line ending in CRLF, see
//! smtp-client's `wire_text`), the second it was minted, the difficulty it was minted for and a
//! nonce. The wire form is `1.<bits>.<unix seconds>.<nonce as 16 hex digits>`.

use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

/// The EHLO keyword (followed by the difficulty in bits) and the RCPT parameter name.
pub const KEYWORD: &str = "XSTAMP";

/// The version of the stamp format and hash input.
const VERSION: u32 = 1;

/// What the hash input starts with: no other SHA-256 input of the product begins so.
const DOMAIN: &[u8] = b"onionpost-stamp-v1\0";

/// The most bits a stamp may claim: more would take longer than the universe has left.
pub const MAX_BITS: u32 = 64;

/// A stamp as it travels in `RCPT TO:<…> XSTAMP=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The difficulty it was minted for: its hash must have at least this many leading zeros.
    pub bits: u32,
    /// When it was minted, in seconds since the epoch.
    pub minted_at: i64,
    pub nonce: u64,
}

/// Why a stamp's text is not a stamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("a stamp is 1.<bits>.<unix seconds>.<16 hex digits>")]
    Syntax,
    #[error("stamp version {0} is not known here (this carrier speaks version 1)")]
    Version(String),
    #[error("a stamp claims at most {MAX_BITS} bits")]
    TooManyBits,
}

impl Stamp {
    pub fn parse(text: &str) -> Result<Stamp, ParseError> {
        let mut parts = text.split('.');
        let (Some(version), Some(bits), Some(minted_at), Some(nonce), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ParseError::Syntax);
        };
        if version != VERSION.to_string() {
            return Err(ParseError::Version(version.chars().take(8).collect()));
        }
        let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        if !digits(bits) || !digits(minted_at) || nonce.len() != 16 {
            return Err(ParseError::Syntax);
        }
        let bits: u32 = bits.parse().map_err(|_| ParseError::Syntax)?;
        if bits > MAX_BITS {
            return Err(ParseError::TooManyBits);
        }
        Ok(Stamp {
            bits,
            minted_at: minted_at.parse().map_err(|_| ParseError::Syntax)?,
            nonce: u64::from_str_radix(nonce, 16).map_err(|_| ParseError::Syntax)?,
        })
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{VERSION}.{}.{}.{:016x}",
            self.bits, self.minted_at, self.nonce
        )
    }
}

/// The SHA-256 of a message as it was sent (every line ending in CRLF).
pub fn message_digest(wire_text: &[u8]) -> [u8; 32] {
    Sha256::digest(wire_text).into()
}

/// Everything a stamp is bound to but its nonce: one recipient, one sender, one message, one
/// moment, one difficulty. Hashing the prefix once makes each minting attempt one compression.
#[derive(Clone)]
pub struct Binding {
    prefix: Sha256,
}

impl Binding {
    /// Addresses compare without case (as smtp-in normalises them).
    pub fn new(
        recipient: &str,
        sender: &str,
        message_digest: &[u8; 32],
        minted_at: i64,
        bits: u32,
    ) -> Binding {
        let mut prefix = Sha256::new();
        prefix.update(DOMAIN);
        prefix.update(recipient.to_lowercase().as_bytes());
        prefix.update([0]);
        prefix.update(sender.to_lowercase().as_bytes());
        prefix.update([0]);
        prefix.update(message_digest);
        prefix.update(minted_at.to_be_bytes());
        prefix.update(bits.to_be_bytes());
        Binding { prefix }
    }

    /// The binding `stamp` claims for this recipient, sender and message.
    pub fn of(recipient: &str, sender: &str, message_digest: &[u8; 32], stamp: &Stamp) -> Binding {
        Binding::new(
            recipient,
            sender,
            message_digest,
            stamp.minted_at,
            stamp.bits,
        )
    }

    /// The stamp's hash with `nonce`.
    pub fn hash(&self, nonce: u64) -> [u8; 32] {
        let mut hasher = self.prefix.clone();
        hasher.update(nonce.to_be_bytes());
        hasher.finalize().into()
    }
}

/// Leading zero bits of a hash.
pub fn leading_zeros(hash: &[u8; 32]) -> u32 {
    let mut zeros = 0;
    for byte in hash {
        if *byte == 0 {
            zeros += 8;
        } else {
            return zeros + byte.leading_zeros();
        }
    }
    zeros
}

/// What checking a stamp against a message found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The work is there; `hash` identifies the stamp among spent ones.
    Valid { hash: [u8; 32] },
    /// The hash does not have the zeros the stamp claims: it was minted for another message,
    /// sender or recipient, or not minted at all.
    Mismatch,
}

/// Checks that `stamp` holds the work it claims for this recipient, sender and message: one
/// SHA-256 compression.
pub fn check(recipient: &str, sender: &str, message_digest: &[u8; 32], stamp: &Stamp) -> Check {
    let hash = Binding::of(recipient, sender, message_digest, stamp).hash(stamp.nonce);
    if leading_zeros(&hash) >= stamp.bits {
        Check::Valid { hash }
    } else {
        Check::Mismatch
    }
}

/// Mints a stamp of `bits` for this recipient, sender and message, minted at `minted_at`:
/// 2^bits hashes on average. Blocking CPU work; returns `None` when `stop` is set first.
/// Nonces start at a random point so two minters never repeat each other's work.
pub fn mint(
    recipient: &str,
    sender: &str,
    message_digest: &[u8; 32],
    minted_at: i64,
    bits: u32,
    stop: &AtomicBool,
) -> Option<Stamp> {
    let bits = bits.min(MAX_BITS);
    let binding = Binding::new(recipient, sender, message_digest, minted_at, bits);
    let mut nonce: u64 = rand::random();
    loop {
        // Checked every 64 Ki attempts: a few milliseconds.
        for _ in 0..65_536 {
            if leading_zeros(&binding.hash(nonce)) >= bits {
                return Some(Stamp {
                    bits,
                    minted_at,
                    nonce,
                });
            }
            nonce = nonce.wrapping_add(1);
        }
        if stop.load(Ordering::Relaxed) {
            return None;
        }
    }
}

/// The difficulty a reply asks for: `XSTAMP <bits>` at the start of its text (after the
/// enhanced status code, if the text still holds one).
pub fn asked_bits(reply_text: &str) -> Option<u32> {
    let mut words = reply_text.split_ascii_whitespace();
    let mut word = words.next()?;
    if word.split('.').count() == 3 && word.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        word = words.next()?;
    }
    if word != KEYWORD {
        return None;
    }
    words
        .next()?
        .trim_end_matches(':')
        .parse()
        .ok()
        .filter(|bits| *bits <= MAX_BITS)
}

/// The text of the reply that asks for a stamp of `bits` (after the code and enhanced status):
/// [`asked_bits`] reads it back.
pub fn asking(bits: u32) -> String {
    format!(
        "{KEYWORD} {bits}: this address asks senders it does not correspond with for a proof-of-work stamp of {bits} bits (RCPT parameter {KEYWORD}=)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAROL: &str = "carol@c.onion";
    const DAVE: &str = "dave@d.onion";

    #[test]
    fn a_minted_stamp_checks_and_only_for_its_message_sender_and_recipient() {
        let digest = message_digest(b"Subject: hi\r\n\r\nbody\r\n");
        let stop = AtomicBool::new(false);
        let stamp = mint(CAROL, DAVE, &digest, 1_800_000_000, 12, &stop).expect("minted");
        let text = stamp.to_string();
        assert_eq!(Stamp::parse(&text), Ok(stamp));
        assert!(matches!(
            check(CAROL, DAVE, &digest, &stamp),
            Check::Valid { .. }
        ));
        assert!(matches!(
            check(&CAROL.to_uppercase(), DAVE, &digest, &stamp),
            Check::Valid { .. }
        ));
        let other = message_digest(b"Subject: hi\r\n\r\nbody!\r\n");
        // 12 bits: a stray hash has them once in 4096 tries, so each of these holds with
        // certainty short of that (and the nonce is fixed by the stamp, not retried).
        let tries = [
            check(CAROL, DAVE, &other, &stamp),
            check(DAVE, DAVE, &digest, &stamp),
            check(CAROL, CAROL, &digest, &stamp),
            check(
                CAROL,
                DAVE,
                &digest,
                &Stamp {
                    minted_at: stamp.minted_at + 60,
                    ..stamp
                },
            ),
        ];
        assert!(tries.iter().filter(|t| **t == Check::Mismatch).count() >= 3);
    }

    #[test]
    fn stamps_parse_strictly() {
        assert_eq!(
            Stamp::parse("1.20.1800000000.00000000000000ff"),
            Ok(Stamp {
                bits: 20,
                minted_at: 1_800_000_000,
                nonce: 255
            })
        );
        for bad in [
            "",
            "1.20.1800000000",
            "1.20.1800000000.ff",
            "1.x.1800000000.00000000000000ff",
            "1.20.-5.00000000000000ff",
            "1.20.1800000000.00000000000000ff.1",
        ] {
            assert_eq!(Stamp::parse(bad), Err(ParseError::Syntax), "{bad}");
        }
        assert!(matches!(
            Stamp::parse("2.20.1800000000.00000000000000ff"),
            Err(ParseError::Version(_))
        ));
        assert_eq!(
            Stamp::parse("1.65.1800000000.00000000000000ff"),
            Err(ParseError::TooManyBits)
        );
    }

    #[test]
    fn the_asking_reply_reads_back() {
        assert_eq!(asked_bits(&asking(22)), Some(22));
        assert_eq!(asked_bits(&format!("4.7.1 {}", asking(9))), Some(9));
        assert_eq!(asked_bits("4.7.1 Mailbox busy"), None);
        assert_eq!(asked_bits("XSTAMP 999: no"), None);
    }

    #[test]
    fn leading_zeros_count_across_bytes() {
        let mut hash = [0u8; 32];
        hash[2] = 0b0001_0000;
        assert_eq!(leading_zeros(&hash), 19);
        assert_eq!(leading_zeros(&[0; 32]), 256);
    }

    #[test]
    fn minting_stops_when_asked() {
        let stop = AtomicBool::new(true);
        assert_eq!(mint(CAROL, DAVE, &[0; 32], 0, 64, &stop), None);
    }
}
