//! The nexo endpoint over HTTPS, as Adyen's terminals serve it locally:
//!
//! | method | path | |
//! |---|---|---|
//! | POST | `/nexo`, `/nexo/` | one message as the body (chunked or not; an `X-API-Key` header is accepted and ignored); the answer as the response body (empty for an abort) |
//! | GET | `/nexo/events?kid=<key id>&kv=<version>` | WebSocket: the terminal's `DisplayRequest` and `EventNotification` messages, secured under that pairing's key |
//! | GET | `/app/...` | the cashier's phone web app ([`super::app`]) |
//!
//! TLS with the terminal's own certificate ([`super::tls`]). Bounded: a
//! body over 64 KiB is refused (413), at most `max_connections`
//! connections are served at once (more are closed at accept), a TLS
//! handshake or a request's headers taking over 10 s close the connection.
//! On shutdown the listener closes, requests in progress finish (a payment
//! waiting for its card at most its card timeout) and subscribers are
//! disconnected.

use super::{EcrService, Link, Notifications};
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Largest message accepted over HTTPS: nexo messages, receipts included,
/// are a few kilobytes.
pub const MAX_BODY: usize = 64 * 1024;
/// Default bound on connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Longest TLS handshake or request header read.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(90);

/// How the endpoint serves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Accept plain (unsecured) messages from loopback peers.
    pub allow_plain: bool,
    /// Connections served at once.
    pub max_connections: usize,
    /// Origins of back offices the phone app may call besides this
    /// endpoint (their open orders, [`super::app::content_security_policy`]).
    pub back_offices: Vec<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            allow_plain: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            back_offices: Vec::new(),
        }
    }
}

#[derive(Clone)]
struct App {
    ecr: EcrService,
    allow_plain: bool,
    stopping: watch::Receiver<bool>,
}

/// The peer of a connection.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

/// Serves the nexo endpoint on `listener` with `tls` until `shutdown`
/// resolves, then lets requests in progress finish.
pub async fn serve(
    ecr: EcrService,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopping) = watch::channel(false);
    let router_stop = stopping.clone();
    let app = App {
        ecr,
        allow_plain: options.allow_plain,
        stopping,
    };
    let router = Router::new()
        .route("/nexo", post(nexo))
        .route("/nexo/", post(nexo))
        .route("/nexo/events", get(events))
        .merge(super::app::router(app.ecr.clone(), &options.back_offices))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Finished connections are reaped as new ones come: the set holds
        // at most `max_connections` running ones.
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!("nexo endpoint accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "nexo endpoint at its connection limit; connection closed");
            continue;
        };
        // An answer leaves in several writes (TLS records of the headers and
        // the body): with Nagle's algorithm the last waits for the phone's
        // delayed ACK, 40 ms on Linux, on every exchange.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(Peer(peer))));
        let mut stopping = router_stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "nexo TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "nexo TLS handshake timed out");
                    return;
                }
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, "nexo connection: {e}");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::warn!("nexo endpoint: requests still running at shutdown were cut off");
    }
    Ok(())
}

async fn nexo(
    State(app): State<App>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    body: axum::body::Bytes,
) -> Response {
    let answer = app
        .ecr
        .handle(&body, Link::tcp(peer, app.allow_plain))
        .await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        answer,
    )
        .into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    kid: Option<String>,
    kv: Option<u64>,
}

async fn events(
    State(app): State<App>,
    axum::Extension(Peer(peer)): axum::Extension<Peer>,
    Query(q): Query<EventsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let notifications = match (q.kid, q.kv) {
        (Some(kid), Some(kv)) => match app.ecr.notifications(&kid, kv) {
            Ok(n) => n,
            Err(e) => {
                tracing::info!(%peer, "notification subscription refused: {e}");
                return (StatusCode::FORBIDDEN, e.to_string()).into_response();
            }
        },
        (None, None) if Link::tcp(peer, app.allow_plain).allows_plain() => {
            app.ecr.plain_notifications()
        }
        _ => {
            return (
                StatusCode::FORBIDDEN,
                "subscribing needs the kid and kv of a pairing",
            )
                .into_response();
        }
    };
    let stopping = app.stopping.clone();
    upgrade
        .max_message_size(MAX_BODY)
        .on_upgrade(move |socket| push(socket, notifications, stopping))
}

/// Pushes notifications until the subscriber leaves, its pairing is
/// revoked or the terminal stops. What the subscriber sends is read (to
/// see it leave) and ignored.
async fn push(
    mut socket: WebSocket,
    mut notifications: Notifications,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            next = notifications.next() => match next {
                Some(bytes) => {
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = stopping.changed() => break,
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}
