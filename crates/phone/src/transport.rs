//! Links to the terminal. Every link carries one secured nexo message out
//! and its answer back, and hands the terminal's notifications (display
//! and event messages, still secured) to a callback while it waits:
//!
//! - [`Https`]: `POST https://<terminal>/nexo`, with the notifications
//!   from the WebSocket `GET wss://<terminal>/nexo/events?kid=..&kv=..`
//!   opened before the request leaves, both over TLS pinned to the
//!   pairing's certificate;
//! - [`Serial`]: a USB-serial or Bluetooth RFCOMM device, through nexo's
//!   serial client (frames, ACK/NAK, retransmission), the notifications
//!   arriving between frames.
//!
//! Every failure says whether the request may have reached the terminal
//! ([`TransportError::maybe_delivered`]): a payment that may have been
//! delivered is never sent again; its fate is asked for with
//! `TransactionStatus`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Full, Limited};
use nexo::serial_io::{self, SerialClient, SerialIoError};
use paycrypto::nexo::MAX_MESSAGE_LEN;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::pin::{self, CertificateMismatch};

/// Path of the nexo endpoint.
pub const NEXO_PATH: &str = "/nexo";
/// Path of the notification WebSocket.
pub const EVENTS_PATH: &str = "/nexo/events";

/// How long to wait for each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connection and TLS handshake, each.
    pub connect: Duration,
    /// The answer, from the moment the request is sent.
    pub answer: Duration,
}

impl Default for Timeouts {
    /// 5 s to connect; 180 s for an answer (the cardholder may take a
    /// while to find a card and type a PIN).
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            answer: Duration::from_secs(180),
        }
    }
}

/// A link failed; the message says what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The terminal's name did not resolve.
    #[error(
        "cannot resolve the terminal's address {host}: {cause} — check that the phone is on the terminal's network and that the pairing's address is right (run `posnet phone diagnose`)"
    )]
    Resolve {
        /// The name.
        host: String,
        /// The cause.
        cause: io::Error,
    },
    /// No TCP connection could be made.
    #[error(
        "cannot connect to the terminal at {addr}: {cause} — is the terminal on, and on the same network as the phone? (run `posnet phone diagnose`)"
    )]
    Connect {
        /// The address tried last.
        addr: String,
        /// The cause.
        cause: io::Error,
    },
    /// Connecting or the TLS handshake took too long.
    #[error(
        "timeout: the terminal at {addr} did not {step} within {} s — check the network between the phone and the terminal",
        .after.as_secs_f32()
    )]
    ConnectTimeout {
        /// The address.
        addr: String,
        /// `accept the connection` or `complete the TLS handshake`.
        step: &'static str,
        /// The time allowed.
        after: Duration,
    },
    /// The terminal presented another certificate than the pinned one.
    #[error(transparent)]
    CertificateMismatch(CertificateMismatch),
    /// The TLS handshake failed otherwise.
    #[error("TLS handshake with the terminal at {addr} failed: {cause}")]
    Tls {
        /// The address.
        addr: String,
        /// The cause.
        cause: io::Error,
    },
    /// The terminal refused the HTTP request itself (4xx: nothing was
    /// acted on) or failed it (5xx).
    #[error(
        "the terminal answered HTTP {status} to {path} — it is not a posnet terminal's nexo endpoint or it is in trouble (run `posnet phone diagnose`)"
    )]
    Http {
        /// The HTTP status.
        status: u16,
        /// The path asked.
        path: &'static str,
    },
    /// The notification WebSocket could not be opened on a connection
    /// that was (the terminal does not offer it, or not to this key).
    #[error("the terminal refused the progress subscription: {0}")]
    Subscription(String),
    /// No answer in time after the request was sent.
    #[error(
        "timeout: no answer from the terminal within {} s of sending the request",
        .after.as_secs_f32()
    )]
    AnswerTimeout {
        /// The time allowed.
        after: Duration,
    },
    /// The connection broke after the request was (maybe) sent.
    #[error("the connection to the terminal broke after the request was sent: {reason}")]
    Cut {
        /// What broke.
        reason: String,
    },
    /// The answer is larger than any nexo message may be.
    #[error("the terminal's answer exceeds {MAX_MESSAGE_LEN} bytes")]
    TooLarge,
    /// The serial device could not be opened.
    #[error(
        "cannot open the serial device {device}: {cause} — is the cable or Bluetooth link connected, is {device} the terminal's device, and may this user open it (group dialout)?"
    )]
    Device {
        /// The device path.
        device: String,
        /// Why.
        cause: String,
    },
    /// The message could not be framed for the serial link (nothing was
    /// sent).
    #[error("cannot send the message over the serial link: {0}")]
    Frame(String),
    /// The pinned TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

impl TransportError {
    /// Whether the request may have reached the terminal, so that its
    /// answer is lost rather than never produced.
    pub fn maybe_delivered(&self) -> bool {
        match self {
            Self::AnswerTimeout { .. } | Self::Cut { .. } | Self::TooLarge => true,
            Self::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// Whether sending the same request again may succeed and is safe:
    /// nothing was delivered, and the cause can pass (a network hiccup, a
    /// terminal restarting). A certificate mismatch never passes by
    /// itself.
    pub fn retriable(&self) -> bool {
        matches!(
            self,
            Self::Resolve { .. }
                | Self::Connect { .. }
                | Self::ConnectTimeout { .. }
                | Self::Tls { .. }
        )
    }
}

/// The HTTPS and WebSocket link to a paired terminal.
#[derive(Clone)]
pub struct Https {
    host: String,
    port: u16,
    events_query: String,
    tls: Arc<ClientConfig>,
    timeouts: Timeouts,
    progress: bool,
}

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Https")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A TLS connection to the terminal.
pub type Tls = TlsStream<TcpStream>;

impl Https {
    /// The link to `pairing`'s terminal, pinned to its certificate.
    pub fn new(
        pairing: &nexo::pairing::Pairing,
        timeouts: Timeouts,
    ) -> Result<Self, TransportError> {
        let events_query = form_urlencoded::Serializer::new(String::new())
            .append_pair("kid", &pairing.key_identifier)
            .append_pair("kv", &pairing.key_version.to_string())
            .finish();
        Ok(Self {
            host: pairing.host.clone(),
            port: pairing.port,
            events_query,
            tls: pin::client_config(pairing.cert_sha256)?,
            timeouts,
            progress: true,
        })
    }

    /// The same link without the progress subscription: one connection
    /// per exchange instead of two, for scripts that show no progress.
    pub fn without_progress(self) -> Self {
        Self {
            progress: false,
            ..self
        }
    }

    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The terminal's addresses.
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, TransportError> {
        let resolve = |cause| TransportError::Resolve {
            host: self.host.clone(),
            cause,
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(resolve)?
            .collect();
        if addrs.is_empty() {
            return Err(resolve(io::Error::new(
                io::ErrorKind::NotFound,
                "no address",
            )));
        }
        Ok(addrs)
    }

    /// A TCP connection to the first of `addrs` that accepts one.
    pub async fn connect_tcp(&self, addrs: &[SocketAddr]) -> Result<TcpStream, TransportError> {
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.timeouts.connect, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    // One small request, one small answer: no Nagle delay.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(cause)) => {
                    last = Some(TransportError::Connect {
                        addr: addr.to_string(),
                        cause,
                    })
                }
                Err(_) => {
                    last = Some(TransportError::ConnectTimeout {
                        addr: addr.to_string(),
                        step: "accept the connection",
                        after: self.timeouts.connect,
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| TransportError::Connect {
            addr: self.authority(),
            cause: io::Error::new(io::ErrorKind::NotFound, "no address to connect to"),
        }))
    }

    /// The TLS handshake over `tcp`, accepting only the pinned
    /// certificate.
    pub async fn handshake(&self, tcp: TcpStream) -> Result<Tls, TransportError> {
        let name = ServerName::try_from(self.host.clone()).map_err(|e| TransportError::Tls {
            addr: self.authority(),
            cause: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let connector = TlsConnector::from(self.tls.clone());
        match tokio::time::timeout(self.timeouts.connect, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(cause)) => Err(match CertificateMismatch::in_io(&cause) {
                Some(mismatch) => TransportError::CertificateMismatch(mismatch.clone()),
                None => TransportError::Tls {
                    addr: self.authority(),
                    cause,
                },
            }),
            Err(_) => Err(TransportError::ConnectTimeout {
                addr: self.authority(),
                step: "complete the TLS handshake",
                after: self.timeouts.connect,
            }),
        }
    }

    /// A pinned TLS connection: resolve, connect, handshake.
    pub async fn connect(&self) -> Result<Tls, TransportError> {
        let addrs = self.resolve().await?;
        let tcp = self.connect_tcp(&addrs).await?;
        self.handshake(tcp).await
    }

    /// Posts `request` to `/nexo` and returns the answer's body.
    pub async fn post(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let tls = self.connect().await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| TransportError::Tls {
                    addr: self.authority(),
                    cause: io::Error::other(e),
                })?;
        let driver = AbortOnDrop(tokio::spawn(async move {
            let _ = connection.await;
        }));
        let http_request = http::Request::post(NEXO_PATH)
            .header(http::header::HOST, self.authority())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(request)))
            .expect("a request built from a valid path and headers");
        let answer = async {
            let response =
                sender
                    .send_request(http_request)
                    .await
                    .map_err(|e| TransportError::Cut {
                        reason: e.to_string(),
                    })?;
            let status = response.status();
            if !status.is_success() {
                return Err(TransportError::Http {
                    status: status.as_u16(),
                    path: NEXO_PATH,
                });
            }
            // Bounded: a nexo message is never larger than MAX_MESSAGE_LEN.
            let body = Limited::new(response.into_body(), MAX_MESSAGE_LEN)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        TransportError::TooLarge
                    } else {
                        TransportError::Cut {
                            reason: e.to_string(),
                        }
                    }
                })?;
            Ok(body.to_bytes().to_vec())
        };
        let result = tokio::time::timeout(self.timeouts.answer, answer)
            .await
            .unwrap_or(Err(TransportError::AnswerTimeout {
                after: self.timeouts.answer,
            }));
        drop(driver);
        result
    }

    /// Subscribes to the terminal's notifications for this pairing's key.
    pub async fn subscribe(&self) -> Result<WebSocketStream<Tls>, TransportError> {
        let tls = self.connect().await?;
        let url = format!(
            "wss://{}{EVENTS_PATH}?{}",
            self.authority(),
            self.events_query
        );
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_LEN))
            .max_frame_size(Some(MAX_MESSAGE_LEN));
        let upgrade = tokio_tungstenite::client_async_with_config(url, tls, Some(config));
        match tokio::time::timeout(self.timeouts.connect, upgrade).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
                Err(TransportError::Subscription(format!(
                    "HTTP {} to {EVENTS_PATH}",
                    response.status().as_u16()
                )))
            }
            Ok(Err(e)) => Err(TransportError::Subscription(e.to_string())),
            Err(_) => Err(TransportError::Subscription(format!(
                "no WebSocket upgrade within {} s",
                self.timeouts.connect.as_secs_f32()
            ))),
        }
    }

    /// Sends `request` and returns the answer, handing each notification
    /// received meanwhile to `on_notification`. The subscription comes
    /// first, so that no notification of the exchange is missed; when
    /// the terminal cannot be reached for it, the request would not reach
    /// it either and that failure is returned. When only the subscription
    /// is refused, the exchange still runs; the cashier misses the
    /// progress.
    pub async fn exchange(
        &self,
        request: &[u8],
        on_notification: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<Vec<u8>, TransportError> {
        let subscribed = match self.progress {
            true => self.subscribe().await.map(Some),
            false => Ok(None),
        };
        let mut events = match subscribed {
            Ok(ws) => ws,
            Err(e @ TransportError::Subscription(_)) => {
                tracing::warn!("no progress from the terminal: {e}");
                None
            }
            Err(e) => return Err(e),
        };
        let post = self.post(request.to_vec());
        tokio::pin!(post);
        loop {
            tokio::select! {
                answer = &mut post => return answer,
                event = next_event(&mut events) => match event {
                    Some(bytes) => on_notification(&bytes),
                    None => events = None,
                },
            }
        }
    }
}

/// The next notification's bytes, `None` when the WebSocket ended;
/// pending forever without one.
async fn next_event(events: &mut Option<WebSocketStream<Tls>>) -> Option<Vec<u8>> {
    let Some(ws) = events else {
        return std::future::pending().await;
    };
    loop {
        match ws.next().await? {
            Ok(Message::Text(text)) => return Some(text.as_bytes().to_vec()),
            Ok(Message::Binary(bytes)) => return Some(bytes.to_vec()),
            Ok(Message::Close(_)) | Err(_) => return None,
            // Pings are answered by tungstenite; nothing else carries data.
            Ok(_) => continue,
        }
    }
}

/// Stops the HTTP connection's task when the exchange ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A byte stream a serial link runs on (a serial device, a pty).
pub trait Line: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Line for T {}

/// A serial link to the terminal (USB-serial, Bluetooth RFCOMM).
pub struct Serial {
    device: String,
    client: SerialClient<Box<dyn Line>>,
}

impl std::fmt::Debug for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serial")
            .field("device", &self.device)
            .field("client", &self.client)
            .finish()
    }
}

impl Serial {
    /// Opens `device` at `baud` baud (8N1, raw); answers are awaited at
    /// most `timeouts.answer`. Must be called within a tokio runtime.
    pub fn open(device: &str, baud: u32, timeouts: Timeouts) -> Result<Self, TransportError> {
        let stream = serial_io::open(device, baud).map_err(|e| TransportError::Device {
            device: device.to_owned(),
            cause: e.to_string(),
        })?;
        Ok(Self::on(device, Box::new(stream), timeouts))
    }

    /// The link over `line`, named `device` in messages.
    pub fn on(device: &str, line: Box<dyn Line>, timeouts: Timeouts) -> Self {
        let config = serial_io::ClientConfig {
            answer_timeout: timeouts.answer,
            ..serial_io::ClientConfig::default()
        };
        Self {
            device: device.to_owned(),
            client: SerialClient::new(line, config),
        }
    }

    /// The device's path.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Sends `request` and returns its answer; notifications received
    /// meanwhile go to `on_notification`.
    pub async fn exchange(
        &mut self,
        request: &[u8],
        on_notification: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<Vec<u8>, TransportError> {
        self.client
            .exchange(request, |bytes| on_notification(&bytes))
            .await
            .map_err(|e| match e {
                // The link may have carried the request before it failed:
                // its answer is lost, not refused.
                SerialIoError::Timeout { waited, .. } => {
                    TransportError::AnswerTimeout { after: waited }
                }
                e @ (SerialIoError::Closed
                | SerialIoError::Io { .. }
                | SerialIoError::RetransmissionsExhausted { .. }) => TransportError::Cut {
                    reason: format!("serial device {}: {e}", self.device),
                },
                e => TransportError::Frame(e.to_string()),
            })
    }
}

/// A link to a terminal.
#[derive(Debug)]
pub enum Transport {
    /// HTTPS with WebSocket notifications.
    Https(Https),
    /// A serial link (boxed: its client holds the link's buffers).
    Serial(Box<Serial>),
}

impl Transport {
    /// Sends `request`, returns the answer; notifications go to
    /// `on_notification` while the answer is awaited.
    pub async fn exchange(
        &mut self,
        request: &[u8],
        on_notification: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<Vec<u8>, TransportError> {
        match self {
            Self::Https(https) => https.exchange(request, on_notification).await,
            Self::Serial(serial) => serial.exchange(request, on_notification).await,
        }
    }
}
