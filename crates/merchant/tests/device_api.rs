//! The device API over real HTTP and a real SQLite file: a registered
//! device lists the open orders and takes one; its report of an approval
//! is not believed until the host's own record of that payment (same
//! terminal, amount, batch and trace number, approved) is here; a forged
//! or mismatched report leaves the order unpaid; a payment never reported
//! is released by the owner only while the host has no sale it could be;
//! a revoked or unknown token is refused; CORS answers the configured app
//! origin only.

mod modules_common;

use merchant::modules::catalog;
use merchant::modules::devices;
use merchant::modules::orders::{self, Kind, PaymentStatus, Status};
use merchant::store::unix_now;
use merchant::users::Role;
use modules_common::{APP_ORIGIN, Office};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Api<'a> {
    office: &'a Office,
    token: String,
}

impl Api<'_> {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .office
            .client
            .get(self.office.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .office
            .client
            .post(self.office.url(path))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }
}

/// A shop sale of one mug (35.00 CNY, demonstration catalog); its id.
fn sale(office: &Office) -> i64 {
    office
        .store()
        .write(|tx| {
            let item = catalog::by_code(tx, "SKU-MUG-01")?.unwrap();
            let order = orders::create(tx, Kind::Retail, "carl", unix_now())?;
            orders::add_item(tx, order, item.id, 1, "carl", unix_now(), "2026-01-01")?;
            Ok::<_, merchant::modules::SalesError>(order)
        })
        .unwrap()
}

/// The host's record of an approved sale on T0000001, as its webhook
/// brings it.
fn host_sale(office: &Office, id: i64, amount: i64, stan: i64) {
    host_event(office, id, "sale", amount, stan, None);
}

/// The host's record of transaction `id` of `kind` (`sale`, `reversal`
/// of the sale whose RRN is `original`).
fn host_event(office: &Office, id: i64, kind: &str, amount: i64, stan: i64, original: Option<i64>) {
    let body = json!({ "event_id": format!("txn-{id}"), "type": "transaction", "transaction": {
        "id": id, "kind": kind, "state": "approved", "approved": true, "response_code": "00",
        "amount": amount, "currency": 156, "merchant_id": "M00000000000001",
        "terminal_id": "T0000001", "stan": stan, "batch": 1, "rrn": format!("{id:012}"),
        "auth_code": "123456", "masked_pan": "620000******0005",
        "original_rrn": original.map(|o| format!("{o:012}")), "at": unix_now(),
    }})
    .to_string();
    office
        .store()
        .write(|tx| {
            merchant::events::record_event(tx, &format!("txn-{id}"), None, &body, unix_now())
        })
        .unwrap();
}

fn approval(stan: u32) -> Value {
    json!({
        "outcome": "approved", "service_id": "0000000001",
        "poi_transaction_id": format!("000001.{stan:06}"), "acquirer_terminal_id": "T0000001",
        "approval_code": "123456", "masked_pan": "620000******0005",
    })
}

#[tokio::test]
async fn a_device_charges_an_open_order_paid_only_when_the_host_confirms() {
    let office = Office::start().await;
    office.seed();
    let owner = office.session("olga", Role::Owner);
    let (device, token) = office
        .store()
        .write(|tx| devices::add(tx, "counter phone", "olga", unix_now()))
        .unwrap();
    let api = Api {
        office: &office,
        token: token.to_string(),
    };
    let order = sale(&office);
    let mug_stock = office.stock("SKU-MUG-01");

    let (status, listed) = api.get("/api/v1/open-orders").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let first = &listed["orders"][0];
    assert_eq!(first["id"], order);
    assert_eq!(first["reference"], format!("ORDER-{order}"));
    assert_eq!(first["outstanding"], 3_500);
    assert_eq!(first["currency_code"], "CNY");

    // Taken: the stock is held, the order leaves the list, a second take
    // is refused.
    let path = format!("/api/v1/orders/{order}/payments");
    let (status, taken) = api.post(&path, json!({ "terminal": "T0000001" })).await;
    assert_eq!(status, StatusCode::CREATED, "{taken}");
    assert_eq!(taken["amount"], 3_500);
    assert_eq!(taken["reference"], format!("ORDER-{order}"));
    let payment = taken["payment"].as_i64().unwrap();
    let (status, _) = api.post(&path, json!({ "terminal": "T0000001" })).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(api.get("/api/v1/open-orders").await.1["orders"], json!([]));

    // A report of an approval the host has no record of: not paid.
    let report = format!("{path}/{payment}");
    let (status, answer) = api.post(&report, approval(7)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "awaiting_confirmation");
    assert_eq!(answer["order_status"], "open");
    let page = office.page(&owner, &format!("/orders/{order}")).await;
    assert!(page.contains("awaiting confirmation"), "{page}");
    assert!(page.contains("Check with the host"), "{page}");

    // The host's record of another amount, or of another trace number,
    // confirms nothing.
    host_sale(&office, 1, 999, 7);
    host_sale(&office, 2, 3_500, 8);
    let (_, answer) = api.post(&report, approval(7)).await;
    assert_eq!(answer["status"], "awaiting_confirmation");
    assert_eq!(office.order(order).order.status, Status::Open);

    // The host's record of this payment: "Check with the host" finds it:
    // paid, stock taken, linked.
    host_sale(&office, 3, 3_500, 7);
    assert_eq!(office.order(order).order.status, Status::Open);
    let check = office
        .submit(&owner, &format!("/payments/{payment}/check"), &[])
        .await;
    assert!(check.ends_with(&format!("/orders/{order}")), "{check}");
    let d = office.order(order);
    assert_eq!(d.order.status, Status::Paid);
    let paid = &d.payments[0];
    assert_eq!(paid.device, Some(device.id));
    assert_eq!(paid.started_by, device.actor());
    assert_eq!(
        paid.host_transaction_id,
        Some(office.count("SELECT id FROM transactions WHERE host_id = 3"))
    );
    assert_eq!(office.stock("SKU-MUG-01"), mug_stock - 1);
    // That host transaction pays nothing else.
    let other = sale(&office);
    let (_, taken) = api
        .post(
            &format!("/api/v1/orders/{other}/payments"),
            json!({ "terminal": "T0000001" }),
        )
        .await;
    let (_, answer) = api
        .post(
            &format!("/api/v1/orders/{other}/payments/{}", taken["payment"]),
            approval(7),
        )
        .await;
    assert_eq!(answer["status"], "awaiting_confirmation");
    assert_eq!(office.order(other).order.status, Status::Open);

    // A webhook that comes after the report: the device's next list of
    // open orders confirms the payment.
    let third = sale(&office);
    let (_, taken) = api
        .post(
            &format!("/api/v1/orders/{third}/payments"),
            json!({ "terminal": "T0000001" }),
        )
        .await;
    let (_, answer) = api
        .post(
            &format!("/api/v1/orders/{third}/payments/{}", taken["payment"]),
            approval(10),
        )
        .await;
    assert_eq!(answer["status"], "awaiting_confirmation");
    host_sale(&office, 4, 3_500, 10);
    assert_eq!(office.order(third).order.status, Status::Open);
    api.get("/api/v1/open-orders").await;
    assert_eq!(office.order(third).order.status, Status::Paid);

    // Every call is in the audit log under the device's name.
    let audited = office.count(&format!(
        "SELECT count(*) FROM audit_log WHERE actor = 'device:{}' AND action LIKE 'api.%'",
        device.id
    ));
    assert_eq!(audited, 7);

    // A full card number is never taken.
    let mut leaky = approval(9);
    leaky["masked_pan"] = "6200000000000005".into();
    let (status, _) = api.post(&report, leaky).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Revoked: refused.
    office
        .store()
        .write(|tx| devices::revoke(tx, device.id, "olga", unix_now()))
        .unwrap();
    let (status, answer) = api.get("/api/v1/open-orders").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let unknown = Api {
        office: &office,
        token: "0".repeat(64),
    };
    assert_eq!(
        unknown.get("/api/v1/open-orders").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_declined_report_or_the_owner_releases_the_order_and_cors_names_the_app_origin_only() {
    let office = Office::start().await;
    office.seed();
    let (_, token) = office
        .store()
        .write(|tx| devices::add(tx, "counter phone", "olga", unix_now()))
        .unwrap();
    let api = Api {
        office: &office,
        token: token.to_string(),
    };
    let order = sale(&office);
    let path = format!("/api/v1/orders/{order}/payments");
    let (_, taken) = api.post(&path, json!({ "terminal": "T0000001" })).await;
    let (status, answer) = api
        .post(
            &format!("{path}/{}", taken["payment"]),
            json!({ "outcome": "declined", "reason": "Insufficient funds (Refusal, response code 51)" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["status"], "declined");
    assert_eq!(office.order(order).order.status, Status::Open);
    assert_eq!(
        api.get("/api/v1/open-orders").await.1["orders"][0]["id"],
        order
    );

    // Taken and never reported (the phone was closed): the owner releases
    // it, but only while the host has no unclaimed sale it could be.
    let owner = office.session("olga", Role::Owner);
    let (_, taken) = api.post(&path, json!({ "terminal": "T0000001" })).await;
    let release = format!("/payments/{}/release", taken["payment"]);
    assert_eq!(api.get("/api/v1/open-orders").await.1["orders"], json!([]));
    host_sale(&office, 5, 3_500, 11);
    let refused = office
        .refused(&owner, &release, &[], StatusCode::BAD_REQUEST)
        .await;
    assert!(refused.contains("have the phone report it"), "{refused}");
    // That sale reversed at the host: nothing the payment could be.
    host_event(&office, 6, "reversal", 3_500, 12, Some(5));
    office.submit(&owner, &release, &[]).await;
    let released = office.order(order).payments.pop().unwrap();
    assert_eq!(released.status, PaymentStatus::Failed);
    assert!(
        released
            .reason
            .as_deref()
            .unwrap()
            .starts_with("released by olga"),
        "{:?}",
        released.reason
    );
    assert_eq!(
        api.get("/api/v1/open-orders").await.1["orders"][0]["id"],
        order,
        "payable again"
    );

    let preflight = |origin: &'static str| {
        office
            .client
            .request(reqwest::Method::OPTIONS, office.url("/api/v1/open-orders"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
    };
    let allowed = preflight(APP_ORIGIN).await.unwrap();
    assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
    assert_eq!(allowed.headers()["access-control-allow-origin"], APP_ORIGIN);
    assert!(
        allowed.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // A simple request from elsewhere gets its answer without the header,
    // which the browser then keeps from the page.
    let r = office
        .client
        .get(office.url("/api/v1/open-orders"))
        .header("Origin", "https://evil.example")
        .bearer_auth(token.as_str())
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}
