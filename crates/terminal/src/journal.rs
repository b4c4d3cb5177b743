//! The terminal's journal in SQLite: every transaction with its state
//! history, the store-and-forward queue (reversals and offline advices,
//! sealed because they carry card data), the STAN, batch and DUKPT counters,
//! and batch totals. Synchronous FULL: a reversal or advice written here
//! survives power loss, before anything is sent.
//!
//! The same database holds the ECR interface's tables (its exchanges with
//! their answers, its pairings; see [`crate::ecr`]), which the ECR service
//! reads and writes through its own connection ([`connect`]) so that it
//! never waits for a payment holding the journal.

use crate::engine::{SafItem, SafKind, Totals, TxnKind};
use pki::{MasterKey, SealError};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS txns (
    id             INTEGER PRIMARY KEY,
    kind           TEXT NOT NULL,
    amount         INTEGER NOT NULL,
    currency       INTEGER NOT NULL,
    masked_pan     TEXT NOT NULL,
    stan           INTEGER NOT NULL,
    batch          INTEGER NOT NULL,
    state          TEXT NOT NULL,
    response_code  TEXT,
    reason         TEXT,
    auth_code      TEXT,
    rrn            TEXT,
    original_batch INTEGER,
    original_stan  INTEGER,
    online_pin     INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (batch, stan)
) STRICT;
CREATE TABLE IF NOT EXISTS txn_history (
    txn_id INTEGER NOT NULL REFERENCES txns (id),
    state  TEXT NOT NULL,
    note   TEXT NOT NULL,
    at     INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS saf (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('reversal', 'advice')),
    txn_id     INTEGER NOT NULL REFERENCES txns (id),
    message    BLOB NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS ecr_exchanges (
    id          INTEGER PRIMARY KEY,
    sale_id     TEXT NOT NULL,
    service_id  TEXT NOT NULL,
    category    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    answered_at INTEGER,
    answer      TEXT,
    UNIQUE (sale_id, service_id)
) STRICT;
CREATE INDEX IF NOT EXISTS ecr_exchanges_created ON ecr_exchanges (created_at);
CREATE TABLE IF NOT EXISTS ecr_pairings (
    key_identifier TEXT NOT NULL,
    key_version    INTEGER NOT NULL,
    passphrase     BLOB NOT NULL,
    label          TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    PRIMARY KEY (key_identifier, key_version)
) STRICT;
"#;

const STORAGE_KEY: &str = "storage.key";
const SAF_PURPOSE: &str = "terminal saf message";

/// The journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite failed.
    #[error("journal: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The storage key or a sealed message failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The data directory could not be created.
    #[error("{0}")]
    Io(String),
}

/// A transaction row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TxnRecord {
    /// Row id.
    pub id: i64,
    /// Kind name.
    pub kind: String,
    /// Amount.
    pub amount: u64,
    /// Currency.
    pub currency: u16,
    /// PAN masked.
    pub masked_pan: String,
    /// STAN.
    pub stan: u32,
    /// Batch.
    pub batch: u32,
    /// `sending`, `approved`, `approved_offline`, `declined`, `reversed`, `failed`, `voided`.
    pub state: String,
    /// Field 39.
    pub response_code: Option<String>,
    /// Human reason.
    pub reason: Option<String>,
    /// Field 38.
    pub auth_code: Option<String>,
    /// Field 37.
    pub rrn: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Whether the cardholder was verified by an online PIN.
    pub online_pin: bool,
}

/// The journal.
pub struct Journal {
    conn: Connection,
    key: MasterKey,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The terminal's storage key in `dir`, which seals the secrets it keeps
/// (stored messages, pairing passphrases, its ECR certificate's key);
/// created with the directory on first use.
pub fn storage_key(dir: &Path) -> Result<MasterKey, JournalError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| JournalError::Io(format!("{}: {e}", dir.display())))?;
    let key_path = dir.join(STORAGE_KEY);
    if key_path.exists() {
        return Ok(MasterKey::from_file(&key_path)?);
    }
    let key = MasterKey::generate();
    key.write_to(&key_path)?;
    Ok(key)
}

/// Opens (creating and migrating) the terminal's database in `dir` and
/// its storage key, which seals the secrets stored in it.
pub fn connect(dir: &Path) -> Result<(Connection, MasterKey), JournalError> {
    let key = storage_key(dir)?;
    pki::seal::restrict_to_owner(&dir.join("terminal.db"))?;
    let conn = Connection::open(dir.join("terminal.db"))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    // Journals created before these columns get them here.
    add_column(&conn, "online_pin", "INTEGER NOT NULL DEFAULT 0")?;
    // The ECR exchange a transaction answers (crate::ecr).
    add_column(&conn, "ecr_exchange", "INTEGER")?;
    Ok((conn, key))
}

/// Adds `column` to `txns` unless it is there (journals of older versions).
fn add_column(conn: &Connection, column: &str, declaration: &str) -> Result<(), JournalError> {
    let present = conn
        .prepare("SELECT 1 FROM pragma_table_info('txns') WHERE name = ?1")?
        .exists(params![column])?;
    if !present {
        conn.execute_batch(&format!(
            "ALTER TABLE txns ADD COLUMN {column} {declaration}"
        ))?;
    }
    Ok(())
}

impl Journal {
    /// Opens (creating) the journal in `dir`.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let (conn, key) = connect(dir)?;
        Ok(Journal { conn, key })
    }

    fn counter(&self, name: &str, default: i64) -> Result<i64, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM counters WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(default))
    }

    fn set_counter(&self, name: &str, value: i64) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT INTO counters (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
            params![name, value],
        )?;
        Ok(())
    }

    /// A stored setting (the last parameters from the host).
    pub fn setting(&self, name: &str) -> Result<Option<String>, JournalError> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM settings WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores a setting.
    pub fn set_setting(&self, name: &str, value: &str) -> Result<(), JournalError> {
        self.conn.execute(
            "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
            params![name, value],
        )?;
        Ok(())
    }

    /// The next STAN (1..=999999, wrapping), persisted before use.
    pub fn next_stan(&self) -> Result<u32, JournalError> {
        let stan = self.counter("stan", 0)? % 999_999 + 1;
        self.set_counter("stan", stan)?;
        Ok(stan as u32)
    }

    /// The open batch number.
    pub fn batch(&self) -> Result<u32, JournalError> {
        Ok(self.counter("batch", 1)? as u32)
    }

    /// Closes the batch: the next one opens (1..=999999, wrapping).
    pub fn close_batch(&self) -> Result<u32, JournalError> {
        let next = self.batch()? as i64 % 999_999 + 1;
        self.set_counter("batch", next)?;
        Ok(next as u32)
    }

    /// The DUKPT counter the next transaction key must use (never reused,
    /// even across a crash: stored before the key is).
    pub fn ksn_next(&self) -> Result<u32, JournalError> {
        Ok(self.counter("ksn_next", 1)? as u32)
    }

    /// Records that counters below `next` are used.
    pub fn set_ksn_next(&self, next: u32) -> Result<(), JournalError> {
        self.set_counter("ksn_next", i64::from(next))
    }

    /// Records a new transaction and, when `reversal` is given, its stored
    /// reversal, in one commit, before the request is sent. `exchange` is
    /// the ECR exchange the transaction answers, if any.
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        &mut self,
        kind: TxnKind,
        amount: u64,
        currency: u16,
        masked_pan: &str,
        stan: u32,
        batch: u32,
        original: Option<(u32, u32)>,
        state: &str,
        saf: Option<(SafKind, &[u8])>,
        exchange: Option<i64>,
    ) -> Result<i64, JournalError> {
        let at = now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO txns (kind, amount, currency, masked_pan, stan, batch, state, original_batch, original_stan, created_at, updated_at, ecr_exchange)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)",
            params![kind.name(), amount as i64, currency, masked_pan, stan, batch, state, original.map(|o| o.0), original.map(|o| o.1), at, exchange],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO txn_history (txn_id, state, note, at) VALUES (?1, ?2, '', ?3)",
            params![id, state, at],
        )?;
        if let Some((kind, message)) = saf {
            let sealed = self.key.seal(SAF_PURPOSE, message);
            let kind = match kind {
                SafKind::Reversal => "reversal",
                SafKind::Advice => "advice",
            };
            tx.execute(
                "INSERT INTO saf (kind, txn_id, message, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![kind, id, sealed, at],
            )?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// Records that the cardholder of transaction `id` was verified by an
    /// online PIN (its merchant receipt needs no signature line).
    pub fn record_online_pin(&self, id: i64) -> Result<(), JournalError> {
        self.conn
            .execute("UPDATE txns SET online_pin = 1 WHERE id = ?1", params![id])?;
        Ok(())
    }

    /// Ends a transaction; `drop_reversal` deletes its stored reversal in the same commit.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        &mut self,
        id: i64,
        state: &str,
        code: Option<&str>,
        reason: &str,
        auth_code: Option<&str>,
        rrn: Option<&str>,
        drop_reversal: bool,
    ) -> Result<(), JournalError> {
        let at = now();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE txns SET state = ?2, response_code = ?3, reason = ?4, auth_code = ?5, rrn = ?6, updated_at = ?7 WHERE id = ?1",
            params![id, state, code, reason, auth_code, rrn, at],
        )?;
        tx.execute(
            "INSERT INTO txn_history (txn_id, state, note, at) VALUES (?1, ?2, ?3, ?4)",
            params![id, state, reason, at],
        )?;
        if drop_reversal {
            tx.execute(
                "DELETE FROM saf WHERE txn_id = ?1 AND kind = 'reversal'",
                params![id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Marks the original of a void or cancel (same batch, STAN).
    pub fn mark_original(&self, batch: u32, stan: u32, state: &str) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE txns SET state = ?3, updated_at = ?4 WHERE batch = ?1 AND stan = ?2",
            params![batch, stan, state, now()],
        )?;
        Ok(())
    }

    /// The store-and-forward queue.
    pub fn saf_items(&self) -> Result<Vec<SafItem>, JournalError> {
        let mut stmt = self.conn.prepare("SELECT id, kind FROM saf ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            let kind: String = r.get(1)?;
            Ok(SafItem {
                id: r.get(0)?,
                kind: if kind == "reversal" {
                    SafKind::Reversal
                } else {
                    SafKind::Advice
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A stored message (unsealed) and its transaction id.
    pub fn saf_message(&self, id: i64) -> Result<Option<(i64, Vec<u8>)>, JournalError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT txn_id, message FROM saf WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((txn, sealed)) => {
                let plain = self
                    .key
                    .open(SAF_PURPOSE, &sealed, Path::new("terminal.db"))?;
                Ok(Some((txn, plain.expose().to_vec())))
            }
        }
    }

    /// Records a failed attempt of a stored message.
    pub fn saf_attempt_failed(&self, id: i64, error: &str) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE saf SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
            params![id, error],
        )?;
        Ok(())
    }

    /// Deletes an acknowledged stored message and notes it in the transaction's history.
    pub fn saf_done(&mut self, id: i64, note: &str) -> Result<(), JournalError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let txn: Option<i64> = tx
            .query_row("SELECT txn_id FROM saf WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()?;
        tx.execute("DELETE FROM saf WHERE id = ?1", params![id])?;
        if let Some(txn) = txn {
            tx.execute("INSERT INTO txn_history (txn_id, state, note, at) VALUES (?1, 'forwarded', ?2, ?3)", params![txn, note, now()])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Total amount of offline approvals not yet forwarded.
    pub fn offline_pending(&self) -> Result<u64, JournalError> {
        Ok(self.conn.query_row(
            "SELECT coalesce(sum(t.amount), 0) FROM saf s JOIN txns t ON t.id = s.txn_id WHERE s.kind = 'advice'",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Totals of batch `batch`, as settlement reports them.
    pub fn totals(&self, batch: u32) -> Result<Totals, JournalError> {
        let sum = |kinds: &str| -> Result<(i64, i64), rusqlite::Error> {
            self.conn.query_row(
                &format!("SELECT coalesce(sum(amount), 0), count(*) FROM txns WHERE batch = ?1 AND kind IN ({kinds}) AND state IN ('approved', 'approved_offline')"),
                params![batch],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        };
        let debit = sum("'sale', 'completion'")?;
        let credit = sum("'refund'")?;
        Ok(Totals {
            debit_amount: debit.0 as u64,
            debit_count: debit.1 as u32,
            credit_amount: credit.0 as u64,
            credit_count: credit.1 as u32,
        })
    }

    /// Approved transactions of a batch, for batch upload: (kind, stan, amount, masked PAN).
    pub fn batch_transactions(&self, batch: u32) -> Result<Vec<TxnRecord>, JournalError> {
        self.list("WHERE batch = ?1 AND state IN ('approved', 'approved_offline') AND kind IN ('sale', 'completion', 'refund')", params![batch], 10_000)
    }

    /// The latest transactions, newest first.
    pub fn recent(&self, limit: u32) -> Result<Vec<TxnRecord>, JournalError> {
        self.list("", params![], limit)
    }

    /// The transaction with trace number `stan` in batch `batch`.
    pub fn find(&self, batch: u32, stan: u32) -> Result<Option<TxnRecord>, JournalError> {
        Ok(self
            .list("WHERE batch = ?1 AND stan = ?2", params![batch, stan], 1)?
            .pop())
    }

    /// The transaction that answers ECR exchange `exchange`, if one began.
    pub fn for_exchange(&self, exchange: i64) -> Result<Option<TxnRecord>, JournalError> {
        Ok(self
            .list("WHERE ecr_exchange = ?1", params![exchange], 1)?
            .pop())
    }

    /// One transaction by id.
    pub fn get(&self, id: i64) -> Result<Option<TxnRecord>, JournalError> {
        Ok(self.list("WHERE id = ?1", params![id], 1)?.pop())
    }

    fn list(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
        limit: u32,
    ) -> Result<Vec<TxnRecord>, JournalError> {
        let sql = format!(
            "SELECT id, kind, amount, currency, masked_pan, stan, batch, state, response_code, reason, auth_code, rrn, created_at, online_pin FROM txns {filter} ORDER BY id DESC LIMIT {limit}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(args, |r| {
            Ok(TxnRecord {
                id: r.get(0)?,
                kind: r.get(1)?,
                amount: r.get::<_, i64>(2)? as u64,
                currency: r.get(3)?,
                masked_pan: r.get(4)?,
                stan: r.get(5)?,
                batch: r.get(6)?,
                state: r.get(7)?,
                response_code: r.get(8)?,
                reason: r.get(9)?,
                auth_code: r.get(10)?,
                rrn: r.get(11)?,
                created_at: r.get(12)?,
                online_pin: r.get(13)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// State history of a transaction: (state, note, unix seconds).
    pub fn history(&self, id: i64) -> Result<Vec<(String, String, i64)>, JournalError> {
        let mut stmt = self
            .conn
            .prepare("SELECT state, note, at FROM txn_history WHERE txn_id = ?1 ORDER BY rowid")?;
        let rows = stmt.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
