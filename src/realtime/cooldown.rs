//! Users recently disconnected for flooding, refused a new socket for a while. Without it a
//! flooder that reconnects at once gets a fresh socket budget (a burst of admitted events, each
//! a database call) every second: ten such clients kept the SQLite writer busy enough to push
//! every healthy `chat:message` ack past 100 ms. A refused handshake costs a token check only.
//!
//! Per node: a flooder reconnecting through another node meets that node's own per-socket
//! budget again, which is what bounds the damage; the cooldown only takes away the reset.
//! Bounded: at most [`MAX_ENTRIES`] users, expired ones pruned on insert.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most users held; beyond it (a flood of floods) new entries are not recorded, and each
/// flooder is still dropped by its socket's budget.
const MAX_ENTRIES: usize = 100_000;

/// `SOCKET_FLOOD_COOLDOWN_MS` per user, from the flood drop on.
pub struct FloodCooldown {
    period: Duration,
    until: Mutex<HashMap<String, Instant>>,
}

impl FloodCooldown {
    /// `period` zero turns the cooldown off.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            until: Mutex::default(),
        }
    }

    /// `user` was just dropped for flooding.
    pub fn start(&self, user: &str) {
        self.start_at(user, Instant::now());
    }

    fn start_at(&self, user: &str, now: Instant) {
        if self.period.is_zero() {
            return;
        }
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if until.len() >= MAX_ENTRIES {
            until.retain(|_, end| *end > now);
            if until.len() >= MAX_ENTRIES {
                return;
            }
        }
        until.insert(user.to_owned(), now + self.period);
    }

    /// How long `user` must still wait before a new socket is accepted, if at all.
    pub fn remaining(&self, user: &str) -> Option<Duration> {
        self.remaining_at(user, Instant::now())
    }

    fn remaining_at(&self, user: &str, now: Instant) -> Option<Duration> {
        if self.period.is_zero() {
            return None;
        }
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let end = *until.get(user)?;
        if end > now {
            return Some(end - now);
        }
        until.remove(user);
        None
    }

    /// Users held right now, expired ones included until pruned.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.until.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooder_waits_the_period_and_then_is_forgotten() {
        let cooldown = FloodCooldown::new(Duration::from_secs(10));
        let now = Instant::now();
        cooldown.start_at("f", now);
        assert_eq!(
            cooldown.remaining_at("f", now + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(cooldown.remaining_at("other", now), None);
        assert_eq!(
            cooldown.remaining_at("f", now + Duration::from_secs(10)),
            None
        );
        assert!(cooldown.is_empty(), "an expired entry is removed when seen");
    }

    #[test]
    fn zero_turns_it_off() {
        let cooldown = FloodCooldown::new(Duration::ZERO);
        cooldown.start("f");
        assert_eq!(cooldown.remaining("f"), None);
        assert!(cooldown.is_empty());
    }

    #[test]
    fn it_never_holds_more_than_the_bound_and_prunes_expired_entries_first() {
        let cooldown = FloodCooldown::new(Duration::from_secs(1));
        let now = Instant::now();
        for i in 0..MAX_ENTRIES {
            cooldown.start_at(&format!("u{i}"), now);
        }
        cooldown.start_at("late", now);
        assert_eq!(cooldown.len(), MAX_ENTRIES);
        assert_eq!(
            cooldown.remaining_at("late", now),
            None,
            "full: not recorded"
        );
        let later = now + Duration::from_secs(2);
        cooldown.start_at("late", later);
        assert_eq!(cooldown.len(), 1, "the expired entries were pruned");
        assert!(cooldown.remaining_at("late", later).is_some());
    }
}
