//! The private Tor network harness works: an onion service added on one client tor is
//! reachable through another client's SOCKS port, and a client tor that is killed comes back
//! bootstrapped, its onion service with it. Each test brings up its own network.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use onionpost_e2e::{ControlConnection, TorClient, TorNet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Time allowed for a descriptor upload and for the first connection to a new onion. Both
/// take 1-3 s here; the slack is for a machine busy compiling.
const ONION_TIMEOUT: Duration = Duration::from_secs(90);

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A TCP echo server on 127.0.0.1 standing in for the carrier's SMTP listener.
async fn start_echo_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = socket.into_split();
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            });
        }
    });
    Ok(addr)
}

/// Sends a payload larger than one relay cell and checks it comes back unchanged.
async fn check_echo<S>(stream: S) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut payload = b"EHLO onionpost.test\r\n".to_vec();
    payload.extend((0..20_000_u32).map(|i| (i % 251) as u8));
    let (mut reader, mut writer) = tokio::io::split(stream);
    let expected = payload.clone();
    let write = async move {
        writer.write_all(&payload).await?;
        writer.flush().await?;
        anyhow::Ok(())
    };
    let read = async move {
        let mut echoed = vec![0_u8; expected.len()];
        reader
            .read_exact(&mut echoed)
            .await
            .context("reading the echo")?;
        ensure!(echoed == expected, "the echo differs from what was sent");
        anyhow::Ok(())
    };
    let (written, echoed) =
        tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(write, read) })
            .await
            .context("echo exchange timed out")?;
    written.context("sending")?;
    echoed?;
    Ok(())
}

/// Adds an onion service for `target` on port 25 of `host` (fresh key, or `key`), waits for
/// the first descriptor upload, and returns the service id, its key, the control connection
/// that keeps it alive, and how long the upload took.
async fn add_echo_onion(
    host: &TorClient,
    target: SocketAddr,
    key: Option<&str>,
) -> anyhow::Result<(String, String, ControlConnection, Duration)> {
    let mut control = host.control().await.context("cookie authentication")?;
    control.set_events(&["HS_DESC"]).await?;
    let added_at = Instant::now();
    let (service_id, private_key) = match key {
        None => control.add_onion_new(&[(25, target)]).await?,
        Some(key) => (
            control.add_onion_with_key(key, &[(25, target)]).await?,
            key.to_owned(),
        ),
    };
    ensure!(service_id.len() == 56, "not a v3 service id: {service_id}");
    ensure!(
        private_key.starts_with("ED25519-V3:"),
        "unexpected key type in {}",
        private_key.split(':').next().unwrap_or_default()
    );
    control
        .wait_hs_desc_uploaded(&service_id, ONION_TIMEOUT)
        .await?;
    Ok((service_id, private_key, control, added_at.elapsed()))
}

async fn bootstrap_progress_with_password(client: &TorClient) -> anyhow::Result<String> {
    let mut control = client
        .control_with_password()
        .await
        .context("password authentication")?;
    Ok(control.getinfo("status/bootstrap-phase").await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onion_service_on_one_client_is_reachable_through_another() -> anyhow::Result<()> {
    init_tracing();
    let tornet = TorNet::start(2).await?;
    println!("tornet: ready after {:?}", tornet.ready_after());
    ensure!(tornet.clients().len() == 2);

    let echo = start_echo_server().await?;
    let added_at = Instant::now();
    let (service_id, _key, control, uploaded_after) =
        add_echo_onion(tornet.client(0), echo, None).await?;
    let onion = format!("{service_id}.onion");
    let stream = tornet
        .client(1)
        .connect_onion(&onion, 25, ONION_TIMEOUT)
        .await?;
    let reachable_after = added_at.elapsed();
    check_echo(stream).await?;
    println!(
        "tornet: onion descriptor uploaded after {uploaded_after:?}, \
         reachable from another client after {reachable_after:?}"
    );

    // An onion added without Detach lives as long as its control connection.
    drop(control);
    tornet.shutdown();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_comes_back_bootstrapped_with_its_onion() -> anyhow::Result<()> {
    init_tracing();
    let mut tornet = TorNet::start(1).await?;
    println!("tornet: ready after {:?}", tornet.ready_after());
    let progress = bootstrap_progress_with_password(tornet.client(0)).await?;
    ensure!(progress.contains("PROGRESS=100"), "client0: {progress}");

    let host = tornet.add_client().await?;
    ensure!(host.name() == "client1");
    let echo = start_echo_server().await?;
    let (service_id, key, control, _) = add_echo_onion(host, echo, None).await?;
    let onion = format!("{service_id}.onion");
    let stream = tornet
        .client(0)
        .connect_onion(&onion, 25, ONION_TIMEOUT)
        .await?;
    check_echo(stream).await?;
    drop(control);

    // Kill the host's tor: it must be gone, listeners and all.
    let host = tornet.client(1);
    let pid_before = host.pid().context("client1 has no pid")?;
    host.stop();
    ensure!(!host.is_running(), "client1 still runs after stop");
    ensure!(
        tokio::net::TcpStream::connect(host.control_addr())
            .await
            .is_err(),
        "client1's control port still answers after stop"
    );
    let back_after = host.start().await?;
    let pid_after = host.pid().context("client1 has no pid after start")?;
    ensure!(pid_after != pid_before, "client1 was not restarted");
    let progress = bootstrap_progress_with_password(host).await?;
    ensure!(progress.contains("PROGRESS=100"), "client1: {progress}");

    // The same key brings the same address back, reachable again from the other client.
    let restored_at = Instant::now();
    let (restored_id, _, control, _) = add_echo_onion(host, echo, Some(&key)).await?;
    ensure!(restored_id == service_id, "the onion address changed");
    let stream = tornet
        .client(0)
        .connect_onion(&onion, 25, ONION_TIMEOUT)
        .await?;
    let reachable_again_after = restored_at.elapsed();
    check_echo(stream).await?;
    println!(
        "tornet: killed client bootstrapped again after {back_after:?}, \
         its onion reachable again {reachable_again_after:?} after re-adding"
    );

    // Restarting the connecting side works too.
    let client_back_after = tornet.client(0).restart().await?;
    let progress = bootstrap_progress_with_password(tornet.client(0)).await?;
    ensure!(progress.contains("PROGRESS=100"), "client0: {progress}");
    println!("tornet: client0 restarted in {client_back_after:?}");

    drop(control);
    tornet.shutdown();
    Ok(())
}
