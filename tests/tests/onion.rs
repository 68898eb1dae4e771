//! The onion service over the private Tor network: identities created through its gRPC
//! contract are reachable from another node's tor at their virtual ports, each on its own
//! target ports; they come back by themselves after tor is killed and restarted and after the
//! service itself restarts (both timed); a revoked identity is unreachable and its key gone
//! from disk; and a wrong password or an unreachable control port give one clear error while
//! the service keeps retrying.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use onionpost_e2e::onion_service::{
    ControlAuth, OnionServiceRun, free_port_block, onion_env, pool_env,
};
use onionpost_e2e::{TorClient, TorNet};
use onionpost_proto::onion::v1::onion_client::OnionClient;
use onionpost_proto::onion::v1::{
    CreateOnionRequest, ExportOnionKeyRequest, GetOnionRequest, GetSocksEndpointRequest,
    OnionService, OnionState, RevokeOnionRequest,
};
use onionpost_runtime::Transport as Channel;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Time allowed for an onion to come online and be reached; 2-10 s here, the slack is for a
/// machine busy compiling.
const ONION_TIMEOUT: Duration = Duration::from_secs(120);

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Listens on every target port of `onion` and greets each connection with
/// `<identity> <virtual port>`, standing in for smtp-in and keys: the greeting proves which
/// identity's onion and which virtual port a connection came through.
async fn serve_targets(onion: &OnionService) -> anyhow::Result<()> {
    for mapping in &onion.ports {
        let address: SocketAddr = format!("{}:{}", mapping.target_host, mapping.target_port)
            .parse()
            .context("target address")?;
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("binding target {address}"))?;
        let greeting = format!("{} {}\r\n", onion.identity_id, mapping.virtual_port);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let greeting = greeting.clone();
                tokio::spawn(async move {
                    let _ = socket.write_all(greeting.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
    }
    Ok(())
}

/// Connects through `via` to every virtual port of `onion` and checks the greeting.
async fn check_reachable(
    via: &TorClient,
    onion: &OnionService,
    within: Duration,
) -> anyhow::Result<()> {
    for mapping in &onion.ports {
        let port = u16::try_from(mapping.virtual_port)?;
        let stream = via
            .connect_onion(&onion.onion_address, port, within)
            .await
            .with_context(|| format!("reaching {} port {port}", onion.identity_id))?;
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stream).read_line(&mut line),
        )
        .await
        .context("greeting timed out")??;
        let expected = format!("{} {}", onion.identity_id, port);
        ensure!(
            line.trim_end() == expected,
            "port {port} of {} answered `{}`, expected `{expected}`",
            onion.identity_id,
            line.trim_end()
        );
    }
    Ok(())
}

async fn wait_state(
    client: &mut OnionClient<Channel>,
    identity_id: &str,
    state: OnionState,
    within: Duration,
) -> anyhow::Result<OnionService> {
    let started = Instant::now();
    loop {
        let onion = client
            .get_onion(GetOnionRequest {
                identity_id: identity_id.to_owned(),
            })
            .await?
            .into_inner();
        if onion.state == state as i32 {
            return Ok(onion);
        }
        ensure!(
            started.elapsed() < within,
            "{identity_id} not {state:?} after {within:?}: {onion:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(
    client: &mut OnionClient<Channel>,
    identity_id: &str,
) -> anyhow::Result<OnionService> {
    Ok(client
        .create_onion(CreateOnionRequest {
            identity_id: identity_id.to_owned(),
            purposes: Vec::new(),
        })
        .await?
        .into_inner())
}

/// Whether any file under `dir` contains `needle`.
fn any_file_contains(dir: &Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            return any_file_contains(&path, needle);
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        bytes.windows(needle.len()).any(|window| window == needle)
    })
}

/// The sealed key of `identity_id` as stored in the service's SQLite file.
async fn stored_sealed_key(data_dir: &Path, identity_id: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let database = onionpost_runtime::Database::open_sqlite(
        &data_dir.join("onion.sqlite3"),
        onionpost_onion::store::MIGRATIONS,
    )
    .await?;
    let store = onionpost_onion::store::for_database(database.clone());
    let onion = store.get(identity_id).await?;
    database.close().await;
    Ok(onion.and_then(|onion| onion.sealed_key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_reachable_survive_restarts_and_revocation_destroys_them()
-> anyhow::Result<()> {
    init_tracing();
    let tornet = TorNet::start(2).await?;
    println!("onion: tor network ready after {:?}", tornet.ready_after());
    let host = tornet.client(0);
    let peer = tornet.client(1);
    let data = tempfile::tempdir()?;
    let mut env = onion_env(
        data.path(),
        host.control_addr(),
        &ControlAuth::Cookie(host.cookie_file().to_owned()),
        free_port_block(16)?,
    );
    // A revoked identity's onion serves its revocation this long before it goes.
    // Long enough that a check through tor fits inside it on a loaded machine (8 s did not,
    // once: the onion retired while the peer was still building its circuit).
    let revocation_serve = Duration::from_secs(20);
    env.push((
        "ONIONPOST_TOR_REVOCATION_SERVE_SECS".to_owned(),
        revocation_serve.as_secs().to_string(),
    ));
    let service = OnionServiceRun::start(env.clone()).await?;
    let status = service
        .wait_tor_status(Duration::from_secs(30), |status| status.control_connected)
        .await?;
    ensure!(status.tor_version.starts_with("0.4."), "{status:?}");
    ensure!(
        status.pow_defense_supported,
        "tor 0.4.9 takes PoWDefensesEnabled: {status:?}"
    );
    let mut client = service.client().await?;
    let socks = client
        .get_socks_endpoint(GetSocksEndpointRequest {})
        .await?
        .into_inner();
    ensure!(
        socks.address == host.socks_addr().to_string(),
        "socks endpoint {} is not tor's {}",
        socks.address,
        host.socks_addr()
    );

    // Two identities, each reachable at ports 25 and 80 through its own targets.
    let created_at = Instant::now();
    let alice = create(&mut client, "alice").await?;
    let bob = create(&mut client, "bob").await?;
    ensure!(alice.onion_address.len() == 62 && alice.onion_address.ends_with(".onion"));
    ensure!(alice.onion_address != bob.onion_address);
    ensure!(alice.pow_defense_enabled, "{alice:?}");
    ensure!(alice.ports.len() == 2 && bob.ports.len() == 2);
    ensure!(alice.ports[0].target_port != bob.ports[0].target_port);
    let again = create(&mut client, "alice").await?;
    ensure!(
        again.onion_address == alice.onion_address,
        "CreateOnion is not idempotent"
    );
    serve_targets(&alice).await?;
    serve_targets(&bob).await?;
    wait_state(&mut client, "alice", OnionState::Online, ONION_TIMEOUT).await?;
    let online_after = created_at.elapsed();
    check_reachable(peer, &alice, ONION_TIMEOUT).await?;
    check_reachable(peer, &bob, ONION_TIMEOUT).await?;
    println!(
        "onion: created identities online after {online_after:?}, reachable from another node after {:?}",
        created_at.elapsed()
    );

    // tor is killed and restarted: the same addresses come back with no manual step.
    let killed_at = Instant::now();
    host.stop();
    service
        .wait_tor_status(Duration::from_secs(30), |status| !status.control_connected)
        .await?;
    let failed = wait_state(
        &mut client,
        "alice",
        OnionState::Failed,
        Duration::from_secs(30),
    )
    .await?;
    ensure!(
        failed.last_error.contains("tor is unreachable"),
        "{failed:?}"
    );
    host.start().await?;
    wait_state(&mut client, "alice", OnionState::Online, ONION_TIMEOUT).await?;
    check_reachable(peer, &alice, ONION_TIMEOUT).await?;
    println!(
        "onion: after tor was killed and restarted, reachable again {:?} after the kill",
        killed_at.elapsed()
    );
    check_reachable(peer, &bob, ONION_TIMEOUT).await?;

    // The onion service restarts: its onions vanish with its control connection, and come
    // back from the store.
    let stopped_at = Instant::now();
    service.stop().await?;
    let service = OnionServiceRun::start(env.clone()).await?;
    let mut client = service.client().await?;
    let restored = wait_state(&mut client, "alice", OnionState::Online, ONION_TIMEOUT).await?;
    ensure!(restored.onion_address == alice.onion_address);
    ensure!(
        restored.ports == alice.ports,
        "target ports moved over a restart"
    );
    check_reachable(peer, &alice, ONION_TIMEOUT).await?;
    println!(
        "onion: after the onion service restarted, reachable again {:?} after the stop",
        stopped_at.elapsed()
    );

    // Revocation: the address goes away for good and the key leaves the disk.
    let sealed = stored_sealed_key(data.path(), "bob")
        .await?
        .context("bob's key is not stored")?;
    ensure!(
        any_file_contains(data.path(), &sealed),
        "the sealed key is not on disk"
    );
    let revoked = client
        .revoke_onion(RevokeOnionRequest {
            identity_id: "bob".to_owned(),
            serve_revocation: false,
        })
        .await?
        .into_inner();
    ensure!(revoked.state == OnionState::Revoked as i32, "{revoked:?}");
    ensure!(
        !any_file_contains(data.path(), &sealed),
        "the sealed key is still on disk after revocation"
    );
    ensure!(stored_sealed_key(data.path(), "bob").await?.is_none());
    let export = client
        .export_onion_key(ExportOnionKeyRequest {
            identity_id: "bob".to_owned(),
        })
        .await;
    ensure!(
        export
            .as_ref()
            .is_err_and(|status| status.code() == tonic::Code::FailedPrecondition),
        "{export:?}"
    );
    let recreate = create(&mut client, "bob").await;
    ensure!(
        recreate
            .as_ref()
            .is_err_and(|error| error.to_string().contains("revoked")),
        "a revoked identity was created again: {recreate:?}"
    );
    // bob's targets still listen, so only tor can make it unreachable.
    let unreachable = peer
        .connect_onion(&bob.onion_address, 25, Duration::from_secs(20))
        .await;
    ensure!(unreachable.is_err(), "a revoked onion is still reachable");
    // And after another service restart it stays gone, while alice comes back.
    service.stop().await?;
    let service = OnionServiceRun::start(env).await?;
    let mut client = service.client().await?;
    wait_state(&mut client, "alice", OnionState::Online, ONION_TIMEOUT).await?;
    let still_revoked = client
        .get_onion(GetOnionRequest {
            identity_id: "bob".to_owned(),
        })
        .await?
        .into_inner();
    ensure!(
        still_revoked.state == OnionState::Revoked as i32,
        "{still_revoked:?}"
    );
    ensure!(
        peer.connect_onion(&bob.onion_address, 25, Duration::from_secs(10))
            .await
            .is_err(),
        "a revoked onion came back after a restart"
    );
    println!("onion: revoked identity unreachable, its key gone from disk");

    // A revoked identity's onion stays to serve its revocation, then goes by itself. Reached
    // first (the restart above has just published it again), so the check after the revocation
    // asks only whether the retiring onion still answers.
    check_reachable(peer, &alice, ONION_TIMEOUT).await?;
    let asked_at = Instant::now();
    let kept = client
        .revoke_onion(RevokeOnionRequest {
            identity_id: "alice".to_owned(),
            serve_revocation: true,
        })
        .await?
        .into_inner();
    ensure!(
        kept.state == OnionState::Retiring as i32 && kept.retire_at.is_some(),
        "{kept:?}"
    );
    // One port, well inside the window: the onion still answers while it serves the revocation.
    peer.connect_onion(&alice.onion_address, 25, revocation_serve / 2)
        .await
        .context("the retiring onion does not answer while it serves its revocation")?;
    let retired = wait_state(
        &mut client,
        "alice",
        OnionState::Revoked,
        revocation_serve + Duration::from_secs(30),
    )
    .await?;
    ensure!(
        asked_at.elapsed() >= revocation_serve,
        "retired after {:?}, before the {revocation_serve:?} it serves its revocation",
        asked_at.elapsed()
    );
    ensure!(
        stored_sealed_key(data.path(), "alice").await?.is_none(),
        "{retired:?}"
    );
    ensure!(
        peer.connect_onion(&alice.onion_address, 25, Duration::from_secs(20))
            .await
            .is_err(),
        "a retired onion is still reachable"
    );
    println!(
        "onion: a revoked identity's onion served for {:?}, then went by itself",
        asked_at.elapsed()
    );

    service.stop().await?;
    tornet.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_port_errors_are_clear_and_retried() -> anyhow::Result<()> {
    init_tracing();
    let tornet = TorNet::start(1).await?;
    let tor = tornet.client(0);
    let ports = free_port_block(8)?;

    // A wrong password: one clear error, retried, the service up and answering.
    let data = tempfile::tempdir()?;
    let service = OnionServiceRun::start(onion_env(
        data.path(),
        tor.control_addr(),
        &ControlAuth::Password("not-the-password".to_owned()),
        ports,
    ))
    .await?;
    let status = service
        .wait_tor_status(Duration::from_secs(30), |status| {
            status.failed_connect_attempts >= 3
        })
        .await?;
    ensure!(!status.control_connected);
    ensure!(
        status.last_error.contains("rejected the control password"),
        "unclear error: {}",
        status.last_error
    );
    println!("onion: wrong password -> {}", status.last_error);
    let mut client = service.client().await?;
    let refused = client
        .create_onion(CreateOnionRequest {
            identity_id: "alice".to_owned(),
            purposes: Vec::new(),
        })
        .await;
    let Err(refused) = refused else {
        anyhow::bail!("created an onion without tor");
    };
    ensure!(refused.code() == tonic::Code::Unavailable, "{refused:?}");
    ensure!(refused.message().contains("password"), "{refused:?}");
    service.stop().await?;

    // An unreachable control port (tor stopped): clear error, retried, and once tor is back
    // the service connects by itself.
    tor.stop();
    let data = tempfile::tempdir()?;
    let service = OnionServiceRun::start(onion_env(
        data.path(),
        tor.control_addr(),
        &ControlAuth::Password(tor.control_password().to_owned()),
        ports,
    ))
    .await?;
    let status = service
        .wait_tor_status(Duration::from_secs(30), |status| {
            status.failed_connect_attempts >= 3
        })
        .await?;
    ensure!(
        status
            .last_error
            .contains("cannot connect to tor's control port"),
        "unclear error: {}",
        status.last_error
    );
    println!("onion: unreachable control port -> {}", status.last_error);
    let started_at = Instant::now();
    tor.start().await?;
    service
        .wait_tor_status(Duration::from_secs(60), |status| status.control_connected)
        .await?;
    println!(
        "onion: connected {:?} after tor was started again",
        started_at.elapsed()
    );
    let mut client = service.client().await?;
    create(&mut client, "alice").await?;
    wait_state(&mut client, "alice", OnionState::Online, ONION_TIMEOUT).await?;

    service.stop().await?;
    tornet.shutdown();
    Ok(())
}

/// Without `tor.control` the service starts and supervises its own tor; joined to the private
/// network through `tor.child_torrc`, an identity it creates is reachable from another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_tor_child_publishes_reachable_identities() -> anyhow::Result<()> {
    init_tracing();
    let net = TorNet::start(1).await?;
    let dir = tempfile::tempdir()?;
    let include = dir.path().join("private-network.torrc");
    std::fs::write(&include, net.common_torrc())?;
    let target_ports = free_port_block(8)?;
    let env = vec![
        (
            "ONIONPOST_DATA_DIR".to_owned(),
            dir.path().join("data").display().to_string(),
        ),
        (
            "ONIONPOST_TOR_CHILD_TORRC".to_owned(),
            include.display().to_string(),
        ),
        (
            "ONIONPOST_TOR_TARGET_PORTS".to_owned(),
            format!("{}-{}", target_ports.0, target_ports.1),
        ),
        (
            "ONIONPOST_SECRET".to_owned(),
            "onionpost-e2e-carrier-secret-0123456789".to_owned(),
        ),
        ("ONIONPOST_METRICS_LISTEN".to_owned(), String::new()),
        (
            "ONIONPOST_SHUTDOWN_DRAIN_TIMEOUT_SECS".to_owned(),
            "5".to_owned(),
        ),
    ];
    let service = OnionServiceRun::start(env).await?;
    service
        .wait_tor_status(ONION_TIMEOUT, |status| {
            status.control_connected && status.bootstrap_percent == 100
        })
        .await?;
    let mut client = service.client().await?;
    let started = Instant::now();
    let created = create(&mut client, "child-alice").await?;
    serve_targets(&created).await?;
    let online = wait_state(
        &mut client,
        "child-alice",
        OnionState::Online,
        ONION_TIMEOUT,
    )
    .await?;
    check_reachable(net.client(0), &online, ONION_TIMEOUT).await?;
    println!(
        "own tor child: identity reachable {:?} after create",
        started.elapsed()
    );
    let socks = client
        .get_socks_endpoint(GetSocksEndpointRequest {})
        .await?
        .into_inner();
    ensure!(socks.address.starts_with("127.0.0.1:"), "{socks:?}");
    service.stop().await?;
    Ok(())
}

/// [`check_reachable`] tried again until `within` after any failure: right after an onion moves
/// between tors, a peer holding the old descriptor may get a refusal (not only a timeout) from
/// its tor until it fetches the new one.
async fn reachable_after_a_move(
    via: &TorClient,
    onion: &OnionService,
    within: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let left = within.saturating_sub(started.elapsed());
        match check_reachable(via, onion, left).await {
            Ok(()) => return Ok(()),
            Err(error) if started.elapsed() + Duration::from_secs(2) < within => {
                println!(
                    "onion pool: {} not reached yet: {error:#}",
                    onion.identity_id
                );
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Which tors of `pool` publish the onion `service_id` now (tor answers
/// `GETINFO hs/service/desc/id/…` only for an onion service it hosts itself). The tors are
/// asked one after the other, in `pool`'s order: a move takes an onion off the old tor before
/// adding it to the new one, so with the tor onions move *to* asked first, an onion seen on
/// both really was on both at once (asked the other way round, a move between the two
/// questions would look like one).
async fn published_by(
    pool: &mut [onionpost_e2e::control::ControlConnection],
    service_id: &str,
) -> anyhow::Result<Vec<usize>> {
    let mut holders = Vec::new();
    for (index, control) in pool.iter_mut().enumerate() {
        let reply = control
            .send(&format!("GETINFO hs/service/desc/id/{service_id}"))
            .await?;
        if reply.is_success() {
            holders.push(index);
        }
    }
    Ok(holders)
}

/// Waits until every onion of `identities` is ONLINE on the tor named `tor` (empty: any),
/// checking every 200 ms meanwhile that no onion is published by two tors of `pool`.
/// Returns the time waited.
async fn until_online_on(
    client: &mut OnionClient<Channel>,
    pool: &mut [onionpost_e2e::control::ControlConnection],
    identities: &[OnionService],
    tor: impl Fn(&OnionService) -> String,
    within: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let mut settled = true;
        for identity in identities {
            let now = client
                .get_onion(GetOnionRequest {
                    identity_id: identity.identity_id.clone(),
                })
                .await?
                .into_inner();
            let service_id = now.onion_address.trim_end_matches(".onion");
            let holders = published_by(pool, service_id).await?;
            ensure!(
                holders.len() <= 1,
                "{} is published by tors {holders:?} at once",
                identity.identity_id
            );
            settled &= now.state == OnionState::Online as i32 && now.tor == tor(identity);
        }
        if settled {
            return Ok(started.elapsed());
        }
        ensure!(
            started.elapsed() < within,
            "onions not online on their tors after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_tors_spreads_identities_and_fails_over_when_one_dies() -> anyhow::Result<()> {
    init_tracing();
    // Clients 2, 3 and 4 are peers, a fresh one for each phase: a peer's tor that holds an
    // onion's descriptor from before a move tries its dead introduction points and may keep
    // fetching the old descriptor from a directory for minutes (tor's client-side caches, not
    // ours), so each phase asks one that never saw these onions.
    let tornet = TorNet::start(5).await?;
    let pool = [tornet.client(0), tornet.client(1)];
    let peer = tornet.client(2);
    let (peer_after_failover, peer_after_return) = (tornet.client(3), tornet.client(4));
    let names: Vec<String> = pool
        .iter()
        .map(|tor| tor.control_addr().to_string())
        .collect();
    let data = tempfile::tempdir()?;
    let failover = Duration::from_secs(5);
    let controls: Vec<SocketAddr> = pool.iter().map(|tor| tor.control_addr()).collect();
    let mut env = pool_env(data.path(), &controls, free_port_block(32)?);
    env.push((
        "ONIONPOST_TOR_FAILOVER_SECS".to_owned(),
        failover.as_secs().to_string(),
    ));
    let service = OnionServiceRun::start(env).await?;
    let status = service
        .wait_tor_status(Duration::from_secs(30), |status| {
            status.tors.len() == 2 && status.tors.iter().all(|tor| tor.control_connected)
        })
        .await?;
    ensure!(
        status.tors.iter().map(|tor| &tor.name).eq(names.iter()),
        "{status:?}"
    );
    let mut client = service.client().await?;
    let mut controls = Vec::new();
    for tor in &pool {
        controls.push(tor.control().await?);
    }

    // Six identities are spread over the two tors by load, three each.
    let mut identities = Vec::new();
    for index in 0..6 {
        let onion = create(&mut client, &format!("pool-{index}")).await?;
        serve_targets(&onion).await?;
        identities.push(onion);
    }
    for name in &names {
        let placed = identities.iter().filter(|onion| &onion.tor == name).count();
        ensure!(placed == 3, "{placed} identities on {name}: {identities:?}");
    }
    let home: std::collections::HashMap<String, String> = identities
        .iter()
        .map(|onion| (onion.identity_id.clone(), onion.tor.clone()))
        .collect();
    until_online_on(
        &mut client,
        &mut controls,
        &identities,
        |onion| home[&onion.identity_id].clone(),
        ONION_TIMEOUT,
    )
    .await?;
    for onion in &identities {
        check_reachable(peer, onion, ONION_TIMEOUT).await?;
    }

    // The second tor dies (SIGKILL): after the failover time its identities are published by
    // the first, each at its own moment, and peers reach them there.
    let killed_at = Instant::now();
    pool[1].stop();
    let survivor = names[0].clone();
    let mut survivors = vec![controls.remove(0)];
    controls.clear();
    let online_elsewhere = until_online_on(
        &mut client,
        &mut survivors,
        &identities,
        |_| survivor.clone(),
        ONION_TIMEOUT,
    )
    .await?;
    ensure!(
        online_elsewhere >= failover,
        "onions moved before the failover time: {online_elsewhere:?}"
    );
    for onion in identities.iter().filter(|onion| onion.tor == names[1]) {
        reachable_after_a_move(peer_after_failover, onion, ONION_TIMEOUT).await?;
    }
    let reachable_again = killed_at.elapsed();
    let status = service.tor_status().await?;
    ensure!(
        status.tors[0].onions == 6
            && status.tors[1].onions == 0
            && status.tors[1].onions_placed == 3,
        "{status:?}"
    );

    // It returns: its identities move back (off the first tor before onto the second, never
    // on both), and are reached there.
    let returned_at = Instant::now();
    pool[1].start().await?;
    // The tor they move to is asked first (see `published_by`).
    let mut controls = vec![pool[1].control().await?, survivors.remove(0)];
    let moved_back = until_online_on(
        &mut client,
        &mut controls,
        &identities,
        |onion| home[&onion.identity_id].clone(),
        ONION_TIMEOUT,
    )
    .await?;
    for onion in identities.iter().filter(|onion| onion.tor == names[1]) {
        reachable_after_a_move(peer_after_return, onion, ONION_TIMEOUT).await?;
    }
    println!(
        "onion pool: tor killed -> its 3 identities online on the other tor after \
         {online_elsewhere:?} (failover {failover:?}) and reached by a peer after \
         {reachable_again:?}; tor back -> moved home and online after {moved_back:?} \
         ({:?} with its restart)",
        returned_at.elapsed(),
    );
    service.stop().await?;
    Ok(())
}
