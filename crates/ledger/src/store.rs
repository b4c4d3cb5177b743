//! The storage interface: what a ledger store offers, independent of the
//! database behind it.
//!
//! [`LedgerStore`] opens write transactions; a transaction is a [`LedgerTx`]
//! that creates accounts and transfers under the ledger's rules and reads
//! through [`LedgerRead`]. The rules live in this crate, once, and every store
//! applies them through a small sealed set of storage primitives, so a second
//! store (PostgreSQL) differs only in how it reads and writes rows.

use crate::error::{AccountError, AccountRejection, StoreError, TransferError};
use crate::invariants::InvariantReport;
use crate::model::{
    Account, AccountId, AccountStatus, Balances, NewAccount, Outcome, PendingState, Transfer,
    TransferId, TransferKind, TransferRequest,
};
use crate::rules::{self, TransferContext};

/// Most transfers one [`LedgerRead::account_transfers`] call returns: a page
/// is held in memory whole, so its size is bounded whatever the caller asks.
pub const MAX_PAGE_LIMIT: u32 = 1_000;

/// Position in an account's transfer history: the timestamp of the last
/// transfer of the previous page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor(pub u64);

/// Which page of an account's transfers to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// Start after this position; `None` for the first page.
    pub after: Option<Cursor>,
    /// Most transfers to return (1 ..= [`MAX_PAGE_LIMIT`]; clamped).
    pub limit: u32,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
}

impl PageRequest {
    /// The first page, oldest first.
    pub fn first(limit: u32) -> Self {
        PageRequest {
            after: None,
            limit,
            newest_first: false,
        }
    }

    /// The first page, newest first.
    pub fn latest(limit: u32) -> Self {
        PageRequest {
            after: None,
            limit,
            newest_first: true,
        }
    }

    /// The limit clamped to 1 ..= [`MAX_PAGE_LIMIT`].
    pub fn clamped_limit(&self) -> u32 {
        self.limit.clamp(1, MAX_PAGE_LIMIT)
    }
}

/// One page of an account's transfers, in timestamp order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The transfers.
    pub transfers: Vec<Transfer>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<Cursor>,
}

/// Read access to a ledger: implemented by write transactions and by
/// read-only connections.
pub trait LedgerRead {
    /// The account with this id, with its balances.
    fn get_account(&mut self, id: AccountId) -> Result<Option<Account>, StoreError>;

    /// The transfer with this id.
    fn get_transfer(&mut self, id: TransferId) -> Result<Option<Transfer>, StoreError>;

    /// The post or void that resolved the pending transfer `pending_id`.
    fn resolution_of(&mut self, pending_id: TransferId) -> Result<Option<Transfer>, StoreError>;

    /// Sum of the amounts of all transfers linked to `original` (what has
    /// been voided or refunded of it so far).
    fn linked_amount(&mut self, original: TransferId) -> Result<u64, StoreError>;

    /// A page of the transfers debiting or crediting `account`.
    fn account_transfers(
        &mut self,
        account: AccountId,
        page: &PageRequest,
    ) -> Result<Page, StoreError>;

    /// A page of the pending transfers created before `created_before` (a
    /// ledger timestamp) that no post or void has resolved yet: the holds a
    /// sweeper voids once pre-authorizations expire.
    fn pending_transfers(
        &mut self,
        created_before: u64,
        page: &PageRequest,
    ) -> Result<Page, StoreError>;

    /// Recomputes every balance from the transfers alone and compares it with
    /// the stored balances; checks that total debits equal total credits
    /// (posted and pending), that flagged accounts respect their constraint,
    /// that every post or void matches its pending transfer and that no
    /// original is compensated beyond its amount. Reads one consistent
    /// snapshot.
    fn check_invariants(&mut self) -> Result<InvariantReport, StoreError>;

    /// The balances of an account.
    fn balances(&mut self, id: AccountId) -> Result<Option<Balances>, StoreError> {
        Ok(self.get_account(id)?.map(|a| a.balances))
    }

    /// Where the pending transfer `id` stands; `None` if there is no pending
    /// transfer with that id.
    fn pending_state(&mut self, id: TransferId) -> Result<Option<PendingState>, StoreError> {
        match self.get_transfer(id)? {
            Some(t) if t.kind == TransferKind::Pending => {
                Ok(Some(match self.resolution_of(id)? {
                    None => PendingState::Pending,
                    Some(r) if matches!(r.kind, TransferKind::Post { .. }) => {
                        PendingState::Posted(r)
                    }
                    Some(r) => PendingState::Voided(r),
                }))
            }
            _ => Ok(None),
        }
    }
}

pub(crate) mod sealed {
    use crate::error::StoreError;
    use crate::model::{Account, AccountId, AccountStatus, Balances, Transfer};

    /// Proof that a call comes from inside this crate: the primitives below
    /// write without validation, so only the ledger's rules may call them.
    pub struct Token(());

    impl Token {
        pub(crate) fn new() -> Self {
            Token(())
        }
    }

    /// Storage primitives a store implements; sealed (only this crate can
    /// name [`Token`]), so no caller writes around the rules.
    pub trait Backend {
        /// A fresh ledger timestamp: strictly greater than every stored one.
        fn next_timestamp(&mut self, token: Token) -> Result<u64, StoreError>;
        /// Inserts a new account.
        fn insert_account(&mut self, token: Token, account: &Account) -> Result<(), StoreError>;
        /// Changes an account's status.
        fn update_status(
            &mut self,
            token: Token,
            id: AccountId,
            status: AccountStatus,
        ) -> Result<(), StoreError>;
        /// Inserts `transfer` and stores both accounts' new balances.
        ///
        /// Every write primitive that fails poisons the transaction: its
        /// writes may be partial, so it can only be rolled back (to the
        /// start of the current group-commit job, or entirely).
        fn apply_transfer(
            &mut self,
            token: Token,
            transfer: &Transfer,
            debit: &Balances,
            credit: &Balances,
        ) -> Result<(), StoreError>;
        /// Whether a write primitive has failed since the transaction (or the
        /// current job) began.
        fn poisoned(&self, token: Token) -> bool;
        /// Opens the savepoint that isolates one group-commit job.
        fn begin_job(&mut self, token: Token) -> Result<(), StoreError>;
        /// Closes the job savepoint, keeping its writes if `keep` and the job
        /// did not poison the transaction, else rolling them back (which
        /// clears the poison).
        fn end_job(&mut self, token: Token, keep: bool) -> Result<(), StoreError>;
    }
}

/// A write transaction on a ledger. Nothing it writes is visible to others or
/// durable before [`LedgerTx::commit`] returns.
pub trait LedgerTx: LedgerRead + sealed::Backend {
    /// Creates an account, or returns it unchanged if it exists with the same
    /// fields.
    fn create_account(&mut self, new: &NewAccount) -> Result<Outcome<Account>, AccountError> {
        let existing = self.get_account(new.id)?;
        match rules::check_new_account(new, existing) {
            Err(rejection) => Err(AccountError::Rejected {
                id: new.id,
                rejection,
            }),
            Ok(Some(existing)) => Ok(Outcome::Exists(existing)),
            Ok(None) => {
                let account = Account {
                    id: new.id,
                    currency: new.currency,
                    kind: new.kind,
                    flags: new.flags,
                    status: AccountStatus::Open,
                    user_data: new.user_data,
                    timestamp: self.next_timestamp(sealed::Token::new())?,
                    balances: Balances::default(),
                };
                self.insert_account(sealed::Token::new(), &account)?;
                Ok(Outcome::Created(account))
            }
        }
    }

    /// Opens or closes an account (see [`AccountStatus`]).
    fn set_account_status(
        &mut self,
        id: AccountId,
        status: AccountStatus,
    ) -> Result<Account, AccountError> {
        let mut account = self.get_account(id)?.ok_or(AccountError::Rejected {
            id,
            rejection: AccountRejection::AccountNotFound,
        })?;
        if account.status != status {
            self.update_status(sealed::Token::new(), id, status)?;
            account.status = status;
        }
        Ok(account)
    }

    /// Creates a transfer under the ledger's rules.
    ///
    /// Returns [`Outcome::Exists`] with the stored transfer if one with the
    /// same id and fields exists (the idempotent retry: nothing is written).
    /// A rejection writes nothing.
    fn create_transfer(
        &mut self,
        req: &TransferRequest,
    ) -> Result<Outcome<Transfer>, TransferError> {
        if let Some(existing) = self.get_transfer(req.id)? {
            return if rules::matches_existing(req, &existing) {
                Ok(Outcome::Exists(existing))
            } else {
                Err(TransferError::Rejected {
                    id: req.id,
                    rejection: crate::TransferRejection::ExistsWithDifferentFields,
                })
            };
        }
        let mut ctx = TransferContext::default();
        let accounts = match rules::requested_pending(req) {
            Some(pending_id) => match self.get_transfer(pending_id)? {
                Some(pending) => {
                    let resolution = self.resolution_of(pending_id)?;
                    ctx.pending = Some((pending, resolution));
                    Some((pending.debit_account, pending.credit_account))
                }
                None => None,
            },
            None => rules::requested_accounts(req),
        };
        if let Some((debit, credit)) = accounts {
            ctx.debit = self.get_account(debit)?;
            ctx.credit = self.get_account(credit)?;
        }
        if let Some(original) = req.linked
            && let Some(t) = self.get_transfer(original)?
        {
            ctx.linked = Some((t, self.linked_amount(original)?));
        }
        let mut plan = rules::plan_transfer(req, &ctx)?;
        plan.transfer.timestamp = self.next_timestamp(sealed::Token::new())?;
        self.apply_transfer(
            sealed::Token::new(),
            &plan.transfer,
            &plan.debit,
            &plan.credit,
        )?;
        Ok(Outcome::Created(plan.transfer))
    }

    /// Commits: when this returns `Ok`, every write of the transaction is
    /// durable.
    ///
    /// Refuses ([`StoreError::Poisoned`], rolling everything back) if a
    /// ledger write failed earlier in the transaction, even if the caller
    /// ignored that error: partial writes never commit.
    fn commit(self) -> Result<(), StoreError>
    where
        Self: Sized;
}

/// A ledger store: one database, one writer.
///
/// Write transactions are serialised: the store is owned by one writer (the
/// [`crate::GroupCommit`] committer, or a caller using it directly).
pub trait LedgerStore: Send + 'static {
    /// A write transaction.
    type Tx<'t>: LedgerTx
    where
        Self: 't;

    /// Begins a write transaction, taking the database's write lock at once.
    fn transaction(&mut self) -> Result<Self::Tx<'_>, StoreError>;
}
