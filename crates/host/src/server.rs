//! The terminal-facing server: TLS with client certificates, `cup` frames,
//! many requests in flight per connection answered as they complete, a
//! bounded number of connections, idle timeout, and a graceful shutdown that
//! answers what is in flight.

use crate::processor::{Processor, Reply};
use futures_util::{SinkExt, StreamExt};
use iso8583::FrameLayout;
use iso8583::frame::{FrameCodec, OwnedFrame};
use pki::PeerTerminal;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{FramedRead, FramedWrite};

/// Bounds of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Requests in flight on one connection; reading pauses at the bound.
    pub max_in_flight: usize,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 20_000,
            max_in_flight: 64,
            idle_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Accepts terminals until `shutdown` turns true, then lets every connection
/// answer its in-flight requests and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    processor: Arc<Processor>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let Ok((tcp, addr)) = accepted else { continue };
                let Ok(permit) = connections.clone().try_acquire_owned() else {
                    tracing::warn!(%addr, "connection limit reached; closing");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let processor = processor.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => connection(tls, processor, limits, shutdown).await,
                        Ok(Err(e)) => tracing::info!(%addr, "TLS handshake refused: {e}"),
                        Err(_) => tracing::info!(%addr, "TLS handshake timed out"),
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn connection(
    tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    processor: Arc<Processor>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = match tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| PeerTerminal::from_der(c))
    {
        Some(Ok(peer)) => peer,
        _ => return,
    };
    let terminal = peer.terminal_id.clone();
    tracing::info!(terminal, "terminal connected");
    let _open = processor.metrics().connection_opened();
    let (read, write) = tokio::io::split(tls);
    let mut frames = FramedRead::new(read, FrameCodec::new(FrameLayout::CUP));
    let mut sink = FramedWrite::new(write, FrameCodec::new(FrameLayout::CUP));
    // Responses go through one writer; the channel is bounded like the work.
    let (tx, mut rx) = mpsc::channel::<Option<OwnedFrame>>(limits.max_in_flight);
    let writer = tokio::spawn(async move {
        while let Some(Some(frame)) = rx.recv().await {
            if sink.send(frame).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            permit = in_flight.clone().acquire_owned() => permit.expect("semaphore never closed"),
        };
        let next = tokio::select! {
            _ = shutdown.changed() => break,
            next = tokio::time::timeout(limits.idle_timeout, frames.next()) => next,
        };
        let frame = match next {
            Err(_) => {
                tracing::info!(terminal, "idle timeout");
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::warn!(terminal, "framing error, closing: {e}");
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let processor = processor.clone();
        let tx = tx.clone();
        let terminal = terminal.clone();
        let in_flight = processor.metrics().request_started();
        let mut request = Box::pin(async move {
            let _permit = permit;
            let _in_flight = in_flight;
            let reply = match processor.process(&terminal, &frame.message).await {
                Reply::Send(message) => Some(OwnedFrame {
                    tpdu: frame.tpdu.map(|t| t.reply()),
                    header: frame.header,
                    message: message.into(),
                }),
                Reply::Close(reason) => {
                    tracing::warn!(terminal, "closing connection: {reason}");
                    None
                }
            };
            let _ = tx.send(reply).await;
        });
        // Decoding, the MAC check and the hand-over to the group commit run
        // here, before the next frame is read, so a terminal's requests reach
        // the committer in the order it sent them: pipelined requests keep
        // their KSN counters rising (a counter below the last is refused as a
        // replay) and a reversal sent right behind its original finds it.
        // Only while the commit queue is full can a later request overtake
        // one waiting for room. The rest, waiting for the commit, runs apart.
        let first = std::future::poll_fn(|cx| Poll::Ready(request.as_mut().poll(cx))).await;
        if first.is_pending() {
            tokio::spawn(request);
        }
    }
    // Answer everything in flight before closing.
    let _ = in_flight.acquire_many(limits.max_in_flight as u32).await;
    let _ = tx.send(None).await;
    drop(tx);
    let _ = writer.await;
    tracing::info!(terminal, "terminal disconnected");
}
