//! TLS to the database server, with the session's certificate pin: rustls (ring) and a
//! verifier that checks the server's certificate against `server-certificate`, the SHA-256
//! of the certificate the gateway pinned, as SSH's `host-key` pins a host key.
//!
//! * With a pin, the server must offer TLS and its certificate must be one of the pins;
//!   otherwise the connection ends during the handshake, before any credential is sent.
//!   The handshake's signature is still checked against the certificate's key, so only the
//!   holder of the pinned certificate's private key passes.
//! * Without a pin, any certificate is accepted (the session's traffic is encrypted against
//!   a passive observer, not against a machine in the middle) and its fingerprint is
//!   reported (`db_connected`), for the gateway to pin. No CA is consulted: a database's
//!   certificate is usually self-signed or from a private CA, and a pin says more than a
//!   name.
//!
//! PostgreSQL through tokio-postgres's [`MakeTlsConnect`] with this verifier. MySQL and
//! MariaDB through mysql_async's own rustls set-up, which takes no verifier: there the pin
//! must be the certificate itself (PEM), made mysql_async's only trust anchor with the name
//! check off, and an unpinned connection cannot report the certificate it saw. SQL Server
//! through [`crate::tds`], which runs the handshake with this verifier below tiberius.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// A certificate's SHA-256.
pub type Fingerprint = [u8; 32];

/// What `server-certificate` pins: fingerprints, and the certificates themselves when it
/// holds them (PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pinned {
    /// The SHA-256 of each pinned certificate.
    pub fingerprints: Vec<Fingerprint>,
    /// The pinned certificates (DER), when `server-certificate` held them (PEM).
    pub certificates: Vec<Vec<u8>>,
}

/// Reads `server-certificate`: PEM certificates (`-----BEGIN CERTIFICATE-----`), or SHA-256
/// fingerprints (see [`parse_pins`]).
pub fn parse_server_certificate(text: &str) -> Result<Pinned, &'static str> {
    use rustls::pki_types::pem::PemObject as _;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Ok(Pinned {
            fingerprints: parse_pins(text)?,
            certificates: Vec::new(),
        });
    }
    let mut pinned = Pinned::default();
    for certificate in CertificateDer::pem_slice_iter(text.as_bytes()) {
        let certificate = certificate.map_err(|_| "holds a PEM certificate that cannot be read")?;
        if pinned.certificates.len() == 16 {
            return Err("holds more than 16 certificates");
        }
        pinned
            .fingerprints
            .push(Sha256::digest(certificate.as_ref()).into());
        pinned.certificates.push(certificate.as_ref().to_vec());
    }
    if pinned.certificates.is_empty() {
        return Err("holds no certificate");
    }
    Ok(pinned)
}

/// Reads one or more SHA-256 fingerprints of the server's
/// certificate, separated by spaces or commas, each as hex (colons allowed, as `openssl x509
/// -fingerprint -sha256` prints it, with or without its `sha256 Fingerprint=`) or as
/// `SHA256:` and base64.
pub fn parse_pins(text: &str) -> Result<Vec<Fingerprint>, &'static str> {
    use base64::Engine as _;
    let mut pins = Vec::new();
    let words = text
        .split([' ', ',', '\n', '\r', '\t'])
        .filter(|w| !w.is_empty() && !w.eq_ignore_ascii_case("sha256"));
    for word in words {
        // `openssl x509 -fingerprint -sha256` prints `sha256 Fingerprint=AB:CD:...`.
        let word = match word.split_once('=') {
            Some((label, value)) if label.eq_ignore_ascii_case("fingerprint") => value,
            _ => word,
        };
        let bytes = if let Some(b64) = word.strip_prefix("SHA256:") {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64.trim_end_matches('='))
                .map_err(|_| "must be SHA-256 fingerprints (hex, or SHA256: and base64)")?
        } else {
            let hex: String = word.chars().filter(|c| *c != ':').collect();
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err("must be SHA-256 fingerprints (hex, or SHA256: and base64)");
            }
            (0..32)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
                .collect()
        };
        let pin: Fingerprint = bytes
            .try_into()
            .map_err(|_| "must be SHA-256 fingerprints (32 bytes each)")?;
        if pins.len() == 16 {
            return Err("holds more than 16 fingerprints");
        }
        pins.push(pin);
    }
    if pins.is_empty() {
        return Err("holds no fingerprint");
    }
    Ok(pins)
}

/// A fingerprint as the audit shows it: `SHA256:` and unpadded base64, as for SSH keys.
pub fn display(fingerprint: &Fingerprint) -> String {
    use base64::Engine as _;
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(fingerprint)
    )
}

/// Checks the server's certificate against the pins and remembers what it saw.
#[derive(Debug)]
struct PinVerifier {
    pins: Vec<Fingerprint>,
    seen: Arc<Mutex<Option<Fingerprint>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fingerprint: Fingerprint = Sha256::digest(end_entity.as_ref()).into();
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(fingerprint);
        }
        if self.pins.is_empty() || self.pins.contains(&fingerprint) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS for one session's connections: its pins, and the certificate the last handshake saw.
#[derive(Clone)]
pub struct Tls {
    config: Arc<rustls::ClientConfig>,
    seen: Arc<Mutex<Option<Fingerprint>>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// TLS that accepts a certificate among `pins` (any, when there is none).
    pub fn new(pins: Vec<Fingerprint>) -> Result<Self, rustls::Error> {
        Self::with_versions(pins, rustls::DEFAULT_VERSIONS)
    }

    /// The same, offering only `versions`.
    pub fn with_versions(
        pins: Vec<Fingerprint>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = Arc::new(Mutex::new(None));
        let verifier = PinVerifier {
            pins,
            seen: seen.clone(),
            provider: provider.clone(),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            seen,
        })
    }

    /// A connector with the session's verifier.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// The fingerprint of the certificate the last handshake presented.
    pub fn seen(&self) -> Option<Fingerprint> {
        self.seen.lock().ok().and_then(|s| *s)
    }
}

impl<S> MakeTlsConnect<S> for Tls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Connect, Self::Error> {
        let name = ServerName::try_from(domain.to_owned())?;
        Ok(Connect {
            connector: self.connector(),
            name,
        })
    }
}

/// One connection's handshake.
pub struct Connect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream<S>, std::io::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = self.connector.connect(self.name, stream).await?;
            Ok(TlsStream(stream))
        })
    }
}

/// A TLS connection to the server.
pub struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_read_in_the_usual_spellings() {
        let hex = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        let want = [0xABu8; 32];
        assert_eq!(parse_pins(&hex), Ok(vec![want]));
        assert_eq!(
            parse_pins(&format!("sha256 Fingerprint={colons}")),
            Ok(vec![want])
        );
        assert_eq!(parse_pins(&display(&want)), Ok(vec![want]));
        assert_eq!(
            parse_pins(&format!("{hex}, {}", display(&[1; 32]))).map(|p| p.len()),
            Ok(2)
        );
        assert!(parse_pins("").is_err());
        assert!(parse_pins("abcd").is_err());
        assert!(parse_pins("SHA256:abc").is_err());
        assert!(parse_pins(&format!("{hex} ").repeat(17)).is_err());
    }

    #[test]
    fn pem_certificates_are_pinned_with_their_fingerprints() {
        let der = b"not really DER, but PEM carries any bytes".to_vec();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(&der)
            }
        );
        let pinned = parse_server_certificate(&pem).unwrap();
        assert_eq!(pinned.certificates, vec![der.clone()]);
        assert_eq!(
            pinned.fingerprints,
            vec![<Fingerprint>::from(Sha256::digest(&der))]
        );
        assert!(parse_server_certificate("-----BEGIN CERTIFICATE-----\n!!\n").is_err());
        let hex = "AB".repeat(32);
        assert_eq!(
            parse_server_certificate(&hex).unwrap().certificates.len(),
            0
        );
    }
}
