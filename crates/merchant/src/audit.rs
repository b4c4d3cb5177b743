//! The audit log: every change (who, what, before, after, when), appended
//! in the same transaction as the change, each row chained to the one
//! before it by SHA-256.
//!
//! A row's hash covers the previous row's hash and the row's own fields, so
//! editing a row breaks its own hash, and deleting or inserting one breaks
//! the link of the row after it. [`verify`] names the first broken link.
//! Removing rows from the end leaves a shorter, valid chain: keep the
//! `head` that [`verify`] reports somewhere else (a ticket, a printout) to
//! notice that too.

use crate::store::StoreError;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One change to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<'a> {
    /// Who made it: a user name, `cli`, or `system`.
    pub actor: &'a str,
    /// What was done, `noun.verb` (`user.add`, `reconciliation.run`).
    pub action: &'a str,
    /// What it was done to (`user:alice`, `date:2026-01-01`).
    pub subject: &'a str,
    /// State before, as JSON (none for a creation).
    pub before: Option<serde_json::Value>,
    /// State after, as JSON (none for a deletion).
    pub after: Option<serde_json::Value>,
}

/// A row of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    /// Position in the log.
    pub id: i64,
    /// When, Unix seconds.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// To what.
    pub subject: String,
    /// Before, JSON.
    pub before: Option<String>,
    /// After, JSON.
    pub after: Option<String>,
    /// Hash of the row before.
    pub prev_hash: String,
    /// This row's hash.
    pub hash: String,
}

/// The fields of a row that its hash covers.
struct Fields<'a> {
    id: i64,
    at: i64,
    actor: &'a str,
    action: &'a str,
    subject: &'a str,
    before: Option<&'a str>,
    after: Option<&'a str>,
}

/// The hash of a row: SHA-256 over the previous hash, a newline, and the
/// row's fields as a JSON array (an unambiguous encoding).
fn row_hash(prev_hash: &str, f: &Fields<'_>) -> String {
    let fields = serde_json::json!([f.id, f.at, f.actor, f.action, f.subject, f.before, f.after]);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(fields.to_string().as_bytes());
    hex::encode(h.finalize())
}

impl AuditRow {
    fn fields(&self) -> Fields<'_> {
        Fields {
            id: self.id,
            at: self.at,
            actor: &self.actor,
            action: &self.action,
            subject: &self.subject,
            before: self.before.as_deref(),
            after: self.after.as_deref(),
        }
    }
}

/// Appends `change` at `now`; call inside the transaction that makes the
/// change. Returns the new row's id.
pub fn append(conn: &Connection, change: &Change<'_>, now: i64) -> Result<i64, StoreError> {
    let last: Option<(i64, String)> = conn
        .query_row(
            "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (id, prev_hash) = match last {
        Some((id, hash)) => (id + 1, hash),
        None => (1, GENESIS.to_string()),
    };
    let before = change.before.as_ref().map(|v| v.to_string());
    let after = change.after.as_ref().map(|v| v.to_string());
    let hash = row_hash(
        &prev_hash,
        &Fields {
            id,
            at: now,
            actor: change.actor,
            action: change.action,
            subject: change.subject,
            before: before.as_deref(),
            after: after.as_deref(),
        },
    );
    conn.execute(
        "INSERT INTO audit_log (id, at, actor, action, subject, before, after, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            id,
            now,
            change.actor,
            change.action,
            change.subject,
            before,
            after,
            prev_hash,
            hash
        ],
    )?;
    Ok(id)
}

/// The first link that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// Id of the row where the chain breaks.
    pub id: i64,
    /// Why: the row was changed, or a row before it was removed or inserted.
    pub reason: String,
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Rows checked (up to the broken link, or all).
    pub rows: u64,
    /// Hash of the last row checked ([`GENESIS`] for an empty log).
    pub head: String,
    /// The first broken link, if any.
    pub broken: Option<BrokenLink>,
}

/// Walks the whole log in order, recomputing each hash.
pub fn verify(conn: &Connection) -> Result<Verification, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, at, actor, action, subject, before, after, prev_hash, hash FROM audit_log ORDER BY id",
    )?;
    let mut rows = stmt.query([])?;
    let mut head = GENESIS.to_string();
    let mut count = 0u64;
    let mut expected_id = 1i64;
    while let Some(r) = rows.next()? {
        let row = read_row(r)?;
        let broken = if row.prev_hash != head || row.id != expected_id {
            Some("does not follow the row before it (a row was removed, inserted or renumbered)")
        } else if row.hash != row_hash(&row.prev_hash, &row.fields()) {
            Some("its contents changed after it was written")
        } else {
            None
        };
        if let Some(reason) = broken {
            return Ok(Verification {
                rows: count,
                head,
                broken: Some(BrokenLink {
                    id: row.id,
                    reason: reason.to_string(),
                }),
            });
        }
        head = row.hash;
        count += 1;
        expected_id += 1;
    }
    Ok(Verification {
        rows: count,
        head,
        broken: None,
    })
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        subject: r.get(4)?,
        before: r.get(5)?,
        after: r.get(6)?,
        prev_hash: r.get(7)?,
        hash: r.get(8)?,
    })
}

/// Up to `limit` rows, newest first, older than `before` (all when none).
pub fn page(
    conn: &Connection,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<AuditRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, actor, action, subject, before, after, prev_hash, hash FROM audit_log
         WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![before.unwrap_or(i64::MAX), limit], read_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn change(n: u32) -> Change<'static> {
        Change {
            actor: "alice",
            action: "user.add",
            subject: "user:bob",
            before: None,
            after: Some(serde_json::json!({ "role": "cashier", "n": n })),
        }
    }

    #[test]
    fn verify_names_the_first_row_edited_or_removed_with_plain_sql() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &[]).unwrap();
        let empty = store.read(verify).unwrap();
        assert_eq!(
            (empty.rows, empty.head.as_str(), empty.broken),
            (0, GENESIS, None)
        );
        for n in 0..5 {
            store
                .write(|tx| append(tx, &change(n), 1_000 + i64::from(n)))
                .unwrap();
        }
        let good = store.read(verify).unwrap();
        assert_eq!((good.rows, good.broken.clone()), (5, None));
        assert_eq!(store.read(|c| page(c, None, 2)).unwrap()[0].hash, good.head);

        // An edit of row 3's "after", as someone with the file and sqlite3 would.
        store
            .read(|c| {
                c.execute(
                    "UPDATE audit_log SET after = '{\"role\":\"owner\",\"n\":2}' WHERE id = 3",
                    [],
                )?;
                Ok(())
            })
            .unwrap();
        let tampered = store.read(verify).unwrap();
        assert_eq!(tampered.rows, 2);
        let broken = tampered.broken.unwrap();
        assert_eq!(broken.id, 3);
        assert!(
            broken.reason.contains("contents changed"),
            "{}",
            broken.reason
        );

        // Rewriting the hash too does not help: the next row names it.
        store
            .read(|c| {
                let row = c.query_row(
                    "SELECT id, at, actor, action, subject, before, after, prev_hash, hash FROM audit_log WHERE id = 3",
                    [],
                    read_row,
                )?;
                let h = row_hash(&row.prev_hash, &row.fields());
                c.execute("UPDATE audit_log SET hash = ?1 WHERE id = 3", [h])?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.read(verify).unwrap().broken.unwrap().id, 4);

        // A removed row breaks the link of the one after it.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &[]).unwrap();
        for n in 0..4 {
            store.write(|tx| append(tx, &change(n), 1_000)).unwrap();
        }
        store
            .read(|c| {
                c.execute("DELETE FROM audit_log WHERE id = 2", [])?;
                Ok(())
            })
            .unwrap();
        let removed = store.read(verify).unwrap();
        assert_eq!(removed.broken.unwrap().id, 3);
        assert_eq!(removed.rows, 1);
    }
}
