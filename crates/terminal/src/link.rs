//! One TLS connection to a host: frames out through a single writer,
//! responses matched to their requests by response MTI and STAN, so several
//! requests may be in flight. The connection is dropped as a whole: every
//! waiting request then learns the link was lost.

use futures_util::{SinkExt, StreamExt};
use iso8583::dialect::CUP;
use iso8583::frame::{FrameCodec, OwnedFrame};
use iso8583::{FrameLayout, Tpdu};
use rustls::pki_types::ServerName;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

/// TPDU the terminal sends: id 60, destination NII 0001, source 0000.
pub const TPDU: Tpdu = Tpdu {
    id: 0x60,
    destination: 0x0001,
    source: 0x0000,
};
/// The 6-byte header: application 60, version 31, status and request 00.
pub const HEADER: [u8; 6] = [0x60, 0x31, 0x00, 0x31, 0x00, 0x00];

/// Requests in flight on one connection; more wait for a slot.
const MAX_IN_FLIGHT: usize = 16;

/// Why an exchange did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Could not connect to any host.
    #[error("cannot reach the host: {0}")]
    Unreachable(String),
    /// The connection closed before the answer.
    #[error("connection lost")]
    Lost,
    /// No answer within the timeout.
    #[error("no answer in time")]
    Timeout,
}

type Pending = Arc<Mutex<HashMap<([u8; 4], u32), oneshot::Sender<Vec<u8>>>>>;

/// A live connection.
pub struct Link {
    writer: mpsc::Sender<OwnedFrame>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    shutdown: Arc<tokio::sync::Notify>,
    /// The address it is connected to.
    pub address: String,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Connects to `address` (`host:port`) with mutual TLS.
    pub async fn connect(
        address: &str,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Link, LinkError> {
        let unreachable =
            |e: &dyn std::fmt::Display| LinkError::Unreachable(format!("{address}: {e}"));
        let host = address
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']))
            .unwrap_or(address);
        let name = ServerName::try_from(host.to_string()).map_err(|e| unreachable(&e))?;
        let connect = async {
            let tcp = TcpStream::connect(address)
                .await
                .map_err(|e| unreachable(&e))?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|e| unreachable(&e))
        };
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| unreachable(&"connect timed out"))??;
        let (read, write) = tokio::io::split(stream);
        let mut frames = FramedRead::new(read, FrameCodec::new(FrameLayout::CUP));
        let mut sink = FramedWrite::new(write, FrameCodec::new(FrameLayout::CUP));
        let (writer, mut outgoing) = mpsc::channel::<OwnedFrame>(MAX_IN_FLIGHT);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (pending2, closed2) = (pending.clone(), closed.clone());
        let shutdown = Arc::new(tokio::sync::Notify::new());
        let shutdown2 = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown2.notified() => break,
                    out = outgoing.recv() => match out {
                        Some(frame) => if sink.send(frame).await.is_err() { break },
                        None => break,
                    },
                    incoming = frames.next() => match incoming {
                        Some(Ok(frame)) => {
                            let message = frame.message.to_vec();
                            // Match by response MTI and STAN; anything else is dropped.
                            if let Ok(msg) = CUP.decode(&message) {
                                if let Some(Ok(stan)) = msg.stan() {
                                    let waiter = pending2.lock().unwrap_or_else(|p| p.into_inner()).remove(&(msg.mti().digits(), stan));
                                    if let Some(waiter) = waiter {
                                        let _ = waiter.send(message);
                                    }
                                }
                            } else {
                                tracing::warn!("unreadable message from the host dropped");
                            }
                        }
                        _ => break,
                    },
                }
            }
            closed2.store(true, Ordering::SeqCst);
            // Dropping the waiters tells each request the link is gone.
            pending2.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        Ok(Link {
            writer,
            pending,
            closed,
            shutdown,
            address: address.to_string(),
        })
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst) || self.writer.is_closed()
    }

    /// Sends `wire` (a request whose response has MTI `response_mti` and
    /// STAN `stan`) and waits for the answer's bytes.
    pub async fn exchange(
        &self,
        wire: Vec<u8>,
        response_mti: [u8; 4],
        stan: u32,
        timeout: Duration,
    ) -> Result<Vec<u8>, LinkError> {
        if self.is_closed() {
            return Err(LinkError::Lost);
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((response_mti, stan), tx);
        let frame = OwnedFrame {
            tpdu: Some(TPDU),
            header: HEADER.to_vec().into(),
            message: wire.into(),
        };
        if self.writer.send(frame).await.is_err() {
            return Err(LinkError::Lost);
        }
        let result = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(_)) => Err(LinkError::Lost),
            Err(_) => Err(LinkError::Timeout),
        };
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(response_mti, stan));
        result
    }

    /// Closes the connection (after a timeout the host's state is unknown;
    /// a fresh connection starts clean).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.shutdown.notify_one();
    }
}
