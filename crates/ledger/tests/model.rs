//! Random operation sequences against the real SQLite store, compared with a
//! deliberately naive in-memory model: the model keeps only the list of
//! accepted transfers and recomputes every balance from scratch, and it
//! states each rule as a condition on the request, without the ledger's
//! check order. After every operation the store must agree with the model
//! (accepted or not, the same transfers, the same balances) and after every
//! sequence the invariant checker must pass.

use std::collections::{BTreeMap, HashSet};

use ledger::{
    Account, AccountFlags, AccountId, AccountKind, AccountStatus, Balances, Currency, LedgerRead,
    LedgerStore, LedgerTx, MAX_AMOUNT, NewAccount, Outcome, SqliteStore, Transfer, TransferAction,
    TransferId, TransferKind, TransferRejection as R, TransferRequest,
};
use proptest::prelude::*;

const EUR: Currency = Currency(978);
const USD: Currency = Currency(840);

/// (id, currency, flags); index 6 is never created.
const ACCOUNTS: [(u128, Currency, AccountFlags); 7] = [
    (1, EUR, AccountFlags::NONE),
    (2, EUR, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
    (3, EUR, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
    (4, EUR, AccountFlags::NONE),
    (5, EUR, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
    (6, USD, AccountFlags::NONE),
    (7, EUR, AccountFlags::NONE),
];
const CREATED_ACCOUNTS: usize = 6;

#[derive(Clone, Debug)]
enum Op {
    /// A single-phase or pending transfer between random accounts.
    Transfer(TransferRequest),
    /// Post (or void) a transfer picked from those the model holds, mostly
    /// pending ones; `amount` `None` means the pending amount (0 for a void).
    Resolve {
        id: TransferId,
        pick: usize,
        post: bool,
        amount: Option<u64>,
    },
    /// A compensating transfer reversing one picked from the model.
    Compensate {
        id: TransferId,
        pick: usize,
        amount: u64,
    },
    /// Close or reopen an account.
    SetStatus(AccountId, bool),
    /// Resubmit the request of an earlier operation.
    Retry(usize),
}

fn account() -> impl Strategy<Value = AccountId> {
    // Mostly the funded cards, the merchant and the funding account.
    prop::sample::select(vec![1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 5, 6, 7])
        .prop_map(|i| AccountId(ACCOUNTS[i - 1].0))
}

fn id() -> impl Strategy<Value = TransferId> {
    (1u128..64).prop_map(TransferId)
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => 1u64..400,
        1 => Just(0u64),
        1 => (MAX_AMOUNT - 500)..=MAX_AMOUNT,
        1 => Just(u64::MAX),
    ]
}

fn currency() -> impl Strategy<Value = Currency> {
    prop_oneof![12 => Just(EUR), 1 => Just(USD)]
}

fn request() -> impl Strategy<Value = TransferRequest> {
    let extra = (prop::option::weighted(0.1, id()), 0u16..2, 0u128..2);
    let action = prop_oneof![
        (account(), account(), currency()).prop_map(|(debit, credit, currency)| {
            TransferAction::Single {
                debit,
                credit,
                currency,
            }
        }),
        (account(), account(), currency()).prop_map(|(debit, credit, currency)| {
            TransferAction::Pending {
                debit,
                credit,
                currency,
            }
        }),
    ];
    (id(), amount(), action, extra).prop_map(|(id, amount, action, (linked, code, user_data))| {
        TransferRequest {
            id,
            amount,
            action,
            linked,
            code,
            user_data,
        }
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => request().prop_map(Op::Transfer),
        5 => (id(), any::<usize>(), any::<bool>(), prop::option::weighted(0.7, amount()))
            .prop_map(|(id, pick, post, amount)| Op::Resolve { id, pick, post, amount }),
        2 => (id(), any::<usize>(), amount())
            .prop_map(|(id, pick, amount)| Op::Compensate { id, pick, amount }),
        1 => (account(), any::<bool>()).prop_map(|(a, c)| Op::SetStatus(a, c)),
        2 => any::<usize>().prop_map(Op::Retry),
    ]
}

/// Turns an operation into a request, picking its target among the
/// transfers the model holds.
fn resolve(op: &Op, model: &Model, earlier: &[TransferRequest]) -> Option<TransferRequest> {
    let pick = |pick: usize, pending_only: bool| {
        let candidates: Vec<&Transfer> = model
            .transfers
            .iter()
            .filter(|t| !pending_only || t.kind == TransferKind::Pending)
            .collect();
        (!candidates.is_empty()).then(|| *candidates[pick % candidates.len()])
    };
    match *op {
        Op::Transfer(req) => Some(req),
        Op::Resolve {
            id,
            pick: n,
            post,
            amount,
        } => {
            // One in five names any transfer (not pending, or unknown).
            let target = pick(n, n % 5 != 0);
            let pending_id = target.map_or(TransferId(1_000 + n as u128 % 8), |t| t.id);
            let amount = amount.unwrap_or(match (post, target) {
                (true, Some(t)) => t.amount,
                _ => 0,
            });
            Some(if post {
                TransferRequest::post(id, pending_id, amount)
            } else {
                TransferRequest {
                    amount,
                    ..TransferRequest::void(id, pending_id)
                }
            })
        }
        Op::Compensate {
            id,
            pick: n,
            amount,
        } => {
            let o = pick(n, false)?;
            Some(
                TransferRequest::single(id, o.credit_account, o.debit_account, amount, o.currency)
                    .linked(o.id),
            )
        }
        Op::Retry(i) => (!earlier.is_empty()).then(|| earlier[i % earlier.len()]),
        Op::SetStatus(..) => None,
    }
}

/// The model: accounts and the accepted transfers, nothing else.
#[derive(Default)]
struct Model {
    accounts: BTreeMap<AccountId, (Currency, AccountFlags, bool /* closed */)>,
    transfers: Vec<Transfer>,
}

impl Model {
    fn find(&self, id: TransferId) -> Option<&Transfer> {
        self.transfers.iter().find(|t| t.id == id)
    }

    fn resolution(&self, pending: TransferId) -> Option<&Transfer> {
        self.transfers
            .iter()
            .find(|t| t.kind.pending_id() == Some(pending))
    }

    /// Balances summed from scratch over all transfers, in u128.
    fn balances(&self, account: AccountId) -> [u128; 4] {
        let mut b = [0u128; 4]; // debits pending, debits posted, credits pending, credits posted
        for t in &self.transfers {
            let (pending, posted) = match t.kind {
                TransferKind::Single | TransferKind::Post { .. } => (0, u128::from(t.amount)),
                TransferKind::Pending if self.resolution(t.id).is_none() => {
                    (u128::from(t.amount), 0)
                }
                TransferKind::Pending | TransferKind::Void { .. } => (0, 0),
            };
            if t.debit_account == account {
                b[0] += pending;
                b[1] += posted;
            }
            if t.credit_account == account {
                b[2] += pending;
                b[3] += posted;
            }
        }
        b
    }

    /// Whether `req` asks for what `t` is (the idempotent retry).
    fn same(req: &TransferRequest, t: &Transfer) -> bool {
        let action = match req.action {
            TransferAction::Single {
                debit,
                credit,
                currency,
            } => {
                t.kind == TransferKind::Single
                    && (debit, credit, currency, req.amount)
                        == (t.debit_account, t.credit_account, t.currency, t.amount)
            }
            TransferAction::Pending {
                debit,
                credit,
                currency,
            } => {
                t.kind == TransferKind::Pending
                    && (debit, credit, currency, req.amount)
                        == (t.debit_account, t.credit_account, t.currency, t.amount)
            }
            TransferAction::PostPending { pending_id } => {
                t.kind == TransferKind::Post { pending_id } && req.amount == t.amount
            }
            TransferAction::VoidPending { pending_id } => {
                t.kind == TransferKind::Void { pending_id }
                    && (req.amount == 0 || req.amount == t.amount)
            }
        };
        action && req.linked == t.linked && req.code == t.code && req.user_data == t.user_data
    }

    /// Every rule `req` breaks, or the transfer it creates.
    fn judge(&self, req: &TransferRequest) -> Result<Transfer, HashSet<R>> {
        let mut broken = HashSet::new();
        let (debit, credit, currency, amount, kind) = match req.action {
            TransferAction::Single {
                debit,
                credit,
                currency,
            } => (debit, credit, currency, req.amount, TransferKind::Single),
            TransferAction::Pending {
                debit,
                credit,
                currency,
            } => (debit, credit, currency, req.amount, TransferKind::Pending),
            TransferAction::PostPending { pending_id }
            | TransferAction::VoidPending { pending_id } => {
                let is_post = matches!(req.action, TransferAction::PostPending { .. });
                let Some(p) = self.find(pending_id) else {
                    broken.insert(R::PendingTransferNotFound);
                    if is_post && req.amount == 0 {
                        broken.insert(R::AmountMustNotBeZero);
                    }
                    if req.linked.is_some() {
                        broken.insert(R::LinkedNotAllowed);
                    }
                    return Err(broken);
                };
                if p.kind != TransferKind::Pending {
                    broken.insert(R::PendingTransferNotPending);
                }
                match self.resolution(pending_id).map(|r| r.kind) {
                    Some(TransferKind::Post { .. }) => {
                        broken.insert(R::PendingTransferAlreadyPosted);
                    }
                    Some(_) => {
                        broken.insert(R::PendingTransferAlreadyVoided);
                    }
                    None => {}
                }
                if is_post && req.amount > p.amount {
                    broken.insert(R::ExceedsPendingTransferAmount);
                }
                if !is_post && req.amount != 0 && req.amount != p.amount {
                    broken.insert(R::PendingTransferHasDifferentAmount);
                }
                let (amount, kind) = if is_post {
                    (req.amount, TransferKind::Post { pending_id })
                } else {
                    (p.amount, TransferKind::Void { pending_id })
                };
                (p.debit_account, p.credit_account, p.currency, amount, kind)
            }
        };
        if amount == 0 {
            broken.insert(R::AmountMustNotBeZero);
        }
        if debit == credit {
            broken.insert(R::AccountsMustBeDifferent);
        }
        if req.linked.is_some() && kind != TransferKind::Single {
            broken.insert(R::LinkedNotAllowed);
        }
        let new_obligation = matches!(kind, TransferKind::Single | TransferKind::Pending);
        let (d, c) = (self.accounts.get(&debit), self.accounts.get(&credit));
        if d.is_none() {
            broken.insert(R::DebitAccountNotFound);
        }
        if c.is_none() {
            broken.insert(R::CreditAccountNotFound);
        }
        if let (Some(d), Some(c)) = (d, c) {
            if d.0 != c.0 {
                broken.insert(R::AccountsHaveDifferentCurrencies);
            }
            if currency != d.0 || currency != c.0 {
                broken.insert(R::CurrencyMismatch);
            }
            if new_obligation && d.2 {
                broken.insert(R::DebitAccountClosed);
            }
            if new_obligation && c.2 {
                broken.insert(R::CreditAccountClosed);
            }
        }
        if let Some(original) = req.linked {
            match self.find(original) {
                None => {
                    broken.insert(R::LinkedTransferNotFound);
                }
                Some(o) => {
                    if !matches!(o.kind, TransferKind::Single | TransferKind::Post { .. }) {
                        broken.insert(R::LinkedTransferNotPosted);
                    }
                    if (o.debit_account, o.credit_account) != (credit, debit) {
                        broken.insert(R::LinkedAccountsMismatch);
                    }
                    let done: u128 = self
                        .transfers
                        .iter()
                        .filter(|t| t.linked == Some(original))
                        .map(|t| u128::from(t.amount))
                        .sum();
                    if done + u128::from(amount) > u128::from(o.amount) {
                        broken.insert(R::ExceedsLinkedTransferAmount);
                    }
                }
            }
        }
        let transfer = Transfer {
            id: req.id,
            debit_account: debit,
            credit_account: credit,
            amount,
            currency,
            kind,
            linked: req.linked,
            code: req.code,
            user_data: req.user_data,
            timestamp: 0,
        };
        // Balances as they would be with the transfer, from scratch.
        if broken.is_empty() {
            let mut with = Model {
                accounts: self.accounts.clone(),
                transfers: self.transfers.clone(),
            };
            with.transfers.push(transfer);
            let (db, cb) = (with.balances(debit), with.balances(credit));
            let max = u128::from(MAX_AMOUNT);
            if db[0] + db[1] > max {
                broken.insert(R::OverflowsDebits);
            }
            if cb[2] + cb[3] > max {
                broken.insert(R::OverflowsCredits);
            }
            if d.is_some_and(|d| d.1.debits_must_not_exceed_credits) && db[0] + db[1] > db[3] {
                broken.insert(R::ExceedsCredits);
            }
            if c.is_some_and(|c| c.1.credits_must_not_exceed_debits) && cb[2] + cb[3] > cb[1] {
                broken.insert(R::ExceedsDebits);
            }
        }
        if broken.is_empty() {
            Ok(transfer)
        } else {
            Err(broken)
        }
    }
}

fn balances_of(b: [u128; 4]) -> Balances {
    let n = |v: u128| u64::try_from(v).expect("model balance within range");
    Balances {
        debits_pending: n(b[0]),
        debits_posted: n(b[1]),
        credits_pending: n(b[2]),
        credits_posted: n(b[3]),
    }
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(dir.path().join("ledger.db")).unwrap();
    let mut model = Model::default();
    {
        let mut tx = store.transaction().unwrap();
        for &(id, currency, flags) in &ACCOUNTS[..CREATED_ACCOUNTS] {
            tx.create_account(
                &NewAccount::new(AccountId(id), currency, AccountKind::Card).flags(flags),
            )
            .unwrap();
            model
                .accounts
                .insert(AccountId(id), (currency, flags, false));
        }
        // Fund both prepaid cards from account 1.
        for (n, card) in [(100u128, 2u128), (101, 3)] {
            let load =
                TransferRequest::single(TransferId(n), AccountId(1), AccountId(card), 3_000, EUR);
            model
                .transfers
                .push(tx.create_transfer(&load).unwrap().into_inner());
        }
        tx.commit().unwrap();
    }

    let mut requests: Vec<TransferRequest> = Vec::new();
    for op in ops {
        let mut tx = store.transaction().unwrap();
        match *op {
            Op::SetStatus(id, closed) => {
                let status = if closed {
                    AccountStatus::Closed
                } else {
                    AccountStatus::Open
                };
                let result = tx.set_account_status(id, status);
                match model.accounts.get_mut(&id) {
                    Some(a) => {
                        prop_assert!(result.is_ok());
                        a.2 = closed;
                    }
                    None => prop_assert!(result.is_err()),
                }
            }
            _ => {
                let Some(req) = resolve(op, &model, &requests) else {
                    continue;
                };
                requests.push(req);
                let got = tx.create_transfer(&req);
                match model.find(req.id).copied() {
                    Some(existing) => {
                        if Model::same(&req, &existing) {
                            prop_assert_eq!(got.unwrap(), Outcome::Exists(existing));
                        } else {
                            prop_assert_eq!(
                                got.unwrap_err().rejection(),
                                Some(R::ExistsWithDifferentFields)
                            );
                        }
                    }
                    None => match (model.judge(&req), got) {
                        (Ok(expected), Ok(Outcome::Created(t))) => {
                            prop_assert_eq!(Transfer { timestamp: 0, ..t }, expected);
                            model.transfers.push(t);
                        }
                        (Err(broken), Err(e)) => {
                            let code = e.rejection();
                            prop_assert!(
                                code.is_some_and(|c| broken.contains(&c)),
                                "{:?} not in {:?}",
                                code,
                                broken
                            );
                        }
                        (expected, got) => {
                            prop_assert!(false, "{req:?}: model {expected:?}, ledger {got:?}")
                        }
                    },
                }
            }
        }
        tx.commit().unwrap();

        // After every operation: the same balances, from scratch.
        let mut reader = store.reader().unwrap();
        for &(id, ..) in &ACCOUNTS {
            let stored: Option<Account> = reader.get_account(AccountId(id)).unwrap();
            match model.accounts.get(&AccountId(id)) {
                Some(&(_, _, closed)) => {
                    let a = stored.expect("account exists");
                    prop_assert_eq!(a.balances, balances_of(model.balances(AccountId(id))));
                    prop_assert_eq!(a.status == AccountStatus::Closed, closed);
                }
                None => prop_assert!(stored.is_none()),
            }
        }
    }
    let mut reader = store.reader().unwrap();
    let report = reader.check_invariants().unwrap();
    prop_assert!(report.is_consistent(), "{}", report);
    prop_assert_eq!(report.transfers, model.transfers.len() as u64);
    for t in &model.transfers {
        prop_assert_eq!(reader.get_transfer(t.id).unwrap(), Some(*t));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn store_agrees_with_the_model(ops in prop::collection::vec(op(), 1..48)) {
        run(&ops)?;
    }
}
