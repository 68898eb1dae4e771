//! Interoperability with the real GnuPG (`/usr/bin/gpg`, 2.2 on Debian bookworm): gpg reads
//! what onionpost seals, onionpost opens what gpg makes, and gpg accepts onionpost's exported
//! keys and revocations. Each test runs gpg in its own temporary GNUPGHOME, in batch mode.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use onionpost_keys::pgp_mime::{self, Verification};
use onionpost_keys::revocation::{self, RevocationReason};
use onionpost_keys::{Address, Cert, IdentityKey, onion_host_from_ed25519, parse_cert};

const GPG: &str = "/usr/bin/gpg";

/// One throwaway GnuPG home; its agent is stopped on drop.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Self {
        let home = tempfile::Builder::new().prefix("op-gpg").tempdir().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        Gpg { home }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    /// Runs gpg with `args` after the batch options, feeding `stdin`; panics on failure.
    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let output = self.try_run(args, stdin);
        assert!(
            output.status.success(),
            "gpg {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn try_run(&self, args: &[&str], stdin: &[u8]) -> Output {
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
            .stderr(Stdio::piped())
            .spawn()
            .expect("gpg runs");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn import(&self, armored: &[u8]) {
        self.run(&["--import"], armored);
    }

    /// Generates an Ed25519/Cv25519 key without passphrase; returns its public certificate.
    fn generate(&self, userid: &str) -> Cert {
        self.run(
            &[
                "--passphrase",
                "",
                "--quick-gen-key",
                userid,
                "future-default",
                "default",
                "never",
            ],
            b"",
        );
        let exported = self.run(&["--armor", "--export", userid], b"");
        parse_cert(&exported.stdout).unwrap()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn address(local: &str, seed: u8) -> Address {
    Address::parse(&format!("{local}@{}", onion_host_from_ed25519(&[seed; 32]))).unwrap()
}

fn armored_block(mime: &[u8]) -> String {
    let text = String::from_utf8(mime.to_vec()).unwrap();
    let begin = text.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end_marker = "-----END PGP MESSAGE-----";
    let end = text.find(end_marker).unwrap() + end_marker.len();
    format!("{}\n", &text[begin..end])
}

fn header(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n").find_map(|line| {
        let (field, value) = line.split_once(':')?;
        field
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

fn status_lines(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn gpg_decrypts_and_verifies_what_onionpost_sealed() {
    let gpg = Gpg::new();
    let alice = IdentityKey::generate(&address("alice", 11)).unwrap();
    let gina_address = address("gina", 12);
    let gina = gpg.generate(&gina_address.to_string());
    gpg.import(alice.export_public().unwrap().as_bytes());

    let message = format!(
        "From: Alice <{}>\r\nTo: {gina_address}\r\nSubject: Sealed by onionpost\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@{}>\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nHello Gina, this is Alice.\r\n",
        alice.address(),
        alice.address().onion_host()
    );
    let sealed = pgp_mime::seal(message.as_bytes(), &alice, &[gina]).unwrap();
    assert_eq!(header(&sealed, "Subject").as_deref(), Some("..."));

    let plain_path = gpg.path("plain.eml");
    let output = gpg.run(
        &[
            "--status-fd",
            "1",
            "--output",
            plain_path.to_str().unwrap(),
            "--decrypt",
        ],
        armored_block(&sealed).as_bytes(),
    );
    let status = status_lines(&output);
    let alice_hex = alice.fingerprint().to_hex();
    assert!(status.contains("DECRYPTION_OKAY"), "{status}");
    assert!(
        status.contains(&format!("GOODSIG {}", &alice_hex[24..])),
        "{status}"
    );
    assert!(
        status.contains(&format!("VALIDSIG {alice_hex}")),
        "{status}"
    );
    assert!(
        !status.contains("BADSIG") && !status.contains("NO_PUBKEY"),
        "{status}"
    );

    let plain = std::fs::read(plain_path).unwrap();
    assert_eq!(
        header(&plain, "Subject").as_deref(),
        Some("Sealed by onionpost")
    );
    assert!(
        header(&plain, "Content-Type")
            .unwrap()
            .contains("protected-headers=\"v1\"")
    );
    assert!(String::from_utf8_lossy(&plain).ends_with("Hello Gina, this is Alice.\r\n"));
}

#[test]
fn onionpost_decrypts_and_verifies_what_gpg_made() {
    let gpg = Gpg::new();
    let alice = IdentityKey::generate(&address("alice", 21)).unwrap();
    let gina_address = address("gina", 22);
    let gina = gpg.generate(&gina_address.to_string());
    gpg.import(alice.export_public().unwrap().as_bytes());

    // The cryptographic payload a PGP/MIME mail client would hand to gpg: protected headers.
    let payload = format!(
        "Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"\r\n\
         From: Gina <{gina_address}>\r\nTo: {}\r\nSubject: Made by GnuPG\r\n\r\n\
         Hello Alice, this is Gina's gpg.\r\n",
        alice.address()
    );
    let encrypted = gpg.run(
        &[
            "--trust-model",
            "always",
            "--armor",
            "--local-user",
            &gina.fingerprint().to_hex(),
            "--recipient",
            &alice.fingerprint().to_hex(),
            "--recipient",
            &gina.fingerprint().to_hex(),
            "--sign",
            "--encrypt",
        ],
        payload.as_bytes(),
    );
    let armored = String::from_utf8(encrypted.stdout).unwrap();
    assert!(armored.starts_with("-----BEGIN PGP MESSAGE-----"));
    let mail = format!(
        "From: Gina <{gina_address}>\r\nTo: {}\r\nSubject: ...\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n \
         boundary=\"gpg-boundary\"\r\n\r\n\
         --gpg-boundary\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --gpg-boundary\r\nContent-Type: application/octet-stream\r\n\r\n{}\r\n\
         --gpg-boundary--\r\n",
        alice.address(),
        armored.replace('\n', "\r\n").trim_end()
    );

    let opened = pgp_mime::open(mail.as_bytes(), &[&alice], std::slice::from_ref(&gina)).unwrap();
    assert_eq!(opened.decrypted_by, alice.fingerprint());
    assert!(
        matches!(opened.verification, Verification::Good { ref signer, signer_holds_from: true } if signer == &gina.fingerprint()),
        "{:?}",
        opened.verification
    );
    assert_eq!(opened.verified_sender().unwrap(), &gina.fingerprint());
    assert!(opened.protected_headers);
    assert_eq!(
        header(&opened.message, "Subject").as_deref(),
        Some("Made by GnuPG")
    );
    assert!(
        String::from_utf8_lossy(&opened.message).ends_with("Hello Alice, this is Gina's gpg.\r\n")
    );

    // Without Gina's key the signature is from an unknown signer, and the mail still opens.
    let opened = pgp_mime::open(mail.as_bytes(), &[&alice], &[]).unwrap();
    assert!(matches!(
        opened.verification,
        Verification::UnknownSigner { .. }
    ));
}

#[test]
fn gpg_imports_an_exported_identity_key_and_a_revocation() {
    let gpg = Gpg::new();
    let alice = IdentityKey::generate(&address("alice", 31)).unwrap();
    let fingerprint = alice.fingerprint().to_hex();

    // The identity moves to the user's own mail client, protected by a passphrase.
    let exported = alice.export_secret(Some("move me")).unwrap();
    gpg.run(
        &["--passphrase", "move me", "--import"],
        exported.as_bytes(),
    );
    let signed = gpg.run(
        &[
            "--passphrase",
            "move me",
            "--local-user",
            &fingerprint,
            "--armor",
            "--sign",
        ],
        b"signed by the moved key\n",
    );
    let verified = gpg.run(&["--status-fd", "1", "--decrypt"], &signed.stdout);
    assert!(status_lines(&verified).contains(&format!("VALIDSIG {fingerprint}")));

    // And back: the key gpg holds imports into onionpost with the same passphrase.
    let reexported = gpg.run(
        &[
            "--passphrase",
            "move me",
            "--armor",
            "--export-secret-keys",
            &fingerprint,
        ],
        b"",
    );
    let back = IdentityKey::import_secret(&reexported.stdout, Some("move me")).unwrap();
    assert_eq!(back.fingerprint(), alice.fingerprint());
    assert_eq!(back.address(), alice.address());

    let revocation = revocation::revoke(&alice, RevocationReason::Retired, "retired").unwrap();
    gpg.import(revocation.armored.as_bytes());
    let listing = gpg.run(&["--with-colons", "--list-keys", &fingerprint], b"");
    let pub_line = String::from_utf8(listing.stdout)
        .unwrap()
        .lines()
        .find(|line| line.starts_with("pub:"))
        .unwrap()
        .to_owned();
    assert!(pub_line.starts_with("pub:r:"), "{pub_line}");
}
