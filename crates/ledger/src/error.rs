//! Result codes and errors.
//!
//! A rejection ([`TransferRejection`], [`AccountRejection`]) is a business
//! outcome: validation runs before any write, so a rejected request has
//! written nothing and the surrounding transaction stays usable (the host
//! records its decline in the same commit). A [`StoreError`] is a failure of
//! the storage itself; the surrounding job or transaction must be abandoned.

use crate::model::{AccountId, TransferId};

/// Why a transfer was refused (TigerBeetle's `CreateTransferResult`, less
/// `ok` and `exists`, which are [`crate::Outcome`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TransferRejection {
    /// A transfer with this id exists with other fields: the id was reused
    /// for a different request.
    #[error("a transfer with this id exists with different fields")]
    ExistsWithDifferentFields,
    /// Single-phase, pending and post transfers must move a positive amount.
    #[error("amount must not be zero")]
    AmountMustNotBeZero,
    /// Debit and credit account are the same.
    #[error("debit and credit accounts must differ")]
    AccountsMustBeDifferent,
    /// Only single-phase transfers may compensate another transfer.
    #[error("only single-phase transfers may be linked to an original")]
    LinkedNotAllowed,
    /// The pending transfer named by a post or void does not exist.
    #[error("pending transfer not found")]
    PendingTransferNotFound,
    /// The transfer named by a post or void is not a pending transfer.
    #[error("transfer named as pending is not a pending transfer")]
    PendingTransferNotPending,
    /// The pending transfer was already posted.
    #[error("pending transfer already posted")]
    PendingTransferAlreadyPosted,
    /// The pending transfer was already voided.
    #[error("pending transfer already voided")]
    PendingTransferAlreadyVoided,
    /// A post asked for more than the pending amount.
    #[error("post exceeds the pending amount")]
    ExceedsPendingTransferAmount,
    /// A void named an amount other than 0 or the pending amount.
    #[error("void amount differs from the pending amount")]
    PendingTransferHasDifferentAmount,
    /// The debit account does not exist.
    #[error("debit account not found")]
    DebitAccountNotFound,
    /// The credit account does not exist.
    #[error("credit account not found")]
    CreditAccountNotFound,
    /// Debit and credit accounts hold different currencies.
    #[error("accounts have different currencies")]
    AccountsHaveDifferentCurrencies,
    /// The transfer's currency is not its accounts' currency.
    #[error("transfer currency differs from its accounts' currency")]
    CurrencyMismatch,
    /// The debit account is closed.
    #[error("debit account closed")]
    DebitAccountClosed,
    /// The credit account is closed.
    #[error("credit account closed")]
    CreditAccountClosed,
    /// The linked original transfer does not exist.
    #[error("linked transfer not found")]
    LinkedTransferNotFound,
    /// The linked original is a pending hold or a void: only posted value can
    /// be compensated (a hold is released with a void instead).
    #[error("linked transfer did not post value")]
    LinkedTransferNotPosted,
    /// A compensating transfer must debit the original's credit account and
    /// credit its debit account.
    #[error("compensating transfer does not reverse the linked transfer's accounts")]
    LinkedAccountsMismatch,
    /// All transfers linked to the original would exceed its amount.
    #[error("compensation exceeds the linked transfer's amount")]
    ExceedsLinkedTransferAmount,
    /// The debit account's debits would exceed its posted credits
    /// (insufficient funds).
    #[error("debits would exceed credits (insufficient funds)")]
    ExceedsCredits,
    /// The credit account's credits would exceed its posted debits.
    #[error("credits would exceed debits")]
    ExceedsDebits,
    /// The debit account's debits would exceed [`crate::MAX_AMOUNT`].
    #[error("debit balance would overflow")]
    OverflowsDebits,
    /// The credit account's credits would exceed [`crate::MAX_AMOUNT`].
    #[error("credit balance would overflow")]
    OverflowsCredits,
}

/// Why an account request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AccountRejection {
    /// An account with this id exists with other currency, kind, flags or
    /// user data.
    #[error("an account with this id exists with different fields")]
    ExistsWithDifferentFields,
    /// Both balance constraints at once would freeze the account.
    #[error(
        "flags debits_must_not_exceed_credits and credits_must_not_exceed_debits are mutually exclusive"
    )]
    FlagsAreMutuallyExclusive,
    /// The account does not exist.
    #[error("account not found")]
    AccountNotFound,
}

/// A failure of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row does not decode into the model.
    #[error("corrupt {table} row: {what}")]
    Corrupt {
        /// Table the row came from.
        table: &'static str,
        /// What was wrong with it.
        what: String,
    },
    /// Stored balances contradict a transfer being applied (for example a
    /// pending balance smaller than the hold being released).
    #[error("ledger invariant broken on account {account}: {what}")]
    Invariant {
        /// Account whose balances are inconsistent.
        account: AccountId,
        /// What does not hold.
        what: &'static str,
    },
    /// A ledger write failed earlier in this transaction, so it may hold
    /// partial writes and cannot commit.
    #[error("an earlier ledger write in this transaction failed; it was rolled back")]
    Poisoned,
    /// The database was written by a newer schema than this code knows.
    #[error("schema of {component} is at version {found}, this build knows {known}")]
    SchemaTooNew {
        /// Migration set (`ledger` or a registered component).
        component: String,
        /// Version found in the file.
        found: u32,
        /// Highest version this build can migrate to.
        known: u32,
    },
    /// The store's checkpoint thread could not start.
    #[error("starting the WAL checkpoint thread: {0}")]
    Thread(std::io::Error),
    /// A migration set was registered twice or under the reserved name.
    #[error("migration component name {0:?} is reserved or duplicated")]
    BadComponent(String),
    /// The journal mode could not be switched to WAL (for example on a
    /// file system without shared memory support).
    #[error("journal mode is {0:?}, WAL required")]
    NotWal(String),
}

/// Failure of [`crate::LedgerTx::create_transfer`].
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The ledger refused the transfer; nothing was written.
    #[error("transfer {id} rejected: {rejection}")]
    Rejected {
        /// The transfer's id.
        id: TransferId,
        /// Why.
        rejection: TransferRejection,
    },
    /// Storage failed; abandon the transaction.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TransferError {
    /// The rejection code, if this is a rejection.
    pub fn rejection(&self) -> Option<TransferRejection> {
        match self {
            TransferError::Rejected { rejection, .. } => Some(*rejection),
            TransferError::Store(_) => None,
        }
    }
}

/// Failure of an account operation.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The ledger refused the request; nothing was written.
    #[error("account {id} rejected: {rejection}")]
    Rejected {
        /// The account's id.
        id: AccountId,
        /// Why.
        rejection: AccountRejection,
    },
    /// Storage failed; abandon the transaction.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AccountError {
    /// The rejection code, if this is a rejection.
    pub fn rejection(&self) -> Option<AccountRejection> {
        match self {
            AccountError::Rejected { rejection, .. } => Some(*rejection),
            AccountError::Store(_) => None,
        }
    }
}
