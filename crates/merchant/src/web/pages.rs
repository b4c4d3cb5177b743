//! The pages' handlers.

use super::{AppState, Area, Authed, ClientAddr, WebError, chart, check_csrf, csv, frame, require};
use crate::audit;
use crate::reconcile::{self, Reconciliation};
use crate::reports::{self, Group, Totals};
use crate::session::{self, Attempt, LOGIN_COOKIE, Login, SESSION_COOKIE, SESSION_TTL};
use crate::store::{Store, StoreError, unix_now};
use axum::Form;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use serde::Deserialize;
use std::sync::Arc;

/// Transactions per page of the list.
const PAGE: i64 = 50;
/// Deepest page of the list (bounds the OFFSET a request can ask for).
const MAX_PAGE: i64 = 2_000;
/// Most rows in one CSV export.
const MAX_EXPORT: i64 = 100_000;
/// Audit rows per page.
const AUDIT_PAGE: u32 = 100;
/// Longest filter value accepted.
const MAX_PARAM: usize = 64;

type Shared = State<Arc<AppState>>;

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, WebError> {
    q.map(|Query(q)| q)
        .map_err(|e| WebError::BadRequest(e.body_text()))
}

fn path_id(p: Result<Path<i64>, PathRejection>) -> Result<i64, WebError> {
    p.map(|Path(id)| id).map_err(|_| WebError::NotFound)
}

/// `2026-01-01 08:30:00` (UTC).
pub(crate) fn time_text(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// An amount in minor units with its currency's decimals and code; negative
/// amounts get a sign.
pub(crate) fn money(amount: i64, currency: u16) -> String {
    let (code, text) = terminal::receipt::money(amount.unsigned_abs(), currency);
    let sign = if amount < 0 { "-" } else { "" };
    format!("{sign}{text} {code}")
}

/// `1 refund`, `2 refunds`.
fn counted(n: i64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The currency shown for totals: the latest transaction's (a merchant
/// has one at the host), CNY before any transaction.
fn display_currency(conn: &Connection) -> Result<u16, StoreError> {
    Ok(conn
        .query_row(
            "SELECT currency FROM transactions ORDER BY at DESC, id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(156))
}

/// Minor units of a decimal amount typed with up to `exponent` decimals.
pub(crate) fn parse_amount(text: &str, exponent: u8) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > usize::from(exponent)
        || whole.len() > 15
    {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let scale = 10i64.pow(u32::from(exponent));
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<width$}", width = usize::from(exponent))
            .parse()
            .ok()?
    };
    whole.checked_mul(scale)?.checked_add(fraction)
}

// ---------------------------------------------------------------- login

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    csrf: String,
}

fn login_form(state: &AppState, csrf: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · " (state.merchant_name) }
                style { (PreEscaped(super::CSS)) }
            }
            body {
                form.login method="post" action="/login" {
                    strong { (state.merchant_name) }
                    @if let Some(error) = error { p.error { (error) } }
                    label { "User name" input name="name" autocomplete="username" required; }
                    label { "Password" input name="password" type="password" autocomplete="current-password" required; }
                    label { "Code from the authenticator app" input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*"; }
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" { "Log in" }
                }
            }
        }
    }
}

/// The login form, with a fresh login CSRF token in a cookie and the form.
fn login_response(state: &AppState, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = session::random_token();
    (
        status,
        [(
            header::SET_COOKIE,
            session::cookie(LOGIN_COOKIE, &csrf, 3600),
        )],
        login_form(state, &csrf, error),
    )
        .into_response()
}

pub(super) async fn login_page(State(state): Shared) -> Response {
    login_response(&state, StatusCode::OK, None)
}

pub(super) async fn login_submit(
    State(state): Shared,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    let cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| session::cookie_value(c, LOGIN_COOKIE))
        .unwrap_or("");
    if !session::csrf_matches(cookie, &form.csrf) {
        return Ok(login_response(
            &state,
            StatusCode::FORBIDDEN,
            Some("The form has expired: try again."),
        ));
    }
    let app = state.clone();
    let outcome = state
        .store
        .call(move |store| {
            session::login(
                store,
                &app.limiter,
                app.password_cost,
                &Attempt {
                    name: &form.name,
                    password: &form.password,
                    code: &form.code,
                    address,
                },
                unix_now(),
            )
        })
        .await?;
    Ok(match outcome {
        Login::Started { token, .. } => {
            let mut response = Redirect::to("/").into_response();
            let headers = response.headers_mut();
            for value in [
                session::cookie(SESSION_COOKIE, &token, SESSION_TTL),
                session::cookie(LOGIN_COOKIE, "", 0),
            ] {
                if let Ok(value) = value.parse() {
                    headers.append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Login::Refused => login_response(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("The name, password or code is wrong."),
        ),
        Login::Limited => login_response(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            Some("Too many failed attempts: try again in 15 minutes."),
        ),
    })
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(super) async fn logout(
    State(state): Shared,
    authed: Authed,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    check_csrf(&authed, &form.csrf)?;
    state
        .store
        .call(move |s| session::logout(s, &authed.token, &authed.session, unix_now()))
        .await?;
    Ok((
        [(header::SET_COOKIE, session::cookie(SESSION_COOKIE, "", 0))],
        Redirect::to("/login"),
    )
        .into_response())
}

pub(super) async fn healthz(State(state): Shared) -> Response {
    let ok = state
        .store
        .call(|s| s.read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)))
        .await
        .is_ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({ "status": if ok { "ok" } else { "unavailable" } })),
    )
        .into_response()
}

// ---------------------------------------------------------------- dashboard

#[derive(Deserialize)]
pub(super) struct DayQuery {
    date: Option<String>,
}

struct Dashboard {
    currency: u16,
    totals: Totals,
    count: i64,
    declined: i64,
    by_method: Vec<(String, i64, Totals)>,
    by_terminal: Vec<(String, i64, Totals)>,
    hourly: Vec<i64>,
}

fn dashboard_data(conn: &Connection, start: i64) -> Result<Dashboard, StoreError> {
    let end = start + 86_400;
    let day = [Value::Integer(start), Value::Integer(end)];
    let (count, declined): (i64, i64) = conn.query_row(
        "SELECT count(*), count(CASE WHEN approved = 0 THEN 1 END) FROM transactions WHERE at >= ?1 AND at < ?2",
        [start, end],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(Dashboard {
        currency: display_currency(conn)?,
        totals: reports::totals(conn, "at >= ? AND at < ?", &day)?,
        count,
        declined,
        by_method: reports::grouped(conn, Group::Method, start, end)?,
        by_terminal: reports::grouped(conn, Group::Terminal, start, end)?,
        hourly: reports::net_by_bucket(conn, start, 3600, 24)?,
    })
}

fn grouped_table(title: &str, rows: &[(String, i64, Totals)], currency: u16) -> Markup {
    html! {
        h2 { (title) }
        div.scroll { table {
            thead { tr { th { (title) } th.n { "Transactions" } th.n { "Sales" } th.n { "Refunds" } th.n { "Net" } } }
            tbody {
                @if rows.is_empty() { tr { td colspan="5" { "No transactions." } } }
                @for (key, count, t) in rows {
                    tr {
                        td { (key) }
                        td.n { (count) }
                        td.n { (money(t.debit_amount, currency)) " (" (t.debit_count) ")" }
                        td.n { (money(t.credit_amount, currency)) " (" (t.credit_count) ")" }
                        td.n { (money(t.net(), currency)) }
                    }
                }
            }
        } }
    }
}

pub(super) async fn dashboard(
    State(state): Shared,
    authed: Authed,
    q: Result<Query<DayQuery>, QueryRejection>,
) -> Result<Markup, WebError> {
    require(&authed, Area::Dashboard)?;
    let q = query(q)?;
    let now = unix_now();
    let date = q
        .date
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| reports::utc_date(now));
    let start = host::api::parse_date(&date)
        .ok_or_else(|| WebError::BadRequest("date: YYYY-MM-DD".into()))?;
    let d = state
        .store
        .call(move |s| s.read(|c| dashboard_data(c, start)))
        .await?;
    let titles: Vec<String> = d
        .hourly
        .iter()
        .enumerate()
        .map(|(h, v)| format!("{h:02}:00–{:02}:00 UTC: {}", h + 1, money(*v, d.currency)))
        .collect();
    let labels: Vec<String> = (0..24).map(|h| format!("{h:02}h")).collect();
    let body = html! {
        form.filters method="get" action="/" {
            label { "Day (UTC)" input type="date" name="date" value=(date); }
            button type="submit" { "Show" }
        }
        div.cards {
            div.card { "Net sales" b { (money(d.totals.net(), d.currency)) } }
            div.card { "Sales" b { (money(d.totals.debit_amount, d.currency)) } (counted(d.totals.debit_count, "payment")) }
            div.card { "Refunds" b { (money(d.totals.credit_amount, d.currency)) } (counted(d.totals.credit_count, "refund")) }
            div.card { "Transactions" b { (d.count) } (d.declined) " declined" }
        }
        h2 { "Net sales by hour (UTC)" }
        (chart::bars(&d.hourly, &titles, &labels, 3))
        (grouped_table("Payment method", &d.by_method, d.currency))
        (grouped_table("Terminal", &d.by_terminal, d.currency))
    };
    Ok(frame(&state, &authed, &format!("Dashboard {date}"), body))
}

// ---------------------------------------------------------------- transactions

#[derive(Debug, Default, Deserialize)]
pub(super) struct Filter {
    from: Option<String>,
    to: Option<String>,
    terminal: Option<String>,
    status: Option<String>,
    min: Option<String>,
    max: Option<String>,
    last4: Option<String>,
    page: Option<i64>,
}

impl Filter {
    fn get(v: &Option<String>) -> Option<&str> {
        v.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    /// The SQL condition and its arguments.
    fn sql(&self, exponent: u8) -> Result<(String, Vec<Value>), WebError> {
        let mut sql = "1 = 1".to_string();
        let mut args = Vec::new();
        let bad = |m: &str| WebError::BadRequest(m.to_string());
        for (name, value) in [
            ("terminal", &self.terminal),
            ("status", &self.status),
            ("min", &self.min),
            ("max", &self.max),
        ] {
            if Self::get(value).is_some_and(|v| v.len() > MAX_PARAM) {
                return Err(bad(&format!("{name}: at most {MAX_PARAM} characters")));
            }
        }
        if let Some(from) = Self::get(&self.from) {
            let start = host::api::parse_date(from).ok_or_else(|| bad("from: YYYY-MM-DD"))?;
            sql.push_str(" AND at >= ?");
            args.push(Value::Integer(start));
        }
        if let Some(to) = Self::get(&self.to) {
            let start = host::api::parse_date(to).ok_or_else(|| bad("to: YYYY-MM-DD"))?;
            sql.push_str(" AND at < ?");
            args.push(Value::Integer(start + 86_400));
        }
        if let Some(terminal) = Self::get(&self.terminal) {
            sql.push_str(" AND terminal_id = ?");
            args.push(Value::Text(terminal.into()));
        }
        if let Some(status) = Self::get(&self.status) {
            sql.push_str(" AND status = ?");
            args.push(Value::Text(status.into()));
        }
        if let Some(min) = Self::get(&self.min) {
            let min =
                parse_amount(min, exponent).ok_or_else(|| bad("min: an amount such as 12.50"))?;
            sql.push_str(" AND amount >= ?");
            args.push(Value::Integer(min));
        }
        if let Some(max) = Self::get(&self.max) {
            let max =
                parse_amount(max, exponent).ok_or_else(|| bad("max: an amount such as 12.50"))?;
            sql.push_str(" AND amount <= ?");
            args.push(Value::Integer(max));
        }
        if let Some(last4) = Self::get(&self.last4) {
            if last4.len() != 4 || !last4.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("last four: four digits"));
            }
            sql.push_str(" AND last_four = ?");
            args.push(Value::Text(last4.into()));
        }
        Ok((sql, args))
    }

    /// The query string of this filter on another page.
    fn link(&self, page: i64) -> String {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for (name, value) in [
            ("from", &self.from),
            ("to", &self.to),
            ("terminal", &self.terminal),
            ("status", &self.status),
            ("min", &self.min),
            ("max", &self.max),
            ("last4", &self.last4),
        ] {
            if let Some(v) = Self::get(value) {
                pairs.push((name, v));
            }
        }
        let page = page.to_string();
        pairs.push(("page", &page));
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", url_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Percent-encodes everything but unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A row of the list and the export.
struct Row {
    id: i64,
    host_id: i64,
    at: i64,
    terminal_id: String,
    kind: String,
    status: String,
    amount: i64,
    currency: u16,
    masked_pan: Option<String>,
    last_four: Option<String>,
    method: String,
    auth_code: Option<String>,
    rrn: String,
    stan: u32,
    batch: u32,
    original_rrn: Option<String>,
}

const ROW_COLUMNS: &str = "id, host_id, at, terminal_id, kind, status, amount, currency, masked_pan, last_four, method, auth_code, rrn, stan, batch, original_rrn";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        host_id: r.get(1)?,
        at: r.get(2)?,
        terminal_id: r.get(3)?,
        kind: r.get(4)?,
        status: r.get(5)?,
        amount: r.get(6)?,
        currency: r.get(7)?,
        masked_pan: r.get(8)?,
        last_four: r.get(9)?,
        method: r.get(10)?,
        auth_code: r.get(11)?,
        rrn: r.get(12)?,
        stan: r.get(13)?,
        batch: r.get(14)?,
        original_rrn: r.get(15)?,
    })
}

fn select_rows(
    conn: &Connection,
    filter: &Filter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Row>, u8), WebError> {
    let exponent = terminal::receipt::currency_code(display_currency(conn)?).1;
    let (condition, mut args) = filter.sql(exponent)?;
    let sql = format!(
        "SELECT {ROW_COLUMNS} FROM transactions WHERE {condition} ORDER BY at DESC, id DESC LIMIT ? OFFSET ?"
    );
    args.extend([Value::Integer(limit), Value::Integer(offset)]);
    let mut stmt = conn.prepare(&sql).map_err(StoreError::from)?;
    let rows = stmt
        .query_map(params_from_iter(args), read_row)
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(StoreError::from)?;
    Ok((rows, exponent))
}

pub(super) async fn transactions(
    State(state): Shared,
    authed: Authed,
    q: Result<Query<Filter>, QueryRejection>,
) -> Result<Markup, WebError> {
    require(&authed, Area::Transactions)?;
    let filter = query(q)?;
    let page = filter.page.unwrap_or(1).clamp(1, MAX_PAGE);
    let (filter, (rows, more)) = state
        .store
        .call(move |s| {
            s.read(|c| Ok(select_rows(c, &filter, PAGE + 1, (page - 1) * PAGE)))
                .map(|r| {
                    r.map(|(mut rows, _)| {
                        let more = rows.len() as i64 > PAGE;
                        rows.truncate(PAGE as usize);
                        (filter, (rows, more))
                    })
                })
        })
        .await??;
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let export = filter.link(1);
    let body = html! {
        form.filters method="get" action="/transactions" {
            label { "From" input type="date" name="from" value=(value(&filter.from)); }
            label { "To" input type="date" name="to" value=(value(&filter.to)); }
            label { "Terminal" input name="terminal" size="9" value=(value(&filter.terminal)); }
            label { "Status" select name="status" {
                option value="" { "any" }
                @for s in ["approved", "declined", "voided", "refunded", "reversed", "completed", "cancelled", "expired", "unfunded"] {
                    option value=(s) selected[filter.status.as_deref() == Some(s)] { (s) }
                }
            } }
            label { "Min amount" input name="min" size="8" inputmode="decimal" value=(value(&filter.min)); }
            label { "Max amount" input name="max" size="8" inputmode="decimal" value=(value(&filter.max)); }
            label { "Card last four" input name="last4" size="4" maxlength="4" inputmode="numeric" value=(value(&filter.last4)); }
            button type="submit" { "Filter" }
            @if super::allowed(authed.session.user.role, Area::Export) {
                a href=(format!("/export.csv?{export}")) { "Export CSV" }
            }
        }
        div.scroll { table {
            thead { tr { th { "Time (UTC)" } th { "Terminal" } th { "Kind" } th { "Status" } th.n { "Amount" } th { "Card" } th { "Method" } th { "Auth" } th { "RRN" } } }
            tbody {
                @if rows.is_empty() { tr { td colspan="9" { "No transactions match." } } }
                @for t in &rows {
                    tr {
                        td { a href=(format!("/transactions/{}", t.id)) { (time_text(t.at)) } }
                        td { (t.terminal_id) }
                        td { (t.kind) }
                        td { (t.status) }
                        td.n { (money(t.amount, t.currency)) }
                        td { (t.masked_pan.as_deref().unwrap_or("")) }
                        td { (t.method) }
                        td { (t.auth_code.as_deref().unwrap_or("")) }
                        td { (t.rrn) }
                    }
                }
            }
        } }
        div.pager {
            @if page > 1 { a href=(format!("/transactions?{}", filter.link(page - 1))) { "← Newer" } }
            span { "Page " (page) }
            @if more && page < MAX_PAGE { a href=(format!("/transactions?{}", filter.link(page + 1))) { "Older →" } }
        }
    };
    Ok(frame(&state, &authed, "Transactions", body))
}

struct Detail {
    row: Row,
    approved: bool,
    response_code: Option<String>,
    recorded_at: i64,
    source: String,
    history: Vec<(String, String, i64)>,
}

fn detail(conn: &Connection, id: i64) -> Result<Option<Detail>, StoreError> {
    let found = conn
        .query_row(
            &format!("SELECT {ROW_COLUMNS}, approved, response_code, recorded_at, source FROM transactions WHERE id = ?1"),
            [id],
            |r| Ok((read_row(r)?, r.get(16)?, r.get(17)?, r.get(18)?, r.get(19)?)),
        )
        .optional()?;
    let Some((row, approved, response_code, recorded_at, source)) = found else {
        return Ok(None);
    };
    let mut stmt = conn.prepare(
        "SELECT status, source, at FROM transaction_status WHERE transaction_id = ?1 ORDER BY id",
    )?;
    let history = stmt
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(Some(Detail {
        row,
        approved,
        response_code,
        recorded_at,
        source,
        history,
    }))
}

pub(super) async fn transaction(
    State(state): Shared,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Markup, WebError> {
    require(&authed, Area::Transactions)?;
    let id = path_id(id)?;
    let d = state
        .store
        .call(move |s| s.read(|c| detail(c, id)))
        .await?
        .ok_or(WebError::NotFound)?;
    let t = &d.row;
    let (currency, amount_text) = terminal::receipt::money(t.amount.max(0) as u64, t.currency);
    let receipt: Vec<(&str, String)> = vec![
        ("", state.merchant_name.clone()),
        ("TERMINAL ID", t.terminal_id.clone()),
        ("DATE/TIME", format!("{} UTC", time_text(t.at))),
        ("", t.kind.to_uppercase()),
        ("CARD", t.masked_pan.clone().unwrap_or_default()),
        ("AMOUNT", format!("{currency} {amount_text}")),
        ("AUTH CODE", t.auth_code.clone().unwrap_or_default()),
        ("RRN", t.rrn.clone()),
        ("STAN", format!("{:06}", t.stan)),
        ("BATCH", format!("{:06}", t.batch)),
        ("", t.status.to_uppercase()),
    ];
    let body = html! {
        div.scroll { table { tbody {
            tr { th { "Host transaction" } td { (t.host_id) } }
            tr { th { "Time (UTC)" } td { (time_text(t.at)) } }
            tr { th { "Terminal" } td { (t.terminal_id) } }
            tr { th { "Kind" } td { (t.kind) } }
            tr { th { "Status" } td { (t.status) } }
            tr { th { "Response" } td { (d.response_code.as_deref().unwrap_or("")) @if d.approved { " (approved)" } } }
            tr { th { "Amount" } td { (money(t.amount, t.currency)) } }
            tr { th { "Card" } td { (t.masked_pan.as_deref().unwrap_or("")) } }
            tr { th { "Method" } td { (t.method) } }
            tr { th { "Auth code" } td { (t.auth_code.as_deref().unwrap_or("")) } }
            tr { th { "RRN" } td { (t.rrn) } }
            tr { th { "STAN / batch" } td { (t.stan) " / " (t.batch) } }
            @if let Some(original) = &t.original_rrn { tr { th { "Original RRN" } td { (original) } } }
            tr { th { "Recorded" } td { (time_text(d.recorded_at)) " from " (d.source) } }
        } } }
        h2 { "Status history" }
        div.scroll { table {
            thead { tr { th { "Status" } th { "From" } th { "Recorded (UTC)" } } }
            tbody { @for (status, source, at) in &d.history { tr { td { (status) } td { (source) } td { (time_text(*at)) } } } }
        } }
        h2 { "Receipt" }
        pre.receipt {
            @for (label, value) in &receipt {
                @if label.is_empty() { (value) "\n" } @else { (format!("{label:<12}{value}")) "\n" }
            }
        }
    };
    Ok(frame(
        &state,
        &authed,
        &format!("Transaction {}", t.rrn),
        body,
    ))
}

pub(super) async fn export(
    State(state): Shared,
    authed: Authed,
    q: Result<Query<Filter>, QueryRejection>,
) -> Result<Response, WebError> {
    require(&authed, Area::Export)?;
    let filter = query(q)?;
    let text = state
        .store
        .call(move |s| {
            s.read(|c| {
                Ok(select_rows(c, &filter, MAX_EXPORT, 0).map(|(rows, _)| {
                    let mut out = csv::line([
                        "host_id",
                        "time_utc",
                        "terminal_id",
                        "kind",
                        "status",
                        "amount_minor",
                        "currency",
                        "amount",
                        "masked_pan",
                        "last_four",
                        "method",
                        "auth_code",
                        "rrn",
                        "stan",
                        "batch",
                        "original_rrn",
                    ]);
                    for t in rows {
                        let (code, amount) =
                            terminal::receipt::money(t.amount.max(0) as u64, t.currency);
                        out.push_str(&csv::line([
                            t.host_id.to_string().as_str(),
                            &time_text(t.at),
                            &t.terminal_id,
                            &t.kind,
                            &t.status,
                            &t.amount.to_string(),
                            &code,
                            &amount,
                            t.masked_pan.as_deref().unwrap_or(""),
                            t.last_four.as_deref().unwrap_or(""),
                            &t.method,
                            t.auth_code.as_deref().unwrap_or(""),
                            &t.rrn,
                            &t.stan.to_string(),
                            &t.batch.to_string(),
                            t.original_rrn.as_deref().unwrap_or(""),
                        ]));
                    }
                    out
                }))
            })
        })
        .await??;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"transactions.csv\"",
            ),
        ],
        text,
    )
        .into_response())
}

// ---------------------------------------------------------------- reconciliation

pub(super) async fn reconciliations(
    State(state): Shared,
    authed: Authed,
) -> Result<Markup, WebError> {
    require(&authed, Area::Reconciliation)?;
    let runs = state
        .store
        .call(|s| s.read(|c| reconcile::recent(c, 50)))
        .await?;
    let yesterday = reports::utc_date(unix_now() - 86_400);
    let body = html! {
        @if state.host.is_some() {
            form.filters method="post" action="/reconciliation" {
                label { "Day (UTC)" input type="date" name="date" value=(yesterday) required; }
                input type="hidden" name="csrf" value=(authed.session.csrf);
                button type="submit" { "Reconcile with the host" }
            }
        } @else {
            p { "The host's API is not configured (--host-api): reconciliation cannot run." }
        }
        div.scroll { table {
            thead { tr { th { "Day" } th { "Run (UTC)" } th { "By" } th.n { "Differences" } } }
            tbody {
                @if runs.is_empty() { tr { td colspan="4" { "No reconciliation yet." } } }
                @for r in &runs {
                    tr {
                        td { a href=(format!("/reconciliation/{}", r.id)) { (r.date) } }
                        td { (time_text(r.run_at)) }
                        td { (r.actor) }
                        td.n { (r.differences) }
                    }
                }
            }
        } }
    };
    Ok(frame(&state, &authed, "Reconciliation", body))
}

#[derive(Deserialize)]
pub(super) struct ReconcileForm {
    #[serde(default)]
    date: String,
    #[serde(default)]
    csrf: String,
}

pub(super) async fn reconcile_run(
    State(state): Shared,
    authed: Authed,
    Form(form): Form<ReconcileForm>,
) -> Result<Response, WebError> {
    require(&authed, Area::Reconciliation)?;
    check_csrf(&authed, &form.csrf)?;
    let api = state
        .host
        .clone()
        .ok_or_else(|| WebError::BadRequest("the host's API is not configured".into()))?;
    let result = reconcile::reconcile(
        &state.store,
        &api,
        form.date.trim(),
        &authed.session.user.name,
    )
    .await;
    match result {
        Ok(r) => Ok(Redirect::to(&format!("/reconciliation/{}", r.id)).into_response()),
        Err(reconcile::ReconcileError::Date(d)) => {
            Err(WebError::BadRequest(format!("date {d:?}: YYYY-MM-DD")))
        }
        Err(reconcile::ReconcileError::Store(e)) => Err(WebError::Store(e)),
        Err(e) => Err(WebError::Host(e.to_string())),
    }
}

fn reconciliation_body(r: &Reconciliation) -> Markup {
    html! {
        div.cards {
            div.card { "At the host" b { (r.host_count) } }
            div.card { "Here" b { (r.local_count) } }
            div.card { "Matched" b { (r.matched) } }
            div.card { "Settled batches" b { (r.batches) } }
            div.card { "Differences" b { (r.differences.len()) } }
        }
        p { "Run " (time_text(r.run_at)) " UTC by " (r.actor) "." }
        div.scroll { table {
            thead { tr { th { "Difference" } th { "Terminal" } th.n { "Batch" } th { "RRN" } th { "Here" } th { "At the host" } } }
            tbody {
                @if r.differences.is_empty() { tr { td colspan="6" { "None: both sides agree." } } }
                @for d in &r.differences {
                    tr {
                        td { (d.kind.name().replace('_', " ")) }
                        td { (d.terminal_id) }
                        td.n { (d.batch) }
                        td { (d.rrn.as_deref().unwrap_or("")) }
                        td { (d.here.as_deref().unwrap_or("—")) }
                        td { (d.host.as_deref().unwrap_or("—")) }
                    }
                }
            }
        } }
    }
}

pub(super) async fn reconciliation(
    State(state): Shared,
    authed: Authed,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Markup, WebError> {
    require(&authed, Area::Reconciliation)?;
    let id = path_id(id)?;
    let r = state
        .store
        .call(move |s| s.read(|c| reconcile::load(c, id)))
        .await?
        .ok_or(WebError::NotFound)?;
    Ok(frame(
        &state,
        &authed,
        &format!("Reconciliation of {}", r.date),
        reconciliation_body(&r),
    ))
}

// ---------------------------------------------------------------- audit

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    before: Option<i64>,
    verify: Option<u8>,
}

pub(super) async fn audit(
    State(state): Shared,
    authed: Authed,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Markup, WebError> {
    require(&authed, Area::Audit)?;
    let q = query(q)?;
    let (rows, verification) = state
        .store
        .call(move |s: &Store| {
            s.read(|c| {
                let rows = audit::page(c, q.before, AUDIT_PAGE)?;
                let verification = match q.verify {
                    Some(_) => Some(audit::verify(c)?),
                    None => None,
                };
                Ok((rows, verification))
            })
        })
        .await?;
    let oldest = rows.last().map(|r| r.id);
    let body = html! {
        @match &verification {
            None => p { a href="/audit?verify=1" { "Verify the hash chain" } },
            Some(v) => @match &v.broken {
                None => p { "The chain holds: " (v.rows) " rows, head " code { (v.head) } "." },
                Some(b) => p.error { "The chain breaks at row " (b.id) ": " (b.reason) "." },
            },
        }
        div.scroll { table {
            thead { tr { th.n { "#" } th { "When (UTC)" } th { "Who" } th { "What" } th { "Subject" } th { "Before" } th { "After" } } }
            tbody {
                @if rows.is_empty() { tr { td colspan="7" { "Nothing recorded yet." } } }
                @for r in &rows {
                    tr {
                        td.n { (r.id) }
                        td { (time_text(r.at)) }
                        td { (r.actor) }
                        td { (r.action) }
                        td { (r.subject) }
                        td { code { (r.before.as_deref().unwrap_or("")) } }
                        td { code { (r.after.as_deref().unwrap_or("")) } }
                    }
                }
            }
        } }
        @if let Some(oldest) = oldest.filter(|_| rows.len() as u32 == AUDIT_PAGE) {
            div.pager { a href=(format!("/audit?before={oldest}")) { "Older →" } }
        }
    };
    Ok(frame(&state, &authed, "Audit log", body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_with_the_currency_decimals() {
        assert_eq!(parse_amount("12.50", 2), Some(1250));
        assert_eq!(parse_amount("12.5", 2), Some(1250));
        assert_eq!(parse_amount("12", 2), Some(1200));
        assert_eq!(parse_amount(".5", 2), Some(50));
        assert_eq!(parse_amount("1250", 0), Some(1250));
        assert_eq!(parse_amount("12.505", 2), None);
        assert_eq!(parse_amount("-1", 2), None);
        assert_eq!(parse_amount("", 2), None);
        assert_eq!(parse_amount(".", 2), None);
        assert_eq!(parse_amount("9999999999999999", 2), None);
        assert_eq!(money(-1250, 156), "-12.50 CNY");
        assert_eq!(url_encode("a b&c"), "a%20b%26c");
    }
}
