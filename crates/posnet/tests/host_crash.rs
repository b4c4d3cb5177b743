//! Crash test of the payment host with real `kill -9`.
//!
//! A deployment, a merchant, funded cards and terminals are set up with the
//! `posnet` commands. `posnet host run` then serves simulated terminals
//! (the load generator, in this process: several connections, several
//! requests in flight on each, a mix of sales, refunds, reversals and
//! balance inquiries) and is killed with SIGKILL at random moments, each
//! time restarted on the same port. The terminals reconnect, sign on again
//! and settle every request whose connection broke as a terminal does: a
//! lost sale is reversed, a lost refund or reversal is sent again. At the
//! end the host's database, read-only, must agree with everything the
//! terminals saw (see `loadgen::audit`): every approval journaled once with
//! the RRN the terminal got, nothing declined posted, card balances equal
//! to their opening balance less what the terminals know they spent, the
//! ledger's invariants, and one outbox event per journal row.

mod support;

use loadgen::{FleetSpec, LoadConfig, SimTerminal, TerminalLoad, audit, tls_config};
use pki::{EnrollmentBundle, MasterKey};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::Daemon;

const KILLS: usize = 22;
const TERMINALS: usize = 4;
const CARDS: usize = 16;
const MERCHANT: &str = "M00000000000001";
/// Each card's opening balance: small enough that some sales are declined 51.
const OPENING: u64 = 150_000;

/// `posnet` with this test's master key and host directories.
fn posnet(dir: &Path) -> Command {
    let mut c = support::posnet(dir);
    c.env("POSNET_MASTER_KEY_FILE", dir.join("master.key"))
        .env("POSNET_HOST_DATA_DIR", dir.join("host"))
        .env("POSNET_HOST_DEPLOYMENT_DIR", dir.join("deployment"));
    c
}

fn run(dir: &Path, args: &[&str]) {
    support::run(posnet(dir), args);
}

/// `posnet host run` on `addr`, the `n`th start.
fn start_host(dir: &Path, addr: SocketAddr, n: usize) -> Daemon {
    let listen = addr.to_string();
    let args = [
        "host",
        "run",
        "--listen",
        &listen,
        "--api-listen",
        "127.0.0.1:0",
    ];
    let host = Daemon::start(posnet(dir), &args, dir, &format!("host-{n}.log"));
    assert_eq!(
        host.first_line["listening"],
        listen.as_str(),
        "host {n} listens"
    );
    host
}

/// The cards and merchant as a `posnet host accounts import` file.
fn seed_file(spec: &FleetSpec) -> String {
    let mut s = format!(
        "[[merchant]]\nmerchant_id = \"{MERCHANT}\"\nname = \"Crash Shop\"\ncurrency = 156\nmax_amount = {}\n",
        spec.max_amount
    );
    for card in spec.cards() {
        s += &format!(
            "\n[[card]]\npan = \"{}\"\nexpiry = \"{}\"\npin = \"{}\"\nbalance = {OPENING}\nper_txn_limit = {}\ndaily_limit = {}\ncurrency = 156\n",
            card.pan,
            card.expiry.as_deref().unwrap_or("3012"),
            card.pin.as_deref().map(String::as_str).unwrap_or(""),
            spec.max_amount,
            spec.daily_limit,
        );
    }
    s
}

fn journal_rows(db: &Path) -> i64 {
    let conn = ledger::rusqlite::Connection::open_with_flags(
        db,
        ledger::rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn answers_survive_kill_9_and_the_books_agree_with_the_terminals() {
    let seed = std::env::var("POSNET_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("host crash test seed {seed} (rerun with POSNET_CRASH_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    // The deployment, the merchant, the cards and the terminals, by the CLI.
    MasterKey::generate()
        .write_to(&dir.join("master.key"))
        .unwrap();
    run(dir, &["ca", "init", "--dir", "deployment"]);
    let mut spec = FleetSpec::new(TERMINALS, addr.to_string());
    spec.cards = CARDS;
    spec.balance = OPENING;
    spec.max_amount = 20_000;
    spec.daily_limit = 1_000_000_000;
    std::fs::write(dir.join("seed.toml"), seed_file(&spec)).unwrap();
    run(dir, &["host", "accounts", "import", "seed.toml"]);
    run(
        dir,
        &[
            "ca",
            "export-transport-key",
            "--dir",
            "deployment",
            "--out",
            "ktk.hex",
        ],
    );
    let ktk = hex::decode(std::fs::read_to_string(dir.join("ktk.hex")).unwrap().trim()).unwrap();
    let cards: Arc<[loadgen::Card]> = spec.cards().into();
    let mut terminals = Vec::new();
    for t in 1..=TERMINALS {
        let id = format!("CRASH{t:03}");
        let out = format!("{id}.json");
        run(
            dir,
            &[
                "host",
                "enroll",
                "--terminal-id",
                &id,
                "--merchant-id",
                MERCHANT,
                "--out",
                &out,
            ],
        );
        let bundle = EnrollmentBundle::read(&dir.join(&out)).unwrap();
        terminals.push(TerminalLoad {
            terminal: SimTerminal::from_bundle(&bundle, &ktk).unwrap(),
            tls: tls_config(&bundle).unwrap(),
            cards: cards.clone(),
        });
    }

    let db = dir.join("host").join(host::runtime::DB_FILE);
    let mut host = start_host(dir, addr, 0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = LoadConfig::new(addr, Duration::from_secs(120));
    config.in_flight = 4;
    config.mix = "sale=8,refund=1,reversal=1,balance=1".parse().unwrap();
    config.min_amount = 100;
    config.max_amount = 10_000;
    config.timeout = Duration::from_secs(5);
    config.settle_time = Duration::from_secs(20);
    config.keep_records = true;
    config.seed = seed;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = runtime.spawn(async move { loadgen::run(&config, terminals, Some(stopped)).await });

    // Kill under load, at random moments; restart on the same port at once
    // or after a short outage.
    let started = Instant::now();
    let mut progressed = 0;
    let mut last = journal_rows(&db);
    for k in 1..=KILLS {
        std::thread::sleep(Duration::from_millis(rng.u64(150..600)));
        host.kill_9();
        let rows = journal_rows(&db);
        progressed += usize::from(rows > last);
        last = rows;
        std::thread::sleep(Duration::from_millis(rng.u64(0..100)));
        host = start_host(dir, addr, k);
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.send(true).unwrap();
    let report = runtime.block_on(load).unwrap().unwrap();
    host.terminate();
    eprintln!(
        "host crash test: {KILLS} kills in {:.1?}, {} requests, {} approved, {} unknown, {} reconnects; {}",
        started.elapsed(),
        report.records.len(),
        report.records.iter().filter(|r| r.approved()).count(),
        report.unknowns,
        report.reconnects,
        report.to_json()
    );
    assert!(
        progressed >= KILLS / 2,
        "the host made progress between most kills ({progressed} of {KILLS}, seed {seed})"
    );
    assert!(
        report.reconnects >= KILLS as u64,
        "every terminal came back after kills"
    );
    assert!(
        report.unknowns > 0,
        "kills broke requests in flight (seed {seed})"
    );
    assert_eq!(report.unresolved, 0, "every unknown settled (seed {seed})");

    let master = MasterKey::from_file(&dir.join("master.key")).unwrap();
    let issuer = host::issuer::IssuerKeys::load_or_create(&dir.join("host"), &master).unwrap();
    let audit = audit(&db, &report.records, &cards, OPENING, &issuer).unwrap();
    eprintln!(
        "audit: {} records, {} journal rows, {} approved sales, {} lost sales reversed, {} cards",
        audit.records,
        audit.journal_rows,
        audit.approved_sales,
        audit.reversed_unknowns,
        audit.cards
    );
    assert!(
        audit.is_clean(),
        "{} problems (seed {seed}):\n{}",
        audit.problem_count,
        audit.problems.join("\n")
    );
    assert!(audit.approved_sales > 0 && audit.reversed_unknowns > 0);
}
