//! A load run: simulated terminals, each on its own mutual-TLS connection
//! with several requests in flight (the host answers them as they complete;
//! responses are matched by MTI and STAN), signing on at every connection,
//! sending a mix of sales, refunds, reversals and balance inquiries.
//!
//! A request whose connection broke, that timed out, or whose answer cannot
//! be trusted has an unknown outcome, and the terminal settles it as a real
//! one would before anything new: a sale is reversed (`98`), a refund or a
//! reversal is sent again with the same content under a fresh KSN (the host
//! recognizes it and repeats its first answer). Each terminal records what
//! it saw, so a caller can compare it with the host's books afterwards.
//!
//! Every loop is bounded: new requests stop at the run's duration or its
//! request count, whichever comes first (or when told to stop), and
//! unknowns are settled for at most [`LoadConfig::settle_time`] after that.

use crate::message::{Card, MessageError, Sealed, SimTerminal, open_response};
use crate::stats::Stats;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use iso8583::Message;
use serde::Serialize;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use terminal::link::{Link, LinkError};
use tokio::sync::{Barrier, Semaphore, watch};
use tokio::time::Instant;

/// Most requests in flight on one connection (the link's own bound).
pub const MAX_IN_FLIGHT: usize = 16;

/// Approved sales a terminal remembers as candidates for a refund or a
/// reversal; older ones are forgotten.
const RECENT_SALES: usize = 64;

/// Terminals that open their first connection at the same time: a whole
/// fleet handshaking at once overflows the host's accept queue and turns
/// into failed attempts and retries instead of a faster start.
const CONNECTING_AT_ONCE: usize = 256;

/// Longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// A load run could not start or could not go on.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Traffic goes to this machine only.
    #[error("{0} is not a loopback address: load runs target this machine only")]
    NotLoopback(SocketAddr),
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Config(String),
    /// A request could not be built.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A terminal's task failed.
    #[error("terminal task: {0}")]
    Task(String),
}

/// A kind of request the load generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// 0200 sale.
    Sale,
    /// 0220 refund of an approved sale.
    Refund,
    /// 0400 reversal of an approved sale (cancelled by the cashier, `06`).
    Reversal,
    /// 0200 balance inquiry.
    Balance,
}

impl Op {
    /// Name in statistics.
    pub fn name(self) -> &'static str {
        match self {
            Op::Sale => "sale",
            Op::Refund => "refund",
            Op::Reversal => "reversal",
            Op::Balance => "balance",
        }
    }
}

/// Relative weights of the kinds of request; a refund or reversal is sent
/// only when the terminal has an approved sale to name, a sale otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// Weight of sales.
    pub sale: u32,
    /// Weight of refunds.
    pub refund: u32,
    /// Weight of cashier reversals.
    pub reversal: u32,
    /// Weight of balance inquiries.
    pub balance: u32,
}

impl Default for Mix {
    /// Sales only.
    fn default() -> Self {
        Mix {
            sale: 1,
            refund: 0,
            reversal: 0,
            balance: 0,
        }
    }
}

/// A mix could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    /// An entry is not `kind=weight`.
    #[error("mix entry {0:?}: expected kind=weight, e.g. sale=90")]
    Entry(String),
    /// An unknown kind.
    #[error("mix kind {0:?}: use sale, refund, reversal or balance")]
    Kind(String),
    /// A weight that is not a number up to 1,000,000.
    #[error("mix weight {0:?}: a whole number up to 1000000")]
    Weight(String),
    /// Every weight is zero.
    #[error("mix has no positive weight")]
    Empty,
}

impl FromStr for Mix {
    type Err = MixError;

    /// Reads `sale=90,refund=4,reversal=3,balance=3`; kinds left out weigh 0.
    fn from_str(text: &str) -> Result<Self, MixError> {
        let mut mix = Mix {
            sale: 0,
            refund: 0,
            reversal: 0,
            balance: 0,
        };
        for entry in text.split(',').filter(|e| !e.trim().is_empty()) {
            let (kind, weight) = entry
                .split_once('=')
                .ok_or_else(|| MixError::Entry(entry.to_string()))?;
            let weight = weight
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|w| *w <= 1_000_000)
                .ok_or_else(|| MixError::Weight(weight.to_string()))?;
            let slot = match kind.trim() {
                "sale" => &mut mix.sale,
                "refund" => &mut mix.refund,
                "reversal" => &mut mix.reversal,
                "balance" => &mut mix.balance,
                other => return Err(MixError::Kind(other.to_string())),
            };
            *slot = weight;
        }
        if mix.total() == 0 {
            return Err(MixError::Empty);
        }
        Ok(mix)
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sale={},refund={},reversal={},balance={}",
            self.sale, self.refund, self.reversal, self.balance
        )
    }
}

impl Mix {
    fn total(&self) -> u64 {
        [self.sale, self.refund, self.reversal, self.balance]
            .iter()
            .map(|w| u64::from(*w))
            .sum()
    }

    /// Draws a kind by weight.
    pub fn pick(&self, rng: &mut fastrand::Rng) -> Op {
        let mut n = rng.u64(0..self.total().max(1));
        for (weight, op) in [
            (self.sale, Op::Sale),
            (self.refund, Op::Refund),
            (self.reversal, Op::Reversal),
            (self.balance, Op::Balance),
        ] {
            if n < u64::from(weight) {
                return op;
            }
            n -= u64::from(weight);
        }
        Op::Sale
    }
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The host; a loopback address.
    pub addr: SocketAddr,
    /// How long new requests are started.
    pub duration: Duration,
    /// Most requests one terminal starts (retries of unknowns excluded).
    pub max_requests: u64,
    /// Requests in flight on each connection, 1 to [`MAX_IN_FLIGHT`].
    pub in_flight: usize,
    /// Kinds of request.
    pub mix: Mix,
    /// Smallest sale amount, minor units.
    pub min_amount: u64,
    /// Largest sale amount, minor units.
    pub max_amount: u64,
    /// ISO 4217 numeric currency of every amount.
    pub currency: u16,
    /// Longest wait for one answer (and for a connection); then the outcome is unknown.
    pub timeout: Duration,
    /// Time after the load ends to settle unknowns; what is still unknown
    /// then is reported unresolved.
    pub settle_time: Duration,
    /// Seed of the terminals' choices (kinds, cards, amounts).
    pub seed: u64,
    /// Keep a [`Record`] of every request (for checking the host's books).
    pub keep_records: bool,
    /// Requests started per second over all active terminals (an open
    /// loop: each terminal keeps its own schedule, and a request's latency
    /// counts from when it was due, so a host that falls behind shows it);
    /// `None` for as fast as the in-flight bound allows.
    pub rate: Option<f64>,
    /// How many of the terminals send requests; the others connect, sign
    /// on and hold their connection idle until the load ends. `None`: all.
    pub active: Option<usize>,
    /// Counters a caller may read while the run goes (a progress bar).
    pub progress: Arc<Progress>,
}

/// What a run has done so far, updated as answers arrive.
#[derive(Debug, Default)]
pub struct Progress {
    connected: AtomicU64,
    answered: AtomicU64,
    approved: AtomicU64,
    unknown: AtomicU64,
}

impl Progress {
    /// Terminals connected and signed on at least once.
    pub fn connected(&self) -> u64 {
        self.connected.load(Ordering::Relaxed)
    }

    /// Requests of the mix answered so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Of those, approved (`00`).
    pub fn approved(&self) -> u64 {
        self.approved.load(Ordering::Relaxed)
    }

    /// Requests whose outcome became unknown (lost, timed out).
    pub fn unknown(&self) -> u64 {
        self.unknown.load(Ordering::Relaxed)
    }
}

impl LoadConfig {
    /// A sales-only run of `duration` against `addr`, 4 in flight per
    /// connection, amounts 1.00 to 50.00 CNY.
    pub fn new(addr: SocketAddr, duration: Duration) -> Self {
        LoadConfig {
            addr,
            duration,
            max_requests: u64::MAX,
            in_flight: 4,
            mix: Mix::default(),
            min_amount: 100,
            max_amount: 5_000,
            currency: 156,
            timeout: Duration::from_secs(10),
            settle_time: Duration::from_secs(10),
            seed: 1,
            keep_records: false,
            rate: None,
            active: None,
            progress: Arc::default(),
        }
    }

    fn validate(&self) -> Result<(), LoadError> {
        if !self.addr.ip().is_loopback() {
            return Err(LoadError::NotLoopback(self.addr));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.in_flight) {
            return Err(LoadError::Config(format!(
                "in-flight {} outside 1..={MAX_IN_FLIGHT}",
                self.in_flight
            )));
        }
        if self.min_amount == 0 || self.min_amount > self.max_amount {
            return Err(LoadError::Config(format!(
                "amounts {}..={}: need 0 < min <= max",
                self.min_amount, self.max_amount
            )));
        }
        if self.timeout.is_zero() {
            return Err(LoadError::Config("timeout must be above zero".into()));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(LoadError::Config(format!(
                "rate {rate}: need a number of requests per second above zero"
            )));
        }
        Ok(())
    }
}

/// One simulated terminal of a run, with the cards it may present.
#[derive(Debug)]
pub struct TerminalLoad {
    /// Identity, counters and DUKPT register.
    pub terminal: SimTerminal,
    /// Its mutual-TLS client configuration.
    pub tls: Arc<rustls::ClientConfig>,
    /// Cards it picks from at random (shared between terminals).
    pub cards: Arc<[Card]>,
}

/// What a terminal finally knows of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// Answered with `code`, MACed by the host (or an early answer the host
    /// never MACs: `A0`, `30`, `12`). `rrn` is field 37 when present.
    Answered {
        /// Field 39.
        code: String,
        /// Field 37.
        rrn: Option<String>,
    },
    /// A sale whose answer was lost; the reversal sent for it was answered
    /// `code`: `00` (undone, or it had been declined) or `25` (the host never
    /// had it, and refuses it should it arrive later).
    Reversed {
        /// Field 39 of the reversal's answer.
        code: String,
    },
    /// A balance inquiry whose answer was lost: nothing to settle, it moves
    /// no money.
    Lost,
    /// Still unknown when the run ended.
    Unresolved,
}

/// One request a terminal started, and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Field 41.
    pub terminal_id: String,
    /// What was asked.
    pub op: Op,
    /// MTI of the request (`0200`, `0220`, `0400`).
    pub mti: &'static str,
    /// Field 11.
    pub stan: u32,
    /// 60.2.
    pub batch: u32,
    /// Index of the card in the terminal's card list.
    pub card: usize,
    /// Field 4 (0 for a balance inquiry).
    pub amount: u64,
    /// For a refund or reversal: STAN of the sale it names (same batch).
    pub original_stan: Option<u32>,
    /// What the terminal knows.
    pub outcome: Outcome,
}

impl Record {
    /// Whether the request was answered `00`.
    pub fn approved(&self) -> bool {
        matches!(&self.outcome, Outcome::Answered { code, .. } if code == "00")
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Terminals that ran.
    pub terminals: usize,
    /// Time new requests were started (the duration, or less when stopped).
    pub load_time: Duration,
    /// Definite answers to requests (sign-ons excluded) received within the load time.
    pub answered_in_load: u64,
    /// Of those, approvals (`00`).
    pub approved_in_load: u64,
    /// Latency and answers per kind (`sign_on`, `sale`, `refund`,
    /// `reversal`, `balance`, `unknown_reversal`, `retry_refund`,
    /// `retry_reversal`).
    pub stats: Stats,
    /// Connections opened after the first one of each terminal.
    pub reconnects: u64,
    /// Connection or sign-on attempts that failed.
    pub connect_failures: u64,
    /// Requests whose outcome became unknown (lost connection, timeout,
    /// untrusted answer).
    pub unknowns: u64,
    /// Unknowns still unsettled at the end.
    pub unresolved: u64,
    /// Every request, when [`LoadConfig::keep_records`] is set.
    pub records: Vec<Record>,
}

impl Report {
    /// Definite answers per second of load time.
    pub fn answered_per_second(&self) -> f64 {
        self.answered_in_load as f64 / self.load_time.as_secs_f64().max(1e-9)
    }

    /// Approvals per second of load time.
    pub fn approved_per_second(&self) -> f64 {
        self.approved_in_load as f64 / self.load_time.as_secs_f64().max(1e-9)
    }

    /// The report as JSON (records left out).
    pub fn to_json(&self) -> serde_json::Value {
        let kinds: serde_json::Map<String, serde_json::Value> = self
            .stats
            .kinds()
            .map(|(kind, s)| {
                (
                    kind.to_string(),
                    serde_json::to_value(s.summary()).expect("summary serializes"),
                )
            })
            .collect();
        serde_json::json!({
            "terminals": self.terminals,
            "load_seconds": self.load_time.as_secs_f64(),
            "answered": self.answered_in_load,
            "approved": self.approved_in_load,
            "answered_per_second": self.answered_per_second(),
            "approved_per_second": self.approved_per_second(),
            "reconnects": self.reconnects,
            "connect_failures": self.connect_failures,
            "unknowns": self.unknowns,
            "unresolved": self.unresolved,
            "kinds": kinds,
        })
    }
}

/// Runs `terminals` against the host at `config.addr` until the duration
/// has passed, each has started `max_requests`, or `stop` turns true; then
/// settles unknowns. Terminals first connect and sign on together; the load
/// time starts when all have tried.
pub async fn run(
    config: &LoadConfig,
    terminals: Vec<TerminalLoad>,
    stop: Option<watch::Receiver<bool>>,
) -> Result<Report, LoadError> {
    config.validate()?;
    let n = terminals.len();
    let config = Arc::new(config.clone());
    let barrier = Arc::new(Barrier::new(n.max(1)));
    let connecting = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let (_never, never_stop) = watch::channel(false);
    let stop = stop.unwrap_or(never_stop);
    let mut tasks = tokio::task::JoinSet::new();
    let active = config.active.unwrap_or(n).min(n);
    // Each active terminal's share of the rate, as the time between starts.
    let interval = config
        .rate
        .map(|rate| Duration::from_secs_f64(active as f64 / rate));
    for (i, load) in terminals.into_iter().enumerate() {
        let mut worker = Worker::new(
            load,
            config.clone(),
            config.seed.wrapping_add(i as u64),
            stop.clone(),
        );
        worker.active = i < active;
        worker.interval = interval;
        tasks.spawn(worker.run(barrier.clone(), connecting.clone()));
    }
    let mut report = Report {
        terminals: n,
        load_time: Duration::ZERO,
        answered_in_load: 0,
        approved_in_load: 0,
        stats: Stats::default(),
        reconnects: 0,
        connect_failures: 0,
        unknowns: 0,
        unresolved: 0,
        records: Vec::new(),
    };
    while let Some(done) = tasks.join_next().await {
        let w = done.map_err(|e| LoadError::Task(e.to_string()))??;
        report.load_time = report.load_time.max(w.load_time);
        report.answered_in_load += w.answered_in_load;
        report.approved_in_load += w.approved_in_load;
        report.stats.merge(&w.stats);
        report.reconnects += w.reconnects;
        report.connect_failures += w.connect_failures;
        report.unknowns += w.unknowns;
        report.unresolved += w.unresolved;
        report.records.extend(w.records);
    }
    Ok(report)
}

/// What one terminal hands back.
struct WorkerResult {
    load_time: Duration,
    answered_in_load: u64,
    approved_in_load: u64,
    stats: Stats,
    reconnects: u64,
    connect_failures: u64,
    unknowns: u64,
    unresolved: u64,
    records: Vec<Record>,
}

/// An approved sale that a refund or reversal may name.
struct ApprovedSale {
    request: Message,
    stan: u32,
    batch: u32,
    date: String,
    card: usize,
    amount: u64,
}

/// What a request in flight is, to interpret its answer.
struct Slot {
    op: Op,
    record: Option<usize>,
    request: Message,
    card: usize,
    amount: u64,
    /// The sale a refund or reversal names.
    original: Option<ApprovedSale>,
    started: Instant,
}

/// An unknown outcome to settle before anything new.
struct Settle {
    /// Stats kind of the settling request.
    kind: &'static str,
    record: Option<usize>,
    /// The request to send (again), without KSN and MAC.
    message: Message,
    /// For a reversal naming an approved sale: the sale, returned to the
    /// candidates if the reversal is refused.
    original: Option<ApprovedSale>,
    /// Whether this reverses a sale whose own answer was lost.
    for_unknown_sale: bool,
}

/// How an answer reads.
enum Answer {
    /// A definite answer: field 39 and 37.
    Definite(Message),
    /// No answer, or one that cannot be trusted: outcome unknown.
    Unknown,
    /// The terminal's keys are in doubt (`A0`): nothing was done; sign on
    /// again.
    KeysRefused(Message),
}

struct Worker {
    sim: SimTerminal,
    tls: Arc<rustls::ClientConfig>,
    cards: Arc<[Card]>,
    config: Arc<LoadConfig>,
    rng: fastrand::Rng,
    stop: watch::Receiver<bool>,
    link: Option<Arc<Link>>,
    connected_once: bool,
    settle: VecDeque<Settle>,
    recent: VecDeque<ApprovedSale>,
    stats: Stats,
    records: Vec<Record>,
    started: u64,
    reconnects: u64,
    connect_failures: u64,
    unknowns: u64,
    answered_in_load: u64,
    approved_in_load: u64,
    load_end: Instant,
    /// Whether it sends requests or only holds its connection.
    active: bool,
    /// Time between starts for a sustained rate; `None` for max rate.
    interval: Option<Duration>,
    /// When the next request is due (sustained rate).
    next_due: Instant,
}

type InFlight = FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = (Slot, Answer)> + Send>>>;

impl Worker {
    fn new(
        load: TerminalLoad,
        config: Arc<LoadConfig>,
        seed: u64,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Worker {
            sim: load.terminal,
            tls: load.tls,
            cards: load.cards,
            config,
            rng: fastrand::Rng::with_seed(seed),
            stop,
            link: None,
            connected_once: false,
            settle: VecDeque::new(),
            recent: VecDeque::new(),
            stats: Stats::default(),
            records: Vec::new(),
            started: 0,
            reconnects: 0,
            connect_failures: 0,
            unknowns: 0,
            answered_in_load: 0,
            approved_in_load: 0,
            load_end: Instant::now(),
            active: true,
            interval: None,
            next_due: Instant::now(),
        }
    }

    async fn run(
        mut self,
        barrier: Arc<Barrier>,
        connecting: Arc<Semaphore>,
    ) -> Result<WorkerResult, LoadError> {
        {
            // The semaphore is never closed.
            let _turn = connecting.acquire().await;
            self.connect().await?;
        }
        barrier.wait().await;
        let start = Instant::now();
        self.load_end = start + self.config.duration;
        // Terminals start their schedules at spread-out moments.
        self.next_due = start + self.interval.unwrap_or_default().mul_f64(self.rng.f64());
        let mut settle_end: Option<Instant> = None;
        let mut in_flight: InFlight = FuturesUnordered::new();
        let mut backoff = Duration::from_millis(10);
        // Each turn starts requests, answers one, or (re)connects; it ends
        // once loading is over and nothing is unknown, or the settle time
        // has passed (in-flight requests end by their own timeout).
        loop {
            let now = Instant::now();
            let loading = settle_end.is_none()
                && now < self.load_end
                && self.started < self.config.max_requests
                && !*self.stop.borrow();
            if !loading && settle_end.is_none() {
                self.load_end = self.load_end.min(now);
                settle_end = Some(now + self.config.settle_time);
            }
            if !loading && in_flight.is_empty() && self.settle.is_empty() {
                break;
            }
            if settle_end.is_some_and(|end| now >= end) && in_flight.is_empty() {
                break;
            }
            if self.link.as_ref().is_none_or(|l| l.is_closed()) {
                if let Some(done) = in_flight.next().await {
                    // The broken link fails what it carried at once.
                    self.complete(done)?;
                    continue;
                }
                if self.connect().await? {
                    backoff = Duration::from_millis(10);
                } else {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                continue;
            }
            if !self.settle.is_empty() {
                // Settling goes first, one request at a time.
                if let Some(done) = in_flight.next().await {
                    self.complete(done)?;
                    continue;
                }
                self.settle_one().await?;
                continue;
            }
            if !self.active {
                if loading && in_flight.is_empty() {
                    stopped_or(&mut self.stop, self.load_end).await;
                }
                continue;
            }
            while loading
                && in_flight.len() < self.config.in_flight
                && self.started < self.config.max_requests
                && self.interval.is_none_or(|_| now >= self.next_due)
            {
                let (mut slot, sealed) = self.start_one()?;
                if let Some(interval) = self.interval {
                    // Latency counts from when the request was due.
                    slot.started = self.next_due;
                    self.next_due += interval;
                }
                in_flight.push(self.send((slot, sealed)));
            }
            let paced_wait = loading
                && in_flight.len() < self.config.in_flight
                && self.started < self.config.max_requests;
            match self.interval {
                Some(_) if paced_wait => {
                    let due = self.next_due.min(self.load_end);
                    tokio::select! {
                        done = in_flight.next(), if !in_flight.is_empty() => {
                            if let Some(done) = done {
                                self.complete(done)?;
                            }
                        }
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                _ => {
                    if let Some(done) = in_flight.next().await {
                        self.complete(done)?;
                    }
                }
            }
        }
        let unresolved = self.settle.len() as u64;
        for s in std::mem::take(&mut self.settle) {
            self.set_outcome(s.record, Outcome::Unresolved);
        }
        if let Some(link) = self.link.take() {
            link.close();
        }
        Ok(WorkerResult {
            load_time: self.load_end - start,
            answered_in_load: self.answered_in_load,
            approved_in_load: self.approved_in_load,
            stats: self.stats,
            reconnects: self.reconnects,
            connect_failures: self.connect_failures,
            unknowns: self.unknowns,
            unresolved,
            records: self.records,
        })
    }

    /// Opens a connection and signs on; `false` when either failed.
    async fn connect(&mut self) -> Result<bool, LoadError> {
        if let Some(old) = self.link.take() {
            old.close();
        }
        let link = match Link::connect(
            &self.config.addr.to_string(),
            self.tls.clone(),
            self.config.timeout,
        )
        .await
        {
            Ok(link) => Arc::new(link),
            Err(_) => {
                self.connect_failures += 1;
                return Ok(false);
            }
        };
        let request = self.sim.sign_on();
        let sealed = self.sim.plain(request)?;
        let started = Instant::now();
        let answer = exchange(&link, &sealed, self.config.timeout).await;
        let code = match &answer {
            Answer::Definite(m) | Answer::KeysRefused(m) => m.response_code().unwrap_or(""),
            Answer::Unknown => "",
        };
        if code != "00" {
            self.connect_failures += 1;
            link.close();
            return Ok(false);
        }
        self.stats.record("sign_on", started.elapsed(), code);
        if self.connected_once {
            self.reconnects += 1;
        } else {
            self.config
                .progress
                .connected
                .fetch_add(1, Ordering::Relaxed);
        }
        self.connected_once = true;
        self.link = Some(link);
        Ok(true)
    }

    fn card(&mut self) -> usize {
        self.rng.usize(0..self.cards.len().max(1))
    }

    fn pin(&self, card: usize) -> Option<String> {
        self.cards
            .get(card)
            .and_then(|c| c.pin.as_ref())
            .map(|p| p.to_string())
    }

    fn record(&mut self, op: Op, request: &Message, card: usize, amount: u64) -> Option<usize> {
        if !self.config.keep_records {
            return None;
        }
        self.records.push(Record {
            terminal_id: self.sim.terminal_id.clone(),
            op,
            mti: match op {
                Op::Sale | Op::Balance => "0200",
                Op::Refund => "0220",
                Op::Reversal => "0400",
            },
            stan: request.stan().and_then(Result::ok).unwrap_or(0),
            batch: self.sim.batch,
            card,
            amount,
            original_stan: None,
            outcome: Outcome::Unresolved,
        });
        Some(self.records.len() - 1)
    }

    /// Builds and seals the next request of the mix.
    fn start_one(&mut self) -> Result<(Slot, Sealed), LoadError> {
        self.started += 1;
        let mut op = self.config.mix.pick(&mut self.rng);
        if matches!(op, Op::Refund | Op::Reversal) && self.recent.is_empty() {
            op = Op::Sale;
        }
        let currency = self.config.currency;
        let (message, card, amount, original, pin) = match op {
            Op::Sale | Op::Balance => {
                let card = self.card();
                let c = self.cards.get(card).cloned().ok_or_else(|| {
                    LoadError::Config(format!("terminal {} has no cards", self.sim.terminal_id))
                })?;
                let (m, amount) = if op == Op::Sale {
                    let amount = self
                        .rng
                        .u64(self.config.min_amount..=self.config.max_amount);
                    (self.sim.sale(&c, amount, currency)?, amount)
                } else {
                    (self.sim.balance(&c, currency), 0)
                };
                (m, card, amount, None, self.pin(card))
            }
            Op::Refund => {
                let i = self.rng.usize(0..self.recent.len());
                let sale = self.recent.swap_remove_back(i).expect("index in range");
                let amount = self.rng.u64(1..=sale.amount);
                let c = self.cards[sale.card].clone();
                let m = self
                    .sim
                    .refund(&c, amount, currency, sale.batch, sale.stan, &sale.date)?;
                (m, sale.card, amount, Some(sale), None)
            }
            Op::Reversal => {
                let i = self.rng.usize(0..self.recent.len());
                let sale = self.recent.swap_remove_back(i).expect("index in range");
                let m = self.sim.reversal(&sale.request, "06");
                (m, sale.card, sale.amount, Some(sale), None)
            }
        };
        let record = self.record(op, &message, card, amount);
        if let (Some(i), Some(sale)) = (record, &original) {
            self.records[i].original_stan = Some(sale.stan);
        }
        let sealed = self.sim.seal(message, pin.as_deref())?;
        let slot = Slot {
            op,
            record,
            request: sealed.request.clone(),
            card,
            amount,
            original,
            started: Instant::now(),
        };
        Ok((slot, sealed))
    }

    /// The exchange of one slot, as a future owning all it needs.
    fn send(
        &self,
        (slot, sealed): (Slot, Sealed),
    ) -> std::pin::Pin<Box<dyn Future<Output = (Slot, Answer)> + Send>> {
        let link = self.link.clone().expect("connected before sending");
        let timeout = self.config.timeout;
        Box::pin(async move {
            let answer = exchange(&link, &sealed, timeout).await;
            if matches!(answer, Answer::Unknown) {
                // A fresh connection starts clean after a timeout.
                link.close();
            }
            (slot, answer)
        })
    }

    fn count_in_load(&mut self, code: &str) {
        if Instant::now() <= self.load_end {
            self.answered_in_load += 1;
            self.approved_in_load += u64::from(code == "00");
            let progress = &self.config.progress;
            progress.answered.fetch_add(1, Ordering::Relaxed);
            progress
                .approved
                .fetch_add(u64::from(code == "00"), Ordering::Relaxed);
        }
    }

    /// Interprets the answer of a request from the mix.
    fn complete(&mut self, (slot, answer): (Slot, Answer)) -> Result<(), LoadError> {
        let message = match answer {
            Answer::Definite(m) => m,
            Answer::KeysRefused(m) => {
                // Nothing was done; the terminal signs on again. A refused
                // reversal leaves its sale standing.
                self.stats
                    .record(slot.op.name(), slot.started.elapsed(), "A0");
                self.count_in_load("A0");
                self.set_outcome(slot.record, answered(&m));
                if let Some(sale) = slot.original {
                    self.remember(sale);
                }
                if let Some(link) = self.link.take() {
                    link.close();
                }
                return Ok(());
            }
            Answer::Unknown => {
                self.unknowns += 1;
                self.config.progress.unknown.fetch_add(1, Ordering::Relaxed);
                let settle = match slot.op {
                    Op::Balance => {
                        self.set_outcome(slot.record, Outcome::Lost);
                        None
                    }
                    Op::Sale => Some(Settle {
                        kind: "unknown_reversal",
                        record: slot.record,
                        message: self.sim.reversal(&slot.request, "98"),
                        original: None,
                        for_unknown_sale: true,
                    }),
                    Op::Refund => Some(Settle {
                        kind: "retry_refund",
                        record: slot.record,
                        message: unsealed(&slot.request),
                        original: None,
                        for_unknown_sale: false,
                    }),
                    Op::Reversal => Some(Settle {
                        kind: "retry_reversal",
                        record: slot.record,
                        message: unsealed(&slot.request),
                        original: slot.original,
                        for_unknown_sale: false,
                    }),
                };
                self.settle.extend(settle);
                return Ok(());
            }
        };
        let code = message.response_code().unwrap_or("").to_string();
        self.stats
            .record(slot.op.name(), slot.started.elapsed(), &code);
        self.count_in_load(&code);
        self.set_outcome(slot.record, answered(&message));
        match slot.op {
            Op::Sale if code == "00" && self.wants_originals() => {
                let stan = message.stan().and_then(Result::ok).unwrap_or(0);
                self.remember(ApprovedSale {
                    request: unsealed(&slot.request),
                    stan,
                    batch: self.sim.batch,
                    date: message.get_str(13).unwrap_or("0000").to_string(),
                    card: slot.card,
                    amount: slot.amount,
                });
            }
            Op::Reversal if code != "00" => {
                if let Some(sale) = slot.original {
                    self.remember(sale);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn wants_originals(&self) -> bool {
        self.config.mix.refund > 0 || self.config.mix.reversal > 0
    }

    fn remember(&mut self, sale: ApprovedSale) {
        if self.recent.len() == RECENT_SALES {
            self.recent.pop_front();
        }
        self.recent.push_back(sale);
    }

    fn set_outcome(&mut self, record: Option<usize>, outcome: Outcome) {
        if let Some(i) = record {
            self.records[i].outcome = outcome;
        }
    }

    /// Sends the first unknown's settling request and waits for its answer.
    async fn settle_one(&mut self) -> Result<(), LoadError> {
        let Some(s) = self.settle.pop_front() else {
            return Ok(());
        };
        let link = self.link.clone().expect("connected before settling");
        let sealed = self.sim.seal(s.message.clone(), None)?;
        let started = Instant::now();
        match exchange(&link, &sealed, self.config.timeout).await {
            Answer::Definite(m) => {
                let code = m.response_code().unwrap_or("").to_string();
                self.stats.record(s.kind, started.elapsed(), &code);
                if s.for_unknown_sale {
                    self.set_outcome(s.record, Outcome::Reversed { code });
                } else {
                    self.set_outcome(s.record, answered(&m));
                    if code != "00"
                        && let Some(sale) = s.original
                    {
                        self.remember(sale);
                    }
                }
            }
            Answer::KeysRefused(_) => {
                // Sign on again and send it once more.
                link.close();
                self.settle.push_front(s);
            }
            Answer::Unknown => {
                link.close();
                self.settle.push_front(s);
            }
        }
        Ok(())
    }
}

/// Waits until `until`, or until `stop` turns true if that comes first.
async fn stopped_or(stop: &mut watch::Receiver<bool>, until: Instant) {
    let told = tokio::select! {
        () = tokio::time::sleep_until(until) => return,
        told = stop.wait_for(|s| *s) => told.is_ok(),
    };
    if !told {
        // Nobody can tell it to stop any more: only the time counts.
        tokio::time::sleep_until(until).await;
    }
}

/// `request` without KSN and MAC: what a retransmission seals again.
fn unsealed(request: &Message) -> Message {
    let mut m = request.clone();
    m.remove(62);
    m.remove(64);
    m
}

fn answered(m: &Message) -> Outcome {
    Outcome::Answered {
        code: m.response_code().unwrap_or("").to_string(),
        rrn: m.rrn().map(str::to_string),
    }
}

/// Sends a sealed request on `link` and reads the answer.
async fn exchange(link: &Link, sealed: &Sealed, timeout: Duration) -> Answer {
    let mti = sealed.request.mti();
    let (Some(response_mti), Some(Ok(stan))) = (mti.response(), sealed.request.stan()) else {
        return Answer::Unknown;
    };
    let wire = match link
        .exchange(sealed.wire.clone(), response_mti.digits(), stan, timeout)
        .await
    {
        Ok(wire) => wire,
        Err(LinkError::Lost | LinkError::Timeout | LinkError::Unreachable(_)) => {
            return Answer::Unknown;
        }
    };
    let Ok(response) = open_response(&wire, sealed.response_key.as_ref()) else {
        return Answer::Unknown;
    };
    let code = response.response_code().unwrap_or("");
    match (code, sealed.response_key.is_some() && !response.has(64)) {
        ("A0", _) => Answer::KeysRefused(response),
        // Answers the host gives before it can decide, never MACed.
        ("30" | "12", true) => Answer::Definite(response),
        // Anything else unMACed (a `96` among them) is no answer.
        (_, true) => Answer::Unknown,
        _ => Answer::Definite(response),
    }
}
