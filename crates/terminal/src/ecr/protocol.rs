//! The nexo decisions of the ECR interface that need no I/O: the
//! terminal's transaction identifiers, which `ServiceID`s are repeats, what
//! a transaction's outcome is answered with, and which key a secured
//! message names. The service ([`super::EcrService`]) performs them.

use crate::engine::{Outcome, Refusal};
use crate::journal::TxnRecord;
use crate::receipt::{self, EReceipt, ReceiptCopy};
use nexo::amount::Amount;
use nexo::inbound::timestamp;
use nexo::model::{
    AmountsResp, CardData, MessageHeader, OriginalPoiTransaction, OutputContent,
    PaymentAcquirerData, PaymentInstrumentData, PaymentReceipt, PaymentResponse, PaymentResult,
    PoiData, Response, ReversalResponse, SaleData, TransactionIdentification, additional_response,
};
use nexo::wire::{DocumentQualifier, ErrorCondition, PaymentInstrumentType, PaymentType};
use serde::Deserialize;
use serde::de::IgnoredAny;
use std::fmt;

/// How long a `ServiceID` stays used: a Sale system may not reuse one of
/// its `ServiceID`s within 48 hours (as Adyen's terminals require), and
/// `TransactionStatus` finds an exchange for that long.
pub const DEDUPE_WINDOW_SECS: i64 = 48 * 3600;

/// Whether an exchange recorded at `created_at` (Unix seconds) still holds
/// its `ServiceID` at `now`.
pub fn within_window(created_at: i64, now: i64) -> bool {
    now.saturating_sub(created_at) < DEDUPE_WINDOW_SECS
}

/// The terminal's identifier of a transaction, `POITransactionID`'s
/// `TransactionID`: its batch and trace number (STAN) as `BBBBBB.SSSSSS`.
/// It is what a refund or a reversal names as its original, and what the
/// host knows the transaction by (ISO 8583 fields 60.2 and 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoiTransactionId {
    /// Batch number.
    pub batch: u32,
    /// Trace number.
    pub stan: u32,
}

impl fmt::Display for PoiTransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}.{:06}", self.batch, self.stan)
    }
}

impl PoiTransactionId {
    /// Reads `BBBBBB.SSSSSS` (1 to 6 digits each side).
    pub fn parse(text: &str) -> Option<Self> {
        let (batch, stan) = text.split_once('.')?;
        let number = |part: &str| -> Option<u32> {
            if part.is_empty() || part.len() > 6 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        Some(Self {
            batch: number(batch)?,
            stan: number(stan)?,
        })
    }

    /// The identifier of a journal row.
    pub fn of(txn: &TxnRecord) -> Self {
        Self {
            batch: txn.batch,
            stan: txn.stan,
        }
    }
}

/// The `TransactionID` of an `OriginalPOITransaction`, read as the
/// terminal's identifier; the reason when it is missing or not one.
pub fn original_id(original: Option<&OriginalPoiTransaction>) -> Result<PoiTransactionId, String> {
    let id = original
        .and_then(|o| o.poi_transaction_id.as_ref())
        .map(|t| t.transaction_id.as_str())
        .ok_or("OriginalPOITransaction.POITransactionID.TransactionID is required")?;
    PoiTransactionId::parse(id).ok_or_else(|| {
        format!("POITransactionID {id:?} is not this terminal's (batch.stan, as 000001.000042)")
    })
}

/// The key a secured message names in its `SecurityTrailer`, with the
/// message's clear header; read before the message is opened, to choose
/// the pairing whose key opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The clear `MessageHeader` (not authenticated).
    pub header: MessageHeader,
    /// `KeyIdentifier` and `KeyVersion`, when the message is secured.
    pub key: Option<(String, u64)>,
}

#[derive(Deserialize)]
struct Root {
    #[serde(rename = "SaleToPOIRequest")]
    request: Inner,
}

#[derive(Deserialize)]
struct Inner {
    #[serde(rename = "MessageHeader")]
    header: MessageHeader,
    #[serde(rename = "SecurityTrailer")]
    trailer: Option<Trailer>,
    #[serde(rename = "NexoBlob")]
    blob: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Trailer {
    #[serde(rename = "KeyIdentifier")]
    key_identifier: String,
    #[serde(rename = "KeyVersion")]
    key_version: u64,
}

/// Reads the header and the key of a received request; `None` when they
/// cannot be read (the full reader then says why).
pub fn envelope(body: &[u8]) -> Option<Envelope> {
    // The body is bounded by the transport (64 KiB over HTTPS, the frame
    // size on serial links); serde_json reads it without recursion beyond
    // its own depth limit.
    let root: Root = serde_json::from_slice(body).ok()?;
    let inner = root.request;
    let key = match (inner.trailer, inner.blob) {
        (Some(t), _) => Some((t.key_identifier, t.key_version)),
        (None, Some(_)) => Some((String::new(), 0)),
        (None, None) => None,
    };
    Some(Envelope {
        header: inner.header,
        key,
    })
}

/// The supervisor code in `SaleToAcquirerData`, URL-encoded pairs with
/// `supervisorCode=NNNNNN`.
pub fn supervisor_code(sale_data: Option<&SaleData>) -> Option<String> {
    let data = sale_data?.sale_to_acquirer_data.as_deref()?;
    form_urlencoded::parse(data.as_bytes())
        .find(|(k, _)| k == "supervisorCode")
        .map(|(_, v)| v.into_owned())
}

/// `SaleData` as echoed in an answer: without `SaleToAcquirerData`, which
/// carries the supervisor's code.
pub fn echoed_sale_data(sale_data: &SaleData) -> SaleData {
    SaleData {
        sale_to_acquirer_data: None,
        ..sale_data.clone()
    }
}

/// What a transaction's end is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `None`: success; otherwise the failure's condition.
    pub condition: Option<ErrorCondition>,
    /// Why, for `AdditionalResponse` `message`.
    pub message: String,
    /// The host's response code, when it answered.
    pub response_code: Option<String>,
    /// Authorized by the host (false: offline, or not authorized).
    pub online: bool,
}

/// The nexo condition of a host's refusal code.
fn declined_condition(code: &str) -> ErrorCondition {
    match code {
        "55" => ErrorCondition::WrongPin,
        "14" | "54" => ErrorCondition::InvalidCard,
        "91" | "96" => ErrorCondition::UnreachableHost,
        _ => ErrorCondition::Refusal,
    }
}

/// The nexo condition of a terminal's refusal before sending.
fn refusal_condition(refusal: &Refusal) -> ErrorCondition {
    match refusal {
        Refusal::AmountOutsideLimits { .. } => ErrorCondition::Refusal,
        Refusal::MethodNotEnabled(_) => ErrorCondition::NotAllowed,
        Refusal::CardExpired { .. } | Refusal::CardUnreadable(_) => ErrorCondition::InvalidCard,
        Refusal::HostUnreachable(_) => ErrorCondition::UnreachableHost,
        Refusal::OriginalRequired => ErrorCondition::MessageFormat,
        Refusal::NotSignedOn => ErrorCondition::UnavailableService,
    }
}

impl Verdict {
    /// The answer to a transaction that ended with `outcome`.
    pub fn of(outcome: &Outcome) -> Self {
        let failure = |condition, message: String, code: Option<&str>| Verdict {
            condition: Some(condition),
            message,
            response_code: code.map(str::to_owned),
            online: code.is_some(),
        };
        match outcome {
            Outcome::Approved { .. } => Verdict {
                condition: None,
                message: "approved".into(),
                response_code: Some("00".into()),
                online: true,
            },
            Outcome::ApprovedOffline => Verdict {
                condition: None,
                message: "approved offline under the floor limit".into(),
                response_code: None,
                online: false,
            },
            Outcome::Declined { code, reason } => {
                failure(declined_condition(code), (*reason).into(), Some(code))
            }
            Outcome::Reversed { why } => failure(
                ErrorCondition::UnreachableHost,
                format!("{why}; the transaction is reversed"),
                None,
            ),
            Outcome::FailedBeforeSending(refusal) => {
                failure(refusal_condition(refusal), refusal.to_string(), None)
            }
        }
    }

    /// The answer to the transaction of a journal row, for an exchange
    /// whose answer was not stored before the terminal stopped: a row still
    /// `sending` has its reversal stored, which the terminal sends first.
    pub fn of_record(txn: &TxnRecord) -> Self {
        let reason = txn.reason.clone().unwrap_or_default();
        match txn.state.as_str() {
            "approved" | "voided" => Self::of(&Outcome::Approved {
                auth_code: txn.auth_code.clone().unwrap_or_default(),
                rrn: txn.rrn.clone().unwrap_or_default(),
            }),
            "approved_offline" => Self::of(&Outcome::ApprovedOffline),
            "declined" => {
                let code = txn.response_code.clone().unwrap_or_default();
                Verdict {
                    condition: Some(declined_condition(&code)),
                    message: reason,
                    response_code: Some(code),
                    online: true,
                }
            }
            "failed" => Verdict {
                condition: Some(ErrorCondition::Refusal),
                message: reason,
                response_code: None,
                online: false,
            },
            "reversed" => Self::of(&Outcome::Reversed { why: reason }),
            _ => Self::of(&Outcome::Reversed {
                why: "the terminal stopped while the host was asked".into(),
            }),
        }
    }

    /// The `Response` of this verdict.
    pub fn response(&self) -> Response {
        match self.condition {
            None => Response::success(),
            Some(condition) => {
                let mut pairs = vec![("message", self.message.as_str())];
                if let Some(code) = &self.response_code {
                    pairs.push(("responseCode", code));
                }
                Response {
                    result: nexo::wire::ResultType::Failure,
                    error_condition: Some(condition),
                    additional_response: Some(additional_response(&pairs)),
                }
            }
        }
    }
}

/// Who the terminal is, for the acquirer data of its answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquirer {
    /// The host that authorized (`AcquirerID`).
    pub host: Option<String>,
    /// Field 42.
    pub merchant_id: String,
    /// Field 41.
    pub terminal_id: String,
}

/// `time` (Unix seconds) as a nexo `TimeStamp`.
fn unix_timestamp(unix: i64) -> String {
    timestamp(receipt::utc(unix))
}

fn poi_data(txn: &TxnRecord) -> PoiData {
    PoiData {
        poi_transaction_id: TransactionIdentification {
            transaction_id: PoiTransactionId::of(txn).to_string(),
            time_stamp: unix_timestamp(txn.created_at),
        },
        poi_reconciliation_id: Some(txn.batch.to_string()),
    }
}

/// The receipts of a transaction as nexo `PaymentReceipt`s: the cashier's
/// (merchant) copy and the customer's, as printed.
pub fn payment_receipts(receipts: &[EReceipt]) -> Vec<PaymentReceipt> {
    receipts
        .iter()
        .map(|r| PaymentReceipt {
            document_qualifier: match r.copy {
                ReceiptCopy::Merchant => DocumentQualifier::CashierReceipt,
                ReceiptCopy::Customer => DocumentQualifier::CustomerReceipt,
            },
            required_signature_flag: Some(r.signature_required),
            output_content: OutputContent::text(r.lines.iter().cloned()),
        })
        .collect()
}

/// The amount of `minor` units of the journal's numeric currency, and its
/// alphabetic code.
fn major(minor: u64, currency: u16) -> (Option<String>, Amount) {
    let (code, _) = receipt::currency_code(currency);
    let amount = Amount::from_minor(minor, &code).unwrap_or(Amount::ZERO);
    (Some(code), amount)
}

/// The `PaymentResponse` to a payment of `payment_type` whose request
/// carried `sale_data` (echoed, without `SaleToAcquirerData`), answered by
/// journal row `txn`.
pub fn payment_response(
    payment_type: PaymentType,
    sale_data: Option<&SaleData>,
    txn: &TxnRecord,
    verdict: &Verdict,
    acquirer: &Acquirer,
    receipts: &[EReceipt],
) -> PaymentResponse {
    let approved = verdict.condition.is_none();
    let (currency, amount) = major(if approved { txn.amount } else { 0 }, txn.currency);
    let masked = receipt::mask(&txn.masked_pan);
    let card_data = (!masked.is_empty()).then(|| PaymentInstrumentData {
        // A scanned payment code is a phone's wallet app.
        payment_instrument_type: if paycrypto::paycode::looks_like_code(&masked) {
            PaymentInstrumentType::Mobile
        } else {
            PaymentInstrumentType::Card
        },
        card_data: Some(CardData {
            payment_brand: Some("posnet".into()),
            masked_pan: Some(masked),
            entry_mode: Vec::new(),
        }),
    });
    let acquirer_data = approved.then(|| PaymentAcquirerData {
        acquirer_id: acquirer.host.clone(),
        merchant_id: acquirer.merchant_id.clone(),
        acquirer_poi_id: acquirer.terminal_id.clone(),
        acquirer_transaction_id: txn.rrn.clone().filter(|r| !r.is_empty()).map(|rrn| {
            TransactionIdentification {
                transaction_id: rrn,
                time_stamp: unix_timestamp(txn.created_at),
            }
        }),
        approval_code: txn.auth_code.clone().filter(|c| !c.is_empty()),
    });
    PaymentResponse {
        response: verdict.response(),
        sale_data: sale_data.map(echoed_sale_data),
        poi_data: Some(poi_data(txn)),
        payment_result: Some(PaymentResult {
            payment_type: Some(payment_type),
            payment_instrument_data: card_data,
            amounts_resp: Some(AmountsResp {
                currency,
                authorized_amount: amount,
                tip_amount: None,
                cash_back_amount: None,
            }),
            online_flag: Some(verdict.online),
            payment_acquirer_data: acquirer_data,
        }),
        payment_receipt: payment_receipts(receipts),
    }
}

/// The `ReversalResponse` to a reversal of `original`, answered by the
/// void's journal row `txn`.
pub fn reversal_response(
    original: &OriginalPoiTransaction,
    txn: &TxnRecord,
    verdict: &Verdict,
    receipts: &[EReceipt],
) -> ReversalResponse {
    let approved = verdict.condition.is_none();
    ReversalResponse {
        response: verdict.response(),
        poi_data: Some(poi_data(txn)),
        original_poi_transaction: Some(original.clone()),
        reversed_amount: approved.then(|| major(txn.amount, txn.currency).1),
        payment_receipt: payment_receipts(receipts),
    }
}

/// Keeps, of a repeated answer's receipts, those `TransactionStatus` asks
/// for: none unless `ReceiptReprintFlag`, and only the `DocumentQualifier`s
/// named (all when none is).
pub fn reprint(
    receipts: &mut Vec<PaymentReceipt>,
    flag: Option<bool>,
    wanted: &[DocumentQualifier],
) {
    if flag != Some(true) {
        receipts.clear();
    } else if !wanted.is_empty() {
        receipts.retain(|r| wanted.contains(&r.document_qualifier));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexo::model::PaymentRequest;

    fn record(state: &str, code: Option<&str>) -> TxnRecord {
        TxnRecord {
            id: 7,
            kind: "sale".into(),
            amount: 1250,
            currency: 978,
            masked_pan: "620000******0005".into(),
            stan: 42,
            batch: 3,
            state: state.into(),
            response_code: code.map(Into::into),
            reason: Some("insufficient funds".into()),
            auth_code: Some("A1B2C3".into()),
            rrn: Some("407309000123".into()),
            created_at: 1_741_944_418,
            online_pin: false,
        }
    }

    #[test]
    fn transaction_ids_round_trip_and_refuse_garbage() {
        let id = PoiTransactionId { batch: 3, stan: 42 };
        assert_eq!(id.to_string(), "000003.000042");
        assert_eq!(PoiTransactionId::parse("000003.000042"), Some(id));
        assert_eq!(PoiTransactionId::parse("3.42"), Some(id));
        for bad in [
            "",
            "3",
            "3.",
            ".42",
            "a.1",
            "1.-1",
            "1234567.1",
            "1.2.3",
            "+1.2",
        ] {
            assert_eq!(PoiTransactionId::parse(bad), None, "{bad}");
        }
        assert!(original_id(None).unwrap_err().contains("required"));
    }

    #[test]
    fn the_window_is_48_hours() {
        let t = 1_000_000;
        assert!(within_window(t, t));
        assert!(within_window(t, t + DEDUPE_WINDOW_SECS - 1));
        assert!(!within_window(t, t + DEDUPE_WINDOW_SECS));
    }

    #[test]
    fn envelopes_name_their_key() {
        let plain = br#"{"SaleToPOIRequest":{"MessageHeader":{"MessageClass":"Service","MessageCategory":"Login","MessageType":"Request","POIID":"T1"},"LoginRequest":{}}}"#;
        let e = envelope(plain).unwrap();
        assert_eq!(e.key, None);
        assert_eq!(e.header.poi_id, "T1");
        let secured = br#"{"SaleToPOIRequest":{"MessageHeader":{"MessageClass":"Service","MessageCategory":"Login","MessageType":"Request","POIID":"T1"},"NexoBlob":"AA==","SecurityTrailer":{"KeyIdentifier":"k1","KeyVersion":2}}}"#;
        assert_eq!(envelope(secured).unwrap().key, Some(("k1".into(), 2)));
        let no_trailer = br#"{"SaleToPOIRequest":{"MessageHeader":{"MessageClass":"Service","MessageCategory":"Login","MessageType":"Request","POIID":"T1"},"NexoBlob":"AA=="}}"#;
        assert_eq!(envelope(no_trailer).unwrap().key, Some((String::new(), 0)));
        assert_eq!(envelope(b"{\"SaleToPOIRequest\":"), None);
    }

    #[test]
    fn supervisor_codes_come_from_url_encoded_pairs() {
        let data = |text: &str| SaleData {
            sale_transaction_id: TransactionIdentification {
                transaction_id: "1".into(),
                time_stamp: "t".into(),
            },
            sale_reference_id: None,
            operator_id: None,
            operator_language: None,
            shift_number: None,
            sale_to_acquirer_data: Some(text.into()),
        };
        assert_eq!(
            supervisor_code(Some(&data("a=1&supervisorCode=123456"))).as_deref(),
            Some("123456")
        );
        assert_eq!(supervisor_code(Some(&data("supervisor=1"))), None);
        assert_eq!(supervisor_code(None), None);
        assert_eq!(
            echoed_sale_data(&data("supervisorCode=1")).sale_to_acquirer_data,
            None
        );
    }

    #[test]
    fn outcomes_map_to_conditions() {
        let declined = |code: &'static str| Outcome::Declined {
            code: code.into(),
            reason: crate::engine::reason(code),
        };
        assert_eq!(
            Verdict::of(&declined("55")).condition,
            Some(ErrorCondition::WrongPin)
        );
        assert_eq!(
            Verdict::of(&declined("51")).condition,
            Some(ErrorCondition::Refusal)
        );
        assert_eq!(
            Verdict::of(&declined("54")).condition,
            Some(ErrorCondition::InvalidCard)
        );
        assert_eq!(
            Verdict::of(&Outcome::Reversed { why: "x".into() }).condition,
            Some(ErrorCondition::UnreachableHost)
        );
        assert_eq!(
            Verdict::of(&Outcome::FailedBeforeSending(Refusal::HostUnreachable("y"))).condition,
            Some(ErrorCondition::UnreachableHost)
        );
        assert_eq!(
            Verdict::of(&Outcome::FailedBeforeSending(Refusal::CardExpired {
                expiry: "2001".into()
            }))
            .condition,
            Some(ErrorCondition::InvalidCard)
        );
        let v = Verdict::of(&declined("51"));
        assert_eq!(
            v.response().additional_response.as_deref(),
            Some("message=insufficient+funds&responseCode=51")
        );
        assert_eq!(Verdict::of_record(&record("declined", Some("51"))), v);
        assert_eq!(
            Verdict::of_record(&record("approved", Some("00"))).condition,
            None
        );
        assert_eq!(
            Verdict::of_record(&record("sending", None)).condition,
            Some(ErrorCondition::UnreachableHost)
        );
    }

    #[test]
    fn approvals_carry_masked_card_and_acquirer_data_only() {
        let request: PaymentRequest = serde_json::from_str(
            r#"{"SaleData":{"SaleTransactionID":{"TransactionID":"27908","TimeStamp":"2025-03-14T09:26:53.000Z"},"SaleToAcquirerData":"supervisorCode=123456"},
                "PaymentTransaction":{"AmountsReq":{"Currency":"EUR","RequestedAmount":12.5}}}"#,
        )
        .unwrap();
        let txn = record("approved", Some("00"));
        let acquirer = Acquirer {
            host: Some("127.0.0.1:9000".into()),
            merchant_id: "M1".into(),
            terminal_id: "T1".into(),
        };
        let verdict = Verdict::of(&Outcome::Approved {
            auth_code: "A1B2C3".into(),
            rrn: "407309000123".into(),
        });
        let pay = |txn: &TxnRecord, verdict: &Verdict| {
            payment_response(
                request.payment_type(),
                Some(&request.sale_data),
                txn,
                verdict,
                &acquirer,
                &[],
            )
        };
        let r = pay(&txn, &verdict);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(r.response, Response::success());
        assert_eq!(
            r.poi_data.unwrap().poi_transaction_id.transaction_id,
            "000003.000042"
        );
        let result = r.payment_result.unwrap();
        assert_eq!(
            result.amounts_resp.unwrap().authorized_amount,
            Amount::from_minor(1250, "EUR").unwrap()
        );
        let acq = result.payment_acquirer_data.unwrap();
        assert_eq!(acq.approval_code.as_deref(), Some("A1B2C3"));
        assert_eq!(
            acq.acquirer_transaction_id.unwrap().transaction_id,
            "407309000123"
        );
        assert!(json.contains("620000******0005"));
        assert!(!json.contains("supervisorCode"), "{json}");

        let declined = Verdict::of_record(&record("declined", Some("51")));
        let r = pay(&record("declined", Some("51")), &declined);
        let result = r.payment_result.unwrap();
        assert_eq!(result.amounts_resp.unwrap().authorized_amount, Amount::ZERO);
        assert!(result.payment_acquirer_data.is_none());
    }

    #[test]
    fn reprints_keep_what_is_asked() {
        let receipt = |copy| EReceipt {
            copy,
            merchant_name: String::new(),
            merchant_id: String::new(),
            terminal_id: String::new(),
            time: String::new(),
            kind: String::new(),
            masked_pan: String::new(),
            amount: 0,
            currency: String::new(),
            amount_text: String::new(),
            auth_code: None,
            rrn: None,
            stan: 0,
            batch: 0,
            result: String::new(),
            signature_required: false,
            lines: vec!["x".into()],
        };
        let all = payment_receipts(&[
            receipt(ReceiptCopy::Merchant),
            receipt(ReceiptCopy::Customer),
        ]);
        let mut r = all.clone();
        reprint(&mut r, None, &[]);
        assert!(r.is_empty());
        let mut r = all.clone();
        reprint(&mut r, Some(true), &[DocumentQualifier::CustomerReceipt]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].document_qualifier, DocumentQualifier::CustomerReceipt);
        let mut r = all.clone();
        reprint(&mut r, Some(true), &[]);
        assert_eq!(r, all);
    }
}
