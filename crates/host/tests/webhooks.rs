//! Webhook delivery over real HTTP on loopback: a receiver checks every
//! signature with its own HMAC-SHA256, sees each merchant's events in
//! order, and gets every event at least once through failures, timeouts,
//! refused connections and a host restart.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use host::outbox::OutboxConfig;
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "whsec-corner-shop-0001";

/// Retries within milliseconds, so that tests wait for events, never for backoff.
fn fast() -> OutboxConfig {
    OutboxConfig {
        batch: 100,
        concurrency: 4,
        request_timeout: Duration::from_millis(300),
        poll_interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(100),
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    event_id: String,
    sequence: i64,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    status: u16,
}

/// The receiver's own check, as a merchant would write it.
fn verifies(secret: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_mac) = header.strip_prefix("v1=") else {
        return false;
    };
    let Ok(mac) = hex::decode(hex_mac) else {
        return false;
    };
    let mut expected = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    expected.update(timestamp.as_bytes());
    expected.update(b".");
    expected.update(body);
    expected.verify_slice(&mac).is_ok()
}

#[derive(Default)]
struct Behaviour {
    /// Requests answered 500 before any is accepted.
    fail: AtomicUsize,
    /// Requests left hanging past the host's timeout before any is accepted.
    hang: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

struct Receiver {
    url: String,
    behaviour: Arc<Behaviour>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(fail: usize, hang: usize) -> Receiver {
        let behaviour = Arc::new(Behaviour {
            fail: AtomicUsize::new(fail),
            hang: AtomicUsize::new(hang),
            seen: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/hooks/posnet", axum::routing::post(receive))
            .with_state(behaviour.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/posnet", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            behaviour,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.behaviour.seen.lock().unwrap().clone()
    }

    fn accepted(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.status == 200)
            .collect()
    }
}

fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

async fn receive(
    State(behaviour): State<Arc<Behaviour>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut seen = Seen {
        event_id: header("x-posnet-event-id"),
        sequence: header("x-posnet-event-sequence").parse().unwrap_or(-1),
        timestamp: header("x-posnet-timestamp"),
        signature: header("x-posnet-signature"),
        body: body.to_vec(),
        status: 200,
    };
    assert_eq!(header("content-type"), "application/json");
    if take(&behaviour.hang) {
        // Far past the host's timeout: it gives up and retries. Recorded
        // now, with status 0, since the answer never reaches the host.
        seen.status = 0;
        behaviour.seen.lock().unwrap().push(seen);
        tokio::time::sleep(Duration::from_secs(2)).await;
        return StatusCode::OK;
    }
    let status = if !verifies(SECRET, &seen.timestamp, &seen.body, &seen.signature) {
        StatusCode::UNAUTHORIZED
    } else if take(&behaviour.fail) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    seen.status = status.as_u16();
    behaviour.seen.lock().unwrap().push(seen);
    status
}

async fn sale(t: &mut TestTerminal, pan: &str, amount: u64) -> iso8583::Message {
    let m = t.sale(pan, amount, None);
    t.send(m).await
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

fn metric(h: &Harness, line: &str) -> bool {
    h.data.metrics.encode().lines().any(|l| l == line)
}

#[tokio::test]
async fn events_arrive_signed_once_and_in_order() {
    let mut h = Harness::start().await;
    let receiver = Receiver::start(0, 0).await;
    h.set_webhook(MERCHANT, &receiver.url, SECRET).await;
    h.serve_all(fast()).await;
    let mut t = h.terminal().await;
    let mut rrns = Vec::new();
    for amount in [1_00, 2_00, 3_00] {
        let r = sale(&mut t, NO_PIN, amount).await;
        assert_eq!(code(&r), "00");
        rrns.push(r.rrn().unwrap().to_string());
    }
    let r = sale(&mut t, BLOCKED, 1_00).await;
    assert_eq!(code(&r), "05", "declines are notified too");
    rrns.push(r.rrn().unwrap().to_string());

    eventually("four deliveries", || receiver.accepted().len() == 4).await;
    let seen = receiver.seen();
    assert_eq!(seen.len(), 4, "no resend without a failure: {seen:?}");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.status, 200, "signature verified by the receiver");
        let body = json(&s.body);
        assert_eq!(body["event_id"], s.event_id.as_str());
        assert_eq!(body["type"], "transaction");
        let txn = &body["transaction"];
        assert_eq!(s.event_id, format!("txn-{}", txn["id"]));
        assert_eq!(txn["rrn"], rrns[i].as_str(), "in the order of the sales");
        assert_eq!(txn["merchant_id"], MERCHANT);
        let pan = if i < 3 { NO_PIN } else { BLOCKED };
        assert_eq!(txn["masked_pan"], iso8583::text::mask_pan(pan).as_str());
        assert!(!String::from_utf8_lossy(&s.body).contains(pan));
        let ts: i64 = s.timestamp.parse().unwrap();
        assert!((ts - now).abs() < 60, "timestamp is the time of sending");
        if i > 0 {
            assert!(s.sequence > seen[i - 1].sequence, "sequence grows");
        }
    }
    assert_eq!(json(&seen[3].body)["transaction"]["response_code"], "05");
    assert_eq!(json(&seen[0].body)["transaction"]["amount"], 100);

    // The signature covers both the body and the timestamp: change either
    // by one byte and the receiver's check fails.
    let s = &seen[0];
    assert!(verifies(SECRET, &s.timestamp, &s.body, &s.signature));
    let mut body = s.body.clone();
    let at = body.iter().position(|&b| b == b'1').unwrap();
    body[at] = b'2';
    assert!(!verifies(SECRET, &s.timestamp, &body, &s.signature));
    let later = (s.timestamp.parse::<i64>().unwrap() + 1).to_string();
    assert!(!verifies(SECRET, &later, &s.body, &s.signature));
    assert!(!verifies(
        "another secret",
        &s.timestamp,
        &s.body,
        &s.signature
    ));

    eventually("marks committed", || {
        h.outbox_rows().iter().all(|r| r.1 == 1 && r.2)
    })
    .await;
    assert!(metric(
        &h,
        "posnet_host_webhook_attempts_total{result=\"delivered\"} 4"
    ));
    h.stop().await;
    h.assert_ledger_consistent();
}

#[tokio::test]
async fn failures_are_retried_and_later_events_wait_for_the_first() {
    let mut h = Harness::start().await;
    let receiver = Receiver::start(3, 0).await;
    h.set_webhook(MERCHANT, &receiver.url, SECRET).await;
    h.serve_all(fast()).await;
    let mut t = h.terminal().await;
    for amount in [1_00, 2_00, 3_00] {
        assert_eq!(code(&sale(&mut t, NO_PIN, amount).await), "00");
    }
    eventually("three events accepted", || receiver.accepted().len() == 3).await;
    let seen: Vec<(String, u16)> = receiver
        .seen()
        .into_iter()
        .map(|s| (s.event_id, s.status))
        .collect();
    let (first, second, third) = (&seen[0].0, &seen[4].0, &seen[5].0);
    assert_eq!(
        seen,
        vec![
            (first.clone(), 500),
            (first.clone(), 500),
            (first.clone(), 500),
            (first.clone(), 200),
            (second.clone(), 200),
            (third.clone(), 200),
        ],
        "the second event leaves only after the first is acknowledged"
    );
    assert!(first < second && second < third);
    eventually("marks committed", || h.outbox_rows().iter().all(|r| r.2)).await;
    let rows = h.outbox_rows();
    assert_eq!(rows[0].1, 4, "attempts recorded");
    assert_eq!(rows[0].3.as_deref(), Some("HTTP 500 Internal Server Error"));
    assert_eq!((rows[1].1, rows[2].1), (1, 1));
    assert!(metric(
        &h,
        "posnet_host_webhook_attempts_total{result=\"failed\"} 3"
    ));
    h.stop().await;
}

#[tokio::test]
async fn events_wait_for_a_webhook_and_survive_refusals_timeouts_and_restarts() {
    let mut h = Harness::start().await;
    h.serve_all(fast()).await;
    let mut t = h.terminal().await;
    assert_eq!(code(&sale(&mut t, NO_PIN, 1_00).await), "00");
    assert_eq!(code(&sale(&mut t, NO_PIN, 2_00).await), "00");
    // No webhook configured: the events stay queued, untouched, through
    // several polls of the worker.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.outbox_rows(),
        vec![
            ("txn-1".to_string(), 0, false, None),
            ("txn-2".to_string(), 0, false, None)
        ]
    );

    // A webhook nobody listens on: refused, retried, recorded.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    h.set_webhook(MERCHANT, &format!("http://{closed}/hooks"), SECRET)
        .await;
    eventually("two refused attempts", || h.outbox_rows()[0].1 >= 2).await;
    let error = h.outbox_rows()[0].3.clone().unwrap();
    assert!(error.contains("refused"), "last_error: {error}");
    let rows = h.outbox_rows();
    assert!(!rows[0].2 && !rows[1].2);
    assert_eq!(rows[1].1, 0, "the second event waits behind the first");

    // Stopped with both undelivered, started again: nothing was lost.
    h.stop().await;
    let receiver = Receiver::start(0, 1).await;
    h.set_webhook(MERCHANT, &receiver.url, SECRET).await;
    h.serve_all(fast()).await;

    // The first request hangs past the timeout; its retry is accepted, and
    // only then does the second event leave.
    eventually("both events accepted", || receiver.accepted().len() == 2).await;
    let seen: Vec<(String, u16)> = receiver
        .seen()
        .into_iter()
        .map(|s| (s.event_id, s.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("txn-1".to_string(), 0),
            ("txn-1".to_string(), 200),
            ("txn-2".to_string(), 200)
        ]
    );
    eventually("marks committed", || h.outbox_rows().iter().all(|r| r.2)).await;
    let rows = h.outbox_rows();
    assert_eq!(rows[0].3.as_deref(), Some("timed out"));
    assert_eq!(rows[1].1, 1);
    h.stop().await;
}
