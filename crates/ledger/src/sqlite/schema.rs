//! Versioned schema migrations.
//!
//! The ledger's own schema version is SQLite's `user_version`, so any SQLite
//! tool can read it. Components that keep their tables in the same file (the
//! host's journal and outbox) register their own [`Migrations`]; their
//! versions live in the `schema_components` table. Each step runs in its own
//! transaction together with its version bump, so a crash between steps
//! leaves a file at a well-defined version.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::StoreError;

/// An ordered set of schema steps owned by one component.
///
/// Version `n` means the first `n` steps have been applied. Steps are never
/// edited or removed once released; a change is a new step.
#[derive(Clone, Copy, Debug)]
pub struct Migrations {
    /// Component name (for example `host`); `ledger` is reserved.
    pub component: &'static str,
    /// SQL of each step, in order.
    pub steps: &'static [&'static str],
}

/// Name of the ledger's own migration set.
pub const LEDGER_COMPONENT: &str = "ledger";

/// The ledger's schema steps.
pub(crate) const LEDGER: Migrations = Migrations {
    component: LEDGER_COMPONENT,
    steps: &[r#"
CREATE TABLE accounts (
    id              BLOB PRIMARY KEY CHECK (length(id) = 16),
    currency        INTEGER NOT NULL CHECK (currency BETWEEN 0 AND 65535),
    kind            INTEGER NOT NULL,
    flags           INTEGER NOT NULL CHECK (flags BETWEEN 0 AND 2),
    status          INTEGER NOT NULL CHECK (status IN (0, 1)),
    user_data       BLOB NOT NULL CHECK (length(user_data) = 16),
    timestamp       INTEGER NOT NULL UNIQUE,
    debits_pending  INTEGER NOT NULL CHECK (debits_pending >= 0),
    debits_posted   INTEGER NOT NULL CHECK (debits_posted >= 0),
    credits_pending INTEGER NOT NULL CHECK (credits_pending >= 0),
    credits_posted  INTEGER NOT NULL CHECK (credits_posted >= 0),
    CHECK (flags & 1 = 0 OR debits_pending + debits_posted <= credits_posted),
    CHECK (flags & 2 = 0 OR credits_pending + credits_posted <= debits_posted)
) STRICT, WITHOUT ROWID;

-- Only status and balances of an account ever change; accounts are never
-- deleted (transfers reference them forever).
CREATE TRIGGER accounts_identity_fixed
BEFORE UPDATE OF id, currency, kind, flags, user_data, timestamp ON accounts
BEGIN SELECT RAISE(ABORT, 'account identity is immutable'); END;
CREATE TRIGGER accounts_never_deleted BEFORE DELETE ON accounts
BEGIN SELECT RAISE(ABORT, 'accounts are never deleted'); END;

-- kind: 0 single, 1 pending, 2 post, 3 void. A post or void names the
-- pending transfer it resolves; the unique index lets it be resolved once.
CREATE TABLE transfers (
    id             BLOB PRIMARY KEY CHECK (length(id) = 16),
    debit_account  BLOB NOT NULL REFERENCES accounts (id),
    credit_account BLOB NOT NULL REFERENCES accounts (id),
    amount         INTEGER NOT NULL CHECK (amount > 0),
    currency       INTEGER NOT NULL,
    kind           INTEGER NOT NULL CHECK (kind BETWEEN 0 AND 3),
    pending_id     BLOB REFERENCES transfers (id),
    linked_id      BLOB REFERENCES transfers (id),
    code           INTEGER NOT NULL CHECK (code BETWEEN 0 AND 65535),
    user_data      BLOB NOT NULL CHECK (length(user_data) = 16),
    timestamp      INTEGER NOT NULL UNIQUE,
    CHECK (debit_account <> credit_account),
    CHECK ((kind >= 2) = (pending_id IS NOT NULL))
) STRICT, WITHOUT ROWID;
CREATE UNIQUE INDEX transfers_by_pending ON transfers (pending_id) WHERE pending_id IS NOT NULL;
CREATE INDEX transfers_by_linked ON transfers (linked_id) WHERE linked_id IS NOT NULL;
CREATE INDEX transfers_by_debit ON transfers (debit_account, timestamp);
CREATE INDEX transfers_by_credit ON transfers (credit_account, timestamp);
CREATE INDEX transfers_pending ON transfers (timestamp) WHERE kind = 1;

-- Transfers are immutable: a correction is a new, compensating transfer.
CREATE TRIGGER transfers_never_updated BEFORE UPDATE ON transfers
BEGIN SELECT RAISE(ABORT, 'transfers are immutable'); END;
CREATE TRIGGER transfers_never_deleted BEFORE DELETE ON transfers
BEGIN SELECT RAISE(ABORT, 'transfers are immutable'); END;

CREATE TABLE schema_components (
    component TEXT PRIMARY KEY,
    version   INTEGER NOT NULL
) STRICT;
"#],
};

fn version_u32(v: i64, component: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt {
        table: "schema_components",
        what: format!("version {v} of {component}"),
    })
}

/// Brings the ledger schema and every registered component to its latest
/// version.
pub(crate) fn migrate(conn: &mut Connection, components: &[Migrations]) -> Result<(), StoreError> {
    check_names(components)?;
    migrate_one(conn, &LEDGER)?;
    for m in components {
        migrate_one(conn, m)?;
    }
    Ok(())
}

/// Brings each of `components` to its latest version in a file that holds
/// no ledger (a component's own database), with the same
/// `schema_components` table and the same step-per-transaction guarantee.
pub fn migrate_components(
    conn: &mut Connection,
    components: &[Migrations],
) -> Result<(), StoreError> {
    check_names(components)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_components (
            component TEXT PRIMARY KEY,
            version   INTEGER NOT NULL
        ) STRICT;",
    )?;
    for m in components {
        migrate_one(conn, m)?;
    }
    Ok(())
}

/// Component names are unique and never the ledger's.
fn check_names(components: &[Migrations]) -> Result<(), StoreError> {
    for (i, m) in components.iter().enumerate() {
        if m.component == LEDGER_COMPONENT
            || components[..i].iter().any(|o| o.component == m.component)
        {
            return Err(StoreError::BadComponent(m.component.to_owned()));
        }
    }
    Ok(())
}

fn migrate_one(conn: &mut Connection, m: &Migrations) -> Result<(), StoreError> {
    let known = u32::try_from(m.steps.len()).expect("fewer than 2^32 migration steps");
    // Each turn applies one step or returns: at most `known` + 1 turns.
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = if m.component == LEDGER_COMPONENT {
            let v: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            version_u32(v, m.component)?
        } else {
            let v: Option<i64> = tx
                .query_row(
                    "SELECT version FROM schema_components WHERE component = ?1",
                    [m.component],
                    |r| r.get(0),
                )
                .optional()?;
            version_u32(v.unwrap_or(0), m.component)?
        };
        if found > known {
            return Err(StoreError::SchemaTooNew {
                component: m.component.to_owned(),
                found,
                known,
            });
        }
        if found == known {
            return Ok(());
        }
        tx.execute_batch(m.steps[found as usize])?;
        let next = found + 1;
        if m.component == LEDGER_COMPONENT {
            tx.pragma_update(None, "user_version", next)?;
        } else {
            tx.execute(
                "INSERT INTO schema_components (component, version) VALUES (?1, ?2)
                 ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                params![m.component, next],
            )?;
        }
        tx.commit()?;
    }
}
