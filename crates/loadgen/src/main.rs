//! `loadgen`: enrolls a fleet of terminals into a host's database, drives
//! them against the running host over mutual TLS, and prints throughput
//! and latency (a summary on stderr, JSON on stdout).
//!
//! ```text
//! posnet ca init --dir /tmp/lg/deployment
//! posnet host run --data-dir /tmp/lg/host --deployment-dir /tmp/lg/deployment &
//! loadgen --data-dir /tmp/lg/host --deployment-dir /tmp/lg/deployment \
//!     --terminals 100 --duration 20s --in-flight 4
//! ```

use clap::Parser;
use host::runtime::HostData;
use ledger::GroupCommitConfig;
use loadgen::{FleetSpec, LoadConfig, Mix, enroll_fleet};
use pki::MasterKey;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Drive simulated terminals against a running posnet host (loopback only).
#[derive(Parser)]
#[command(name = "loadgen", version, about)]
struct Args {
    /// The host's terminal address (a loopback address).
    #[arg(long, default_value = "127.0.0.1:5800")]
    host: SocketAddr,
    /// The host's data directory (its database gets the fleet).
    #[arg(long, default_value = "posnet-data/host")]
    data_dir: PathBuf,
    /// The deployment directory (CA, BDK, key-transport key).
    #[arg(long, default_value = "posnet-data/deployment")]
    deployment_dir: PathBuf,
    /// The master key file; by default `<deployment-dir>/master.key`.
    #[arg(long, env = "POSNET_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Simulated terminals, one connection each.
    #[arg(long, default_value_t = 100)]
    terminals: usize,
    /// Cards shared by the terminals (default: one per terminal).
    #[arg(long)]
    cards: Option<usize>,
    /// Cards without PIN (no field 52).
    #[arg(long)]
    no_pin: bool,
    /// How long to start new requests (e.g. 20s, 1m).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Most requests per terminal.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// Requests in flight per connection (1 to 16).
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Kinds of request and their weights.
    #[arg(long, default_value = "sale=1")]
    mix: Mix,
    /// Smallest sale amount, minor units.
    #[arg(long, default_value_t = 100)]
    min_amount: u64,
    /// Largest sale amount, minor units.
    #[arg(long, default_value_t = 5_000)]
    max_amount: u64,
    /// Longest wait for an answer before its outcome is unknown.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Time after the load to settle unknown outcomes.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Seed of the terminals' choices (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut config = LoadConfig::new(args.host, args.duration);
    config.max_requests = args.max_requests;
    config.in_flight = args.in_flight;
    config.mix = args.mix;
    config.min_amount = args.min_amount;
    config.max_amount = args.max_amount;
    config.timeout = args.timeout;
    config.settle_time = args.settle;
    config.seed = seed;
    if !config.addr.ip().is_loopback() {
        return Err(loadgen::LoadError::NotLoopback(config.addr).into());
    }

    let master_file = args
        .master_key_file
        .unwrap_or_else(|| args.deployment_dir.join("master.key"));
    let master = MasterKey::from_file(&master_file)?;
    let data = HostData::open(
        &args.data_dir,
        &args.deployment_dir,
        master,
        GroupCommitConfig::default(),
    )?;
    let mut spec = FleetSpec::new(args.terminals, args.host.to_string());
    spec.cards = args.cards.unwrap_or(spec.cards);
    spec.with_pin = !args.no_pin;
    spec.currency = config.currency;
    let enrolling = std::time::Instant::now();
    let fleet = enroll_fleet(&data, &spec).await?;
    let terminals = fleet.terminals(data.deployment.ktk().expose())?;
    data.ledger.shutdown().await;
    eprintln!(
        "loadgen: enrolled {} terminals and {} cards in {:.1?}; seed {seed}; {} for {:?}, {} in flight each, mix {}",
        terminals.len(),
        fleet.cards.len(),
        enrolling.elapsed(),
        config.addr,
        config.duration,
        config.in_flight,
        config.mix,
    );

    let report = loadgen::run(&config, terminals, None).await?;
    eprintln!(
        "loadgen: {} answered ({:.0}/s), {} approved ({:.0}/s) in {:.1?}; {} reconnects, {} unknown, {} unresolved",
        report.answered_in_load,
        report.answered_per_second(),
        report.approved_in_load,
        report.approved_per_second(),
        report.load_time,
        report.reconnects,
        report.unknowns,
        report.unresolved,
    );
    for (kind, stats) in report.stats.kinds() {
        let s = stats.summary();
        eprintln!(
            "  {kind:<16} n={:<8} p50={:>8.2}ms p99={:>8.2}ms p99.9={:>8.2}ms max={:>8.2}ms codes={:?}",
            s.count,
            s.p50_us as f64 / 1e3,
            s.p99_us as f64 / 1e3,
            s.p999_us as f64 / 1e3,
            s.max_us as f64 / 1e3,
            s.codes,
        );
    }
    let mut json = report.to_json();
    json["seed"] = seed.into();
    json["mix"] = config.mix.to_string().into();
    json["in_flight"] = config.in_flight.into();
    println!("{json}");
    Ok(())
}
