//! The store's checkpoints run on their own thread: committed WAL frames
//! reach the database file while the writer stays open and idle, and the
//! writer never checkpoints in its COMMIT.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ledger::{LedgerStore, LedgerTx, TransferId, TransferRequest};

#[test]
fn committed_frames_reach_the_database_file_without_the_writer() {
    let mut fx = Fixture::new();
    let db = fx.path();
    let wal = db.with_extension("db-wal");
    let before = std::fs::metadata(&db).unwrap().len();
    let mut tx = fx.store.transaction().unwrap();
    for n in 0..2_000u128 {
        let req = TransferRequest::single(TransferId(0x2_0000 + n), FUNDING, SHOP, 1, EUR);
        tx.create_transfer(&req).unwrap();
    }
    tx.commit().unwrap();
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    // The writer is open and does nothing from here on; only the
    // checkpointer can copy the frames. The deadline is a safety net.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&db).unwrap().len() <= before {
        assert!(
            Instant::now() < deadline,
            "the database file stayed at {before} bytes: nothing checkpointed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut reader = ledger::SqliteReader::open(&db).unwrap();
    assert_eq!(
        ledger::LedgerRead::balances(&mut reader, SHOP)
            .unwrap()
            .unwrap()
            .credits_posted,
        2_000
    );
    assert_consistent(&mut reader);
}
