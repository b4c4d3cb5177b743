//! The SQLite store: one file, WAL journal, `synchronous = FULL`.
//!
//! Why FULL: in WAL mode, `synchronous = NORMAL` syncs the WAL only at
//! checkpoints, so a committed transaction survives a crash of the process
//! but may vanish on power loss or a kernel crash. An approval that has been
//! sent to a terminal must survive both, so every commit syncs the WAL before
//! it returns. Group commit ([`crate::GroupCommit`]) is what makes that
//! affordable: one sync covers a whole batch.

mod schema;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};

pub use schema::{LEDGER_COMPONENT, Migrations, migrate_components};

use crate::error::StoreError;
use crate::invariants::{AuditRow, InvariantReport, MAX_REPORTED_VIOLATIONS, Violation};
use crate::model::{
    Account, AccountFlags, AccountId, AccountKind, AccountStatus, Balances, Currency, MAX_AMOUNT,
    Transfer, TransferId, TransferKind,
};
use crate::store::{Cursor, LedgerRead, LedgerStore, LedgerTx, Page, PageRequest, sealed};

/// How long a connection waits for a lock held by another connection (a
/// checkpoint, another process's writer) before failing with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer's page cache, KiB.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// How often the checkpointer copies committed WAL frames into the
/// database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);

/// A ledger in one SQLite file, owned by its single writer.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Stops the checkpointer when the store goes (dropped first).
    _checkpointer: Checkpointer,
}

/// Copies committed WAL frames into the database file on a thread of its
/// own, so that the writer never does: SQLite's automatic checkpoint runs
/// inside the COMMIT that crosses its threshold, which under load put a
/// twelfth of the group committer's time (reading WAL frames, writing and
/// syncing the database file) on the one thread every approval waits for.
/// A passive checkpoint from another connection runs beside the writer;
/// once it has copied the whole WAL, the writer's next transaction starts
/// the WAL over, so the file stays bounded while the checkpointer keeps up.
#[derive(Debug)]
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || {
                // Ends when the store drops its sender.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_INTERVAL)
                {
                    let done = conn
                        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
                    if let Err(e) = done {
                        tracing::warn!("WAL checkpoint failed (tried again shortly): {e}");
                    }
                }
            })
            .map_err(StoreError::Thread)?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // At most one checkpoint to finish.
            let _ = thread.join();
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the ledger at `path` and migrates its
    /// schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, &[])
    }

    /// Opens the ledger at `path` and migrates the ledger's schema, then each
    /// of `components` in order (the host's tables that must commit together
    /// with transfers).
    pub fn open_with(
        path: impl AsRef<Path>,
        components: &[Migrations],
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NotWal(mode));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // Each job and each transfer runs in a savepoint, whose undo copies
        // of pages (the statement sub-journal) are temporary files: keep them
        // in memory, bounded by the batch size, instead of writing them out.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // The pages every write probes (the indexes of the caller's tables,
        // accounts, transfers) outgrow SQLite's default 2 MiB page cache as
        // the tables grow, and each miss is then a read and a copy from the
        // operating system's cache. Negative: KiB.
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        // Checkpoints are the checkpointer's (see [`Checkpointer`]).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        schema::migrate(&mut conn, components)?;
        let checkpointer = Checkpointer::start(&path)?;
        Ok(SqliteStore {
            conn,
            path,
            _checkpointer: checkpointer,
        })
    }

    /// The file this store writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A read-only connection to the same file, for lookups that need not go
    /// through the writer (balance inquiries, reports). WAL lets it read the
    /// last committed state while the writer commits.
    pub fn reader(&self) -> Result<SqliteReader, StoreError> {
        SqliteReader::open(&self.path)
    }
}

impl LedgerStore for SqliteStore {
    type Tx<'t> = SqliteTx<'t>;

    fn transaction(&mut self) -> Result<SqliteTx<'_>, StoreError> {
        if !self.conn.is_autocommit() {
            // A failed COMMIT can leave the connection inside the transaction;
            // its outcome was reported as failed, so discard what is left.
            self.conn.execute_batch("ROLLBACK")?;
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last_timestamp: i64 = tx
            .prepare_cached(
                "SELECT max(COALESCE((SELECT max(timestamp) FROM accounts), 0),
                            COALESCE((SELECT max(timestamp) FROM transfers), 0))",
            )?
            .query_row([], |r| r.get(0))?;
        Ok(SqliteTx {
            tx,
            last_timestamp: to_u64(last_timestamp, "transfers")?,
            poisoned: false,
        })
    }
}

/// A write transaction on a [`SqliteStore`].
///
/// Besides the ledger API it hands out the connection ([`SqliteTx::sql`]) so
/// the caller can write its own rows in the same commit as the transfers.
#[derive(Debug)]
pub struct SqliteTx<'c> {
    tx: rusqlite::Transaction<'c>,
    last_timestamp: u64,
    poisoned: bool,
}

impl SqliteTx<'_> {
    fn poison_on(&mut self, r: Result<(), StoreError>) -> Result<(), StoreError> {
        self.poisoned |= r.is_err();
        r
    }

    /// The connection, inside this transaction, for the caller's own tables.
    ///
    /// Its statements commit or roll back with the transaction (and, in a
    /// group-commit job, with the job). Never issue `BEGIN`, `COMMIT`,
    /// `ROLLBACK`, `SAVEPOINT` or `RELEASE` through it, and never write the
    /// ledger's tables directly: the triggers refuse changes to transfers,
    /// and balances must only change through [`LedgerTx::create_transfer`].
    pub fn sql(&self) -> &Connection {
        &self.tx
    }
}

impl sealed::Backend for SqliteTx<'_> {
    fn next_timestamp(&mut self, _: sealed::Token) -> Result<u64, StoreError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        // Strictly increasing even if the wall clock steps back.
        self.last_timestamp = now.max(self.last_timestamp.saturating_add(1));
        Ok(self.last_timestamp)
    }

    fn insert_account(&mut self, _: sealed::Token, a: &Account) -> Result<(), StoreError> {
        let inserted = insert_account(&self.tx, a);
        self.poison_on(inserted)
    }

    fn update_status(
        &mut self,
        _: sealed::Token,
        id: AccountId,
        status: AccountStatus,
    ) -> Result<(), StoreError> {
        let updated = self
            .tx
            .prepare_cached("UPDATE accounts SET status = ?2 WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute(params![id.0.to_be_bytes(), status.code()]))
            .map(drop)
            .map_err(StoreError::from);
        self.poison_on(updated)
    }

    fn apply_transfer(
        &mut self,
        _: sealed::Token,
        t: &Transfer,
        debit: &Balances,
        credit: &Balances,
    ) -> Result<(), StoreError> {
        // A statement that fails undoes only itself, so a failure after the
        // insert would leave a transfer without its balances: poison.
        let applied = apply_rows(&self.tx, t, debit, credit);
        self.poison_on(applied)
    }

    fn poisoned(&self, _: sealed::Token) -> bool {
        self.poisoned
    }

    fn begin_job(&mut self, _: sealed::Token) -> Result<(), StoreError> {
        run(&self.tx, "SAVEPOINT job")
    }

    fn end_job(&mut self, _: sealed::Token, keep: bool) -> Result<(), StoreError> {
        if !keep || self.poisoned {
            run(&self.tx, "ROLLBACK TO job")?;
            self.poisoned = false;
        }
        run(&self.tx, "RELEASE job")
    }
}

fn insert_account(conn: &Connection, a: &Account) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO accounts (id, currency, kind, flags, status, user_data, timestamp,
                debits_pending, debits_posted, credits_pending, credits_posted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        a.id.0.to_be_bytes(),
        a.currency.0,
        a.kind.code(),
        a.flags.bits(),
        a.status.code(),
        a.user_data.to_be_bytes(),
        to_i64(a.timestamp)?,
        to_i64(a.balances.debits_pending)?,
        to_i64(a.balances.debits_posted)?,
        to_i64(a.balances.credits_pending)?,
        to_i64(a.balances.credits_posted)?,
    ])?;
    Ok(())
}

/// Runs one parameterless statement, prepared once per connection (these run
/// several times per transfer).
fn run(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn apply_rows(
    conn: &Connection,
    t: &Transfer,
    debit: &Balances,
    credit: &Balances,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO transfers (id, debit_account, credit_account, amount, currency, kind,
            pending_id, linked_id, code, user_data, timestamp)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        t.id.0.to_be_bytes(),
        t.debit_account.0.to_be_bytes(),
        t.credit_account.0.to_be_bytes(),
        to_i64(t.amount)?,
        t.currency.0,
        t.kind.code(),
        t.kind.pending_id().map(|p| p.0.to_be_bytes()),
        t.linked.map(|l| l.0.to_be_bytes()),
        t.code,
        t.user_data.to_be_bytes(),
        to_i64(t.timestamp)?,
    ])?;
    let mut update = conn.prepare_cached(
        "UPDATE accounts SET debits_pending = ?2, debits_posted = ?3,
            credits_pending = ?4, credits_posted = ?5
         WHERE id = ?1",
    )?;
    for (id, b) in [(t.debit_account, debit), (t.credit_account, credit)] {
        let changed = update.execute(params![
            id.0.to_be_bytes(),
            to_i64(b.debits_pending)?,
            to_i64(b.debits_posted)?,
            to_i64(b.credits_pending)?,
            to_i64(b.credits_posted)?,
        ])?;
        if changed != 1 {
            return Err(StoreError::Invariant {
                account: id,
                what: "account of a validated transfer vanished",
            });
        }
    }
    Ok(())
}

impl LedgerTx for SqliteTx<'_> {
    fn commit(self) -> Result<(), StoreError> {
        if self.poisoned {
            // Dropping the transaction rolls it back.
            return Err(StoreError::Poisoned);
        }
        self.tx.commit()?;
        Ok(())
    }
}

/// A read-only connection to a ledger file (see [`SqliteStore::reader`]).
#[derive(Debug)]
pub struct SqliteReader {
    conn: Connection,
}

impl SqliteReader {
    /// Opens `path` read-only. The file must exist and have been opened by a
    /// [`SqliteStore`] (which creates and migrates it).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(SqliteReader { conn })
    }
}

macro_rules! sqlite_ledger_read {
    ($t:ty) => {
        impl LedgerRead for $t {
            fn get_account(&mut self, id: AccountId) -> Result<Option<Account>, StoreError> {
                read::get_account(&self.conn(), id)
            }
            fn get_transfer(&mut self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
                read::get_transfer(&self.conn(), id)
            }
            fn resolution_of(
                &mut self,
                pending_id: TransferId,
            ) -> Result<Option<Transfer>, StoreError> {
                read::resolution_of(&self.conn(), pending_id)
            }
            fn linked_amount(&mut self, original: TransferId) -> Result<u64, StoreError> {
                read::linked_amount(&self.conn(), original)
            }
            fn account_transfers(
                &mut self,
                account: AccountId,
                page: &PageRequest,
            ) -> Result<Page, StoreError> {
                read::account_transfers(&self.conn(), account, page)
            }
            fn pending_transfers(
                &mut self,
                created_before: u64,
                page: &PageRequest,
            ) -> Result<Page, StoreError> {
                read::pending_transfers(&self.conn(), created_before, page)
            }
            fn check_invariants(&mut self) -> Result<InvariantReport, StoreError> {
                read::check_invariants(&self.conn())
            }
        }
    };
}

impl SqliteReader {
    fn conn(&self) -> &Connection {
        &self.conn
    }
}

impl SqliteTx<'_> {
    fn conn(&self) -> &Connection {
        &self.tx
    }
}

sqlite_ledger_read!(SqliteReader);
sqlite_ledger_read!(SqliteTx<'_>);

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt {
        table: "transfers",
        what: format!("value {v} exceeds the stored integer range"),
    })
}

fn to_u64(v: i64, table: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        table,
        what: format!("negative value {v}"),
    })
}

/// Reads a column and converts it, mapping a failed conversion to a
/// rusqlite conversion error naming the column.
fn col<T, U>(row: &Row<'_>, idx: usize, conv: impl FnOnce(T) -> Option<U>) -> rusqlite::Result<U>
where
    T: rusqlite::types::FromSql,
{
    let v: T = row.get(idx)?;
    conv(v).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Integer,
            format!("column {idx} out of range").into(),
        )
    })
}

mod read {
    use super::*;

    const ACCOUNT_COLS: &str = "id, currency, kind, flags, status, user_data, timestamp,
        debits_pending, debits_posted, credits_pending, credits_posted";
    const TRANSFER_COLS: &str = "id, debit_account, credit_account, amount, currency, kind,
        pending_id, linked_id, code, user_data, timestamp";

    fn id128(b: [u8; 16]) -> Option<u128> {
        Some(u128::from_be_bytes(b))
    }

    fn amount(v: i64) -> Option<u64> {
        u64::try_from(v).ok()
    }

    fn balances_at(row: &Row<'_>, first: usize) -> rusqlite::Result<Balances> {
        Ok(Balances {
            debits_pending: col(row, first, amount)?,
            debits_posted: col(row, first + 1, amount)?,
            credits_pending: col(row, first + 2, amount)?,
            credits_posted: col(row, first + 3, amount)?,
        })
    }

    fn account_row(row: &Row<'_>) -> rusqlite::Result<Account> {
        Ok(Account {
            id: AccountId(col(row, 0, id128)?),
            currency: Currency(row.get(1)?),
            kind: col(row, 2, AccountKind::from_code)?,
            flags: col(row, 3, AccountFlags::from_bits)?,
            status: col(row, 4, AccountStatus::from_code)?,
            user_data: col(row, 5, id128)?,
            timestamp: col(row, 6, amount)?,
            balances: balances_at(row, 7)?,
        })
    }

    fn transfer_row(row: &Row<'_>) -> rusqlite::Result<Transfer> {
        let pending: Option<[u8; 16]> = row.get(6)?;
        let pending = pending.map(|b| TransferId(u128::from_be_bytes(b)));
        let kind = col(row, 5, |k: u8| match (k, pending) {
            (0, None) => Some(TransferKind::Single),
            (1, None) => Some(TransferKind::Pending),
            (2, Some(pending_id)) => Some(TransferKind::Post { pending_id }),
            (3, Some(pending_id)) => Some(TransferKind::Void { pending_id }),
            _ => None,
        })?;
        let linked: Option<[u8; 16]> = row.get(7)?;
        Ok(Transfer {
            id: TransferId(col(row, 0, id128)?),
            debit_account: AccountId(col(row, 1, id128)?),
            credit_account: AccountId(col(row, 2, id128)?),
            amount: col(row, 3, amount)?,
            currency: Currency(row.get(4)?),
            kind,
            linked: linked.map(|b| TransferId(u128::from_be_bytes(b))),
            code: row.get(8)?,
            user_data: col(row, 9, id128)?,
            timestamp: col(row, 10, amount)?,
        })
    }

    pub(super) fn get_account(
        conn: &Connection,
        id: AccountId,
    ) -> Result<Option<Account>, StoreError> {
        Ok(conn
            .prepare_cached(&format!(
                "SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ?1"
            ))?
            .query_row([id.0.to_be_bytes()], account_row)
            .optional()?)
    }

    pub(super) fn get_transfer(
        conn: &Connection,
        id: TransferId,
    ) -> Result<Option<Transfer>, StoreError> {
        Ok(conn
            .prepare_cached(&format!(
                "SELECT {TRANSFER_COLS} FROM transfers WHERE id = ?1"
            ))?
            .query_row([id.0.to_be_bytes()], transfer_row)
            .optional()?)
    }

    pub(super) fn resolution_of(
        conn: &Connection,
        pending_id: TransferId,
    ) -> Result<Option<Transfer>, StoreError> {
        Ok(conn
            .prepare_cached(&format!(
                "SELECT {TRANSFER_COLS} FROM transfers WHERE pending_id = ?1"
            ))?
            .query_row([pending_id.0.to_be_bytes()], transfer_row)
            .optional()?)
    }

    pub(super) fn linked_amount(
        conn: &Connection,
        original: TransferId,
    ) -> Result<u64, StoreError> {
        let sum: i64 = conn
            .prepare_cached("SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE linked_id = ?1")?
            .query_row([original.0.to_be_bytes()], |r| r.get(0))?;
        to_u64(sum, "transfers")
    }

    pub(super) fn account_transfers(
        conn: &Connection,
        account: AccountId,
        page: &PageRequest,
    ) -> Result<Page, StoreError> {
        let limit = page.clamped_limit();
        // Each side reads at most `limit` rows in timestamp order from its
        // own index; the merge keeps the first `limit`.
        let sql = if page.newest_first {
            format!(
                "SELECT * FROM (SELECT {TRANSFER_COLS} FROM transfers
                    WHERE debit_account = ?1 AND timestamp < ?2 ORDER BY timestamp DESC LIMIT ?3)
                 UNION ALL
                 SELECT * FROM (SELECT {TRANSFER_COLS} FROM transfers
                    WHERE credit_account = ?1 AND timestamp < ?2 ORDER BY timestamp DESC LIMIT ?3)
                 ORDER BY timestamp DESC LIMIT ?3"
            )
        } else {
            format!(
                "SELECT * FROM (SELECT {TRANSFER_COLS} FROM transfers
                    WHERE debit_account = ?1 AND timestamp > ?2 ORDER BY timestamp LIMIT ?3)
                 UNION ALL
                 SELECT * FROM (SELECT {TRANSFER_COLS} FROM transfers
                    WHERE credit_account = ?1 AND timestamp > ?2 ORDER BY timestamp LIMIT ?3)
                 ORDER BY timestamp LIMIT ?3"
            )
        };
        let transfers = conn
            .prepare_cached(&sql)?
            .query_map(
                params![account.0.to_be_bytes(), cursor_bound(page)?, limit],
                transfer_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(page_of(transfers, limit))
    }

    /// The timestamp a page starts after (or before, newest first).
    fn cursor_bound(page: &PageRequest) -> Result<i64, StoreError> {
        Ok(match (page.after, page.newest_first) {
            (Some(Cursor(ts)), _) => to_i64(ts)?,
            (None, false) => 0,
            (None, true) => i64::MAX,
        })
    }

    /// A full page may have a successor; a short one is the last.
    fn page_of(transfers: Vec<Transfer>, limit: u32) -> Page {
        let next = (transfers.len() == limit as usize)
            .then(|| transfers.last().map(|t| Cursor(t.timestamp)))
            .flatten();
        Page { transfers, next }
    }

    pub(super) fn pending_transfers(
        conn: &Connection,
        created_before: u64,
        page: &PageRequest,
    ) -> Result<Page, StoreError> {
        let limit = page.clamped_limit();
        let (cursor_cmp, order) = if page.newest_first {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let sql = format!(
            "SELECT {TRANSFER_COLS} FROM transfers t
             WHERE kind = 1 AND timestamp {cursor_cmp} ?1 AND timestamp < ?2
               AND NOT EXISTS (SELECT 1 FROM transfers r WHERE r.pending_id = t.id)
             ORDER BY timestamp {order} LIMIT ?3"
        );
        let before = to_i64(created_before.min(MAX_AMOUNT))?;
        let transfers = conn
            .prepare_cached(&sql)?
            .query_map(params![cursor_bound(page)?, before, limit], transfer_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(page_of(transfers, limit))
    }

    /// Balances derived from the transfers alone: a pending transfer holds
    /// its amount until a post or void names it; singles and posts are
    /// posted; voids post nothing.
    const AUDIT_BALANCES: &str = "
        WITH moves (account, d_pending, d_posted, c_pending, c_posted) AS (
            SELECT t.debit_account,
                   CASE WHEN t.kind = 1 AND NOT EXISTS
                        (SELECT 1 FROM transfers r WHERE r.pending_id = t.id)
                        THEN t.amount ELSE 0 END,
                   CASE WHEN t.kind IN (0, 2) THEN t.amount ELSE 0 END,
                   0, 0
            FROM transfers t
            UNION ALL
            SELECT t.credit_account, 0, 0,
                   CASE WHEN t.kind = 1 AND NOT EXISTS
                        (SELECT 1 FROM transfers r WHERE r.pending_id = t.id)
                        THEN t.amount ELSE 0 END,
                   CASE WHEN t.kind IN (0, 2) THEN t.amount ELSE 0 END
            FROM transfers t
        ),
        sums AS (
            SELECT account, SUM(d_pending) AS dpe, SUM(d_posted) AS dpo,
                   SUM(c_pending) AS cpe, SUM(c_posted) AS cpo
            FROM moves GROUP BY account
        )
        SELECT a.id, a.flags,
               a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted,
               COALESCE(s.dpe, 0), COALESCE(s.dpo, 0), COALESCE(s.cpe, 0), COALESCE(s.cpo, 0)
        FROM accounts a LEFT JOIN sums s ON s.account = a.id
        ORDER BY a.id";

    /// Posts and voids that do not match their pending transfer.
    const AUDIT_RESOLUTIONS: &str = "
        SELECT r.pending_id, r.id,
               CASE WHEN p.id IS NULL THEN 0
                    WHEN p.kind <> 1 THEN 1
                    WHEN p.debit_account <> r.debit_account
                      OR p.credit_account <> r.credit_account
                      OR p.currency <> r.currency THEN 2
                    WHEN r.kind = 2 AND r.amount > p.amount THEN 3
                    ELSE 4 END
        FROM transfers r LEFT JOIN transfers p ON p.id = r.pending_id
        WHERE r.pending_id IS NOT NULL
          AND (p.id IS NULL OR p.kind <> 1
               OR p.debit_account <> r.debit_account OR p.credit_account <> r.credit_account
               OR p.currency <> r.currency
               OR (r.kind = 2 AND r.amount > p.amount)
               OR (r.kind = 3 AND r.amount <> p.amount))
        LIMIT ?1";

    /// Originals whose linked transfers exceed them.
    const AUDIT_LINKS: &str = "
        SELECT o.id, o.amount, SUM(l.amount)
        FROM transfers l JOIN transfers o ON o.id = l.linked_id
        GROUP BY o.id HAVING SUM(l.amount) > o.amount
        LIMIT ?1";

    pub(super) fn check_invariants(conn: &Connection) -> Result<InvariantReport, StoreError> {
        // One snapshot for all queries: a savepoint opens a read transaction
        // on a reader and nests inside a writer's transaction.
        conn.execute_batch("SAVEPOINT audit")?;
        let report = audit(conn);
        conn.execute_batch("RELEASE audit")?;
        report
    }

    fn audit(conn: &Connection) -> Result<InvariantReport, StoreError> {
        let transfers: i64 = conn.query_row("SELECT count(*) FROM transfers", [], |r| r.get(0))?;
        let bound = i64::try_from(MAX_REPORTED_VIOLATIONS + 1).expect("small constant");
        let mut faults = Vec::new();
        let mut stmt = conn.prepare(AUDIT_RESOLUTIONS)?;
        let rows = stmt.query_map([bound], |r| {
            Ok((
                TransferId(col(r, 0, id128)?),
                TransferId(col(r, 1, id128)?),
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (pending, resolution, what) = row?;
            faults.push(Violation::BadResolution {
                pending,
                resolution,
                what: match what {
                    0 => "pending transfer missing",
                    1 => "named transfer is not pending",
                    2 => "accounts or currency differ from the pending transfer",
                    3 => "post exceeds the pending amount",
                    _ => "void amount differs from the pending amount",
                },
            });
        }
        let mut stmt = conn.prepare(AUDIT_LINKS)?;
        let rows = stmt.query_map([bound], |r| {
            Ok(Violation::OverCompensated {
                original: TransferId(col(r, 0, id128)?),
                amount: col(r, 1, amount)?,
                linked: u128::from(col(r, 2, amount)?),
            })
        })?;
        for row in rows {
            faults.push(row?);
        }
        let mut stmt = conn.prepare(AUDIT_BALANCES)?;
        let rows = stmt.query_map([], |r| {
            Ok(AuditRow {
                id: AccountId(col(r, 0, id128)?),
                flags: col(r, 1, AccountFlags::from_bits)?,
                stored: balances_at(r, 2)?,
                derived: balances_at(r, 6)?,
            })
        })?;
        // Rows stream through the evaluation: memory stays bounded however
        // many accounts the ledger holds.
        Ok(InvariantReport::evaluate(
            rows,
            to_u64(transfers, "transfers")?,
            faults,
        )?)
    }
}
