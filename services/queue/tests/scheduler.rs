//! The scheduler against fake smtp-out and imap gRPC servers over loopback (tonic, real HTTP/2):
//! grouping by destination, per-recipient results, retries with back-off, expiry with a DSN in
//! the sender's INBOX, a DSN kept while imap is down, and a crash mid-delivery. The real
//! smtp-out over the private Tor network is in tests/tests/queue.rs (onionpost-e2e).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onionpost_proto::ServiceName;
use onionpost_proto::imap::v1 as imap_pb;
use onionpost_proto::imap::v1::imap_server::{Imap, ImapServer};
use onionpost_proto::smtp_out::v1 as smtp_pb;
use onionpost_proto::smtp_out::v1::smtp_out_server::{SmtpOut, SmtpOutServer};
use onionpost_queue::service::Enqueue;
use onionpost_queue::store::{self, DsnReturn, NewRecipient, Notify, Origin, RecipientState};
use onionpost_queue::{ManualClock, QueueError, QueueService, RetryPolicy, Scheduler};
use onionpost_runtime::seal::CarrierSecret;
use onionpost_runtime::{Database, Directory};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// A real v3 onion per letter: the scheduler dials only onions whose checksum is right.
fn onion(c: char) -> String {
    onionpost_proto::address::OnionHost::from_ed25519(&[c as u8; 32]).to_string()
}

/// Stands in for smtp-out: `nobody@…` is refused for good, everything else is accepted unless
/// the destination is "offline" (a connection error, as smtp-out reports an unreachable onion).
#[derive(Clone, Default)]
struct FakeSmtpOut {
    offline: Arc<AtomicBool>,
    /// Destinations that are offline while others answer.
    offline_destinations: Arc<Mutex<Vec<String>>>,
    /// Each session's request, once it is answered.
    sessions: Arc<Mutex<Vec<smtp_pb::DeliverRequest>>>,
    /// Sessions that reached the fake at all (answered or not).
    started: Arc<Mutex<Vec<String>>>,
    delay: Arc<Mutex<Duration>>,
}

#[tonic::async_trait]
impl SmtpOut for FakeSmtpOut {
    async fn deliver(
        &self,
        request: Request<smtp_pb::DeliverRequest>,
    ) -> Result<Response<smtp_pb::DeliverResponse>, Status> {
        let request = request.into_inner();
        self.started.lock().unwrap().push(request.queue_id.clone());
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let offline = self.offline.load(Ordering::SeqCst)
            || self
                .offline_destinations
                .lock()
                .unwrap()
                .contains(&request.destination);
        let recipients = request
            .recipients
            .iter()
            .map(|recipient| {
                let (outcome, reply) = if offline {
                    (smtp_pb::Outcome::TemporaryFailure, None)
                } else if recipient.address.starts_with("nobody@") {
                    (
                        smtp_pb::Outcome::PermanentFailure,
                        Some((550, "5.1.1", "mailbox unavailable")),
                    )
                } else if recipient.address.starts_with("again@") {
                    // The recipient already had it (through a carrier).
                    (
                        smtp_pb::Outcome::Delivered,
                        Some((250, "2.0.0", onionpost_proto::ALREADY_DELIVERED_TEXT)),
                    )
                } else {
                    (
                        smtp_pb::Outcome::Delivered,
                        Some((250, "2.0.0", "accepted")),
                    )
                };
                smtp_pb::RecipientResult {
                    address: recipient.address.clone(),
                    outcome: outcome as i32,
                    reply: reply.map(|(code, enhanced, text)| smtp_pb::SmtpReply {
                        code,
                        enhanced_status: enhanced.into(),
                        text: text.into(),
                    }),
                }
            })
            .collect();
        self.sessions.lock().unwrap().push(request);
        Ok(Response::new(smtp_pb::DeliverResponse {
            recipients,
            connection_error: if offline {
                "tor could not reach the onion".into()
            } else {
                String::new()
            },
            peer_offers_dsn: true,
            duration: None,
        }))
    }

    async fn etrn(
        &self,
        _request: Request<smtp_pb::EtrnRequest>,
    ) -> Result<Response<smtp_pb::EtrnResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

/// Stands in for imap's Deliver; `down` makes it unavailable.
#[derive(Clone, Default)]
struct FakeImap {
    down: Arc<AtomicBool>,
    delivered: Arc<Mutex<Vec<imap_pb::DeliverRequest>>>,
    refused_calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Imap for FakeImap {
    async fn deliver(
        &self,
        request: Request<imap_pb::DeliverRequest>,
    ) -> Result<Response<imap_pb::DeliverResponse>, Status> {
        if self.down.load(Ordering::SeqCst) {
            self.refused_calls.fetch_add(1, Ordering::SeqCst);
            return Err(Status::unavailable("imap is restarting"));
        }
        self.delivered.lock().unwrap().push(request.into_inner());
        Ok(Response::new(imap_pb::DeliverResponse {
            refusal: 0,
            duplicate: false,
            uid_validity: 1,
            uid: 1,
        }))
    }

    async fn answer_contact_request(
        &self,
        _: Request<onionpost_proto::keys::v1::AnswerContactRequestRequest>,
    ) -> Result<Response<imap_pb::AnswerContactRequestResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn release_contact_requests(
        &self,
        _: Request<imap_pb::ReleaseContactRequestsRequest>,
    ) -> Result<Response<imap_pb::ReleaseContactRequestsResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn create_account(
        &self,
        _request: Request<imap_pb::CreateAccountRequest>,
    ) -> Result<Response<imap_pb::Account>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn get_account(
        &self,
        _request: Request<imap_pb::GetAccountRequest>,
    ) -> Result<Response<imap_pb::Account>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn list_accounts(
        &self,
        _request: Request<imap_pb::ListAccountsRequest>,
    ) -> Result<Response<imap_pb::ListAccountsResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn update_account(
        &self,
        _request: Request<imap_pb::UpdateAccountRequest>,
    ) -> Result<Response<imap_pb::Account>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn set_password(
        &self,
        _request: Request<imap_pb::SetPasswordRequest>,
    ) -> Result<Response<imap_pb::SetPasswordResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn delete_account(
        &self,
        _request: Request<imap_pb::DeleteAccountRequest>,
    ) -> Result<Response<imap_pb::DeleteAccountResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn authenticate(
        &self,
        _request: Request<imap_pb::AuthenticateRequest>,
    ) -> Result<Response<imap_pb::AuthenticateResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn add_identity(
        &self,
        _request: Request<imap_pb::AddIdentityRequest>,
    ) -> Result<Response<imap_pb::Identity>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn create_identity(
        &self,
        _request: Request<imap_pb::CreateIdentityRequest>,
    ) -> Result<Response<imap_pb::CreateIdentityResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn import_identity(
        &self,
        _request: Request<imap_pb::ImportIdentityRequest>,
    ) -> Result<Response<imap_pb::Identity>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn revoke_identity(
        &self,
        _request: Request<imap_pb::RevokeIdentityRequest>,
    ) -> Result<Response<imap_pb::RevokeIdentityResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn rotate_identity_key(
        &self,
        _request: Request<imap_pb::RotateIdentityKeyRequest>,
    ) -> Result<Response<imap_pb::RotateIdentityKeyResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn get_identity(
        &self,
        _request: Request<imap_pb::GetIdentityRequest>,
    ) -> Result<Response<imap_pb::Identity>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn list_identities(
        &self,
        _request: Request<imap_pb::ListIdentitiesRequest>,
    ) -> Result<Response<imap_pb::ListIdentitiesResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn remove_identity(
        &self,
        _request: Request<imap_pb::RemoveIdentityRequest>,
    ) -> Result<Response<imap_pb::RemoveIdentityResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn create_plan(
        &self,
        _request: Request<imap_pb::CreatePlanRequest>,
    ) -> Result<Response<imap_pb::Plan>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn update_plan(
        &self,
        _request: Request<imap_pb::UpdatePlanRequest>,
    ) -> Result<Response<imap_pb::Plan>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn list_plans(
        &self,
        _request: Request<imap_pb::ListPlansRequest>,
    ) -> Result<Response<imap_pb::ListPlansResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn mint_vouchers(
        &self,
        _request: Request<imap_pb::MintVouchersRequest>,
    ) -> Result<Response<imap_pb::MintVouchersResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn create_app_password(
        &self,
        _request: Request<imap_pb::CreateAppPasswordRequest>,
    ) -> Result<Response<imap_pb::CreateAppPasswordResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn list_app_passwords(
        &self,
        _request: Request<imap_pb::ListAppPasswordsRequest>,
    ) -> Result<Response<imap_pb::ListAppPasswordsResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn revoke_app_password(
        &self,
        _request: Request<imap_pb::RevokeAppPasswordRequest>,
    ) -> Result<Response<imap_pb::RevokeAppPasswordResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn redeem_voucher(
        &self,
        _request: Request<imap_pb::RedeemVoucherRequest>,
    ) -> Result<Response<imap_pb::Account>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn get_quota(
        &self,
        _request: Request<imap_pb::GetQuotaRequest>,
    ) -> Result<Response<imap_pb::Quota>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn get_stats(
        &self,
        _request: Request<imap_pb::GetStatsRequest>,
    ) -> Result<Response<imap_pb::ImapStats>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

struct Harness {
    smtp: FakeSmtpOut,
    imap: FakeImap,
    directory: Directory,
    clock: ManualClock,
    _dir: tempfile::TempDir,
    db_path: std::path::PathBuf,
}

const START_MS: i64 = 1_800_000_000_000;

async fn harness() -> Harness {
    let smtp = FakeSmtpOut::default();
    let imap = FakeImap::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(SmtpOutServer::new(smtp.clone()))
        .add_service(ImapServer::new(imap.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    let directory = Directory::default();
    directory
        .register_remote(ServiceName::SmtpOut, &format!("http://{address}"))
        .unwrap();
    directory
        .register_remote(ServiceName::Imap, &format!("http://{address}"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("queue.sqlite3");
    Harness {
        smtp,
        imap,
        directory,
        clock: ManualClock::at_ms(START_MS),
        _dir: dir,
        db_path,
    }
}

impl Harness {
    async fn service(&self, lifetime: Duration) -> QueueService {
        open_service(&self.db_path, &self.clock, lifetime).await
    }

    fn start(&self, service: &QueueService) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let shutdown = CancellationToken::new();
        let scheduler = Scheduler::new(service.clone(), self.directory.clone());
        let handle = tokio::spawn(scheduler.run(shutdown.clone()));
        (shutdown, handle)
    }
}

async fn open_service(path: &Path, clock: &ManualClock, lifetime: Duration) -> QueueService {
    let database = Database::open_sqlite(path, store::MIGRATIONS)
        .await
        .unwrap();
    let secret = CarrierSecret::from_text(&"s".repeat(40)).unwrap();
    QueueService::new(
        store::for_database(database),
        secret.sealer("queue-body"),
        Arc::new(clock.clone()),
        RetryPolicy {
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            lifetime,
        },
    )
}

fn request(key: &str, recipients: &[(&str, Vec<Notify>)]) -> Enqueue {
    Enqueue {
        idempotency_key: key.into(),
        origin: Origin::Submission,
        account_id: "acct-a".into(),
        sender_identity_id: "id-alice".into(),
        reverse_path: format!("alice@{}", onion('a')),
        recipients: recipients
            .iter()
            .map(|(address, notify)| NewRecipient {
                address: (*address).into(),
                notify: notify.clone(),
                original_recipient: String::new(),
            })
            .collect(),
        message: format!(
            "Message-ID: <{key}@a.onion>\r\nSubject: test {key}\r\n\r\nbody of {key}\r\n"
        )
        .into_bytes(),
        message_id: format!("<{key}@a.onion>"),
        envelope_id: format!("env-{key}"),
        dsn_return: DsnReturn::Unspecified,
        fan_out_immediately: false,
    }
}

/// Polls `check` until it holds (10 s at most).
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn gone(service: &QueueService, queue_id: &str) -> bool {
    matches!(service.get(queue_id).await, Err(QueueError::NotFound(_)))
}

fn dsn_texts(imap: &FakeImap) -> Vec<String> {
    imap.delivered
        .lock()
        .unwrap()
        .iter()
        .map(|request| String::from_utf8_lossy(&request.message).into_owned())
        .collect()
}

#[tokio::test]
async fn one_session_per_onion_with_results_and_dsns() {
    let harness = harness().await;
    let service = harness.service(Duration::from_secs(86_400)).await;
    let (shutdown, handle) = harness.start(&service);
    let c = onion('c');
    let queued = service
        .enqueue(request(
            "m1",
            &[
                (&format!("carol@{c}"), vec![Notify::Success]),
                (&format!("nobody@{c}"), vec![]),
                ("bob@example.com", vec![Notify::Failure]),
                (&format!("quiet@{c}"), vec![Notify::Never]),
                (&format!("again@{c}"), vec![Notify::Success]),
            ],
        ))
        .await
        .unwrap();
    // Idempotent: the same key gives the same entry.
    let again = service
        .enqueue(request("m1", &[("x@y.onion", vec![])]))
        .await
        .unwrap();
    assert_eq!(again.queue_id, queued.queue_id);

    eventually("message finished", || gone(&service, &queued.queue_id)).await;
    let sessions = harness.smtp.sessions.lock().unwrap().clone();
    assert_eq!(
        sessions.len(),
        1,
        "one session for the four recipients at {c}"
    );
    assert_eq!(sessions[0].destination, c);
    assert_eq!(sessions[0].isolation_key, "id-alice");
    assert_eq!(sessions[0].recipients.len(), 4);
    assert_eq!(sessions[0].envelope_id, "env-m1");
    assert!(String::from_utf8_lossy(&sessions[0].message).contains("body of m1"));

    // One DSN for the attempt, in alice's INBOX: carol delivered (she asked for SUCCESS),
    // nobody failed (FAILURE by default), bob's clearnet address failed, quiet asked for NEVER,
    // and again's copy was one the recipient already had (whoever delivered first reported it).
    eventually("a dsn", || async {
        !harness.imap.delivered.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let texts = dsn_texts(&harness.imap);
    assert_eq!(texts.len(), 1, "{texts:?}");
    let dsn = &texts[0];
    assert!(dsn.contains(&format!(
        "Final-Recipient: rfc822; carol@{c}\r\nAction: delivered\r\nStatus: 2.0.0"
    )));
    assert!(dsn.contains(&format!(
        "Final-Recipient: rfc822; nobody@{c}\r\nAction: failed\r\nStatus: 5.1.1"
    )));
    assert!(
        dsn.contains("Final-Recipient: rfc822; bob@example.com\r\nAction: failed\r\nStatus: 5.1.2")
    );
    assert!(dsn.contains("Subject: Delivery Status Notification (Failure)"));
    assert!(!dsn.contains("quiet@"));
    assert!(!dsn.contains("again@"), "{dsn}");
    assert!(dsn.contains("Subject: test m1"), "headers returned");
    assert!(!dsn.contains("body of m1"), "RET=HDRS by default");
    for request in harness.imap.delivered.lock().unwrap().iter() {
        assert_eq!(request.identity_id, "id-alice");
        assert_eq!(request.mailbox, imap_pb::Mailbox::Inbox as i32);
        assert_eq!(
            request.verification,
            imap_pb::SenderVerification::Local as i32
        );
    }
    let stats = service.stats().await.unwrap();
    assert_eq!(stats.messages, 0, "DSNs delivered, queue empty: {stats:?}");
    shutdown.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn an_offline_onion_is_retried_and_past_the_lifetime_the_sender_gets_a_dsn() {
    let harness = harness().await;
    let service = harness.service(Duration::from_secs(3 * 3600)).await;
    let (shutdown, handle) = harness.start(&service);
    let d = onion('d');
    harness.smtp.offline.store(true, Ordering::SeqCst);
    let queued = service
        .enqueue(request("r1", &[(&format!("dave@{d}"), vec![])]))
        .await
        .unwrap();
    eventually("first attempt", || async {
        let message = service.get(&queued.queue_id).await.unwrap();
        message.recipients[0].attempts == 1
    })
    .await;
    let message = service.get(&queued.queue_id).await.unwrap();
    let recipient = &message.recipients[0];
    assert_eq!(recipient.state, RecipientState::TemporaryFailure);
    let next = recipient.next_attempt_at_ms.unwrap() - START_MS;
    assert!(
        (48_000..=72_000).contains(&next),
        "retry after 60 s ±20%: {next}"
    );
    assert_eq!(recipient.last_reply.as_ref().unwrap().code, 451);

    // Nothing happens before the retry time.
    harness.clock.advance_ms(40_000);
    service.wake();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(harness.smtp.sessions.lock().unwrap().len(), 1);

    // The onion comes back: the next attempt delivers, once.
    harness.smtp.offline.store(false, Ordering::SeqCst);
    harness.clock.advance_ms(33_000);
    service.wake();
    eventually("delivered", || gone(&service, &queued.queue_id)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        harness.smtp.sessions.lock().unwrap().len(),
        2,
        "no duplicate"
    );
    assert!(
        harness.imap.delivered.lock().unwrap().is_empty(),
        "no DSN asked for success"
    );

    // Offline for good: retries back off until the lifetime, then a failure DSN.
    harness.smtp.offline.store(true, Ordering::SeqCst);
    let doomed = service
        .enqueue(request("r2", &[(&format!("dave@{d}"), vec![])]))
        .await
        .unwrap();
    let mut gaps = Vec::new();
    let mut last_attempts = 0;
    while !gone(&service, &doomed.queue_id).await {
        let Ok(message) = service.get(&doomed.queue_id).await else {
            break;
        };
        let recipient = &message.recipients[0];
        if recipient.attempts > last_attempts {
            last_attempts = recipient.attempts;
            if let Some(next) = recipient.next_attempt_at_ms {
                gaps.push((next - harness.clock.now_ms_for_test()) / 1000);
                harness.clock.set_ms(next);
                service.wake();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eventually("expiry dsn", || async {
        harness.imap.delivered.lock().unwrap().len() == 1
    })
    .await;
    let text = dsn_texts(&harness.imap).remove(0);
    assert!(text.contains("Action: failed\r\nStatus: 4.4.7"), "{text}");
    assert!(text.contains("lifetime expired"));
    assert!(text.contains(&format!("Final-Recipient: rfc822; dave@{d}")));
    // Back-off doubled (within jitter) up to the maximum.
    assert!(gaps.len() >= 5, "{gaps:?}");
    for (n, gap) in gaps.iter().enumerate() {
        let base = (60_i64 << n).min(3600);
        assert!(
            (base * 8 / 10..=base * 12 / 10).contains(gap),
            "gap {n} was {gap} s: {gaps:?}"
        );
    }
    shutdown.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_dsn_waits_for_imap_and_is_delivered_once() {
    let harness = harness().await;
    let service = harness.service(Duration::from_secs(86_400)).await;
    let (shutdown, handle) = harness.start(&service);
    harness.imap.down.store(true, Ordering::SeqCst);
    let queued = service
        .enqueue(request(
            "d1",
            &[(&format!("nobody@{}", onion('e')), vec![])],
        ))
        .await
        .unwrap();
    eventually("message finished", || gone(&service, &queued.queue_id)).await;
    eventually("imap tried", || async {
        harness.imap.refused_calls.load(Ordering::SeqCst) >= 1
    })
    .await;
    let local_entries = || async {
        service
            .list(
                &store::ListFilter {
                    origin: Some(Origin::Local),
                    ..Default::default()
                },
                10,
                "",
            )
            .await
            .unwrap()
            .0
    };
    // The refused attempt is recorded just after imap refuses it.
    eventually("the refusal recorded", || async {
        local_entries()
            .await
            .first()
            .is_some_and(|entry| entry.recipients[0].state == RecipientState::TemporaryFailure)
    })
    .await;
    let pending = local_entries().await;
    assert_eq!(pending.len(), 1, "the DSN is a durable local entry");
    harness.imap.down.store(false, Ordering::SeqCst);
    harness.clock.advance_ms(73_000);
    service.wake();
    eventually("dsn delivered", || async {
        harness.imap.delivered.lock().unwrap().len() == 1
    })
    .await;
    eventually("dsn entry gone", || gone(&service, &pending[0].queue_id)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(harness.imap.delivered.lock().unwrap().len(), 1);
    shutdown.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn hold_release_flush_and_delete_with_notice() {
    let harness = harness().await;
    let service = harness.service(Duration::from_secs(86_400)).await;
    harness.smtp.offline.store(true, Ordering::SeqCst);
    let (shutdown, handle) = harness.start(&service);
    let f = onion('f');
    let queued = service
        .enqueue(request("h1", &[(&format!("fay@{f}"), vec![])]))
        .await
        .unwrap();
    eventually("first attempt", || async {
        service.get(&queued.queue_id).await.unwrap().recipients[0].attempts == 1
    })
    .await;
    // ETRN for the onion: due now, tried again at once.
    assert_eq!(service.flush(&f.to_uppercase()).await.unwrap(), 1);
    assert!(service.flush("example.com").await.is_err());
    eventually("flushed attempt", || async {
        service.get(&queued.queue_id).await.unwrap().recipients[0].attempts == 2
    })
    .await;
    // Held: RetryNow makes it due, but nothing is tried until released.
    assert!(service.set_held(&queued.queue_id, true).await.unwrap().held);
    service.retry_now(&queued.queue_id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        service.get(&queued.queue_id).await.unwrap().recipients[0].attempts,
        2
    );
    assert!(
        !service
            .set_held(&queued.queue_id, false)
            .await
            .unwrap()
            .held
    );
    eventually("attempt after release", || async {
        service.get(&queued.queue_id).await.unwrap().recipients[0].attempts == 3
    })
    .await;
    // Delete with a notice: the body goes, a failure DSN comes.
    service.delete(&queued.queue_id, true).await.unwrap();
    assert!(gone(&service, &queued.queue_id).await);
    eventually("deletion dsn", || async {
        harness.imap.delivered.lock().unwrap().len() == 1
    })
    .await;
    assert!(dsn_texts(&harness.imap)[0].contains("deleted from the queue"));
    assert!(matches!(
        service.delete(&queued.queue_id, false).await,
        Err(QueueError::NotFound(_))
    ));
    shutdown.cancel();
    handle.await.unwrap();
}

/// A crash mid-delivery: every acknowledged message survives in the store and is delivered;
/// only sessions already in flight at the crash may reach the peer twice (at-least-once; the
/// recipient's ingress drops those by Message-ID and digest).
#[tokio::test]
async fn after_a_crash_every_acknowledged_message_is_delivered() {
    let harness = harness().await;
    *harness.smtp.delay.lock().unwrap() = Duration::from_millis(300);
    let g = onion('g');
    let mut ids = Vec::new();
    {
        let service = harness.service(Duration::from_secs(86_400)).await;
        for n in 0..40 {
            let queued = service
                .enqueue(request(
                    &format!("c{n}"),
                    &[(&format!("gus{n}@{g}"), vec![])],
                ))
                .await
                .unwrap();
            ids.push(queued.queue_id);
        }
        let (_shutdown, handle) = harness.start(&service);
        eventually("some sessions started", || async {
            harness.smtp.started.lock().unwrap().len() >= 5
        })
        .await;
        // The crash: the scheduler task and its sessions vanish without a word.
        handle.abort();
        let _ = handle.await;
    }
    let started_at_crash: Vec<String> = harness.smtp.started.lock().unwrap().clone();
    assert!(started_at_crash.len() < 40, "the crash came before the end");
    // Reopen the store as after a restart; the dead worker's leases run out.
    let service = harness.service(Duration::from_secs(86_400)).await;
    let stats = service.stats().await.unwrap();
    assert_eq!(
        stats.messages,
        40 - harness.smtp.sessions.lock().unwrap().len() as u64
    );
    *harness.smtp.delay.lock().unwrap() = Duration::ZERO;
    harness.clock.advance_ms(11 * 60 * 1000);
    let (shutdown, handle) = harness.start(&service);
    for id in &ids {
        eventually("every message delivered", || gone(&service, id)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut deliveries: HashMap<String, usize> = HashMap::new();
    for session in harness.smtp.sessions.lock().unwrap().iter() {
        *deliveries.entry(session.queue_id.clone()).or_default() += 1;
    }
    for id in &ids {
        let count = deliveries.get(id).copied().unwrap_or(0);
        assert!(count >= 1, "{id} was never delivered");
        if !started_at_crash.contains(id) {
            assert_eq!(
                count, 1,
                "{id} was not in flight at the crash yet reached the peer twice"
            );
        }
    }
    let twice = deliveries.values().filter(|count| **count > 1).count();
    println!(
        "crash test: {} sessions in flight at the crash, {twice} messages reached the peer twice",
        started_at_crash.len()
    );
    assert!(harness.imap.delivered.lock().unwrap().is_empty());
    shutdown.cancel();
    handle.await.unwrap();
}

/// The real keys service (over SQLite) for the sender's address book; the network publishes
/// nothing and there is no onion service.
struct NoNetwork;

#[tonic::async_trait]
impl onionpost_keys::fetch::KeyFetcher for NoNetwork {
    async fn fetch(
        &self,
        _address: &onionpost_keys::Address,
        _on_behalf_of: &str,
    ) -> Result<onionpost_keys::Cert, onionpost_keys::KeysError> {
        Err(onionpost_keys::KeysError::KeyNotFound)
    }

    async fn fetch_carriers(
        &self,
        _address: &onionpost_keys::Address,
        _on_behalf_of: &str,
    ) -> Result<Option<Vec<u8>>, onionpost_keys::KeysError> {
        Ok(None)
    }
}

#[tonic::async_trait]
impl onionpost_keys::fetch::OnionKeys for NoNetwork {
    async fn export_onion_key(
        &self,
        _identity_id: &str,
    ) -> Result<(String, zeroize::Zeroizing<Vec<u8>>), Status> {
        Err(Status::unimplemented("no onion service here"))
    }

    async fn import_onion(&self, _identity_id: &str, _secret_key: &[u8]) -> Result<String, Status> {
        Err(Status::unimplemented("no onion service here"))
    }
}

/// The real keys service over SQLite, with `fetcher` for the network; its directory lives as
/// long as the returned guard.
async fn keys_service(
    fetcher: Arc<dyn onionpost_keys::fetch::KeyFetcher>,
) -> (onionpost_keys::grpc::KeysGrpc, tempfile::TempDir) {
    let keys_dir = tempfile::tempdir().unwrap();
    let keys_database = Database::open_sqlite(
        &keys_dir.path().join("keys.sqlite3"),
        onionpost_keys::store::MIGRATIONS,
    )
    .await
    .unwrap();
    let keys_secret = CarrierSecret::from_text(&"k".repeat(40)).unwrap();
    let keys = onionpost_keys::grpc::KeysGrpc::new(onionpost_keys::service::KeysService::new(
        onionpost_keys::store::for_database(keys_database, &keys_secret),
        keys_secret,
        fetcher,
        Arc::new(NoNetwork),
        onionpost_keys::service::WkdDirectories::default(),
    ));
    (keys, keys_dir)
}

/// Serves `keys` over loopback and names it in the harness's directory.
async fn serve_keys(harness: &Harness, keys: onionpost_keys::grpc::KeysGrpc) {
    use onionpost_proto::keys::v1::keys_server::KeysServer;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KeysServer::new(keys))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    harness
        .directory
        .register_remote(ServiceName::Keys, &format!("http://{address}"))
        .unwrap();
}

/// A network where one onion publishes one key, and every fetch is remembered with whom it was
/// made for.
struct OneOnion {
    address: String,
    cert: onionpost_keys::Cert,
    asked: Mutex<Vec<(String, String)>>,
}

#[tonic::async_trait]
impl onionpost_keys::fetch::KeyFetcher for OneOnion {
    async fn fetch(
        &self,
        address: &onionpost_keys::Address,
        on_behalf_of: &str,
    ) -> Result<onionpost_keys::Cert, onionpost_keys::KeysError> {
        self.asked
            .lock()
            .unwrap()
            .push((address.to_string(), on_behalf_of.to_owned()));
        if address.to_string() == self.address {
            Ok(self.cert.clone())
        } else {
            Err(onionpost_keys::KeysError::KeyNotFound)
        }
    }

    async fn fetch_carriers(
        &self,
        _address: &onionpost_keys::Address,
        _on_behalf_of: &str,
    ) -> Result<Option<Vec<u8>>, onionpost_keys::KeysError> {
        Ok(None)
    }
}

/// Issue 18, oracle 1: smtp-in answers 250 to mail from a sender the account has not pinned
/// and leaves the fetch of its key to the queue. The queue fetches it from the sender's onion
/// (on the receiving identity's circuit), so the message reaches the INBOX verified, and the
/// key is pinned; a message the identity cannot open is not retried forever.
#[tokio::test]
async fn received_mail_is_verified_with_the_key_from_the_senders_onion_then_delivered() {
    use onionpost_proto::keys::v1 as keys_pb;
    use onionpost_proto::keys::v1::keys_server::Keys as _;

    let harness = harness().await;
    let yara = format!("yara@{}", onion('y'));
    let bob = onionpost_keys::IdentityKey::generate(
        &onionpost_keys::Address::parse(&format!("bob@{}", onion('b'))).unwrap(),
    )
    .unwrap();
    let network = Arc::new(OneOnion {
        address: bob.address().to_string(),
        cert: bob.public_cert(),
        asked: Mutex::new(Vec::new()),
    });
    let (keys, _keys_dir) = keys_service(network.clone()).await;
    let yara_key = keys
        .create_identity_key(Request::new(keys_pb::CreateIdentityKeyRequest {
            identity_id: "id-yara".into(),
            account_id: "acct-y".into(),
            address: yara.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let yara_cert = onionpost_keys::parse_cert(&yara_key.public_key).unwrap();
    serve_keys(&harness, keys).await;

    let plain = format!(
        "From: {}\r\nTo: {yara}\r\nSubject: first contact\r\nMessage-ID: <r1@b.onion>\r\n\r\nhello Yara\r\n",
        bob.address()
    );
    let sealed = onionpost_keys::pgp_mime::seal(plain.as_bytes(), &bob, &[yara_cert]).unwrap();
    let received = |key: &str, message: Vec<u8>| Enqueue {
        idempotency_key: key.into(),
        origin: Origin::Received,
        account_id: String::new(),
        sender_identity_id: "id-yara".into(),
        reverse_path: bob.address().to_string(),
        recipients: vec![NewRecipient {
            address: yara.clone(),
            notify: vec![Notify::Never],
            original_recipient: String::new(),
        }],
        message,
        message_id: "<r1@b.onion>".into(),
        envelope_id: String::new(),
        dsn_return: DsnReturn::Unspecified,
        fan_out_immediately: false,
    };
    let service = harness.service(Duration::from_secs(86_400)).await;
    let (shutdown, handle) = harness.start(&service);
    let queued = service.enqueue(received("r1", sealed)).await.unwrap();
    eventually("the received message is delivered", || async {
        gone(&service, &queued.queue_id).await
    })
    .await;
    {
        let delivered = harness.imap.delivered.lock().unwrap();
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered[0].identity_id, "id-yara");
        assert_eq!(delivered[0].mailbox, imap_pb::Mailbox::Inbox as i32);
        assert_eq!(
            delivered[0].verification,
            imap_pb::SenderVerification::Verified as i32
        );
        assert_eq!(
            delivered[0].verification_detail,
            bob.public_cert().fingerprint().to_hex()
        );
        assert!(String::from_utf8_lossy(&delivered[0].message).contains("hello Yara"));
    }
    assert_eq!(
        *network.asked.lock().unwrap(),
        vec![(bob.address().to_string(), "id-yara".to_owned())]
    );
    assert!(
        harness.smtp.started.lock().unwrap().is_empty(),
        "received mail never leaves the carrier"
    );

    // Not for Yara at all: failed for good once, no DSN, nothing delivered.
    let garbage = b"From: x@y\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b--\r\n".to_vec();
    let queued = service.enqueue(received("r2", garbage)).await.unwrap();
    eventually("the unopenable message is done", || async {
        gone(&service, &queued.queue_id).await
    })
    .await;
    assert_eq!(harness.imap.delivered.lock().unwrap().len(), 1);
    shutdown.cancel();
    handle.await.unwrap();
}

/// Fan-out: the direct attempt fails temporarily, so the scheduler hands the message to the
/// recipient's carriers from the sender's address book (never to the destination itself),
/// records the hand-offs, and does not hand it over again after the next failed attempt.
#[tokio::test]
async fn a_failed_direct_attempt_hands_the_message_to_the_recipients_carriers_once() {
    use onionpost_keys::onion_host_from_ed25519 as onion_of;
    use onionpost_proto::keys::v1 as keys_pb;
    use onionpost_proto::keys::v1::keys_server::Keys as _;

    let harness = harness().await;
    let (keys, _keys_dir) = keys_service(Arc::new(NoNetwork)).await;
    let (a, b, c, d) = (
        onion_of(&[1; 32]),
        onion_of(&[2; 32]),
        onion_of(&[3; 32]),
        onion_of(&[4; 32]),
    );
    keys.create_identity_key(Request::new(keys_pb::CreateIdentityKeyRequest {
        identity_id: "id-alice".into(),
        account_id: "acct-a".into(),
        address: format!("alice@{a}"),
        ..Default::default()
    }))
    .await
    .unwrap();
    let carol = format!("carol@{c}");
    let carol_key =
        onionpost_keys::IdentityKey::generate(&onionpost_keys::Address::parse(&carol).unwrap())
            .unwrap();
    keys.add_contact(Request::new(keys_pb::AddContactRequest {
        account_id: "acct-a".into(),
        address: carol.clone(),
        public_key: onionpost_keys::public_armored(&carol_key.public_cert())
            .unwrap()
            .into_bytes(),
        // Carol's own onion is no carrier of hers; it is skipped.
        designated_carriers: vec![b.clone(), c.clone(), d.clone()],
        ..Default::default()
    }))
    .await
    .unwrap();
    serve_keys(&harness, keys).await;

    let service = harness.service(Duration::from_secs(86_400)).await;
    let (shutdown, handle) = harness.start(&service);
    harness
        .smtp
        .offline_destinations
        .lock()
        .unwrap()
        .push(c.clone());
    let queued = service
        .enqueue(request("f1", &[(&carol, vec![])]))
        .await
        .unwrap();
    // The hand-offs are noted as each carrier takes the message, the direct attempt's result
    // when the session is over: wait for both.
    eventually(
        "the hand-offs and the direct attempt are recorded",
        || async {
            let message = service.get(&queued.queue_id).await.unwrap();
            message.recipients[0].handed_to_carriers.len() == 2
                && message.recipients[0].state == RecipientState::TemporaryFailure
        },
    )
    .await;
    let message = service.get(&queued.queue_id).await.unwrap();
    let mut handed = message.recipients[0].handed_to_carriers.clone();
    handed.sort();
    let mut expected = vec![b.clone(), d.clone()];
    expected.sort();
    assert_eq!(handed, expected);
    assert_eq!(
        message.recipients[0].state,
        RecipientState::TemporaryFailure
    );
    let destinations = |harness: &Harness| -> Vec<String> {
        let mut sessions: Vec<String> = harness
            .smtp
            .sessions
            .lock()
            .unwrap()
            .iter()
            .map(|session| session.destination.clone())
            .collect();
        sessions.sort();
        sessions
    };
    let mut first = vec![b.clone(), c.clone(), d.clone()];
    first.sort();
    assert_eq!(destinations(&harness), first);
    // The carriers got the message as queued (already encrypted), for Carol only.
    for session in harness.smtp.sessions.lock().unwrap().iter() {
        assert!(String::from_utf8_lossy(&session.message).contains("body of f1"));
        assert_eq!(session.recipients.len(), 1);
        assert_eq!(session.recipients[0].address, carol);
    }

    // The next direct attempt fails too: no second hand-off.
    let next = message.recipients[0].next_attempt_at_ms.unwrap();
    harness.clock.set_ms(next);
    service.wake();
    eventually("the second direct attempt", || async {
        service.get(&queued.queue_id).await.unwrap().recipients[0].attempts == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = vec![b, c.clone(), c, d];
    second.sort();
    assert_eq!(destinations(&harness), second);
    shutdown.cancel();
    handle.await.unwrap();
}
