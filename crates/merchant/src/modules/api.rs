//! The back office's JSON API for cashier devices (the terminal's phone
//! app): list the open orders, take one, report what the terminal said.
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/api/v1/open-orders` | orders with something to pay, not split, no payment under way |
//! | POST | `/api/v1/orders/{id}/payments` | `{"terminal": POIID}`: takes the order for a payment of what is left (stock held, other payments blocked); answers the payment's id, amount and the reference to charge with |
//! | POST | `/api/v1/orders/{id}/payments/{payment}` | the device's result: `{"outcome": "approved"\|"declined"\|"failed"\|"unknown", ...}`; answers where the payment and the order stand |
//!
//! Every call carries `Authorization: Bearer <device token>`
//! ([`super::devices`]); an unknown or revoked token gets 401. Every
//! answered call is audited with the device as the actor. Browsers may
//! call from the origins the back office was given (`--app-origin`, the
//! terminals' app origins) only: CORS answers name no other origin.
//!
//! The device's report of an approval is not believed: the payment stays
//! "awaiting confirmation" until the host's transaction is found
//! ([`super::payments::confirm_with_host`]).

use super::SalesError;
use super::devices::{self, Device};
use super::orders::{self, Outcome, PaymentStatus, Status};
use super::payments::confirm_with_host;
use crate::audit::{self, Change};
use crate::store::{StoreError, unix_now};
use crate::web::AppState;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

/// Largest JSON body accepted (a report is a few hundred bytes).
const MAX_BODY: usize = 4 * 1024;
/// Most orders listed.
const MAX_ORDERS: i64 = 100;
/// Longest text field of a report (ids, codes, a reason).
const MAX_FIELD: usize = 200;

/// The API's routes, with CORS for `state.app_origins`.
pub(super) fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/open-orders", get(open_orders))
        .route("/api/v1/orders/{id}/payments", post(start))
        .route("/api/v1/orders/{id}/payments/{payment}", post(report))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .with_state(state)
}

/// `text` as a browser origin (`https://127.0.0.1:8443`): an http or https
/// URL with a host and nothing after it.
pub fn origin(text: &str) -> Result<String, SalesError> {
    let bad = || {
        SalesError::Refused(format!(
            "app origin {text:?}: give scheme, host and port only, such as https://127.0.0.1:8443"
        ))
    };
    let url = reqwest::Url::parse(text.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(bad());
    }
    Ok(url.origin().ascii_serialization())
}

/// Why a call was refused: an HTTP status and `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"posnet back office\""),
            );
        }
        response
    }
}

impl From<SalesError> for ApiError {
    fn from(e: SalesError) -> Self {
        match e {
            SalesError::Store(e) => e.into(),
            SalesError::NotFound(what) => {
                ApiError(StatusCode::NOT_FOUND, format!("{what} not found"))
            }
            SalesError::Refused(why) => ApiError(StatusCode::CONFLICT, why),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!("back office API: {e}");
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable".into(),
        )
    }
}

/// Answers CORS preflights for the configured app origins (403 for any
/// other), and names the origin on their answers.
async fn cors(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let allowed = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| state.app_origins.iter().any(|a| a == o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let mut response = if request.method() == Method::OPTIONS {
        match &allowed {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => ApiError(
                StatusCode::FORBIDDEN,
                "this origin may not call the back office".into(),
            )
            .into_response(),
        }
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    response
}

/// A call with a live device's token.
struct Caller(Device);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let unauthorized = || {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "a device token is required (Authorization: Bearer ...); this one is unknown or revoked"
                    .into(),
            )
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 128)
            .ok_or_else(unauthorized)?
            .to_string();
        let found = state
            .store
            .call(move |s| s.write(|tx| devices::authenticate(tx, &token, unix_now())))
            .await?;
        match found {
            Some(device) => Ok(Caller(device)),
            None => {
                tracing::warn!(path = %parts.uri.path(), "API call with an unknown or revoked device token");
                Err(unauthorized())
            }
        }
    }
}

fn audit_call(
    tx: &rusqlite::Connection,
    device: &Device,
    action: &str,
    subject: &str,
    after: serde_json::Value,
    now: i64,
) -> Result<(), SalesError> {
    audit::append(
        tx,
        &Change {
            actor: &device.actor(),
            action,
            subject,
            before: None,
            after: Some(after),
        },
        now,
    )?;
    Ok(())
}

/// A line of a listed order.
#[derive(Debug, Serialize)]
struct ListedLine {
    name: String,
    quantity: i64,
    amount: i64,
}

/// An order the device may charge.
#[derive(Debug, Serialize)]
struct Listed {
    id: i64,
    reference: String,
    label: String,
    /// Minor units.
    outstanding: i64,
    total: i64,
    /// ISO 4217 numeric, alphabetic, and its decimals.
    currency: u16,
    currency_code: String,
    decimals: u8,
    created_at: i64,
    lines: Vec<ListedLine>,
}

async fn open_orders(
    State(state): State<Arc<AppState>>,
    Caller(device): Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let listed = state
        .store
        .call(move |s| {
            s.write(|tx| -> Result<Vec<Listed>, SalesError> {
                let now = unix_now();
                // Reported payments whose host transaction came since (a
                // webhook) are confirmed first: the devices ask often.
                for payment in orders::awaiting_confirmation(tx)? {
                    orders::confirm_reported(tx, payment, "system", now)?;
                }
                let mut listed = Vec::new();
                for status in [Status::Open, Status::PartlyPaid] {
                    for order in orders::list(tx, Some(status), None, MAX_ORDERS)? {
                        let Some(detail) = orders::detail(tx, order.id)? else {
                            continue;
                        };
                        let Some(currency) = order.currency else {
                            continue;
                        };
                        if !detail.parts.is_empty()
                            || detail.in_flight()
                            || order.outstanding() <= 0
                        {
                            continue;
                        }
                        let (code, decimals) = terminal::receipt::currency_code(currency);
                        listed.push(Listed {
                            id: order.id,
                            reference: orders::reference(order.id),
                            label: format!("{} {}", order.kind.order_label(), order.id),
                            outstanding: order.outstanding(),
                            total: order.total,
                            currency,
                            currency_code: code,
                            decimals,
                            created_at: order.created_at,
                            lines: detail
                                .lines
                                .iter()
                                .map(|l| ListedLine {
                                    name: l.name.clone(),
                                    quantity: l.quantity,
                                    amount: l.amount().unwrap_or(0),
                                })
                                .collect(),
                        });
                    }
                }
                listed.sort_by_key(|l| std::cmp::Reverse(l.id));
                audit_call(
                    tx,
                    &device,
                    "api.open_orders",
                    "orders",
                    json!({ "listed": listed.iter().map(|l| l.id).collect::<Vec<_>>() }),
                    now,
                )?;
                Ok(listed)
            })
        })
        .await?;
    Ok(Json(json!({ "orders": listed })))
}

#[derive(Debug, Deserialize)]
struct StartRequest {
    /// POIID of the terminal the device is paired with.
    terminal: String,
}

fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
}

fn ids<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|_| ApiError(StatusCode::NOT_FOUND, "no such order or payment".into()))
}

fn field(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    {
        Some(v) if v.len() > MAX_FIELD || v.chars().any(char::is_control) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{name}: at most {MAX_FIELD} characters, no control characters"),
        )),
        other => Ok(other),
    }
}

async fn start(
    State(state): State<Arc<AppState>>,
    Caller(device): Caller,
    path: Result<Path<i64>, PathRejection>,
    request: Result<Json<StartRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = ids(path)?;
    let request = body(request)?;
    let terminal = field("terminal", Some(request.terminal))?
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "terminal: required".into()))?;
    let started = state
        .store
        .call(move |s| {
            s.write(|tx| {
                let now = unix_now();
                orders::start_device_payment(tx, id, &terminal, device.id, &device.actor(), now)
            })
        })
        .await?;
    let (code, decimals) = terminal::receipt::currency_code(started.currency);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "payment": started.payment_id, "order": started.order_id,
            "amount": started.amount, "currency": started.currency,
            "currency_code": code, "decimals": decimals,
            "reference": orders::reference(started.order_id),
        })),
    ))
}

/// What the device says the terminal did.
#[derive(Debug, Deserialize)]
struct ReportRequest {
    /// `approved`, `declined`, `failed` or `unknown`.
    outcome: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    service_id: Option<String>,
    /// `POITransactionID`, `BBBBBB.SSSSSS`.
    #[serde(default)]
    poi_transaction_id: Option<String>,
    /// `AcquirerPOIID`.
    #[serde(default)]
    acquirer_terminal_id: Option<String>,
    /// `AcquirerTransactionID` (the host's RRN).
    #[serde(default)]
    rrn: Option<String>,
    #[serde(default)]
    approval_code: Option<String>,
    /// First six and last four digits only.
    #[serde(default)]
    masked_pan: Option<String>,
}

/// A card number as masked on a receipt (`620000******0005`): refused when
/// it shows more than ten digits, so a full PAN is never stored.
fn masked(pan: Option<String>) -> Result<Option<String>, ApiError> {
    let pan = field("masked_pan", pan)?;
    if pan
        .as_deref()
        .is_some_and(|p| p.chars().filter(char::is_ascii_digit).count() > 10)
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "masked_pan: first six and last four digits at most".into(),
        ));
    }
    Ok(pan)
}

fn outcome_of(report: ReportRequest) -> Result<Outcome, ApiError> {
    let status = match report.outcome.as_str() {
        "approved" => PaymentStatus::Approved,
        "declined" => PaymentStatus::Declined,
        "failed" => PaymentStatus::Failed,
        "unknown" => PaymentStatus::Unknown,
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("outcome {other:?}: approved, declined, failed or unknown"),
            ));
        }
    };
    let poi_transaction_id = field("poi_transaction_id", report.poi_transaction_id)?;
    let parsed = poi_transaction_id
        .as_deref()
        .and_then(terminal::ecr::protocol::PoiTransactionId::parse);
    Ok(Outcome {
        status: Some(status),
        reason: field("reason", report.reason)?.map(|r| format!("reported by the device: {r}")),
        service_id: field("service_id", report.service_id)?,
        batch: parsed.as_ref().map(|p| p.batch),
        stan: parsed.as_ref().map(|p| p.stan),
        poi_transaction_id,
        acquirer_terminal_id: field("acquirer_terminal_id", report.acquirer_terminal_id)?,
        rrn: field("rrn", report.rrn)?,
        approval_code: field("approval_code", report.approval_code)?,
        masked_pan: masked(report.masked_pan)?,
    })
}

async fn report(
    State(state): State<Arc<AppState>>,
    Caller(device): Caller,
    path: Result<Path<(i64, i64)>, PathRejection>,
    request: Result<Json<ReportRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (order_id, payment_id) = ids(path)?;
    let outcome = outcome_of(body(request)?)?;
    let actor = device.actor();
    let recorded = state
        .store
        .call(move |s| {
            s.write(|tx| {
                let now = unix_now();
                audit_call(
                    tx,
                    &device,
                    "api.payment_report",
                    &format!("payment:{payment_id}"),
                    json!({
                        "order": order_id, "outcome": outcome.status.map(PaymentStatus::name),
                        "poi_transaction_id": outcome.poi_transaction_id,
                        "acquirer_terminal_id": outcome.acquirer_terminal_id, "rrn": outcome.rrn,
                    }),
                    now,
                )?;
                orders::report_payment(
                    tx,
                    order_id,
                    payment_id,
                    device.id,
                    &outcome,
                    &device.actor(),
                    now,
                )
            })
        })
        .await?;
    let payment = if recorded.awaiting_confirmation() {
        confirm_with_host(&state.store, state.host.as_deref(), payment_id, &actor).await?
    } else {
        recorded
    };
    let order = state
        .store
        .call(move |s| s.read(|c| Ok(orders::order(c, order_id))))
        .await??
        .ok_or_else(|| SalesError::NotFound(format!("order {order_id}")))?;
    Ok(Json(json!({
        "payment": payment.id,
        "status": if payment.awaiting_confirmation() { "awaiting_confirmation" } else { payment.status.name() },
        "order_status": order.status.name(),
        "reason": payment.reason,
    })))
}
