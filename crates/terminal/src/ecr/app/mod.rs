//! The cashier's phone web app (docs/phone-app.md), served by the nexo
//! endpoint itself under `/app/`: the phone opens
//! `https://<terminal>:8443/app/`, pairs with the code the terminal shows,
//! and sends its nexo messages to `/nexo` and reads progress from
//! `/nexo/events` of the same origin, secured with the pairing's key in
//! the browser (WebCrypto).
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/app` | redirects to `/app/` |
//! | GET | `/app/` and the files of [`ASSETS`] | the app's shell: HTML, CSS, JavaScript modules, manifest, service worker, icon |
//! | GET | `/app/terminal.json` | the terminal's `POIID`, merchant name, currency and its decimals, whether it is online |
//!
//! The files are plain hand-written HTML, CSS and JavaScript embedded in
//! the binary. Every answer under `/app` carries [`SECURITY_HEADERS`]:
//! scripts and styles only from these files (no inline code, no `eval`),
//! DOM sinks closed by Trusted Types, no framing, no referrer, no sniffing.
//! `terminal.json` tells nothing secret (the `POIID` is in every answer the
//! endpoint gives, the currency on every receipt); what moves money is
//! authenticated by nexo message security.

use super::EcrService;
use crate::receipt;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Serialize;

/// One file of the app.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its path on the endpoint.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

/// The app's files, each at its path.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/app/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("index.html"),
    },
    Asset {
        path: "/app/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("app.css"),
    },
    Asset {
        path: "/app/app.js",
        content_type: JS,
        body: include_bytes!("app.js"),
    },
    Asset {
        path: "/app/nexo.js",
        content_type: JS,
        body: include_bytes!("nexo.js"),
    },
    Asset {
        path: "/app/pairing.js",
        content_type: JS,
        body: include_bytes!("pairing.js"),
    },
    Asset {
        path: "/app/messages.js",
        content_type: JS,
        body: include_bytes!("messages.js"),
    },
    Asset {
        path: "/app/store.js",
        content_type: JS,
        body: include_bytes!("store.js"),
    },
    Asset {
        path: "/app/office.js",
        content_type: JS,
        body: include_bytes!("office.js"),
    },
    Asset {
        path: "/app/terminal.js",
        content_type: JS,
        body: include_bytes!("terminal.js"),
    },
    Asset {
        path: "/app/sw.js",
        content_type: JS,
        body: include_bytes!("sw.js"),
    },
    Asset {
        path: "/app/manifest.webmanifest",
        content_type: "application/manifest+json",
        body: include_bytes!("manifest.webmanifest"),
    },
    Asset {
        path: "/app/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("icon.svg"),
    },
];

/// The policy of every page of the app: its own files only, no inline
/// script or style, no `eval`, Trusted Types for the one script URL it
/// builds (the service worker's), connections to this origin only (the
/// nexo endpoint and its WebSocket) and the back offices configured
/// ([`content_security_policy`]), never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; manifest-src 'self'; \
    worker-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
    require-trusted-types-for 'script'; trusted-types posnet-app";

/// [`CONTENT_SECURITY_POLICY`] with `back_offices` (origins such as
/// `http://127.0.0.1:8600`) added to `connect-src`: the back offices whose
/// open orders the app lists and charges. Each must be a plain origin
/// (checked by the caller): no space, quote or semicolon.
pub fn content_security_policy(back_offices: &[String]) -> String {
    let extra: String = back_offices
        .iter()
        .filter(|o| {
            !o.is_empty()
                && o.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ":/.-[]".contains(c))
        })
        .map(|o| format!(" {o}"))
        .collect();
    CONTENT_SECURITY_POLICY.replacen(
        "connect-src 'self'",
        &format!("connect-src 'self'{extra}"),
        1,
    )
}

/// Headers on every answer under `/app`.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(self), microphone=(), geolocation=(), payment=(), usb=(), serial=()",
    ),
];

/// The app's routes, for the endpoint serving `ecr`, allowed to call
/// `back_offices` besides the endpoint; merged into the endpoint's router
/// whatever its state.
pub fn router<S: Clone + Send + Sync + 'static>(
    ecr: EcrService,
    back_offices: &[String],
) -> Router<S> {
    let policy = HeaderValue::from_str(&content_security_policy(back_offices))
        .unwrap_or_else(|_| HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    let mut router = Router::new()
        .route("/app", get(|| async { Redirect::permanent("/app/") }))
        .route("/app/terminal.json", get(terminal));
    for asset in ASSETS {
        router = router.route(asset.path, get(move || async move { file(asset) }));
    }
    router
        .route("/app/{*rest}", get(|| async { StatusCode::NOT_FOUND }))
        .layer(middleware::from_fn(move |request, next| {
            secure(policy.clone(), request, next)
        }))
        .with_state(ecr)
}

/// An asset, revalidated on every load: the service worker keeps the
/// offline copy, and a terminal's update is seen at once.
fn file(asset: &Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response()
}

async fn secure(policy: HeaderValue, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    response
}

/// What `/app/terminal.json` tells the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct TerminalInfo {
    /// The terminal's `POIID`.
    poi_id: String,
    /// From the host's parameters, once signed on.
    merchant_name: Option<String>,
    /// ISO 4217 alphabetic code of the only currency the terminal takes;
    /// unknown until it has signed on.
    currency: Option<String>,
    /// Its decimals.
    decimals: Option<u8>,
    /// Connected to its host and signed on.
    online: bool,
}

async fn terminal(State(ecr): State<EcrService>) -> Response {
    let terminal = ecr.terminal();
    let status = terminal.status().borrow().clone();
    let currency = status.currency.map(receipt::currency_code);
    let info = TerminalInfo {
        poi_id: terminal.terminal_id().to_owned(),
        merchant_name: status.merchant_name,
        decimals: currency.as_ref().map(|c| c.1),
        currency: currency.map(|c| c.0),
        online: status.online,
    };
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(info)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_offices_are_added_to_connect_src_only() {
        assert_eq!(content_security_policy(&[]), CONTENT_SECURITY_POLICY);
        let policy = content_security_policy(&[
            "http://127.0.0.1:8600".into(),
            "https://office.example; script-src *".into(),
        ]);
        assert!(policy.contains("connect-src 'self' http://127.0.0.1:8600; manifest-src"));
        assert!(!policy.contains("office.example"), "{policy}");
        assert!(policy.contains("script-src 'self';"));
    }
}
