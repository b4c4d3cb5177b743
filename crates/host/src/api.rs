//! The HTTP server on the host's API address: `/healthz`, `/metrics`, and
//! the merchant REST API under `/v1` (see docs/operations.md for every
//! endpoint and field).
//!
//! Every `/v1` request carries `Authorization: Bearer <api key>`; the key's
//! SHA-256 is compared in constant time with each merchant's stored hash,
//! and the request sees that merchant's data only. Reads go through a small
//! pool of read-only SQLite connections (WAL readers never block the
//! committer), each query bounded by a row limit.

use crate::metrics::{self, Metrics};
use crate::outbox;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, watch};

/// Transactions per page when `limit` is not given.
pub const DEFAULT_PAGE: u32 = 50;
/// Largest `limit` of `GET /v1/transactions`.
pub const MAX_PAGE: u32 = 500;
/// Events per page when `limit` is not given.
pub const DEFAULT_EVENTS: u32 = 100;
/// Largest `limit` of `GET /v1/events`.
pub const MAX_EVENTS: u32 = 1_000;
/// Most settlements in one report (`truncated` is true beyond).
pub const MAX_SETTLEMENTS: usize = 1_000;

/// Requests handled at once; more wait. Bounds memory and open work.
const MAX_CONCURRENT_REQUESTS: usize = 256;
/// Read-only connections: queries running at once. SQLite readers run in
/// parallel; more than the cores only queue on the CPU.
const READERS: usize = 4;
/// A reader waits this long for a lock (only during WAL recovery or a checkpoint restart).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest query parameter value accepted (ids, dates, cursors are far shorter).
const MAX_PARAM_LEN: usize = 64;

const ROUTE_HEALTH: &str = "/healthz";
const ROUTE_METRICS: &str = "/metrics";
const ROUTE_TRANSACTIONS: &str = "/v1/transactions";
const ROUTE_TRANSACTION: &str = "/v1/transactions/{id}";
const ROUTE_SETTLEMENTS: &str = "/v1/settlements";
const ROUTE_EVENTS: &str = "/v1/events";

/// Why a request failed; the body is `{"error": {"code", "message"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No `Authorization: Bearer` header, or a key no merchant has (401).
    #[error("missing or unknown API key")]
    Unauthorized,
    /// Nothing of this merchant has that id (404).
    #[error("not found")]
    NotFound,
    /// A parameter is missing or malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The database failed (503).
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    /// The server is shutting down (503).
    #[error("shutting down")]
    Unavailable,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Database(_) | ApiError::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        };
        let message = match &self {
            ApiError::Database(e) => {
                tracing::error!("merchant API: {e}");
                "database unavailable".to_string()
            }
            other => other.to_string(),
        };
        let body = Json(serde_json::json!({ "error": { "code": code, "message": message } }));
        let mut response = (status, body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Read-only connections, opened on first use, at most [`READERS`].
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

fn open_reader(path: &FsPath) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

impl ReadPool {
    /// Runs `f` on a pooled connection off the async threads.
    async fn run<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, ApiError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable)?;
        let conn = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let path = self.path.clone();
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let conn = match conn.map_or_else(|| open_reader(&path), Ok) {
                Ok(conn) => conn,
                Err(e) => return (None, Err(ApiError::Database(e))),
            };
            let result = f(&conn);
            (Some(conn), result)
        })
        .await
        .map_err(|_| ApiError::Unavailable)?;
        if let Some(conn) = conn {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
        result
    }
}

/// What the handlers share.
pub struct ApiState {
    pool: ReadPool,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("db", &self.pool.path)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// State over the host database at `db_path`, recording into `metrics`.
    pub fn new(db_path: &FsPath, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(ApiState {
            pool: ReadPool {
                path: db_path.to_path_buf(),
                idle: Mutex::new(Vec::with_capacity(READERS)),
                permits: Semaphore::new(READERS),
            },
            metrics,
        })
    }
}

/// The routes, with request counting and a bound on concurrent requests.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route(ROUTE_HEALTH, get(healthz))
        .route(ROUTE_METRICS, get(metrics_text))
        .route(ROUTE_TRANSACTIONS, get(transactions))
        .route(ROUTE_TRANSACTION, get(transaction))
        .route(ROUTE_SETTLEMENTS, get(settlements))
        .route(ROUTE_EVENTS, get(events))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            MAX_CONCURRENT_REQUESTS,
        ))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` turns true, then
/// finishes the requests under way.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let stop = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    // Small answers in several writes must not wait for delayed ACKs.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    if let Err(e) = axum::serve(listener, router(state))
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!("merchant API server: {e}");
    }
}

/// Counts each request by route and status.
async fn count(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let route = match request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
    {
        Some(ROUTE_HEALTH) => ROUTE_HEALTH,
        Some(ROUTE_METRICS) => ROUTE_METRICS,
        Some(ROUTE_TRANSACTIONS) => ROUTE_TRANSACTIONS,
        Some(ROUTE_TRANSACTION) => ROUTE_TRANSACTION,
        Some(ROUTE_SETTLEMENTS) => ROUTE_SETTLEMENTS,
        Some(ROUTE_EVENTS) => ROUTE_EVENTS,
        _ => "unmatched",
    };
    let response = next.run(request).await;
    state.metrics.api_request(route, response.status().as_u16());
    response
}

async fn healthz(State(state): State<Arc<ApiState>>) -> Response {
    match state.pool.run(|conn| Ok(outbox::backlog(conn)?)).await {
        Ok(backlog) => {
            state.metrics.set_outbox_backlog(backlog);
            Json(serde_json::json!({ "status": "ok", "database": "ok", "outbox_backlog": backlog }))
                .into_response()
        }
        Err(e) => {
            tracing::error!("health check: {e}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "unavailable", "database": "unreachable", "outbox_backlog": null })),
            )
                .into_response()
        }
    }
}

async fn metrics_text(State(state): State<Arc<ApiState>>) -> Response {
    match state.pool.run(|conn| Ok(outbox::backlog(conn)?)).await {
        Ok(backlog) => state.metrics.set_outbox_backlog(backlog),
        Err(e) => tracing::warn!("metrics: outbox backlog not refreshed: {e}"),
    }
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

/// The merchant an API key belongs to.
#[derive(Debug, Clone)]
pub struct AuthenticatedMerchant(pub String);

/// The key of an `Authorization` header value `Bearer <key>` (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty() && key.len() <= 256).then_some(key)
}

impl FromRequestParts<Arc<ApiState>> for AuthenticatedMerchant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .ok_or(ApiError::Unauthorized)?;
        let presented = crate::admin::api_key_hash(key);
        state
            .pool
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT merchant_id, api_key_hash FROM merchants WHERE api_key_hash IS NOT NULL",
                )?;
                let mut rows = stmt.query([])?;
                // Every stored hash is compared, each in constant time, so the
                // time taken says nothing about which hash came close.
                let mut found = None;
                while let Some(row) = rows.next()? {
                    let stored: String = row.get(1)?;
                    if bool::from(stored.as_bytes().ct_eq(presented.as_bytes())) {
                        found = Some(row.get::<_, String>(0)?);
                    }
                }
                found
                    .map(AuthenticatedMerchant)
                    .ok_or(ApiError::Unauthorized)
            })
            .await
    }
}

/// One transaction, as `GET /v1/transactions` returns it. Field names are
/// those of the `transaction` object of webhook events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Host journal id (unique; the event id is `txn-<id>`).
    pub id: i64,
    /// `sale`, `void`, `refund`, `preauth`, `preauth_cancel`, `completion`,
    /// `completion_void`, `offline_sale`, `reversal` or `balance`.
    pub kind: String,
    /// Current state: `approved`, `declined`, `voided`, `reversed`,
    /// `refunded`, `completed`, `cancelled`, `unfunded`, …
    pub state: String,
    /// Whether the response code was `00`.
    pub approved: bool,
    /// ISO 8583 field 39 sent to the terminal.
    pub response_code: String,
    /// Minor units.
    pub amount: u64,
    /// ISO 4217 numeric.
    pub currency: u16,
    /// Field 42.
    pub merchant_id: String,
    /// Field 41.
    pub terminal_id: String,
    /// Field 11.
    pub stan: u32,
    /// Field 60.2.
    pub batch: u32,
    /// Retrieval reference number (field 37).
    pub rrn: String,
    /// Authorization code (field 38), when approved with a transfer.
    pub auth_code: Option<String>,
    /// Card number masked to the first 6 and last 4 digits.
    pub masked_pan: Option<String>,
    /// RRN of the transaction this one voids, refunds, completes or reverses.
    pub original_rrn: Option<String>,
    /// `card` or `wallet` (a scanned payment code).
    pub payment_method: String,
    /// Time the host received the request, Unix seconds.
    pub at: i64,
}

const SELECT_TRANSACTION: &str =
    "SELECT j.id, j.kind, j.state, j.response_code, j.amount, j.currency, j.merchant_id,
    j.terminal_id, j.stan, j.batch, j.rrn, j.auth_code, j.masked_pan, o.rrn, j.created_at, j.method
    FROM journal j LEFT JOIN journal o ON o.id = j.original_id";

fn transaction_row(r: &Row<'_>) -> rusqlite::Result<Transaction> {
    let response_code: String = r.get(3)?;
    Ok(Transaction {
        id: r.get(0)?,
        kind: r.get(1)?,
        state: r.get(2)?,
        approved: response_code == "00",
        response_code,
        amount: r.get::<_, i64>(4)?.max(0) as u64,
        currency: r.get(5)?,
        merchant_id: r.get(6)?,
        terminal_id: r.get(7)?,
        stan: r.get(8)?,
        batch: r.get(9)?,
        rrn: r.get(10)?,
        auth_code: r.get(11)?,
        masked_pan: r.get(12)?,
        original_rrn: r.get(13)?,
        at: r.get(14)?,
        payment_method: r.get(15)?,
    })
}

/// A page of `GET /v1/transactions`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionPage {
    /// The transactions.
    pub transactions: Vec<Transaction>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransactionQuery {
    from: Option<String>,
    to: Option<String>,
    terminal_id: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn bounded<'a>(name: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.is_empty() || value.len() > MAX_PARAM_LEN {
        return Err(ApiError::BadRequest(format!(
            "{name}: 1 to {MAX_PARAM_LEN} characters"
        )));
    }
    Ok(value)
}

/// A time parameter: Unix seconds, or RFC 3339 (`2025-01-31T08:00:00Z`).
pub fn parse_time(value: &str) -> Option<i64> {
    if value.len() > MAX_PARAM_LEN {
        return None;
    }
    if let Ok(seconds) = value.parse::<i64>() {
        return Some(seconds);
    }
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// A `YYYY-MM-DD` date as the Unix seconds of its start (UTC).
pub fn parse_date(value: &str) -> Option<i64> {
    if value.len() != 10 {
        return None;
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(value, &format)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp())
}

/// A transaction cursor: `<time>.<id>` of the last transaction of a page.
pub fn parse_cursor(value: &str) -> Option<(i64, i64)> {
    let (at, id) = value.split_once('.')?;
    Some((at.parse().ok()?, id.parse().ok()?))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

async fn transactions(
    State(state): State<Arc<ApiState>>,
    AuthenticatedMerchant(merchant): AuthenticatedMerchant,
    q: Result<Query<TransactionQuery>, QueryRejection>,
) -> Result<Json<TransactionPage>, ApiError> {
    let q = query(q)?;
    let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, ApiError> {
        v.as_deref()
            .map(|v| {
                parse_time(v).ok_or_else(|| {
                    ApiError::BadRequest(format!("{name}: Unix seconds or RFC 3339 time"))
                })
            })
            .transpose()
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit: 1 to {MAX_PAGE}")));
    }
    let mut sql = format!("{SELECT_TRANSACTION} WHERE j.merchant_id = ?");
    let mut args = vec![Value::Text(merchant)];
    if let Some(from) = time("from", &q.from)? {
        sql.push_str(" AND j.created_at >= ?");
        args.push(Value::Integer(from));
    }
    if let Some(to) = time("to", &q.to)? {
        sql.push_str(" AND j.created_at < ?");
        args.push(Value::Integer(to));
    }
    if let Some(terminal) = &q.terminal_id {
        sql.push_str(" AND j.terminal_id = ?");
        args.push(Value::Text(bounded("terminal_id", terminal)?.to_string()));
    }
    if let Some(s) = &q.state {
        sql.push_str(" AND j.state = ?");
        args.push(Value::Text(bounded("state", s)?.to_string()));
    }
    if let Some(cursor) = &q.cursor {
        let (at, id) = parse_cursor(cursor)
            .ok_or_else(|| ApiError::BadRequest("cursor: use next_cursor as returned".into()))?;
        // (created_at, id) orders the journal_merchant_time index (id is its rowid).
        sql.push_str(" AND (j.created_at, j.id) < (?, ?)");
        args.extend([Value::Integer(at), Value::Integer(id)]);
    }
    sql.push_str(" ORDER BY j.created_at DESC, j.id DESC LIMIT ?");
    // One more than the page tells whether another page follows.
    args.push(Value::Integer(i64::from(limit) + 1));
    let mut rows = state
        .pool
        .run(move |conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), transaction_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|t| format!("{}.{}", t.at, t.id))
    } else {
        None
    };
    Ok(Json(TransactionPage {
        transactions: rows,
        next_cursor,
    }))
}

async fn transaction(
    State(state): State<Arc<ApiState>>,
    AuthenticatedMerchant(merchant): AuthenticatedMerchant,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Transaction>, ApiError> {
    let Path(id) = id.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    state
        .pool
        .run(move |conn| {
            conn.prepare_cached(&format!(
                "{SELECT_TRANSACTION} WHERE j.id = ?1 AND j.merchant_id = ?2"
            ))?
            .query_row(params![id, merchant], transaction_row)
            .optional()?
            // Another merchant's transaction is as absent as a missing one.
            .ok_or(ApiError::NotFound)
        })
        .await
        .map(Json)
}

/// One settlement request of a terminal's batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// Host id of the settlement.
    pub id: i64,
    /// Field 41.
    pub terminal_id: String,
    /// Batch number (60.2).
    pub batch: u32,
    /// Sales, completions and offline sales, minor units, as the host counts them.
    pub debit_amount: i64,
    /// Their number.
    pub debit_count: i64,
    /// Refunds, minor units.
    pub credit_amount: i64,
    /// Their number.
    pub credit_count: i64,
    /// `debit_amount - credit_amount`.
    pub net_amount: i64,
    /// Whether the terminal's totals equalled the host's.
    pub balanced: bool,
    /// Transactions the terminal uploaded after an unbalanced settlement.
    pub uploaded: i64,
    /// When the batch was closed (balanced, or upload finished), Unix seconds.
    pub closed_at: Option<i64>,
    /// When the settlement request arrived, Unix seconds.
    pub at: i64,
    /// Whether this is the last settlement request of its terminal and batch
    /// in the report (earlier ones were superseded and are not in the totals).
    pub latest: bool,
}

/// Sums over the latest settlement of each terminal batch in a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementTotals {
    /// Terminal batches counted.
    pub batches: i64,
    /// Of which balanced.
    pub balanced: i64,
    /// Sum of debit amounts.
    pub debit_amount: i64,
    /// Sum of debit counts.
    pub debit_count: i64,
    /// Sum of credit amounts.
    pub credit_amount: i64,
    /// Sum of credit counts.
    pub credit_count: i64,
    /// `debit_amount - credit_amount`.
    pub net_amount: i64,
}

/// `GET /v1/settlements`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementReport {
    /// The `date` asked for.
    pub date: Option<String>,
    /// The `terminal_id` asked for.
    pub terminal_id: Option<String>,
    /// The `batch` asked for.
    pub batch: Option<u32>,
    /// Settlement requests, oldest first.
    pub settlements: Vec<Settlement>,
    /// Totals of the latest request of each terminal batch.
    pub totals: SettlementTotals,
    /// Whether more than [`MAX_SETTLEMENTS`] matched (narrow the query).
    pub truncated: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettlementQuery {
    date: Option<String>,
    terminal_id: Option<String>,
    batch: Option<u32>,
}

async fn settlements(
    State(state): State<Arc<ApiState>>,
    AuthenticatedMerchant(merchant): AuthenticatedMerchant,
    q: Result<Query<SettlementQuery>, QueryRejection>,
) -> Result<Json<SettlementReport>, ApiError> {
    let q = query(q)?;
    if q.date.is_none() && q.terminal_id.is_none() {
        return Err(ApiError::BadRequest(
            "give date=YYYY-MM-DD, or terminal_id (and batch)".into(),
        ));
    }
    if q.batch.is_some() && q.terminal_id.is_none() {
        return Err(ApiError::BadRequest("batch needs terminal_id".into()));
    }
    let mut sql =
        "SELECT s.id, s.terminal_id, s.batch, s.debit_amount, s.debit_count, s.credit_amount,
        s.credit_count, s.balanced, s.uploaded, s.closed_at, s.created_at
        FROM settlements s JOIN terminals t ON t.terminal_id = s.terminal_id
        WHERE t.merchant_id = ?"
            .to_string();
    let mut args = vec![Value::Text(merchant)];
    if let Some(date) = &q.date {
        let start =
            parse_date(date).ok_or_else(|| ApiError::BadRequest("date: YYYY-MM-DD".into()))?;
        sql.push_str(" AND s.created_at >= ? AND s.created_at < ?");
        args.extend([Value::Integer(start), Value::Integer(start + 86_400)]);
    }
    if let Some(terminal) = &q.terminal_id {
        sql.push_str(" AND s.terminal_id = ?");
        args.push(Value::Text(bounded("terminal_id", terminal)?.to_string()));
    }
    if let Some(batch) = q.batch {
        sql.push_str(" AND s.batch = ?");
        args.push(Value::Integer(i64::from(batch)));
    }
    sql.push_str(" ORDER BY s.id LIMIT ?");
    args.push(Value::Integer(MAX_SETTLEMENTS as i64 + 1));
    let mut rows = state
        .pool
        .run(move |conn| {
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
                let debit_amount: i64 = r.get(3)?;
                let credit_amount: i64 = r.get(5)?;
                Ok(Settlement {
                    id: r.get(0)?,
                    terminal_id: r.get(1)?,
                    batch: r.get(2)?,
                    debit_amount,
                    debit_count: r.get(4)?,
                    credit_amount,
                    credit_count: r.get(6)?,
                    net_amount: debit_amount - credit_amount,
                    balanced: r.get(7)?,
                    uploaded: r.get(8)?,
                    closed_at: r.get(9)?,
                    at: r.get(10)?,
                    latest: true,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await?;
    let truncated = rows.len() > MAX_SETTLEMENTS;
    rows.truncate(MAX_SETTLEMENTS);
    let mut totals = SettlementTotals::default();
    for i in 0..rows.len() {
        let later = rows[i + 1..]
            .iter()
            .any(|s| s.terminal_id == rows[i].terminal_id && s.batch == rows[i].batch);
        let s = &mut rows[i];
        s.latest = !later;
        if s.latest {
            totals.batches += 1;
            totals.balanced += i64::from(s.balanced);
            totals.debit_amount += s.debit_amount;
            totals.debit_count += s.debit_count;
            totals.credit_amount += s.credit_amount;
            totals.credit_count += s.credit_count;
        }
    }
    totals.net_amount = totals.debit_amount - totals.credit_amount;
    Ok(Json(SettlementReport {
        date: q.date,
        terminal_id: q.terminal_id,
        batch: q.batch,
        settlements: rows,
        totals,
        truncated,
    }))
}

/// One outbox event, as `GET /v1/events` returns it.
#[derive(Debug, Serialize)]
pub struct EventRecord {
    /// Position in the host's outbox (the webhook's `X-Posnet-Event-Sequence`).
    pub sequence: i64,
    /// Unique id (the webhook's `X-Posnet-Event-Id`).
    pub event_id: String,
    /// Event type (`transaction`).
    #[serde(rename = "type")]
    pub kind: String,
    /// When the event was written, Unix seconds.
    pub created_at: i64,
    /// When a webhook delivery was acknowledged, Unix seconds.
    pub delivered_at: Option<i64>,
    /// Webhook delivery attempts so far.
    pub attempts: i64,
    /// The event, byte for byte the webhook body.
    pub payload: Box<RawValue>,
}

/// A page of `GET /v1/events`, oldest first.
#[derive(Debug, Serialize)]
pub struct EventPage {
    /// The events.
    pub events: Vec<EventRecord>,
    /// Pass as `after` for the next page (the last sequence, or `after` when empty).
    pub next_after: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

async fn events(
    State(state): State<Arc<ApiState>>,
    AuthenticatedMerchant(merchant): AuthenticatedMerchant,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    let q = query(q)?;
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(DEFAULT_EVENTS);
    if !(1..=MAX_EVENTS).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit: 1 to {MAX_EVENTS}")));
    }
    let events = state
        .pool
        .run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, event_id, kind, created_at, delivered_at, attempts, payload FROM outbox
                 WHERE merchant_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![merchant, after, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                ))
            })?;
            let mut events = Vec::new();
            for row in rows {
                let (sequence, event_id, kind, created_at, delivered_at, attempts, payload) = row?;
                let payload = RawValue::from_string(payload).map_err(|e| {
                    ApiError::Database(rusqlite::Error::FromSqlConversionFailure(
                        6,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    ))
                })?;
                events.push(EventRecord {
                    sequence,
                    event_id,
                    kind,
                    created_at,
                    delivered_at,
                    attempts,
                    payload,
                });
            }
            Ok(events)
        })
        .await?;
    let next_after = events.last().map_or(after, |e| e.sequence);
    Ok(Json(EventPage { events, next_after }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_times_dates_cursors_and_bearer_keys() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_time("2023-11-15T00:13:20+02:00"), Some(1_700_000_000));
        assert_eq!(parse_time("2023-11-14"), None);
        assert_eq!(parse_date("2023-11-14"), Some(1_699_920_000));
        assert_eq!(parse_date("2023-02-30"), None);
        assert_eq!(parse_date("2023-1-14"), None);
        assert_eq!(parse_cursor("1700000000.42"), Some((1_700_000_000, 42)));
        assert_eq!(parse_cursor("1700000000"), None);
        assert_eq!(parse_cursor("a.1"), None);
        assert_eq!(bearer("Bearer k-1"), Some("k-1"));
        assert_eq!(bearer("bearer k-1"), Some("k-1"));
        assert_eq!(bearer("Basic k-1"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }

    proptest! {
        #[test]
        fn parameter_parsers_never_panic(s in "\\PC{0,80}") {
            let _ = parse_time(&s);
            let _ = parse_date(&s);
            let _ = parse_cursor(&s);
            let _ = bearer(&s);
        }

        #[test]
        fn cursors_round_trip(at in any::<i64>(), id in any::<i64>()) {
            prop_assert_eq!(parse_cursor(&format!("{at}.{id}")), Some((at, id)));
        }
    }
}
