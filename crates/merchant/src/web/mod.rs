//! The back office's web pages, rendered on the server (no script): login
//! with TOTP, dashboard with an SVG chart, transactions with filters,
//! paging and CSV export, transaction detail, reconciliation, audit log.
//!
//! Every text from the host, the database or the request is escaped by the
//! templates (maud escapes every spliced value). Every page checks the
//! session and the role ([`Area`]); every POST form carries the session's
//! CSRF token. Responses carry a strict Content-Security-Policy (no script
//! at all) and are never cached.
//!
//! Modules (retail, restaurant, ...) add their pages as routers built with
//! [`Authed`], [`require`], [`check_csrf`] and [`frame`]
//! ([`crate::server::Module`]).

mod chart;
mod csv;
mod pages;

pub(crate) use pages::{money, parse_amount, time_text};

use crate::host_api::HostApi;
use crate::session::{self, LoginLimiter, Session};
use crate::store::{Store, StoreError, unix_now};
use crate::users::{PasswordCost, Role};
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// Largest form body accepted (login, reconciliation, logout).
const MAX_FORM: usize = 16 * 1024;

/// What every page needs.
pub struct AppState {
    /// The database.
    pub store: Arc<Store>,
    /// The host's API (reconciliation); none when not configured.
    pub host: Option<Arc<HostApi>>,
    /// Failed login counters.
    pub limiter: LoginLimiter,
    /// Cost of the decoy hash checked for unknown users.
    pub password_cost: PasswordCost,
    /// Shown in every page's header.
    pub merchant_name: String,
    /// Component names of the modules served (their links in the header).
    pub modules: Vec<&'static str>,
    /// Origins of the terminals' phone apps, the only browser origins the
    /// device API answers (`https://127.0.0.1:8443`).
    pub app_origins: Vec<String>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("merchant_name", &self.merchant_name)
            .finish_non_exhaustive()
    }
}

/// A part of the back office, for role checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Today's figures.
    Dashboard,
    /// The transaction list and details.
    Transactions,
    /// CSV export.
    Export,
    /// Reconciliation results and runs.
    Reconciliation,
    /// The audit log.
    Audit,
}

/// Whether `role` may open `area`.
pub fn allowed(role: Role, area: Area) -> bool {
    match role {
        Role::Owner | Role::Auditor => true,
        Role::Cashier => matches!(area, Area::Dashboard | Area::Transactions),
    }
}

/// Why a page was not served.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// No live session: go to the login page.
    #[error("login required")]
    Login,
    /// The role may not open this page (403).
    #[error("your role may not open this page")]
    Forbidden,
    /// The form's CSRF token is missing or wrong (403).
    #[error("the form has expired: reload the page and try again")]
    Csrf,
    /// A parameter is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing with that id (404).
    #[error("not found")]
    NotFound,
    /// The database failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A call to the host failed (502).
    #[error("{0}")]
    Host(String),
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebError::Login => return Redirect::to("/login").into_response(),
            WebError::Forbidden | WebError::Csrf => StatusCode::FORBIDDEN,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::Store(e) => {
                tracing::error!("back office: {e}");
                StatusCode::SERVICE_UNAVAILABLE
            }
            WebError::Host(_) => StatusCode::BAD_GATEWAY,
        };
        let message = match &self {
            WebError::Store(_) => "The database is unavailable.".to_string(),
            other => other.to_string(),
        };
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { (status.as_u16()) } style { (PreEscaped(CSS)) } }
                body { main { h1 { (status.canonical_reason().unwrap_or("Error")) } p { (message) } p { a href="/" { "Back" } } } }
            }
        };
        (status, body).into_response()
    }
}

/// A request with a live session (else the login page).
#[derive(Debug, Clone)]
pub struct Authed {
    /// The session.
    pub session: Session,
    /// Its cookie token.
    pub token: String,
}

impl FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, WebError> {
        let token = parts
            .headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|c| session::cookie_value(c, session::SESSION_COOKIE))
            .ok_or(WebError::Login)?
            .to_string();
        let lookup = token.clone();
        let session = state
            .store
            .call(move |s| s.read(|c| session::lookup(c, &lookup, unix_now())))
            .await?
            .ok_or(WebError::Login)?;
        Ok(Authed { session, token })
    }
}

/// Refuses unless the session's role may open `area`.
pub fn require(authed: &Authed, area: Area) -> Result<(), WebError> {
    if allowed(authed.session.user.role, area) {
        Ok(())
    } else {
        tracing::warn!(
            user = authed.session.user.name,
            ?area,
            "page refused to role"
        );
        Err(WebError::Forbidden)
    }
}

/// Refuses unless `presented` is the session's CSRF token.
pub fn check_csrf(authed: &Authed, presented: &str) -> Result<(), WebError> {
    if session::csrf_matches(&authed.session.csrf, presented) {
        Ok(())
    } else {
        Err(WebError::Csrf)
    }
}

/// The client's address (the connection's peer; unspecified when unknown).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
        ))
    }
}

/// The pages' routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(pages::dashboard))
        .route("/login", get(pages::login_page).post(pages::login_submit))
        .route("/logout", post(pages::logout))
        .route("/transactions", get(pages::transactions))
        .route("/transactions/{id}", get(pages::transaction))
        .route("/export.csv", get(pages::export))
        .route(
            "/reconciliation",
            get(pages::reconciliations).post(pages::reconcile_run),
        )
        .route("/reconciliation/{id}", get(pages::reconciliation))
        .route("/audit", get(pages::audit))
        .route("/healthz", get(pages::healthz))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .with_state(state)
}

/// Adds [`security_headers`] to every response of `router`.
pub fn secured(router: Router) -> Router {
    router.layer(middleware::map_response(security_headers))
}

/// No script, no framing, no caching, no sniffing, no referrer.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (HeaderName::from_static("x-frame-options"), "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Styles of every page: small screens first, tables scroll sideways.
const CSS: &str = "
*{box-sizing:border-box}
body{margin:0;font:15px/1.4 system-ui,sans-serif;color:#1d2430;background:#f5f6f8}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1rem;padding:.6rem 1rem;background:#1d2430;color:#fff}
header a{color:#cfe3ff;text-decoration:none}
header nav{display:flex;flex-wrap:wrap;gap:.8rem;flex:1}
header form{margin:0}
main{padding:1rem;max-width:72rem;margin:auto}
h1{font-size:1.4rem;margin:.2rem 0 1rem}
h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(11rem,1fr));gap:.8rem}
.card{background:#fff;border-radius:6px;padding:.8rem;box-shadow:0 1px 2px #0002}
.card b{display:block;font-size:1.3rem}
.scroll{overflow-x:auto;background:#fff;border-radius:6px;box-shadow:0 1px 2px #0002}
table{border-collapse:collapse;width:100%}
th,td{padding:.4rem .6rem;border-bottom:1px solid #e3e6ea;text-align:left;white-space:nowrap}
td.n,th.n{text-align:right}
form.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;margin-bottom:1rem}
label{display:flex;flex-direction:column;font-size:.85rem;gap:.2rem}
input,select,button{font:inherit;padding:.35rem .5rem}
button{cursor:pointer}
.login{max-width:22rem;margin:3rem auto;background:#fff;padding:1.2rem;border-radius:6px;box-shadow:0 1px 3px #0003;display:flex;flex-direction:column;gap:.7rem}
.error{color:#a40000}
pre.receipt{background:#fff;padding:1rem;display:inline-block;border-radius:6px;box-shadow:0 1px 2px #0002}
svg{width:100%;height:auto;background:#fff;border-radius:6px}
.pager{display:flex;gap:1rem;margin:.8rem 0}
form.inline{display:inline-flex;flex-wrap:wrap;gap:.3rem;margin:0}
td.reason{white-space:normal;min-width:12rem}
.qr svg{width:16rem;max-width:100%}
";

/// A page in the common frame: header with the merchant's name, the links
/// the user's role may follow, and a logout form.
pub fn frame(state: &AppState, authed: &Authed, title: &str, body: Markup) -> Markup {
    refreshing_frame(state, authed, title, body, None)
}

/// [`frame`] for a page that reloads itself every `refresh` seconds when
/// given (`<meta http-equiv="refresh">`: no script, which the policy
/// forbids, is needed to follow something under way).
pub fn refreshing_frame(
    state: &AppState,
    authed: &Authed,
    title: &str,
    body: Markup,
    refresh: Option<u32>,
) -> Markup {
    let role = authed.session.user.role;
    let links = [
        ("/", "Dashboard", Area::Dashboard),
        ("/transactions", "Transactions", Area::Transactions),
        ("/reconciliation", "Reconciliation", Area::Reconciliation),
        ("/audit", "Audit log", Area::Audit),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = refresh { meta http-equiv="refresh" content=(seconds); }
                title { (title) " · " (state.merchant_name) }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    strong { (state.merchant_name) }
                    nav {
                        @for (href, label, area) in links {
                            @if allowed(role, area) { a href=(href) { (label) } }
                        }
                        @for (component, href, label) in crate::modules::NAV {
                            @if state.modules.contains(component) { a href=(href) { (label) } }
                        }
                    }
                    span { (authed.session.user.name) " (" (role.name()) ")" }
                    form method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(authed.session.csrf);
                        button type="submit" { "Log out" }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}
