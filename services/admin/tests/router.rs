//! The admin router in process: authentication on every documented route, problem documents,
//! and input validation that needs no other service (none is registered here, so a request that
//! passes authentication and validation ends in a 503 naming the missing service).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use onionpost_admin::store::{AdminStore, Scope};
use onionpost_admin::{AdminState, api, auth, router};
use onionpost_runtime::{Database, Directory};
use serde_json::{Value, json};
use tower::ServiceExt as _;

struct Fixture {
    app: axum::Router,
    write: String,
    read: String,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let database = Database::open_sqlite(
        &dir.path().join("admin.sqlite3"),
        onionpost_admin::store::MIGRATIONS,
    )
    .await
    .unwrap();
    let store: Arc<dyn AdminStore> = onionpost_admin::store::for_database(database);
    auth::bootstrap(store.as_ref(), Some("operator-token-for-tests"))
        .await
        .unwrap();
    let (_, read) = auth::create_token(store.as_ref(), "reader", Scope::Read)
        .await
        .unwrap();
    let state = AdminState {
        directory: Directory::default(),
        store,
    };
    Fixture {
        app: router(state),
        write: "operator-token-for-tests".to_owned(),
        read,
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn send(
    app: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(
            body.map(|text| Body::from(text.to_owned()))
                .unwrap_or_default(),
        )
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// Every (method, path) in the OpenAPI document, with path parameters filled in.
fn documented_routes() -> Vec<(Method, String)> {
    let document = serde_json::to_value(api::openapi()).unwrap();
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", "some-id")
            .replace("{cid}", "some-contact");
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                routes.push((
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    concrete.clone(),
                ));
            }
        }
    }
    routes
}

fn assert_problem(answer: &Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(
        answer.headers[header::CONTENT_TYPE],
        "application/problem+json",
        "{:?}",
        answer.body
    );
    assert_eq!(answer.body["status"], status.as_u16());
    assert!(
        answer.body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:onionpost:problem:")
    );
    assert!(answer.body["title"].is_string());
    assert!(answer.body["detail"].is_string());
}

#[tokio::test]
async fn every_documented_route_needs_a_token_and_the_right_scope() {
    let fixture = fixture().await;
    let routes = documented_routes();
    assert!(
        routes.len() >= 25,
        "only {} routes documented",
        routes.len()
    );
    for (method, path) in &routes {
        let body = (*method != Method::GET && *method != Method::DELETE).then_some("{}");
        let what = format!("{method} {path}");

        let missing = send(&fixture.app, method.clone(), path, None, body).await;
        assert_problem(&missing, StatusCode::UNAUTHORIZED);
        assert_eq!(
            missing.headers[header::WWW_AUTHENTICATE],
            "Bearer realm=\"onionpost\"",
            "{what}"
        );

        let wrong = send(&fixture.app, method.clone(), path, Some("opk_nope"), body).await;
        assert_problem(&wrong, StatusCode::UNAUTHORIZED);
        assert!(
            wrong.headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token"),
            "{what}"
        );

        let read = send(
            &fixture.app,
            method.clone(),
            path,
            Some(&fixture.read),
            body,
        )
        .await;
        if *method == Method::GET {
            assert!(
                read.status != StatusCode::UNAUTHORIZED && read.status != StatusCode::FORBIDDEN,
                "{what} with a read token: {}",
                read.status
            );
        } else {
            assert_problem(&read, StatusCode::FORBIDDEN);
            assert!(
                read.headers[header::WWW_AUTHENTICATE]
                    .to_str()
                    .unwrap()
                    .contains("insufficient_scope"),
                "{what}"
            );
        }

        let write = send(
            &fixture.app,
            method.clone(),
            path,
            Some(&fixture.write),
            body,
        )
        .await;
        assert!(
            write.status != StatusCode::UNAUTHORIZED && write.status != StatusCode::FORBIDDEN,
            "{what} with the operator token: {}",
            write.status
        );
    }
}

#[tokio::test]
async fn invalid_input_gets_a_problem_naming_the_field() {
    let fixture = fixture().await;
    let token = Some(fixture.write.as_str());
    let app = &fixture.app;

    let bad_json = send(
        app,
        Method::POST,
        "/v1/accounts",
        token,
        Some("{\"login\": "),
    )
    .await;
    assert_problem(&bad_json, StatusCode::BAD_REQUEST);
    assert!(bad_json.body["field"].is_string(), "{:?}", bad_json.body);

    let unknown = send(
        app,
        Method::POST,
        "/v1/accounts",
        token,
        Some(r#"{"login": "alice", "password": "long enough", "admin": true}"#),
    )
    .await;
    assert_problem(&unknown, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown.body["field"], "admin");

    let wrong_type = send(
        app,
        Method::POST,
        "/v1/accounts",
        token,
        Some(r#"{"login": 5, "password": "long enough"}"#),
    )
    .await;
    assert_problem(&wrong_type, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong_type.body["field"], "login");

    let missing = send(
        app,
        Method::POST,
        "/v1/accounts",
        token,
        Some(r#"{"login": "alice"}"#),
    )
    .await;
    assert_problem(&missing, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(missing.body["field"], "password");

    let overlong = json!({"login": "a".repeat(65), "password": "long enough"}).to_string();
    let overlong = send(app, Method::POST, "/v1/accounts", token, Some(&overlong)).await;
    assert_problem(&overlong, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(overlong.body["field"], "login");

    // tor's example onion with one character changed: base32, 56 characters, bad checksum.
    let good = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion";
    let bad = good.replacen('p', "q", 1);
    let contact = json!({"address": format!("bob@{bad}")}).to_string();
    let answer = send(
        app,
        Method::POST,
        "/v1/accounts/a1/contacts",
        token,
        Some(&contact),
    )
    .await;
    assert_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.body["field"], "address");
    assert!(answer.body["detail"].as_str().unwrap().contains("checksum"));

    let carriers =
        json!({"address": format!("bob@{good}"), "designated_carriers": [good, bad]}).to_string();
    let answer = send(
        app,
        Method::POST,
        "/v1/accounts/a1/contacts",
        token,
        Some(&carriers),
    )
    .await;
    assert_problem(&answer, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.body["field"], "designated_carriers[1]");

    let not_json = send_text(app, "/v1/tokens", token).await;
    assert_problem(&not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let bad_limit = send(app, Method::GET, "/v1/accounts?limit=nope", token, None).await;
    assert_problem(&bad_limit, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_limit.body["field"], "limit");

    let no_route = send(app, Method::GET, "/v1/nothing-here", token, None).await;
    assert_problem(&no_route, StatusCode::NOT_FOUND);
}

async fn send_text(app: &axum::Router, path: &str, token: Option<&str>) -> Answer {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", token.unwrap_or_default()),
        )
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("name=x"))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

#[tokio::test]
async fn a_missing_service_is_a_503_that_names_it_and_nothing_more() {
    let fixture = fixture().await;
    let answer = send(
        &fixture.app,
        Method::POST,
        "/v1/accounts",
        Some(&fixture.write),
        Some(r#"{"login": "alice", "password": "long enough"}"#),
    )
    .await;
    assert_problem(&answer, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["detail"], "the imap service is unavailable");
}

#[tokio::test]
async fn internal_grpc_errors_never_reach_the_caller() {
    use onionpost_admin::error::AdminError;
    use onionpost_proto::ServiceName;
    let leaky = tonic::Status::internal(
        "sqlx: relation \"accounts\" violates constraint at src/store.rs:42",
    );
    let problem = AdminError::from_status(ServiceName::Imap, leaky).problem();
    assert_eq!(problem.status, 500);
    assert_eq!(problem.detail, "internal error");
    let cases = [
        (tonic::Status::not_found("no such account"), 404),
        (tonic::Status::already_exists("login taken"), 409),
        (tonic::Status::failed_precondition("plan limit"), 409),
        (tonic::Status::invalid_argument("bad plan"), 422),
        (
            tonic::Status::unavailable("connection refused 10.0.0.3"),
            503,
        ),
        (tonic::Status::unknown("panic at foo.rs"), 500),
    ];
    for (status, code) in cases {
        let problem = AdminError::from_status(ServiceName::Imap, status).problem();
        assert_eq!(problem.status, code, "{problem:?}");
        assert!(!problem.detail.contains("10.0.0.3") && !problem.detail.contains(".rs"));
    }
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_and_shown_once() {
    let fixture = fixture().await;
    let app = &fixture.app;
    let token = Some(fixture.write.as_str());
    let created = send(
        app,
        Method::POST,
        "/v1/tokens",
        token,
        Some(r#"{"name": "ci", "scope": "read"}"#),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let secret = created.body["token"].as_str().unwrap().to_owned();
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("opk_") && secret.len() == 68);

    let listed = send(app, Method::GET, "/v1/tokens", Some(&secret), None).await;
    assert_eq!(listed.status, StatusCode::OK);
    let tokens = listed.body["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 3, "{tokens:?}");
    assert!(
        tokens.iter().all(|t| t.get("token").is_none()),
        "never shown again"
    );

    let forbidden = send(
        app,
        Method::DELETE,
        &format!("/v1/tokens/{id}"),
        Some(&secret),
        None,
    )
    .await;
    assert_problem(&forbidden, StatusCode::FORBIDDEN);
    let revoked = send(
        app,
        Method::DELETE,
        &format!("/v1/tokens/{id}"),
        token,
        None,
    )
    .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let after = send(app, Method::GET, "/v1/tokens", Some(&secret), None).await;
    assert_problem(&after, StatusCode::UNAUTHORIZED);
    let again = send(
        app,
        Method::DELETE,
        &format!("/v1/tokens/{id}"),
        token,
        None,
    )
    .await;
    assert_problem(&again, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn openapi_and_docs_are_served_without_a_token() {
    let fixture = fixture().await;
    let document = send(&fixture.app, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(document.status, StatusCode::OK);
    assert!(document.body["openapi"].as_str().unwrap().starts_with("3."));
    assert!(document.body["components"]["securitySchemes"]["bearer"].is_object());
    let request = Request::builder().uri("/docs").body(Body::empty()).unwrap();
    let response = fixture.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(html.contains("fetch(\"/openapi.json\")"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from elsewhere"
    );
}
