//! One SMTP connection as the server sees it: lines in, replies out.
//!
//! Replies are queued and written only when the client has nothing more buffered, which is
//! what PIPELINING asks (RFC 2920 §3.2): a pipelined batch gets its replies in one write.
//! Every read and every write has a deadline. RFC 5321 §4.5.3.2 gives the read timeouts; it
//! names none for writes, but a peer that sends commands and never reads the replies would
//! otherwise hold its session (and its slot under the listener's limit) forever once the
//! socket's buffers are full.

use std::io;
use std::time::Duration;

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf,
};

/// The reply before closing a connection whose peer stayed silent too long (RFC 5321
/// §4.5.3.2).
pub const TIMEOUT: &str = "421 4.4.2 Timeout, closing connection";

/// What one read of a line found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line with its line ending (`\n`, with or without the `\r` before it).
    Data(Vec<u8>),
    /// A line longer than the limit, read to its end and dropped. `crlf` tells whether it
    /// ended with CRLF, which the DATA reader needs to find the end of data (§2.3.8).
    TooLong { crlf: bool },
    /// The peer closed the connection (a partial line is dropped).
    Eof,
    /// No complete line within the read timeout.
    Timeout,
}

/// The connection: a buffered reader, the writer and the replies not yet written.
pub struct Connection<S> {
    reader: BufReader<ReadHalf<S>>,
    writer: WriteHalf<S>,
    /// Replies queued since the last write, each with its CRLF.
    pending: Vec<u8>,
    /// The longest a write of queued replies (or the closing shutdown) may take.
    write_timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite> Connection<S> {
    pub fn new(stream: S, write_timeout: Duration) -> Self {
        let (read, write) = tokio::io::split(stream);
        Connection {
            reader: BufReader::new(read),
            writer: write,
            pending: Vec::new(),
            write_timeout,
        }
    }

    /// The stream back, for a TLS handshake (RFC 3207). Callers check
    /// [`Connection::has_buffered_input`] first: bytes the client sent before the handshake
    /// must not count as sent inside it.
    pub fn into_inner(self) -> S
    where
        S: Unpin,
    {
        self.reader.into_inner().unsplit(self.writer)
    }

    /// Whether the client has sent bytes that are read but not yet consumed (pipelined
    /// commands or data).
    pub fn has_buffered_input(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// Queues one reply line; `text` has no CRLF.
    pub fn reply(&mut self, text: &str) {
        self.pending.extend_from_slice(text.as_bytes());
        self.pending.extend_from_slice(b"\r\n");
    }

    /// Writes the queued replies, within the write timeout (an error of kind `TimedOut`
    /// beyond it).
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let write = async {
            self.writer.write_all(&self.pending).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(result) => result?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
        self.pending.clear();
        Ok(())
    }

    /// Writes what is queued and closes the sending side; errors are ignored, the session is
    /// over either way.
    pub async fn finish(&mut self) {
        let _ = self.flush().await;
        let _ = tokio::time::timeout(self.write_timeout, self.writer.shutdown()).await;
    }

    /// Reads one line of at most `limit` octets, line ending included, within `timeout`.
    /// Queued replies are written first when the client has nothing more buffered.
    pub async fn line(&mut self, limit: usize, timeout: Duration) -> io::Result<Line> {
        if !self.has_buffered_input() {
            self.flush().await?;
        }
        let read = async {
            let mut line = Vec::new();
            let mut too_long = false;
            // The last octet consumed, to tell CRLF from a bare LF when the `\n` starts a
            // new buffer.
            let mut previous = 0u8;
            loop {
                let buffer = self.reader.fill_buf().await?;
                if buffer.is_empty() {
                    return Ok(Line::Eof);
                }
                let (chunk, done) = match buffer.iter().position(|byte| *byte == b'\n') {
                    Some(end) => (&buffer[..=end], true),
                    None => (buffer, false),
                };
                let used = chunk.len();
                if !too_long {
                    if line.len() + used > limit {
                        too_long = true;
                        line = Vec::new();
                    } else {
                        line.extend_from_slice(chunk);
                    }
                }
                let before_last = if used >= 2 { chunk[used - 2] } else { previous };
                previous = chunk[used - 1];
                self.reader.consume(used);
                if done {
                    return Ok(if too_long {
                        Line::TooLong {
                            crlf: before_last == b'\r',
                        }
                    } else {
                        Line::Data(line)
                    });
                }
            }
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(result) => result,
            Err(_) => Ok(Line::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn lines_keep_their_ending_and_long_ones_are_dropped_whole() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut connection = Connection::new(server, SECOND);
        client
            .write_all(b"NOOP\r\nbare\nxxxxxxxxxxxxxxxxxxxx\r\nyyyyyyyyyyyyyyyyyyyyyy\nok\r\n")
            .await
            .unwrap();
        assert_eq!(
            connection.line(10, SECOND).await.unwrap(),
            Line::Data(b"NOOP\r\n".to_vec())
        );
        assert_eq!(
            connection.line(10, SECOND).await.unwrap(),
            Line::Data(b"bare\n".to_vec())
        );
        assert_eq!(
            connection.line(10, SECOND).await.unwrap(),
            Line::TooLong { crlf: true }
        );
        assert_eq!(
            connection.line(10, SECOND).await.unwrap(),
            Line::TooLong { crlf: false }
        );
        assert_eq!(
            connection.line(10, SECOND).await.unwrap(),
            Line::Data(b"ok\r\n".to_vec())
        );
        drop(client);
        assert_eq!(connection.line(10, SECOND).await.unwrap(), Line::Eof);
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (_client, server) = tokio::io::duplex(1024);
        let mut connection = Connection::new(server, SECOND);
        let started = tokio::time::Instant::now();
        assert_eq!(
            connection
                .line(100, Duration::from_millis(100))
                .await
                .unwrap(),
            Line::Timeout
        );
        assert!(started.elapsed() < SECOND);
    }

    #[tokio::test]
    async fn a_half_line_then_silence_times_out() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut connection = Connection::new(server, SECOND);
        client.write_all(b"MAIL FROM:<a@").await.unwrap();
        assert_eq!(
            connection
                .line(100, Duration::from_millis(100))
                .await
                .unwrap(),
            Line::Timeout
        );
    }

    #[tokio::test]
    async fn replies_wait_for_the_end_of_a_pipelined_batch() {
        let (client, server) = tokio::io::duplex(1024);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let mut connection = Connection::new(server, SECOND);
        client_write.write_all(b"A\r\nB\r\n").await.unwrap();
        connection.line(100, SECOND).await.unwrap();
        connection.reply("250 a");
        // B is buffered: the reply to A is not written yet.
        connection.line(100, SECOND).await.unwrap();
        connection.reply("250 b");
        let silent = tokio::time::timeout(Duration::from_millis(50), async {
            let mut byte = [0u8; 1];
            client_read.read(&mut byte).await
        })
        .await;
        assert!(silent.is_err(), "nothing written mid-batch");
        connection.finish().await;
        let mut replies = String::new();
        client_read.read_to_string(&mut replies).await.unwrap();
        assert_eq!(replies, "250 a\r\n250 b\r\n");
    }

    /// A peer that sends commands and never reads: once the pipe is full the write times out
    /// instead of holding the session.
    #[tokio::test]
    async fn a_peer_that_never_reads_is_timed_out_on_write() {
        let (_client, server) = tokio::io::duplex(64);
        let mut connection = Connection::new(server, Duration::from_millis(100));
        for _ in 0..10 {
            connection.reply("250-a reply long enough to fill a small pipe quickly");
        }
        let started = tokio::time::Instant::now();
        let error = connection.flush().await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < SECOND);
        // Closing is bounded as well.
        tokio::time::timeout(SECOND, connection.finish())
            .await
            .expect("finish within its timeout");
    }
}
