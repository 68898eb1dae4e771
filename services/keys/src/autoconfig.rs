//! Mail-client autoconfiguration on each identity's own onion: Thunderbird's autoconfig format
//! (`clientConfig` version 1.1, which Delta Chat and K-9/Thunderbird for Android read too),
//! served beside the identity's WKD at both places a client looks for it:
//! `http://<onion>/.well-known/autoconfig/mail/config-v1.1.xml` and
//! `http://autoconfig.<onion>/mail/config-v1.1.xml` (tor ignores the label before the onion).
//!
//! The document names only this onion and its fixed virtual ports (IMAP 143, submission 587,
//! plain: tor encrypts end to end), with the identity's own address as the login
//! (`%EMAILADDRESS%`), which IMAP and submission take on this onion for its owner. Nothing in it
//! depends on the account or on any other identity: the account's login would link every
//! identity of the account, so it never appears.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::Address;
use crate::wkd::{WkdDirectory, host_onion, wkd_hash};

/// The two paths clients ask.
pub const WELL_KNOWN_PATH: &str = "/.well-known/autoconfig/mail/config-v1.1.xml";
pub const SUBDOMAIN_PATH: &str = "/mail/config-v1.1.xml";

/// The autoconfig routes of one identity's onion listener.
pub fn router() -> Router<WkdDirectory> {
    Router::new()
        .route(WELL_KNOWN_PATH, get(serve))
        .route(SUBDOMAIN_PATH, get(serve))
}

#[derive(Debug, Default, Deserialize)]
struct Asked {
    emailaddress: Option<String>,
}

async fn serve(
    State(directory): State<WkdDirectory>,
    headers: HeaderMap,
    Query(asked): Query<Asked>,
) -> Response {
    let Some(onion) = host_onion(&headers).filter(|onion| directory.serves_onion(onion)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // An address asked about must be this identity's (served here); any other is unknown.
    if let Some(text) = asked
        .emailaddress
        .as_deref()
        .filter(|text| !text.is_empty())
    {
        let ours = Address::parse(text).is_ok_and(|address| {
            address.onion() == onion && directory.serves(&onion, &wkd_hash(address.local_part()))
        });
        if !ours {
            return StatusCode::NOT_FOUND.into_response();
        }
    }
    (
        [
            (header::CONTENT_TYPE, "text/xml; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        document(&format!("{onion}.onion")),
    )
        .into_response()
}

/// The clientConfig document for an identity on `host` (`<56 base32>.onion`, which needs no
/// XML escaping).
pub fn document(host: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1">
  <emailProvider id="{host}">
    <domain>{host}</domain>
    <displayName>onionpost ({host})</displayName>
    <displayShortName>onionpost</displayShortName>
    <incomingServer type="imap">
      <hostname>{host}</hostname>
      <port>143</port>
      <socketType>plain</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>{host}</hostname>
      <port>587</port>
      <socketType>plain</socketType>
      <authentication>password-cleartext</authentication>
      <username>%EMAILADDRESS%</username>
    </outgoingServer>
    <documentation url="http://{host}/">
      <descr lang="en">Reach this host through tor's SOCKS proxy; tor encrypts the connection end to end.</descr>
    </documentation>
  </emailProvider>
</clientConfig>
"#
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;
    use crate::identity_key::tests::{alice, bob};

    async fn get(app: Router, host: &str, path: &str) -> (StatusCode, String) {
        let response = app
            .oneshot(
                axum::http::Request::get(path)
                    .header(header::HOST, host)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn each_onion_describes_itself_and_nothing_else() {
        let directory = WkdDirectory::new();
        let address = alice().address();
        directory.publish(address, &alice().public_cert()).unwrap();
        let app = router().with_state(directory);
        let host = address.onion_host();
        let encoded = crate::wkd::percent_encode(&address.to_string());

        for (asked_host, path) in [
            (host.clone(), WELL_KNOWN_PATH.to_owned()),
            (
                host.clone(),
                format!("{WELL_KNOWN_PATH}?emailaddress={encoded}"),
            ),
            (
                format!("autoconfig.{host}"),
                format!("{SUBDOMAIN_PATH}?emailaddress={encoded}"),
            ),
        ] {
            let (status, body) = get(app.clone(), &asked_host, &path).await;
            assert_eq!(status, StatusCode::OK, "{asked_host}{path}");
            assert!(
                body.contains(&format!("<hostname>{host}</hostname>")),
                "{body}"
            );
            assert!(body.contains("<port>143</port>") && body.contains("<port>587</port>"));
            assert_eq!(
                body.matches("<username>%EMAILADDRESS%</username>").count(),
                2
            );
        }
        // Another onion, another local part, another identity's address: nothing.
        let other = bob().address();
        let (status, _) = get(app.clone(), &other.onion_host(), WELL_KNOWN_PATH).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let stranger = format!("mallory@{host}");
        let (status, _) = get(
            app.clone(),
            &host,
            &format!(
                "{WELL_KNOWN_PATH}?emailaddress={}",
                crate::wkd::percent_encode(&stranger)
            ),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = get(
            app,
            &host,
            &format!(
                "{WELL_KNOWN_PATH}?emailaddress={}",
                crate::wkd::percent_encode(&other.to_string())
            ),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
