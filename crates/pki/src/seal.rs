//! Secrets at rest: every private key and symmetric key the deployment
//! keeps on disk is sealed with AES-256-GCM under a master key, bound to its
//! purpose (a sealed BDK cannot be passed off as a sealed transport key),
//! and written with mode 0600.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use std::fmt;
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// Environment variable holding the master key as 64 hex digits.
pub const MASTER_KEY_ENV: &str = "POSNET_MASTER_KEY";
/// Environment variable naming a file that holds the master key.
pub const MASTER_KEY_FILE_ENV: &str = "POSNET_MASTER_KEY_FILE";

const MAGIC: &[u8; 8] = b"PNSEAL1\0";
const NONCE_LEN: usize = 12;

/// Sealing or unsealing failed.
#[derive(Debug, Error)]
pub enum SealError {
    /// No master key was configured.
    #[error(
        "no master key: set {MASTER_KEY_ENV} (64 hex digits) or {MASTER_KEY_FILE_ENV}, or pass --master-key-file"
    )]
    NoMasterKey,
    /// The master key is not 32 bytes of hex.
    #[error("the master key must be 64 hexadecimal digits (32 bytes)")]
    BadMasterKey,
    /// A sealed file is not in the sealed format.
    #[error("{path}: not a posnet sealed file")]
    NotSealed {
        /// The file.
        path: PathBuf,
    },
    /// Authentication failed: wrong master key, wrong purpose, or tampering.
    #[error("{path}: cannot unseal (wrong master key, wrong file, or modified)")]
    Unseal {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SealError + '_ {
    move |source| SealError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Secret bytes: zeroized on drop, never shown by Debug.
#[derive(Clone, Zeroize)]
#[zeroize(drop)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    /// `len` random bytes from the operating system.
    pub fn random(len: usize) -> Self {
        let mut bytes = vec![0u8; len];
        getrandom::fill(&mut bytes).expect("operating system random source");
        Secret(bytes)
    }

    /// The bytes, for the one place that uses them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.0.len())
    }
}

/// The key that seals every other secret of a deployment.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(redacted)")
    }
}

impl MasterKey {
    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, SealError> {
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut()).map_err(|_| SealError::BadMasterKey)?;
        Ok(MasterKey(key))
    }

    /// A fresh random master key.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).expect("operating system random source");
        MasterKey(key)
    }

    /// Reads the key from a file of 64 hex digits.
    pub fn from_file(path: &Path) -> Result<Self, SealError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io_err(path))?);
        Self::from_hex(&text)
    }

    /// From `file` if given, else `POSNET_MASTER_KEY`, else the file named by
    /// `POSNET_MASTER_KEY_FILE`.
    pub fn from_env_or_file(file: Option<&Path>) -> Result<Self, SealError> {
        if let Some(path) = file {
            return Self::from_file(path);
        }
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            return Self::from_hex(&Zeroizing::new(text));
        }
        if let Ok(path) = std::env::var(MASTER_KEY_FILE_ENV) {
            return Self::from_file(Path::new(&path));
        }
        Err(SealError::NoMasterKey)
    }

    /// Writes the key as hex to a new 0600 file.
    pub fn write_to(&self, path: &Path) -> Result<(), SealError> {
        let text = Zeroizing::new(hex::encode(self.0.as_ref()));
        write_private(path, text.as_bytes())
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.0.as_ref()).expect("32-byte key")
    }

    /// Seals `plain` for `purpose` (authenticated, not secret).
    pub fn seal(&self, purpose: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("operating system random source");
        let sealed = self
            .cipher()
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plain,
                    aad: purpose.as_bytes(),
                },
            )
            .expect("AES-GCM seals any secret of this size");
        [MAGIC.as_slice(), &nonce, &sealed].concat()
    }

    /// Unseals bytes sealed for `purpose`; `path` names them in errors.
    pub fn open(&self, purpose: &str, sealed: &[u8], path: &Path) -> Result<Secret, SealError> {
        let body = sealed
            .strip_prefix(MAGIC.as_slice())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or_else(|| SealError::NotSealed {
                path: path.to_path_buf(),
            })?;
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        self.cipher()
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ciphertext,
                    aad: purpose.as_bytes(),
                },
            )
            .map(Secret)
            .map_err(|_| SealError::Unseal {
                path: path.to_path_buf(),
            })
    }

    /// Seals `plain` for `purpose` into a new 0600 file.
    pub fn seal_to_file(&self, purpose: &str, plain: &[u8], path: &Path) -> Result<(), SealError> {
        write_private(path, &self.seal(purpose, plain))
    }

    /// Reads and unseals a file sealed for `purpose`.
    pub fn open_file(&self, purpose: &str, path: &Path) -> Result<Secret, SealError> {
        let sealed = std::fs::read(path).map_err(io_err(path))?;
        self.open(purpose, &sealed, path)
    }
}

/// Writes `bytes` to `path` readable by the owner only (0600), replacing it
/// atomically through a temporary file in the same directory.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SealError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Makes `path` readable by its owner only (0600), creating it empty if it
/// does not exist: databases that hold card tokens and sealed card data are
/// opened through this, and SQLite gives its WAL and shared-memory files the
/// database file's permissions.
pub fn restrict_to_owner(path: &Path) -> Result<(), SealError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err(path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(path))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
