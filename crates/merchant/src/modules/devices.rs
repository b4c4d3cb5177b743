//! Cashier devices: phones running the terminal's web app that may list
//! the back office's open orders and charge them ([`super::api`]).
//!
//! The owner registers a device (`/devices`, `posnet merchant device
//! add`); the back office makes a random 256-bit token for it, shows it
//! once, and keeps only its SHA-256. The device sends it as
//! `Authorization: Bearer <token>`. A revoked device is refused from then
//! on; its row stays, for the audit log's references. Table
//! `devices` is in [`super::orders::MIGRATIONS`].

use super::{SalesError, clean, refused};
use crate::audit::{self, Change};
use crate::session::{random_token, token_hash};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::json;
use zeroize::Zeroizing;

/// Most devices that may be registered (revoked ones included): a shop's
/// phones, not a fleet.
pub const MAX_DEVICES: i64 = 1_000;

/// A registered device (no token: only its hash is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// Row id.
    pub id: i64,
    /// What the owner called it.
    pub name: String,
    /// Who registered it.
    pub created_by: String,
    /// When, Unix seconds.
    pub created_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// When it last called the API.
    pub last_used_at: Option<i64>,
}

impl Device {
    /// How it is named in the audit log and on payments.
    pub fn actor(&self) -> String {
        format!("device:{}", self.id)
    }
}

const COLUMNS: &str = "id, name, created_by, created_at, revoked_at, last_used_at";

fn read_device(r: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: r.get(0)?,
        name: r.get(1)?,
        created_by: r.get(2)?,
        created_at: r.get(3)?,
        revoked_at: r.get(4)?,
        last_used_at: r.get(5)?,
    })
}

/// Registers device `name`; returns it and its token, which is never
/// shown again.
pub fn add(
    conn: &Connection,
    name: &str,
    actor: &str,
    now: i64,
) -> Result<(Device, Zeroizing<String>), SalesError> {
    let name = clean("name", name, false)?.unwrap_or_default();
    let count: i64 = conn.query_row("SELECT count(*) FROM devices", [], |r| r.get(0))?;
    if count >= MAX_DEVICES {
        return refused(format!("{MAX_DEVICES} devices at most"));
    }
    let token = Zeroizing::new(random_token());
    conn.execute(
        "INSERT INTO devices (name, token_hash, created_by, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![name, token_hash(&token), actor, now],
    )?;
    let id = conn.last_insert_rowid();
    audit::append(
        conn,
        &Change {
            actor,
            action: "device.add",
            subject: &format!("device:{id}"),
            before: None,
            after: Some(json!({ "name": name })),
        },
        now,
    )?;
    let device = device(conn, id)?.ok_or_else(|| SalesError::NotFound(format!("device {id}")))?;
    Ok((device, token))
}

/// Device `id`.
pub fn device(conn: &Connection, id: i64) -> Result<Option<Device>, SalesError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM devices WHERE id = ?1"),
            [id],
            read_device,
        )
        .optional()?)
}

/// Every device, newest first.
pub fn list(conn: &Connection) -> Result<Vec<Device>, SalesError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM devices ORDER BY id DESC LIMIT ?1"
    ))?;
    let rows = stmt
        .query_map([MAX_DEVICES], read_device)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Revokes device `id`: its token is refused from now on.
pub fn revoke(conn: &Connection, id: i64, actor: &str, now: i64) -> Result<Device, SalesError> {
    let before = device(conn, id)?.ok_or_else(|| SalesError::NotFound(format!("device {id}")))?;
    if before.revoked_at.is_some() {
        return refused(format!("device {id} is revoked already"));
    }
    conn.execute(
        "UPDATE devices SET revoked_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    audit::append(
        conn,
        &Change {
            actor,
            action: "device.revoke",
            subject: &format!("device:{id}"),
            before: Some(json!({ "name": before.name })),
            after: Some(json!({ "revoked": true })),
        },
        now,
    )?;
    device(conn, id)?.ok_or_else(|| SalesError::NotFound(format!("device {id}")))
}

/// The live device whose token is `token`, its last use set to `now`;
/// none for an unknown or revoked token. Looked up by the token's
/// SHA-256, so no comparison of secrets takes place here.
pub fn authenticate(
    conn: &Connection,
    token: &str,
    now: i64,
) -> Result<Option<Device>, SalesError> {
    let mut found = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM devices WHERE token_hash = ?1 AND revoked_at IS NULL"),
            [token_hash(token)],
            read_device,
        )
        .optional()?;
    if let Some(d) = &mut found {
        conn.execute(
            "UPDATE devices SET last_used_at = ?2 WHERE id = ?1",
            params![d.id, now],
        )?;
        d.last_used_at = Some(now);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_token_works_until_revoked_and_only_its_hash_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &crate::modules::migrations()).unwrap();
        let (device, token) = store
            .write(|tx| add(tx, "counter phone", "owner", 10))
            .unwrap();
        assert_eq!(token.len(), 64, "256 bits, hex");
        let kept: String = store
            .read(|c| Ok(c.query_row("SELECT token_hash FROM devices", [], |r| r.get(0))?))
            .unwrap();
        assert_ne!(kept, *token);
        assert_eq!(kept, token_hash(&token));
        let found = store.write(|tx| authenticate(tx, &token, 20)).unwrap();
        assert_eq!(
            found.map(|d| (d.id, d.last_used_at)),
            Some((device.id, Some(20)))
        );
        assert_eq!(
            store.write(|tx| authenticate(tx, "nope", 20)).unwrap(),
            None
        );
        store
            .write(|tx| revoke(tx, device.id, "owner", 30))
            .unwrap();
        assert_eq!(
            store.write(|tx| authenticate(tx, &token, 40)).unwrap(),
            None
        );
        assert!(
            store
                .write(|tx| revoke(tx, device.id, "owner", 50))
                .is_err()
        );
    }
}
