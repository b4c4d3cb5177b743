//! The back office against a real posnet host on loopback: the host's
//! webhook worker delivers to the receiver, a test terminal makes
//! transactions over mutual TLS, backfill and reconciliation use the host's
//! REST API.

#[path = "../../host/tests/common/mod.rs"]
mod common;

use common::*;
use merchant::host_api::HostApi;
use merchant::server::{Options, Running};
use merchant::store::Store;
use merchant::users::PasswordCost;
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "whsec-corner-shop-0123456789abcdef";
const API_KEY: &str = "key-corner-shop-0123456789";

fn fast() -> host::outbox::OutboxConfig {
    host::outbox::OutboxConfig {
        batch: 100,
        concurrency: 4,
        request_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(100),
    }
}

/// A host with its API and webhook worker running, and an API key.
async fn host() -> Harness {
    let mut h = Harness::start().await;
    h.serve_all(fast()).await;
    h.set_api_key(MERCHANT, API_KEY).await;
    h
}

/// A back office on loopback whose start-up backfill has ended.
async fn back_office(h: &Harness, dir: &std::path::Path) -> Running {
    let mut running = merchant::server::start(Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        host_api: Some(HostApi::new(&h.api_url(), pki::Secret::new(API_KEY.into())).unwrap()),
        webhook_secret: pki::Secret::new(SECRET.into()),
        merchant_name: "Corner Shop".into(),
        password_cost: PasswordCost {
            m_kib: 64,
            t: 1,
            p: 1,
        },
        modules: Vec::new(),
        app_origins: Vec::new(),
    })
    .await
    .unwrap();
    running.backfill_done().await;
    running
}

fn webhook_url(running: &Running) -> String {
    format!("http://{}/webhooks/host", running.addr)
}

/// A back office ([`back_office`]) that the host's webhook is pointed at.
async fn back_office_with_webhook(h: &Harness, dir: &std::path::Path) -> Running {
    let running = back_office(h, dir).await;
    h.set_webhook(MERCHANT, &webhook_url(&running), SECRET)
        .await;
    running
}

fn count(store: &Store, sql: &str) -> i64 {
    store
        .read(|c| Ok(c.query_row(sql, [], |r| r.get(0))?))
        .unwrap()
}

/// `(host_id, status, source)` of every transaction, by host id.
fn transactions(store: &Store) -> Vec<(i64, String, String)> {
    store
        .read(|c| {
            let mut s =
                c.prepare("SELECT host_id, status, source FROM transactions ORDER BY host_id")?;
            Ok(s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?)
        })
        .unwrap()
}

async fn sale(t: &mut TestTerminal, amount: u64) -> iso8583::Message {
    let m = t.sale(NO_PIN, amount, None);
    t.send(m).await
}

async fn void(t: &mut TestTerminal, amount: u64, stan: u32) -> iso8583::Message {
    let original = format!("{:06}{:06}", t.batch, stan);
    let amount = format!("{amount:012}");
    let m = t.request(
        "0200",
        23,
        None,
        &[
            (2, NO_PIN),
            (3, "200000"),
            (4, &amount),
            (25, "00"),
            (49, "156"),
            (61, &original),
        ],
    );
    t.send(m).await
}

#[tokio::test]
async fn host_webhooks_are_recorded_once_and_forgeries_replays_and_stale_requests_refused() {
    let mut h = host().await;
    let dir = tempfile::tempdir().unwrap();
    let running = back_office_with_webhook(&h, dir.path()).await;
    let store = running.store.clone();

    let mut t = h.terminal().await;
    let first = t.sale(NO_PIN, 1_250, None);
    let first_stan = first.stan().unwrap().unwrap();
    assert_eq!(code(&t.send(first).await), "00");
    assert_eq!(code(&sale(&mut t, 300).await), "00");
    let declined = t.sale(BLOCKED, 100, None);
    assert_eq!(code(&t.send(declined).await), "05");
    assert_eq!(code(&void(&mut t, 1_250, first_stan).await), "00");

    eventually("four events recorded", || {
        count(&store, "SELECT count(*) FROM events") == 4
    })
    .await;
    eventually("the host marks them delivered", || {
        h.outbox_rows().iter().all(|r| r.2)
    })
    .await;
    // Each accepted on the first attempt: the receiver verified every signature.
    assert!(
        h.outbox_rows().iter().all(|r| r.1 == 1),
        "{:?}",
        h.outbox_rows()
    );
    let recorded = transactions(&store);
    assert_eq!(
        recorded,
        vec![
            (1, "voided".to_string(), "txn-1".to_string()),
            (2, "approved".into(), "txn-2".into()),
            (3, "declined".into(), "txn-3".into()),
            (4, "approved".into(), "txn-4".into()),
        ]
    );
    let history: Vec<String> = store
        .read(|c| {
            let mut s = c.prepare(
                "SELECT s.status || ' from ' || s.source FROM transaction_status s
                 JOIN transactions t ON t.id = s.transaction_id WHERE t.host_id = 1 ORDER BY s.id",
            )?;
            Ok(s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)
        })
        .unwrap();
    assert_eq!(history, ["approved from txn-1", "voided from txn-4"]);
    let (masked, four): (String, String) = store
        .read(|c| {
            Ok(c.query_row(
                "SELECT masked_pan, last_four FROM transactions WHERE host_id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .unwrap();
    assert_eq!(
        (masked.as_str(), four.as_str()),
        ("620000******0013", "0013")
    );

    // The host's own body, posted again: a replay within the window is
    // answered 2xx and records nothing.
    let payload: String = h
        .data
        .reader()
        .unwrap()
        .query_row(
            "SELECT payload FROM outbox WHERE event_id = 'txn-2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let client = reqwest::Client::new();
    let post = |timestamp: i64, secret: &str, body: &str| {
        client
            .post(webhook_url(&running))
            .header("Content-Type", "application/json")
            .header("X-Posnet-Event-Id", "txn-2")
            .header("X-Posnet-Event-Sequence", "2")
            .header("X-Posnet-Timestamp", timestamp.to_string())
            .header(
                "X-Posnet-Signature",
                host::outbox::signature(secret.as_bytes(), timestamp, body.as_bytes()),
            )
            .body(body.to_string())
            .send()
    };
    let now = merchant::store::unix_now();
    let replay = post(now, SECRET, &payload).await.unwrap();
    assert_eq!(replay.status(), 200);
    let answer: serde_json::Value = replay.json().await.unwrap();
    assert_eq!(answer["duplicate"], true);
    // Signed with another secret; signed long ago; a body changed after signing.
    assert_eq!(
        post(now, "whsec-someone-else-0123456789abcdef", &payload)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(now - 3_600, SECRET, &payload).await.unwrap().status(),
        401
    );
    assert_eq!(
        post(now + 3_600, SECRET, &payload).await.unwrap().status(),
        401
    );
    let forged = client
        .post(webhook_url(&running))
        .header("X-Posnet-Event-Id", "txn-2")
        .header("X-Posnet-Timestamp", now.to_string())
        .header(
            "X-Posnet-Signature",
            host::outbox::signature(SECRET.as_bytes(), now, payload.as_bytes()),
        )
        .body(payload.replace("\"amount\":300", "\"amount\":30000"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert_eq!(count(&store, "SELECT count(*) FROM events"), 4);
    assert_eq!(count(&store, "SELECT count(*) FROM transactions"), 4);
    assert_eq!(count(&store, "SELECT count(*) FROM transaction_status"), 5);

    running.stop().await;
    h.stop().await;
}

#[tokio::test]
async fn backfill_catches_up_after_downtime_and_webhooks_then_record_nothing_twice() {
    let mut h = host().await;
    let mut t = h.terminal().await;
    let first = t.sale(NO_PIN, 1_000, None);
    let first_stan = first.stan().unwrap().unwrap();
    assert_eq!(code(&t.send(first).await), "00");
    assert_eq!(code(&sale(&mut t, 200).await), "00");
    assert_eq!(code(&void(&mut t, 1_000, first_stan).await), "00");

    // The back office starts after all this: it backfills at start.
    let dir = tempfile::tempdir().unwrap();
    let running = back_office(&h, dir.path()).await;
    let store = running.store.clone();
    assert_eq!(
        transactions(&store),
        vec![
            (1, "voided".to_string(), "backfill".to_string()),
            (2, "approved".into(), "backfill".into()),
            (3, "approved".into(), "backfill".into()),
        ]
    );
    assert_eq!(count(&store, "SELECT count(*) FROM events"), 0);

    // The webhook is pointed here now: the host delivers its queue, oldest
    // first — the sale's own event says "approved", older than what the
    // backfill saw, and changes nothing.
    h.set_webhook(MERCHANT, &webhook_url(&running), SECRET)
        .await;
    eventually("queued events delivered", || {
        count(&store, "SELECT count(*) FROM events") == 3
    })
    .await;
    eventually("marked delivered", || h.outbox_rows().iter().all(|r| r.2)).await;
    assert_eq!(transactions(&store)[0].1, "voided");
    assert_eq!(count(&store, "SELECT count(*) FROM transactions"), 3);
    assert_eq!(
        count(&store, "SELECT count(*) FROM transaction_status"),
        3,
        "no status recorded twice"
    );
    assert_eq!(
        count(&store, "SELECT count(*) FROM events WHERE applied = 1"),
        3
    );

    // Down again: a sale happens, the receiver is not there; a backfill
    // from the command line's code path gets it.
    running.stop().await;
    assert_eq!(code(&sale(&mut t, 700).await), "00");
    let store = Arc::new(Store::open(dir.path(), &[]).unwrap());
    let api = HostApi::new(&h.api_url(), pki::Secret::new(API_KEY.into())).unwrap();
    let report = merchant::backfill::backfill(&store, &api, "cli")
        .await
        .unwrap();
    assert_eq!((report.new, report.updated), (1, 0), "{report:?}");
    assert!(
        report.from.is_some(),
        "starts near the newest recorded transaction"
    );
    let again = merchant::backfill::backfill(&store, &api, "cli")
        .await
        .unwrap();
    assert_eq!((again.new, again.updated), (0, 0), "idempotent");
    assert_eq!(count(&store, "SELECT count(*) FROM transactions"), 4);
    let audit = store.read(merchant::audit::verify).unwrap();
    assert_eq!(
        (audit.rows, audit.broken),
        (2, None),
        "each backfill that changed something is audited"
    );
    h.stop().await;
}

#[tokio::test]
async fn the_day_before_is_reconciled_once_by_the_daily_run() {
    let h = host().await;
    let dir = tempfile::tempdir().unwrap();
    let running = back_office_with_webhook(&h, dir.path()).await;
    let store = running.store.clone();
    let mut t = h.terminal().await;
    assert_eq!(code(&sale(&mut t, 700).await), "00");
    eventually("the sale recorded", || {
        count(&store, "SELECT count(*) FROM events") == 1
    })
    .await;
    let api = HostApi::new(&h.api_url(), pki::Secret::new(API_KEY.into())).unwrap();
    let tomorrow = merchant::store::unix_now() + 86_400;
    let today = merchant::reports::utc_date(merchant::store::unix_now());

    let done = merchant::reconcile::reconcile_due(&store, &api, tomorrow)
        .await
        .unwrap()
        .expect("today is reconciled once it is the day before");
    assert_eq!(done.date, today);
    assert_eq!(done.actor, merchant::reconcile::DAILY_ACTOR);
    assert_eq!((done.host_count, done.local_count, done.matched), (1, 1, 1));
    assert!(done.differences.is_empty(), "{:?}", done.differences);
    assert!(
        merchant::reconcile::reconcile_due(&store, &api, tomorrow)
            .await
            .unwrap()
            .is_none(),
        "once a day"
    );
    running.stop().await;
}

#[tokio::test]
async fn reconciliation_lists_every_difference_with_the_host() {
    let mut h = host().await;
    let dir = tempfile::tempdir().unwrap();
    let running = back_office_with_webhook(&h, dir.path()).await;
    let store = running.store.clone();
    let mut t = h.terminal().await;
    for amount in [1_000, 500, 250] {
        assert_eq!(code(&sale(&mut t, amount).await), "00");
    }
    let settle = t.request(
        "0500",
        0,
        Some(201),
        &[(48, "000000001750003000000000000000"), (49, "156")],
    );
    let settled = t.send(settle).await;
    assert_eq!(code(&settled), "00");
    eventually("three events recorded", || {
        count(&store, "SELECT count(*) FROM events") == 3
    })
    .await;
    let api = HostApi::new(&h.api_url(), pki::Secret::new(API_KEY.into())).unwrap();
    let today = merchant::reports::utc_date(merchant::store::unix_now());

    let clean = merchant::reconcile::reconcile(&store, &api, &today, "alice")
        .await
        .unwrap();
    assert_eq!(
        (
            clean.host_count,
            clean.local_count,
            clean.matched,
            clean.batches
        ),
        (3, 3, 3, 1)
    );
    assert!(clean.differences.is_empty(), "{:?}", clean.differences);

    // Differences introduced here, as a broken or tampered file would have them.
    store
        .read(|c| {
            c.execute("UPDATE transactions SET amount = 1001 WHERE host_id = 1", [])?;
            c.execute("UPDATE transactions SET status = 'voided' WHERE host_id = 2", [])?;
            c.execute("DELETE FROM transaction_status WHERE transaction_id = (SELECT id FROM transactions WHERE host_id = 3)", [])?;
            c.execute("DELETE FROM transactions WHERE host_id = 3", [])?;
            c.execute(
                "INSERT INTO transactions (host_id, kind, status, status_order, approved, amount, currency, merchant_id,
                   terminal_id, stan, batch, rrn, method, at, recorded_at, source)
                 VALUES (99, 'sale', 'approved', 99, 1, 4200, 156, 'M00000000000001', 'T0000001', 99, 1,
                   '000000000099', 'card', strftime('%s','now'), strftime('%s','now'), 'test')",
                [],
            )?;
            Ok(())
        })
        .unwrap();
    let found = merchant::reconcile::reconcile(&store, &api, &today, "alice")
        .await
        .unwrap();
    let kinds: Vec<(&str, Option<i64>)> = found
        .differences
        .iter()
        .map(|d| (d.kind.name(), d.host_id))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("amount", Some(1)),
            ("status", Some(2)),
            ("missing_here", Some(3)),
            ("missing_at_host", Some(99)),
            ("batch", None),
        ]
    );
    let batch = found.differences.last().unwrap();
    assert_eq!(batch.host.as_deref(), Some("debits 1750 x3, credits 0 x0"));
    assert_eq!(batch.here.as_deref(), Some("debits 5201 x2, credits 0 x0"));
    // Stored with its items, and audited.
    let loaded = store
        .read(|c| merchant::reconcile::load(c, found.id))
        .unwrap()
        .unwrap();
    assert_eq!(loaded, found);
    let actions: Vec<String> = store
        .read(|c| {
            Ok(merchant::audit::page(c, None, 10)?
                .into_iter()
                .map(|r| r.action)
                .collect())
        })
        .unwrap();
    assert_eq!(actions, ["reconciliation.run", "reconciliation.run"]);
    running.stop().await;
    h.stop().await;
}
