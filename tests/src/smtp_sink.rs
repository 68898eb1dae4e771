//! A small SMTP server standing in for a peer carrier's onion MX, for tests of the sending side
//! (smtp-out, the queue). It records every command line and every message body, refuses
//! `nobody@…` with 550, answers every RCPT with 421 while `refusing` is set, and accepts the
//! rest.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the sink saw.
#[derive(Default)]
pub struct Seen {
    /// Every command line, without its CRLF.
    pub commands: Vec<String>,
    /// Every message body as it arrived (still dot-stuffed, without the final dot line).
    pub messages: Vec<Vec<u8>>,
}

/// A running sink on 127.0.0.1.
pub struct SmtpSink {
    pub address: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    /// While set, every RCPT gets `421 4.3.2`.
    pub refusing: Arc<AtomicBool>,
}

impl SmtpSink {
    pub async fn start() -> std::io::Result<SmtpSink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let sink = SmtpSink {
            address: listener.local_addr()?,
            seen: Arc::default(),
            refusing: Arc::default(),
        };
        let seen = sink.seen.clone();
        let refusing = sink.refusing.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(session(socket, seen.clone(), refusing.clone()));
            }
        });
        Ok(sink)
    }

    pub fn messages(&self) -> usize {
        self.seen.lock().unwrap().messages.len()
    }
}

async fn session(socket: tokio::net::TcpStream, seen: Arc<Mutex<Seen>>, refusing: Arc<AtomicBool>) {
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    let _ = write.write_all(b"220 sink ESMTP\r\n").await;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_string();
        seen.lock().unwrap().commands.push(command.clone());
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-sink\r\n250-DSN\r\n250-SIZE 1000000\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("RCPT") && refusing.load(Ordering::SeqCst) {
            b"421 4.3.2 try again later\r\n"
        } else if upper.starts_with("RCPT TO:<NOBODY@") {
            b"550 5.1.1 mailbox unavailable\r\n"
        } else if upper == "DATA" {
            let _ = write.write_all(b"354 end with .\r\n").await;
            let mut body = Vec::new();
            loop {
                let mut data_line = Vec::new();
                if reader.read_until(b'\n', &mut data_line).await.unwrap_or(0) == 0 {
                    return;
                }
                if data_line == b".\r\n" {
                    break;
                }
                body.extend_from_slice(&data_line);
            }
            seen.lock().unwrap().messages.push(body);
            b"250 2.0.0 accepted\r\n"
        } else if upper.starts_with("ETRN") {
            b"250 2.0.0 queuing started\r\n"
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
            return;
        } else {
            b"250 2.0.0 ok\r\n"
        };
        let _ = write.write_all(reply).await;
    }
}
