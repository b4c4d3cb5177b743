//! Orders, shared by every scenario: lines (an item, a quantity, a unit
//! price in minor units, a currency), a total, a status (open, partly
//! paid, paid, cancelled), optional split parts, and the payments taken
//! for them.
//!
//! An order's total is [`total`] of its lines, computed here only and
//! stored on the order each time its lines change ([`refresh_total`]).
//! Lines change only while nothing is paid, split or being paid. An order
//! is paid by one payment of what is outstanding, or by one payment per
//! split part; a payment in flight (or whose outcome is unknown) blocks
//! every other payment of the same order, so nothing is paid twice.
//! Counted stock is held for the order when its first payment starts
//! ([`start_payment`], refused when another order holds or took what is
//! left), released when that payment is declined or fails with nothing
//! paid, and taken off for good when, and only when, the order becomes
//! paid, in the transaction that marks it paid ([`record_outcome`]).

use super::{SalesError, refused};
use crate::audit::{self, Change};
use ledger::Migrations;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::json;

/// The shared tables: catalog, orders, lines, parts, payments.
pub const MIGRATIONS: Migrations = Migrations {
    component: "orders",
    steps: &[
        r#"
-- What can be sold. `kind` says which scenario sells it. `code` is the SKU
-- of a shop item, a short unique code otherwise. `stock` is counted for
-- shop items only (NULL: not counted) and may go below zero when a paid
-- order took more than was counted. `valid_on` is a ticket's event date
-- or hotel night (YYYY-MM-DD); such an item cannot be sold after it.
CREATE TABLE catalog_items (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('retail', 'menu', 'fee', 'ticket')),
    code       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    price      INTEGER NOT NULL CHECK (price >= 0),
    currency   INTEGER NOT NULL,
    barcode    TEXT UNIQUE,
    stock      INTEGER,
    low_stock  INTEGER,
    valid_on   TEXT,
    active     INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX catalog_items_kind ON catalog_items (kind, name);

-- `total` is orders::total of the lines, `paid` the sum of approved payments.
CREATE TABLE orders (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('retail', 'menu', 'fee', 'ticket')),
    status     TEXT NOT NULL CHECK (status IN ('open', 'partly_paid', 'paid', 'cancelled')),
    currency   INTEGER,
    total      INTEGER NOT NULL DEFAULT 0 CHECK (total >= 0),
    paid       INTEGER NOT NULL DEFAULT 0 CHECK (paid >= 0 AND paid <= total),
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    closed_at  INTEGER
) STRICT;
CREATE INDEX orders_status ON orders (status, id);

CREATE TABLE order_lines (
    id         INTEGER PRIMARY KEY,
    order_id   INTEGER NOT NULL REFERENCES orders (id),
    item_id    INTEGER NOT NULL REFERENCES catalog_items (id),
    name       TEXT NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    unit_price INTEGER NOT NULL CHECK (unit_price >= 0),
    currency   INTEGER NOT NULL
) STRICT;
CREATE INDEX order_lines_order ON order_lines (order_id, id);

-- A split bill: each part is paid by a payment of its own. A part split by
-- items names its lines; a part of an equal split names none.
CREATE TABLE order_parts (
    id       INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES orders (id),
    number   INTEGER NOT NULL CHECK (number > 0),
    amount   INTEGER NOT NULL CHECK (amount > 0),
    paid     INTEGER NOT NULL DEFAULT 0 CHECK (paid IN (0, 1)),
    UNIQUE (order_id, number)
) STRICT;

CREATE TABLE order_part_lines (
    part_id INTEGER NOT NULL REFERENCES order_parts (id),
    line_id INTEGER NOT NULL UNIQUE REFERENCES order_lines (id),
    PRIMARY KEY (part_id, line_id)
) STRICT;

-- A payment asked of a paired terminal (`terminal`, its POIID). Written
-- before the terminal is asked (`pending`), finished with its outcome.
-- `acquirer_terminal_id`, `batch`, `stan`, `rrn` come from the terminal's
-- answer (AcquirerPOIID, POITransactionID BBBBBB.SSSSSS,
-- AcquirerTransactionID) and find the host's transaction when it is
-- reported (order_payment_matches).
CREATE TABLE order_payments (
    id                   INTEGER PRIMARY KEY,
    order_id             INTEGER NOT NULL REFERENCES orders (id),
    part_id              INTEGER REFERENCES order_parts (id),
    amount               INTEGER NOT NULL CHECK (amount > 0),
    currency             INTEGER NOT NULL,
    terminal             TEXT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'declined', 'failed', 'unknown')),
    reason               TEXT,
    service_id           TEXT,
    poi_transaction_id   TEXT,
    acquirer_terminal_id TEXT,
    batch                INTEGER,
    stan                 INTEGER,
    rrn                  TEXT,
    approval_code        TEXT,
    masked_pan           TEXT,
    host_transaction_id  INTEGER REFERENCES transactions (id),
    started_by           TEXT NOT NULL,
    started_at           INTEGER NOT NULL,
    finished_at          INTEGER
) STRICT;
CREATE INDEX order_payments_order ON order_payments (order_id, id);
CREATE INDEX order_payments_poi ON order_payments (acquirer_terminal_id, batch, stan);
-- One payment in flight (or of unknown outcome) per order at most.
CREATE UNIQUE INDEX order_payments_in_flight ON order_payments (order_id)
    WHERE status IN ('pending', 'unknown');

-- The host's transaction of an approved payment: same terminal (field 41),
-- and the same batch and trace number, or the same RRN.
CREATE VIEW order_payment_matches AS
SELECT p.id AS payment_id, t.id AS transaction_id
FROM order_payments p
JOIN transactions t
  ON t.terminal_id = p.acquirer_terminal_id
 AND t.kind IN ('sale', 'offline_sale')
 AND ((t.batch = p.batch AND t.stan = p.stan) OR (p.rrn IS NOT NULL AND t.rrn = p.rrn))
WHERE p.status = 'approved';

-- A transaction the host reports (webhook or backfill) is linked to the
-- payment it is, in the transaction that records it.
CREATE TRIGGER order_payments_link AFTER INSERT ON transactions
WHEN NEW.kind IN ('sale', 'offline_sale')
BEGIN
    UPDATE order_payments SET host_transaction_id = NEW.id
    WHERE host_transaction_id IS NULL
      AND id IN (SELECT payment_id FROM order_payment_matches WHERE transaction_id = NEW.id);
END;
"#,
        r#"
-- Counted stock held for an order from the moment its first payment
-- starts (catalog::hold_stock, in the immediate transaction that writes
-- the payment): what is held is not available to another order. Released
-- when that payment is declined or fails with nothing paid, taken off
-- `catalog_items.stock` for good when the order is paid.
CREATE TABLE stock_holds (
    order_id INTEGER NOT NULL REFERENCES orders (id),
    item_id  INTEGER NOT NULL REFERENCES catalog_items (id),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, item_id)
) STRICT;
CREATE INDEX stock_holds_item ON stock_holds (item_id);
"#,
        r#"
-- Cashier devices (the terminal's phone app) allowed to use the back
-- office's API (devices.rs): only the SHA-256 of a token is kept.
CREATE TABLE devices (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    last_used_at INTEGER
) STRICT;

-- A payment taken by a device rather than by the back office: the device
-- reports its outcome; an approval stays `unknown` (awaiting the host's
-- confirmation) until the host's transaction is found (confirm_reported).
ALTER TABLE order_payments ADD COLUMN device INTEGER REFERENCES devices (id);
"#,
        r#"
-- A refund (part or whole) or a same-day reversal of an approved payment,
-- asked of the payment's terminal by an owner with the terminal's
-- supervisor code (refunds.rs). Written before the terminal is asked
-- (`pending`), finished with its outcome, as payments are.
CREATE TABLE order_refunds (
    id                 INTEGER PRIMARY KEY,
    order_id           INTEGER NOT NULL REFERENCES orders (id),
    payment_id         INTEGER NOT NULL REFERENCES order_payments (id),
    kind               TEXT NOT NULL CHECK (kind IN ('refund', 'reversal')),
    amount             INTEGER NOT NULL CHECK (amount > 0),
    currency           INTEGER NOT NULL,
    terminal           TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'declined', 'failed', 'unknown')),
    reason             TEXT,
    service_id         TEXT,
    poi_transaction_id TEXT,
    started_by         TEXT NOT NULL,
    started_at         INTEGER NOT NULL,
    finished_at        INTEGER
) STRICT;
CREATE INDEX order_refunds_order ON order_refunds (order_id, id);
-- One refund or reversal of a payment in flight (or unknown) at most.
CREATE UNIQUE INDEX order_refunds_in_flight ON order_refunds (payment_id)
    WHERE status IN ('pending', 'unknown');
"#,
    ],
};

/// Which scenario an order or a catalog item belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Shop items and sales.
    Retail,
    /// A restaurant's menu and table orders.
    Menu,
    /// A clinic's fees and patient bills.
    Fee,
    /// Event tickets and hotel nights.
    Ticket,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [Kind::Retail, Kind::Menu, Kind::Fee, Kind::Ticket];

    /// Its stored name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Retail => "retail",
            Kind::Menu => "menu",
            Kind::Fee => "fee",
            Kind::Ticket => "ticket",
        }
    }

    /// From its stored name.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// What an order of this kind is called.
    pub fn order_label(self) -> &'static str {
        match self {
            Kind::Retail => "Sale",
            Kind::Menu => "Table order",
            Kind::Fee => "Patient bill",
            Kind::Ticket => "Tickets",
        }
    }

    /// What an item of this kind is called.
    pub fn item_label(self) -> &'static str {
        match self {
            Kind::Retail => "Shop item",
            Kind::Menu => "Menu item",
            Kind::Fee => "Fee",
            Kind::Ticket => "Ticket or night",
        }
    }
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Nothing paid yet.
    Open,
    /// Some parts paid, not all.
    PartlyPaid,
    /// Its whole total paid.
    Paid,
    /// Given up before anything was paid.
    Cancelled,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 4] = [
        Status::Open,
        Status::PartlyPaid,
        Status::Paid,
        Status::Cancelled,
    ];

    /// Its stored name.
    pub fn name(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::PartlyPaid => "partly_paid",
            Status::Paid => "paid",
            Status::Cancelled => "cancelled",
        }
    }

    /// As shown.
    pub fn label(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::PartlyPaid => "partly paid",
            Status::Paid => "paid",
            Status::Cancelled => "cancelled",
        }
    }

    /// From its stored name.
    pub fn from_name(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The status of an order of `total` of which `paid` is paid.
    pub fn of(total: i64, paid: i64) -> Status {
        if paid <= 0 {
            Status::Open
        } else if paid < total {
            Status::PartlyPaid
        } else {
            Status::Paid
        }
    }
}

/// A line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// Row id.
    pub id: i64,
    /// The catalog item sold.
    pub item_id: i64,
    /// Its name when sold.
    pub name: String,
    /// How many.
    pub quantity: i64,
    /// Price of one, minor units.
    pub unit_price: i64,
    /// ISO 4217 numeric.
    pub currency: u16,
}

impl Line {
    /// `quantity × unit_price`, refused when it overflows.
    pub fn amount(&self) -> Result<i64, SalesError> {
        self.quantity
            .checked_mul(self.unit_price)
            .ok_or_else(|| SalesError::Refused(format!("line {:?}: amount too large", self.name)))
    }
}

/// The total of `lines`: the one place totals are computed.
pub fn total<'a>(lines: impl IntoIterator<Item = &'a Line>) -> Result<i64, SalesError> {
    lines.into_iter().try_fold(0i64, |sum, line| {
        sum.checked_add(line.amount()?)
            .ok_or_else(|| SalesError::Refused("order total too large".into()))
    })
}

/// `total` in `parts` parts that differ by one minor unit at most and sum
/// exactly to `total`: the remainder goes one unit each to the first parts.
pub fn split_equally(total: i64, parts: u32) -> Vec<i64> {
    let n = i64::from(parts.max(1));
    let (base, remainder) = (total / n, total % n);
    (0..n).map(|i| base + i64::from(i < remainder)).collect()
}

/// Most parts a bill may be split into.
pub const MAX_PARTS: u32 = 20;
/// Most of one item on one line.
pub const MAX_QUANTITY: i64 = 10_000;

/// An order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    /// Row id.
    pub id: i64,
    /// Its scenario.
    pub kind: Kind,
    /// Where it stands.
    pub status: Status,
    /// Its currency (that of its first line; none while empty).
    pub currency: Option<u16>,
    /// Minor units.
    pub total: i64,
    /// Approved payments, minor units.
    pub paid: i64,
    /// Who opened it.
    pub created_by: String,
    /// When, Unix seconds.
    pub created_at: i64,
    /// When it was paid or cancelled.
    pub closed_at: Option<i64>,
}

impl Order {
    /// What is left to pay.
    pub fn outstanding(&self) -> i64 {
        self.total - self.paid
    }
}

/// A part of a split bill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    /// Row id.
    pub id: i64,
    /// 1, 2, ...
    pub number: i64,
    /// Minor units.
    pub amount: i64,
    /// Whether its payment was approved.
    pub paid: bool,
    /// The lines it pays for (none for an equal split).
    pub lines: Vec<i64>,
}

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    /// Asked of the terminal; no outcome yet.
    Pending,
    /// The terminal approved it.
    Approved,
    /// The terminal (or the card's issuer) declined it.
    Declined,
    /// It was not carried out: not sent, or never received.
    Failed,
    /// Its answer was lost and the terminal could not be asked: do not
    /// take it again until known.
    Unknown,
}

impl PaymentStatus {
    /// Its stored name.
    pub fn name(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Approved => "approved",
            PaymentStatus::Declined => "declined",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Unknown => "unknown",
        }
    }

    /// From its stored name.
    pub fn from_name(name: &str) -> Option<PaymentStatus> {
        [
            PaymentStatus::Pending,
            PaymentStatus::Approved,
            PaymentStatus::Declined,
            PaymentStatus::Failed,
            PaymentStatus::Unknown,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// A payment of an order (or of one of its parts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payment {
    /// Row id.
    pub id: i64,
    /// The order.
    pub order_id: i64,
    /// The part, when it pays one.
    pub part_id: Option<i64>,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217 numeric.
    pub currency: u16,
    /// POIID of the terminal asked.
    pub terminal: String,
    /// Where it stands.
    pub status: PaymentStatus,
    /// The terminal's reason for a decline, or what failed.
    pub reason: Option<String>,
    /// The nexo `ServiceID` of the request.
    pub service_id: Option<String>,
    /// The terminal's `POITransactionID`.
    pub poi_transaction_id: Option<String>,
    /// The host's terminal id (`AcquirerPOIID`).
    pub acquirer_terminal_id: Option<String>,
    /// Batch of the terminal's transaction.
    pub batch: Option<u32>,
    /// Trace number of the terminal's transaction.
    pub stan: Option<u32>,
    /// The host's RRN (`AcquirerTransactionID`).
    pub rrn: Option<String>,
    /// Approval code.
    pub approval_code: Option<String>,
    /// First six and last four digits.
    pub masked_pan: Option<String>,
    /// The back office's record of the host's transaction, once reported.
    pub host_transaction_id: Option<i64>,
    /// Who asked for it.
    pub started_by: String,
    /// When, Unix seconds.
    pub started_at: i64,
    /// When its outcome was recorded.
    pub finished_at: Option<i64>,
    /// The device that took it and reports its outcome (none: taken by
    /// the back office itself).
    pub device: Option<i64>,
}

impl Payment {
    /// Reported approved by its device, and the host's transaction not
    /// found yet.
    pub fn awaiting_confirmation(&self) -> bool {
        self.device.is_some()
            && self.status == PaymentStatus::Unknown
            && self.acquirer_terminal_id.is_some()
    }

    /// Its status as shown.
    pub fn status_label(&self) -> &'static str {
        if self.awaiting_confirmation() {
            "awaiting confirmation"
        } else {
            self.status.name()
        }
    }
}

/// An order with everything shown on its page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detail {
    /// The order.
    pub order: Order,
    /// Its lines.
    pub lines: Vec<Line>,
    /// Its split parts (none when not split).
    pub parts: Vec<Part>,
    /// Its payments, oldest first.
    pub payments: Vec<Payment>,
}

impl Detail {
    /// Whether a payment is in flight or of unknown outcome.
    pub fn in_flight(&self) -> bool {
        self.payments
            .iter()
            .any(|p| matches!(p.status, PaymentStatus::Pending | PaymentStatus::Unknown))
    }

    /// Whether lines may be added or removed: open, nothing paid, not
    /// split, no payment in flight.
    pub fn editable(&self) -> bool {
        self.order.status == Status::Open
            && self.order.paid == 0
            && self.parts.is_empty()
            && !self.in_flight()
    }
}

const ORDER_COLUMNS: &str =
    "id, kind, status, currency, total, paid, created_by, created_at, closed_at";

fn read_order(r: &rusqlite::Row<'_>) -> rusqlite::Result<Order> {
    let kind: String = r.get(1)?;
    let status: String = r.get(2)?;
    let bad = |i, what: &str, v: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown order {what} {v:?}").into(),
        )
    };
    Ok(Order {
        id: r.get(0)?,
        kind: Kind::from_name(&kind).ok_or_else(|| bad(1, "kind", &kind))?,
        status: Status::from_name(&status).ok_or_else(|| bad(2, "status", &status))?,
        currency: r.get(3)?,
        total: r.get(4)?,
        paid: r.get(5)?,
        created_by: r.get(6)?,
        created_at: r.get(7)?,
        closed_at: r.get(8)?,
    })
}

/// The order `id`.
pub fn order(conn: &Connection, id: i64) -> Result<Option<Order>, SalesError> {
    Ok(conn
        .query_row(
            &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"),
            [id],
            read_order,
        )
        .optional()?)
}

fn existing(conn: &Connection, id: i64) -> Result<Order, SalesError> {
    order(conn, id)?.ok_or_else(|| SalesError::NotFound(format!("order {id}")))
}

/// Orders, newest first, of `status` when given (`limit` at most).
pub fn list(
    conn: &Connection,
    status: Option<Status>,
    kind: Option<Kind>,
    limit: i64,
) -> Result<Vec<Order>, SalesError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders
         WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR kind = ?2)
         ORDER BY id DESC LIMIT ?3"
    ))?;
    let rows = stmt
        .query_map(
            params![status.map(Status::name), kind.map(Kind::name), limit],
            read_order,
        )?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The lines of order `id`.
pub fn lines(conn: &Connection, id: i64) -> Result<Vec<Line>, SalesError> {
    let mut stmt = conn.prepare(
        "SELECT id, item_id, name, quantity, unit_price, currency FROM order_lines
         WHERE order_id = ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([id], |r| {
            Ok(Line {
                id: r.get(0)?,
                item_id: r.get(1)?,
                name: r.get(2)?,
                quantity: r.get(3)?,
                unit_price: r.get(4)?,
                currency: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The split parts of order `id`.
pub fn parts(conn: &Connection, id: i64) -> Result<Vec<Part>, SalesError> {
    let mut stmt = conn.prepare(
        "SELECT id, number, amount, paid FROM order_parts WHERE order_id = ?1 ORDER BY number",
    )?;
    let mut parts: Vec<Part> = stmt
        .query_map([id], |r| {
            Ok(Part {
                id: r.get(0)?,
                number: r.get(1)?,
                amount: r.get(2)?,
                paid: r.get(3)?,
                lines: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt =
        conn.prepare("SELECT line_id FROM order_part_lines WHERE part_id = ?1 ORDER BY line_id")?;
    for part in &mut parts {
        part.lines = stmt
            .query_map([part.id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
    }
    Ok(parts)
}

const PAYMENT_COLUMNS: &str = "id, order_id, part_id, amount, currency, terminal, status, reason, service_id, poi_transaction_id, acquirer_terminal_id, batch, stan, rrn, approval_code, masked_pan, host_transaction_id, started_by, started_at, finished_at, device";

fn read_payment(r: &rusqlite::Row<'_>) -> rusqlite::Result<Payment> {
    let status: String = r.get(6)?;
    Ok(Payment {
        id: r.get(0)?,
        order_id: r.get(1)?,
        part_id: r.get(2)?,
        amount: r.get(3)?,
        currency: r.get(4)?,
        terminal: r.get(5)?,
        status: PaymentStatus::from_name(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                6,
                rusqlite::types::Type::Text,
                format!("unknown payment status {status:?}").into(),
            )
        })?,
        reason: r.get(7)?,
        service_id: r.get(8)?,
        poi_transaction_id: r.get(9)?,
        acquirer_terminal_id: r.get(10)?,
        batch: r.get(11)?,
        stan: r.get(12)?,
        rrn: r.get(13)?,
        approval_code: r.get(14)?,
        masked_pan: r.get(15)?,
        host_transaction_id: r.get(16)?,
        started_by: r.get(17)?,
        started_at: r.get(18)?,
        finished_at: r.get(19)?,
        device: r.get(20)?,
    })
}

/// The payments of order `id`, oldest first.
pub fn payments(conn: &Connection, id: i64) -> Result<Vec<Payment>, SalesError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {PAYMENT_COLUMNS} FROM order_payments WHERE order_id = ?1 ORDER BY id"
    ))?;
    let rows = stmt
        .query_map([id], read_payment)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The payment `id`.
pub fn payment(conn: &Connection, id: i64) -> Result<Option<Payment>, SalesError> {
    Ok(conn
        .query_row(
            &format!("SELECT {PAYMENT_COLUMNS} FROM order_payments WHERE id = ?1"),
            [id],
            read_payment,
        )
        .optional()?)
}

/// Order `id` with its lines, parts and payments.
pub fn detail(conn: &Connection, id: i64) -> Result<Option<Detail>, SalesError> {
    let Some(order) = order(conn, id)? else {
        return Ok(None);
    };
    Ok(Some(Detail {
        lines: lines(conn, id)?,
        parts: parts(conn, id)?,
        payments: payments(conn, id)?,
        order,
    }))
}

fn detail_of(conn: &Connection, id: i64) -> Result<Detail, SalesError> {
    detail(conn, id)?.ok_or_else(|| SalesError::NotFound(format!("order {id}")))
}

fn audit(
    conn: &Connection,
    actor: &str,
    action: &str,
    subject: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
    now: i64,
) -> Result<(), SalesError> {
    audit::append(
        conn,
        &Change {
            actor,
            action,
            subject,
            before,
            after,
        },
        now,
    )?;
    Ok(())
}

/// Opens an empty order of `kind`; returns its id.
pub fn create(conn: &Connection, kind: Kind, actor: &str, now: i64) -> Result<i64, SalesError> {
    conn.execute(
        "INSERT INTO orders (kind, status, created_by, created_at) VALUES (?1, 'open', ?2, ?3)",
        params![kind.name(), actor, now],
    )?;
    let id = conn.last_insert_rowid();
    audit(
        conn,
        actor,
        "order.create",
        &format!("order:{id}"),
        None,
        Some(json!({ "kind": kind.name() })),
        now,
    )?;
    Ok(id)
}

/// What an order is opened for: a restaurant table or a clinic patient.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// The statement that ties the order to it (`?1` the order, `?2` `id`).
    pub link: &'a str,
    /// Its row id.
    pub id: i64,
    /// The audit's action for the opening.
    pub action: &'a str,
    /// The audit's subject (`table:5`, `patient:P000001`).
    pub subject: &'a str,
}

/// Opens an empty order of `kind` for `owner`, links it and audits the
/// opening; returns the order's id.
pub fn create_for(
    conn: &Connection,
    kind: Kind,
    owner: &Owner<'_>,
    actor: &str,
    now: i64,
) -> Result<i64, SalesError> {
    let order = create(conn, kind, actor, now)?;
    conn.execute(owner.link, params![order, owner.id])?;
    audit(
        conn,
        actor,
        owner.action,
        owner.subject,
        None,
        Some(json!({ "order": order })),
        now,
    )?;
    Ok(order)
}

/// Stores the total of order `id`'s lines ([`total`]) and its currency.
fn refresh_total(conn: &Connection, id: i64) -> Result<i64, SalesError> {
    let lines = lines(conn, id)?;
    let sum = total(&lines)?;
    conn.execute(
        "UPDATE orders SET total = ?2, currency = ?3 WHERE id = ?1",
        params![id, sum, lines.first().map(|l| l.currency)],
    )?;
    Ok(sum)
}

fn editable(conn: &Connection, id: i64) -> Result<Detail, SalesError> {
    let detail = detail_of(conn, id)?;
    if !detail.editable() {
        return refused(format!(
            "order {id} is {}{}: its lines can no longer change",
            detail.order.status.label(),
            if detail.parts.is_empty() {
                ""
            } else {
                " and split"
            }
        ));
    }
    Ok(detail)
}

/// Adds `quantity` of catalog item `item_id` to order `id` (to its line of
/// that item when it has one), on `today` (UTC, `YYYY-MM-DD`): the item
/// must be of the order's kind, active, in the order's currency, not past
/// its date, and in stock when its stock is counted.
pub fn add_item(
    conn: &Connection,
    id: i64,
    item_id: i64,
    quantity: i64,
    actor: &str,
    now: i64,
    today: &str,
) -> Result<(), SalesError> {
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return refused(format!("quantity: 1 to {MAX_QUANTITY}"));
    }
    let detail = editable(conn, id)?;
    let item = super::catalog::item(conn, item_id)?
        .ok_or_else(|| SalesError::NotFound(format!("item {item_id}")))?;
    if item.kind != detail.order.kind {
        return refused(format!(
            "{} is a {}, not sold on a {}",
            item.name,
            item.kind.item_label().to_lowercase(),
            detail.order.kind.order_label().to_lowercase()
        ));
    }
    if !item.active {
        return refused(format!("{} is no longer sold", item.name));
    }
    if let Some(valid_on) = &item.valid_on
        && valid_on.as_str() < today
    {
        return refused(format!("{} was for {valid_on}: it has expired", item.name));
    }
    if let Some(currency) = detail.order.currency
        && currency != item.currency
    {
        return refused(format!(
            "{} is priced in another currency than the order",
            item.name
        ));
    }
    let existing = detail.lines.iter().find(|l| l.item_id == item.id);
    let wanted = existing.map_or(0, |l| l.quantity) + quantity;
    if wanted > MAX_QUANTITY {
        return refused(format!("quantity: {MAX_QUANTITY} at most on a line"));
    }
    if let Some(left) = super::catalog::available(conn, &item)?
        && wanted > left
    {
        return refused(format!("{}: only {left} in stock", item.name));
    }
    match existing {
        Some(line) => {
            conn.execute(
                "UPDATE order_lines SET quantity = ?2 WHERE id = ?1",
                params![line.id, wanted],
            )?;
        }
        None => {
            conn.execute(
                "INSERT INTO order_lines (order_id, item_id, name, quantity, unit_price, currency)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, item.id, item.name, quantity, item.price, item.currency],
            )?;
        }
    }
    let before = detail.order.total;
    let after = refresh_total(conn, id)?;
    audit(
        conn,
        actor,
        "order.line_add",
        &format!("order:{id}"),
        Some(json!({ "total": before })),
        Some(
            json!({ "item": item.code, "quantity": quantity, "unit_price": item.price, "total": after }),
        ),
        now,
    )
}

/// Removes line `line_id` from order `id`.
pub fn remove_line(
    conn: &Connection,
    id: i64,
    line_id: i64,
    actor: &str,
    now: i64,
) -> Result<(), SalesError> {
    let detail = editable(conn, id)?;
    let line = detail
        .lines
        .iter()
        .find(|l| l.id == line_id)
        .ok_or_else(|| SalesError::NotFound(format!("line {line_id} of order {id}")))?;
    conn.execute("DELETE FROM order_lines WHERE id = ?1", [line_id])?;
    let after = refresh_total(conn, id)?;
    audit(
        conn,
        actor,
        "order.line_remove",
        &format!("order:{id}"),
        Some(json!({ "line": line, "total": detail.order.total })),
        Some(json!({ "total": after })),
        now,
    )
}

/// Cancels order `id`: only while nothing is paid or being paid.
pub fn cancel(conn: &Connection, id: i64, actor: &str, now: i64) -> Result<(), SalesError> {
    let detail = detail_of(conn, id)?;
    if detail.order.status != Status::Open || detail.order.paid != 0 || detail.in_flight() {
        return refused(format!(
            "order {id} is {} or being paid: it cannot be cancelled",
            detail.order.status.label()
        ));
    }
    conn.execute(
        "UPDATE orders SET status = 'cancelled', closed_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    audit(
        conn,
        actor,
        "order.cancel",
        &format!("order:{id}"),
        Some(json!({ "status": "open", "total": detail.order.total })),
        Some(json!({ "status": "cancelled" })),
        now,
    )
}

/// A split can be made: open, a total to split, nothing paid or in flight,
/// not split already.
fn splittable(conn: &Connection, id: i64) -> Result<Detail, SalesError> {
    let detail = detail_of(conn, id)?;
    if detail.order.status != Status::Open || detail.order.paid != 0 || detail.in_flight() {
        return refused(format!(
            "order {id} is {} or being paid: it cannot be split now",
            detail.order.status.label()
        ));
    }
    if !detail.parts.is_empty() {
        return refused(format!("order {id} is split already: undo the split first"));
    }
    if detail.order.total <= 0 {
        return refused(format!("order {id} has nothing to pay"));
    }
    Ok(detail)
}

fn insert_part(conn: &Connection, id: i64, number: i64, amount: i64) -> Result<i64, SalesError> {
    conn.execute(
        "INSERT INTO order_parts (order_id, number, amount) VALUES (?1, ?2, ?3)",
        params![id, number, amount],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Splits order `id` into `n` equal parts ([`split_equally`]).
pub fn split_equal(
    conn: &Connection,
    id: i64,
    n: u32,
    actor: &str,
    now: i64,
) -> Result<Vec<i64>, SalesError> {
    let detail = splittable(conn, id)?;
    if !(2..=MAX_PARTS).contains(&n) {
        return refused(format!("parts: 2 to {MAX_PARTS}"));
    }
    if i64::from(n) > detail.order.total {
        return refused(format!(
            "a total of {} minor units cannot be paid in {n} parts",
            detail.order.total
        ));
    }
    let amounts = split_equally(detail.order.total, n);
    for (number, amount) in (1..).zip(&amounts) {
        insert_part(conn, id, number, *amount)?;
    }
    audit(
        conn,
        actor,
        "order.split",
        &format!("order:{id}"),
        None,
        Some(json!({ "equally": n, "parts": amounts })),
        now,
    )?;
    Ok(amounts)
}

/// Splits order `id` by its lines: `assignment` gives each line's part
/// number (1, 2, ...). Every line goes to one part; numbers are 1 to the
/// number of parts without gaps; each part pays the [`total`] of its lines.
pub fn split_by_lines(
    conn: &Connection,
    id: i64,
    assignment: &[(i64, u32)],
    actor: &str,
    now: i64,
) -> Result<Vec<i64>, SalesError> {
    let detail = splittable(conn, id)?;
    let mut groups: Vec<Vec<&Line>> = Vec::new();
    for line in &detail.lines {
        let mut numbers = assignment.iter().filter(|(l, _)| *l == line.id);
        let number = match (numbers.next(), numbers.next()) {
            (Some((_, n)), None) => *n,
            (None, _) => return refused(format!("line {:?} belongs to no part", line.name)),
            (Some(_), Some(_)) => return refused(format!("line {:?} is given twice", line.name)),
        };
        if !(1..=MAX_PARTS).contains(&number) {
            return refused(format!("part numbers: 1 to {MAX_PARTS}"));
        }
        let index = number as usize - 1;
        if groups.len() <= index {
            groups.resize_with(index + 1, Vec::new);
        }
        groups[index].push(line);
    }
    if assignment
        .iter()
        .any(|(l, _)| !detail.lines.iter().any(|line| line.id == *l))
    {
        return refused("a line given is not on this order");
    }
    if groups.len() < 2 {
        return refused("give the lines to two parts at least");
    }
    let mut amounts = Vec::with_capacity(groups.len());
    for (number, group) in (1..).zip(&groups) {
        let amount = total(group.iter().copied())?;
        if amount <= 0 {
            return refused(format!("part {number} has nothing to pay"));
        }
        let part = insert_part(conn, id, number, amount)?;
        for line in group {
            conn.execute(
                "INSERT INTO order_part_lines (part_id, line_id) VALUES (?1, ?2)",
                params![part, line.id],
            )?;
        }
        amounts.push(amount);
    }
    audit(
        conn,
        actor,
        "order.split",
        &format!("order:{id}"),
        None,
        Some(json!({ "by_lines": assignment, "parts": amounts })),
        now,
    )?;
    Ok(amounts)
}

/// Undoes the split of order `id`: only while no part is paid or being paid.
pub fn clear_split(conn: &Connection, id: i64, actor: &str, now: i64) -> Result<(), SalesError> {
    let detail = detail_of(conn, id)?;
    if detail.parts.is_empty() {
        return Ok(());
    }
    if detail.parts.iter().any(|p| p.paid) || detail.in_flight() {
        return refused(format!(
            "order {id} has a part paid or being paid: the split stays"
        ));
    }
    conn.execute(
        "DELETE FROM order_part_lines WHERE part_id IN (SELECT id FROM order_parts WHERE order_id = ?1)",
        [id],
    )?;
    // Declined or failed payments of the parts keep their record, without
    // the part they were for.
    conn.execute(
        "UPDATE order_payments SET part_id = NULL WHERE order_id = ?1",
        [id],
    )?;
    conn.execute("DELETE FROM order_parts WHERE order_id = ?1", [id])?;
    let amounts: Vec<i64> = detail.parts.iter().map(|p| p.amount).collect();
    audit(
        conn,
        actor,
        "order.split_clear",
        &format!("order:{id}"),
        Some(json!({ "parts": amounts })),
        None,
        now,
    )
}

/// A payment written before the terminal is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The payment's row id.
    pub payment_id: i64,
    /// The order.
    pub order_id: i64,
    /// Minor units to ask for.
    pub amount: i64,
    /// ISO 4217 numeric.
    pub currency: u16,
    /// POIID of the terminal.
    pub terminal: String,
}

/// Records a payment about to be asked of `terminal` for order `id` (the
/// part numbered `part` when given, else what is outstanding). Refused
/// when the order is not payable, the part is paid, a split order is paid
/// whole, or another payment of the order is in flight.
pub fn start_payment(
    conn: &Connection,
    id: i64,
    part: Option<i64>,
    terminal: &str,
    actor: &str,
    now: i64,
) -> Result<Started, SalesError> {
    let detail = detail_of(conn, id)?;
    let order = &detail.order;
    if !matches!(order.status, Status::Open | Status::PartlyPaid) {
        return refused(format!(
            "order {id} is {}: nothing to pay",
            order.status.label()
        ));
    }
    if detail.in_flight() {
        return refused(format!(
            "a payment of order {id} is under way or its outcome is unknown: settle it first"
        ));
    }
    let Some(currency) = order.currency.filter(|_| order.outstanding() > 0) else {
        return refused(format!("order {id} has nothing to pay"));
    };
    let (part_id, amount) = match (part, detail.parts.is_empty()) {
        (None, true) => (None, order.outstanding()),
        (None, false) => return refused(format!("order {id} is split: pay its parts")),
        (Some(_), true) => return refused(format!("order {id} is not split")),
        (Some(number), false) => {
            let part = detail
                .parts
                .iter()
                .find(|p| p.number == number)
                .ok_or_else(|| SalesError::NotFound(format!("part {number} of order {id}")))?;
            if part.paid {
                return refused(format!("part {number} of order {id} is paid"));
            }
            (Some(part.id), part.amount)
        }
    };
    // Stock is checked when a line is added, but two orders may both take
    // the last unit: it is held here, in the immediate transaction that
    // writes the payment, so of two orders racing for it one pays.
    let held = super::catalog::hold_stock(conn, id)?;
    conn.execute(
        "INSERT INTO order_payments (order_id, part_id, amount, currency, terminal, status, started_by, started_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7)",
        params![id, part_id, amount, currency, terminal, actor, now],
    )?;
    let payment_id = conn.last_insert_rowid();
    audit(
        conn,
        actor,
        "payment.start",
        &format!("payment:{payment_id}"),
        None,
        Some(
            json!({ "order": id, "part": part, "amount": amount, "currency": currency, "terminal": terminal, "stock_held": held }),
        ),
        now,
    )?;
    Ok(Started {
        payment_id,
        order_id: id,
        amount,
        currency,
        terminal: terminal.to_string(),
    })
}

/// What the terminal did with a payment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Where the payment now stands.
    pub status: Option<PaymentStatus>,
    /// Why it was declined, or what failed.
    pub reason: Option<String>,
    /// nexo `ServiceID`.
    pub service_id: Option<String>,
    /// `POITransactionID`.
    pub poi_transaction_id: Option<String>,
    /// `AcquirerPOIID`.
    pub acquirer_terminal_id: Option<String>,
    /// Batch of the terminal's transaction.
    pub batch: Option<u32>,
    /// Trace number of the terminal's transaction.
    pub stan: Option<u32>,
    /// `AcquirerTransactionID`.
    pub rrn: Option<String>,
    /// `ApprovalCode`.
    pub approval_code: Option<String>,
    /// `MaskedPan`.
    pub masked_pan: Option<String>,
}

/// Records what became of payment `payment_id` (pending or unknown). An
/// approval marks its part paid, adds it to the order's paid amount, and,
/// when that pays the order, closes it and takes its counted items off
/// the stock, all in this one transaction. The payment is linked to the
/// host's transaction when that is recorded already.
pub fn record_outcome(
    conn: &Connection,
    payment_id: i64,
    outcome: &Outcome,
    actor: &str,
    now: i64,
) -> Result<Payment, SalesError> {
    let payment = payment(conn, payment_id)?
        .ok_or_else(|| SalesError::NotFound(format!("payment {payment_id}")))?;
    let status = outcome.status.unwrap_or(PaymentStatus::Unknown);
    if !matches!(
        payment.status,
        PaymentStatus::Pending | PaymentStatus::Unknown
    ) {
        return refused(format!(
            "payment {payment_id} is {} already",
            payment.status.name()
        ));
    }
    conn.execute(
        "UPDATE order_payments SET status = ?2, reason = ?3, service_id = coalesce(?4, service_id),
             poi_transaction_id = ?5, acquirer_terminal_id = ?6, batch = ?7, stan = ?8, rrn = ?9,
             approval_code = ?10, masked_pan = ?11,
             finished_at = CASE WHEN ?2 IN ('pending', 'unknown') THEN NULL ELSE ?12 END
         WHERE id = ?1",
        params![
            payment_id,
            status.name(),
            outcome.reason,
            outcome.service_id,
            outcome.poi_transaction_id,
            outcome.acquirer_terminal_id,
            outcome.batch,
            outcome.stan,
            outcome.rrn,
            outcome.approval_code,
            outcome.masked_pan,
            now
        ],
    )?;
    let subject = format!("payment:{payment_id}");
    audit(
        conn,
        actor,
        &format!("payment.{}", status.name()),
        &subject,
        Some(json!({ "status": payment.status.name() })),
        Some(json!({
            "status": status.name(), "order": payment.order_id, "amount": payment.amount,
            "reason": outcome.reason, "service_id": outcome.service_id,
            "poi_transaction_id": outcome.poi_transaction_id, "approval_code": outcome.approval_code,
            "masked_pan": outcome.masked_pan,
        })),
        now,
    )?;
    if matches!(status, PaymentStatus::Declined | PaymentStatus::Failed)
        && existing(conn, payment.order_id)?.paid == 0
    {
        let released = super::catalog::release_stock(conn, payment.order_id)?;
        if !released.is_empty() {
            audit(
                conn,
                actor,
                "order.stock_release",
                &format!("order:{}", payment.order_id),
                None,
                Some(json!({ "payment": payment_id, "stock": released })),
                now,
            )?;
        }
    }
    if status == PaymentStatus::Approved {
        conn.execute(
            "UPDATE order_payments SET host_transaction_id =
                 (SELECT transaction_id FROM order_payment_matches WHERE payment_id = ?1 LIMIT 1)
             WHERE id = ?1",
            [payment_id],
        )?;
        mark_paid(conn, &payment, actor, now)?;
    }
    self::payment(conn, payment_id)?
        .ok_or_else(|| SalesError::NotFound(format!("payment {payment_id}")))
}

/// The reference a device charges order `id` with (its `SaleReferenceID`).
pub fn reference(id: i64) -> String {
    format!("ORDER-{id}")
}

/// Records a payment of what is left of order `id`, about to be taken by
/// device `device` on `terminal` (its POIID): as [`start_payment`], stock
/// held and other payments of the order blocked until the device reports.
pub fn start_device_payment(
    conn: &Connection,
    id: i64,
    terminal: &str,
    device: i64,
    actor: &str,
    now: i64,
) -> Result<Started, SalesError> {
    let started = start_payment(conn, id, None, terminal, actor, now)?;
    conn.execute(
        "UPDATE order_payments SET device = ?2 WHERE id = ?1",
        params![started.payment_id, device],
    )?;
    Ok(started)
}

/// Records what device `device` reports of its payment `payment_id` of
/// order `order_id`. The device's word is not proof of payment: a
/// reported approval (which must name the terminal's transaction) is
/// kept `unknown`, awaiting confirmation, until [`confirm_reported`]
/// finds the host's transaction; a decline or failure is recorded as
/// reported (it releases the stock held, nothing more).
pub fn report_payment(
    conn: &Connection,
    order_id: i64,
    payment_id: i64,
    device: i64,
    reported: &Outcome,
    actor: &str,
    now: i64,
) -> Result<Payment, SalesError> {
    let payment = payment(conn, payment_id)?
        .filter(|p| p.order_id == order_id && p.device == Some(device))
        .ok_or_else(|| SalesError::NotFound(format!("payment {payment_id} of order {order_id}")))?;
    if payment.awaiting_confirmation() {
        // Reported before: look for the host's transaction again.
        return confirm_reported(conn, payment_id, actor, now);
    }
    if !matches!(
        payment.status,
        PaymentStatus::Pending | PaymentStatus::Unknown
    ) {
        return refused(format!(
            "payment {payment_id} is {} already",
            payment.status.name()
        ));
    }
    let mut outcome = reported.clone();
    match outcome.status {
        Some(PaymentStatus::Approved) => {
            if outcome.acquirer_terminal_id.is_none()
                || (outcome.batch.is_none() && outcome.rrn.is_none())
            {
                return refused(
                    "an approval must name the terminal's transaction (AcquirerPOIID, POITransactionID or AcquirerTransactionID)",
                );
            }
            outcome.status = Some(PaymentStatus::Unknown);
            outcome.reason = Some(
                "approved on the device; awaiting the host's transaction to confirm it".into(),
            );
        }
        Some(PaymentStatus::Declined | PaymentStatus::Failed | PaymentStatus::Unknown) => {}
        _ => return refused("the outcome must be approved, declined, failed or unknown"),
    }
    record_outcome(conn, payment_id, &outcome, actor, now)?;
    confirm_reported(conn, payment_id, actor, now)
}

/// Confirms payment `payment_id`, reported approved by its device, when
/// the host's record of it is here: an approved sale on the same
/// terminal, of the same amount and currency, with the same batch and
/// trace number (or RRN), paying no other payment. Then, and only then,
/// the payment is approved and the order paid ([`record_outcome`]).
/// Anything else is returned as it is.
pub fn confirm_reported(
    conn: &Connection,
    payment_id: i64,
    actor: &str,
    now: i64,
) -> Result<Payment, SalesError> {
    let payment = payment(conn, payment_id)?
        .ok_or_else(|| SalesError::NotFound(format!("payment {payment_id}")))?;
    if !payment.awaiting_confirmation() {
        return Ok(payment);
    }
    let found: Option<i64> = conn
        .query_row(
            "SELECT t.id FROM order_payments p
             JOIN transactions t
               ON t.terminal_id = p.terminal
              AND t.terminal_id = p.acquirer_terminal_id
              AND t.kind IN ('sale', 'offline_sale')
              AND t.approved = 1 AND t.status = 'approved'
              AND t.amount = p.amount AND t.currency = p.currency
              AND ((t.batch = p.batch AND t.stan = p.stan) OR (p.rrn IS NOT NULL AND t.rrn = p.rrn))
             WHERE p.id = ?1
               AND NOT EXISTS (SELECT 1 FROM order_payments o WHERE o.host_transaction_id = t.id)
             ORDER BY t.id LIMIT 1",
            [payment_id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(transaction) = found else {
        return Ok(payment);
    };
    let outcome = Outcome {
        status: Some(PaymentStatus::Approved),
        reason: Some(format!(
            "approved on the device; confirmed by the host's transaction {transaction}"
        )),
        service_id: payment.service_id.clone(),
        poi_transaction_id: payment.poi_transaction_id.clone(),
        acquirer_terminal_id: payment.acquirer_terminal_id.clone(),
        batch: payment.batch,
        stan: payment.stan,
        rrn: payment.rrn.clone(),
        approval_code: payment.approval_code.clone(),
        masked_pan: payment.masked_pan.clone(),
    };
    record_outcome(conn, payment_id, &outcome, actor, now)?;
    // Linked to the transaction that confirmed it (the link record_outcome
    // makes matches on terminal and trace number only, not the amount).
    conn.execute(
        "UPDATE order_payments SET host_transaction_id = ?2 WHERE id = ?1",
        params![payment_id, transaction],
    )?;
    self::payment(conn, payment_id)?
        .ok_or_else(|| SalesError::NotFound(format!("payment {payment_id}")))
}

/// Releases device payment `payment_id` that its device never reported
/// (or whose reported approval the host never confirmed): recorded failed,
/// the order payable again, its stock released. Refused while the host has
/// an approved sale on the payment's terminal of its amount and currency
/// since it started that pays no payment: that may be this one, and the
/// device should report it.
pub fn release_device_payment(
    conn: &Connection,
    payment_id: i64,
    actor: &str,
    now: i64,
) -> Result<Payment, SalesError> {
    let payment = payment(conn, payment_id)?
        .ok_or_else(|| SalesError::NotFound(format!("payment {payment_id}")))?;
    if payment.device.is_none()
        || !matches!(
            payment.status,
            PaymentStatus::Pending | PaymentStatus::Unknown
        )
    {
        return refused(format!(
            "payment {payment_id} is not a device's payment under way"
        ));
    }
    let unclaimed: i64 = conn.query_row(
        "SELECT count(*) FROM transactions t
         WHERE t.terminal_id = ?1 AND t.kind IN ('sale', 'offline_sale')
           AND t.approved = 1 AND t.status = 'approved'
           AND t.amount = ?2 AND t.currency = ?3 AND t.at >= ?4
           AND NOT EXISTS (SELECT 1 FROM order_payments o WHERE o.host_transaction_id = t.id)",
        params![
            payment.terminal,
            payment.amount,
            payment.currency,
            payment.started_at
        ],
        |r| r.get(0),
    )?;
    if unclaimed > 0 {
        return refused(format!(
            "the host has {unclaimed} approved sale(s) of this amount on {} since this payment started that pay no order: have the phone report it, or check the host's transactions first",
            payment.terminal
        ));
    }
    let outcome = Outcome {
        status: Some(PaymentStatus::Failed),
        reason: Some(format!(
            "released by {actor}: the device never reported it, and the host has no such sale"
        )),
        ..Outcome::default()
    };
    record_outcome(conn, payment_id, &outcome, actor, now)
}

/// Device payments reported approved and not yet confirmed, oldest first.
pub fn awaiting_confirmation(conn: &Connection) -> Result<Vec<i64>, SalesError> {
    let mut stmt = conn.prepare(
        "SELECT id FROM order_payments
         WHERE device IS NOT NULL AND status = 'unknown' AND acquirer_terminal_id IS NOT NULL
         ORDER BY id LIMIT 1000",
    )?;
    let rows = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Adds an approved payment to its order (and part), closing the order
/// and taking its counted items off the stock when it is paid.
fn mark_paid(
    conn: &Connection,
    payment: &Payment,
    actor: &str,
    now: i64,
) -> Result<(), SalesError> {
    if let Some(part) = payment.part_id {
        conn.execute("UPDATE order_parts SET paid = 1 WHERE id = ?1", [part])?;
    }
    let order = existing(conn, payment.order_id)?;
    let paid = order
        .paid
        .checked_add(payment.amount)
        .filter(|p| *p <= order.total)
        .ok_or_else(|| {
            SalesError::Refused(format!(
                "payment {} would pay order {} beyond its total",
                payment.id, order.id
            ))
        })?;
    let status = Status::of(order.total, paid);
    conn.execute(
        "UPDATE orders SET paid = ?2, status = ?3,
             closed_at = CASE WHEN ?3 = 'paid' THEN ?4 ELSE closed_at END
         WHERE id = ?1",
        params![order.id, paid, status.name(), now],
    )?;
    let stock = if status == Status::Paid {
        super::catalog::take_stock(conn, order.id)?
    } else {
        Vec::new()
    };
    audit(
        conn,
        actor,
        "order.payment",
        &format!("order:{}", order.id),
        Some(json!({ "status": order.status.name(), "paid": order.paid })),
        Some(
            json!({ "status": status.name(), "paid": paid, "payment": payment.id, "stock": stock }),
        ),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(quantity: i64, unit_price: i64) -> Line {
        Line {
            id: 1,
            item_id: 1,
            name: "tea".into(),
            quantity,
            unit_price,
            currency: 156,
        }
    }

    #[test]
    fn totals_are_checked_sums_of_quantity_times_price() {
        assert_eq!(total(&[line(2, 350), line(1, 1_250)]).unwrap(), 1_950);
        assert_eq!(total(&[]).unwrap(), 0);
        assert!(total(&[line(i64::MAX, 2)]).is_err());
        assert!(total(&[line(1, i64::MAX), line(1, 1)]).is_err());
    }

    #[test]
    fn statuses_follow_the_paid_amount() {
        assert_eq!(Status::of(1_000, 0), Status::Open);
        assert_eq!(Status::of(1_000, 1), Status::PartlyPaid);
        assert_eq!(Status::of(1_000, 1_000), Status::Paid);
        for s in Status::ALL {
            assert_eq!(Status::from_name(s.name()), Some(s));
        }
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
    }

    #[test]
    fn the_remainder_goes_to_the_first_parts() {
        assert_eq!(split_equally(1_000, 3), [334, 333, 333]);
        assert_eq!(split_equally(1_001, 3), [334, 334, 333]);
        assert_eq!(split_equally(999, 3), [333, 333, 333]);
        assert_eq!(split_equally(5, 2), [3, 2]);
    }

    proptest! {
        #[test]
        fn equal_parts_sum_exactly_and_differ_by_one_at_most(
            total in 0i64..=i64::MAX / 2,
            parts in 1u32..=MAX_PARTS,
        ) {
            let split = split_equally(total, parts);
            prop_assert_eq!(split.len(), parts as usize);
            prop_assert_eq!(split.iter().sum::<i64>(), total);
            let (min, max) = (*split.iter().min().unwrap(), *split.iter().max().unwrap());
            prop_assert!(max - min <= 1);
            // The larger parts come first.
            prop_assert!(split.windows(2).all(|w| w[0] >= w[1]));
        }
    }
}
