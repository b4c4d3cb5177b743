//! BIN routing to a second posnet host in issuer role: forwarded sales with
//! PIN translation, reversals that void upstream, and an upstream timeout
//! answered 91 whose stored reversal reaches the upstream once it is back.

mod common;

use common::*;
use host::routing::RouteConfig;
use ledger::LedgerRead;
use std::time::Duration;

/// Available balance of `pan` at a harness's issuer.
fn balance(h: &Harness, pan: &str) -> u64 {
    let token = h.data.issuer.token(pan);
    let mut reader =
        ledger::SqliteReader::open(h.dir.path().join("host").join(host::runtime::DB_FILE)).unwrap();
    reader
        .balances(host::issuer::account_id("card", &token))
        .unwrap()
        .unwrap()
        .available_to_debit()
}

/// Issuer B, and acquirer A whose APPROVED and NO_PIN card ranges route to B
/// through a fault-injecting proxy.
async fn two_hosts() -> (Harness, Harness, netfault::Proxy) {
    let b = Harness::start().await;
    let proxy = netfault::Proxy::start(b.addr()).await.unwrap();
    let prepared = host::admin::prepare_enrollment(
        &b.data.deployment,
        host::admin::TerminalSpec {
            terminal_id: "U0000001".into(),
            merchant_id: MERCHANT.into(),
            max_amount: 1_000_000,
            offline_floor: 0,
            hosts: vec![proxy.addr.to_string()],
        },
    )
    .unwrap();
    let bundle = b
        .data
        .ledger
        .submit(move |tx| host::admin::enroll(tx, prepared, 0))
        .await
        .unwrap();
    let mut a = Harness::start().await;
    let bundle_path = a.dir.path().join("upstream-bundle.json");
    bundle.write(&bundle_path).unwrap();
    let ktk_path = a.dir.path().join("upstream-ktk.hex");
    b.data.deployment.export_ktk(&ktk_path).unwrap();
    a.host.take().unwrap().stop().await;
    a.data.routes = [APPROVED, NO_PIN]
        .into_iter()
        .map(|pan| RouteConfig {
            bin_prefix: pan.into(),
            bundle: bundle_path.clone(),
            transport_key_file: ktk_path.clone(),
            timeout_ms: 1_000,
        })
        .collect();
    a.serve().await;
    (a, b, proxy)
}

/// Terminals send the card's expiry (field 14); the upstream link needs it.
fn with_expiry(mut m: iso8583::Message) -> iso8583::Message {
    m.set(14, "3012");
    m
}

async fn upstream_saf_drained(a: &Harness) {
    // The link's journal lives under A's data directory.
    for _ in 0..100 {
        let conn = rusqlite::Connection::open(
            a.dir
                .path()
                .join("host")
                .join(format!("upstream-{NO_PIN}"))
                .join("terminal.db"),
        )
        .unwrap();
        let pending: i64 = conn
            .query_row("SELECT count(*) FROM saf", [], |r| r.get(0))
            .unwrap();
        if pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the upstream link did not deliver its stored reversal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_sales_are_authorized_upstream_with_the_pin_translated() {
    let (a, b, _proxy) = two_hosts().await;
    let mut t = a.terminal().await;
    let before = balance(&b, APPROVED);
    let r = {
        let m = with_expiry(t.sale(APPROVED, 2_000, Some("1234")));
        t.send(m).await
    };
    assert_eq!(code(&r), "00");
    assert_eq!(r.auth_code().map(str::len), Some(6));
    assert_eq!(
        balance(&b, APPROVED),
        before - 2_000,
        "charged at the issuer"
    );
    assert_eq!(
        balance(&a, APPROVED),
        100_000,
        "the acquirer's own copy of the card is untouched"
    );
    let r = {
        let m = with_expiry(t.sale(APPROVED, 2_000, Some("9999")));
        t.send(m).await
    };
    assert_eq!(code(&r), "55", "the issuer checked the translated PIN");
    let upstream: Option<String> = a
        .data
        .reader()
        .unwrap()
        .query_row(
            "SELECT upstream FROM journal WHERE response_code = '00' AND kind = 'sale'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(upstream.unwrap().starts_with(APPROVED));
    a.assert_ledger_consistent();
    b.assert_ledger_consistent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_reversal_voids_the_upstream_sale() {
    let (a, b, _proxy) = two_hosts().await;
    let mut t = a.terminal().await;
    let before = balance(&b, NO_PIN);
    let sale = with_expiry(t.sale(NO_PIN, 1_000, None));
    assert_eq!(code(&t.send(sale.clone()).await), "00");
    assert_eq!(balance(&b, NO_PIN), before - 1_000);
    let mut reversal = sale;
    reversal.set_mti(iso8583::Mti::new("0400").unwrap());
    reversal.set(39, "98");
    assert_eq!(code(&t.send(reversal).await), "00");
    assert_eq!(balance(&b, NO_PIN), before, "voided at the issuer");
    a.assert_ledger_consistent();
    b.assert_ledger_consistent();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_timeout_answers_91_and_reverses_upstream() {
    let (a, b, proxy) = two_hosts().await;
    let mut t = a.terminal().await;
    let before = balance(&b, NO_PIN);
    // Warm the link (sign-on) so the cut hits the sale's answer.
    assert_eq!(
        code(&{
            let m = with_expiry(t.sale(NO_PIN, 100, None));
            t.send(m).await
        }),
        "00"
    );
    proxy.cut_next_answer();
    let r = {
        let m = with_expiry(t.sale(NO_PIN, 700, None));
        t.send(m).await
    };
    assert_eq!(code(&r), "91");
    upstream_saf_drained(&a).await;
    assert_eq!(
        balance(&b, NO_PIN),
        before - 100,
        "the issuer's charge of 7.00 was reversed"
    );
    let declined: i64 = a
        .data
        .reader()
        .unwrap()
        .query_row(
            "SELECT count(*) FROM journal WHERE response_code = '91'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(declined, 1);
    a.assert_ledger_consistent();
    b.assert_ledger_consistent();
}
