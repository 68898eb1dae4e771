//! `onionpost.imap.v1.Imap` through the real tonic server on a loopback socket, with a real
//! SQLite store: the calls other services make, and the status each bad input must give.

use std::sync::Arc;

use onionpost_imap::grpc::ImapGrpc;
use onionpost_imap::service::{ImapService, default_settings};
use onionpost_imap::store::MIGRATIONS;
use onionpost_imap::{CarrierSecret, SystemClock};
use onionpost_proto::imap::v1 as pb;
use onionpost_proto::imap::v1::imap_client::ImapClient;
use onionpost_proto::imap::v1::imap_server::ImapServer;
use onionpost_runtime::Database;
use tonic::Code;
use tonic::transport::Channel;

struct Running {
    client: ImapClient<Channel>,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::open_sqlite(&dir.path().join("imap.sqlite3"), MIGRATIONS)
        .await
        .unwrap();
    let secret = CarrierSecret::from_text("0123456789abcdef0123456789abcdef").unwrap();
    let service = ImapService::open(database, secret, Arc::new(SystemClock), default_settings())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                ImapServer::new(ImapGrpc::new(service))
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let client = ImapClient::connect(format!("http://{address}"))
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    Running { client, _dir: dir }
}

/// A real v3 onion per letter: identity addresses are parsed with their checksum verified.
fn onion(letter: char) -> String {
    onionpost_proto::address::OnionHost::from_ed25519(&[letter as u8; 32]).to_string()
}

#[tokio::test]
async fn accounts_identities_delivery_and_errors_over_grpc() {
    let Running { mut client, _dir } = start().await;

    let plans = client
        .list_plans(pb::ListPlansRequest {})
        .await
        .unwrap()
        .into_inner()
        .plans;
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].name, "standard");

    let account = client
        .create_account(pb::CreateAccountRequest {
            login: "grace".into(),
            password: "a long enough password".into(),
            plan_id: String::new(),
            voucher_code: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(account.state, pb::AccountState::Active as i32);
    assert_eq!(account.quota_bytes, 1 << 30);
    assert!(account.paid_until.is_some() && account.grace_until.is_some());

    let duplicate = client
        .create_account(pb::CreateAccountRequest {
            login: "grace".into(),
            password: "a long enough password".into(),
            plan_id: String::new(),
            voucher_code: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    let bad = client
        .create_account(pb::CreateAccountRequest {
            login: "x".repeat(65),
            password: "a long enough password".into(),
            plan_id: String::new(),
            voucher_code: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("login"), "{}", bad.message());

    let by_login = client
        .get_account(pb::GetAccountRequest {
            account: Some(pb::get_account_request::Account::Login("grace".into())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_login.account_id, account.account_id);
    let missing = client
        .get_account(pb::GetAccountRequest {
            account: Some(pb::get_account_request::Account::AccountId(
                "acct_none".into(),
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let identity = client
        .add_identity(pb::AddIdentityRequest {
            identity_id: "gid".into(),
            account_id: account.account_id.clone(),
            address: format!("grace@{}", onion('g')),
            display_name: "Grace".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(identity.onion, onion('g'));
    let found = client
        .get_identity(pb::GetIdentityRequest {
            identity: Some(pb::get_identity_request::Identity::Onion(onion('g'))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.identity_id, "gid");
    assert_eq!(found.account_state, pb::AccountState::Active as i32);

    let message = b"Subject: over grpc\r\nMessage-ID: <g1@x>\r\n\r\nhello\r\n".to_vec();
    let delivered = client
        .deliver(pb::DeliverRequest {
            identity_id: "gid".into(),
            mailbox: pb::Mailbox::Inbox as i32,
            message: message.clone(),
            verification: pb::SenderVerification::Unsigned as i32,
            verification_detail: String::new(),
            flags: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(delivered.refusal, pb::Refusal::Unspecified as i32);
    assert_eq!(delivered.uid, 1);
    let again = client
        .deliver(pb::DeliverRequest {
            identity_id: "gid".into(),
            mailbox: pb::Mailbox::Inbox as i32,
            message,
            verification: pb::SenderVerification::Unsigned as i32,
            verification_detail: String::new(),
            flags: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    let unknown = client
        .deliver(pb::DeliverRequest {
            identity_id: "nobody".into(),
            mailbox: 0,
            message: b"Subject: x\r\n\r\ny".to_vec(),
            verification: 0,
            verification_detail: String::new(),
            flags: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unknown.refusal, pb::Refusal::UnknownIdentity as i32);

    // A message above tonic's 4 MiB default travels (the limits are raised to 64 MiB).
    let mut large = b"Subject: large\r\nMessage-ID: <g2@x>\r\n\r\n".to_vec();
    large.extend(std::iter::repeat_n(b'z', 5 << 20));
    let delivered = client
        .deliver(pb::DeliverRequest {
            identity_id: "gid".into(),
            mailbox: 0,
            message: large,
            verification: 0,
            verification_detail: String::new(),
            flags: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(delivered.uid, 2);

    let quota = client
        .get_quota(pb::GetQuotaRequest {
            account_id: account.account_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quota.messages, 2);
    assert!(quota.used_bytes > 5 << 20);

    let authenticated = client
        .authenticate(pb::AuthenticateRequest {
            login: "grace".into(),
            password: "a long enough password".into(),
            connection_key: "conn-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(authenticated.identities.len(), 1);
    let wrong = client
        .authenticate(pb::AuthenticateRequest {
            login: "grace".into(),
            password: "wrong".into(),
            connection_key: "conn-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);

    // Suspend through the field mask; vouchers; refusal to delete with identities.
    let suspended = client
        .update_account(pb::UpdateAccountRequest {
            account: Some(pb::Account {
                account_id: account.account_id.clone(),
                state: pb::AccountState::Suspended as i32,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["state".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(suspended.state, pb::AccountState::Suspended as i32);
    let denied = client
        .authenticate(pb::AuthenticateRequest {
            login: "grace".into(),
            password: "a long enough password".into(),
            connection_key: "conn-2".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let minted = client
        .mint_vouchers(pb::MintVouchersRequest {
            plan_id: plans[0].plan_id.clone(),
            days: 30,
            count: 2,
            expires_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(minted.codes.len(), 2);
    client
        .redeem_voucher(pb::RedeemVoucherRequest {
            account_id: account.account_id.clone(),
            code: minted.codes[0].clone(),
        })
        .await
        .unwrap();
    let twice = client
        .redeem_voucher(pb::RedeemVoucherRequest {
            account_id: account.account_id.clone(),
            code: minted.codes[0].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);

    let stats = client
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.messages_delivered_today, 2);
    assert!(stats.stored_bytes > 5 << 20);
    assert_eq!(stats.identities, 1);
    assert!(stats.accounts_by_state.contains(&pb::AccountStateCount {
        state: pb::AccountState::Suspended as i32,
        accounts: 1
    }));

    let refused = client
        .delete_account(pb::DeleteAccountRequest {
            account_id: account.account_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    client
        .remove_identity(pb::RemoveIdentityRequest {
            identity_id: "gid".into(),
        })
        .await
        .unwrap();
    client
        .delete_account(pb::DeleteAccountRequest {
            account_id: account.account_id.clone(),
        })
        .await
        .unwrap();

    let stats = client
        .get_stats(pb::GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.stored_bytes, 0, "the account's mail went with it");
    assert_eq!(stats.accounts_by_state.len(), 4);
    let listed = client
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.accounts.is_empty());
}
