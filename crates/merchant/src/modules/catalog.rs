//! What can be sold: shop items (SKU, barcode, counted stock), menu
//! items, clinic fees, and tickets or hotel nights (a date after which
//! they cannot be sold). One table for every scenario
//! (`catalog_items`, in [`super::orders::MIGRATIONS`]).

use super::orders::Kind;
use super::{SalesError, clean, date, refused};
use crate::audit::{self, Change};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::json;

/// An item of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Row id.
    pub id: i64,
    /// Its scenario.
    pub kind: Kind,
    /// SKU of a shop item; a unique code otherwise.
    pub code: String,
    /// As shown and printed on the order.
    pub name: String,
    /// Minor units.
    pub price: i64,
    /// ISO 4217 numeric.
    pub currency: u16,
    /// EAN/UPC of a shop item.
    pub barcode: Option<String>,
    /// Counted stock (shop items).
    pub stock: Option<i64>,
    /// Stock at or under which the item is listed as low.
    pub low_stock: Option<i64>,
    /// Event date or hotel night, `YYYY-MM-DD`.
    pub valid_on: Option<String>,
    /// Still sold.
    pub active: bool,
}

/// An item to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem<'a> {
    /// Its scenario.
    pub kind: Kind,
    /// SKU or code (unique).
    pub code: &'a str,
    /// Name.
    pub name: &'a str,
    /// Minor units.
    pub price: i64,
    /// ISO 4217 numeric.
    pub currency: u16,
    /// Barcode (shop items).
    pub barcode: Option<&'a str>,
    /// Opening stock (shop items; counted when given).
    pub stock: Option<i64>,
    /// Low-stock level (shop items).
    pub low_stock: Option<i64>,
    /// Event date or night (tickets: required).
    pub valid_on: Option<&'a str>,
}

/// Largest price accepted, minor units (bounds totals far below overflow).
pub const MAX_PRICE: i64 = 1_000_000_000;
/// Largest stock count accepted.
pub const MAX_STOCK: i64 = 1_000_000;

const COLUMNS: &str =
    "id, kind, code, name, price, currency, barcode, stock, low_stock, valid_on, active";

fn read_item(r: &rusqlite::Row<'_>) -> rusqlite::Result<Item> {
    let kind: String = r.get(1)?;
    Ok(Item {
        id: r.get(0)?,
        kind: Kind::from_name(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                1,
                rusqlite::types::Type::Text,
                format!("unknown item kind {kind:?}").into(),
            )
        })?,
        code: r.get(2)?,
        name: r.get(3)?,
        price: r.get(4)?,
        currency: r.get(5)?,
        barcode: r.get(6)?,
        stock: r.get(7)?,
        low_stock: r.get(8)?,
        valid_on: r.get(9)?,
        active: r.get(10)?,
    })
}

/// Item `id`.
pub fn item(conn: &Connection, id: i64) -> Result<Option<Item>, SalesError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM catalog_items WHERE id = ?1"),
            [id],
            read_item,
        )
        .optional()?)
}

/// The item with `barcode`.
pub fn by_barcode(conn: &Connection, barcode: &str) -> Result<Option<Item>, SalesError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM catalog_items WHERE barcode = ?1"),
            [barcode.trim()],
            read_item,
        )
        .optional()?)
}

/// The item with `code`.
pub fn by_code(conn: &Connection, code: &str) -> Result<Option<Item>, SalesError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM catalog_items WHERE code = ?1"),
            [code],
            read_item,
        )
        .optional()?)
}

/// Items of `kind` (every kind when none), by name; `active_only` leaves
/// out those no longer sold.
pub fn list(
    conn: &Connection,
    kind: Option<Kind>,
    active_only: bool,
) -> Result<Vec<Item>, SalesError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM catalog_items
         WHERE (?1 IS NULL OR kind = ?1) AND (?2 = 0 OR active = 1)
         ORDER BY kind, valid_on, name, id"
    ))?;
    let rows = stmt
        .query_map(params![kind.map(Kind::name), active_only], read_item)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Counted items at or under their low-stock level (zero when none is
/// set), lowest first.
pub fn low_stock(conn: &Connection) -> Result<Vec<Item>, SalesError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM catalog_items
         WHERE stock IS NOT NULL AND active = 1 AND stock <= coalesce(low_stock, 0)
         ORDER BY stock, name"
    ))?;
    let rows = stmt.query_map([], read_item)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The currency new items get by default: the latest item's, else that of
/// the latest transaction from the host, else CNY.
pub fn default_currency(conn: &Connection) -> Result<u16, SalesError> {
    Ok(conn
        .query_row(
            "SELECT currency FROM (
                 SELECT currency, 1 AS o, id FROM catalog_items
                 UNION ALL SELECT currency, 2 AS o, id FROM transactions
             ) ORDER BY o, id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(156))
}

fn check_count(field: &str, value: Option<i64>, max: i64) -> Result<(), SalesError> {
    match value {
        Some(v) if !(0..=max).contains(&v) => refused(format!("{field}: 0 to {max}")),
        _ => Ok(()),
    }
}

/// Adds `new` to the catalog; returns its id. A ticket needs its date;
/// barcodes and stock belong to shop items.
pub fn add(conn: &Connection, new: &NewItem<'_>, actor: &str, now: i64) -> Result<i64, SalesError> {
    let code = clean("code", new.code, false)?.unwrap_or_default();
    let name = clean("name", new.name, false)?.unwrap_or_default();
    let barcode = clean("barcode", new.barcode.unwrap_or(""), true)?;
    if barcode
        .as_deref()
        .is_some_and(|b| !b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
    {
        return refused("barcode: digits and letters only");
    }
    if !(0..=MAX_PRICE).contains(&new.price) {
        return refused(format!("price: 0 to {MAX_PRICE} minor units"));
    }
    check_count("stock", new.stock, MAX_STOCK)?;
    check_count("low stock", new.low_stock, MAX_STOCK)?;
    let retail = new.kind == Kind::Retail;
    if !retail && (barcode.is_some() || new.stock.is_some() || new.low_stock.is_some()) {
        return refused("barcodes and stock are for shop items");
    }
    let valid_on = match (new.kind, new.valid_on.filter(|d| !d.trim().is_empty())) {
        (Kind::Ticket, Some(d)) => Some(date("date", d)?),
        (Kind::Ticket, None) => return refused("a ticket or night needs its date"),
        (_, Some(_)) => return refused("only tickets and nights have a date"),
        (_, None) => None,
    };
    if by_code(conn, &code)?.is_some() {
        return refused(format!("code {code:?} is taken"));
    }
    if let Some(b) = &barcode
        && by_barcode(conn, b)?.is_some()
    {
        return refused(format!("barcode {b:?} is taken"));
    }
    conn.execute(
        "INSERT INTO catalog_items (kind, code, name, price, currency, barcode, stock, low_stock, valid_on, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            new.kind.name(),
            code,
            name,
            new.price,
            new.currency,
            barcode,
            new.stock,
            new.low_stock,
            valid_on,
            now
        ],
    )?;
    let id = conn.last_insert_rowid();
    audit::append(
        conn,
        &Change {
            actor,
            action: "catalog.add",
            subject: &format!("item:{code}"),
            before: None,
            after: Some(json!({
                "kind": new.kind.name(), "name": name, "price": new.price, "currency": new.currency,
                "barcode": barcode, "stock": new.stock, "low_stock": new.low_stock, "valid_on": valid_on,
            })),
        },
        now,
    )?;
    Ok(id)
}

/// A change to an item: what is given changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ItemChange {
    /// New price, minor units.
    pub price: Option<i64>,
    /// New counted stock (shop items).
    pub stock: Option<i64>,
    /// New low-stock level (shop items).
    pub low_stock: Option<i64>,
    /// Sold or not.
    pub active: Option<bool>,
}

/// Changes item `id`. Lines already on orders keep the price they had.
pub fn update(
    conn: &Connection,
    id: i64,
    change: &ItemChange,
    actor: &str,
    now: i64,
) -> Result<Item, SalesError> {
    let before = item(conn, id)?.ok_or_else(|| SalesError::NotFound(format!("item {id}")))?;
    if change.price.is_some_and(|p| !(0..=MAX_PRICE).contains(&p)) {
        return refused(format!("price: 0 to {MAX_PRICE} minor units"));
    }
    check_count("stock", change.stock, MAX_STOCK)?;
    check_count("low stock", change.low_stock, MAX_STOCK)?;
    if before.kind != Kind::Retail && (change.stock.is_some() || change.low_stock.is_some()) {
        return refused("stock is counted for shop items only");
    }
    conn.execute(
        "UPDATE catalog_items SET price = coalesce(?2, price), stock = coalesce(?3, stock),
             low_stock = coalesce(?4, low_stock), active = coalesce(?5, active)
         WHERE id = ?1",
        params![
            id,
            change.price,
            change.stock,
            change.low_stock,
            change.active
        ],
    )?;
    let after = item(conn, id)?.ok_or_else(|| SalesError::NotFound(format!("item {id}")))?;
    let view = |i: &Item| json!({ "price": i.price, "stock": i.stock, "low_stock": i.low_stock, "active": i.active });
    audit::append(
        conn,
        &Change {
            actor,
            action: "catalog.update",
            subject: &format!("item:{}", before.code),
            before: Some(view(&before)),
            after: Some(view(&after)),
        },
        now,
    )?;
    Ok(after)
}

/// Counted stock of item `id` held for orders being paid
/// ([`hold_stock`]).
pub fn held(conn: &Connection, id: i64) -> Result<i64, SalesError> {
    Ok(conn.query_row(
        "SELECT coalesce(sum(quantity), 0) FROM stock_holds WHERE item_id = ?1",
        [id],
        |r| r.get(0),
    )?)
}

/// What of `item` another order may still take: its counted stock less
/// what is held for orders being paid; none when not counted.
pub fn available(conn: &Connection, item: &Item) -> Result<Option<i64>, SalesError> {
    match item.stock {
        Some(stock) => Ok(Some(stock.saturating_sub(held(conn, item.id)?).max(0))),
        None => Ok(None),
    }
}

/// Holds the counted items of order `order_id` for its payment, unless
/// held already (a split order holds from its first part's payment on).
/// Called in the immediate transaction that writes the payment, so no
/// other connection checks or holds stock in between: refused, naming
/// the SKU, when an item is short. Returns what was held, for the audit.
pub(super) fn hold_stock(
    conn: &Connection,
    order_id: i64,
) -> Result<Vec<serde_json::Value>, SalesError> {
    let holding: i64 = conn.query_row(
        "SELECT count(*) FROM stock_holds WHERE order_id = ?1",
        [order_id],
        |r| r.get(0),
    )?;
    if holding > 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT i.id, i.code, i.name, i.stock, sum(l.quantity),
                (SELECT coalesce(sum(h.quantity), 0) FROM stock_holds h WHERE h.item_id = i.id)
         FROM order_lines l
         JOIN catalog_items i ON i.id = l.item_id
         WHERE l.order_id = ?1 AND i.stock IS NOT NULL
         GROUP BY i.id ORDER BY i.id",
    )?;
    let counted: Vec<(i64, String, String, i64, i64, i64)> = stmt
        .query_map([order_id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut held = Vec::with_capacity(counted.len());
    for (id, code, name, stock, wanted, others) in counted {
        let left = stock.saturating_sub(others).max(0);
        if wanted > left {
            return refused(format!(
                "{code} ({name}): {wanted} on this order, {left} left in stock{}: \
                 change the order before paying",
                if others > 0 {
                    format!(" ({others} held for orders being paid)")
                } else {
                    String::new()
                }
            ));
        }
        conn.execute(
            "INSERT INTO stock_holds (order_id, item_id, quantity) VALUES (?1, ?2, ?3)",
            params![order_id, id, wanted],
        )?;
        held.push(json!({ "item": code, "held": wanted, "stock": stock }));
    }
    Ok(held)
}

/// Releases what is held for order `order_id` (its payment was declined or
/// failed with nothing paid, or it was cancelled); returns what was
/// released, for the audit.
pub(super) fn release_stock(
    conn: &Connection,
    order_id: i64,
) -> Result<Vec<serde_json::Value>, SalesError> {
    let mut stmt = conn.prepare(
        "SELECT i.code, h.quantity FROM stock_holds h JOIN catalog_items i ON i.id = h.item_id
         WHERE h.order_id = ?1 ORDER BY i.id",
    )?;
    let released: Vec<serde_json::Value> = stmt
        .query_map([order_id], |r| {
            Ok(json!({ "item": r.get::<_, String>(0)?, "released": r.get::<_, i64>(1)? }))
        })?
        .collect::<Result<_, _>>()?;
    conn.execute("DELETE FROM stock_holds WHERE order_id = ?1", [order_id])?;
    Ok(released)
}

/// Takes the counted items of order `order_id` off the stock (called in
/// the transaction that marks the order paid); returns what changed, for
/// the audit row.
pub(super) fn take_stock(
    conn: &Connection,
    order_id: i64,
) -> Result<Vec<serde_json::Value>, SalesError> {
    let mut stmt = conn.prepare(
        "SELECT i.id, i.code, i.stock, sum(l.quantity) FROM order_lines l
         JOIN catalog_items i ON i.id = l.item_id
         WHERE l.order_id = ?1 AND i.stock IS NOT NULL
         GROUP BY i.id ORDER BY i.id",
    )?;
    let counted: Vec<(i64, String, i64, i64)> = stmt
        .query_map([order_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut changes = Vec::with_capacity(counted.len());
    for (id, code, stock, sold) in counted {
        // The card was charged: the stock goes down even below zero (more
        // was sold than was counted), for the low-stock list to show.
        let after = stock.saturating_sub(sold);
        conn.execute(
            "UPDATE catalog_items SET stock = ?2 WHERE id = ?1",
            params![id, after],
        )?;
        changes.push(json!({ "item": code, "before": stock, "after": after }));
    }
    // Taken for good: no longer held.
    conn.execute("DELETE FROM stock_holds WHERE order_id = ?1", [order_id])?;
    Ok(changes)
}
