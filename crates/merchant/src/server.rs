//! The running back office: the web pages and the webhook receiver on one
//! address, a backfill from the host at start, the daily reconciliation
//! with the host, and a graceful stop.

use crate::backfill;
use crate::host_api::HostApi;
use crate::reconcile;
use crate::session::LoginLimiter;
use crate::store::{Store, StoreError};
use crate::users::PasswordCost;
use crate::web::{self, AppState};
use crate::webhook::{self, WebhookState};
use axum::serve::ListenerExt as _;
use ledger::Migrations;
use pki::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the back office checks whether yesterday (UTC) still needs
/// its reconciliation with the host: a day is reconciled within the hour
/// after it ends (or after the back office starts, if it was down).
const DAILY_CHECK: std::time::Duration = std::time::Duration::from_secs(3600);

/// A module of the back office (retail, restaurant, ...): its own schema
/// steps and its own pages, added without changing the core's.
#[derive(Clone, Copy)]
pub struct Module {
    /// Its tables, under its own component name.
    pub migrations: Migrations,
    /// Its routes, over the shared state.
    pub routes: fn(Arc<AppState>) -> axum::Router,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("component", &self.migrations.component)
            .finish_non_exhaustive()
    }
}

/// How to run.
pub struct Options {
    /// Address of the pages and the webhook receiver.
    pub listen: SocketAddr,
    /// Data directory (`merchant.db`, `storage.key`).
    pub data_dir: PathBuf,
    /// The host's merchant API, when backfill and reconciliation should run.
    pub host_api: Option<HostApi>,
    /// The merchant's webhook secret, as set at the host.
    pub webhook_secret: Secret,
    /// Shown in every page's header.
    pub merchant_name: String,
    /// Cost of password hashes.
    pub password_cost: PasswordCost,
    /// Modules served with the core pages.
    pub modules: Vec<Module>,
    /// Origins of the terminals' phone apps allowed to call the device API
    /// from a browser ([`crate::modules::api`]).
    pub app_origins: Vec<String>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("host_api", &self.host_api)
            .field("merchant_name", &self.merchant_name)
            .field("modules", &self.modules)
            .field("app_origins", &self.app_origins)
            .finish_non_exhaustive()
    }
}

/// Starting failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The address could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running back office.
#[derive(Debug)]
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The database (shared with the pages).
    pub store: Arc<Store>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    backfill: Option<JoinHandle<()>>,
    daily: Option<JoinHandle<()>>,
}

impl Running {
    /// Resolves when the backfill started with the server has ended (at
    /// once when there was none).
    pub async fn backfill_done(&mut self) {
        if let Some(backfill) = self.backfill.take() {
            let _ = backfill.await;
        }
    }

    /// Stops taking connections, lets requests under way finish (a webhook
    /// being recorded gets its answer), stops a backfill between pages.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some(daily) = self.daily {
            daily.abort();
            let _ = daily.await;
        }
        if let Some(backfill) = self.backfill {
            backfill.abort();
            let _ = backfill.await;
        }
        let _ = self.server.await;
    }
}

/// The whole application's routes: the core pages, the webhook receiver,
/// and each module's pages, all with the security headers.
pub fn router(state: Arc<AppState>, secret: Secret, modules: &[Module]) -> axum::Router {
    let webhooks = webhook::router(Arc::new(WebhookState {
        store: state.store.clone(),
        secret,
    }));
    let mut app = web::router(state.clone()).merge(webhooks);
    for module in modules {
        app = app.merge((module.routes)(state.clone()));
    }
    web::secured(app)
}

/// Opens the data directory, binds, serves, and starts a backfill when the
/// host's API is configured.
pub async fn start(options: Options) -> Result<Running, ServerError> {
    let migrations: Vec<Migrations> = options.modules.iter().map(|m| m.migrations).collect();
    let store = Arc::new(Store::open(&options.data_dir, &migrations)?);
    let host = options.host_api.map(Arc::new);
    let state = Arc::new(AppState {
        store: store.clone(),
        host: host.clone(),
        limiter: LoginLimiter::default(),
        password_cost: options.password_cost,
        merchant_name: options.merchant_name,
        modules: options
            .modules
            .iter()
            .map(|m| m.migrations.component)
            .collect(),
        app_origins: options.app_origins,
    });
    let app = router(state, options.webhook_secret, &options.modules);
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: options.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: options.listen,
            source,
        })?;
    let (stop, mut stopped) = watch::channel(false);
    let server = tokio::spawn(async move {
        let shutdown = async move {
            while !*stopped.borrow() {
                if stopped.changed().await.is_err() {
                    break;
                }
            }
        };
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        // Pages and webhook answers in several writes must not wait for
        // delayed ACKs.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("back office server: {e}");
        }
    });
    let daily = host.clone().map(|api| {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                // The first check waits too: a back office just started
                // is busy with its backfill, which the reconciliation
                // needs to have seen.
                tokio::time::sleep(DAILY_CHECK).await;
                match reconcile::reconcile_due(&store, &api, crate::store::unix_now()).await {
                    Ok(Some(done)) => tracing::info!(
                        date = %done.date,
                        differences = done.differences.len(),
                        "daily reconciliation with the host done"
                    ),
                    Ok(None) => {}
                    // Tried again at the next hour.
                    Err(e) => tracing::error!("daily reconciliation failed: {e}"),
                }
            }
        })
    });
    let backfill = host.map(|api| {
        let store = store.clone();
        tokio::spawn(async move {
            match backfill::backfill(&store, &api, "system").await {
                Ok(report) => tracing::info!(
                    listed = report.listed,
                    new = report.new,
                    updated = report.updated,
                    "backfill from the host done"
                ),
                // Webhooks keep coming; the next start (or `posnet merchant
                // backfill`) catches up.
                Err(e) => tracing::error!("backfill from the host failed: {e}"),
            }
        })
    });
    Ok(Running {
        addr,
        store,
        stop,
        server,
        backfill,
        daily,
    })
}
