//! Bounds on per-request and per-node state. Queries bind ids a chunk at a time, because SQLite
//! and PostgreSQL both cap the parameters of one statement and a user may follow or notify tens
//! of thousands; and per-user state that is only useful for a while lives in a map that forgets
//! it on its own, so memory follows recent activity rather than every user ever seen.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Most ids bound in one `IN (…)` list: far below SQLite's 32766 and PostgreSQL's 65535
/// parameters, with room for a statement's other parameters.
pub const MAX_BIND_IDS: usize = 500;

/// A map whose entries disappear once they have not been used for a full period, without any
/// scan: entries live in a current and a previous generation; using an entry moves it to the
/// current one, and each period the previous generation is dropped whole and the current one
/// becomes the previous. An entry therefore lives between one and two periods after its last
/// use, and every operation is O(1) however many users the node has seen.
#[derive(Debug)]
pub struct Generations<K, V> {
    period: Duration,
    rotated_at: Instant,
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
}

impl<K: Hash + Eq, V> Generations<K, V> {
    /// Entries unused for `period` (at least) and at most twice that are forgotten.
    pub fn new(period: Duration, now: Instant) -> Self {
        Self {
            period: period.max(Duration::from_millis(1)),
            rotated_at: now,
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }

    /// Rotates the generations when a period has passed. Returns what was dropped, so callers
    /// holding a lock can free it after releasing the lock.
    fn rotate(&mut self, now: Instant) -> HashMap<K, V> {
        let elapsed = now.saturating_duration_since(self.rotated_at);
        if elapsed < self.period {
            return HashMap::new();
        }
        self.rotated_at = now;
        if elapsed >= self.period * 2 {
            // Nothing was used for two periods: both generations are stale.
            let mut dropped = std::mem::take(&mut self.current);
            dropped.extend(std::mem::take(&mut self.previous));
            return dropped;
        }
        let previous = std::mem::take(&mut self.current);
        std::mem::replace(&mut self.previous, previous)
    }

    /// The entry for `key`, created with `make` when absent (or forgotten), and marked used.
    /// The second value is what rotation dropped (drop it outside any lock).
    pub fn entry_with(
        &mut self,
        key: K,
        now: Instant,
        make: impl FnOnce() -> V,
    ) -> (&mut V, HashMap<K, V>) {
        let dropped = self.rotate(now);
        let value = match self.previous.remove(&key) {
            Some(value) => self.current.entry(key).or_insert(value),
            None => self.current.entry(key).or_insert_with(make),
        };
        (value, dropped)
    }

    /// The entry for `key` if it is still remembered, without marking it used.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.current
            .remove(key)
            .or_else(|| self.previous.remove(key))
    }

    /// How many entries are remembered.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops what has gone unused for long enough, as if an operation happened at `now`.
    pub fn expire(&mut self, now: Instant) -> HashMap<K, V> {
        self.rotate(now)
    }
}

/// Users filed under the time of their activity, taken oldest first: lets a sweeper look only
/// at the users that may be due instead of at everyone each tick. A user is filed once (filing
/// again is a no-op until they are taken), so frequent events cost one hash lookup.
#[derive(Debug, Default)]
pub struct DueQueue {
    filed: HashMap<String, i64>,
    order: std::collections::BTreeSet<(i64, String)>,
}

impl DueQueue {
    /// Files `user` at `at` unless already filed.
    pub fn file(&mut self, user: &str, at: i64) {
        if !self.filed.contains_key(user) {
            self.filed.insert(user.to_owned(), at);
            self.order.insert((at, user.to_owned()));
        }
    }

    /// Takes every user filed before `cutoff`, oldest first.
    pub fn take_before(&mut self, cutoff: i64) -> Vec<String> {
        let mut due = Vec::new();
        while self.order.first().is_some_and(|(at, _)| *at < cutoff) {
            if let Some((_, user)) = self.order.pop_first() {
                self.filed.remove(&user);
                due.push(user);
            }
        }
        due
    }

    /// How many users are filed.
    pub fn len(&self) -> usize {
        self.filed.len()
    }

    /// Whether nobody is filed.
    pub fn is_empty(&self) -> bool {
        self.filed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_entries_are_forgotten_within_two_periods() {
        let t0 = Instant::now();
        let period = Duration::from_secs(60);
        let mut map: Generations<String, u32> = Generations::new(period, t0);
        *map.entry_with("idle".into(), t0, || 0).0 += 1;
        *map.entry_with("busy".into(), t0, || 0).0 += 1;
        // One period later both are still there; "busy" is used again.
        *map.entry_with("busy".into(), t0 + period, || 0).0 += 1;
        assert_eq!(map.peek(&"idle".to_owned()), Some(&1));
        // Two periods: "idle" (unused since t0) is gone, "busy" kept its value.
        map.expire(t0 + period * 2);
        assert_eq!(map.peek(&"idle".to_owned()), None);
        assert_eq!(map.peek(&"busy".to_owned()), Some(&2));
        // Long silence drops everything.
        let dropped = map.expire(t0 + period * 10);
        assert_eq!(dropped.len(), 1);
        assert!(map.is_empty());
    }

    #[test]
    fn due_queue_files_once_and_takes_only_the_due() {
        let mut q = DueQueue::default();
        q.file("a", 10);
        q.file("b", 20);
        q.file("a", 30);
        assert_eq!(q.len(), 2, "filing again is a no-op");
        assert_eq!(q.take_before(15), ["a"]);
        assert_eq!(q.take_before(15), Vec::<String>::new());
        q.file("a", 30);
        assert_eq!(q.take_before(100), ["b", "a"]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_forgotten_entry_starts_fresh() {
        let t0 = Instant::now();
        let mut map: Generations<&str, u32> = Generations::new(Duration::from_secs(1), t0);
        *map.entry_with("u", t0, || 0).0 = 5;
        let (value, _) = map.entry_with("u", t0 + Duration::from_secs(3), || 0);
        assert_eq!(*value, 0);
        assert_eq!(map.remove(&"u"), Some(0));
        assert!(map.is_empty());
    }
}
