//! A shop: items with SKU, barcode, price and counted stock (in the shared
//! catalog), sales started from a barcode, and the low-stock list. Stock
//! is held for a sale when its payment starts and goes down when it is
//! paid, in the transaction that marks it paid
//! ([`super::orders::record_outcome`]); a declined payment releases it.

use super::catalog;
use super::orders::{self, Kind};
use super::pages::{Shared, csrf_field, posted, query, read, to_order, write};
use super::{Need, SalesError, may, need};
use crate::web::{AppState, Authed, WebError, frame, money};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use ledger::Migrations;
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;

/// The shop keeps its items and sales in the shared tables.
pub const MIGRATIONS: Migrations = Migrations {
    component: "retail",
    steps: &[],
};

/// The shop's routes.
pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/retail", get(shop))
        .route("/retail/sales", post(new_sale))
        .route("/retail/stock", get(stock))
        .layer(DefaultBodyLimit::max(super::pages::MAX_FORM))
        .with_state(state)
}

#[derive(Deserialize)]
struct Lookup {
    barcode: Option<String>,
}

async fn shop(
    State(state): Shared,
    authed: Authed,
    q: Result<Query<Lookup>, QueryRejection>,
) -> Result<Markup, WebError> {
    need(&authed, Need::View)?;
    let barcode = query(q)?
        .barcode
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty() && b.len() <= super::MAX_TEXT);
    let wanted = barcode.clone();
    let (found, open) = read(&state, move |c| {
        let found = match &wanted {
            Some(b) => catalog::by_barcode(c, b)?,
            None => None,
        };
        let open = orders::list(c, Some(orders::Status::Open), Some(Kind::Retail), 20)?;
        Ok((found, open))
    })
    .await?;
    let sell = may(authed.session.user.role, Need::Sell);
    let body = html! {
        form.filters method="get" action="/retail" {
            label { "Barcode" input name="barcode" inputmode="numeric" autocomplete="off" autofocus value=(barcode.clone().unwrap_or_default()); }
            button type="submit" { "Look up" }
        }
        @if let Some(b) = &barcode {
            @match &found {
                Some(i) => div.card {
                    b { (i.name) }
                    (money(i.price, i.currency)) " · SKU " (i.code)
                    @if let Some(s) = i.stock { " · " (s) " in stock" }
                    @if !i.active { " · no longer sold" }
                    @if sell && i.active && i.kind == Kind::Retail {
                        form.inline method="post" action="/retail/sales" {
                            (csrf_field(&authed))
                            input type="hidden" name="barcode" value=(b);
                            button type="submit" { "New sale with this item" }
                        }
                    }
                },
                None => p.error { "No item has barcode " (b) "." },
            }
        }
        @if sell {
            h2 { "Sell" }
            form.inline method="post" action="/retail/sales" {
                (csrf_field(&authed))
                button type="submit" { "New sale" }
            }
        }
        h2 { "Open sales" }
        div.scroll { table {
            thead { tr { th.n { "#" } th.n { "Total" } th { "By" } } }
            tbody {
                @if open.is_empty() { tr { td colspan="3" { "None." } } }
                @for o in &open {
                    tr {
                        td.n { a href=(format!("/orders/{}", o.id)) { (o.id) } }
                        td.n { (super::pages::amount(o.total, o.currency)) }
                        td { (o.created_by) }
                    }
                }
            }
        } }
        p { a href="/retail/stock" { "Stock and low stock" } }
    };
    Ok(frame(&state, &authed, "Shop", body))
}

#[derive(Deserialize)]
struct SaleForm {
    #[serde(default)]
    barcode: String,
    #[serde(default)]
    csrf: String,
}

async fn new_sale(
    State(state): Shared,
    authed: Authed,
    Form(form): Form<SaleForm>,
) -> Result<Response, WebError> {
    posted(&authed, Need::Sell, &form.csrf)?;
    let barcode = form.barcode.trim().to_string();
    let id = write(&state, &authed, move |tx, actor, now, today| {
        let id = orders::create(tx, Kind::Retail, actor, now)?;
        if !barcode.is_empty() {
            let item = catalog::by_barcode(tx, &barcode)?
                .ok_or_else(|| SalesError::Refused(format!("no item has barcode {barcode:?}")))?;
            orders::add_item(tx, id, item.id, 1, actor, now, today)?;
        }
        Ok(id)
    })
    .await?;
    Ok(to_order(id))
}

async fn stock(State(state): Shared, authed: Authed) -> Result<Markup, WebError> {
    need(&authed, Need::View)?;
    let (low, all) = read(&state, |c| {
        let with_held = |items: Vec<catalog::Item>| {
            items
                .into_iter()
                .filter(|i| i.stock.is_some())
                .map(|i| Ok((catalog::held(c, i.id)?, i)))
                .collect::<Result<Vec<_>, SalesError>>()
        };
        Ok((
            with_held(catalog::low_stock(c)?)?,
            with_held(catalog::list(c, Some(Kind::Retail), false)?)?,
        ))
    })
    .await?;
    let table = |items: &[(i64, catalog::Item)], empty: &str| {
        html! {
            div.scroll { table {
                thead { tr { th { "SKU" } th { "Name" } th { "Barcode" } th.n { "Stock" } th.n { "Held for payments" } th.n { "Low at" } } }
                tbody {
                    @if items.is_empty() { tr { td colspan="6" { (empty) } } }
                    @for (held, i) in items {
                        tr {
                            td { a href=(format!("/catalog/{}", i.id)) { (i.code) } }
                            td { (i.name) }
                            td { (i.barcode.as_deref().unwrap_or("")) }
                            td.n { (i.stock.unwrap_or(0)) }
                            td.n { (held) }
                            td.n { (i.low_stock.unwrap_or(0)) }
                        }
                    }
                }
            } }
        }
    };
    let body = html! {
        h2 { "Low stock" }
        (table(&low, "Nothing is low."))
        h2 { "Every counted item" }
        (table(&all, "No counted items."))
        @if may(authed.session.user.role, Need::Manage) {
            p { "Change a count on the item's page in the " a href="/catalog" { "catalog" } "." }
        }
    };
    Ok(frame(&state, &authed, "Stock", body))
}
