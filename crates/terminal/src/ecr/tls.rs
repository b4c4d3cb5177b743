//! The terminal's own certificate for its nexo endpoint: self-signed
//! (phones pin its SHA-256 from the pairing code rather than trusting a
//! CA), made at first start in the data directory, its key sealed under
//! the terminal's storage key in a 0600 file.

use crate::journal::{self, JournalError};
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

const CERT_FILE: &str = "ecr-cert.pem";
const KEY_FILE: &str = "ecr-key.sealed";
const NAMES_FILE: &str = "ecr-cert.names";
const KEY_PURPOSE: &str = "terminal ecr tls key";

/// Names every ECR certificate carries.
pub const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The ECR certificate could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The storage key or a file failed.
    #[error(transparent)]
    Storage(#[from] JournalError),
    /// The sealed key failed to unseal or to be written.
    #[error(transparent)]
    Seal(#[from] pki::SealError),
    /// Reading or writing the certificate failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The certificate could not be generated.
    #[error("generating the ECR certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("ECR certificate: {0}")]
    Tls(#[from] pki::tls::TlsError),
}

/// The certificate of the nexo endpoint.
pub struct EcrCertificate {
    /// PEM.
    pub cert_pem: String,
    key_pem: Zeroizing<String>,
    /// The names and addresses it is valid for.
    pub names: Vec<String>,
}

impl std::fmt::Debug for EcrCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrCertificate")
            .field("names", &self.names)
            .field("sha256", &hex::encode(self.sha256()))
            .finish_non_exhaustive()
    }
}

impl EcrCertificate {
    /// The certificate of the terminal in `dir`, valid for localhost,
    /// 127.0.0.1, ::1 and `names`. Made at first start; made anew (with a
    /// warning: phones paired before pin the old one) when `names` asks
    /// for a name the stored one lacks.
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Self, CertError> {
        let key = journal::storage_key(dir)?;
        let mut wanted: Vec<String> = LOCAL_NAMES.iter().map(|n| n.to_string()).collect();
        for name in names {
            if !wanted.contains(name) {
                wanted.push(name.clone());
            }
        }
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let names_path = dir.join(NAMES_FILE);
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| CertError::Io { path, source }
        };
        if cert_path.exists() && key_path.exists() {
            let stored: Vec<String> = std::fs::read_to_string(&names_path)
                .map_err(io(&names_path))?
                .lines()
                .map(str::to_owned)
                .collect();
            if wanted.iter().all(|n| stored.contains(n)) {
                let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
                let secret = key.open_file(KEY_PURPOSE, &key_path)?;
                let key_pem = Zeroizing::new(String::from_utf8_lossy(secret.expose()).into_owned());
                return Ok(Self {
                    cert_pem,
                    key_pem,
                    names: stored,
                });
            }
            tracing::warn!(
                "the ECR certificate lacks a requested name; making a new one: phones paired before must pair again"
            );
        }
        let certified = rcgen::generate_simple_self_signed(wanted.clone())?;
        let key_pem = Zeroizing::new(certified.signing_key.serialize_pem());
        let cert_pem = certified.cert.pem();
        key.seal_to_file(KEY_PURPOSE, key_pem.as_bytes(), &key_path)?;
        std::fs::write(&names_path, wanted.join("\n")).map_err(io(&names_path))?;
        std::fs::write(&cert_path, &cert_pem).map_err(io(&cert_path))?;
        tracing::info!(names = ?wanted, "made the ECR certificate");
        Ok(Self {
            cert_pem,
            key_pem,
            names: wanted,
        })
    }

    /// The certificate's DER.
    pub fn der(&self) -> Vec<u8> {
        pki::tls::certificates(&self.cert_pem, "ECR certificate")
            .ok()
            .and_then(|c| c.into_iter().next())
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }

    /// SHA-256 of the certificate's DER: what pairing codes carry.
    pub fn sha256(&self) -> [u8; 32] {
        pki::tls::fingerprint(&self.der())
    }

    /// The fingerprint as operators compare it: `AB:CD:...`.
    pub fn fingerprint(&self) -> String {
        nexo::pairing::fingerprint_text(&self.sha256())
    }

    /// The TLS server configuration (TLS 1.3 and 1.2, no client
    /// certificate: Sale systems authenticate by message security).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(pki::tls::TlsError::from)?
            .with_no_client_auth()
            .with_single_cert(
                pki::tls::certificates(&self.cert_pem, "ECR certificate")?,
                pki::tls::private_key(self.key_pem.as_bytes(), "ECR key")?,
            )
            .map_err(pki::tls::TlsError::from)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_kept_and_made_anew_for_a_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let first = EcrCertificate::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(first.names, LOCAL_NAMES);
        let again = EcrCertificate::load_or_create(dir.path(), &["localhost".into()]).unwrap();
        assert_eq!(again.sha256(), first.sha256());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let key_file = std::fs::read(dir.path().join(KEY_FILE)).unwrap();
        assert!(!String::from_utf8_lossy(&key_file).contains("PRIVATE KEY"));
        let named = EcrCertificate::load_or_create(dir.path(), &["pos.lan".into()]).unwrap();
        assert_ne!(named.sha256(), first.sha256());
        assert!(named.names.contains(&"pos.lan".to_string()));
        assert!(named.server_config().is_ok());
    }
}
