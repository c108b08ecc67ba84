//! The connection to the API server: TCP, TLS with the session's trust and credentials, the
//! exec or attach request and its WebSocket upgrade.
//!
//! ```text
//!  TcpStream ─▶ rustls (ring, ALPN http/1.1, client certificate) ─▶ hyper http1 ─▶ GET …/exec
//!                                                                      │ 101 + one of OFFER
//!                                                                      ▼
//!                                                   tungstenite WebSocket on the upgraded stream
//! ```
//!
//! hyper, not tungstenite's own client handshake, sends the request: a refused upgrade is a
//! plain HTTP answer whose body (a `metav1.Status`) says why, and hyper reads that body to
//! its end, bounded, where tungstenite keeps only what came with the headers. The upgrade's
//! answer is checked as RFC 6455 asks (`Sec-WebSocket-Accept`) and its subprotocol must be one
//! offered.
//!
//! Everything up to the upgrade happens within [`CONNECT_TIMEOUT`]. The token goes in a
//! header hyper marks sensitive; neither it nor the client key is ever logged or put in an
//! error.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::header::{self, HeaderValue};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::either::Either;

use crate::channel::{OFFER, Protocol};
use crate::error::Error;
use crate::request::path_and_query;
use crate::settings::{Credentials, K8sSettings, ServerTrust};

/// How long the TCP connection, TLS and the upgrade may take together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a refusal's body read (a Status is a few hundred bytes).
const MAX_REFUSAL_BODY: usize = 64 * 1024;
/// The largest WebSocket message or frame accepted from the server (the kubelet writes at
/// most 32 KiB of output per message).
const MAX_MESSAGE: usize = 1024 * 1024;

/// The stream under the WebSocket.
type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

/// An exec or attach the API server accepted.
pub struct K8sConnection {
    pub(crate) socket: WebSocketStream<Upgraded>,
    pub(crate) protocol: Protocol,
    tls: &'static str,
}

impl std::fmt::Debug for K8sConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("K8sConnection")
            .field("protocol", &self.protocol)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl K8sConnection {
    /// The subprotocol the server chose.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// How the server was authenticated, as the audit log names it: `ca_cert`,
    /// `public_roots`, `unverified` (`ignore-cert`) or `none` (plain HTTP).
    pub fn tls(&self) -> &'static str {
        self.tls
    }
}

/// Opens the settings' exec or attach on the API server at `host`:`port`.
pub async fn connect(
    host: &str,
    port: u16,
    settings: &K8sSettings,
) -> Result<K8sConnection, Error> {
    tokio::time::timeout(CONNECT_TIMEOUT, open(host, port, settings))
        .await
        .map_err(|_| Error::Timeout(CONNECT_TIMEOUT))?
}

async fn open(host: &str, port: u16, settings: &K8sSettings) -> Result<K8sConnection, Error> {
    let path = path_and_query(&settings.target, &settings.call)?;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| Error::Unreachable(e.kind()))?;
    // Keys go out as they are typed.
    let _ = tcp.set_nodelay(true);
    let (stream, tls) = match &settings.trust {
        ServerTrust::Plain => (Either::Left(tcp), "none"),
        trust => {
            let config = client_config(trust, &settings.credentials)?;
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| Error::ServerCertificate("the target is not a host name".into()))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| tls_error(&e).unwrap_or_else(|| Error::Io(e.kind().to_string())))?;
            let tls = match trust {
                ServerTrust::Pinned(_) => "ca_cert",
                ServerTrust::PublicRoots => "public_roots",
                _ => "unverified",
            };
            (Either::Right(stream), tls)
        }
    };

    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http_error(&e))?;
    // The connection task ends with the upgrade (or the refusal): it hands the stream over.
    let driver = tokio::spawn(connection.with_upgrades());
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = hyper::Request::get(path)
        .header(header::HOST, authority)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, key.as_str())
        .header(header::SEC_WEBSOCKET_PROTOCOL, OFFER)
        .header(header::USER_AGENT, "ztproxy")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Error::Protocol(e.to_string()))?;
    if let Credentials::Token(token) = &settings.credentials {
        let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose_secret()))
            .map_err(|_| Error::Protocol("the bearer token is not a header value".into()))?;
        value.set_sensitive(true);
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| http_error(&e))?;

    if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let code = response.status().as_u16();
        let body = match Limited::new(response.into_body(), MAX_REFUSAL_BODY)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            // Cut short or too long: the status alone still says something.
            Err(_) => Bytes::new(),
        };
        driver.abort();
        return Err(Error::Refused {
            code,
            message: crate::status::refusal(code, &body),
        });
    }
    let headers = response.headers();
    let accept = headers
        .get(header::SEC_WEBSOCKET_ACCEPT)
        .and_then(|v| v.to_str().ok());
    let expected = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    if accept != Some(expected.as_str()) {
        return Err(Error::Protocol(
            "the upgrade's Sec-WebSocket-Accept does not answer the request".into(),
        ));
    }
    let protocol = Protocol::chosen(
        headers
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok()),
    )?;
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| http_error(&e))?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, Some(config)).await;
    Ok(K8sConnection {
        socket,
        protocol,
        tls,
    })
}

/// TLS as the settings ask: the server checked against `ca-cert`, Mozilla's roots or not at
/// all; the client certificate when there is one; HTTP/1.1 only (the upgrade needs it).
fn client_config(
    trust: &ServerTrust,
    credentials: &Credentials,
) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::TlsRefused(e.to_string()))?;
    let builder = match trust {
        ServerTrust::Pinned(certificates) => {
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certificates.iter().cloned());
            if added == 0 {
                return Err(Error::ServerCertificate(
                    "ca-cert holds no usable CA certificate".into(),
                ));
            }
            builder.with_root_certificates(roots)
        }
        ServerTrust::PublicRoots => builder.with_root_certificates(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
    };
    let mut config = match credentials {
        Credentials::ClientCertificate { chain, .. } => {
            let key = credentials
                .client_key()
                .ok_or_else(|| Error::TlsRefused("client-key cannot be read".into()))?;
            builder
                .with_client_auth_cert(chain.clone(), key)
                .map_err(|_| {
                    Error::TlsRefused(
                        "client-key does not match client-cert, or is not usable".into(),
                    )
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The words for a failed TLS handshake or a TLS alert, when `error` is one.
fn tls_error(error: &std::io::Error) -> Option<Error> {
    let tls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidCertificate(why) => Error::ServerCertificate(format!("{why:?}")),
        rustls::Error::AlertReceived(alert) => Error::TlsRefused(format!("TLS alert {alert:?}")),
        other => Error::TlsRefused(other.to_string()),
    })
}

/// A hyper error as ours: TLS failures inside it (TLS 1.3 refuses a client certificate after
/// the handshake, at the first read) keep their words.
fn http_error(error: &hyper::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(tls) = tls_error(io)
        {
            return tls;
        }
        source = e.source();
    }
    if error.is_incomplete_message() || error.is_closed() {
        return Error::Io("the API server closed the connection before answering".into());
    }
    Error::Io(error.to_string())
}

/// `ignore-cert`: any certificate, its handshake signature still checked.
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
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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
