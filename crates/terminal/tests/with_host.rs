//! The terminal against a real posnet host over mutual TLS on loopback:
//! each transaction type end to end, the host lost in the middle of a sale,
//! offline approvals forwarded exactly once, settlement.

use host::admin::{self, CardSpec, MerchantSpec, TerminalSpec};
use host::runtime::{HostData, RunningHost, ServeOptions, start};
use ledger::{AccountId, GroupCommitConfig, LedgerRead};
use pki::{InitOptions, MasterKey};
use std::net::SocketAddr;
use std::time::Duration;
use terminal::card::{CATALOG, test_card_named};
use terminal::engine::{Method, Refusal};
use terminal::{Outcome, Terminal, TerminalOptions, TxnKind, TxnRequest};

const MERCHANT: &str = "M00000000000001";

struct World {
    dir: tempfile::TempDir,
    data: HostData,
    host: Option<RunningHost>,
    host_addr: SocketAddr,
    proxy: netfault::Proxy,
    terminal: Terminal,
    bundle: pki::EnrollmentBundle,
    options: TerminalOptions,
    stop: tokio::sync::watch::Sender<bool>,
}

fn card_spec(c: &terminal::card::TestCard) -> CardSpec {
    CardSpec {
        pan: c.pan.into(),
        expiry: c.expiry.into(),
        pin: c.pin.map(Into::into),
        kind: "card".into(),
        balance: c.balance,
        per_txn_limit: c.per_txn_limit,
        daily_limit: 1_000_000,
        currency: 156,
        status: c.status.into(),
        holder: c.name.into(),
    }
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        pki::Deployment::init(
            &dir.path().join("deployment"),
            &master,
            &InitOptions::default(),
        )
        .unwrap();
        let master2 = MasterKey::from_file(&{
            let p = dir.path().join("master.key");
            master.write_to(&p).unwrap();
            p
        })
        .unwrap();
        let data = HostData::open(
            &dir.path().join("host"),
            &dir.path().join("deployment"),
            master,
            GroupCommitConfig::default(),
        )
        .unwrap();
        let host = start(
            &data,
            &ServeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                limits: Default::default(),
                echo_interval: 60,
            },
        )
        .await
        .unwrap();
        let host_addr = host.addr;
        let proxy = netfault::Proxy::start(host_addr).await.unwrap();
        let prepared = admin::prepare_enrollment(
            &data.deployment,
            TerminalSpec {
                terminal_id: "T0000001".into(),
                merchant_id: MERCHANT.into(),
                max_amount: 60_000,
                offline_floor: 2_000,
                hosts: vec![proxy.addr.to_string()],
            },
        )
        .unwrap();
        let issuer = data.issuer.clone();
        let bundle = data
            .ledger
            .submit(move |tx| -> Result<_, admin::AdminError> {
                let merchant = MerchantSpec {
                    merchant_id: MERCHANT.into(),
                    name: "Corner Shop".into(),
                    currency: 156,
                    max_amount: 500_000,
                    webhook_url: None,
                    webhook_secret: None,
                    api_key: None,
                };
                admin::add_merchant(tx, &merchant, &master2, 0)?;
                for c in CATALOG {
                    admin::add_card(tx, &card_spec(c), &issuer, &master2, 0)?;
                }
                admin::enroll(tx, prepared, 0)
            })
            .await
            .unwrap();
        let options = TerminalOptions {
            data_dir: dir.path().join("terminal"),
            response_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
        };
        let terminal = Terminal::open(
            bundle.clone(),
            data.deployment.ktk().expose(),
            options.clone(),
        )
        .unwrap();
        let (stop, _) = tokio::sync::watch::channel(false);
        let mut w = World {
            dir,
            data,
            host: Some(host),
            host_addr,
            proxy,
            terminal,
            bundle,
            options,
            stop,
        };
        w.supervise();
        w.wait(|s| s.online).await;
        w
    }

    fn supervise(&mut self) {
        let (stop, watch) = tokio::sync::watch::channel(false);
        self.stop = stop;
        let t = self.terminal.clone();
        tokio::spawn(async move { t.supervise(watch).await });
    }

    /// The terminal's process ends without any shutdown (as kill -9 would)
    /// and starts again from its journal.
    async fn restart_terminal(&mut self) {
        self.stop.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.terminal = Terminal::open(
            self.bundle.clone(),
            self.data.deployment.ktk().expose(),
            self.options.clone(),
        )
        .unwrap();
        self.supervise();
    }

    async fn wait(&self, pred: impl Fn(&terminal::Status) -> bool) {
        let mut status = self.terminal.status();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if pred(&status.borrow()) {
                    return;
                }
                status.changed().await.unwrap();
            }
        })
        .await
        .expect("terminal reached the expected status");
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
        self.terminal.transact(req, presented).await.unwrap()
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

    fn host_count(&self, sql: &str) -> i64 {
        self.data
            .reader()
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
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
        w.host_count("SELECT count(*) FROM journal"),
        5,
        "refusals never reached the host"
    );
    let history = w.terminal.history(20).await.unwrap();
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
        w.host_count("SELECT count(*) FROM journal WHERE kind = 'sale' AND state = 'reversed'"),
        1
    );
    assert_eq!(
        w.host_count(
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
    assert_eq!(w.terminal.status().borrow().pending_saf, 2);
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
        w.host_count("SELECT count(*) FROM journal WHERE kind = 'offline_sale'"),
        2
    );
    assert_eq!(w.balance("offline_chip"), before - 2_700);
    w.assert_ledger_consistent();
}
