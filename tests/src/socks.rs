//! Connecting to an onion service through a tor client's SOCKS port.
//!
//! The onion name goes to tor as a SOCKS5 domain name (RFC 1928 ATYP 3) and is never resolved
//! here. Right after an onion service is added, or after its tor restarted, a client may not
//! find its descriptor yet and tor answers the CONNECT at once with 0x04 "host unreachable";
//! a circuit that takes too long ends in 0x06 "TTL expired". Both are transient on this
//! network, so [`connect_onion`] retries them until its deadline. Every other refusal (0x05
//! "connection refused": nothing listens at the target) is final.
//!
//! Every attempt sends its own SOCKS username and password, which tor (IsolateSOCKSAuth, on
//! by default) takes as a separate isolation group: the attempt gets fresh rendezvous and
//! introduction circuits. Without that, a retry joins the rendezvous circuit of the attempt
//! before. That matters when the service's tor was just killed: an introduction point that
//! still holds the dead instance's circuit can acknowledge the INTRODUCE1, the client then
//! waits on a rendezvous that never comes, and each retry attached to that circuit keeps it
//! from expiring (seen here: stuck for minutes). With isolation the stale attempt times out
//! alone, tor counts that introduction point as failed and fetches the new descriptor.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_socks::tcp::Socks5Stream;

/// The longest one attempt may take. Tor's own SocksTimeout is 2 minutes; a stuck attempt is
/// better abandoned and retried. On loopback an attempt that works takes 1-3 s.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Numbers the SOCKS credentials of attempts, so that no two share an isolation group.
static ATTEMPTS_MADE: AtomicU64 = AtomicU64::new(0);

/// The pause between attempts: tornet.md found half a second enough for a fresh descriptor.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// A connection through tor that did not come about.
#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    /// Only onion names are allowed here: anything else would need an exit, and this network
    /// has none.
    #[error("{0:?} is not an onion name")]
    NotOnion(String),
    /// Tor refused in a way that retrying does not mend.
    #[error("tor at {proxy} refused {target}: {source}")]
    Refused {
        proxy: SocketAddr,
        target: String,
        #[source]
        source: tokio_socks::Error,
    },
    /// Transient failures went on until the deadline.
    #[error(
        "{target} not reachable through tor at {proxy} within {waited:?} ({attempts} attempts, last: {last})"
    )]
    GaveUp {
        proxy: SocketAddr,
        target: String,
        waited: Duration,
        attempts: u32,
        /// The last failure, as text (a timed-out attempt has no SOCKS error).
        last: String,
    },
}

/// Connects through the SOCKS5 port `proxy` to `host:port`, `host` being `<id>.onion` (a
/// subdomain before it is allowed; tor ignores it). Retries transient failures (see the
/// module text) until `within` has passed.
pub async fn connect_onion(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    within: Duration,
) -> Result<Socks5Stream<TcpStream>, SocksError> {
    if !host.ends_with(".onion") {
        return Err(SocksError::NotOnion(host.to_owned()));
    }
    let target = format!("{host}:{port}");
    let started = Instant::now();
    let deadline = started + within;
    let mut attempts = 0_u32;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let isolation = ATTEMPTS_MADE.fetch_add(1, Ordering::Relaxed).to_string();
        let attempt =
            Socks5Stream::connect_with_password(proxy, (host, port), "onionpost-e2e", &isolation);
        let last = match tokio::time::timeout(left.min(ATTEMPT_TIMEOUT), attempt).await {
            Ok(Ok(stream)) => {
                tracing::debug!(attempts, elapsed = ?started.elapsed(), "onion connected");
                return Ok(stream);
            }
            Ok(Err(error)) if is_transient(&error) => error.to_string(),
            Ok(Err(source)) => {
                return Err(SocksError::Refused {
                    proxy,
                    target,
                    source,
                });
            }
            Err(_elapsed) => format!("attempt timed out after {:?}", left.min(ATTEMPT_TIMEOUT)),
        };
        tracing::debug!(attempts, last = %last, "onion not reachable yet");
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(SocksError::GaveUp {
                proxy,
                target,
                waited: started.elapsed(),
                attempts,
                last,
            });
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// SOCKS5 replies (RFC 1928 §6) that tor gives for an onion it cannot reach yet.
fn is_transient(error: &tokio_socks::Error) -> bool {
    matches!(
        error,
        tokio_socks::Error::HostUnreachable | tokio_socks::Error::TtlExpired
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clearnet_names_are_refused_before_any_connection() {
        // Port 9 on loopback: nothing is contacted, the name is checked first.
        let proxy: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let result = connect_onion(proxy, "example.com", 25, Duration::from_secs(1)).await;
        assert!(matches!(result, Err(SocksError::NotOnion(_))));
    }
}
