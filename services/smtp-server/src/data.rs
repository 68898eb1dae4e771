//! The DATA phase (RFC 5321 §4.1.1.4): the message text after `354`, up to the line holding
//! only a dot.
//!
//! - **Dot-unstuffing** (§4.5.2): a leading dot is removed from every line.
//! - **Line limit** (§4.5.3.1.6): a text line is at most 1000 octets with its CRLF, not
//!   counting a dot doubled for transparency. Longer lines are refused rather than folded:
//!   folding would change what the sender signed.
//! - **Size limit**: the message after unstuffing, as advertised with SIZE (RFC 1870).
//! - **Bare CR and bare LF** (§2.3.8: they "MUST NOT" be sent, and a receiver must not treat
//!   them as line endings). A message holding either is **refused**, not normalised: every
//!   conforming client sends CRLF, smtp-client (onionpost's own) converts a bare LF before it
//!   sends, and a message that differs in how its lines end is either broken or an attempt at
//!   SMTP smuggling: text that a lenient receiver further on would read as the end of data and
//!   a second, forged message. Normalising would make that text harmless here but would still
//!   change the bytes of a message (and its signature) without telling the sender; refusing
//!   tells the sender what is wrong and passes nothing ambiguous on.
//! - **End of data** is only CRLF `.` CRLF: a dot line counts only when the line before it
//!   ended with CRLF (the `DATA` command line counts as such), so `<LF>.<CRLF>`, `.<LF>` and
//!   `<CR>.<CR>` are text, and the commands smuggled behind them stay inside the refused
//!   message instead of being run as a new transaction.
//!
//! After a refusal the reader still reads to the end of data, keeping nothing, so the session
//! stays in step with the client.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::budget::{MemoryGrant, NO_ROOM};
use crate::connection::{Connection, Line};

/// Longest line of message text, CRLF included (RFC 5321 §4.5.3.1.6; RFC 5322 §2.1.1 allows
/// 998 characters before it).
pub const MAX_TEXT_LINE: usize = 1000;

/// The refusal of a message with a longer line.
pub const LINE_TOO_LONG: &str = "550 5.6.0 Message has a line longer than 998 characters; send it encoded (quoted-printable or base64, RFC 5322 2.1.1)";
/// The refusal of a message larger than the limit.
pub const TOO_BIG: &str = "552 5.3.4 Message size exceeds fixed maximum message size";
/// The refusal of a message with a bare CR or a bare LF.
pub const BARE_LINE_ENDING: &str =
    "550 5.6.0 Message has a bare CR or LF; end every line with CRLF (RFC 5321 2.3.8)";

/// Limits of one DATA phase.
#[derive(Debug, Clone)]
pub struct DataLimits {
    /// Octets of the message after dot-unstuffing.
    pub max_message_bytes: u64,
    /// For each line (RFC 5321 §4.5.3.2.5: 3 minutes for a data block).
    pub timeout: Duration,
}

/// Why a message was refused; the first that applies, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooBig,
    LineTooLong,
    BareLineEnding,
    /// The listener's memory budget had no room for it (temporary).
    NoRoom,
}

impl Refusal {
    /// The reply to give after the end of data.
    pub fn reply(self) -> &'static str {
        match self {
            Refusal::TooBig => TOO_BIG,
            Refusal::LineTooLong => LINE_TOO_LONG,
            Refusal::BareLineEnding => BARE_LINE_ENDING,
            Refusal::NoRoom => NO_ROOM,
        }
    }
}

/// How the DATA phase ended.
#[derive(Debug, PartialEq, Eq)]
pub enum DataOutcome {
    /// The message, unstuffed, every line ending in CRLF.
    Message(Vec<u8>),
    /// Read to the end of data and refused; nothing kept.
    Refused(Refusal),
    /// The peer closed the connection before the end of data.
    Eof,
    /// The peer stayed silent too long (reply [`crate::TIMEOUT`] and close).
    Timeout,
}

/// Reads the message text after `354` up to CRLF.CRLF (see the module doc). Replies queued
/// before it (the `354`) are written when the client has nothing more buffered. The text is
/// held within `grant` (the listener's memory budget), which the caller keeps until it has
/// replied; a message that finds no room is refused with [`Refusal::NoRoom`].
pub async fn read_data<S: AsyncRead + AsyncWrite>(
    connection: &mut Connection<S>,
    limits: &DataLimits,
    grant: &mut MemoryGrant,
) -> io::Result<DataOutcome> {
    let mut body: Vec<u8> = Vec::new();
    let mut size: u64 = 0;
    let (mut too_big, mut long_line, mut bare, mut no_room) = (false, false, false, false);
    // The DATA command line ended the previous line.
    let mut after_crlf = true;
    loop {
        // One octet more than the limit: a doubled dot is not counted.
        let line = match connection.line(MAX_TEXT_LINE + 1, limits.timeout).await? {
            Line::Data(line) => line,
            Line::TooLong { crlf } => {
                long_line = true;
                bare |= !crlf;
                after_crlf = crlf;
                body = Vec::new();
                continue;
            }
            Line::Eof => return Ok(DataOutcome::Eof),
            Line::Timeout => return Ok(DataOutcome::Timeout),
        };
        if after_crlf && line == b".\r\n" {
            break;
        }
        // A complete line always ends with `\n`.
        let crlf = line.ends_with(b"\r\n");
        let text_end = line.len() - if crlf { 2 } else { 1 };
        bare |= !crlf || line[..text_end].contains(&b'\r');
        after_crlf = crlf;
        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
        long_line |= unstuffed.len() > MAX_TEXT_LINE;
        size += unstuffed.len() as u64;
        too_big |= size > limits.max_message_bytes;
        let refused = too_big || long_line || bare || no_room;
        if !refused && !grant.cover(size) {
            no_room = true;
        }
        if refused || no_room {
            // Keep reading so the session stays in step, but keep nothing.
            body = Vec::new();
            grant.release();
            continue;
        }
        body.extend_from_slice(unstuffed);
    }
    let refusal = if too_big {
        Some(Refusal::TooBig)
    } else if long_line {
        Some(Refusal::LineTooLong)
    } else if bare {
        Some(Refusal::BareLineEnding)
    } else if no_room {
        Some(Refusal::NoRoom)
    } else {
        None
    };
    Ok(match refusal {
        Some(refusal) => DataOutcome::Refused(refusal),
        None => DataOutcome::Message(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{MemoryBudget, STEP_BYTES};
    use tokio::io::AsyncWriteExt as _;

    const SECOND: Duration = Duration::from_secs(1);

    fn limits(max_message_bytes: u64) -> DataLimits {
        DataLimits {
            max_message_bytes,
            timeout: SECOND,
        }
    }

    /// Sends `input` and reads one DATA phase, then the line after it (to show the reader
    /// stopped where it should).
    async fn read(input: &[u8], max_message_bytes: u64) -> (DataOutcome, Line) {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut connection = Connection::new(server, SECOND);
        let mut sent = input.to_vec();
        sent.extend_from_slice(b"NEXT\r\n");
        // Written while the reader reads: the input may be larger than the pipe.
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client
        });
        let budget = MemoryBudget::new(u64::MAX);
        let outcome = read_data(
            &mut connection,
            &limits(max_message_bytes),
            &mut budget.grant(),
        )
        .await
        .unwrap();
        let next = connection.line(100, SECOND).await.unwrap();
        drop(writer.await.unwrap());
        (outcome, next)
    }

    fn next() -> Line {
        Line::Data(b"NEXT\r\n".to_vec())
    }

    #[tokio::test]
    async fn dots_are_unstuffed_and_the_end_is_a_lone_dot() {
        let (outcome, after) = read(b"a\r\n..b\r\n.\r\n..\r\n.\r\n", 1000).await;
        assert_eq!(
            outcome,
            DataOutcome::Message(b"a\r\n.b\r\n".to_vec()),
            "the first lone dot ends the data"
        );
        assert_eq!(after, Line::Data(b"..\r\n".to_vec()));
        let (outcome, after) = read(b".\r\n", 1000).await;
        assert_eq!(outcome, DataOutcome::Message(Vec::new()));
        assert_eq!(after, next());
    }

    #[tokio::test]
    async fn a_line_of_998_characters_passes_and_999_is_refused() {
        let mut longest = vec![b'a'; 998];
        longest.extend_from_slice(b"\r\n");
        // A doubled dot does not count (§4.5.3.1.6).
        let mut stuffed = vec![b'.'];
        stuffed.extend_from_slice(&longest);
        let mut input = longest.clone();
        input.extend_from_slice(&stuffed);
        input.extend_from_slice(b".\r\n");
        let (outcome, after) = read(&input, 10_000).await;
        let mut expected = longest.clone();
        expected.extend_from_slice(&longest);
        assert_eq!(outcome, DataOutcome::Message(expected));
        assert_eq!(after, next());

        let mut input = vec![b'b'; 999];
        input.extend_from_slice(b"\r\nshort\r\n.\r\n");
        let (outcome, after) = read(&input, 10_000).await;
        assert_eq!(outcome, DataOutcome::Refused(Refusal::LineTooLong));
        assert_eq!(after, next(), "read on to the end of data");
        // Far longer than the reader's limit: dropped without being kept.
        let mut input = vec![b'c'; 100_000];
        input.extend_from_slice(b"\r\n.\r\n");
        let (outcome, after) = read(&input, 1_000_000).await;
        assert_eq!(outcome, DataOutcome::Refused(Refusal::LineTooLong));
        assert_eq!(after, next());
    }

    #[tokio::test]
    async fn the_size_limit_counts_unstuffed_octets() {
        // 9 octets after unstuffing: one over a limit of 8, exactly a limit of 9.
        let (outcome, _) = read(b"..abcdef\r\n.\r\n", 8).await;
        assert_eq!(outcome, DataOutcome::Refused(Refusal::TooBig));
        let (outcome, after) = read(b"..abcdef\r\n.\r\n", 9).await;
        assert_eq!(outcome, DataOutcome::Message(b".abcdef\r\n".to_vec()));
        assert_eq!(after, next());
        let (outcome, after) = read(b"0123456789\r\n0123456789\r\n.\r\n", 15).await;
        assert_eq!(outcome, DataOutcome::Refused(Refusal::TooBig));
        assert_eq!(after, next());
    }

    #[tokio::test]
    async fn a_bare_cr_is_refused_and_does_not_end_the_data() {
        // `<CR>.<CR>` is what lenient receivers took for the end of data.
        let (outcome, after) = read(b"a\r.\rMAIL FROM:<x@y>\r\nb\r\n.\r\n", 1000).await;
        assert_eq!(outcome, DataOutcome::Refused(Refusal::BareLineEnding));
        assert_eq!(after, next());
        let (outcome, _) = read(b"a\rb\r\n.\r\n", 1000).await;
        assert_eq!(outcome, DataOutcome::Refused(Refusal::BareLineEnding));
    }

    #[tokio::test]
    async fn a_bare_lf_is_refused_and_lf_dot_crlf_is_not_the_end() {
        // The smuggling pattern: `<LF>.<CRLF>` then a second transaction. It stays text.
        let (outcome, after) = read(
            b"a\n.\r\nMAIL FROM:<forged@y>\r\nRCPT TO:<z@y>\r\nDATA\r\nforged\r\n.\r\n",
            1000,
        )
        .await;
        assert_eq!(outcome, DataOutcome::Refused(Refusal::BareLineEnding));
        assert_eq!(after, next(), "the smuggled commands were read as text");
        // `.<LF>` is not the end either.
        let (outcome, after) = read(b"a\r\n.\nb\r\n.\r\n", 1000).await;
        assert_eq!(outcome, DataOutcome::Refused(Refusal::BareLineEnding));
        assert_eq!(after, next());
        // A too-long line ending in a bare LF does not let a dot after it end the data.
        let mut input = vec![b'x'; 5000];
        input.extend_from_slice(b"\n.\r\nMAIL FROM:<forged@y>\r\n.\r\n");
        let (outcome, after) = read(&input, 100_000).await;
        assert_eq!(outcome, DataOutcome::Refused(Refusal::LineTooLong));
        assert_eq!(after, next());
    }

    #[tokio::test]
    async fn silence_in_data_times_out_and_eof_is_told() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut connection = Connection::new(server, SECOND);
        client.write_all(b"half a mess").await.unwrap();
        let short = DataLimits {
            max_message_bytes: 1000,
            timeout: Duration::from_millis(100),
        };
        let mut grant = MemoryBudget::new(u64::MAX).grant();
        assert_eq!(
            read_data(&mut connection, &short, &mut grant)
                .await
                .unwrap(),
            DataOutcome::Timeout
        );
        drop(client);
        assert_eq!(
            read_data(&mut connection, &short, &mut grant)
                .await
                .unwrap(),
            DataOutcome::Eof
        );
    }

    /// Two sessions of one listener: the second message finds the budget held by the first,
    /// is read to its end and refused with a temporary 452; once the first session gives its
    /// grant back, the same message is held.
    #[tokio::test]
    async fn a_message_beyond_the_memory_budget_is_refused_for_now() {
        let budget = MemoryBudget::new(4 * STEP_BYTES);
        let mut first = budget.grant();
        assert!(first.cover(3 * STEP_BYTES));
        let message = "x".repeat(998) + "\r\n";
        let mut input = message.repeat(200).into_bytes(); // ~200 KB: more than one step left
        input.extend_from_slice(b".\r\n");
        let read_with = |mut grant: MemoryGrant| {
            let input = input.clone();
            async move {
                let (mut client, server) = tokio::io::duplex(1 << 16);
                let mut connection = Connection::new(server, SECOND);
                let mut sent = input;
                sent.extend_from_slice(b"NEXT\r\n");
                let writer = tokio::spawn(async move {
                    client.write_all(&sent).await.unwrap();
                    client
                });
                let outcome = read_data(&mut connection, &limits(1 << 20), &mut grant)
                    .await
                    .unwrap();
                let next = connection.line(100, SECOND).await.unwrap();
                drop(writer.await.unwrap());
                (outcome, next, grant)
            }
        };
        let (outcome, after, grant) = read_with(budget.grant()).await;
        assert_eq!(outcome, DataOutcome::Refused(Refusal::NoRoom));
        assert_eq!(Refusal::NoRoom.reply(), NO_ROOM);
        assert!(NO_ROOM.starts_with("452 4.3.1 "));
        assert_eq!(after, next(), "read to the end of data");
        assert_eq!(grant.bytes(), 0, "a refused message holds nothing");
        drop(first);
        let (outcome, _, grant) = read_with(budget.grant()).await;
        assert!(matches!(outcome, DataOutcome::Message(body) if body.len() == 200 * 1000));
        assert_eq!(grant.bytes(), 4 * STEP_BYTES);
    }
}
