//! The per-user message rate limit: a sliding 60 s window of `RATE_LIMIT_PER_MINUTE` sends.
//! A sliding log (not a token bucket) so a client may send its whole allowance at once and the
//! next send is refused until the oldest one leaves the window, exactly as the contract says.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::bounded::Generations;
use crate::error::{AppError, AppResult};

/// The window every limit counts over.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Counts sends per user, in memory on one node or in Redis across many.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Records one send for `user_id`, or refuses it with `RATE_LIMITED` and the wait.
    async fn check(&self, user_id: &str) -> AppResult<()>;
}

/// Single-node limiter: the send times of each user's current window. A user's log is
/// forgotten within two windows of their last send (see [`Generations`]), so the map holds the
/// recently active users only, with no scan of everyone.
pub struct MemoryRateLimiter {
    limit: usize,
    sends: Mutex<Generations<String, VecDeque<Instant>>>,
}

impl MemoryRateLimiter {
    pub fn new(limit_per_minute: u32) -> Self {
        Self {
            limit: limit_per_minute as usize,
            sends: Mutex::new(Generations::new(WINDOW, Instant::now())),
        }
    }

    fn check_at(&self, user_id: &str, now: Instant) -> Result<(), Duration> {
        let mut sends = self.sends.lock().unwrap_or_else(|p| p.into_inner());
        let (log, dropped) = sends.entry_with(user_id.to_owned(), now, VecDeque::new);
        while log
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            log.pop_front();
        }
        let verdict = if log.len() >= self.limit {
            let oldest = log.front().copied().unwrap_or(now);
            Err(WINDOW.saturating_sub(now.duration_since(oldest)))
        } else {
            log.push_back(now);
            Ok(())
        };
        drop(sends);
        // Freed outside the lock.
        drop(dropped);
        verdict
    }

    /// How many users' logs are held (for tests of the memory bound).
    pub fn tracked_users(&self) -> usize {
        self.sends.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Forgets logs left unused long enough, as a send at `now` would.
    pub fn expire(&self, now: Instant) {
        let dropped = self
            .sends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expire(now);
        drop(dropped);
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, user_id: &str) -> AppResult<()> {
        self.check_at(user_id, Instant::now())
            .map_err(|wait| AppError::RateLimited {
                retry_after_ms: (wait.as_millis() as u64).max(1),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_allowance_at_once_then_refused_until_oldest_expires() {
        let limiter = MemoryRateLimiter::new(3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("u", start).is_ok());
        }
        let wait = limiter
            .check_at("u", start + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(limiter.check_at("other", start).is_ok());
        assert!(limiter.check_at("u", start + WINDOW).is_ok());
    }

    #[test]
    fn logs_of_idle_users_are_dropped() {
        let limiter = MemoryRateLimiter::new(3);
        let start = Instant::now();
        for i in 0..5000 {
            assert!(limiter.check_at(&format!("u{i}"), start).is_ok());
        }
        assert_eq!(limiter.tracked_users(), 5000);
        // Still counted while their sends are inside the window.
        limiter.expire(start + WINDOW / 2);
        assert_eq!(limiter.tracked_users(), 5000);
        // One user keeps sending; everyone else went quiet two windows ago.
        assert!(limiter.check_at("u0", start + WINDOW).is_ok());
        limiter.expire(start + WINDOW * 2);
        assert_eq!(limiter.tracked_users(), 1);
        limiter.expire(start + WINDOW * 4);
        assert_eq!(limiter.tracked_users(), 0);
    }
}
