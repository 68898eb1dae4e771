//! The accept loop of an SMTP listener, and the limits on the sessions it runs.
//!
//! Each listener has its own [`SessionLimit`]; several listeners may also share a ceiling
//! (see `quota` for why smtp-in gives every identity's listener one of its own).
//!
//! Like mini-redis's server, the loop takes a bound listener and a stop token and never binds
//! a port itself.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::quota::{Quota, Taken};

/// The answer to a connection beyond the limit, before closing it (RFC 5321 §3.1).
pub const TOO_BUSY: &str = "421 4.7.0 Too busy, try again later";

/// How long the `421` may take to write: a peer that does not read it gets nothing more.
const TOO_BUSY_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions a listener may run at once: its own limit, and optionally a ceiling it shares with
/// other listeners. Cloning shares the same counts.
#[derive(Debug, Clone)]
pub struct SessionLimit(Quota);

/// A session's place under its limits, given back when dropped.
#[derive(Debug)]
pub struct SessionPermit {
    _taken: Taken,
}

impl SessionLimit {
    /// At most `max_sessions` at once.
    pub fn new(max_sessions: usize) -> Self {
        SessionLimit(Quota::new(max_sessions))
    }

    /// A new limit of `max_sessions` for one listener, whose sessions also count against this
    /// one (the ceiling shared by several listeners).
    pub fn listener(&self, max_sessions: usize) -> Self {
        SessionLimit(self.0.within(max_sessions))
    }

    /// A place for one more session, when both the listener's limit and the ceiling have one.
    pub fn try_acquire(&self) -> Option<SessionPermit> {
        self.0
            .try_take(1)
            .map(|taken| SessionPermit { _taken: taken })
    }

    /// Places left under this limit alone (not counting the ceiling).
    pub fn available(&self) -> usize {
        self.0.available()
    }
}

/// Accepts connections until `stop`, one task per session within `limit`; a connection
/// beyond it gets [`TOO_BUSY`] and is closed. `session` builds the session for a connection
/// (the service's policy); it is ended when `stop` is cancelled.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    limit: SessionLimit,
    stop: CancellationToken,
    mut session: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(%error, "smtp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(permit) = limit.try_acquire() else {
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        let run = session(stream, peer);
        let session_stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = session_stop.cancelled() => {}
                () = run => {}
            }
            drop(permit);
        });
    }
}

async fn refuse_busy(mut stream: TcpStream) {
    let reply = format!("{TOO_BUSY}\r\n");
    let _ = tokio::time::timeout(TOO_BUSY_WRITE_TIMEOUT, stream.write_all(reply.as_bytes())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_is_held_by_its_own_limit_and_the_shared_ceiling() {
        let ceiling = SessionLimit::new(3);
        let first = ceiling.listener(2);
        let second = ceiling.listener(2);
        let a = first.try_acquire().expect("first place");
        let b = first.try_acquire().expect("second place");
        assert!(first.try_acquire().is_none(), "the listener's own limit");
        let c = second
            .try_acquire()
            .expect("the other listener still answers");
        assert!(second.try_acquire().is_none(), "the ceiling");
        drop(a);
        assert!(second.try_acquire().is_some(), "a place came back");
        drop((b, c));
        assert_eq!(ceiling.available(), 3);
    }

    #[tokio::test]
    async fn a_connection_beyond_the_limit_gets_421() {
        use tokio::io::AsyncReadExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            SessionLimit::new(1),
            stop.clone(),
            |mut stream: TcpStream, _| async move {
                let _ = stream.write_all(b"220 ready\r\n").await;
                // Hold the session until the peer closes.
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            },
        ));
        let mut first = TcpStream::connect(address).await.unwrap();
        let mut greeting = [0u8; 11];
        first.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"220 ready\r\n");
        let mut second = TcpStream::connect(address).await.unwrap();
        let mut refused = String::new();
        second.read_to_string(&mut refused).await.unwrap();
        assert_eq!(refused, format!("{TOO_BUSY}\r\n"));
        drop(first);
        // The place comes back once the first session ends.
        let mut answered = false;
        for _ in 0..50 {
            let mut third = TcpStream::connect(address).await.unwrap();
            let mut greeting = [0u8; 11];
            third.read_exact(&mut greeting).await.unwrap();
            if &greeting == b"220 ready\r\n" {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answered);
        stop.cancel();
    }
}
