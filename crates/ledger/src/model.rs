//! Accounts, transfers and balances: the ledger's data model.

use std::fmt;

/// Largest amount or balance the ledger holds, in minor units.
///
/// Balances are stored as signed 64-bit integers (SQLite `INTEGER`,
/// PostgreSQL `BIGINT`), so every amount and every balance column stays at or
/// below `i64::MAX`; a transfer that would take a balance past it is rejected
/// with an overflow code instead of wrapping.
pub const MAX_AMOUNT: u64 = i64::MAX as u64;

/// Identifier of an account, chosen by the caller (for example derived from a
/// card or wallet number by a keyed hash, never the PAN itself).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub u128);

/// Identifier of a transfer, chosen by the client before submission.
///
/// It is the idempotency key: resubmitting a request with the same id returns
/// the transfer stored the first time and posts nothing.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(pub u128);

macro_rules! hex_id {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($t))
            }
        }
    };
}
hex_id!(AccountId);
hex_id!(TransferId);

/// Currency of an account and its transfers: the ISO 4217 numeric code
/// (156 CNY, 840 USD, 978 EUR), as carried in ISO 8583 field 49.
///
/// Accounts of different currencies form separate ledgers: a transfer moves
/// value only between two accounts of its own currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency(pub u16);

/// What an account stands for. Stored as its [`AccountKind::code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccountKind {
    /// A closed-loop card's stored value (a liability of the issuer).
    Card,
    /// A wallet's stored value (a liability of the issuer).
    Wallet,
    /// What the acquirer owes a merchant.
    Merchant,
    /// Fees earned by the network.
    Fee,
    /// Settlement position with an issuer (upstream or on-us).
    IssuerSettlement,
    /// Settlement position with an acquirer.
    AcquirerSettlement,
    /// Source of value loaded onto cards and wallets (cash desk, bank top-up).
    Funding,
}

impl AccountKind {
    /// Every kind, in code order.
    pub const ALL: [AccountKind; 7] = [
        AccountKind::Card,
        AccountKind::Wallet,
        AccountKind::Merchant,
        AccountKind::Fee,
        AccountKind::IssuerSettlement,
        AccountKind::AcquirerSettlement,
        AccountKind::Funding,
    ];

    /// The stable numeric code stored for this kind.
    pub fn code(self) -> u16 {
        match self {
            AccountKind::Card => 1,
            AccountKind::Wallet => 2,
            AccountKind::Merchant => 3,
            AccountKind::Fee => 4,
            AccountKind::IssuerSettlement => 5,
            AccountKind::AcquirerSettlement => 6,
            AccountKind::Funding => 7,
        }
    }

    /// The kind with this stored code, if any.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }
}

/// Balance constraints of an account (TigerBeetle's account flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccountFlags {
    /// Debits (pending plus posted) may never exceed posted credits: the
    /// account can only spend value it holds. Set on prepaid cards and
    /// stored-value wallets.
    pub debits_must_not_exceed_credits: bool,
    /// Credits (pending plus posted) may never exceed posted debits: the
    /// mirror constraint, for accounts that may only be paid back what they
    /// have paid out.
    pub credits_must_not_exceed_debits: bool,
}

impl AccountFlags {
    /// No constraint.
    pub const NONE: AccountFlags = AccountFlags {
        debits_must_not_exceed_credits: false,
        credits_must_not_exceed_debits: false,
    };
    /// Only spend what was credited (prepaid card, wallet).
    pub const DEBITS_MUST_NOT_EXCEED_CREDITS: AccountFlags = AccountFlags {
        debits_must_not_exceed_credits: true,
        credits_must_not_exceed_debits: false,
    };
    /// Only take back what was debited.
    pub const CREDITS_MUST_NOT_EXCEED_DEBITS: AccountFlags = AccountFlags {
        debits_must_not_exceed_credits: false,
        credits_must_not_exceed_debits: true,
    };

    /// The flags as the stored bit set.
    pub fn bits(self) -> u16 {
        u16::from(self.debits_must_not_exceed_credits)
            | (u16::from(self.credits_must_not_exceed_debits) << 1)
    }

    /// Flags from a stored bit set; `None` if unknown bits are set.
    pub fn from_bits(bits: u16) -> Option<Self> {
        (bits & !0b11 == 0).then_some(AccountFlags {
            debits_must_not_exceed_credits: bits & 1 != 0,
            credits_must_not_exceed_debits: bits & 2 != 0,
        })
    }
}

/// Whether an account takes new obligations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccountStatus {
    /// Takes every kind of transfer.
    Open,
    /// Takes no new single-phase or pending transfer; pending holds made while
    /// it was open can still be posted or voided, so no hold is stranded.
    Closed,
}

impl AccountStatus {
    /// The stored code.
    pub fn code(self) -> u8 {
        match self {
            AccountStatus::Open => 0,
            AccountStatus::Closed => 1,
        }
    }

    /// The status with this stored code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(AccountStatus::Open),
            1 => Some(AccountStatus::Closed),
            _ => None,
        }
    }
}

/// The four balances of an account, all derived from its transfers.
///
/// Posted amounts are final; pending amounts are holds (pre-authorizations)
/// that a later post or void resolves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Balances {
    /// Sum of unresolved pending transfers debiting the account.
    pub debits_pending: u64,
    /// Sum of posted transfers debiting the account.
    pub debits_posted: u64,
    /// Sum of unresolved pending transfers crediting the account.
    pub credits_pending: u64,
    /// Sum of posted transfers crediting the account.
    pub credits_posted: u64,
}

impl Balances {
    /// What the account can still be debited under
    /// [`AccountFlags::debits_must_not_exceed_credits`]: posted credits less
    /// posted debits less pending debit holds. This is the spendable balance of
    /// a prepaid card or wallet.
    pub fn available_to_debit(&self) -> u64 {
        self.credits_posted
            .saturating_sub(self.debits_posted.saturating_add(self.debits_pending))
    }

    /// What the account can still be credited under
    /// [`AccountFlags::credits_must_not_exceed_debits`]: posted debits less
    /// posted credits less pending credit holds.
    pub fn available_to_credit(&self) -> u64 {
        self.debits_posted
            .saturating_sub(self.credits_posted.saturating_add(self.credits_pending))
    }

    /// Posted credits minus posted debits (positive for a funded card).
    pub fn net_posted(&self) -> i128 {
        i128::from(self.credits_posted) - i128::from(self.debits_posted)
    }
}

/// An account as stored, with its current balances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Caller-chosen identifier.
    pub id: AccountId,
    /// Currency of every transfer on the account.
    pub currency: Currency,
    /// What the account stands for.
    pub kind: AccountKind,
    /// Balance constraints.
    pub flags: AccountFlags,
    /// Open or closed.
    pub status: AccountStatus,
    /// Opaque caller data (for example the host's reference for the card).
    pub user_data: u128,
    /// Creation time assigned by the ledger (nanoseconds since the Unix epoch,
    /// unique and strictly increasing across accounts and transfers).
    pub timestamp: u64,
    /// Current balances.
    pub balances: Balances,
}

/// A request to create an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAccount {
    /// Caller-chosen identifier; creating the same account again is idempotent.
    pub id: AccountId,
    /// Currency of every transfer on the account.
    pub currency: Currency,
    /// What the account stands for.
    pub kind: AccountKind,
    /// Balance constraints.
    pub flags: AccountFlags,
    /// Opaque caller data.
    pub user_data: u128,
}

impl NewAccount {
    /// An account with no flags and no user data.
    pub fn new(id: AccountId, currency: Currency, kind: AccountKind) -> Self {
        NewAccount {
            id,
            currency,
            kind,
            flags: AccountFlags::NONE,
            user_data: 0,
        }
    }

    /// The same request with these flags.
    pub fn flags(mut self, flags: AccountFlags) -> Self {
        self.flags = flags;
        self
    }

    /// The same request with this user data.
    pub fn user_data(mut self, user_data: u128) -> Self {
        self.user_data = user_data;
        self
    }
}

/// How a stored transfer moved value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferKind {
    /// Posted at once (a sale, a refund, a load).
    Single,
    /// A hold (a pre-authorization), awaiting a post or a void.
    Pending,
    /// Posted part or all of a pending transfer and released the remainder
    /// (a completion).
    Post {
        /// The pending transfer it resolved.
        pending_id: TransferId,
    },
    /// Released a pending transfer entirely (a pre-auth cancel or reversal).
    Void {
        /// The pending transfer it resolved.
        pending_id: TransferId,
    },
}

impl TransferKind {
    /// The stored code of the kind (without the pending id).
    pub fn code(self) -> u8 {
        match self {
            TransferKind::Single => 0,
            TransferKind::Pending => 1,
            TransferKind::Post { .. } => 2,
            TransferKind::Void { .. } => 3,
        }
    }

    /// The pending transfer a post or void resolved.
    pub fn pending_id(self) -> Option<TransferId> {
        match self {
            TransferKind::Post { pending_id } | TransferKind::Void { pending_id } => {
                Some(pending_id)
            }
            TransferKind::Single | TransferKind::Pending => None,
        }
    }
}

/// A transfer as stored. Immutable once written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transfer {
    /// Client-chosen identifier (idempotency key).
    pub id: TransferId,
    /// Account debited.
    pub debit_account: AccountId,
    /// Account credited.
    pub credit_account: AccountId,
    /// Amount moved, in minor units. For a post, the amount posted; for a
    /// void, the amount released (the whole pending amount).
    pub amount: u64,
    /// Currency of both accounts.
    pub currency: Currency,
    /// Single, pending, post or void.
    pub kind: TransferKind,
    /// The original transfer this one compensates (a void of a sale, a
    /// refund), if any.
    pub linked: Option<TransferId>,
    /// Caller-defined reason code (sale, refund, load, ...).
    pub code: u16,
    /// Opaque caller data (for example the host's transaction reference).
    pub user_data: u128,
    /// Time assigned by the ledger when it was written (nanoseconds since the
    /// Unix epoch, unique and strictly increasing).
    pub timestamp: u64,
}

/// What a [`TransferRequest`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferAction {
    /// Post `amount` from `debit` to `credit` at once.
    Single {
        /// Account debited.
        debit: AccountId,
        /// Account credited.
        credit: AccountId,
        /// Currency of both accounts.
        currency: Currency,
    },
    /// Hold `amount` from `debit` to `credit`.
    Pending {
        /// Account debited.
        debit: AccountId,
        /// Account credited.
        credit: AccountId,
        /// Currency of both accounts.
        currency: Currency,
    },
    /// Post `amount` (1 ..= the pending amount) of a pending transfer and
    /// release the rest. The accounts and currency are the pending transfer's.
    PostPending {
        /// The pending transfer to resolve.
        pending_id: TransferId,
    },
    /// Release a pending transfer. `amount` is 0 or the pending amount.
    VoidPending {
        /// The pending transfer to resolve.
        pending_id: TransferId,
    },
}

/// A request to create a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransferRequest {
    /// Client-chosen identifier: the idempotency key.
    pub id: TransferId,
    /// Amount in minor units (see [`TransferAction`] for posts and voids).
    pub amount: u64,
    /// What to do.
    pub action: TransferAction,
    /// The original transfer this one compensates. Only single-phase
    /// transfers may be linked; the link must reverse the original's accounts
    /// and all transfers linked to one original together may not exceed its
    /// amount (no refund beyond the sale).
    pub linked: Option<TransferId>,
    /// Caller-defined reason code.
    pub code: u16,
    /// Opaque caller data.
    pub user_data: u128,
}

impl TransferRequest {
    fn new(id: TransferId, amount: u64, action: TransferAction) -> Self {
        TransferRequest {
            id,
            amount,
            action,
            linked: None,
            code: 0,
            user_data: 0,
        }
    }

    /// A single-phase transfer.
    pub fn single(
        id: TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: u64,
        currency: Currency,
    ) -> Self {
        Self::new(
            id,
            amount,
            TransferAction::Single {
                debit,
                credit,
                currency,
            },
        )
    }

    /// A pending transfer (hold).
    pub fn pending(
        id: TransferId,
        debit: AccountId,
        credit: AccountId,
        amount: u64,
        currency: Currency,
    ) -> Self {
        Self::new(
            id,
            amount,
            TransferAction::Pending {
                debit,
                credit,
                currency,
            },
        )
    }

    /// Post `amount` of a pending transfer, releasing the remainder.
    pub fn post(id: TransferId, pending_id: TransferId, amount: u64) -> Self {
        Self::new(id, amount, TransferAction::PostPending { pending_id })
    }

    /// Void a pending transfer.
    pub fn void(id: TransferId, pending_id: TransferId) -> Self {
        Self::new(id, 0, TransferAction::VoidPending { pending_id })
    }

    /// The same request, compensating `original`.
    pub fn linked(mut self, original: TransferId) -> Self {
        self.linked = Some(original);
        self
    }

    /// The same request with this reason code.
    pub fn code(mut self, code: u16) -> Self {
        self.code = code;
        self
    }

    /// The same request with this user data.
    pub fn user_data(mut self, user_data: u128) -> Self {
        self.user_data = user_data;
        self
    }
}

/// Where a pending transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PendingState {
    /// Still holding its amount.
    Pending,
    /// Posted (fully or partly) by this transfer.
    Posted(Transfer),
    /// Voided by this transfer.
    Voided(Transfer),
}

/// Result of an idempotent create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Created now.
    Created(T),
    /// Already existed with the same fields: a retry. Nothing was written and
    /// this is what the first request stored.
    Exists(T),
}

impl<T> Outcome<T> {
    /// The created or existing object.
    pub fn into_inner(self) -> T {
        match self {
            Outcome::Created(t) | Outcome::Exists(t) => t,
        }
    }

    /// The created or existing object, borrowed.
    pub fn get(&self) -> &T {
        match self {
            Outcome::Created(t) | Outcome::Exists(t) => t,
        }
    }

    /// Whether this call created it.
    pub fn is_created(&self) -> bool {
        matches!(self, Outcome::Created(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for k in AccountKind::ALL {
            assert_eq!(AccountKind::from_code(k.code()), Some(k));
        }
        assert_eq!(AccountKind::from_code(0), None);
        for bits in 0..4 {
            assert_eq!(
                AccountFlags::from_bits(bits).map(AccountFlags::bits),
                Some(bits)
            );
        }
        assert_eq!(AccountFlags::from_bits(4), None);
        for s in [AccountStatus::Open, AccountStatus::Closed] {
            assert_eq!(AccountStatus::from_code(s.code()), Some(s));
        }
    }

    #[test]
    fn available_balances_respect_holds() {
        let b = Balances {
            debits_pending: 300,
            debits_posted: 200,
            credits_pending: 50,
            credits_posted: 1_000,
        };
        assert_eq!(b.available_to_debit(), 500);
        assert_eq!(b.available_to_credit(), 0);
        assert_eq!(b.net_posted(), 800);
    }
}
