//! The host's configuration: a TOML file, every value overridable from the
//! command line or the environment (`POSNET_HOST_*`, see `posnet host run --help`).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything `posnet host run` needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Directory of the host database and issuer key.
    pub data_dir: PathBuf,
    /// Directory of the deployment (CA, BDK, key-transport key).
    pub deployment_dir: PathBuf,
    /// Address terminals connect to (mutual TLS, ISO 8583).
    pub listen: SocketAddr,
    /// Address of the merchant REST API, `/metrics` and `/healthz`.
    pub api_listen: SocketAddr,
    /// Connections served at once.
    pub max_connections: usize,
    /// Requests in flight per connection.
    pub max_in_flight: usize,
    /// Seconds of silence before a connection is closed.
    pub idle_timeout_secs: u64,
    /// Seconds between terminal echoes, sent in the parameters.
    pub echo_interval_secs: u32,
    /// Largest number of requests committed in one transaction.
    pub commit_batch: usize,
    /// Seconds a webhook request may take before it counts as failed.
    pub webhook_timeout_secs: u64,
    /// Merchants whose webhooks are delivered to at once.
    pub webhook_concurrency: usize,
    /// Events sent in one merchant's delivery turn before others get theirs.
    pub webhook_batch: usize,
    /// Hours after which an uncompleted pre-authorization's hold is voided.
    pub preauth_expiry_hours: u64,
    /// Card ranges served by upstream hosts (`[[route]]` tables).
    pub route: Vec<crate::routing::RouteConfig>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            data_dir: PathBuf::from("posnet-data/host"),
            deployment_dir: PathBuf::from("posnet-data/deployment"),
            listen: "127.0.0.1:5800".parse().expect("literal address"),
            api_listen: "127.0.0.1:5880".parse().expect("literal address"),
            max_connections: 20_000,
            max_in_flight: 64,
            idle_timeout_secs: 300,
            echo_interval_secs: 60,
            commit_batch: 1024,
            webhook_timeout_secs: 10,
            webhook_concurrency: 16,
            webhook_batch: 100,
            preauth_expiry_hours: 7 * 24,
            route: Vec::new(),
        }
    }
}

/// The configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not valid TOML for this configuration.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
}

impl HostConfig {
    /// Reads a TOML file; missing keys take their defaults, unknown keys are errors.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The server bounds this configuration sets.
    pub fn limits(&self) -> crate::server::Limits {
        crate::server::Limits {
            max_connections: self.max_connections,
            max_in_flight: self.max_in_flight,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            ..crate::server::Limits::default()
        }
    }

    /// The merchant API address and webhook delivery this configuration sets.
    pub fn merchant_services(&self) -> crate::runtime::MerchantServices {
        crate::runtime::MerchantServices {
            api_listen: self.api_listen,
            outbox: crate::outbox::OutboxConfig {
                request_timeout: Duration::from_secs(self.webhook_timeout_secs),
                concurrency: self.webhook_concurrency,
                batch: self.webhook_batch,
                ..crate::outbox::OutboxConfig::default()
            },
        }
    }
}
