//! nexo messages over a serial link (USB-serial; the same over Bluetooth
//! RFCOMM), sans-IO in the manner of quinn-proto: the caller feeds the
//! bytes it reads and the current time, and writes the bytes it is handed.
//!
//! A frame is
//!
//! ```text
//! STX (02) | length (2 bytes, big-endian) | payload | ETX (03) | CRC (2 bytes, big-endian)
//! ```
//!
//! where the payload is the message's JSON exactly as it would travel over
//! HTTP (secured or plain) and the CRC is CRC-16/CCITT-FALSE (polynomial
//! 0x1021, initial value 0xFFFF, no reflection, no final XOR; the
//! catalogue's CRC-16/IBM-3740, check value 0x29B1, the variant EMVCo
//! specifications use) computed over the length, the payload and the ETX.
//! The length prefix makes byte stuffing unnecessary.
//!
//! The receiver answers every frame: ACK (06) when it is good, NAK (15)
//! when its CRC is wrong or its length is over the bound. ACK and NAK
//! travel between frames only. The sender keeps one frame in flight and
//! retransmits it on NAK or when no answer comes within the ACK timeout,
//! at most [`Config::max_retransmissions`] times, then gives up.
//!
//! Without sequence numbers a lost ACK makes the sender deliver a frame
//! twice; the nexo layer recognises the repetition by its `SaleID` and
//! `ServiceID`.

use std::collections::VecDeque;

use crc::{CRC_16_IBM_3740, Crc};

/// Start of a frame.
pub const STX: u8 = 0x02;
/// End of a frame's payload.
pub const ETX: u8 = 0x03;
/// A frame was received intact.
pub const ACK: u8 = 0x06;
/// A frame was received damaged; send it again.
pub const NAK: u8 = 0x15;
/// Largest payload the 2-byte length can announce.
pub const MAX_PAYLOAD: usize = u16::MAX as usize;
/// Bytes a frame adds to its payload: STX, length, ETX, CRC.
pub const FRAME_OVERHEAD: usize = 6;

/// CRC-16/CCITT-FALSE (the catalogue's CRC-16/IBM-3740).
const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);

/// The CRC of a frame: CRC-16/CCITT-FALSE over its length, payload and ETX.
pub fn frame_crc(length_payload_etx: &[u8]) -> u16 {
    CRC16.checksum(length_payload_etx)
}

/// A payload that cannot be framed or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Empty payloads are not framed (a nexo message never is).
    #[error("empty payload")]
    Empty,
    /// The payload is over the link's bound.
    #[error("payload of {len} bytes exceeds the {max}-byte bound")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A frame is still waiting for its ACK.
    #[error("a frame is still in flight")]
    Busy,
}

/// Frames `payload`: STX, length, payload, ETX, CRC.
pub fn encode_frame(payload: &[u8]) -> Result<Vec<u8>, SendError> {
    if payload.is_empty() {
        return Err(SendError::Empty);
    }
    let len = u16::try_from(payload.len()).map_err(|_| SendError::TooLarge {
        len: payload.len(),
        max: MAX_PAYLOAD,
    })?;
    let mut frame = Vec::with_capacity(payload.len() + FRAME_OVERHEAD);
    frame.push(STX);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    frame.push(ETX);
    let crc = frame_crc(&frame[1..]);
    frame.extend_from_slice(&crc.to_be_bytes());
    Ok(frame)
}

/// Bounds and timeouts of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Largest payload accepted or sent (1..=[`MAX_PAYLOAD`]); a frame
    /// announcing more is refused before any of it is buffered.
    pub max_payload: usize,
    /// A frame whose next byte does not come within this many
    /// milliseconds is abandoned.
    pub inter_byte_timeout_ms: u64,
    /// A frame not answered within this many milliseconds of being handed
    /// out for writing is sent again. It must cover the frame's time on
    /// the wire (about 5.7 s for 64 KiB at 115200 baud).
    pub ack_timeout_ms: u64,
    /// Retransmissions of a frame before giving up.
    pub max_retransmissions: u8,
}

impl Default for Config {
    /// 64 KiB payloads, 500 ms between bytes (Bluetooth links pause), 2 s
    /// for the ACK, 3 retransmissions.
    fn default() -> Self {
        Self {
            max_payload: MAX_PAYLOAD,
            inter_byte_timeout_ms: 500,
            ack_timeout_ms: 2_000,
            max_retransmissions: 3,
        }
    }
}

impl Config {
    fn checked(self) -> Self {
        assert!(
            (1..=MAX_PAYLOAD).contains(&self.max_payload),
            "max_payload must be 1..={MAX_PAYLOAD}"
        );
        self
    }
}

/// Why received bytes that began with STX were not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameFault {
    /// The length is zero or over the bound.
    #[error("announced length {len} is outside 1..={max}")]
    Length {
        /// The announced length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The byte after the payload is not ETX.
    #[error("no ETX after the {len}-byte payload")]
    MissingEtx {
        /// The announced length.
        len: usize,
    },
    /// The CRC does not match.
    #[error("CRC {received:04X} where {computed:04X} was computed")]
    Crc {
        /// The CRC received.
        received: u16,
        /// The CRC of the bytes received.
        computed: u16,
    },
    /// The frame's bytes stopped coming.
    #[error("no byte for the inter-byte timeout; frame abandoned after {received} bytes")]
    Timeout {
        /// Bytes of the frame received.
        received: usize,
    },
}

/// What the receiver saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RxEvent {
    /// A good frame's payload (an ACK was queued).
    Frame(Vec<u8>),
    /// Bytes starting with STX that were not a frame; a NAK was queued for
    /// a bad CRC or an over-long length. The bytes after that STX are
    /// scanned again for the next one.
    Discarded(FrameFault),
    /// An ACK between frames (for the sender).
    Ack,
    /// A NAK between frames (for the sender).
    Nak,
}

/// The receiving half of a link: bytes in, payloads and ACK/NAK out.
#[derive(Debug)]
pub struct Receiver {
    config: Config,
    /// The frame being received, from its STX; at most
    /// `max_payload + FRAME_OVERHEAD` bytes (the length is checked before
    /// the payload is buffered).
    frame: Vec<u8>,
    /// Received bytes to scan again after a discarded frame, in stream
    /// order; `frame` followed by `rescan` is always a run of the stream
    /// no longer than one frame, so both stay bounded.
    rescan: VecDeque<u8>,
    last_byte_ms: u64,
    events: VecDeque<RxEvent>,
    replies: VecDeque<u8>,
    garbage: u64,
}

impl Receiver {
    /// A receiver with `config`'s bounds. Panics if `max_payload` is out of
    /// range.
    pub fn new(config: Config) -> Self {
        let config = config.checked();
        Self {
            config,
            frame: Vec::new(),
            rescan: VecDeque::new(),
            last_byte_ms: 0,
            events: VecDeque::new(),
            replies: VecDeque::new(),
            garbage: 0,
        }
    }

    /// Feeds bytes read at `now` (milliseconds, any epoch, never going
    /// back). Each event consumes at least one byte, so one call queues at
    /// most `data.len()` + one frame's events: drain them with
    /// [`poll_event`](Self::poll_event) and
    /// [`poll_transmit`](Self::poll_transmit) after each call.
    pub fn handle_input(&mut self, now: u64, data: &[u8]) {
        self.handle_timeout(now);
        for &byte in data {
            self.last_byte_ms = now;
            self.rescan.push_back(byte);
            self.scan();
        }
    }

    /// Abandons a frame whose bytes stopped coming, then scans the bytes
    /// after its STX again: a complete frame among them is still
    /// delivered.
    pub fn handle_timeout(&mut self, now: u64) {
        // Each pass drops at least the abandoned frame's STX, so this ends
        // within one frame's length of passes.
        while !self.frame.is_empty()
            && now.saturating_sub(self.last_byte_ms) >= self.config.inter_byte_timeout_ms
        {
            let received = self.frame.len();
            self.discard(FrameFault::Timeout { received }, false);
            self.scan();
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        (!self.frame.is_empty()).then(|| {
            self.last_byte_ms
                .saturating_add(self.config.inter_byte_timeout_ms)
        })
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<RxEvent> {
        self.events.pop_front()
    }

    /// The next ACK or NAK to write.
    pub fn poll_transmit(&mut self) -> Option<u8> {
        self.replies.pop_front()
    }

    /// Bytes seen outside any frame since the start.
    pub fn garbage_bytes(&self) -> u64 {
        self.garbage
    }

    /// Bytes held (the frame being received and bytes to scan again).
    pub fn buffered(&self) -> usize {
        self.frame.len() + self.rescan.len()
    }

    /// Moves bytes from `rescan` into the frame being received until it
    /// runs out. Each byte either joins the frame or is dropped, and a
    /// discarded frame returns all but its STX: the loop ends.
    fn scan(&mut self) {
        while let Some(byte) = self.rescan.pop_front() {
            self.step(byte);
        }
    }

    fn step(&mut self, byte: u8) {
        if self.frame.is_empty() {
            match byte {
                STX => self.frame.push(byte),
                ACK => self.events.push_back(RxEvent::Ack),
                NAK => self.events.push_back(RxEvent::Nak),
                _ => self.garbage += 1,
            }
            return;
        }
        self.frame.push(byte);
        if self.frame.len() < 3 {
            return;
        }
        let len = usize::from(u16::from_be_bytes([self.frame[1], self.frame[2]]));
        if self.frame.len() == 3 {
            if len == 0 || len > self.config.max_payload {
                let nak = len > self.config.max_payload;
                let max = self.config.max_payload;
                self.discard(FrameFault::Length { len, max }, nak);
            }
            return;
        }
        debug_assert!(self.frame.len() <= len + FRAME_OVERHEAD);
        if self.frame.len() < len + FRAME_OVERHEAD {
            return;
        }
        if self.frame[3 + len] != ETX {
            self.discard(FrameFault::MissingEtx { len }, false);
            return;
        }
        let received = u16::from_be_bytes([self.frame[4 + len], self.frame[5 + len]]);
        let computed = frame_crc(&self.frame[1..4 + len]);
        if received != computed {
            self.discard(FrameFault::Crc { received, computed }, true);
            return;
        }
        let payload = self.frame[3..3 + len].to_vec();
        self.frame.clear();
        self.events.push_back(RxEvent::Frame(payload));
        self.replies.push_back(ACK);
    }

    /// Gives up the frame being received: reports `fault`, queues a NAK if
    /// asked, and returns the bytes after its STX to be scanned again
    /// ahead of any still waiting.
    fn discard(&mut self, fault: FrameFault, nak: bool) {
        self.events.push_back(RxEvent::Discarded(fault));
        if nak {
            self.replies.push_back(NAK);
        }
        for &byte in self.frame[1..].iter().rev() {
            self.rescan.push_front(byte);
        }
        self.frame.clear();
        // Dropping the STX is what makes every discard progress.
        self.garbage += 1;
    }
}

/// What became of a frame handed to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// The receiver acknowledged it.
    Delivered,
    /// No ACK after the last retransmission.
    GaveUp {
        /// Times the frame was written.
        transmissions: u8,
    },
}

#[derive(Debug)]
enum TxState {
    Idle,
    /// The frame is to be written (first time or again).
    Ready {
        frame: Vec<u8>,
        transmissions: u8,
    },
    /// The frame was written; its answer is due by `deadline`.
    AwaitingAck {
        frame: Vec<u8>,
        transmissions: u8,
        deadline: u64,
    },
}

/// The sending half of a link: one frame in flight, retransmitted on NAK
/// or timeout.
#[derive(Debug)]
pub struct Sender {
    config: Config,
    state: TxState,
    /// At most one event: a frame's outcome, before the next is accepted.
    event: Option<TxEvent>,
}

impl Sender {
    /// A sender with `config`'s bounds. Panics if `max_payload` is out of
    /// range.
    pub fn new(config: Config) -> Self {
        Self {
            config: config.checked(),
            state: TxState::Idle,
            event: None,
        }
    }

    /// Queues `payload` for sending. One frame at a time: `Busy` until the
    /// previous one's outcome has been polled.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), SendError> {
        if !matches!(self.state, TxState::Idle) || self.event.is_some() {
            return Err(SendError::Busy);
        }
        if payload.len() > self.config.max_payload {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: self.config.max_payload,
            });
        }
        let frame = encode_frame(payload)?;
        self.state = TxState::Ready {
            frame,
            transmissions: 0,
        };
        Ok(())
    }

    /// Whether no frame is queued or in flight.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, TxState::Idle)
    }

    /// The frame to write now, if one is due; its ACK timeout starts at
    /// `now`.
    pub fn poll_transmit(&mut self, now: u64) -> Option<Vec<u8>> {
        match std::mem::replace(&mut self.state, TxState::Idle) {
            TxState::Ready {
                frame,
                transmissions,
            } => {
                let bytes = frame.clone();
                self.state = TxState::AwaitingAck {
                    frame,
                    transmissions: transmissions + 1,
                    deadline: now.saturating_add(self.config.ack_timeout_ms),
                };
                Some(bytes)
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// An ACK arrived. Also accepted while a retransmission is queued: the
    /// NAK that queued it was then for noise, and the frame got through.
    pub fn handle_ack(&mut self) {
        match self.state {
            TxState::AwaitingAck { .. }
            | TxState::Ready {
                transmissions: 1.., ..
            } => {
                self.state = TxState::Idle;
                self.event = Some(TxEvent::Delivered);
            }
            // An ACK with nothing written is stray: ignored.
            _ => {}
        }
    }

    /// A NAK arrived: the frame in flight is written again, or given up.
    pub fn handle_nak(&mut self) {
        if matches!(self.state, TxState::AwaitingAck { .. }) {
            self.retransmit();
        }
    }

    /// The ACK timeout passed: the frame in flight is written again, or
    /// given up.
    pub fn handle_timeout(&mut self, now: u64) {
        if let TxState::AwaitingAck { deadline, .. } = self.state
            && now >= deadline
        {
            self.retransmit();
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            TxState::AwaitingAck { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// The outcome of the frame sent, once known.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.event.take()
    }

    fn retransmit(&mut self) {
        let TxState::AwaitingAck {
            frame,
            transmissions,
            ..
        } = std::mem::replace(&mut self.state, TxState::Idle)
        else {
            unreachable!("retransmit is called only while awaiting an ACK");
        };
        if transmissions > self.config.max_retransmissions {
            self.event = Some(TxEvent::GaveUp { transmissions });
        } else {
            self.state = TxState::Ready {
                frame,
                transmissions,
            };
        }
    }
}

/// What happened on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A message arrived.
    Received(Vec<u8>),
    /// Received bytes were not a frame.
    Discarded(FrameFault),
    /// The message sent was acknowledged.
    Delivered,
    /// The message sent was given up.
    GaveUp {
        /// Times it was written.
        transmissions: u8,
    },
}

/// Both halves of a serial link, sharing the line: ACK and NAK seen
/// between received frames answer the frame sent.
#[derive(Debug)]
pub struct Link {
    sender: Sender,
    receiver: Receiver,
    /// Events of both halves, in the order they happened; bounded like the
    /// receiver's (see [`Receiver::handle_input`]) plus one outcome of the
    /// sender.
    events: VecDeque<LinkEvent>,
}

impl Link {
    /// A link with `config`'s bounds and timeouts.
    pub fn new(config: Config) -> Self {
        Self {
            sender: Sender::new(config),
            receiver: Receiver::new(config),
            events: VecDeque::new(),
        }
    }

    /// Queues a message for sending (see [`Sender::send`]).
    pub fn send(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.sender.send(payload)
    }

    /// Feeds bytes read at `now`; drain events and transmits after each
    /// call (see [`Receiver::handle_input`]).
    pub fn handle_input(&mut self, now: u64, data: &[u8]) {
        // Input first: an ACK arriving as the deadline passes still counts.
        self.receiver.handle_input(now, data);
        self.collect();
        self.sender.handle_timeout(now);
        self.collect();
    }

    /// Handles the timeouts due at `now`.
    pub fn handle_timeout(&mut self, now: u64) {
        self.sender.handle_timeout(now);
        self.collect();
        self.receiver.handle_timeout(now);
        self.collect();
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub fn poll_timeout(&self) -> Option<u64> {
        match (self.sender.poll_timeout(), self.receiver.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next bytes to write: ACK/NAK first (they must not wait behind a
    /// frame), then the frame due.
    pub fn poll_transmit(&mut self, now: u64) -> Option<Vec<u8>> {
        if let Some(reply) = self.receiver.poll_transmit() {
            return Some(vec![reply]);
        }
        self.sender.poll_transmit(now)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// Moves the halves' events into the link's queue, handing ACK and NAK
    /// to the sender. Ends when the receiver's queue is empty.
    fn collect(&mut self) {
        loop {
            if let Some(outcome) = self.sender.poll_event() {
                self.events.push_back(match outcome {
                    TxEvent::Delivered => LinkEvent::Delivered,
                    TxEvent::GaveUp { transmissions } => LinkEvent::GaveUp { transmissions },
                });
            }
            match self.receiver.poll_event() {
                None => return,
                Some(RxEvent::Frame(payload)) => {
                    self.events.push_back(LinkEvent::Received(payload))
                }
                Some(RxEvent::Discarded(fault)) => {
                    self.events.push_back(LinkEvent::Discarded(fault));
                }
                Some(RxEvent::Ack) => self.sender.handle_ack(),
                Some(RxEvent::Nak) => self.sender.handle_nak(),
            }
        }
    }
}
