//! A private rspamd (Debian's rspamd package) for the gateway test: the packaged configuration
//! with its workers moved to free loopback ports, DNS pointed nowhere (no network here), logs to
//! a temporary directory, stopped when dropped. The system's rspamd is neither used nor touched.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use tokio::process::{Child, Command};

use crate::node::free_port;

/// A running instance.
pub struct Rspamd {
    _dir: tempfile::TempDir,
    child: Child,
    /// The normal worker: where `POST /checkv2` is answered.
    pub normal: SocketAddr,
}

impl Rspamd {
    /// Starts rspamd and waits until its normal worker answers.
    pub async fn start() -> anyhow::Result<Rspamd> {
        let dir = tempfile::Builder::new().prefix("rspamd-").tempdir()?;
        let root = dir.path();
        let overrides = root.join("override.d");
        std::fs::create_dir_all(&overrides)?;
        let normal = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let controller = SocketAddr::from(([127, 0, 0, 1], free_port()));
        for (file, text) in [
            (
                "worker-normal.inc",
                format!("bind_socket = \"{normal}\";\ncount = 1;\n"),
            ),
            (
                "worker-controller.inc",
                format!("bind_socket = \"{controller}\";\ncount = 1;\n"),
            ),
            ("worker-proxy.inc", "count = 0;\n".to_owned()),
            (
                "logging.inc",
                "type = \"console\";\nlevel = \"error\";\n".to_owned(),
            ),
            // No DNS on this machine: every lookup fails at once rather than after retries.
            (
                "options.inc",
                "dns { nameserver = [\"127.0.0.1:9\"]; timeout = 0.2s; retransmits = 1; }\n"
                    .to_owned(),
            ),
        ] {
            std::fs::write(overrides.join(file), text)?;
        }
        let var = |name: &str| format!("--var={name}={}", root.display());
        let log = std::fs::File::create(root.join("rspamd.log"))?;
        let child = Command::new("rspamd")
            .args(["-f", "-i", "-u", "root", "-g", "root"])
            .args(["-c", "/etc/rspamd/rspamd.conf"])
            .args([
                var("LOCAL_CONFDIR"),
                var("RUNDIR"),
                var("DBDIR"),
                var("LOGDIR"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: its workers are its children and outlive a killed main
            // process, so the whole group is stopped (Drop).
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("starting rspamd (apt-get install rspamd)")?;
        let rspamd = Rspamd {
            _dir: dir,
            child,
            normal,
        };
        let started = tokio::time::Instant::now();
        while tokio::net::TcpStream::connect(normal).await.is_err() {
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "rspamd did not listen on {normal}:\n{}",
                rspamd.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(rspamd)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("rspamd.log")).unwrap_or_default()
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = self.child.start_kill();
    }
}
