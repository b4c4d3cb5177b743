//! `posnet demo`: a whole posnet deployment on this machine in one command
//! — the payment host, the merchant's back office, a retail counter
//! terminal, a restaurant terminal and a paired command-line phone — for a
//! first look (docs/demo.md).
//!
//! The first run builds the deployment with the posnet commands an
//! operator would type (`ca init`, `ca export-transport-key`, `host
//! accounts import`, `host enroll`, `merchant user add`, `merchant seed`,
//! then with everything running `terminal supervisor set`, `terminal
//! pair`, `phone pair`, `merchant terminal pair`), each recorded in
//! `logs/setup.log`. What it made that later runs need (ports, logins,
//! the secrets behind the one-time codes, the phone app's pairing codes,
//! which steps are done) is kept in `demo.json`, owner-only, so that a
//! later run starts the same deployment and seeds nothing twice, and a
//! first run cut short goes on where it stopped.
//!
//! Every run starts `host run`, `merchant run` and two `terminal run` as
//! child processes of this binary, each in its own process group: Ctrl-C
//! reaches the demo alone, which stops them in order — the terminals
//! first (a payment under way ends, with the host still there to answer
//! it), then the host (its webhooks in flight still reach the back
//! office), then the back office.
//!
//! With the default `--data-dir posnet-data` and no `--port-offset`, the
//! data directory is laid out the way each command expects by default
//! (`posnet-data/host`, `posnet-data/merchant`, `posnet-data/terminal`,
//! `posnet-data/phone`) and the ports are the commands' defaults, so that
//! `posnet terminal status` or `posnet merchant user list` reach the demo
//! without options.

use crate::children::{Daemon, Posnet, first_stopped, shell_word, stop_all};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use host::admin::{CardSpec, MerchantSpec, Seed};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use terminal::card::CATALOG;
use zeroize::{Zeroize, Zeroizing};

/// The demo's merchant (ISO 8583 field 42).
const MERCHANT_ID: &str = "M00000000000001";
/// Its name on receipts and the back office's pages.
const MERCHANT_NAME: &str = "Demo Shop & Bistro";
/// ISO 4217 numeric currency of the merchant and the test cards.
const CURRENCY: u16 = 156;
/// The same currency as the phone takes it.
const CURRENCY_CODE: &str = "CNY";
/// Largest amount per transaction, minor units (5,000.00).
const MAX_AMOUNT: u64 = 500_000;
/// Offline floor of the terminals (20.00): the `offline_chip` card is
/// approved offline under it while the host is away.
const OFFLINE_FLOOR: &str = "2000";

/// A wallet the demo seeds, paid by payment code (docs/test-cards.md).
struct DemoWallet {
    /// `posnet demo code <who>`.
    who: &'static str,
    number: &'static str,
    holder: &'static str,
    /// Opening balance, minor units.
    balance: &'static str,
    /// Its wallet file in the data directory (number and secret, 0600).
    file: &'static str,
}

/// The demo's wallets: one to pay with, one holding too little.
const WALLETS: [DemoWallet; 2] = [
    DemoWallet {
        who: "wallet",
        number: "100000001",
        holder: "demo wallet",
        balance: "50000",
        file: "wallet.json",
    },
    DemoWallet {
        who: "small-wallet",
        number: "100000002",
        holder: "demo wallet holding 5.00",
        balance: "500",
        file: "small-wallet.json",
    },
];

/// Ports without `--port-offset`: each command's own default (the Adyen
/// terminals' 8443 for the retail counter's nexo endpoint).
const HOST_PORT: u16 = 5800;
const HOST_API_PORT: u16 = 5880;
const BACK_OFFICE_PORT: u16 = 8600;
/// The highest port above, which bounds the offset.
const HIGHEST_PORT: u16 = BACK_OFFICE_PORT;

/// How long a terminal may take to sign on with the host.
const ONLINE_TIMEOUT: Duration = Duration::from_secs(30);

/// The demo's state file in the data directory.
const STATE_FILE: &str = "demo.json";
const WEBHOOK_SECRET_FILE: &str = "webhook.secret";
const API_KEY_FILE: &str = "api.key";
const TRANSPORT_KEY_FILE: &str = "enrollment/ktk.hex";

/// One of the demo's terminals.
struct DemoTerminal {
    /// Its name in `posnet demo code` and in its log file's.
    key: &'static str,
    /// Terminal id (field 41).
    id: &'static str,
    /// What it stands for.
    what: &'static str,
    /// The same, capitalized, at the start of a line.
    label: &'static str,
    /// Its journal directory.
    data_dir: &'static str,
    /// Screen page and local API, before the offset.
    screen_port: u16,
    /// nexo endpoint (and phone web app), before the offset.
    nexo_port: u16,
    /// Whether it presents the `approved` card to every phone payment by
    /// itself (unless `--manual-cards`).
    auto_present: bool,
}

impl DemoTerminal {
    fn bundle(&self) -> String {
        format!("enrollment/{}.json", self.id)
    }
}

const TERMINALS: [DemoTerminal; 2] = [
    DemoTerminal {
        key: "retail",
        id: "T0000001",
        what: "retail counter",
        label: "Retail counter",
        data_dir: "terminal",
        screen_port: 8480,
        nexo_port: 8443,
        auto_present: true,
    },
    DemoTerminal {
        key: "restaurant",
        id: "T0000002",
        what: "restaurant",
        label: "Restaurant",
        data_dir: "terminal-restaurant",
        screen_port: 8481,
        nexo_port: 8444,
        auto_present: false,
    },
];

#[derive(Args)]
pub struct DemoArgs {
    #[command(subcommand)]
    command: Option<DemoCommand>,
    /// The demo's data directory: keys, databases, logins, logs. Run the
    /// demo again with the same one to resume.
    #[arg(long, default_value = "posnet-data", global = true)]
    data_dir: PathBuf,
    /// Added to every port (5800, 5880, 8600, 8480, 8481, 8443, 8444) to
    /// run a second demo beside a first one. Fixed at the first run.
    #[arg(long, value_parser = clap::value_parser!(u16).range(..=i64::from(u16::MAX - HIGHEST_PORT)))]
    port_offset: Option<u16>,
    /// Leave every card to you: by default the retail counter presents
    /// the `approved` test card to phone payments by itself.
    #[arg(long)]
    manual_cards: bool,
}

#[derive(Subcommand)]
enum DemoCommand {
    /// Print the current one-time code of the back office's owner login
    /// (`owner`), of a terminal's supervisor (`retail`, `restaurant`:
    /// refunds and reversals), or a wallet's payment code (`wallet`,
    /// `small-wallet`; its QR code goes to standard error). Each code is
    /// accepted once.
    Code {
        /// Whose code.
        #[arg(value_parser = ["owner", "retail", "restaurant", "wallet", "small-wallet"])]
        who: String,
        /// Print the secret instead, as the `otpauth://` URI an
        /// authenticator app takes (paste it, or make a QR code of it).
        #[arg(long)]
        uri: bool,
    },
}

/// Runs `posnet demo`.
pub fn run(args: DemoArgs) -> Result<()> {
    match &args.command {
        Some(DemoCommand::Code { who, uri }) => print_code(&args.data_dir, who, *uri),
        None => tokio::runtime::Runtime::new()?.block_on(demo(args)),
    }
}

/// What the demo keeps between runs (`demo.json`, 0600). The secrets are
/// wiped from memory on drop.
#[derive(Serialize, Deserialize)]
struct State {
    /// Layout of this file.
    version: u32,
    /// `--port-offset` of the first run.
    port_offset: u16,
    /// Setup steps done, by name.
    done: Vec<String>,
    owner_password: String,
    cashier_password: String,
    /// The owner's TOTP secret, as `posnet merchant user add` printed it.
    owner_otpauth: Option<String>,
    /// By terminal key.
    terminals: BTreeMap<String, TerminalState>,
}

#[derive(Serialize, Deserialize, Default)]
struct TerminalState {
    /// The supervisor's TOTP secret, as `posnet terminal supervisor set`
    /// printed it.
    supervisor_otpauth: Option<String>,
    /// The pairing code shown for the phone web app (and any other phone).
    app_pairing_code: Option<String>,
}

impl Drop for State {
    fn drop(&mut self) {
        self.owner_password.zeroize();
        self.cashier_password.zeroize();
        self.owner_otpauth.zeroize();
    }
}

impl Drop for TerminalState {
    fn drop(&mut self) {
        self.supervisor_otpauth.zeroize();
        self.app_pairing_code.zeroize();
    }
}

impl State {
    fn new(port_offset: u16) -> Self {
        State {
            version: 1,
            port_offset,
            done: Vec::new(),
            owner_password: password(),
            cashier_password: password(),
            owner_otpauth: None,
            terminals: BTreeMap::new(),
        }
    }

    fn load(root: &Path) -> Result<Option<Self>> {
        let path = root.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => Zeroizing::new(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let state: State = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a posnet demo's state", path.display()))?;
        if state.port_offset > u16::MAX - HIGHEST_PORT {
            bail!(
                "{}: port offset {} puts ports past 65535",
                path.display(),
                state.port_offset
            );
        }
        if state.version != 1 {
            bail!(
                "{} was written by another version of posnet demo (layout {})",
                path.display(),
                state.version
            );
        }
        Ok(Some(state))
    }

    fn save(&self, root: &Path) -> Result<()> {
        let json = Zeroizing::new(serde_json::to_vec_pretty(self)?);
        pki::seal::write_private(&root.join(STATE_FILE), &json)?;
        Ok(())
    }

    fn is_done(&self, step: &str) -> bool {
        self.done.iter().any(|s| s == step)
    }

    /// Records `step` as done, on disk before anything else happens.
    fn mark(&mut self, step: &str, root: &Path) -> Result<()> {
        self.done.push(step.to_string());
        self.save(root)
    }

    fn terminal(&mut self, key: &str) -> &mut TerminalState {
        self.terminals.entry(key.to_string()).or_default()
    }
}

/// A random password a person can type: 20 hex digits in groups of 4.
fn password() -> String {
    let hex = hex::encode(pki::Secret::random(10).expose());
    let groups: Vec<&str> = (0..hex.len()).step_by(4).map(|i| &hex[i..i + 4]).collect();
    groups.join("-")
}

/// The demo's ports, after the offset.
struct Ports {
    offset: u16,
}

impl Ports {
    /// `port` moved by the offset (checked against [`HIGHEST_PORT`] by
    /// the option's parser).
    fn of(&self, port: u16) -> u16 {
        port + self.offset
    }

    fn addr(&self, port: u16) -> String {
        format!("127.0.0.1:{}", self.of(port))
    }

    /// Every port with what uses it.
    fn all(&self) -> Vec<(u16, String)> {
        let mut all = vec![
            (self.of(HOST_PORT), "the payment host".to_string()),
            (
                self.of(HOST_API_PORT),
                "the host's merchant API".to_string(),
            ),
            (self.of(BACK_OFFICE_PORT), "the back office".to_string()),
        ];
        for t in &TERMINALS {
            all.push((self.of(t.screen_port), format!("the {}'s screen", t.what)));
            all.push((
                self.of(t.nexo_port),
                format!("the {}'s nexo endpoint", t.what),
            ));
        }
        all
    }
}

/// Resolves on Ctrl-C, SIGTERM or SIGHUP (the demo's window closed).
async fn stop_signal() {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .expect("SIGHUP handler");
    tokio::select! {
        _ = crate::host_cmd::shutdown_signal() => {}
        _ = hangup.recv() => {}
    }
}

/// The demo: set up (first run), start, wait, stop.
async fn demo(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let shown = args.data_dir.clone();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&shown)
        .with_context(|| format!("creating {}", shown.display()))?;
    let root = std::fs::canonicalize(&shown)?;
    let mut state = match State::load(&root)? {
        Some(state) => {
            if args.port_offset.is_some_and(|o| o != state.port_offset) {
                bail!(
                    "the demo in {} runs with --port-offset {} (its terminals and pairings name those ports); give another --data-dir for another offset",
                    shown.display(),
                    state.port_offset
                );
            }
            state
        }
        None => {
            if std::fs::read_dir(&root)?.next().is_some() {
                bail!(
                    "{} holds files but no {STATE_FILE}: it is not a posnet demo's data directory; give another --data-dir",
                    shown.display()
                );
            }
            let state = State::new(args.port_offset.unwrap_or(0));
            state.save(&root)?;
            state
        }
    };
    for dir in ["logs", "enrollment"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    let ports = Ports {
        offset: state.port_offset,
    };
    check_ports(&ports)?;
    let posnet = Posnet {
        exe: std::env::current_exe().context("finding the posnet binary")?,
        root: root.clone(),
    };
    if state.is_done("setup") {
        println!("Resuming the demo in {}.", shown.display());
    } else {
        if state.done.is_empty() {
            println!(
                "First run: building the deployment in {} (the commands are in {}).",
                shown.display(),
                shown.join("logs/setup.log").display()
            );
        } else {
            println!(
                "Going on with the setup interrupted earlier in {}.",
                shown.display()
            );
        }
    }
    set_up(&posnet, &mut state, &ports, &root).await?;

    let mut daemons = Vec::new();
    let mut stop = std::pin::pin!(stop_signal());
    let ready = tokio::select! {
        ready = start(&posnet, &mut state, &ports, &root, args.manual_cards, &mut daemons) => Some(ready),
        _ = &mut stop => None,
    };
    let ready = match ready {
        Some(Ok(ready)) => ready,
        Some(Err(e)) => {
            let stopped = stop_all(&mut daemons).await;
            return Err(match stopped {
                Ok(()) => e,
                Err(more) => e.context(more),
            });
        }
        None => {
            println!("Stopping before the demo was ready...");
            stop_all(&mut daemons).await?;
            println!("Stopped.");
            return Ok(());
        }
    };
    print_ready(&ready, &state, &posnet, &shown, &ports, started.elapsed());

    let died = loop {
        tokio::select! {
            _ = &mut stop => break None,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                if let Some(i) = first_stopped(&mut daemons) {
                    break Some(i);
                }
            }
        }
    };
    match died {
        None => {
            println!(
                "Stopping: the terminals (a payment under way ends first), then the host, then the back office..."
            );
            stop_all(&mut daemons).await?;
            println!("Stopped. Run the same command again to resume with the same data.");
            Ok(())
        }
        Some(i) => {
            let mut dead = daemons.remove(i);
            let status = dead
                .stop()
                .await
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e);
            let report = dead.failure(&format!("stopped unexpectedly ({status})"));
            eprintln!("posnet demo: {report}\nStopping the rest...");
            stop_all(&mut daemons).await?;
            bail!(
                "{} stopped unexpectedly: see {}",
                dead.name,
                dead.log.display()
            )
        }
    }
}

/// Fails with what to do when a port the demo needs is taken.
/// A `--port-offset` under which every port of a demo is free right now
/// (for a second demo beside a first, as `posnet bench e2e` starts one).
pub fn free_port_offset() -> Result<u16> {
    // Bounded: a busy machine gets a clear error, not an endless search.
    for _ in 0..200 {
        let ports = Ports {
            offset: fastrand::u16(1_000..=u16::MAX - HIGHEST_PORT),
        };
        if check_ports(&ports).is_ok() {
            return Ok(ports.offset);
        }
    }
    bail!("found no port offset under which every port of a demo is free")
}

fn check_ports(ports: &Ports) -> Result<()> {
    for (port, what) in ports.all() {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            bail!(
                "port {port} ({what}) is not free on 127.0.0.1: {e}. Is this demo already running, or another posnet? Stop it, or run a second demo with its own --data-dir and --port-offset 100"
            );
        }
    }
    Ok(())
}

/// The first run's steps that need nothing running: the deployment, the
/// merchant and cards at the host, the terminals' enrollment, the back
/// office's users and catalog. Each is recorded once done.
async fn set_up(posnet: &Posnet, state: &mut State, ports: &Ports, root: &Path) -> Result<()> {
    if !state.is_done("ca") {
        say(
            "creating the CA and the keys: posnet ca init (the master key goes to deployment/master.key, 0600 — beside the deployment: fine for a demo, never for production)",
        );
        posnet
            .run(&["ca", "init", "--dir", "deployment"], &[], None)
            .await?;
        state.mark("ca", root)?;
    }
    if !state.is_done("transport key") {
        posnet
            .run(
                &[
                    "ca",
                    "export-transport-key",
                    "--dir",
                    "deployment",
                    "--out",
                    TRANSPORT_KEY_FILE,
                ],
                &[],
                None,
            )
            .await?;
        state.mark("transport key", root)?;
    }
    if !state.is_done("accounts") {
        say(&format!(
            "seeding the host: merchant {MERCHANT_ID} ({MERCHANT_NAME}) and the {} test cards: posnet host accounts import seed.toml",
            test_cards().len()
        ));
        let webhook_secret = secret_file(root, WEBHOOK_SECRET_FILE)?;
        let api_key = secret_file(root, API_KEY_FILE)?;
        let seed = Seed {
            merchant: vec![MerchantSpec {
                merchant_id: MERCHANT_ID.into(),
                name: MERCHANT_NAME.into(),
                currency: CURRENCY,
                max_amount: MAX_AMOUNT,
                fee_bps: 0,
                webhook_url: Some(format!(
                    "http://{}/webhooks/host",
                    ports.addr(BACK_OFFICE_PORT)
                )),
                webhook_secret: Some(webhook_secret.to_string()),
                api_key: Some(api_key.to_string()),
            }],
            card: test_cards(),
        };
        let text = Zeroizing::new(toml::to_string(&seed)?);
        pki::seal::write_private(&root.join("seed.toml"), text.as_bytes())?;
        posnet
            .run(
                &[
                    "host",
                    "--data-dir",
                    "host",
                    "--deployment-dir",
                    "deployment",
                    "accounts",
                    "import",
                    "seed.toml",
                ],
                &[],
                None,
            )
            .await?;
        state.mark("accounts", root)?;
    }
    for t in &TERMINALS {
        let step = format!("enroll {}", t.id);
        if !state.is_done(&step) {
            say(&format!(
                "enrolling the {} as {}: posnet host enroll",
                t.what, t.id
            ));
            let host = ports.addr(HOST_PORT);
            let bundle = t.bundle();
            posnet
                .run(
                    &[
                        "host",
                        "--data-dir",
                        "host",
                        "--deployment-dir",
                        "deployment",
                        "enroll",
                        "--terminal-id",
                        t.id,
                        "--merchant-id",
                        MERCHANT_ID,
                        "--offline-floor",
                        OFFLINE_FLOOR,
                        "--host",
                        &host,
                        "--out",
                        &bundle,
                    ],
                    &[],
                    None,
                )
                .await?;
            state.mark(&step, root)?;
        }
    }
    for (role, name) in [("owner", "owner"), ("cashier", "cashier")] {
        let step = format!("user {name}");
        if !state.is_done(&step) {
            say(&format!(
                "adding the back office's {role}: posnet merchant user add"
            ));
            let password = Zeroizing::new(match role {
                "owner" => state.owner_password.clone(),
                _ => state.cashier_password.clone(),
            });
            let out = Zeroizing::new(
                posnet
                    .run(
                        &[
                            "merchant",
                            "--data-dir",
                            "merchant",
                            "user",
                            "add",
                            "--role",
                            role,
                            "--name",
                            name,
                        ],
                        &[("POSNET_MERCHANT_PASSWORD", &password)],
                        None,
                    )
                    .await?,
            );
            let answer: serde_json::Value = serde_json::from_str(&out)?;
            if let Some(uri) = answer["otpauth"].as_str() {
                state.owner_otpauth = Some(uri.to_string());
            }
            state.mark(&step, root)?;
        }
    }
    if !state.is_done("wallets") {
        say("seeding two wallets paid by payment code: posnet host wallet add");
        for w in &WALLETS {
            posnet
                .run(
                    &[
                        "host",
                        "--data-dir",
                        "host",
                        "--deployment-dir",
                        "deployment",
                        "wallet",
                        "add",
                        "--number",
                        w.number,
                        "--balance",
                        w.balance,
                        "--currency",
                        &CURRENCY.to_string(),
                        "--holder",
                        w.holder,
                        "--secret-out",
                        w.file,
                    ],
                    &[],
                    None,
                )
                .await?;
        }
        state.mark("wallets", root)?;
    }
    if !state.is_done("catalog") {
        say("filling the back office's catalog: posnet merchant seed --demo");
        posnet
            .run(
                &[
                    "merchant",
                    "--data-dir",
                    "merchant",
                    "seed",
                    "--demo",
                    "--currency",
                    &CURRENCY.to_string(),
                ],
                &[],
                None,
            )
            .await?;
        state.mark("catalog", root)?;
    }
    Ok(())
}

/// The test catalog as the host's cards: each card number once (two
/// catalog entries may share a card and differ in the PIN typed).
fn test_cards() -> Vec<CardSpec> {
    let mut seen = HashSet::new();
    CATALOG
        .iter()
        .filter(|c| seen.insert(c.pan))
        .map(|c| CardSpec {
            pan: c.pan.into(),
            expiry: c.expiry.into(),
            pin: c.pin.map(str::to_string),
            kind: "card".into(),
            balance: c.balance,
            per_txn_limit: c.per_txn_limit,
            daily_limit: 1_000_000,
            currency: CURRENCY,
            status: c.status.into(),
            holder: c.name.into(),
        })
        .collect()
}

/// The secret in `root/name` (0600), made on first use: 24 random bytes
/// as hex, long enough for a webhook secret (at least 32 characters).
fn secret_file(root: &Path, name: &str) -> Result<Zeroizing<String>> {
    let path = root.join(name);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(Zeroizing::new(text.trim().to_string()));
    }
    let secret = Zeroizing::new(hex::encode(pki::Secret::random(24).expose()));
    pki::seal::write_private(&path, secret.as_bytes())?;
    Ok(secret)
}

fn say(what: &str) {
    println!("  - {what}");
}

/// What the ready message shows of a running terminal.
struct RunningTerminal {
    screen: String,
    fingerprint: String,
    /// Whether it presents the approved card to phone payments by itself.
    presents_card: bool,
    /// The phone web app's address, when this terminal serves it.
    app: Option<String>,
}

/// Starts the host, then the back office and the terminals; waits until
/// the terminals are online; on the first run pairs the phones and the
/// back office with them.
async fn start(
    posnet: &Posnet,
    state: &mut State,
    ports: &Ports,
    root: &Path,
    manual_cards: bool,
    daemons: &mut Vec<Daemon>,
) -> Result<Vec<RunningTerminal>> {
    let host_api = format!("http://{}", ports.addr(HOST_API_PORT));
    let args = strings(&[
        "host",
        "--data-dir",
        "host",
        "--deployment-dir",
        "deployment",
        "run",
        "--listen",
        &ports.addr(HOST_PORT),
        "--api-listen",
        &ports.addr(HOST_API_PORT),
    ]);
    let (host, _) = posnet
        .start("the payment host".into(), "host.log", &args, 1)
        .await?;
    daemons.push(host);

    let mut args = strings(&[
        "merchant",
        "--data-dir",
        "merchant",
        "run",
        "--listen",
        &ports.addr(BACK_OFFICE_PORT),
        "--webhook-secret-file",
        WEBHOOK_SECRET_FILE,
        "--host-api",
        &host_api,
        "--api-key-file",
        API_KEY_FILE,
        "--name",
        MERCHANT_NAME,
    ]);
    // The terminals' phone apps may list and charge the open orders.
    for t in &TERMINALS {
        args.extend(strings(&[
            "--app-origin",
            &format!("https://{}", ports.addr(t.nexo_port)),
        ]));
    }
    let (back_office, _) = posnet
        .start("the back office".into(), "back-office.log", &args, 2)
        .await?;
    daemons.push(back_office);

    let mut running = Vec::new();
    for t in &TERMINALS {
        let mut args = strings(&[
            "terminal",
            "run",
            "--bundle",
            &t.bundle(),
            "--transport-key-file",
            TRANSPORT_KEY_FILE,
            "--data-dir",
            t.data_dir,
            "--screen-listen",
            &ports.addr(t.screen_port),
            "--nexo-listen",
            &ports.addr(t.nexo_port),
            "--back-office",
            &format!("http://{}", ports.addr(BACK_OFFICE_PORT)),
        ]);
        let presents_card = t.auto_present && !manual_cards;
        if presents_card {
            args.extend(strings(&["--present-card", "approved"]));
        }
        let name = format!("the {} terminal {}", t.what, t.id);
        let (daemon, first) = posnet
            .start(name, &format!("terminal-{}.log", t.key), &args, 0)
            .await?;
        daemons.push(daemon);
        let text = |k: &str| {
            first[k]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("terminal run printed no {k}: {first}"))
        };
        running.push(RunningTerminal {
            screen: text("screen")?,
            fingerprint: text("fingerprint")?,
            presents_card,
            app: None,
        });
    }

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    for (t, r) in TERMINALS.iter().zip(&running) {
        wait_online(&http, t, &r.screen, daemons).await?;
    }
    for (t, r) in TERMINALS.iter().zip(&mut running) {
        pair(posnet, state, root, t, &r.screen).await?;
        r.app = app_url(&r.fingerprint, ports.of(t.nexo_port)).await;
    }
    if !state.is_done("setup") {
        state.mark("setup", root)?;
    }
    Ok(running)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Waits until the terminal has signed on with the host; fails at once
/// when one of the children stopped meanwhile.
async fn wait_online(
    http: &reqwest::Client,
    t: &DemoTerminal,
    screen: &str,
    daemons: &mut [Daemon],
) -> Result<()> {
    let deadline = Instant::now() + ONLINE_TIMEOUT;
    loop {
        if let Some(i) = first_stopped(daemons) {
            bail!(daemons[i].failure("stopped while the terminals were signing on"));
        }
        let status: Option<serde_json::Value> =
            match http.get(format!("{screen}/api/status")).send().await {
                Ok(response) => response.json().await.ok(),
                Err(_) => None,
            };
        if status.as_ref().is_some_and(|s| s["online"] == true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the {} terminal {} did not come online with the host within {} s (last status: {}); see logs/terminal-{}.log and logs/host.log",
                t.what,
                t.id,
                ONLINE_TIMEOUT.as_secs(),
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "no answer".into()),
                t.key
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// First run: the terminal's supervisor secret, a pairing code for the
/// phone web app, the CLI phone's pairing and the back office's.
async fn pair(
    posnet: &Posnet,
    state: &mut State,
    root: &Path,
    t: &DemoTerminal,
    screen: &str,
) -> Result<()> {
    let step = format!("supervisor {}", t.id);
    if !state.is_done(&step) {
        say(&format!(
            "setting the {}'s supervisor code: posnet terminal supervisor set",
            t.what
        ));
        let out = Zeroizing::new(
            posnet
                .run(
                    &["terminal", "supervisor", "set", "--url", screen],
                    &[],
                    None,
                )
                .await?,
        );
        let uri = out
            .lines()
            .find(|l| l.starts_with("otpauth://"))
            .context("posnet terminal supervisor set printed no otpauth:// URI")?;
        state.terminal(t.key).supervisor_otpauth = Some(uri.to_string());
        state.mark(&step, root)?;
    }
    let step = format!("app pairing {}", t.id);
    if !state.is_done(&step) {
        let code = terminal_pair(posnet, screen, "phone web app").await?;
        state.terminal(t.key).app_pairing_code = Some(code.to_string());
        state.mark(&step, root)?;
    }
    let step = format!("phone pairing {}", t.id);
    if !state.is_done(&step) {
        say(&format!(
            "pairing the command-line phone with the {}: posnet terminal pair, posnet phone pair",
            t.what
        ));
        let code = terminal_pair(posnet, screen, "posnet phone (demo)").await?;
        let mut args = vec!["phone", "--data-dir", "phone", "pair", "-", "--check"];
        if t.auto_present {
            args.push("--default");
        }
        posnet.run(&args, &[], Some(&code)).await?;
        state.mark(&step, root)?;
    }
    let step = format!("back office pairing {}", t.id);
    if !state.is_done(&step) {
        say(&format!(
            "pairing the back office with the {}: posnet merchant terminal pair",
            t.what
        ));
        let code = terminal_pair(posnet, screen, "back office").await?;
        posnet
            .run(
                &[
                    "merchant",
                    "--data-dir",
                    "merchant",
                    "terminal",
                    "pair",
                    "-",
                ],
                &[],
                Some(&code),
            )
            .await?;
        state.mark(&step, root)?;
    }
    Ok(())
}

/// A new pairing with the terminal (`posnet terminal pair`): its code.
async fn terminal_pair(posnet: &Posnet, screen: &str, label: &str) -> Result<Zeroizing<String>> {
    let out = Zeroizing::new(
        posnet
            .run(
                &["terminal", "pair", "--label", label, "--url", screen],
                &[],
                None,
            )
            .await?,
    );
    let code = out
        .lines()
        .find_map(|l| l.strip_prefix("pairing code: "))
        .context("posnet terminal pair printed no pairing code")?;
    Ok(Zeroizing::new(code.to_string()))
}

/// `https://127.0.0.1:PORT/app/` when the terminal serves the phone web
/// app there (asked over TLS pinned to the certificate it announced).
async fn app_url(fingerprint: &str, port: u16) -> Option<String> {
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(fingerprint.replace(':', ""), &mut sha256).ok()?;
    let tls = phone::pin::client_config(sha256).ok()?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let url = format!("https://127.0.0.1:{port}/app/");
    let response = client.get(&url).send().await.ok()?;
    response.status().is_success().then_some(url)
}

/// How to call this binary from the current directory.
fn exe_word(exe: &Path) -> String {
    let shown = std::env::current_dir()
        .ok()
        .and_then(|cwd| exe.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| exe.to_path_buf());
    shell_word(&shown.to_string_lossy())
}

fn print_ready(
    terminals: &[RunningTerminal],
    state: &State,
    posnet: &Posnet,
    shown: &Path,
    ports: &Ports,
    took: Duration,
) {
    let exe = exe_word(&posnet.exe);
    let data = shell_word(&shown.to_string_lossy());
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(String::new());
    line(format!(
        "posnet demo is ready ({:.1} s). Data in {}, logs in {}.",
        took.as_secs_f64(),
        shown.display(),
        shown.join("logs").display()
    ));
    line(String::new());
    if let Some(app) = terminals.first().and_then(|t| t.app.as_ref()) {
        line(format!("Phone web app   {app}"));
        line(format!(
            "                (the retail counter's; accept its self-signed certificate, SHA-256 {})",
            terminals[0].fingerprint
        ));
        line("                pair it with the retail counter's code below".to_string());
        line(String::new());
    }
    for (t, r) in TERMINALS.iter().zip(terminals) {
        let cards = if r.presents_card {
            "presents the approved test card to phone payments by itself"
        } else {
            "present a card on its screen page when a payment waits"
        };
        line(format!(
            "{:<15} {}  screen {}  ({cards})",
            t.label, t.id, r.screen
        ));
        if let Some(code) = state
            .terminals
            .get(t.key)
            .and_then(|s| s.app_pairing_code.as_ref())
        {
            line(format!("                pairing code {code}"));
        }
        line(format!(
            "                supervisor code (refunds, reversals): {exe} demo --data-dir {data} code {}",
            t.key
        ));
    }
    line(String::new());
    line(format!(
        "Back office     http://{}/",
        ports.addr(BACK_OFFICE_PORT)
    ));
    line(format!(
        "                cashier  password {}  (no one-time code)",
        state.cashier_password
    ));
    line(format!(
        "                owner    password {}  and the one-time code of: {exe} demo --data-dir {data} code owner",
        state.owner_password
    ));
    line(format!(
        "Payment host    terminals at {}, merchant API http://{} (key in {})",
        ports.addr(HOST_PORT),
        ports.addr(HOST_API_PORT),
        shown.join(API_KEY_FILE).display()
    ));
    line(String::new());
    line("Try a payment:".to_string());
    line(format!(
        "  {exe} phone --data-dir {} pay 12.50 --currency {CURRENCY_CODE}",
        shell_word(&shown.join("phone").to_string_lossy())
    ));
    if let Some(retail) = terminals.first() {
        line("Pay by wallet (the payment code scanned at the retail counter):".to_string());
        line(format!(
            "  {exe} terminal --url {} pay --amount 1250 --qr $({exe} demo --data-dir {data} code wallet)",
            retail.screen
        ));
    }
    line(String::new());
    line(
        "Ctrl-C stops everything; run the same command again to resume with the same data."
            .to_string(),
    );
    print!("{out}");
    let _ = std::io::stdout().flush();
}

/// Prints the current one-time code of `who`, or its secret's URI.
fn print_code(data_dir: &Path, who: &str, print_uri: bool) -> Result<()> {
    if let Some(wallet) = WALLETS.iter().find(|w| w.who == who) {
        let file = data_dir.join(wallet.file);
        if !file.exists() {
            bail!(
                "the demo in {} has no wallet file yet: let `posnet demo` finish its first run",
                data_dir.display()
            );
        }
        return crate::wallet_cmd::print_code(&crate::wallet_cmd::WalletFile::current_code(&file)?);
    }
    let state = State::load(data_dir)?.with_context(|| {
        format!(
            "no posnet demo in {}: run `posnet demo` first",
            data_dir.display()
        )
    })?;
    let uri = match who {
        "owner" => state.owner_otpauth.as_ref(),
        key => state
            .terminals
            .get(key)
            .and_then(|t| t.supervisor_otpauth.as_ref()),
    }
    .with_context(|| {
        format!(
            "the demo in {} has no code for {who} yet: let `posnet demo` finish its first run",
            data_dir.display()
        )
    })?;
    if print_uri {
        println!("{uri}");
        return Ok(());
    }
    let totp = totp_rs::Totp::from_url(uri)
        .map_err(|e| anyhow!("the secret of {who} in {STATE_FILE}: {e}"))?;
    println!("{}", totp.generate_current());
    eprintln!(
        "valid for {} s more; each code is accepted once",
        totp.ttl()
    );
    Ok(())
}
