//! Double-entry ledger of the posnet payment host.
//!
//! Every approved financial transaction is a [`Transfer`] between two
//! [`Account`]s: it debits one and credits the other by the same amount. The
//! model follows TigerBeetle's:
//!
//! - **Accounts** hold one currency ([`Currency`], the ISO 4217 numeric code)
//!   and four balances ([`Balances`]): debits and credits, each pending and
//!   posted. Balances are derived: they only ever change by applying a
//!   transfer. [`AccountFlags`] constrain them: a prepaid card has
//!   `debits_must_not_exceed_credits`, so it can only spend what it holds,
//!   pending holds included ([`Balances::available_to_debit`]).
//! - **Transfers** are immutable and identified by a client-chosen
//!   [`TransferId`], the idempotency key. A single-phase transfer posts at
//!   once (sale, refund, load). A pending transfer is a hold
//!   (pre-authorization); a post resolves it (completion: all or part of the
//!   amount, the remainder released) and a void releases it (pre-auth cancel,
//!   reversal). A pending transfer is resolved at most once. Compensating
//!   transfers (void of a sale, refund) are new single-phase transfers
//!   [`linked`](TransferRequest::linked) to their original: they must reverse
//!   its accounts and together may not exceed its amount.
//! - **Exactly once**: creating a transfer whose id exists with the same
//!   fields returns [`Outcome::Exists`] with the stored transfer and writes
//!   nothing; with other fields it is rejected
//!   ([`TransferRejection::ExistsWithDifferentFields`]). Every rejection
//!   ([`TransferRejection`]) is decided before any write, so a rejected
//!   request writes nothing.
//!
//! # Invariants
//!
//! At every commit: each account's stored balances equal the sums derived from
//! its transfers; total debits equal total credits, posted and pending; no
//! flagged account breaks its constraint; every post or void matches the
//! pending transfer it resolves; no original is compensated beyond its
//! amount. [`LedgerRead::check_invariants`] recomputes all of it from the
//! transfers alone; the rules assert the double-entry balance of every
//! transfer in debug builds; the SQLite schema adds `CHECK` constraints and
//! triggers that abort any `UPDATE` or `DELETE` of a transfer.
//!
//! # Durability
//!
//! [`SqliteStore`] keeps the ledger in one SQLite file in WAL mode with
//! `synchronous = FULL`: a commit has synced the WAL before it returns, so it
//! survives power loss, not only a crash of the process. The store sits
//! behind [`LedgerStore`]/[`LedgerTx`]/[`LedgerRead`], which name nothing
//! SQLite-specific, so a PostgreSQL store can follow.
//!
//! # Group commit
//!
//! [`GroupCommit`] runs jobs from many tasks in one transaction and one sync
//! per batch, answering each job only after the commit (see the module
//! [`group_commit`] for the full contract). A job is a closure given the open
//! transaction: it creates transfers and, on SQLite, writes the caller's own
//! rows through [`SqliteTx::sql`], so a host's journal and outbox commit
//! together with the transfers. Each job runs in its own savepoint: one that
//! fails rolls back only its own writes. A ledger write that fails with a
//! storage error poisons the transaction, so partial writes never commit even
//! if the caller ignores the error. The host's tables are migrated with
//! the ledger's ([`SqliteStore::open_with`], [`Migrations`]).
//!
//! ```
//! use ledger::*;
//!
//! # async fn sale() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = SqliteStore::open(dir.path().join("ledger.db"))?;
//! let ledger = GroupCommit::start(store, GroupCommitConfig::default());
//! let (card, shop, cash, eur) = (AccountId(1), AccountId(2), AccountId(3), Currency(978));
//! ledger
//!     .submit(move |tx| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
//!         let prepaid = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
//!         tx.create_account(&NewAccount::new(card, eur, AccountKind::Card).flags(prepaid))?;
//!         tx.create_account(&NewAccount::new(shop, eur, AccountKind::Merchant))?;
//!         tx.create_account(&NewAccount::new(cash, eur, AccountKind::Funding))?;
//!         tx.create_transfer(&TransferRequest::single(TransferId(10), cash, card, 5_000, eur))?;
//!         Ok(())
//!     })
//!     .await?;
//! // A sale of 12.50: approved once, and a retry returns the first result.
//! let sale = TransferRequest::single(TransferId(11), card, shop, 1_250, eur);
//! for _ in 0..2 {
//!     let outcome = ledger.submit(move |tx| tx.create_transfer(&sale)).await?;
//!     assert_eq!(outcome.get().amount, 1_250);
//! }
//! let mut store = ledger.shutdown().await.expect("running");
//! let mut tx = store.transaction()?;
//! assert_eq!(tx.balances(card)?.unwrap().available_to_debit(), 3_750);
//! assert!(tx.check_invariants()?.is_consistent());
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(sale()).unwrap();
//! ```

/// The SQLite bindings [`SqliteTx::sql`] hands out, re-exported so callers
/// write their own rows with the same version.
pub use rusqlite;

pub mod error;
pub mod group_commit;
pub mod invariants;
pub mod model;
mod rules;
pub mod sqlite;
pub mod store;

pub use error::{AccountError, AccountRejection, StoreError, TransferError, TransferRejection};
pub use group_commit::{
    BatchHook, BatchReport, GroupCommit, GroupCommitConfig, Metrics, SubmitError,
};
pub use invariants::{InvariantError, InvariantReport, Violation};
pub use model::{
    Account, AccountFlags, AccountId, AccountKind, AccountStatus, Balances, Currency, MAX_AMOUNT,
    NewAccount, Outcome, PendingState, Transfer, TransferAction, TransferId, TransferKind,
    TransferRequest,
};
pub use sqlite::{Migrations, SqliteReader, SqliteStore, SqliteTx, migrate_components};
pub use store::{Cursor, LedgerRead, LedgerStore, LedgerTx, MAX_PAGE_LIMIT, Page, PageRequest};
