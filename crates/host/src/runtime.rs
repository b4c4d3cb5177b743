//! Opening the host's storage and keys, and running its servers: the
//! terminal server alone ([`start`]) or with the merchant API and webhook
//! delivery beside it ([`start_all`]).

use crate::issuer::IssuerKeys;
use crate::metrics::Metrics;
use crate::outbox::{OutboxConfig, OutboxError};
use crate::processor::Processor;
use crate::schema::HOST;
use crate::server::{Limits, serve};
use ledger::{BatchReport, GroupCommit, GroupCommitConfig, LedgerStore, SqliteStore};
use paycrypto::{Bdk, KeyAlgorithm};
use pki::{Deployment, MasterKey};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};

/// File name of the host's database (ledger and host tables) in its data directory.
pub const DB_FILE: &str = "host.db";

/// Prepared statements kept on the committer's connection.
const STATEMENT_CACHE: usize = 128;

/// Starting the host failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The deployment (CA, keys) could not be loaded.
    #[error("deployment: {0}")]
    Pki(#[from] pki::PkiError),
    /// A sealed key could not be opened.
    #[error(transparent)]
    Seal(#[from] pki::SealError),
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] ledger::StoreError),
    /// SQLite failed.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// TLS configuration failed.
    #[error("TLS: {0}")]
    Tls(#[from] pki::TlsError),
    /// A key has the wrong size.
    #[error("key: {0}")]
    Key(String),
    /// The listener could not bind.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The webhook worker could not start.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The data directory could not be created.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The host's storage and keys, opened.
pub struct HostData {
    /// Age after which an uncompleted pre-authorization's hold is voided.
    pub preauth_max_age: std::time::Duration,
    /// Card ranges served by upstream hosts (BIN routing); empty: all local.
    pub routes: Vec<crate::routing::RouteConfig>,
    /// The data directory.
    pub dir: PathBuf,
    /// The deployment (CA, BDK, key-transport key).
    pub deployment: Deployment,
    /// The master key (seals secrets at rest).
    pub master: Arc<MasterKey>,
    /// Issuer keys (PAN tokens, PIN checks).
    pub issuer: Arc<IssuerKeys>,
    /// The ledger and host tables behind group commit.
    pub ledger: Arc<GroupCommit<SqliteStore>>,
    /// Every metric of the host (group commits are recorded from the start).
    pub metrics: Arc<Metrics>,
    /// Notified after every committed batch: new outbox events may be waiting.
    pub commits: Arc<Notify>,
}

impl std::fmt::Debug for HostData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostData")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl HostData {
    /// Opens (creating if needed) the host database in `dir`, with the
    /// deployment in `deployment_dir`. A batch hook in `commit` still runs,
    /// after the host's own.
    pub fn open(
        dir: &Path,
        deployment_dir: &Path,
        master: MasterKey,
        mut commit: GroupCommitConfig,
    ) -> Result<Self, StartError> {
        std::fs::create_dir_all(dir).map_err(|source| StartError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let deployment = Deployment::load(deployment_dir, &master)?;
        let issuer = Arc::new(IssuerKeys::load_or_create(dir, &master)?);
        pki::seal::restrict_to_owner(&dir.join(DB_FILE))?;
        let mut store = SqliteStore::open_with(dir.join(DB_FILE), &[HOST])?;
        // Every statement of a request, the ledger's and the host's, stays
        // prepared; rusqlite keeps 16 by default, fewer than one sale uses.
        store
            .transaction()?
            .sql()
            .set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let metrics = Arc::new(Metrics::new());
        let commits = Arc::new(Notify::new());
        let wake = commits.clone();
        let next = commit.on_batch.take();
        commit.on_batch = Some(
            metrics.batch_hook(Some(Arc::new(move |report: &BatchReport| {
                if report.committed {
                    wake.notify_one();
                }
                if let Some(next) = &next {
                    next(report);
                }
            }))),
        );
        Ok(HostData {
            preauth_max_age: std::time::Duration::from_secs(7 * 24 * 3600),
            routes: Vec::new(),
            dir: dir.to_path_buf(),
            deployment,
            master: Arc::new(master),
            issuer,
            ledger: Arc::new(GroupCommit::start(store, commit)),
            metrics,
            commits,
        })
    }

    /// A read-only connection to the host database.
    pub fn reader(&self) -> Result<rusqlite::Connection, StartError> {
        let conn = rusqlite::Connection::open_with_flags(
            self.dir.join(DB_FILE),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where terminals connect.
    pub listen: SocketAddr,
    /// Bounds.
    pub limits: Limits,
    /// Echo interval sent to terminals, seconds.
    pub echo_interval: u32,
}

/// The merchant-facing services [`start_all`] runs beside the terminal server.
#[derive(Debug, Clone)]
pub struct MerchantServices {
    /// Address of the merchant REST API, `/metrics` and `/healthz`.
    pub api_listen: SocketAddr,
    /// Webhook delivery bounds and timing.
    pub outbox: OutboxConfig,
}

/// A running host server.
#[derive(Debug)]
pub struct RunningHost {
    /// The address terminals connect to.
    pub addr: SocketAddr,
    /// The address of the API server, when [`start_all`] started one.
    pub api_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    services: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningHost {
    /// Stops accepting, answers what is in flight (terminal requests, API
    /// requests, webhook requests under way), and returns when done.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        for service in self.services {
            let _ = service.await;
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, local))
}

/// Starts the terminal server, the merchant API server and the webhook
/// worker over `data`; [`RunningHost::stop`] stops all three.
pub async fn start_all(
    data: &HostData,
    options: &ServeOptions,
    services: &MerchantServices,
) -> Result<RunningHost, StartError> {
    let (api_listener, api_addr) = bind(services.api_listen).await?;
    let mut host = start(data, options).await?;
    let db = data.dir.join(DB_FILE);
    let worker = match crate::outbox::spawn(
        &db,
        data.master.clone(),
        data.metrics.clone(),
        data.commits.clone(),
        services.outbox.clone(),
        host.shutdown.subscribe(),
    ) {
        Ok(worker) => worker,
        Err(e) => {
            host.stop().await;
            return Err(e.into());
        }
    };
    let state = crate::api::ApiState::new(&db, data.metrics.clone());
    let api = tokio::spawn(crate::api::serve(
        api_listener,
        state,
        host.shutdown.subscribe(),
    ));
    tracing::info!(addr = %api_addr, "merchant API listening");
    host.api_addr = Some(api_addr);
    let expiry = tokio::spawn(crate::expiry::run(
        data.ledger.clone(),
        data.preauth_max_age,
        host.shutdown.subscribe(),
    ));
    host.services = vec![api, worker, expiry];
    Ok(host)
}

/// Starts the terminal server over `data`.
pub async fn start(data: &HostData, options: &ServeOptions) -> Result<RunningHost, StartError> {
    let admission_db = Mutex::new(data.reader()?);
    let admit: pki::Admission = Arc::new(move |peer: &pki::PeerTerminal| {
        let conn = admission_db.lock().unwrap_or_else(|p| p.into_inner());
        let ok = crate::admin::admits(&conn, &peer.terminal_id, &peer.fingerprint);
        if !ok {
            tracing::warn!(terminal = %peer.terminal_id, "refused at the handshake: not enrolled with this certificate, disabled or revoked");
        }
        ok
    });
    let d = &data.deployment;
    let tls = pki::tls::server_config(
        d.ca_cert_pem(),
        d.host_cert_pem(),
        d.host_key_pem().expose(),
        admit,
    )?;
    let bdk = Bdk::new(KeyAlgorithm::Aes128, d.bdk().expose())
        .map_err(|e| StartError::Key(e.to_string()))?;
    let processor = Arc::new(Processor::new(
        data.ledger.clone(),
        bdk,
        data.issuer.clone(),
        data.master.clone(),
        options.echo_interval,
        data.metrics.clone(),
    ));
    let processor = if data.routes.is_empty() {
        processor
    } else {
        let router = crate::routing::Router::start(&data.routes, &data.dir)
            .map_err(|e| StartError::Key(e.to_string()))?;
        Arc::new(
            Arc::try_unwrap(processor)
                .expect("not shared yet")
                .with_router(Arc::new(router), data.reader()?),
        )
    };
    let (listener, addr) = bind(options.listen).await?;
    let (shutdown, watch) = watch::channel(false);
    let limits = options.limits;
    let task = tokio::spawn(serve(listener, tls, processor, limits, watch));
    tracing::info!(%addr, "host listening for terminals");
    Ok(RunningHost {
        addr,
        api_addr: None,
        shutdown,
        task,
        services: Vec::new(),
    })
}
