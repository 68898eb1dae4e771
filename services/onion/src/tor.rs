//! Keeping tor's control connection up: connect and authenticate, start a tor child process
//! when no control address is configured, follow events, and reconnect with backoff and
//! jitter whenever the connection or tor itself goes away. Every (re)connection adds the live
//! onions back (see [`Onions::on_connected`]).
//!
//! Failures that an operator must fix (a wrong password, a tor too old for v3 onions) are
//! retried like transient ones (the backoff soon reaches its cap): the service keeps running and
//! reports the reason in GetTorStatus, and picks up the fix (a restarted tor with the right
//! password) without being restarted itself.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use onionpost_runtime::backoff::Backoff;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::config::TorConnection;
use crate::control::{
    ControlConnection, ControlError, Credentials, Events, parse_bootstrap_progress, parse_hs_desc,
    version_at_least,
};
use crate::onions::Onions;

/// How long connecting to the control port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first pause after a failure; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// The longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// How often publish timeouts and onions missing from tor are checked.
const TICK: Duration = Duration::from_secs(5);
/// How long a started tor child may take to open its control port.
const CHILD_START_TIMEOUT: Duration = Duration::from_secs(30);
/// The first tor whose ADD_ONION takes ED25519-V3 keys reliably (v3 onions came in 0.3.2,
/// `NEW:ED25519-V3` in 0.3.3; 0.3.5 is the oldest long-term release with both).
const V3_SINCE: [u32; 4] = [0, 3, 5, 0];

/// Runs until `shutdown`: keeps a control connection to tor `index` of the pool, and tor itself
/// when it is ours.
pub async fn supervise(
    onions: Arc<Onions>,
    index: usize,
    tor: TorConnection,
    shutdown: CancellationToken,
) {
    let mut child = match &tor {
        TorConnection::Child {
            binary,
            dir,
            include,
            ..
        } => Some(TorChild::new(binary.clone(), dir.clone(), include.clone())),
        TorConnection::External { .. } => None,
    };
    let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
    while !shutdown.is_cancelled() {
        let attempt = async {
            let (address, credentials) = match (&tor, &mut child) {
                (
                    TorConnection::External {
                        address,
                        credentials,
                    },
                    _,
                ) => (address.clone(), credentials.clone()),
                (TorConnection::Child { .. }, Some(child)) => {
                    let address = child.ensure_running().await?;
                    (address, Credentials::Cookie(child.cookie_file()))
                }
                (TorConnection::Child { .. }, None) => unreachable!("a child for child mode"),
            };
            let (control, events) =
                ControlConnection::connect(&address, &credentials, CONNECT_TIMEOUT).await?;
            let version = control.protocol_info().tor_version.clone();
            check_onion_support(&control, &version).await?;
            Ok::<_, ControlError>((control, events, version))
        };
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = shutdown.cancelled() => break,
        };
        match outcome {
            Ok((control, events, version)) => {
                backoff.reset();
                let ended = session(&onions, index, control, events, version, &shutdown).await;
                if shutdown.is_cancelled() {
                    break;
                }
                onions.on_disconnected(index, &ended);
            }
            Err(error) => onions.on_connect_failed(index, &error),
        }
        let pause = backoff.pause();
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => break,
        }
    }
    if let Some(mut child) = child {
        child.stop().await;
    }
    tracing::info!(tor = index, "tor supervisor stopped");
}

/// Refuses a tor that cannot host v3 onions through the control port: too old, or its
/// control port does not know the onion commands (§3.9: `onions/current` exists wherever
/// ADD_ONION does).
async fn check_onion_support(
    control: &ControlConnection,
    version: &str,
) -> Result<(), ControlError> {
    if !version_at_least(version, V3_SINCE) {
        return Err(ControlError::NoOnionSupport {
            version: version.to_owned(),
        });
    }
    let reply = control.send("GETINFO onions/current").await?;
    if reply.is_success() {
        Ok(())
    } else {
        Err(ControlError::NoOnionSupport {
            version: format!("{version} ({} {})", reply.code, reply.end_text()),
        })
    }
}

/// One connection's life: set up, add onions back, follow events until it ends.
async fn session(
    onions: &Onions,
    index: usize,
    control: ControlConnection,
    mut events: Events,
    version: String,
    shutdown: &CancellationToken,
) -> ControlError {
    let setup = async {
        control.set_events(&["HS_DESC", "STATUS_CLIENT"]).await?;
        let bootstrap = control
            .getinfo("status/bootstrap-phase")
            .await
            .ok()
            .and_then(|phase| parse_bootstrap_progress(&phase))
            .unwrap_or(0);
        let socks = control
            .getinfo("net/listeners/socks")
            .await
            .ok()
            .and_then(|listeners| first_listener(&listeners));
        Ok::<_, ControlError>((bootstrap, socks))
    };
    let (bootstrap, socks) = match setup.await {
        Ok(setup) => setup,
        Err(error) => return error,
    };
    onions
        .on_connected(index, control.clone(), version, bootstrap, socks)
        .await;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Each missing onion comes back at its own moment, not on the next tick.
        let next_restore = onions.next_restore(index);
        let restore_due = async {
            match next_restore {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = restore_due => {
                onions.restore_missing(index, &control).await;
            }
            event = events.recv() => {
                let Some(event) = event else {
                    return ControlError::Closed;
                };
                if let Some(hs_desc) = parse_hs_desc(&event) {
                    onions.on_hs_desc(index, hs_desc);
                } else if let Some(percent) = event
                    .lines
                    .first()
                    .and_then(|line| line.text.strip_prefix("STATUS_CLIENT "))
                    .and_then(parse_bootstrap_progress)
                {
                    onions.on_bootstrap(index, percent);
                }
            }
            _ = tick.tick() => {
                onions.check_publish_timeouts();
                // Onions of a tor away for longer than tor.failover_secs get a stand-in among
                // the connected tors (this one or another); each comes at its own moment.
                onions.fail_over();
                if onions.any_missing(index) {
                    onions.restore_missing(index, &control).await;
                }
                if control.is_closed() {
                    return ControlError::Closed;
                }
            }
            () = shutdown.cancelled() => {
                // Closing the connection removes our onions from tor (no Detach).
                control.close(ControlError::Closed).await;
                return ControlError::Closed;
            }
        }
    }
}

/// The first address of a `GETINFO net/listeners/socks` answer (`"127.0.0.1:9050" …`).
fn first_listener(listeners: &str) -> Option<String> {
    let first = listeners.split(' ').next()?.trim_matches('"');
    (!first.is_empty()).then(|| first.to_owned())
}

/// A tor process this service owns: its torrc and DataDirectory under `dir`.
struct TorChild {
    binary: PathBuf,
    dir: PathBuf,
    include: Option<PathBuf>,
    process: Option<Child>,
    address: Option<String>,
}

impl TorChild {
    fn new(binary: PathBuf, dir: PathBuf, include: Option<PathBuf>) -> Self {
        TorChild {
            binary,
            dir,
            include,
            process: None,
            address: None,
        }
    }

    fn cookie_file(&self) -> PathBuf {
        self.dir.join("control_auth_cookie")
    }

    fn port_file(&self) -> PathBuf {
        self.dir.join("control-port")
    }

    /// The child's control address, starting it first when it does not run.
    async fn ensure_running(&mut self) -> Result<String, ControlError> {
        let running = match &mut self.process {
            Some(process) => matches!(process.try_wait(), Ok(None)),
            None => false,
        };
        if running {
            if let Some(address) = &self.address {
                return Ok(address.clone());
            }
        } else if let Some(mut process) = self.process.take() {
            let status = process.wait().await.ok();
            tracing::warn!(?status, "tor child process exited; starting it again");
        }
        self.start().await
    }

    async fn start(&mut self) -> Result<String, ControlError> {
        let what = format!("tor child process ({})", self.binary.display());
        let failed = |reason: String| ControlError::Unreachable {
            address: what.clone(),
            reason,
        };
        let data_dir = self.dir.join("data");
        create_private_dir(&self.dir).map_err(|error| failed(error.to_string()))?;
        create_private_dir(&data_dir).map_err(|error| failed(error.to_string()))?;
        let port_file = self.port_file();
        let _ = std::fs::remove_file(&port_file);
        // SocksPort auto: egress learns the port through GetSocksEndpoint. The owning-process
        // option makes tor exit when this process dies, however it dies.
        let torrc = format!(
            "DataDirectory {data}\n\
             ControlPort auto\n\
             ControlPortWriteToFile {port_file}\n\
             CookieAuthentication 1\n\
             CookieAuthFile {cookie}\n\
             SocksPort auto\n\
             Log notice file {log}\n\
             PidFile {pid_file}\n\
             __OwningControllerProcess {pid}\n",
            data = data_dir.display(),
            port_file = port_file.display(),
            cookie = self.cookie_file().display(),
            log = self.dir.join("notice.log").display(),
            pid_file = self.dir.join("tor.pid").display(),
            pid = std::process::id(),
        );
        let mut torrc = torrc;
        if let Some(include) = &self.include {
            // Last, so the operator's lines win over ours where tor lets a later line override.
            torrc.push_str(&format!("%include {}\n", include.display()));
        }
        let torrc_path = self.dir.join("torrc");
        std::fs::write(&torrc_path, torrc).map_err(|error| failed(error.to_string()))?;
        let process = Command::new(&self.binary)
            .arg("-f")
            .arg(&torrc_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| failed(format!("cannot start it: {error}")))?;
        tracing::info!(pid = process.id(), "tor child process started");
        self.process = Some(process);
        let started = tokio::time::Instant::now();
        loop {
            if let Some(address) = read_port_file(&port_file) {
                self.address = Some(address.clone());
                return Ok(address);
            }
            if let Some(process) = &mut self.process
                && let Ok(Some(status)) = process.try_wait()
            {
                self.process = None;
                return Err(failed(format!(
                    "it exited with {status} (see {})",
                    self.dir.join("notice.log").display()
                )));
            }
            if started.elapsed() >= CHILD_START_TIMEOUT {
                self.stop().await;
                return Err(failed("it opened no control port in time".to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill().await;
            tracing::info!("tor child process stopped");
        }
        self.address = None;
    }
}

/// `PORT=127.0.0.1:40123` as tor writes it (tor(1), ControlPortWriteToFile).
fn read_port_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix("PORT="))
        .map(str::to_owned)
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        let first = backoff.pause();
        assert!(first >= MIN_BACKOFF.mul_f64(0.75) && first <= MIN_BACKOFF.mul_f64(1.25));
        for _ in 0..20 {
            assert!(backoff.pause() <= MAX_BACKOFF.mul_f64(1.25));
        }
        assert!(backoff.pause() >= MAX_BACKOFF.mul_f64(0.75));
        backoff.reset();
        assert!(backoff.pause() <= MIN_BACKOFF.mul_f64(1.25));
    }

    #[test]
    fn listeners_and_port_files() {
        assert_eq!(
            first_listener("\"127.0.0.1:9050\" \"[::1]:9050\""),
            Some("127.0.0.1:9050".into())
        );
        assert_eq!(first_listener(""), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control-port");
        std::fs::write(&path, "PORT=127.0.0.1:40123\n").unwrap();
        assert_eq!(read_port_file(&path), Some("127.0.0.1:40123".into()));
    }
}
