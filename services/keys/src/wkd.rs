//! The OpenPGP Web Key Directory, direct method (draft-koch-openpgp-webkey-service, §3.1),
//! over each identity's own onion.
//!
//! An identity publishes its key at `http://<onion>.onion/.well-known/openpgpkey/hu/<hash>?l=
//! <local>`, where `<hash>` is the z-base-32 encoded SHA-1 of the lowercased local part. Since
//! the onion address is self-certifying (only the holder of the onion key can answer on it), a
//! certificate fetched from an identity's own onion that holds a user ID with exactly that address
//! is *bound* to the address (design, "Keys bound to the onion"). [`fetch`] therefore checks the
//! user ID and returns the certificate with only that user ID left.
//!
//! [`fetch`] connects through tor's SOCKS5 port and hands tor the host name: `.onion` names are
//! never resolved locally (design, "Transport"). [`router`] serves keys; whoever owns the
//! listener mounts it on the onion's virtual port 80.
//!
//! The same listener serves the identity's mail-client autoconfiguration ([`crate::autoconfig`]).
//!
//! One router per onion: give a router only the identities reached through that listener. A
//! router holding identity B's key and mounted on A's onion would show anyone who asks that A
//! and B are hosted together. The router also checks the Host header against the onion of the
//! identity it serves, which stops casual probing but is no substitute for that rule, since a
//! client chooses its own Host header.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use sequoia_openpgp::Cert;
use sequoia_openpgp::serialize::SerializeInto;
use sequoia_openpgp::types::HashAlgorithm;

use crate::certs::userid_address;
use crate::{Address, KeysError, cert_holds_address};

/// Path prefix of the direct method.
pub const HU_PREFIX: &str = "/.well-known/openpgpkey/hu/";
/// The policy file; its presence tells clients the directory exists.
pub const POLICY_PATH: &str = "/.well-known/openpgpkey/policy";
/// Certificates larger than this are refused (a key with its signatures is a few KiB).
pub const MAX_CERT_BYTES: usize = 256 * 1024;
/// Where an identity's signed carrier list ([`crate::carrier_list`]) is served, next to its key
/// and under the same hash: `/.well-known/onionpost/carriers/<hash>?l=<local>`.
pub const CARRIERS_PREFIX: &str = "/.well-known/onionpost/carriers/";

/// z-base-32 of SHA-1 of the lowercased local part (WKD §3.1).
pub fn wkd_hash(local_part: &str) -> String {
    let mut sha1 = HashAlgorithm::SHA1
        .context()
        .expect("every backend has SHA-1")
        .for_digest();
    sha1.update(local_part.to_lowercase().as_bytes());
    let digest = sha1.into_digest().expect("SHA-1 digest");
    base32::encode(base32::Alphabet::Z, &digest)
}

/// `/.well-known/openpgpkey/hu/<hash>?l=<local>` for the address.
pub fn direct_path(address: &Address) -> String {
    hashed_path(HU_PREFIX, address)
}

/// `/.well-known/onionpost/carriers/<hash>?l=<local>` for the address.
pub fn carriers_path(address: &Address) -> String {
    hashed_path(CARRIERS_PREFIX, address)
}

fn hashed_path(prefix: &str, address: &Address) -> String {
    format!(
        "{prefix}{}?l={}",
        wkd_hash(address.local_part()),
        percent_encode(address.local_part())
    )
}

/// `http://<onion>.onion/.well-known/openpgpkey/hu/...`: no TLS, the onion is the channel's
/// authentication and encryption.
pub fn direct_url(address: &Address) -> String {
    format!("http://{}{}", address.onion_host(), direct_path(address))
}

/// RFC 3986 §2.3: everything but unreserved characters is percent-encoded.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Keeps only the user IDs that name `address`; fails unless one is valid.
pub fn bind_to_address(cert: Cert, address: &Address) -> Result<Cert, KeysError> {
    if !cert_holds_address(&cert, address) {
        return Err(KeysError::AddressNotBound(address.to_string()));
    }
    Ok(cert
        .strip_secret_key_material()
        .retain_userids(|uid| userid_address(uid.userid()).as_ref() == Some(address)))
}

/// Fetches the key of `address` from its own onion through tor's SOCKS5 port `socks`, and binds
/// it to the address. Network trouble gives [`KeysError::Fetch`] (transient); a 404 gives
/// [`KeysError::KeyNotFound`]; a key without the address gives [`KeysError::AddressNotBound`].
pub async fn fetch(
    socks: SocketAddr,
    address: &Address,
    timeout: Duration,
    circuit: &str,
) -> Result<Cert, KeysError> {
    let body = tokio::time::timeout(
        timeout,
        fetch_body(
            socks,
            address,
            &direct_path(address),
            MAX_CERT_BYTES,
            circuit,
        ),
    )
    .await
    .map_err(|_| KeysError::Fetch(format!("no answer within {}s", timeout.as_secs())))??;
    let cert = crate::parse_cert(&body)?;
    let bound = bind_to_address(cert, address)?;
    tracing::debug!(fingerprint = %bound.fingerprint(), "fetched a key over wkd");
    Ok(bound)
}

/// Fetches the signed carrier list `address` publishes on its own onion, unverified (the caller
/// checks it against the key it pinned). `None` when the onion publishes none.
pub async fn fetch_carriers(
    socks: SocketAddr,
    address: &Address,
    timeout: Duration,
    circuit: &str,
) -> Result<Option<Vec<u8>>, KeysError> {
    let path = carriers_path(address);
    let limit = crate::carrier_list::MAX_SIGNED_BYTES;
    match tokio::time::timeout(timeout, fetch_body(socks, address, &path, limit, circuit)).await {
        Err(_) => Err(KeysError::Fetch(format!(
            "no answer within {}s",
            timeout.as_secs()
        ))),
        Ok(Err(KeysError::KeyNotFound)) => Ok(None),
        Ok(Err(error)) => Err(error),
        Ok(Ok(body)) => Ok(Some(body.to_vec())),
    }
}

/// GETs `path` from the address's onion through tor; a 404 or 410 is
/// [`KeysError::KeyNotFound`], a body over `limit` bytes [`KeysError::MalformedKey`].
///
/// `circuit` is the SOCKS username: tor (IsolateSOCKSAuth, on by default) never lets streams
/// with different credentials share a circuit, so fetches made for two identities of this
/// carrier never arrive at a peer's onion over one circuit that would link them.
async fn fetch_body(
    socks: SocketAddr,
    address: &Address,
    path: &str,
    limit: usize,
    circuit: &str,
) -> Result<Bytes, KeysError> {
    let host = address.onion_host();
    // A (String, u16) target is sent to the proxy as a domain name (SOCKS5 ATYP 3): tor
    // resolves it, we never do.
    let stream = tokio_socks::tcp::Socks5Stream::connect_with_password(
        socks,
        (host.clone(), 80),
        circuit,
        "wkd",
    )
    .await
    .map_err(|error| KeysError::Fetch(format!("SOCKS connect: {error}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| KeysError::Fetch(format!("HTTP handshake: {error}")))?;
    let request = http::Request::get(path)
        .header(header::HOST, &host)
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(KeysError::crypto)?;
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| KeysError::Fetch(format!("HTTP request: {error}")))?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::GONE => return Err(KeysError::KeyNotFound),
            other => return Err(KeysError::Fetch(format!("HTTP status {other}"))),
        }
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|error| {
                KeysError::MalformedKey(format!("body unreadable or over {limit} bytes: {error}"))
            })?;
        Ok(body.to_bytes())
        // `sender` is dropped here, which lets `connection` finish.
    };
    // Drive the connection and the exchange together, in this task: nothing is left running
    // if the caller gives up.
    let (result, _connection_result) = tokio::join!(exchange, connection);
    result
}

/// The keys one router serves, by onion and WKD hash. Cheap to clone; updates are seen by the
/// router at once (a new key after a transition, a withdrawn identity).
#[derive(Clone, Debug, Default)]
pub struct WkdDirectory {
    /// (onion without `.onion`, WKD hash) to the binary certificate served.
    keys: Slots,
    /// The same slots to the signed carrier list served, for identities that publish one.
    carriers: Slots,
}

/// (onion without `.onion`, WKD hash) to the bytes served there.
type Slots = Arc<RwLock<HashMap<(String, String), Bytes>>>;

impl WkdDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        WkdDirectory::default()
    }

    /// Publishes `cert` for `address`, with only the address's user ID.
    pub fn publish(&self, address: &Address, cert: &Cert) -> Result<(), KeysError> {
        let bound = bind_to_address(cert.clone(), address)?;
        let bytes = bound.export_to_vec().map_err(KeysError::crypto)?;
        self.insert_raw(address, Bytes::from(bytes));
        Ok(())
    }

    /// Serves `signed` (a signed carrier list) for the address, or stops serving one (`None`).
    pub fn publish_carriers(&self, address: &Address, signed: Option<Vec<u8>>) {
        let mut carriers = self.carriers.write().expect("WKD directory lock poisoned");
        match signed {
            Some(signed) => carriers.insert(Self::slot(address), Bytes::from(signed)),
            None => carriers.remove(&Self::slot(address)),
        };
    }

    /// Serves a revoked certificate (`bytes`, binary) for the address in place of its key, and
    /// no carrier list: a peer that fetches it learns the revocation, signed by the key it
    /// pinned. Taken as it is: its user ID is revoked, so it cannot be bound anew.
    pub fn publish_revoked(&self, address: &Address, bytes: Vec<u8>) {
        self.insert_raw(address, Bytes::from(bytes));
        self.publish_carriers(address, None);
    }

    /// Stops serving the address (its key and its carrier list).
    pub fn withdraw(&self, address: &Address) {
        self.keys
            .write()
            .expect("WKD directory lock poisoned")
            .remove(&Self::slot(address));
        self.publish_carriers(address, None);
    }

    fn insert_raw(&self, address: &Address, bytes: Bytes) {
        self.keys
            .write()
            .expect("WKD directory lock poisoned")
            .insert(Self::slot(address), bytes);
    }

    fn slot(address: &Address) -> (String, String) {
        (address.onion().to_owned(), wkd_hash(address.local_part()))
    }

    fn get(&self, onion: &str, hash: &str) -> Option<Bytes> {
        Self::lookup(&self.keys, onion, hash)
    }

    fn get_carriers(&self, onion: &str, hash: &str) -> Option<Bytes> {
        Self::lookup(&self.carriers, onion, hash)
    }

    fn lookup(map: &Slots, onion: &str, hash: &str) -> Option<Bytes> {
        map.read()
            .expect("WKD directory lock poisoned")
            .get(&(onion.to_owned(), hash.to_owned()))
            .cloned()
    }

    /// Whether a key is served for this onion and WKD hash.
    pub(crate) fn serves(&self, onion: &str, hash: &str) -> bool {
        self.get(onion, hash).is_some()
    }

    pub(crate) fn serves_onion(&self, onion: &str) -> bool {
        self.keys
            .read()
            .expect("WKD directory lock poisoned")
            .keys()
            .any(|(served, _)| served == onion)
    }
}

/// The WKD routes for one onion listener (see the module documentation).
pub fn router(directory: WkdDirectory) -> Router {
    Router::new()
        .route("/.well-known/openpgpkey/hu/{hash}", get(serve_key))
        .route(
            "/.well-known/onionpost/carriers/{hash}",
            get(serve_carriers),
        )
        .route(POLICY_PATH, get(serve_policy))
        .merge(crate::autoconfig::router())
        .with_state(directory)
}

/// The 56-character onion named by the Host header, if it names one.
pub(crate) fn host_onion(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let host = host.rsplit_once(':').map_or(host, |(name, _port)| name);
    let onion = onionpost_proto::address::OnionHost::parse(host).ok()?;
    Some(onion.label().to_owned())
}

async fn serve_key(
    State(directory): State<WkdDirectory>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    let found = host_onion(&headers).and_then(|onion| directory.get(&onion, &hash));
    binary_or_not_found(found)
}

async fn serve_carriers(
    State(directory): State<WkdDirectory>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    let found = host_onion(&headers).and_then(|onion| directory.get_carriers(&onion, &hash));
    binary_or_not_found(found)
}

fn binary_or_not_found(found: Option<Bytes>) -> Response {
    match found {
        Some(bytes) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            ],
            bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn serve_policy(State(directory): State<WkdDirectory>, headers: HeaderMap) -> Response {
    let serves = host_onion(&headers).is_some_and(|onion| directory.serves_onion(&onion));
    if serves {
        (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "").into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tower::ServiceExt;

    use super::*;
    use crate::identity_key::tests::{alice, bob};

    #[test]
    fn hash_matches_the_draft_example() {
        // draft-koch-openpgp-webkey-service §3.1: Joe.Doe@Example.ORG.
        assert_eq!(wkd_hash("Joe.Doe"), "iy9q119eutrkn8s1mk4r39qejnbu3n5q");
    }

    #[test]
    fn path_and_url() {
        let address = alice().address();
        let path = direct_path(address);
        assert_eq!(path, format!("{HU_PREFIX}{}?l=alice", wkd_hash("alice")));
        assert_eq!(
            direct_url(address),
            format!("http://{}{path}", address.onion_host())
        );
        assert_eq!(percent_encode("a+b/c"), "a%2Bb%2Fc");
    }

    async fn get(router: Router, host: Option<&str>, path: &str) -> (StatusCode, Bytes) {
        let mut request = http::Request::get(path);
        if let Some(host) = host {
            request = request.header(header::HOST, host);
        }
        let response = router
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }

    #[tokio::test]
    async fn router_serves_the_key_of_its_identity_only() {
        let directory = WkdDirectory::new();
        let address = alice().address();
        directory.publish(address, &alice().public_cert()).unwrap();
        let app = router(directory.clone());
        let host = address.onion_host();

        let (status, body) = get(app.clone(), Some(&host), &direct_path(address)).await;
        assert_eq!(status, StatusCode::OK);
        let served = crate::parse_cert(&body).unwrap();
        assert_eq!(served.fingerprint(), alice().fingerprint());
        assert!(!served.is_tsk());

        let (status, _) = get(app.clone(), Some(&format!("{host}:80")), POLICY_PATH).await;
        assert_eq!(status, StatusCode::OK);

        // Another onion's name, no Host, an unknown local part: nothing.
        let other_host = bob().address().onion_host();
        let (status, _) = get(app.clone(), Some(&other_host), &direct_path(address)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = get(app.clone(), None, &direct_path(address)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = get(app.clone(), Some(&other_host), POLICY_PATH).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let nobody = format!("{HU_PREFIX}{}", wkd_hash("nobody"));
        let (status, _) = get(app.clone(), Some(&host), &nobody).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        directory.withdraw(address);
        let (status, _) = get(app, Some(&host), &direct_path(address)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn publish_refuses_a_key_without_the_address() {
        let directory = WkdDirectory::new();
        assert!(matches!(
            directory.publish(alice().address(), &bob().public_cert()),
            Err(KeysError::AddressNotBound(_))
        ));
    }

    /// A SOCKS5 proxy (RFC 1928, no authentication, CONNECT only) that sends every connection
    /// to `target` and records the host names it was asked for, standing in for tor.
    async fn fake_tor(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let record = asked.clone();
        tokio::spawn(async move {
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                let record = record.clone();
                tokio::spawn(async move {
                    let mut greeting = [0u8; 2];
                    client.read_exact(&mut greeting).await.unwrap();
                    let mut methods = vec![0u8; usize::from(greeting[1])];
                    client.read_exact(&mut methods).await.unwrap();
                    client.write_all(&[5, 0]).await.unwrap();
                    let mut request = [0u8; 4];
                    client.read_exact(&mut request).await.unwrap();
                    // ATYP 3: a domain name. Anything else means the client resolved it.
                    assert_eq!(request[3], 3, "the client must send a host name");
                    let mut len = [0u8; 1];
                    client.read_exact(&mut len).await.unwrap();
                    let mut name = vec![0u8; usize::from(len[0])];
                    client.read_exact(&mut name).await.unwrap();
                    let mut port = [0u8; 2];
                    client.read_exact(&mut port).await.unwrap();
                    record.lock().unwrap().push(format!(
                        "{}:{}",
                        String::from_utf8(name).unwrap(),
                        u16::from_be_bytes(port)
                    ));
                    let mut upstream = TcpStream::connect(target).await.unwrap();
                    client
                        .write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0])
                        .await
                        .unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        (proxy, asked)
    }

    async fn serve(app: Router) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        address
    }

    #[tokio::test]
    async fn fetch_goes_through_socks_by_name_and_binds_the_key() {
        let directory = WkdDirectory::new();
        directory
            .publish(alice().address(), &alice().public_cert())
            .unwrap();
        let server = serve(router(directory)).await;
        let (proxy, asked) = fake_tor(server).await;

        let cert = fetch(proxy, alice().address(), Duration::from_secs(10), "test")
            .await
            .unwrap();
        assert_eq!(cert.fingerprint(), alice().fingerprint());
        assert!(cert_holds_address(&cert, alice().address()));
        assert_eq!(
            asked.lock().unwrap().as_slice(),
            [format!("{}:80", alice().address().onion_host())]
        );

        // Nothing published for Bob on this server.
        let error = fetch(proxy, bob().address(), Duration::from_secs(10), "test")
            .await
            .unwrap_err();
        assert!(matches!(error, KeysError::KeyNotFound), "{error}");
        assert!(!error.is_transient());
    }

    #[tokio::test]
    async fn the_carrier_list_is_served_next_to_the_key_of_its_onion_only() {
        let directory = WkdDirectory::new();
        let address = alice().address();
        directory.publish(address, &alice().public_cert()).unwrap();
        directory.publish_carriers(address, Some(b"signed list".to_vec()));
        let app = router(directory.clone());
        let (status, body) = get(
            app.clone(),
            Some(&address.onion_host()),
            &carriers_path(address),
        )
        .await;
        assert_eq!(
            (status, body.as_ref()),
            (StatusCode::OK, b"signed list".as_ref())
        );
        let other_host = bob().address().onion_host();
        let (status, _) = get(app.clone(), Some(&other_host), &carriers_path(address)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let server = serve(app.clone()).await;
        let (proxy, asked) = fake_tor(server).await;
        let fetched = fetch_carriers(proxy, address, Duration::from_secs(10), "test")
            .await
            .unwrap();
        assert_eq!(fetched.as_deref(), Some(b"signed list".as_ref()));
        assert_eq!(
            asked.lock().unwrap().as_slice(),
            [format!("{}:80", address.onion_host())]
        );
        // Bob publishes nothing here: no list, not an error.
        let none = fetch_carriers(proxy, bob().address(), Duration::from_secs(10), "test")
            .await
            .unwrap();
        assert_eq!(none, None);

        // Withdrawing the identity withdraws its list too.
        directory.withdraw(address);
        let (status, _) = get(app, Some(&address.onion_host()), &carriers_path(address)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn fetched_key_must_hold_the_address() {
        // A server that answers Alice's WKD path with Bob's key.
        let directory = WkdDirectory::new();
        let bob_bytes = bob().public_cert().export_to_vec().unwrap();
        directory.insert_raw(alice().address(), Bytes::from(bob_bytes));
        let server = serve(router(directory)).await;
        let (proxy, _) = fake_tor(server).await;
        let error = fetch(proxy, alice().address(), Duration::from_secs(10), "test")
            .await
            .unwrap_err();
        assert!(matches!(error, KeysError::AddressNotBound(_)), "{error}");
    }

    #[tokio::test]
    async fn garbage_from_the_onion_is_a_malformed_key() {
        let directory = WkdDirectory::new();
        directory.insert_raw(alice().address(), Bytes::from_static(b"not a key"));
        let server = serve(router(directory)).await;
        let (proxy, _) = fake_tor(server).await;
        let error = fetch(proxy, alice().address(), Duration::from_secs(10), "test")
            .await
            .unwrap_err();
        assert!(matches!(error, KeysError::MalformedKey(_)), "{error}");
    }

    #[tokio::test]
    async fn unreachable_proxy_is_transient() {
        // Bind and drop a listener to get a port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let error = fetch(port, alice().address(), Duration::from_secs(5), "test")
            .await
            .unwrap_err();
        assert!(error.is_transient(), "{error}");
    }
}
