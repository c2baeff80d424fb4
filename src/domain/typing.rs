//! Typing state per user and room: the throttle on forwarded `isTyping: true` and the
//! generation that tells an auto-clear timer whether it is still the latest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to do with a typing signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypingOutcome {
    /// Forward this signal to the room.
    pub forward: bool,
    /// For `isTyping: true`: the generation the new auto-clear timer must carry.
    pub generation: u64,
}

#[derive(Debug)]
struct Entry {
    last_forwarded: Instant,
    generation: u64,
}

/// Who is typing where, on this node.
pub struct TypingTracker {
    throttle: Duration,
    entries: Mutex<HashMap<(String, String), Entry>>,
    next_generation: Mutex<u64>,
}

impl TypingTracker {
    pub fn new(throttle: Duration) -> Self {
        Self {
            throttle,
            entries: Mutex::new(HashMap::new()),
            next_generation: Mutex::new(0),
        }
    }

    fn generation(&self) -> u64 {
        let mut g = self
            .next_generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *g += 1;
        *g
    }

    /// A `true` signal: forwarded unless one was forwarded within the throttle window; always
    /// refreshes the auto-clear timer (a new generation).
    pub fn start(&self, user: &str, room: &str, now: Instant) -> TypingOutcome {
        let generation = self.generation();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = (user.to_owned(), room.to_owned());
        let forward = match entries.get_mut(&key) {
            Some(entry) => {
                entry.generation = generation;
                if now.duration_since(entry.last_forwarded) >= self.throttle {
                    entry.last_forwarded = now;
                    true
                } else {
                    false
                }
            }
            None => {
                entries.insert(
                    key,
                    Entry {
                        last_forwarded: now,
                        generation,
                    },
                );
                true
            }
        };
        TypingOutcome {
            forward,
            generation,
        }
    }

    /// A `false` signal (explicit): forwarded only if the user was typing there.
    pub fn stop(&self, user: &str, room: &str) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .remove(&(user.to_owned(), room.to_owned()))
            .is_some()
    }

    /// The auto-clear timer of `generation` fired: clear only if nothing refreshed it since.
    pub fn expire(&self, user: &str, room: &str, generation: u64) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = (user.to_owned(), room.to_owned());
        if entries
            .get(&key)
            .is_some_and(|e| e.generation == generation)
        {
            entries.remove(&key);
            true
        } else {
            false
        }
    }

    /// The user's last socket left: every room they were typing in, now cleared.
    pub fn stop_all(&self, user: &str) -> Vec<String> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let rooms: Vec<String> = entries
            .keys()
            .filter(|(u, _)| u == user)
            .map(|(_, r)| r.clone())
            .collect();
        for room in &rooms {
            entries.remove(&(user.to_owned(), room.clone()));
        }
        rooms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_true_but_refreshes_generation() {
        let t = TypingTracker::new(Duration::from_secs(2));
        let now = Instant::now();
        let first = t.start("u", "r", now);
        assert!(first.forward);
        let second = t.start("u", "r", now + Duration::from_millis(500));
        assert!(!second.forward);
        assert!(
            !t.expire("u", "r", first.generation),
            "a refreshed timer must not clear"
        );
        assert!(t.start("u", "r", now + Duration::from_secs(2)).forward);
    }

    #[test]
    fn stop_and_expire_clear_once() {
        let t = TypingTracker::new(Duration::from_secs(2));
        let g = t.start("u", "r", Instant::now()).generation;
        assert!(t.expire("u", "r", g));
        assert!(!t.expire("u", "r", g));
        assert!(!t.stop("u", "r"));
        t.start("u", "a", Instant::now());
        t.start("u", "b", Instant::now());
        let mut rooms = t.stop_all("u");
        rooms.sort();
        assert_eq!(rooms, vec!["a", "b"]);
    }
}
