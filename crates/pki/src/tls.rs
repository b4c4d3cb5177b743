//! TLS for the host and its terminals: TLS 1.3 and 1.2 only, the
//! deployment CA as the only trust anchor, and terminals identified by the
//! common name of their client certificate.

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use thiserror::Error;

/// Building a TLS configuration failed.
#[derive(Debug, Error)]
pub enum TlsError {
    /// PEM text holds no certificate or key.
    #[error("{0}: no PEM item found")]
    NoPem(&'static str),
    /// PEM could not be parsed.
    #[error("{0}: unreadable PEM: {1}")]
    Pem(&'static str, String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
    /// A peer certificate lacks a usable subject.
    #[error("certificate: {0}")]
    Certificate(String),
}

/// SHA-256 of a certificate's DER encoding: what phones and operators pin.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// A terminal as its client certificate identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTerminal {
    /// Subject common name: the terminal id (ISO 8583 field 41).
    pub terminal_id: String,
    /// Certificate serial number, hex.
    pub serial: String,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
}

impl PeerTerminal {
    /// Reads the terminal identity from a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, TlsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let terminal_id = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| TlsError::Certificate("no subject common name".into()))?
            .to_string();
        Ok(PeerTerminal {
            terminal_id,
            serial: hex::encode(cert.raw_serial()),
            fingerprint: hex::encode(fingerprint(der)),
        })
    }
}

/// Decides at the handshake whether a terminal with a valid certificate may
/// connect (it is enrolled, not disabled, not revoked).
pub type Admission = Arc<dyn Fn(&PeerTerminal) -> bool + Send + Sync>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates from PEM text.
pub fn certificates(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(what, e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoPem(what));
    }
    Ok(certs)
}

/// A private key from PEM bytes.
pub fn private_key(pem: &[u8], what: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| TlsError::Pem(what, e.to_string()))?
        .ok_or(TlsError::NoPem(what))
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_pem, "CA certificate")? {
        roots.add(cert)?;
    }
    Ok(Arc::new(roots))
}

/// The host's server configuration: client certificates required and chained
/// to the deployment CA, then checked by `admit`.
pub fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &[u8],
    admit: Admission,
) -> Result<Arc<ServerConfig>, TlsError> {
    let inner = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier = Arc::new(AdmittingVerifier { inner, admit });
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certificates(cert_pem, "host certificate")?,
            private_key(key_pem, "host key")?,
        )?;
    Ok(Arc::new(config))
}

/// A terminal's client configuration: trusts only the deployment CA and
/// presents the terminal's certificate.
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &[u8],
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(
            certificates(cert_pem, "terminal certificate")?,
            private_key(key_pem, "terminal key")?,
        )?;
    Ok(Arc::new(config))
}

/// WebPKI verification, then the deployment's own admission decision.
struct AdmittingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    admit: Admission,
}

impl std::fmt::Debug for AdmittingVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmittingVerifier").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for AdmittingVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let peer = PeerTerminal::from_der(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if (self.admit)(&peer) {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
