//! Sign+encrypt and decrypt+verify of 10 KiB and 1 MiB messages: onionpost (PGP/MIME with
//! protected headers, in process) side by side with `gpg` doing the same OpenPGP work (same key
//! types, SEIPDv1, no compression, ASCII armor) on the same machine.
//!
//! Run with `cargo bench -p onionpost-keys --bench seal_open`. The gpg figures include starting
//! the gpg process (and talking to its agent), which is how gpg is used; the table shows gpg's
//! bare start-up time separately so the two can be told apart.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use onionpost_keys::pgp_mime;
use onionpost_keys::{Address, IdentityKey, onion_host_from_ed25519};

const GPG: &str = "/usr/bin/gpg";

fn main() {
    let alice = identity("alice", 1);
    let bob = identity("bob", 2);
    let gpg = GpgBench::new(&alice, &bob);

    println!("sign+encrypt and decrypt+verify, median wall time per message");
    println!();
    println!(
        "| size    | onionpost sign+encrypt | gpg sign+encrypt | onionpost decrypt+verify | gpg decrypt+verify |"
    );
    println!(
        "|---------|------------------------|------------------|--------------------------|--------------------|"
    );
    for (label, size, rounds) in [("10 KiB", 10 * 1024, 50), ("1 MiB", 1024 * 1024, 10)] {
        let message = message(&alice, &bob, size);
        let bob_cert = bob.public_cert();
        let alice_cert = alice.public_cert();

        let mut sealed = Vec::new();
        let seal_time = median(rounds, || {
            sealed = pgp_mime::seal(&message, &alice, std::slice::from_ref(&bob_cert)).unwrap();
        });
        let open_time = median(rounds, || {
            let opened =
                pgp_mime::open(&sealed, &[&bob], std::slice::from_ref(&alice_cert)).unwrap();
            assert!(opened.verified_sender().is_ok());
        });
        let (gpg_seal, gpg_open) = match &gpg {
            Some(gpg) => {
                let (seal, open) = gpg.measure(&message, rounds);
                (format_duration(seal), format_duration(open))
            }
            None => ("(no gpg)".to_owned(), "(no gpg)".to_owned()),
        };
        println!(
            "| {label:<7} | {:>22} | {gpg_seal:>16} | {:>24} | {gpg_open:>18} |",
            format_duration(seal_time),
            format_duration(open_time),
        );
    }
    if let Some(gpg) = &gpg {
        println!();
        println!(
            "gpg process start-up alone (gpg --version): {}",
            format_duration(gpg.startup(20))
        );
        println!("{}", gpg.version());
    }
}

fn identity(local: &str, seed: u8) -> IdentityKey {
    let address =
        Address::parse(&format!("{local}@{}", onion_host_from_ed25519(&[seed; 32]))).unwrap();
    IdentityKey::generate(&address).unwrap()
}

/// An RFC 5322 message of about `size` bytes of text body.
fn message(from: &IdentityKey, to: &IdentityKey, size: usize) -> Vec<u8> {
    let mut message = format!(
        "From: {}\r\nTo: {}\r\nSubject: benchmark\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <bench@{}>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        from.address(),
        to.address(),
        from.address().onion_host()
    )
    .into_bytes();
    let mut line_number = 0u64;
    while message.len() < size {
        line_number += 1;
        message.extend_from_slice(
            format!("{line_number:08} the quick brown fox jumps over the lazy onion\r\n")
                .as_bytes(),
        );
    }
    message
}

fn median(rounds: usize, mut work: impl FnMut()) -> Duration {
    work(); // warm-up
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn format_duration(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// gpg with Alice's and Bob's secret keys in a temporary home.
struct GpgBench {
    home: tempfile::TempDir,
    alice: String,
    bob: String,
}

impl GpgBench {
    fn new(alice: &IdentityKey, bob: &IdentityKey) -> Option<Self> {
        if !Path::new(GPG).exists() {
            return None;
        }
        let home = tempfile::Builder::new().prefix("op-gpg").tempdir().ok()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).ok()?;
        }
        let bench = GpgBench {
            home,
            alice: alice.fingerprint().to_hex(),
            bob: bob.fingerprint().to_hex(),
        };
        for key in [alice, bob] {
            bench.gpg(&["--import"], key.export_secret(None).unwrap().as_bytes());
        }
        Some(bench)
    }

    fn gpg(&self, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let mut child = Command::new(GPG)
            .env("GNUPGHOME", self.home.path())
            .args([
                "--batch",
                "--no-tty",
                "--yes",
                "--pinentry-mode",
                "loopback",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gpg runs");
        let mut stdin_pipe = child.stdin.take().unwrap();
        let input = stdin.to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = stdin_pipe.write_all(&input);
        });
        let output = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        assert!(output.status.success(), "gpg {args:?} failed");
        output.stdout
    }

    /// The same work with gpg: sign with Alice's key, encrypt to Bob and Alice, armor; then
    /// decrypt with Bob's key and verify.
    fn measure(&self, message: &[u8], rounds: usize) -> (Duration, Duration) {
        let seal_args = [
            "--trust-model",
            "always",
            "--compress-algo",
            "none",
            "--armor",
            "--local-user",
            &self.alice,
            "--recipient",
            &self.bob,
            "--recipient",
            &self.alice,
            "--sign",
            "--encrypt",
        ];
        let mut sealed = Vec::new();
        let seal = median(rounds, || sealed = self.gpg(&seal_args, message));
        let open = median(rounds, || {
            let plain = self.gpg(&["--trust-model", "always", "--decrypt"], &sealed);
            assert_eq!(plain.len(), message.len());
        });
        (seal, open)
    }

    fn startup(&self, rounds: usize) -> Duration {
        median(rounds, || {
            self.gpg(&["--version"], b"");
        })
    }

    fn version(&self) -> String {
        let output = self.gpg(&["--version"], b"");
        String::from_utf8_lossy(&output)
            .lines()
            .take(2)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Drop for GpgBench {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
