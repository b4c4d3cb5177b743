//! The phone against a real posnet terminal (its nexo endpoint over TLS
//! with its own certificate, pinned) in front of a real posnet host over
//! mutual TLS: pairing, diagnosis, login, payment with progress, status,
//! refund and reversal with supervisor codes, a lost answer recovered by
//! `TransactionStatus` without a second charge, a revoked key and a
//! replaced certificate.

use std::time::Duration;

use nexo::message::ResponseBody;
use nexo::pairing::Pairing;
use nexo::wire::ErrorCondition;
use phone::diagnose::Status;
use phone::history::{Kind, State};
use phone::retry::Backoff;
use phone::store::PairingStore;
use phone::transport::{Timeouts, TransportError};
use phone::{Event, Money, Options, Phone, PhoneError, SupervisorCode};
use terminal::ecr::EcrConfig;
use terminal::ecr::server::ServerOptions;

/// Host, terminal and its nexo endpoint, all on loopback (see
/// [`testbed::World`]), and the configuration the endpoint starts with.
struct World {
    bed: testbed::World,
    config: EcrConfig,
}

impl World {
    async fn start(config: EcrConfig) -> World {
        let bed = testbed::World::start(
            testbed::corner_shop(),
            None,
            config.clone(),
            ServerOptions::default(),
        )
        .await;
        World { bed, config }
    }

    /// The terminal's process ends (its endpoint stopped, requests in
    /// progress finished) and starts again from its data directory, on
    /// the same address.
    async fn restart(&mut self) {
        let addr = self.bed.ecr.addr;
        self.bed.restart(addr, self.config.clone()).await;
    }

    /// The terminal's pairing code for a new phone, read and stored by
    /// the phone as `posnet phone pair` does.
    fn pair_phone(&self, label: &str) -> Options {
        let code = self.bed.ecr.ecr.pair(label).unwrap().to_code();
        let pairing = Pairing::from_code(&code).unwrap();
        assert_eq!(pairing.port, self.bed.ecr.addr.port());
        let data_dir = self.bed.host.dir.path().join(label);
        PairingStore::new(&data_dir)
            .add(&pairing, false, &phone::timestamp_now())
            .unwrap();
        Options {
            // Safety nets only; nothing here waits for them but the
            // lost-answer test, which sets its own.
            timeouts: Timeouts {
                connect: Duration::from_secs(10),
                answer: Duration::from_secs(60),
            },
            ..Options::new(data_dir)
        }
    }

    fn host_count(&self, sql: &str) -> i64 {
        testbed::host_count(&self.bed.host.data, sql)
    }
}

/// The terminal's supervisor, with codes the phone can send.
struct Supervisor(testbed::Supervisor);

impl Supervisor {
    fn from_uri(uri: &str) -> Self {
        Self(testbed::Supervisor::from_uri(uri, testbed::TID))
    }

    fn code(&self) -> SupervisorCode {
        SupervisorCode::new(&self.0.code()).unwrap()
    }
}

/// Pays 12.50 CNY with `phone`, presents the approved card once the phone
/// shows the terminal asking for it (the first progress it gets), and
/// checks that the payment was approved.
async fn pay_when_the_card_is_asked_for(w: &World, mut phone: Phone) -> phone::Outcome {
    let (seen, mut events) = tokio::sync::mpsc::unbounded_channel();
    let paying = tokio::spawn(async move {
        phone
            .pay(&cny("12.50"), &mut |e| {
                let _ = seen.send(e);
            })
            .await
    });
    match events.recv().await.expect("the phone shows the progress") {
        Event::Progress(line) => assert_eq!(line, "Present card CNY 12.50"),
        other => panic!("{other:?}"),
    }
    w.bed.ecr.ecr.present_card("approved").unwrap();
    let outcome = paying.await.unwrap().unwrap();
    assert!(outcome.succeeded(), "{}", outcome.reason());
    outcome
}

fn cny(text: &str) -> Money {
    Money::parse(text, "CNY").unwrap()
}

fn auto(card: &str) -> EcrConfig {
    EcrConfig {
        present_card: terminal::card::test_card_named(card),
        ..EcrConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_status_refund_reverse_history() {
    let w = World::start(auto("approved")).await;
    let supervisor = Supervisor::from_uri(&w.bed.ecr.ecr.set_supervisor().unwrap());
    let mut phone = Phone::open(w.pair_phone("phone")).unwrap();
    let mut ignore = |_: Event| {};

    let report = phone.diagnose().await;
    assert!(report.ok(), "{report:?}");
    let statuses: Vec<Status> = report.checks.iter().map(|c| c.status).collect();
    assert_eq!(&statuses[..4], [Status::Ok; 4], "{report:?}");
    assert_eq!(
        report.checks[7].status,
        Status::Warning,
        "not logged in yet"
    );

    let login = phone.login("cashier-7", &mut ignore).await.unwrap();
    assert!(login.succeeded(), "{}", login.reason());
    let report = phone.diagnose().await;
    assert_eq!(report.checks[7].status, Status::Ok, "{report:?}");

    // A sale.
    let sale = phone.pay(&cny("12.50"), &mut ignore).await.unwrap();
    assert!(sale.succeeded(), "{}", sale.reason());
    assert_eq!(sale.recovered, None);
    let summary = sale.summary();
    assert_eq!(summary.amount.as_deref(), Some("12.50 CNY"));
    let sale_txn = summary.poi_transaction_id.clone().unwrap();
    let pan = summary.masked_pan.clone().unwrap();
    assert!(pan.contains("******"), "{pan}");
    assert!(!summary.receipt.is_empty(), "the customer's receipt");
    assert!(
        summary.receipt.iter().any(|l| l.contains("12.50")),
        "{:?}",
        summary.receipt
    );
    let ResponseBody::Payment(p) = &sale.response.body else {
        panic!("a payment answer")
    };
    assert_eq!(
        p.sale_data.as_ref().unwrap().operator_id.as_deref(),
        Some("cashier-7"),
        "the operator logged in travels with the payment"
    );

    // Its status: the terminal repeats the same answer.
    let status = phone.status(&sale.service_id, &mut ignore).await.unwrap();
    assert!(status.mismatches.is_empty(), "{:?}", status.mismatches);
    let repeated = status.repeated.expect("the terminal repeats the answer");
    assert_eq!(
        phone::Summary::of(&sale.service_id, &repeated.body, None).poi_transaction_id,
        Some(sale_txn.clone())
    );

    // A refund without the right code is refused, then done with it.
    let wrong = SupervisorCode::new("000000").unwrap();
    let refused = phone
        .refund(&cny("2.50"), &sale_txn, None, &wrong, &mut ignore)
        .await
        .unwrap();
    assert!(!refused.succeeded());
    assert_eq!(
        refused.response.body.response().error_condition,
        Some(ErrorCondition::Refusal)
    );
    assert!(
        refused.reason().contains("supervisor code"),
        "{}",
        refused.reason()
    );
    let refund = phone
        .refund(
            &cny("2.50"),
            &sale_txn,
            None,
            &supervisor.code(),
            &mut ignore,
        )
        .await
        .unwrap();
    assert!(refund.succeeded(), "{}", refund.reason());
    assert_eq!(
        w.host_count("SELECT count(*) FROM journal WHERE kind = 'refund' AND response_code = '00'"),
        1
    );

    // A second sale, reversed.
    let second = phone.pay(&cny("30"), &mut ignore).await.unwrap();
    assert!(second.succeeded(), "{}", second.reason());
    let second_txn = second.summary().poi_transaction_id.unwrap();
    let reversal = phone
        .reverse(&second_txn, None, &supervisor.code(), &mut ignore)
        .await
        .unwrap();
    assert!(reversal.succeeded(), "{}", reversal.reason());
    assert_eq!(
        w.host_count("SELECT count(*) FROM journal WHERE kind = 'sale' AND state = 'voided'"),
        1
    );
    let status = phone
        .status(&reversal.service_id, &mut ignore)
        .await
        .unwrap();
    assert!(matches!(
        status.repeated.map(|r| r.body),
        Some(ResponseBody::Reversal(_))
    ));

    // The phone's own record: newest first, every answer kept.
    let records = phone.history().list(50).unwrap();
    let transactions: Vec<(Kind, State, Option<&str>)> = records
        .iter()
        .filter(|r| matches!(r.kind, Kind::Payment | Kind::Refund | Kind::Reversal))
        .map(|r| (r.kind, r.state, r.result.as_deref()))
        .collect();
    assert_eq!(
        transactions,
        [
            (Kind::Reversal, State::Answered, Some("Success")),
            (Kind::Payment, State::Answered, Some("Success")),
            (Kind::Refund, State::Answered, Some("Success")),
            (Kind::Refund, State::Answered, Some("Failure")),
            (Kind::Payment, State::Answered, Some("Success")),
        ]
    );
    let first = records
        .iter()
        .find(|r| r.service_id == sale.service_id)
        .unwrap();
    assert_eq!(first.masked_pan.as_deref(), Some(pan.as_str()));
    assert_eq!(first.poi_transaction_id.as_deref(), Some(sale_txn.as_str()));

    let logout = phone.logout(&mut ignore).await.unwrap();
    assert!(logout.succeeded(), "{}", logout.reason());
    assert_eq!(phone.history().operator().unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminals_progress_is_shown_while_the_payment_runs() {
    // No card is presented until the phone has shown the terminal's
    // request for one.
    let w = World::start(EcrConfig::default()).await;
    let phone = Phone::open(w.pair_phone("phone")).unwrap();
    pay_when_the_card_is_asked_for(&w, phone).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_recovered_by_transaction_status_and_never_resent() {
    // The phone stops waiting while the payment waits for a card, and the
    // terminal restarts before anyone presents one: the phone learns
    // from the terminal what became of the payment, and sends nothing
    // else.
    let mut w = World::start(EcrConfig {
        card_timeout: Duration::from_secs(2),
        ..EcrConfig::default()
    })
    .await;
    let mut options = w.pair_phone("phone");
    options.timeouts.answer = Duration::from_millis(500);
    options.status = Backoff {
        attempts: 300,
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    let mut phone = Phone::open(options).unwrap();
    let (seen, mut events) = tokio::sync::mpsc::unbounded_channel();
    let paying = tokio::spawn(async move {
        let outcome = phone
            .pay(&cny("12.50"), &mut |e| {
                let _ = seen.send(e);
            })
            .await;
        (phone, outcome)
    });
    let lost = loop {
        match events.recv().await.expect("the phone reports how it goes") {
            Event::Progress(line) => assert_eq!(line, "Present card CNY 12.50"),
            Event::AnswerLost { reason } => break reason,
            other => panic!("{other:?} before the answer was lost"),
        }
    };
    assert!(
        lost.starts_with("timeout: no answer from the terminal"),
        "{lost}"
    );
    w.restart().await;

    let (phone, outcome) = paying.await.unwrap();
    let outcome = outcome.unwrap();
    assert_eq!(outcome.recovered.as_deref(), Some(lost.as_str()));
    // Nobody presented a card: the payment was not made, and the terminal
    // says so (cancelled by its card timeout, or aborted by the restart).
    assert!(!outcome.succeeded());
    let condition = outcome.response.body.response().error_condition;
    assert!(
        matches!(
            condition,
            Some(ErrorCondition::Cancel | ErrorCondition::Aborted)
        ),
        "{}",
        outcome.reason()
    );
    let record = phone.history().find(&outcome.service_id).unwrap().unwrap();
    assert_eq!(record.state, State::Recovered);
    assert_eq!(record.result.as_deref(), Some("Failure"));
    let payments = phone
        .history()
        .list(1000)
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == Kind::Payment)
        .count();
    assert_eq!(payments, 1, "one payment request, the rest status requests");
    assert_eq!(w.host_count("SELECT count(*) FROM journal"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_and_a_replaced_certificate_are_named() {
    let w = World::start(auto("approved")).await;
    let options = w.pair_phone("phone");
    let pairing = PairingStore::new(&options.data_dir).get(None).unwrap();
    let mut ignore = |_: Event| {};

    // Another certificate than the paired one: refused before anything
    // is sent, and not retried.
    let mut replaced = pairing.clone();
    replaced.cert_sha256[0] ^= 1;
    let mut impostor = Phone::with_pairing(options.clone(), replaced).unwrap();
    let err = impostor.pay(&cny("1"), &mut ignore).await.unwrap_err();
    assert!(
        matches!(
            &err,
            PhoneError::Unreachable {
                attempts: 1,
                last: TransportError::CertificateMismatch(_)
            }
        ),
        "{err}"
    );
    let report = impostor.diagnose().await;
    assert_eq!(report.checks[2].status, Status::Failed, "{report:?}");
    assert!(report.checks[2].detail.starts_with("certificate mismatch"));

    // The terminal revokes the phone's key: its messages are rejected
    // unread.
    w.bed.ecr.ecr.revoke(&pairing.key_identifier).unwrap();
    let mut phone = Phone::open(options).unwrap();
    let err = phone.pay(&cny("1"), &mut ignore).await.unwrap_err();
    assert!(matches!(err, PhoneError::KeyRejected { .. }), "{err}");
    assert!(err.to_string().contains("pair again"), "{err}");
    let report = phone.diagnose().await;
    assert_eq!(report.checks[3].status, Status::Failed, "{report:?}");
    assert_eq!(
        w.host_count("SELECT count(*) FROM journal WHERE kind = 'sale'"),
        0
    );
}

/// Two connected pseudo-terminals made by socat: the phone's end of the
/// cable and the terminal's.
struct PtyPair {
    dir: tempfile::TempDir,
    socat: std::process::Child,
}

impl PtyPair {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("socat.log")).unwrap();
        let pty = |name: &str| format!("pty,raw,echo=0,link={}", dir.path().join(name).display());
        let socat = std::process::Command::new("socat")
            .args(["-d", "-d", &pty("phone"), &pty("terminal")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("socat is needed (scripts/test installs it): {e}"));
        let pair = Self { dir, socat };
        // socat logs this once both ptys exist; a safety net bounds the wait.
        for _ in 0..2000 {
            let log =
                std::fs::read_to_string(pair.dir.path().join("socat.log")).unwrap_or_default();
            if log.contains("starting data transfer loop") {
                return pair;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("socat did not start");
    }

    fn end(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pay_over_a_serial_link() {
    let w = World::start(EcrConfig::default()).await;
    let mut options = w.pair_phone("phone");
    let cable = PtyPair::new();

    // The terminal's end: its ECR service behind nexo's serial server, as
    // `posnet terminal run --serial` runs it; the notifications follow the
    // key the phone's requests are secured with.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let device = cable.end("terminal");
    let ecr = w.bed.ecr.ecr.clone();
    tokio::spawn(async move {
        terminal::ecr::serial::serve_device(ecr, &device, 115_200, async {
            let _ = stopped.await;
        })
        .await
    });

    options.serial = Some((cable.end("phone"), 115_200));
    let mut phone = Phone::open(options).unwrap();
    let report = phone.diagnose().await;
    assert!(report.ok(), "{report:?}");
    assert!(
        report.checks[..3]
            .iter()
            .all(|c| c.status == Status::Skipped)
    );
    assert_eq!(
        report.checks[3].status,
        Status::Ok,
        "the key, over the cable"
    );

    let outcome = pay_when_the_card_is_asked_for(&w, phone).await;
    assert_eq!(outcome.summary().amount.as_deref(), Some("12.50 CNY"));
    let _ = stop.send(());
}
