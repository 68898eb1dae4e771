//! Mail between identities on two carriers over the private Tor network: Alice (an account on
//! carrier A) submits with Python's smtplib on A's submission listener; Carol (an account on
//! carrier C) reads it with Python's imaplib on C, with the original Subject and body and the
//! carrier's verdict that it was signed by Alice's key. No key was exchanged by hand: A fetches
//! Carol's key by WKD over Carol's onion. Alice asks for DSNs (RFC 3461 NOTIFY and ORCPT): the
//! parameters cross to C with the message, and A puts the success notice, naming the original
//! recipient, in Alice's INBOX. Also checks, through C's onion MX from a tor client,
//! that a co-hosted and a made-up address get byte-identical refusals, and that plaintext is
//! refused with a reply that says end-to-end encryption is required. While C is offline, A keeps
//! Alice's message and delivers it once C is back, and a third carrier B, whose queue lifetime
//! is short, gives up on Bob's message and puts a delivery-status notification in Bob's INBOX.
//! The whole scenario runs under tshark: no DNS query names an onion, and every connection goes
//! to a tor or to an onionpost listener.

mod admin_support;
mod mail_support;

use std::time::Duration;

use admin_support::http;
use anyhow::{Context as _, ensure};
use mail_support::{COUNT_SUBJECT, Carrier, SUBMIT, newest_in_inbox, python, reply};
use onionpost_e2e::TorNet;
use onionpost_e2e::capture::{self, Capture, Packet};
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt as _, BufReader};
use tokio::time::Instant;

/// The contact with this address in an account's book, or null.
async fn contact_named(carrier: &Carrier, account_id: &str, address: &str) -> Value {
    let local = address.split('@').next().unwrap_or(address);
    let book = carrier
        .op(
            "GET",
            &format!("/v1/accounts/{account_id}/contacts?q={local}"),
            Value::Null,
        )
        .await;
    book["contacts"]
        .as_array()
        .and_then(|contacts| {
            contacts
                .iter()
                .find(|contact| contact["address"] == address)
                .cloned()
        })
        .unwrap_or(Value::Null)
}

/// The body of `address`'s WKD path on its onion, fetched over `tor`.
async fn wkd_over_tor(
    tor: &onionpost_e2e::TorClient,
    address: &str,
    onion: &str,
) -> anyhow::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let path = onionpost_keys::wkd::direct_path(&onionpost_keys::Address::parse(address)?);
    let mut stream = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_socks::tcp::Socks5Stream::connect(tor.socks_addr(), (onion, 80)),
    )
    .await
    .context("no answer from the onion")??;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {onion}\r\n\r\n").as_bytes())
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let head_end = answer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .context("no HTTP header")?;
    ensure!(
        answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..head_end])
    );
    Ok(answer[head_end + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_on_a_writes_to_carol_on_c_over_onions() -> anyhow::Result<()> {
    let capture = Capture::start().await?;
    let tornet = TorNet::start(3).await?;
    let a = Carrier::start(tornet.client(0), &[]).await?;
    // A revoked identity's onion serves its revocation for 20 s on C (the default is a week).
    let mut c = Carrier::start(
        tornet.client(1),
        &[("ONIONPOST_TOR_REVOCATION_SERVE_SECS", "20".to_owned())],
    )
    .await?;
    // B gives up after 30 s (the default is RFC 5321's 5 days).
    let b = Carrier::start(
        tornet.client(2),
        &[("ONIONPOST_QUEUE_LIFETIME_SECS", "30".to_owned())],
    )
    .await?;
    let (alice_id, alice, alice_onion) = a.account("alice", "alice password 1").await?;
    let (carol_id, carol_identity, carol, carol_onion) =
        c.account_with_identity("carol", "carol password 1").await?;
    let (_, dave_identity, dave, dave_onion) =
        c.account_with_identity("dave", "dave password 1").await?;
    let (bob_id, bob, _) = b.account("bob", "bob password 1").await?;

    // Submission on A; the 250 comes once the message is signed, encrypted and queued. Alice
    // asks for delivery notices (RFC 3461 NOTIFY) and names the address she wrote to as the
    // original recipient (ORCPT, xtext: `+2B` is `+`), which A keeps and passes on to C's MX.
    let original_recipient = carol.replacen('@', "+lunch@", 1);
    let (ok, out) = python(
        SUBMIT,
        &[
            a.submission.ip().to_string(),
            a.submission.port().to_string(),
            "alice".to_owned(),
            "alice password 1".to_owned(),
            alice.clone(),
            carol.clone(),
            "Lunch at noon?".to_owned(),
            "Shall we meet at the usual place?".to_owned(),
            "NOTIFY=SUCCESS,FAILURE".to_owned(),
            format!("ORCPT=rfc822;{}", original_recipient.replace('+', "+2B")),
        ],
    )
    .await?;
    ensure!(
        ok,
        "smtplib submission failed: {out}\n{}",
        a.node.log_text()
    );

    // Carol reads it on C.
    let message = newest_in_inbox(&c, "carol", "carol password 1", "Lunch at noon?", &a).await?;
    ensure!(message.contains("Subject: Lunch at noon?"), "{message}");
    ensure!(
        message.contains("Shall we meet at the usual place?"),
        "{message}"
    );
    ensure!(
        message.contains("Onionpost-Verification: verified"),
        "{message}"
    );
    ensure!(message.contains(&alice), "{message}");
    // Nothing about the sender's client or path travelled; the Message-ID names only her onion.
    ensure!(!message.contains("Leaky Mailer"), "{message}");
    ensure!(!message.contains("Received:"), "{message}");
    ensure!(message.contains(&format!("@{alice_onion}>")), "{message}");

    // NOTIFY=SUCCESS: A tells Alice that C took the message, naming the recipient as she gave
    // it (Original-Recipient, RFC 3464 §2.3.1) and as it was delivered (Final-Recipient).
    let notice = newest_in_inbox(
        &a,
        "alice",
        "alice password 1",
        "Delivery Status Notification (Success)",
        &c,
    )
    .await?;
    ensure!(
        notice.contains("report-type=delivery-status")
            && notice.contains("Action: delivered")
            && notice.contains(&format!(
                "Original-Recipient: rfc822;{original_recipient}\r\n"
            ))
            && notice.contains(&format!("Final-Recipient: rfc822; {carol}\r\n")),
        "not the expected success DSN:\n{notice}"
    );
    println!("mail_flow: NOTIFY and ORCPT crossed to C; Alice has the success DSN");

    // Carol replies the same way; Alice reads the reply on A, verified as Carol's.
    let (ok, out) = python(
        SUBMIT,
        &[
            c.submission.ip().to_string(),
            c.submission.port().to_string(),
            "carol".to_owned(),
            "carol password 1".to_owned(),
            carol.clone(),
            alice.clone(),
            "Re: Lunch at noon?".to_owned(),
            "Yes, see you there.".to_owned(),
        ],
    )
    .await?;
    ensure!(ok, "smtplib reply failed: {out}\n{}", c.node.log_text());
    let reply_text =
        newest_in_inbox(&a, "alice", "alice password 1", "Re: Lunch at noon?", &c).await?;
    ensure!(
        reply_text.contains("Subject: Re: Lunch at noon?"),
        "{reply_text}"
    );
    ensure!(reply_text.contains("Yes, see you there."), "{reply_text}");
    ensure!(
        reply_text.contains("Onionpost-Verification: verified"),
        "{reply_text}"
    );

    // No key was exchanged by hand, yet both address books now hold each other's key.
    for (carrier, account_id, other) in [(&a, &alice_id, &carol), (&c, &carol_id, &alice)] {
        let book = carrier
            .op(
                "GET",
                &format!("/v1/accounts/{account_id}/contacts"),
                Value::Null,
            )
            .await;
        let pinned = book["contacts"].as_array().is_some_and(|contacts| {
            contacts.iter().any(|contact| {
                contact["address"] == other.as_str()
                    && contact["fingerprint"]
                        .as_str()
                        .is_some_and(|f| f.len() == 40)
            })
        });
        ensure!(pinned, "{account_id}: {book}");
    }

    // Alice introduces Dave (on C) to Carol from A's account portal (paper §6): Dave's key comes
    // over his onion into Alice's book, the signed vCard goes to Carol in mail from Alice, and
    // C, which has Alice pinned for Carol's account, adds Dave there, introduced by Alice.
    let portal = a.node.portal;
    let login = json!({"login": "alice", "password": "alice password 1"}).to_string();
    let session = http(portal, "POST", "/account/v1/session", None, Some(&login))
        .await
        .expect(201)
        .json()["token"]
        .as_str()
        .context("a portal session")?
        .to_owned();
    let api = |method: &'static str, path: String, body: Option<Value>| {
        let session = session.clone();
        async move {
            let body = body.map(|body| body.to_string());
            http(portal, method, &path, Some(&session), body.as_deref()).await
        }
    };
    let dave_in_alices = api(
        "POST",
        "/account/v1/contacts".to_owned(),
        Some(json!({"address": dave})),
    )
    .await
    .expect(201)
    .json();
    let carol_in_alices = api("GET", "/account/v1/contacts?q=carol".to_owned(), None)
        .await
        .expect(200)
        .json()["contacts"][0]["id"]
        .as_str()
        .context("carol in alice's book")?
        .to_owned();
    let alice_identity = api("GET", "/account/v1/identities".to_owned(), None)
        .await
        .expect(200)
        .json()[0]["id"]
        .as_str()
        .context("alice's identity")?
        .to_owned();
    let sent = api(
        "POST",
        format!(
            "/account/v1/contacts/{}/introduce",
            dave_in_alices["id"].as_str().context("dave's contact id")?
        ),
        Some(json!({"to": carol_in_alices, "from_identity": alice_identity})),
    )
    .await
    .expect(202)
    .json();
    ensure!(sent["message_id"].is_string(), "{sent}");
    let started = Instant::now();
    let introduced = loop {
        let book = c
            .op(
                "GET",
                &format!("/v1/accounts/{carol_id}/contacts?q=dave"),
                Value::Null,
            )
            .await;
        if let Some(found) = book["contacts"].as_array().and_then(|contacts| {
            contacts
                .iter()
                .find(|contact| contact["address"] == dave.as_str())
                .cloned()
        }) {
            break found;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(180),
            "Dave never reached Carol's book: {book}\n{}",
            c.node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    ensure!(
        introduced["key_source"] == "introduction"
            && introduced["introducers"][0]["address"] == alice.as_str()
            && introduced["fingerprint"] == dave_in_alices["fingerprint"],
        "{introduced}"
    );
    let introduction = newest_in_inbox(
        &c,
        "carol",
        "carol password 1",
        &format!("An introduction: {dave}"),
        &a,
    )
    .await?;
    ensure!(
        introduction.contains("Onionpost-Verification: verified"),
        "{introduction}"
    );
    println!("mail_flow: Alice introduced Dave to Carol in mail; C recorded who introduced him");

    // Carol moves to a new key on C (issue 21, key rotation): her old key certifies the new one,
    // Alice (her only correspondent so far) is sent it in mail signed by the old key, and A moves
    // Alice's pin without asking her. Mail both ways then uses the new key and verifies.
    let carol_before = contact_named(&a, &alice_id, &carol).await;
    let rotated = http(
        c.node.admin,
        "POST",
        &format!("/v1/identities/{carol_identity}/rotate-key"),
        Some(admin_support::OPERATOR_TOKEN),
        None,
    )
    .await
    .expect(200)
    .json();
    ensure!(
        rotated["previous_fingerprint"] == carol_before["fingerprint"]
            && rotated["fingerprint"] != carol_before["fingerprint"]
            && rotated["peers_announced"] == 1,
        "{rotated} (Alice had {carol_before})"
    );
    let rotated_at = Instant::now();
    loop {
        let contact = contact_named(&a, &alice_id, &carol).await;
        if contact["fingerprint"] == rotated["fingerprint"] {
            ensure!(
                contact["key_source"] == "transition" && contact["held_key_change"].is_null(),
                "{contact}"
            );
            break;
        }
        ensure!(
            rotated_at.elapsed() < Duration::from_secs(90),
            "A did not move Alice to Carol's new key: {contact}\nA:\n{}\nC:\n{}",
            a.node.log_text(),
            c.node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "mail_flow: Carol moved to a new key on C; A moved Alice's pin {:?} later",
        rotated_at.elapsed()
    );
    let announcement = newest_in_inbox(
        &a,
        "alice",
        "alice password 1",
        "This address has a new key",
        &c,
    )
    .await?;
    ensure!(
        announcement.contains("Onionpost-Verification: verified"),
        "{announcement}"
    );
    // (sending carrier, login, password, address; reading carrier, login, password, address)
    let alice_on_a = (&a, "alice", "alice password 1", &alice);
    let carol_on_c = (&c, "carol", "carol password 1", &carol);
    for (from, to, subject) in [
        (alice_on_a, carol_on_c, "To your new key"),
        (carol_on_c, alice_on_a, "From my new key"),
    ] {
        let (from, login, password, sender) = from;
        let (reader, reader_login, reader_password, to) = to;
        let (ok, out) = python(
            SUBMIT,
            &[
                from.submission.ip().to_string(),
                from.submission.port().to_string(),
                login.to_owned(),
                password.to_owned(),
                sender.clone(),
                to.clone(),
                subject.to_owned(),
                "After the key rotation.".to_owned(),
            ],
        )
        .await?;
        ensure!(ok, "{login}'s submission: {out}\n{}", from.node.log_text());
        let read = newest_in_inbox(reader, reader_login, reader_password, subject, from).await?;
        ensure!(
            read.contains("After the key rotation.")
                && read.contains("Onionpost-Verification: verified"),
            "{read}"
        );
    }

    // Bob on B writes to Carol too, so B learns her key; this one arrives.
    let (ok, out) = python(
        SUBMIT,
        &[
            b.submission.ip().to_string(),
            b.submission.port().to_string(),
            "bob".to_owned(),
            "bob password 1".to_owned(),
            bob.clone(),
            carol.clone(),
            "Hello from Bob".to_owned(),
            "First contact.".to_owned(),
        ],
    )
    .await?;
    ensure!(ok, "bob's submission: {out}\n{}", b.node.log_text());
    let first = newest_in_inbox(&c, "carol", "carol password 1", "Hello from Bob", &b).await?;
    ensure!(first.contains("Subject: Hello from Bob"), "{first}");
    // B took Carol's key from her onion: the new one.
    let carol_of_bob = contact_named(&b, &bob_id, &carol).await;
    ensure!(
        carol_of_bob["fingerprint"] == rotated["fingerprint"],
        "{carol_of_bob}"
    );

    // C's onion MX from a third tor client: co-hosted (dave) and made-up addresses get the
    // same bytes; plaintext for carol is refused with the reason.
    let stream = tokio_socks::tcp::Socks5Stream::connect(
        tornet.client(2).socks_addr(),
        (carol_onion.as_str(), 25),
    )
    .await
    .context("connecting to carol's onion mx")?;
    let (read, mut write) = tokio::io::split(stream);
    let mut read = BufReader::new(read);
    ensure!(reply(&mut read).await? == "220 ESMTP ready\r\n");
    let mut send = async |line: String| -> anyhow::Result<String> {
        write.write_all(format!("{line}\r\n").as_bytes()).await?;
        reply(&mut read).await
    };
    send("EHLO peer".to_owned()).await?;
    send(format!("MAIL FROM:<{alice}>")).await?;
    let co_hosted = send(format!("RCPT TO:<{dave}>")).await?;
    let made_up = send(format!("RCPT TO:<nobody@{carol_onion}>")).await?;
    ensure!(co_hosted == made_up, "{co_hosted:?} vs {made_up:?}");
    ensure!(co_hosted.starts_with("550 5.1.1 "), "{co_hosted}");
    let etrn_a = send(format!("ETRN {alice_onion}")).await?;
    let etrn_b =
        send("ETRN nosuchonionnosuchonionnosuchonionnosuchonionnosuchonion2.onion".to_owned())
            .await?;
    ensure!(
        etrn_a == etrn_b && etrn_a == "250 2.0.0 Queuing started\r\n",
        "{etrn_a:?} {etrn_b:?}"
    );
    ensure!(
        send(format!("RCPT TO:<{carol}>"))
            .await?
            .starts_with("250 ")
    );
    ensure!(send("DATA".to_owned()).await?.starts_with("354 "));
    let refused = send("Subject: plain\r\n\r\nhello\r\n.".to_owned()).await?;
    ensure!(
        refused.starts_with("550 5.7.1 End-to-end encryption required"),
        "{refused}"
    );
    drop(read);
    drop(write);

    // Dave writes to Alice (so Alice is his identity's peer), then revokes his identity on C
    // (issue 21): the revocation goes to Alice in signed mail, A marks Dave revoked in Alice's
    // book, Alice's next message to him is refused with the reason, and Dave's onion serves the
    // revocation at its WKD path before it goes. Carol, who knows Dave only by introduction and
    // never had mail from him, is not told.
    let (ok, out) = python(
        SUBMIT,
        &[
            c.submission.ip().to_string(),
            c.submission.port().to_string(),
            "dave".to_owned(),
            "dave password 1".to_owned(),
            dave.clone(),
            alice.clone(),
            "From Dave".to_owned(),
            "Before I go.".to_owned(),
        ],
    )
    .await?;
    ensure!(ok, "dave's submission: {out}\n{}", c.node.log_text());
    let from_dave = newest_in_inbox(&a, "alice", "alice password 1", "From Dave", &c).await?;
    ensure!(
        from_dave.contains("Onionpost-Verification: verified"),
        "{from_dave}"
    );
    let revoked_at = Instant::now();
    let gone = http(
        c.node.admin,
        "DELETE",
        &format!("/v1/identities/{dave_identity}"),
        Some(admin_support::OPERATOR_TOKEN),
        None,
    )
    .await;
    ensure!(gone.status == 204, "{} {}", gone.status, gone.text());
    loop {
        let contact = contact_named(&a, &alice_id, &dave).await;
        if contact["revoked_at"].is_string() {
            break;
        }
        ensure!(
            revoked_at.elapsed() < Duration::from_secs(60),
            "A did not mark Dave revoked within a minute: {contact}\nA:\n{}\nC:\n{}",
            a.node.log_text(),
            c.node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "mail_flow: Dave revoked on C; A marked him revoked {:?} later",
        revoked_at.elapsed()
    );
    let (ok, out) = python(
        SUBMIT,
        &[
            a.submission.ip().to_string(),
            a.submission.port().to_string(),
            "alice".to_owned(),
            "alice password 1".to_owned(),
            alice.clone(),
            dave.clone(),
            "Still there?".to_owned(),
            "This must be refused.".to_owned(),
        ],
    )
    .await?;
    ensure!(
        !ok && out.contains("revoked") && out.contains("(55"),
        "submission to a revoked contact was not refused with the reason: {out}"
    );
    let served = wkd_over_tor(tornet.client(2), &dave, &dave_onion).await?;
    onionpost_keys::revocation::apply(&served, &onionpost_keys::parse_cert(&served)?)
        .context("Dave's WKD path does not serve a revocation")?;
    ensure!(
        contact_named(&c, &carol_id, &dave).await["revoked_at"].is_null(),
        "Carol, who never had mail from Dave, was told"
    );

    // Carol's carrier is offline: A accepts, tries, keeps the message, and delivers it once C
    // is back; Carol's INBOX then holds it exactly once.
    c.node.stop().await;
    let (ok, out) = python(
        SUBMIT,
        &[
            a.submission.ip().to_string(),
            a.submission.port().to_string(),
            "alice".to_owned(),
            "alice password 1".to_owned(),
            alice.clone(),
            carol.clone(),
            "While you were away".to_owned(),
            "This waited in the queue.".to_owned(),
        ],
    )
    .await?;
    ensure!(
        ok,
        "submission while C is offline: {out}\n{}",
        a.node.log_text()
    );
    // Bob writes again while C is offline; B's queue lifetime runs out, the recipient fails
    // and Bob finds a delivery-status notification (RFC 3464) in his INBOX.
    let (ok, out) = python(
        SUBMIT,
        &[
            b.submission.ip().to_string(),
            b.submission.port().to_string(),
            "bob".to_owned(),
            "bob password 1".to_owned(),
            bob.clone(),
            carol.clone(),
            "Are you there?".to_owned(),
            "This one will not arrive in time.".to_owned(),
        ],
    )
    .await?;
    ensure!(ok, "bob's second submission: {out}\n{}", b.node.log_text());
    let started = Instant::now();
    loop {
        let page = a
            .op("GET", "/v1/queue?state=temporary_failure", Value::Null)
            .await;
        let attempted = page["messages"].as_array().is_some_and(|messages| {
            messages.iter().any(|message| {
                message["recipients"][0]["address"] == carol.as_str()
                    && message["recipients"][0]["attempts"].as_u64() >= Some(1)
            })
        });
        if attempted {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(180),
            "A never tried to deliver while C was offline: {page}\n{}",
            a.node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dsn = newest_in_inbox(
        &b,
        "bob",
        "bob password 1",
        "Delivery Status Notification",
        &b,
    )
    .await?;
    ensure!(
        dsn.contains("Subject: Delivery Status Notification (Failure)")
            && dsn.contains("report-type=delivery-status")
            && dsn.contains("Action: failed")
            && dsn.contains(&format!("Final-Recipient: rfc822; {carol}")),
        "not the expected DSN:\n{dsn}"
    );
    println!("mail_flow: B's lifetime ran out; Bob has the DSN in his INBOX");

    c.node.restart().await;
    let count = |carrier: &Carrier| {
        let args = vec![
            carrier.imap.ip().to_string(),
            carrier.imap.port().to_string(),
            "carol".to_owned(),
            "carol password 1".to_owned(),
            "While you were away".to_owned(),
        ];
        async move {
            let (ok, out) = python(COUNT_SUBJECT, &args).await?;
            ensure!(ok, "imaplib failed: {out}");
            out.trim()
                .parse::<usize>()
                .with_context(|| format!("not a count: {out}"))
        }
    };
    let started = Instant::now();
    while count(&c).await? == 0 {
        ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the queued message never reached C\nA:\n{}\nC:\n{}",
            a.node.log_text(),
            c.node.log_text()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Give any second attempt time to arrive, then check there is exactly one copy and A's
    // queue is empty.
    tokio::time::sleep(Duration::from_secs(6)).await;
    ensure!(count(&c).await? == 1, "Carol has more than one copy");
    let stats = a.op("GET", "/v1/stats", Value::Null).await;
    ensure!(stats["queue_depth"] == 0, "A's queue is not empty: {stats}");
    println!(
        "mail_flow: recipient offline, delivered {:?} after C came back",
        started.elapsed()
    );
    // Dave's onion served its revocation for its 20 s (across C's restart), then went.
    ensure!(revoked_at.elapsed() > Duration::from_secs(20));
    let retired = Instant::now();
    while wkd_over_tor(tornet.client(2), &dave, &dave_onion)
        .await
        .is_ok()
    {
        ensure!(
            retired.elapsed() < Duration::from_secs(120),
            "Dave's onion is still up {:?} after its revocation",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // What went over the wire: no DNS for an onion, and every connection to a tor or to one of
    // the carriers' own listeners (from tor, or from the test's mail clients).
    let capture::Captured { packets, owners } = capture.finish().await?;
    let mut connections = 0;
    for packet in &packets {
        match packet {
            Packet::Dns { name } => ensure!(
                !name.to_ascii_lowercase().ends_with(".onion"),
                "a DNS query for an onion: {name}"
            ),
            Packet::Syn { destination, port } => {
                connections += 1;
                let owner = owners.get(port).map(String::as_str).unwrap_or("nobody");
                ensure!(
                    destination.is_loopback() && (owner == "tor" || owner == "onionpost"),
                    "a connection to {destination}:{port} (listener: {owner})"
                );
            }
        }
    }
    ensure!(connections > 0, "the capture saw no connection at all");
    println!(
        "mail_flow: capture: {connections} connections, all to tor or onionpost listeners, no DNS for .onion"
    );

    // At rest (issue 18): A and C stopped, every file of their data directories holds neither
    // the other side's address or onion, nor the subject or body, nor key material.
    let key_material = [
        "-----BEGIN PGP PRIVATE KEY BLOCK-----",
        "ED25519-V3:",
        "-----BEGIN PRIVATE KEY-----",
    ];
    let mut a = a;
    a.node.stop().await;
    c.node.stop().await;
    for (carrier, name, correspondent, onion) in [
        (&a, "A", carol.as_str(), carol_onion.as_str()),
        (&c, "C", alice.as_str(), alice_onion.as_str()),
    ] {
        let mut needles = vec![
            correspondent,
            onion.trim_end_matches(".onion"),
            "Lunch at noon?",
            "Shall we meet at the usual place?",
        ];
        needles.extend(key_material);
        let files = mail_support::nothing_readable_at_rest(&carrier.node.data_dir, &needles)?;
        println!(
            "mail_flow: at rest: {files} files of {name}'s data directory hold none of {needles:?}"
        );
    }
    Ok(())
}
