//! Two services in one process, and the same two as separate processes talking gRPC: both must
//! pass the same checks, and one trace must span the gRPC hop between them.
//!
//! The pair is admin (HTTP, the caller) and keys (gRPC, the callee): `/readyz` on admin asks
//! keys for its gRPC health through the runtime's client transport, in memory when both run in
//! one process and over TCP when they do not.

use onionpost_e2e::node::{Node, http_get};
use onionpost_e2e::otlp::{CLIENT, CollectedSpan, Collector, SERVER};

fn telemetry_env(collector: &Collector) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
        // The processes of one carrier share its secret: gRPC between them is mutual TLS with
        // the carrier CA derived from it.
        (
            "ONIONPOST_SECRET",
            "the secret of the carrier under test, 32+ bytes".to_owned(),
        ),
    ]
}

/// The checks both deployments must pass.
async fn check_carrier(admin: &Node, keys: &Node) {
    assert!(admin.healthcheck("admin").await, "admin not SERVING");
    assert!(keys.healthcheck("keys").await, "keys not SERVING");

    let (status, body) = http_get(admin.admin, "/healthz").await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = http_get(admin.admin, "/readyz").await;
    assert_eq!(status, 200, "readyz: {body}");
    let readiness: serde_json::Value = serde_json::from_str(&body).expect("readyz is JSON");
    assert_eq!(readiness["ready"], true, "{body}");
    assert_eq!(readiness["services"]["keys"], "SERVING", "{body}");

    let (status, body) = http_get(admin.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("onionpost_grpc_server_seconds"),
        "gRPC calls are measured: {body}"
    );
}

/// A client span of a gRPC call in `caller` whose child server span is in `callee`, in the
/// same trace (span names are the gRPC method paths).
fn find_hop<'a>(
    spans: &'a [CollectedSpan],
    caller: &str,
    callee: &str,
) -> Option<(&'a CollectedSpan, &'a CollectedSpan)> {
    spans
        .iter()
        .filter(|span| span.service == caller && span.kind == CLIENT && span.name.starts_with('/'))
        .find_map(|client| {
            spans
                .iter()
                .find(|server| {
                    server.service == callee
                        && server.kind == SERVER
                        && server.name == client.name
                        && server.trace_id == client.trace_id
                        && server.parent_span_id == client.span_id
                })
                .map(|server| (client, server))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_checks_in_one_process_and_across_grpc_with_one_trace() {
    let collector = Collector::start().await;
    let env = telemetry_env(&collector);

    // One process running both.
    let mut both = Node::start("admin,keys", &env).await;
    check_carrier(&both, &both).await;
    both.stop().await;
    let spans = collector.spans();
    let (client, server) = find_hop(&spans, "onionpost[admin,keys]", "onionpost[admin,keys]")
        .unwrap_or_else(|| panic!("no in-process grpc hop in exported spans: {spans:#?}"));
    assert_eq!(client.trace_id, server.trace_id);
    collector.clear();

    // The same two as separate processes.
    let mut keys = Node::start("keys", &env).await;
    let mut remote_env = env.clone();
    remote_env.push(("ONIONPOST_REMOTE_KEYS", keys.grpc_url()));
    let mut admin = Node::start("admin", &remote_env).await;
    check_carrier(&admin, &keys).await;
    admin.stop().await;
    keys.stop().await;
    let spans = collector.spans();
    let (client, server) = find_hop(&spans, "onionpost[admin]", "onionpost[keys]")
        .unwrap_or_else(|| panic!("no cross-process grpc hop in exported spans: {spans:#?}"));
    assert_eq!(
        client.trace_id, server.trace_id,
        "the keys process continued the admin process's trace"
    );
    assert_ne!(client.span_id, server.span_id);
}

/// Environment, arguments, and what the one line of error must say.
type BadStart = (
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
    &'static str,
);

#[tokio::test]
async fn bad_configuration_stops_startup_with_one_line() {
    let binary = onionpost_e2e::node::onionpost_binary();
    let cases: [BadStart; 4] = [
        (
            &[("ONIONPOST_ADMIN_LISTN", "127.0.0.1:1")],
            &[],
            "unknown environment variable ONIONPOST_ADMIN_LISTN",
        ),
        (
            &[("ONIONPOST_ADMIN_LISTEN", "localhost")],
            &[],
            "`admin.listen` from environment variable ONIONPOST_ADMIN_LISTEN",
        ),
        (
            &[],
            &["--config", "/nonexistent/onionpost.toml"],
            "cannot read config file /nonexistent/onionpost.toml",
        ),
        (
            &[],
            &["--target", "admin,nonsense"],
            "unknown service `nonsense`",
        ),
    ];
    for (env, args, expected) in cases {
        let output = tokio::process::Command::new(&binary)
            .arg("serve")
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .await
            .expect("running onionpost");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(expected), "{stderr} should say {expected}");
    }
    // An unknown key in the file, with the file named.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("onionpost.toml");
    std::fs::write(&file, "[tor]\ncontrl = \"127.0.0.1:9051\"\n").unwrap();
    let output = tokio::process::Command::new(&binary)
        .args(["serve", "--config"])
        .arg(&file)
        .env_clear()
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown key `tor.contrl`"), "{stderr}");
}
