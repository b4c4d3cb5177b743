//! Two sales racing for the last counted unit, over one real SQLite file
//! opened by two connections (as two back office processes would): each
//! had the unit when its line was added, both start paying at once, and
//! exactly one may pay. A declined payment gives its hold back.

use merchant::modules::catalog::{self, NewItem};
use merchant::modules::orders::{self, Kind, Outcome, PaymentStatus, Status};
use merchant::modules::{self, SalesError};
use merchant::store::{Store, unix_now};
use std::sync::{Arc, Barrier};

const SKU: &str = "SKU-LAST-ONE";

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, &modules::migrations()).unwrap()
}

/// A sale of one `SKU`; its id.
fn sale(store: &Store, item: i64) -> i64 {
    store
        .write(|tx| {
            let order = orders::create(tx, Kind::Retail, "carl", unix_now())?;
            orders::add_item(tx, order, item, 1, "carl", unix_now(), "2026-01-01")?;
            Ok::<_, SalesError>(order)
        })
        .unwrap()
}

fn stock(store: &Store) -> (i64, i64) {
    store
        .read(|c| {
            let item = catalog::by_code(c, SKU).unwrap().unwrap();
            Ok((item.stock.unwrap(), catalog::held(c, item.id).unwrap()))
        })
        .unwrap()
}

fn record(store: &Store, payment: i64, status: PaymentStatus) {
    let outcome = Outcome {
        status: Some(status),
        ..Outcome::default()
    };
    store
        .write(|tx| orders::record_outcome(tx, payment, &outcome, "carl", unix_now()))
        .unwrap();
}

#[test]
fn of_two_sales_racing_for_the_last_unit_exactly_one_pays() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let item = first
        .write(|tx| {
            catalog::add(
                tx,
                &NewItem {
                    kind: Kind::Retail,
                    code: SKU,
                    name: "Last mug",
                    price: 1_500,
                    currency: 156,
                    barcode: None,
                    stock: Some(1),
                    low_stock: None,
                    valid_on: None,
                },
                "owner",
                unix_now(),
            )
        })
        .unwrap();
    // Each sale took the unit when its line was added: it was in stock.
    let orders = [sale(&first, item), sale(&first, item)];
    let stores = [Arc::new(first), Arc::new(open(dir.path()))];

    // Both start paying at once, each on its own connection.
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = stores
        .iter()
        .zip(orders)
        .map(|(store, order)| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .write(|tx| orders::start_payment(tx, order, None, "POI-1", "carl", unix_now()))
            })
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let (started, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    assert_eq!(started.len(), 1, "exactly one payment starts: {refused:?}");
    let why = match &refused[0] {
        Err(SalesError::Refused(why)) => why.clone(),
        other => panic!("refused as short of stock, not {other:?}"),
    };
    assert!(why.contains(SKU) && why.contains("0 left"), "{why}");
    assert_eq!(stock(&stores[0]), (1, 1), "the unit is held, not yet taken");

    // The one started is approved: the unit is taken for good.
    let started = started.into_iter().next().unwrap().unwrap();
    record(&stores[1], started.payment_id, PaymentStatus::Approved);
    assert_eq!(stock(&stores[0]), (0, 0));
    let loser = orders.into_iter().find(|o| *o != started.order_id).unwrap();
    let statuses: Vec<Status> = orders
        .iter()
        .map(|o| {
            stores[0]
                .read(|c| Ok(orders::order(c, *o).unwrap().unwrap().status))
                .unwrap()
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == Status::Paid).count(),
        1,
        "{statuses:?}"
    );
    // The other cannot be paid later either: nothing is left.
    let again = stores[0].write(|tx| orders::start_payment(tx, loser, None, "POI-1", "carl", 0));
    assert!(
        matches!(&again, Err(SalesError::Refused(why)) if why.contains(SKU)),
        "{again:?}"
    );
}

#[test]
fn a_declined_payment_gives_its_hold_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let item = store
        .write(|tx| {
            catalog::add(
                tx,
                &NewItem {
                    kind: Kind::Retail,
                    code: SKU,
                    name: "Last mug",
                    price: 1_500,
                    currency: 156,
                    barcode: None,
                    stock: Some(1),
                    low_stock: None,
                    valid_on: None,
                },
                "owner",
                unix_now(),
            )
        })
        .unwrap();
    let (a, b) = (sale(&store, item), sale(&store, item));
    let pay = |order| {
        store.write(|tx| orders::start_payment(tx, order, None, "POI-1", "carl", unix_now()))
    };
    let first = pay(a).unwrap();
    assert_eq!(stock(&store), (1, 1));
    // While held, the unit cannot go on a new sale either.
    let third = store.write(|tx| {
        let order = orders::create(tx, Kind::Retail, "carl", unix_now())?;
        orders::add_item(tx, order, item, 1, "carl", unix_now(), "2026-01-01")
    });
    assert!(
        matches!(&third, Err(SalesError::Refused(why)) if why.contains("only 0 in stock")),
        "{third:?}"
    );
    assert!(pay(b).is_err(), "held by the first sale");
    // Declined: the hold goes, the stock stays, the other sale pays.
    record(&store, first.payment_id, PaymentStatus::Declined);
    assert_eq!(stock(&store), (1, 0));
    let second = pay(b).unwrap();
    // A failure that may have moved money (unknown) keeps the hold.
    record(&store, second.payment_id, PaymentStatus::Unknown);
    assert_eq!(stock(&store), (1, 1));
    record(&store, second.payment_id, PaymentStatus::Approved);
    assert_eq!(stock(&store), (0, 0));
    let audited: i64 = store
        .read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM audit_log WHERE action = 'order.stock_release'",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(audited, 1);
}
