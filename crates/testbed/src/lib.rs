//! Test fixtures shared by the crates' integration tests: a real posnet
//! host on loopback over real SQLite files ([`HostFixture`]), a terminal
//! enrolled with it, supervised and signed on ([`TerminalFixture`]), and
//! the terminal's nexo endpoint over TLS with its own certificate
//! ([`EcrFixture`]).
//!
//! Every wait here is bounded: the timeouts are safety nets that turn a
//! hang into a failure naming what did not happen, never an assertion.

use host::admin::{self, CardSpec, MerchantSpec, TerminalSpec};
use host::runtime::{self, HostData, MerchantServices, RunningHost, ServeOptions};
use ledger::GroupCommitConfig;
use pki::{EnrollmentBundle, InitOptions, MasterKey};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use terminal::card::TestCard;
use terminal::ecr::server::{ServerOptions, serve};
use terminal::ecr::tls::EcrCertificate;
use terminal::ecr::{EcrConfig, EcrService, Endpoint};
use terminal::{Status, Terminal, TerminalOptions};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// The merchant most tests sell for.
pub const MERCHANT: &str = "M00000000000001";
/// The terminal most tests enroll.
pub const TID: &str = "T0000001";
/// ISO 4217 numeric code of the test cards' and the merchant's currency (CNY).
pub const CNY: u16 = 156;

/// How long a wait for the terminal may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);

/// The host's record of catalog card `c`: its balance, PIN and limits, a
/// daily limit of 1 000 000 minor units, in CNY.
pub fn card_spec(c: &TestCard) -> CardSpec {
    CardSpec {
        pan: c.pan.into(),
        expiry: c.expiry.into(),
        pin: c.pin.map(Into::into),
        kind: "card".into(),
        balance: c.balance,
        per_txn_limit: c.per_txn_limit,
        daily_limit: 1_000_000,
        currency: CNY,
        status: c.status.into(),
        holder: c.name.into(),
    }
}

/// Merchant [`MERCHANT`], "Corner Shop", selling in CNY up to 5 000.00,
/// without fees, webhooks or API key.
pub fn corner_shop() -> MerchantSpec {
    MerchantSpec {
        fee_bps: 0,
        merchant_id: MERCHANT.into(),
        name: "Corner Shop".into(),
        currency: CNY,
        max_amount: 500_000,
        webhook_url: None,
        webhook_secret: None,
        api_key: None,
    }
}

/// A new deployment (CA, keys) and host data directory in a new temporary
/// directory (`deployment/` and `host/` in it); nothing served yet.
pub fn host_data() -> (tempfile::TempDir, HostData) {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let deployment = dir.path().join("deployment");
    pki::Deployment::init(&deployment, &master, &InitOptions::default()).unwrap();
    let data = HostData::open(
        &dir.path().join("host"),
        &deployment,
        master,
        GroupCommitConfig::default(),
    )
    .unwrap();
    (dir, data)
}

/// The host's terminal port on loopback (any free port), default limits,
/// echo every 60 s.
pub fn serve_options() -> ServeOptions {
    ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        limits: Default::default(),
        echo_interval: 60,
    }
}

/// A posnet host serving on loopback with one merchant and its cards.
pub struct HostFixture {
    /// The temporary directory holding the deployment, the host's data and
    /// (by the fixtures here) the terminal's.
    pub dir: tempfile::TempDir,
    /// The host's data.
    pub data: HostData,
    /// The serving host.
    pub running: RunningHost,
}

impl HostFixture {
    /// A host with `merchant` and the cards `cards` (see [`card_spec`]).
    pub async fn start(merchant: MerchantSpec, cards: &[TestCard]) -> HostFixture {
        Self::start_with(merchant, cards, None).await
    }

    /// As [`HostFixture::start`], with the merchant API and webhook worker
    /// of `services` too.
    pub async fn start_with(
        merchant: MerchantSpec,
        cards: &[TestCard],
        services: Option<&MerchantServices>,
    ) -> HostFixture {
        let (dir, data) = host_data();
        let running = match services {
            Some(services) => runtime::start_all(&data, &serve_options(), services).await,
            None => runtime::start(&data, &serve_options()).await,
        }
        .unwrap();
        let issuer = data.issuer.clone();
        let master = data.master.clone();
        let cards: Vec<CardSpec> = cards.iter().map(card_spec).collect();
        data.ledger
            .submit(move |tx| -> Result<_, admin::AdminError> {
                admin::add_merchant(tx, &merchant, &master, 0)?;
                for card in &cards {
                    admin::add_card(tx, card, &issuer, &master, 0)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        HostFixture { dir, data, running }
    }

    /// Terminal `terminal_id` of [`MERCHANT`] connecting to this host,
    /// up to 600.00 a transaction, no offline floor.
    pub fn terminal_spec(&self, terminal_id: &str) -> TerminalSpec {
        TerminalSpec {
            terminal_id: terminal_id.into(),
            merchant_id: MERCHANT.into(),
            max_amount: 60_000,
            offline_floor: 0,
            hosts: vec![self.running.addr.to_string()],
        }
    }

    /// Enrolls `spec` and returns the terminal's bundle.
    pub async fn enroll(&self, spec: TerminalSpec) -> EnrollmentBundle {
        let prepared = admin::prepare_enrollment(&self.data.deployment, spec).unwrap();
        self.data
            .ledger
            .submit(move |tx| admin::enroll(tx, prepared, 0))
            .await
            .unwrap()
    }

    /// The terminal options the fixtures use: data in `terminal/` of the
    /// fixture's directory, quick reconnects.
    pub fn terminal_options(&self) -> TerminalOptions {
        TerminalOptions {
            data_dir: self.terminal_dir(),
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
        }
    }

    /// The terminal's data directory (also where its ECR certificate is kept).
    pub fn terminal_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("terminal")
    }
}

/// The single integer `sql` selects from the database of the host of `data`.
pub fn host_count(data: &HostData, sql: &str) -> i64 {
    data.reader()
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// A terminal opened from its bundle and supervised (connecting to its
/// host, reconnecting when the link drops) until stopped.
pub struct TerminalFixture {
    /// The terminal.
    pub terminal: Terminal,
    stop: watch::Sender<bool>,
}

impl TerminalFixture {
    /// Opens the terminal of `bundle` (its keys sent under `host`'s
    /// key-transport key) and supervises it, without waiting for it to
    /// sign on.
    pub fn open(
        bundle: &EnrollmentBundle,
        host: &HostData,
        options: TerminalOptions,
    ) -> TerminalFixture {
        let terminal =
            Terminal::open(bundle.clone(), host.deployment.ktk().expose(), options).unwrap();
        let (stop, watch) = watch::channel(false);
        let t = terminal.clone();
        tokio::spawn(async move { t.supervise(watch).await });
        TerminalFixture { terminal, stop }
    }

    /// As [`TerminalFixture::open`], then waits until the terminal is online.
    pub async fn start(
        bundle: &EnrollmentBundle,
        host: &HostData,
        options: TerminalOptions,
    ) -> TerminalFixture {
        let fixture = Self::open(bundle, host, options);
        fixture.wait("the terminal signs on", |s| s.online).await;
        fixture
    }

    /// Waits (bounded) until the terminal's status satisfies `pred`;
    /// panics naming `what` otherwise.
    pub async fn wait(&self, what: &str, pred: impl Fn(&Status) -> bool) {
        let mut status = self.terminal.status();
        tokio::time::timeout(WAIT, async {
            while !pred(&status.borrow()) {
                status.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting: {what}"));
    }

    /// Stops supervising (the terminal's process ends without any shutdown).
    pub fn stop(&self) {
        self.stop.send(true).unwrap();
    }
}

/// The terminal's nexo endpoint served on loopback with its certificate.
pub struct EcrFixture {
    /// The ECR service.
    pub ecr: EcrService,
    /// Where the endpoint listens.
    pub addr: SocketAddr,
    /// The endpoint's certificate.
    pub cert: EcrCertificate,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl EcrFixture {
    /// Serves `terminal`'s endpoint on `listen` (port 0: any free port)
    /// with the certificate kept in `cert_dir` (created there the first
    /// time); `config`'s endpoint is set to it, as pairing codes name it.
    pub async fn start(
        terminal: &Terminal,
        cert_dir: &Path,
        listen: SocketAddr,
        config: EcrConfig,
        options: ServerOptions,
    ) -> EcrFixture {
        let cert = EcrCertificate::load_or_create(cert_dir, &[]).unwrap();
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = EcrConfig {
            endpoint: Some(Endpoint {
                host: "127.0.0.1".into(),
                port: addr.port(),
                cert_sha256: cert.sha256(),
            }),
            ..config
        };
        let ecr = EcrService::new(terminal.clone(), config).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            ecr.clone(),
            listener,
            cert.server_config().unwrap(),
            options,
            async {
                let _ = stopped.await;
            },
        ));
        EcrFixture {
            ecr,
            addr,
            cert,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Stops the endpoint and waits until it has (requests in progress
    /// finished); panics if it failed. Once
    /// stopped, stopping again does nothing.
    pub async fn stop(&mut self) {
        if let (Some(stop), Some(server)) = (self.stop.take(), self.server.take()) {
            stop.send(()).unwrap();
            server.await.unwrap().unwrap();
        }
    }
}

/// Host, terminal and its nexo endpoint, all on loopback: the host with
/// `merchant` and the catalog cards, terminal [`TID`] enrolled and signed
/// on, its endpoint on any free port.
pub struct World {
    /// The host.
    pub host: HostFixture,
    /// The terminal's enrollment bundle (to open it again).
    pub bundle: EnrollmentBundle,
    /// The terminal.
    pub terminal: TerminalFixture,
    /// Its endpoint.
    pub ecr: EcrFixture,
}

impl World {
    /// Starts the host (with `services` if any), enrolls and signs on
    /// the terminal and serves its endpoint with `config` and `options`.
    pub async fn start(
        merchant: MerchantSpec,
        services: Option<&MerchantServices>,
        config: EcrConfig,
        options: ServerOptions,
    ) -> World {
        let host = HostFixture::start_with(merchant, terminal::card::CATALOG, services).await;
        let bundle = host.enroll(host.terminal_spec(TID)).await;
        let terminal = TerminalFixture::start(&bundle, &host.data, host.terminal_options()).await;
        let ecr = EcrFixture::start(
            &terminal.terminal,
            &host.terminal_dir(),
            "127.0.0.1:0".parse().unwrap(),
            config,
            options,
        )
        .await;
        World {
            host,
            bundle,
            terminal,
            ecr,
        }
    }

    /// The terminal's process ends (its endpoint stopped, requests in
    /// progress finished) and starts again from its data directory, its
    /// endpoint on `listen` with `config` (default server options).
    pub async fn restart(&mut self, listen: SocketAddr, config: EcrConfig) {
        self.ecr.stop().await;
        self.terminal.stop();
        self.terminal =
            TerminalFixture::start(&self.bundle, &self.host.data, self.host.terminal_options())
                .await;
        self.ecr = EcrFixture::start(
            &self.terminal.terminal,
            &self.host.terminal_dir(),
            listen,
            config,
            ServerOptions::default(),
        )
        .await;
    }
}

/// A terminal supervisor's authenticator app: codes from the `otpauth://`
/// URI that [`EcrService::set_supervisor`] shows, a fresh step for every
/// use (the terminal accepts a code once, and one step ahead of now).
pub struct Supervisor {
    totp: paycrypto::totp::Totp,
    last: std::sync::atomic::AtomicU64,
}

impl Supervisor {
    /// The app that scanned `uri`, the secret of terminal `poi_id`.
    pub fn from_uri(uri: &str, poi_id: &str) -> Self {
        let secret = uri
            .split("secret=")
            .nth(1)
            .and_then(|s| s.split('&').next())
            .expect("an otpauth URI carries its secret");
        let bytes = data_encoding::BASE32_NOPAD
            .decode(secret.as_bytes())
            .expect("the secret is base32");
        Supervisor {
            totp: terminal::ecr::supervisor::totp(&bytes, poi_id).expect("a usable secret"),
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A code the terminal accepts now: the current step's, or the next
    /// step's when the current one was used.
    pub fn code(&self) -> String {
        use paycrypto::totp::STEP_SECS;
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs()
            / STEP_SECS;
        let step = now.max(self.last.load(Ordering::SeqCst) + 1);
        self.last.store(step, Ordering::SeqCst);
        self.totp.code_at(step * STEP_SECS)
    }
}
