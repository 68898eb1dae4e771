//! Encryption at rest: a message delivered into an SQLite store leaves no trace of its subject,
//! body or Message-ID in any file of the data directory (database, WAL, shared memory).

use std::sync::Arc;

use onionpost_imap::mailstore::Part;
use onionpost_imap::service::{
    Delivery, DeliveryMailbox, ImapService, Verification, default_settings,
};
use onionpost_imap::store::MIGRATIONS;
use onionpost_imap::{CarrierSecret, SystemClock};
use onionpost_runtime::Database;

const SUBJECT: &str = "Zanzibar-quartz-subject-7d1f";
const BODY: &str = "The heron-marmalade-body-4c9e flies at midnight.";
const MESSAGE_ID: &str = "<unique-mid-93ab51@example.onion>";

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A file's bytes, or nothing when SQLite removed it (a transient journal) between the listing
/// and the read: a file that is gone holds no plaintext.
fn read_if_present(file: &std::path::Path) -> Vec<u8> {
    match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => panic!("reading {}: {error}", file.display()),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test]
async fn data_directory_holds_no_plaintext_mail() {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::open_sqlite(&dir.path().join("imap.sqlite3"), MIGRATIONS)
        .await
        .unwrap();
    let secret = CarrierSecret::from_text("0123456789abcdef0123456789abcdef").unwrap();
    let database_handle = database.clone();
    let service = ImapService::open(database, secret, Arc::new(SystemClock), default_settings())
        .await
        .unwrap();
    let account = service
        .create_account("henry", "a long enough password", "")
        .await
        .unwrap();
    let account_id = account.record.account_id.clone();
    service
        .add_identity(
            "hid",
            &account_id,
            &format!(
                "henry@{}",
                onionpost_proto::address::OnionHost::from_ed25519(&[b'h'; 32])
            ),
            "",
        )
        .await
        .unwrap();
    let sender = format!("x@{}.onion", "x".repeat(56));
    let message = format!(
        "Subject: {SUBJECT}\r\nMessage-ID: {MESSAGE_ID}\r\nFrom: {sender}\r\n\r\n{BODY}\r\n"
    );
    let delivered = service
        .deliver(Delivery {
            identity_id: "hid".into(),
            mailbox: DeliveryMailbox::Inbox,
            message: message.clone().into_bytes(),
            verification: Verification::Unsigned,
            verification_detail: String::new(),
            flags: vec![],
        })
        .await
        .unwrap();
    assert_eq!(delivered.refusal, None);

    // The message reads back in the clear through the store (so the grep below is meaningful).
    let store = service.mail_store();
    let inbox = store.status(&account_id, "INBOX").await.unwrap();
    let fetched = store
        .fetch(&account_id, inbox.id, &[delivered.uid], Part::Full)
        .await
        .unwrap();
    assert!(contains(&fetched[0].1, BODY.as_bytes()));
    assert!(contains(&fetched[0].1, SUBJECT.as_bytes()));

    // Grep every file while the database is open (WAL and shm present, the delivery's pages
    // not yet checkpointed into the main file), then again after the store has closed.
    let check = |when: &str| {
        let files = files_under(dir.path());
        assert!(
            files
                .iter()
                .any(|file| file.to_string_lossy().ends_with("-wal")),
            "the WAL file exists {when}: {files:?}"
        );
        for file in files {
            let bytes = read_if_present(&file);
            for needle in [SUBJECT, BODY, MESSAGE_ID, "heron-marmalade", "Zanzibar"] {
                assert!(
                    !contains(&bytes, needle.as_bytes()),
                    "{needle:?} found in {} {when}",
                    file.display()
                );
            }
        }
    };
    check("while open");
    drop(store);
    drop(service);
    database_handle.close().await;
    for file in files_under(dir.path()) {
        let bytes = read_if_present(&file);
        for needle in [SUBJECT, BODY, MESSAGE_ID] {
            assert!(
                !contains(&bytes, needle.as_bytes()),
                "{needle:?} found in {} after close",
                file.display()
            );
        }
    }
}
