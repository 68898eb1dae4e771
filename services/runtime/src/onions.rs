//! Following identities' onions through the onion service's WatchOnions stream.
//!
//! - [`OnionWatch`]: the subscription itself. It subscribes, hands out each update, and when the
//!   stream ends or fails subscribes again after a back-off with jitter (so co-hosted services
//!   and replicas do not reconnect in step). A new subscription starts with a snapshot
//!   (`snapshot` set), which holds every onion: a watcher never needs to replay missed events.
//! - [`Follower`]: keeps one listener per identity and port purpose on the target address tor
//!   forwards that onion port to, and hands each bound listener to the service's serve
//!   function. It moves a listener when the target changes and stops it when the onion is
//!   revoked or missing from a snapshot.
//!
//! An identity's listener is bound on its target address and nowhere else (issue 18, item 7):
//! these listeners offer AUTH in plain text, trusting tor to encrypt, so falling back to every
//! interface when the target address is not this host's would expose them on the network. A
//! failed bind is logged and retried with back-off until it succeeds or the onion goes away.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use onionpost_proto::ServiceName;
use onionpost_proto::clients;
use onionpost_proto::onion::v1::{
    OnionService, OnionState, PortPurpose, WatchOnionsRequest, WatchOnionsResponse,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::grpc::Transport;
use crate::service::ServiceContext;

/// First pause before subscribing again after the watch ended or could not start.
const WATCH_FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between subscriptions.
const WATCH_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// First pause before binding an identity's target again after a failure.
const BIND_FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between binding attempts.
const BIND_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One WatchOnions subscription for every identity, renewed whenever it ends.
pub struct OnionWatch {
    transport: Transport,
    shutdown: CancellationToken,
    backoff: Backoff,
    stream: Option<tonic::Streaming<WatchOnionsResponse>>,
    /// Whether the next subscription follows a failure and waits for the back-off first.
    retrying: bool,
}

impl OnionWatch {
    pub fn new(transport: Transport, shutdown: CancellationToken) -> Self {
        OnionWatch {
            transport,
            shutdown,
            backoff: Backoff::new(WATCH_FIRST_BACKOFF, WATCH_MAX_BACKOFF),
            stream: None,
            retrying: false,
        }
    }

    /// The next update, subscribing (again) as needed; `None` once shutdown is cancelled.
    pub async fn next(&mut self) -> Option<WatchOnionsResponse> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                self.subscribe().await?;
                continue;
            };
            let message = tokio::select! {
                () = self.shutdown.cancelled() => return None,
                message = stream.message() => message,
            };
            match message {
                Ok(Some(update)) => return Some(update),
                Ok(None) => {
                    tracing::debug!("onion watch ended; subscribing again");
                }
                Err(status) => {
                    tracing::warn!(error = %status.message(), "onion watch ended");
                }
            }
            self.stream = None;
            self.retrying = true;
        }
    }

    /// One attempt to subscribe, after the back-off when the last one failed or ended. `None`
    /// once shutdown is cancelled.
    async fn subscribe(&mut self) -> Option<()> {
        if self.retrying {
            tokio::select! {
                () = self.shutdown.cancelled() => return None,
                () = tokio::time::sleep(self.backoff.pause()) => {}
            }
        }
        let mut client = clients::onion(self.transport.clone());
        let started = tokio::select! {
            () = self.shutdown.cancelled() => return None,
            started = client.watch_onions(WatchOnionsRequest { identity_ids: Vec::new() }) => started,
        };
        match started {
            Ok(response) => {
                self.backoff.reset();
                self.retrying = false;
                self.stream = Some(response.into_inner());
            }
            Err(status) => {
                tracing::warn!(error = %status.message(), "cannot watch onions; retrying");
                self.retrying = true;
            }
        }
        Some(())
    }
}

/// A listener bound on an identity's onion target, handed to the serve function.
pub struct Binding {
    /// Whose onion this listener serves.
    pub identity_id: String,
    /// Which of the onion's ports it serves.
    pub purpose: PortPurpose,
    pub listener: TcpListener,
    /// Cancelled when the listener must stop: the onion moved, was revoked or vanished, or the
    /// process shuts down.
    pub stop: CancellationToken,
}

/// Keeps one listener per identity and port purpose on the onion's target, served by `serve`.
pub struct Follower<F> {
    purposes: Vec<PortPurpose>,
    /// Task name of each identity's listener.
    listener_task: &'static str,
    serve: Arc<F>,
}

impl<F, Fut> Follower<F>
where
    F: Fn(Binding) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// Follows the ports of `purposes`; `serve` runs each bound listener until its `stop`.
    pub fn new(purposes: &[PortPurpose], listener_task: &'static str, serve: F) -> Self {
        Follower {
            purposes: purposes.to_vec(),
            listener_task,
            serve: Arc::new(serve),
        }
    }

    /// Starts following as the task `task` when the onion service is reachable (in this
    /// process or remote); without it nothing is served on identities' onions.
    pub fn spawn(self, context: &ServiceContext, task: &'static str) {
        let Ok(transport) = context.transport(ServiceName::Onion) else {
            tracing::info!(
                task,
                "onion service not configured; nothing is served on identities' onions"
            );
            return;
        };
        let loop_context = context.clone();
        context.spawn(task, self.run(loop_context, transport));
    }

    async fn run(self, context: ServiceContext, transport: Transport) {
        let listener_task = self.listener_task;
        let spawn_context = context.clone();
        let spawner: Spawner = Arc::new(move |task| spawn_context.spawn(listener_task, task));
        let mut listeners = Listeners::new(
            self.purposes,
            self.serve,
            context.shutdown.clone(),
            spawner,
            Backoff::new(BIND_FIRST_BACKOFF, BIND_MAX_BACKOFF),
        );
        let mut watch = OnionWatch::new(transport, context.shutdown.clone());
        while let Some(update) = watch.next().await {
            listeners.apply(&update).await;
        }
        listeners.stop_all();
    }
}

/// How the follower starts an identity's listener task (the service context's named tasks; a
/// plain tokio task in tests).
type Spawner = Arc<dyn Fn(BoxFuture<'static, ()>) + Send + Sync>;

/// An identity's listener: the target it serves and the token that stops it.
struct Listener {
    target: SocketAddr,
    stop: CancellationToken,
}

/// The follower's state: the listeners it keeps, by identity and purpose.
struct Listeners<F> {
    purposes: Vec<PortPurpose>,
    serve: Arc<F>,
    shutdown: CancellationToken,
    spawner: Spawner,
    /// The back-off a listener whose target cannot be bound starts from.
    bind_backoff: Backoff,
    current: HashMap<(String, PortPurpose), Listener>,
}

impl<F, Fut> Listeners<F>
where
    F: Fn(Binding) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn new(
        purposes: Vec<PortPurpose>,
        serve: Arc<F>,
        shutdown: CancellationToken,
        spawner: Spawner,
        bind_backoff: Backoff,
    ) -> Self {
        Listeners {
            purposes,
            serve,
            shutdown,
            spawner,
            bind_backoff,
            current: HashMap::new(),
        }
    }

    /// Brings the listeners in line with one update: a snapshot first stops the listeners of
    /// onions it does not hold.
    async fn apply(&mut self, update: &WatchOnionsResponse) {
        if update.snapshot {
            let present: Vec<&str> = update
                .onions
                .iter()
                .map(|onion| onion.identity_id.as_str())
                .collect();
            self.current.retain(|(identity_id, _), listener| {
                let keep = present.contains(&identity_id.as_str());
                if !keep {
                    listener.stop.cancel();
                }
                keep
            });
        }
        for onion in &update.onions {
            for purpose in self.purposes.clone() {
                self.follow(onion, purpose).await;
            }
        }
    }

    /// Keeps one identity's listener for one purpose on its onion's target: started, moved
    /// when the target changes, stopped when the onion is revoked or has no such port.
    async fn follow(&mut self, onion: &OnionService, purpose: PortPurpose) {
        let wanted = target(onion, purpose).filter(|_| onion.state() != OnionState::Revoked);
        let key = (onion.identity_id.clone(), purpose);
        let current = self.current.get(&key).map(|listener| listener.target);
        if current == wanted {
            return;
        }
        if let Some(old) = self.current.remove(&key) {
            old.stop.cancel();
        }
        let Some(target) = wanted else { return };
        let stop = self.shutdown.child_token();
        // The first attempt is made here, so a listener is up before the next update is read;
        // only a failure is retried in the listener's own task.
        let bound = TcpListener::bind(target).await;
        if let Err(error) = &bound {
            warn_unbound(&onion.identity_id, purpose, target, error);
        }
        let task = listen(
            bound.ok(),
            target,
            onion.identity_id.clone(),
            purpose,
            stop.clone(),
            self.bind_backoff.clone(),
            self.serve.clone(),
        );
        (self.spawner)(Box::pin(task));
        self.current.insert(key, Listener { target, stop });
    }

    fn stop_all(&mut self) {
        for listener in self.current.values() {
            listener.stop.cancel();
        }
        self.current.clear();
    }
}

/// The target tor forwards `onion`'s port of `purpose` to, when it has one and it is one IP
/// address with a valid port. An unspecified address (0.0.0.0, ::) is no target: binding it
/// would open the identity's port on every interface, off the onion.
fn target(onion: &OnionService, purpose: PortPurpose) -> Option<SocketAddr> {
    let port = onion
        .ports
        .iter()
        .find(|port| port.purpose == purpose as i32)?;
    let host: IpAddr = port
        .target_host
        .parse()
        .ok()
        .filter(|host: &IpAddr| !host.is_unspecified())?;
    let target_port = u16::try_from(port.target_port).ok()?;
    Some(SocketAddr::new(host, target_port))
}

/// Binds `target` (unless `bound` already holds it), retrying with back-off until `stop`, then
/// serves it.
async fn listen<F, Fut>(
    bound: Option<TcpListener>,
    target: SocketAddr,
    identity_id: String,
    purpose: PortPurpose,
    stop: CancellationToken,
    mut backoff: Backoff,
    serve: Arc<F>,
) where
    F: Fn(Binding) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = match bound {
        Some(listener) => listener,
        None => loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff.pause()) => {}
            }
            match TcpListener::bind(target).await {
                Ok(listener) => break listener,
                Err(error) => warn_unbound(&identity_id, purpose, target, &error),
            }
        },
    };
    tracing::debug!(%identity_id, purpose = purpose.as_str_name(), port = target.port(), "serving on an onion");
    serve(Binding {
        identity_id,
        purpose,
        listener,
        stop,
    })
    .await;
}

/// Logged without the onion's address: the identity id and port are enough to act on.
fn warn_unbound(
    identity_id: &str,
    purpose: PortPurpose,
    target: SocketAddr,
    error: &std::io::Error,
) {
    tracing::warn!(
        %identity_id,
        purpose = purpose.as_str_name(),
        port = target.port(),
        %error,
        "cannot listen on an onion's target; retrying"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use onionpost_proto::onion::v1::PortMapping;
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    /// What the serve function was handed: identity, purpose and local address.
    type Served = Arc<Mutex<Vec<(String, PortPurpose, SocketAddr)>>>;

    fn listeners(
        purposes: &[PortPurpose],
        served: &Served,
        shutdown: &CancellationToken,
    ) -> Listeners<impl Fn(Binding) -> BoxFuture<'static, ()> + Send + Sync + 'static> {
        let record = served.clone();
        let serve = move |binding: Binding| -> BoxFuture<'static, ()> {
            let local = binding.listener.local_addr().expect("bound");
            record
                .lock()
                .unwrap()
                .push((binding.identity_id.clone(), binding.purpose, local));
            Box::pin(async move {
                loop {
                    tokio::select! {
                        () = binding.stop.cancelled() => return,
                        accepted = binding.listener.accept() => {
                            let (mut stream, _) = accepted.expect("accept");
                            let _ = stream.write_all(b"hello\r\n").await;
                        }
                    }
                }
            })
        };
        let spawner: Spawner = Arc::new(|task| {
            tokio::spawn(task);
        });
        Listeners::new(
            purposes.to_vec(),
            Arc::new(serve),
            shutdown.clone(),
            spawner,
            Backoff::new(Duration::from_millis(20), Duration::from_millis(40)),
        )
    }

    #[test]
    fn an_unspecified_address_is_no_onion_target() {
        for any in ["0.0.0.0:10000", "[::]:10000"] {
            let onion = onion(
                "alice",
                OnionState::Online,
                &[(PortPurpose::Smtp, any.parse().unwrap())],
            );
            assert_eq!(target(&onion, PortPurpose::Smtp), None, "{any}");
        }
        let onion = onion(
            "alice",
            OnionState::Online,
            &[(PortPurpose::Smtp, "127.0.0.1:10000".parse().unwrap())],
        );
        assert!(target(&onion, PortPurpose::Smtp).is_some());
    }

    fn onion(
        identity_id: &str,
        state: OnionState,
        ports: &[(PortPurpose, SocketAddr)],
    ) -> OnionService {
        OnionService {
            identity_id: identity_id.to_owned(),
            state: state as i32,
            ports: ports
                .iter()
                .map(|(purpose, target)| PortMapping {
                    purpose: *purpose as i32,
                    target_host: target.ip().to_string(),
                    target_port: u32::from(target.port()),
                    ..PortMapping::default()
                })
                .collect(),
            ..OnionService::default()
        }
    }

    fn update(snapshot: bool, onions: Vec<OnionService>) -> WatchOnionsResponse {
        WatchOnionsResponse { snapshot, onions }
    }

    /// A snapshot holding one online onion, `id-1`, with one port.
    async fn online_with_one_port<F, Fut>(
        follower: &mut Listeners<F>,
        purpose: PortPurpose,
        target: SocketAddr,
    ) where
        F: Fn(Binding) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let only = onion("id-1", OnionState::Online, &[(purpose, target)]);
        follower.apply(&update(true, vec![only])).await;
    }

    /// A port free on loopback a moment ago.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn wait_for(what: &str, condition: impl Fn() -> bool) {
        for _ in 0..200 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn serves_each_purpose_on_its_target_and_stops_revoked_onions() {
        let served = Served::default();
        let shutdown = CancellationToken::new();
        let mut follower = listeners(&[PortPurpose::Smtp, PortPurpose::Imap], &served, &shutdown);
        let smtp: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let imap: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let wkd: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let ports = [
            (PortPurpose::Smtp, smtp),
            (PortPurpose::Imap, imap),
            (PortPurpose::Wkd, wkd),
        ];
        follower
            .apply(&update(
                true,
                vec![onion("id-1", OnionState::Online, &ports)],
            ))
            .await;
        wait_for("two listeners", || served.lock().unwrap().len() == 2).await;
        let mut seen = served.lock().unwrap().clone();
        seen.sort_by_key(|(_, purpose, _)| *purpose as i32);
        assert_eq!(
            seen,
            vec![
                ("id-1".to_owned(), PortPurpose::Smtp, smtp),
                ("id-1".to_owned(), PortPurpose::Imap, imap),
            ]
        );
        // The WKD purpose is not followed here: nothing was served for it (above). Probing its
        // port instead raced other tests of this binary that bind ports of their own.

        follower
            .apply(&update(
                false,
                vec![onion("id-1", OnionState::Revoked, &ports)],
            ))
            .await;
        assert!(follower.current.is_empty());
        wait_for("the smtp port released", || {
            std::net::TcpListener::bind(smtp).is_ok()
        })
        .await;
    }

    #[tokio::test]
    async fn a_snapshot_stops_listeners_of_onions_it_does_not_hold() {
        let served = Served::default();
        let shutdown = CancellationToken::new();
        let mut follower = listeners(&[PortPurpose::Wkd], &served, &shutdown);
        let first: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let second: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        follower
            .apply(&update(
                true,
                vec![
                    onion("id-1", OnionState::Online, &[(PortPurpose::Wkd, first)]),
                    onion("id-2", OnionState::Online, &[(PortPurpose::Wkd, second)]),
                ],
            ))
            .await;
        assert_eq!(follower.current.len(), 2);
        follower
            .apply(&update(
                true,
                vec![onion(
                    "id-2",
                    OnionState::Online,
                    &[(PortPurpose::Wkd, second)],
                )],
            ))
            .await;
        let kept: Vec<&str> = follower.current.keys().map(|(id, _)| id.as_str()).collect();
        assert_eq!(kept, vec!["id-2"]);
        wait_for("the first port released", || {
            std::net::TcpListener::bind(first).is_ok()
        })
        .await;
        shutdown.cancel();
    }

    /// Issue 18, item 7: an onion-only listener whose target address is not this host's is
    /// not opened on every interface instead.
    #[tokio::test]
    async fn an_unavailable_target_address_is_not_replaced_by_every_interface() {
        let served = Served::default();
        let shutdown = CancellationToken::new();
        let mut follower = listeners(&[PortPurpose::Submission], &served, &shutdown);
        let port = free_port();
        // TEST-NET-1 (RFC 5737): never an address of this host.
        let unavailable: SocketAddr = ([192, 0, 2, 1], port).into();
        online_with_one_port(&mut follower, PortPurpose::Submission, unavailable).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Nothing was bound and served anywhere: the follower hands the serve function only
        // listeners it bound on the target address itself. (Probing the port directly raced
        // other tests of this binary that are handed ephemeral ports.)
        assert!(served.lock().unwrap().is_empty());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_target_that_cannot_be_bound_yet_is_retried() {
        let served = Served::default();
        let shutdown = CancellationToken::new();
        let mut follower = listeners(&[PortPurpose::Imap], &served, &shutdown);
        let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = blocker.local_addr().unwrap();
        online_with_one_port(&mut follower, PortPurpose::Imap, target).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(served.lock().unwrap().is_empty());
        drop(blocker);
        wait_for("the listener bound on retry", || {
            served.lock().unwrap().len() == 1
        })
        .await;
        let mut stream = tokio::net::TcpStream::connect(target).await.unwrap();
        let mut greeting = [0u8; 7];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut greeting)
            .await
            .unwrap();
        assert_eq!(&greeting, b"hello\r\n");
        shutdown.cancel();
    }
}
