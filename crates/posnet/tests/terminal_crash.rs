//! A deployment built with the `posnet` commands alone, and a terminal
//! killed with SIGKILL while it holds offline approvals the host has not
//! seen: after a restart it forwards each exactly once, and the host's
//! ledger balances.

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};
use support::{Daemon, posnet};
use terminal::card::CATALOG;

mod support;

const MERCHANT: &str = "M00000000000001";
const OFFLINE_SALES: [u64; 2] = [1_500, 1_200];

fn run(args: &[&str], dir: &Path) -> Output {
    support::run(posnet(dir), args)
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("one JSON answer")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The terminal's status through `posnet terminal status`.
fn status(dir: &Path, url: &str) -> serde_json::Value {
    json(&run(&["terminal", "status", "--url", url], dir))
}

fn wait_for(dir: &Path, url: &str, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = status(dir, url);
        if pred(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "terminal never {what}: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `posnet host accounts import` file: the merchant and every catalog card.
fn seed() -> String {
    let mut s = format!(
        "[[merchant]]\nmerchant_id = \"{MERCHANT}\"\nname = \"Corner Shop\"\ncurrency = 156\nmax_amount = 500000\n"
    );
    let mut seen = std::collections::HashSet::new();
    for c in CATALOG.iter().filter(|c| seen.insert(c.pan)) {
        s.push_str(&format!(
            "\n[[card]]\npan = \"{}\"\nexpiry = \"{}\"\n{}balance = {}\nper_txn_limit = {}\ndaily_limit = 1000000\ncurrency = 156\nstatus = \"{}\"\nholder = \"{}\"\n",
            c.pan,
            c.expiry,
            c.pin.map(|p| format!("pin = \"{p}\"\n")).unwrap_or_default(),
            c.balance,
            c.per_txn_limit,
            c.status,
            c.name
        ));
    }
    s
}

#[test]
fn offline_sales_survive_kill_9_and_reach_the_host_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let host_addr = format!("127.0.0.1:{port}");
    std::fs::write(
        dir.join("host.toml"),
        format!(
            "data_dir = \"host\"\ndeployment_dir = \"deployment\"\nlisten = \"{host_addr}\"\napi_listen = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("seed.toml"), seed()).unwrap();

    run(&["ca", "init", "--dir", "deployment"], dir);
    run(
        &[
            "host",
            "--config",
            "host.toml",
            "accounts",
            "import",
            "seed.toml",
        ],
        dir,
    );
    run(
        &[
            "host",
            "--config",
            "host.toml",
            "enroll",
            "--terminal-id",
            "T0000001",
            "--merchant-id",
            MERCHANT,
            "--offline-floor",
            "2000",
            "--host",
            &host_addr,
            "--out",
            "bundle.json",
        ],
        dir,
    );
    run(
        &[
            "ca",
            "export-transport-key",
            "--dir",
            "deployment",
            "--out",
            "ktk.hex",
        ],
        dir,
    );
    let host_run = ["host", "--config", "host.toml", "run"];
    let host = Daemon::start(posnet(dir), &host_run, dir, "host.log");
    assert_eq!(host.first_line["listening"], host_addr.as_str());
    let terminal_run = [
        "terminal",
        "run",
        "--bundle",
        "bundle.json",
        "--transport-key-file",
        "ktk.hex",
        "--data-dir",
        "terminal",
        "--screen-listen",
        "127.0.0.1:0",
        "--nexo-listen",
        "127.0.0.1:0",
        "--reconnect-max-secs",
        "1",
    ];
    let terminal = Daemon::start(posnet(dir), &terminal_run, dir, "terminal.log");
    let url = terminal.first_line["screen"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    wait_for(dir, &url, "came online", |s| s["online"] == true);

    // The host stops; the terminal approves two sales offline.
    host.terminate();
    wait_for(dir, &url, "noticed the host was gone", |s| {
        s["online"] == false
    });
    let mut ids = Vec::new();
    for amount in OFFLINE_SALES {
        let r = json(&run(
            &[
                "terminal",
                "pay",
                "--url",
                &url,
                "--amount",
                &amount.to_string(),
                "--card",
                "offline_chip",
            ],
            dir,
        ));
        assert_eq!(r["state"], "approved_offline", "{r}");
        assert_eq!(r["result"], "APPROVED OFFLINE");
        ids.push(r["id"].as_i64().unwrap());
    }
    assert_eq!(status(dir, &url)["pending_saf"], 2);

    // The terminal dies without any shutdown, and comes back.
    terminal.kill_9();
    let terminal = Daemon::start(posnet(dir), &terminal_run, dir, "terminal-2.log");
    let url = terminal.first_line["screen"].as_str().unwrap().to_string();
    let s = status(dir, &url);
    assert_eq!(s["pending_saf"], 2, "the advices survived: {s}");
    assert_eq!(s["online"], false);
    let history = run(&["terminal", "history", "--url", &url], dir);
    let history: Vec<serde_json::Value> = String::from_utf8(history.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        history
            .iter()
            .map(|t| t["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [ids[1], ids[0]],
        "newest first"
    );

    // The host returns on the same address; the advices go through once.
    let host = Daemon::start(posnet(dir), &host_run, dir, "host-2.log");
    wait_for(dir, &url, "forwarded its advices", |s| {
        s["online"] == true && s["pending_saf"] == 0
    });

    let receipt = run(
        &[
            "terminal",
            "receipt",
            &ids[0].to_string(),
            "--url",
            &url,
            "--copy",
            "merchant",
        ],
        dir,
    );
    let receipt = String::from_utf8(receipt.stdout).unwrap();
    assert!(receipt.contains("APPROVED OFFLINE"), "{receipt}");
    assert!(receipt.contains("CNY 15.00"), "{receipt}");
    assert!(receipt.contains("CARDHOLDER SIGNATURE"), "{receipt}");
    assert!(!receipt.contains("6200000000000054"));

    let settled = json(&run(&["terminal", "settle", "--url", &url], dir));
    assert_eq!(settled["balanced"], true, "{settled}");
    assert_eq!(settled["debit_amount"], 2_700);

    terminal.terminate();
    host.terminate();

    let db = dir.join("host").join("host.db");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT amount, count(*) FROM journal WHERE terminal_id = 'T0000001' AND kind = 'offline_sale' GROUP BY amount ORDER BY amount",
        )
        .unwrap();
    let rows: Vec<(i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        [(1_200, 1), (1_500, 1)],
        "each offline sale exactly once"
    );
    let others: i64 = conn
        .query_row(
            "SELECT count(*) FROM journal WHERE kind = 'sale'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(others, 0, "no other sale reached the host");
    let mut ledger = ledger::SqliteReader::open(&db).unwrap();
    let report = ledger::LedgerRead::check_invariants(&mut ledger).unwrap();
    assert!(report.is_consistent(), "{report}");
}
