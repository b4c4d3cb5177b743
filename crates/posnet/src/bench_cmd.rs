//! `posnet bench`: load runs against a payment host with simulated
//! terminals (crates/loadgen) over mutual TLS, each enrolled with its own
//! certificate and AES DUKPT initial key, sending a mix of sales, refunds,
//! reversals and balance inquiries at the highest rate the host answers or
//! at a sustained rate.
//!
//! By default each run starts its own host (`posnet ca init`, `posnet host
//! run` as a child process, on loopback, in a new directory) so that the
//! host's resident memory can be read from /proc; `--host` points it at a
//! running host instead, whose database gets the fleet.

use crate::children::{Daemon, MASTER_KEY, Posnet};
use crate::host_cmd::shutdown_signal;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use host::runtime::HostData;
use indicatif::{ProgressBar, ProgressStyle};
use ledger::GroupCommitConfig;
use loadgen::{FleetSpec, KindStats, LoadConfig, Mix, Progress, Report, enroll_fleet};
use pki::MasterKey;
use serde_json::json;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Load runs: the host's durable authorizations per second, latency, and
/// how both and the host's memory go with the number of connections.
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Durable authorizations per second and their latency: simulated
    /// terminals at the highest rate the host answers (`--in-flight` per
    /// connection) or at a sustained `--rate`.
    Host {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        load: Load,
        /// Simulated terminals, one mutual-TLS connection each.
        #[arg(long, default_value_t = 100)]
        terminals: usize,
        /// After the run, compare what every terminal saw with the host's
        /// journal, ledger and outbox (each approval recorded once, every
        /// lost sale reversed, every card's balance right); a difference
        /// fails the command.
        #[arg(long)]
        audit: bool,
        /// Print the results as one JSON object on standard output.
        #[arg(long)]
        json: bool,
    },
    /// The same load over more and more connections, most of them idle
    /// (connected and signed on): throughput, latency and the host's
    /// resident memory per connection. A fresh host for each step.
    Scale {
        #[command(flatten)]
        load: Load,
        /// Connections of each step, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
        connections: Vec<usize>,
        /// Where each step's host keeps its data (default: a new
        /// directory under the system's temporary one, removed after).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Print the results as one JSON object on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Phone → terminal → host and back: payments through `posnet demo`'s
    /// retail counter (started as a child in a new directory) by its
    /// paired phone, over nexo with message security, one at a time as a
    /// cashier takes them; the latency of each whole exchange.
    #[command(name = "e2e")]
    EndToEnd {
        /// Payments to take.
        #[arg(long, default_value_t = 200)]
        payments: u32,
        /// Added to each of the demo's ports (see `posnet demo --help`);
        /// by default one under which they are all free.
        #[arg(long)]
        port_offset: Option<u16>,
        /// Where the demo keeps its data (default: a new directory under
        /// the system's temporary one, removed after).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Print the results as one JSON object on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Store and forward: terminals (the real terminal runtime, each with
    /// its own journal) approve sales offline while their host is
    /// stopped; then the host comes back and they forward their advices.
    /// Measures the forwarding rate after reconnect and checks that the
    /// host recorded every advice once.
    Offline {
        /// Terminals.
        #[arg(long, default_value_t = 10)]
        terminals: usize,
        /// Offline sales each terminal approves while the host is away.
        #[arg(long, default_value_t = 200)]
        advices: u32,
        /// Where the host and the terminals keep their data (default: a
        /// new directory under the system's temporary one, removed after).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Print the results as one JSON object on standard output.
        #[arg(long)]
        json: bool,
    },
}

/// Which host the load goes to.
#[derive(Args)]
struct Target {
    /// A running host's terminal address (loopback); by default the run
    /// starts its own host.
    #[arg(long, requires_all = ["data_dir", "deployment_dir"])]
    host: Option<SocketAddr>,
    /// That host's data directory (its database gets the fleet).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// That host's deployment directory (CA, BDK, key-transport key).
    #[arg(long)]
    deployment_dir: Option<PathBuf>,
    /// The deployment's master key file; by default
    /// `<deployment-dir>/master.key`.
    #[arg(long, env = "POSNET_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// That host's process id, to report its memory.
    #[arg(long)]
    host_pid: Option<u32>,
    /// Two characters that start the fleet's terminal ids (ISO 8583
    /// field 41), so that runs against one host do not collide.
    #[arg(long, default_value = "LG")]
    terminal_prefix: String,
    /// Where the started host keeps its data (default: a new directory
    /// under the system's temporary one, removed after the run).
    #[arg(long, conflicts_with = "host")]
    work_dir: Option<PathBuf>,
}

/// What the simulated terminals send.
#[derive(Args)]
struct Load {
    /// Terminals that send requests; the others hold their connection
    /// idle (default: all).
    #[arg(long)]
    active: Option<usize>,
    /// Requests in flight per active connection (1 to 16).
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Requests per second over all active terminals (default: as fast
    /// as the host answers). Latency then counts from when each request
    /// was due.
    #[arg(long)]
    rate: Option<f64>,
    /// How long to start new requests (e.g. 20s, 1m).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after about this many requests (shared out over the active
    /// terminals), if that comes before the duration.
    #[arg(long)]
    count: Option<u64>,
    /// Kinds of request and their weights, e.g. sale=85,refund=5,reversal=5,balance=5.
    #[arg(long, default_value = "sale=1")]
    mix: Mix,
    /// Cards shared by the terminals (default: one per terminal).
    #[arg(long)]
    cards: Option<usize>,
    /// Cards without PIN (no field 52).
    #[arg(long)]
    no_pin: bool,
    /// Longest wait for an answer before its outcome is unknown.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Seed of the terminals' choices (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
}

/// Runs `posnet bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match args.command {
            BenchCommand::Host {
                target,
                load,
                terminals,
                audit,
                json,
            } => bench_host(target, load, terminals, audit, json).await,
            BenchCommand::Scale {
                load,
                connections,
                work_dir,
                json,
            } => bench_scale(load, connections, work_dir, json).await,
            BenchCommand::EndToEnd {
                payments,
                port_offset,
                work_dir,
                json,
            } => bench_end_to_end(payments, port_offset, work_dir, json).await,
            BenchCommand::Offline {
                terminals,
                advices,
                work_dir,
                json,
            } => crate::bench_offline::run(terminals, advices, work_dir, json).await,
        }
    })
}

async fn bench_host(
    target: Target,
    load: Load,
    terminals: usize,
    audit: bool,
    json: bool,
) -> Result<()> {
    let work = WorkDir::new(target.work_dir.clone())?;
    let mut started = None;
    let host = match target.host {
        Some(addr) => {
            let deployment = target.deployment_dir.clone().context("--deployment-dir")?;
            let master_file = target
                .master_key_file
                .clone()
                .unwrap_or_else(|| deployment.join("master.key"));
            HostAt {
                addr,
                data_dir: target.data_dir.clone().context("--data-dir")?,
                deployment_dir: deployment,
                master_file,
                pid: target.host_pid,
            }
        }
        None => {
            let (daemon, at) = start_host(work.path(), LOOPBACK_ANY_PORT, terminals).await?;
            started = Some(daemon);
            at
        }
    };
    let result = measure(&host, &load, terminals, &target.terminal_prefix, audit).await;
    if let Some(mut daemon) = started {
        stop_host(&mut daemon).await?;
    }
    let run = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&run.to_json(&load))?);
    } else {
        print!("{}", run.summary());
    }
    match &run.audit {
        Some(a) if a.problem_count > 0 => bail!(
            "the host's books disagree with what the terminals saw ({} problems): {}",
            a.problem_count,
            a.problems.join("; ")
        ),
        _ => Ok(()),
    }
}

async fn bench_scale(
    load: Load,
    connections: Vec<usize>,
    work_dir: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    if connections.is_empty() {
        bail!("--connections needs at least one number");
    }
    let work = WorkDir::new(work_dir)?;
    let mut steps = Vec::new();
    for (i, &n) in connections.iter().enumerate() {
        let dir = work.path().join(format!("step-{}-{n}", i + 1));
        std::fs::create_dir_all(&dir)?;
        let (mut daemon, host) = start_host(&dir, LOOPBACK_ANY_PORT, n).await?;
        let result = measure(&host, &load, n, "SC", false).await;
        stop_host(&mut daemon).await?;
        let run = result?;
        eprint!("{}", run.summary());
        steps.push(run);
    }
    if json {
        let steps: Vec<_> = steps.iter().map(|s| s.to_json(&load)).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "machine": machine(), "steps": steps }))?
        );
    } else {
        print!("{}", scale_table(&steps));
    }
    Ok(())
}

async fn bench_end_to_end(
    payments: u32,
    port_offset: Option<u16>,
    work_dir: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let port_offset = match port_offset {
        Some(offset) => offset,
        None => crate::demo_cmd::free_port_offset()?,
    };
    let work = WorkDir::new(work_dir)?;
    let demo_dir = work.path().join("demo");
    let mut demo = DemoChild::start(&demo_dir, port_offset).await?;
    let result = pay_through_demo(&demo_dir, payments).await;
    demo.stop().await?;
    let (stats, took) = result?;
    let s = stats.summary();
    let ms = |us: u64| us as f64 / 1e3;
    if json {
        let v = json!({
            "payments": s.count,
            "seconds": took.as_secs_f64(),
            "per_second": s.count as f64 / took.as_secs_f64().max(1e-9),
            "latency": s,
            "machine": machine(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} payments phone → terminal → host in {:.1} s ({:.1}/s, one at a time): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; results {:?}",
            s.count,
            took.as_secs_f64(),
            s.count as f64 / took.as_secs_f64().max(1e-9),
            ms(s.p50_us),
            ms(s.p99_us),
            ms(s.p999_us),
            ms(s.max_us),
            s.codes
        );
    }
    Ok(())
}

/// Takes `payments` payments of 0.10 to 1.00 through the demo's paired
/// phone (small, so that a thousand fit the test card's 1,000.00); each
/// one's latency, kept under its nexo result.
async fn pay_through_demo(dir: &Path, payments: u32) -> Result<(KindStats, Duration)> {
    let mut options = phone::Options::new(dir.join("phone"));
    options.progress = false;
    let mut phone = phone::Phone::open(options)?;
    let bar = counting_bar(u64::from(payments));
    let mut rng = fastrand::Rng::with_seed(u64::from(payments));
    let mut stats = KindStats::default();
    let started = Instant::now();
    for _ in 0..payments {
        let amount = phone::Money {
            minor: rng.u64(10..=100),
            currency: DEMO_CURRENCY.into(),
        };
        let t = Instant::now();
        let outcome = phone.pay(&amount, &mut |_| {}).await?;
        let result = format!("{:?}", outcome.response.body.response().result);
        stats.record(t.elapsed(), &result);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((stats, started.elapsed()))
}

/// The demo's currency, as the phone takes it.
const DEMO_CURRENCY: &str = "CNY";

/// `posnet demo` as a child process: ready once it says so.
struct DemoChild {
    child: tokio::process::Child,
}

impl DemoChild {
    /// How long the demo may take to be ready (a first run builds the
    /// deployment: about a second here).
    const READY_TIMEOUT: Duration = Duration::from_secs(120);

    async fn start(dir: &Path, port_offset: u16) -> Result<Self> {
        use tokio::io::AsyncBufReadExt as _;
        let log_path = dir.with_extension("log");
        let log = crate::children::append(&log_path)?;
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["demo", "--data-dir"])
            .arg(dir)
            .args(["--port-offset", &port_offset.to_string()])
            .env(
                crate::host_cmd::PARENT_PID_ENV,
                std::process::id().to_string(),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting posnet demo")?;
        let stdout = child.stdout.take().context("the demo's output")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Self::READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("posnet demo is ready") {
                    return Ok(true);
                }
            }
            Ok::<_, std::io::Error>(false)
        })
        .await;
        if !matches!(ready, Ok(Ok(true))) {
            let _ = child.kill().await;
            bail!("posnet demo did not get ready; see {}", log_path.display());
        }
        // The rest of its output is not needed, but must not fill the pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(DemoChild { child })
    }

    /// Stops it as Ctrl-C would (SIGINT) and waits.
    async fn stop(&mut self) -> Result<()> {
        if let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let status = self.child.wait().await?;
        if !status.success() {
            bail!("posnet demo stopped with {status}");
        }
        Ok(())
    }
}

/// Loopback, a free port.
const LOOPBACK_ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A host the load goes to, and what enrolling a fleet into it needs.
pub(crate) struct HostAt {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub deployment_dir: PathBuf,
    pub master_file: PathBuf,
    pub pid: Option<u32>,
}

/// Makes a deployment in `dir` (unless it has one) and starts `posnet
/// host run` on `listen` (port 0: a free one), sized for `connections`.
pub(crate) async fn start_host(
    dir: &Path,
    listen: SocketAddr,
    connections: usize,
) -> Result<(Daemon, HostAt)> {
    std::fs::create_dir_all(dir.join("logs"))?;
    let posnet = Posnet {
        exe: std::env::current_exe().context("finding the posnet binary")?,
        root: std::fs::canonicalize(dir)?,
    };
    if !posnet.root.join(MASTER_KEY).exists() {
        posnet
            .run(&["ca", "init", "--dir", "deployment"], &[], None)
            .await?;
    }
    let max_connections = (connections + 100).to_string();
    let listen = listen.to_string();
    let args: Vec<String> = [
        "host",
        "run",
        "--data-dir",
        "host",
        "--deployment-dir",
        "deployment",
        "--listen",
        &listen,
        "--api-listen",
        "127.0.0.1:0",
        "--max-connections",
        &max_connections,
    ]
    .map(String::from)
    .to_vec();
    let (daemon, first) = posnet
        .start("payment host".into(), "host.log", &args, 0)
        .await?;
    let addr: SocketAddr = first["listening"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .context("the host did not say where it listens")?;
    let at = HostAt {
        addr,
        data_dir: posnet.root.join("host"),
        deployment_dir: posnet.root.join("deployment"),
        master_file: posnet.root.join(MASTER_KEY),
        pid: daemon.id(),
    };
    Ok((daemon, at))
}

impl HostAt {
    /// The host's data, to enroll a fleet into (beside the running host:
    /// WAL lets both write, one at a time).
    pub fn open(&self) -> Result<HostData> {
        let master = MasterKey::from_file(&self.master_file)?;
        HostData::open(
            &self.data_dir,
            &self.deployment_dir,
            master,
            GroupCommitConfig::default(),
        )
        .with_context(|| format!("opening the host's data in {}", self.data_dir.display()))
    }
}

pub(crate) async fn stop_host(daemon: &mut Daemon) -> Result<()> {
    match daemon.stop().await {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => bail!(daemon.failure(&format!("stopped with {status}"))),
        Err(e) => bail!(daemon.failure(&e)),
    }
}

/// One load run and what was read of the host around it.
struct Run {
    report: Report,
    terminals: usize,
    active: usize,
    seed: u64,
    mix: String,
    in_flight: usize,
    rate: Option<f64>,
    enroll_time: Duration,
    /// The host's memory before the terminals connected.
    rss_before: Option<u64>,
    /// With every terminal connected and signed on, before the load.
    rss_connected: Option<u64>,
    /// The host's peak resident memory (VmHWM) at the end.
    rss_peak: Option<u64>,
    /// The host's CPU time per request answered during the load, µs.
    cpu_per_request: Option<f64>,
    /// The host's books against what the terminals saw, when asked.
    audit: Option<loadgen::AuditReport>,
}

async fn measure(
    host: &HostAt,
    load: &Load,
    terminals: usize,
    prefix: &str,
    audit: bool,
) -> Result<Run> {
    if terminals == 0 {
        bail!("a run needs at least one terminal");
    }
    let seed = load.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let active = load.active.unwrap_or(terminals).min(terminals);
    let mut config = LoadConfig::new(host.addr, load.duration);
    config.in_flight = load.in_flight;
    config.mix = load.mix;
    config.timeout = load.timeout;
    config.seed = seed;
    config.rate = load.rate;
    config.active = Some(active);
    config.keep_records = audit;
    if let Some(count) = load.count {
        config.max_requests = count.div_ceil(active as u64).max(1);
    }

    let enrolling = Instant::now();
    let data = host.open()?;
    let mut spec = FleetSpec::new(terminals, host.addr.to_string());
    spec.terminal_prefix = prefix.to_string();
    spec.cards = load.cards.unwrap_or(spec.cards);
    spec.with_pin = !load.no_pin;
    spec.currency = config.currency;
    let fleet = enroll_fleet(&data, &spec).await?;
    let cards = fleet.cards.clone();
    let fleet = fleet.terminals(data.deployment.ktk().expose())?;
    let issuer = data.issuer.clone();
    data.ledger.shutdown().await;
    let enroll_time = enrolling.elapsed();
    eprintln!(
        "posnet bench: {terminals} terminals ({active} active) enrolled in {:.1?} against {}; seed {seed}, mix {}, {}",
        enroll_time,
        host.addr,
        config.mix,
        match load.rate {
            Some(rate) => format!("{rate} requests/s"),
            None => format!("{} in flight per connection", config.in_flight),
        }
    );

    let rss_before = host.pid.and_then(|pid| memory(pid, "VmRSS"));
    let (stop_tx, stop) = watch::channel(false);
    let progress = config.progress.clone();
    let bar = progress_bar(load, terminals);
    let at_start = Arc::new(LoadStart::default());
    let watcher = tokio::spawn(watch_progress(
        bar.clone(),
        progress.clone(),
        terminals,
        host.pid,
        at_start.clone(),
        stop_tx,
    ));
    let report = loadgen::run(&config, fleet, Some(stop)).await;
    watcher.abort();
    let rss_connected = Some(at_start.rss.load(Ordering::Relaxed)).filter(|&b| b > 0);
    // The host's CPU time per request answered since the load started.
    let cpu_per_request = host.pid.and_then(cpu_micros).and_then(|now| {
        let used = now.checked_sub(at_start.cpu_us.load(Ordering::Relaxed))?;
        let answered = progress
            .answered()
            .checked_sub(at_start.answered.load(Ordering::Relaxed))?;
        (answered > 0 && at_start.rss.load(Ordering::Relaxed) > 0)
            .then(|| used as f64 / answered as f64)
    });
    bar.finish_and_clear();
    let report = report?;
    let (audit, report) = if audit {
        let db = host.data_dir.join(host::runtime::DB_FILE);
        let opening = spec.balance;
        let (checked, report) = tokio::task::spawn_blocking(move || {
            loadgen::audit(&db, &report.records, &cards, opening, &issuer).map(|a| (a, report))
        })
        .await??;
        (Some(checked), report)
    } else {
        (None, report)
    };
    Ok(Run {
        audit,
        report,
        terminals,
        active,
        seed,
        mix: config.mix.to_string(),
        in_flight: config.in_flight,
        rate: load.rate,
        enroll_time,
        rss_before,
        rss_connected,
        rss_peak: host.pid.and_then(|pid| memory(pid, "VmHWM")),
        cpu_per_request,
    })
}

/// What was read of the host when every terminal had connected.
#[derive(Default)]
struct LoadStart {
    /// Resident memory, bytes (0: not read yet).
    rss: AtomicU64,
    /// CPU time used so far, µs.
    cpu_us: AtomicU64,
    /// Requests answered so far.
    answered: AtomicU64,
}

/// Shows the run's progress until aborted; reads the host's memory and
/// CPU time once every terminal is connected; turns Ctrl-C into an
/// orderly stop (what is in flight is answered or settled).
async fn watch_progress(
    bar: ProgressBar,
    progress: Arc<Progress>,
    terminals: usize,
    pid: Option<u32>,
    at_start: Arc<LoadStart>,
    stop: watch::Sender<bool>,
) {
    let mut load_start: Option<Instant> = None;
    loop {
        tokio::select! {
            () = shutdown_signal() => {
                let _ = stop.send(true);
                bar.set_message("stopping: settling what is in flight");
                continue;
            }
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let connected = progress.connected();
        if load_start.is_none() && connected as usize >= terminals {
            load_start = Some(Instant::now());
            if let (Some(rss), Some(cpu)) = (
                pid.and_then(|pid| memory(pid, "VmRSS")),
                pid.and_then(cpu_micros),
            ) {
                at_start.cpu_us.store(cpu, Ordering::Relaxed);
                at_start
                    .answered
                    .store(progress.answered(), Ordering::Relaxed);
                at_start.rss.store(rss, Ordering::Relaxed);
            }
        }
        match load_start {
            None => bar.set_message(format!("{connected}/{terminals} connected")),
            Some(t) => {
                let answered = progress.answered();
                let per_second = answered as f64 / t.elapsed().as_secs_f64().max(0.001);
                bar.set_position(t.elapsed().as_millis() as u64);
                bar.set_message(format!(
                    "{answered} answered ({per_second:.0}/s), {} approved, {} unknown",
                    progress.approved(),
                    progress.unknown()
                ));
            }
        }
    }
}

/// A progress bar over `len` things done one by one (payments, advices).
pub(crate) fn counting_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .expect("a valid template"),
    );
    bar
}

fn progress_bar(load: &Load, terminals: usize) -> ProgressBar {
    let bar = ProgressBar::new(load.duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .expect("a valid template"),
    );
    bar.set_message(format!("connecting {terminals} terminals"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A `/proc/<pid>/status` field in bytes (Linux), such as VmRSS.
fn memory(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())?;
    Some(kib * 1024)
}

/// A process's CPU time (user and system, all threads) in µs, from
/// `/proc/<pid>/stat` (Linux; its clock ticks are USER_HZ, 100 per second).
fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses: utime and
    // stime are the 14th and 15th of the line.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) * 10_000)
}

/// The machine the run was on.
pub(crate) fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        });
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "cpu": cpu,
        "os": std::env::consts::OS,
    })
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}

impl Run {
    /// Host memory per connection: held with everything connected, less
    /// before.
    fn bytes_per_connection(&self) -> Option<u64> {
        let (before, connected) = (self.rss_before?, self.rss_connected?);
        Some(connected.saturating_sub(before) / self.terminals as u64)
    }

    fn summary(&self) -> String {
        let r = &self.report;
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "{} terminals ({} active), {:.1} s of load: {} answered ({:.0}/s), {} approved ({:.0}/s)",
            self.terminals,
            self.active,
            r.load_time.as_secs_f64(),
            r.answered_in_load,
            r.answered_per_second(),
            r.approved_in_load,
            r.approved_per_second()
        ));
        for (kind, stats) in r.stats.kinds() {
            let s = stats.summary();
            line(format!(
                "  {kind:<16} n={:<9} p50={:>8.2} ms  p99={:>8.2} ms  p99.9={:>8.2} ms  max={:>8.2} ms  codes {:?}",
                s.count,
                s.p50_us as f64 / 1e3,
                s.p99_us as f64 / 1e3,
                s.p999_us as f64 / 1e3,
                s.max_us as f64 / 1e3,
                s.codes,
            ));
        }
        line(format!(
            "  errors: {} unknown outcomes ({} still unresolved), {} reconnects, {} failed connection attempts",
            r.unknowns, r.unresolved, r.reconnects, r.connect_failures
        ));
        if let Some(a) = &self.audit {
            line(format!(
                "  audit: {} records against {} journal rows, {} approved sales, {} lost sales reversed, {} card balances: {}",
                a.records,
                a.journal_rows,
                a.approved_sales,
                a.reversed_unknowns,
                a.cards,
                if a.problem_count == 0 {
                    "all agree".to_string()
                } else {
                    format!("{} problems", a.problem_count)
                }
            ));
        }
        if let Some(us) = self.cpu_per_request {
            line(format!("  host CPU: {us:.0} µs per request answered"));
        }
        if self.rss_before.is_some() {
            line(format!(
                "  host memory: {} before connecting, {} with all connected ({}), {} peak",
                mib(self.rss_before),
                mib(self.rss_connected),
                self.bytes_per_connection().map_or("-".into(), |b| format!(
                    "{:.1} KiB per connection",
                    b as f64 / 1024.0
                )),
                mib(self.rss_peak),
            ));
        }
        out
    }

    fn to_json(&self, load: &Load) -> serde_json::Value {
        let mut v = self.report.to_json();
        v["active"] = self.active.into();
        v["seed"] = self.seed.into();
        v["mix"] = self.mix.clone().into();
        v["in_flight"] = self.in_flight.into();
        v["rate"] = self.rate.into();
        v["duration_seconds"] = load.duration.as_secs_f64().into();
        v["enroll_seconds"] = self.enroll_time.as_secs_f64().into();
        v["host_rss_before"] = self.rss_before.into();
        v["host_rss_connected"] = self.rss_connected.into();
        v["host_rss_peak"] = self.rss_peak.into();
        v["host_bytes_per_connection"] = self.bytes_per_connection().into();
        v["host_cpu_us_per_request"] = self.cpu_per_request.into();
        if let Some(a) = &self.audit {
            v["audit"] = json!({
                "records": a.records,
                "journal_rows": a.journal_rows,
                "approved_sales": a.approved_sales,
                "reversed_unknowns": a.reversed_unknowns,
                "cards": a.cards,
                "problem_count": a.problem_count,
                "problems": a.problems,
            });
        }
        v["machine"] = machine();
        v
    }
}

fn scale_table(steps: &[Run]) -> String {
    let mut out = String::from(
        "| connections | active | approved/s | sale p50 | sale p99 | sale p99.9 | host RSS connected | per connection |\n|---|---|---|---|---|---|---|---|\n",
    );
    for s in steps {
        let sale = s
            .report
            .stats
            .kinds()
            .find(|(k, _)| *k == "sale")
            .map(|(_, k)| k.summary());
        let ms = |us: Option<u64>| us.map_or("-".into(), |us| format!("{:.2} ms", us as f64 / 1e3));
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} |\n",
            s.terminals,
            s.active,
            s.report.approved_per_second(),
            ms(sale.as_ref().map(|x| x.p50_us)),
            ms(sale.as_ref().map(|x| x.p99_us)),
            ms(sale.as_ref().map(|x| x.p999_us)),
            mib(s.rss_connected),
            s.bytes_per_connection()
                .map_or("-".into(), |b| format!("{:.1} KiB", b as f64 / 1024.0)),
        ));
    }
    out
}

/// The directory a run works in: the one given, kept; or a new temporary
/// one, removed when the run ends.
pub(crate) struct WorkDir {
    path: PathBuf,
    temporary: Option<tempfile::TempDir>,
}

impl WorkDir {
    pub fn new(given: Option<PathBuf>) -> Result<Self> {
        match given {
            Some(path) => {
                std::fs::create_dir_all(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                Ok(WorkDir {
                    path,
                    temporary: None,
                })
            }
            None => {
                let dir = tempfile::Builder::new().prefix("posnet-bench-").tempdir()?;
                Ok(WorkDir {
                    path: dir.path().to_path_buf(),
                    temporary: Some(dir),
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // The temporary directory goes with its guard; say where a kept one is.
        if self.temporary.is_none() {
            let _ = writeln!(
                std::io::stderr(),
                "posnet bench: data kept in {}",
                self.path.display()
            );
        }
    }
}
