//! What a proof-of-work stamp costs (issue 22): the sender's CPU time to mint one at each
//! difficulty step, next to what the receiver pays to check one, and next to Hashcash (Debian's
//! `hashcash`, SHA-1, its fastest core chosen at start) minting the same number of bits.
//!
//! `cargo bench -p onionpost-runtime --bench stamps`

use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use onionpost_runtime::stamp;

const RECIPIENT: &str = "carol@mnrwgy3dmnrwgy3dmnrwgy3dmnrwgy3dmnrwgy3dmnrwgy3dmnrvkzqd.onion";
const SENDER: &str = "dave@ifaucqkbifaucqkbifaucqkbifaucqkbifaucqkbifaucqkbifa2mryd.onion";
const STEPS: [u32; 5] = [16, 18, 20, 22, 24];

/// Stamps minted per step: enough that the mean of a geometric draw settles, within seconds.
fn rounds(bits: u32) -> u32 {
    (1u32 << 26u32.saturating_sub(bits)).clamp(4, 64)
}

fn mean(total: Duration, rounds: u32) -> Duration {
    total / rounds
}

/// Hashcash minting `bits` for the same resource, per stamp; `None` when it is not installed.
fn hashcash(bits: u32, rounds: u32) -> Option<Duration> {
    let started = Instant::now();
    for _ in 0..rounds {
        let status = Command::new("hashcash")
            .args(["-mq", "-b", &bits.to_string(), RECIPIENT])
            .output()
            .ok()?;
        if !status.status.success() {
            return None;
        }
    }
    Some(mean(started.elapsed(), rounds))
}

fn main() {
    let message = b"From: dave\r\nTo: carol\r\nSubject: hello\r\n\r\nA first message.\r\n";
    let digest = stamp::message_digest(message);
    let stop = AtomicBool::new(false);
    let now = 1_800_000_000;

    // Checking: one stamp, many times.
    let sample = stamp::mint(RECIPIENT, SENDER, &digest, now, 16, &stop).expect("minted");
    let checks = 200_000;
    let started = Instant::now();
    for _ in 0..checks {
        let check = stamp::check(RECIPIENT, SENDER, &digest, std::hint::black_box(&sample));
        assert!(matches!(check, stamp::Check::Valid { .. }));
    }
    let check = started.elapsed() / checks;

    println!("proof-of-work stamps on this machine, one core (SHA-256; Hashcash: SHA-1)");
    println!(
        "{:>5} {:>7} {:>14} {:>14} {:>10} {:>12}",
        "bits", "stamps", "mint (mean)", "hashcash", "ratio", "check"
    );
    for bits in STEPS {
        let rounds = rounds(bits);
        let started = Instant::now();
        for round in 0..rounds {
            let minted = stamp::mint(
                RECIPIENT,
                SENDER,
                &digest,
                now + i64::from(round),
                bits,
                &stop,
            );
            assert!(minted.is_some());
        }
        let ours = mean(started.elapsed(), rounds);
        let (reference, ratio) = match hashcash(bits, rounds) {
            Some(reference) => (
                format!("{reference:.2?}"),
                format!("{:.2}", ours.as_secs_f64() / reference.as_secs_f64()),
            ),
            None => ("(not installed)".to_owned(), "-".to_owned()),
        };
        println!(
            "{bits:>5} {rounds:>7} {:>14} {reference:>14} {ratio:>10} {:>12}",
            format!("{ours:.2?}"),
            format!("{check:.2?}")
        );
    }
    println!(
        "mint: 2^bits SHA-256 compressions on average; check: one, whatever the bits. \
         Hashcash runs as a process per stamp (its start-up is in its figure)."
    );
}
