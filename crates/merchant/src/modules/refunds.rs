//! Refunds and same-day reversals of an order's approved payments, asked
//! of the payment's own terminal by an owner, with the terminal's
//! supervisor code ([`super::payments::Payments::refund`]).
//!
//! As a payment, a refund is written `pending` (audited) before the
//! terminal is asked and finished with its outcome (audited). A reversal
//! voids the whole payment while its batch is open (the day it was taken);
//! refunds may be partial, and together never exceed the payment. The
//! order keeps its status (`paid`); its page lists what was refunded.
//! Table `order_refunds` is in [`super::orders::MIGRATIONS`].

use super::orders::{self, Outcome, PaymentStatus};
use super::{SalesError, refused};
use crate::audit::{self, Change};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::json;

/// What is asked of the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Money back to the card (a new transaction), whole or part.
    Refund,
    /// The payment voided, while its batch is open.
    Reversal,
}

impl Kind {
    /// Its stored name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Refund => "refund",
            Kind::Reversal => "reversal",
        }
    }

    /// From its stored name.
    pub fn from_name(name: &str) -> Option<Kind> {
        [Kind::Refund, Kind::Reversal]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// A refund or reversal of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refund {
    /// Row id.
    pub id: i64,
    /// The order.
    pub order_id: i64,
    /// The payment refunded or reversed.
    pub payment_id: i64,
    /// Refund or reversal.
    pub kind: Kind,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217 numeric.
    pub currency: u16,
    /// POIID of the terminal asked (the payment's).
    pub terminal: String,
    /// Where it stands (as a payment's status).
    pub status: PaymentStatus,
    /// The terminal's reason for a refusal, or what failed.
    pub reason: Option<String>,
    /// The nexo `ServiceID` of the request.
    pub service_id: Option<String>,
    /// The terminal's `POITransactionID` of the refund or reversal.
    pub poi_transaction_id: Option<String>,
    /// Who asked for it.
    pub started_by: String,
    /// When, Unix seconds.
    pub started_at: i64,
    /// When its outcome was recorded.
    pub finished_at: Option<i64>,
}

const COLUMNS: &str = "id, order_id, payment_id, kind, amount, currency, terminal, status, reason, service_id, poi_transaction_id, started_by, started_at, finished_at";

fn read_refund(r: &rusqlite::Row<'_>) -> rusqlite::Result<Refund> {
    let bad = |i, v: String| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown refund value {v:?}").into(),
        )
    };
    let kind: String = r.get(3)?;
    let status: String = r.get(7)?;
    Ok(Refund {
        id: r.get(0)?,
        order_id: r.get(1)?,
        payment_id: r.get(2)?,
        kind: Kind::from_name(&kind).ok_or_else(|| bad(3, kind.clone()))?,
        amount: r.get(4)?,
        currency: r.get(5)?,
        terminal: r.get(6)?,
        status: PaymentStatus::from_name(&status).ok_or_else(|| bad(7, status.clone()))?,
        reason: r.get(8)?,
        service_id: r.get(9)?,
        poi_transaction_id: r.get(10)?,
        started_by: r.get(11)?,
        started_at: r.get(12)?,
        finished_at: r.get(13)?,
    })
}

/// Refund `id`.
pub fn refund(conn: &Connection, id: i64) -> Result<Option<Refund>, SalesError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM order_refunds WHERE id = ?1"),
            [id],
            read_refund,
        )
        .optional()?)
}

/// The refunds and reversals of order `order_id`, oldest first.
pub fn of_order(conn: &Connection, order_id: i64) -> Result<Vec<Refund>, SalesError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM order_refunds WHERE order_id = ?1 ORDER BY id"
    ))?;
    let rows = stmt
        .query_map([order_id], read_refund)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// What of payment `payment_id` is refunded or reversed (approved) or
/// may be (in flight or unknown), minor units.
fn taken_back(conn: &Connection, payment_id: i64) -> Result<i64, SalesError> {
    Ok(conn.query_row(
        "SELECT coalesce(sum(amount), 0) FROM order_refunds
         WHERE payment_id = ?1 AND status IN ('approved', 'pending', 'unknown')",
        [payment_id],
        |r| r.get(0),
    )?)
}

/// A refund written before the terminal is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The refund's row id.
    pub refund_id: i64,
    /// Refund or reversal.
    pub kind: Kind,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217 numeric.
    pub currency: u16,
    /// POIID of the payment's terminal.
    pub terminal: String,
    /// The payment's `POITransactionID`, the transaction to refund.
    pub original: String,
}

/// Records a refund of `amount` (all that is left when none) or a
/// reversal of approved payment `payment_id`, about to be asked of its
/// terminal. Refused for a payment not approved, one taken by a device
/// (its terminal transaction is in the device's history: refund it there),
/// one with a refund in flight, an amount beyond what is left, and a
/// reversal of a payment partly refunded or not taken today (UTC; the
/// terminal's batch closes daily).
pub fn start(
    conn: &Connection,
    payment_id: i64,
    kind: Kind,
    amount: Option<i64>,
    actor: &str,
    now: i64,
) -> Result<Started, SalesError> {
    let payment = orders::payment(conn, payment_id)?
        .ok_or_else(|| SalesError::NotFound(format!("payment {payment_id}")))?;
    if payment.status != PaymentStatus::Approved {
        return refused(format!(
            "payment {payment_id} is {}: only an approved payment is refunded",
            payment.status_label()
        ));
    }
    if payment.device.is_some() {
        return refused(format!(
            "payment {payment_id} was taken by a cashier's phone: refund it from that phone's app"
        ));
    }
    let original = payment.poi_transaction_id.clone().ok_or_else(|| {
        SalesError::Refused(format!(
            "payment {payment_id} has no terminal transaction id"
        ))
    })?;
    let in_flight: i64 = conn.query_row(
        "SELECT count(*) FROM order_refunds WHERE payment_id = ?1 AND status IN ('pending', 'unknown')",
        [payment_id],
        |r| r.get(0),
    )?;
    if in_flight > 0 {
        return refused(format!(
            "a refund of payment {payment_id} is under way or its outcome is unknown"
        ));
    }
    let left = payment.amount - taken_back(conn, payment_id)?;
    let amount = match kind {
        Kind::Reversal => {
            if left != payment.amount {
                return refused(format!(
                    "payment {payment_id} is partly refunded: it can no longer be reversed"
                ));
            }
            let day = |t: i64| crate::reports::utc_date(t);
            if payment.finished_at.map(day) != Some(day(now)) {
                return refused(format!(
                    "payment {payment_id} was not taken today: its batch is closed, refund it instead"
                ));
            }
            payment.amount
        }
        Kind::Refund => {
            let amount = amount.unwrap_or(left);
            if left <= 0 {
                return refused(format!("payment {payment_id} is refunded in full"));
            }
            if !(1..=left).contains(&amount) {
                return refused(format!(
                    "a refund of payment {payment_id}: 0.01 up to what is left of it ({left} minor units)"
                ));
            }
            amount
        }
    };
    conn.execute(
        "INSERT INTO order_refunds (order_id, payment_id, kind, amount, currency, terminal, status, started_by, started_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8)",
        params![payment.order_id, payment_id, kind.name(), amount, payment.currency, payment.terminal, actor, now],
    )?;
    let refund_id = conn.last_insert_rowid();
    audit::append(
        conn,
        &Change {
            actor,
            action: &format!("{}.start", kind.name()),
            subject: &format!("refund:{refund_id}"),
            before: None,
            after: Some(json!({
                "order": payment.order_id, "payment": payment_id, "amount": amount,
                "currency": payment.currency, "terminal": payment.terminal, "original": original,
            })),
        },
        now,
    )?;
    Ok(Started {
        refund_id,
        kind,
        amount,
        currency: payment.currency,
        terminal: payment.terminal,
        original,
    })
}

/// Records what became of refund `refund_id` (pending or unknown).
pub fn record(
    conn: &Connection,
    refund_id: i64,
    outcome: &Outcome,
    actor: &str,
    now: i64,
) -> Result<Refund, SalesError> {
    let before = refund(conn, refund_id)?
        .ok_or_else(|| SalesError::NotFound(format!("refund {refund_id}")))?;
    if !matches!(
        before.status,
        PaymentStatus::Pending | PaymentStatus::Unknown
    ) {
        return refused(format!(
            "refund {refund_id} is {} already",
            before.status.name()
        ));
    }
    let status = outcome.status.unwrap_or(PaymentStatus::Unknown);
    conn.execute(
        "UPDATE order_refunds SET status = ?2, reason = ?3, service_id = coalesce(?4, service_id),
             poi_transaction_id = ?5,
             finished_at = CASE WHEN ?2 IN ('pending', 'unknown') THEN NULL ELSE ?6 END
         WHERE id = ?1",
        params![
            refund_id,
            status.name(),
            outcome.reason,
            outcome.service_id,
            outcome.poi_transaction_id,
            now
        ],
    )?;
    audit::append(
        conn,
        &Change {
            actor,
            action: &format!("{}.{}", before.kind.name(), status.name()),
            subject: &format!("refund:{refund_id}"),
            before: Some(json!({ "status": before.status.name() })),
            after: Some(json!({
                "status": status.name(), "order": before.order_id, "payment": before.payment_id,
                "amount": before.amount, "reason": outcome.reason, "service_id": outcome.service_id,
                "poi_transaction_id": outcome.poi_transaction_id,
            })),
        },
        now,
    )?;
    refund(conn, refund_id)?.ok_or_else(|| SalesError::NotFound(format!("refund {refund_id}")))
}
