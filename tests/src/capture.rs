//! A packet capture around a scenario, with tshark: every DNS query and every TCP connection
//! opened (the first SYN) on every interface, and which process listened on each port while
//! the capture ran (sampled, so a listener that closed before the end, such as a retired
//! onion's, still has its owner). This is how the mail tests show that a carrier asks no DNS
//! about `.onion` names and opens no connection except to tor (design.md: privacy).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use tokio::process::{Child, Command};

/// DNS packets, and SYNs without ACK: one line per connection attempt, none per data packet.
const FILTER: &str = "udp port 53 or tcp port 53 or (tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn)";

/// How often the listening sockets are sampled while a capture runs.
const LISTENER_SAMPLE: Duration = Duration::from_millis(500);

/// A running capture; stop it with [`Capture::finish`].
pub struct Capture {
    child: Child,
    file: PathBuf,
    _dir: tempfile::TempDir,
    owners: Arc<Mutex<HashMap<u16, String>>>,
    sampler: tokio::task::JoinHandle<()>,
}

/// What a capture saw: the packets, and the process that listened on each port at some
/// moment while it ran.
pub struct Captured {
    pub packets: Vec<Packet>,
    pub owners: HashMap<u16, String>,
}

/// One captured connection attempt or DNS query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Syn { destination: Ipv4Addr, port: u16 },
    Dns { name: String },
}

impl Capture {
    /// Starts tshark on every interface and waits until it captures. tshark must be installed
    /// (tests/run.sh installs it); the test fails otherwise.
    pub async fn start() -> anyhow::Result<Capture> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("capture.pcapng");
        let mut child = Command::new("tshark")
            .args(["-i", "any", "-q", "-f", FILTER, "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting tshark (apt-get install tshark; tests/run.sh does)")?;
        // tshark says "Capturing on 'any'" on stderr once the capture runs.
        let stderr = child.stderr.take().context("tshark stderr")?;
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
        let started = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("Capturing on") {
                    return Ok::<_, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        ensure!(
            matches!(started, Ok(Ok(true))),
            "tshark did not start capturing: {started:?}"
        );
        // Keep draining stderr so tshark never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let owners = Arc::new(Mutex::new(listeners().await?));
        let sampler = tokio::spawn({
            let owners = owners.clone();
            async move {
                loop {
                    tokio::time::sleep(LISTENER_SAMPLE).await;
                    if let Ok(now) = listeners().await {
                        let mut owners = owners.lock().expect("owners lock");
                        for (port, name) in now {
                            owners.entry(port).or_insert(name);
                        }
                    }
                }
            }
        });
        Ok(Capture {
            child,
            file,
            _dir: dir,
            owners,
            sampler,
        })
    }

    /// Stops the capture (SIGINT, so tshark writes out what it holds) and reads it back, with
    /// the owners of the ports listened on meanwhile.
    pub async fn finish(mut self) -> anyhow::Result<Captured> {
        // Packets still in the kernel's buffer are written after the signal.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .await;
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("tshark did not stop")??;
        let output = Command::new("tshark")
            .arg("-r")
            .arg(&self.file)
            .args([
                "-T",
                "fields",
                "-E",
                "separator=|",
                "-e",
                "ip.dst",
                "-e",
                "tcp.dstport",
                "-e",
                "dns.qry.name",
                "-e",
                "tcp.flags.syn",
            ])
            .output()
            .await
            .context("reading the capture")?;
        ensure!(
            output.status.success(),
            "tshark -r: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut packets = Vec::new();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let fields: Vec<&str> = line.split('|').collect();
            let [destination, port, name, syn] = fields[..] else {
                bail!("unexpected tshark line {line:?}");
            };
            if !name.is_empty() {
                for name in name.split(',') {
                    packets.push(Packet::Dns {
                        name: name.to_owned(),
                    });
                }
            } else if syn == "1" || syn == "True" {
                let (Ok(destination), Ok(port)) = (destination.parse(), port.parse()) else {
                    // IPv6 and others: no destination IPv4 field.
                    bail!("a connection that is not IPv4: {line:?}");
                };
                packets.push(Packet::Syn { destination, port });
            }
        }
        self.sampler.abort();
        let mut owners = self.owners.lock().expect("owners lock").clone();
        for (port, name) in listeners().await? {
            owners.entry(port).or_insert(name);
        }
        Ok(Captured { packets, owners })
    }
}

/// The name of the process listening on each TCP port of this machine now (`ss -ltnpH`).
pub async fn listeners() -> anyhow::Result<HashMap<u16, String>> {
    let output = Command::new("ss")
        .args(["-ltnpH"])
        .output()
        .await
        .context("running ss")?;
    ensure!(output.status.success(), "ss -ltnpH failed");
    let mut map = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // LISTEN 0 4096 127.0.0.1:9050 0.0.0.0:* users:(("tor",pid=1,fd=6))
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(users)) = (fields.get(3), fields.get(5)) else {
            continue;
        };
        let Some(port) = local.rsplit(':').next().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let name = users
            .split('"')
            .nth(1)
            .map(str::to_owned)
            .unwrap_or_default();
        map.insert(port, name);
    }
    Ok(map)
}
