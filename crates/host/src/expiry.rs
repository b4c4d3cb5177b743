//! Pre-authorizations that are never completed or cancelled expire: their
//! holds are voided after a configured age, so a cardholder's funds are not
//! held forever by a terminal that forgot them. Each expiry commits its void,
//! the journal's new state and the merchant's event together.

use crate::flows::{JobError, id_from, transfer_id};
use ledger::{GroupCommit, LedgerTx, SqliteStore, SqliteTx, TransferRequest};
use rusqlite::params;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Holds expired in one transaction at most: bounds the committer's pause.
const BATCH: i64 = 256;
/// How often the host looks for expired holds.
const INTERVAL: Duration = Duration::from_secs(60);

/// A journal row whose hold is due to expire.
struct DueHold {
    id: i64,
    terminal: String,
    merchant: String,
    stan: u32,
    batch: u32,
    pending: Vec<u8>,
    amount: i64,
    currency: u16,
    rrn: String,
    method: String,
}

/// Voids up to [`BATCH`] approved pre-authorizations created before
/// `now - max_age_secs`; returns how many expired.
pub fn sweep(tx: &mut SqliteTx<'_>, now: i64, max_age_secs: i64) -> Result<usize, JobError> {
    let due: Vec<DueHold> = {
        let mut stmt = tx.sql().prepare_cached(
            "SELECT id, terminal_id, merchant_id, stan, batch, transfer_id, amount, currency, rrn, method FROM journal
             WHERE kind = 'preauth' AND state = 'approved' AND transfer_id IS NOT NULL AND created_at < ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now - max_age_secs, BATCH], |r| {
            Ok(DueHold {
                id: r.get(0)?,
                terminal: r.get(1)?,
                merchant: r.get(2)?,
                stan: r.get(3)?,
                batch: r.get(4)?,
                pending: r.get(5)?,
                amount: r.get(6)?,
                currency: r.get(7)?,
                rrn: r.get(8)?,
                method: r.get(9)?,
            })
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut expired = 0;
    for DueHold {
        id,
        terminal,
        merchant,
        stan,
        batch,
        pending,
        amount,
        currency,
        rrn,
        method,
    } in due
    {
        let Some(pending) = id_from(Some(pending)) else {
            continue;
        };
        let void = TransferRequest::void(transfer_id(&terminal, "expire", stan, batch), pending);
        match tx.create_transfer(&void) {
            Ok(_) => {}
            Err(ledger::TransferError::Store(e)) => return Err(e.into()),
            Err(e) => {
                // Already posted or voided through another path: only the journal lagged.
                tracing::warn!(journal = id, "hold not voided on expiry: {e}");
            }
        }
        tx.sql().execute(
            "UPDATE journal SET state = 'expired' WHERE id = ?1",
            params![id],
        )?;
        let event = serde_json::json!({
            "event_id": format!("expire-{id}"),
            "type": "transaction",
            "transaction": {
                "id": id, "kind": "preauth", "state": "expired", "approved": false,
                "amount": amount, "currency": currency, "merchant_id": merchant,
                "terminal_id": terminal, "stan": stan, "batch": batch, "rrn": rrn, "payment_method": method, "at": now,
            }
        });
        tx.sql().execute(
            "INSERT INTO outbox (event_id, merchant_id, kind, payload, created_at, next_attempt_at) VALUES (?1, ?2, 'transaction', ?3, ?4, ?4)",
            params![format!("expire-{id}"), merchant, event.to_string(), now],
        )?;
        expired += 1;
    }
    Ok(expired)
}

/// Expires holds older than `max_age` every minute until `shutdown`.
pub async fn run(
    ledger: Arc<GroupCommit<SqliteStore>>,
    max_age: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
    loop {
        let now = crate::time::Now::system().unix;
        match ledger.submit(move |tx| sweep(tx, now, max_age)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "pre-authorization holds expired"),
            Err(e) => tracing::error!("expiring holds: {e}"),
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}
