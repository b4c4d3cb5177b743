//! `posnet merchant`: the merchant's back office — run it (pages and the
//! host's webhooks), catch up from the host, reconcile a day, add users,
//! verify the audit log, pair the terminals orders are paid on, seed the
//! demonstration catalog.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use merchant::host_api::HostApi;
use merchant::store::{Store, unix_now};
use merchant::users::{self, NewUser, PasswordCost, Role};
use pki::Secret;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Shortest webhook secret accepted (docs/operations.md asks for 32 random characters).
const MIN_WEBHOOK_SECRET: usize = 32;

#[derive(Args)]
pub struct MerchantArgs {
    #[command(subcommand)]
    command: MerchantCommand,
    /// Data directory (merchant.db and storage.key, both owner-only).
    #[arg(
        long,
        env = "POSNET_MERCHANT_DATA_DIR",
        default_value = "posnet-data/merchant",
        global = true
    )]
    data_dir: PathBuf,
}

/// Where the host's merchant API is and the key to it.
#[derive(Args)]
struct HostApiArgs {
    /// The host's merchant API (`api_listen` of `posnet host run`), e.g. http://127.0.0.1:5880.
    #[arg(long, env = "POSNET_MERCHANT_HOST_API")]
    host_api: Option<String>,
    /// File holding the merchant's API key (the `api_key` given to the host).
    #[arg(long, env = "POSNET_MERCHANT_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
}

impl HostApiArgs {
    /// The client, when both the URL and the key are given.
    fn client(&self) -> Result<Option<HostApi>> {
        match (&self.host_api, &self.api_key_file) {
            (Some(url), Some(file)) => Ok(Some(HostApi::new(url, read_secret(file)?)?)),
            (None, None) => Ok(None),
            _ => bail!("--host-api and --api-key-file go together"),
        }
    }

    fn required(&self) -> Result<HostApi> {
        self.client()?
            .context("give --host-api and --api-key-file (the host's merchant API)")
    }
}

#[derive(Subcommand)]
enum MerchantCommand {
    /// Serve the back office and the host's webhooks (POST /webhooks/host)
    /// until Ctrl-C or SIGTERM; catch up from the host's API at start.
    /// Prints `{"listening": "..."}` first.
    Run {
        /// Address of the pages and the webhook receiver (put a TLS proxy in
        /// front when it leaves the machine).
        #[arg(long, env = "POSNET_MERCHANT_LISTEN", default_value = "127.0.0.1:8600")]
        listen: SocketAddr,
        #[command(flatten)]
        host: HostApiArgs,
        /// File holding the webhook secret (the `webhook_secret` given to the host).
        #[arg(long, env = "POSNET_MERCHANT_WEBHOOK_SECRET_FILE")]
        webhook_secret_file: PathBuf,
        /// The merchant's name, shown on every page.
        #[arg(long, env = "POSNET_MERCHANT_NAME", default_value = "Merchant")]
        name: String,
        /// Origin of a terminal's phone app (`https://<terminal>:8443`) that
        /// may call the device API from the browser; repeat for each.
        #[arg(long = "app-origin")]
        app_origins: Vec<String>,
    },
    /// Fetch what the host recorded since the newest transaction here.
    Backfill {
        #[command(flatten)]
        host: HostApiArgs,
    },
    /// Compare a day (UTC) with the host's transactions and settlements;
    /// prints every difference and stores the result.
    Reconcile {
        /// The day, YYYY-MM-DD (default: yesterday, UTC).
        #[arg(long)]
        date: Option<String>,
        #[command(flatten)]
        host: HostApiArgs,
    },
    /// Users of the back office.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The terminals orders are paid on (the back office's own pairings,
    /// in `terminals/` of the data directory).
    Terminal {
        #[command(subcommand)]
        command: TerminalCommand,
    },
    /// Cashier devices (the terminal's phone app) allowed to list and
    /// charge open orders through the device API.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Fill the catalog with demonstration data: a few shop items with
    /// barcodes, six tables and a menu, clinic fees, two tickets. Running
    /// it again adds nothing twice. Prints what was added as JSON.
    Seed {
        /// The demonstration data (the only seed there is).
        #[arg(long)]
        demo: bool,
        /// ISO 4217 numeric currency of the prices (the merchant's at the host).
        #[arg(long, default_value_t = 156)]
        currency: u16,
    },
}

#[derive(Subcommand)]
enum TerminalCommand {
    /// Pair with a terminal: store the code it shows (posnet-pair://...);
    /// `-` reads the code from standard input, which keeps its passphrase
    /// out of the shell's history.
    Pair {
        /// The pairing code, or `-`.
        code: String,
    },
    /// List the paired terminals as JSON lines (no secrets).
    List,
    /// Forget the pairing with a terminal.
    Remove {
        /// The terminal's POIID.
        poi_id: String,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Register a device; prints its token once, as JSON (only its SHA-256
    /// is kept).
    Add {
        /// What to call it (`counter phone`).
        #[arg(long)]
        name: String,
    },
    /// List the devices as JSON lines (no tokens).
    List,
    /// Revoke a device: its token is refused from now on.
    Revoke {
        /// The device's id (from `list`).
        id: i64,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user. The password is read from POSNET_MERCHANT_PASSWORD or
    /// the first line of standard input. Owners and auditors (and users
    /// given --totp) get a TOTP secret: the otpauth:// URI is printed once,
    /// for an authenticator app.
    Add {
        /// owner, cashier or auditor.
        #[arg(long, value_parser = ["owner", "cashier", "auditor"])]
        role: String,
        /// Login name.
        #[arg(long)]
        name: String,
        /// A second factor for a cashier too.
        #[arg(long)]
        totp: bool,
    },
    /// List users as JSON lines.
    List,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; exits non-zero and names the first broken link
    /// when a row was changed, removed or inserted.
    Verify,
}

/// A secret from a file, surrounding whitespace removed.
fn read_secret(path: &Path) -> Result<Secret> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    let trimmed = text.trim();
    if trimmed.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(Secret::new(trimmed.as_bytes().to_vec()))
}

fn read_password() -> Result<Zeroizing<String>> {
    if let Ok(password) = std::env::var("POSNET_MERCHANT_PASSWORD") {
        return Ok(Zeroizing::new(password));
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_string(),
    ))
}

fn open(dir: &Path) -> Result<Store> {
    Store::open(dir, &merchant::modules::migrations())
        .with_context(|| format!("opening the back office in {}", dir.display()))
}

/// Runs `posnet merchant`.
pub fn run(args: MerchantArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let dir = args.data_dir;
        match args.command {
            MerchantCommand::Run { listen, host, webhook_secret_file, name, app_origins } => {
                let app_origins = app_origins
                    .iter()
                    .map(|o| merchant::modules::api::origin(o))
                    .collect::<Result<Vec<_>, _>>()?;
                let webhook_secret = read_secret(&webhook_secret_file)?;
                if webhook_secret.expose().len() < MIN_WEBHOOK_SECRET {
                    bail!("the webhook secret in {} is shorter than {MIN_WEBHOOK_SECRET} characters", webhook_secret_file.display());
                }
                let options = merchant::server::Options {
                    listen,
                    data_dir: dir,
                    host_api: host.client()?,
                    webhook_secret,
                    merchant_name: name,
                    password_cost: PasswordCost::default(),
                    modules: merchant::modules::all(),
                    app_origins,
                };
                let running = merchant::server::start(options).await?;
                println!("{}", serde_json::json!({ "listening": running.addr.to_string() }));
                crate::host_cmd::shutdown_signal().await;
                tracing::info!("shutting down: finishing requests under way");
                running.stop().await;
                Ok(())
            }
            MerchantCommand::Backfill { host } => {
                let api = host.required()?;
                let store = std::sync::Arc::new(open(&dir)?);
                let report = merchant::backfill::backfill(&store, &api, "cli").await?;
                println!("{}", serde_json::to_string(&report)?);
                Ok(())
            }
            MerchantCommand::Reconcile { date, host } => {
                let api = host.required()?;
                let store = std::sync::Arc::new(open(&dir)?);
                let date = date.unwrap_or_else(|| merchant::reports::utc_date(unix_now() - 86_400));
                let result = merchant::reconcile::reconcile(&store, &api, &date, "cli").await?;
                println!("{}", serde_json::to_string(&result)?);
                Ok(())
            }
            MerchantCommand::User { command: UserCommand::Add { role, name, totp } } => {
                let role = Role::from_name(&role).context("role: owner, cashier or auditor")?;
                let password = read_password()?;
                let store = open(&dir)?;
                let new = NewUser { name: &name, role, password: &password, totp };
                let created = users::add_user(&store, &new, PasswordCost::default(), "cli", unix_now())?;
                println!(
                    "{}",
                    serde_json::json!({
                        "user": created.user.name, "role": role.name(),
                        "otpauth": created.otpauth.as_ref().map(|u| u.as_str()),
                    })
                );
                Ok(())
            }
            MerchantCommand::User { command: UserCommand::List } => {
                let store = open(&dir)?;
                for (user, totp, disabled) in store.read(users::list)? {
                    println!("{}", serde_json::json!({ "user": user.name, "role": user.role.name(), "totp": totp, "disabled": disabled }));
                }
                Ok(())
            }
            MerchantCommand::Terminal { command: TerminalCommand::Pair { code } } => {
                let code = if code == "-" {
                    let mut line = Zeroizing::new(String::new());
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("reading the pairing code from standard input")?;
                    line
                } else {
                    Zeroizing::new(code)
                };
                let store = open(&dir)?;
                let paired = merchant::modules::payments::pair(&store, &dir, &code, "cli")?;
                println!("{}", serde_json::to_string(&paired)?);
                Ok(())
            }
            MerchantCommand::Terminal { command: TerminalCommand::List } => {
                for paired in merchant::modules::payments::terminals(&dir)? {
                    println!("{}", serde_json::to_string(&paired)?);
                }
                Ok(())
            }
            MerchantCommand::Terminal { command: TerminalCommand::Remove { poi_id } } => {
                let store = open(&dir)?;
                merchant::modules::payments::unpair(&store, &dir, &poi_id, "cli")?;
                println!("{}", serde_json::json!({ "removed": poi_id }));
                Ok(())
            }
            MerchantCommand::Device { command } => {
                use merchant::modules::devices;
                let store = open(&dir)?;
                match command {
                    DeviceCommand::Add { name } => {
                        let (device, token) = store.write(|tx| devices::add(tx, &name, "cli", unix_now()))?;
                        println!("{}", serde_json::json!({ "id": device.id, "name": device.name, "token": token.as_str() }));
                    }
                    DeviceCommand::List => {
                        for device in store.read(|c| Ok(devices::list(c)))?? {
                            println!("{}", serde_json::to_string(&device)?);
                        }
                    }
                    DeviceCommand::Revoke { id } => {
                        let device = store.write(|tx| devices::revoke(tx, id, "cli", unix_now()))?;
                        println!("{}", serde_json::to_string(&device)?);
                    }
                }
                Ok(())
            }
            MerchantCommand::Seed { demo, currency } => {
                if !demo {
                    bail!("give --demo (the demonstration data is the only seed)");
                }
                let store = open(&dir)?;
                let seeded = merchant::modules::seed::demo(&store, currency, "cli", unix_now())?;
                println!("{}", serde_json::to_string(&seeded)?);
                Ok(())
            }
            MerchantCommand::Audit { command: AuditCommand::Verify } => {
                let store = open(&dir)?;
                let verification = store.read(merchant::audit::verify)?;
                println!("{}", serde_json::to_string(&verification)?);
                if let Some(broken) = verification.broken {
                    bail!("audit log broken at row {}: {}", broken.id, broken.reason);
                }
                Ok(())
            }
        }
    })
}
