//! Receipts: the merchant's and the customer's copy of a transaction, as
//! plain text for a 40-column printer or a screen, as ESC/POS bytes for a
//! thermal printer, and as JSON (an e-receipt) for the customer's phone.
//! All three come from one list of lines, so they never disagree.
//!
//! A receipt never carries a full card number: the PAN is masked again here
//! (first six, last four) whatever the journal holds, and every text is
//! stripped of control characters so that a merchant name cannot smuggle
//! printer commands.

use crate::engine::TxnKind;
use crate::journal::TxnRecord;
use iso_currency::Currency;
use serde::Serialize;

/// Characters per printed line (58 mm paper, font A).
pub const WIDTH: usize = 40;

/// ESC/POS: initialize the printer (ESC @).
pub const ESC_INIT: [u8; 2] = [0x1b, 0x40];
/// ESC/POS: select cut mode, partial cut (GS V 1).
pub const GS_PARTIAL_CUT: [u8; 3] = [0x1d, 0x56, 0x01];
const ESC_ALIGN_CENTRE: [u8; 3] = [0x1b, 0x61, 0x01];
const ESC_ALIGN_LEFT: [u8; 3] = [0x1b, 0x61, 0x00];
const ESC_BOLD_ON: [u8; 3] = [0x1b, 0x45, 0x01];
const ESC_BOLD_OFF: [u8; 3] = [0x1b, 0x45, 0x00];
/// Print and feed four lines (ESC d 4) so the cut clears the last line.
const ESC_FEED_4: [u8; 3] = [0x1b, 0x64, 0x04];

/// Whose copy a receipt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptCopy {
    /// The cardholder's copy.
    Customer,
    /// The merchant's copy (with a signature line when no PIN was verified).
    Merchant,
}

impl ReceiptCopy {
    /// From `customer` or `merchant`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "customer" => Some(ReceiptCopy::Customer),
            "merchant" => Some(ReceiptCopy::Merchant),
            _ => None,
        }
    }
}

/// Who took the payment: the merchant's name from the host's parameters and
/// the ids from the terminal's enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    /// Name printed at the top.
    pub name: String,
    /// Field 42.
    pub merchant_id: String,
    /// Field 41.
    pub terminal_id: String,
}

/// A line of a receipt, before it is laid out for a medium.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    /// Centred and bold (the merchant's name).
    Heading(String),
    /// Centred.
    Centre(String),
    /// A label on the left, its value on the right.
    Pair(&'static str, String),
    /// Left-aligned, wrapped at word boundaries.
    Text(String),
    /// A full-width rule.
    Rule,
    /// An empty line.
    Blank,
}

/// The e-receipt a phone shows: the receipt's data and its printed lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EReceipt {
    /// Whose copy.
    pub copy: ReceiptCopy,
    /// Merchant name.
    pub merchant_name: String,
    /// Merchant id (field 42).
    pub merchant_id: String,
    /// Terminal id (field 41).
    pub terminal_id: String,
    /// When the transaction started, RFC 3339 in UTC.
    pub time: String,
    /// Transaction kind, as [`TxnKind::name`].
    pub kind: String,
    /// Card number, first six and last four digits.
    pub masked_pan: String,
    /// Amount in minor units.
    pub amount: u64,
    /// ISO 4217 alphabetic code (the numeric code when unknown).
    pub currency: String,
    /// Amount with its decimals, without the currency (`12.50`).
    pub amount_text: String,
    /// Authorization code.
    pub auth_code: Option<String>,
    /// Retrieval reference number.
    pub rrn: Option<String>,
    /// Trace number.
    pub stan: u32,
    /// Batch number.
    pub batch: u32,
    /// `APPROVED`, `APPROVED OFFLINE`, `DECLINED: <reason>`, `REVERSED`...
    pub result: String,
    /// Whether the copy asks for the cardholder's signature.
    pub signature_required: bool,
    /// The receipt as printed, one entry a line.
    pub lines: Vec<String>,
}

/// A receipt, ready to render as text, ESC/POS or JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    lines: Vec<Line>,
    data: EReceipt,
}

impl Receipt {
    /// The `copy` receipt of `txn`. `pin_verified` says whether the
    /// cardholder entered a PIN; if not, the merchant copy of an approved
    /// payment gets a signature line.
    pub fn new(
        merchant: &Merchant,
        txn: &TxnRecord,
        pin_verified: bool,
        copy: ReceiptCopy,
    ) -> Self {
        let kind = TxnKind::from_name(&txn.kind);
        let masked_pan = mask(&txn.masked_pan);
        let (currency, amount_text) = money(txn.amount, txn.currency);
        let result = result_text(txn);
        let approved = matches!(txn.state.as_str(), "approved" | "approved_offline");
        let moves_money = kind.is_some_and(|k| k != TxnKind::Balance);
        // A wallet's one-time code authenticates its holder: no signature.
        let wallet = paycrypto::paycode::looks_like_code(&masked_pan);
        let signature_required =
            copy == ReceiptCopy::Merchant && approved && moves_money && !pin_verified && !wallet;
        let nonempty = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(clean);

        let mut lines = vec![
            Line::Heading(clean(&merchant.name)),
            Line::Pair("MERCHANT ID", clean(&merchant.merchant_id)),
            Line::Pair("TERMINAL ID", clean(&merchant.terminal_id)),
            Line::Pair("DATE/TIME", date_time(txn.created_at)),
            Line::Rule,
            Line::Text(kind_title(kind, &txn.kind)),
            Line::Pair(if wallet { "WALLET" } else { "CARD" }, masked_pan.clone()),
        ];
        if moves_money {
            lines.push(Line::Pair("AMOUNT", format!("{currency} {amount_text}")));
        }
        if let Some(auth) = nonempty(&txn.auth_code) {
            lines.push(Line::Pair("AUTH CODE", auth));
        }
        if let Some(rrn) = nonempty(&txn.rrn) {
            lines.push(Line::Pair("RRN", rrn));
        }
        lines.push(Line::Pair("STAN", format!("{:06}", txn.stan)));
        lines.push(Line::Pair("BATCH", format!("{:06}", txn.batch)));
        if txn.state == "declined"
            && let Some(code) = nonempty(&txn.response_code)
        {
            lines.push(Line::Pair("RESPONSE CODE", code));
        }
        lines.push(Line::Rule);
        lines.push(Line::Text(result.clone()));
        if approved && pin_verified {
            lines.push(Line::Text("PIN VERIFIED".into()));
        }
        if signature_required {
            lines.push(Line::Text("CARDHOLDER SIGNATURE".into()));
            lines.push(Line::Blank);
            lines.push(Line::Text(format!("X{}", "_".repeat(WIDTH - 1))));
        }
        lines.push(Line::Blank);
        lines.push(Line::Centre(
            match copy {
                ReceiptCopy::Customer => "CUSTOMER COPY",
                ReceiptCopy::Merchant => "MERCHANT COPY",
            }
            .into(),
        ));

        let data = EReceipt {
            copy,
            merchant_name: clean(&merchant.name),
            merchant_id: clean(&merchant.merchant_id),
            terminal_id: clean(&merchant.terminal_id),
            time: rfc3339(txn.created_at),
            kind: clean(&txn.kind),
            masked_pan,
            amount: txn.amount,
            currency,
            amount_text,
            auth_code: nonempty(&txn.auth_code),
            rrn: nonempty(&txn.rrn),
            stan: txn.stan,
            batch: txn.batch,
            result,
            signature_required,
            lines: Vec::new(),
        };
        let mut receipt = Receipt { lines, data };
        receipt.data.lines = receipt.text_lines();
        receipt
    }

    fn text_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for line in &self.lines {
            layout(line, &mut out);
        }
        out
    }

    /// The receipt as text, [`WIDTH`] columns, one `\n` after each line.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for line in &self.data.lines {
            s.push_str(line);
            s.push('\n');
        }
        s
    }

    /// The receipt for an ESC/POS printer: initialize, the merchant's name
    /// centred in bold, the same lines as [`Receipt::text`] (characters
    /// outside ASCII print as `?`: code pages differ between printers),
    /// feed, partial cut.
    pub fn escpos(&self) -> Vec<u8> {
        let mut out = ESC_INIT.to_vec();
        for line in &self.lines {
            let centred = matches!(line, Line::Heading(_) | Line::Centre(_));
            let bold = matches!(line, Line::Heading(_));
            if centred {
                out.extend_from_slice(&ESC_ALIGN_CENTRE);
            }
            if bold {
                out.extend_from_slice(&ESC_BOLD_ON);
            }
            let mut laid = Vec::new();
            match line {
                // The printer centres: no padding.
                Line::Heading(t) | Line::Centre(t) => wrap(t, &mut laid),
                other => layout(other, &mut laid),
            }
            for l in laid {
                out.extend(l.chars().map(|c| if c.is_ascii() { c as u8 } else { b'?' }));
                out.push(b'\n');
            }
            if bold {
                out.extend_from_slice(&ESC_BOLD_OFF);
            }
            if centred {
                out.extend_from_slice(&ESC_ALIGN_LEFT);
            }
        }
        out.extend_from_slice(&ESC_FEED_4);
        out.extend_from_slice(&GS_PARTIAL_CUT);
        out
    }

    /// The e-receipt for a phone.
    pub fn electronic(&self) -> &EReceipt {
        &self.data
    }
}

/// Lays out one line in [`WIDTH`] columns.
fn layout(line: &Line, out: &mut Vec<String>) {
    match line {
        Line::Heading(t) | Line::Centre(t) => {
            let mut laid = Vec::new();
            wrap(t, &mut laid);
            for l in laid {
                let pad = (WIDTH - width(&l)) / 2;
                out.push(format!("{}{l}", " ".repeat(pad)));
            }
        }
        Line::Pair(label, value) => {
            let used = label.len() + width(value);
            if used < WIDTH {
                out.push(format!("{label}{}{value}", " ".repeat(WIDTH - used)));
            } else {
                out.push((*label).to_string());
                let mut laid = Vec::new();
                wrap(value, &mut laid);
                for l in laid {
                    out.push(format!("{}{l}", " ".repeat(WIDTH - width(&l))));
                }
            }
        }
        Line::Text(t) => wrap(t, out),
        Line::Rule => out.push("-".repeat(WIDTH)),
        Line::Blank => out.push(String::new()),
    }
}

/// Columns a text takes (one a character: receipts are ASCII apart from
/// merchant names).
fn width(s: &str) -> usize {
    s.chars().count()
}

/// Breaks `text` into lines of at most [`WIDTH`] columns at spaces,
/// splitting words longer than a line.
fn wrap(text: &str, out: &mut Vec<String>) {
    let mut current = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word: Vec<char> = word.chars().collect();
        // A word longer than a line fills whole lines first (bounded: each
        // pass removes WIDTH characters).
        while word.len() > WIDTH {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            out.push(word.drain(..WIDTH).collect());
        }
        let word: String = word.into_iter().collect();
        if current.is_empty() {
            current = word;
        } else if width(&current) + 1 + width(&word) <= WIDTH {
            current.push(' ');
            current.push_str(&word);
        } else {
            out.push(std::mem::replace(&mut current, word));
        }
    }
    if !current.is_empty() || out.is_empty() {
        out.push(current);
    }
}

/// `text` without control characters (tabs, newlines, ESC...), which
/// would break the layout or command a printer.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Keeps the first six and last four digits of a card number whatever the
/// input (already masked or not), and drops anything that is not a digit or `*`.
pub fn mask(pan: &str) -> String {
    let kept: String = pan
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '*')
        .collect();
    iso8583::text::mask_pan(&kept)
}

/// The currency's ISO 4217 alphabetic code and `amount` (minor units) with
/// the currency's decimals: `(CNY, 12.50)`, `(JPY, 1250)`. An unknown code
/// prints as its three digits with two decimals.
pub fn money(amount: u64, currency: u16) -> (String, String) {
    let (code, exponent) = currency_code(currency);
    if exponent == 0 {
        return (code, amount.to_string());
    }
    let unit = 10u64.pow(u32::from(exponent));
    let digits = usize::from(exponent);
    (
        code,
        format!("{}.{:0digits$}", amount / unit, amount % unit),
    )
}

/// The ISO 4217 alphabetic code and number of decimals of a numeric
/// currency code (`156` → `("CNY", 2)`, `392` → `("JPY", 0)`); an unknown
/// code is its three digits with two decimals. Decimals are at most 4
/// (the largest ISO 4217 exponent), so amounts never overflow.
pub fn currency_code(currency: u16) -> (String, u8) {
    match Currency::from_numeric(currency) {
        Some(c) => (
            c.code().to_string(),
            u8::try_from(c.exponent().unwrap_or(0).min(4)).unwrap_or(0),
        ),
        None => (format!("{currency:03}"), 2),
    }
}

/// The result line: `APPROVED`, `APPROVED OFFLINE`, `DECLINED: <reason>`,
/// `REVERSED`, `VOIDED`, or `PENDING` while the outcome is being settled.
pub fn result_text(txn: &TxnRecord) -> String {
    let reason = txn
        .reason
        .as_deref()
        .map(clean)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "declined".into())
        .to_uppercase();
    match txn.state.as_str() {
        "approved" => "APPROVED".into(),
        "approved_offline" => "APPROVED OFFLINE".into(),
        "declined" | "failed" => format!("DECLINED: {reason}"),
        "reversed" => "REVERSED".into(),
        "voided" => "VOIDED".into(),
        _ => "PENDING".into(),
    }
}

fn kind_title(kind: Option<TxnKind>, raw: &str) -> String {
    match kind {
        Some(TxnKind::Sale) => "SALE".into(),
        Some(TxnKind::Void) => "VOID".into(),
        Some(TxnKind::Refund) => "REFUND".into(),
        Some(TxnKind::PreAuth) => "PRE-AUTHORIZATION".into(),
        Some(TxnKind::PreAuthCancel) => "PRE-AUTHORIZATION CANCEL".into(),
        Some(TxnKind::Completion) => "COMPLETION".into(),
        Some(TxnKind::Balance) => "BALANCE INQUIRY".into(),
        None => clean(raw).to_uppercase(),
    }
}

/// A journal time (Unix seconds) in UTC; out-of-range times read as the epoch.
pub(crate) fn utc(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `2026-11-22 04:43:27 UTC`.
fn date_time(unix: i64) -> String {
    let t = utc(unix);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `2026-11-22T04:43:27Z`.
fn rfc3339(unix: i64) -> String {
    utc(unix)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merchant() -> Merchant {
        Merchant {
            name: "Corner Shop".into(),
            merchant_id: "M00000000000001".into(),
            terminal_id: "T0000001".into(),
        }
    }

    fn sale() -> TxnRecord {
        TxnRecord {
            id: 7,
            kind: "sale".into(),
            amount: 1_250,
            currency: 156,
            masked_pan: "620000******0005".into(),
            stan: 42,
            batch: 1,
            state: "approved".into(),
            response_code: Some("00".into()),
            reason: Some("approved".into()),
            auth_code: Some("A1B2C3".into()),
            rrn: Some("000000000123".into()),
            // 2026-11-22 04:43:27 UTC
            created_at: 1_795_322_607,
            online_pin: false,
        }
    }

    #[test]
    fn customer_copy_of_a_pin_sale() {
        let r = Receipt::new(&merchant(), &sale(), true, ReceiptCopy::Customer);
        let expected = "              Corner Shop
MERCHANT ID              M00000000000001
TERMINAL ID                     T0000001
DATE/TIME        2026-11-22 04:43:27 UTC
----------------------------------------
SALE
CARD                    620000******0005
AMOUNT                         CNY 12.50
AUTH CODE                         A1B2C3
RRN                         000000000123
STAN                              000042
BATCH                             000001
----------------------------------------
APPROVED
PIN VERIFIED

             CUSTOMER COPY
";
        assert_eq!(r.text(), expected);
        assert!(r.text().lines().all(|l| l.chars().count() <= WIDTH));
    }

    #[test]
    fn merchant_copy_without_pin_asks_for_a_signature() {
        let r = Receipt::new(&merchant(), &sale(), false, ReceiptCopy::Merchant);
        let expected = "              Corner Shop
MERCHANT ID              M00000000000001
TERMINAL ID                     T0000001
DATE/TIME        2026-11-22 04:43:27 UTC
----------------------------------------
SALE
CARD                    620000******0005
AMOUNT                         CNY 12.50
AUTH CODE                         A1B2C3
RRN                         000000000123
STAN                              000042
BATCH                             000001
----------------------------------------
APPROVED
CARDHOLDER SIGNATURE

X_______________________________________

             MERCHANT COPY
";
        assert_eq!(r.text(), expected);
        assert!(r.electronic().signature_required);
        // The customer's copy of the same sale has no signature line.
        let c = Receipt::new(&merchant(), &sale(), false, ReceiptCopy::Customer);
        assert!(!c.text().contains("SIGNATURE"));
        assert!(!c.electronic().signature_required);
    }

    #[test]
    fn declined_offline_and_reversed_results() {
        let mut t = sale();
        t.state = "declined".into();
        t.response_code = Some("51".into());
        t.reason = Some("insufficient funds".into());
        t.auth_code = None;
        t.rrn = None;
        let r = Receipt::new(&merchant(), &t, false, ReceiptCopy::Merchant);
        let text = r.text();
        let tail: Vec<&str> = text.lines().skip(8).collect();
        assert_eq!(
            tail,
            [
                "STAN                              000042",
                "BATCH                             000001",
                "RESPONSE CODE                         51",
                "----------------------------------------",
                "DECLINED: INSUFFICIENT FUNDS",
                "",
                "             MERCHANT COPY",
            ]
        );
        t.state = "approved_offline".into();
        t.response_code = None;
        assert_eq!(result_text(&t), "APPROVED OFFLINE");
        t.state = "reversed".into();
        assert_eq!(result_text(&t), "REVERSED");
        t.state = "failed".into();
        t.reason = Some(
            "host unreachable and this transaction cannot be approved offline: amount above the offline floor limit"
                .into(),
        );
        let r = Receipt::new(&merchant(), &t, false, ReceiptCopy::Customer);
        let text = r.text();
        assert!(
            text.contains(
                "DECLINED: HOST UNREACHABLE AND THIS\nTRANSACTION CANNOT BE APPROVED OFFLINE:\nAMOUNT ABOVE THE OFFLINE FLOOR LIMIT\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn currencies_and_decimals() {
        assert_eq!(money(1_250, 156), ("CNY".into(), "12.50".into()));
        assert_eq!(money(5, 978), ("EUR".into(), "0.05".into()));
        assert_eq!(money(100_000, 840), ("USD".into(), "1000.00".into()));
        assert_eq!(money(99, 826), ("GBP".into(), "0.99".into()));
        assert_eq!(money(1_250, 392), ("JPY".into(), "1250".into()));
        assert_eq!(money(1_250, 48), ("BHD".into(), "1.250".into()));
        assert_eq!(money(1_250, 0), ("000".into(), "12.50".into()));
        assert_eq!(
            money(1_250, 999),
            ("XXX".into(), "1250".into()),
            "no currency"
        );
        assert_eq!(money(0, 156), ("CNY".into(), "0.00".into()));
    }

    #[test]
    fn escpos_starts_with_init_and_ends_with_the_cut() {
        let r = Receipt::new(&merchant(), &sale(), false, ReceiptCopy::Merchant);
        let bytes = r.escpos();
        assert!(bytes.starts_with(&ESC_INIT));
        assert!(bytes.ends_with(&GS_PARTIAL_CUT));
        // The heading: centred and bold, unpadded.
        let head = [
            &ESC_INIT[..],
            &ESC_ALIGN_CENTRE,
            &ESC_BOLD_ON,
            b"Corner Shop\n",
            &ESC_BOLD_OFF,
            &ESC_ALIGN_LEFT,
            b"MERCHANT ID              M00000000000001\n",
        ]
        .concat();
        assert!(bytes.starts_with(&head));
        // Every text line is printed as laid out.
        let printable = String::from_utf8_lossy(&bytes);
        for line in r.text().lines().skip(1).filter(|l| !l.contains("COPY")) {
            assert!(printable.contains(&format!("{line}\n")), "{line}");
        }
    }

    #[test]
    fn merchant_names_cannot_command_the_printer() {
        let mut m = merchant();
        m.name = "Evil\x1b\x1dV\x00 Shop\n\u{5e97}".into();
        let r = Receipt::new(&m, &sale(), true, ReceiptCopy::Customer);
        let bytes = r.escpos();
        // ESC and GS appear only in the commands this module writes.
        let esc = bytes.iter().filter(|b| **b == 0x1b).count();
        let gs = bytes.iter().filter(|b| **b == 0x1d).count();
        assert_eq!((esc, gs), (8, 1), "{bytes:02x?}");
        assert!(r.text().starts_with("             Evil V Shop \u{5e97}\n"));
        assert!(bytes.windows(14).any(|w| w == b"Evil V Shop ?\n"));
    }

    #[test]
    fn no_full_card_number_anywhere() {
        let pan = "6200000000000005";
        let mut t = sale();
        // Even a journal row that held the full number prints it masked.
        t.masked_pan = pan.into();
        for copy in [ReceiptCopy::Customer, ReceiptCopy::Merchant] {
            for pin in [false, true] {
                let r = Receipt::new(&merchant(), &t, pin, copy);
                let json = serde_json::to_string(r.electronic()).unwrap();
                let escpos = String::from_utf8_lossy(&r.escpos()).into_owned();
                for out in [r.text(), json, escpos] {
                    assert!(!out.contains(pan), "{out}");
                    assert!(out.contains("620000******0005"));
                }
            }
        }
    }

    #[test]
    fn e_receipt_json() {
        let r = Receipt::new(&merchant(), &sale(), true, ReceiptCopy::Customer);
        let v = serde_json::to_value(r.electronic()).unwrap();
        assert_eq!(v["copy"], "customer");
        assert_eq!(v["time"], "2026-11-22T04:43:27Z");
        assert_eq!(v["currency"], "CNY");
        assert_eq!(v["amount"], 1_250);
        assert_eq!(v["amount_text"], "12.50");
        assert_eq!(v["result"], "APPROVED");
        assert_eq!(v["masked_pan"], "620000******0005");
        assert_eq!(
            v["lines"].as_array().unwrap().len(),
            r.text().lines().count()
        );
    }

    #[test]
    fn wrapping_is_bounded_and_complete() {
        let long = "x".repeat(95);
        let mut out = Vec::new();
        wrap(&format!("ab {long} cd"), &mut out);
        assert_eq!(
            out,
            [
                "ab".to_string(),
                "x".repeat(40),
                "x".repeat(40),
                format!("{} cd", "x".repeat(15))
            ]
        );
    }
}
