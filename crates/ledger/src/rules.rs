//! The ledger's rules as pure functions: given a request and the stored state
//! it touches, decide the outcome and the new balances. No I/O, so every store
//! applies exactly the same rules and they are checked without a database.

use crate::error::{AccountRejection, StoreError, TransferError, TransferRejection};
use crate::model::{
    Account, AccountStatus, Balances, MAX_AMOUNT, NewAccount, Transfer, TransferAction,
    TransferKind, TransferRequest,
};

/// The stored state a transfer request depends on, read before validation.
#[derive(Debug, Default)]
pub(crate) struct TransferContext {
    /// For a post or void: the transfer named as pending and the post or void
    /// that already resolved it, if any.
    pub pending: Option<(Transfer, Option<Transfer>)>,
    /// The account to debit (the pending transfer's, for a post or void).
    pub debit: Option<Account>,
    /// The account to credit.
    pub credit: Option<Account>,
    /// The linked original and the sum of transfers already linked to it.
    pub linked: Option<(Transfer, u64)>,
}

/// A validated transfer: the row to insert and both accounts' new balances.
#[derive(Debug)]
pub(crate) struct TransferPlan {
    /// The transfer to store (its timestamp is set when it is applied).
    pub transfer: Transfer,
    /// New balances of the debit account.
    pub debit: Balances,
    /// New balances of the credit account.
    pub credit: Balances,
}

/// The accounts a request touches, as far as the request alone tells: a post
/// or void inherits them from its pending transfer.
pub(crate) fn requested_accounts(
    req: &TransferRequest,
) -> Option<(crate::AccountId, crate::AccountId)> {
    match req.action {
        TransferAction::Single { debit, credit, .. }
        | TransferAction::Pending { debit, credit, .. } => Some((debit, credit)),
        TransferAction::PostPending { .. } | TransferAction::VoidPending { .. } => None,
    }
}

/// The pending transfer a post or void names.
pub(crate) fn requested_pending(req: &TransferRequest) -> Option<crate::TransferId> {
    match req.action {
        TransferAction::PostPending { pending_id } | TransferAction::VoidPending { pending_id } => {
            Some(pending_id)
        }
        TransferAction::Single { .. } | TransferAction::Pending { .. } => None,
    }
}

/// Whether `existing` (stored under the request's id) is what `req` would
/// have created: the idempotent retry. The timestamp is the ledger's and
/// accounts and currency of a post or void are inherited, so neither is
/// compared; a void may name 0 or the amount it released.
pub(crate) fn matches_existing(req: &TransferRequest, existing: &Transfer) -> bool {
    let same_action = match (req.action, existing.kind) {
        (
            TransferAction::Single {
                debit,
                credit,
                currency,
            },
            TransferKind::Single,
        )
        | (
            TransferAction::Pending {
                debit,
                credit,
                currency,
            },
            TransferKind::Pending,
        ) => {
            debit == existing.debit_account
                && credit == existing.credit_account
                && currency == existing.currency
                && req.amount == existing.amount
        }
        (TransferAction::PostPending { pending_id }, TransferKind::Post { pending_id: p }) => {
            pending_id == p && req.amount == existing.amount
        }
        (TransferAction::VoidPending { pending_id }, TransferKind::Void { pending_id: p }) => {
            pending_id == p && (req.amount == 0 || req.amount == existing.amount)
        }
        _ => false,
    };
    same_action
        && req.linked == existing.linked
        && req.code == existing.code
        && req.user_data == existing.user_data
}

/// Validates `req` against `ctx` and computes its effect. Checks run in a
/// fixed order (request shape, pending transfer, accounts, link, balances),
/// so the code returned for a request with several faults is deterministic.
pub(crate) fn plan_transfer(
    req: &TransferRequest,
    ctx: &TransferContext,
) -> Result<TransferPlan, TransferError> {
    let reject = |rejection| TransferError::Rejected {
        id: req.id,
        rejection,
    };
    use TransferRejection as R;

    // Shape of the request alone.
    match req.action {
        TransferAction::Single { debit, credit, .. }
        | TransferAction::Pending { debit, credit, .. } => {
            if req.amount == 0 {
                return Err(reject(R::AmountMustNotBeZero));
            }
            if debit == credit {
                return Err(reject(R::AccountsMustBeDifferent));
            }
        }
        TransferAction::PostPending { .. } => {
            if req.amount == 0 {
                return Err(reject(R::AmountMustNotBeZero));
            }
        }
        TransferAction::VoidPending { .. } => {}
    }
    if req.linked.is_some() && !matches!(req.action, TransferAction::Single { .. }) {
        return Err(reject(R::LinkedNotAllowed));
    }

    // The pending transfer a post or void resolves.
    let pending = match requested_pending(req) {
        None => None,
        Some(_) => {
            let (pending, resolution) = ctx
                .pending
                .as_ref()
                .ok_or(reject(R::PendingTransferNotFound))?;
            if pending.kind != TransferKind::Pending {
                return Err(reject(R::PendingTransferNotPending));
            }
            match resolution.map(|r| r.kind) {
                Some(TransferKind::Post { .. }) => {
                    return Err(reject(R::PendingTransferAlreadyPosted));
                }
                Some(TransferKind::Void { .. }) => {
                    return Err(reject(R::PendingTransferAlreadyVoided));
                }
                Some(TransferKind::Single | TransferKind::Pending) => {
                    return Err(StoreError::Corrupt {
                        table: "transfers",
                        what: format!("transfer {} resolves a pending transfer", pending.id),
                    }
                    .into());
                }
                None => {}
            }
            match req.action {
                TransferAction::PostPending { .. } if req.amount > pending.amount => {
                    return Err(reject(R::ExceedsPendingTransferAmount));
                }
                TransferAction::VoidPending { .. }
                    if req.amount != 0 && req.amount != pending.amount =>
                {
                    return Err(reject(R::PendingTransferHasDifferentAmount));
                }
                _ => {}
            }
            Some(*pending)
        }
    };

    // Accounts and currency.
    let debit = ctx.debit.as_ref().ok_or(reject(R::DebitAccountNotFound))?;
    let credit = ctx
        .credit
        .as_ref()
        .ok_or(reject(R::CreditAccountNotFound))?;
    if debit.currency != credit.currency {
        return Err(reject(R::AccountsHaveDifferentCurrencies));
    }
    let (kind, amount, currency) = match (req.action, pending) {
        (TransferAction::Single { currency, .. }, _) => {
            (TransferKind::Single, req.amount, currency)
        }
        (TransferAction::Pending { currency, .. }, _) => {
            (TransferKind::Pending, req.amount, currency)
        }
        (TransferAction::PostPending { pending_id }, Some(p)) => {
            (TransferKind::Post { pending_id }, req.amount, p.currency)
        }
        (TransferAction::VoidPending { pending_id }, Some(p)) => {
            (TransferKind::Void { pending_id }, p.amount, p.currency)
        }
        (TransferAction::PostPending { .. } | TransferAction::VoidPending { .. }, None) => {
            unreachable!("a post or void without a pending transfer returned above")
        }
    };
    if currency != debit.currency {
        return Err(reject(R::CurrencyMismatch));
    }
    // Closed accounts take no new obligation; resolving an existing hold is
    // still allowed so that no hold is stranded.
    if matches!(kind, TransferKind::Single | TransferKind::Pending) {
        if debit.status == AccountStatus::Closed {
            return Err(reject(R::DebitAccountClosed));
        }
        if credit.status == AccountStatus::Closed {
            return Err(reject(R::CreditAccountClosed));
        }
    }

    // Compensation of an original transfer.
    if req.linked.is_some() {
        let (original, compensated) = ctx
            .linked
            .as_ref()
            .ok_or(reject(R::LinkedTransferNotFound))?;
        if !matches!(
            original.kind,
            TransferKind::Single | TransferKind::Post { .. }
        ) {
            return Err(reject(R::LinkedTransferNotPosted));
        }
        if original.debit_account != credit.id || original.credit_account != debit.id {
            return Err(reject(R::LinkedAccountsMismatch));
        }
        if compensated.saturating_add(amount) > original.amount {
            return Err(reject(R::ExceedsLinkedTransferAmount));
        }
    }

    // Balances.
    let released = pending.map_or(0, |p| p.amount);
    let (pending_add, posted_add) = match kind {
        TransferKind::Single => (0, amount),
        TransferKind::Pending => (amount, 0),
        TransferKind::Post { .. } => (0, amount),
        TransferKind::Void { .. } => (0, 0),
    };
    let corrupt = |account, what| TransferError::Store(StoreError::Invariant { account, what });
    let mut new_debit = debit.balances;
    new_debit.debits_pending = new_debit
        .debits_pending
        .checked_sub(released)
        .ok_or(corrupt(
            debit.id,
            "debits_pending below the hold being released",
        ))?;
    let mut new_credit = credit.balances;
    new_credit.credits_pending =
        new_credit
            .credits_pending
            .checked_sub(released)
            .ok_or(corrupt(
                credit.id,
                "credits_pending below the hold being released",
            ))?;

    let debits = new_debit
        .debits_pending
        .checked_add(pending_add)
        .zip(new_debit.debits_posted.checked_add(posted_add))
        .filter(|&(p, q)| p.checked_add(q).is_some_and(|t| t <= MAX_AMOUNT))
        .ok_or(reject(R::OverflowsDebits))?;
    (new_debit.debits_pending, new_debit.debits_posted) = debits;
    let credits = new_credit
        .credits_pending
        .checked_add(pending_add)
        .zip(new_credit.credits_posted.checked_add(posted_add))
        .filter(|&(p, q)| p.checked_add(q).is_some_and(|t| t <= MAX_AMOUNT))
        .ok_or(reject(R::OverflowsCredits))?;
    (new_credit.credits_pending, new_credit.credits_posted) = credits;

    if debit.flags.debits_must_not_exceed_credits
        && new_debit.debits_pending + new_debit.debits_posted > new_debit.credits_posted
    {
        return Err(reject(R::ExceedsCredits));
    }
    if credit.flags.credits_must_not_exceed_debits
        && new_credit.credits_pending + new_credit.credits_posted > new_credit.debits_posted
    {
        return Err(reject(R::ExceedsDebits));
    }

    // Double entry: the debit side moves by exactly what the credit side does.
    debug_assert_eq!(
        new_debit.debits_posted - debit.balances.debits_posted,
        new_credit.credits_posted - credit.balances.credits_posted
    );
    debug_assert_eq!(
        i128::from(new_debit.debits_pending) - i128::from(debit.balances.debits_pending),
        i128::from(new_credit.credits_pending) - i128::from(credit.balances.credits_pending)
    );
    debug_assert!(amount > 0 && amount <= MAX_AMOUNT);

    Ok(TransferPlan {
        transfer: Transfer {
            id: req.id,
            debit_account: debit.id,
            credit_account: credit.id,
            amount,
            currency,
            kind,
            linked: req.linked,
            code: req.code,
            user_data: req.user_data,
            timestamp: 0,
        },
        debit: new_debit,
        credit: new_credit,
    })
}

/// Decides an account creation: `Ok(Some(existing))` for an idempotent retry,
/// `Ok(None)` to create it.
pub(crate) fn check_new_account(
    new: &NewAccount,
    existing: Option<Account>,
) -> Result<Option<Account>, AccountRejection> {
    if new.flags.debits_must_not_exceed_credits && new.flags.credits_must_not_exceed_debits {
        return Err(AccountRejection::FlagsAreMutuallyExclusive);
    }
    match existing {
        None => Ok(None),
        Some(a)
            if a.currency == new.currency
                && a.kind == new.kind
                && a.flags == new.flags
                && a.user_data == new.user_data =>
        {
            Ok(Some(a))
        }
        Some(_) => Err(AccountRejection::ExistsWithDifferentFields),
    }
}
