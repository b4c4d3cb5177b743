//! Receipts from any journal row and any merchant name: lines fit the
//! paper, printer commands come only from the receipt module, and a card
//! number never appears in full.

use proptest::prelude::*;
use terminal::journal::TxnRecord;
use terminal::receipt::{ESC_INIT, GS_PARTIAL_CUT, Merchant, Receipt, ReceiptCopy, WIDTH};

fn record() -> impl Strategy<Value = TxnRecord> {
    (
        (
            prop_oneof![
                Just("sale".to_string()),
                Just("refund".to_string()),
                Just("balance".to_string()),
                any::<String>()
            ],
            any::<u64>(),
            any::<u16>(),
            "[0-9]{12,19}",
            any::<u32>(),
            any::<u32>(),
        ),
        (
            prop_oneof![
                Just("approved".to_string()),
                Just("approved_offline".to_string()),
                Just("declined".to_string()),
                Just("failed".to_string()),
                any::<String>()
            ],
            proptest::option::of(any::<String>()),
            proptest::option::of(any::<String>()),
            proptest::option::of(any::<String>()),
            proptest::option::of(any::<String>()),
            any::<i64>(),
        ),
    )
        .prop_map(
            |(
                (kind, amount, currency, pan, stan, batch),
                (state, response_code, reason, auth_code, rrn, created_at),
            )| TxnRecord {
                id: 1,
                kind,
                amount,
                currency,
                masked_pan: pan,
                stan,
                batch,
                state,
                response_code,
                reason,
                auth_code,
                rrn,
                created_at,
                online_pin: false,
            },
        )
}

proptest! {
    #[test]
    fn any_record_prints_within_the_paper(
        txn in record(),
        name in any::<String>(),
        merchant_id in any::<String>(),
        pin in any::<bool>(),
        merchant_copy in any::<bool>(),
    ) {
        let merchant = Merchant { name, merchant_id, terminal_id: "T0000001".into() };
        let copy = if merchant_copy { ReceiptCopy::Merchant } else { ReceiptCopy::Customer };
        let r = Receipt::new(&merchant, &txn, pin, copy);
        let text = r.text();
        for line in text.lines() {
            prop_assert!(line.chars().count() <= WIDTH, "{line:?}");
            prop_assert!(!line.chars().any(char::is_control), "{line:?}");
        }
        prop_assert!(!text.contains(&txn.masked_pan));
        let escpos = r.escpos();
        prop_assert!(escpos.starts_with(&ESC_INIT));
        prop_assert!(escpos.ends_with(&GS_PARTIAL_CUT));
        prop_assert!(escpos.is_ascii());
        // Init, heading (centre, bold on, off, left), copy line (centre, left), feed.
        prop_assert_eq!(escpos.iter().filter(|b| **b == 0x1b).count(), 8);
        prop_assert_eq!(escpos.iter().filter(|b| **b == 0x1d).count(), 1);
        let json = serde_json::to_string(r.electronic()).unwrap();
        prop_assert!(!json.contains(&txn.masked_pan));
    }
}
