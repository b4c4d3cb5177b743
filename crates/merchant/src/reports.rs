//! Sums over recorded transactions, counted the way the host counts a
//! batch at settlement: sales, completions and offline sales that still
//! stand (approved, refunded later, or offline and unfunded) are debits;
//! approved refunds are credits. The dashboard and reconciliation both use
//! these, so a day's figures and a batch's check agree.

use crate::store::StoreError;
use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};
use serde::Serialize;

/// `YYYY-MM-DD` of a Unix time, in UTC (the days the host reports by).
pub fn utc_date(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// SQL condition of a debit (money in).
pub const DEBIT: &str = "kind IN ('sale', 'completion', 'offline_sale') AND status IN ('approved', 'refunded', 'unfunded')";
/// SQL condition of a credit (money back).
pub const CREDIT: &str = "kind = 'refund' AND status = 'approved'";

/// Debits and credits of a set of transactions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Sum of debits, minor units.
    pub debit_amount: i64,
    /// Number of debits.
    pub debit_count: i64,
    /// Sum of credits, minor units.
    pub credit_amount: i64,
    /// Number of credits.
    pub credit_count: i64,
}

impl Totals {
    /// Debits less credits.
    pub fn net(&self) -> i64 {
        self.debit_amount - self.credit_amount
    }
}

/// Totals of the transactions matching `filter` (an SQL condition over
/// `transactions` with `?` placeholders bound to `args`).
pub fn totals(conn: &Connection, filter: &str, args: &[Value]) -> Result<Totals, StoreError> {
    let sql = format!(
        "SELECT coalesce(sum(CASE WHEN {DEBIT} THEN amount END), 0), count(CASE WHEN {DEBIT} THEN 1 END),
                coalesce(sum(CASE WHEN {CREDIT} THEN amount END), 0), count(CASE WHEN {CREDIT} THEN 1 END)
         FROM transactions WHERE {filter}"
    );
    Ok(conn.query_row(&sql, params_from_iter(args), |r| {
        Ok(Totals {
            debit_amount: r.get(0)?,
            debit_count: r.get(1)?,
            credit_amount: r.get(2)?,
            credit_count: r.get(3)?,
        })
    })?)
}

/// Totals of one terminal batch.
pub fn batch_totals(
    conn: &Connection,
    terminal_id: &str,
    batch: u32,
) -> Result<Totals, StoreError> {
    totals(
        conn,
        "terminal_id = ? AND batch = ?",
        &[
            Value::Text(terminal_id.into()),
            Value::Integer(batch.into()),
        ],
    )
}

/// Totals and transaction count per value of `column` (`terminal_id`,
/// `method`, `currency`) over transactions received in `[from, to)`.
pub fn grouped(
    conn: &Connection,
    column: Group,
    from: i64,
    to: i64,
) -> Result<Vec<(String, i64, Totals)>, StoreError> {
    let column = column.sql();
    let sql = format!(
        "SELECT CAST({column} AS TEXT), count(*),
                coalesce(sum(CASE WHEN {DEBIT} THEN amount END), 0), count(CASE WHEN {DEBIT} THEN 1 END),
                coalesce(sum(CASE WHEN {CREDIT} THEN amount END), 0), count(CASE WHEN {CREDIT} THEN 1 END)
         FROM transactions WHERE at >= ?1 AND at < ?2 GROUP BY {column} ORDER BY {column}"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([from, to], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            Totals {
                debit_amount: r.get(2)?,
                debit_count: r.get(3)?,
                credit_amount: r.get(4)?,
                credit_count: r.get(5)?,
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A column transactions are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// By terminal.
    Terminal,
    /// By payment method.
    Method,
    /// By currency.
    Currency,
}

impl Group {
    fn sql(self) -> &'static str {
        match self {
            Group::Terminal => "terminal_id",
            Group::Method => "method",
            Group::Currency => "currency",
        }
    }
}

/// Net amount (debits less credits) per bucket of `width` seconds over
/// `[from, from + width * buckets)`, for a chart.
pub fn net_by_bucket(
    conn: &Connection,
    from: i64,
    width: i64,
    buckets: usize,
) -> Result<Vec<i64>, StoreError> {
    let mut out = vec![0i64; buckets];
    let to = from + width * buckets as i64;
    let sql = format!(
        "SELECT (at - ?1) / ?3, coalesce(sum(CASE WHEN {DEBIT} THEN amount WHEN {CREDIT} THEN -amount ELSE 0 END), 0)
         FROM transactions WHERE at >= ?1 AND at < ?2 GROUP BY 1"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([from, to, width], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (bucket, net) = row?;
        if let Some(slot) = usize::try_from(bucket).ok().and_then(|b| out.get_mut(b)) {
            *slot = net;
        }
    }
    Ok(out)
}
