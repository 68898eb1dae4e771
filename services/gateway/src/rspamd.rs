//! Scoring inbound clearnet mail with rspamd (issue 22), when `gateway.rspamd` names a worker.
//!
//! rspamd's HTTP protocol (`POST /checkv2`, the message as the body, the envelope in headers:
//! `IP`, `Helo`, `From`, `Rcpt`) answers a JSON verdict with an `action`. Written here on hyper,
//! which the workspace already has for WKD: the protocol is one request, and no rspamd client
//! crate is kept up. The verdict goes into an `X-Spam-Status` header that the gateway writes
//! (any such header from outside is dropped first), and spam is delivered to the account's Junk
//! mailbox: rspamd's `reject` is not refused at the gateway, since a false positive in Junk is
//! found and one refused is lost. When rspamd cannot be reached the message is taken unscored
//! (`X-Spam-Status: Unchecked`), as rspamd's own milter default does: an outage of the scorer
//! must not defer every inbound message.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use onionpost_runtime::config::HostPort;
use serde::Deserialize;

/// The longest a scan may take (rspamd's own task timeout is 8 s).
const SCAN_TIMEOUT: Duration = Duration::from_secs(15);
/// The most of rspamd's answer read.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// What rspamd said about one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub action: String,
    pub score: f64,
    pub required_score: f64,
}

impl Verdict {
    /// rspamd's actions that mean spam (`greylist` and `soft reject` ask for a retry, which
    /// is no verdict on the content; `no action` is ham).
    pub fn is_spam(&self) -> bool {
        matches!(
            self.action.as_str(),
            "reject" | "add header" | "rewrite subject"
        )
    }

    /// The value of the `X-Spam-Status` header the gateway adds.
    pub fn header_value(&self) -> String {
        format!(
            "{}, score={:.2} required={:.2} action=\"{}\" (rspamd)",
            if self.is_spam() { "Yes" } else { "No" },
            self.score,
            self.required_score,
            self.action.replace(['"', '\r', '\n'], "")
        )
    }
}

#[derive(Deserialize)]
struct Answer {
    action: String,
    #[serde(default)]
    score: f64,
    #[serde(default)]
    required_score: f64,
}

/// The envelope rspamd is told about.
pub struct Envelope<'a> {
    pub peer: IpAddr,
    pub helo: &'a str,
    pub mail_from: &'a str,
    pub recipients: Vec<&'a str>,
}

/// Asks the rspamd worker at `at` about `message`.
pub async fn scan(
    at: &HostPort,
    envelope: &Envelope<'_>,
    message: &[u8],
) -> anyhow::Result<Verdict> {
    tokio::time::timeout(SCAN_TIMEOUT, ask(at, envelope, message))
        .await
        .map_err(|_| anyhow::anyhow!("rspamd did not answer within {SCAN_TIMEOUT:?}"))?
}

async fn ask(at: &HostPort, envelope: &Envelope<'_>, message: &[u8]) -> anyhow::Result<Verdict> {
    let stream = tokio::net::TcpStream::connect((at.host.as_str(), at.port)).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "rspamd connection ended");
        }
    });
    let printable = |text: &str| text.chars().all(|c| c.is_ascii_graphic() || c == ' ');
    let mut request = Request::post("/checkv2")
        .header(hyper::header::HOST, format!("{}:{}", at.host, at.port))
        .header("IP", envelope.peer.to_string())
        .header("Pass", "all");
    if printable(envelope.helo) && !envelope.helo.is_empty() {
        request = request.header("Helo", envelope.helo);
    }
    if printable(envelope.mail_from) && !envelope.mail_from.is_empty() {
        request = request.header("From", envelope.mail_from);
    }
    for recipient in &envelope.recipients {
        if printable(recipient) {
            request = request.header("Rcpt", *recipient);
        }
    }
    let request = request.body(Full::new(Bytes::copy_from_slice(message)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|error| anyhow::anyhow!("reading rspamd's answer: {error}"))?
        .to_bytes();
    anyhow::ensure!(status.is_success(), "rspamd answered {status}");
    let answer: Answer = serde_json::from_slice(&body)?;
    Ok(Verdict {
        action: answer.action,
        score: answer.score,
        required_score: answer.required_score,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_that_mean_spam() {
        let verdict = |action: &str| Verdict {
            action: action.to_owned(),
            score: 15.0,
            required_score: 15.0,
        };
        assert!(verdict("reject").is_spam());
        assert!(verdict("add header").is_spam());
        assert!(!verdict("no action").is_spam());
        assert!(!verdict("greylist").is_spam());
        assert_eq!(
            verdict("reject").header_value(),
            "Yes, score=15.00 required=15.00 action=\"reject\" (rspamd)"
        );
    }
}
