//! The terminal against a real posnet host over mutual TLS on loopback:
//! each transaction type end to end, the host lost in the middle of a sale,
//! offline approvals forwarded exactly once, settlement.

use host::admin::TerminalSpec;
use host::runtime::{HostData, RunningHost, ServeOptions, start};
use ledger::{AccountId, LedgerRead};
use std::net::SocketAddr;
use std::time::Duration;
use terminal::card::{CATALOG, test_card_named};
use terminal::engine::{Method, Refusal};
use terminal::{Outcome, TerminalOptions, TxnKind, TxnRequest};
use testbed::{HostFixture, TerminalFixture};

struct World {
    dir: tempfile::TempDir,
    data: HostData,
    host: Option<RunningHost>,
    host_addr: SocketAddr,
    proxy: netfault::Proxy,
    t: TerminalFixture,
    bundle: pki::EnrollmentBundle,
    options: TerminalOptions,
}

impl World {
    async fn start() -> World {
        let fixture = HostFixture::start(testbed::corner_shop(), CATALOG).await;
        let host_addr = fixture.running.addr;
        let proxy = netfault::Proxy::start(host_addr).await.unwrap();
        let bundle = fixture
            .enroll(TerminalSpec {
                offline_floor: 2_000,
                hosts: vec![proxy.addr.to_string()],
                ..fixture.terminal_spec("T0000001")
            })
            .await;
        let options = TerminalOptions {
            response_timeout: Duration::from_secs(2),
            ..fixture.terminal_options()
        };
        let t = TerminalFixture::start(&bundle, &fixture.data, options.clone()).await;
        let HostFixture { dir, data, running } = fixture;
        World {
            dir,
            data,
            host: Some(running),
            host_addr,
            proxy,
            t,
            bundle,
            options,
        }
    }

    /// The terminal's process ends without any shutdown (as kill -9 would)
    /// and starts again from its journal.
    async fn restart_terminal(&mut self) {
        self.t.stop();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.t = TerminalFixture::open(&self.bundle, &self.data, self.options.clone());
    }

    async fn wait(&self, pred: impl Fn(&terminal::Status) -> bool) {
        self.t
            .wait("terminal reached the expected status", pred)
            .await;
    }

    async fn pay(
        &self,
        card: &str,
        kind: TxnKind,
        amount: u64,
        original: Option<(u32, u32)>,
    ) -> terminal::TxnResult {
        let presented = test_card_named(card).unwrap().present();
        let req = TxnRequest {
            kind,
            amount,
            method: Method::Card,
            original,
        };
        self.t.terminal.transact(req, presented).await.unwrap()
    }

    fn balance(&self, card: &str) -> u64 {
        let token = self.data.issuer.token(test_card_named(card).unwrap().pan);
        let account = host::issuer::account_id("card", &token);
        let mut reader =
            ledger::SqliteReader::open(self.dir.path().join("host").join(host::runtime::DB_FILE))
                .unwrap();
        let _ = AccountId(0);
        reader
            .balances(account)
            .unwrap()
            .unwrap()
            .available_to_debit()
    }

    fn assert_ledger_consistent(&self) {
        let mut reader =
            ledger::SqliteReader::open(self.dir.path().join("host").join(host::runtime::DB_FILE))
                .unwrap();
        assert!(reader.check_invariants().unwrap().is_consistent());
    }
}

fn code(o: &Outcome) -> String {
    match o {
        Outcome::Declined { code, .. } => code.clone(),
        other => other.state().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalog_card_ends_as_documented() {
    let w = World::start().await;
    let cases = [
        ("approved", 1_250, "approved"),
        ("insufficient_funds", 1_000, "51"),
        ("wrong_pin", 1_000, "55"),
        ("lost", 1_000, "05"),
        ("over_limit", 2_000, "61"),
        ("expired", 1_000, "failed"),
        ("unreadable", 1_000, "failed"),
    ];
    for (card, amount, expected) in cases {
        let r = w.pay(card, TxnKind::Sale, amount, None).await;
        assert_eq!(code(&r.outcome), expected, "{card}");
    }
    let r = w.pay("approved", TxnKind::Sale, 70_000, None).await;
    assert!(matches!(
        r.outcome,
        Outcome::FailedBeforeSending(Refusal::AmountOutsideLimits { .. })
    ));
    assert_eq!(
        testbed::host_count(&w.data, "SELECT count(*) FROM journal"),
        5,
        "refusals never reached the host"
    );
    let history = w.t.terminal.history(20).await.unwrap();
    assert!(
        history.iter().all(|t| t.state != "sending"),
        "no transaction is left without a definite state"
    );
    w.assert_ledger_consistent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn void_refund_preauth_and_completion() {
    let w = World::start().await;
    let start = w.balance("offline_chip");
    let sale = w.pay("offline_chip", TxnKind::Sale, 3_000, None).await;
    assert_eq!(code(&sale.outcome), "approved");
    let void = w
        .pay(
            "offline_chip",
            TxnKind::Void,
            3_000,
            Some((sale.batch, sale.stan)),
        )
        .await;
    assert_eq!(code(&void.outcome), "approved");
    assert_eq!(w.balance("offline_chip"), start);
    let sale = w.pay("offline_chip", TxnKind::Sale, 3_000, None).await;
    let refund = w
        .pay(
            "offline_chip",
            TxnKind::Refund,
            1_000,
            Some((sale.batch, sale.stan)),
        )
        .await;
    assert_eq!(code(&refund.outcome), "approved");
    assert_eq!(w.balance("offline_chip"), start - 2_000);
    let hold = w.pay("offline_chip", TxnKind::PreAuth, 5_000, None).await;
    assert_eq!(code(&hold.outcome), "approved");
    assert_eq!(w.balance("offline_chip"), start - 7_000);
    let done = w
        .pay(
            "offline_chip",
            TxnKind::Completion,
            4_000,
            Some((hold.batch, hold.stan)),
        )
        .await;
    assert_eq!(code(&done.outcome), "approved");
    assert_eq!(w.balance("offline_chip"), start - 6_000);
    let balance = w.pay("offline_chip", TxnKind::Balance, 0, None).await;
    assert_eq!(code(&balance.outcome), "approved");
    w.assert_ledger_consistent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_lost_mid_sale_is_reversed_after_reconnect() {
    let w = World::start().await;
    let start = w.balance("approved");
    w.proxy.cut_next_answer();
    let r = w.pay("approved", TxnKind::Sale, 2_500, None).await;
    assert!(
        matches!(r.outcome, Outcome::Reversed { .. }),
        "{:?}",
        r.outcome
    );
    // The host did charge; the stored reversal undoes it once the link is back.
    w.wait(|s| s.online && s.pending_saf == 0).await;
    assert_eq!(w.balance("approved"), start);
    assert_eq!(
        testbed::host_count(
            &w.data,
            "SELECT count(*) FROM journal WHERE kind = 'sale' AND state = 'reversed'"
        ),
        1
    );
    assert_eq!(
        testbed::host_count(
            &w.data,
            "SELECT count(*) FROM journal WHERE kind = 'reversal' AND response_code = '00'"
        ),
        1
    );
    // The next sale goes through normally.
    assert_eq!(
        code(&w.pay("approved", TxnKind::Sale, 100, None).await.outcome),
        "approved"
    );
    w.assert_ledger_consistent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_approvals_are_forwarded_once_when_the_host_returns() {
    let mut w = World::start().await;
    let before = w.balance("offline_chip");
    w.proxy.refuse(true);
    w.host.take().unwrap().stop().await;
    w.wait(|s| !s.online).await;
    for amount in [1_500, 1_200] {
        let r = w.pay("offline_chip", TxnKind::Sale, amount, None).await;
        assert_eq!(r.outcome, Outcome::ApprovedOffline);
    }
    let r = w.pay("offline_chip", TxnKind::Sale, 2_500, None).await;
    assert!(
        matches!(
            r.outcome,
            Outcome::FailedBeforeSending(Refusal::HostUnreachable(_))
        ),
        "over the floor"
    );
    let r = w.pay("approved", TxnKind::Sale, 100, None).await;
    assert!(
        matches!(
            r.outcome,
            Outcome::FailedBeforeSending(Refusal::HostUnreachable(_))
        ),
        "card needs online"
    );

    // The terminal restarts (its process is gone): advices survive in the journal.
    w.restart_terminal().await;
    assert_eq!(w.t.terminal.status().borrow().pending_saf, 2);
    w.host = Some(
        start(
            &w.data,
            &ServeOptions {
                listen: w.host_addr,
                limits: Default::default(),
                echo_interval: 60,
            },
        )
        .await
        .unwrap(),
    );
    w.proxy.refuse(false);
    w.wait(|s| s.online && s.pending_saf == 0).await;
    assert_eq!(
        testbed::host_count(
            &w.data,
            "SELECT count(*) FROM journal WHERE kind = 'offline_sale'"
        ),
        2
    );
    assert_eq!(w.balance("offline_chip"), before - 2_700);
    w.assert_ledger_consistent();
}

impl World {
    fn terminal_db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("terminal").join("terminal.db")).unwrap()
    }

    /// Serves the terminal's screen on a free loopback port; stops when the
    /// returned sender is dropped.
    async fn screen(&self) -> (String, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let terminal = self.t.terminal.clone();
        tokio::spawn(async move {
            terminal::screen::serve(terminal, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        (base, stop)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_balances_then_uploads_the_batch_when_totals_differ() {
    let w = World::start().await;
    let sale = w.pay("approved", TxnKind::Sale, 1_250, None).await;
    assert_eq!(code(&sale.outcome), "approved");
    assert_eq!(
        code(
            &w.pay("insufficient_funds", TxnKind::Sale, 1_000, None)
                .await
                .outcome
        ),
        "51"
    );
    let refund = w
        .pay(
            "approved",
            TxnKind::Refund,
            250,
            Some((sale.batch, sale.stan)),
        )
        .await;
    assert_eq!(code(&refund.outcome), "approved");

    let s = w.t.terminal.settle().await.unwrap();
    assert_eq!(
        (
            s.batch,
            s.debit_amount,
            s.debit_count,
            s.credit_amount,
            s.credit_count
        ),
        (1, 1_250, 1, 250, 1)
    );
    assert!(s.balanced);
    assert_eq!(s.uploaded, 0);
    assert_eq!(
        testbed::host_count(
            &w.data,
            "SELECT count(*) FROM settlements WHERE batch = 1 AND balanced = 1 AND debit_amount = 1250 AND credit_amount = 250 AND closed_at IS NOT NULL"
        ),
        1
    );

    // The next batch: three sales, and the terminal loses its record of
    // one (a journal restored from an older copy). The host's totals differ.
    let mut batch2 = Vec::new();
    for amount in [300, 400, 500] {
        let r = w.pay("offline_chip", TxnKind::Sale, amount, None).await;
        assert_eq!(code(&r.outcome), "approved");
        assert_eq!(r.batch, 2, "settlement opened a new batch");
        batch2.push(r);
    }
    let db = w.terminal_db();
    for table in [
        "DELETE FROM txn_history WHERE txn_id = ?1",
        "DELETE FROM txns WHERE id = ?1",
    ] {
        db.execute(table, [batch2[1].id]).unwrap();
    }
    let s = w.t.terminal.settle().await.unwrap();
    assert_eq!((s.batch, s.debit_amount, s.debit_count), (2, 800, 2));
    assert!(!s.balanced);
    assert_eq!(
        s.uploaded, 2,
        "each transaction the terminal holds is uploaded"
    );
    assert_eq!(
        testbed::host_count(
            &w.data,
            "SELECT count(*) FROM settlements WHERE batch = 2 AND balanced = 0 AND debit_amount = 1200 AND debit_count = 3 AND uploaded = 2 AND closed_at IS NOT NULL"
        ),
        1,
        "the host recorded its own totals, the upload and its end"
    );
    // Batch 3 starts empty and balances.
    let s = w.t.terminal.settle().await.unwrap();
    assert_eq!((s.batch, s.debit_count, s.balanced), (3, 0, true));
    w.assert_ledger_consistent();
}

/// A reader that notes what the terminal displays while it waits for the card.
struct WatchingReader {
    status: tokio::sync::watch::Receiver<terminal::Status>,
    card: &'static terminal::card::TestCard,
    displayed: Option<String>,
}

impl terminal::card::CardReader for WatchingReader {
    fn read(
        &mut self,
        _amount: u64,
    ) -> Result<terminal::card::PresentedCard, terminal::card::CardError> {
        self.displayed = Some(self.status.borrow().display.clone());
        self.card.present()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_asks_for_the_card_then_shows_the_result() {
    let w = World::start().await;
    let mut reader = WatchingReader {
        status: w.t.terminal.status(),
        card: test_card_named("approved").unwrap(),
        displayed: None,
    };
    let req = TxnRequest {
        kind: TxnKind::Sale,
        amount: 700,
        method: Method::Card,
        original: None,
    };
    let r =
        w.t.terminal
            .transact_with_reader(req, &mut reader)
            .await
            .unwrap();
    assert_eq!(reader.displayed.as_deref(), Some("Present card"));
    assert_eq!(code(&r.outcome), "approved");
    assert_eq!(w.t.terminal.status().borrow().display, "Approved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_page_sells_with_test_cards_and_prints_receipts() {
    let w = World::start().await;
    let (base, _stop) = w.screen().await;
    let http = reqwest::Client::new();
    let sale = |card: &str, amount: u64| {
        http.post(format!("{base}/api/sale"))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "amount": amount, "card": card }).to_string())
            .send()
    };

    // The page shows the terminal and a button for every catalog card.
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'nonce-") && csp.contains("frame-ancestors 'none'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("Corner Shop") && html.contains("T0000001"));
    for c in CATALOG {
        assert!(
            html.contains(&format!("data-card=\"{}\"", c.name)),
            "{}",
            c.name
        );
        assert!(!html.contains(c.pan), "the page shows no full card number");
    }

    // A PIN sale: approved, receipt without a signature line.
    let r: serde_json::Value = sale("approved", 1_250).await.unwrap().json().await.unwrap();
    assert_eq!(r["state"], "approved");
    assert_eq!(r["result"], "APPROVED");
    assert_eq!(r["receipt"]["amount_text"], "12.50");
    assert_eq!(r["receipt"]["currency"], "CNY");
    assert_eq!(r["receipt"]["masked_pan"], "620000******0005");
    let pin_sale = r["id"].as_i64().unwrap();
    let merchant_copy = |id: i64| {
        let http = http.clone();
        let base = base.clone();
        async move {
            http.get(format!("{base}/api/receipt/{id}?copy=merchant&format=text"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let text = merchant_copy(pin_sale).await;
    assert!(
        text.contains("PIN VERIFIED") && !text.contains("SIGNATURE"),
        "{text}"
    );
    assert!(text.contains("MERCHANT COPY"));

    // A contactless sale without PIN: the merchant copy asks for a signature.
    let r: serde_json::Value = sale("offline_chip", 800)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["state"], "approved");
    let text = merchant_copy(r["id"].as_i64().unwrap()).await;
    assert!(text.contains("CARDHOLDER SIGNATURE"), "{text}");

    // A decline is a completed request with its reason.
    let r: serde_json::Value = sale("insufficient_funds", 1_000)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["state"], "declined");
    assert_eq!(r["result"], "DECLINED: INSUFFICIENT FUNDS");
    assert_eq!(w.t.terminal.status().borrow().display, "Declined");

    // Status, list, detail with history and e-receipt, ESC/POS.
    let s: serde_json::Value = http
        .get(format!("{base}/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["online"], true);
    assert_eq!(s["display"], "Declined");
    assert_eq!(s["pending_saf"], 0);
    assert_eq!(s["merchant_name"], "Corner Shop");
    let list: serde_json::Value = http
        .get(format!("{base}/api/transactions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    let detail: serde_json::Value = http
        .get(format!("{base}/api/transactions/{pin_sale}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["transaction"]["state"], "approved");
    let states: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["sending", "approved"]);
    assert_eq!(detail["receipt"]["copy"], "customer");
    let escpos = http
        .get(format!("{base}/api/receipt/{pin_sale}?format=escpos"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(escpos.starts_with(&terminal::receipt::ESC_INIT));
    assert!(escpos.ends_with(&terminal::receipt::GS_PARTIAL_CUT));
    let missing = http
        .get(format!("{base}/api/receipt/999"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let unknown = sale("no_such_card", 100).await.unwrap();
    assert_eq!(unknown.status(), 400);

    // Another site's page can neither sell nor read.
    let forged = http
        .post(format!("{base}/api/sale"))
        .header("content-type", "application/json")
        .header("origin", "http://evil.example")
        .body(r#"{"amount":100,"card":"approved"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let form = http
        .post(format!("{base}/api/sale"))
        .header("content-type", "text/plain")
        .body(r#"{"amount":100,"card":"approved"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    let rebound = http
        .get(format!("{base}/api/transactions"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    assert_eq!(
        w.t.terminal.history(10).await.unwrap().len(),
        3,
        "refused requests ran nothing"
    );
}

/// A wallet's payment code scanned at the screen (what `posnet terminal pay
/// --qr` sends) pays from the wallet once; a refund, with a fresh code,
/// goes back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanned_payment_code_pays_once_and_is_refunded_to_the_wallet() {
    let w = World::start().await;
    let spec = host::admin::WalletSpec {
        number: "100000003".into(),
        balance: 10_000,
        per_txn_limit: 50_000,
        daily_limit: 100_000,
        currency: 156,
        holder: String::new(),
    };
    let master = w.data.master.clone();
    let secret = w
        .data
        .ledger
        .submit(move |tx| host::admin::add_wallet(tx, &spec, &master, 0))
        .await
        .unwrap()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code_at = |unix: u64| {
        paycrypto::paycode::WalletNumber::parse("100000003")
            .unwrap()
            .code_at(secret.expose(), unix)
            .unwrap()
            .to_string()
    };
    let balance = || async {
        w.data
            .ledger
            .submit(host::admin::list_wallets)
            .await
            .unwrap()[0]
            .balance
    };
    let (base, _stop) = w.screen().await;
    let http = reqwest::Client::new();
    let html = http
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("id=\"sale-qr\""));
    let scanned = code_at(now);
    let sale = || async {
        let r = http
            .post(format!("{base}/api/sale"))
            .json(&serde_json::json!({ "amount": 1_250, "qr": scanned }))
            .send()
            .await
            .unwrap();
        r.json::<serde_json::Value>().await.unwrap()
    };

    let paid = sale().await;
    assert_eq!(paid["state"], "approved", "{paid}");
    assert_eq!(
        paid["receipt"]["masked_pan"],
        iso8583::text::mask_pan(&scanned).as_str()
    );
    let lines = paid["receipt"]["lines"].to_string();
    assert!(
        lines.contains("WALLET") && !lines.contains(&scanned),
        "{lines}"
    );
    assert_eq!(balance().await, 8_750);

    let again = sale().await;
    assert_eq!(again["state"], "declined", "{again}");
    assert!(
        again["result"].as_str().unwrap().contains("DUPLICATE"),
        "{again}"
    );
    assert_eq!(balance().await, 8_750);

    let original = (
        paid["batch"].as_u64().unwrap() as u32,
        paid["stan"].as_u64().unwrap() as u32,
    );
    let refund =
        w.t.terminal
            .transact(
                TxnRequest {
                    kind: TxnKind::Refund,
                    amount: 500,
                    method: Method::Qr,
                    original: Some(original),
                },
                terminal::card::scanned_code(&code_at(now + 30)),
            )
            .await
            .unwrap();
    assert_eq!(code(&refund.outcome), "approved");
    assert_eq!(balance().await, 9_250);
    w.assert_ledger_consistent();
}
