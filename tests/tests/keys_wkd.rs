//! Keys bound to the onion, over the private Tor network: two carriers, each running the onion
//! and keys services in one `onionpost` process on its own tor client. Alice's carrier serves
//! her key by WKD on her onion's port 80; Bob's carrier resolves Alice's address, fetching the
//! key through its tor's SOCKS port (the endpoint it learns from its onion service), pins it,
//! and finds it pinned the next time without the network. A co-hosted identity's onion never
//! serves Alice's key, and Alice's key is served again after her carrier restarts.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use onionpost_e2e::TorNet;
use onionpost_e2e::node::Node;
use onionpost_e2e::onion_service::free_port_block;
use onionpost_proto::keys::v1::keys_client::KeysClient;
use onionpost_proto::keys::v1::{
    CreateIdentityKeyRequest, IdentityKey, RecipientKeyStatus, ResolveRecipientKeysRequest,
};
use onionpost_proto::onion::v1::onion_client::OnionClient;
use onionpost_proto::onion::v1::{CreateOnionRequest, GetOnionRequest, OnionState};
use onionpost_runtime::Transport as Channel;
use tokio::time::Instant;

/// Time allowed for an onion to be published and a key fetched through tor; a few seconds
/// here, the slack is for a machine busy compiling.
const TOR_TIMEOUT: Duration = Duration::from_secs(180);

struct Carrier {
    node: Node,
    onion: OnionClient<Channel>,
    keys: KeysClient<Channel>,
}

async fn carrier(tor: &onionpost_e2e::TorClient) -> anyhow::Result<Carrier> {
    let (first, last) = free_port_block(16)?;
    let env = vec![
        ("ONIONPOST_TOR_CONTROL", tor.control_addr().to_string()),
        (
            "ONIONPOST_TOR_COOKIE_FILE",
            tor.cookie_file().display().to_string(),
        ),
        ("ONIONPOST_TOR_TARGET_PORTS", format!("{first}-{last}")),
        (
            "ONIONPOST_SECRET",
            "onionpost-e2e-carrier-secret-0123456789".to_owned(),
        ),
    ];
    let node = Node::start("onion,keys", &env).await;
    let channel = node.grpc()?;
    Ok(Carrier {
        node,
        onion: OnionClient::new(channel.clone()),
        keys: KeysClient::new(channel),
    })
}

/// An identity: its onion, then its key for `local@<onion>`.
async fn identity(
    carrier: &mut Carrier,
    identity_id: &str,
    local: &str,
) -> anyhow::Result<IdentityKey> {
    let onion = carrier
        .onion
        .create_onion(CreateOnionRequest {
            identity_id: identity_id.to_owned(),
            purposes: Vec::new(),
        })
        .await?
        .into_inner();
    Ok(carrier
        .keys
        .create_identity_key(CreateIdentityKeyRequest {
            identity_id: identity_id.to_owned(),
            account_id: format!("account-of-{identity_id}"),
            address: format!("{local}@{}", onion.onion_address),
            ..Default::default()
        })
        .await?
        .into_inner())
}

async fn wait_online(carrier: &mut Carrier, identity_id: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let onion = carrier
            .onion
            .get_onion(GetOnionRequest {
                identity_id: identity_id.to_owned(),
            })
            .await?
            .into_inner();
        if onion.state == OnionState::Online as i32 {
            return Ok(());
        }
        ensure!(
            started.elapsed() < TOR_TIMEOUT,
            "{identity_id} not online: {onion:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn resolve(
    carrier: &mut Carrier,
    sender: &str,
    recipient: &str,
    fetch: bool,
) -> anyhow::Result<onionpost_proto::keys::v1::RecipientKey> {
    carrier
        .keys
        .resolve_recipient_keys(ResolveRecipientKeysRequest {
            sender_identity_id: sender.to_owned(),
            recipients: vec![recipient.to_owned()],
            fetch_missing: fetch,
        })
        .await?
        .into_inner()
        .recipients
        .pop()
        .context("one answer per recipient")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_fetched_over_the_recipients_onion_is_pinned() -> anyhow::Result<()> {
    let tornet = TorNet::start(2).await?;
    let mut alice_carrier = carrier(tornet.client(0)).await?;
    let mut bob_carrier = carrier(tornet.client(1)).await?;

    let alice = identity(&mut alice_carrier, "alice", "alice").await?;
    let bob = identity(&mut bob_carrier, "bob", "bob").await?;
    wait_online(&mut alice_carrier, "alice").await?;

    // Not in Bob's address book, and not fetched unless asked.
    let missing = resolve(&mut bob_carrier, "bob", &alice.address, false).await?;
    ensure!(
        missing.status == RecipientKeyStatus::Missing as i32,
        "{missing:?}"
    );

    // Fetched by WKD over Alice's onion (retried while the first circuits are built).
    let started = Instant::now();
    let fetched = loop {
        let answer = resolve(&mut bob_carrier, "bob", &alice.address, true).await?;
        if answer.status != RecipientKeyStatus::Unreachable as i32 {
            break answer;
        }
        ensure!(
            started.elapsed() < TOR_TIMEOUT,
            "alice's onion unreachable: {answer:?}\n{}",
            bob_carrier.node.log_text()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    println!(
        "keys_wkd: key fetched over tor after {:?}",
        started.elapsed()
    );
    ensure!(
        fetched.status == RecipientKeyStatus::Fetched as i32,
        "{fetched:?}\n{}",
        alice_carrier.node.log_text()
    );
    ensure!(fetched.fingerprint == alice.fingerprint, "{fetched:?}");

    // Pinned: found again without the network.
    let pinned = resolve(&mut bob_carrier, "bob", &alice.address, false).await?;
    ensure!(
        pinned.status == RecipientKeyStatus::Pinned as i32
            && pinned.fingerprint == alice.fingerprint,
        "{pinned:?}"
    );

    // Carol is co-hosted with Alice; her onion serves her key, never Alice's.
    let carol = identity(&mut alice_carrier, "carol", "carol").await?;
    wait_online(&mut alice_carrier, "carol").await?;
    let alice_local = alice.address.split('@').next().unwrap_or_default();
    let carol_onion = carol.address.split('@').nth(1).unwrap_or_default();
    let alice_at_carols_onion = format!("{alice_local}@{carol_onion}");
    let started = Instant::now();
    let answer = loop {
        let answer = resolve(&mut bob_carrier, "bob", &alice_at_carols_onion, true).await?;
        if answer.status != RecipientKeyStatus::Unreachable as i32 {
            break answer;
        }
        ensure!(
            started.elapsed() < TOR_TIMEOUT,
            "carol's onion unreachable: {answer:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    ensure!(
        answer.status == RecipientKeyStatus::NotPublished as i32,
        "carol's onion must not serve alice's key: {answer:?}"
    );
    let carols = resolve(&mut bob_carrier, "bob", &carol.address, true).await?;
    ensure!(
        carols.status == RecipientKeyStatus::Fetched as i32
            && carols.fingerprint == carol.fingerprint,
        "{carols:?}"
    );
    let _ = bob;

    // After Alice's carrier restarts, her onion serves her key again: Dave, a new identity on
    // Bob's carrier with an address book of his own, fetches and pins it.
    alice_carrier.node.restart().await;
    identity(&mut bob_carrier, "dave", "dave").await?;
    let started = Instant::now();
    let after_restart = loop {
        let answer = resolve(&mut bob_carrier, "dave", &alice.address, true).await?;
        if answer.status != RecipientKeyStatus::Unreachable as i32
            && answer.status != RecipientKeyStatus::NotPublished as i32
        {
            break answer;
        }
        ensure!(
            started.elapsed() < TOR_TIMEOUT,
            "alice's key not served after restart: {answer:?}\n{}",
            alice_carrier.node.log_text()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    println!(
        "keys_wkd: key served again {:?} after restart",
        started.elapsed()
    );
    ensure!(
        after_restart.status == RecipientKeyStatus::Fetched as i32
            && after_restart.fingerprint == alice.fingerprint,
        "{after_restart:?}"
    );

    alice_carrier.node.stop().await;
    bob_carrier.node.stop().await;
    tornet.shutdown();
    Ok(())
}
