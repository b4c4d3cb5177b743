//! Every message kind through JSON and back, the typed reading of the
//! fixtures (the example messages of docs/ecr-api.md), security, and the
//! answers to every failure. The fixtures' field names are checked against
//! Adyen's own library by interop/node/nexo_messages.test.mjs.

use std::path::{Path, PathBuf};

use nexo::inbound::{
    InboundError, Reply, SecurityFault, check_limit, parse_request, parse_response, screen,
};
use nexo::message::{RequestBody, ResponseBody, SaleToPoiRequest, SaleToPoiResponse, ToJson};
use nexo::model::{
    MessageReference, PaymentResponse, PoiData, RepeatedMessageResponse,
    RepeatedResponseMessageBody, Response, TransactionIdentification, TransactionStatusResponse,
};
use nexo::wire::{
    EntryMode, ErrorCondition, EventToNotify, MessageCategory, MessageType, PaymentType, ResultType,
};
use nexo::{Amount, Security};
use paycrypto::nexo::{NexoError, NexoKey, encrypt_with_nonce};
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2025-03-14 09:27:00 UTC);
const POI_ID: &str = "posnet-terminal-1";

fn fixtures(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(path),
    )
    .unwrap()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Compares `produced` with the fixture `path`; with `NEXO_WRITE_FIXTURES`
/// set, writes it there instead (then review the diff).
fn assert_fixture(path: &str, produced: &str) {
    let file: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    if std::env::var_os("NEXO_WRITE_FIXTURES").is_some() {
        let pretty = serde_json::to_string_pretty(&json(produced.as_bytes())).unwrap();
        std::fs::write(&file, pretty + "\n").unwrap();
    }
    let expected = std::fs::read(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(json(produced.as_bytes()), json(&expected), "{path}");
}

#[test]
fn every_request_fixture_reads_and_writes_back_the_same_json() {
    let all = fixtures("requests");
    assert_eq!(all.len(), 10);
    let mut categories = Vec::new();
    for (name, bytes) in all {
        let read = parse_request(&bytes, Security::Plain).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!read.secured);
        assert_eq!(
            json(read.message.to_json().as_bytes()),
            json(&bytes),
            "{name}"
        );
        assert!(
            !matches!(read.message.body, RequestBody::Unsupported { .. }),
            "{name}"
        );
        categories.push(read.message.body.category());
    }
    for category in [
        MessageCategory::Payment,
        MessageCategory::Reversal,
        MessageCategory::TransactionStatus,
        MessageCategory::Abort,
        MessageCategory::Login,
        MessageCategory::Logout,
        MessageCategory::Diagnosis,
        MessageCategory::Display,
        MessageCategory::Event,
    ] {
        assert!(categories.contains(&category), "no {category} fixture");
    }
}

#[test]
fn every_response_fixture_reads_and_writes_back_the_same_json() {
    let all = fixtures("responses");
    assert_eq!(all.len(), 9);
    for (name, bytes) in all {
        let read =
            parse_response(&bytes, Security::Plain).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            json(read.message.to_json().as_bytes()),
            json(&bytes),
            "{name}"
        );
        assert!(
            !matches!(read.message.body, ResponseBody::Other(_)),
            "{name}"
        );
    }
}

#[test]
fn the_payment_request_reads_into_its_fields() {
    let read = parse_request(&fixture("requests/payment.json"), Security::Plain).unwrap();
    let header = &read.message.header;
    assert_eq!(header.message_type, MessageType::Request);
    assert_eq!(header.sale_id.as_deref(), Some("ECR-1"));
    assert_eq!(header.service_id.as_deref(), Some("0314092653"));
    assert_eq!(header.poi_id, POI_ID);
    let RequestBody::Payment(payment) = &read.message.body else {
        panic!("not a payment")
    };
    assert_eq!(
        payment.sale_data.sale_transaction_id.transaction_id,
        "27908"
    );
    assert_eq!(payment.payment_type(), PaymentType::Normal);
    assert_eq!(
        payment.payment_transaction.amounts_req.requested_minor(),
        Ok(1250)
    );
    assert_eq!(screen(&read.message), Ok(()));

    let refund = parse_request(&fixture("requests/refund.json"), Security::Plain).unwrap();
    let RequestBody::Payment(refund) = &refund.message.body else {
        panic!("not a payment")
    };
    assert_eq!(refund.payment_type(), PaymentType::Refund);
    // JPY has no decimals: 1250 yen are 1250 minor units.
    assert_eq!(
        refund.payment_transaction.amounts_req.requested_minor(),
        Ok(1250)
    );
}

#[test]
fn the_payment_response_reads_into_its_fields() {
    let read = parse_response(&fixture("responses/payment.json"), Security::Plain).unwrap();
    let ResponseBody::Payment(payment) = &read.message.body else {
        panic!("not a payment response")
    };
    assert_eq!(payment.response.result, ResultType::Success);
    let result = payment.payment_result.as_ref().unwrap();
    let amounts = result.amounts_resp.as_ref().unwrap();
    assert_eq!(amounts.authorized_amount.to_minor("EUR"), Ok(1250));
    let acquirer = result.payment_acquirer_data.as_ref().unwrap();
    assert_eq!(acquirer.approval_code.as_deref(), Some("A1B2C3"));
    let card = result
        .payment_instrument_data
        .as_ref()
        .unwrap()
        .card_data
        .as_ref()
        .unwrap();
    assert_eq!(card.masked_pan.as_deref(), Some("627012******0018"));
    assert_eq!(card.entry_mode, [EntryMode::Icc]);
}

#[test]
fn a_transaction_status_repeats_the_original_response() {
    let payment = parse_response(&fixture("responses/payment.json"), Security::Plain).unwrap();
    let request = parse_request(
        &fixture("requests/transaction-status.json"),
        Security::Plain,
    )
    .unwrap();
    let RequestBody::TransactionStatus(status) = &request.message.body else {
        panic!("not a status request")
    };
    let ResponseBody::Payment(original) = payment.message.body.clone() else {
        panic!("not a payment response")
    };
    let answer = SaleToPoiResponse::answer(
        &request.message.header,
        ResponseBody::TransactionStatus(TransactionStatusResponse {
            response: Response::success(),
            message_reference: status.message_reference.clone(),
            repeated_message_response: Some(Box::new(RepeatedMessageResponse {
                message_header: payment.message.header.clone(),
                repeated_response_message_body: RepeatedResponseMessageBody {
                    payment_response: Some(original.clone()),
                    reversal_response: None,
                },
            })),
        }),
    );
    let back = parse_response(answer.to_json().as_bytes(), Security::Plain).unwrap();
    assert_eq!(back.message, answer);
    let ResponseBody::TransactionStatus(back) = back.message.body else {
        panic!("not a status response")
    };
    let repeated = back.repeated_message_response.unwrap();
    assert_eq!(repeated.message_header, payment.message.header);
    assert_eq!(
        repeated.repeated_response_message_body.payment_response,
        Some(original)
    );

    // InProgress and NotFound are bare failures of the status request.
    for (condition, path) in [
        (
            ErrorCondition::InProgress,
            "responses/transaction-status-in-progress.json",
        ),
        (
            ErrorCondition::NotFound,
            "responses/transaction-status-not-found.json",
        ),
    ] {
        let read = parse_response(&fixture(path), Security::Plain).unwrap();
        let response = read.message.body.response();
        assert_eq!(response.result, ResultType::Failure);
        assert_eq!(response.error_condition, Some(condition));
    }
}

#[test]
fn built_responses_read_back_equal() {
    let request = parse_request(&fixture("requests/payment.json"), Security::Plain).unwrap();
    let RequestBody::Payment(payment) = &request.message.body else {
        panic!("not a payment")
    };
    let response = SaleToPoiResponse::answer(
        &request.message.header,
        ResponseBody::Payment(PaymentResponse {
            response: Response::success(),
            sale_data: Some(payment.sale_data.clone()),
            poi_data: Some(PoiData {
                poi_transaction_id: TransactionIdentification {
                    transaction_id: "000123".into(),
                    time_stamp: "2025-03-14T09:26:58.000Z".into(),
                },
                poi_reconciliation_id: None,
            }),
            payment_result: None,
            payment_receipt: Vec::new(),
        }),
    );
    assert_eq!(response.header.message_type, MessageType::Response);
    assert_eq!(
        response.header.service_id,
        request.message.header.service_id
    );
    let back = parse_response(response.to_json().as_bytes(), Security::Plain).unwrap();
    assert_eq!(back.message, response);

    for category in MessageCategory::ALL {
        let header = nexo::model::MessageHeader {
            message_category: *category,
            ..request.message.header.clone()
        };
        let Some(failure) =
            SaleToPoiResponse::failure(&header, ErrorCondition::NotAllowed, "not here")
        else {
            assert!(category.response_member().is_none());
            continue;
        };
        let text = failure.to_json();
        let value = json(text.as_bytes());
        let body = &value["SaleToPOIResponse"][category.response_member().unwrap()];
        assert_eq!(body["Response"]["Result"], "Failure");
        assert_eq!(body["Response"]["ErrorCondition"], "NotAllowed");
        assert_eq!(body["Response"]["AdditionalResponse"], "message=not+here");
        let back = parse_response(text.as_bytes(), Security::Plain).unwrap();
        assert_eq!(back.message, failure);
    }
}

#[test]
fn unknown_fields_are_tolerated() {
    let mut value = json(&fixture("requests/payment.json"));
    let payment = &mut value["SaleToPOIRequest"]["PaymentRequest"];
    payment["SaleData"]["SaleToAcquirerData"] = "tenderOption=AskGratuity".into();
    payment["SaleData"]["TokenRequestedType"] = "Customer".into();
    payment["PaymentTransaction"]["SaleItem"] =
        serde_json::json!([{"ItemID": 1, "ProductCode": "X", "ItemAmount": 12.5}]);
    payment["LoyaltyData"] = serde_json::json!([{"LoyaltyAccountID": {}}]);
    value["SaleToPOIRequest"]["MessageHeader"]["Extra"] = true.into();
    value["Unrelated"] = 1.into();
    let read = parse_request(value.to_string().as_bytes(), Security::Plain).unwrap();
    let RequestBody::Payment(payment) = &read.message.body else {
        panic!("not a payment")
    };
    assert_eq!(
        payment.sale_data.sale_to_acquirer_data.as_deref(),
        Some("tenderOption=AskGratuity")
    );
    assert_eq!(
        payment.payment_transaction.amounts_req.requested_minor(),
        Ok(1250)
    );
}

fn key(id: &str, version: u64) -> NexoKey {
    NexoKey::derive("posnet test passphrase", id, version).unwrap()
}

#[test]
fn secured_requests_are_opened_and_checked() {
    let plain = fixture("requests/payment.json");
    let good = key("posnetkey", 1);
    let secured = encrypt_with_nonce(&good, &plain, &[7; 16]).unwrap();
    let read = parse_request(secured.as_bytes(), Security::Required(&good)).unwrap();
    assert!(read.secured);
    assert_eq!(json(read.message.to_json().as_bytes()), json(&plain));
    let read = parse_request(secured.as_bytes(), Security::Optional(&good)).unwrap();
    assert!(read.secured);

    // Another key identifier, another version, another passphrase: the
    // content is not acted on, the clear header addresses the rejection.
    for other in [
        key("otherkey", 1),
        key("posnetkey", 2),
        NexoKey::derive("another passphrase", "posnetkey", 1).unwrap(),
    ] {
        let err = parse_request(secured.as_bytes(), Security::Required(&other)).unwrap_err();
        let InboundError::Security { header, reason } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(header.as_ref().unwrap().sale_id.as_deref(), Some("ECR-1"));
        assert!(matches!(
            reason,
            SecurityFault::Nexo(NexoError::KeyMismatch { .. } | NexoError::Authentication)
        ));
        let Reply::Notification(reject) = err.reply(POI_ID, secured.as_bytes(), NOW) else {
            panic!("a security failure is answered by a Reject notification")
        };
        let RequestBody::Event(event) = &reject.body else {
            panic!("not an event")
        };
        assert_eq!(event.event_to_notify, EventToNotify::Reject);
    }

    // A flipped bit in the HMAC fails authentication.
    let mut envelope = json(secured.as_bytes());
    let hmac = envelope["SaleToPOIRequest"]["SecurityTrailer"]["Hmac"]
        .as_str()
        .unwrap()
        .to_owned();
    let flipped = if hmac.starts_with('A') { "B" } else { "A" };
    envelope["SaleToPOIRequest"]["SecurityTrailer"]["Hmac"] =
        format!("{flipped}{}", &hmac[1..]).into();
    let err =
        parse_request(envelope.to_string().as_bytes(), Security::Required(&good)).unwrap_err();
    assert!(matches!(
        err,
        InboundError::Security {
            reason: SecurityFault::Nexo(NexoError::Authentication),
            ..
        }
    ));

    // Plain where security is required; secured where no key is known.
    let err = parse_request(&plain, Security::Required(&good)).unwrap_err();
    assert!(matches!(
        err,
        InboundError::Security {
            reason: SecurityFault::Unsecured,
            ..
        }
    ));
    let err = parse_request(secured.as_bytes(), Security::Plain).unwrap_err();
    assert!(matches!(
        err,
        InboundError::Security {
            reason: SecurityFault::NoKey,
            ..
        }
    ));
    // Plain is fine where security is optional.
    assert!(
        !parse_request(&plain, Security::Optional(&good))
            .unwrap()
            .secured
    );
}

#[test]
fn secured_answers_open_with_the_same_key() {
    let good = key("posnetkey", 1);
    let request = parse_request(&fixture("requests/payment.json"), Security::Plain).unwrap();
    let refusal = check_limit(
        match &request.message.body {
            RequestBody::Payment(p) => p,
            _ => unreachable!(),
        },
        1000,
    )
    .unwrap_err();
    let reply = refusal.reply(&request.message, NOW);
    let secured = reply.encode(Some(&good)).unwrap();
    let read = parse_response(secured.as_bytes(), Security::Required(&good)).unwrap();
    assert!(read.secured);
    assert_eq!(Reply::Response(read.message), reply);
}

/// `replies/<name>.request.json` is answered with `replies/<name>.reply.json`.
fn answer(name: &str) -> (Vec<u8>, Reply) {
    let received = fixture(&format!("replies/{name}.request.json"));
    let reply = match parse_request(&received, Security::Plain) {
        Err(e) => e.reply(POI_ID, &received, NOW),
        Ok(read) => {
            let refusal = match screen(&read.message) {
                Err(refusal) => refusal,
                Ok(()) => match &read.message.body {
                    RequestBody::Payment(p) => check_limit(p, 1000).unwrap_err(),
                    _ => panic!("{name}: the request would be served"),
                },
            };
            refusal.reply(&read.message, NOW)
        }
    };
    assert_fixture(&format!("replies/{name}.reply.json"), &reply.to_json());
    (received, reply)
}

fn failure_of(reply: &Reply) -> &Response {
    match reply {
        Reply::Response(r) => r.body.response(),
        Reply::Notification(n) => panic!("a notification: {n:?}"),
    }
}

#[test]
fn over_the_limit_is_a_refusal_saying_why() {
    let (_, reply) = answer("over-limit");
    let response = failure_of(&reply);
    assert_eq!(response.result, ResultType::Failure);
    assert_eq!(response.error_condition, Some(ErrorCondition::Refusal));
    assert_eq!(
        response.additional_response.as_deref(),
        Some("message=amount+12.5+EUR+exceeds+the+terminal+limit+of+10+EUR")
    );
}

#[test]
fn unsupported_requests_and_payment_types_are_not_allowed() {
    for name in ["unsupported-request", "unsupported-payment-type"] {
        let (_, reply) = answer(name);
        let response = failure_of(&reply);
        assert_eq!(
            response.error_condition,
            Some(ErrorCondition::NotAllowed),
            "{name}"
        );
    }
    // The unsupported body is kept verbatim.
    let read = parse_request(
        &fixture("replies/unsupported-request.request.json"),
        Security::Plain,
    )
    .unwrap();
    let RequestBody::Unsupported { category, body } = &read.message.body else {
        panic!("not unsupported")
    };
    assert_eq!(*category, MessageCategory::CardAcquisition);
    assert!(body.get().contains("SaleTransactionID"));
    // A display request or a notification sent to the terminal is not its
    // to serve, and is answered by a notification (nexo has no response
    // for them).
    for path in ["requests/display.json", "requests/event.json"] {
        let read = parse_request(&fixture(path), Security::Plain).unwrap();
        let refusal = screen(&read.message).unwrap_err();
        assert_eq!(refusal.condition, ErrorCondition::NotAllowed);
        assert!(matches!(
            refusal.reply(&read.message, NOW),
            Reply::Notification(_)
        ));
    }
}

#[test]
fn amounts_its_currency_cannot_hold_are_message_format_errors() {
    let (_, reply) = answer("too-many-decimals");
    let response = failure_of(&reply);
    assert_eq!(
        response.error_condition,
        Some(ErrorCondition::MessageFormat)
    );
    assert!(
        response
            .additional_response
            .as_deref()
            .unwrap()
            .contains("more+decimals")
    );
}

#[test]
fn malformed_json_with_a_readable_header_is_a_message_format_response() {
    let (_, reply) = answer("malformed");
    let Reply::Response(response) = &reply else {
        panic!("not a response")
    };
    assert_eq!(response.header.service_id.as_deref(), Some("0314092653"));
    assert_eq!(response.header.message_type, MessageType::Response);
    assert_eq!(
        response.body.response().error_condition,
        Some(ErrorCondition::MessageFormat)
    );

    // The header is found also when it comes after the malformed member,
    // and when the JSON breaks off after it.
    let text = String::from_utf8(fixture("requests/payment.json")).unwrap();
    let value = json(text.as_bytes());
    let reordered = format!(
        r#"{{"SaleToPOIRequest":{{"PaymentRequest":{{"SaleData":7}},"MessageHeader":{}}}}}"#,
        value["SaleToPOIRequest"]["MessageHeader"]
    );
    let truncated = &text[..text.find("\"PaymentTransaction\"").unwrap()];
    for bad in [reordered.as_str(), truncated] {
        let err = parse_request(bad.as_bytes(), Security::Plain).unwrap_err();
        let InboundError::Malformed { header, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(header.service_id.as_deref(), Some("0314092653"));
    }

    // A header of one category over the body of another.
    let mut mixed = value.clone();
    mixed["SaleToPOIRequest"]["MessageHeader"]["MessageCategory"] = "Reversal".into();
    let err = parse_request(mixed.to_string().as_bytes(), Security::Plain).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let mut response_type = value.clone();
    response_type["SaleToPOIRequest"]["MessageHeader"]["MessageType"] = "Response".into();
    let err = parse_request(response_type.to_string().as_bytes(), Security::Plain).unwrap_err();
    assert!(matches!(err, InboundError::Malformed { .. }), "{err}");
    // Two bodies, or none.
    let mut two = value.clone();
    two["SaleToPOIRequest"]["LogoutRequest"] = serde_json::json!({});
    let err = parse_request(two.to_string().as_bytes(), Security::Plain).unwrap_err();
    assert!(err.to_string().contains("two bodies"), "{err}");
    let mut none = value;
    none["SaleToPOIRequest"]
        .as_object_mut()
        .unwrap()
        .remove("PaymentRequest");
    let err = parse_request(none.to_string().as_bytes(), Security::Plain).unwrap_err();
    assert!(err.to_string().contains("no body"), "{err}");
}

#[test]
fn unreadable_json_is_rejected_saying_where() {
    let (received, reply) = answer("unreadable");
    let err = parse_request(&received, Security::Plain).unwrap_err();
    let InboundError::Unreadable {
        offset,
        line,
        column,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!((line, column), (5, 23));
    assert_eq!(received[offset], b'S');
    let Reply::Notification(notification) = &reply else {
        panic!("not a notification")
    };
    assert_eq!(notification.header.poi_id, POI_ID);
    let RequestBody::Event(event) = &notification.body else {
        panic!("not an event")
    };
    assert_eq!(event.event_to_notify, EventToNotify::Reject);
    assert!(
        event
            .event_details
            .as_deref()
            .unwrap()
            .contains("line+5+column+23")
    );

    for (bad, what) in [
        (&b""[..], "EOF"),
        (b"[1]", "an object"),
        (b"{\"SaleToPOIRequest\":{}}", "MessageHeader"),
        (b"{\"Other\":{}}", "no SaleToPOIRequest"),
        (b"\xff", "expected value"),
    ] {
        let err = parse_request(bad, Security::Plain).unwrap_err();
        assert!(matches!(err, InboundError::Unreadable { .. }), "{err:?}");
        assert!(err.to_string().contains(what), "{err}");
    }
    let huge = vec![b' '; paycrypto::nexo::MAX_MESSAGE_LEN + 1];
    assert!(matches!(
        parse_request(&huge, Security::Plain),
        Err(InboundError::TooLarge(_))
    ));
}

#[test]
fn a_rejected_message_is_echoed_at_most_4_kib() {
    let received = vec![b'x'; 10_000];
    let err = parse_request(&received, Security::Plain).unwrap_err();
    let Reply::Notification(n) = err.reply(POI_ID, &received, NOW) else {
        panic!("not a notification")
    };
    let RequestBody::Event(event) = n.body else {
        panic!("not an event")
    };
    use base64::Engine as _;
    let echoed = base64::engine::general_purpose::STANDARD
        .decode(event.rejected_message.unwrap())
        .unwrap();
    assert_eq!(echoed.len(), nexo::inbound::REJECTED_MESSAGE_MAX);
    assert_eq!(event.time_stamp, "2025-03-14T09:27:00Z");
}

#[test]
fn responses_keep_the_request_identifiers() {
    let request: SaleToPoiRequest =
        parse_request(&fixture("requests/logout.json"), Security::Plain)
            .unwrap()
            .message;
    let failure =
        SaleToPoiResponse::failure(&request.header, ErrorCondition::LoggedOut, "x").unwrap();
    assert_eq!(failure.header, request.header.to_response());
    assert!(matches!(failure.body, ResponseBody::Logout(_)));
    // An abort is answered by no response of its own.
    let abort = parse_request(&fixture("requests/abort.json"), Security::Plain).unwrap();
    assert!(
        SaleToPoiResponse::failure(&abort.message.header, ErrorCondition::NotFound, "x").is_none()
    );
    let RequestBody::Abort(body) = &abort.message.body else {
        panic!("not an abort")
    };
    assert_eq!(
        body.message_reference,
        MessageReference {
            message_category: Some(MessageCategory::Payment),
            service_id: Some("0314092653".into()),
            sale_id: Some("ECR-1".into()),
            ..MessageReference::default()
        }
    );
}

#[test]
fn amounts_travel_as_exact_numbers() {
    let text = String::from_utf8(fixture("requests/payment.json")).unwrap();
    for (amount, minor) in [("0.01", 1), ("12.5", 1250), ("999999.99", 99_999_999)] {
        let body = text.replace(
            "\"RequestedAmount\": 12.5",
            &format!("\"RequestedAmount\": {amount}"),
        );
        let read = parse_request(body.as_bytes(), Security::Plain).unwrap();
        let RequestBody::Payment(p) = &read.message.body else {
            panic!("not a payment")
        };
        assert_eq!(
            p.payment_transaction.amounts_req.requested_minor(),
            Ok(minor)
        );
        let written = format!("\"RequestedAmount\":{amount}");
        assert!(read.message.to_json().contains(&written), "{amount}");
        assert_eq!(
            Amount::from_minor(minor, "EUR").unwrap().to_string(),
            amount
        );
    }
}
