//! Delivering one message to one onion, and sending ETRN: connection through tor, limits per
//! destination, and the translation of a session's end into per-recipient outcomes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onionpost_proto::ServiceName;
use onionpost_proto::address::OnionHost;
use onionpost_proto::clients;
use onionpost_proto::onion::v1::GetSocksEndpointRequest;
use onionpost_runtime::Directory;
use onionpost_runtime::stamp;
use rand::RngCore;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_socks::tcp::Socks5Stream;

use crate::error::SmtpOutError;
use crate::session::{self, Envelope, Outcome, Reply, SessionError, Timeouts};

/// How long tor may take to build a circuit to an onion and open the stream. tor gives up on a
/// rendezvous after about two minutes itself; this bounds the SOCKS handshake the same way.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);

/// Sessions open at once to one onion. A destination that is slow or under attack should not
/// take every connection; two lets a large message and a small one pass each other.
const SESSIONS_PER_DESTINATION: usize = 2;

/// After tor could not reach an onion, further sessions to it fail at once for this long
/// instead of each building circuits to a destination that is down (an offline peer with a
/// queue of mail for it would otherwise hold every session slot for minutes). Short, because
/// peers come back: a retry after it tries for real.
const UNREACHABLE_FOR: Duration = Duration::from_secs(15);

/// Sessions open at once in all, to bound memory and tor streams.
const SESSIONS_TOTAL: usize = 64;

/// Stamps minted at once. One core: a carrier minting for many strangers keeps the others for
/// everything else, and minting is not on any path a user waits on.
const MINTERS: usize = 1;

/// The most bits paid for one stamp when not configured (`smtp_out.max_stamp_bits`).
const DEFAULT_MAX_STAMP_BITS: u32 = 28;

/// Circuit names remembered at most; past this the table starts over (each destination then
/// builds one new circuit), which bounds memory whatever the number of destinations.
const CIRCUITS_REMEMBERED: usize = 4096;

/// Where tor's SOCKS port is.
#[derive(Clone)]
pub enum SocksEndpoint {
    /// Known up front (tests, or an operator's fixed tor).
    Fixed(SocketAddr),
    /// `tor.socks` from the configuration: `host:port`, the host perhaps a name (`tor:9050` in
    /// compose), resolved on first use.
    Named(String),
    /// Asked of the onion service on first use, then remembered: it knows whether tor is a
    /// container or its own child process.
    FromOnionService(Directory),
}

/// One attempt's result, as the gRPC adapter reports it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// One per recipient, in envelope order.
    pub outcomes: Vec<Outcome>,
    /// Set when no SMTP transaction happened; every outcome is then temporary.
    pub connection_error: Option<String>,
    pub peer_offers_dsn: bool,
    pub duration: Duration,
}

/// The smtp-out service.
#[derive(Clone)]
pub struct SmtpOutService {
    socks: SocksEndpoint,
    resolved_socks: Arc<tokio::sync::Mutex<Option<SocketAddr>>>,
    timeouts: Timeouts,
    connect_timeout: Duration,
    total: Arc<Semaphore>,
    per_destination: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    /// The SOCKS password in use per (isolation key, destination): see the crate docs.
    circuits: Arc<Mutex<HashMap<(String, String), String>>>,
    /// Destinations tor could not reach lately, and when (see `UNREACHABLE_FOR`). Local
    /// knowledge only: no peer can observe it, so it links no identities.
    unreachable: Arc<Mutex<HashMap<String, Instant>>>,
    /// Stamps minted at once (CPU work: the rest of the carrier keeps its other cores).
    minters: Arc<Semaphore>,
    /// The most bits paid for one stamp (`smtp_out.max_stamp_bits`).
    max_stamp_bits: u32,
}

impl SmtpOutService {
    pub fn new(socks: SocksEndpoint) -> Self {
        SmtpOutService {
            socks,
            resolved_socks: Arc::default(),
            timeouts: Timeouts::default(),
            connect_timeout: CONNECT_TIMEOUT,
            total: Arc::new(Semaphore::new(SESSIONS_TOTAL)),
            per_destination: Arc::default(),
            circuits: Arc::default(),
            unreachable: Arc::default(),
            minters: Arc::new(Semaphore::new(MINTERS)),
            max_stamp_bits: DEFAULT_MAX_STAMP_BITS,
        }
    }

    /// The most bits this carrier pays for one stamp.
    pub fn with_max_stamp_bits(mut self, bits: u32) -> Self {
        self.max_stamp_bits = bits;
        self
    }

    /// Shorter limits, for tests that wait on a silent peer.
    pub fn with_timeouts(mut self, timeouts: Timeouts, connect_timeout: Duration) -> Self {
        self.timeouts = timeouts;
        self.connect_timeout = connect_timeout;
        self
    }

    /// One SMTP transaction with `destination` (a v3 onion host) on `port`.
    pub async fn deliver(
        &self,
        destination: &str,
        port: u16,
        isolation_key: &str,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Delivery, SmtpOutError> {
        let destination = check_onion(destination)?;
        let destination = destination.as_str();
        if envelope.recipients.is_empty() {
            return Err(SmtpOutError::InvalidArgument(
                "at least one recipient is required".into(),
            ));
        }
        let socks = self.socks_address().await?;
        let _permits = self.permits(destination).await;
        let started = Instant::now();
        // Checked once the permits are held: sessions queued behind one that just failed to
        // connect do not try again.
        if let Some(error) = self.recently_unreachable(destination) {
            let delivery = Delivery {
                outcomes: outcomes_after(&error, envelope.recipients.len()).0,
                connection_error: Some(error.to_string()),
                peer_offers_dsn: false,
                duration: started.elapsed(),
            };
            record(&delivery);
            return Ok(delivery);
        }
        let attempt = async {
            let stream = self
                .connect(socks, destination, port, isolation_key)
                .await?;
            session::deliver(stream, envelope, message, self.timeouts).await
        };
        let attempt = async {
            let mut result = attempt.await?;
            self.pay_stamps(
                socks,
                destination,
                port,
                isolation_key,
                envelope,
                message,
                &mut result,
            )
            .await;
            Ok::<_, SessionError>(result)
        };
        let delivery = match attempt.await {
            Ok(result) => Delivery {
                outcomes: result.outcomes,
                connection_error: None,
                peer_offers_dsn: result.peer_offers_dsn,
                duration: started.elapsed(),
            },
            Err(error) => {
                let (outcomes, connection_error) =
                    outcomes_after(&error, envelope.recipients.len());
                Delivery {
                    outcomes,
                    connection_error,
                    peer_offers_dsn: false,
                    duration: started.elapsed(),
                }
            }
        };
        record(&delivery);
        Ok(delivery)
    }

    /// Where a recipient asked for a proof-of-work stamp (issue 22: this carrier's identity is
    /// a stranger to it), mints one per such recipient at the difficulty asked, off the
    /// submission path and at most `minters` at once, and runs one more session for them
    /// alone; their outcomes become that session's. A difficulty above `max_stamp_bits` is not
    /// paid: the recipient stays a temporary failure and the queue tries later, when its load
    /// (and so its difficulty) may have fallen.
    #[allow(clippy::too_many_arguments)]
    async fn pay_stamps(
        &self,
        socks: SocketAddr,
        destination: &str,
        port: u16,
        isolation_key: &str,
        envelope: &Envelope,
        message: &[u8],
        result: &mut session::SessionResult,
    ) {
        let asked: Vec<(usize, u32)> = result
            .outcomes
            .iter()
            .enumerate()
            .filter_map(|(index, outcome)| match outcome {
                Outcome::Temporary(reply) => Some((index, stamp::asked_bits(&reply.text)?)),
                _ => None,
            })
            .filter(|(_, bits)| *bits <= self.max_stamp_bits)
            .collect();
        if asked.is_empty() || result.peer_stamp_bits.is_none() {
            return;
        }
        let digest = stamp::message_digest(&session::wire_text(message));
        let mut stamped = Envelope {
            recipients: Vec::with_capacity(asked.len()),
            ..envelope.clone()
        };
        for (index, bits) in &asked {
            let mut recipient = envelope.recipients[*index].clone();
            let Some(minted) = self
                .mint(&recipient.address, &envelope.reverse_path, digest, *bits)
                .await
            else {
                return;
            };
            recipient.stamp = Some(minted.to_string());
            stamped.recipients.push(recipient);
        }
        let again = async {
            let stream = self
                .connect(socks, destination, port, isolation_key)
                .await?;
            session::deliver(stream, &stamped, message, self.timeouts).await
        };
        match again.await {
            Ok(paid) => {
                for ((index, _), outcome) in asked.iter().zip(paid.outcomes) {
                    result.outcomes[*index] = outcome;
                }
            }
            Err(error) => tracing::debug!(%error, "the session with stamps failed"),
        }
    }

    /// One stamp, minted on a blocking thread within the minting limit; `None` if the minting
    /// thread failed. Dropping the future stops the work.
    async fn mint(
        &self,
        recipient: &str,
        sender: &str,
        digest: [u8; 32],
        bits: u32,
    ) -> Option<stamp::Stamp> {
        /// Stops the minting thread when the delivery is abandoned.
        struct StopOnDrop(Arc<AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _permit = self.minters.clone().acquire_owned().await.ok()?;
        let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let (recipient, sender, flag) = (recipient.to_owned(), sender.to_owned(), stop.0.clone());
        let started = Instant::now();
        let now = onionpost_runtime::time::now_ms() / 1000;
        let minted = tokio::task::spawn_blocking(move || {
            stamp::mint(&recipient, &sender, &digest, now, bits, &flag)
        })
        .await
        .ok()
        .flatten();
        let elapsed = started.elapsed();
        metrics::counter!("onionpost_smtp_out_stamps_minted_total").increment(1);
        metrics::histogram!("onionpost_smtp_out_stamp_seconds").record(elapsed.as_secs_f64());
        tracing::debug!(
            bits,
            elapsed_ms = elapsed.as_millis() as u64,
            "stamp minted"
        );
        minted
    }

    /// Sends `ETRN <onion>` to `carrier`.
    pub async fn etrn(
        &self,
        carrier: &str,
        onion: &str,
        isolation_key: &str,
    ) -> Result<Result<Reply, String>, SmtpOutError> {
        let carrier = check_onion(carrier)?;
        let carrier = carrier.as_str();
        let onion = check_onion(onion)?;
        let onion = onion.as_str();
        let socks = self.socks_address().await?;
        let _permits = self.permits(carrier).await;
        if let Some(error) = self.recently_unreachable(carrier) {
            return Ok(Err(error.to_string()));
        }
        let attempt = async {
            let stream = self.connect(socks, carrier, 25, isolation_key).await?;
            session::etrn(stream, onion, self.timeouts).await
        };
        Ok(attempt.await.map_err(|error| error.to_string()))
    }

    async fn connect(
        &self,
        socks: SocketAddr,
        destination: &str,
        port: u16,
        isolation_key: &str,
    ) -> Result<Socks5Stream<tokio::net::TcpStream>, SessionError> {
        let username = if isolation_key.is_empty() {
            "onionpost"
        } else {
            isolation_key
        };
        let circuit = (username.to_owned(), destination.to_owned());
        let password = self.circuit_password(&circuit);
        let connect =
            Socks5Stream::connect_with_password(socks, (destination, port), username, &password);
        let result = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => {
                self.unreachable
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(destination);
                return Ok(stream);
            }
            Ok(Err(error)) => Err(SessionError::Io(std::io::Error::other(format!(
                "tor could not reach the onion: {error}"
            )))),
            Err(_) => Err(SessionError::Timeout("onion connection through tor")),
        };
        {
            let mut unreachable = self
                .unreachable
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            unreachable.retain(|_, at| at.elapsed() < UNREACHABLE_FOR);
            unreachable.insert(destination.to_owned(), Instant::now());
        }
        // The next attempt builds a new circuit, unless another session already did.
        let mut circuits = self
            .circuits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if circuits.get(&circuit) == Some(&password) {
            circuits.remove(&circuit);
        }
        result
    }

    /// The error to report without trying, when tor could not reach `destination` moments ago.
    fn recently_unreachable(&self, destination: &str) -> Option<SessionError> {
        let unreachable = self
            .unreachable
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let at = unreachable.get(destination)?;
        let ago = at.elapsed();
        (ago < UNREACHABLE_FOR).then(|| {
            SessionError::Io(std::io::Error::other(format!(
                "tor could not reach the onion {}s ago; not tried again yet",
                ago.as_secs()
            )))
        })
    }

    /// The circuit's current SOCKS password, made up when there is none.
    fn circuit_password(&self, circuit: &(String, String)) -> String {
        let mut circuits = self
            .circuits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(password) = circuits.get(circuit) {
            return password.clone();
        }
        if circuits.len() >= CIRCUITS_REMEMBERED {
            circuits.clear();
        }
        let mut nonce = [0u8; 8];
        rand::rng().fill_bytes(&mut nonce);
        let password = nonce
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>();
        circuits.insert(circuit.clone(), password.clone());
        password
    }

    async fn socks_address(&self) -> Result<SocketAddr, SmtpOutError> {
        let mut cached = self.resolved_socks.lock().await;
        if let Some(address) = *cached {
            return Ok(address);
        }
        let address = match &self.socks {
            SocksEndpoint::Fixed(address) => *address,
            SocksEndpoint::Named(name) => tokio::net::lookup_host(name.as_str())
                .await
                .map_err(|error| SmtpOutError::SocksUnavailable(error.to_string()))?
                .next()
                .ok_or_else(|| SmtpOutError::SocksUnavailable("resolves to nothing".into()))?,
            SocksEndpoint::FromOnionService(directory) => {
                let transport = directory
                    .transport(ServiceName::Onion)
                    .map_err(|error| SmtpOutError::SocksUnavailable(error.to_string()))?;
                let endpoint = clients::onion(transport)
                    .get_socks_endpoint(GetSocksEndpointRequest {})
                    .await
                    .map_err(|status| SmtpOutError::SocksUnavailable(status.message().into()))?
                    .into_inner();
                // `tor:9050` in compose: the SOCKS endpoint itself may be a name to resolve.
                tokio::net::lookup_host(&endpoint.address)
                    .await
                    .map_err(|error| SmtpOutError::SocksUnavailable(error.to_string()))?
                    .next()
                    .ok_or_else(|| SmtpOutError::SocksUnavailable("resolves to nothing".into()))?
            }
        };
        *cached = Some(address);
        Ok(address)
    }

    async fn permits(&self, destination: &str) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        let destination_semaphore = {
            let mut map = self
                .per_destination
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // Forget destinations nobody is talking to, so the map stays small.
            map.retain(|_, semaphore| Arc::strong_count(semaphore) > 1);
            map.entry(destination.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(SESSIONS_PER_DESTINATION)))
                .clone()
        };
        // Neither semaphore is ever closed, so acquiring cannot fail.
        let total = self.total.clone().acquire_owned().await;
        let per_destination = destination_semaphore.acquire_owned().await;
        match (total, per_destination) {
            (Ok(total), Ok(per_destination)) => (total, per_destination),
            _ => unreachable!("smtp-out semaphores are never closed"),
        }
    }
}

/// Outcomes when the session broke off: a refused greeting or EHLO is the server's answer for
/// every recipient; anything else (tor, timeouts, a dropped connection) is temporary.
fn outcomes_after(error: &SessionError, recipients: usize) -> (Vec<Outcome>, Option<String>) {
    match error {
        SessionError::Refused(reply) => {
            let outcome = if reply.is_permanent() {
                Outcome::Permanent(reply.clone())
            } else {
                Outcome::Temporary(reply.clone())
            };
            (vec![outcome; recipients], None)
        }
        other => {
            let reply = Reply {
                code: 451,
                enhanced_status: "4.4.1".into(),
                text: other.to_string(),
            };
            (
                vec![Outcome::Temporary(reply); recipients],
                Some(other.to_string()),
            )
        }
    }
}

fn record(delivery: &Delivery) {
    for outcome in &delivery.outcomes {
        let label = match outcome {
            Outcome::Delivered(_) => "delivered",
            Outcome::Temporary(_) => "temporary_failure",
            Outcome::Permanent(_) => "permanent_failure",
        };
        metrics::counter!("onionpost_smtp_out_recipients_total", "outcome" => label).increment(1);
    }
    metrics::histogram!("onionpost_smtp_out_session_seconds")
        .record(delivery.duration.as_secs_f64());
    if delivery.connection_error.is_some() {
        metrics::counter!("onionpost_smtp_out_connection_errors_total").increment(1);
    }
}

/// Only a v3 onion host is ever handed to tor, checksum verified (the carrier-wide parser of
/// `onionpost_proto::address`), and always in its canonical form: `www.<onion>.onion` names the
/// same service as `<onion>.onion` (tor ignores the labels), so it shares its circuits and limits.
pub fn check_onion(host: &str) -> Result<OnionHost, SmtpOutError> {
    OnionHost::parse(host).map_err(|error| SmtpOutError::NotAnOnion(host.to_owned(), error))
}

#[cfg(test)]
mod tests {
    use onionpost_proto::address::examples;

    use super::*;

    /// A real v3 onion per letter: only onions with a right checksum are dialled.
    fn onion(seed: u8) -> String {
        OnionHost::from_ed25519(&[seed; 32]).to_string()
    }

    #[test]
    fn shared_address_forms_smtp_out_dials_the_canonical_onion_and_refuses_bad_ones() {
        let host = OnionHost::from_ed25519(&[b'w'; 32]);
        for form in examples::accepted_forms(&host) {
            assert_eq!(check_onion(&form).unwrap(), host, "{form}");
        }
        for (form, kind) in examples::refused_forms(&host) {
            assert!(
                matches!(check_onion(&form), Err(SmtpOutError::NotAnOnion(_, error)) if error == kind),
                "{form}"
            );
        }
    }

    #[test]
    fn only_v3_onions_are_dialled() {
        let onion = onion(b'a');
        assert!(check_onion(&onion).is_ok());
        assert!(check_onion(&onion.to_uppercase()).is_ok());
        for bad in [
            "example.com",
            "127.0.0.1",
            "abc.onion",
            &format!("{}.onion", "1".repeat(56)),
            &format!("{}.onion.example.com", "a".repeat(56)),
        ] {
            assert!(check_onion(bad).is_err(), "{bad} must be refused");
        }
    }

    #[tokio::test]
    async fn an_unreachable_socks_port_is_a_temporary_failure_for_every_recipient() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let service = SmtpOutService::new(SocksEndpoint::Fixed(address));
        let envelope = Envelope {
            reverse_path: String::new(),
            recipients: vec![
                session::Recipient {
                    address: "a@x.onion".into(),
                    notify: vec![],
                    original_recipient: String::new(),
                    stamp: None,
                };
                2
            ],
            envelope_id: String::new(),
            dsn_return: None,
        };
        let delivery = service
            .deliver(&onion(b'b'), 25, "id", &envelope, b"m")
            .await
            .unwrap();
        assert!(delivery.connection_error.is_some());
        assert_eq!(delivery.outcomes.len(), 2);
        assert!(
            delivery
                .outcomes
                .iter()
                .all(|outcome| matches!(outcome, Outcome::Temporary(reply) if reply.code == 451))
        );
    }

    #[tokio::test]
    async fn an_onion_tor_just_failed_to_reach_is_not_tried_again_at_once() {
        // A "SOCKS port" that hangs up on every connection: tor could not reach the onion.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(stream);
            }
        });
        let service = SmtpOutService::new(SocksEndpoint::Fixed(address));
        let envelope = Envelope {
            reverse_path: String::new(),
            recipients: vec![session::Recipient {
                address: "a@x.onion".into(),
                notify: vec![],
                original_recipient: String::new(),
                stamp: None,
            }],
            envelope_id: String::new(),
            dsn_return: None,
        };
        let down = onion(b'b');
        let first = service
            .deliver(&down, 25, "id-1", &envelope, b"m")
            .await
            .unwrap();
        assert!(first.connection_error.is_some());
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Another identity's session to the same onion fails at once, without a connection.
        let second = service
            .deliver(&down, 25, "id-2", &envelope, b"m")
            .await
            .unwrap();
        assert!(
            second
                .connection_error
                .as_deref()
                .is_some_and(|error| error.contains("not tried again yet")),
            "{second:?}"
        );
        assert!(matches!(&second.outcomes[0], Outcome::Temporary(reply) if reply.code == 451));
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Other onions are tried as usual.
        let other = onion(b'c');
        service
            .deliver(&other, 25, "id-1", &envelope, b"m")
            .await
            .unwrap();
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
