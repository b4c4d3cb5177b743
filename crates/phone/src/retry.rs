//! Bounded exponential backoff: how many times to try, and how long to
//! wait before each new try. Pure, so the schedule is tested exactly.
//!
//! No jitter: one phone talks to one terminal; there is no crowd of
//! clients whose retries would need spreading.

use std::time::Duration;

/// At most `attempts` tries; before try `n` (1-based, `n >= 2`) a pause of
/// `initial · 2^(n-2)`, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    /// Pause before the second try.
    pub initial: Duration,
    /// Longest pause.
    pub max: Duration,
}

impl Backoff {
    /// Reaching the terminal: 4 tries over about 3.5 s (0.5, 1, 2 s
    /// pauses): long enough for a Wi-Fi hiccup, short enough that a
    /// cashier is not left waiting on a terminal that is off.
    pub const CONNECT: Self = Self {
        attempts: 4,
        initial: Duration::from_millis(500),
        max: Duration::from_secs(4),
    };

    /// Asking what became of a payment whose answer was lost: the
    /// payment may still wait for the card or the PIN, so the phone keeps
    /// asking for about five minutes (1, 2, 4, then every 8 s).
    pub const STATUS: Self = Self {
        attempts: 40,
        initial: Duration::from_secs(1),
        max: Duration::from_secs(8),
    };

    /// The pause before try `attempt` (1-based), or `None` when that try
    /// is beyond the bound. The first try has no pause.
    pub fn pause_before(&self, attempt: u32) -> Option<Duration> {
        if attempt == 0 || attempt > self.attempts.max(1) {
            return None;
        }
        if attempt == 1 {
            return Some(Duration::ZERO);
        }
        // 2^31 · initial overflows long before it matters: cap the
        // exponent, then the pause.
        let doubling = 1u32 << (attempt - 2).min(31);
        Some(self.initial.saturating_mul(doubling).min(self.max))
    }

    /// Every pause, in order: `attempts - 1` of them.
    pub fn schedule(&self) -> Vec<Duration> {
        (2..=self.attempts.max(1))
            .filter_map(|n| self.pause_before(n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn connect_schedule() {
        assert_eq!(Backoff::CONNECT.schedule(), ms(&[500, 1000, 2000]));
        assert_eq!(Backoff::CONNECT.pause_before(1), Some(Duration::ZERO));
        assert_eq!(Backoff::CONNECT.pause_before(5), None);
        assert_eq!(Backoff::CONNECT.pause_before(0), None);
    }

    #[test]
    fn status_schedule_doubles_then_stays_at_the_cap() {
        let s = Backoff::STATUS.schedule();
        assert_eq!(s.len(), 39);
        assert_eq!(&s[..5], &ms(&[1000, 2000, 4000, 8000, 8000])[..]);
        assert!(s[3..].iter().all(|d| *d == Duration::from_secs(8)));
        let total: Duration = s.iter().sum();
        assert_eq!(total, Duration::from_secs(1 + 2 + 4 + 36 * 8));
    }

    #[test]
    fn huge_bounds_saturate_instead_of_overflowing() {
        let b = Backoff {
            attempts: u32::MAX,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        assert_eq!(b.pause_before(40), Some(Duration::from_secs(60)));
        assert_eq!(b.pause_before(u32::MAX), Some(Duration::from_secs(60)));
        let single = Backoff {
            attempts: 0,
            ..Backoff::CONNECT
        };
        assert_eq!(single.pause_before(1), Some(Duration::ZERO));
        assert!(single.schedule().is_empty());
    }
}
