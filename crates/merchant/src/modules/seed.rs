//! The demonstration data of `posnet merchant seed --demo`: a few shop
//! items with barcodes and stock, six restaurant tables and a menu, clinic
//! fees, and two tickets (an event and a hotel night). Adding it again
//! adds nothing: items are known by code, tables by name.

use super::SalesError;
use super::catalog::{self, NewItem};
use super::orders::Kind;
use super::restaurant;
use crate::store::Store;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

/// What a seeding added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Seeded {
    /// Catalog items added.
    pub items: u32,
    /// Tables added.
    pub tables: u32,
}

/// `(kind, code, name, price in minor units, barcode, stock)`.
type Demo = (
    Kind,
    &'static str,
    &'static str,
    i64,
    Option<&'static str>,
    Option<i64>,
);

const ITEMS: &[Demo] = &[
    (
        Kind::Retail,
        "SKU-TEA-100",
        "Green tea 100 g",
        1_250,
        Some("6901234567892"),
        Some(40),
    ),
    (
        Kind::Retail,
        "SKU-MUG-01",
        "Ceramic mug",
        3_500,
        Some("6901234567908"),
        Some(12),
    ),
    (
        Kind::Retail,
        "SKU-HONEY-250",
        "Honey 250 g",
        2_880,
        Some("6901234567915"),
        Some(3),
    ),
    (
        Kind::Retail,
        "SKU-BAG",
        "Paper bag",
        50,
        Some("6901234567922"),
        Some(500),
    ),
    (
        Kind::Menu,
        "MENU-NOODLES",
        "Beef noodle soup",
        3_800,
        None,
        None,
    ),
    (
        Kind::Menu,
        "MENU-DUMPLINGS",
        "Dumplings (8)",
        2_600,
        None,
        None,
    ),
    (Kind::Menu, "MENU-RICE", "Fried rice", 2_200, None, None),
    (
        Kind::Menu,
        "MENU-GREENS",
        "Stir-fried greens",
        1_800,
        None,
        None,
    ),
    (
        Kind::Menu,
        "MENU-TEA",
        "Pot of jasmine tea",
        1_500,
        None,
        None,
    ),
    (Kind::Menu, "MENU-BEER", "Beer", 1_200, None, None),
    (Kind::Fee, "FEE-CONSULT", "Consultation", 8_000, None, None),
    (Kind::Fee, "FEE-BLOOD", "Blood test", 12_000, None, None),
    (Kind::Fee, "FEE-XRAY", "X-ray", 25_000, None, None),
];

/// Tickets: `(code, name, price, days from today)`.
const TICKETS: &[(&str, &str, i64, i64)] = &[
    ("TICKET-CONCERT", "Concert, stalls", 18_000, 30),
    ("NIGHT-DOUBLE", "Double room, one night", 45_000, 14),
];

/// Tables 1 to 6: `(name, seats)`.
const TABLES: &[(&str, i64)] = &[("1", 2), ("2", 2), ("3", 4), ("4", 4), ("5", 6), ("6", 8)];

/// `today` (`YYYY-MM-DD`) plus `days`.
fn days_after(today: &str, days: i64) -> Result<String, SalesError> {
    let start = host::api::parse_date(today)
        .ok_or_else(|| SalesError::Refused(format!("date {today:?}")))?;
    Ok(crate::reports::utc_date(start + days * 86_400))
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool, SalesError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM restaurant_tables WHERE name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Adds the demonstration data in `currency` that is not there yet, in one
/// transaction, audited under `actor`.
pub fn demo(store: &Store, currency: u16, actor: &str, now: i64) -> Result<Seeded, SalesError> {
    let today = crate::reports::utc_date(now);
    store.write(|tx| {
        let mut seeded = Seeded::default();
        let tickets: Vec<(Kind, &str, &str, i64, Option<String>)> = TICKETS
            .iter()
            .map(|(code, name, price, days)| {
                Ok((
                    Kind::Ticket,
                    *code,
                    *name,
                    *price,
                    Some(days_after(&today, *days)?),
                ))
            })
            .collect::<Result<_, SalesError>>()?;
        let items =
            ITEMS
                .iter()
                .map(|(kind, code, name, price, barcode, stock)| {
                    (*kind, *code, *name, *price, None, *barcode, *stock)
                })
                .chain(tickets.into_iter().map(|(kind, code, name, price, day)| {
                    (kind, code, name, price, day, None, None)
                }));
        for (kind, code, name, price, valid_on, barcode, stock) in items {
            if catalog::by_code(tx, code)?.is_some() {
                continue;
            }
            let new = NewItem {
                kind,
                code,
                name,
                price,
                currency,
                barcode,
                stock,
                low_stock: stock.map(|_| 5),
                valid_on: valid_on.as_deref(),
            };
            catalog::add(tx, &new, actor, now)?;
            seeded.items += 1;
        }
        for (name, seats) in TABLES {
            if !table_exists(tx, name)? {
                restaurant::add_table(tx, name, *seats, actor, now)?;
                seeded.tables += 1;
            }
        }
        Ok(seeded)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_twice_adds_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &super::super::migrations()).unwrap();
        let now = crate::store::unix_now();
        let first = demo(&store, 156, "cli", now).unwrap();
        assert_eq!(
            first,
            Seeded {
                items: (ITEMS.len() + TICKETS.len()) as u32,
                tables: 6
            }
        );
        assert_eq!(demo(&store, 156, "cli", now).unwrap(), Seeded::default());
        let (items, tables, audited): (i64, i64, i64) = store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT count(*) FROM catalog_items), (SELECT count(*) FROM restaurant_tables),
                            (SELECT count(*) FROM audit_log)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?)
            })
            .unwrap();
        assert_eq!((items, tables), (first.items.into(), 6));
        assert_eq!(audited, i64::from(first.items + first.tables));
        // Tickets are dated ahead of today: they can be sold.
        let today = crate::reports::utc_date(now);
        let night = store
            .read(|c| Ok(catalog::by_code(c, "NIGHT-DOUBLE")))
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(night.valid_on.unwrap() > today);
        assert_eq!(days_after("2026-12-25", 14).unwrap(), "2027-01-08");
    }
}
