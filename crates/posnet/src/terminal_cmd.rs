//! `posnet terminal`: run a POS terminal (host link, journal, screen page)
//! and drive the running one. `status`, `history`, `pay`, `settle` and
//! `receipt` talk to the running terminal's local API over HTTP rather
//! than opening its journal: only the running process may use the DUKPT
//! counter, the STAN and the host link, and only it knows whether it is
//! online.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use pki::EnrollmentBundle;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use terminal::screen::SaleRequest;
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
    },
    /// What the terminal displays, whether it is online, stored messages.
    Status,
    /// Recent transactions as JSON lines, newest first.
    History {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// A sale with a card of the test catalog (docs/test-cards.md).
    Pay {
        /// Amount in minor units (1250 is 12.50 CNY).
        #[arg(long)]
        amount: u64,
        /// Test card name.
        #[arg(long)]
        card: String,
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
            } => {
                let defaults = TerminalOptions::default();
                let options = TerminalOptions {
                    data_dir,
                    response_timeout: Duration::from_secs(response_timeout_secs),
                    backoff_max: Duration::from_secs(reconnect_max_secs).max(defaults.backoff_min),
                    ..defaults
                };
                serve(bundle, transport_key_file, options, screen_listen).await
            }
            TerminalCommand::Status => print_json(&api.get("/api/status").await?),
            TerminalCommand::History { limit } => {
                let list = api.get(&format!("/api/transactions?limit={limit}")).await?;
                for txn in list.as_array().into_iter().flatten() {
                    print_json(txn)?;
                }
                Ok(())
            }
            TerminalCommand::Pay { amount, card } => {
                let body = serde_json::to_value(SaleRequest { amount, card })?;
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
    let data_dir = options.data_dir.clone();
    let terminal = Terminal::open(bundle, &key, options)
        .with_context(|| format!("opening the terminal in {}", data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(screen_listen)
        .await
        .with_context(|| format!("listening on {screen_listen}"))?;
    let addr = listener.local_addr()?;
    println!(
        "{}",
        serde_json::json!({ "screen": format!("http://{addr}") })
    );
    std::io::stdout().flush()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let supervisor = {
        let terminal = terminal.clone();
        tokio::spawn(async move { terminal.supervise(stopped).await })
    };
    terminal::screen::serve(terminal, listener, crate::host_cmd::shutdown_signal())
        .await
        .context("serving the screen")?;
    tracing::info!("shutting down: closing the host link");
    let _ = stop.send(true);
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
