//! `posnet terminal`: run a POS terminal (host link, journal, screen page,
//! nexo ECR endpoint) and drive the running one. `status`, `history`,
//! `pay`, `settle`, `receipt`, `present`, `pair`, `pairings` and
//! `supervisor` talk to the running terminal's local API over HTTP rather
//! than opening its journal: only the running process may use the DUKPT
//! counter, the STAN and the host link, and only it knows whether it is
//! online and which keys it accepts.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use pki::EnrollmentBundle;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use terminal::card::{CATALOG, test_card_named};
use terminal::ecr::server::{DEFAULT_MAX_CONNECTIONS, ServerOptions};
use terminal::ecr::tls::EcrCertificate;
use terminal::ecr::{EcrConfig, EcrService, Endpoint};
use terminal::screen::{PairRequest, PresentRequest, RevokeRequest, SaleRequest};
use terminal::{Terminal, TerminalOptions};
use zeroize::Zeroizing;

#[derive(Args)]
pub struct TerminalArgs {
    #[command(subcommand)]
    command: TerminalCommand,
    /// The running terminal's screen address (`posnet terminal run` prints it).
    #[arg(
        long,
        env = "POSNET_TERMINAL_URL",
        default_value = "http://127.0.0.1:8480",
        global = true
    )]
    url: String,
}

#[derive(Subcommand)]
enum TerminalCommand {
    /// Run the terminal: connect to its hosts (failover, sign-on, echo,
    /// store-and-forward) and serve its screen page and local API, until
    /// Ctrl-C or SIGTERM. Prints `{"screen": "http://..."}` first.
    Run {
        /// Enrollment bundle from `posnet host enroll`.
        #[arg(long, env = "POSNET_TERMINAL_BUNDLE")]
        bundle: PathBuf,
        /// File with the key-transport key as hex (`posnet ca export-transport-key`).
        #[arg(long, env = "POSNET_TERMINAL_TRANSPORT_KEY_FILE")]
        transport_key_file: PathBuf,
        /// Journal directory.
        #[arg(
            long,
            env = "POSNET_TERMINAL_DATA_DIR",
            default_value = "posnet-data/terminal"
        )]
        data_dir: PathBuf,
        /// Address of the screen page and local API (loopback unless you
        /// mean to expose it).
        #[arg(
            long,
            env = "POSNET_TERMINAL_SCREEN_LISTEN",
            default_value = "127.0.0.1:8480"
        )]
        screen_listen: SocketAddr,
        /// Seconds to wait for the host's answer before reversing.
        #[arg(long, default_value_t = 15)]
        response_timeout_secs: u64,
        /// Longest pause between reconnection attempts, in seconds (the
        /// pause doubles from 0.2 s up to this, with jitter).
        #[arg(long, default_value_t = 30)]
        reconnect_max_secs: u64,
        #[command(flatten)]
        nexo: Box<NexoArgs>,
    },
    /// Present a test card, or a wallet's payment code as if scanned, to
    /// the nexo payment waiting for one.
    Present {
        /// Test card name.
        #[arg(long, required_unless_present = "qr", conflicts_with = "qr")]
        card: Option<String>,
        /// A wallet payment code (`posnet wallet code`, `posnet demo code wallet`).
        #[arg(long)]
        qr: Option<String>,
    },
    /// Pair a phone or cash register: prints its pairing code (a secret:
    /// it carries the passphrase) as a QR code and as text, and the
    /// terminal's certificate fingerprint.
    Pair {
        /// What to call it in `pairings list`.
        #[arg(long, default_value = "phone")]
        label: String,
    },
    /// List or revoke pairings.
    Pairings {
        #[command(subcommand)]
        command: PairingsCommand,
    },
    /// The supervisor's second factor for refunds and reversals.
    Supervisor {
        #[command(subcommand)]
        command: SupervisorCommand,
    },
    /// What the terminal displays, whether it is online, stored messages.
    Status,
    /// Recent transactions as JSON lines, newest first.
    History {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// A sale with a card of the test catalog (docs/test-cards.md) or a
    /// wallet's payment code, scanned.
    Pay {
        /// Amount in minor units (1250 is 12.50 CNY).
        #[arg(long)]
        amount: u64,
        /// Test card name.
        #[arg(long, required_unless_present = "qr", conflicts_with = "qr")]
        card: Option<String>,
        /// A wallet payment code (`posnet wallet code`, `posnet demo code wallet`).
        #[arg(long)]
        qr: Option<String>,
    },
    /// Settle the open batch (with batch upload when the host's totals differ).
    Settle,
    /// Print a transaction's receipt.
    Receipt {
        /// Transaction id (from `history` or `pay`).
        id: i64,
        /// Whose copy.
        #[arg(long, default_value = "customer", value_parser = ["customer", "merchant"])]
        copy: String,
        /// `text`, `escpos` (raw printer bytes) or `json`.
        #[arg(long, default_value = "text", value_parser = ["text", "escpos", "json"])]
        format: String,
    },
}

#[derive(Subcommand)]
enum PairingsCommand {
    /// Every pairing as JSON lines, newest first.
    List,
    /// Revoke a pairing: messages under its key are rejected from now on.
    Revoke {
        /// Its key identifier (from `pairings list`).
        key_identifier: String,
    },
}

#[derive(Subcommand)]
enum SupervisorCommand {
    /// Make a new TOTP secret (replacing the old one) and print its
    /// `otpauth://` URI and QR code once, for an authenticator app.
    Set,
}

/// The nexo ECR endpoint of `posnet terminal run`.
#[derive(Args)]
struct NexoArgs {
    /// Address of the nexo endpoint (HTTPS and WebSocket). Loopback by
    /// default: give the counter's address (or 0.0.0.0:8443, as Adyen's
    /// terminals listen) to serve phones and registers on the network.
    #[arg(
        long,
        env = "POSNET_TERMINAL_NEXO_LISTEN",
        default_value = "127.0.0.1:8443"
    )]
    nexo_listen: SocketAddr,
    /// A host name or address the endpoint's certificate is valid for,
    /// besides localhost, 127.0.0.1 and ::1 (repeatable).
    #[arg(long = "nexo-name")]
    nexo_names: Vec<String>,
    /// The host name or address pairing codes carry (default: the first
    /// --nexo-name, else the listen address).
    #[arg(long)]
    nexo_advertise: Option<String>,
    /// Accept plain (unsecured) nexo messages from this machine (loopback
    /// peers only); for tests and local integrations.
    #[arg(long)]
    nexo_allow_plain: bool,
    /// Connections the endpoint serves at once.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    nexo_max_connections: usize,
    /// Origin of a back office (`http://127.0.0.1:8600`) whose open orders
    /// the phone app may list and charge (repeatable); the back office
    /// names this terminal's app origin with `--app-origin`.
    #[arg(long = "back-office")]
    back_offices: Vec<String>,
    /// Seconds a nexo payment waits for its card.
    #[arg(long, default_value_t = 60)]
    card_timeout_secs: u64,
    /// A test card the simulated reader presents to every nexo payment at
    /// once (unattended demonstrations).
    #[arg(long)]
    present_card: Option<String>,
    /// A serial device phones and registers reach the terminal on
    /// (`/dev/ttyUSB0`, `/dev/rfcomm0`; repeatable): the same nexo
    /// messages in serial frames (docs/serial-and-bluetooth.md).
    #[arg(long = "serial")]
    serial_devices: Vec<String>,
    /// Baud rate of the serial devices.
    #[arg(long, default_value_t = 115_200)]
    serial_baud: u32,
}

/// Runs `posnet terminal`.
pub fn run(args: TerminalArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let api = Api::new(&args.url)?;
        match args.command {
            TerminalCommand::Run {
                bundle,
                transport_key_file,
                data_dir,
                screen_listen,
                response_timeout_secs,
                reconnect_max_secs,
                nexo,
            } => {
                let defaults = TerminalOptions::default();
                let options = TerminalOptions {
                    data_dir,
                    response_timeout: Duration::from_secs(response_timeout_secs),
                    backoff_max: Duration::from_secs(reconnect_max_secs).max(defaults.backoff_min),
                    ..defaults
                };
                serve(bundle, transport_key_file, options, screen_listen, nexo).await
            }
            TerminalCommand::Present { card, qr } => {
                let card = card.unwrap_or_default();
                let body = serde_json::to_value(PresentRequest { card, qr })?;
                print_json(&api.post("/api/present", &body).await?)
            }
            TerminalCommand::Pair { label } => {
                let body = serde_json::to_value(PairRequest { label })?;
                let answer = api.post("/api/pairings", &body).await?;
                let text = |k: &str| answer[k].as_str().unwrap_or_default().to_string();
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", text("qr_text"))?;
                writeln!(out, "pairing code: {}", text("code"))?;
                writeln!(
                    out,
                    "certificate fingerprint (SHA-256): {}",
                    text("fingerprint")
                )?;
                writeln!(out, "key identifier: {}", text("key_identifier"))?;
                Ok(())
            }
            TerminalCommand::Pairings {
                command: PairingsCommand::List,
            } => {
                let list = api.get("/api/pairings").await?;
                for pairing in list.as_array().into_iter().flatten() {
                    print_json(pairing)?;
                }
                Ok(())
            }
            TerminalCommand::Pairings {
                command: PairingsCommand::Revoke { key_identifier },
            } => {
                let body = serde_json::to_value(RevokeRequest { key_identifier })?;
                print_json(&api.post("/api/pairings/revoke", &body).await?)
            }
            TerminalCommand::Supervisor {
                command: SupervisorCommand::Set,
            } => {
                let answer = api.post("/api/supervisor", &serde_json::json!({})).await?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", answer["qr_text"].as_str().unwrap_or_default())?;
                writeln!(out, "{}", answer["otpauth"].as_str().unwrap_or_default())?;
                writeln!(
                    out,
                    "Scan it with the supervisor's authenticator app; it is not shown again."
                )?;
                Ok(())
            }
            TerminalCommand::Status => print_json(&api.get("/api/status").await?),
            TerminalCommand::History { limit } => {
                let list = api.get(&format!("/api/transactions?limit={limit}")).await?;
                for txn in list.as_array().into_iter().flatten() {
                    print_json(txn)?;
                }
                Ok(())
            }
            TerminalCommand::Pay { amount, card, qr } => {
                let card = card.unwrap_or_default();
                let body = serde_json::to_value(SaleRequest { amount, card, qr })?;
                print_json(&api.post("/api/sale", &body).await?)
            }
            TerminalCommand::Settle => {
                print_json(&api.post("/api/settle", &serde_json::json!({})).await?)
            }
            TerminalCommand::Receipt { id, copy, format } => {
                let bytes = api
                    .get_bytes(&format!("/api/receipt/{id}?copy={copy}&format={format}"))
                    .await?;
                let mut out = std::io::stdout().lock();
                out.write_all(&bytes)?;
                out.flush()?;
                Ok(())
            }
        }
    })
}

async fn serve(
    bundle: PathBuf,
    transport_key_file: PathBuf,
    options: TerminalOptions,
    screen_listen: SocketAddr,
    nexo: Box<NexoArgs>,
) -> Result<()> {
    let bundle_file = bundle;
    let bundle = EnrollmentBundle::read(&bundle_file)
        .with_context(|| format!("reading {}", bundle_file.display()))?;
    let key_hex = Zeroizing::new(
        std::fs::read_to_string(&transport_key_file)
            .with_context(|| format!("reading {}", transport_key_file.display()))?,
    );
    let key = Zeroizing::new(hex::decode(key_hex.trim()).map_err(|_| {
        anyhow::anyhow!(
            "{}: the key-transport key must be hex",
            transport_key_file.display()
        )
    })?);
    let present_card = match &nexo.present_card {
        Some(name) => Some(test_card_named(name).ok_or_else(|| {
            let names: Vec<&str> = CATALOG.iter().map(|c| c.name).collect();
            anyhow::anyhow!(
                "--present-card: no test card named {name:?}; the catalog has {}",
                names.join(", ")
            )
        })?),
        None => None,
    };
    let advertise = match nexo
        .nexo_advertise
        .clone()
        .or_else(|| nexo.nexo_names.first().cloned())
    {
        Some(host) => host,
        None if !nexo.nexo_listen.ip().is_unspecified() => nexo.nexo_listen.ip().to_string(),
        None => bail!(
            "--nexo-listen {} needs --nexo-advertise HOST or --nexo-name NAME: pairing codes carry an address phones reach",
            nexo.nexo_listen
        ),
    };
    let data_dir = options.data_dir.clone();
    let terminal = Terminal::open(bundle, &key, options)
        .with_context(|| format!("opening the terminal in {}", data_dir.display()))?;
    let cert = EcrCertificate::load_or_create(&data_dir, &nexo.nexo_names)
        .context("the ECR certificate")?;
    let listener = tokio::net::TcpListener::bind(screen_listen)
        .await
        .with_context(|| format!("listening on {screen_listen}"))?;
    let addr = listener.local_addr()?;
    let nexo_listener = tokio::net::TcpListener::bind(nexo.nexo_listen)
        .await
        .with_context(|| format!("listening on {}", nexo.nexo_listen))?;
    let nexo_addr = nexo_listener.local_addr()?;
    let ecr = EcrService::new(
        terminal.clone(),
        EcrConfig {
            card_timeout: Duration::from_secs(nexo.card_timeout_secs.max(1)),
            present_card,
            endpoint: Some(Endpoint {
                host: advertise,
                port: nexo_addr.port(),
                cert_sha256: cert.sha256(),
            }),
        },
    )
    .await
    .context("starting the ECR interface")?;
    println!(
        "{}",
        serde_json::json!({
            "screen": format!("http://{addr}"),
            "nexo": format!("https://{nexo_addr}/nexo"),
            "fingerprint": cert.fingerprint(),
        })
    );
    std::io::stdout().flush()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let supervisor = {
        let terminal = terminal.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move { terminal.supervise(stopped).await })
    };
    let nexo_server = tokio::spawn(terminal::ecr::server::serve(
        ecr.clone(),
        nexo_listener,
        cert.server_config().context("the ECR certificate")?,
        ServerOptions {
            allow_plain: nexo.nexo_allow_plain,
            max_connections: nexo.nexo_max_connections,
            back_offices: nexo
                .back_offices
                .iter()
                .map(|o| merchant::modules::api::origin(o))
                .collect::<Result<_, _>>()?,
        },
        until_stopped(stopped.clone()),
    ));
    // A serial link that fails is logged; the terminal serves on without it.
    let serial_links: Vec<_> = nexo
        .serial_devices
        .iter()
        .map(|path| {
            let (ecr, path, stopped) = (ecr.clone(), path.clone(), stopped.clone());
            let baud = nexo.serial_baud;
            tokio::spawn(async move {
                match terminal::ecr::serial::serve_device(ecr, &path, baud, until_stopped(stopped))
                    .await
                {
                    Ok(stats) => tracing::info!(path, ?stats, "serial link closed"),
                    Err(e) => tracing::error!(path, "serial link: {e}"),
                }
            })
        })
        .collect();
    let signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::host_cmd::shutdown_signal().await;
            let _ = stop.send(true);
        })
    };
    terminal::screen::serve_with_ecr(ecr, listener, until_stopped(stopped.clone()))
        .await
        .context("serving the screen")?;
    signal.abort();
    let _ = stop.send(true);
    nexo_server
        .await
        .context("the nexo endpoint")?
        .context("serving the nexo endpoint")?;
    for link in serial_links {
        let _ = link.await;
    }
    tracing::info!("shutting down: closing the host link");
    let _ = supervisor.await;
    Ok(())
}

fn print_json(value: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    Ok(())
}

/// A client of the running terminal's local API.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(url: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Api {
            base: url.trim_end_matches('/').to_string(),
            http,
        })
    }

    async fn get(&self, path: &str) -> Result<serde_json::Value> {
        let bytes = self.get_bytes(path).await?;
        serde_json::from_slice(&bytes).context("the terminal's answer is not JSON")
    }

    async fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("no terminal answering at {}", self.base))?;
        answer(response).await
    }

    async fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("no terminal answering at {}", self.base))?;
        let bytes = answer(response).await?;
        serde_json::from_slice(&bytes).context("the terminal's answer is not JSON")
    }
}

/// The body of a successful answer; an error answer's message otherwise.
async fn answer(response: reqwest::Response) -> Result<Vec<u8>> {
    let status = response.status();
    let bytes = response.bytes().await?.to_vec();
    if status.is_success() {
        return Ok(bytes);
    }
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    bail!("the terminal answered {status}: {message}")
}
