//! What the host says about transactions, and how it is recorded.
//!
//! Two sources say the same things: webhook events (each once, by event id)
//! and the host's transaction list (backfill). Both end in
//! [`apply_transaction`]. Facts can arrive out of order — a webhook the host
//! kept retrying lands after a backfill that already saw a later void — so
//! every status carries the host journal id of the newest fact it comes
//! from (`status_order`), and an older fact never overwrites a newer one.

use crate::store::StoreError;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Longest text field accepted from the host (ids, codes, kinds, states are
/// far shorter). A verified event with a longer one is stored, not applied.
pub const MAX_FIELD_LEN: usize = 64;

/// Order of a fact that nothing later can change (a pre-authorization's
/// expiry: once its hold is voided, no completion or cancel can succeed).
const FINAL_ORDER: i64 = i64::MAX;

/// A transaction as the host reports it: the `transaction` object of a
/// webhook event, or an item of `GET /v1/transactions` (same field names).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HostTransaction {
    /// Host journal id.
    pub id: i64,
    /// `sale`, `void`, `refund`, `preauth`, `preauth_cancel`, `completion`,
    /// `completion_void`, `offline_sale`, `reversal`, `balance`.
    pub kind: String,
    /// State when reported: `approved`, `declined`, `voided`, ...
    pub state: String,
    /// Whether the response code was `00`.
    #[serde(default)]
    pub approved: bool,
    /// ISO 8583 field 39 (absent from some state-change events).
    #[serde(default)]
    pub response_code: Option<String>,
    /// Minor units.
    pub amount: u64,
    /// ISO 4217 numeric.
    pub currency: u16,
    /// Field 42.
    pub merchant_id: String,
    /// Field 41.
    pub terminal_id: String,
    /// Field 11.
    pub stan: u32,
    /// Field 60.2.
    pub batch: u32,
    /// Field 37.
    pub rrn: String,
    /// Field 38.
    #[serde(default)]
    pub auth_code: Option<String>,
    /// First 6 and last 4 digits.
    #[serde(default)]
    pub masked_pan: Option<String>,
    /// RRN of the transaction this one voids, refunds, completes or reverses.
    #[serde(default)]
    pub original_rrn: Option<String>,
    /// Payment method, when the host names it (`card`, `wallet`): the
    /// event's `payment_method`.
    #[serde(default, alias = "payment_method")]
    pub method: Option<String>,
    /// When the host received it, Unix seconds.
    pub at: i64,
}

impl From<host::api::Transaction> for HostTransaction {
    fn from(t: host::api::Transaction) -> Self {
        HostTransaction {
            id: t.id,
            kind: t.kind,
            state: t.state,
            approved: t.approved,
            response_code: Some(t.response_code),
            amount: t.amount,
            currency: t.currency,
            merchant_id: t.merchant_id,
            terminal_id: t.terminal_id,
            stan: t.stan,
            batch: t.batch,
            rrn: t.rrn,
            auth_code: t.auth_code,
            masked_pan: t.masked_pan,
            original_rrn: t.original_rrn,
            method: Some(t.payment_method),
            at: t.at,
        }
    }
}

impl HostTransaction {
    /// The first text field longer than [`MAX_FIELD_LEN`], if any.
    fn oversized(&self) -> Option<&'static str> {
        let fields: [(&'static str, Option<&str>); 10] = [
            ("kind", Some(&self.kind)),
            ("state", Some(&self.state)),
            ("response_code", self.response_code.as_deref()),
            ("merchant_id", Some(&self.merchant_id)),
            ("terminal_id", Some(&self.terminal_id)),
            ("rrn", Some(&self.rrn)),
            ("auth_code", self.auth_code.as_deref()),
            ("masked_pan", self.masked_pan.as_deref()),
            ("original_rrn", self.original_rrn.as_deref()),
            ("method", self.method.as_deref()),
        ];
        fields
            .into_iter()
            .find(|(_, v)| v.is_some_and(|v| v.len() > MAX_FIELD_LEN))
            .map(|(name, _)| name)
    }

    /// The payment method: the host's when it names one, else `card` when a
    /// card number was read, else `other`.
    pub fn method(&self) -> String {
        match (&self.method, &self.masked_pan) {
            (Some(m), _) if !m.is_empty() => m.clone(),
            (_, Some(p)) if !p.is_empty() => "card".into(),
            _ => "other".into(),
        }
    }
}

/// The outer object of a webhook body.
#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    event_id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow)]
    transaction: Option<&'a RawValue>,
}

/// What recording an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// First time this event id was seen; it was stored (and applied when
    /// understood).
    New {
        /// Whether it changed the transactions (false for an event type this
        /// version does not know, which is kept for later).
        applied: bool,
    },
    /// Already recorded: nothing was written.
    Duplicate,
}

/// Records the verified event `body` (`event_id` from its header, `sequence`
/// the host's outbox position) once: an event id seen before writes
/// nothing. Runs inside the caller's transaction, so the event row and
/// what it changed commit together.
pub fn record_event(
    conn: &Connection,
    event_id: &str,
    sequence: Option<i64>,
    body: &str,
    now: i64,
) -> Result<Recorded, StoreError> {
    let parsed = serde_json::from_str::<Envelope<'_>>(body);
    let kind = parsed
        .as_ref()
        .map(|e| e.kind.chars().take(MAX_FIELD_LEN).collect::<String>())
        .unwrap_or_else(|_| "unreadable".into());
    let inserted = conn.execute(
        "INSERT INTO events (event_id, sequence, kind, payload, applied, received_at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5) ON CONFLICT (event_id) DO NOTHING",
        params![event_id, sequence, kind, body, now],
    )?;
    if inserted == 0 {
        return Ok(Recorded::Duplicate);
    }
    let outcome: Result<(), String> = match parsed {
        Err(e) => Err(format!("unreadable event: {e}")),
        Ok(envelope) if envelope.event_id != event_id => {
            Err("event_id of the body differs from its header".into())
        }
        Ok(envelope) if envelope.kind != "transaction" => {
            Err("event type not known to this version".into())
        }
        Ok(envelope) => match envelope
            .transaction
            .map(|raw| serde_json::from_str::<HostTransaction>(raw.get()))
        {
            None => Err("transaction event without a transaction".into()),
            Some(Err(e)) => Err(format!("unreadable transaction: {e}")),
            Some(Ok(t)) => apply_event(conn, event_id, &t, now),
        },
    };
    match outcome {
        Ok(()) => {
            conn.execute(
                "UPDATE events SET applied = 1 WHERE event_id = ?1",
                params![event_id],
            )?;
            Ok(Recorded::New { applied: true })
        }
        Err(note) => {
            tracing::warn!(event = event_id, "event stored, not applied: {note}");
            conn.execute(
                "UPDATE events SET note = ?2 WHERE event_id = ?1",
                params![event_id, note],
            )?;
            Ok(Recorded::New { applied: false })
        }
    }
}

/// Applies a transaction event: the transaction itself, then what an
/// approved follow-up does to its original.
fn apply_event(
    conn: &Connection,
    event_id: &str,
    t: &HostTransaction,
    now: i64,
) -> Result<(), String> {
    if let Some(field) = t.oversized() {
        return Err(format!("{field} longer than {MAX_FIELD_LEN} characters"));
    }
    // `txn-<id>` tells of the transaction as it was written; any other event
    // about an existing transaction is a later change the host made on its
    // own (a pre-authorization's expiry), after which nothing changes it.
    let order = if event_id == format!("txn-{}", t.id) {
        t.id
    } else {
        FINAL_ORDER
    };
    let sql = |e: StoreError| e.to_string();
    apply_transaction(conn, t, order, event_id, now).map_err(sql)?;
    if order == FINAL_ORDER || !t.approved {
        return Ok(());
    }
    let Some(original_rrn) = &t.original_rrn else {
        return Ok(());
    };
    let new_state = match t.kind.as_str() {
        "void" | "completion_void" => "voided",
        "refund" => "refunded",
        "preauth_cancel" => "cancelled",
        "completion" => "completed",
        "reversal" => "reversed",
        _ => return Ok(()),
    };
    let original =
        set_status_by_rrn(conn, original_rrn, new_state, t.id, event_id, now).map_err(sql)?;
    // Reversing a void makes the voided transaction stand again.
    if let Some((kind, Some(voided_rrn))) = original
        && t.kind == "reversal"
        && matches!(kind.as_str(), "void" | "completion_void")
    {
        set_status_by_rrn(conn, &voided_rrn, "approved", t.id, event_id, now).map_err(sql)?;
    }
    Ok(())
}

/// Sets the status of the transaction with `rrn` when `order` is newer than
/// its status; returns its kind and original RRN when it is recorded here.
fn set_status_by_rrn(
    conn: &Connection,
    rrn: &str,
    status: &str,
    order: i64,
    source: &str,
    now: i64,
) -> Result<Option<(String, Option<String>)>, StoreError> {
    let row: Option<(i64, String, Option<String>)> = conn
        .query_row(
            "SELECT id, kind, original_rrn FROM transactions WHERE rrn = ?1 ORDER BY id DESC LIMIT 1",
            params![rrn],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((id, kind, original_rrn)) = row else {
        // Not recorded here (yet): reconciliation lists it as missing.
        return Ok(None);
    };
    set_status(conn, id, status, order, source, now)?;
    Ok(Some((kind, original_rrn)))
}

/// Records `status` for transaction `id` unless its status comes from a
/// fact at least as new as `order`; true when the status changed.
fn set_status(
    conn: &Connection,
    id: i64,
    status: &str,
    order: i64,
    source: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let (current, current_order): (String, i64) = conn.query_row(
        "SELECT status, status_order FROM transactions WHERE id = ?1",
        params![id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if order <= current_order {
        return Ok(false);
    }
    conn.execute(
        "UPDATE transactions SET status = ?2, status_order = ?3 WHERE id = ?1",
        params![id, status, order],
    )?;
    if current == status {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO transaction_status (transaction_id, status, source, at) VALUES (?1, ?2, ?3, ?4)",
        params![id, status, source, now],
    )?;
    Ok(true)
}

/// What [`apply_transaction`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Not recorded before: inserted with this local id.
    Inserted(i64),
    /// Recorded; its status moved.
    Updated(i64),
    /// Recorded; nothing newer to say.
    Unchanged(i64),
}

/// Records `t` as known at `order` (the newest host journal id the report
/// reflects) from `source` (an event id, or `backfill`): inserts it when
/// new, otherwise moves its status forward when `order` is newer. Returns
/// what it did.
pub fn apply_transaction(
    conn: &Connection,
    t: &HostTransaction,
    order: i64,
    source: &str,
    now: i64,
) -> Result<Applied, StoreError> {
    let existing: Option<i64> = conn
        .query_row(
            "SELECT id FROM transactions WHERE host_id = ?1",
            params![t.id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        return Ok(if set_status(conn, id, &t.state, order, source, now)? {
            Applied::Updated(id)
        } else {
            Applied::Unchanged(id)
        });
    }
    // Masked again whatever arrived: a full card number is never stored.
    let masked = t
        .masked_pan
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(terminal::receipt::mask);
    let last_four = masked.as_deref().map(last_four);
    conn.execute(
        "INSERT INTO transactions (host_id, kind, status, status_order, approved, response_code, amount,
           currency, merchant_id, terminal_id, stan, batch, rrn, auth_code, masked_pan, last_four, method,
           original_rrn, at, recorded_at, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
        params![
            t.id,
            t.kind,
            t.state,
            order,
            t.approved,
            t.response_code,
            i64::try_from(t.amount).unwrap_or(i64::MAX),
            t.currency,
            t.merchant_id,
            t.terminal_id,
            t.stan,
            t.batch,
            t.rrn,
            t.auth_code,
            masked,
            last_four,
            t.method(),
            t.original_rrn,
            t.at,
            now,
            source,
        ],
    )?;
    let id = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO transaction_status (transaction_id, status, source, at) VALUES (?1, ?2, ?3, ?4)",
        params![id, t.state, source, now],
    )?;
    Ok(Applied::Inserted(id))
}

/// The last four digits of a masked card number (fewer when it has fewer).
fn last_four(masked: &str) -> String {
    let digits: Vec<char> = masked.chars().filter(char::is_ascii_digit).collect();
    digits[digits.len().saturating_sub(4)..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use proptest::prelude::*;

    fn sale(id: i64, state: &str) -> serde_json::Value {
        serde_json::json!({
            "id": id, "kind": "sale", "state": state, "approved": true, "response_code": "00",
            "amount": 1250, "currency": 156, "merchant_id": "M00000000000001",
            "terminal_id": "T0000001", "stan": id, "batch": 1, "rrn": format!("{id:012}"),
            "auth_code": "123456", "masked_pan": "6200000000000013", "original_rrn": null, "at": 1_767_225_598,
        })
    }

    fn follow_up(id: i64, kind: &str, original: i64) -> serde_json::Value {
        let mut t = sale(id, "approved");
        t["kind"] = kind.into();
        t["original_rrn"] = format!("{original:012}").into();
        t
    }

    fn body(event_id: &str, t: &serde_json::Value) -> String {
        serde_json::json!({"event_id": event_id, "type": "transaction", "transaction": t})
            .to_string()
    }

    fn record(store: &Store, event_id: &str, t: &serde_json::Value) -> Recorded {
        store
            .write(|tx| record_event(tx, event_id, None, &body(event_id, t), 100))
            .unwrap()
    }

    fn status(store: &Store, host_id: i64) -> (String, Vec<String>) {
        store
            .read(|c| {
                let (id, status): (i64, String) = c.query_row(
                    "SELECT id, status FROM transactions WHERE host_id = ?1",
                    [host_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let mut stmt = c.prepare(
                    "SELECT status FROM transaction_status WHERE transaction_id = ?1 ORDER BY id",
                )?;
                let history = stmt
                    .query_map([id], |r| r.get(0))?
                    .collect::<Result<Vec<String>, _>>()?;
                Ok((status, history))
            })
            .unwrap()
    }

    #[test]
    fn an_event_is_recorded_once_with_the_card_masked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &[]).unwrap();
        let t = sale(1, "approved");
        assert_eq!(record(&store, "txn-1", &t), Recorded::New { applied: true });
        assert_eq!(record(&store, "txn-1", &t), Recorded::Duplicate);
        let (masked, four, method, count): (String, String, String, i64) = store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT masked_pan, last_four, method, (SELECT count(*) FROM events) FROM transactions",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )?)
            })
            .unwrap();
        assert_eq!(masked, "620000******0013", "a full number is masked again");
        assert_eq!((four.as_str(), method.as_str(), count), ("0013", "card", 1));
    }

    #[test]
    fn the_method_is_the_events_payment_method() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &[]).unwrap();
        let mut t = sale(1, "approved");
        t["masked_pan"] = "691000******5678".into();
        t["payment_method"] = "wallet".into();
        assert_eq!(record(&store, "txn-1", &t), Recorded::New { applied: true });
        let method: String = store
            .read(|c| Ok(c.query_row("SELECT method FROM transactions", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(method, "wallet", "not inferred from the masked number");
    }

    #[test]
    fn follow_ups_move_the_original_and_late_facts_do_not_move_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &[]).unwrap();
        record(&store, "txn-1", &sale(1, "approved"));
        record(&store, "txn-2", &follow_up(2, "void", 1));
        assert_eq!(status(&store, 1).0, "voided");
        // The void reversed: the sale stands again.
        record(&store, "txn-3", &follow_up(3, "reversal", 2));
        assert_eq!(status(&store, 2).0, "reversed");
        assert_eq!(
            status(&store, 1),
            (
                "approved".into(),
                vec!["approved".into(), "voided".into(), "approved".into()]
            )
        );
        // A backfill snapshot taken before the reversal arrives late: older, ignored.
        store
            .write(|tx| {
                let mut t: HostTransaction = serde_json::from_value(sale(1, "voided")).unwrap();
                t.state = "voided".into();
                apply_transaction(tx, &t, 2, "backfill", 200)
            })
            .unwrap();
        assert_eq!(status(&store, 1).0, "approved");
        // A declined follow-up changes nothing.
        let mut declined = follow_up(4, "refund", 1);
        declined["approved"] = false.into();
        declined["state"] = "declined".into();
        record(&store, "txn-4", &declined);
        assert_eq!(status(&store, 1).0, "approved");
    }

    #[test]
    fn an_expiry_is_final_and_unknown_events_are_kept_unapplied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &[]).unwrap();
        let mut preauth = sale(5, "approved");
        preauth["kind"] = "preauth".into();
        record(&store, "txn-5", &preauth);
        // The host's expiry event carries fewer fields.
        let expiry = serde_json::json!({
            "id": 5, "kind": "preauth", "state": "expired", "approved": false, "amount": 1250,
            "currency": 156, "merchant_id": "M00000000000001", "terminal_id": "T0000001",
            "stan": 5, "batch": 1, "rrn": "000000000005", "at": 1_767_900_000,
        });
        assert_eq!(
            record(&store, "expire-5", &expiry),
            Recorded::New { applied: true }
        );
        assert_eq!(status(&store, 5).0, "expired");

        let unknown = r#"{"event_id":"x-1","type":"terminal_enrolled","terminal":{}}"#;
        let recorded = store
            .write(|tx| record_event(tx, "x-1", Some(9), unknown, 100))
            .unwrap();
        assert_eq!(recorded, Recorded::New { applied: false });
        let mismatched = body("txn-9", &sale(9, "approved"));
        let recorded = store
            .write(|tx| record_event(tx, "txn-8", None, &mismatched, 100))
            .unwrap();
        assert_eq!(recorded, Recorded::New { applied: false });
        let mut long = sale(10, "approved");
        long["terminal_id"] = "T".repeat(MAX_FIELD_LEN + 1).into();
        assert_eq!(
            record(&store, "txn-10", &long),
            Recorded::New { applied: false }
        );
        let notes: Vec<String> = store
            .read(|c| {
                let mut s = c.prepare(
                    "SELECT note FROM events WHERE applied = 0 ORDER BY received_at, event_id",
                )?;
                Ok(s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert_eq!(notes.len(), 3, "{notes:?}");
        let count: i64 = store
            .read(|c| Ok(c.query_row("SELECT count(*) FROM transactions", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(count, 1);
    }

    proptest! {
        // Each case opens a database file: fewer cases than the default.
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn any_body_is_stored_without_panicking(body in "\\PC{0,300}", id in "[a-z0-9-]{1,20}") {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), &[]).unwrap();
            let first = store.write(|tx| record_event(tx, &id, None, &body, 1)).unwrap();
            prop_assert!(first != Recorded::Duplicate);
            let again = store.write(|tx| record_event(tx, &id, None, &body, 1)).unwrap();
            prop_assert_eq!(again, Recorded::Duplicate);
        }

        #[test]
        fn last_four_takes_at_most_four_digits(s in "\\PC{0,40}") {
            let four = last_four(&s);
            prop_assert!(four.len() <= 4 && four.chars().all(|c| c.is_ascii_digit()));
        }
    }
}
