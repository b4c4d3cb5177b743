//! A restaurant: tables, an order per occupied table with items from the
//! menu (the catalog's menu items), the bill split by items or equally
//! (the shared split of [`super::orders`]), and checkout: a table is
//! occupied while its order is open or partly paid, and free again once
//! the order is paid (or cancelled).

use super::orders::{self, Kind, Order};
use super::pages::{Shared, button, csrf_field, posted, read, sell_on, write};
use super::{Need, SalesError, clean, may, need, refused};
use crate::audit::{self, Change};
use crate::web::{AppState, Authed, WebError, frame};
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use ledger::Migrations;
use maud::{Markup, html};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

/// Tables, and which order is whose.
pub const MIGRATIONS: Migrations = Migrations {
    component: "restaurant",
    steps: &[r#"
CREATE TABLE restaurant_tables (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    seats      INTEGER NOT NULL CHECK (seats > 0),
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE restaurant_orders (
    order_id INTEGER PRIMARY KEY REFERENCES orders (id),
    table_id INTEGER NOT NULL REFERENCES restaurant_tables (id)
) STRICT;
CREATE INDEX restaurant_orders_table ON restaurant_orders (table_id, order_id);
"#],
};

/// Most seats at one table.
pub const MAX_SEATS: i64 = 100;

/// A table and its order while occupied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    /// Row id.
    pub id: i64,
    /// As shown (`1`, `Terrace 2`).
    pub name: String,
    /// Seats.
    pub seats: i64,
    /// Its open or partly paid order: the table is occupied.
    pub order: Option<Order>,
}

/// Adds table `name` with `seats`; returns its id.
pub fn add_table(
    conn: &Connection,
    name: &str,
    seats: i64,
    actor: &str,
    now: i64,
) -> Result<i64, SalesError> {
    let name = clean("table", name, false)?.unwrap_or_default();
    if !(1..=MAX_SEATS).contains(&seats) {
        return refused(format!("seats: 1 to {MAX_SEATS}"));
    }
    let taken: Option<i64> = conn
        .query_row(
            "SELECT id FROM restaurant_tables WHERE name = ?1",
            [&name],
            |r| r.get(0),
        )
        .optional()?;
    if taken.is_some() {
        return refused(format!("table {name:?} exists"));
    }
    conn.execute(
        "INSERT INTO restaurant_tables (name, seats, created_at) VALUES (?1, ?2, ?3)",
        params![name, seats, now],
    )?;
    let id = conn.last_insert_rowid();
    audit::append(
        conn,
        &Change {
            actor,
            action: "table.add",
            subject: &format!("table:{name}"),
            before: None,
            after: Some(json!({ "seats": seats })),
        },
        now,
    )?;
    Ok(id)
}

/// The current order of table `table`, if it is occupied.
fn current_order(conn: &Connection, table: i64) -> Result<Option<i64>, SalesError> {
    Ok(conn
        .query_row(
            "SELECT o.id FROM restaurant_orders r JOIN orders o ON o.id = r.order_id
             WHERE r.table_id = ?1 AND o.status IN ('open', 'partly_paid')
             ORDER BY o.id DESC LIMIT 1",
            [table],
            |r| r.get(0),
        )
        .optional()?)
}

/// Every table, by name, with its order while occupied.
pub fn tables(conn: &Connection) -> Result<Vec<Table>, SalesError> {
    let mut stmt =
        conn.prepare("SELECT id, name, seats FROM restaurant_tables ORDER BY length(name), name")?;
    let rows: Vec<(i64, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(id, name, seats)| {
            let order = match current_order(conn, id)? {
                Some(o) => orders::order(conn, o)?,
                None => None,
            };
            Ok(Table {
                id,
                name,
                seats,
                order,
            })
        })
        .collect()
}

/// The order of table `table`: its current one, or a new one (the table
/// becomes occupied).
pub fn open_table(conn: &Connection, table: i64, actor: &str, now: i64) -> Result<i64, SalesError> {
    let name: String = conn
        .query_row(
            "SELECT name FROM restaurant_tables WHERE id = ?1",
            [table],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| SalesError::NotFound(format!("table {table}")))?;
    if let Some(order) = current_order(conn, table)? {
        return Ok(order);
    }
    let owner = orders::Owner {
        link: "INSERT INTO restaurant_orders (order_id, table_id) VALUES (?1, ?2)",
        id: table,
        action: "table.open",
        subject: &format!("table:{name}"),
    };
    orders::create_for(conn, Kind::Menu, &owner, actor, now)
}

/// The table (id, name) of order `order`, if it is a table's.
pub fn table_of(conn: &Connection, order: i64) -> Result<Option<(i64, String)>, SalesError> {
    Ok(conn
        .query_row(
            "SELECT t.id, t.name FROM restaurant_orders r JOIN restaurant_tables t ON t.id = r.table_id
             WHERE r.order_id = ?1",
            [order],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// The restaurant's routes.
pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/tables", get(tables_page).post(table_add))
        .route("/tables/{id}/open", post(table_open))
        .layer(DefaultBodyLimit::max(super::pages::MAX_FORM))
        .with_state(state)
}

async fn tables_page(State(state): Shared, authed: Authed) -> Result<Markup, WebError> {
    need(&authed, Need::View)?;
    let list = read(&state, tables).await?;
    let role = authed.session.user.role;
    let body = html! {
        div.cards {
            @for t in &list {
                div.card id=(format!("table-{}", t.id)) {
                    b { "Table " (t.name) }
                    (t.seats) " seats · "
                    @match &t.order {
                        Some(o) => {
                            a href=(format!("/orders/{}", o.id)) { "order " (o.id) }
                            " · " (o.status.label()) " · " (super::pages::amount(o.total, o.currency))
                        }
                        None => "free",
                    }
                    @if may(role, Need::Sell) {
                        " " (button(&authed, &format!("/tables/{}/open", t.id), if t.order.is_some() { "Open order" } else { "Seat guests" }))
                    }
                }
            }
        }
        @if list.is_empty() { p { "No tables yet." } }
        @if may(role, Need::Manage) {
            h2 { "Add a table" }
            form.filters method="post" action="/tables" {
                (csrf_field(&authed))
                label { "Name" input name="name" required maxlength=(super::MAX_TEXT) size="10"; }
                label { "Seats" input name="seats" type="number" min="1" max=(MAX_SEATS) value="4" size="4"; }
                button type="submit" { "Add" }
            }
        }
    };
    Ok(frame(&state, &authed, "Tables", body))
}

#[derive(Deserialize)]
struct TableForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    seats: Option<i64>,
    #[serde(default)]
    csrf: String,
}

async fn table_add(
    State(state): Shared,
    authed: Authed,
    Form(form): Form<TableForm>,
) -> Result<Response, WebError> {
    posted(&authed, Need::Manage, &form.csrf)?;
    write(&state, &authed, move |tx, actor, now, _| {
        add_table(tx, &form.name, form.seats.unwrap_or(4), actor, now)
    })
    .await?;
    Ok(Redirect::to("/tables").into_response())
}

async fn table_open(
    State(state): Shared,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
    Form(form): Form<super::pages::CsrfForm>,
) -> Result<Response, WebError> {
    sell_on(
        &state,
        &authed,
        &form.csrf,
        id,
        |tx, table, actor, now, _| open_table(tx, table, actor, now),
    )
    .await
}
