//! The merchant REST API, `/healthz` and `/metrics` over real HTTP on
//! loopback, after real terminal traffic: authentication, scoping to the
//! key's merchant, filters, paging, settlement reports, event backfill, and
//! the counters the traffic left.

mod common;

use common::*;
use serde_json::Value;

const KEY_A: &str = "key-a-7c1f0e2d9b";
const KEY_B: &str = "key-b-3a5e8c6f10";
const MERCHANT_B: &str = "M00000000000002";
const TERMINAL_B: &str = "T0000002";

/// A host with two merchants and their traffic: merchant A three approved
/// sales and a decline then a balanced settlement; merchant B one sale.
struct Setup {
    h: Harness,
    http: reqwest::Client,
    base: String,
    rrns_a: Vec<String>,
    _terminals: Vec<TestTerminal>,
}

async fn setup() -> Setup {
    let mut h = Harness::start().await;
    h.set_api_key(MERCHANT, KEY_A).await;
    let bundle_b = h.add_merchant_with_terminal(MERCHANT_B, TERMINAL_B).await;
    h.set_api_key(MERCHANT_B, KEY_B).await;
    h.serve_all(host::outbox::OutboxConfig::default()).await;

    let mut a = h.terminal().await;
    let mut rrns_a = Vec::new();
    for (pan, amount, expected) in [
        (NO_PIN, 1_00, "00"),
        (NO_PIN, 2_00, "00"),
        (BLOCKED, 4_00, "05"),
        (NO_PIN, 3_00, "00"),
    ] {
        let m = a.sale(pan, amount, None);
        let r = a.send(m).await;
        assert_eq!(code(&r), expected);
        rrns_a.push(r.rrn().unwrap().to_string());
    }
    let m = a.request(
        "0500",
        0,
        Some(201),
        &[(48, "000000000600003000000000000000"), (49, "156")],
    );
    let r = a.send(m).await;
    assert_eq!(r.get_str(48).unwrap().chars().last(), Some('1'), "balanced");

    let mut b = h.terminal_for(&bundle_b).await;
    let m = b.sale(NO_PIN, 50, None);
    assert_eq!(code(&b.send(m).await), "00");

    let base = h.api_url();
    Setup {
        h,
        http: reqwest::Client::new(),
        base,
        rrns_a,
        _terminals: vec![a, b],
    }
}

impl Setup {
    async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert!(
            !text.contains(NO_PIN) && !text.contains(BLOCKED),
            "no full PAN in any answer"
        );
        (status, serde_json::from_str(&text).unwrap())
    }

    async fn ok(&self, path: &str, key: &str) -> Value {
        let (status, body) = self.get(path, Some(key)).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }
}

fn ids(page: &Value) -> Vec<i64> {
    page["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn merchant_api() {
    let s = setup().await;
    let base = s.base.clone();
    let now = time::OffsetDateTime::now_utc();

    // Authentication.
    for (key, what) in [
        (None, "no key"),
        (Some("key-a-7c1f0e2d9c"), "wrong key"),
        (Some(""), "empty key"),
    ] {
        let (status, body) = s.get("/v1/transactions", key).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let basic = s
        .http
        .get(format!("{}/v1/events", s.base))
        .header("Authorization", format!("Basic {KEY_A}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);
    assert_eq!(basic.headers()["www-authenticate"], "Bearer");

    // Merchant A's transactions, newest first, masked.
    let page = s.ok("/v1/transactions", KEY_A).await;
    let all = ids(&page);
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0] > w[1]), "newest first: {all:?}");
    assert_eq!(page["next_cursor"], Value::Null);
    let txns = page["transactions"].as_array().unwrap();
    let rrns: Vec<&str> = txns
        .iter()
        .rev()
        .map(|t| t["rrn"].as_str().unwrap())
        .collect();
    assert_eq!(rrns, s.rrns_a);
    let newest = &txns[0];
    assert_eq!(newest["kind"], "sale");
    assert_eq!(newest["state"], "approved");
    assert_eq!(newest["approved"], true);
    assert_eq!(newest["amount"], 300);
    assert_eq!(newest["currency"], 156);
    assert_eq!(newest["merchant_id"], MERCHANT);
    assert_eq!(newest["terminal_id"], TERMINAL);
    assert_eq!(newest["masked_pan"], "620000******0013");
    assert_eq!(newest["auth_code"].as_str().unwrap().len(), 6);
    assert_eq!(newest["original_rrn"], Value::Null);
    assert!((newest["at"].as_i64().unwrap() - now.unix_timestamp()).abs() < 60);

    // Scoping: B sees its own sale only, A cannot read it by id.
    let b_page = s.ok("/v1/transactions", KEY_B).await;
    let b_ids = ids(&b_page);
    assert_eq!(b_ids.len(), 1);
    assert_eq!(b_page["transactions"][0]["terminal_id"], TERMINAL_B);
    let (status, body) = s
        .get(&format!("/v1/transactions/{}", b_ids[0]), Some(KEY_A))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let one = s.ok(&format!("/v1/transactions/{}", all[0]), KEY_A).await;
    assert_eq!(one, *newest);
    let filtered = s
        .ok(&format!("/v1/transactions?terminal_id={TERMINAL_B}"), KEY_A)
        .await;
    assert!(ids(&filtered).is_empty());

    // Filters.
    let declined = s.ok("/v1/transactions?state=declined", KEY_A).await;
    assert_eq!(declined["transactions"].as_array().unwrap().len(), 1);
    assert_eq!(declined["transactions"][0]["response_code"], "05");
    assert_eq!(
        declined["transactions"][0]["masked_pan"],
        "620000******0039"
    );
    assert_eq!(
        ids(&s
            .ok(
                &format!("/v1/transactions?terminal_id={TERMINAL}&state=approved"),
                KEY_A
            )
            .await)
        .len(),
        3
    );
    let hour = time::Duration::hours(1);
    let rfc = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let range = |from: &str, to: &str| format!("/v1/transactions?from={from}&to={to}");
    assert_eq!(
        ids(&s
            .ok(&range(&rfc(now - hour), &rfc(now + hour)), KEY_A)
            .await),
        all
    );
    let (past, future) = (
        (now - hour).unix_timestamp().to_string(),
        (now + hour).unix_timestamp().to_string(),
    );
    assert_eq!(ids(&s.ok(&range(&past, &future), KEY_A).await), all);
    assert!(
        ids(&s
            .ok(&format!("/v1/transactions?from={future}"), KEY_A)
            .await)
        .is_empty()
    );
    assert!(ids(&s.ok(&format!("/v1/transactions?to={past}"), KEY_A).await).is_empty());

    // Paging: pages of 3 then 1, no overlap, the same order as one page.
    let first = s.ok("/v1/transactions?limit=3", KEY_A).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let second = s
        .ok(&format!("/v1/transactions?limit=3&cursor={cursor}"), KEY_A)
        .await;
    assert_eq!(second["next_cursor"], Value::Null);
    assert_eq!([ids(&first), ids(&second)].concat(), all);
    let exact = s.ok("/v1/transactions?limit=4", KEY_A).await;
    assert_eq!(exact["next_cursor"], Value::Null, "no empty last page");

    // Malformed parameters.
    for path in [
        "/v1/transactions?limit=0",
        "/v1/transactions?limit=501",
        "/v1/transactions?limit=ten",
        "/v1/transactions?cursor=zzz",
        "/v1/transactions?from=yesterday",
        "/v1/transactions?colour=red",
        "/v1/transactions/abc",
        "/v1/settlements",
        "/v1/settlements?batch=1",
        "/v1/settlements?date=2024-13-01",
        "/v1/events?limit=0",
    ] {
        let (status, body) = s.get(path, Some(KEY_A)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{path}"
        );
    }

    // Settlement report of the day, and by terminal batch.
    let today = now.date().to_string();
    let report = s.ok(&format!("/v1/settlements?date={today}"), KEY_A).await;
    assert_eq!(report["date"], today.as_str());
    let rows = report["settlements"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["terminal_id"], TERMINAL);
    assert_eq!(row["batch"], 1);
    assert_eq!(
        (row["debit_amount"].as_i64(), row["debit_count"].as_i64()),
        (Some(600), Some(3))
    );
    assert_eq!(
        (row["credit_amount"].as_i64(), row["net_amount"].as_i64()),
        (Some(0), Some(600))
    );
    assert_eq!(
        (row["balanced"].as_bool(), row["latest"].as_bool()),
        (Some(true), Some(true))
    );
    assert!(row["closed_at"].is_i64());
    let totals = &report["totals"];
    assert_eq!(
        (
            totals["batches"].as_i64(),
            totals["balanced"].as_i64(),
            totals["net_amount"].as_i64()
        ),
        (Some(1), Some(1), Some(600))
    );
    assert_eq!(report["truncated"], false);
    let by_batch = s
        .ok(
            &format!("/v1/settlements?terminal_id={TERMINAL}&batch=1"),
            KEY_A,
        )
        .await;
    assert_eq!(by_batch["settlements"], report["settlements"]);
    let other_batch = s
        .ok(
            &format!("/v1/settlements?terminal_id={TERMINAL}&batch=2"),
            KEY_A,
        )
        .await;
    assert!(other_batch["settlements"].as_array().unwrap().is_empty());
    let b_report = s.ok(&format!("/v1/settlements?date={today}"), KEY_B).await;
    assert!(b_report["settlements"].as_array().unwrap().is_empty());
    let yesterday = (now - time::Duration::days(1)).date().to_string();
    let old = s
        .ok(&format!("/v1/settlements?date={yesterday}"), KEY_A)
        .await;
    assert!(old["settlements"].as_array().unwrap().is_empty());

    // Event backfill: A's four events in order, then nothing after the last.
    let events = s.ok("/v1/events?after=0", KEY_A).await;
    let list = events["events"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    let mut txn_ids: Vec<i64> = list
        .iter()
        .map(|e| e["payload"]["transaction"]["id"].as_i64().unwrap())
        .collect();
    txn_ids.reverse();
    assert_eq!(txn_ids, all);
    assert_eq!(list[0]["event_id"], format!("txn-{}", all[3]));
    assert_eq!(list[0]["type"], "transaction");
    assert_eq!(
        list[0]["delivered_at"],
        Value::Null,
        "no webhook configured"
    );
    assert_eq!(list[0]["attempts"], 0);
    let sequences: Vec<i64> = list
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(events["next_after"], sequences[3]);
    let page = s
        .ok(&format!("/v1/events?after={}&limit=2", sequences[1]), KEY_A)
        .await;
    let rest: Vec<i64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(rest, sequences[2..]);
    let empty = s
        .ok(&format!("/v1/events?after={}", sequences[3]), KEY_A)
        .await;
    assert!(empty["events"].as_array().unwrap().is_empty());
    assert_eq!(empty["next_after"], sequences[3]);
    let b_events = s.ok("/v1/events", KEY_B).await;
    assert_eq!(b_events["events"].as_array().unwrap().len(), 1);
    assert_eq!(
        b_events["events"][0]["payload"]["transaction"]["merchant_id"],
        MERCHANT_B
    );

    // Health: the five queued events are the backlog.
    let (status, health) = s.get("/healthz", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        health,
        serde_json::json!({ "status": "ok", "database": "ok", "outbox_backlog": 5 })
    );

    // Metrics after the traffic.
    let response = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    for line in [
        "posnet_host_requests_total{kind=\"sale\",code=\"00\"} 4",
        "posnet_host_requests_total{kind=\"sale\",code=\"05\"} 1",
        "posnet_host_requests_total{kind=\"settlement\",code=\"00\"} 1",
        "posnet_host_request_duration_seconds_count{kind=\"sale\"} 5",
        "posnet_host_connections_open 2",
        "posnet_host_requests_in_flight 0",
        "posnet_host_outbox_backlog 5",
        "posnet_host_api_requests_total{route=\"/v1/transactions\",status=\"401\"} 3",
        "posnet_host_api_requests_total{route=\"/healthz\",status=\"200\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let batches = text
        .lines()
        .find_map(|l| l.strip_prefix("posnet_host_commit_batch_size_count "))
        .unwrap();
    assert!(batches.parse::<u64>().unwrap() >= 1);
    assert!(text.ends_with("# EOF\n"));

    // Stopping finishes although the client keeps its connection open.
    let Setup { mut h, http, .. } = s;
    h.stop().await;
    assert!(http.get(format!("{base}/healthz")).send().await.is_err());
    h.assert_ledger_consistent();
}
