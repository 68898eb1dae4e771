//! IMAP sessions in memory: one line per command and the reply expected, against the
//! in-memory store (tests/imap_support). The real SQL store and real clients are in
//! imap_clients.rs.

mod imap_support;

use std::sync::Arc;

use imap_support::{Client, MemStore, limits, message};
use onionpost_imap::mailstore::SharedMailStore;
use onionpost_imap::server::{ConnectionInfo, ImapServer, Limits, ListenerScope, Security};

fn server() -> (ImapServer, Arc<MemStore>) {
    let store = MemStore::new(&[("alice", "secret"), ("bob", "hunter2")]);
    let shared: SharedMailStore = store.clone();
    (ImapServer::new(shared, limits(), None), store)
}

async fn logged_in(server: &ImapServer) -> Client {
    let (mut client, _) = Client::connect(server, Security::Loopback).await;
    let reply = client.command("a0", "LOGIN alice secret").await;
    assert!(reply.last().unwrap().starts_with("a0 OK"), "{reply:?}");
    client
}

async fn with_messages(server: &ImapServer, count: usize) -> Client {
    let mut client = logged_in(server).await;
    for index in 1..=count {
        let body = message(
            &format!("hello{index}"),
            "alice@example.org",
            &format!("body number {index}"),
        );
        let reply = client
            .command("ap", &format!("APPEND INBOX {{{}+}}\r\n{body}", body.len()))
            .await;
        assert!(
            reply.last().unwrap().starts_with("ap OK [APPENDUID"),
            "{reply:?}"
        );
    }
    let reply = client.command("s", "SELECT INBOX").await;
    assert!(
        reply.last().unwrap().starts_with("s OK [READ-WRITE]"),
        "{reply:?}"
    );
    client
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

#[tokio::test]
async fn greeting_capability_noop_logout() {
    let (server, _) = server();
    let (mut client, greeting) = Client::connect(&server, Security::Loopback).await;
    assert!(
        greeting.starts_with("* OK [CAPABILITY IMAP4REV1"),
        "{greeting}"
    );
    assert!(greeting.contains("AUTH=PLAIN"), "{greeting}");
    let reply = client.command("a1", "CAPABILITY").await;
    assert!(reply[0].starts_with("* CAPABILITY IMAP4REV1"), "{reply:?}");
    for cap in [
        "IDLE",
        "UIDPLUS",
        "MOVE",
        "NAMESPACE",
        "ENABLE",
        "QUOTA",
        "LITERAL+",
        "SPECIAL-USE",
        "UNSELECT",
    ] {
        assert!(reply[0].contains(cap), "{cap} missing: {reply:?}");
    }
    assert_eq!(reply[1], "a1 OK CAPABILITY completed");
    assert_eq!(
        client.command("a2", "NOOP").await,
        vec!["a2 OK NOOP completed"]
    );
    let reply = client.command("a3", "LOGOUT").await;
    assert_eq!(reply[0], "* BYE onionpost logging out");
    assert_eq!(reply[1], "a3 OK LOGOUT completed");
    assert_eq!(client.line().await, "", "connection closed after LOGOUT");
}

#[tokio::test]
async fn login_paths() {
    let (server, _) = server();
    let (mut client, _) = Client::connect(&server, Security::Loopback).await;
    assert_eq!(
        client.command("a1", "LOGIN alice wrong").await,
        vec!["a1 NO [AUTHENTICATIONFAILED] invalid credentials"]
    );
    assert_eq!(
        client.command("a2", "LOGIN nobody wrong").await,
        vec!["a2 NO [AUTHENTICATIONFAILED] invalid credentials"]
    );
    assert_eq!(
        client.command("a3", "LOGIN backoff x").await,
        vec!["a3 NO [AUTHENTICATIONFAILED] invalid credentials"]
    );
    assert_eq!(
        client.command("a4", "SELECT INBOX").await,
        vec!["a4 BAD SELECT is not valid before login; log in first"]
    );
    let reply = client.command("a5", "LOGIN alice secret").await;
    assert!(
        reply[0].starts_with("a5 OK [CAPABILITY IMAP4REV1"),
        "{reply:?}"
    );
    assert!(!reply[0].contains("AUTH=PLAIN"), "{reply:?}");
    assert_eq!(
        client.command("a6", "LOGIN alice secret").await,
        vec!["a6 BAD already authenticated"]
    );
}

#[tokio::test]
async fn authenticate_plain_with_and_without_initial_response() {
    let (server, _) = server();
    let (mut client, _) = Client::connect(&server, Security::Loopback).await;
    // "\0alice\0secret"
    let reply = client
        .command("a1", "AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==")
        .await;
    assert!(reply[0].starts_with("a1 OK [CAPABILITY"), "{reply:?}");

    let (mut client, _) = Client::connect(&server, Security::Loopback).await;
    client.send("b1 AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(client.line().await, "+ ");
    client.send("AGJvYgB3cm9uZw==\r\n").await;
    assert_eq!(
        client.line().await,
        "b1 NO [AUTHENTICATIONFAILED] invalid credentials"
    );
    client.send("b2 AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(client.line().await, "+ ");
    client.send("*\r\n").await;
    assert_eq!(client.line().await, "b2 BAD authentication cancelled");
    assert_eq!(
        client.command("b3", "AUTHENTICATE CRAM-MD5").await,
        vec!["b3 NO [CANNOT] only AUTHENTICATE PLAIN is supported"]
    );
}

#[tokio::test]
async fn cleartext_refuses_login_until_starttls() {
    let (server, _) = server();
    let (mut client, greeting) = Client::connect(&server, Security::Cleartext).await;
    assert!(greeting.contains("LOGINDISABLED"), "{greeting}");
    assert!(!greeting.contains("AUTH=PLAIN"), "{greeting}");
    assert_eq!(
        client.command("a1", "LOGIN alice secret").await,
        vec![
            "a1 NO [PRIVACYREQUIRED] LOGIN is disabled on a cleartext connection; use STARTTLS first"
        ]
    );
    assert_eq!(
        client.command("a2", "STARTTLS").await,
        vec!["a2 BAD STARTTLS is not available on this connection"]
    );
}

#[tokio::test]
async fn onion_login_only_for_owner() {
    let (server, _) = server();
    let info = |owner: Option<&str>| ConnectionInfo {
        connection_key: "onion:id1".to_owned(),
        security: Security::Onion,
        starttls: false,
        required_account: Some(owner.map(str::to_owned)),
        login_alias: None,
    };
    let (mut client, _) = Client::connect_with(&server, info(Some("acct-bob"))).await;
    // Alice's correct password through Bob's onion: the same words as a wrong password.
    assert_eq!(
        client.command("a1", "LOGIN alice secret").await,
        vec!["a1 NO [AUTHENTICATIONFAILED] invalid credentials"]
    );
    let reply = client.command("a2", "LOGIN bob hunter2").await;
    assert!(reply[0].starts_with("a2 OK"), "{reply:?}");
    let (mut client, _) = Client::connect_with(&server, info(None)).await;
    assert_eq!(
        client.command("a1", "LOGIN bob hunter2").await,
        vec!["a1 NO [AUTHENTICATIONFAILED] invalid credentials"]
    );
}

#[tokio::test]
async fn onion_takes_its_own_address_as_its_owners_login() {
    let (server, _) = server();
    let bobs_onion = ConnectionInfo {
        connection_key: String::new(),
        security: Security::Onion,
        starttls: false,
        required_account: Some(Some("acct-bob".to_owned())),
        login_alias: Some(("bob@bobonion.onion".to_owned(), "bob".to_owned())),
    };
    // The onion's own address (any case) logs its owner in, with LOGIN or AUTHENTICATE PLAIN.
    let (mut client, _) = Client::connect_with(&server, bobs_onion.clone()).await;
    let reply = client
        .command("a1", "LOGIN Bob@BobOnion.onion hunter2")
        .await;
    assert!(reply[0].starts_with("a1 OK"), "{reply:?}");
    let (mut client, _) = Client::connect_with(&server, bobs_onion.clone()).await;
    // base64 of "\0bob@bobonion.onion\0hunter2".
    let plain = "AGJvYkBib2Jvbmlvbi5vbmlvbgBodW50ZXIy";
    let reply = client
        .command("a1", &format!("AUTHENTICATE PLAIN {plain}"))
        .await;
    assert!(reply.last().unwrap().starts_with("a1 OK"), "{reply:?}");
    // Another address, or the right one with a wrong password: the words of a wrong password.
    let (mut client, _) = Client::connect_with(&server, bobs_onion.clone()).await;
    assert_eq!(
        client
            .command("a1", "LOGIN alice@aliceonion.onion secret")
            .await,
        vec!["a1 NO [AUTHENTICATIONFAILED] invalid credentials"]
    );
    assert_eq!(
        client.command("a2", "LOGIN bob@bobonion.onion wrong").await,
        vec!["a2 NO [AUTHENTICATIONFAILED] invalid credentials"]
    );
    // The address means nothing off its onion.
    let (mut client, _) = Client::connect(&server, Security::Loopback).await;
    assert_eq!(
        client
            .command("a1", "LOGIN bob@bobonion.onion hunter2")
            .await,
        vec!["a1 NO [AUTHENTICATIONFAILED] invalid credentials"]
    );
}

#[tokio::test]
async fn connections_per_account_limited() {
    let (server, _) = server();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(logged_in(&server).await);
    }
    let (mut client, _) = Client::connect(&server, Security::Loopback).await;
    assert_eq!(
        client.command("a1", "LOGIN alice secret").await,
        vec!["a1 NO [LIMIT] too many connections for this account (limit 3)"]
    );
    let mut first = open.remove(0);
    first.command("z", "LOGOUT").await;
    if let Some(task) = first.task.take() {
        let _ = task.await;
    }
    let reply = client.command("a2", "LOGIN alice secret").await;
    assert!(reply[0].starts_with("a2 OK"), "{reply:?}");
}

#[tokio::test]
async fn mailbox_commands() {
    let (server, _) = server();
    let mut client = logged_in(&server).await;
    let reply = client.command("l1", "LIST \"\" \"*\"").await;
    assert!(
        has(
            &reply,
            "* LIST (\\HasNoChildren \\Sent \\Subscribed) \"/\" Sent"
        ),
        "{reply:?}"
    );
    assert!(
        has(&reply, "* LIST (\\HasNoChildren \\Subscribed) \"/\" INBOX"),
        "{reply:?}"
    );
    assert!(has(&reply, "\\Trash"), "{reply:?}");
    assert_eq!(
        client.command("l2", "LIST \"\" \"\"").await,
        vec!["* LIST (\\Noselect) \"/\" \"\"", "l2 OK LIST completed"]
    );
    assert_eq!(
        client.command("c1", "CREATE Work").await,
        vec!["c1 OK CREATE completed"]
    );
    assert_eq!(
        client.command("c2", "CREATE Work").await,
        vec!["c2 NO [ALREADYEXISTS] mailbox already exists"]
    );
    assert_eq!(
        client.command("c3", "CREATE Work/Old").await,
        vec!["c3 OK CREATE completed"]
    );
    let reply = client.command("l3", "LIST \"\" \"W%\"").await;
    assert_eq!(
        reply,
        vec![
            "* LIST (\\HasChildren \\Subscribed) \"/\" Work",
            "l3 OK LIST completed"
        ]
    );
    assert_eq!(
        client.command("r1", "RENAME Work/Old Archive2").await,
        vec!["r1 OK RENAME completed"]
    );
    assert_eq!(
        client.command("u1", "UNSUBSCRIBE Archive2").await,
        vec!["u1 OK UNSUBSCRIBE completed"]
    );
    let reply = client.command("l4", "LSUB \"\" \"*\"").await;
    assert!(!has(&reply, "Archive2"), "{reply:?}");
    assert!(
        has(&reply, "* LSUB (\\HasNoChildren) \"/\" Work"),
        "{reply:?}"
    );
    assert_eq!(
        client.command("u2", "SUBSCRIBE Archive2").await,
        vec!["u2 OK SUBSCRIBE completed"]
    );
    assert_eq!(
        client.command("d1", "DELETE Archive2").await,
        vec!["d1 OK DELETE completed"]
    );
    assert_eq!(
        client.command("d2", "DELETE Archive2").await,
        vec!["d2 NO [NONEXISTENT] no such mailbox"]
    );
    assert_eq!(
        client.command("d3", "DELETE INBOX").await,
        vec!["d3 NO [CANNOT] INBOX cannot be deleted"]
    );
    assert_eq!(
        client
            .command(
                "s1",
                "STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY RECENT)"
            )
            .await[0],
        "* STATUS INBOX (MESSAGES 0 UNSEEN 0 UIDNEXT 1 UIDVALIDITY 1001 RECENT 0)"
    );
    assert_eq!(
        client.command("s2", "SELECT Nowhere").await,
        vec!["s2 NO [NONEXISTENT] no such mailbox"]
    );
    assert_eq!(
        client.command("n1", "NAMESPACE").await,
        vec![
            "* NAMESPACE ((\"\" \"/\")) NIL NIL",
            "n1 OK NAMESPACE completed"
        ]
    );
    assert_eq!(
        client.command("e1", "ENABLE CONDSTORE").await,
        vec!["* ENABLED", "e1 OK ENABLE completed"]
    );
    assert_eq!(
        client.command("i1", "ID (\"name\" \"test\")").await,
        vec!["* ID NIL", "i1 OK ID completed"]
    );
    assert_eq!(
        client.command("f1", "FETCH 1 FLAGS").await,
        vec!["f1 BAD FETCH needs a selected mailbox; SELECT one first"]
    );
}

#[tokio::test]
async fn append_select_fetch() {
    let (server, _) = server();
    let mut client = logged_in(&server).await;
    let body = message("Hi", "alice@example.org", "first body");
    // A synchronizing literal: the server asks for it.
    client
        .send(&format!(
            "a1 APPEND INBOX (\\Seen $Work) \"07-Feb-1994 21:52:25 -0800\" {{{}}}\r\n",
            body.len()
        ))
        .await;
    assert_eq!(client.line().await, "+ ready for literal data");
    client.send(&format!("{body}\r\n")).await;
    assert_eq!(
        client.line().await,
        "a1 OK [APPENDUID 1001 1] APPEND completed"
    );
    assert_eq!(
        client.command("a2", "APPEND Nowhere {3+}\r\nabc").await,
        vec!["a2 NO [TRYCREATE] no such mailbox"]
    );
    let reply = client.command("s1", "SELECT INBOX").await;
    assert_eq!(
        reply,
        vec![
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)",
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] flags permitted",
            "* 1 EXISTS",
            "* 0 RECENT",
            "* OK [UIDVALIDITY 1001] UIDs valid",
            "* OK [UIDNEXT 2] predicted next UID",
            "s1 OK [READ-WRITE] SELECT completed",
        ]
    );
    let reply = client
        .command("f1", "FETCH 1 (FLAGS UID RFC822.SIZE INTERNALDATE)")
        .await;
    assert_eq!(
        reply[0],
        format!(
            "* 1 FETCH (FLAGS (\\Seen $Work) UID 1 RFC822.SIZE {} INTERNALDATE \"08-Feb-1994 05:52:25 +0000\")",
            body.len()
        )
    );
    let reply = client.command("f2", "FETCH 1 ENVELOPE").await;
    assert_eq!(
        reply[0],
        "* 1 FETCH (ENVELOPE (\"Mon, 7 Feb 1994 21:52:25 -0800\" \"Hi\" ((\"Alice Example\" NIL \"alice\" \"example.org\")) ((\"Alice Example\" NIL \"alice\" \"example.org\")) ((\"Alice Example\" NIL \"alice\" \"example.org\")) ((NIL NIL \"bob\" \"example.org\")) NIL NIL NIL \"<Hi@example.org>\"))"
    );
    let reply = client.command("f3", "FETCH 1 BODYSTRUCTURE").await;
    assert_eq!(
        reply[0],
        "* 1 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 12 1 NIL))"
    );
    let reply = client
        .command("f4", "FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
        .await;
    assert_eq!(
        reply[0],
        "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {15}\r\nSubject: Hi\r\n\r\n)"
    );
    let reply = client.command("f5", "FETCH 1 BODY.PEEK[TEXT]<0.5>").await;
    assert_eq!(reply[0], "* 1 FETCH (BODY[TEXT]<0> \"first\")");
    let reply = client.command("f6", "FETCH 1 BODY.PEEK[1]").await;
    assert_eq!(reply[0], "* 1 FETCH (BODY[1] {12}\r\nfirst body\r\n)");
    let reply = client.command("f7", "UID FETCH 1:* (FLAGS)").await;
    assert_eq!(reply[0], "* 1 FETCH (FLAGS (\\Seen $Work) UID 1)");
    let reply = client.command("f8", "FETCH 1 RFC822.HEADER").await;
    assert!(
        reply[0].starts_with("* 1 FETCH (RFC822.HEADER {"),
        "{reply:?}"
    );
    assert!(reply[0].contains("Subject: Hi\r\n"), "{reply:?}");
    let reply = client.command("f9", "FETCH 5 FLAGS").await;
    assert_eq!(reply, vec!["f9 OK FETCH completed"]);
}

#[tokio::test]
async fn fetch_body_sets_seen_and_multipart_sections() {
    let (server, _) = server();
    let mut client = logged_in(&server).await;
    let multipart = "From: a@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\npart one\r\n--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--XX--\r\n";
    client
        .command(
            "a",
            &format!("APPEND INBOX {{{}+}}\r\n{multipart}", multipart.len()),
        )
        .await;
    client.command("s", "SELECT INBOX").await;
    let reply = client.command("f1", "FETCH 1 BODY[1]").await;
    assert_eq!(
        reply[0], "* 1 FETCH (BODY[1] \"part one\" FLAGS (\\Seen))",
        "{reply:?}"
    );
    let reply = client.command("f2", "FETCH 1 BODY.PEEK[2.MIME]").await;
    assert!(
        reply[0].contains("Content-Transfer-Encoding: base64"),
        "{reply:?}"
    );
    let reply = client.command("f3", "FETCH 1 BODY.PEEK[2]").await;
    assert_eq!(reply[0], "* 1 FETCH (BODY[2] \"aGVsbG8=\")", "{reply:?}");
    let reply = client.command("f4", "FETCH 1 BODYSTRUCTURE").await;
    assert!(
        reply[0].starts_with("* 1 FETCH (BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 8 0 NIL)(\"APPLICATION\" \"OCTET-STREAM\" NIL NIL NIL \"BASE64\" 8 NIL) \"MIXED\""),
        "{reply:?}"
    );
    let reply = client.command("f5", "FETCH 1 BODY").await;
    assert!(reply[0].contains("\"MIXED\")"), "{reply:?}");
}

#[tokio::test]
async fn store_search_copy_move_expunge() {
    let (server, _) = server();
    let mut client = with_messages(&server, 4).await;
    assert_eq!(
        client.command("t1", "STORE 1:2 +FLAGS (\\Flagged)").await,
        vec![
            "* 1 FETCH (FLAGS (\\Flagged) UID 1)",
            "* 2 FETCH (FLAGS (\\Flagged) UID 2)",
            "t1 OK STORE completed"
        ]
    );
    assert_eq!(
        client
            .command("t2", "UID STORE 2 -FLAGS.SILENT (\\Flagged)")
            .await,
        vec!["t2 OK STORE completed"]
    );
    assert_eq!(
        client
            .command("t3", "STORE 3 FLAGS (\\Seen \\Answered)")
            .await[0],
        "* 3 FETCH (FLAGS (\\Seen \\Answered) UID 3)"
    );
    assert_eq!(
        client.command("q1", "SEARCH FLAGGED").await[0],
        "* SEARCH 1"
    );
    assert_eq!(
        client.command("q2", "SEARCH UNSEEN").await[0],
        "* SEARCH 1 2 4"
    );
    assert_eq!(
        client.command("q3", "UID SEARCH SUBJECT hello3").await[0],
        "* SEARCH 3"
    );
    assert_eq!(
        client.command("q4", "SEARCH BODY \"number 4\"").await[0],
        "* SEARCH 4"
    );
    assert_eq!(
        client.command("q5", "SEARCH OR 1 4 NOT SEEN").await[0],
        "* SEARCH 1 4"
    );
    assert_eq!(
        client
            .command("q6", "SEARCH HEADER Message-ID hello2")
            .await[0],
        "* SEARCH 2"
    );
    assert_eq!(
        client
            .command("q7", "SEARCH FROM alice TEXT \"body number 1\"")
            .await[0],
        "* SEARCH 1"
    );
    assert_eq!(
        client.command("q8", "SEARCH LARGER 100000").await[0],
        "* SEARCH"
    );
    assert_eq!(
        client
            .command("q9", "SEARCH SENTON 7-Feb-1994 UID 2:3")
            .await[0],
        "* SEARCH 2 3"
    );
    assert_eq!(
        client.command("qa", "SEARCH 2:* ANSWERED").await[0],
        "* SEARCH 3"
    );
    assert_eq!(
        client.command("qb", "SEARCH SINCE 1-Jan-2000 TO bob").await[0],
        "* SEARCH 1 2 3 4"
    );
    assert_eq!(
        client.command("qc", "SEARCH BEFORE 1-Jan-2000").await[0],
        "* SEARCH"
    );
    assert_eq!(
        client.command("c1", "COPY 1:2 Trash").await,
        vec!["c1 OK [COPYUID 1004 1:2 1:2] COPY completed"]
    );
    assert_eq!(
        client.command("c2", "COPY 1 Nowhere").await,
        vec!["c2 NO [TRYCREATE] no such mailbox"]
    );
    assert_eq!(
        client.command("m1", "MOVE 2 Junk").await,
        vec![
            "* OK [COPYUID 1005 2 1] moved",
            "* 2 EXPUNGE",
            "m1 OK MOVE completed"
        ]
    );
    client
        .command("t4", "STORE 1:3 +FLAGS.SILENT (\\Deleted)")
        .await;
    // UID EXPUNGE only removes the named UIDs (RFC 4315 §2.1).
    assert_eq!(
        client.command("x1", "UID EXPUNGE 4").await,
        vec!["* 3 EXPUNGE", "x1 OK EXPUNGE completed"]
    );
    assert_eq!(
        client.command("x2", "EXPUNGE").await,
        vec!["* 2 EXPUNGE", "* 1 EXPUNGE", "x2 OK EXPUNGE completed"]
    );
    assert_eq!(client.command("x3", "SEARCH ALL").await[0], "* SEARCH");
    let status = client.command("st", "STATUS Trash (MESSAGES)").await;
    assert_eq!(status[0], "* STATUS Trash (MESSAGES 2)");
}

#[tokio::test]
async fn examine_is_read_only_and_close_unselect() {
    let (server, _) = server();
    let mut client = with_messages(&server, 2).await;
    client
        .command("t", "STORE 1 +FLAGS.SILENT (\\Deleted)")
        .await;
    let reply = client.command("e1", "EXAMINE INBOX").await;
    assert_eq!(reply.last().unwrap(), "e1 OK [READ-ONLY] EXAMINE completed");
    assert_eq!(
        client.command("e2", "STORE 1 +FLAGS (\\Seen)").await,
        vec!["e2 NO [READ-ONLY] mailbox is read-only (EXAMINE)"]
    );
    // BODY[] in EXAMINE does not set \Seen.
    let reply = client
        .command("e3", "FETCH 2 (BODY[HEADER.FIELDS (Subject)])")
        .await;
    assert!(!reply[0].contains("FLAGS"), "{reply:?}");
    assert_eq!(
        client.command("e4", "CLOSE").await,
        vec!["e4 OK CLOSE completed"]
    );
    client.command("s", "SELECT INBOX").await;
    assert_eq!(
        client.command("e5", "UNSELECT").await,
        vec!["e5 OK UNSELECT completed"]
    );
    client.command("s", "SELECT INBOX").await;
    assert_eq!(
        client.command("e6", "CHECK").await,
        vec!["e6 OK CHECK completed"]
    );
    assert_eq!(
        client.command("e7", "CLOSE").await,
        vec!["e7 OK CLOSE completed"]
    );
    let reply = client.command("s2", "SELECT INBOX").await;
    assert!(
        has(&reply, "* 1 EXISTS"),
        "CLOSE expunged the deleted message: {reply:?}"
    );
}

#[tokio::test]
async fn quota() {
    let (server, _) = server();
    let mut client = with_messages(&server, 3).await;
    let reply = client.command("q1", "GETQUOTAROOT INBOX").await;
    assert_eq!(reply[0], "* QUOTAROOT INBOX \"\"");
    assert_eq!(reply[1], "* QUOTA \"\" (STORAGE 1 10240)");
    assert_eq!(
        client.command("q2", "GETQUOTA \"\"").await[0],
        "* QUOTA \"\" (STORAGE 1 10240)"
    );
    assert_eq!(
        client.command("q3", "SETQUOTA \"\" (STORAGE 1)").await,
        vec!["q3 NO [NOPERM] quotas are set by the plan, not by the client"]
    );
}

#[tokio::test]
async fn malformed_unknown_and_oversized() {
    let (server, _) = server();
    let mut client = logged_in(&server).await;
    assert_eq!(
        client.command("m1", "FROBNICATE").await,
        vec!["m1 BAD unknown command FROBNICATE"]
    );
    assert_eq!(
        client.command("m2", "SELECT").await,
        vec!["m2 BAD invalid arguments for SELECT"]
    );
    assert_eq!(
        client.command("m3", "UID FOO 1").await,
        vec!["m3 BAD unknown command UID FOO"]
    );
    client.send("\r\n").await;
    assert_eq!(client.line().await, "* BAD empty command line");
    // A synchronizing literal over the limit is refused before it is sent.
    client.send("m4 APPEND INBOX {5000}\r\n").await;
    assert_eq!(
        client.line().await,
        "m4 BAD literal exceeds the maximum message size of 4096 octets"
    );
    // The session goes on.
    assert_eq!(
        client.command("m5", "NOOP").await,
        vec!["m5 OK NOOP completed"]
    );
    // A line over the limit ends the session with a BYE that says why.
    let long = "x".repeat(6000);
    client.send(&format!("m6 NOOP {long}\r\n")).await;
    let bye = client.line().await;
    assert!(bye.starts_with("* BYE line too long"), "{bye}");
    assert_eq!(client.line().await, "");
    // Other sessions are unaffected.
    let mut other = logged_in(&server).await;
    assert_eq!(
        other.command("o1", "NOOP").await,
        vec!["o1 OK NOOP completed"]
    );
}

#[tokio::test]
async fn oversized_non_synchronizing_literal_closes() {
    let (server, _) = server();
    let mut client = logged_in(&server).await;
    let big = "y".repeat(6000);
    client
        .send(&format!("m1 APPEND INBOX {{6000+}}\r\n{big}\r\n"))
        .await;
    let bye = client.line().await;
    assert!(bye.starts_with("* BYE line too long"), "{bye}");
}

#[tokio::test]
async fn abrupt_disconnect_is_clean() {
    let (server, store) = server();
    let client = logged_in(&server).await;
    let Client {
        task,
        writer,
        reader,
    } = client;
    drop(writer);
    drop(reader);
    let task = task.expect("an in-memory session has a task");
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("session ended")
        .unwrap();
    // Its connection slot is free again: three more logins work.
    let _ = store;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(logged_in(&server).await);
    }
}

#[tokio::test]
async fn other_sessions_changes_arrive_after_noop_and_in_idle() {
    let (server, _) = server();
    let mut first = with_messages(&server, 2).await;
    let mut second = with_messages(&server, 0).await;
    // The second session appends and flags; the first sees it after NOOP.
    let body = message("new", "carol@example.org", "x");
    second
        .command("a", &format!("APPEND INBOX {{{}+}}\r\n{body}", body.len()))
        .await;
    second.command("b", "STORE 1 +FLAGS.SILENT (\\Seen)").await;
    let reply = first.command("n", "NOOP").await;
    assert_eq!(
        reply,
        vec![
            "* 3 EXISTS",
            "* 1 FETCH (FLAGS (\\Seen) UID 1)",
            "n OK NOOP completed"
        ]
    );
    // IDLE wakes on another session's change.
    first.send("i IDLE\r\n").await;
    assert_eq!(first.line().await, "+ idling");
    second
        .command("c", "STORE 2 +FLAGS.SILENT (\\Deleted)")
        .await;
    assert_eq!(first.line().await, "* 2 FETCH (FLAGS (\\Deleted) UID 2)");
    second.command("d", "EXPUNGE").await;
    assert_eq!(first.line().await, "* 2 EXPUNGE");
    second
        .command("e", &format!("APPEND INBOX {{{}+}}\r\n{body}", body.len()))
        .await;
    assert_eq!(first.line().await, "* 3 EXISTS");
    first.send("DONE\r\n").await;
    assert_eq!(first.line().await, "i OK IDLE terminated");
    assert_eq!(
        first.command("f", "FETCH 3 UID").await[0],
        "* 3 FETCH (UID 4)"
    );
}

#[tokio::test]
async fn second_account_sees_nothing_of_the_first() {
    let (server, _) = server();
    let _alice = with_messages(&server, 2).await;
    let (mut bob, _) = Client::connect(&server, Security::Loopback).await;
    bob.command("l", "LOGIN bob hunter2").await;
    let reply = bob.command("s", "SELECT INBOX").await;
    assert!(has(&reply, "* 0 EXISTS"), "{reply:?}");
    assert_eq!(bob.command("q", "SEARCH ALL").await[0], "* SEARCH");
}

#[tokio::test]
async fn idle_timeout_logs_out() {
    let store = MemStore::new(&[("alice", "secret")]);
    let mut short = limits();
    short.idle_timeout = std::time::Duration::from_millis(300);
    let shared: SharedMailStore = store;
    let server = ImapServer::new(shared, short, None);
    let (mut client, _) = Client::connect(&server, Security::Loopback).await;
    assert_eq!(client.line().await, "* BYE autologout; idle for too long");
    assert_eq!(client.line().await, "");
}

#[tokio::test]
async fn nested_message_parts() {
    let (server, _) = server();
    let mut client = logged_in(&server).await;
    let nested = "From: outer@example.org\r\nSubject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"B1\"\r\n\r\n--B1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--B1\r\nContent-Type: message/rfc822\r\n\r\nFrom: inner@example.org\r\nSubject: inner subject\r\n\r\ninner body\r\n--B1--\r\n";
    client
        .command(
            "a",
            &format!("APPEND INBOX {{{}+}}\r\n{nested}", nested.len()),
        )
        .await;
    client.command("s", "SELECT INBOX").await;
    let reply = client.command("f1", "FETCH 1 BODY.PEEK[2.HEADER]").await;
    assert!(reply[0].contains("Subject: inner subject\r\n"), "{reply:?}");
    assert!(!reply[0].contains("outer"), "{reply:?}");
    let reply = client.command("f2", "FETCH 1 BODY.PEEK[2.TEXT]").await;
    assert!(
        reply[0].starts_with("* 1 FETCH (BODY[2.TEXT] \"inner body"),
        "{reply:?}"
    );
    let reply = client.command("f3", "FETCH 1 BODY.PEEK[2.1]").await;
    assert!(
        reply[0].starts_with("* 1 FETCH (BODY[2.1] \"inner body"),
        "{reply:?}"
    );
    let reply = client.command("f4", "FETCH 1 BODYSTRUCTURE").await;
    assert!(reply[0].contains("\"MESSAGE\" \"RFC822\""), "{reply:?}");
    assert!(reply[0].contains("\"inner subject\""), "{reply:?}");
}

#[tokio::test]
async fn connection_closed_after_repeated_failed_logins() {
    let (server, _) = server();
    let (mut client, _) = Client::connect(&server, Security::Loopback).await;
    for attempt in 1..=4 {
        let tag = format!("f{attempt}");
        assert_eq!(
            client.command(&tag, "LOGIN alice guess").await,
            vec![format!(
                "{tag} NO [AUTHENTICATIONFAILED] invalid credentials"
            )]
        );
    }
    assert_eq!(
        client.command("f5", "LOGIN alice guess").await,
        vec!["f5 NO [AUTHENTICATIONFAILED] invalid credentials"]
    );
    assert_eq!(
        client.line().await,
        "* BYE too many failed logins on this connection"
    );
    assert_eq!(client.line().await, "", "closed");
}

#[tokio::test]
async fn large_fetch_streams_in_slices_and_pipelined_commands_wait() {
    let (server, _) = server();
    let mut client = with_messages(&server, 2).await;
    // fetch::BATCH messages per store call, 1 KiB per slice (tests' limits): 300 messages of
    // ~200 bytes take several slices; the pipelined NOOP and UID FETCH answer after all of it.
    for index in 3..=300 {
        let body = message(&format!("m{index}"), "a@example.org", "x");
        client
            .command("ap", &format!("APPEND INBOX {{{}+}}\r\n{body}", body.len()))
            .await;
    }
    client.command("n", "NOOP").await;
    client
        .send("f1 FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\nf2 NOOP\r\nf3 UID FETCH 300 FLAGS\r\n")
        .await;
    let first = client.until_tagged("f1").await;
    assert_eq!(first.len(), 301, "{:?}", &first[first.len() - 3..]);
    assert!(
        first[299].starts_with("* 300 FETCH (UID 300 BODY[HEADER.FIELDS (SUBJECT)]"),
        "{}",
        first[299]
    );
    assert_eq!(first[300], "f1 OK FETCH completed");
    assert_eq!(
        client.until_tagged("f2").await,
        vec!["f2 OK NOOP completed"]
    );
    assert_eq!(
        client.until_tagged("f3").await,
        vec!["* 300 FETCH (FLAGS () UID 300)", "f3 OK FETCH completed"]
    );
}

#[tokio::test]
async fn envelope_keeps_non_ascii_names_encoded() {
    let (server, _) = server();
    let mut client = logged_in(&server).await;
    let raw = "From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\r\nSubject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n\r\nhi\r\n";
    client
        .command("a", &format!("APPEND INBOX {{{}+}}\r\n{raw}", raw.len()))
        .await;
    client.command("s", "SELECT INBOX").await;
    let reply = client.command("f", "FETCH 1 ENVELOPE").await;
    assert_eq!(
        reply[0],
        "* 1 FETCH (ENVELOPE (NIL \"=?utf-8?q?gr=C3=BC=C3=9Fe?=\" ((\"=?utf-8?q?J=C3=BCrgen?=\" NIL \"j\" \"example.org\")) ((\"=?utf-8?q?J=C3=BCrgen?=\" NIL \"j\" \"example.org\")) ((\"=?utf-8?q?J=C3=BCrgen?=\" NIL \"j\" \"example.org\")) NIL NIL NIL NIL NIL))"
    );
    let needle = "grüße";
    let search = format!(
        "SEARCH CHARSET UTF-8 SUBJECT {{{}+}}\r\n{needle}",
        needle.len()
    );
    assert_eq!(client.command("q", &search).await[0], "* SEARCH 1");
}

#[tokio::test]
async fn selected_mailbox_deleted_elsewhere_ends_the_session() {
    let (server, _) = server();
    let mut first = logged_in(&server).await;
    first.command("c", "CREATE Work").await;
    first.command("s", "SELECT Work").await;
    let mut second = logged_in(&server).await;
    assert_eq!(
        second.command("d", "DELETE Work").await,
        vec!["d OK DELETE completed"]
    );
    assert_eq!(
        first.command("n", "NOOP").await,
        vec!["n OK NOOP completed"]
    );
    assert_eq!(
        first.line().await,
        "* BYE selected mailbox was deleted or renamed by another session"
    );
    assert_eq!(first.line().await, "");
}

#[tokio::test]
async fn list_shows_missing_parents_as_noselect() {
    let (server, store) = server();
    // A store may hold a child without its parent (created by another client or delivery).
    use onionpost_imap::mailstore::MailStore;
    store
        .create_mailbox("acct-alice", "Projects/2026")
        .await
        .unwrap();
    let mut client = logged_in(&server).await;
    assert_eq!(
        client.command("l", "LIST \"\" \"Proj%\"").await,
        vec![
            "* LIST (\\Noselect \\HasChildren) \"/\" Projects",
            "l OK LIST completed"
        ]
    );
    let reply = client.command("m", "LIST \"\" \"Projects/*\"").await;
    assert_eq!(
        reply[0],
        "* LIST (\\HasNoChildren \\Subscribed) \"/\" Projects/2026"
    );
}

/// A connection through an identity's onion, as `listen` builds it: no per-peer key.
fn onion(owner: &str) -> ConnectionInfo {
    ConnectionInfo {
        connection_key: String::new(),
        security: Security::Onion,
        starttls: false,
        required_account: Some(Some(owner.to_owned())),
        login_alias: None,
    }
}

/// Sends one command and returns the tagged reply exactly as written, CRLF included.
async fn raw_reply(client: &mut Client, tag: &str, command: &str) -> Vec<u8> {
    client.send(&format!("{tag} {command}\r\n")).await;
    client.raw_line().await
}

#[tokio::test]
async fn failed_logins_on_one_listener_change_nothing_on_another() {
    let (server, _) = server();
    let onion_x = ListenerScope::new();
    let onion_y = ListenerScope::new();
    // Four failures for a made-up login and for alice's login through X's onion start X's
    // back-off for both.
    for login in ["alice guess", "ghost x"] {
        let (mut guesser, _) = Client::connect_in(&server, &onion_x, onion("acct-alice")).await;
        for attempt in 1..=4 {
            let tag = format!("g{attempt}");
            guesser.command(&tag, &format!("LOGIN {login}")).await;
        }
    }
    let (mut on_x, _) = Client::connect_in(&server, &onion_x, onion("acct-alice")).await;
    assert_eq!(
        on_x.command("x1", "LOGIN alice secret").await,
        vec!["x1 NO [AUTHENTICATIONFAILED] invalid credentials"],
        "X backs off alice's login"
    );
    // Y's onion answers exactly as if nothing had happened on X, co-hosted or not.
    let (mut on_y, _) = Client::connect_in(&server, &onion_y, onion("acct-alice")).await;
    let fresh_scope = ListenerScope::new();
    let (mut fresh, _) = Client::connect_in(&server, &fresh_scope, onion("acct-alice")).await;
    assert_eq!(
        raw_reply(&mut on_y, "y1", "LOGIN ghost x").await,
        raw_reply(&mut fresh, "y1", "LOGIN ghost x").await,
    );
    let reply = on_y.command("y2", "LOGIN alice secret").await;
    assert!(reply[0].starts_with("y2 OK [CAPABILITY"), "{reply:?}");
}

#[tokio::test]
async fn back_off_reply_is_byte_identical_to_invalid_credentials() {
    let (server, _) = server();
    let scope = ListenerScope::new();
    let (mut client, _) = Client::connect_in(&server, &scope, onion("acct-alice")).await;
    let invalid = raw_reply(&mut client, "t", "LOGIN alice wrong").await;
    assert_eq!(
        invalid,
        b"t NO [AUTHENTICATIONFAILED] invalid credentials\r\n".to_vec()
    );
    for _ in 0..3 {
        raw_reply(&mut client, "t", "LOGIN alice wrong").await;
    }
    // Backed off now: even the right password gets the very same bytes.
    let (mut client, _) = Client::connect_in(&server, &scope, onion("acct-alice")).await;
    assert_eq!(
        raw_reply(&mut client, "t", "LOGIN alice secret").await,
        invalid
    );
    assert_eq!(raw_reply(&mut client, "t", "LOGIN ghost x").await, invalid);
}

fn server_with(limits: Limits) -> ImapServer {
    let store = MemStore::new(&[("alice", "secret")]);
    let shared: SharedMailStore = store;
    ImapServer::new(shared, limits, None)
}

#[tokio::test]
async fn connections_waiting_to_log_in_are_capped_per_listener() {
    let server = server_with(Limits {
        max_pre_login_connections: 2,
        ..limits()
    });
    let scope = ListenerScope::new();
    let info = || ConnectionInfo {
        connection_key: "test".to_owned(),
        security: Security::Loopback,
        starttls: false,
        required_account: None,
        login_alias: None,
    };
    let (mut first, greeting) = Client::connect_in(&server, &scope, info()).await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let (_second, greeting) = Client::connect_in(&server, &scope, info()).await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let (mut third, greeting) = Client::connect_in(&server, &scope, info()).await;
    assert_eq!(
        greeting,
        "* BYE too many connections waiting to log in; try again later"
    );
    assert_eq!(third.line().await, "", "closed");
    // Another listener is not affected.
    let (_elsewhere, greeting) = Client::connect_in(&server, &ListenerScope::new(), info()).await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
    // A login frees its place.
    let reply = first.command("a1", "LOGIN alice secret").await;
    assert!(reply[0].starts_with("a1 OK"), "{reply:?}");
    let (_fourth, greeting) = Client::connect_in(&server, &scope, info()).await;
    assert!(greeting.starts_with("* OK"), "{greeting}");
}

#[tokio::test]
async fn large_literals_before_login_close_the_connection() {
    let limits = Limits {
        pre_login_literal: 512,
        ..limits()
    };
    let server = server_with(limits);
    // A synchronizing literal: no continuation, a BYE that says why.
    let (mut client, _) = Client::connect(&server, Security::Loopback).await;
    client.send("a1 LOGIN {600}\r\n").await;
    assert_eq!(
        client.line().await,
        "* BYE literal too large before login (limit 512 octets); log in first"
    );
    assert_eq!(client.line().await, "", "closed");
    // A non-synchronizing one (LITERAL+, RFC 7888) the same.
    let (mut client, _) = Client::connect(&server, Security::Loopback).await;
    let data = "x".repeat(600);
    client
        .send(&format!("a1 LOGIN {{600+}}\r\n{data} secret\r\n"))
        .await;
    assert_eq!(
        client.line().await,
        "* BYE literal too large before login (limit 512 octets); log in first"
    );
    assert_eq!(client.line().await, "", "closed");
    // Small literals log in as before.
    let (mut client, _) = Client::connect(&server, Security::Loopback).await;
    client
        .send("a2 LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n")
        .await;
    let reply = client.until_tagged("a2").await;
    assert!(reply[0].starts_with("a2 OK"), "{reply:?}");
    // After login the message size limit applies again.
    let body = message("big", "alice@example.org", &"y".repeat(900));
    let reply = client
        .command("a3", &format!("APPEND INBOX {{{}+}}\r\n{body}", body.len()))
        .await;
    assert!(reply[0].starts_with("a3 OK [APPENDUID"), "{reply:?}");
}

#[tokio::test]
async fn a_refused_literal_does_not_lift_the_line_limit() {
    let (server, _) = server();
    let mut client = logged_in(&server).await;
    client.send("m1 APPEND INBOX {5000}\r\n").await;
    assert_eq!(
        client.line().await,
        "m1 BAD literal exceeds the maximum message size of 4096 octets"
    );
    // Bytes sent as if the refused literal had been accepted are a command line again.
    let data = "x".repeat(2000);
    client.send(&format!("{data}\r\n")).await;
    let bye = client.line().await;
    assert!(bye.starts_with("* BYE line too long"), "{bye}");
    assert_eq!(client.line().await, "", "closed");
}

#[tokio::test]
async fn before_login_the_timeout_is_short() {
    let server = server_with(Limits {
        pre_login_timeout: std::time::Duration::from_millis(300),
        ..limits()
    });
    let (mut client, _) = Client::connect(&server, Security::Loopback).await;
    assert_eq!(
        client.line().await,
        "* BYE not logged in within 300ms of connecting"
    );
    assert_eq!(client.line().await, "");
    // Logged in, the RFC 3501 §5.4 timer applies.
    let mut client = logged_in(&server).await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(
        client.command("n", "NOOP").await,
        vec!["n OK NOOP completed"]
    );
}

/// A peer that trickles bytes of a command that never ends (slowloris) is closed when the
/// pre-login timeout has passed since it connected, not since its last byte: an inactivity
/// timer alone would let one byte a minute hold a pre-login slot for ever.
#[tokio::test]
async fn trickling_bytes_does_not_put_off_the_pre_login_timeout() {
    let server = server_with(Limits {
        pre_login_timeout: std::time::Duration::from_secs(1),
        ..limits()
    });
    let (mut client, _) = Client::connect(&server, Security::Loopback).await;
    let started = tokio::time::Instant::now();
    client.send("a1 LOGIN alice ").await;
    // A byte every 200 ms, the last well before the timeout: an inactivity timer would close
    // the connection 1 s after it (1.8 s in), the login deadline does at 1 s.
    for _ in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        client.send("x").await;
    }
    assert_eq!(
        client.line().await,
        "* BYE not logged in within 1s of connecting"
    );
    assert_eq!(client.line().await, "", "closed");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_millis(1500),
        "closed after {took:?}"
    );
}

#[tokio::test]
async fn a_peer_that_never_reads_is_dropped() {
    let server = server_with(Limits {
        write_timeout: std::time::Duration::from_millis(200),
        ..limits()
    });
    // A pipe that holds 16 octets: the greeting alone does not fit, and nobody reads.
    let (peer, server_side) = tokio::io::duplex(16);
    let session = tokio::spawn(async move {
        server
            .serve_stream(
                Box::new(server_side),
                ConnectionInfo {
                    connection_key: "test".to_owned(),
                    security: Security::Loopback,
                    starttls: false,
                    required_account: None,
                    login_alias: None,
                },
            )
            .await;
    });
    tokio::time::timeout(std::time::Duration::from_secs(5), session)
        .await
        .expect("the session ends when its writes make no progress")
        .unwrap();
    drop(peer);
}

/// A message nested 1,000 multiparts deep (any sender can write one, and clients ask every
/// message's BODYSTRUCTURE): the answer stops nesting at a depth limit and shows the part
/// there as an opaque leaf, instead of recursing until the server's stack overflows.
#[tokio::test]
async fn bodystructure_of_deeply_nested_multiparts_is_bounded() {
    const DEPTH: usize = 1000;
    let server = server_with(Limits {
        max_message_size: 1 << 20,
        ..limits()
    });
    let mut client = logged_in(&server).await;
    let mut body = String::from(
        "From: alice@example.org\r\nSubject: nested\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n",
    );
    for level in 0..DEPTH {
        if level + 1 == DEPTH {
            body.push_str(&format!(
                "--b{level}\r\nContent-Type: text/plain\r\n\r\ninside\r\n"
            ));
        } else {
            body.push_str(&format!(
                "--b{level}\r\nContent-Type: multipart/mixed; boundary=\"b{}\"\r\n\r\n",
                level + 1
            ));
        }
    }
    for level in (0..DEPTH).rev() {
        body.push_str(&format!("--b{level}--\r\n"));
    }
    let reply = client
        .command("ap", &format!("APPEND INBOX {{{}+}}\r\n{body}", body.len()))
        .await;
    assert!(reply.last().unwrap().starts_with("ap OK"), "{reply:?}");
    client.command("s", "SELECT INBOX").await;
    for (tag, item) in [("f1", "BODYSTRUCTURE"), ("f2", "BODY")] {
        let reply = client.command(tag, &format!("FETCH 1 {item}")).await;
        assert_eq!(reply.len(), 2, "{reply:?}");
        assert_eq!(reply[1], format!("{tag} OK FETCH completed"));
        let multiparts = reply[0].matches("\"MIXED\"").count();
        assert_eq!(multiparts, 100, "levels shown as multiparts");
        assert!(
            reply[0].contains("(\"APPLICATION\" \"OCTET-STREAM\" NIL NIL NIL \"7BIT\" "),
            "the part at the limit is a leaf: {}",
            &reply[0][..reply[0].len().min(400)]
        );
    }
    // The session goes on.
    assert_eq!(
        client.command("n", "NOOP").await,
        vec!["n OK NOOP completed"]
    );
}
