//! A private Postfix instance (Debian's postfix package) for benchmarks and tests: its own
//! configuration, queue and log under a temporary directory, one SMTP listener on loopback,
//! stopped when dropped. The system's Postfix configuration is neither read nor touched.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, ensure};

/// A running instance.
pub struct Postfix {
    dir: tempfile::TempDir,
    pub smtp: SocketAddr,
}

impl Postfix {
    /// Starts Postfix with `main` (extra main.cf lines) added to a minimal configuration whose
    /// SMTP server listens on `smtp`. Needs root (Postfix drops to its `postfix` user).
    pub async fn start(smtp: SocketAddr, main: &str) -> anyhow::Result<Postfix> {
        let dir = tempfile::Builder::new().prefix("postfix-").tempdir()?;
        let root = dir.path();
        for sub in ["conf", "spool", "data"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        // Postfix's master takes its lock in data_directory as the postfix user.
        run(
            "chown",
            &["postfix", &root.join("data").display().to_string()],
        )
        .await?;
        let base = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {root}/spool\n\
             data_directory = {root}/data\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             inet_interfaces = {ip}\n\
             inet_protocols = ipv4\n\
             myhostname = postfix.invalid\n\
             maillog_file = {root}/maillog\n\
             maillog_file_prefixes = {root}\n\
             smtputf8_enable = no\n",
            root = root.display(),
            ip = smtp.ip(),
        );
        std::fs::write(root.join("conf/main.cf"), format!("{base}{main}\n"))?;
        let master = std::fs::read_to_string("/etc/postfix/master.cf")
            .context("reading /etc/postfix/master.cf (apt-get install postfix)")?;
        let listener = format!("{smtp} inet n - n - - smtpd");
        let master: String = master
            .lines()
            .map(|line| {
                if line.starts_with("smtp ") && line.contains(" inet ") {
                    listener.clone()
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(root.join("conf/master.cf"), master + "\n")?;
        let postfix = Postfix { dir, smtp };
        postfix.command("start").await?;
        let started = tokio::time::Instant::now();
        while tokio::net::TcpStream::connect(smtp).await.is_err() {
            ensure!(
                started.elapsed() < Duration::from_secs(20),
                "postfix does not listen on {smtp}:\n{}",
                postfix.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(postfix)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Messages in the queue (incoming, active, deferred, hold).
    pub fn queued(&self) -> usize {
        ["incoming", "active", "deferred", "hold"]
            .iter()
            .map(|sub| count_files(&self.queue_dir().join(sub)))
            .sum()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    async fn command(&self, verb: &str) -> anyhow::Result<()> {
        let conf = self.dir.path().join("conf").display().to_string();
        run("postfix", &["-c", &conf, verb])
            .await
            .with_context(|| format!("postfix {verb}:\n{}", self.log()))
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let conf = self.dir.path().join("conf");
        let _ = std::process::Command::new("postfix")
            .arg("-c")
            .arg(conf)
            .arg("stop")
            .status();
    }
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => count_files(&entry.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

async fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    ensure!(
        output.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
