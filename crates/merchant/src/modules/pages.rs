//! The pages every scenario shares: orders (list, detail with its lines,
//! split parts, payments and Pay buttons), the split-bill form, the
//! catalog, and the paired terminals.

use super::catalog::{self, ItemChange, NewItem};
use super::devices;
use super::orders::{self, Detail, Kind, PaymentStatus, Status};
use super::payments::Payments;
use super::refunds;
use super::{Need, SalesError, may, need};
use crate::reports::utc_date;
use crate::store::unix_now;
use crate::web::{
    AppState, Authed, WebError, check_csrf, frame, money, parse_amount, refreshing_frame, time_text,
};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Extension, Form, Router};
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;

/// Largest form body accepted.
pub(super) const MAX_FORM: usize = 16 * 1024;
/// Orders on one page of the list.
const ORDERS_PAGE: i64 = 200;

pub(super) type Shared = State<Arc<AppState>>;

/// The shared pages' routes.
pub(super) fn routes(state: Arc<AppState>) -> Router {
    let data_dir = state
        .store
        .path()
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    Router::new()
        .route("/orders", get(orders_list))
        .route("/orders/{id}", get(order_page))
        .route("/orders/{id}/lines", post(add_line))
        .route("/orders/{id}/lines/{line}/remove", post(remove_line))
        .route("/orders/{id}/cancel", order_step(orders::cancel))
        .route("/orders/{id}/split", get(split_page).post(split_submit))
        .route("/orders/{id}/split/clear", order_step(orders::clear_split))
        .route("/orders/{id}/pay", post(pay))
        .route("/payments/{id}", get(payment_page))
        .route("/payments/{id}/check", post(check))
        .route("/payments/{id}/refund", post(refund))
        .route("/refunds/{id}/check", post(refund_check))
        .route("/payments/{id}/release", post(release))
        .route("/catalog", get(catalog_page).post(catalog_add))
        .route("/catalog/{id}", get(item_page).post(item_update))
        .route("/terminals", get(terminals_page))
        .route("/devices", get(devices_page).post(device_add))
        .route("/devices/{id}/revoke", post(device_revoke))
        .layer(Extension(Arc::new(Payments::new(&data_dir))))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .with_state(state.clone())
        .merge(super::api::routes(state))
}

pub(super) fn path_id(p: Result<Path<i64>, PathRejection>) -> Result<i64, WebError> {
    p.map(|Path(id)| id).map_err(|_| WebError::NotFound)
}

pub(super) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, WebError> {
    q.map(|Query(q)| q)
        .map_err(|e| WebError::BadRequest(e.body_text()))
}

/// `12.50 CNY`, or `—` for an empty order without a currency yet.
pub(super) fn amount(value: i64, currency: Option<u16>) -> String {
    match currency {
        Some(c) => money(value, c),
        None => "—".into(),
    }
}

/// Minor units of `text` (`12.50`) in `currency`'s decimals.
pub(super) fn minor_units(field: &str, text: &str, currency: u16) -> Result<i64, SalesError> {
    let (_, exponent) = terminal::receipt::currency_code(currency);
    parse_amount(text.trim(), exponent)
        .ok_or_else(|| SalesError::Refused(format!("{field}: an amount such as 12.50")))
}

/// A form with only its CSRF token.
#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    pub(super) csrf: String,
}

/// The hidden CSRF field of every form.
pub(super) fn csrf_field(authed: &Authed) -> Markup {
    html! { input type="hidden" name="csrf" value=(authed.session.csrf); }
}

/// A one-button POST form.
pub(super) fn button(authed: &Authed, action: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf_field(authed))
            button type="submit" { (label) }
        }
    }
}

/// Runs `f` in one write transaction as the session's user, today (UTC).
pub(super) async fn write<R: Send + 'static>(
    state: &AppState,
    authed: &Authed,
    f: impl FnOnce(&rusqlite::Connection, &str, i64, &str) -> Result<R, SalesError> + Send + 'static,
) -> Result<R, WebError> {
    let actor = authed.session.user.name.clone();
    Ok(state
        .store
        .call(move |s| {
            s.write(|tx| {
                let now = unix_now();
                f(tx, &actor, now, &utc_date(now))
            })
        })
        .await?)
}

/// Runs `f` on the connection off the async threads.
pub(super) async fn read<R: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&rusqlite::Connection) -> Result<R, SalesError> + Send + 'static,
) -> Result<R, WebError> {
    Ok(state
        .store
        .call(move |s| s.read(|c| Ok(f(c))))
        .await
        .map_err(SalesError::Store)??)
}

pub(super) fn to_order(id: i64) -> Response {
    Redirect::to(&format!("/orders/{id}")).into_response()
}

/// What every POST checks first: the user may do `need`, and `csrf` is
/// the session's token.
pub(super) fn posted(authed: &Authed, what: Need, csrf: &str) -> Result<(), WebError> {
    need(authed, what)?;
    check_csrf(authed, csrf)
}

/// A seller's POST on the path's `P` (an id or two): the role and the CSRF
/// token are checked, `f` runs with `P` in one write transaction as the
/// session's user, and the order it returns is shown.
pub(super) async fn sell_on<P: Send + 'static>(
    state: &AppState,
    authed: &Authed,
    csrf: &str,
    path: Result<Path<P>, PathRejection>,
    f: impl FnOnce(&rusqlite::Connection, P, &str, i64, &str) -> Result<i64, SalesError>
    + Send
    + 'static,
) -> Result<Response, WebError> {
    posted(authed, Need::Sell, csrf)?;
    let Path(p) = path.map_err(|_| WebError::NotFound)?;
    let order = write(state, authed, move |tx, actor, now, today| {
        f(tx, p, actor, now, today)
    })
    .await?;
    Ok(to_order(order))
}

// ---------------------------------------------------------------- orders

#[derive(Deserialize)]
pub(super) struct OrdersQuery {
    status: Option<String>,
    kind: Option<String>,
}

async fn orders_list(
    State(state): Shared,
    authed: Authed,
    q: Result<Query<OrdersQuery>, QueryRejection>,
) -> Result<Markup, WebError> {
    need(&authed, Need::View)?;
    let q = query(q)?;
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    let status = match status {
        Some(s) => Some(Status::from_name(s).ok_or_else(|| WebError::BadRequest("status".into()))?),
        None => None,
    };
    let kind = match q.kind.as_deref().filter(|s| !s.is_empty()) {
        Some(k) => Some(Kind::from_name(k).ok_or_else(|| WebError::BadRequest("kind".into()))?),
        None => None,
    };
    let list = read(&state, move |c| orders::list(c, status, kind, ORDERS_PAGE)).await?;
    let body = html! {
        form.filters method="get" action="/orders" {
            label { "Status" select name="status" {
                option value="" { "any" }
                @for s in Status::ALL { option value=(s.name()) selected[status == Some(s)] { (s.label()) } }
            } }
            label { "Kind" select name="kind" {
                option value="" { "any" }
                @for k in Kind::ALL { option value=(k.name()) selected[kind == Some(k)] { (k.order_label()) } }
            } }
            button type="submit" { "Show" }
        }
        div.scroll { table {
            thead { tr { th.n { "#" } th { "Kind" } th { "Status" } th.n { "Total" } th.n { "Paid" } th { "Opened (UTC)" } th { "By" } } }
            tbody {
                @if list.is_empty() { tr { td colspan="7" { "No orders." } } }
                @for o in &list {
                    tr {
                        td.n { a href=(format!("/orders/{}", o.id)) { (o.id) } }
                        td { (o.kind.order_label()) }
                        td { (o.status.label()) }
                        td.n { (amount(o.total, o.currency)) }
                        td.n { (amount(o.paid, o.currency)) }
                        td { (time_text(o.created_at)) }
                        td { (o.created_by) }
                    }
                }
            }
        } }
    };
    Ok(frame(&state, &authed, "Orders", body))
}

/// Where an order belongs: its table or patient, with a link.
fn context(
    conn: &rusqlite::Connection,
    id: i64,
    kind: Kind,
) -> Result<Option<(String, String)>, SalesError> {
    Ok(match kind {
        Kind::Menu => super::restaurant::table_of(conn, id)?
            .map(|(table, name)| (format!("Table {name}"), format!("/tables#table-{table}"))),
        Kind::Fee => super::clinic::patient_of(conn, id)?
            .map(|(patient, number)| (format!("Patient {number}"), format!("/patients/{patient}"))),
        Kind::Retail | Kind::Ticket => None,
    })
}

/// The Pay form: a terminal to choose, and the amount on the button.
fn pay_form(
    authed: &Authed,
    id: i64,
    part: Option<i64>,
    label: &str,
    terminals: &[phone::store::Paired],
) -> Markup {
    html! {
        form.inline method="post" action=(format!("/orders/{id}/pay")) {
            (csrf_field(authed))
            @if let Some(part) = part { input type="hidden" name="part" value=(part); }
            select name="terminal" aria-label="Terminal" {
                @for t in terminals { option value=(t.poi_id) selected[t.default] { (t.poi_id) } }
            }
            button type="submit" { (label) }
        }
    }
}

async fn order_page(
    State(state): Shared,
    Extension(payments): Extension<Arc<Payments>>,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Markup, WebError> {
    need(&authed, Need::View)?;
    let id = path_id(id)?;
    let today = utc_date(unix_now());
    let (d, items, place, refunded) = read(&state, move |c| {
        let d =
            orders::detail(c, id)?.ok_or_else(|| SalesError::NotFound(format!("order {id}")))?;
        // With what is left of each counted item: its stock less what is
        // held for orders being paid.
        let items = catalog::list(c, Some(d.order.kind), true)?
            .into_iter()
            .filter(|i| i.valid_on.as_deref().is_none_or(|v| v >= today.as_str()))
            .map(|i| Ok((catalog::available(c, &i)?, i)))
            .collect::<Result<Vec<_>, SalesError>>()?;
        let place = context(c, id, d.order.kind)?;
        Ok((d, items, place, refunds::of_order(c, id)?))
    })
    .await?;
    let terminals = payments.terminals().await.unwrap_or_default();
    let sell = may(authed.session.user.role, Need::Sell);
    let o = &d.order;
    let payable = sell
        && matches!(o.status, Status::Open | Status::PartlyPaid)
        && !d.in_flight()
        && o.outstanding() > 0;
    let splittable = sell
        && o.status == Status::Open
        && o.paid == 0
        && !d.in_flight()
        && d.parts.is_empty()
        && o.total > 1;
    let part_of = |line: i64| {
        d.parts
            .iter()
            .find(|p| p.lines.contains(&line))
            .map(|p| p.number)
    };
    let title = format!("{} {}", o.kind.order_label(), o.id);
    let body = html! {
        div.cards {
            div.card { "Status" b { (o.status.label()) } }
            div.card { "Total" b { (amount(o.total, o.currency)) } }
            div.card { "Paid" b { (amount(o.paid, o.currency)) } }
            div.card { "To pay" b { (amount(o.outstanding(), o.currency)) } }
        }
        p {
            @if let Some((label, href)) = &place { a href=(href) { (label) } " · " }
            "Opened " (time_text(o.created_at)) " UTC by " (o.created_by)
            @if let Some(closed) = o.closed_at { " · closed " (time_text(closed)) " UTC" }
        }
        h2 { "Lines" }
        div.scroll { table {
            thead { tr { th { "Item" } th.n { "Qty" } th.n { "Unit price" } th.n { "Amount" } @if !d.parts.is_empty() { th.n { "Part" } } @if d.editable() && sell { th {} } } }
            tbody {
                @if d.lines.is_empty() { tr { td colspan="5" { "No lines yet." } } }
                @for l in &d.lines {
                    tr {
                        td { (l.name) }
                        td.n { (l.quantity) }
                        td.n { (money(l.unit_price, l.currency)) }
                        td.n { (l.amount().map(|a| money(a, l.currency)).unwrap_or_default()) }
                        @if !d.parts.is_empty() { td.n { (part_of(l.id).map(|n| n.to_string()).unwrap_or_default()) } }
                        @if d.editable() && sell { td { (button(&authed, &format!("/orders/{id}/lines/{}/remove", l.id), "Remove")) } }
                    }
                }
            }
        } }
        @if d.editable() && sell {
            form.filters method="post" action=(format!("/orders/{id}/lines")) {
                (csrf_field(&authed))
                label { "Item" select name="item" {
                    @for (left, i) in &items {
                        option value=(i.id) {
                            (i.name) " — " (money(i.price, i.currency))
                            @if let Some(v) = &i.valid_on { " — " (v) }
                            @if let Some(s) = left { " (" (s) " in stock)" }
                        }
                    }
                } }
                @if o.kind == Kind::Retail {
                    label { "or barcode" input name="barcode" inputmode="numeric" autocomplete="off" size="14"; }
                }
                label { "Qty" input name="quantity" type="number" min="1" max=(orders::MAX_QUANTITY) value="1" size="4"; }
                button type="submit" { "Add" }
            }
        }
        @if !d.parts.is_empty() {
            h2 { "Split bill" }
            div.scroll { table {
                thead { tr { th.n { "Part" } th.n { "Amount" } th { "Status" } @if sell { th {} } } }
                tbody {
                    @for p in &d.parts {
                        tr {
                            td.n { (p.number) }
                            td.n { (amount(p.amount, o.currency)) }
                            td { @if p.paid { "paid" } @else { "to pay" } }
                            @if sell { td {
                                @if !p.paid && payable && !terminals.is_empty() {
                                    (pay_form(&authed, id, Some(p.number), &format!("Pay part {} — {}", p.number, amount(p.amount, o.currency)), &terminals))
                                }
                            } }
                        }
                    }
                }
            } }
            @if sell && !d.parts.iter().any(|p| p.paid) && !d.in_flight() {
                (button(&authed, &format!("/orders/{id}/split/clear"), "Undo the split"))
            }
        }
        @if payable && d.parts.is_empty() {
            h2 { "Payment" }
            @if terminals.is_empty() {
                p { "No terminal is paired with the back office: run " code { "posnet merchant terminal pair" } " with the terminal's pairing code." }
            } @else {
                (pay_form(&authed, id, None, &format!("Pay {}", amount(o.outstanding(), o.currency)), &terminals))
            }
        }
        @if splittable {
            p { a href=(format!("/orders/{id}/split")) { "Split the bill" } }
        }
        @if !d.payments.is_empty() {
            h2 { "Payments" }
            div.scroll { table {
                thead { tr { th { "Started (UTC)" } th.n { "Amount" } th.n { "Part" } th { "Terminal" } th { "Status" } th { "Reason" } th { "Terminal txn" } th { "Approval" } th { "Card" } th { "Host" } th {} } }
                tbody {
                    @for p in &d.payments {
                        tr {
                            td { (time_text(p.started_at)) }
                            td.n { (money(p.amount, p.currency)) }
                            td.n { (p.part_id.and_then(|pid| d.parts.iter().find(|x| x.id == pid)).map(|x| x.number.to_string()).unwrap_or_default()) }
                            td { (p.terminal) }
                            td { (p.status_label()) }
                            td.reason { (p.reason.as_deref().unwrap_or("")) }
                            td { (p.poi_transaction_id.as_deref().unwrap_or("")) }
                            td { (p.approval_code.as_deref().unwrap_or("")) }
                            td { (p.masked_pan.as_deref().unwrap_or("")) }
                            td { @if let Some(t) = p.host_transaction_id { a href=(format!("/transactions/{t}")) { "recorded" } } @else if p.status == PaymentStatus::Approved { "not yet" } }
                            td {
                                @if sell && matches!(p.status, PaymentStatus::Pending | PaymentStatus::Unknown) {
                                    @if payments.is_running(p.id) { a href=(format!("/payments/{}", p.id)) { "under way" } }
                                    @else if p.device.is_some() {
                                        @if p.awaiting_confirmation() { (button(&authed, &format!("/payments/{}/check", p.id), "Check with the host")) }
                                        @else { "on the device" }
                                        @if may(authed.session.user.role, Need::Manage) {
                                            (button(&authed, &format!("/payments/{}/release", p.id), "Release"))
                                        }
                                    }
                                    @else { (button(&authed, &format!("/payments/{}/check", p.id), "Ask the terminal")) }
                                }
                            }
                        }
                    }
                }
            } }
        }
        @if !refunded.is_empty() {
            h2 { "Refunds and reversals" }
            div.scroll { table {
                thead { tr { th { "Started (UTC)" } th { "Kind" } th.n { "Amount" } th { "Payment's terminal txn" } th { "Status" } th { "Reason" } th { "Terminal txn" } th { "By" } th {} } }
                tbody {
                    @for r in &refunded {
                        tr {
                            td { (time_text(r.started_at)) }
                            td { (r.kind.name()) }
                            td.n { (money(r.amount, r.currency)) }
                            td { (d.payments.iter().find(|p| p.id == r.payment_id).and_then(|p| p.poi_transaction_id.as_deref()).unwrap_or("")) }
                            td { (r.status.name()) }
                            td.reason { (r.reason.as_deref().unwrap_or("")) }
                            td { (r.poi_transaction_id.as_deref().unwrap_or("")) }
                            td { (r.started_by) }
                            td {
                                @if r.status == PaymentStatus::Unknown && may(authed.session.user.role, Need::Manage) {
                                    (button(&authed, &format!("/refunds/{}/check", r.id), "Ask the terminal"))
                                }
                            }
                        }
                    }
                }
            } }
        }
        @if may(authed.session.user.role, Need::Manage) {
            @for p in d.payments.iter().filter(|p| p.status == PaymentStatus::Approved && p.device.is_none()) {
                h2 { "Refund payment " (p.poi_transaction_id.as_deref().unwrap_or("")) }
                form.filters method="post" action=(format!("/payments/{}/refund", p.id)) {
                    (csrf_field(&authed))
                    label { "What" select name="kind" {
                        option value="refund" { "Refund to the card" }
                        option value="reversal" { "Reverse (same day, whole payment)" }
                    } }
                    label { "Amount (refund; empty: all that is left)" input name="amount" inputmode="decimal" autocomplete="off" size="10"; }
                    label { "Terminal's supervisor code" input name="supervisor_code" inputmode="numeric" autocomplete="one-time-code" maxlength="6" size="8" required; }
                    button type="submit" { "Refund on " (p.terminal) }
                }
            }
        }
        @if sell && o.status == Status::Open && o.paid == 0 && !d.in_flight() {
            h2 { "Cancel" }
            (button(&authed, &format!("/orders/{id}/cancel"), "Cancel this order"))
        }
    };
    Ok(frame(&state, &authed, &title, body))
}

#[derive(Deserialize)]
struct LineForm {
    #[serde(default)]
    item: Option<i64>,
    #[serde(default)]
    barcode: String,
    #[serde(default)]
    quantity: Option<i64>,
    #[serde(default)]
    csrf: String,
}

async fn add_line(
    State(state): Shared,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
    Form(form): Form<LineForm>,
) -> Result<Response, WebError> {
    let LineForm {
        item,
        barcode,
        quantity,
        csrf,
    } = form;
    sell_on(
        &state,
        &authed,
        &csrf,
        id,
        move |tx, id, actor, now, today| {
            let barcode = barcode.trim();
            let item = if barcode.is_empty() {
                item.ok_or_else(|| SalesError::Refused("choose an item".into()))?
            } else {
                catalog::by_barcode(tx, barcode)?
                    .ok_or_else(|| SalesError::Refused(format!("no item has barcode {barcode:?}")))?
                    .id
            };
            orders::add_item(tx, id, item, quantity.unwrap_or(1), actor, now, today)?;
            Ok(id)
        },
    )
    .await
}

async fn remove_line(
    State(state): Shared,
    authed: Authed,
    ids: Result<Path<(i64, i64)>, PathRejection>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    sell_on(
        &state,
        &authed,
        &form.csrf,
        ids,
        |tx, (id, line), actor, now, _| {
            orders::remove_line(tx, id, line, actor, now)?;
            Ok(id)
        },
    )
    .await
}

/// A seller's POST that takes `step` on the path's order (cancel it,
/// undo its split) and shows it again.
fn order_step(
    step: fn(&rusqlite::Connection, i64, &str, i64) -> Result<(), SalesError>,
) -> MethodRouter<Arc<AppState>> {
    post(
        move |State(state): Shared,
              authed: Authed,
              id: Result<Path<i64>, PathRejection>,
              Form(form): Form<CsrfForm>| async move {
            sell_on(
                &state,
                &authed,
                &form.csrf,
                id,
                move |tx, id, actor, now, _| {
                    step(tx, id, actor, now)?;
                    Ok(id)
                },
            )
            .await
        },
    )
}

// ---------------------------------------------------------------- split

async fn split_page(
    State(state): Shared,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Markup, WebError> {
    need(&authed, Need::Sell)?;
    let id = path_id(id)?;
    let d: Detail = read(&state, move |c| {
        orders::detail(c, id)?.ok_or_else(|| SalesError::NotFound(format!("order {id}")))
    })
    .await?;
    let o = &d.order;
    let most = (d.lines.len() as u32).clamp(2, orders::MAX_PARTS);
    let body = html! {
        p { "Total " (amount(o.total, o.currency)) ". Each part is paid by a payment of its own." }
        h2 { "Equally" }
        form.filters method="post" action=(format!("/orders/{id}/split")) {
            (csrf_field(&authed))
            input type="hidden" name="mode" value="equal";
            label { "Parts" input name="parts" type="number" min="2" max=(orders::MAX_PARTS) value="2" size="3"; }
            button type="submit" { "Split equally" }
        }
        p { "A remainder of cents goes one each to the first parts, so the parts add up to the total exactly." }
        @if d.lines.len() > 1 {
            h2 { "By items" }
            form method="post" action=(format!("/orders/{id}/split")) {
                (csrf_field(&authed))
                input type="hidden" name="mode" value="items";
                div.scroll { table {
                    thead { tr { th { "Item" } th.n { "Amount" } th { "Part" } } }
                    tbody {
                        @for (i, l) in d.lines.iter().enumerate() {
                            tr {
                                td { (l.name) " × " (l.quantity) }
                                td.n { (l.amount().map(|a| money(a, l.currency)).unwrap_or_default()) }
                                td { select name=(format!("line_{}", l.id)) aria-label="Part" {
                                    @for n in 1..=most { option value=(n) selected[n as usize == (i % 2) + 1] { "Part " (n) } }
                                } }
                            }
                        }
                    }
                } }
                p { button type="submit" { "Split by items" } }
            }
        }
        p { a href=(format!("/orders/{id}")) { "Back to the order" } }
    };
    Ok(frame(&state, &authed, &format!("Split order {id}"), body))
}

async fn split_submit(
    State(state): Shared,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    posted(&authed, Need::Sell, field("csrf").unwrap_or(""))?;
    let id = path_id(id)?;
    let bad = |m: &str| WebError::BadRequest(m.to_string());
    match field("mode") {
        Some("equal") => {
            let n: u32 = field("parts")
                .and_then(|p| p.trim().parse().ok())
                .ok_or_else(|| bad("parts: a number"))?;
            write(&state, &authed, move |tx, actor, now, _| {
                orders::split_equal(tx, id, n, actor, now)
            })
            .await?;
        }
        Some("items") => {
            let mut assignment = Vec::new();
            for (k, v) in &fields {
                if let Some(line) = k.strip_prefix("line_") {
                    let line: i64 = line.parse().map_err(|_| bad("line: a number"))?;
                    let part: u32 = v.parse().map_err(|_| bad("part: a number"))?;
                    if assignment.len() >= 1_000 {
                        return Err(bad("too many lines"));
                    }
                    assignment.push((line, part));
                }
            }
            write(&state, &authed, move |tx, actor, now, _| {
                orders::split_by_lines(tx, id, &assignment, actor, now)
            })
            .await?;
        }
        _ => return Err(bad("mode: equal or items")),
    }
    Ok(to_order(id))
}

// ---------------------------------------------------------------- payments

#[derive(Deserialize)]
struct PayForm {
    #[serde(default)]
    terminal: String,
    #[serde(default)]
    part: Option<i64>,
    #[serde(default)]
    csrf: String,
}

async fn pay(
    State(state): Shared,
    Extension(payments): Extension<Arc<Payments>>,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
    Form(form): Form<PayForm>,
) -> Result<Response, WebError> {
    posted(&authed, Need::Sell, &form.csrf)?;
    let id = path_id(id)?;
    let started = payments
        .start(
            &state.store,
            id,
            form.part,
            form.terminal.trim(),
            &authed.session.user.name,
        )
        .await?;
    Ok(Redirect::to(&format!("/payments/{}", started.payment_id)).into_response())
}

/// A payment's status: while it runs, the terminal's progress on a page
/// that reloads itself every second; then its outcome.
async fn payment_page(
    State(state): Shared,
    Extension(payments): Extension<Arc<Payments>>,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Markup, WebError> {
    need(&authed, Need::View)?;
    let id = path_id(id)?;
    let p = read(&state, move |c| {
        orders::payment(c, id)?.ok_or_else(|| SalesError::NotFound(format!("payment {id}")))
    })
    .await?;
    let running = payments.is_running(id);
    let progress = payments.progress(id);
    let body = html! {
        div.cards {
            div.card { "Amount" b { (money(p.amount, p.currency)) } }
            div.card { "Terminal" b { (p.terminal) } }
            div.card { "Status" b #payment-status { @if running { "under way" } @else { (p.status_label()) } } }
        }
        @if running {
            h2 { "On the terminal" }
            ul #progress { @for line in &progress { li { (line) } } }
            p { "This page follows the payment by itself; the payment goes on if it is closed." }
        } @else {
            @if let Some(reason) = &p.reason { p #payment-reason { (reason) } }
            @if p.status == PaymentStatus::Approved {
                p { "Terminal transaction " (p.poi_transaction_id.as_deref().unwrap_or("")) " · approval " (p.approval_code.as_deref().unwrap_or("")) " · " (p.masked_pan.as_deref().unwrap_or("")) }
            }
        }
        p { a href=(format!("/orders/{}", p.order_id)) { "Back to the order" } }
    };
    let title = format!("Payment {id} of order {}", p.order_id);
    Ok(refreshing_frame(
        &state,
        &authed,
        &title,
        body,
        running.then_some(1),
    ))
}

async fn check(
    State(state): Shared,
    Extension(payments): Extension<Arc<Payments>>,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    posted(&authed, Need::Sell, &form.csrf)?;
    let id = path_id(id)?;
    let actor = authed.session.user.name.clone();
    let device = read(&state, move |c| {
        Ok(orders::payment(c, id)?.and_then(|p| p.device))
    })
    .await?;
    let payment = match device {
        // A device's payment is not the back office's Sale system's: the
        // host, not the terminal, says whether it was made.
        Some(_) => {
            super::payments::confirm_with_host(&state.store, state.host.as_deref(), id, &actor)
                .await?
        }
        None => payments.check(&state.store, id, &actor).await?,
    };
    Ok(to_order(payment.order_id))
}

#[derive(Deserialize)]
struct RefundForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    supervisor_code: String,
    #[serde(default)]
    csrf: String,
}

/// A refund or reversal of payment `id`: owners only, with the terminal's
/// supervisor code; answers once the terminal has.
async fn refund(
    State(state): Shared,
    Extension(payments): Extension<Arc<Payments>>,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
    Form(form): Form<RefundForm>,
) -> Result<Response, WebError> {
    posted(&authed, Need::Manage, &form.csrf)?;
    let id = path_id(id)?;
    let kind = refunds::Kind::from_name(&form.kind)
        .ok_or_else(|| WebError::BadRequest("what: refund or reversal".into()))?;
    let payment = read(&state, move |c| {
        orders::payment(c, id)?.ok_or_else(|| SalesError::NotFound(format!("payment {id}")))
    })
    .await?;
    let amount = match form.amount.trim() {
        "" => None,
        text => Some(minor_units("amount", text, payment.currency)?),
    };
    let done = payments
        .refund(
            &state.store,
            id,
            kind,
            amount,
            &form.supervisor_code,
            &authed.session.user.name,
        )
        .await?;
    Ok(to_order(done.order_id))
}

/// Releases a device's payment that was never reported or confirmed:
/// owners only ([`orders::release_device_payment`]).
async fn release(
    State(state): Shared,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    posted(&authed, Need::Manage, &form.csrf)?;
    let id = path_id(id)?;
    let payment = write(&state, &authed, move |tx, actor, now, _| {
        orders::release_device_payment(tx, id, actor, now)
    })
    .await?;
    Ok(to_order(payment.order_id))
}

async fn refund_check(
    State(state): Shared,
    Extension(payments): Extension<Arc<Payments>>,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    posted(&authed, Need::Manage, &form.csrf)?;
    let id = path_id(id)?;
    let refund = payments
        .check_refund(&state.store, id, &authed.session.user.name)
        .await?;
    Ok(to_order(refund.order_id))
}

// ---------------------------------------------------------------- devices

async fn devices_page(State(state): Shared, authed: Authed) -> Result<Markup, WebError> {
    need(&authed, Need::Manage)?;
    let list = read(&state, devices::list).await?;
    Ok(devices_frame(&state, &authed, &list, None))
}

/// The devices page; `added`: a device just registered, with its token and
/// the links that hand it to the phone app (shown this once).
fn devices_frame(
    state: &AppState,
    authed: &Authed,
    list: &[devices::Device],
    added: Option<Markup>,
) -> Markup {
    let body = html! {
        @if let Some(added) = added { (added) }
        p { "A cashier's phone running a terminal's app lists the open orders here and charges them on its terminal. Register each phone; its token is shown once. The back office marks an order paid only when the host's transaction confirms what the phone reports." }
        @if state.app_origins.is_empty() {
            p.error { "No app origin is configured: browsers cannot call the device API. Start the back office with " code { "--app-origin https://<terminal>:8443" } " for each terminal." }
        } @else {
            p { "App origins allowed: " @for (i, o) in state.app_origins.iter().enumerate() { @if i > 0 { ", " } code { (o) } } }
        }
        form.filters method="post" action="/devices" {
            (csrf_field(authed))
            label { "Name" input name="name" required maxlength=(super::MAX_TEXT) size="24" placeholder="counter phone"; }
            button type="submit" { "Register a device" }
        }
        div.scroll { table {
            thead { tr { th.n { "Id" } th { "Name" } th { "Registered (UTC)" } th { "By" } th { "Last used (UTC)" } th { "Status" } th {} } }
            tbody {
                @if list.is_empty() { tr { td colspan="7" { "No device is registered." } } }
                @for d in list {
                    tr {
                        td.n { (d.id) }
                        td { (d.name) }
                        td { (time_text(d.created_at)) }
                        td { (d.created_by) }
                        td { (d.last_used_at.map(time_text).unwrap_or_default()) }
                        td { @if let Some(r) = d.revoked_at { "revoked " (time_text(r)) } @else { "active" } }
                        td { @if d.revoked_at.is_none() { (button(authed, &format!("/devices/{}/revoke", d.id), "Revoke")) } }
                    }
                }
            }
        } }
    };
    frame(state, authed, "Devices", body)
}

#[derive(Deserialize)]
struct DeviceForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    csrf: String,
}

async fn device_add(
    State(state): Shared,
    authed: Authed,
    headers: axum::http::HeaderMap,
    Form(form): Form<DeviceForm>,
) -> Result<Markup, WebError> {
    posted(&authed, Need::Manage, &form.csrf)?;
    let (device, token) = write(&state, &authed, move |tx, actor, now, _| {
        devices::add(tx, &form.name, actor, now)
    })
    .await?;
    // The address the owner reached the back office at is the one the
    // phone is given.
    let office = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
        })
        .map(|h| format!("http://{h}"));
    let links: Vec<String> = match &office {
        Some(office) => state
            .app_origins
            .iter()
            .map(|o| format!("{o}/app/#office={office}&token={}", token.as_str()))
            .collect(),
        None => Vec::new(),
    };
    let qr = links.first().and_then(|l| {
        qrcode::QrCode::new(l.as_bytes()).ok().map(|c| {
            c.render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(200, 200)
                .build()
        })
    });
    let added = html! {
        div.card {
            h2 { "Device " (device.id) " registered: " (device.name) }
            p { "Its token, shown this once (only its SHA-256 is kept):" }
            p { code #device-token { (token.as_str()) } }
            @if let Some(office) = &office { p { "Back office address for the app: " code #device-office { (office) } } }
            @for link in &links { p { "Open on the phone: " a.device-link href=(link) { (link) } } }
            @if !links.is_empty() { p { "The QR code opens the first link." } }
            // The QR code is SVG made here from the link, not text from the request.
            @if let Some(svg) = qr { div.qr { (maud::PreEscaped(svg)) } }
        }
    };
    let list = read(&state, devices::list).await?;
    Ok(devices_frame(&state, &authed, &list, Some(added)))
}

async fn device_revoke(
    State(state): Shared,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    posted(&authed, Need::Manage, &form.csrf)?;
    let id = path_id(id)?;
    write(&state, &authed, move |tx, actor, now, _| {
        devices::revoke(tx, id, actor, now)
    })
    .await?;
    Ok(Redirect::to("/devices").into_response())
}

async fn terminals_page(
    State(state): Shared,
    Extension(payments): Extension<Arc<Payments>>,
    authed: Authed,
) -> Result<Markup, WebError> {
    need(&authed, Need::View)?;
    let (list, error) = match payments.terminals().await {
        Ok(list) => (list, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let body = html! {
        @if let Some(error) = error { p.error { (error) } }
        p { "Orders are paid on these terminals. Pair one with " code { "posnet merchant terminal pair" } " and the code the terminal shows; " code { "posnet merchant terminal remove" } " forgets one." }
        @if may(authed.session.user.role, Need::Manage) {
            p { "Cashiers' phones running a terminal's app charge open orders themselves: " a href="/devices" { "Cashier devices" } "." }
        }
        div.scroll { table {
            thead { tr { th { "Terminal (POIID)" } th { "Address" } th { "Certificate" } th { "Key" } th { "Paired" } } }
            tbody {
                @if list.is_empty() { tr { td colspan="5" { "No terminal is paired." } } }
                @for t in &list {
                    tr {
                        td { (t.poi_id) @if t.default { " (default)" } }
                        td { (t.address) }
                        td { code { (t.fingerprint) } }
                        td { (t.key_identifier) " v" (t.key_version) }
                        td { (t.paired_at) }
                    }
                }
            }
        } }
    };
    Ok(frame(&state, &authed, "Terminals", body))
}

// ---------------------------------------------------------------- catalog

async fn catalog_page(State(state): Shared, authed: Authed) -> Result<Markup, WebError> {
    need(&authed, Need::View)?;
    let (items, currency) = read(&state, |c| {
        Ok((
            catalog::list(c, None, false)?,
            catalog::default_currency(c)?,
        ))
    })
    .await?;
    let manage = may(authed.session.user.role, Need::Manage);
    let body = html! {
        div.scroll { table {
            thead { tr { th { "Kind" } th { "Code" } th { "Name" } th.n { "Price" } th { "Barcode" } th.n { "Stock" } th { "Date" } th { "Sold" } } }
            tbody {
                @if items.is_empty() { tr { td colspan="8" { "The catalog is empty." } } }
                @for i in &items {
                    tr {
                        td { (i.kind.item_label()) }
                        td { a href=(format!("/catalog/{}", i.id)) { (i.code) } }
                        td { (i.name) }
                        td.n { (money(i.price, i.currency)) }
                        td { (i.barcode.as_deref().unwrap_or("")) }
                        td.n { (i.stock.map(|s| s.to_string()).unwrap_or_default()) }
                        td { (i.valid_on.as_deref().unwrap_or("")) }
                        td { @if i.active { "yes" } @else { "no" } }
                    }
                }
            }
        } }
        @if manage {
            h2 { "Add an item" }
            form.filters method="post" action="/catalog" {
                (csrf_field(&authed))
                label { "Kind" select name="kind" { @for k in Kind::ALL { option value=(k.name()) { (k.item_label()) } } } }
                label { "Code or SKU" input name="code" required maxlength=(super::MAX_TEXT) size="10"; }
                label { "Name" input name="name" required maxlength=(super::MAX_TEXT); }
                label { "Price" input name="price" required inputmode="decimal" size="8"; }
                label { "Currency (ISO 4217 numeric)" input name="currency" value=(format!("{currency:03}")) inputmode="numeric" size="4"; }
                label { "Barcode (shop)" input name="barcode" inputmode="numeric" size="14"; }
                label { "Stock (shop)" input name="stock" type="number" min="0" size="6"; }
                label { "Low stock at (shop)" input name="low_stock" type="number" min="0" size="6"; }
                label { "Date (tickets, nights)" input name="valid_on" type="date"; }
                button type="submit" { "Add" }
            }
        }
    };
    Ok(frame(&state, &authed, "Catalog", body))
}

#[derive(Deserialize)]
struct ItemForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    barcode: String,
    #[serde(default)]
    stock: String,
    #[serde(default)]
    low_stock: String,
    #[serde(default)]
    valid_on: String,
    #[serde(default)]
    active: Option<String>,
    #[serde(default)]
    csrf: String,
}

/// A whole number typed in a form, or none when left empty.
pub(super) fn count(field: &str, text: &str) -> Result<Option<i64>, SalesError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| SalesError::Refused(format!("{field}: a whole number")))
}

async fn catalog_add(
    State(state): Shared,
    authed: Authed,
    Form(form): Form<ItemForm>,
) -> Result<Response, WebError> {
    posted(&authed, Need::Manage, &form.csrf)?;
    write(&state, &authed, move |tx, actor, now, _| {
        let kind = Kind::from_name(&form.kind).ok_or_else(|| SalesError::Refused("kind".into()))?;
        let currency: u16 = form
            .currency
            .trim()
            .parse()
            .ok()
            .filter(|c| (1..1000).contains(c))
            .ok_or_else(|| {
                SalesError::Refused("currency: the ISO 4217 number, such as 156".into())
            })?;
        let new = NewItem {
            kind,
            code: &form.code,
            name: &form.name,
            price: minor_units("price", &form.price, currency)?,
            currency,
            barcode: Some(form.barcode.as_str()),
            stock: count("stock", &form.stock)?,
            low_stock: count("low stock", &form.low_stock)?,
            valid_on: Some(form.valid_on.as_str()),
        };
        catalog::add(tx, &new, actor, now)
    })
    .await?;
    Ok(Redirect::to("/catalog").into_response())
}

async fn item_page(
    State(state): Shared,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Markup, WebError> {
    need(&authed, Need::View)?;
    let id = path_id(id)?;
    let i = read(&state, move |c| {
        catalog::item(c, id)?.ok_or_else(|| SalesError::NotFound(format!("item {id}")))
    })
    .await?;
    let (_, price) = terminal::receipt::money(i.price.unsigned_abs(), i.currency);
    let manage = may(authed.session.user.role, Need::Manage);
    let body = html! {
        div.scroll { table { tbody {
            tr { th { "Kind" } td { (i.kind.item_label()) } }
            tr { th { "Code" } td { (i.code) } }
            tr { th { "Price" } td { (money(i.price, i.currency)) } }
            @if let Some(b) = &i.barcode { tr { th { "Barcode" } td { (b) } } }
            @if let Some(s) = i.stock { tr { th { "Stock" } td { (s) } } }
            @if let Some(l) = i.low_stock { tr { th { "Low stock at" } td { (l) } } }
            @if let Some(v) = &i.valid_on { tr { th { "Date" } td { (v) } } }
            tr { th { "Sold" } td { @if i.active { "yes" } @else { "no" } } }
        } } }
        @if manage {
            h2 { "Change" }
            form.filters method="post" action=(format!("/catalog/{id}")) {
                (csrf_field(&authed))
                label { "Price" input name="price" value=(price) inputmode="decimal" size="8"; }
                @if i.kind == Kind::Retail {
                    label { "Stock" input name="stock" type="number" min="0" value=(i.stock.map(|s| s.max(0).to_string()).unwrap_or_default()) size="6"; }
                    label { "Low stock at" input name="low_stock" type="number" min="0" value=(i.low_stock.map(|s| s.to_string()).unwrap_or_default()) size="6"; }
                }
                label { "Sold" input type="checkbox" name="active" value="1" checked[i.active]; }
                button type="submit" { "Save" }
            }
        }
        p { a href="/catalog" { "Back to the catalog" } }
    };
    Ok(frame(&state, &authed, &i.name, body))
}

async fn item_update(
    State(state): Shared,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
    Form(form): Form<ItemForm>,
) -> Result<Response, WebError> {
    posted(&authed, Need::Manage, &form.csrf)?;
    let id = path_id(id)?;
    write(&state, &authed, move |tx, actor, now, _| {
        let item =
            catalog::item(tx, id)?.ok_or_else(|| SalesError::NotFound(format!("item {id}")))?;
        let price = match form.price.trim() {
            "" => None,
            p => Some(minor_units("price", p, item.currency)?),
        };
        let change = ItemChange {
            price,
            stock: count("stock", &form.stock)?,
            low_stock: count("low stock", &form.low_stock)?,
            active: Some(form.active.is_some()),
        };
        catalog::update(tx, id, &change, actor, now)
    })
    .await?;
    Ok(Redirect::to(&format!("/catalog/{id}")).into_response())
}
