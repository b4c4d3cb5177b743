//! Event tickets and hotel nights: catalog items with the date they are
//! for, sold as order lines. An item whose date has passed (UTC) cannot be
//! added to an order ([`super::orders::add_item`]).

use super::catalog;
use super::orders::{self, Kind};
use super::pages::{Shared, csrf_field, posted, read, to_order, write};
use super::{Need, may, need};
use crate::reports::utc_date;
use crate::store::unix_now;
use crate::web::{AppState, Authed, WebError, frame, money};
use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use ledger::Migrations;
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;

/// Tickets keep their items and orders in the shared tables.
pub const MIGRATIONS: Migrations = Migrations {
    component: "tickets",
    steps: &[],
};

/// The tickets' routes.
pub fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/tickets", get(tickets_page))
        .route("/tickets/sell", post(sell))
        .layer(DefaultBodyLimit::max(super::pages::MAX_FORM))
        .with_state(state)
}

async fn tickets_page(State(state): Shared, authed: Authed) -> Result<Markup, WebError> {
    need(&authed, Need::View)?;
    let items = read(&state, |c| catalog::list(c, Some(Kind::Ticket), true)).await?;
    let today = utc_date(unix_now());
    let sell = may(authed.session.user.role, Need::Sell);
    let body = html! {
        div.scroll { table {
            thead { tr { th { "Date" } th { "Ticket or night" } th.n { "Price" } th {} } }
            tbody {
                @if items.is_empty() { tr { td colspan="4" { "No tickets or nights in the catalog." } } }
                @for i in &items {
                    @let expired = i.valid_on.as_deref().is_some_and(|v| v < today.as_str());
                    tr {
                        td { (i.valid_on.as_deref().unwrap_or("")) }
                        td { (i.name) }
                        td.n { (money(i.price, i.currency)) }
                        td {
                            @if expired { "expired" }
                            @else if sell {
                                form.inline method="post" action="/tickets/sell" {
                                    (csrf_field(&authed))
                                    input type="hidden" name="item" value=(i.id);
                                    input name="quantity" type="number" min="1" max=(orders::MAX_QUANTITY) value="1" size="3" aria-label="Quantity";
                                    button type="submit" { "Sell" }
                                }
                            }
                        }
                    }
                }
            }
        } }
    };
    Ok(frame(&state, &authed, "Tickets and nights", body))
}

#[derive(Deserialize)]
struct SellForm {
    #[serde(default)]
    item: i64,
    #[serde(default)]
    quantity: Option<i64>,
    #[serde(default)]
    csrf: String,
}

async fn sell(
    State(state): Shared,
    authed: Authed,
    Form(form): Form<SellForm>,
) -> Result<Response, WebError> {
    posted(&authed, Need::Sell, &form.csrf)?;
    let id = write(&state, &authed, move |tx, actor, now, today| {
        let id = orders::create(tx, Kind::Ticket, actor, now)?;
        orders::add_item(
            tx,
            id,
            form.item,
            form.quantity.unwrap_or(1),
            actor,
            now,
            today,
        )?;
        Ok(id)
    })
    .await?;
    Ok(to_order(id))
}
