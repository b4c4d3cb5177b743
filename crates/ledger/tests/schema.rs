//! Schema versions and the pragmas that durability rests on.

use ledger::{LedgerStore, LedgerTx, Migrations, SqliteStore, StoreError};
use rusqlite::Connection;

const HOST_V1: Migrations = Migrations {
    component: "host",
    steps: &["CREATE TABLE journal (ref INTEGER PRIMARY KEY) STRICT"],
};
const HOST_V2: Migrations = Migrations {
    component: "host",
    steps: &[
        "CREATE TABLE journal (ref INTEGER PRIMARY KEY) STRICT",
        "ALTER TABLE journal ADD COLUMN outcome TEXT NOT NULL DEFAULT 'approved'",
    ],
};

fn versions(path: &std::path::Path) -> (i64, Vec<(String, i64)>) {
    let conn = Connection::open(path).unwrap();
    let user_version = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let mut stmt = conn
        .prepare("SELECT component, version FROM schema_components ORDER BY component")
        .unwrap();
    let components = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (user_version, components)
}

#[test]
fn ledger_and_components_migrate_step_by_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(SqliteStore::open_with(&path, &[HOST_V1]).unwrap());
    assert_eq!(versions(&path), (1, vec![("host".into(), 1)]));
    // Reopening at the same version changes nothing; a newer build of the
    // component applies only its new step, to the existing data.
    let mut store = SqliteStore::open_with(&path, &[HOST_V1]).unwrap();
    let tx = store.transaction().unwrap();
    tx.sql()
        .execute("INSERT INTO journal (ref) VALUES (7)", [])
        .unwrap();
    tx.commit().unwrap();
    drop(store);
    let mut store = SqliteStore::open_with(&path, &[HOST_V2]).unwrap();
    assert_eq!(versions(&path), (1, vec![("host".into(), 2)]));
    let tx = store.transaction().unwrap();
    let outcome: String = tx
        .sql()
        .query_row("SELECT outcome FROM journal WHERE ref = 7", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(outcome, "approved");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(SqliteStore::open_with(&path, &[HOST_V2]).unwrap());
    let err = SqliteStore::open_with(&path, &[HOST_V1]).unwrap_err();
    assert!(
        matches!(&err, StoreError::SchemaTooNew { component, found: 2, known: 1 } if component == "host"),
        "{err}"
    );
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::SchemaTooNew { component, found: 99, .. } if component == "ledger"),
        "{err}"
    );
}

#[test]
fn component_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Migrations {
        component: "ledger",
        steps: &[],
    };
    assert!(matches!(
        SqliteStore::open_with(&path, &[ledger]),
        Err(StoreError::BadComponent(_))
    ));
    assert!(matches!(
        SqliteStore::open_with(&path, &[HOST_V1, HOST_V2]),
        Err(StoreError::BadComponent(_))
    ));
}

#[test]
fn durability_pragmas_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(dir.path().join("ledger.db")).unwrap();
    let tx = store.transaction().unwrap();
    let pragma = |name: &str| -> String {
        tx.sql()
            .query_row(&format!("PRAGMA {name}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| format!("{v:?}"))
            .unwrap()
    };
    assert_eq!(pragma("journal_mode"), "Text(\"wal\")");
    assert_eq!(pragma("synchronous"), "Integer(2)", "FULL");
    assert_eq!(pragma("foreign_keys"), "Integer(1)");
}
