//! A terminal's enrollment bundle: everything it needs to reach its host —
//! the deployment CA, its client certificate and key, and its DUKPT initial
//! key as a TR-31 block under the key-transport key. Written 0600; the
//! private key is zeroized when the bundle is dropped and never shown by Debug.

use crate::seal::{SealError, write_private};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroize;

/// Reading a bundle failed.
#[derive(Debug, Error)]
pub enum BundleError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a bundle.
    #[error("{path}: not an enrollment bundle: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] SealError),
}

/// What `posnet host enroll` hands a terminal.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnrollmentBundle {
    /// ISO 8583 field 41.
    pub terminal_id: String,
    /// ISO 8583 field 42.
    pub merchant_id: String,
    /// Host addresses (`host:port`), tried in order.
    pub hosts: Vec<String>,
    /// The deployment CA certificate, PEM.
    pub ca_cert_pem: String,
    /// The terminal's client certificate, PEM.
    pub cert_pem: String,
    /// The terminal's private key, PEM.
    pub key_pem: String,
    /// The AES DUKPT initial key, a TR-31 version D block under the key-transport key.
    pub initial_key_block: String,
    /// The initial key id (8 bytes, hex): the KSN's left part.
    pub initial_key_id: String,
}

impl Drop for EnrollmentBundle {
    fn drop(&mut self) {
        self.key_pem.zeroize();
    }
}

impl std::fmt::Debug for EnrollmentBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentBundle")
            .field("terminal_id", &self.terminal_id)
            .field("merchant_id", &self.merchant_id)
            .field("hosts", &self.hosts)
            .field("initial_key_id", &self.initial_key_id)
            .finish_non_exhaustive()
    }
}

impl EnrollmentBundle {
    /// Writes the bundle as JSON to a 0600 file.
    pub fn write(&self, path: &Path) -> Result<(), BundleError> {
        let mut json = serde_json::to_vec_pretty(self).expect("bundle serializes");
        let result = write_private(path, &json);
        json.zeroize();
        Ok(result?)
    }

    /// Reads a bundle file.
    pub fn read(path: &Path) -> Result<Self, BundleError> {
        let mut bytes = std::fs::read(path).map_err(|source| BundleError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let parsed = serde_json::from_slice(&bytes).map_err(|e| BundleError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        });
        bytes.zeroize();
        parsed
    }
}
