//! The deployment: its certificate authority, the host's server
//! certificate, the DUKPT base derivation key and the key-transport key
//! terminals' initial keys travel under. Everything secret is sealed at rest.

use crate::seal::{MasterKey, SealError, Secret, write_private};
use crate::tls::fingerprint;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use std::path::{Path, PathBuf};
use thiserror::Error;

const CA_CERT: &str = "ca.crt.pem";
const CA_KEY: &str = "ca.key.sealed";
const HOST_CERT: &str = "host.crt.pem";
const HOST_KEY: &str = "host.key.sealed";
const BDK: &str = "bdk.sealed";
const KTK: &str = "ktk.sealed";

/// Creating or loading the deployment failed.
#[derive(Debug, Error)]
pub enum PkiError {
    /// A sealed secret could not be read or written.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Certificate generation failed.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A deployment already exists where `init` would create one.
    #[error("{0}: a deployment already exists here; refusing to overwrite its keys")]
    Exists(PathBuf),
    /// A file of the deployment is missing or unreadable.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A terminal or merchant id does not fit ISO 8583 fields 41 and 42.
    #[error("{0}")]
    BadId(String),
}

/// Names and addresses the host's certificate is valid for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// DNS names and IP addresses (as text) for the host certificate.
    pub host_names: Vec<String>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            host_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

/// A terminal's client certificate and private key.
#[derive(Debug)]
pub struct IssuedCertificate {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PKCS#8 PEM.
    pub key_pem: Secret,
    /// Serial number, hex.
    pub serial: String,
    /// SHA-256 of the certificate's DER, hex.
    pub fingerprint: String,
}

/// A loaded deployment.
pub struct Deployment {
    dir: PathBuf,
    ca_cert_pem: String,
    ca_key: KeyPair,
    host_cert_pem: String,
    host_key_pem: Secret,
    bdk: Secret,
    ktk: Secret,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn random_serial() -> SerialNumber {
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).expect("operating system random source");
    serial[0] &= 0x7F; // positive
    SerialNumber::from_slice(&serial)
}

fn key_pem(key: &KeyPair) -> Secret {
    Secret::new(key.serialize_pem().into_bytes())
}

impl Deployment {
    /// Creates a deployment in `dir`: a CA, the host certificate, a random
    /// AES-128 BDK and AES-256 key-transport key. Refuses to overwrite one.
    pub fn init(dir: &Path, master: &MasterKey, options: &InitOptions) -> Result<Self, PkiError> {
        if dir.join(CA_KEY).exists() {
            return Err(PkiError::Exists(dir.to_path_buf()));
        }
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.to_path_buf(),
            source,
        })?;

        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, "posnet deployment CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.serial_number = Some(random_serial());
        ca.not_after = rcgen::date_time_ymd(2046, 1, 1);
        let ca_cert = ca.self_signed(&ca_key)?;

        let host_key = KeyPair::generate()?;
        let mut host = CertificateParams::new(options.host_names.clone())?;
        host.distinguished_name
            .push(DnType::CommonName, "posnet host");
        host.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        host.serial_number = Some(random_serial());
        let issuer = Issuer::new(ca.clone(), &ca_key);
        let host_cert = host.signed_by(&host_key, &issuer)?;

        let bdk = Secret::random(16);
        let ktk = Secret::random(32);
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(|source| PkiError::Io {
                path: dir.join(name),
                source,
            })
        };
        write(CA_CERT, &ca_cert.pem())?;
        write(HOST_CERT, &host_cert.pem())?;
        master.seal_to_file("ca key", key_pem(&ca_key).expose(), &dir.join(CA_KEY))?;
        master.seal_to_file("host key", key_pem(&host_key).expose(), &dir.join(HOST_KEY))?;
        master.seal_to_file("bdk", bdk.expose(), &dir.join(BDK))?;
        master.seal_to_file("ktk", ktk.expose(), &dir.join(KTK))?;
        Self::load(dir, master)
    }

    /// Loads the deployment in `dir`, unsealing its secrets with `master`.
    pub fn load(dir: &Path, master: &MasterKey) -> Result<Self, PkiError> {
        let ca_key_pem = master.open_file("ca key", &dir.join(CA_KEY))?;
        let ca_key =
            KeyPair::from_pem(std::str::from_utf8(ca_key_pem.expose()).unwrap_or_default())?;
        Ok(Deployment {
            dir: dir.to_path_buf(),
            ca_cert_pem: read(&dir.join(CA_CERT))?,
            ca_key,
            host_cert_pem: read(&dir.join(HOST_CERT))?,
            host_key_pem: master.open_file("host key", &dir.join(HOST_KEY))?,
            bdk: master.open_file("bdk", &dir.join(BDK))?,
            ktk: master.open_file("ktk", &dir.join(KTK))?,
        })
    }

    /// Whether `dir` holds a deployment.
    pub fn exists(dir: &Path) -> bool {
        dir.join(CA_KEY).exists()
    }

    /// Issues a client certificate whose subject common name is `terminal_id`
    /// (8 characters, as ISO 8583 field 41) for merchant `merchant_id`
    /// (15 characters, field 42).
    pub fn issue_terminal_certificate(
        &self,
        terminal_id: &str,
        merchant_id: &str,
    ) -> Result<IssuedCertificate, PkiError> {
        check_id("terminal id", terminal_id, 8)?;
        check_id("merchant id", merchant_id, 15)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, terminal_id);
        params
            .distinguished_name
            .push(DnType::OrganizationName, merchant_id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key)?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key_pem(&key),
            serial: hex::encode(serial.as_ref()),
            fingerprint: hex::encode(fingerprint(cert.der())),
        })
    }

    /// The directory the deployment lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The CA certificate, PEM: the trust anchor for hosts and terminals.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }
    /// The host's server certificate, PEM.
    pub fn host_cert_pem(&self) -> &str {
        &self.host_cert_pem
    }
    /// The host's private key, PEM.
    pub fn host_key_pem(&self) -> &Secret {
        &self.host_key_pem
    }
    /// The DUKPT base derivation key (AES-128).
    pub fn bdk(&self) -> &Secret {
        &self.bdk
    }
    /// The key-transport key (AES-256), the TR-31 KBPK of enrollment bundles.
    pub fn ktk(&self) -> &Secret {
        &self.ktk
    }

    /// Writes the key-transport key as hex to a 0600 file, for loading into
    /// terminals the way a key-injection facility would.
    pub fn export_ktk(&self, path: &Path) -> Result<(), PkiError> {
        let text = zeroize::Zeroizing::new(hex::encode(self.ktk.expose()));
        Ok(write_private(path, text.as_bytes())?)
    }
}

fn check_id(what: &str, id: &str, len: usize) -> Result<(), PkiError> {
    if id.len() == len && id.bytes().all(|b| (0x21..=0x7E).contains(&b)) {
        Ok(())
    } else {
        Err(PkiError::BadId(format!(
            "{what} {id:?} must be {len} printable characters without spaces"
        )))
    }
}
