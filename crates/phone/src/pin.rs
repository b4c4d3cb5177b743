//! Certificate pinning: the terminal's certificate is self-signed, so no
//! CA vouches for it. The phone trusts exactly the certificate whose DER
//! SHA-256 the pairing code carried, and still checks that the server
//! holds its private key (the handshake signature is verified with the
//! certificate's public key by rustls' own helpers). Names and validity
//! dates are not checked: the pin is the identity.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};

/// The terminal presented another certificate than the pinned one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "certificate mismatch: expected {}, got {} — the terminal was replaced or someone is intercepting; re-pair if you replaced it",
    nexo::pairing::fingerprint_text(.expected),
    nexo::pairing::fingerprint_text(.got)
)]
pub struct CertificateMismatch {
    /// The pinned fingerprint (SHA-256 of the DER certificate).
    pub expected: [u8; 32],
    /// The fingerprint of the certificate presented.
    pub got: [u8; 32],
}

impl CertificateMismatch {
    /// The mismatch inside a TLS error, if that is what failed: rustls
    /// carries it as [`CertificateError::Other`].
    pub fn find(error: &rustls::Error) -> Option<&Self> {
        match error {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
                inner.downcast_ref::<Self>()
            }
            _ => None,
        }
    }

    /// The mismatch behind an I/O error of a TLS handshake (tokio-rustls
    /// wraps the rustls error), if that is what failed.
    pub fn in_io(error: &std::io::Error) -> Option<&Self> {
        error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .and_then(Self::find)
    }
}

/// Accepts exactly the certificate whose SHA-256 is `expected`.
#[derive(Debug)]
pub struct PinnedVerifier {
    expected: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    /// A verifier pinning `expected`.
    pub fn new(expected: [u8; 32]) -> Self {
        Self {
            expected,
            provider: provider(),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = pki::tls::fingerprint(end_entity);
        if got == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(CertificateMismatch {
                    expected: self.expected,
                    got,
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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

/// A TLS 1.3/1.2 client configuration trusting only the certificate
/// with SHA-256 `expected`.
pub fn client_config(expected: [u8; 32]) -> Result<Arc<ClientConfig>, rustls::Error> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(expected)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}
