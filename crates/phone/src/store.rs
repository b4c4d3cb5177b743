//! The phone's pairings: every terminal it was paired with, one of them
//! the default, in `pairings.json` in the data directory. The file holds
//! the nexo passphrases, so it is written owner-only (0600, atomically,
//! through [`pki::seal::write_private`]) and refused when anyone else may
//! read it. Passphrases stay in zeroized memory and are never printed.

use std::path::{Path, PathBuf};

use nexo::pairing::{Pairing, PairingError};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Name of the pairings file in the data directory.
pub const PAIRINGS_FILE: &str = "pairings.json";

/// The pairing store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading, writing or creating the directory failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// Writing the file failed.
    #[error(transparent)]
    Write(#[from] pki::seal::SealError),
    /// The file is not a pairings file.
    #[error("{path}: not a pairings file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A stored code no longer reads.
    #[error("{path}: stored pairing no longer reads: {cause}")]
    Code {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: PairingError,
    },
    /// Others may read the file.
    #[error(
        "{path} may be read by other users (mode {mode:o}); it holds the terminal keys: `chmod 600` it, or pair again if someone else may have read it"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// No pairing yet.
    #[error("this phone is not paired with any terminal: run `posnet phone pair <code>`")]
    NotPaired,
    /// No pairing with that `POIID`.
    #[error("no terminal {0:?} is paired with this phone (see `posnet phone terminals`)")]
    UnknownTerminal(String),
}

/// One stored pairing.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// The pairing code (holds the passphrase).
    code: Zeroizing<String>,
    /// When it was stored (RFC 3339).
    paired_at: String,
}

#[derive(Serialize, Deserialize, Default)]
struct Contents {
    /// `POIID` of the default terminal.
    default: Option<String>,
    pairings: Vec<Stored>,
}

/// A stored pairing, for listing (no secret in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Paired {
    /// The terminal's `POIID`.
    pub poi_id: String,
    /// `host:port`.
    pub address: String,
    /// The pinned certificate's fingerprint.
    pub fingerprint: String,
    /// nexo key identifier.
    pub key_identifier: String,
    /// nexo key version.
    pub key_version: u64,
    /// When it was stored.
    pub paired_at: String,
    /// Whether it is the default.
    pub default: bool,
}

/// The pairings file of a data directory.
#[derive(Debug, Clone)]
pub struct PairingStore {
    path: PathBuf,
}

impl PairingStore {
    /// The store in `data_dir` (nothing is read yet).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(PAIRINGS_FILE),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Contents, StoreError> {
        let io = |cause| StoreError::Io {
            path: self.path.clone(),
            cause,
        };
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Contents::default()),
            Err(e) => return Err(io(e)),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&self.path)
                .map_err(io)?
                .permissions()
                .mode()
                & 0o777;
            if mode & 0o077 != 0 {
                return Err(StoreError::Exposed {
                    path: self.path.clone(),
                    mode,
                });
            }
        }
        // serde_json's messages may quote the text they choke on, which
        // here may be a passphrase: only where and what kind of error.
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            reason: format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
        })
    }

    fn save(&self, contents: &Contents) -> Result<(), StoreError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|cause| StoreError::Io {
                path: dir.to_path_buf(),
                cause,
            })?;
        }
        let json = Zeroizing::new(
            serde_json::to_vec_pretty(contents).expect("strings and options serialize"),
        );
        pki::seal::write_private(&self.path, &json)?;
        Ok(())
    }

    fn read(&self, stored: &Stored) -> Result<Pairing, StoreError> {
        Pairing::from_code(&stored.code).map_err(|cause| StoreError::Code {
            path: self.path.clone(),
            cause,
        })
    }

    /// Stores `pairing` (replacing an earlier pairing with the same
    /// terminal), at `now`; it becomes the default when `make_default` or
    /// when there is no default yet. Returns whether it is the default.
    pub fn add(
        &self,
        pairing: &Pairing,
        make_default: bool,
        now: &str,
    ) -> Result<bool, StoreError> {
        let mut contents = self.load()?;
        let mut kept = Vec::with_capacity(contents.pairings.len() + 1);
        for stored in contents.pairings {
            if self.read(&stored)?.poi_id != pairing.poi_id {
                kept.push(stored);
            }
        }
        kept.push(Stored {
            code: Zeroizing::new(pairing.to_code()),
            paired_at: now.to_owned(),
        });
        contents.pairings = kept;
        let is_default = make_default
            || contents
                .default
                .as_ref()
                .is_none_or(|d| *d == pairing.poi_id);
        if is_default {
            contents.default = Some(pairing.poi_id.clone());
        }
        self.save(&contents)?;
        Ok(is_default)
    }

    /// The pairing with terminal `poi_id`, or the default one.
    pub fn get(&self, poi_id: Option<&str>) -> Result<Pairing, StoreError> {
        let contents = self.load()?;
        let wanted = match poi_id {
            Some(p) => p.to_owned(),
            None => contents.default.clone().ok_or(StoreError::NotPaired)?,
        };
        for stored in &contents.pairings {
            let pairing = self.read(stored)?;
            if pairing.poi_id == wanted {
                return Ok(pairing);
            }
        }
        Err(match (poi_id, contents.pairings.is_empty()) {
            (None, true) => StoreError::NotPaired,
            _ => StoreError::UnknownTerminal(wanted),
        })
    }

    /// Every stored pairing, without secrets.
    pub fn list(&self) -> Result<Vec<Paired>, StoreError> {
        let contents = self.load()?;
        contents
            .pairings
            .iter()
            .map(|stored| {
                let p = self.read(stored)?;
                Ok(Paired {
                    default: contents.default.as_deref() == Some(p.poi_id.as_str()),
                    address: if p.host.contains(':') {
                        format!("[{}]:{}", p.host, p.port)
                    } else {
                        format!("{}:{}", p.host, p.port)
                    },
                    fingerprint: p.fingerprint(),
                    key_identifier: p.key_identifier.clone(),
                    key_version: p.key_version,
                    paired_at: stored.paired_at.clone(),
                    poi_id: p.poi_id,
                })
            })
            .collect()
    }

    /// Makes terminal `poi_id` the default.
    pub fn set_default(&self, poi_id: &str) -> Result<(), StoreError> {
        self.get(Some(poi_id))?;
        let mut contents = self.load()?;
        contents.default = Some(poi_id.to_owned());
        self.save(&contents)
    }

    /// Forgets terminal `poi_id`; the default passes to the most recent
    /// remaining pairing.
    pub fn remove(&self, poi_id: &str) -> Result<(), StoreError> {
        let mut contents = self.load()?;
        let before = contents.pairings.len();
        let mut kept = Vec::with_capacity(before);
        for stored in contents.pairings {
            if self.read(&stored)?.poi_id != poi_id {
                kept.push(stored);
            }
        }
        if kept.len() == before {
            return Err(StoreError::UnknownTerminal(poi_id.to_owned()));
        }
        if contents.default.as_deref() == Some(poi_id) {
            contents.default = match kept.last() {
                Some(last) => Some(self.read(last)?.poi_id),
                None => None,
            };
        }
        contents.pairings = kept;
        self.save(&contents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairing(poi: &str, pass: &str) -> Pairing {
        Pairing {
            host: "127.0.0.1".into(),
            port: 8443,
            cert_sha256: [7; 32],
            poi_id: poi.into(),
            key_identifier: "phone-1".into(),
            key_version: 1,
            passphrase: Zeroizing::new(pass.into()),
        }
    }

    #[test]
    fn round_trip_default_and_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::new(&dir.path().join("phone"));
        assert!(matches!(store.get(None), Err(StoreError::NotPaired)));
        assert!(
            store
                .add(&pairing("T1", "secret one"), false, "2025-03-14T08:00:00Z")
                .unwrap()
        );
        assert!(
            !store
                .add(&pairing("T2", "secret two"), false, "2025-03-14T08:01:00Z")
                .unwrap()
        );
        assert_eq!(store.get(None).unwrap(), pairing("T1", "secret one"));
        assert_eq!(store.get(Some("T2")).unwrap(), pairing("T2", "secret two"));
        assert!(matches!(
            store.get(Some("T3")),
            Err(StoreError::UnknownTerminal(t)) if t == "T3"
        ));

        // Pairing T1 again (a new key) replaces it and keeps it default.
        assert!(
            store
                .add(
                    &pairing("T1", "secret three"),
                    false,
                    "2025-03-14T09:00:00Z"
                )
                .unwrap()
        );
        assert_eq!(store.get(None).unwrap(), pairing("T1", "secret three"));
        let listed = store.list().unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|p| (p.poi_id.as_str(), p.default))
                .collect::<Vec<_>>(),
            [("T2", false), ("T1", true)]
        );
        assert_eq!(listed[1].paired_at, "2025-03-14T09:00:00Z");

        store.set_default("T2").unwrap();
        assert_eq!(store.get(None).unwrap().poi_id, "T2");
        store.remove("T2").unwrap();
        assert_eq!(store.get(None).unwrap().poi_id, "T1");
        store.remove("T1").unwrap();
        assert!(matches!(store.get(None), Err(StoreError::NotPaired)));
        assert!(matches!(
            store.remove("T1"),
            Err(StoreError::UnknownTerminal(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_owner_only_and_refused_otherwise() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::new(dir.path());
        store
            .add(&pairing("T1", "s3cret-pass"), false, "now")
            .unwrap();
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.get(None).unwrap_err();
        assert!(
            matches!(err, StoreError::Exposed { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn listing_and_errors_never_show_the_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let store = PairingStore::new(dir.path());
        store
            .add(&pairing("T1", "s3cret-pass"), true, "now")
            .unwrap();
        let listed = format!(
            "{:?} {}",
            store.list().unwrap(),
            serde_json::to_string(&store.list().unwrap()).unwrap()
        );
        assert!(!listed.contains("s3cret"), "{listed}");
        assert!(!format!("{:?}", store.get(None).unwrap()).contains("s3cret"));

        std::fs::write(store.path(), b"{\"pairings\": [{\"code\": \"posnet-pair://h:1?fp=zz&pass=s3cret\", \"paired_at\": \"x\"}]}").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let err = store.list().unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
