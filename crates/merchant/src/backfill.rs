//! Backfill: what the host recorded while the back office was not
//! listening, from `GET /v1/transactions`.
//!
//! The listing starts [`MARGIN_SECS`] before the newest transaction
//! recorded here (all of them on a first run) and pages to the end. The
//! start of a run is stored before it begins and cleared when it ends, so a
//! run cut short (newest first, it may have recorded only recent pages) is
//! taken up again from the same start. Every transaction goes through
//! [`apply_transaction`], so backfill and webhooks record each transaction
//! once, whichever comes first.

use crate::audit::{self, Change};
use crate::events::{Applied, HostTransaction, apply_transaction};
use crate::host_api::{HostApi, HostApiError};
use crate::store::{self, Store, StoreError, unix_now};
use serde::Serialize;
use std::sync::Arc;

/// The listing starts this long before the newest transaction recorded
/// here: transactions commit at the host in about the order they arrive,
/// not exactly.
pub const MARGIN_SECS: i64 = 600;
/// Setting holding the start of a run under way (`all` for no start).
const PENDING: &str = "backfill.pending_from";
/// Source recorded in the status history.
const SOURCE: &str = "backfill";

/// A backfill failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// The host's API failed.
    #[error(transparent)]
    Host(#[from] HostApiError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The host returned the same cursor twice.
    #[error("host API returned the same page cursor twice ({0})")]
    Cursor(String),
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackfillReport {
    /// Listing start, Unix seconds (none: everything).
    pub from: Option<i64>,
    /// Transactions the host listed.
    pub listed: u64,
    /// Recorded for the first time.
    pub new: u64,
    /// Recorded before, with a status that moved.
    pub updated: u64,
}

/// Fetches and records what the host has since the newest transaction
/// recorded here; `actor` is named in the audit log when anything changed.
pub async fn backfill(
    store: &Arc<Store>,
    api: &HostApi,
    actor: &str,
) -> Result<BackfillReport, BackfillError> {
    let from = store
        .call(|s| {
            s.write(|tx| -> Result<Option<i64>, StoreError> {
                let from = match store::setting(tx, PENDING)? {
                    Some(pending) => pending.parse().ok(),
                    None => {
                        let newest: Option<i64> =
                            tx.query_row("SELECT max(at) FROM transactions", [], |r| r.get(0))?;
                        newest.map(|at| at - MARGIN_SECS)
                    }
                };
                let text = from.map_or_else(|| "all".to_string(), |f| f.to_string());
                store::set_setting(tx, PENDING, &text)?;
                Ok(from)
            })
        })
        .await?;
    let mut report = BackfillReport {
        from,
        ..BackfillReport::default()
    };
    let mut cursor: Option<String> = None;
    // The newest journal id the listing reflects: statuses read from it are
    // as new as that.
    let mut horizon = 0i64;
    loop {
        let page = api.transactions(from, None, cursor.as_deref()).await?;
        let items: Vec<HostTransaction> = page.transactions.into_iter().map(Into::into).collect();
        horizon = items.iter().map(|t| t.id).fold(horizon, i64::max);
        report.listed += items.len() as u64;
        let now = unix_now();
        let (new, updated) = store
            .call(move |s| {
                s.write(|tx| -> Result<(u64, u64), StoreError> {
                    let (mut new, mut updated) = (0, 0);
                    for t in &items {
                        match apply_transaction(tx, t, horizon.max(t.id), SOURCE, now)? {
                            Applied::Inserted(_) => new += 1,
                            Applied::Updated(_) => updated += 1,
                            Applied::Unchanged(_) => {}
                        }
                    }
                    Ok((new, updated))
                })
            })
            .await?;
        report.new += new;
        report.updated += updated;
        match page.next_cursor {
            None => break,
            // A host that repeats a cursor would keep this loop going forever.
            Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                return Err(BackfillError::Cursor(next));
            }
            Some(next) => cursor = Some(next),
        }
    }
    let summary = report.clone();
    let actor = actor.to_string();
    store
        .call(move |s| {
            s.write(|tx| -> Result<(), StoreError> {
                store::clear_setting(tx, PENDING)?;
                if summary.new + summary.updated > 0 {
                    audit::append(
                        tx,
                        &Change {
                            actor: &actor,
                            action: "backfill.run",
                            subject: "transactions",
                            before: None,
                            after: Some(serde_json::to_value(&summary).unwrap_or_default()),
                        },
                        unix_now(),
                    )?;
                }
                Ok(())
            })
        })
        .await?;
    Ok(report)
}
