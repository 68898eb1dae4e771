//! Delivery of one signed message to one clearnet recipient: by MX lookup (RFC 5321 §5.1: MX
//! records by preference, else the domain's own address; a null MX, RFC 7505, refuses) or
//! through the configured smarthost. The SMTP conversation is smtp-out's session, with STARTTLS
//! whenever the server offers it.
//!
//! TLS towards MX hosts is opportunistic (RFC 7435): certificates are not checked, because MX
//! host names rarely match their certificates and refusing would only push mail to plaintext;
//! it still keeps passive observers out. Towards the smarthost, where a password is sent,
//! STARTTLS is required and the certificate is checked against the system's roots.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mail_auth::common::cache::NoCache;
use mail_auth::{IpLookupStrategy, MX, MessageAuthenticator, RecordSet};
use onionpost_proto::address::is_onion_name;
use onionpost_runtime::config::{HostPort, Secret};
use onionpost_smtp_client::{
    self as session, Envelope, Outcome, Recipient, Reply, SessionError, StartTls, Timeouts, Upgrade,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How long to wait for a TCP connection to one address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Addresses tried per MX host.
const ADDRESSES_PER_HOST: usize = 3;

/// Where outbound mail goes.
#[derive(Clone)]
pub enum Route {
    /// MX lookup; `port` is 25 except in tests.
    Mx { port: u16 },
    /// Every message to one relay, with AUTH when credentials are set.
    Smarthost {
        host: HostPort,
        auth: Option<(String, Secret)>,
    },
}

/// What happened to one recipient.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub outcome: Outcome,
    /// Set when no SMTP session gave an answer (DNS, connection, TLS).
    pub connection_error: Option<String>,
}

/// The outbound side: resolver, route, TLS and the EHLO name.
#[derive(Clone)]
pub struct Outbound {
    resolver: Arc<MessageAuthenticator>,
    route: Route,
    /// The gateway domain: the name the gateway greets with (RFC 5321 §4.1.1.1).
    ehlo_name: String,
    timeouts: Timeouts,
    opportunistic: TlsConnector,
    verified: Option<TlsConnector>,
}

impl Outbound {
    pub fn new(
        resolver: Arc<MessageAuthenticator>,
        route: Route,
        ehlo_name: &str,
    ) -> anyhow::Result<Self> {
        let provider = Arc::new(ring::default_provider());
        let opportunistic = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
            .with_no_client_auth();
        let verified = match &route {
            Route::Smarthost { .. } => {
                let mut roots = RootCertStore::empty();
                let loaded = rustls_native_certs::load_native_certs();
                for cert in loaded.certs {
                    let _ = roots.add(cert);
                }
                let config = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(TlsConnector::from(Arc::new(config)))
            }
            Route::Mx { .. } => None,
        };
        Ok(Outbound {
            resolver,
            route,
            ehlo_name: ehlo_name.to_owned(),
            timeouts: Timeouts::default(),
            opportunistic: TlsConnector::from(Arc::new(opportunistic)),
            verified,
        })
    }

    /// Delivers `message` from `reverse_path` to `recipient`.
    pub async fn deliver(
        &self,
        reverse_path: &str,
        recipient: &str,
        message: &[u8],
        envelope_id: &str,
    ) -> Delivery {
        let envelope = Envelope {
            reverse_path: reverse_path.to_owned(),
            recipients: vec![Recipient {
                address: recipient.to_owned(),
                notify: Vec::new(),
                original_recipient: String::new(),
                stamp: None,
            }],
            envelope_id: envelope_id.to_owned(),
            dsn_return: None,
        };
        match &self.route {
            Route::Smarthost { host, auth } => {
                let targets = match self.addresses(&host.host, host.port).await {
                    Ok(targets) => targets,
                    Err(text) => return temporary(&text),
                };
                let upgrade = Upgrade {
                    tls: self.verified.as_ref().map(|connector| StartTls {
                        connector: connector.clone(),
                        server_name: server_name(&host.host),
                        required: true,
                    }),
                    auth: auth
                        .as_ref()
                        .map(|(user, password)| (user.clone(), password.expose().to_owned())),
                    ehlo_name: self.ehlo_name.clone(),
                };
                self.try_hosts(
                    &[(host.host.clone(), targets)],
                    &upgrade,
                    &envelope,
                    message,
                )
                .await
            }
            Route::Mx { port } => {
                let domain = recipient
                    .rsplit_once('@')
                    .map(|(_, domain)| domain.trim_end_matches('.').to_ascii_lowercase())
                    .unwrap_or_default();
                let hosts = match self.mx_hosts(&domain).await {
                    Ok(hosts) => hosts,
                    Err(failure) => return failure,
                };
                let mut resolved = Vec::new();
                for host in hosts {
                    if let Ok(addresses) = self.addresses(&host, *port).await {
                        resolved.push((host, addresses));
                    }
                }
                if resolved.is_empty() {
                    return temporary(&format!("no address for any mail exchanger of {domain}"));
                }
                let upgrade = Upgrade {
                    tls: None,
                    auth: None,
                    ehlo_name: self.ehlo_name.clone(),
                };
                self.try_hosts(&resolved, &upgrade, &envelope, message)
                    .await
            }
        }
    }

    /// The mail exchangers of `domain` by preference; the domain itself when it has none.
    async fn mx_hosts(&self, domain: &str) -> Result<Vec<String>, Delivery> {
        if domain.is_empty() || is_onion_name(domain) || crate::alias::is_ip_like(domain) {
            return Err(permanent("5.1.2", "not a clearnet domain"));
        }
        let records: Result<RecordSet<MX>, _> = self
            .resolver
            .mx_lookup(domain, None::<&NoCache<Box<str>, RecordSet<MX>>>)
            .await;
        match records {
            Ok(records) if !records.rrset.is_empty() => {
                let hosts: Vec<String> = records
                    .rrset
                    .iter()
                    .flat_map(|mx| mx.exchanges.iter())
                    .map(|host| host.trim_end_matches('.').to_owned())
                    .collect();
                // RFC 7505: a single MX of "." says the domain takes no mail.
                if hosts.iter().all(String::is_empty) {
                    return Err(permanent(
                        "5.1.10",
                        "the recipient's domain accepts no mail",
                    ));
                }
                let clearnet = clearnet_exchanges(hosts);
                if clearnet.is_empty() {
                    return Err(permanent(
                        "5.1.2",
                        "the recipient's mail exchangers are not clearnet hosts",
                    ));
                }
                Ok(clearnet)
            }
            Ok(_) | Err(mail_auth::Error::Dns(mail_auth::DnsError::RecordNotFound(_))) => {
                Ok(vec![domain.to_owned()])
            }
            Err(error) => Err(temporary(&format!(
                "MX lookup for {domain} failed: {error}"
            ))),
        }
    }

    /// The addresses of `host` (an IP literal stays as it is).
    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let found = self
            .resolver
            .ip_lookup(
                host,
                IpLookupStrategy::Ipv4thenIpv6,
                ADDRESSES_PER_HOST,
                None::<&NoCache<Box<str>, RecordSet<std::net::Ipv4Addr>>>,
                None::<&NoCache<Box<str>, RecordSet<std::net::Ipv6Addr>>>,
            )
            .await
            .map_err(|error| format!("address lookup for {host} failed: {error}"))?;
        Ok(found
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// Tries each host's addresses in order until one session gives SMTP answers.
    async fn try_hosts(
        &self,
        hosts: &[(String, Vec<SocketAddr>)],
        upgrade: &Upgrade,
        envelope: &Envelope,
        message: &[u8],
    ) -> Delivery {
        let mut last_error = String::from("no address to connect to");
        for (host, addresses) in hosts {
            for address in addresses {
                let stream = match tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    TcpStream::connect(address),
                )
                .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        last_error = format!("connecting to {host}: {error}");
                        continue;
                    }
                    Err(_) => {
                        last_error = format!("connecting to {host}: timed out");
                        continue;
                    }
                };
                let mut upgrade = upgrade.clone();
                if upgrade.tls.is_none() {
                    upgrade.tls = Some(StartTls {
                        connector: self.opportunistic.clone(),
                        server_name: server_name(host),
                        required: false,
                    });
                }
                match session::deliver_with(stream, envelope, message, self.timeouts, &upgrade)
                    .await
                {
                    Ok(result) => {
                        let outcome = result.outcomes.into_iter().next().unwrap_or_else(|| {
                            Outcome::Temporary(local_reply("the server gave no answer"))
                        });
                        return Delivery {
                            outcome,
                            connection_error: None,
                        };
                    }
                    // The server's own refusal of the session is its answer.
                    Err(SessionError::Refused(reply) | SessionError::AuthRefused(reply)) => {
                        let outcome = if reply.is_permanent() {
                            Outcome::Permanent(reply)
                        } else {
                            Outcome::Temporary(reply)
                        };
                        return Delivery {
                            outcome,
                            connection_error: None,
                        };
                    }
                    Err(error) => last_error = format!("{host}: {error}"),
                }
            }
        }
        temporary(&last_error)
    }
}

/// The exchanges of an MX answer the gateway may connect to. An exchange under `.onion` is never
/// resolved (design: no DNS for `.onion`, ever), and one written as an IP address is no host
/// name (RFC 5321 §5.1: an MX names a host) and could point inside the carrier's network.
fn clearnet_exchanges(hosts: Vec<String>) -> Vec<String> {
    hosts
        .into_iter()
        .filter(|host| !host.is_empty() && !is_onion_name(host) && !crate::alias::is_ip_like(host))
        .collect()
}

fn server_name(host: &str) -> ServerName<'static> {
    ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| ServerName::try_from("invalid.invalid".to_owned()).expect("valid name"))
}

fn local_reply(text: &str) -> Reply {
    Reply {
        code: 451,
        enhanced_status: "4.4.1".into(),
        text: text.to_owned(),
    }
}

fn temporary(text: &str) -> Delivery {
    Delivery {
        outcome: Outcome::Temporary(local_reply(text)),
        connection_error: Some(text.to_owned()),
    }
}

fn permanent(enhanced: &str, text: &str) -> Delivery {
    Delivery {
        outcome: Outcome::Permanent(Reply {
            code: 550,
            enhanced_status: enhanced.to_owned(),
            text: text.to_owned(),
        }),
        connection_error: Some(text.to_owned()),
    }
}

/// Accepts any certificate (opportunistic TLS, RFC 7435), still checking that the server holds
/// the key of the certificate it showed.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onion_and_ip_exchanges_are_never_resolved() {
        let hosts = [
            "mx.example.test",
            "mx.onion",
            "www.ABC.Onion",
            "127.0.0.1",
            "10.0.0.1",
            "::1",
            "",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(clearnet_exchanges(hosts), ["mx.example.test"]);
    }

    #[tokio::test]
    async fn onion_names_and_ip_addresses_are_refused_before_any_lookup() {
        // A resolver that would answer nothing: the refusal must come before it is asked.
        let resolver =
            Arc::new(crate::dns::authenticator(Some("127.0.0.1:9".parse().unwrap())).unwrap());
        let outbound = Outbound::new(resolver, Route::Mx { port: 25 }, "gw.example").unwrap();
        for domain in ["x.onion", "www.x.onion.", "127.0.0.1", "10.0.0.1"] {
            let Err(refusal) = outbound.mx_hosts(domain).await else {
                panic!("{domain} was looked up");
            };
            assert!(
                matches!(&refusal.outcome, Outcome::Permanent(reply) if reply.enhanced_status == "5.1.2"),
                "{domain}: {refusal:?}"
            );
        }
    }
}
