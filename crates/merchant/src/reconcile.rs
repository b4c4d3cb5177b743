//! Reconciliation of a day (UTC): the transactions recorded here against
//! the host's transaction list, and each terminal batch the host settled
//! that day against the totals of the same batch here. Every difference is
//! listed and the result is stored with its items.

use crate::audit::{self, Change};
use crate::events::HostTransaction;
use crate::host_api::{HostApi, HostApiError};
use crate::reports::{Totals, batch_totals};
use crate::store::{Store, StoreError, unix_now};
use rusqlite::{Connection, params};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most transactions in one day's reconciliation: bounds memory. A day with
/// more is refused whole rather than reconciled in part.
pub const MAX_TRANSACTIONS: usize = 200_000;

/// A reconciliation could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The date is not `YYYY-MM-DD`.
    #[error("date {0:?}: expected YYYY-MM-DD")]
    Date(String),
    /// The host's API failed.
    #[error(transparent)]
    Host(#[from] HostApiError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// More than [`MAX_TRANSACTIONS`] on one side.
    #[error("more than {MAX_TRANSACTIONS} transactions on {0}: not reconciled")]
    TooMany(String),
    /// The host's settlement report was cut short.
    #[error("the host's settlement report for {0} is truncated")]
    Truncated(String),
}

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// The host has it, this back office does not.
    MissingHere,
    /// Recorded here, not at the host.
    MissingAtHost,
    /// Both have it with different amounts.
    Amount,
    /// Both have it with different statuses.
    Status,
    /// A settled batch whose totals differ from the batch here.
    Batch,
}

impl DifferenceKind {
    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            DifferenceKind::MissingHere => "missing_here",
            DifferenceKind::MissingAtHost => "missing_at_host",
            DifferenceKind::Amount => "amount",
            DifferenceKind::Status => "status",
            DifferenceKind::Batch => "batch",
        }
    }
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// What differs.
    pub kind: DifferenceKind,
    /// Host journal id of the transaction (none for a batch).
    pub host_id: Option<i64>,
    /// Terminal.
    pub terminal_id: String,
    /// Batch.
    pub batch: u32,
    /// RRN of the transaction (none for a batch).
    pub rrn: Option<String>,
    /// The value here (none when missing here).
    pub here: Option<String>,
    /// The value at the host (none when missing there).
    pub host: Option<String>,
}

/// A stored reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// Its id.
    pub id: i64,
    /// The day, `YYYY-MM-DD`.
    pub date: String,
    /// When it ran, Unix seconds.
    pub run_at: i64,
    /// Who ran it.
    pub actor: String,
    /// Transactions at the host that day.
    pub host_count: i64,
    /// Transactions here that day.
    pub local_count: i64,
    /// Present on both sides and equal.
    pub matched: i64,
    /// Settled batches compared.
    pub batches: i64,
    /// Every difference.
    pub differences: Vec<Difference>,
}

/// A transaction as compared: what both sides know.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Side {
    terminal_id: String,
    batch: u32,
    rrn: String,
    amount: u64,
    status: String,
}

/// Compares the two sides of a day and the batches; pure, for testing.
fn compare(host: &BTreeMap<i64, Side>, here: &BTreeMap<i64, Side>) -> (Vec<Difference>, i64) {
    let mut differences = Vec::new();
    let mut matched = 0;
    let diff = |kind, id: i64, s: &Side, here: Option<String>, host: Option<String>| Difference {
        kind,
        host_id: Some(id),
        terminal_id: s.terminal_id.clone(),
        batch: s.batch,
        rrn: Some(s.rrn.clone()),
        here,
        host,
    };
    for (id, h) in host {
        match here.get(id) {
            None => differences.push(diff(
                DifferenceKind::MissingHere,
                *id,
                h,
                None,
                Some(format!("{} {}", h.status, h.amount)),
            )),
            Some(l) => {
                let mut same = true;
                if l.amount != h.amount {
                    same = false;
                    differences.push(diff(
                        DifferenceKind::Amount,
                        *id,
                        h,
                        Some(l.amount.to_string()),
                        Some(h.amount.to_string()),
                    ));
                }
                if l.status != h.status {
                    same = false;
                    differences.push(diff(
                        DifferenceKind::Status,
                        *id,
                        h,
                        Some(l.status.clone()),
                        Some(h.status.clone()),
                    ));
                }
                matched += i64::from(same);
            }
        }
    }
    for (id, l) in here {
        if !host.contains_key(id) {
            differences.push(diff(
                DifferenceKind::MissingAtHost,
                *id,
                l,
                Some(format!("{} {}", l.status, l.amount)),
                None,
            ));
        }
    }
    (differences, matched)
}

fn totals_text(t: &Totals) -> String {
    format!(
        "debits {} x{}, credits {} x{}",
        t.debit_amount, t.debit_count, t.credit_amount, t.credit_count
    )
}

/// Who the daily reconciliation is recorded as.
pub const DAILY_ACTOR: &str = "system";

/// The daily reconciliation: when the day before `now` (UTC) has not been
/// reconciled by [`DAILY_ACTOR`] yet, reconciles it; `None` when it was.
/// The back office calls this at start and then hourly, so a day is
/// reconciled once, soon after it ends, whenever the back office runs.
pub async fn reconcile_due(
    store: &Arc<Store>,
    api: &HostApi,
    now: i64,
) -> Result<Option<Reconciliation>, ReconcileError> {
    let date = crate::reports::utc_date(now - 86_400);
    let done = {
        let date = date.clone();
        store
            .call(move |s: &Store| {
                s.read(|c| {
                    Ok(c.query_row(
                        "SELECT count(*) FROM reconciliations WHERE date = ?1 AND actor = ?2",
                        params![date, DAILY_ACTOR],
                        |r| r.get::<_, i64>(0),
                    )? > 0)
                })
            })
            .await?
    };
    if done {
        return Ok(None);
    }
    reconcile(store, api, &date, DAILY_ACTOR).await.map(Some)
}

/// Reconciles `date` (`YYYY-MM-DD`, UTC) and stores the result, audited
/// under `actor`.
pub async fn reconcile(
    store: &Arc<Store>,
    api: &HostApi,
    date: &str,
    actor: &str,
) -> Result<Reconciliation, ReconcileError> {
    let start = host::api::parse_date(date).ok_or_else(|| ReconcileError::Date(date.into()))?;
    let end = start + 86_400;
    let mut host = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = api
            .transactions(Some(start), Some(end), cursor.as_deref())
            .await?;
        for t in page.transactions.into_iter().map(HostTransaction::from) {
            host.insert(t.id, side(&t));
        }
        if host.len() > MAX_TRANSACTIONS {
            return Err(ReconcileError::TooMany(format!("{date} at the host")));
        }
        match page.next_cursor {
            Some(next) if cursor.as_deref() != Some(next.as_str()) => cursor = Some(next),
            _ => break,
        }
    }
    let report = api.settlements(date).await?;
    if report.truncated {
        return Err(ReconcileError::Truncated(date.into()));
    }
    let (date, actor) = (date.to_string(), actor.to_string());
    store
        .call(move |s| {
            s.write(|tx| -> Result<Reconciliation, ReconcileError> {
                let here = local_day(tx, start, end)?;
                if here.len() > MAX_TRANSACTIONS {
                    return Err(ReconcileError::TooMany(format!("{date} here")));
                }
                let (mut differences, matched) = compare(&host, &here);
                let mut batches = 0;
                for settled in report.settlements.iter().filter(|s| s.latest) {
                    batches += 1;
                    let at_host = Totals {
                        debit_amount: settled.debit_amount,
                        debit_count: settled.debit_count,
                        credit_amount: settled.credit_amount,
                        credit_count: settled.credit_count,
                    };
                    let local = batch_totals(tx, &settled.terminal_id, settled.batch)?;
                    if local != at_host {
                        differences.push(Difference {
                            kind: DifferenceKind::Batch,
                            host_id: None,
                            terminal_id: settled.terminal_id.clone(),
                            batch: settled.batch,
                            rrn: None,
                            here: Some(totals_text(&local)),
                            host: Some(totals_text(&at_host)),
                        });
                    }
                }
                let result = Reconciliation {
                    id: 0,
                    date,
                    run_at: unix_now(),
                    actor,
                    host_count: host.len() as i64,
                    local_count: here.len() as i64,
                    matched,
                    batches,
                    differences,
                };
                let id = save(tx, &result)?;
                audit::append(
                    tx,
                    &Change {
                        actor: &result.actor,
                        action: "reconciliation.run",
                        subject: &format!("date:{}", result.date),
                        before: None,
                        after: Some(serde_json::json!({
                            "reconciliation": id, "host_count": result.host_count,
                            "local_count": result.local_count, "matched": result.matched,
                            "batches": result.batches, "differences": result.differences.len(),
                        })),
                    },
                    result.run_at,
                )?;
                Ok(Reconciliation { id, ..result })
            })
        })
        .await
}

fn side(t: &HostTransaction) -> Side {
    Side {
        terminal_id: t.terminal_id.clone(),
        batch: t.batch,
        rrn: t.rrn.clone(),
        amount: t.amount,
        status: t.state.clone(),
    }
}

fn local_day(conn: &Connection, start: i64, end: i64) -> Result<BTreeMap<i64, Side>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT host_id, terminal_id, batch, rrn, amount, status FROM transactions
         WHERE at >= ?1 AND at < ?2 LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![start, end, MAX_TRANSACTIONS as i64 + 1], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            Side {
                terminal_id: r.get(1)?,
                batch: r.get(2)?,
                rrn: r.get(3)?,
                amount: r.get::<_, i64>(4)?.max(0) as u64,
                status: r.get(5)?,
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn save(conn: &Connection, r: &Reconciliation) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO reconciliations (date, run_at, actor, host_count, local_count, matched, differences, batches)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            r.date,
            r.run_at,
            r.actor,
            r.host_count,
            r.local_count,
            r.matched,
            r.differences.len() as i64,
            r.batches
        ],
    )?;
    let id = conn.last_insert_rowid();
    let mut insert = conn.prepare_cached(
        "INSERT INTO reconciliation_items (reconciliation_id, kind, host_id, terminal_id, batch, rrn, here, host)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for d in &r.differences {
        insert.execute(params![
            id,
            d.kind.name(),
            d.host_id,
            d.terminal_id,
            d.batch,
            d.rrn,
            d.here,
            d.host
        ])?;
    }
    Ok(id)
}

/// A stored reconciliation with its items.
pub fn load(conn: &Connection, id: i64) -> Result<Option<Reconciliation>, StoreError> {
    let head = conn.query_row(
        "SELECT id, date, run_at, actor, host_count, local_count, matched, batches FROM reconciliations WHERE id = ?1",
        params![id],
        |r| {
            Ok(Reconciliation {
                id: r.get(0)?,
                date: r.get(1)?,
                run_at: r.get(2)?,
                actor: r.get(3)?,
                host_count: r.get(4)?,
                local_count: r.get(5)?,
                matched: r.get(6)?,
                batches: r.get(7)?,
                differences: Vec::new(),
            })
        },
    );
    let mut head = match head {
        Ok(head) => head,
        Err(rusqlite::Error::QueryReturnedNoRows) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut stmt = conn.prepare(
        "SELECT kind, host_id, terminal_id, batch, rrn, here, host FROM reconciliation_items
         WHERE reconciliation_id = ?1 ORDER BY id",
    )?;
    let items = stmt.query_map(params![id], |r| {
        let kind = match r.get::<_, String>(0)?.as_str() {
            "missing_here" => DifferenceKind::MissingHere,
            "missing_at_host" => DifferenceKind::MissingAtHost,
            "amount" => DifferenceKind::Amount,
            "status" => DifferenceKind::Status,
            _ => DifferenceKind::Batch,
        };
        Ok(Difference {
            kind,
            host_id: r.get(1)?,
            terminal_id: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            batch: r.get::<_, Option<u32>>(3)?.unwrap_or_default(),
            rrn: r.get(4)?,
            here: r.get(5)?,
            host: r.get(6)?,
        })
    })?;
    head.differences = items.collect::<Result<_, _>>()?;
    Ok(Some(head))
}

/// A reconciliation in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// Its id.
    pub id: i64,
    /// The day.
    pub date: String,
    /// When it ran.
    pub run_at: i64,
    /// Who ran it.
    pub actor: String,
    /// How many differences it found.
    pub differences: i64,
}

/// The latest `limit` reconciliations, newest first.
pub fn recent(conn: &Connection, limit: u32) -> Result<Vec<RunSummary>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, date, run_at, actor, differences FROM reconciliations ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit], |r| {
        Ok(RunSummary {
            id: r.get(0)?,
            date: r.get(1)?,
            run_at: r.get(2)?,
            actor: r.get(3)?,
            differences: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(amount: u64, status: &str) -> Side {
        Side {
            terminal_id: "T0000001".into(),
            batch: 1,
            rrn: "000000000001".into(),
            amount,
            status: status.into(),
        }
    }

    #[test]
    fn every_kind_of_difference_is_listed() {
        let host = BTreeMap::from([
            (1, s(100, "approved")),
            (2, s(200, "approved")),
            (3, s(300, "voided")),
            (4, s(400, "approved")),
        ]);
        let here = BTreeMap::from([
            (1, s(100, "approved")),
            (2, s(250, "approved")),
            (3, s(300, "approved")),
            (5, s(500, "approved")),
        ]);
        let (differences, matched) = compare(&host, &here);
        assert_eq!(matched, 1);
        let kinds: Vec<(DifferenceKind, Option<i64>)> =
            differences.iter().map(|d| (d.kind, d.host_id)).collect();
        assert_eq!(
            kinds,
            vec![
                (DifferenceKind::Amount, Some(2)),
                (DifferenceKind::Status, Some(3)),
                (DifferenceKind::MissingHere, Some(4)),
                (DifferenceKind::MissingAtHost, Some(5)),
            ]
        );
        assert_eq!(differences[0].here.as_deref(), Some("250"));
        assert_eq!(differences[0].host.as_deref(), Some("200"));
    }
}
