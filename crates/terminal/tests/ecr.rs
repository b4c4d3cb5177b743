//! The terminal's nexo ECR interface end to end: real TLS on loopback with
//! the terminal's own certificate pinned by its fingerprint, secured
//! messages under pairing keys, real SQLite files, and a real posnet host
//! over mutual TLS behind the terminal.

use nexo::inbound::{Security, parse_request, parse_response};
use nexo::message::{RequestBody, ResponseBody, SaleToPoiResponse};
use nexo::pairing::Pairing;
use nexo::wire::{ErrorCondition, EventToNotify, ResultType};
use paycrypto::nexo::NexoKey;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use terminal::card::test_card_named;
use terminal::ecr::server::ServerOptions;
use terminal::ecr::{EcrConfig, Link};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use testbed::TID;

/// A phone's or cash register's view of the terminal.
struct Client {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    key: NexoKey,
    pairing: Pairing,
}

impl Client {
    fn new(addr: SocketAddr, pairing: Pairing) -> Self {
        Client {
            addr,
            tls: phone::pin::client_config(pairing.cert_sha256).unwrap(),
            key: pairing.key().unwrap(),
            pairing,
        }
    }

    async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// POSTs `body` to `path` as Adyen's library does (chunked, with an
    /// `X-API-Key`); the status and the body of the answer.
    async fn post_raw(&self, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut tls = self.connect().await;
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX-API-Key: ignored\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        for chunk in body.chunks(1000) {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        // A server refusing a large body may close before reading it all.
        let _ = tls.write_all(&request).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(120), tls.read_to_end(&mut answer))
            .await
            .expect("the terminal answers");
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP answer");
        let head = String::from_utf8_lossy(&answer[..split]).to_string();
        let status = head[9..12].parse().unwrap();
        (status, answer[split + 4..].to_vec())
    }

    /// Sends a request secured under the pairing's key; the answer, opened.
    async fn send(&self, request: &Value) -> SaleToPoiResponse {
        let sealed = paycrypto::nexo::encrypt(&self.key, request.to_string().as_bytes()).unwrap();
        let (status, body) = self.post_raw("/nexo/", sealed.as_bytes()).await;
        assert_eq!(status, 200);
        parse_response(&body, Security::Required(&self.key))
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)))
            .message
    }

    /// Sends bytes as they are; the answer's bytes.
    async fn send_bytes(&self, body: &[u8]) -> Vec<u8> {
        let (status, body) = self.post_raw("/nexo", body).await;
        assert_eq!(status, 200);
        body
    }
}

fn header(category: &str, service_id: &str) -> Value {
    json!({
        "ProtocolVersion": "3.0",
        "MessageClass": "Service",
        "MessageCategory": category,
        "MessageType": "Request",
        "ServiceID": service_id,
        "SaleID": "ECR-1",
        "POIID": TID,
    })
}

fn request(category: &str, service_id: &str, body: Value) -> Value {
    json!({ "SaleToPOIRequest": {
        "MessageHeader": header(category, service_id),
        format!("{category}Request"): body,
    }})
}

fn payment(service_id: &str, amount: f64, extra: Value) -> Value {
    let mut body = json!({
        "SaleData": {
            "SaleTransactionID": { "TransactionID": service_id, "TimeStamp": "2025-03-14T09:26:53.000Z" },
            "OperatorID": "cashier-7"
        },
        "PaymentTransaction": { "AmountsReq": { "Currency": "CNY", "RequestedAmount": amount } },
    });
    merge(&mut body, extra);
    request("Payment", service_id, body)
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        for (k, v) in from {
            match into.get_mut(&k) {
                Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                _ => {
                    into.insert(k, v);
                }
            }
        }
    }
}

fn response_of(r: &SaleToPoiResponse) -> &nexo::model::Response {
    r.body.response()
}

fn additional(r: &SaleToPoiResponse) -> String {
    response_of(r)
        .additional_response
        .clone()
        .unwrap_or_default()
}

fn condition(r: &SaleToPoiResponse) -> Option<ErrorCondition> {
    response_of(r).error_condition
}

fn payment_body(r: &SaleToPoiResponse) -> &nexo::model::PaymentResponse {
    match &r.body {
        ResponseBody::Payment(p) => p,
        other => panic!("not a payment response: {other:?}"),
    }
}

/// The original answer a TransactionStatus answer repeats.
fn repeated_of(r: &SaleToPoiResponse) -> &nexo::model::RepeatedMessageResponse {
    let ResponseBody::TransactionStatus(ts) = &r.body else {
        panic!("not a TransactionStatus answer: {r:?}")
    };
    ts.repeated_message_response
        .as_ref()
        .unwrap_or_else(|| panic!("no repeated answer: {r:?}"))
}

fn transaction_id(r: &SaleToPoiResponse) -> String {
    let poi = match &r.body {
        ResponseBody::Payment(p) => p.poi_data.as_ref(),
        ResponseBody::Reversal(p) => p.poi_data.as_ref(),
        other => panic!("no POIData in {other:?}"),
    };
    poi.unwrap().poi_transaction_id.transaction_id.clone()
}

/// Host, terminal and its nexo endpoint (see [`testbed::World`]), and
/// the configuration the endpoint starts with.
struct World {
    bed: testbed::World,
    config: EcrConfig,
}

impl World {
    async fn start(config: EcrConfig, allow_plain: bool) -> World {
        let bed = testbed::World::start(
            testbed::corner_shop(),
            None,
            config.clone(),
            ServerOptions {
                allow_plain,
                ..ServerOptions::default()
            },
        )
        .await;
        World { bed, config }
    }

    fn client(&self, label: &str) -> Client {
        let pairing = self.bed.ecr.ecr.pair(label).unwrap();
        Client::new(self.bed.ecr.addr, pairing)
    }

    fn host_count(&self, sql: &str) -> i64 {
        testbed::host_count(&self.bed.host.data, sql)
    }

    async fn wait_display(&self, text: &str) {
        self.bed
            .terminal
            .wait(&format!("the terminal shows {text:?}"), |s| {
                s.display.starts_with(text)
            })
            .await;
    }

    /// The terminal's process ends (server stopped, nothing else said) and
    /// starts again from its data directory, on a new port.
    async fn restart(&mut self) {
        let sha256 = self.bed.ecr.cert.sha256();
        self.bed
            .restart("127.0.0.1:0".parse().unwrap(), self.config.clone())
            .await;
        assert_eq!(
            self.bed.ecr.cert.sha256(),
            sha256,
            "the certificate is kept"
        );
    }
}

fn auto(card: &str) -> EcrConfig {
    EcrConfig {
        present_card: test_card_named(card),
        ..EcrConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_payment_status_refund_reversal_diagnosis_logout() {
    let w = World::start(auto("approved"), false).await;
    let phone = w.client("till 1");
    let supervisor = testbed::Supervisor::from_uri(&w.bed.ecr.ecr.set_supervisor().unwrap(), TID);

    let login = phone
        .send(&request(
            "Login",
            "L1",
            json!({
                "DateTime": "2025-03-14T08:00:00+01:00",
                "SaleSoftware": { "ApplicationName": "Till", "SoftwareVersion": "4.2.0", "CertificationCode": "none" },
                "OperatorLanguage": "en",
                "OperatorID": "cashier-7",
            }),
        ))
        .await;
    assert_eq!(response_of(&login).result, ResultType::Success);
    assert_eq!(login.header.service_id.as_deref(), Some("L1"));

    let sale = phone.send(&payment("P1", 12.5, json!({}))).await;
    assert_eq!(response_of(&sale).result, ResultType::Success, "{sale:?}");
    let p = payment_body(&sale);
    let result = p.payment_result.as_ref().unwrap();
    let card = result
        .payment_instrument_data
        .as_ref()
        .unwrap()
        .card_data
        .as_ref()
        .unwrap();
    assert_eq!(card.masked_pan.as_deref(), Some("620000******0005"));
    let acquirer = result.payment_acquirer_data.as_ref().unwrap();
    assert_eq!(acquirer.acquirer_poi_id, TID);
    assert!(acquirer.approval_code.is_some());
    assert_eq!(
        acquirer
            .acquirer_transaction_id
            .as_ref()
            .unwrap()
            .transaction_id
            .len(),
        12
    );
    assert_eq!(
        result
            .amounts_resp
            .as_ref()
            .unwrap()
            .authorized_amount
            .to_string(),
        "12.5"
    );
    assert_eq!(
        p.payment_receipt.len(),
        2,
        "cashier's and customer's receipts"
    );
    let sale_id = transaction_id(&sale);
    assert!(sale_id.contains('.'), "{sale_id}");
    let wire = nexo::ToJson::to_json(&sale);
    assert!(
        !wire.contains("6200000000000005"),
        "never a full card number"
    );

    // The answer is repeated, receipts only when asked for.
    let status = phone
        .send(&request(
            "TransactionStatus",
            "Q1",
            json!({ "MessageReference": { "MessageCategory": "Payment", "ServiceID": "P1", "SaleID": "ECR-1" } }),
        ))
        .await;
    assert_eq!(response_of(&status).result, ResultType::Success);
    let repeated = repeated_of(&status);
    assert_eq!(repeated.message_header.service_id.as_deref(), Some("P1"));
    let mut original = p.clone();
    original.payment_receipt.clear();
    assert_eq!(
        repeated
            .repeated_response_message_body
            .payment_response
            .as_ref(),
        Some(&original)
    );
    // Without a MessageReference: the last payment.
    let last = phone
        .send(&request(
            "TransactionStatus",
            "Q2",
            json!({ "ReceiptReprintFlag": true }),
        ))
        .await;
    assert_eq!(
        repeated_of(&last)
            .repeated_response_message_body
            .payment_response
            .as_ref(),
        Some(p)
    );

    // A repeated ServiceID is refused and nothing is charged again.
    let sales_before = w.host_count("SELECT count(*) FROM journal WHERE kind = 'sale'");
    let again = phone.send(&payment("P1", 12.5, json!({}))).await;
    assert_eq!(response_of(&again).result, ResultType::Failure);
    assert!(
        additional(&again).contains("repeated+ServiceID"),
        "{}",
        additional(&again)
    );
    assert_eq!(
        w.host_count("SELECT count(*) FROM journal WHERE kind = 'sale'"),
        sales_before
    );

    // A refund of the sale, with the supervisor's code.
    let refund = phone
        .send(&payment(
            "R1",
            2.5,
            json!({
                "SaleData": { "SaleToAcquirerData": format!("supervisorCode={}", supervisor.code()) },
                "PaymentTransaction": { "OriginalPOITransaction": { "POITransactionID": { "TransactionID": sale_id, "TimeStamp": "2025-03-14T09:26:58Z" } } },
                "PaymentData": { "PaymentType": "Refund" },
            }),
        ))
        .await;
    assert_eq!(
        response_of(&refund).result,
        ResultType::Success,
        "{}",
        additional(&refund)
    );
    assert!(
        !nexo::ToJson::to_json(&refund).contains("supervisorCode"),
        "the code is not echoed"
    );
    assert_eq!(
        w.host_count("SELECT count(*) FROM journal WHERE kind = 'refund' AND response_code = '00'"),
        1
    );

    // A second sale, reversed (voided) with the card that paid.
    let second = phone.send(&payment("P2", 30.0, json!({}))).await;
    assert_eq!(response_of(&second).result, ResultType::Success);
    let reversal = phone
        .send(&request(
            "Reversal",
            "V1",
            json!({
                "OriginalPOITransaction": { "POITransactionID": { "TransactionID": transaction_id(&second), "TimeStamp": "2025-03-14T09:30:00Z" } },
                "ReversalReason": "MerchantCancel",
                "SaleData": {
                    "SaleTransactionID": { "TransactionID": "V1", "TimeStamp": "2025-03-14T09:31:00Z" },
                    "SaleToAcquirerData": format!("supervisorCode={}", supervisor.code()),
                },
            }),
        ))
        .await;
    assert_eq!(
        response_of(&reversal).result,
        ResultType::Success,
        "{}",
        additional(&reversal)
    );
    let ResponseBody::Reversal(r) = &reversal.body else {
        panic!()
    };
    assert_eq!(r.reversed_amount.unwrap().to_string(), "30");
    assert_eq!(
        w.host_count("SELECT count(*) FROM journal WHERE kind = 'sale' AND state = 'voided'"),
        1
    );
    // The reversal's answer is repeated too.
    let status = phone
        .send(&request(
            "TransactionStatus",
            "Q3",
            json!({ "MessageReference": { "ServiceID": "V1" } }),
        ))
        .await;
    assert!(
        repeated_of(&status)
            .repeated_response_message_body
            .reversal_response
            .is_some()
    );

    let diagnosis = phone
        .send(&request(
            "Diagnosis",
            "D1",
            json!({ "HostDiagnosisFlag": true }),
        ))
        .await;
    let ResponseBody::Diagnosis(d) = &diagnosis.body else {
        panic!()
    };
    assert_eq!(d.logged_sale_id, vec!["ECR-1".to_string()]);
    assert_eq!(d.host_status.len(), 1);
    assert_eq!(d.host_status[0].is_reachable_flag, Some(true));
    assert_eq!(
        d.response.additional_response.as_deref(),
        Some("signedOn=true&pendingAdvices=0")
    );
    let logout = phone
        .send(&request(
            "Logout",
            "O1",
            json!({ "MaintenanceAllowed": true }),
        ))
        .await;
    assert_eq!(response_of(&logout).result, ResultType::Success);
    let diagnosis = phone.send(&request("Diagnosis", "D2", json!({}))).await;
    let ResponseBody::Diagnosis(d) = &diagnosis.body else {
        panic!()
    };
    assert!(d.logged_sale_id.is_empty());

    // Unknown exchanges.
    let unknown = phone
        .send(&request(
            "TransactionStatus",
            "Q4",
            json!({ "MessageReference": { "ServiceID": "nope" } }),
        ))
        .await;
    assert_eq!(condition(&unknown), Some(ErrorCondition::NotFound));
    let unknown = phone
        .send(&request(
            "Reversal",
            "V2",
            json!({
                "OriginalPOITransaction": { "POITransactionID": { "TransactionID": "000001.999999", "TimeStamp": "2025-03-14T09:30:00Z" } },
                "ReversalReason": "MerchantCancel",
            }),
        ))
        .await;
    assert_eq!(condition(&unknown), Some(ErrorCondition::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_code_missing_wrong_or_unset_sends_nothing() {
    let w = World::start(auto("approved"), false).await;
    let phone = w.client("till 1");
    let sale = phone.send(&payment("P1", 10.0, json!({}))).await;
    let original = json!({ "POITransactionID": { "TransactionID": transaction_id(&sale), "TimeStamp": "2025-03-14T09:26:58Z" } });
    let refund = |service_id: &str, data: Option<String>| {
        let mut extra = json!({
            "PaymentTransaction": { "OriginalPOITransaction": original.clone() },
            "PaymentData": { "PaymentType": "Refund" },
        });
        if let Some(data) = data {
            merge(
                &mut extra,
                json!({ "SaleData": { "SaleToAcquirerData": data } }),
            );
        }
        payment(service_id, 5.0, extra)
    };
    let rows = || w.host_count("SELECT count(*) FROM journal");
    let before = rows();

    let unset = phone
        .send(&refund("R0", Some("supervisorCode=123456".into())))
        .await;
    assert_eq!(condition(&unset), Some(ErrorCondition::Refusal));
    assert!(
        additional(&unset).contains("none+is+configured"),
        "{}",
        additional(&unset)
    );

    let supervisor = testbed::Supervisor::from_uri(&w.bed.ecr.ecr.set_supervisor().unwrap(), TID);
    let missing = phone.send(&refund("R1", None)).await;
    assert_eq!(condition(&missing), Some(ErrorCondition::Refusal));
    assert!(additional(&missing).contains("supervisor+code+is+required"));
    let good = supervisor.code();
    let wrong = format!("{:06}", (good.parse::<u32>().unwrap() + 1) % 1_000_000);
    let wrong = phone
        .send(&refund("R2", Some(format!("supervisorCode={wrong}"))))
        .await;
    assert_eq!(condition(&wrong), Some(ErrorCondition::Refusal));
    assert!(additional(&wrong).contains("supervisor+code+is+wrong"));
    let reversal = phone
        .send(&request(
            "Reversal",
            "V1",
            json!({ "OriginalPOITransaction": original.clone(), "ReversalReason": "MerchantCancel" }),
        ))
        .await;
    assert_eq!(condition(&reversal), Some(ErrorCondition::Refusal));
    assert_eq!(rows(), before, "nothing reached the host");

    // The right code works once.
    let ok = phone
        .send(&refund("R3", Some(format!("a=b&supervisorCode={good}"))))
        .await;
    assert_eq!(
        response_of(&ok).result,
        ResultType::Success,
        "{}",
        additional(&ok)
    );
    let replay = phone
        .send(&refund("R4", Some(format!("supervisorCode={good}"))))
        .await;
    assert_eq!(condition(&replay), Some(ErrorCondition::Refusal));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_unsupported_busy_in_progress_abort_and_card_timeout() {
    let w = World::start(EcrConfig::default(), false).await;
    let phone = Arc::new(w.client("till 1"));
    let over = phone.send(&payment("P0", 600.01, json!({}))).await;
    assert_eq!(condition(&over), Some(ErrorCondition::Refusal));
    assert_eq!(
        additional(&over),
        "message=amount+600.01+CNY+exceeds+the+terminal+limit+of+600+CNY"
    );
    let cash = phone
        .send(&payment(
            "P00",
            1.0,
            json!({ "PaymentData": { "PaymentType": "CashAdvance" } }),
        ))
        .await;
    assert_eq!(condition(&cash), Some(ErrorCondition::NotAllowed));
    let other = phone
        .send(&request("CardAcquisition", "C0", json!({
            "SaleData": { "SaleTransactionID": { "TransactionID": "1", "TimeStamp": "2025-03-14T09:26:40Z" } },
            "CardAcquisitionTransaction": {}
        })))
        .await;
    assert_eq!(condition(&other), Some(ErrorCondition::NotAllowed));
    let rows = w.host_count("SELECT count(*) FROM journal");

    // A payment waits for its card; meanwhile the terminal is busy.
    let first = {
        let phone = phone.clone();
        tokio::spawn(async move { phone.send(&payment("P1", 10.0, json!({}))).await })
    };
    w.wait_display("Present card").await;
    let busy = phone.send(&payment("P2", 10.0, json!({}))).await;
    assert_eq!(condition(&busy), Some(ErrorCondition::Busy));
    let status = phone
        .send(&request(
            "TransactionStatus",
            "Q1",
            json!({ "MessageReference": { "ServiceID": "P1" } }),
        ))
        .await;
    assert_eq!(condition(&status), Some(ErrorCondition::InProgress));
    assert_eq!(
        additional(&status),
        "message=the+payment+is+waiting+for+the+card"
    );
    // The abort has no answer of its own; the payment answers Aborted.
    let abort = request(
        "Abort",
        "A1",
        json!({ "AbortReason": "MerchantAbort", "MessageReference": { "MessageCategory": "Payment", "ServiceID": "P1", "SaleID": "ECR-1" } }),
    );
    let sealed = paycrypto::nexo::encrypt(&phone.key, abort.to_string().as_bytes()).unwrap();
    assert!(phone.send_bytes(sealed.as_bytes()).await.is_empty());
    let aborted = first.await.unwrap();
    assert_eq!(condition(&aborted), Some(ErrorCondition::Aborted));
    assert!(additional(&aborted).contains("MerchantAbort"));
    assert_eq!(w.host_count("SELECT count(*) FROM journal"), rows);

    // A card presented through the screen's API reaches the waiting payment.
    let second = {
        let phone = phone.clone();
        tokio::spawn(async move { phone.send(&payment("P3", 10.0, json!({}))).await })
    };
    w.wait_display("Present card").await;
    assert!(w.bed.ecr.ecr.present_card("no-such-card").is_err());
    w.bed.ecr.ecr.present_card("insufficient_funds").unwrap();
    let declined = second.await.unwrap();
    assert_eq!(condition(&declined), Some(ErrorCondition::Refusal));
    assert_eq!(
        additional(&declined),
        "message=insufficient+funds&responseCode=51"
    );
    assert!(
        w.bed.ecr.ecr.present_card("approved").is_err(),
        "nobody waits now"
    );
    drop(w);

    // Nobody presents a card: the payment ends when the wait does.
    let w = World::start(
        EcrConfig {
            card_timeout: Duration::from_millis(300),
            ..EcrConfig::default()
        },
        false,
    )
    .await;
    let phone = w.client("till 1");
    let timed_out = phone.send(&payment("P1", 10.0, json!({}))).await;
    assert_eq!(condition(&timed_out), Some(ErrorCondition::Cancel));
    assert!(additional(&timed_out).contains("no+card+presented"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_that_hangs_up_still_gets_its_answer_from_transaction_status() {
    let w = World::start(EcrConfig::default(), false).await;
    let phone = w.client("till 1");
    let rows = w.host_count("SELECT count(*) FROM journal");
    // The phone sends a payment and hangs up while it waits for the card.
    let sealed = paycrypto::nexo::encrypt(
        &phone.key,
        payment("P1", 10.0, json!({})).to_string().as_bytes(),
    )
    .unwrap();
    let mut tls = phone.connect().await;
    let head = format!(
        "POST /nexo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        sealed.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(sealed.as_bytes()).await.unwrap();
    w.wait_display("Present card").await;
    drop(tls);
    // The card comes after the phone has gone: the payment still ends,
    // and its answer is there for the phone when it asks.
    w.bed.ecr.ecr.present_card("approved").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut asked = 0;
    let status = loop {
        asked += 1;
        let status = phone
            .send(&request(
                "TransactionStatus",
                &format!("Q{asked}"),
                json!({ "MessageReference": { "ServiceID": "P1" } }),
            ))
            .await;
        if condition(&status) != Some(ErrorCondition::InProgress) {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the payment never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        response_of(&status).result,
        ResultType::Success,
        "{:?} {}",
        condition(&status),
        additional(&status)
    );
    assert_eq!(w.host_count("SELECT count(*) FROM journal"), rows + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_survive_a_restart_and_interrupted_exchanges_are_answered() {
    let mut w = World::start(auto("approved"), false).await;
    let pairing = w.bed.ecr.ecr.pair("till 1").unwrap();
    let phone = Client::new(w.bed.ecr.addr, pairing.clone());
    let sale = phone.send(&payment("P1", 12.5, json!({}))).await;
    assert_eq!(response_of(&sale).result, ResultType::Success);
    // An exchange recorded and never answered, as if the terminal had
    // stopped while it waited for the card.
    let store = terminal::ecr::store::Store::open(&w.bed.host.terminal_dir()).unwrap();
    store
        .reserve(
            "ECR-1",
            "P9",
            nexo::wire::MessageCategory::Payment,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
        .unwrap();
    drop(store);
    w.restart().await;

    let phone = Client::new(w.bed.ecr.addr, pairing);
    let status = phone
        .send(&request(
            "TransactionStatus",
            "Q1",
            json!({ "MessageReference": { "ServiceID": "P1" }, "ReceiptReprintFlag": true }),
        ))
        .await;
    assert_eq!(
        repeated_of(&status)
            .repeated_response_message_body
            .payment_response
            .as_ref(),
        Some(payment_body(&sale)),
        "the same answer after a restart"
    );
    let again = phone.send(&payment("P1", 12.5, json!({}))).await;
    assert!(additional(&again).contains("repeated+ServiceID"));
    let interrupted = phone
        .send(&request(
            "TransactionStatus",
            "Q2",
            json!({ "MessageReference": { "ServiceID": "P9" } }),
        ))
        .await;
    let repeated = repeated_of(&interrupted)
        .repeated_response_message_body
        .payment_response
        .as_ref()
        .unwrap();
    assert_eq!(
        repeated.response.error_condition,
        Some(ErrorCondition::Aborted)
    );
}

fn reject_of(bytes: &[u8]) -> nexo::model::EventNotification {
    let message = parse_request(bytes, Security::Plain)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
        .message;
    match message.body {
        RequestBody::Event(e) => {
            assert_eq!(e.event_to_notify, EventToNotify::Reject);
            e
        }
        other => panic!("not a rejection: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_revocation_plain_messages_and_the_certificate() {
    let w = World::start(auto("approved"), false).await;
    let phone = w.client("till 1");
    assert_eq!(phone.pairing.cert_sha256, w.bed.ecr.cert.sha256());
    assert_eq!(phone.pairing.poi_id, TID);

    // The certificate served is the one the pairing code names.
    let tls = phone.connect().await;
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(pki::tls::fingerprint(&served), phone.pairing.cert_sha256);
    drop(tls);

    let diagnosis = request("Diagnosis", "D1", json!({}));
    let ok = phone.send(&diagnosis).await;
    assert_eq!(response_of(&ok).result, ResultType::Success);

    // A key the terminal never paired.
    let stranger = NexoKey::derive("not paired", "stranger", 1).unwrap();
    let sealed = paycrypto::nexo::encrypt(
        &stranger,
        request("Diagnosis", "D2", json!({})).to_string().as_bytes(),
    )
    .unwrap();
    let reject = reject_of(&phone.send_bytes(sealed.as_bytes()).await);
    assert!(reject.event_details.unwrap().contains("stranger"));
    // The right key identifier with the wrong passphrase: the HMAC fails.
    let forged = NexoKey::derive("guessed", &phone.pairing.key_identifier, 1).unwrap();
    let sealed = paycrypto::nexo::encrypt(
        &forged,
        request("Diagnosis", "D3", json!({})).to_string().as_bytes(),
    )
    .unwrap();
    reject_of(&phone.send_bytes(sealed.as_bytes()).await);
    // Plain where security is required.
    let plain = phone
        .send_bytes(request("Payment", "D4", json!({})).to_string().as_bytes())
        .await;
    reject_of(&plain);
    // Plain from a peer off this machine, even with plain allowed.
    let far = w
        .bed
        .ecr
        .ecr
        .handle(
            request("Diagnosis", "D5", json!({})).to_string().as_bytes(),
            Link::tcp("192.0.2.10:50000".parse().unwrap(), true),
        )
        .await;
    reject_of(&far);
    // Revocation takes effect at the next message.
    assert_eq!(
        w.bed.ecr.ecr.revoke(&phone.pairing.key_identifier).unwrap(),
        1
    );
    let sealed = paycrypto::nexo::encrypt(
        &phone.key,
        request("Diagnosis", "D6", json!({})).to_string().as_bytes(),
    )
    .unwrap();
    reject_of(&phone.send_bytes(sealed.as_bytes()).await);
    assert!(
        w.bed
            .ecr
            .ecr
            .notifications(&phone.pairing.key_identifier, 1)
            .is_err()
    );
    assert!(w.bed.ecr.ecr.pairings().unwrap()[0].revoked_at.is_some());
    // A body over 64 KiB is refused before it is read whole.
    let (status, _) = phone.post_raw("/nexo", &vec![b' '; 70 * 1024]).await;
    assert_eq!(status, 413);
    drop(w);

    // With --nexo-allow-plain, plain messages from loopback are served.
    let w = World::start(auto("approved"), true).await;
    let phone = w.client("till 2");
    let plain = phone
        .send_bytes(request("Diagnosis", "D1", json!({})).to_string().as_bytes())
        .await;
    let answer = parse_response(&plain, Security::Plain).unwrap();
    assert!(!answer.secured);
    assert_eq!(response_of(&answer.message).result, ResultType::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_phone_follows_a_payment_over_websocket() {
    let w = World::start(auto("approved"), false).await;
    let phone = w.client("phone");
    let stranger = tokio_tungstenite::client_async(
        "wss://localhost/nexo/events?kid=stranger&kv=1",
        phone.connect().await,
    )
    .await;
    match stranger {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("an unknown key subscribes: {:?}", other.map(|_| ())),
    }
    let url = format!(
        "wss://localhost/nexo/events?kid={}&kv={}",
        phone.pairing.key_identifier, phone.pairing.key_version
    );
    let (mut socket, _) = tokio_tungstenite::client_async(url, phone.connect().await)
        .await
        .unwrap();
    let sale = phone.send(&payment("P1", 12.5, json!({}))).await;
    assert_eq!(response_of(&sale).result, ResultType::Success);

    use futures_util::StreamExt;
    let mut seen = Vec::new();
    while !seen.iter().any(|s: &String| s.starts_with("APPROVED")) {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("notifications arrive")
            .unwrap()
            .unwrap();
        let text = message.into_text().unwrap();
        let note = parse_request(text.as_bytes(), Security::Required(&phone.key)).unwrap();
        assert!(note.secured, "secured under the pairing's key");
        assert_eq!(note.message.header.service_id.as_deref(), Some("P1"));
        match note.message.body {
            RequestBody::Display(d) => seen.push(
                d.display_output[0]
                    .output_content
                    .output_text
                    .iter()
                    .filter_map(|t| t.text.clone())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            RequestBody::Event(e) => seen.push(format!(
                "{} {}",
                e.event_to_notify,
                e.event_details.unwrap_or_default()
            )),
            other => panic!("unexpected notification {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "Present card CNY 12.50",
            "CardInserted step=pinEntry",
            "Enter PIN",
            "Processing",
            "APPROVED"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screen_pairs_presents_cards_and_keeps_its_origin_checks() {
    let w = World::start(EcrConfig::default(), false).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let screen = listener.local_addr().unwrap();
    tokio::spawn(terminal::screen::serve_with_ecr(
        w.bed.ecr.ecr.clone(),
        listener,
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value, origin: Option<&str>| {
        let mut request = http
            .post(format!("http://{screen}{path}"))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        request.send()
    };
    let foreign = post(
        "/api/pairings",
        json!({ "label": "x" }),
        Some("http://evil.example"),
    )
    .await
    .unwrap();
    assert_eq!(foreign.status(), 403);
    assert!(
        w.bed.ecr.ecr.pairings().unwrap().is_empty(),
        "nothing paired"
    );

    let own = format!("http://{screen}");
    let paired = post(
        "/api/pairings",
        json!({ "label": "counter phone" }),
        Some(&own),
    )
    .await
    .unwrap();
    assert_eq!(paired.status(), 200);
    let paired: Value = paired.json().await.unwrap();
    let code = Pairing::from_code(paired["code"].as_str().unwrap()).unwrap();
    assert_eq!(code.cert_sha256, w.bed.ecr.cert.sha256());
    assert_eq!(
        (code.host.as_str(), code.port),
        ("127.0.0.1", w.bed.ecr.addr.port())
    );
    assert!(paired["qr_svg"].as_str().unwrap().contains("<svg"));
    assert!(paired["qr_text"].as_str().unwrap().contains('█'));
    assert_eq!(w.bed.ecr.ecr.pairings().unwrap()[0].label, "counter phone");
    let page = http
        .get(format!("http://{screen}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Pair a phone") && page.contains("id=\"present-card\""));

    // Nobody waits for a card yet; then a nexo payment does.
    let idle = post("/api/present", json!({ "card": "approved" }), None)
        .await
        .unwrap();
    assert_eq!(idle.status(), 409);
    let phone = Arc::new(Client::new(w.bed.ecr.addr, code));
    let paying = {
        let phone = phone.clone();
        tokio::spawn(async move { phone.send(&payment("P1", 12.5, json!({}))).await })
    };
    w.wait_display("Present card").await;
    let unknown = post("/api/present", json!({ "card": "gold" }), None)
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let presented = post("/api/present", json!({ "card": "approved" }), Some(&own))
        .await
        .unwrap();
    assert_eq!(presented.status(), 200);
    let sale = paying.await.unwrap();
    assert_eq!(response_of(&sale).result, ResultType::Success);

    let revoked = post(
        "/api/pairings/revoke",
        json!({ "key_identifier": phone.pairing.key_identifier }),
        None,
    )
    .await
    .unwrap();
    assert_eq!(revoked.status(), 200);
    let sealed = paycrypto::nexo::encrypt(
        &phone.key,
        request("Diagnosis", "D1", json!({})).to_string().as_bytes(),
    )
    .unwrap();
    reject_of(&phone.send_bytes(sealed.as_bytes()).await);
}

/// A wallet's payment code scanned for a nexo payment — what `posnet
/// terminal present --qr` sends the screen — pays from the wallet at the
/// host, once: the same code for the next payment is declined 94. The
/// receipt says WALLET; the host's journal says wallet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_code_presented_through_the_screen_pays_from_the_wallet_once() {
    let w = World::start(EcrConfig::default(), false).await;
    let data = &w.bed.host.data;
    let spec = host::admin::WalletSpec {
        number: "100000007".into(),
        balance: 5_000,
        per_txn_limit: 50_000,
        daily_limit: 100_000,
        currency: 156,
        holder: String::new(),
    };
    let master = data.master.clone();
    let secret = data
        .ledger
        .submit(move |tx| host::admin::add_wallet(tx, &spec, &master, 0))
        .await
        .unwrap()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let screen = listener.local_addr().unwrap();
    tokio::spawn(terminal::screen::serve_with_ecr(
        w.bed.ecr.ecr.clone(),
        listener,
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    let present = |qr: &str| {
        let body = terminal::screen::PresentRequest {
            card: String::new(),
            qr: Some(qr.to_string()),
        };
        http.post(format!("http://{screen}/api/present"))
            .json(&body)
            .send()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = paycrypto::paycode::WalletNumber::parse("100000007")
        .unwrap()
        .code_at(secret.expose(), now)
        .unwrap()
        .to_string();
    let phone = Arc::new(w.client("till 1"));
    let pay = |id: &'static str, amount: f64| {
        let phone = phone.clone();
        tokio::spawn(async move { phone.send(&payment(id, amount, json!({}))).await })
    };

    let paying = pay("P1", 12.5);
    w.wait_display("Present card").await;
    let not_a_code = present("6200000000000005").await.unwrap();
    assert_eq!(not_a_code.status(), 400);
    assert_eq!(present(&code).await.unwrap().status(), 200);
    let sale = paying.await.unwrap();
    assert_eq!(response_of(&sale).result, ResultType::Success, "{sale:?}");
    let shown = format!("{sale:?}");
    assert!(shown.contains("WALLET"), "{shown}");
    assert!(
        !shown.contains("SIGNATURE"),
        "a code needs no signature: {shown}"
    );
    let instrument = payment_body(&sale)
        .payment_result
        .as_ref()
        .unwrap()
        .payment_instrument_data
        .as_ref()
        .unwrap()
        .payment_instrument_type;
    assert_eq!(instrument, nexo::wire::PaymentInstrumentType::Mobile);
    assert!(
        shown.contains(&iso8583::text::mask_pan(&code)) && !shown.contains(&code),
        "{shown}"
    );

    let again = pay("P2", 1.0);
    w.wait_display("Present card").await;
    assert_eq!(present(&code).await.unwrap().status(), 200);
    let declined = again.await.unwrap();
    assert_eq!(condition(&declined), Some(ErrorCondition::Refusal));
    assert!(
        additional(&declined).contains("responseCode=94"),
        "{}",
        additional(&declined)
    );

    assert_eq!(
        w.host_count("SELECT count(*) FROM journal WHERE method = 'wallet'"),
        2
    );
    let wallets = data.ledger.submit(host::admin::list_wallets).await.unwrap();
    assert_eq!(wallets[0].balance, 5_000 - 1_250);
}
