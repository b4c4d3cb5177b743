//! The terminal's screen as a web page, for demonstrations and browser
//! tests: what the terminal displays, whether it is online, the stored
//! messages awaiting the host, the recent transactions with their receipts,
//! and a sale with a card of the test catalog. One server-rendered page and
//! a small JSON API (which the `posnet terminal` commands use too):
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/` | the page |
//! | GET | `/api/status` | display, online, host, pending stored messages |
//! | GET | `/api/transactions?limit=N` | recent transactions, newest first |
//! | GET | `/api/transactions/{id}` | one transaction, its history and e-receipt |
//! | POST | `/api/sale` | `{"amount": minor units, "card": catalog name}` or `{"amount": ..., "qr": payment code}` |
//! | POST | `/api/settle` | settle the open batch |
//! | GET | `/api/receipt/{id}?copy=customer\|merchant&format=text\|escpos\|json` | a receipt |
//!
//! With the ECR interface ([`router_with_ecr`]), also:
//!
//! | method | path | |
//! |---|---|---|
//! | POST | `/api/present` | `{"card": catalog name}` or `{"qr": payment code}`: present a card to the nexo payment waiting for one (409 when none waits) |
//! | GET | `/api/pairings` | the pairings, newest first |
//! | POST | `/api/pairings` | `{"label": "..."}`: pair a phone; answers its pairing code, fingerprint and QR code (SVG and text) |
//! | POST | `/api/pairings/revoke` | `{"key_identifier": "..."}`: revoke a pairing |
//! | POST | `/api/supervisor` | a fresh supervisor TOTP secret; answers its `otpauth://` URI, once |
//!
//! It listens on loopback by default. Every request must name this server
//! in its `Host` header (a page of another site resolved to 127.0.0.1 is
//! refused: DNS rebinding), and a POST must be `application/json` with no
//! `Origin` or this page's own (a form or script of another site cannot
//! start a sale: cross-site request forgery).

use crate::card::{CATALOG, CardError, SimulatedReader};
use crate::ecr::{EcrError, EcrService, PresentError};
use crate::engine::{Method, TxnKind, TxnRequest};
use crate::journal::{JournalError, TxnRecord};
use crate::receipt::{self, ReceiptCopy};
use crate::runtime::Terminal;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method as HttpMethod, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest request body: a sale is a few dozen bytes.
const MAX_BODY: usize = 4 * 1024;
/// Transactions listed by default and at most.
const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 200;

/// A request the screen could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ScreenError {
    /// No such transaction in the journal.
    #[error("no transaction {0}")]
    NotFound(i64),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request does not come from this page.
    #[error("{0}")]
    Forbidden(String),
    /// A POST that is not JSON.
    #[error("POST bodies must be application/json")]
    NotJson,
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Settlement did not complete.
    #[error("settlement: {0}")]
    Settlement(String),
    /// The request conflicts with the terminal's state.
    #[error("{0}")]
    Conflict(String),
    /// The ECR interface failed.
    #[error(transparent)]
    Ecr(#[from] EcrError),
}

impl IntoResponse for ScreenError {
    fn into_response(self) -> Response {
        let status = match &self {
            ScreenError::NotFound(_) => StatusCode::NOT_FOUND,
            ScreenError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ScreenError::Forbidden(_) => StatusCode::FORBIDDEN,
            ScreenError::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ScreenError::Journal(e) => {
                tracing::error!("screen: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ScreenError::Settlement(_) => StatusCode::BAD_GATEWAY,
            ScreenError::Conflict(_) => StatusCode::CONFLICT,
            ScreenError::Ecr(EcrError::Label | EcrError::NoEndpoint) => StatusCode::BAD_REQUEST,
            ScreenError::Ecr(e) => {
                tracing::error!("screen: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (
            status,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// Which `Host` headers name this server.
#[derive(Debug, Clone)]
struct Hosts(Option<Vec<String>>);

impl Hosts {
    /// Bound to loopback: the address and `localhost` with its port. Bound
    /// to one address: that address. Bound to every interface (the operator
    /// chose a trusted network): any host, and a POST's origin must still
    /// be the host it was sent to.
    fn for_address(addr: SocketAddr) -> Self {
        if addr.ip().is_unspecified() {
            return Hosts(None);
        }
        let mut names = vec![addr.to_string()];
        if addr.ip().is_loopback() {
            names.push(format!("localhost:{}", addr.port()));
        }
        Hosts(Some(names))
    }

    fn allows(&self, host: &str) -> bool {
        match &self.0 {
            None => true,
            Some(names) => names.iter().any(|n| n.eq_ignore_ascii_case(host)),
        }
    }
}

#[derive(Clone)]
struct App {
    terminal: Terminal,
    ecr: Option<EcrService>,
    hosts: Arc<Hosts>,
}

/// Serves the screen on `listener` until `shutdown` resolves, then lets
/// requests in progress (a sale) finish.
pub async fn serve(
    terminal: Terminal,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(terminal, listener.local_addr()?);
    axum::serve(no_delay(listener), app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// `listener` with Nagle's algorithm off on every connection: an answer in
/// several writes must not wait for the client's delayed ACK.
fn no_delay(listener: tokio::net::TcpListener) -> impl axum::serve::Listener<Addr = SocketAddr> {
    listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    })
}

/// [`serve`], with the ECR interface's controls (card presentation,
/// pairing, supervisor secret).
pub async fn serve_with_ecr(
    ecr: EcrService,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router_with_ecr(ecr, listener.local_addr()?);
    axum::serve(no_delay(listener), app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The screen's routes for a server listening on `addr`.
pub fn router(terminal: Terminal, addr: SocketAddr) -> Router {
    routes(terminal, None, addr)
}

/// The screen's routes with the ECR interface's, for a server listening
/// on `addr`.
pub fn router_with_ecr(ecr: EcrService, addr: SocketAddr) -> Router {
    routes(ecr.terminal().clone(), Some(ecr), addr)
}

fn routes(terminal: Terminal, ecr: Option<EcrService>, addr: SocketAddr) -> Router {
    let app = App {
        terminal,
        ecr,
        hosts: Arc::new(Hosts::for_address(addr)),
    };
    Router::new()
        .route("/", get(page))
        .route("/fragments/transactions", get(transaction_rows))
        .route("/api/status", get(status))
        .route("/api/transactions", get(transactions))
        .route("/api/transactions/{id}", get(transaction))
        .route("/api/sale", post(sale))
        .route("/api/settle", post(settle))
        .route("/api/receipt/{id}", get(receipt))
        .route("/api/present", post(present))
        .route("/api/pairings", get(pairings).post(pair))
        .route("/api/pairings/revoke", post(revoke))
        .route("/api/supervisor", post(supervisor))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// Refuses requests for another host name, and POSTs that are not JSON or
/// come from another origin.
async fn guard(State(app): State<App>, request: Request, next: Next) -> Response {
    match check(&app.hosts, request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

fn check(hosts: &Hosts, method: &HttpMethod, headers: &HeaderMap) -> Result<(), ScreenError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| ScreenError::Forbidden("request without a Host header".into()))?;
    if !hosts.allows(host) {
        return Err(ScreenError::Forbidden(format!(
            "this terminal does not answer to host {host:?}"
        )));
    }
    if method == HttpMethod::GET || method == HttpMethod::HEAD {
        return Ok(());
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ScreenError::NotJson);
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let own = format!("http://{host}");
        if !origin.to_str().is_ok_and(|o| o.eq_ignore_ascii_case(&own)) {
            return Err(ScreenError::Forbidden(
                "cross-origin requests are refused".into(),
            ));
        }
    }
    Ok(())
}

/// What `/api/status` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreenStatus {
    /// Field 41.
    pub terminal_id: String,
    /// Field 42.
    pub merchant_id: String,
    /// From the host's parameters, once signed on.
    pub merchant_name: Option<String>,
    /// ISO 4217 alphabetic code of the terminal's currency.
    pub currency: Option<String>,
    /// Its decimals.
    pub decimals: Option<u8>,
    /// Connected and signed on.
    pub online: bool,
    /// The host it is connected to.
    pub host: Option<String>,
    /// Stored reversals and advices awaiting the host.
    pub pending_saf: usize,
    /// What the terminal displays.
    pub display: String,
}

/// The status without waiting for the terminal's lock, which a payment
/// holds while it waits for the host: the page shows progress meanwhile.
fn current_status(terminal: &Terminal) -> ScreenStatus {
    let s = terminal.status().borrow().clone();
    let currency = s.currency.map(receipt::currency_code);
    ScreenStatus {
        terminal_id: terminal.terminal_id().to_string(),
        merchant_id: terminal.merchant_id().to_string(),
        merchant_name: s.merchant_name,
        decimals: currency.as_ref().map(|c| c.1),
        currency: currency.map(|c| c.0),
        online: s.online,
        host: s.host,
        pending_saf: s.pending_saf,
        display: s.display,
    }
}

async fn status(State(app): State<App>) -> axum::Json<ScreenStatus> {
    axum::Json(current_status(&app.terminal))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<u32>,
}

async fn transactions(
    State(app): State<App>,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<Vec<TxnRecord>>, ScreenError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    Ok(axum::Json(app.terminal.history(limit).await?))
}

/// One step of a transaction's history.
#[derive(Debug, Serialize)]
struct HistoryEntry {
    state: String,
    note: String,
    at: i64,
}

async fn transaction(
    State(app): State<App>,
    Path(id): Path<i64>,
) -> Result<axum::Json<serde_json::Value>, ScreenError> {
    let (txn, history) = app
        .terminal
        .transaction(id)
        .await?
        .ok_or(ScreenError::NotFound(id))?;
    let receipt = app
        .terminal
        .receipt(id, ReceiptCopy::Customer)
        .await?
        .ok_or(ScreenError::NotFound(id))?;
    let history: Vec<HistoryEntry> = history
        .into_iter()
        .map(|(state, note, at)| HistoryEntry { state, note, at })
        .collect();
    Ok(axum::Json(serde_json::json!({
        "transaction": txn,
        "history": history,
        "receipt": receipt.electronic(),
    })))
}

/// A sale from the page or `posnet terminal pay`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SaleRequest {
    /// Minor units.
    pub amount: u64,
    /// A card of the test catalog (ignored when `qr` is given).
    #[serde(default)]
    pub card: String,
    /// A wallet payment code to scan instead of a card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr: Option<String>,
}

async fn sale(
    State(app): State<App>,
    axum::Json(req): axum::Json<SaleRequest>,
) -> Result<axum::Json<serde_json::Value>, ScreenError> {
    let mut reader = SimulatedReader::default();
    match &req.qr {
        Some(code) => reader.scan(code),
        None => reader.choose(&req.card).map_err(|e| match e {
            CardError::Unreadable(why) => ScreenError::BadRequest(format!(
                "{why}; the catalog has {}",
                CATALOG
                    .iter()
                    .map(|c| c.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            other => ScreenError::BadRequest(other.to_string()),
        })?,
    }
    let txn = TxnRequest {
        kind: TxnKind::Sale,
        amount: req.amount,
        method: Method::Card,
        original: None,
    };
    let result = app.terminal.transact_with_reader(txn, &mut reader).await?;
    let receipt = app
        .terminal
        .receipt(result.id, ReceiptCopy::Customer)
        .await?
        .ok_or(ScreenError::NotFound(result.id))?;
    let e = receipt.electronic();
    Ok(axum::Json(serde_json::json!({
        "id": result.id,
        "state": result.outcome.state(),
        "result": e.result,
        "stan": result.stan,
        "batch": result.batch,
        "receipt": e,
    })))
}

async fn settle(State(app): State<App>) -> Result<Response, ScreenError> {
    let settlement = app
        .terminal
        .settle()
        .await
        .map_err(ScreenError::Settlement)?;
    Ok(axum::Json(settlement).into_response())
}

#[derive(Deserialize)]
struct ReceiptQuery {
    copy: Option<String>,
    format: Option<String>,
}

async fn receipt(
    State(app): State<App>,
    Path(id): Path<i64>,
    Query(q): Query<ReceiptQuery>,
) -> Result<Response, ScreenError> {
    let copy_name = q.copy.as_deref().unwrap_or("customer");
    let copy = ReceiptCopy::from_name(copy_name)
        .ok_or_else(|| ScreenError::BadRequest("copy must be customer or merchant".into()))?;
    let receipt = app
        .terminal
        .receipt(id, copy)
        .await?
        .ok_or(ScreenError::NotFound(id))?;
    Ok(match q.format.as_deref().unwrap_or("text") {
        "text" => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            receipt.text(),
        )
            .into_response(),
        "escpos" => {
            let disposition = format!("attachment; filename=\"receipt-{id}-{copy_name}.bin\"");
            (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    ),
                    (
                        header::CONTENT_DISPOSITION,
                        HeaderValue::from_str(&disposition)
                            .map_err(|e| ScreenError::BadRequest(e.to_string()))?,
                    ),
                ],
                receipt.escpos(),
            )
                .into_response()
        }
        "json" => axum::Json(receipt.electronic()).into_response(),
        _ => {
            return Err(ScreenError::BadRequest(
                "format must be text, escpos or json".into(),
            ));
        }
    })
}

impl App {
    fn ecr(&self) -> Result<&EcrService, ScreenError> {
        self.ecr.as_ref().ok_or_else(|| {
            ScreenError::BadRequest("this terminal runs without its ECR interface".into())
        })
    }
}

/// A card presented to the nexo payment waiting for one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresentRequest {
    /// A card of the test catalog (ignored when `qr` is given).
    #[serde(default)]
    pub card: String,
    /// A wallet payment code to scan instead of a card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr: Option<String>,
}

async fn present(
    State(app): State<App>,
    axum::Json(req): axum::Json<PresentRequest>,
) -> Result<axum::Json<serde_json::Value>, ScreenError> {
    let ecr = app.ecr()?;
    let (presented, what) = match &req.qr {
        Some(code) => (ecr.present_code(code), "payment code".to_owned()),
        None => (ecr.present_card(&req.card), req.card.clone()),
    };
    match presented {
        Ok(()) => Ok(axum::Json(serde_json::json!({ "presented": what }))),
        Err(e @ (PresentError::UnknownCard(_) | PresentError::NotACode(_))) => {
            Err(ScreenError::BadRequest(e.to_string()))
        }
        Err(e @ PresentError::NobodyWaiting) => Err(ScreenError::Conflict(e.to_string())),
    }
}

/// A pairing to make.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairRequest {
    /// What to call the phone or register.
    pub label: String,
}

/// A pairing code as the screen shows it (`POST /api/pairings`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairAnswer {
    /// The `posnet-pair://` code (it carries the passphrase: a secret).
    pub code: String,
    /// SHA-256 of the endpoint's certificate, `AB:CD:...`.
    pub fingerprint: String,
    /// nexo `KeyIdentifier`.
    pub key_identifier: String,
    /// nexo `KeyVersion`.
    pub key_version: u64,
    /// The code as a QR code in SVG.
    pub qr_svg: String,
    /// The code as a QR code in text (two rows a line), for terminals.
    pub qr_text: String,
}

/// `text` as a QR code: SVG and text. A pairing code (at most 1 KiB) always fits.
fn qr(text: &str) -> Result<(String, String), ScreenError> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| ScreenError::BadRequest(format!("QR code: {e}")))?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build();
    Ok((svg, text_of(&code)))
}

fn text_of(code: &qrcode::QrCode) -> String {
    code.render::<qrcode::render::unicode::Dense1x2>()
        .quiet_zone(true)
        .build()
}

/// `text` as a QR code drawn with Unicode half blocks, for a terminal
/// window (pairing codes, wallet payment codes).
pub fn text_qr(text: &str) -> Result<String, qrcode::types::QrError> {
    Ok(text_of(&qrcode::QrCode::new(text.as_bytes())?))
}

async fn pair(
    State(app): State<App>,
    axum::Json(req): axum::Json<PairRequest>,
) -> Result<axum::Json<PairAnswer>, ScreenError> {
    let pairing = app.ecr()?.pair(&req.label)?;
    let code = pairing.to_code();
    let (qr_svg, qr_text) = qr(&code)?;
    Ok(axum::Json(PairAnswer {
        fingerprint: pairing.fingerprint(),
        key_identifier: pairing.key_identifier.clone(),
        key_version: pairing.key_version,
        code,
        qr_svg,
        qr_text,
    }))
}

async fn pairings(
    State(app): State<App>,
) -> Result<axum::Json<Vec<crate::ecr::store::PairingInfo>>, ScreenError> {
    Ok(axum::Json(app.ecr()?.pairings()?))
}

/// A pairing to revoke.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeRequest {
    /// Its `KeyIdentifier`.
    pub key_identifier: String,
}

async fn revoke(
    State(app): State<App>,
    axum::Json(req): axum::Json<RevokeRequest>,
) -> Result<axum::Json<serde_json::Value>, ScreenError> {
    let revoked = app.ecr()?.revoke(&req.key_identifier)?;
    if revoked == 0 {
        return Err(ScreenError::BadRequest(format!(
            "no active pairing with key identifier {:?}",
            req.key_identifier
        )));
    }
    Ok(axum::Json(serde_json::json!({ "revoked": revoked })))
}

async fn supervisor(State(app): State<App>) -> Result<axum::Json<serde_json::Value>, ScreenError> {
    let uri = app.ecr()?.set_supervisor()?;
    let (_, qr_text) = qr(&uri)?;
    Ok(axum::Json(
        serde_json::json!({ "otpauth": uri.as_str(), "qr_text": qr_text }),
    ))
}

/// Escapes text for HTML element content and quoted attributes.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The rows of the transaction table (the page's first render and its
/// updates use the same markup).
fn rows(txns: &[TxnRecord]) -> String {
    let mut html = String::new();
    if txns.is_empty() {
        html.push_str("<tr><td colspan=\"7\">No transactions yet.</td></tr>");
    }
    for t in txns {
        let (currency, amount) = receipt::money(t.amount, t.currency);
        let _ = write!(
            html,
            "<tr><td>{id}</td><td>{time}</td><td>{kind}</td><td class=\"num\">{currency} {amount}</td>\
             <td>{pan}</td><td class=\"state-{state}\">{result}</td>\
             <td><a href=\"/api/receipt/{id}?copy=customer\">customer</a> \
             <a href=\"/api/receipt/{id}?copy=merchant\">merchant</a></td></tr>",
            id = t.id,
            time = esc(&time_of_day(t.created_at)),
            kind = esc(&t.kind),
            currency = esc(&currency),
            amount = esc(&amount),
            pan = esc(&receipt::mask(&t.masked_pan)),
            state = esc(&t.state),
            result = esc(&receipt::result_text(t)),
        );
    }
    html
}

fn time_of_day(unix: i64) -> String {
    let t = receipt::utc(unix);
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

async fn transaction_rows(State(app): State<App>) -> Result<Response, ScreenError> {
    let txns = app.terminal.history(DEFAULT_LIMIT).await?;
    Ok(Html(rows(&txns)).into_response())
}

fn nonce() -> String {
    let mut b = [0u8; 16];
    // Without randomness a fixed nonce still allows only this page's script.
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

async fn page(State(app): State<App>) -> Result<Response, ScreenError> {
    let s = current_status(&app.terminal);
    let txns = app.terminal.history(DEFAULT_LIMIT).await?;
    let nonce = nonce();
    let mut cards = String::new();
    for c in CATALOG {
        let _ = write!(
            cards,
            "<button type=\"button\" data-card=\"{name}\" title=\"{desc}\">{name}<small>{pan}</small></button>",
            name = esc(c.name),
            desc = esc(c.description),
            pan = esc(&receipt::mask(c.pan)),
        );
    }
    let nexo = if app.ecr.is_some() {
        let mut options = String::new();
        for c in CATALOG {
            let _ = write!(options, "<option>{}</option>", esc(c.name));
        }
        format!(
            r#"<section id="nexo">
<h2>Phones and cash registers</h2>
<p><label>Card for the nexo payment waiting <select id="present-card">{options}</select></label> <button type="button" id="present">Present card</button></p>
<p><label>or a wallet's payment code <input id="present-qr" inputmode="numeric" maxlength="19" size="21"></label> <button type="button" id="present-scan">Scan code</button></p>
<p><button type="button" id="pair">Pair a phone</button></p>
<p id="nexo-error" role="alert"></p>
<div id="pairing" hidden><div id="pairing-qr"></div><p>Certificate fingerprint <code id="pairing-fp"></code></p><p>Pairing code (a secret) <code id="pairing-code"></code></p></div>
</section>"#
        )
    } else {
        String::new()
    };
    let title = s
        .merchant_name
        .clone()
        .unwrap_or_else(|| s.merchant_id.clone());
    let currency = s.currency.clone().unwrap_or_default();
    let html = format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>posnet terminal {tid}</title>
<style nonce="{nonce}">
body {{ font-family: system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem; color: #222; }}
.screen {{ background: #0b3d2e; color: #e8fff4; border-radius: .5rem; padding: 1rem 1.5rem; }}
#display {{ font-size: 2rem; font-family: ui-monospace, monospace; min-height: 2.5rem; }}
#cards button {{ margin: .25rem; padding: .5rem .75rem; }}
#cards small {{ display: block; font-family: ui-monospace, monospace; opacity: .7; }}
pre {{ background: #f6f6f6; padding: .75rem; display: inline-block; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .25rem .5rem; text-align: left; }}
.num {{ text-align: right; }}
.state-approved, .state-approved_offline {{ color: #0a6b2e; }}
.state-declined, .state-failed, .state-reversed {{ color: #a31515; }}
#error {{ color: #a31515; }}
</style>
</head>
<body>
<header><h1>{title}</h1><p>Terminal <b>{tid}</b> &middot; merchant {mid}</p></header>
<section class="screen" aria-live="polite">
<div id="display">{display}</div>
<p><span id="online">{online}</span> &middot; host <span id="host">{host}</span> &middot; <span id="pending">{pending}</span> stored messages awaiting the host</p>
</section>
<section>
<h2>Sale</h2>
<label>Amount <input id="amount" inputmode="decimal" value="12.50" size="10"> <span id="currency">{currency}</span></label>
<p>Present a test card:</p>
<div id="cards">{cards}</div>
<p><label>or scan a wallet's payment code <input id="sale-qr" inputmode="numeric" maxlength="19" size="21"></label> <button type="button" id="sale-scan">Scan code</button></p>
<p id="error" role="alert"></p>
<div id="result" hidden><h3 id="result-text"></h3><pre id="receipt"></pre></div>
</section>
{nexo}
<section>
<h2>Recent transactions</h2>
<table><thead><tr><th>#</th><th>Time (UTC)</th><th>Kind</th><th class="num">Amount</th><th>Card</th><th>Result</th><th>Receipt</th></tr></thead>
<tbody id="txns">{rows}</tbody></table>
</section>
<script nonce="{nonce}">
"use strict";
let decimals = {decimals};
let last = "";
const $ = (id) => document.getElementById(id);
function minorUnits(text) {{
  const m = /^\s*(\d+)(?:\.(\d*))?\s*$/.exec(text);
  if (!m || (m[2] || "").length > decimals) return null;
  const frac = (m[2] || "").padEnd(decimals, "0");
  const n = Number(m[1] + frac);
  return Number.isSafeInteger(n) ? n : null;
}}
// Status and rows are fetched apart: the rows wait while a payment runs,
// the status never does.
let statusBusy = false;
let rowsBusy = false;
async function refreshRows() {{
  if (rowsBusy) return;
  rowsBusy = true;
  try {{
    $("txns").innerHTML = await (await fetch("/fragments/transactions")).text();
  }} catch (e) {{
    last = "";
  }} finally {{
    rowsBusy = false;
  }}
}}
async function refresh() {{
  if (statusBusy) return;
  statusBusy = true;
  try {{
    const s = await (await fetch("/api/status")).json();
    $("display").textContent = s.display;
    $("online").textContent = s.online ? "Online" : "Offline";
    $("host").textContent = s.host || "none";
    $("pending").textContent = s.pending_saf;
    if (s.currency) {{ $("currency").textContent = s.currency; decimals = s.decimals; }}
    const key = JSON.stringify(s);
    if (key !== last) {{
      last = key;
      refreshRows();
    }}
  }} catch (e) {{
    $("online").textContent = "Screen disconnected";
  }} finally {{
    statusBusy = false;
  }}
}}
async function pay(how) {{
  const amount = minorUnits($("amount").value);
  $("error").textContent = "";
  if (amount === null || amount === 0) {{ $("error").textContent = "Enter an amount with at most " + decimals + " decimals."; return; }}
  const buttons = document.querySelectorAll("#cards button, #sale-scan");
  buttons.forEach((b) => b.disabled = true);
  try {{
    const r = await fetch("/api/sale", {{ method: "POST", headers: {{ "Content-Type": "application/json" }}, body: JSON.stringify(Object.assign({{ amount }}, how)) }});
    const body = await r.json();
    if (!r.ok) {{ $("error").textContent = body.error; return; }}
    $("result").hidden = false;
    $("result-text").textContent = body.result;
    $("receipt").textContent = body.receipt.lines.join("\n");
  }} catch (e) {{
    $("error").textContent = "The terminal did not answer: " + e;
  }} finally {{
    buttons.forEach((b) => b.disabled = false);
    last = "";
    refresh();
  }}
}}
document.querySelectorAll("#cards button").forEach((b) => b.addEventListener("click", () => pay({{ card: b.dataset.card }})));
$("sale-scan").addEventListener("click", () => pay({{ qr: $("sale-qr").value.trim() }}));
async function post(path, body) {{
  const r = await fetch(path, {{ method: "POST", headers: {{ "Content-Type": "application/json" }}, body: JSON.stringify(body) }});
  const answer = await r.json();
  if (!r.ok) throw new Error(answer.error);
  return answer;
}}
if ($("present")) {{
  $("present").addEventListener("click", async () => {{
    $("nexo-error").textContent = "";
    try {{ await post("/api/present", {{ card: $("present-card").value }}); }}
    catch (e) {{ $("nexo-error").textContent = e.message; }}
  }});
  $("present-scan").addEventListener("click", async () => {{
    $("nexo-error").textContent = "";
    try {{ await post("/api/present", {{ qr: $("present-qr").value.trim() }}); }}
    catch (e) {{ $("nexo-error").textContent = e.message; }}
  }});
  $("pair").addEventListener("click", async () => {{
    $("nexo-error").textContent = "";
    try {{
      const p = await post("/api/pairings", {{ label: "screen " + new Date().toISOString() }});
      $("pairing-qr").innerHTML = p.qr_svg;
      $("pairing-fp").textContent = p.fingerprint;
      $("pairing-code").textContent = p.code;
      $("pairing").hidden = false;
    }} catch (e) {{ $("nexo-error").textContent = e.message; }}
  }});
}}
setInterval(refresh, 1000);
</script>
</body>
</html>
"##,
        tid = esc(&s.terminal_id),
        mid = esc(&s.merchant_id),
        title = esc(&title),
        display = esc(&s.display),
        online = if s.online { "Online" } else { "Offline" },
        host = esc(s.host.as_deref().unwrap_or("none")),
        pending = s.pending_saf,
        currency = esc(&currency),
        decimals = s.decimals.unwrap_or(2),
        rows = rows(&txns),
        nexo = nexo,
    );
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let mut response = Html(html).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn loopback_hosts_only() {
        let hosts = Hosts::for_address("127.0.0.1:8480".parse().unwrap());
        let get = |host: &str| check(&hosts, &HttpMethod::GET, &headers(&[(header::HOST, host)]));
        assert!(get("127.0.0.1:8480").is_ok());
        assert!(get("localhost:8480").is_ok());
        assert!(get("LOCALHOST:8480").is_ok());
        assert!(matches!(
            get("evil.example:8480"),
            Err(ScreenError::Forbidden(_))
        ));
        assert!(matches!(
            get("127.0.0.1:9999"),
            Err(ScreenError::Forbidden(_))
        ));
        assert!(matches!(
            check(&hosts, &HttpMethod::GET, &HeaderMap::new()),
            Err(ScreenError::Forbidden(_))
        ));
        let v6 = Hosts::for_address("[::1]:8480".parse().unwrap());
        assert!(v6.allows("[::1]:8480") && v6.allows("localhost:8480"));
        assert!(!v6.allows("127.0.0.1:8480"));
    }

    #[test]
    fn posts_must_be_json_from_this_origin() {
        let hosts = Hosts::for_address("127.0.0.1:8480".parse().unwrap());
        let post = |pairs: &[(header::HeaderName, &str)]| {
            check(&hosts, &HttpMethod::POST, &headers(pairs))
        };
        let host = (header::HOST, "127.0.0.1:8480");
        let json = (header::CONTENT_TYPE, "application/json");
        assert!(
            post(&[host.clone(), json.clone()]).is_ok(),
            "no Origin: a command-line client"
        );
        assert!(
            post(&[
                host.clone(),
                (header::CONTENT_TYPE, "application/json; charset=utf-8")
            ])
            .is_ok()
        );
        assert!(
            post(&[
                host.clone(),
                json.clone(),
                (header::ORIGIN, "http://127.0.0.1:8480")
            ])
            .is_ok()
        );
        assert!(matches!(
            post(&[
                host.clone(),
                json.clone(),
                (header::ORIGIN, "http://evil.example")
            ]),
            Err(ScreenError::Forbidden(_))
        ));
        assert!(matches!(
            post(&[host.clone(), json.clone(), (header::ORIGIN, "null")]),
            Err(ScreenError::Forbidden(_))
        ));
        assert!(
            matches!(
                post(&[
                    host.clone(),
                    json.clone(),
                    (header::ORIGIN, "http://localhost:8480")
                ]),
                Err(ScreenError::Forbidden(_))
            ),
            "the origin must be the host the request was sent to"
        );
        for simple in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            assert!(matches!(
                post(&[host.clone(), (header::CONTENT_TYPE, simple)]),
                Err(ScreenError::NotJson)
            ));
        }
        assert!(matches!(
            post(std::slice::from_ref(&host)),
            Err(ScreenError::NotJson)
        ));
    }

    #[test]
    fn all_interfaces_still_check_the_origin() {
        let hosts = Hosts::for_address("0.0.0.0:8480".parse().unwrap());
        let post = |origin: &str| {
            check(
                &hosts,
                &HttpMethod::POST,
                &headers(&[
                    (header::HOST, "pos.lan:8480"),
                    (header::CONTENT_TYPE, "application/json"),
                    (header::ORIGIN, origin),
                ]),
            )
        };
        assert!(post("http://pos.lan:8480").is_ok());
        assert!(post("http://evil.example").is_err());
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        let t = TxnRecord {
            id: 1,
            kind: "sale<b>".into(),
            amount: 1,
            currency: 156,
            masked_pan: "6200000000000005".into(),
            stan: 1,
            batch: 1,
            state: "approved".into(),
            response_code: None,
            reason: None,
            auth_code: None,
            rrn: None,
            created_at: 0,
            online_pin: false,
        };
        let html = rows(&[t]);
        assert!(html.contains("sale&lt;b&gt;"));
        assert!(html.contains("620000******0005") && !html.contains("6200000000000005"));
    }
}
