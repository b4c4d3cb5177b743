//! Routing by BIN: card ranges served by an upstream ISO 8583 host (another
//! acquirer, a bank, or a second posnet host in issuer role) instead of the
//! local issuer.
//!
//! Toward the upstream this host is a terminal: it holds an enrollment bundle
//! issued by the upstream, keeps its own DUKPT keys, journal and
//! store-and-forward queue — the same [`terminal::Terminal`] a POS runs. A
//! sale forwarded upstream is re-secured under that link's keys (the PIN is
//! deciphered under the POS terminal's key and enciphered again under the
//! link's), and an upstream timeout leaves a stored reversal that the link
//! delivers before anything else, while the POS terminal is answered 91.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use terminal::card::PresentedCard;
use terminal::engine::{CardData, Entry, Method};
use terminal::{Outcome, Terminal, TerminalOptions, TxnKind, TxnRequest};
use tokio::sync::watch;

/// One card range served upstream (`[[route]]` in the host configuration).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// PAN prefix (BIN range) this route serves, e.g. `"9999"`.
    pub bin_prefix: String,
    /// Enrollment bundle the upstream issued to this host.
    pub bundle: PathBuf,
    /// The upstream's key-transport key (hex), to unwrap the bundle's initial key.
    pub transport_key_file: PathBuf,
    /// How long to wait for the upstream's answer, milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_timeout() -> u64 {
    5_000
}

/// The upstream's answer, as the local decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// Response code for the POS terminal.
    pub code: String,
    /// The upstream's approval code.
    pub auth_code: Option<String>,
    /// The upstream transaction's (batch, STAN) on the link, to void it later.
    pub upstream: Option<(u32, u32)>,
    /// The route's BIN prefix.
    pub route: String,
}

/// Starting a route failed.
#[derive(Debug, thiserror::Error)]
#[error("route {prefix}: {reason}")]
pub struct RouteError {
    prefix: String,
    reason: String,
}

struct Route {
    prefix: String,
    link: Terminal,
    _stop: watch::Sender<bool>,
}

/// The routing table and its upstream links.
pub struct Router {
    routes: Vec<Route>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|r| &r.prefix))
            .finish()
    }
}

impl Router {
    /// Opens each route's link (journal under `data_dir/upstream-<prefix>`)
    /// and starts keeping it connected. Longer prefixes win.
    pub fn start(configs: &[RouteConfig], data_dir: &Path) -> Result<Router, RouteError> {
        let mut routes = Vec::new();
        for c in configs {
            let fail = |reason: String| RouteError {
                prefix: c.bin_prefix.clone(),
                reason,
            };
            if c.bin_prefix.is_empty() || !c.bin_prefix.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail("bin_prefix must be digits".into()));
            }
            let bundle = pki::EnrollmentBundle::read(&c.bundle).map_err(|e| fail(e.to_string()))?;
            let key_text = zeroize::Zeroizing::new(
                std::fs::read_to_string(&c.transport_key_file)
                    .map_err(|e| fail(format!("{}: {e}", c.transport_key_file.display())))?,
            );
            let key = zeroize::Zeroizing::new(
                hex::decode(key_text.trim())
                    .map_err(|_| fail("transport key is not hex".into()))?,
            );
            let options = TerminalOptions {
                data_dir: data_dir.join(format!("upstream-{}", c.bin_prefix)),
                response_timeout: Duration::from_millis(c.timeout_ms),
                ..TerminalOptions::default()
            };
            let link = Terminal::open(bundle, &key, options).map_err(|e| fail(e.to_string()))?;
            let (stop, watch) = watch::channel(false);
            let supervisor = link.clone();
            tokio::spawn(async move { supervisor.supervise(watch).await });
            routes.push(Route {
                prefix: c.bin_prefix.clone(),
                link,
                _stop: stop,
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Router { routes })
    }

    /// The route serving `pan`, if any.
    pub fn route_for(&self, pan: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|r| pan.starts_with(&r.prefix))
            .map(|r| r.prefix.as_str())
    }

    fn link(&self, prefix: &str) -> Option<&Terminal> {
        self.routes
            .iter()
            .find(|r| r.prefix == prefix)
            .map(|r| &r.link)
    }

    /// Forwards a sale upstream and maps the outcome to a response code:
    /// the upstream's own code, or 91 when it could not answer (an unknown
    /// outcome is reversed upstream by the link, first thing).
    pub async fn sale(
        &self,
        prefix: &str,
        pan: &str,
        expiry: &str,
        amount: u64,
        pin: Option<paycrypto::pinblock::Pin>,
    ) -> Forwarded {
        let card = CardData {
            pan: pan.into(),
            expiry: expiry.into(),
            entry: Entry::Manual,
            offline_allowed: false,
        };
        let req = TxnRequest {
            kind: TxnKind::Sale,
            amount,
            method: Method::Card,
            original: None,
        };
        self.run(prefix, req, PresentedCard { card, pin }).await
    }

    /// Voids an upstream sale (the POS terminal reversed it here).
    pub async fn void(
        &self,
        prefix: &str,
        pan: &str,
        expiry: &str,
        amount: u64,
        upstream: (u32, u32),
    ) -> Forwarded {
        let card = CardData {
            pan: pan.into(),
            expiry: expiry.into(),
            entry: Entry::Manual,
            offline_allowed: false,
        };
        let req = TxnRequest {
            kind: TxnKind::Void,
            amount,
            method: Method::Card,
            original: Some(upstream),
        };
        self.run(prefix, req, PresentedCard { card, pin: None })
            .await
    }

    async fn run(&self, prefix: &str, req: TxnRequest, presented: PresentedCard) -> Forwarded {
        let unavailable = |why: String| {
            tracing::warn!(route = prefix, "upstream unavailable: {why}");
            Forwarded {
                code: "91".into(),
                auth_code: None,
                upstream: None,
                route: prefix.into(),
            }
        };
        let Some(link) = self.link(prefix) else {
            return unavailable("no such route".into());
        };
        match link.transact(req, Ok(presented)).await {
            Ok(result) => match result.outcome {
                Outcome::Approved { auth_code, .. } => Forwarded {
                    code: "00".into(),
                    auth_code: Some(auth_code),
                    upstream: Some((result.batch, result.stan)),
                    route: prefix.into(),
                },
                Outcome::Declined { code, .. } => Forwarded {
                    code,
                    auth_code: None,
                    upstream: None,
                    route: prefix.into(),
                },
                Outcome::Reversed { why } => {
                    unavailable(format!("no definite answer, reversal stored: {why}"))
                }
                Outcome::ApprovedOffline => {
                    unavailable("upstream link approved offline; refused".into())
                }
                Outcome::FailedBeforeSending(refusal) => unavailable(refusal.to_string()),
            },
            Err(e) => unavailable(e.to_string()),
        }
    }
}
