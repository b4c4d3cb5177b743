//! What the ECR interface keeps in the terminal's database, through its
//! own connection (a payment holds the journal's for as long as the host
//! takes; a `TransactionStatus` must not wait for it): every exchange with
//! its answer, the pairings with their sealed passphrases, and the
//! supervisor's sealed TOTP secret.

use super::protocol::{DEDUPE_WINDOW_SECS, within_window};
use crate::journal::{self, JournalError};
use nexo::wire::MessageCategory;
use pki::MasterKey;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::sync::Mutex;
use zeroize::Zeroizing;

const PASSPHRASE_PURPOSE: &str = "terminal nexo passphrase";
const SUPERVISOR_PURPOSE: &str = "terminal supervisor totp";
const SUPERVISOR_SECRET: &str = "ecr.supervisor_totp";
const SUPERVISOR_LAST_STEP: &str = "ecr.supervisor_last_step";

/// A recorded exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Row id (the journal links transactions to it).
    pub id: i64,
    /// `SaleID`.
    pub sale_id: String,
    /// `ServiceID`.
    pub service_id: String,
    /// `MessageCategory` of the request.
    pub category: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Whether it was answered (an abort is answered by nothing).
    pub answered: bool,
    /// The plaintext JSON of the answer.
    pub answer: Option<String>,
}

/// The outcome of recording a new exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Recorded with this id.
    New(i64),
    /// The Sale system used this `ServiceID` within the window.
    Repeated(Exchange),
}

/// A pairing as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PairingInfo {
    /// nexo `KeyIdentifier`.
    pub key_identifier: String,
    /// nexo `KeyVersion`.
    pub key_version: u64,
    /// What the operator called it.
    pub label: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, once revoked.
    pub revoked_at: Option<i64>,
}

/// The ECR tables.
pub struct Store {
    conn: Mutex<Connection>,
    key: MasterKey,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

const EXCHANGE_COLUMNS: &str =
    "id, sale_id, service_id, category, created_at, answered_at IS NOT NULL, answer";

fn exchange(r: &rusqlite::Row<'_>) -> rusqlite::Result<Exchange> {
    Ok(Exchange {
        id: r.get(0)?,
        sale_id: r.get(1)?,
        service_id: r.get(2)?,
        category: r.get(3)?,
        created_at: r.get(4)?,
        answered: r.get(5)?,
        answer: r.get(6)?,
    })
}

impl Store {
    /// Opens the tables in the terminal's data directory `dir`.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let (conn, key) = journal::connect(dir)?;
        Ok(Self {
            conn: Mutex::new(conn),
            key,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every
        // change is one statement or one transaction): keep using it.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the exchange `(sale_id, service_id)` at `now`, unless the
    /// Sale system used that `ServiceID` within the window; an older use
    /// is forgotten.
    pub fn reserve(
        &self,
        sale_id: &str,
        service_id: &str,
        category: MessageCategory,
        now: i64,
    ) -> Result<Reservation, JournalError> {
        let mut conn = self.conn();
        // Immediate: the transaction reads before it writes, and the
        // journal's connection writes to the same file; a deferred one
        // would fail with SQLITE_BUSY instead of waiting for it.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing = tx
            .query_row(
                &format!(
                    "SELECT {EXCHANGE_COLUMNS} FROM ecr_exchanges WHERE sale_id = ?1 AND service_id = ?2"
                ),
                params![sale_id, service_id],
                exchange,
            )
            .optional()?;
        if let Some(existing) = existing {
            if within_window(existing.created_at, now) {
                return Ok(Reservation::Repeated(existing));
            }
            tx.execute(
                "DELETE FROM ecr_exchanges WHERE id = ?1",
                params![existing.id],
            )?;
        }
        // Exchanges past the window are no longer answered for: bounded table.
        tx.execute(
            "DELETE FROM ecr_exchanges WHERE created_at <= ?1",
            params![now - DEDUPE_WINDOW_SECS],
        )?;
        tx.execute(
            "INSERT INTO ecr_exchanges (sale_id, service_id, category, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![sale_id, service_id, category.as_str(), now],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Reservation::New(id))
    }

    /// Stores the answer of exchange `id` (none for an abort), durably,
    /// before it is sent.
    pub fn answer(&self, id: i64, answer: Option<&str>, now: i64) -> Result<(), JournalError> {
        self.conn().execute(
            "UPDATE ecr_exchanges SET answer = ?2, answered_at = ?3 WHERE id = ?1",
            params![id, answer, now],
        )?;
        Ok(())
    }

    /// The exchange `(sale_id, service_id)` of the window.
    pub fn exchange(
        &self,
        sale_id: &str,
        service_id: &str,
        now: i64,
    ) -> Result<Option<Exchange>, JournalError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {EXCHANGE_COLUMNS} FROM ecr_exchanges WHERE sale_id = ?1 AND service_id = ?2 AND created_at > ?3"
                ),
                params![sale_id, service_id, now - DEDUPE_WINDOW_SECS],
                exchange,
            )
            .optional()?)
    }

    /// The last payment or reversal of `sale_id` in the window.
    pub fn last_payment(&self, sale_id: &str, now: i64) -> Result<Option<Exchange>, JournalError> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {EXCHANGE_COLUMNS} FROM ecr_exchanges WHERE sale_id = ?1 AND category IN ('Payment', 'Reversal') AND created_at > ?2 ORDER BY id DESC LIMIT 1"
                ),
                params![sale_id, now - DEDUPE_WINDOW_SECS],
                exchange,
            )
            .optional()?)
    }

    /// Exchanges recorded and never answered: the terminal stopped while
    /// they ran.
    pub fn unanswered(&self) -> Result<Vec<Exchange>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {EXCHANGE_COLUMNS} FROM ecr_exchanges WHERE answered_at IS NULL ORDER BY id LIMIT 1000"
        ))?;
        let rows = stmt.query_map([], exchange)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a pairing with its passphrase sealed.
    pub fn add_pairing(
        &self,
        key_identifier: &str,
        key_version: u64,
        passphrase: &str,
        label: &str,
        now: i64,
    ) -> Result<(), JournalError> {
        let sealed = self.key.seal(PASSPHRASE_PURPOSE, passphrase.as_bytes());
        self.conn().execute(
            "INSERT INTO ecr_pairings (key_identifier, key_version, passphrase, label, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key_identifier, key_version as i64, sealed, label, now],
        )?;
        Ok(())
    }

    /// Every pairing, newest first.
    pub fn pairings(&self) -> Result<Vec<PairingInfo>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT key_identifier, key_version, label, created_at, revoked_at FROM ecr_pairings ORDER BY created_at DESC, key_identifier LIMIT 10000",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(PairingInfo {
                key_identifier: r.get(0)?,
                key_version: r.get::<_, i64>(1)? as u64,
                label: r.get(2)?,
                created_at: r.get(3)?,
                revoked_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The passphrases of the pairings not revoked.
    pub fn active_keys(&self) -> Result<Vec<(String, u64, Zeroizing<String>)>, JournalError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT key_identifier, key_version, passphrase FROM ecr_pairings WHERE revoked_at IS NULL LIMIT 10000",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut keys = Vec::new();
        for row in rows {
            let (kid, kv, sealed) = row?;
            let plain = self
                .key
                .open(PASSPHRASE_PURPOSE, &sealed, Path::new("terminal.db"))?;
            let text = String::from_utf8(plain.expose().to_vec()).map_err(|_| {
                JournalError::Io(format!("passphrase of pairing {kid} is not text"))
            })?;
            keys.push((kid, kv, Zeroizing::new(text)));
        }
        Ok(keys)
    }

    /// Revokes every version of `key_identifier` not yet revoked; how many.
    pub fn revoke(&self, key_identifier: &str, now: i64) -> Result<usize, JournalError> {
        Ok(self.conn().execute(
            "UPDATE ecr_pairings SET revoked_at = ?2 WHERE key_identifier = ?1 AND revoked_at IS NULL",
            params![key_identifier, now],
        )?)
    }

    /// Stores the supervisor's TOTP secret, sealed, replacing any earlier
    /// one (and forgetting which code was used last).
    pub fn set_supervisor(&self, secret: &[u8]) -> Result<(), JournalError> {
        let sealed = hex::encode(self.key.seal(SUPERVISOR_PURPOSE, secret));
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
            params![SUPERVISOR_SECRET, sealed],
        )?;
        tx.execute(
            "DELETE FROM settings WHERE name = ?1",
            params![SUPERVISOR_LAST_STEP],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn setting(&self, name: &str) -> Result<Option<String>, JournalError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT value FROM settings WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The supervisor's TOTP secret, if one is set.
    pub fn supervisor(&self) -> Result<Option<pki::seal::Secret>, JournalError> {
        let Some(text) = self.setting(SUPERVISOR_SECRET)? else {
            return Ok(None);
        };
        let sealed = hex::decode(text)
            .map_err(|_| JournalError::Io("the sealed supervisor secret is not hex".into()))?;
        Ok(Some(self.key.open(
            SUPERVISOR_PURPOSE,
            &sealed,
            Path::new("terminal.db"),
        )?))
    }

    /// The last TOTP step accepted.
    pub fn supervisor_last_step(&self) -> Result<Option<u64>, JournalError> {
        Ok(self
            .setting(SUPERVISOR_LAST_STEP)?
            .and_then(|s| s.parse().ok()))
    }

    /// Records `step` as used.
    pub fn set_supervisor_last_step(&self, step: u64) -> Result<(), JournalError> {
        self.conn().execute(
            "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
            params![SUPERVISOR_LAST_STEP, step.to_string()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ids_are_held_for_the_window_then_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = 1_700_000_000;
        let Reservation::New(id) = store
            .reserve("ECR-1", "S1", MessageCategory::Payment, t)
            .unwrap()
        else {
            panic!("first use");
        };
        assert!(matches!(
            store.reserve("ECR-1", "S1", MessageCategory::Login, t + 10).unwrap(),
            Reservation::Repeated(e) if e.id == id && !e.answered
        ));
        assert!(matches!(
            store
                .reserve("ECR-2", "S1", MessageCategory::Payment, t + 10)
                .unwrap(),
            Reservation::New(_)
        ));
        assert_eq!(store.unanswered().unwrap().len(), 2);
        store.answer(id, Some("{}"), t + 20).unwrap();
        let found = store.exchange("ECR-1", "S1", t + 30).unwrap().unwrap();
        assert_eq!(found.answer.as_deref(), Some("{}"));
        assert_eq!(store.last_payment("ECR-1", t + 30).unwrap().unwrap().id, id);
        let later = t + DEDUPE_WINDOW_SECS;
        assert_eq!(store.exchange("ECR-1", "S1", later).unwrap(), None);
        assert!(matches!(
            store.reserve("ECR-1", "S1", MessageCategory::Payment, later).unwrap(),
            Reservation::New(new) if new != id
        ));
    }

    #[test]
    fn secrets_are_sealed_at_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .add_pairing("k1", 1, "very secret words", "till 1", 5)
            .unwrap();
        store.set_supervisor(b"totp-secret-bytes").unwrap();
        store.set_supervisor_last_step(42).unwrap();
        let db = std::fs::read(dir.path().join("terminal.db")).unwrap();
        let wal = std::fs::read(dir.path().join("terminal.db-wal")).unwrap_or_default();
        for bytes in [&db, &wal] {
            let text = String::from_utf8_lossy(bytes);
            assert!(!text.contains("very secret words"));
            assert!(!text.contains("totp-secret-bytes"));
        }
        let keys = store.active_keys().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].2.as_str(), "very secret words");
        assert_eq!(
            store.supervisor().unwrap().unwrap().expose(),
            b"totp-secret-bytes"
        );
        assert_eq!(store.supervisor_last_step().unwrap(), Some(42));
        assert_eq!(store.revoke("k1", 6).unwrap(), 1);
        assert!(store.active_keys().unwrap().is_empty());
        assert_eq!(store.pairings().unwrap()[0].revoked_at, Some(6));
        store.set_supervisor(b"another").unwrap();
        assert_eq!(store.supervisor_last_step().unwrap(), None);
    }
}
