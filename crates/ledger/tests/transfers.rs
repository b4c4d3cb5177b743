//! The ledger's rules against the real SQLite store: every result code,
//! two-phase flows, idempotency, immutability, lookups.

mod common;

use std::collections::HashSet;

use common::*;
use ledger::{
    AccountId, AccountKind, AccountRejection, AccountStatus, Balances, Cursor, LedgerRead,
    LedgerStore, LedgerTx, MAX_AMOUNT, NewAccount, Outcome, PageRequest, PendingState, SqliteTx,
    TransferId, TransferKind, TransferRejection as R, TransferRequest, Violation,
};

const CLOSED: AccountId = AccountId(0xCC);

/// Everything a rejected request could have changed.
fn snapshot(tx: &mut SqliteTx<'_>) -> (Vec<Option<ledger::Account>>, i64) {
    let accounts = [FUNDING, CARD, CARD2, SHOP, DOLLARS, PAYBACK, CLOSED]
        .into_iter()
        .map(|id| tx.get_account(id).unwrap())
        .collect();
    let transfers = tx
        .sql()
        .query_row("SELECT count(*) FROM transfers", [], |r| r.get(0))
        .unwrap();
    (accounts, transfers)
}

/// Asserts `req` is rejected with `code` and writes nothing.
fn rejects(tx: &mut SqliteTx<'_>, req: TransferRequest, code: R) -> R {
    let before = snapshot(tx);
    let err = tx.create_transfer(&req).expect_err("must be rejected");
    assert_eq!(err.rejection(), Some(code), "{req:?}: {err}");
    assert_eq!(snapshot(tx), before, "a rejected transfer wrote something");
    code
}

fn created(tx: &mut SqliteTx<'_>, req: TransferRequest) -> ledger::Transfer {
    match tx.create_transfer(&req).expect("accepted") {
        Outcome::Created(t) => t,
        Outcome::Exists(t) => panic!("{t:?} already existed"),
    }
}

/// Position of each code; exhaustive, so a new code fails to compile here
/// until the test below covers it.
fn ordinal(code: R) -> usize {
    match code {
        R::ExistsWithDifferentFields => 0,
        R::AmountMustNotBeZero => 1,
        R::AccountsMustBeDifferent => 2,
        R::LinkedNotAllowed => 3,
        R::PendingTransferNotFound => 4,
        R::PendingTransferNotPending => 5,
        R::PendingTransferAlreadyPosted => 6,
        R::PendingTransferAlreadyVoided => 7,
        R::ExceedsPendingTransferAmount => 8,
        R::PendingTransferHasDifferentAmount => 9,
        R::DebitAccountNotFound => 10,
        R::CreditAccountNotFound => 11,
        R::AccountsHaveDifferentCurrencies => 12,
        R::CurrencyMismatch => 13,
        R::DebitAccountClosed => 14,
        R::CreditAccountClosed => 15,
        R::LinkedTransferNotFound => 16,
        R::LinkedTransferNotPosted => 17,
        R::LinkedAccountsMismatch => 18,
        R::ExceedsLinkedTransferAmount => 19,
        R::ExceedsCredits => 20,
        R::ExceedsDebits => 21,
        R::OverflowsDebits => 22,
        R::OverflowsCredits => 23,
    }
}
const CODES: usize = 24;

#[test]
fn every_rejection_code_writes_nothing() {
    let mut fx = Fixture::new();
    let mut tx = fx.store.transaction().unwrap();
    tx.create_account(&NewAccount::new(CLOSED, EUR, AccountKind::Merchant))
        .unwrap();
    tx.set_account_status(CLOSED, AccountStatus::Closed)
        .unwrap();
    let id = |n: u128| TransferId(0x100 + n);
    let sale = created(
        &mut tx,
        TransferRequest::single(id(1), CARD, SHOP, 500, EUR),
    );
    let posted = created(
        &mut tx,
        TransferRequest::pending(id(2), CARD, SHOP, 1_000, EUR),
    );
    created(&mut tx, TransferRequest::post(id(3), posted.id, 1_000));
    let voided = created(
        &mut tx,
        TransferRequest::pending(id(4), CARD, SHOP, 700, EUR),
    );
    created(&mut tx, TransferRequest::void(id(5), voided.id));
    let open = created(
        &mut tx,
        TransferRequest::pending(id(6), CARD, SHOP, 300, EUR),
    );
    let missing = TransferId(0xDEAD);
    let nobody = AccountId(0x999);
    let available = tx.balances(CARD).unwrap().unwrap().available_to_debit();
    assert_eq!(available, LOADED - 500 - 1_000 - 300);

    let new = id(100);
    let t = &mut tx;
    let covered: HashSet<usize> = [
        rejects(
            t,
            TransferRequest::single(sale.id, CARD, SHOP, 501, EUR),
            R::ExistsWithDifferentFields,
        ),
        rejects(
            t,
            TransferRequest::single(sale.id, CARD, SHOP, 500, EUR).code(7),
            R::ExistsWithDifferentFields,
        ),
        rejects(
            t,
            TransferRequest::pending(sale.id, CARD, SHOP, 500, EUR),
            R::ExistsWithDifferentFields,
        ),
        rejects(
            t,
            TransferRequest::single(new, CARD, SHOP, 0, EUR),
            R::AmountMustNotBeZero,
        ),
        rejects(
            t,
            TransferRequest::pending(new, CARD, SHOP, 0, EUR),
            R::AmountMustNotBeZero,
        ),
        rejects(
            t,
            TransferRequest::post(new, open.id, 0),
            R::AmountMustNotBeZero,
        ),
        rejects(
            t,
            TransferRequest::single(new, CARD, CARD, 1, EUR),
            R::AccountsMustBeDifferent,
        ),
        rejects(
            t,
            TransferRequest::pending(new, SHOP, CARD, 1, EUR).linked(sale.id),
            R::LinkedNotAllowed,
        ),
        rejects(
            t,
            TransferRequest::post(new, open.id, 1).linked(sale.id),
            R::LinkedNotAllowed,
        ),
        rejects(
            t,
            TransferRequest::post(new, missing, 1),
            R::PendingTransferNotFound,
        ),
        rejects(
            t,
            TransferRequest::void(new, missing),
            R::PendingTransferNotFound,
        ),
        rejects(
            t,
            TransferRequest::post(new, sale.id, 1),
            R::PendingTransferNotPending,
        ),
        rejects(
            t,
            TransferRequest::post(new, posted.id, 1),
            R::PendingTransferAlreadyPosted,
        ),
        rejects(
            t,
            TransferRequest::void(new, posted.id),
            R::PendingTransferAlreadyPosted,
        ),
        rejects(
            t,
            TransferRequest::post(new, voided.id, 1),
            R::PendingTransferAlreadyVoided,
        ),
        rejects(
            t,
            TransferRequest::void(new, voided.id),
            R::PendingTransferAlreadyVoided,
        ),
        rejects(
            t,
            TransferRequest::post(new, open.id, 301),
            R::ExceedsPendingTransferAmount,
        ),
        rejects(
            t,
            TransferRequest {
                amount: 5,
                ..TransferRequest::void(new, open.id)
            },
            R::PendingTransferHasDifferentAmount,
        ),
        rejects(
            t,
            TransferRequest::single(new, nobody, SHOP, 1, EUR),
            R::DebitAccountNotFound,
        ),
        rejects(
            t,
            TransferRequest::single(new, CARD, nobody, 1, EUR),
            R::CreditAccountNotFound,
        ),
        rejects(
            t,
            TransferRequest::single(new, CARD, DOLLARS, 1, EUR),
            R::AccountsHaveDifferentCurrencies,
        ),
        rejects(
            t,
            TransferRequest::single(new, CARD, SHOP, 1, USD),
            R::CurrencyMismatch,
        ),
        rejects(
            t,
            TransferRequest::single(new, CLOSED, SHOP, 1, EUR),
            R::DebitAccountClosed,
        ),
        rejects(
            t,
            TransferRequest::pending(new, FUNDING, CLOSED, 1, EUR),
            R::CreditAccountClosed,
        ),
        rejects(
            t,
            TransferRequest::single(new, SHOP, CARD, 1, EUR).linked(missing),
            R::LinkedTransferNotFound,
        ),
        rejects(
            t,
            TransferRequest::single(new, SHOP, CARD, 1, EUR).linked(open.id),
            R::LinkedTransferNotPosted,
        ),
        rejects(
            t,
            TransferRequest::single(new, SHOP, CARD, 1, EUR).linked(voided.id),
            R::LinkedTransferNotPosted,
        ),
        rejects(
            t,
            TransferRequest::single(new, SHOP, CARD2, 1, EUR).linked(sale.id),
            R::LinkedAccountsMismatch,
        ),
        rejects(
            t,
            TransferRequest::single(new, CARD, SHOP, 1, EUR).linked(sale.id),
            R::LinkedAccountsMismatch,
        ),
        rejects(
            t,
            TransferRequest::single(new, SHOP, CARD, 501, EUR).linked(sale.id),
            R::ExceedsLinkedTransferAmount,
        ),
        rejects(
            t,
            TransferRequest::single(new, CARD, SHOP, available + 1, EUR),
            R::ExceedsCredits,
        ),
        rejects(
            t,
            TransferRequest::pending(new, CARD, SHOP, available + 1, EUR),
            R::ExceedsCredits,
        ),
        rejects(
            t,
            TransferRequest::single(new, FUNDING, PAYBACK, 1, EUR),
            R::ExceedsDebits,
        ),
        rejects(
            t,
            TransferRequest::single(new, FUNDING, SHOP, MAX_AMOUNT, EUR),
            R::OverflowsDebits,
        ),
        rejects(
            t,
            TransferRequest::single(new, SHOP, FUNDING, u64::MAX, EUR),
            R::OverflowsDebits,
        ),
        rejects(
            t,
            TransferRequest::pending(new, SHOP, CARD, MAX_AMOUNT, EUR),
            R::OverflowsCredits,
        ),
    ]
    .into_iter()
    .map(ordinal)
    .collect();
    assert_eq!(covered.len(), CODES, "every code has a case");

    // The limits themselves are accepted: exactly the available balance, a
    // refund of exactly the rest of the sale, a post of exactly the hold.
    created(
        t,
        TransferRequest::single(id(101), SHOP, CARD, 200, EUR).linked(sale.id),
    );
    created(
        t,
        TransferRequest::single(id(102), SHOP, CARD, 300, EUR).linked(sale.id),
    );
    rejects(
        t,
        TransferRequest::single(id(103), SHOP, CARD, 1, EUR).linked(sale.id),
        R::ExceedsLinkedTransferAmount,
    );
    assert_eq!(t.linked_amount(sale.id).unwrap(), 500);
    created(t, TransferRequest::post(id(104), open.id, 300));
    let rest = t.balances(CARD).unwrap().unwrap().available_to_debit();
    created(t, TransferRequest::single(id(105), CARD, SHOP, rest, EUR));
    assert_eq!(t.balances(CARD).unwrap().unwrap().available_to_debit(), 0);
    assert_consistent(t);
}

#[test]
fn account_result_codes() {
    let mut fx = Fixture::new();
    let mut tx = fx.store.transaction().unwrap();
    let new = NewAccount::new(AccountId(0x77), EUR, AccountKind::Wallet).user_data(5);
    let first = tx.create_account(&new).unwrap();
    assert!(first.is_created());
    // Same fields: the idempotent retry returns the stored account.
    assert_eq!(
        tx.create_account(&new).unwrap(),
        Outcome::Exists(first.into_inner())
    );
    for other in [
        NewAccount {
            currency: USD,
            ..new.clone()
        },
        NewAccount {
            kind: AccountKind::Card,
            ..new.clone()
        },
        new.clone()
            .flags(ledger::AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        new.clone().user_data(6),
    ] {
        let err = tx.create_account(&other).unwrap_err();
        assert_eq!(
            err.rejection(),
            Some(AccountRejection::ExistsWithDifferentFields)
        );
    }
    let both = ledger::AccountFlags {
        debits_must_not_exceed_credits: true,
        credits_must_not_exceed_debits: true,
    };
    let err = tx
        .create_account(&NewAccount::new(AccountId(0x78), EUR, AccountKind::Card).flags(both))
        .unwrap_err();
    assert_eq!(
        err.rejection(),
        Some(AccountRejection::FlagsAreMutuallyExclusive)
    );
    assert_eq!(tx.get_account(AccountId(0x78)).unwrap(), None);
    let err = tx
        .set_account_status(AccountId(0x79), AccountStatus::Closed)
        .unwrap_err();
    assert_eq!(err.rejection(), Some(AccountRejection::AccountNotFound));
}

#[test]
fn pending_posted_in_full() {
    let mut fx = Fixture::new();
    let mut tx = fx.store.transaction().unwrap();
    let hold = created(
        &mut tx,
        TransferRequest::pending(TransferId(1), CARD, SHOP, 4_000, EUR),
    );
    let card = tx.balances(CARD).unwrap().unwrap();
    assert_eq!(card.debits_pending, 4_000);
    assert_eq!(card.available_to_debit(), LOADED - 4_000);
    assert_eq!(
        tx.pending_state(hold.id).unwrap(),
        Some(PendingState::Pending)
    );
    let post = created(
        &mut tx,
        TransferRequest::post(TransferId(2), hold.id, 4_000),
    );
    assert_eq!(
        (
            post.debit_account,
            post.credit_account,
            post.currency,
            post.kind
        ),
        (
            CARD,
            SHOP,
            EUR,
            TransferKind::Post {
                pending_id: hold.id
            }
        )
    );
    assert_eq!(
        tx.balances(CARD).unwrap().unwrap(),
        Balances {
            debits_posted: 4_000,
            credits_posted: LOADED,
            ..Balances::default()
        }
    );
    assert_eq!(
        tx.balances(SHOP).unwrap().unwrap(),
        Balances {
            credits_posted: 4_000,
            ..Balances::default()
        }
    );
    assert_eq!(
        tx.pending_state(hold.id).unwrap(),
        Some(PendingState::Posted(post))
    );
    assert_consistent(&mut tx);
}

#[test]
fn partial_post_releases_the_remainder() {
    let mut fx = Fixture::new();
    let mut tx = fx.store.transaction().unwrap();
    let hold = created(
        &mut tx,
        TransferRequest::pending(TransferId(1), CARD, SHOP, 6_000, EUR),
    );
    assert_eq!(
        tx.balances(CARD).unwrap().unwrap().available_to_debit(),
        4_000
    );
    created(
        &mut tx,
        TransferRequest::post(TransferId(2), hold.id, 2_500),
    );
    let card = tx.balances(CARD).unwrap().unwrap();
    assert_eq!((card.debits_pending, card.debits_posted), (0, 2_500));
    assert_eq!(card.available_to_debit(), LOADED - 2_500);
    let shop = tx.balances(SHOP).unwrap().unwrap();
    assert_eq!((shop.credits_pending, shop.credits_posted), (0, 2_500));
    // The released remainder is spendable again, and the hold is done.
    created(
        &mut tx,
        TransferRequest::single(TransferId(3), CARD, SHOP, LOADED - 2_500, EUR),
    );
    rejects(
        &mut tx,
        TransferRequest::post(TransferId(4), hold.id, 1),
        R::PendingTransferAlreadyPosted,
    );
    assert_consistent(&mut tx);
}

#[test]
fn void_releases_the_hold() {
    let mut fx = Fixture::new();
    let mut tx = fx.store.transaction().unwrap();
    let hold = created(
        &mut tx,
        TransferRequest::pending(TransferId(1), CARD, SHOP, LOADED, EUR),
    );
    rejects(
        &mut tx,
        TransferRequest::single(TransferId(2), CARD, SHOP, 1, EUR),
        R::ExceedsCredits,
    );
    let void = created(&mut tx, TransferRequest::void(TransferId(3), hold.id));
    assert_eq!(void.amount, LOADED, "a void records the amount it released");
    assert_eq!(
        tx.balances(CARD).unwrap().unwrap().available_to_debit(),
        LOADED
    );
    assert_eq!(
        tx.balances(SHOP).unwrap().unwrap(),
        Balances::default(),
        "a void posts nothing"
    );
    assert_eq!(
        tx.pending_state(hold.id).unwrap(),
        Some(PendingState::Voided(void))
    );
    // Retried with the amount it released, or with 0: the same void.
    let same = TransferRequest {
        amount: LOADED,
        ..TransferRequest::void(TransferId(3), hold.id)
    };
    assert_eq!(tx.create_transfer(&same).unwrap(), Outcome::Exists(void));
    assert_eq!(
        tx.create_transfer(&TransferRequest::void(TransferId(3), hold.id))
            .unwrap(),
        Outcome::Exists(void)
    );
    rejects(
        &mut tx,
        TransferRequest::post(TransferId(4), hold.id, 1),
        R::PendingTransferAlreadyVoided,
    );
    assert_consistent(&mut tx);
}

#[test]
fn double_post_and_void_of_posted_are_refused() {
    let mut fx = Fixture::new();
    let mut tx = fx.store.transaction().unwrap();
    let hold = created(
        &mut tx,
        TransferRequest::pending(TransferId(1), CARD, SHOP, 1_000, EUR),
    );
    created(&mut tx, TransferRequest::post(TransferId(2), hold.id, 600));
    rejects(
        &mut tx,
        TransferRequest::post(TransferId(3), hold.id, 400),
        R::PendingTransferAlreadyPosted,
    );
    rejects(
        &mut tx,
        TransferRequest::void(TransferId(4), hold.id),
        R::PendingTransferAlreadyPosted,
    );
    // The database refuses a second resolution even if the rules were bypassed.
    let err = tx
        .sql()
        .execute(
            "INSERT INTO transfers SELECT x'00000000000000000000000000000009', debit_account,
                credit_account, amount, currency, kind, pending_id, linked_id, code, user_data,
                timestamp + 1 FROM transfers WHERE id = ?1",
            [TransferId(2).0.to_be_bytes()],
        )
        .unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    assert_consistent(&mut tx);
}

#[test]
fn idempotent_retry_returns_the_first_result_and_changes_nothing() {
    let mut fx = Fixture::new();
    let sale = TransferRequest::single(TransferId(1), CARD, SHOP, 1_250, EUR)
        .code(3)
        .user_data(0xABC);
    let first = {
        let mut tx = fx.store.transaction().unwrap();
        let first = created(&mut tx, sale);
        tx.commit().unwrap();
        first
    };
    let mut tx = fx.store.transaction().unwrap();
    let before = snapshot(&mut tx);
    // Retried after the commit, even once the funds are gone: same answer,
    // same timestamp, nothing written.
    created(
        &mut tx,
        TransferRequest::single(TransferId(2), CARD, SHOP, LOADED - 1_250, EUR),
    );
    let drained = snapshot(&mut tx);
    assert_ne!(drained, before);
    for _ in 0..3 {
        assert_eq!(tx.create_transfer(&sale).unwrap(), Outcome::Exists(first));
        assert_eq!(snapshot(&mut tx), drained);
    }
    // A completion retried after its pending transfer is resolved is still
    // the retry, not "already posted".
    let hold = created(
        &mut tx,
        TransferRequest::pending(TransferId(3), CARD2, SHOP, 900, EUR),
    );
    let post = TransferRequest::post(TransferId(4), hold.id, 800);
    let posted = created(&mut tx, post);
    assert_eq!(tx.create_transfer(&post).unwrap(), Outcome::Exists(posted));
    rejects(
        &mut tx,
        TransferRequest::post(TransferId(4), hold.id, 700),
        R::ExistsWithDifferentFields,
    );
    assert_consistent(&mut tx);
}

#[test]
fn closed_accounts_still_resolve_their_holds() {
    let mut fx = Fixture::new();
    let mut tx = fx.store.transaction().unwrap();
    let a = created(
        &mut tx,
        TransferRequest::pending(TransferId(1), CARD, SHOP, 100, EUR),
    );
    let b = created(
        &mut tx,
        TransferRequest::pending(TransferId(2), CARD, SHOP, 200, EUR),
    );
    tx.set_account_status(CARD, AccountStatus::Closed).unwrap();
    rejects(
        &mut tx,
        TransferRequest::single(TransferId(3), CARD, SHOP, 1, EUR),
        R::DebitAccountClosed,
    );
    created(&mut tx, TransferRequest::post(TransferId(4), a.id, 100));
    created(&mut tx, TransferRequest::void(TransferId(5), b.id));
    let card = tx.set_account_status(CARD, AccountStatus::Open).unwrap();
    assert_eq!(card.status, AccountStatus::Open);
    created(
        &mut tx,
        TransferRequest::single(TransferId(6), CARD, SHOP, 1, EUR),
    );
    assert_consistent(&mut tx);
}

#[test]
fn transfers_are_immutable_in_the_database() {
    let mut fx = Fixture::new();
    let mut tx = fx.store.transaction().unwrap();
    created(
        &mut tx,
        TransferRequest::single(TransferId(1), CARD, SHOP, 10, EUR),
    );
    for sql in [
        "UPDATE transfers SET amount = amount + 1",
        "UPDATE transfers SET code = 9 WHERE id = x'00000000000000000000000000000001'",
        "DELETE FROM transfers",
        "DELETE FROM accounts WHERE id = x'000000000000000000000000000000c1'",
        "UPDATE accounts SET currency = 840",
    ] {
        let err = tx.sql().execute(sql, []).unwrap_err();
        assert!(
            err.to_string().contains("immutable") || err.to_string().contains("never"),
            "{sql}: {err}"
        );
    }
    assert_consistent(&mut tx);
}

#[test]
fn invariant_check_finds_tampered_balances() {
    let mut fx = Fixture::new();
    let mut tx = fx.store.transaction().unwrap();
    created(
        &mut tx,
        TransferRequest::single(TransferId(1), CARD, SHOP, 10, EUR),
    );
    assert_consistent(&mut tx);
    tx.sql()
        .execute(
            "UPDATE accounts SET credits_posted = credits_posted + 5 WHERE id = ?1",
            [SHOP.0.to_be_bytes()],
        )
        .unwrap();
    let report = tx.check_invariants().unwrap();
    assert_eq!(
        report.violations,
        vec![
            Violation::BalanceMismatch {
                account: SHOP,
                stored: Balances {
                    credits_posted: 15,
                    ..Balances::default()
                },
                derived: Balances {
                    credits_posted: 10,
                    ..Balances::default()
                },
            },
            Violation::PostedTotalsDiffer {
                debits: u128::from(2 * LOADED + 10),
                credits: u128::from(2 * LOADED + 15),
            },
        ]
    );
    assert!(report.into_result().is_err());
}

#[test]
fn account_history_pages_in_both_directions() {
    let mut fx = Fixture::new();
    let mut tx = fx.store.transaction().unwrap();
    let mut ids = vec![TransferId(0x1_0000)]; // the load onto CARD
    for n in 1..=11u128 {
        let (debit, credit) = if n % 3 == 0 {
            (SHOP, CARD)
        } else {
            (CARD, SHOP)
        };
        ids.push(
            created(
                &mut tx,
                TransferRequest::single(TransferId(n), debit, credit, 5, EUR),
            )
            .id,
        );
    }
    created(
        &mut tx,
        TransferRequest::single(TransferId(99), CARD2, SHOP, 5, EUR),
    );
    tx.commit().unwrap();

    let mut reader = fx.store.reader().unwrap();
    for newest_first in [false, true] {
        let mut seen = Vec::new();
        let mut page = PageRequest {
            after: None,
            limit: 5,
            newest_first,
        };
        loop {
            let got = reader.account_transfers(CARD, &page).unwrap();
            assert!(got.transfers.len() <= 5);
            seen.extend(got.transfers.iter().map(|t| t.id));
            match got.next {
                Some(cursor) => page.after = Some(cursor),
                None => break,
            }
        }
        let mut expected = ids.clone();
        if newest_first {
            expected.reverse();
        }
        assert_eq!(seen, expected);
    }
    let empty = reader
        .account_transfers(
            CARD,
            &PageRequest {
                after: Some(Cursor(u64::MAX >> 1)),
                ..PageRequest::first(5)
            },
        )
        .unwrap();
    assert_eq!((empty.transfers.len(), empty.next), (0, None));
    assert_eq!(
        reader
            .account_transfers(AccountId(0x999), &PageRequest::latest(0))
            .unwrap()
            .transfers,
        vec![]
    );
}

#[test]
fn reader_sees_only_committed_state() {
    let mut fx = Fixture::new();
    let mut reader = fx.store.reader().unwrap();
    let mut tx = fx.store.transaction().unwrap();
    created(
        &mut tx,
        TransferRequest::single(TransferId(1), CARD, SHOP, 10, EUR),
    );
    assert_eq!(reader.get_transfer(TransferId(1)).unwrap(), None);
    tx.commit().unwrap();
    assert_eq!(
        reader
            .get_transfer(TransferId(1))
            .unwrap()
            .map(|t| t.amount),
        Some(10)
    );
    assert_consistent(&mut reader);
}

#[test]
fn timestamps_are_unique_and_increasing() {
    let mut fx = Fixture::new();
    let mut last = 0;
    for round in 0..3u128 {
        let mut tx = fx.store.transaction().unwrap();
        for n in 0..5 {
            let t = created(
                &mut tx,
                TransferRequest::single(TransferId(round * 10 + n + 1), CARD, SHOP, 1, EUR),
            );
            assert!(t.timestamp > last);
            last = t.timestamp;
        }
        tx.commit().unwrap();
    }
}

#[test]
fn a_transaction_with_a_failed_write_never_commits() {
    let mut fx = Fixture::new();
    let tx = fx.store.transaction().unwrap();
    inject_failure(&tx, 13);
    tx.commit().unwrap();

    let mut tx = fx.store.transaction().unwrap();
    created(
        &mut tx,
        TransferRequest::single(TransferId(1), CARD, SHOP, 5, EUR),
    );
    let err = tx
        .create_transfer(&TransferRequest::single(TransferId(2), CARD, SHOP, 13, EUR))
        .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    // The caller ignores the error and commits: refused, all rolled back.
    assert!(matches!(tx.commit(), Err(ledger::StoreError::Poisoned)));
    let mut reader = fx.store.reader().unwrap();
    assert_eq!(reader.get_transfer(TransferId(1)).unwrap(), None);
    assert_eq!(reader.get_transfer(TransferId(2)).unwrap(), None);
    assert_eq!(reader.balances(CARD).unwrap().unwrap().debits_posted, 0);
    assert_consistent(&mut reader);
}

#[test]
fn unresolved_holds_are_listed_for_expiry() {
    let mut fx = Fixture::new();
    let mut tx = fx.store.transaction().unwrap();
    let holds: Vec<_> = (1..=6u128)
        .map(|n| {
            created(
                &mut tx,
                TransferRequest::pending(TransferId(n), CARD, SHOP, 10, EUR),
            )
        })
        .collect();
    created(
        &mut tx,
        TransferRequest::post(TransferId(11), holds[1].id, 5),
    );
    created(&mut tx, TransferRequest::void(TransferId(12), holds[3].id));
    let cutoff = holds[4].timestamp; // holds 0..=3 are older
    let mut seen = Vec::new();
    let mut page = PageRequest::first(1);
    loop {
        let got = tx.pending_transfers(cutoff, &page).unwrap();
        seen.extend(got.transfers.iter().map(|t| t.id));
        match got.next {
            Some(c) => page.after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, [holds[0].id, holds[2].id]);
    let latest = tx
        .pending_transfers(u64::MAX, &PageRequest::latest(10))
        .unwrap();
    let ids: Vec<_> = latest.transfers.iter().map(|t| t.id).collect();
    assert_eq!(ids, [holds[5].id, holds[4].id, holds[2].id, holds[0].id]);
    assert_eq!(latest.next, None);
}
