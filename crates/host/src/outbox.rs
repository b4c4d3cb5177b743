//! Delivery of merchant notifications from the transactional outbox.
//!
//! Every transaction writes its event to `outbox` in the same commit as the
//! transfer ([`crate::flows`]). This worker POSTs those events to each
//! merchant's `webhook_url`, signed with the merchant's secret:
//!
//! - **In order per merchant.** A merchant is served by at most one task at
//!   a time, which sends its oldest undelivered event and goes on to the
//!   next only after a 2xx; a failure ends the turn, so event N+1 never
//!   leaves before N is acknowledged.
//! - **At least once.** An event is marked delivered only after a 2xx. A
//!   crash between the answer and the mark sends it again; receivers
//!   deduplicate by event id.
//! - **Retries** with exponential backoff and full jitter ([`backoff`]),
//!   recording `attempts`, `last_error` and `next_attempt_at`.
//! - **Nothing dropped.** Events of a merchant without a webhook URL and
//!   secret stay queued (the merchant API serves them) until one is set.
//!
//! The worker writes through its own SQLite connection (WAL, busy timeout),
//! one single-row UPDATE per transaction, so it interleaves with the group
//! committer without holding the write lock for more than a moment.

use crate::metrics::Metrics;
use hmac::{Hmac, KeyInit, Mac};
use pki::{MasterKey, Secret};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::Sha256;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

/// How long the worker lets commit notifications gather before it looks
/// for due events: a webhook leaves at most this much later.
const WAKE_COALESCE: Duration = Duration::from_millis(10);

/// Header carrying the event's unique id (deduplicate by it).
pub const EVENT_ID_HEADER: &str = "X-Posnet-Event-Id";
/// Header carrying the event's sequence number (`after` of `GET /v1/events`).
pub const SEQUENCE_HEADER: &str = "X-Posnet-Event-Sequence";
/// Header carrying the time of sending, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Posnet-Timestamp";
/// Header carrying `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "X-Posnet-Signature";

/// Purpose the webhook secret is sealed under in `merchants.webhook_secret`.
pub const WEBHOOK_SECRET_PURPOSE: &str = "webhook secret";

/// How long a write waits for the group committer's lock. A batch holds it
/// for milliseconds; seconds of waiting mean the disk is stalled.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `last_error` is cut to this many characters: enough for a status line or
/// an I/O error chain, and a receiver cannot grow the row.
const MAX_ERROR_CHARS: usize = 200;

/// Bounds and timing of delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxConfig {
    /// Events loaded for one merchant's turn. Bounds the worker's memory and
    /// lets other merchants in between the turns of one with a backlog.
    pub batch: usize,
    /// Merchants delivered to at once. Bounds open connections and tasks; a
    /// slow receiver holds one slot, not the worker.
    pub concurrency: usize,
    /// Whole-request deadline (connect, send, response head). A receiver
    /// that hangs costs its merchant this much per attempt, nobody else.
    pub request_timeout: Duration,
    /// Longest sleep between looks at the outbox when nothing wakes the
    /// worker (commits wake it at once).
    pub poll_interval: Duration,
    /// Backoff of the first retry.
    pub backoff_base: Duration,
    /// Longest backoff between two attempts.
    pub backoff_cap: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            batch: 100,
            concurrency: 16,
            request_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(600),
        }
    }
}

/// The worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Its database connection could not be opened.
    #[error("outbox database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The HTTP client could not be built.
    #[error("webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// A bound of the configuration is zero.
    #[error("outbox configuration: {0} must be above 0")]
    Config(&'static str),
}

/// A database call from the worker failed.
#[derive(Debug, thiserror::Error)]
enum StoreFailure {
    #[error("outbox database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("outbox database task stopped")]
    Stopped,
}

/// The signature header value of `body` sent at `timestamp` (Unix seconds):
/// `v1=` and the hex HMAC-SHA256 under `secret` of `"<timestamp>.<body>"`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delay before the retry that follows failed attempt number `attempts`
/// (1 for the first): full jitter, uniform in `[0, min(cap, base · 2^(attempts-1))]`,
/// drawn from `random`. Jitter spreads the retries of many events failing
/// together (a receiver coming back) instead of synchronizing them.
pub fn backoff(attempts: u32, base: Duration, cap: Duration, random: u64) -> Duration {
    let factor = 1u32
        .checked_shl(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let ceiling = base.checked_mul(factor).unwrap_or(cap).min(cap);
    match u64::try_from(ceiling.as_nanos()) {
        Ok(nanos) if nanos < u64::MAX => Duration::from_nanos(random % (nanos + 1)),
        _ => Duration::from_nanos(random),
    }
}

/// Undelivered events of every merchant, through `conn`.
pub fn backlog(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT count(*) FROM outbox WHERE delivered_at IS NULL",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n.max(0) as u64)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random_u64() -> u64 {
    getrandom::u64().expect("operating system random source")
}

/// One undelivered event.
struct Event {
    id: i64,
    event_id: String,
    payload: String,
    attempts: u32,
    next_attempt_at: i64,
}

/// The worker's connection and its statements.
struct Store {
    conn: Connection,
}

impl Store {
    fn open(path: &Path) -> rusqlite::Result<Store> {
        // The database exists (the host opened and migrated it): never create one.
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // A delivery mark lost to a power cut only means a resend, which
        // at-least-once allows: no fsync per mark (WAL is already on).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(Store { conn })
    }

    /// Merchants with a webhook whose oldest undelivered event is due,
    /// longest waiting first.
    fn due_merchants(&self, now: i64, limit: usize) -> rusqlite::Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT m.merchant_id FROM merchants m
             JOIN outbox o ON o.id = (SELECT min(p.id) FROM outbox p
                                      WHERE p.merchant_id = m.merchant_id AND p.delivered_at IS NULL)
             WHERE m.webhook_url IS NOT NULL AND m.webhook_secret IS NOT NULL AND o.next_attempt_at <= ?1
             ORDER BY o.next_attempt_at, o.id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit as i64], |r| r.get(0))?;
        rows.collect()
    }

    /// The merchant's webhook URL and sealed secret, when both are set.
    fn endpoint(&self, merchant: &str) -> rusqlite::Result<Option<(String, Vec<u8>)>> {
        self.conn
            .query_row(
                "SELECT webhook_url, webhook_secret FROM merchants
                 WHERE merchant_id = ?1 AND webhook_url IS NOT NULL AND webhook_secret IS NOT NULL",
                params![merchant],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
    }

    /// The merchant's oldest `limit` undelivered events, oldest first.
    fn pending(&self, merchant: &str, limit: usize) -> rusqlite::Result<Vec<Event>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, event_id, payload, attempts, next_attempt_at FROM outbox
             WHERE merchant_id = ?1 AND delivered_at IS NULL ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![merchant, limit as i64], |r| {
            Ok(Event {
                id: r.get(0)?,
                event_id: r.get(1)?,
                payload: r.get(2)?,
                attempts: r.get(3)?,
                next_attempt_at: r.get(4)?,
            })
        })?;
        rows.collect()
    }

    fn delivered(&self, id: i64, now: i64) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE outbox SET delivered_at = ?2, attempts = attempts + 1 WHERE id = ?1 AND delivered_at IS NULL",
            params![id, now],
        )?;
        Ok(())
    }

    fn failed(&self, id: i64, error: &str, next_attempt_at: i64) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3 WHERE id = ?1",
            params![id, error, next_attempt_at],
        )?;
        Ok(())
    }
}

/// Where one merchant's events go, ready to sign.
struct Target {
    url: reqwest::Url,
    secret: Secret,
}

/// How a merchant's turn ended.
enum Turn {
    /// Everything loaded was delivered (more may be waiting: look again).
    Done,
    /// An attempt failed; the merchant's next attempt is not before this.
    RetryAt(Instant),
    /// The database failed; try again after a poll interval.
    Stalled,
}

/// What every delivery task shares.
struct Shared {
    store: Mutex<Store>,
    client: reqwest::Client,
    master: Arc<MasterKey>,
    metrics: Arc<Metrics>,
    config: OutboxConfig,
    db_path: PathBuf,
}

impl Shared {
    /// Runs `f` on the worker's connection off the async threads.
    async fn db<R, F>(self: &Arc<Self>, f: F) -> Result<R, StoreFailure>
    where
        R: Send + 'static,
        F: FnOnce(&Store) -> rusqlite::Result<R> + Send + 'static,
    {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = shared.store.lock().unwrap_or_else(PoisonError::into_inner);
            f(&store)
        })
        .await
        .map_err(|_| StoreFailure::Stopped)?
        .map_err(StoreFailure::Sql)
    }

    /// Checks the URL and unseals the secret.
    fn target(&self, url: &str, sealed: &[u8]) -> Result<Target, String> {
        let url = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| "webhook_url is not an http or https URL".to_string())?;
        let secret = self
            .master
            .open(WEBHOOK_SECRET_PURPOSE, sealed, &self.db_path)
            .map_err(|e| format!("webhook secret: {e}"))?;
        Ok(Target { url, secret })
    }

    /// POSTs one event; `Ok` only on a 2xx.
    async fn post(&self, target: &Target, event: &Event) -> Result<(), String> {
        let timestamp = unix_now();
        let response = self
            .client
            .post(target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_ID_HEADER, &event.event_id)
            .header(SEQUENCE_HEADER, event.id)
            .header(TIMESTAMP_HEADER, timestamp)
            .header(
                SIGNATURE_HEADER,
                signature(target.secret.expose(), timestamp, event.payload.as_bytes()),
            )
            .body(event.payload.clone())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

/// An HTTP error with its causes, without the URL (it may carry a token).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".to_string();
    }
    let mut text = "request failed".to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_ERROR_CHARS).collect()
}

/// Starts the worker over the database at `db_path`. `wake` is notified
/// after each commit (new events); the worker stops when `shutdown` turns
/// true, after the requests in progress have their answers.
pub fn spawn(
    db_path: &Path,
    master: Arc<MasterKey>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    config: OutboxConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, OutboxError> {
    // A zero poll interval or backoff would spin the worker (or hammer a
    // failing receiver); a zero timeout would fail every attempt.
    let zero = [
        (config.batch == 0, "batch"),
        (config.concurrency == 0, "concurrency"),
        (config.request_timeout.is_zero(), "request_timeout"),
        (config.poll_interval.is_zero(), "poll_interval"),
        (config.backoff_base.is_zero(), "backoff_base"),
        (config.backoff_cap.is_zero(), "backoff_cap"),
    ];
    if let Some((_, name)) = zero.into_iter().find(|(is_zero, _)| *is_zero) {
        return Err(OutboxError::Config(name));
    }
    let store = Store::open(db_path).map_err(|source| OutboxError::Database {
        path: db_path.to_path_buf(),
        source,
    })?;
    let client = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout)
        // Only the URL the merchant configured is ever called.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("posnet-host/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(OutboxError::Client)?;
    let shared = Arc::new(Shared {
        store: Mutex::new(store),
        client,
        master,
        metrics,
        config,
        db_path: db_path.to_path_buf(),
    });
    Ok(tokio::spawn(run(shared, wake, shutdown)))
}

async fn run(shared: Arc<Shared>, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let config = shared.config.clone();
    let mut tasks: JoinSet<Turn> = JoinSet::new();
    // Merchants being served, by task. At most `concurrency` entries.
    let mut active: HashMap<tokio::task::Id, String> = HashMap::new();
    // Merchants whose next attempt is later than now, to the instant (the
    // database keeps whole seconds). At most one entry per failing merchant.
    let mut waiting: HashMap<String, Instant> = HashMap::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let now = Instant::now();
        waiting.retain(|_, at| *at > now);
        let free = config.concurrency - active.len();
        if free > 0 {
            // Enough rows to fill every free slot even when each busy or
            // waiting merchant comes first.
            let limit = free + active.len() + waiting.len();
            match shared.db(move |s| s.due_merchants(unix_now(), limit)).await {
                Ok(due) => {
                    let start: Vec<String> = due
                        .into_iter()
                        .filter(|m| !waiting.contains_key(m) && !active.values().any(|a| a == m))
                        .take(free)
                        .collect();
                    for merchant in start {
                        let handle = tasks.spawn(deliver(
                            shared.clone(),
                            merchant.clone(),
                            shutdown.clone(),
                        ));
                        active.insert(handle.id(), merchant);
                    }
                }
                Err(e) => tracing::error!("webhook worker: {e}"),
            }
        }
        let next_look = waiting
            .values()
            .copied()
            .fold(now + config.poll_interval, Instant::min);
        tokio::select! {
            changed = shutdown.changed() => if changed.is_err() { break },
            _ = wake.notified() => {
                // Under load the host commits hundreds of batches a second:
                // one look for all that commit in this pause, instead of a
                // query (re-prepared each time) after each of them.
                tokio::time::sleep(WAKE_COALESCE).await;
            }
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (id, turn) = match done {
                    Ok((id, turn)) => (id, turn),
                    Err(e) => {
                        tracing::error!("webhook delivery task failed: {e}");
                        (e.id(), Turn::Stalled)
                    }
                };
                if let Some(merchant) = active.remove(&id) {
                    match turn {
                        Turn::Done => {}
                        Turn::RetryAt(at) => { waiting.insert(merchant, at); }
                        Turn::Stalled => { waiting.insert(merchant, Instant::now() + config.poll_interval); }
                    }
                }
            }
            _ = tokio::time::sleep_until(next_look.into()) => {}
        }
    }
    // Requests under way get their answers (bounded by the request timeout)
    // and their marks; no new event is started.
    while tasks.join_next().await.is_some() {}
}

/// One merchant's turn: its oldest events in order, stopping at the first failure.
async fn deliver(shared: Arc<Shared>, merchant: String, shutdown: watch::Receiver<bool>) -> Turn {
    let batch = shared.config.batch;
    let key = merchant.clone();
    let loaded = shared
        .db(move |s| Ok((s.endpoint(&key)?, s.pending(&key, batch)?)))
        .await;
    let (endpoint, events) = match loaded {
        // The webhook was removed since the worker looked: events stay queued.
        Ok((None, _)) => return Turn::Done,
        Ok((Some(endpoint), events)) => (endpoint, events),
        Err(e) => {
            tracing::error!(merchant, "webhook worker: {e}");
            return Turn::Stalled;
        }
    };
    let target = shared.target(&endpoint.0, &endpoint.1);
    for event in events {
        if *shutdown.borrow() || event.next_attempt_at > unix_now() {
            break;
        }
        let result = match &target {
            Ok(target) => shared.post(target, &event).await,
            Err(e) => Err(e.clone()),
        };
        shared.metrics.delivery(result.is_ok());
        let id = event.id;
        match result {
            Ok(()) => {
                if let Err(e) = shared.db(move |s| s.delivered(id, unix_now())).await {
                    // Not marked: it is sent again later, never skipped.
                    tracing::error!(
                        merchant,
                        event = event.event_id,
                        "delivered but not marked: {e}"
                    );
                    return Turn::Stalled;
                }
            }
            Err(error) => {
                let attempts = event.attempts.saturating_add(1);
                let config = &shared.config;
                let delay = backoff(
                    attempts,
                    config.backoff_base,
                    config.backoff_cap,
                    random_u64(),
                );
                tracing::warn!(
                    merchant,
                    event = event.event_id,
                    attempts,
                    "webhook delivery failed, next attempt in {delay:?}: {error}"
                );
                // Whole seconds, rounded down: after a restart the retry
                // comes at most a second early.
                let next = unix_now().saturating_add(delay.as_secs() as i64);
                let error = clip(&error);
                if let Err(e) = shared.db(move |s| s.failed(id, &error, next)).await {
                    tracing::error!(merchant, "recording a failed delivery: {e}");
                }
                return Turn::RetryAt(Instant::now() + delay);
            }
        }
    }
    Turn::Done
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn signature_matches_openssl_and_covers_timestamp_body_and_key() {
        // Computed with OpenSSL (and Python's hmac module, same value):
        // printf '1700000000.{"event_id":"txn-1"}' | openssl dgst -sha256 -hmac whsec-test
        let expected = "v1=e650627899247ad2486369e760ac5edd383c87f8201a9f4315d76c3cd1292951";
        let body = br#"{"event_id":"txn-1"}"#;
        assert_eq!(signature(b"whsec-test", 1_700_000_000, body), expected);
        assert_ne!(signature(b"whsec-test", 1_700_000_001, body), expected);
        assert_ne!(
            signature(b"whsec-test", 1_700_000_000, br#"{"event_id":"txn-2"}"#),
            expected
        );
        assert_ne!(signature(b"whsec-tesT", 1_700_000_000, body), expected);
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(600);
        let top = |n| backoff(n, base, cap, u64::MAX - 1);
        // The largest draw reaches (nearly) the ceiling of each attempt.
        assert!(top(1) <= base);
        assert_eq!(backoff(1, base, cap, 1_000_000_000), base);
        assert_eq!(backoff(3, base, cap, 4_000_000_000), Duration::from_secs(4));
        assert_eq!(backoff(11, base, cap, 600_000_000_000), cap);
        assert_eq!(backoff(40, base, cap, 600_000_000_000), cap);
        assert_eq!(backoff(1, base, cap, 0), Duration::ZERO);
    }

    #[test]
    fn zero_bounds_are_refused() {
        let base = OutboxConfig::default();
        for (broken, name) in [
            (
                OutboxConfig {
                    batch: 0,
                    ..base.clone()
                },
                "batch",
            ),
            (
                OutboxConfig {
                    concurrency: 0,
                    ..base.clone()
                },
                "concurrency",
            ),
            (
                OutboxConfig {
                    request_timeout: Duration::ZERO,
                    ..base.clone()
                },
                "request_timeout",
            ),
            (
                OutboxConfig {
                    poll_interval: Duration::ZERO,
                    ..base.clone()
                },
                "poll_interval",
            ),
            (
                OutboxConfig {
                    backoff_base: Duration::ZERO,
                    ..base.clone()
                },
                "backoff_base",
            ),
            (
                OutboxConfig {
                    backoff_cap: Duration::ZERO,
                    ..base.clone()
                },
                "backoff_cap",
            ),
        ] {
            let (_stop, shutdown) = watch::channel(false);
            let refused = spawn(
                Path::new("/nonexistent/host.db"),
                Arc::new(MasterKey::generate()),
                Arc::new(Metrics::new()),
                Arc::new(Notify::new()),
                broken,
                shutdown,
            );
            assert!(
                matches!(refused, Err(OutboxError::Config(n)) if n == name),
                "{name}"
            );
        }
    }

    proptest! {
        #[test]
        fn backoff_stays_within_full_jitter_bounds(
            attempts in 0u32..200,
            base_ms in 0u64..10_000,
            cap_ms in 0u64..100_000_000,
            random in any::<u64>(),
        ) {
            let base = Duration::from_millis(base_ms);
            let cap = Duration::from_millis(cap_ms);
            let delay = backoff(attempts, base, cap, random);
            let exp = 2u128.saturating_pow(attempts.saturating_sub(1));
            let ceiling = (base.as_nanos().saturating_mul(exp)).min(cap.as_nanos());
            prop_assert!(delay.as_nanos() <= ceiling);
        }
    }
}
