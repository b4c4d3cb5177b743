//! The back office's SQLite file: transactions with their status history,
//! the events they came from, users, sessions, the audit log and
//! reconciliation results.
//!
//! One file, `merchant.db`, in the data directory, owner-only (0600), WAL,
//! `synchronous = FULL`: an event is on disk before its webhook is
//! acknowledged. Schema steps are versioned per component in
//! `schema_components`, as in the host's file ([`ledger::migrate_components`]):
//! this crate's steps are [`MERCHANT`]; a module (retail, restaurant, ...)
//! brings its own [`Migrations`] to [`Store::open`] and never edits these.
//!
//! The file has one connection behind a mutex. A back office writes a few
//! rows a second at most; every call is short, and async callers go through
//! [`Store::call`], which runs it off the async threads.

use ledger::Migrations;
use pki::MasterKey;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Name of the database file in the data directory.
pub const DB_FILE: &str = "merchant.db";
/// Name of the key that seals TOTP secrets, in the data directory (0600).
pub const STORAGE_KEY_FILE: &str = "storage.key";

/// A connection waits this long for a lock (a checkpoint, `sqlite3` opened
/// by an operator) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The back office's schema steps. Released steps are never edited; a
/// change is a new step.
pub const MERCHANT: Migrations = Migrations {
    component: "merchant",
    steps: &[r#"
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- One row per host transaction (the host's journal id is `host_id`). Card
-- numbers are kept masked (first 6, last 4) and as their last four digits.
-- `status_order` is the host journal id of the newest fact the status comes
-- from, so an older fact arriving late never overwrites a newer one.
CREATE TABLE transactions (
    id            INTEGER PRIMARY KEY,
    host_id       INTEGER NOT NULL UNIQUE,
    kind          TEXT NOT NULL,
    status        TEXT NOT NULL,
    status_order  INTEGER NOT NULL,
    approved      INTEGER NOT NULL CHECK (approved IN (0, 1)),
    response_code TEXT,
    amount        INTEGER NOT NULL CHECK (amount >= 0),
    currency      INTEGER NOT NULL,
    merchant_id   TEXT NOT NULL,
    terminal_id   TEXT NOT NULL,
    stan          INTEGER NOT NULL,
    batch         INTEGER NOT NULL,
    rrn           TEXT NOT NULL,
    auth_code     TEXT,
    masked_pan    TEXT,
    last_four     TEXT,
    method        TEXT NOT NULL,
    original_rrn  TEXT,
    at            INTEGER NOT NULL,
    recorded_at   INTEGER NOT NULL,
    source        TEXT NOT NULL
) STRICT;
CREATE INDEX transactions_at ON transactions (at, id);
CREATE INDEX transactions_rrn ON transactions (rrn);
CREATE INDEX transactions_batch ON transactions (terminal_id, batch);

-- Every status a transaction had, and what said so (an event id, `backfill`).
CREATE TABLE transaction_status (
    id             INTEGER PRIMARY KEY,
    transaction_id INTEGER NOT NULL REFERENCES transactions (id),
    status         TEXT NOT NULL,
    source         TEXT NOT NULL,
    at             INTEGER NOT NULL
) STRICT;
CREATE INDEX transaction_status_txn ON transaction_status (transaction_id, id);

-- Every verified event, once: the idempotency record of the webhook.
CREATE TABLE events (
    event_id    TEXT PRIMARY KEY,
    sequence    INTEGER,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    applied     INTEGER NOT NULL CHECK (applied IN (0, 1)),
    note        TEXT,
    received_at INTEGER NOT NULL
) STRICT;

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('owner', 'cashier', 'auditor')),
    password_hash TEXT NOT NULL,
    totp_sealed   BLOB,
    totp_step     INTEGER NOT NULL DEFAULT 0,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL
) STRICT;

-- Sessions by the SHA-256 of their cookie token (the token itself is never stored).
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- Append-only, each row chained to the previous one by SHA-256 (see audit.rs).
CREATE TABLE audit_log (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    before    TEXT,
    after     TEXT,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
) STRICT;

CREATE TABLE reconciliations (
    id           INTEGER PRIMARY KEY,
    date         TEXT NOT NULL,
    run_at       INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    host_count   INTEGER NOT NULL,
    local_count  INTEGER NOT NULL,
    matched      INTEGER NOT NULL,
    differences  INTEGER NOT NULL,
    batches      INTEGER NOT NULL
) STRICT;
CREATE INDEX reconciliations_date ON reconciliations (date, id);

CREATE TABLE reconciliation_items (
    id                INTEGER PRIMARY KEY,
    reconciliation_id INTEGER NOT NULL REFERENCES reconciliations (id),
    kind              TEXT NOT NULL,
    host_id           INTEGER,
    terminal_id       TEXT,
    batch             INTEGER,
    rrn               TEXT,
    here              TEXT,
    host              TEXT
) STRICT;
CREATE INDEX reconciliation_items_run ON reconciliation_items (reconciliation_id, id);
"#],
};

/// The database failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory or the database file could not be prepared.
    #[error("merchant data directory {path}: {message}")]
    Open {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A schema step failed or the file is newer than this program.
    #[error("merchant database schema: {0}")]
    Schema(#[from] ledger::StoreError),
    /// A statement failed.
    #[error("merchant database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A sealed value could not be opened.
    #[error("merchant storage key: {0}")]
    Seal(#[from] pki::SealError),
    /// The runtime stopped the database task.
    #[error("merchant database task stopped")]
    Stopped,
}

/// The back office's database.
pub struct Store {
    conn: Mutex<Connection>,
    key: MasterKey,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating) the database in `dir` and brings [`MERCHANT`], then
    /// each of `modules`, to its latest schema version.
    pub fn open(dir: &Path, modules: &[Migrations]) -> Result<Store, StoreError> {
        let open_err = |path: &Path, e: &dyn std::fmt::Display| StoreError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(dir, &e))?;
        let key_path = dir.join(STORAGE_KEY_FILE);
        let key = if key_path.exists() {
            MasterKey::from_file(&key_path)?
        } else {
            let key = MasterKey::generate();
            key.write_to(&key_path)?;
            key
        };
        let path = dir.join(DB_FILE);
        // Sessions, password hashes and sealed TOTP secrets live here: the
        // file and (inheriting its mode) its WAL are the owner's only.
        pki::seal::restrict_to_owner(&path)?;
        let mut conn = Connection::open(&path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(
                &path,
                &format!("journal mode {mode}, WAL required"),
            ));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let mut components = vec![MERCHANT];
        components.extend_from_slice(modules);
        ledger::migrate_components(&mut conn, &components)?;
        Ok(Store {
            conn: Mutex::new(conn),
            key,
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key that seals secrets kept in the database (TOTP secrets).
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// Runs `f` on the connection (reads, or writes that need no transaction).
    pub fn read<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&conn)
    }

    /// Runs `f` in one immediate transaction, committed (and synced) when
    /// `f` succeeds, rolled back when it fails.
    pub fn write<R, E>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| E::from(e.into()))?;
        let value = f(&tx)?;
        tx.commit().map_err(|e| E::from(e.into()))?;
        Ok(value)
    }

    /// Runs `f` with the store on a blocking thread.
    pub async fn call<R, E, F>(self: &Arc<Self>, f: F) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Store) -> Result<R, E> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|_| E::from(StoreError::Stopped))?
    }
}

/// A stored setting.
pub fn setting(conn: &Connection, name: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT value FROM settings WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?)
}

/// Stores a setting.
pub fn set_setting(conn: &Connection, name: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO settings (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )?;
    Ok(())
}

/// Removes a setting.
pub fn clear_setting(conn: &Connection, name: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM settings WHERE name = ?1", params![name])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_migrates_once_and_keeps_the_file_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &[]).unwrap();
        store
            .read(|c| set_setting(c, "merchant_name", "Corner Shop"))
            .unwrap();
        drop(store);
        // Opened again: no step runs twice, the data is still there.
        let store = Store::open(dir.path(), &[]).unwrap();
        let version: i64 = store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT version FROM schema_components WHERE component = 'merchant'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(version, MERCHANT.steps.len() as i64);
        assert_eq!(
            store
                .read(|c| setting(c, "merchant_name"))
                .unwrap()
                .as_deref(),
            Some("Corner Shop")
        );
        let mode: String = store
            .read(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(mode, "wal");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for file in [DB_FILE, STORAGE_KEY_FILE] {
                let mode = std::fs::metadata(dir.path().join(file))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{file}");
            }
        }
    }

    #[test]
    fn a_module_adds_its_own_tables() {
        const RETAIL: Migrations = Migrations {
            component: "retail",
            steps: &[
                "CREATE TABLE retail_items (id INTEGER PRIMARY KEY, name TEXT NOT NULL) STRICT;",
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &[RETAIL]).unwrap();
        store
            .write(|tx| -> Result<(), StoreError> {
                tx.execute("INSERT INTO retail_items (name) VALUES ('tea')", [])?;
                Ok(())
            })
            .unwrap();
        // A module may not take the back office's own name.
        const CLASH: Migrations = Migrations {
            component: "merchant",
            steps: &[],
        };
        assert!(matches!(
            Store::open(dir.path(), &[CLASH]),
            Err(StoreError::Schema(ledger::StoreError::BadComponent(_)))
        ));
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &[]).unwrap();
        let failed = store.write(|tx| -> Result<(), StoreError> {
            set_setting(tx, "a", "1")?;
            Err(StoreError::Stopped)
        });
        assert!(failed.is_err());
        assert_eq!(store.read(|c| setting(c, "a")).unwrap(), None);
    }
}
