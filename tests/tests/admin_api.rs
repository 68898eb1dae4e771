//! The admin HTTP API against a running carrier (onion, keys, imap and admin in one `onionpost`
//! process, tor on the private network): every endpoint over HTTP, with its effects checked
//! where they show: an identity created over the API becomes reachable over tor from another
//! tor client, a redeemed voucher extends paid-until, a revoked token stops working, a contact
//! added without a key gets the key its onion serves. Then `onionpost admin` against the same
//! carrier, as tables and as JSON.

mod admin_support;

use std::time::Duration;

use admin_support::{Carrier, OPERATOR_TOKEN};
use anyhow::{Context as _, ensure};
use chrono::{DateTime, Utc};
use onionpost_e2e::TorNet;
use onionpost_proto::keys::v1::MakeIntroductionRequest;
use onionpost_proto::keys::v1::keys_client::KeysClient;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

const TOR_TIMEOUT: Duration = Duration::from_secs(180);

fn id(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|time| time.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("not a date-time: {value}"))
}

async fn wait_online(carrier: &Carrier, identity: &str) -> anyhow::Result<Value> {
    let started = Instant::now();
    loop {
        let answer = carrier
            .op("GET", &format!("/v1/identities/{identity}"), None)
            .await
            .expect(200)
            .json();
        if answer["state"] == "online" {
            return Ok(answer);
        }
        ensure!(
            started.elapsed() < TOR_TIMEOUT,
            "{identity} not online: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_over_http_with_its_effects() -> anyhow::Result<()> {
    let tornet = TorNet::start(2).await?;
    let carrier = Carrier::start(tornet.client(0)).await?;

    // Authentication, on every documented route: 401 without or with a wrong token, 403 for a
    // read-only token on a write.
    let reader = carrier
        .op(
            "POST",
            "/v1/tokens",
            Some(json!({"name": "reader", "scope": "read"})),
        )
        .await
        .expect(201)
        .json();
    let read_token = reader["token"].as_str().context("token text")?.to_owned();
    let document = carrier
        .call("GET", "/openapi.json", None, None)
        .await
        .expect(200)
        .json();
    let mut routes = 0;
    for (path, item) in document["paths"].as_object().context("paths")? {
        let concrete = path.replace("{id}", "x").replace("{cid}", "y");
        for method in ["get", "post", "patch", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            routes += 1;
            let method = method.to_uppercase();
            let body = (method == "POST" || method == "PATCH").then_some("{}");
            let none = carrier.call(&method, &concrete, None, body).await;
            ensure!(
                none.status == 401 && none.header("www-authenticate").is_some(),
                "{method} {path}: {none:?}"
            );
            let wrong = carrier
                .call(&method, &concrete, Some("opk_wrong"), body)
                .await;
            ensure!(wrong.status == 401, "{method} {path}: {wrong:?}");
            let read = carrier
                .call(&method, &concrete, Some(&read_token), body)
                .await;
            if method == "GET" {
                ensure!(
                    read.status != 401 && read.status != 403,
                    "{method} {path}: {read:?}"
                );
            } else {
                ensure!(read.status == 403, "{method} {path}: {read:?}");
                ensure!(read.header("content-type") == Some("application/problem+json"));
            }
        }
    }
    ensure!(routes >= 25, "only {routes} routes documented");

    // Invalid input: a problem document naming the field.
    let bad = carrier
        .call(
            "POST",
            "/v1/accounts",
            Some(OPERATOR_TOKEN),
            Some("{\"login\":"),
        )
        .await
        .expect(400)
        .json();
    ensure!(bad["field"].is_string(), "{bad}");
    let unknown = carrier
        .op(
            "POST",
            "/v1/accounts",
            Some(json!({"login": "x", "password": "long enough", "shell": "/bin/sh"})),
        )
        .await
        .expect(422)
        .json();
    ensure!(unknown["field"] == "shell", "{unknown}");
    let overlong = carrier
        .op(
            "POST",
            "/v1/accounts",
            Some(json!({"login": "l".repeat(65), "password": "long enough"})),
        )
        .await
        .expect(422)
        .json();
    ensure!(overlong["field"] == "login", "{overlong}");

    // Plans.
    let plan = carrier
        .op(
            "POST",
            "/v1/plans",
            Some(json!({"name": "two", "quota_bytes": 50_000_000, "identities_allowed": 2})),
        )
        .await
        .expect(201)
        .json();
    let plan_id = id(&plan);
    let plans = carrier
        .call("GET", "/v1/plans", Some(&read_token), None)
        .await
        .expect(200)
        .json();
    ensure!(
        plans["plans"]
            .as_array()
            .context("plans")?
            .iter()
            .any(|p| p["id"] == plan_id.as_str()),
        "{plans}"
    );
    let changed = carrier
        .op(
            "PATCH",
            &format!("/v1/plans/{plan_id}"),
            Some(json!({"identities_allowed": 3})),
        )
        .await
        .expect(200)
        .json();
    ensure!(changed["identities_allowed"] == 3, "{changed}");

    // Accounts.
    let alice = carrier
        .op(
            "POST",
            "/v1/accounts",
            Some(json!({"login": "alice", "password": "correct horse", "plan": plan_id})),
        )
        .await
        .expect(201)
        .json();
    let alice_id = id(&alice);
    ensure!(
        alice["state"] == "active" && alice["plan"] == plan_id.as_str(),
        "{alice}"
    );
    ensure!(alice["quota"]["limit_bytes"] == 50_000_000, "{alice}");
    carrier
        .op(
            "POST",
            "/v1/accounts",
            Some(json!({"login": "alice", "password": "correct horse"})),
        )
        .await
        .expect(409);
    let bob = carrier
        .op(
            "POST",
            "/v1/accounts",
            Some(json!({"login": "bob", "password": "battery staple"})),
        )
        .await
        .expect(201)
        .json();
    let bob_id = id(&bob);
    let page = carrier
        .op("GET", "/v1/accounts?limit=1", None)
        .await
        .expect(200)
        .json();
    ensure!(
        page["accounts"].as_array().map(Vec::len) == Some(1),
        "{page}"
    );
    let next = page["next_page_token"].as_str().context("a second page")?;
    let second = carrier
        .op(
            "GET",
            &format!("/v1/accounts?limit=1&page_token={next}"),
            None,
        )
        .await
        .expect(200)
        .json();
    ensure!(
        second["accounts"][0]["id"] != page["accounts"][0]["id"],
        "{second}"
    );
    let suspended = carrier
        .op(
            "PATCH",
            &format!("/v1/accounts/{bob_id}"),
            Some(json!({"state": "suspended"})),
        )
        .await
        .expect(200)
        .json();
    ensure!(suspended["state"] == "suspended", "{suspended}");
    let only = carrier
        .op("GET", "/v1/accounts?state=suspended", None)
        .await
        .expect(200)
        .json();
    let listed: Vec<&Value> = only["accounts"]
        .as_array()
        .context("accounts")?
        .iter()
        .collect();
    ensure!(
        listed.len() == 1 && listed[0]["id"] == bob_id.as_str(),
        "{only}"
    );
    let resumed = carrier
        .op(
            "PATCH",
            &format!("/v1/accounts/{bob_id}"),
            Some(json!({"state": "active", "password": "a new password"})),
        )
        .await
        .expect(200)
        .json();
    ensure!(resumed["state"] == "active", "{resumed}");
    let shown = carrier
        .op("GET", &format!("/v1/accounts/{alice_id}"), None)
        .await
        .expect(200)
        .json();
    ensure!(shown["login"] == "alice", "{shown}");
    let quota = carrier
        .op("GET", &format!("/v1/accounts/{alice_id}/quota"), None)
        .await
        .expect(200)
        .json();
    ensure!(
        quota["limit_bytes"] == 50_000_000 && quota["used_bytes"] == 0,
        "{quota}"
    );
    carrier
        .op("GET", "/v1/accounts/nobody", None)
        .await
        .expect(404);

    // Vouchers: a redeemed code extends paid-until by its days; a second redemption is refused.
    let batch = carrier
        .op(
            "POST",
            "/v1/vouchers",
            Some(json!({"plan": plan_id, "days": 30, "count": 2})),
        )
        .await
        .expect(201)
        .json();
    let codes: Vec<String> = batch["codes"]
        .as_array()
        .context("codes")?
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    ensure!(codes.len() == 2 && codes[0] != codes[1], "{batch}");
    let before = time(&shown["paid_until"]);
    let redeemed = carrier
        .op(
            "POST",
            &format!("/v1/accounts/{alice_id}/redeem"),
            Some(json!({"code": codes[0]})),
        )
        .await
        .expect(200)
        .json();
    let after = time(&redeemed["paid_until"]);
    ensure!(
        after - before >= chrono::Duration::days(30) - chrono::Duration::minutes(1),
        "paid_until {before} -> {after}"
    );
    carrier
        .op(
            "POST",
            &format!("/v1/accounts/{alice_id}/redeem"),
            Some(json!({"code": codes[0]})),
        )
        .await
        .expect(409);

    // Identities: created over the API, online, reachable over tor from another tor client.
    let created = carrier
        .op(
            "POST",
            &format!("/v1/accounts/{alice_id}/identities"),
            Some(json!({"local_part": "alice"})),
        )
        .await
        .expect(201)
        .json();
    let identity = id(&created);
    let onion = created["onion"].as_str().context("onion")?.to_owned();
    ensure!(
        created["address"] == format!("alice@{onion}").as_str(),
        "{created}"
    );
    ensure!(
        created["fingerprint"]
            .as_str()
            .is_some_and(|f| f.len() == 40),
        "{created}"
    );
    ensure!(
        created["state"] == "publishing" || created["state"] == "online",
        "{created}"
    );
    let online = wait_online(&carrier, &identity).await?;
    ensure!(online["account_id"] == alice_id.as_str(), "{online}");
    let started = Instant::now();
    let mut stream = tornet
        .client(1)
        .connect_onion(&onion, 80, TOR_TIMEOUT)
        .await
        .context("connecting to the identity's onion")?;
    stream
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {onion}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    ensure!(
        reply.starts_with(b"HTTP/1.1 "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    println!(
        "admin_api: identity reachable over tor {:?} after it was online",
        started.elapsed()
    );

    // IMAP through the identity's onion (virtual port 143): only the owning account logs in;
    // another account of the same carrier gets the reply any wrong password gets.
    let stream = tornet
        .client(1)
        .connect_onion(&onion, 143, TOR_TIMEOUT)
        .await
        .context("connecting to the identity's IMAP port over tor")?;
    let mut imap = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    imap.read_line(&mut line).await?;
    ensure!(line.starts_with("* OK"), "IMAP greeting over tor: {line}");
    imap.get_mut()
        .write_all(b"a1 LOGIN bob \"a new password\"\r\n")
        .await?;
    line.clear();
    imap.read_line(&mut line).await?;
    ensure!(
        line.starts_with("a1 NO [AUTHENTICATIONFAILED]"),
        "another account's login through alice's onion: {line}"
    );
    imap.get_mut()
        .write_all(b"a2 LOGIN alice \"correct horse\"\r\n")
        .await?;
    line.clear();
    imap.read_line(&mut line).await?;
    ensure!(line.starts_with("a2 OK"), "alice over her onion: {line}");
    println!("admin_api: IMAP login through the identity's onion works for its owner only");

    let list = carrier
        .op("GET", &format!("/v1/accounts/{alice_id}/identities"), None)
        .await
        .expect(200)
        .json();
    ensure!(
        list["identities"].as_array().map(Vec::len) == Some(1),
        "{list}"
    );
    let svg = carrier
        .call(
            "GET",
            &format!("/v1/identities/{identity}/qr.svg"),
            Some(&read_token),
            None,
        )
        .await
        .expect(200);
    ensure!(
        svg.header("content-type") == Some("image/svg+xml") && svg.text().contains("<svg"),
        "{svg:?}"
    );
    let png = carrier
        .call(
            "GET",
            &format!("/v1/identities/{identity}/qr.png"),
            Some(&read_token),
            None,
        )
        .await
        .expect(200);
    ensure!(
        png.header("content-type") == Some("image/png") && png.body.starts_with(b"\x89PNG"),
        "png"
    );
    let bundle = carrier
        .op(
            "POST",
            &format!("/v1/identities/{identity}/export"),
            Some(json!({"passphrase": "bundle passphrase"})),
        )
        .await
        .expect(200)
        .json();
    let bundle = bundle["bundle"].as_str().context("bundle")?.to_owned();
    ensure!(bundle.len() > 100, "bundle too small");
    // The same identity cannot come in twice on one carrier; the import route maps the refusal.
    let twice = carrier
        .op(
            "POST",
            &format!("/v1/accounts/{bob_id}/identities/import"),
            Some(json!({"bundle": bundle, "passphrase": "bundle passphrase"})),
        )
        .await;
    ensure!(twice.status == 409, "{twice:?}");
    let wrong = carrier
        .op(
            "POST",
            &format!("/v1/accounts/{bob_id}/identities/import"),
            Some(json!({"bundle": bundle, "passphrase": "not the passphrase"})),
        )
        .await;
    ensure!(wrong.status == 422 || wrong.status == 409, "{wrong:?}");

    // Address books: Bob's identity, added to Alice's book without a key, gets the key its onion
    // serves; then trust and carriers are changed, and Carol is introduced by Bob.
    let bob_identity = carrier
        .op(
            "POST",
            &format!("/v1/accounts/{bob_id}/identities"),
            Some(json!({"local_part": "bob", "display_name": "Bob"})),
        )
        .await
        .expect(201)
        .json();
    let carol_identity = carrier
        .op(
            "POST",
            &format!("/v1/accounts/{bob_id}/identities"),
            Some(json!({"local_part": "carol"})),
        )
        .await
        .expect(201)
        .json();
    wait_online(&carrier, &id(&bob_identity)).await?;
    wait_online(&carrier, &id(&carol_identity)).await?;
    let started = Instant::now();
    let contact = loop {
        let answer = carrier
            .op(
                "POST",
                &format!("/v1/accounts/{alice_id}/contacts"),
                Some(json!({"address": bob_identity["address"]})),
            )
            .await;
        if answer.status == 201 {
            break answer.json();
        }
        ensure!(started.elapsed() < TOR_TIMEOUT, "adding bob: {answer:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let contact_id = id(&contact);
    ensure!(
        contact["fingerprint"] == bob_identity["fingerprint"],
        "{contact}"
    );
    let trusted = carrier
        .op(
            "PATCH",
            &format!("/v1/accounts/{alice_id}/contacts/{contact_id}"),
            Some(
                json!({"verified": true, "designated_carriers": [onion], "display_name": "Bobby"}),
            ),
        )
        .await
        .expect(200)
        .json();
    ensure!(
        trusted["verified"] == true && trusted["designated_carriers"][0] == onion.as_str(),
        "{trusted}"
    );
    let book = carrier
        .op(
            "GET",
            &format!("/v1/accounts/{alice_id}/contacts?q=bobby"),
            None,
        )
        .await
        .expect(200)
        .json();
    ensure!(
        book["contacts"].as_array().map(Vec::len) == Some(1),
        "{book}"
    );
    carrier
        .op(
            "GET",
            &format!("/v1/accounts/{alice_id}/contacts/{contact_id}"),
            None,
        )
        .await
        .expect(200);
    // Bob introduces Carol to Alice: Carol in Bob's book, Bob signs, Alice imports.
    let started = Instant::now();
    let carol_in_bobs = loop {
        let answer = carrier
            .op(
                "POST",
                &format!("/v1/accounts/{bob_id}/contacts"),
                Some(json!({"address": carol_identity["address"]})),
            )
            .await;
        if answer.status == 201 {
            break answer.json();
        }
        ensure!(started.elapsed() < TOR_TIMEOUT, "adding carol: {answer:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut keys = KeysClient::new(carrier.node.grpc()?);
    let introduction = keys
        .make_introduction(MakeIntroductionRequest {
            introducer_identity_id: id(&bob_identity),
            contact_id: id(&carol_in_bobs),
        })
        .await?
        .into_inner();
    let imported = carrier
        .op(
            "POST",
            &format!("/v1/identities/{identity}/introductions"),
            Some(json!({"part": String::from_utf8(introduction.part)?})),
        )
        .await
        .expect(200)
        .json();
    ensure!(
        imported["address"] == carol_identity["address"],
        "{imported}"
    );
    ensure!(
        imported["introducers"][0]["fingerprint"] == bob_identity["fingerprint"],
        "{imported}"
    );
    carrier
        .op(
            "DELETE",
            &format!("/v1/accounts/{alice_id}/contacts/{contact_id}"),
            None,
        )
        .await
        .expect(204);
    carrier
        .op(
            "GET",
            &format!("/v1/accounts/{alice_id}/contacts/{contact_id}"),
            None,
        )
        .await
        .expect(404);
    let bad_carrier = carrier
        .op(
            "PATCH",
            &format!("/v1/accounts/{alice_id}/contacts/{}", id(&imported)),
            Some(json!({"designated_carriers": [onion.replacen(&onion[..1], if onion.starts_with('a') { "b" } else { "a" }, 1)]})),
        )
        .await
        .expect(422)
        .json();
    ensure!(
        bad_carrier["field"] == "designated_carriers[0]",
        "{bad_carrier}"
    );

    // Bob introduces Carol to Alice in mail, from the admin API (issue 21): Alice's identity
    // in Bob's book first (its key over its onion), then a 202 with the message's id, and the
    // message queued from Bob's identity to Alice's; a foreign identity or the contact itself
    // is refused.
    let started = Instant::now();
    let alice_in_bobs = loop {
        let answer = carrier
            .op(
                "POST",
                &format!("/v1/accounts/{bob_id}/contacts"),
                Some(json!({"address": created["address"]})),
            )
            .await;
        if answer.status == 201 {
            break answer.json();
        }
        ensure!(started.elapsed() < TOR_TIMEOUT, "adding alice: {answer:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let introduce = format!(
        "/v1/accounts/{bob_id}/contacts/{}/introduce",
        id(&carol_in_bobs)
    );
    let sent = carrier
        .op(
            "POST",
            &introduce,
            Some(json!({"to": id(&alice_in_bobs), "from_identity": id(&bob_identity)})),
        )
        .await
        .expect(202)
        .json();
    ensure!(
        sent["message_id"]
            .as_str()
            .is_some_and(|message_id| message_id.ends_with(&format!(
                "@{}>",
                bob_identity["onion"].as_str().unwrap_or("?")
            ))),
        "{sent}"
    );
    let foreign = carrier
        .op(
            "POST",
            &introduce,
            Some(json!({"to": id(&alice_in_bobs), "from_identity": identity})),
        )
        .await
        .expect(422)
        .json();
    ensure!(foreign["field"] == "from_identity", "{foreign}");
    carrier
        .op(
            "POST",
            &introduce,
            Some(json!({"to": id(&carol_in_bobs), "from_identity": id(&bob_identity)})),
        )
        .await
        .expect(422);
    carrier
        .op(
            "POST",
            &format!("/v1/accounts/{bob_id}/contacts/nosuchcontact/introduce"),
            Some(json!({"to": id(&alice_in_bobs), "from_identity": id(&bob_identity)})),
        )
        .await
        .expect(404);
    // This carrier runs no smtp-in, so no onion takes mail: the introduction waits in the
    // queue, from Bob's identity to Alice's; it is taken out so the counts below hold.
    let queued = carrier
        .op("GET", "/v1/queue", None)
        .await
        .expect(200)
        .json();
    let introduction = queued["messages"]
        .as_array()
        .and_then(|messages| {
            messages
                .iter()
                .find(|message| message["recipients"][0]["address"] == created["address"])
        })
        .cloned()
        .with_context(|| format!("the introduction is not queued: {queued}"))?;
    let sent_id = sent["message_id"].as_str().unwrap_or_default();
    ensure!(
        introduction["reverse_path"] == bob_identity["address"]
            && introduction["message_id"]
                .as_str()
                .is_some_and(|queued_id| sent_id.contains(queued_id.trim_matches(['<', '>']))),
        "{introduction} (sent {sent})"
    );
    carrier
        .op(
            "DELETE",
            &format!(
                "/v1/queue/{}",
                introduction["id"].as_str().unwrap_or_default()
            ),
            None,
        )
        .await
        .expect(204);

    // Statistics.
    let stats = carrier
        .call("GET", "/v1/stats", Some(&read_token), None)
        .await
        .expect(200)
        .json();
    ensure!(stats["accounts_by_state"]["active"] == 2, "{stats}");
    ensure!(stats["identities_by_state"]["online"] == 3, "{stats}");
    ensure!(stats["tor_control_connected"] == true, "{stats}");
    ensure!(
        stats["queue_depth"] == 0 && stats["unavailable_services"] == json!([]),
        "{stats}"
    );

    // The queue: a message to an onion nobody serves stays queued; operators see its envelope
    // and state, hold, release and retry it, and delete it without telling the sender.
    let mut queue_grpc =
        onionpost_proto::queue::v1::queue_client::QueueClient::new(carrier.node.grpc()?);
    let nobody = format!(
        "nobody@{}",
        onionpost_keys::onion_host_from_ed25519(&[9u8; 32])
    );
    let queued = queue_grpc
        .enqueue(onionpost_proto::queue::v1::EnqueueRequest {
            idempotency_key: "admin-api-test-1".into(),
            origin: onionpost_proto::queue::v1::Origin::Submission as i32,
            account_id: alice_id.clone(),
            sender_identity_id: identity.clone(),
            reverse_path: format!("alice@{onion}"),
            recipients: vec![onionpost_proto::queue::v1::RecipientRequest {
                address: nobody.clone(),
                notify: vec![onionpost_proto::queue::v1::DsnNotify::Never as i32],
                original_recipient: String::new(),
            }],
            message: b"Subject: ...\r\n\r\nciphertext stands here\r\n".to_vec(),
            message_id: "<q1@example.onion>".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let queue_id = queued.queue_id;
    let page = carrier
        .call("GET", "/v1/queue?limit=10", Some(&read_token), None)
        .await
        .expect(200)
        .json();
    ensure!(
        page["messages"]
            .as_array()
            .is_some_and(|messages| messages.iter().any(|m| m["id"] == queue_id.as_str())),
        "{page}"
    );
    let shown = carrier
        .call(
            "GET",
            &format!("/v1/queue/{queue_id}"),
            Some(&read_token),
            None,
        )
        .await
        .expect(200)
        .json();
    ensure!(
        shown["recipients"][0]["address"] == nobody.as_str()
            && shown["origin"] == "submission"
            && shown["held"] == false,
        "{shown}"
    );
    let held = carrier
        .op("POST", &format!("/v1/queue/{queue_id}/hold"), None)
        .await
        .expect(200)
        .json();
    ensure!(held["held"] == true, "{held}");
    let held_only = carrier
        .op("GET", "/v1/queue?held=true", None)
        .await
        .expect(200)
        .json();
    ensure!(
        held_only["messages"].as_array().map(Vec::len) == Some(1),
        "{held_only}"
    );
    let released = carrier
        .op("POST", &format!("/v1/queue/{queue_id}/release"), None)
        .await
        .expect(200)
        .json();
    ensure!(released["held"] == false, "{released}");
    carrier
        .op("POST", &format!("/v1/queue/{queue_id}/retry"), None)
        .await
        .expect(200);
    let stats = carrier
        .call("GET", "/v1/stats", Some(&read_token), None)
        .await
        .expect(200)
        .json();
    ensure!(stats["queue_depth"] == 1, "{stats}");
    carrier
        .op("DELETE", &format!("/v1/queue/{queue_id}"), None)
        .await
        .expect(204);
    carrier
        .op("GET", &format!("/v1/queue/{queue_id}"), None)
        .await
        .expect(404);
    carrier
        .call(
            "POST",
            &format!("/v1/queue/{queue_id}/hold"),
            Some(&read_token),
            None,
        )
        .await
        .expect(403);

    // The same statistics over gRPC (onionpost.admin.v1.Admin), without a bearer token.
    let mut admin_grpc =
        onionpost_proto::admin::v1::admin_client::AdminClient::new(carrier.node.grpc()?);
    let carrier_stats = admin_grpc
        .get_stats(onionpost_proto::admin::v1::GetStatsRequest {})
        .await?
        .into_inner();
    ensure!(
        carrier_stats
            .accounts_by_state
            .iter()
            .any(|count| count.name == "active" && count.count == 2)
            && carrier_stats.tor_control_connected,
        "{carrier_stats:?}"
    );

    // The command line against the same carrier.
    cli_checks(&carrier, &alice_id, &plan_id).await?;

    // Revocation: the identity is gone from the account, and deleting an account revokes its
    // identities first.
    carrier
        .op("DELETE", &format!("/v1/identities/{identity}"), None)
        .await
        .expect(204);
    carrier
        .op("GET", &format!("/v1/identities/{identity}"), None)
        .await
        .expect(404);
    carrier
        .op("DELETE", &format!("/v1/accounts/{bob_id}"), None)
        .await
        .expect(204);
    carrier
        .op("GET", &format!("/v1/accounts/{bob_id}"), None)
        .await
        .expect(404);
    carrier
        .op(
            "GET",
            &format!("/v1/identities/{}", id(&bob_identity)),
            None,
        )
        .await
        .expect(404);
    let stats = carrier
        .op("GET", "/v1/stats", None)
        .await
        .expect(200)
        .json();
    ensure!(stats["identities_by_state"]["online"] == 0, "{stats}");

    // Tokens: listed without their text; a revoked token stops working at once.
    let tokens = carrier
        .op("GET", "/v1/tokens", None)
        .await
        .expect(200)
        .json();
    ensure!(
        tokens["tokens"]
            .as_array()
            .is_some_and(|t| t.len() >= 2 && t.iter().all(|t| t.get("token").is_none())),
        "{tokens}"
    );
    carrier
        .op("DELETE", &format!("/v1/tokens/{}", id(&reader)), None)
        .await
        .expect(204);
    carrier
        .call("GET", "/v1/stats", Some(&read_token), None)
        .await
        .expect(401);

    // Probes and documentation.
    carrier
        .call("GET", "/healthz", None, None)
        .await
        .expect(200);
    let docs = carrier.call("GET", "/docs", None, None).await.expect(200);
    ensure!(docs.text().contains("/openapi.json"));

    let mut node = carrier.node;
    node.stop().await;
    tornet.shutdown();
    Ok(())
}

/// `onionpost admin …` with the address and token from the environment.
async fn admin_cli(carrier: &Carrier, token: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(onionpost_e2e::node::onionpost_binary())
        .arg("admin")
        .args(args)
        .env_clear()
        .env("ONIONPOST_ADMIN_URL", carrier.url())
        .env("ONIONPOST_ADMIN_TOKEN", token)
        .output()
        .await
        .expect("running onionpost admin");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn cli_checks(carrier: &Carrier, alice_id: &str, plan_id: &str) -> anyhow::Result<()> {
    let (ok, out, err) = admin_cli(carrier, OPERATOR_TOKEN, &["accounts", "list"]).await;
    ensure!(ok, "{err}");
    let header = out.lines().next().unwrap_or_default();
    ensure!(
        header.starts_with("ID") && header.contains("LOGIN") && header.contains("STATE"),
        "{out}"
    );
    ensure!(
        out.lines().any(|line| line.starts_with(alice_id)
            && line.contains("alice")
            && line.contains("active")),
        "{out}"
    );

    let (ok, out, err) = admin_cli(
        carrier,
        OPERATOR_TOKEN,
        &["--json", "accounts", "show", alice_id],
    )
    .await;
    ensure!(ok, "{err}");
    let account: Value = serde_json::from_str(&out)?;
    ensure!(account["login"] == "alice", "{out}");

    let (ok, out, err) = admin_cli(
        carrier,
        OPERATOR_TOKEN,
        &[
            "accounts",
            "create",
            "carol",
            "--password",
            "carol's password",
        ],
    )
    .await;
    ensure!(ok && out.contains("carol"), "{out}{err}");

    let (ok, out, err) =
        admin_cli(carrier, OPERATOR_TOKEN, &["identities", "list", alice_id]).await;
    ensure!(
        ok && out.contains("ADDRESS") && out.contains("online"),
        "{out}{err}"
    );

    let (ok, out, err) = admin_cli(carrier, OPERATOR_TOKEN, &["plans", "list"]).await;
    ensure!(ok && out.contains(plan_id), "{out}{err}");

    let (ok, out, err) = admin_cli(
        carrier,
        OPERATOR_TOKEN,
        &[
            "--json", "vouchers", "mint", plan_id, "--days", "7", "--count", "3",
        ],
    )
    .await;
    ensure!(ok, "{err}");
    let batch: Value = serde_json::from_str(&out)?;
    ensure!(batch["codes"].as_array().map(Vec::len) == Some(3), "{out}");
    let code = batch["codes"][0].as_str().context("code")?;
    let (ok, out, err) = admin_cli(
        carrier,
        OPERATOR_TOKEN,
        &["accounts", "redeem", alice_id, code],
    )
    .await;
    ensure!(ok && out.contains("alice"), "{out}{err}");

    let (ok, out, err) = admin_cli(
        carrier,
        OPERATOR_TOKEN,
        &["--json", "tokens", "create", "cli", "--scope", "read"],
    )
    .await;
    ensure!(ok, "{err}");
    let token: Value = serde_json::from_str(&out)?;
    let read = token["token"].as_str().context("token")?;
    let (ok, out, err) = admin_cli(carrier, read, &["stats"]).await;
    ensure!(
        ok && out.contains("accounts") && out.contains("tor control   connected"),
        "{out}{err}"
    );
    let (ok, out, err) = admin_cli(carrier, read, &["queue", "list"]).await;
    ensure!(ok && out.contains("ENQUEUED"), "{out}{err}");
    let (ok, out, err) = admin_cli(carrier, read, &["--json", "queue", "list", "--held"]).await;
    let page: Value = serde_json::from_str(&out).with_context(|| format!("{out}{err}"))?;
    ensure!(ok && page["messages"].is_array(), "{out}{err}");
    let (ok, _, _) = admin_cli(carrier, read, &["queue", "show", "no-such-message"]).await;
    ensure!(!ok, "showing an unknown queue id must fail");
    let (ok, _, err) = admin_cli(
        carrier,
        read,
        &[
            "accounts",
            "create",
            "dave",
            "--password",
            "dave's password",
        ],
    )
    .await;
    ensure!(
        !ok && err.contains("403"),
        "a read token cannot write: {err}"
    );
    let (ok, _, err) = admin_cli(carrier, "opk_wrong", &["accounts", "list"]).await;
    ensure!(!ok && err.contains("401"), "{err}");
    let (ok, out, err) = admin_cli(carrier, OPERATOR_TOKEN, &["tokens", "list"]).await;
    ensure!(
        ok && out.contains("SCOPE") && out.contains("cli"),
        "{out}{err}"
    );
    Ok(())
}
