//! `posnet ca` and `posnet host`: the deployment's keys, and the payment
//! host with its administration.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use host::admin::{self, Seed, TerminalSpec};
use host::config::HostConfig;
use host::runtime::{HostData, ServeOptions};
use ledger::GroupCommitConfig;
use pki::{Deployment, InitOptions, MasterKey};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where the master key comes from (every command that touches sealed keys).
#[derive(Args, Clone)]
pub struct MasterKeyArgs {
    /// File holding the master key (64 hex digits). Otherwise
    /// POSNET_MASTER_KEY (the hex itself) or POSNET_MASTER_KEY_FILE.
    #[arg(long, env = "POSNET_MASTER_KEY_FILE", global = true)]
    master_key_file: Option<PathBuf>,
}

impl MasterKeyArgs {
    fn load(&self) -> Result<MasterKey> {
        Ok(MasterKey::from_env_or_file(
            self.master_key_file.as_deref(),
        )?)
    }

    /// As [`MasterKeyArgs::load`], falling back to the key `posnet ca init`
    /// generated beside the deployment when none is configured.
    fn load_for(&self, deployment_dir: &Path) -> Result<MasterKey> {
        match self.load() {
            Err(_)
                if self.master_key_file.is_none() && deployment_dir.join("master.key").exists() =>
            {
                tracing::warn!(
                    "using {}/master.key: configure the master key apart from the deployment in production",
                    deployment_dir.display()
                );
                Ok(MasterKey::from_file(&deployment_dir.join("master.key"))?)
            }
            other => other,
        }
    }
}

#[derive(Args)]
pub struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
    #[command(flatten)]
    master: MasterKeyArgs,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the deployment: CA, host certificate, DUKPT BDK and key-transport
    /// key, all private material sealed under the master key (files 0600).
    /// Without a configured master key, a new one is written to
    /// DIR/master.key: move it off the machine for production.
    Init {
        /// Deployment directory.
        #[arg(long, default_value = "posnet-data/deployment")]
        dir: PathBuf,
        /// Names and addresses the host certificate is valid for (repeatable).
        #[arg(long = "host-name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
        host_names: Vec<String>,
    },
    /// Export the key-transport key as hex to a 0600 file, to load into
    /// terminals as a key-injection facility would.
    ExportTransportKey {
        /// Deployment directory.
        #[arg(long, default_value = "posnet-data/deployment")]
        dir: PathBuf,
        /// File to write.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Creates the deployment, generating a master key when none is configured.
pub fn ca_init(dir: &Path, host_names: Vec<String>, master: &MasterKeyArgs) -> Result<MasterKey> {
    let master = match master.load() {
        Ok(key) => key,
        Err(_) if master.master_key_file.is_none() => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let key = MasterKey::generate();
            let path = dir.join("master.key");
            key.write_to(&path)?;
            eprintln!(
                "posnet: no master key configured; generated {} (0600). Keep it apart from the deployment in production.",
                path.display()
            );
            key
        }
        Err(e) => return Err(e),
    };
    Deployment::init(dir, &master, &InitOptions { host_names })?;
    Ok(master)
}

/// Runs `posnet ca`.
pub fn run_ca(args: CaArgs) -> Result<()> {
    match args.command {
        CaCommand::Init { dir, host_names } => {
            ca_init(&dir, host_names, &args.master)?;
            println!(
                "{}",
                serde_json::json!({ "deployment": dir, "ca_certificate": dir.join("ca.crt.pem") })
            );
            Ok(())
        }
        CaCommand::ExportTransportKey { dir, out } => {
            Deployment::load(&dir, &args.master.load_for(&dir)?)?.export_ktk(&out)?;
            Ok(())
        }
    }
}

#[derive(Args)]
pub struct HostArgs {
    #[command(subcommand)]
    command: HostCommand,
    /// Configuration file (TOML). Flags and POSNET_HOST_* variables override it.
    #[arg(long, env = "POSNET_HOST_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Host data directory (database, issuer key).
    #[arg(long, env = "POSNET_HOST_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Deployment directory (from `posnet ca init`).
    #[arg(long, env = "POSNET_HOST_DEPLOYMENT_DIR", global = true)]
    deployment_dir: Option<PathBuf>,
    #[command(flatten)]
    master: MasterKeyArgs,
}

#[derive(Subcommand)]
enum HostCommand {
    /// Run the payment host: terminals over mutual TLS, the merchant REST
    /// API with /metrics and /healthz, and webhook delivery, until Ctrl-C or
    /// SIGTERM, then answer what is in flight and stop.
    Run {
        /// Address for terminals.
        #[arg(long, env = "POSNET_HOST_LISTEN")]
        listen: Option<SocketAddr>,
        /// Address of the merchant REST API, /metrics and /healthz.
        #[arg(long, env = "POSNET_HOST_API_LISTEN")]
        api_listen: Option<SocketAddr>,
        /// Connections served at once.
        #[arg(long, env = "POSNET_HOST_MAX_CONNECTIONS")]
        max_connections: Option<usize>,
        /// Requests in flight per connection.
        #[arg(long, env = "POSNET_HOST_MAX_IN_FLIGHT")]
        max_in_flight: Option<usize>,
        /// Seconds of silence before a connection is closed.
        #[arg(long, env = "POSNET_HOST_IDLE_TIMEOUT")]
        idle_timeout_secs: Option<u64>,
        /// Seconds between terminal echoes (sent in the parameters).
        #[arg(long, env = "POSNET_HOST_ECHO_INTERVAL")]
        echo_interval_secs: Option<u32>,
    },
    /// Register a terminal and write its enrollment bundle (certificate and
    /// key, DUKPT initial key as a TR-31 block, initial KSN). Enrolling an
    /// enrolled terminal again replaces its certificate and key.
    Enroll {
        /// Terminal id, 8 characters (ISO 8583 field 41).
        #[arg(long)]
        terminal_id: String,
        /// Merchant id, 15 characters (field 42); the merchant must exist.
        #[arg(long)]
        merchant_id: String,
        /// Largest amount per transaction, minor units.
        #[arg(long, default_value_t = 1_000_000)]
        max_amount: u64,
        /// Offline floor limit, minor units (0: never approve offline).
        #[arg(long, default_value_t = 0)]
        offline_floor: u64,
        /// Host address for the bundle (repeatable; tried in order).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Where to write the bundle (0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Administer terminals.
    Terminals {
        #[command(subcommand)]
        command: TerminalsCommand,
    },
    /// Merchants, cards and wallets of the closed-loop issuer.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Wallets of the closed-loop issuer, paid by payment code.
    Wallet {
        #[command(subcommand)]
        command: WalletCommand,
    },
}

#[derive(Subcommand)]
enum WalletCommand {
    /// Create a wallet and write its holder's wallet file (number and
    /// secret, 0600): the only time the secret leaves the host.
    Add {
        /// Wallet number, 9 digits (random when not given).
        #[arg(long)]
        number: Option<String>,
        /// Opening balance, minor units.
        #[arg(long, default_value_t = 0)]
        balance: u64,
        /// Largest amount per payment, minor units.
        #[arg(long, default_value_t = 50_000)]
        per_txn_limit: u64,
        /// Largest total per day, minor units.
        #[arg(long, default_value_t = 200_000)]
        daily_limit: u64,
        /// ISO 4217 numeric currency.
        #[arg(long, default_value_t = 156)]
        currency: u16,
        /// Holder or label.
        #[arg(long, default_value = "")]
        holder: String,
        /// Where to write the wallet file (for `posnet wallet code`).
        #[arg(long)]
        secret_out: PathBuf,
    },
    /// Load value onto a wallet from the funding account.
    Fund {
        /// Wallet number.
        number: String,
        /// Amount, minor units.
        amount: u64,
    },
    /// List wallets with their balances as JSON lines.
    List,
}

#[derive(Subcommand)]
enum TerminalsCommand {
    /// List terminals as JSON lines.
    List,
    /// Refuse a terminal at the handshake until it is enabled again.
    Disable {
        /// Terminal id.
        terminal_id: String,
    },
    /// Accept a disabled terminal again.
    Enable {
        /// Terminal id.
        terminal_id: String,
    },
    /// Refuse a terminal's certificate for good (re-enroll for a new one).
    Revoke {
        /// Terminal id.
        terminal_id: String,
    },
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// Import merchants and cards from a TOML file ([[merchant]] and [[card]]
    /// tables, see docs/operations.md). Existing ones are left as they are.
    Import {
        /// The TOML file.
        file: PathBuf,
    },
    /// Set a card's status: active, blocked or lost.
    CardStatus {
        /// The card number (read from the terminal, never logged).
        #[arg(long, env = "POSNET_PAN")]
        pan: String,
        /// New status.
        #[arg(long)]
        status: String,
    },
}

impl HostArgs {
    fn config(&self) -> Result<HostConfig> {
        let mut config = match &self.config {
            Some(path) => HostConfig::load(path)?,
            None => HostConfig::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(dir) = &self.deployment_dir {
            config.deployment_dir = dir.clone();
        }
        Ok(config)
    }
}

fn open(config: &HostConfig, master: MasterKey) -> Result<HostData> {
    let commit = GroupCommitConfig {
        max_batch: config.commit_batch,
        ..GroupCommitConfig::default()
    };
    HostData::open(&config.data_dir, &config.deployment_dir, master, commit)
        .with_context(|| format!("opening the host in {}", config.data_dir.display()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs `posnet host`.
pub fn run_host(args: HostArgs) -> Result<()> {
    let mut config = args.config()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match args.command {
            HostCommand::Run { listen, api_listen, max_connections, max_in_flight, idle_timeout_secs, echo_interval_secs } => {
                if let Some(v) = listen { config.listen = v }
                if let Some(v) = api_listen { config.api_listen = v }
                if let Some(v) = max_connections { config.max_connections = v }
                if let Some(v) = max_in_flight { config.max_in_flight = v }
                if let Some(v) = idle_timeout_secs { config.idle_timeout_secs = v }
                if let Some(v) = echo_interval_secs { config.echo_interval_secs = v }
                let master = args.master.load_for(&config.deployment_dir)?;
                serve(config, master).await
            }
            HostCommand::Enroll { terminal_id, merchant_id, max_amount, offline_floor, hosts, out } => {
                let data = open(&config, args.master.load_for(&config.deployment_dir)?)?;
                let hosts = if hosts.is_empty() { vec![config.listen.to_string()] } else { hosts };
                let spec = TerminalSpec { terminal_id, merchant_id, max_amount, offline_floor, hosts };
                let prepared = admin::prepare_enrollment(&data.deployment, spec)?;
                let now = now();
                let bundle = data.ledger.submit(move |tx| admin::enroll(tx, prepared, now)).await?;
                bundle.write(&out)?;
                println!("{}", serde_json::json!({
                    "terminal_id": bundle.terminal_id, "merchant_id": bundle.merchant_id,
                    "initial_key_id": bundle.initial_key_id, "bundle": out,
                }));
                Ok(())
            }
            HostCommand::Terminals { command } => {
                let data = open(&config, args.master.load_for(&config.deployment_dir)?)?;
                let (id, status) = match command {
                    TerminalsCommand::List => {
                        for t in admin::list_terminals(&data.reader()?)? {
                            println!("{}", serde_json::to_string(&t)?);
                        }
                        return Ok(());
                    }
                    TerminalsCommand::Disable { terminal_id } => (terminal_id, "disabled"),
                    TerminalsCommand::Enable { terminal_id } => (terminal_id, "active"),
                    TerminalsCommand::Revoke { terminal_id } => (terminal_id, "revoked"),
                };
                let id2 = id.clone();
                if !data.ledger.submit(move |tx| admin::set_terminal_status(tx, &id2, status)).await? {
                    bail!("no terminal {id}");
                }
                println!("{}", serde_json::json!({ "terminal_id": id, "status": status }));
                Ok(())
            }
            HostCommand::Wallet { command } => {
                let data = open(&config, args.master.load_for(&config.deployment_dir)?)?;
                wallet(&data, command).await
            }
            HostCommand::Accounts { command } => {
                let data = open(&config, args.master.load_for(&config.deployment_dir)?)?;
                match command {
                    AccountsCommand::Import { file } => {
                        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
                        let seed: Seed = toml::from_str(&text).with_context(|| format!("{}", file.display()))?;
                        let issuer = data.issuer.clone();
                        let master = args.master.load_for(&config.deployment_dir)?;
                        let now = now();
                        let report = data
                            .ledger
                            .submit(move |tx| -> Result<serde_json::Value, admin::AdminError> {
                                let mut merchants = Vec::new();
                                for m in &seed.merchant {
                                    merchants.push(serde_json::json!({ "merchant_id": m.merchant_id, "result": admin::add_merchant(tx, m, &master, now)? }));
                                }
                                let mut cards = Vec::new();
                                for c in &seed.card {
                                    let masked = iso8583::text::mask_pan(&c.pan);
                                    cards.push(serde_json::json!({ "card": masked, "result": admin::add_card(tx, c, &issuer, &master, now)? }));
                                }
                                Ok(serde_json::json!({ "merchants": merchants, "cards": cards }))
                            })
                            .await?;
                        println!("{report}");
                        Ok(())
                    }
                    AccountsCommand::CardStatus { pan, status } => {
                        let issuer = data.issuer.clone();
                        let masked = iso8583::text::mask_pan(&pan);
                        if !data.ledger.submit(move |tx| admin::set_card_status(tx, &issuer, &pan, &status)).await? {
                            bail!("no card {masked}");
                        }
                        Ok(())
                    }
                }
            }
        }
    })
}

/// Runs `posnet host wallet`.
async fn wallet(data: &HostData, command: WalletCommand) -> Result<()> {
    let master = data.master.clone();
    match command {
        WalletCommand::Add {
            number,
            balance,
            per_txn_limit,
            daily_limit,
            currency,
            holder,
            secret_out,
        } => {
            let number = match number {
                Some(n) => n,
                None => format!(
                    "{:09}",
                    u32::from_be_bytes(
                        pki::Secret::random(4).expose().try_into().expect("4 bytes")
                    ) % 1_000_000_000
                ),
            };
            let spec = admin::WalletSpec {
                number: number.clone(),
                balance,
                per_txn_limit,
                daily_limit,
                currency,
                holder,
            };
            let now = now();
            let Some(secret) = data
                .ledger
                .submit(move |tx| admin::add_wallet(tx, &spec, &master, now))
                .await?
            else {
                bail!("wallet {number} exists; its secret was given when it was made");
            };
            crate::wallet_cmd::WalletFile::write(&secret_out, &number, secret.expose())?;
            println!(
                "{}",
                serde_json::json!({ "wallet": number, "balance": balance, "wallet_file": secret_out })
            );
        }
        WalletCommand::Fund { number, amount } => {
            let wallet = paycrypto::paycode::WalletNumber::parse(&number)
                .with_context(|| format!("wallet {number:?}"))?;
            data.ledger
                .submit(move |tx| admin::fund_wallet(tx, wallet, amount))
                .await?;
            println!(
                "{}",
                serde_json::json!({ "wallet": number, "funded": amount })
            );
        }
        WalletCommand::List => {
            for w in data.ledger.submit(admin::list_wallets).await? {
                println!("{}", serde_json::to_string(&w)?);
            }
        }
    }
    Ok(())
}

async fn serve(config: HostConfig, master: MasterKey) -> Result<()> {
    let mut data = open(&config, master)?;
    data.routes = config.route.clone();
    data.preauth_max_age =
        std::time::Duration::from_secs(config.preauth_expiry_hours.saturating_mul(3600));
    let options = ServeOptions {
        listen: config.listen,
        limits: config.limits(),
        echo_interval: config.echo_interval_secs,
    };
    let running = host::runtime::start_all(&data, &options, &config.merchant_services()).await?;
    println!(
        "{}",
        serde_json::json!({
            "listening": running.addr.to_string(),
            "api": running.api_addr.map(|a| a.to_string()),
        })
    );
    shutdown_signal().await;
    tracing::info!("shutting down: answering requests in flight");
    running.stop().await;
    data.ledger.shutdown().await;
    Ok(())
}

/// The variable through which `posnet demo` and `posnet bench` tell the
/// posnet commands they start who their parent is (its process id).
pub const PARENT_PID_ENV: &str = "POSNET_PARENT_PID";

/// Resolves on Ctrl-C or SIGTERM; and, in a command started by another
/// posnet command ([`PARENT_PID_ENV`]), when that parent is gone (killed
/// with SIGKILL, say, so that it could not stop its children): the
/// orphan then stops as on SIGTERM instead of running on unwatched.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
            () = parent_gone() => {
                tracing::warn!("the posnet command that started this one is gone: stopping");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Resolves once this process's parent is no longer the one named in
/// [`PARENT_PID_ENV`] (a process whose parent dies is adopted by another);
/// never when the variable is not set.
#[cfg(unix)]
async fn parent_gone() {
    let parent = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok());
    let Some(parent) = parent else {
        return std::future::pending().await;
    };
    while std::os::unix::process::parent_id() == parent {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
