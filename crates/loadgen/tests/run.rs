//! A load run against a host on loopback, checked against the host's books;
//! the mix parser under hostile input.

use host::runtime::start;
use loadgen::{FleetSpec, LoadConfig, Mix, Outcome, audit, enroll_fleet};
use proptest::prelude::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_run_agrees_with_the_books() {
    let (dir, data) = testbed::host_data();
    let options = testbed::serve_options();
    let running = start(&data, &options).await.unwrap();
    let mut spec = FleetSpec::new(3, running.addr.to_string());
    spec.cards = 4;
    // Small balances and limits so that some sales are declined (51, 61).
    spec.balance = 40_000;
    spec.max_amount = 9_000;
    let fleet = enroll_fleet(&data, &spec).await.unwrap();
    let terminals = fleet.terminals(data.deployment.ktk().expose()).unwrap();

    let mut config = LoadConfig::new(running.addr, Duration::from_secs(30));
    config.max_requests = 60;
    config.in_flight = 4;
    config.mix = "sale=6,refund=1,reversal=1,balance=1".parse().unwrap();
    config.min_amount = 100;
    config.max_amount = 10_000;
    config.keep_records = true;
    config.seed = 42;
    let report = loadgen::run(&config, terminals, None).await.unwrap();

    assert_eq!(
        report.records.len(),
        180,
        "60 requests from each of 3 terminals"
    );
    assert_eq!(report.unknowns, 0, "nothing lost on a healthy host");
    assert_eq!(
        report.stats.total().with_code("A0"),
        0,
        "pipelined requests keep their KSN order to the host's committer"
    );
    assert_eq!(report.unresolved, 0);
    let sales = report.stats.kind("sale").unwrap();
    assert!(sales.with_code("00") > 0, "{:?}", sales.summary());
    assert!(
        sales.with_code("61") + sales.with_code("51") > 0,
        "limits and balances decline some: {:?}",
        sales.summary()
    );
    for op in ["refund", "reversal", "balance"] {
        assert!(
            report.stats.kind(op).is_some_and(|k| k.with_code("00") > 0),
            "{op} approved at least once"
        );
    }
    let answered = report
        .records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Answered { .. }))
        .count() as u64;
    assert_eq!(report.stats.total().count() - 3, answered, "3 sign-ons");
    running.stop().await;
    data.ledger.shutdown().await;

    let books = audit(
        &dir.path().join("host").join(host::runtime::DB_FILE),
        &report.records,
        &fleet.cards,
        spec.balance,
        &data.issuer,
    )
    .unwrap();
    assert!(books.is_clean(), "{:#?}", books.problems);
    assert_eq!((books.records, books.cards), (180, 4));
    assert_eq!(books.journal_rows, 180);

    // The audit sees books that disagree: a lost webhook event, an
    // approval journaled under another RRN, a journal row nobody asked for.
    let db = dir.path().join("host").join(host::runtime::DB_FILE);
    let tampered = dir.path().join("tampered.db");
    for (change, expected) in [
        (
            "DELETE FROM outbox WHERE id = (SELECT min(id) FROM outbox)",
            "outbox",
        ),
        (
            "UPDATE journal SET rrn = '999999999999' WHERE id = (SELECT min(id) FROM journal WHERE kind = 'sale' AND response_code = '00')",
            "RRN",
        ),
        (
            "UPDATE journal SET stan = stan + 500000 WHERE id = (SELECT max(id) FROM journal WHERE kind = 'balance')",
            "no terminal recorded",
        ),
    ] {
        let _ = std::fs::remove_file(&tampered);
        let conn = ledger::rusqlite::Connection::open(&db).unwrap();
        conn.execute("VACUUM INTO ?1", [tampered.to_str().unwrap()])
            .unwrap();
        drop(conn);
        let conn = ledger::rusqlite::Connection::open(&tampered).unwrap();
        assert_eq!(conn.execute(change, []).unwrap(), 1, "{change}");
        drop(conn);
        let found = audit(
            &tampered,
            &report.records,
            &fleet.cards,
            spec.balance,
            &data.issuer,
        )
        .unwrap();
        assert!(
            found.problems.iter().any(|p| p.contains(expected)),
            "{change}: {:#?}",
            found.problems
        );
    }
}

#[tokio::test]
async fn only_loopback_is_a_target() {
    let config = LoadConfig::new("192.0.2.1:5800".parse().unwrap(), Duration::from_secs(1));
    let err = loadgen::run(&config, Vec::new(), None).await.unwrap_err();
    assert!(matches!(err, loadgen::LoadError::NotLoopback(_)), "{err}");
}

#[test]
fn mixes_read_and_reject() {
    let mix: Mix = "sale=90, refund=4,reversal=3,balance=3".parse().unwrap();
    assert_eq!(
        (mix.sale, mix.refund, mix.reversal, mix.balance),
        (90, 4, 3, 3)
    );
    assert_eq!(mix.to_string().parse::<Mix>().unwrap(), mix);
    for bad in [
        "",
        "sale=0",
        "sale",
        "void=1",
        "sale=-1",
        "sale=99999999999",
    ] {
        assert!(bad.parse::<Mix>().is_err(), "{bad:?}");
    }
    // Draws follow the weights.
    let mut rng = fastrand::Rng::with_seed(3);
    let mix: Mix = "sale=3,balance=1".parse().unwrap();
    let sales = (0..4_000)
        .filter(|_| mix.pick(&mut rng) == loadgen::Op::Sale)
        .count();
    assert!((2_800..3_200).contains(&sales), "{sales}");
}

proptest! {
    #[test]
    fn the_mix_parser_never_panics(text in "\\PC{0,64}") {
        let _ = text.parse::<Mix>();
    }

    #[test]
    fn a_read_mix_prints_back(sale in 0u32..1000, refund in 0u32..1000, reversal in 0u32..1000, balance in 1u32..1000) {
        let text = format!("balance={balance},reversal={reversal},refund={refund},sale={sale}");
        let mix: Mix = text.parse().unwrap();
        prop_assert_eq!((mix.sale, mix.refund, mix.reversal, mix.balance), (sale, refund, reversal, balance));
    }
}
