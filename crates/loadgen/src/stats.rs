//! Latency histograms and response-code counts per kind of request.
//!
//! Latencies are recorded in microseconds into HDR histograms with three
//! significant digits (each value within 0.1 % of what was recorded), from
//! 1 µs to one hour; a longer latency is clamped to one hour.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest latency a histogram holds, µs (longer ones are clamped to it).
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Latencies and answers of one kind of request.
#[derive(Debug, Clone)]
pub struct KindStats {
    latency: Histogram<u64>,
    codes: BTreeMap<String, u64>,
}

impl Default for KindStats {
    fn default() -> Self {
        KindStats {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("static histogram bounds are valid"),
            codes: BTreeMap::new(),
        }
    }
}

impl KindStats {
    /// Records one answered request.
    pub fn record(&mut self, latency: Duration, code: &str) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_LATENCY_US)
            .clamp(1, MAX_LATENCY_US);
        self.latency
            .record(us)
            .expect("value clamped into the histogram's range");
        *self.codes.entry(code.to_string()).or_default() += 1;
    }

    /// Adds another's records to these.
    pub fn merge(&mut self, other: &KindStats) {
        self.latency
            .add(&other.latency)
            .expect("histograms share their bounds");
        for (code, n) in &other.codes {
            *self.codes.entry(code.clone()).or_default() += n;
        }
    }

    /// Requests recorded.
    pub fn count(&self) -> u64 {
        self.latency.len()
    }

    /// Requests answered with `code`.
    pub fn with_code(&self, code: &str) -> u64 {
        self.codes.get(code).copied().unwrap_or(0)
    }

    /// Latency at `quantile` (0.0..=1.0), µs.
    pub fn quantile_us(&self, quantile: f64) -> u64 {
        self.latency.value_at_quantile(quantile)
    }

    /// The summary of these records.
    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count(),
            codes: self.codes.clone(),
            mean_us: self.latency.mean().round() as u64,
            p50_us: self.quantile_us(0.50),
            p99_us: self.quantile_us(0.99),
            p999_us: self.quantile_us(0.999),
            max_us: self.latency.max(),
        }
    }
}

/// Count, answers and latency quantiles of a kind of request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Requests answered.
    pub count: u64,
    /// Answers by response code.
    pub codes: BTreeMap<String, u64>,
    /// Mean latency, µs.
    pub mean_us: u64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest latency, µs.
    pub max_us: u64,
}

/// Statistics of a run, by kind of request (`sale`, `refund`, ...).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    kinds: BTreeMap<&'static str, KindStats>,
}

impl Stats {
    /// Records one answered request of `kind`.
    pub fn record(&mut self, kind: &'static str, latency: Duration, code: &str) {
        self.kinds.entry(kind).or_default().record(latency, code);
    }

    /// Adds another's records to these.
    pub fn merge(&mut self, other: &Stats) {
        for (kind, stats) in &other.kinds {
            self.kinds.entry(kind).or_default().merge(stats);
        }
    }

    /// The records of one kind.
    pub fn kind(&self, kind: &str) -> Option<&KindStats> {
        self.kinds.get(kind)
    }

    /// Every kind with its records.
    pub fn kinds(&self) -> impl Iterator<Item = (&'static str, &KindStats)> {
        self.kinds.iter().map(|(k, s)| (*k, s))
    }

    /// All kinds together.
    pub fn total(&self) -> KindStats {
        let mut total = KindStats::default();
        for stats in self.kinds.values() {
            total.merge(stats);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantiles against an exact computation over the sorted samples.
    #[test]
    fn quantiles_match_sorted_samples_within_precision() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut samples: Vec<u64> = (0..20_000)
            .map(|_| {
                // A long-tailed mix: mostly ~1 ms, a few up to 1 s.
                if rng.u32(0..100) == 0 {
                    rng.u64(10_000..1_000_000)
                } else {
                    rng.u64(200..2_000)
                }
            })
            .collect();
        let mut stats = KindStats::default();
        for &us in &samples {
            stats.record(Duration::from_micros(us), "00");
        }
        samples.sort_unstable();
        let exact = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).max(1) - 1];
        for q in [0.5, 0.9, 0.99, 0.999] {
            let got = stats.quantile_us(q) as f64;
            let want = exact(q) as f64;
            assert!(
                (got - want).abs() <= want * 0.001 + 1.0,
                "q{q}: {got} vs {want}"
            );
        }
        let s = stats.summary();
        assert_eq!(s.count, 20_000);
        assert_eq!(s.codes["00"], 20_000);
        let max = *samples.last().unwrap() as f64;
        assert!((s.max_us as f64 - max).abs() <= max * 0.001);
    }

    #[test]
    fn merging_adds_counts_and_codes() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        a.record("sale", Duration::from_millis(1), "00");
        b.record("sale", Duration::from_millis(3), "51");
        b.record("refund", Duration::from_millis(2), "00");
        a.merge(&b);
        let sale = a.kind("sale").unwrap();
        assert_eq!(
            (sale.count(), sale.with_code("00"), sale.with_code("51")),
            (2, 1, 1)
        );
        assert_eq!(a.total().count(), 3);
        // Clamped, not lost: below 1 µs and beyond an hour.
        a.record("echo", Duration::ZERO, "00");
        a.record("echo", Duration::from_secs(7_200), "00");
        assert_eq!(a.kind("echo").unwrap().count(), 2);
    }
}
