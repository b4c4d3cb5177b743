//! `POST /webhooks/host`: the host's signed events.
//!
//! A request is accepted only when `X-Posnet-Signature` is the HMAC-SHA256,
//! under the merchant's webhook secret, of `"<X-Posnet-Timestamp>.<body>"`
//! (compared in constant time), and the timestamp is within
//! [`MAX_SKEW_SECS`] of this clock, so a captured request cannot be played
//! again later. The body is bounded ([`MAX_BODY`]). The event is committed
//! (synchronously, with whatever it changed) before the 2xx; an event id
//! seen before is answered 2xx and records nothing, so the host stops
//! sending it.

use crate::events::{Recorded, record_event};
use crate::store::{Store, StoreError, unix_now};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use host::outbox::{EVENT_ID_HEADER, SEQUENCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use pki::Secret;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Where the host posts its events.
pub const WEBHOOK_PATH: &str = "/webhooks/host";
/// Largest body accepted. The host's events are under a kilobyte.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest distance between the signed timestamp and this clock, seconds.
pub const MAX_SKEW_SECS: i64 = 300;
/// Longest event id accepted (the host's are `txn-<id>`).
const MAX_EVENT_ID: usize = 128;

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A header is missing or malformed (400).
    #[error("missing or malformed {0} header")]
    Header(&'static str),
    /// The signature does not verify under the webhook secret (401).
    #[error("signature does not verify")]
    Signature,
    /// The signed timestamp is too far from this clock (401).
    #[error("timestamp is {skew} s from this clock (at most {MAX_SKEW_SECS} s)")]
    Stale {
        /// Timestamp minus now, seconds.
        skew: i64,
    },
    /// The event could not be stored (503: the host sends it again).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebhookError::Header(_) => StatusCode::BAD_REQUEST,
            WebhookError::Signature | WebhookError::Stale { .. } => StatusCode::UNAUTHORIZED,
            WebhookError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        tracing::warn!("webhook refused ({status}): {self}");
        let message = match &self {
            WebhookError::Store(_) => "storage unavailable".to_string(),
            other => other.to_string(),
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

/// A request whose signature and timestamp verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `X-Posnet-Event-Id`.
    pub event_id: String,
    /// `X-Posnet-Event-Sequence`, when present (not signed: informational).
    pub sequence: Option<i64>,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, WebhookError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(WebhookError::Header(name))
}

/// Checks a request's signature and timestamp against `secret` at `now`
/// (Unix seconds).
pub fn verify(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Verified, WebhookError> {
    let timestamp: i64 = header(headers, TIMESTAMP_HEADER)?
        .parse()
        .map_err(|_| WebhookError::Header(TIMESTAMP_HEADER))?;
    let presented = header(headers, SIGNATURE_HEADER)?;
    let expected = host::outbox::signature(secret, timestamp, body);
    // Equal lengths are public (`v1=` and 64 hex digits); the bytes are
    // compared without an early exit.
    if !bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
        return Err(WebhookError::Signature);
    }
    let skew = timestamp.saturating_sub(now);
    if skew.abs() > MAX_SKEW_SECS {
        return Err(WebhookError::Stale { skew });
    }
    let event_id = header(headers, EVENT_ID_HEADER)?;
    if event_id.is_empty()
        || event_id.len() > MAX_EVENT_ID
        || !event_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(WebhookError::Header(EVENT_ID_HEADER));
    }
    let sequence = match headers.get(SEQUENCE_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(WebhookError::Header(SEQUENCE_HEADER))?,
        ),
    };
    Ok(Verified {
        event_id: event_id.to_string(),
        sequence,
    })
}

/// What the receiver needs.
pub struct WebhookState {
    /// Where events are recorded.
    pub store: Arc<Store>,
    /// The merchant's webhook secret (as set at the host).
    pub secret: Secret,
}

impl std::fmt::Debug for WebhookState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookState").finish_non_exhaustive()
    }
}

/// The receiver's route, with its body bound.
pub fn router(state: Arc<WebhookState>) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn receive(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebhookError> {
    let now = unix_now();
    let verified = verify(state.secret.expose(), &headers, &body, now)?;
    // A verified body that is not UTF-8 is kept (lossily) and noted as
    // unreadable: refusing it would make the host resend it forever.
    let text = String::from_utf8_lossy(&body).into_owned();
    let event_id = verified.event_id.clone();
    let recorded = state
        .store
        .call(move |s| {
            s.write(|tx| record_event(tx, &verified.event_id, verified.sequence, &text, now))
        })
        .await?;
    let duplicate = recorded == Recorded::Duplicate;
    if duplicate {
        tracing::debug!(event = event_id, "event seen before, acknowledged");
    }
    Ok(Json(serde_json::json!({ "event_id": event_id, "duplicate": duplicate })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &[u8] = b"whsec-corner-shop-0001-0123456789";

    fn headers(timestamp: i64, signature: &str, event_id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp));
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(signature).unwrap());
        h.insert(EVENT_ID_HEADER, HeaderValue::from_str(event_id).unwrap());
        h.insert(SEQUENCE_HEADER, HeaderValue::from(7));
        h
    }

    #[test]
    fn verifies_signature_then_timestamp_window() {
        let body = br#"{"event_id":"txn-1"}"#;
        let now = 1_767_225_600;
        let good = host::outbox::signature(SECRET, now, body);
        let ok = verify(SECRET, &headers(now, &good, "txn-1"), body, now).unwrap();
        assert_eq!(ok.sequence, Some(7));
        // At the edges of the window, and past them.
        for (sent, accepted) in [
            (now - 300, true),
            (now + 300, true),
            (now - 301, false),
            (now + 301, false),
        ] {
            let sig = host::outbox::signature(SECRET, sent, body);
            let result = verify(SECRET, &headers(sent, &sig, "txn-1"), body, now);
            assert_eq!(result.is_ok(), accepted, "{sent}: {result:?}");
            if !accepted {
                assert!(matches!(result, Err(WebhookError::Stale { .. })));
            }
        }
        // Another secret, a changed body, a changed timestamp, a truncated signature.
        let other = host::outbox::signature(b"another secret", now, body);
        for (h, b) in [
            (headers(now, &other, "txn-1"), &body[..]),
            (
                headers(now, &good, "txn-1"),
                &br#"{"event_id":"txn-2"}"#[..],
            ),
            (headers(now + 1, &good, "txn-1"), &body[..]),
            (headers(now, &good[..good.len() - 1], "txn-1"), &body[..]),
            (headers(now, "", "txn-1"), &body[..]),
        ] {
            assert!(matches!(
                verify(SECRET, &h, b, now),
                Err(WebhookError::Signature)
            ));
        }
        let mut missing = headers(now, &good, "txn-1");
        missing.remove(TIMESTAMP_HEADER);
        assert!(matches!(
            verify(SECRET, &missing, body, now),
            Err(WebhookError::Header(_))
        ));
        let long = "e".repeat(MAX_EVENT_ID + 1);
        assert!(matches!(
            verify(SECRET, &headers(now, &good, &long), body, now),
            Err(WebhookError::Header(_))
        ));
    }

    async fn post(app: &Router, h: HeaderMap, body: Vec<u8>) -> (StatusCode, serde_json::Value) {
        use tower::ServiceExt;
        let mut request = axum::http::Request::post(WEBHOOK_PATH)
            .body(axum::body::Body::from(body))
            .unwrap();
        *request.headers_mut() = h;
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn replays_are_acknowledged_and_recorded_once_and_bodies_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), &[]).unwrap());
        let app = router(Arc::new(WebhookState {
            store: store.clone(),
            secret: Secret::new(SECRET.to_vec()),
        }));
        let body = serde_json::json!({"event_id": "txn-1", "type": "transaction", "transaction": {
            "id": 1, "kind": "sale", "state": "approved", "approved": true, "response_code": "00",
            "amount": 1250, "currency": 156, "merchant_id": "M00000000000001", "terminal_id": "T0000001",
            "stan": 1, "batch": 1, "rrn": "000000000001", "auth_code": "123456",
            "masked_pan": "620000******0013", "original_rrn": null, "at": 1_767_225_598}})
        .to_string()
        .into_bytes();
        let now = unix_now();
        let sig = host::outbox::signature(SECRET, now, &body);
        let (status, answer) = post(&app, headers(now, &sig, "txn-1"), body.clone()).await;
        assert_eq!(
            (status, &answer["duplicate"]),
            (StatusCode::OK, &false.into())
        );
        let (status, answer) = post(&app, headers(now, &sig, "txn-1"), body.clone()).await;
        assert_eq!(
            (status, &answer["duplicate"]),
            (StatusCode::OK, &true.into())
        );
        let bad = host::outbox::signature(b"wrong", now, &body);
        assert_eq!(
            post(&app, headers(now, &bad, "txn-1"), body.clone())
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        let stale = host::outbox::signature(SECRET, now - 3600, &body);
        assert_eq!(
            post(&app, headers(now - 3600, &stale, "txn-1"), body)
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        let huge = vec![b' '; MAX_BODY + 1];
        let sig = host::outbox::signature(SECRET, now, &huge);
        assert_eq!(
            post(&app, headers(now, &sig, "txn-2"), huge).await.0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let counts: (i64, i64, i64) = store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM transactions),
                            (SELECT count(*) FROM transaction_status)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?)
            })
            .unwrap();
        assert_eq!(counts, (1, 1, 1));
    }
}
