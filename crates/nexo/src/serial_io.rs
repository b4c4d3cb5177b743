//! The serial link of [`crate::serial`] run over a tokio byte stream
//! (feature `tokio`): a serial device opened with [`open`], or any other
//! `AsyncRead + AsyncWrite`.
//!
//! - [`serve`]: the terminal's side. Each message received is handed to an
//!   async handler whose answer goes back as a frame; the terminal's
//!   notifications are sent in between.
//! - [`SerialClient`]: the Sale system's side (a phone, a cash register).
//!   [`SerialClient::exchange`] sends a request and returns its answer,
//!   handing the notifications that arrive meanwhile to a callback.
//!
//! Both keep one frame in flight per direction, as the sans-IO [`Link`]
//! does, with tokio's clock; everything they hold is bounded. A frame
//! received again within its sender's retransmission window (its ACK was
//! lost) is recognised by its bytes and not acted on twice.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::inbound::{Security, parse_request};
use crate::message::RequestBody;
use crate::model::MessageHeader;
use crate::serial::{Config, Link, LinkEvent, SendError};
use crate::wire::{EventToNotify, MessageType};

/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 4096;

/// Received payloads remembered to recognise retransmissions; with the
/// window (see [`Recent`]) this bounds the memory to that many frames.
const RECENT_MAX: usize = 8;

/// What failed on a serial link.
#[derive(Debug, thiserror::Error)]
pub enum SerialIoError {
    /// The device could not be opened or configured.
    #[error("cannot open serial device {path} at {baud} baud: {source}")]
    Open {
        /// The device path.
        path: String,
        /// The baud rate asked for.
        baud: u32,
        /// Why.
        #[source]
        source: tokio_serial::Error,
    },
    /// The stream ended: the device was unplugged or hung up, or the peer
    /// closed it.
    #[error("the serial device closed (unplugged, hung up, or closed by the peer)")]
    Closed,
    /// Reading or writing failed otherwise.
    #[error("serial I/O failed while {op}: {source}")]
    Io {
        /// `reading`, `writing` or `flushing`.
        op: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The peer never acknowledged the message sent.
    #[error("the message was not acknowledged after {transmissions} transmissions")]
    RetransmissionsExhausted {
        /// Times it was written.
        transmissions: u8,
    },
    /// No answer came in time.
    #[error("no answer within {waited:?} (request acknowledged by the peer: {acknowledged})")]
    Timeout {
        /// How long the exchange waited.
        waited: Duration,
        /// Whether the peer acknowledged the request (it was received; its
        /// answer did not come).
        acknowledged: bool,
    },
    /// The message cannot be framed (empty, or over the link's bound).
    #[error("cannot frame the message: {0}")]
    Frame(#[from] SendError),
    /// [`SerialClient::exchange`] was given something other than a nexo
    /// request whose `MessageHeader` can be read (its answer could not be
    /// recognised).
    #[error("not a SaleToPOIRequest with a readable MessageHeader: {0}")]
    NotARequest(String),
}

/// Counts of what happened on a link, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Good frames received, repetitions included.
    pub received: u64,
    /// Frames sent and acknowledged.
    pub delivered: u64,
    /// Received bytes that began a frame and were not one (noise, a CRC
    /// mismatch, silence in the middle of a frame).
    pub discarded: u64,
    /// Frames received again within their sender's retransmission window,
    /// not acted on twice.
    pub duplicates: u64,
    /// Frames given up after their last retransmission.
    pub gave_up: u64,
    /// Good frames not acted on: on the terminal's side, a request while
    /// every handler was busy; on the client's side, a response to an
    /// earlier exchange or a message that is no nexo message.
    pub ignored: u64,
}

/// Opens a serial device (`/dev/ttyUSB0`, `/dev/rfcomm0`, a pty) at `baud`
/// baud, 8 data bits, no parity, one stop bit, no flow control, in raw
/// mode and exclusive mode. Must be called within a tokio runtime.
pub fn open(path: &str, baud: u32) -> Result<SerialDevice, SerialIoError> {
    use tokio_serial::SerialPortBuilderExt as _;
    tokio_serial::new(path, baud)
        .open_native_async()
        .map(SerialDevice)
        .map_err(|source| SerialIoError::Open {
            path: path.to_owned(),
            baud,
            source,
        })
}

/// A serial device opened with [`open`], as a tokio byte stream.
///
/// Flushing returns at once: written bytes are in the kernel's queue
/// already, and waiting for the line to send them (`tcdrain`, what the
/// device's own flush does) would block the runtime's thread for as long
/// as the queue takes on the wire.
#[derive(Debug)]
pub struct SerialDevice(tokio_serial::SerialStream);

impl AsyncRead for SerialDevice {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SerialDevice {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// How the terminal's side runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeConfig {
    /// Bounds and timeouts of the link.
    pub link: Config,
    /// Requests handled at once (at least 1), counting those whose answer
    /// waits to be sent. More than one lets an `AbortRequest` or a
    /// `TransactionStatusRequest` through while a payment runs; a request
    /// arriving while all are busy is acknowledged and dropped, with a
    /// warning.
    pub max_handlers: usize,
}

impl Default for ServeConfig {
    /// The link's defaults, 4 handlers.
    fn default() -> Self {
        Self {
            link: Config::default(),
            max_handlers: 4,
        }
    }
}

/// Serves the terminal's side of a serial link on `stream` until the
/// stream closes (`Ok`) or `shutdown` completes (`Ok`; handlers still
/// running are dropped).
///
/// Each message received is passed to `handler`; the bytes it returns are
/// sent back as one frame (nothing when empty: an `AbortRequest` has no
/// answer of its own). Messages from `notifications` are sent as frames
/// between answers, answers first; the channel closing only stops them.
/// An answer or notification the link gives up on is dropped with a
/// warning. Errors are I/O failures other than the stream closing.
pub async fn serve<S, H, F>(
    stream: S,
    config: ServeConfig,
    mut handler: H,
    mut notifications: mpsc::Receiver<Vec<u8>>,
    shutdown: impl Future<Output = ()>,
) -> Result<LinkStats, SerialIoError>
where
    S: AsyncRead + AsyncWrite,
    H: FnMut(Vec<u8>) -> F,
    F: Future<Output = Vec<u8>>,
{
    let max_handlers = config.max_handlers.max(1);
    let mut driver = Driver::new(stream, config.link);
    // Handlers running plus answers waiting for the link: at most
    // `max_handlers` together.
    let mut running: Vec<Pin<Box<F>>> = Vec::with_capacity(max_handlers);
    let mut answers: VecDeque<Vec<u8>> = VecDeque::with_capacity(max_handlers);
    let mut notifications_open = true;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        if !driver.in_flight
            && let Some(answer) = answers.pop_front()
        {
            driver.send_or_drop(&answer, "answer");
        }
        let can_notify = notifications_open && !driver.in_flight && answers.is_empty();
        tokio::select! {
            () = &mut shutdown => break,
            io = driver.io() => match io {
                Ok(()) => {}
                Err(SerialIoError::Closed) => break,
                Err(e) => return Err(e),
            },
            answer = next_finished(&mut running), if !running.is_empty() => {
                if !answer.is_empty() {
                    answers.push_back(answer);
                }
            }
            notification = notifications.recv(), if can_notify => match notification {
                Some(message) if !message.is_empty() => driver.send_or_drop(&message, "notification"),
                Some(_) => {}
                None => notifications_open = false,
            },
        }
        while let Some(event) = driver.next_event() {
            if let Event::Received(request) = event {
                if running.len() + answers.len() < max_handlers {
                    running.push(Box::pin(handler(request)));
                } else {
                    driver.stats.ignored += 1;
                    tracing::warn!(
                        max_handlers,
                        "serial link: request dropped, every handler is busy"
                    );
                }
            }
        }
    }
    Ok(driver.stats)
}

/// The output of the first of `running` to finish, which is removed.
/// Cancel-safe: a finished future's output is returned in the same poll.
fn next_finished<F: Future>(running: &mut Vec<Pin<Box<F>>>) -> impl Future<Output = F::Output> {
    poll_fn(move |cx| {
        for i in 0..running.len() {
            if let Poll::Ready(output) = running[i].as_mut().poll(cx) {
                drop(running.swap_remove(i));
                return Poll::Ready(output);
            }
        }
        Poll::Pending
    })
}

/// How the Sale system's side runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Bounds and timeouts of the link.
    pub link: Config,
    /// How long an exchange waits for its answer, from its start (a
    /// payment waits for the card and the host).
    pub answer_timeout: Duration,
}

impl Default for ClientConfig {
    /// The link's defaults, 150 s for an answer.
    fn default() -> Self {
        Self {
            link: Config::default(),
            answer_timeout: Duration::from_secs(150),
        }
    }
}

/// The Sale system's side of a serial link: requests out, their answers
/// and the terminal's notifications in.
///
/// The stream is read only while a call runs: a notification sent between
/// calls is delivered by the next one, if the terminal has not given up on
/// it by then.
pub struct SerialClient<S> {
    driver: Driver<S>,
    answer_timeout: Duration,
}

impl<S> std::fmt::Debug for SerialClient<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialClient")
            .field("stats", &self.driver.stats)
            .field("answer_timeout", &self.answer_timeout)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite> SerialClient<S> {
    /// A client on `stream`.
    pub fn new(stream: S, config: ClientConfig) -> Self {
        Self {
            driver: Driver::new(stream, config.link),
            answer_timeout: config.answer_timeout,
        }
    }

    /// Sends `request` (a `SaleToPOIRequest`, plain or secured) and
    /// returns its answer: the `SaleToPOIResponse` whose `MessageHeader`
    /// has the request's `MessageCategory`, `SaleID` and `ServiceID`, or
    /// the plain `EventNotification` `Reject` with the request's `SaleID`
    /// and `ServiceID` (the terminal's answer to a request it could not
    /// act on, as over HTTPS). Other `SaleToPOIRequest` messages received
    /// meanwhile (`DisplayRequest`, `EventNotification`) are passed to
    /// `on_notification`; responses to earlier exchanges are dropped.
    ///
    /// Dropping the future leaves the client usable: a request still in
    /// flight is finished by the next call before it sends its own.
    pub async fn exchange(
        &mut self,
        request: &[u8],
        on_notification: impl FnMut(Vec<u8>),
    ) -> Result<Vec<u8>, SerialIoError> {
        let header = request_header(request)?;
        let answer = self.run(request, Some(&header), on_notification).await?;
        Ok(answer.expect("a run expecting an answer returns one"))
    }

    /// Sends a message nexo answers with nothing (an `AbortRequest`) and
    /// returns once the terminal acknowledged it; notifications received
    /// meanwhile are passed to `on_notification`. Bounded by the answer
    /// timeout too.
    pub async fn send(
        &mut self,
        message: &[u8],
        on_notification: impl FnMut(Vec<u8>),
    ) -> Result<(), SerialIoError> {
        self.run(message, None, on_notification).await.map(drop)
    }

    /// What happened on the link so far.
    pub fn stats(&self) -> LinkStats {
        self.driver.stats
    }

    /// Sends `message` once the link is free and reads until its answer
    /// (the response to `expect`) or, without `expect`, its ACK.
    async fn run(
        &mut self,
        message: &[u8],
        expect: Option<&MessageHeader>,
        mut on_notification: impl FnMut(Vec<u8>),
    ) -> Result<Option<Vec<u8>>, SerialIoError> {
        let waited = self.answer_timeout;
        let deadline = Instant::now() + waited;
        let mut sent = false;
        let mut acknowledged = false;
        let driver = &mut self.driver;
        let outcome = tokio::time::timeout_at(deadline, async {
            loop {
                // A frame of an earlier, abandoned call is finished first:
                // the link has one in flight at a time.
                if !sent && !driver.in_flight {
                    driver.send(message)?;
                    sent = true;
                }
                driver.io().await?;
                while let Some(event) = driver.next_event() {
                    match event {
                        Event::Received(payload) => match classify(&payload, expect) {
                            Kind::Answer => {
                                // Its ACK goes out now, not with the next call.
                                driver.write_pending().await?;
                                return Ok(Some(payload));
                            }
                            Kind::Notification => on_notification(payload),
                            Kind::Other => driver.stats.ignored += 1,
                        },
                        // Outcomes before `sent` are the earlier frame's.
                        Event::Delivered if sent => {
                            acknowledged = true;
                            if expect.is_none() {
                                driver.write_pending().await?;
                                return Ok(None);
                            }
                        }
                        Event::GaveUp { transmissions } if sent => {
                            return Err(SerialIoError::RetransmissionsExhausted { transmissions });
                        }
                        Event::Delivered | Event::GaveUp { .. } => {}
                    }
                }
            }
        })
        .await;
        outcome.unwrap_or(Err(SerialIoError::Timeout {
            waited,
            acknowledged,
        }))
    }
}

/// A received message as the client sees it.
enum Kind {
    /// The answer to the exchange.
    Answer,
    /// A message of the terminal's own (`SaleToPOIRequest`).
    Notification,
    /// A response to an earlier exchange, or no nexo message.
    Other,
}

/// The root and clear `MessageHeader` of a message, plain or secured (a
/// secured envelope keeps both in the clear); the rest is skipped.
#[derive(Deserialize)]
struct Roots {
    #[serde(rename = "SaleToPOIRequest")]
    request: Option<Root>,
    #[serde(rename = "SaleToPOIResponse")]
    response: Option<Root>,
}

#[derive(Deserialize)]
struct Root {
    #[serde(rename = "MessageHeader")]
    header: MessageHeader,
}

/// The header of a request the client is asked to send.
fn request_header(request: &[u8]) -> Result<MessageHeader, SerialIoError> {
    match serde_json::from_slice::<Roots>(request) {
        Ok(Roots {
            request: Some(root),
            response: None,
        }) => Ok(root.header),
        Ok(_) => Err(SerialIoError::NotARequest(
            "the root is not SaleToPOIRequest alone".into(),
        )),
        Err(e) => Err(SerialIoError::NotARequest(e.to_string())),
    }
}

/// Whether `payload` answers the request with header `expect`, is a
/// notification, or neither.
fn classify(payload: &[u8], expect: Option<&MessageHeader>) -> Kind {
    let same_exchange = |a: &MessageHeader, b: &MessageHeader| {
        a.sale_id == b.sale_id && a.service_id == b.service_id
    };
    match serde_json::from_slice::<Roots>(payload) {
        Ok(Roots {
            request: None,
            response: Some(response),
        }) => match expect {
            Some(request)
                if response.header.message_type == MessageType::Response
                    && response.header.message_category == request.message_category
                    && same_exchange(&response.header, request) =>
            {
                Kind::Answer
            }
            _ => Kind::Other,
        },
        Ok(Roots {
            request: Some(_),
            response: None,
        }) => {
            let is_reject = |request: &MessageHeader| match parse_request(payload, Security::Plain)
            {
                Ok(inbound) => match &inbound.message.body {
                    RequestBody::Event(event) => {
                        event.event_to_notify == EventToNotify::Reject
                            && same_exchange(&inbound.message.header, request)
                    }
                    _ => false,
                },
                Err(_) => false,
            };
            if expect.is_some_and(is_reject) {
                Kind::Answer
            } else {
                Kind::Notification
            }
        }
        _ => Kind::Other,
    }
}

/// What the driver reports, after counting the rest.
enum Event {
    /// A message, not a repetition.
    Received(Vec<u8>),
    /// The frame sent was acknowledged.
    Delivered,
    /// The frame sent was given up.
    GaveUp { transmissions: u8 },
}

/// Payloads received within the last retransmission window, to recognise
/// a frame sent again because its ACK was lost. The window is the span
/// over which a sender with this link's configuration writes one frame:
/// the ACK timeout times the transmissions. At most [`RECENT_MAX`] kept.
struct Recent {
    window_ms: u64,
    seen: VecDeque<(u64, Vec<u8>)>,
}

impl Recent {
    fn new(config: &Config) -> Self {
        Self {
            window_ms: config
                .ack_timeout_ms
                .saturating_mul(u64::from(config.max_retransmissions) + 1),
            seen: VecDeque::with_capacity(RECENT_MAX),
        }
    }

    /// Whether `payload` was received within the window before `now`;
    /// remembers it otherwise.
    fn is_repeat(&mut self, now: u64, payload: &[u8]) -> bool {
        while self
            .seen
            .front()
            .is_some_and(|(at, _)| now.saturating_sub(*at) > self.window_ms)
        {
            self.seen.pop_front();
        }
        if self.seen.iter().any(|(_, seen)| seen == payload) {
            return true;
        }
        if self.seen.len() == RECENT_MAX {
            self.seen.pop_front();
        }
        self.seen.push_back((now, payload.to_vec()));
        false
    }
}

/// The bytes being written: one ACK/NAK or one frame at a time, taken
/// from the link only when the previous is out, so that a frame's ACK
/// timeout starts when its writing does and an ACK never waits behind
/// more than one frame.
struct Output<S> {
    writer: WriteHalf<S>,
    bytes: Vec<u8>,
    written: usize,
    flush: bool,
}

impl<S: AsyncWrite> Output<S> {
    fn is_idle(&self) -> bool {
        self.bytes.is_empty() && !self.flush
    }

    /// Writes some of the bytes, or flushes once they are out. Cancel-safe:
    /// progress is recorded only after the write returned.
    async fn progress(&mut self) -> Result<(), SerialIoError> {
        if self.written < self.bytes.len() {
            let n = self
                .writer
                .write(&self.bytes[self.written..])
                .await
                .map_err(|e| io_error("writing", e))?;
            if n == 0 {
                return Err(SerialIoError::Closed);
            }
            self.written += n;
            if self.written == self.bytes.len() {
                self.bytes.clear();
                self.written = 0;
                self.flush = true;
            }
        } else if self.flush {
            self.writer
                .flush()
                .await
                .map_err(|e| io_error("flushing", e))?;
            self.flush = false;
        }
        Ok(())
    }
}

/// `Closed` for the errors of a device that went away (EIO: a pty whose
/// other side closed, a USB adapter unplugged), `Io` otherwise.
fn io_error(op: &'static str, source: io::Error) -> SerialIoError {
    match source.raw_os_error() {
        Some(libc::EIO | libc::ENXIO | libc::ENODEV) => SerialIoError::Closed,
        _ => SerialIoError::Io { op, source },
    }
}

/// A [`Link`] run over a stream with tokio's clock.
struct Driver<S> {
    reader: ReadHalf<S>,
    input: Box<[u8]>,
    output: Output<S>,
    link: Link,
    epoch: Instant,
    /// A frame was handed to the link and its outcome is not known yet.
    in_flight: bool,
    recent: Recent,
    stats: LinkStats,
}

impl<S: AsyncRead + AsyncWrite> Driver<S> {
    fn new(stream: S, config: Config) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        Self {
            reader,
            input: vec![0; READ_CHUNK].into_boxed_slice(),
            output: Output {
                writer,
                bytes: Vec::new(),
                written: 0,
                flush: false,
            },
            link: Link::new(config),
            epoch: Instant::now(),
            in_flight: false,
            recent: Recent::new(&config),
            stats: LinkStats::default(),
        }
    }

    /// Milliseconds since the driver started, the link's clock.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn send(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.link.send(payload)?;
        self.in_flight = true;
        Ok(())
    }

    /// Sends `payload`, or drops it with a warning when it cannot be
    /// framed (the link is free when this is called).
    fn send_or_drop(&mut self, payload: &[u8], what: &'static str) {
        if let Err(e) = self.send(payload) {
            tracing::warn!(what, error = %e, "serial link: message not sent");
        }
    }

    /// Takes the link's next bytes to write when the previous are out.
    fn refill(&mut self) {
        if self.output.bytes.is_empty()
            && let Some(bytes) = self.link.poll_transmit(self.now())
        {
            self.output.bytes = bytes;
        }
    }

    /// Waits for one thing to happen (bytes read, bytes written, a
    /// timeout) and hands it to the link; drain [`next_event`] after.
    /// Cancel-safe.
    async fn io(&mut self) -> Result<(), SerialIoError> {
        self.refill();
        let timer = self.link.poll_timeout();
        let wake = timer.map(|ms| self.epoch + Duration::from_millis(ms));
        let writing = !self.output.is_idle();
        tokio::select! {
            read = self.reader.read(&mut self.input) => {
                let n = read.map_err(|e| io_error("reading", e))?;
                if n == 0 {
                    return Err(SerialIoError::Closed);
                }
                let now = self.now();
                self.link.handle_input(now, &self.input[..n]);
            }
            wrote = self.output.progress(), if writing => wrote?,
            () = sleep_until(wake) => {
                // The timer fired at or after its deadline; `max` keeps
                // the link's clock there despite rounding.
                let now = self.now().max(timer.unwrap_or(0));
                self.link.handle_timeout(now);
            }
        }
        self.refill();
        Ok(())
    }

    /// Writes what the link has to send right now (the ACK of a frame just
    /// received), without waiting for anything else.
    async fn write_pending(&mut self) -> Result<(), SerialIoError> {
        loop {
            self.refill();
            if self.output.is_idle() {
                return Ok(());
            }
            self.output.progress().await?;
        }
    }

    /// The link's next event worth reporting; the others are counted.
    fn next_event(&mut self) -> Option<Event> {
        while let Some(event) = self.link.poll_event() {
            match event {
                LinkEvent::Received(payload) => {
                    self.stats.received += 1;
                    if self.recent.is_repeat(self.now(), &payload) {
                        self.stats.duplicates += 1;
                        tracing::debug!("serial link: repeated frame ignored");
                        continue;
                    }
                    return Some(Event::Received(payload));
                }
                LinkEvent::Discarded(fault) => {
                    self.stats.discarded += 1;
                    tracing::debug!(%fault, "serial link: received bytes discarded");
                }
                LinkEvent::Delivered => {
                    self.in_flight = false;
                    self.stats.delivered += 1;
                    return Some(Event::Delivered);
                }
                LinkEvent::GaveUp { transmissions } => {
                    self.in_flight = false;
                    self.stats.gave_up += 1;
                    tracing::warn!(
                        transmissions,
                        "serial link: frame not acknowledged, given up"
                    );
                    return Some(Event::GaveUp { transmissions });
                }
            }
        }
        None
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
