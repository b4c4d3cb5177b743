//! Fixtures shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different part

use ledger::{
    AccountFlags, AccountId, AccountKind, Currency, LedgerRead, LedgerStore, LedgerTx, NewAccount,
    SqliteStore, TransferId, TransferRequest,
};
use tempfile::TempDir;

pub const EUR: Currency = Currency(978);
pub const USD: Currency = Currency(840);

/// Source of value loaded onto cards (no constraint).
pub const FUNDING: AccountId = AccountId(0xF0);
/// A prepaid card: spends only what it holds.
pub const CARD: AccountId = AccountId(0xC1);
/// A second prepaid card.
pub const CARD2: AccountId = AccountId(0xC2);
/// A merchant.
pub const SHOP: AccountId = AccountId(0x51);
/// An account in another currency.
pub const DOLLARS: AccountId = AccountId(0xD0);
/// An account whose credits may not exceed its debits.
pub const PAYBACK: AccountId = AccountId(0xB0);

/// Balance loaded onto each card.
pub const LOADED: u64 = 10_000;

/// A ledger file in a temporary directory, removed on drop.
pub struct Fixture {
    pub dir: TempDir,
    pub store: SqliteStore,
}

impl Fixture {
    /// Accounts above, both cards loaded with [`LOADED`].
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = SqliteStore::open(dir.path().join("ledger.db")).expect("open");
        let mut tx = store.transaction().expect("begin");
        let prepaid = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
        for new in [
            NewAccount::new(FUNDING, EUR, AccountKind::Funding),
            NewAccount::new(CARD, EUR, AccountKind::Card).flags(prepaid),
            NewAccount::new(CARD2, EUR, AccountKind::Card).flags(prepaid),
            NewAccount::new(SHOP, EUR, AccountKind::Merchant),
            NewAccount::new(DOLLARS, USD, AccountKind::Merchant),
            NewAccount::new(PAYBACK, EUR, AccountKind::IssuerSettlement)
                .flags(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
        ] {
            tx.create_account(&new).expect("create account");
        }
        for (i, card) in [CARD, CARD2].into_iter().enumerate() {
            let load = TransferRequest::single(
                TransferId(0x1_0000 + i as u128),
                FUNDING,
                card,
                LOADED,
                EUR,
            );
            tx.create_transfer(&load).expect("load card");
        }
        tx.commit().expect("commit");
        Fixture { dir, store }
    }

    /// Path of the ledger file.
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("ledger.db")
    }
}

/// Panics unless every invariant holds.
pub fn assert_consistent(reader: &mut impl LedgerRead) -> ledger::InvariantReport {
    let report = reader.check_invariants().expect("audit");
    assert!(report.is_consistent(), "{report}");
    report
}

/// Makes the database fail the credit half of any transfer of `amount`, after
/// the transfer row and the debit balance were written (a storage failure in
/// the middle of a transfer).
pub fn inject_failure(tx: &ledger::SqliteTx<'_>, amount: u64) {
    tx.sql()
        .execute_batch(&format!(
            "CREATE TRIGGER injected BEFORE UPDATE OF credits_posted ON accounts
             WHEN NEW.credits_posted - OLD.credits_posted = {amount}
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
        ))
        .unwrap();
}
