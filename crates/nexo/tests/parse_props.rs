//! Properties of the message reader: hostile input never panics, whatever
//! reads writes back to itself, and built messages read back equal.

use std::path::Path;
use std::sync::LazyLock;

use nexo::amount::Amount;
use nexo::inbound::{Security, parse_request, parse_response};
use nexo::message::{RequestBody, SaleToPoiRequest, ToJson};
use nexo::model::{
    AmountsReq, MessageHeader, PaymentData, PaymentRequest, PaymentTransaction, SaleData,
    TransactionIdentification,
};
use nexo::wire::{MessageCategory, MessageClass, MessageType, PaymentType};
use paycrypto::nexo::{NexoKey, encrypt_with_nonce};
use proptest::prelude::*;

/// Every fixture, read once.
static FIXTURES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut all = Vec::new();
    for dir in ["requests", "responses", "replies"] {
        let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        all.extend(paths.into_iter().map(|p| std::fs::read(p).unwrap()));
    }
    all
});

/// The key, derived once (PBKDF2 is slow by design).
static KEY: LazyLock<NexoKey> =
    LazyLock::new(|| NexoKey::derive("posnet test passphrase", "posnetkey", 1).unwrap());

/// Reads `bytes` both ways; whatever reads must write JSON that reads back
/// to the same message.
fn read_both(bytes: &[u8], security: Security<'_>) -> Result<(), TestCaseError> {
    if let Ok(read) = parse_request(bytes, security) {
        let again = parse_request(read.message.to_json().as_bytes(), Security::Plain)
            .map_err(|e| TestCaseError::fail(format!("re-read: {e}")))?;
        prop_assert_eq!(again.message, read.message);
    }
    if let Ok(read) = parse_response(bytes, security) {
        let again = parse_response(read.message.to_json().as_bytes(), Security::Plain)
            .map_err(|e| TestCaseError::fail(format!("re-read: {e}")))?;
        prop_assert_eq!(again.message, read.message);
    }
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, quotes, backslashes and control characters included.
    prop::string::string_regex("(.|[\"\\\\\u{0}-\u{1f}\u{7f}-\u{10ffff}]){0,24}").unwrap()
}

prop_compose! {
    fn payment()(
        ids in prop::collection::vec(text(), 5),
        optional in prop::collection::vec(prop::option::of(text()), 2),
        currency in prop::sample::select(vec!["EUR", "JPY", "KWD", "CNY", "USD"]),
        minor in any::<u64>(),
        payment_type in prop::option::of(prop::sample::select(PaymentType::ALL.to_vec())),
    ) -> SaleToPoiRequest {
        SaleToPoiRequest {
            header: MessageHeader {
                protocol_version: Some("3.0".into()),
                message_class: MessageClass::Service,
                message_category: MessageCategory::Payment,
                message_type: MessageType::Request,
                service_id: Some(ids[0].clone()),
                device_id: optional[0].clone(),
                sale_id: Some(ids[1].clone()),
                poi_id: ids[2].clone(),
            },
            body: RequestBody::Payment(PaymentRequest {
                sale_data: SaleData {
                    sale_transaction_id: TransactionIdentification {
                        transaction_id: ids[3].clone(),
                        time_stamp: ids[4].clone(),
                    },
                    sale_reference_id: None,
                    operator_id: optional[1].clone(),
                    operator_language: None,
                    shift_number: None,
                    sale_to_acquirer_data: None,
                },
                payment_transaction: PaymentTransaction {
                    amounts_req: AmountsReq {
                        currency: currency.into(),
                        requested_amount: Some(Amount::from_minor(minor, currency).unwrap()),
                        tip_amount: None,
                        cash_back_amount: None,
                    },
                    original_poi_transaction: None,
                },
                payment_data: payment_type.map(|t| PaymentData { payment_type: Some(t) }),
            }),
        }
    }
}

proptest! {
    #[test]
    fn any_bytes_read_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        read_both(&bytes, Security::Plain)?;
    }

    #[test]
    fn damaged_fixtures_read_without_panic(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = FIXTURES[which.index(FIXTURES.len())].clone();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        read_both(&bytes, Security::Plain)?;
    }

    #[test]
    fn damaged_secured_messages_never_pass(
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let key = &*KEY;
        let requests: Vec<_> = FIXTURES
            .iter()
            .filter(|t| parse_request(t, Security::Plain).is_ok())
            .collect();
        let plain = requests[which.index(requests.len())];
        let secured = encrypt_with_nonce(key, plain, &[9; 16]).unwrap().into_bytes();
        let mut bad = secured.clone();
        let i = at.index(bad.len());
        bad[i] = byte;
        // A change outside the authenticated content (the clear header,
        // whitespace, an equivalent spelling) still opens to the same
        // message; anything else is refused.
        if let Ok(read) = parse_request(&bad, Security::Required(key)) {
            let original = parse_request(plain, Security::Plain).unwrap();
            prop_assert_eq!(read.message, original.message);
        }
    }

    #[test]
    fn built_payments_read_back_equal(request in payment()) {
        let json = request.to_json();
        let read = parse_request(json.as_bytes(), Security::Plain).unwrap();
        prop_assert_eq!(read.message, request);
    }

    #[test]
    fn amounts_convert_exactly_both_ways(
        minor in any::<u64>(),
        currency in prop::sample::select(vec!["EUR", "JPY", "KWD", "CLF", "USD"]),
    ) {
        let amount = Amount::from_minor(minor, currency).unwrap();
        let text = serde_json::to_string(&amount).unwrap();
        let back: Amount = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back.to_minor(currency), Ok(minor));
    }

    #[test]
    fn any_number_text_reads_without_panic(text in "[-+0-9.eE_]{0,40}") {
        if let Ok(amount) = Amount::from_json_number(&text) {
            let _ = amount.to_minor("EUR");
            let _ = amount.to_minor("JPY");
        }
    }
}
