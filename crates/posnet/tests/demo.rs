#![cfg(unix)]
//! `posnet demo` as a newcomer runs it, in an empty directory: it builds
//! a deployment and says when it is ready; the payment command it prints
//! goes through the retail counter to the host, whose merchant API lists
//! it, and reaches the back office, where the owner login it prints (with
//! the code `posnet demo code owner` gives) finds it. The wallet payment
//! it prints (a payment code from `posnet demo code wallet`, scanned at
//! the retail counter) is approved and recorded as a wallet payment; the
//! small wallet's is declined for insufficient funds. Ctrl-C stops it
//! cleanly; started again it resumes with the same logins and pairings,
//! the printed command pays again, the cashier login finds that payment,
//! and nothing was seeded or paired twice.
//!
//! Paying through the phone web app in a browser is for the browser tests
//! (interop/browser) to add against this same demo.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::posnet;

// The daemon helpers are for the crash tests: the demo starts its own.
#[allow(dead_code)]
mod support;

/// The ports of a demo without offset (each command's default).
const DEMO_PORTS: [u16; 7] = [5800, 5880, 8600, 8480, 8481, 8443, 8444];
/// Safety net for one line of the demo's output (a first run in a debug
/// build hashes two passwords with Argon2id).
const LINE_TIMEOUT: Duration = Duration::from_secs(300);
/// Safety net for a webhook to reach the back office.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// An offset that moves every demo port onto a free one, so that the test
/// runs beside anything else on the machine (a newcomer's demo uses the
/// defaults).
fn free_offset() -> u16 {
    loop {
        let offset = fastrand::u16(20_000..50_000);
        let free = DEMO_PORTS
            .iter()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p + offset)).is_ok());
        if free {
            return offset;
        }
    }
}

/// A running `posnet demo` and what it printed.
struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    output: String,
    stderr: std::path::PathBuf,
}

impl Demo {
    /// Starts `posnet demo ARGS` in `dir` and waits until it says it is ready.
    fn start(dir: &Path, args: &[&str], stderr: &str) -> Demo {
        let stderr = dir.join(stderr);
        let mut child = posnet(dir)
            .arg("demo")
            .args(args)
            .env("POSNET_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("posnet demo starts");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut demo = Demo {
            child,
            lines,
            output: String::new(),
            stderr,
        };
        demo.read_until("Ctrl-C stops everything");
        demo
    }

    /// Reads output lines until one starts with `prefix`; fails if the
    /// demo ends first.
    fn read_until(&mut self, prefix: &str) {
        loop {
            let line = self.lines.recv_timeout(LINE_TIMEOUT).unwrap_or_else(|e| {
                panic!(
                    "no line starting {prefix:?} ({e}); printed:\n{}",
                    self.output
                )
            });
            self.output.push_str(&line);
            self.output.push('\n');
            if line.starts_with(prefix) {
                return;
            }
        }
    }

    /// The text after `label` on the first line that has it.
    fn after(&self, label: &str) -> &str {
        self.output
            .lines()
            .find_map(|l| l.split_once(label).map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no {label:?} in:\n{}", self.output))
    }

    /// The first word after `label`.
    fn word_after(&self, label: &str) -> String {
        self.after(label)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }

    /// The command printed under "Try a payment:".
    fn payment_command(&self) -> String {
        let mut lines = self.output.lines();
        lines.find(|l| l.trim() == "Try a payment:");
        lines.next().unwrap().trim().to_string()
    }

    /// Ctrl-C: the demo stops everything and exits 0.
    fn interrupt(mut self) -> String {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        self.read_until("Stopped.");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "a clean exit on Ctrl-C: {status}");
        std::mem::take(&mut self.output)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.child.wait();
            eprintln!(
                "--- posnet demo printed ---\n{}--- and on stderr ---\n{}",
                self.output,
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
    }
}

/// Runs a printed command line as a shell would; its standard output.
fn shell(dir: &Path, line: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", line])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{line}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Pays with the printed command; the approval code.
fn pay(dir: &Path, demo: &Demo) -> String {
    let printed = shell(dir, &demo.payment_command());
    let result = printed
        .lines()
        .find(|l| l.starts_with("payment of 12.50 CNY: done"))
        .unwrap_or_else(|| panic!("the payment went through: {printed}"));
    let (_, rest) = result.split_once("approval ").unwrap();
    rest.split(',').next().unwrap().to_string()
}

/// Pays 12.50 by wallet with the printed command, at the retail counter,
/// from the wallet `who` (`wallet` as printed, or `small-wallet`); the
/// terminal's answer.
fn pay_by_wallet(dir: &Path, demo: &Demo, who: &str) -> serde_json::Value {
    let mut lines = demo.output.lines();
    lines.find(|l| l.starts_with("Pay by wallet"));
    let command = lines.next().unwrap().trim();
    assert!(command.ends_with(" code wallet)"), "{command}");
    let command = command.replace(" code wallet)", &format!(" code {who})"));
    serde_json::from_str(&shell(dir, &command)).unwrap()
}

/// The host's transactions through its merchant API, with the key the
/// demo made.
async fn host_transactions(demo: &Demo, dir: &Path) -> Vec<serde_json::Value> {
    let api = demo.word_after("merchant API ");
    let key = std::fs::read_to_string(dir.join("posnet-data/api.key")).unwrap();
    let answer: serde_json::Value = reqwest::Client::new()
        .get(format!("{api}/v1/transactions"))
        .bearer_auth(key.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["transactions"].as_array().unwrap().clone()
}

/// The value of cookie `name` set by `response`.
fn cookie(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .to_string()
}

/// Logs in to the back office as a person would with the login page's
/// form; the session cookie.
async fn log_in(base: &str, name: &str, password: &str, code: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(format!("{base}login")).send().await.unwrap();
    let token = cookie(&page, "posnet_login");
    let response = http
        .post(format!("{base}login"))
        .header(reqwest::header::COOKIE, format!("posnet_login={token}"))
        .form(&[
            ("name", name),
            ("password", password),
            ("code", code),
            ("csrf", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        reqwest::StatusCode::SEE_OTHER,
        "{name} logs in"
    );
    format!("posnet_session={}", cookie(&response, "posnet_session"))
}

/// Waits until the back office's page `path` shows `text` (the host's
/// webhook arrives on its own time); the page.
async fn wait_for_page(base: &str, session: &str, path: &str, text: &str) -> String {
    let deadline = Instant::now() + WEBHOOK_TIMEOUT;
    loop {
        let page = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .header(reqwest::header::COOKIE, session)
            .send()
            .await
            .unwrap();
        assert!(page.status().is_success(), "{path}: {}", page.status());
        let body = page.text().await.unwrap();
        if body.contains(text) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "the back office's {path} never showed {text}:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn a_payment_travels_from_the_phone_to_the_back_office_and_the_demo_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let offset = free_offset().to_string();

    // First run.
    let demo = Demo::start(dir, &["--port-offset", &offset], "demo-1.err");
    assert!(demo.output.contains("First run"), "{}", demo.output);
    let mode = std::fs::metadata(dir.join("posnet-data/demo.json"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let approval = pay(dir, &demo);

    let txns = rt.block_on(host_transactions(&demo, dir));
    assert_eq!(txns.len(), 1, "{txns:?}");
    let wallet = pay_by_wallet(dir, &demo, "wallet");
    assert_eq!(wallet["state"], "approved", "{wallet}");
    let receipt_lines = wallet["receipt"]["lines"].to_string();
    assert!(receipt_lines.contains("WALLET"), "{receipt_lines}");
    let wallet_approval = wallet["receipt"]["auth_code"].as_str().unwrap().to_string();
    let small = pay_by_wallet(dir, &demo, "small-wallet");
    assert_eq!(small["state"], "declined", "{small}");
    assert!(
        small["result"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("insufficient"),
        "{small}"
    );
    for file in ["wallet.json", "small-wallet.json"] {
        let mode = std::fs::metadata(dir.join("posnet-data").join(file))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600,
            "{file}"
        );
    }
    let t = &txns[0];
    assert_eq!(
        (&t["kind"], &t["state"], &t["amount"], &t["terminal_id"]),
        (
            &"sale".into(),
            &"approved".into(),
            &1250.into(),
            &"T0000001".into()
        ),
        "{t}"
    );
    assert_eq!(t["auth_code"], approval.as_str());

    let base = demo.word_after("Back office").to_string();
    let owner_password = demo.word_after("owner    password ");
    let code_command = demo.after("the one-time code of: ").trim().to_string();
    let code = shell(dir, &code_command);
    rt.block_on(async {
        let session = log_in(&base, "owner", &owner_password, code.trim()).await;
        wait_for_page(&base, &session, "export.csv", &approval).await;
        // The back office records the method the host's event names.
        let csv = wait_for_page(&base, &session, "export.csv", &wallet_approval).await;
        let row = csv.lines().find(|l| l.contains(&wallet_approval)).unwrap();
        assert!(row.split(',').any(|field| field == "wallet"), "{row}");
        let row = csv.lines().find(|l| l.contains(&approval)).unwrap();
        assert!(row.split(',').any(|field| field == "card"), "{row}");
    });
    let first = demo.interrupt();

    // Again, with the same data.
    let demo = Demo::start(dir, &[], "demo-2.err");
    assert!(demo.output.starts_with("Resuming"), "{}", demo.output);
    let kept = |output: &str| -> Vec<String> {
        output
            .lines()
            .filter(|l| {
                l.contains("password") || l.contains("pairing code") || l.contains("127.0.0.1")
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        kept(&demo.output),
        kept(&first),
        "same logins, pairings and ports"
    );
    let approval_2 = pay(dir, &demo);
    assert_eq!(rt.block_on(host_transactions(&demo, dir)).len(), 4);
    let cashier_password = demo.word_after("cashier  password ");
    rt.block_on(async {
        let session = log_in(&base, "cashier", &cashier_password, "").await;
        wait_for_page(&base, &session, "transactions", &approval_2).await;
    });

    // Nothing twice: one pairing per purpose at the terminal, two users
    // in the back office, one merchant and each test card once at the host.
    let screen = demo.word_after("T0000001  screen ");
    let out = support::run(
        posnet(dir),
        &["terminal", "pairings", "list", "--url", &screen],
    );
    let labels: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["label"].to_string())
        .collect();
    let distinct: std::collections::HashSet<&String> = labels.iter().collect();
    assert_eq!(distinct.len(), labels.len(), "{labels:?}");
    let out = support::run(
        posnet(dir),
        &[
            "merchant",
            "--data-dir",
            "posnet-data/merchant",
            "user",
            "list",
        ],
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 2);
    demo.interrupt();

    let db = rusqlite::Connection::open_with_flags(
        dir.join("posnet-data/host/host.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let count = |table: &str| -> i64 {
        db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    let cards: std::collections::HashSet<&str> =
        terminal::card::CATALOG.iter().map(|c| c.pan).collect();
    assert_eq!(count("merchants"), 1);
    assert_eq!(count("cards"), cards.len() as i64);
    assert_eq!(count("terminals"), 2);
    assert_eq!(count("wallets"), 2);
}

#[test]
fn the_demos_children_stop_when_the_demo_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let offset = free_offset();
    let mut demo = Demo::start(
        tmp.path(),
        &["--port-offset", &offset.to_string()],
        "demo-killed.err",
    );
    // SIGKILL: the demo cannot stop its children itself.
    demo.child.kill().unwrap();
    demo.child.wait().unwrap();
    // Each child notices it was orphaned and stops, freeing its port; the
    // deadline is a safety net.
    let deadline = Instant::now() + Duration::from_secs(120);
    for port in DEMO_PORTS.map(|p| p + offset) {
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "port {port} is still taken after the demo was killed"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
