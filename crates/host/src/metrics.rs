//! The host's Prometheus metrics, served as OpenMetrics text on `/metrics`
//! (see docs/operations.md for the list).
//!
//! Recording is cheap enough for the request path: a label set is two
//! static strings or fixed-size values (no allocation), a counter or
//! histogram update is an atomic add behind a read lock taken once per
//! label set.

use ledger::{BatchHook, BatchReport};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the host answered to a request: an ISO 8583 response code, or
/// nothing (the connection was closed instead).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Answer {
    /// Field 39 of the response (two characters).
    Code([u8; 2]),
    /// No response: the connection was closed.
    Closed,
}

impl Answer {
    /// The answer carrying response code `code`; codes that are not two
    /// printable ASCII characters are shown as `??`.
    pub fn code(code: &str) -> Answer {
        match code.as_bytes() {
            &[a, b] if a.is_ascii_graphic() && b.is_ascii_graphic() => Answer::Code([a, b]),
            _ => Answer::Code(*b"??"),
        }
    }
}

impl EncodeLabelValue for Answer {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Answer::Code([a, b]) => {
                encoder.write_char(char::from(*a))?;
                encoder.write_char(char::from(*b))
            }
            Answer::Closed => encoder.write_str("closed"),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    code: Answer,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 6.5 s: a request answered from memory up to one
    // waiting behind a slow commit.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

/// Every metric of the host, registered once and shared by the server,
/// the committer's batch hook, the API and the webhook worker.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<KindLabel, Histogram, fn() -> Histogram>,
    connections: Gauge,
    in_flight: Gauge,
    commit_batch: Histogram,
    commit_seconds: Histogram,
    commit_failures: Counter,
    outbox_backlog: Gauge,
    deliveries: Family<DeliveryLabels, Counter>,
    api_requests: Family<ApiLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Holds a gauge one higher while alive (a connection open, a request in flight).
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// All metrics at zero, registered under the prefix `posnet_host`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("posnet_host");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Terminal requests answered, by message kind and response code (closed: no answer)",
            requests.clone(),
        );
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Time from receiving a request's bytes to its response being ready, by message kind",
            latency.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections_open",
            "Terminal connections past the TLS handshake",
            connections.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Terminal requests received and not yet answered",
            in_flight.clone(),
        );
        // 1 to 2048: the committer's batch bound is at most a few thousand.
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "commit_batch_size",
            "Requests committed together in one group commit",
            commit_batch.clone(),
        );
        // 100 µs to about 1.6 s: one fsync on a fast disk up to a stalled one.
        let commit_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 15));
        registry.register(
            "commit_duration_seconds",
            "Time from beginning a group commit's transaction to the end of its commit",
            commit_seconds.clone(),
        );
        let commit_failures = Counter::default();
        registry.register(
            "commit_failures",
            "Group commits that failed to begin or commit",
            commit_failures.clone(),
        );
        let outbox_backlog = Gauge::default();
        registry.register(
            "outbox_backlog",
            "Merchant events not yet delivered (as of the last scrape or health check)",
            outbox_backlog.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts, by result (delivered or failed)",
            deliveries.clone(),
        );
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Merchant API, health and metrics requests, by route and HTTP status",
            api_requests.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            connections,
            in_flight,
            commit_batch,
            commit_seconds,
            commit_failures,
            outbox_backlog,
            deliveries,
            api_requests,
        }
    }

    /// Records one terminal request of `kind` answered with `answer` after `elapsed`.
    pub fn request(&self, kind: &'static str, answer: Answer, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { kind, code: answer })
            .inc();
        self.latency
            .get_or_create(&KindLabel { kind })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an open terminal connection until the guard drops.
    pub fn connection_opened(&self) -> GaugeGuard {
        self.connections.inc();
        GaugeGuard(self.connections.clone())
    }

    /// Counts a request in flight until the guard drops.
    pub fn request_started(&self) -> GaugeGuard {
        self.in_flight.inc();
        GaugeGuard(self.in_flight.clone())
    }

    /// Records one group-commit batch.
    pub fn batch(&self, report: &BatchReport) {
        if report.committed {
            self.commit_batch.observe(report.size as f64);
            self.commit_seconds.observe(report.duration.as_secs_f64());
        } else {
            self.commit_failures.inc();
        }
    }

    /// A batch hook for [`ledger::GroupCommitConfig::on_batch`] that records
    /// each batch, then calls `next` (if any).
    pub fn batch_hook(self: &Arc<Self>, next: Option<BatchHook>) -> BatchHook {
        let metrics = self.clone();
        Arc::new(move |report: &BatchReport| {
            metrics.batch(report);
            if let Some(next) = &next {
                next(report);
            }
        })
    }

    /// Sets the number of undelivered merchant events.
    pub fn set_outbox_backlog(&self, events: u64) {
        self.outbox_backlog
            .set(i64::try_from(events).unwrap_or(i64::MAX));
    }

    /// Records one webhook delivery attempt.
    pub fn delivery(&self, delivered: bool) {
        let result = if delivered { "delivered" } else { "failed" };
        self.deliveries
            .get_or_create(&DeliveryLabels { result })
            .inc();
    }

    /// Records one HTTP request to the API server.
    pub fn api_request(&self, route: &'static str, status: u16) {
        self.api_requests
            .get_or_create(&ApiLabels { route, status })
            .inc();
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn records_requests_guards_batches_and_deliveries() {
        let m = Arc::new(Metrics::new());
        m.request("sale", Answer::code("00"), Duration::from_millis(3));
        m.request("sale", Answer::code("00"), Duration::from_millis(5));
        m.request("sale", Answer::code("5"), Duration::from_millis(1));
        m.request("unknown", Answer::Closed, Duration::from_millis(1));
        let open = m.connection_opened();
        let _flight = m.request_started();
        drop(open);
        let hook = m.batch_hook(None);
        let report = BatchReport {
            size: 3,
            failed_jobs: 0,
            committed: true,
            queue_depth: 0,
            duration: Duration::from_millis(2),
        };
        hook(&report);
        hook(&BatchReport {
            committed: false,
            ..report
        });
        m.delivery(true);
        m.delivery(false);
        m.delivery(false);
        m.set_outbox_backlog(7);
        m.api_request("/healthz", 200);
        let text = m.encode();
        assert_eq!(
            line(
                &text,
                "posnet_host_requests_total{kind=\"sale\",code=\"00\"}"
            ),
            Some("posnet_host_requests_total{kind=\"sale\",code=\"00\"} 2")
        );
        assert!(text.contains("posnet_host_requests_total{kind=\"sale\",code=\"??\"} 1"));
        assert!(text.contains("posnet_host_requests_total{kind=\"unknown\",code=\"closed\"} 1"));
        assert!(text.contains("posnet_host_request_duration_seconds_count{kind=\"sale\"} 3"));
        assert!(text.contains("posnet_host_connections_open 0"));
        assert!(text.contains("posnet_host_requests_in_flight 1"));
        assert!(text.contains("posnet_host_commit_batch_size_count 1"));
        assert!(text.contains("posnet_host_commit_batch_size_sum 3.0"));
        assert!(text.contains("posnet_host_commit_failures_total 1"));
        assert!(text.contains("posnet_host_webhook_attempts_total{result=\"failed\"} 2"));
        assert!(text.contains("posnet_host_webhook_attempts_total{result=\"delivered\"} 1"));
        assert!(text.contains("posnet_host_outbox_backlog 7"));
        assert!(
            text.contains("posnet_host_api_requests_total{route=\"/healthz\",status=\"200\"} 1")
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
