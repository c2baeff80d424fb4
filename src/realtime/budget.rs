//! The event budget of one socket: a token bucket every client event spends from (not only
//! `chat:message`, whose per-user limit lives in the chat service), and a count of refusals
//! that tells a client backing off from one that keeps flooding.

use std::time::{Duration, Instant};

/// Refusals within this window that make a socket a flooder.
const FLOOD_WINDOW: Duration = Duration::from_secs(10);

/// Settings of a socket's budget (`SOCKET_EVENTS_PER_SECOND`, `SOCKET_EVENT_BURST`,
/// `SOCKET_FLOOD_REJECTIONS`).
#[derive(Clone, Copy, Debug)]
pub struct BudgetLimits {
    pub per_second: u32,
    pub burst: u32,
    pub flood_rejections: u32,
}

impl BudgetLimits {
    /// Never refuses (sockets whose order is all that matters, and tests).
    pub fn unlimited() -> Self {
        Self {
            per_second: u32::MAX,
            burst: u32::MAX,
            flood_rejections: u32::MAX,
        }
    }
}

/// Why an event was not admitted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refusal {
    /// When the next event would be admitted (the ack's `retryAfterMs`).
    pub retry_after: Duration,
    /// Set on exactly the refusal that crossed `SOCKET_FLOOD_REJECTIONS`: the socket is to be
    /// disconnected.
    pub flood: bool,
}

impl Refusal {
    pub fn retry_after_ms(&self) -> u64 {
        u64::try_from(self.retry_after.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// A token bucket plus a refusal counter. Floats keep refills exact at any rate; a bucket is a
/// few words, so every socket can have one.
pub struct Budget {
    limits: BudgetLimits,
    tokens: f64,
    refilled_at: Instant,
    window_start: Instant,
    refusals: u32,
}

impl Budget {
    pub fn new(limits: BudgetLimits, now: Instant) -> Self {
        Self {
            limits,
            tokens: f64::from(limits.burst),
            refilled_at: now,
            window_start: now,
            refusals: 0,
        }
    }

    /// Takes a token for one event, or says when to retry.
    pub fn spend(&mut self, now: Instant) -> Result<(), Refusal> {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(self.limits.per_second))
            .min(f64::from(self.limits.burst));
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.refuse(now))
        }
    }

    /// Counts a refusal (of the budget or of a full line) and says when to retry.
    pub fn refuse(&mut self, now: Instant) -> Refusal {
        if now.saturating_duration_since(self.window_start) > FLOOD_WINDOW {
            self.window_start = now;
            self.refusals = 0;
        }
        self.refusals = self.refusals.saturating_add(1);
        let missing = (1.0 - self.tokens).max(0.0);
        let wait = if missing > 0.0 {
            missing / f64::from(self.limits.per_second)
        } else {
            // Refused for a full line, not for tokens: come back after one event's worth.
            1.0 / f64::from(self.limits.per_second)
        };
        Refusal {
            retry_after: Duration::from_secs_f64(wait),
            flood: self.refusals == self.limits.flood_rejections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_second: u32, burst: u32, flood_rejections: u32) -> (Budget, Instant) {
        let now = Instant::now();
        let limits = BudgetLimits {
            per_second,
            burst,
            flood_rejections,
        };
        (Budget::new(limits, now), now)
    }

    #[test]
    fn a_burst_passes_then_events_come_at_the_rate() {
        let (mut b, now) = budget(10, 3, 100);
        for _ in 0..3 {
            assert!(b.spend(now).is_ok());
        }
        let refusal = b.spend(now).unwrap_err();
        assert_eq!(refusal.retry_after_ms(), 100);
        assert!(b.spend(now + Duration::from_millis(100)).is_ok());
        assert!(b.spend(now + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn the_refusal_that_crosses_the_limit_marks_a_flood_once() {
        let (mut b, now) = budget(1, 1, 3);
        assert!(b.spend(now).is_ok());
        let floods: Vec<bool> = (0..5).map(|_| b.spend(now).unwrap_err().flood).collect();
        assert_eq!(floods, [false, false, true, false, false]);
    }

    #[test]
    fn refusals_spread_over_more_than_the_window_are_no_flood() {
        let (mut b, now) = budget(1, 1, 3);
        assert!(b.spend(now).is_ok());
        assert!(!b.spend(now).unwrap_err().flood);
        assert!(!b.spend(now).unwrap_err().flood);
        let later = now + FLOOD_WINDOW + Duration::from_secs(1);
        assert!(b.spend(later).is_ok());
        assert!(!b.spend(later).unwrap_err().flood);
    }
}
