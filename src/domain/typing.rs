//! Typing state per user and room: the throttle on forwarded `isTyping: true`, and when each
//! automatic `isTyping: false` is due. One sweeper task ends the due ones in deadline order
//! (see `tasks`), instead of a timer task per signal: a signal costs a map update, entries live
//! only while someone is typing, and their number is capped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Most (user, room) pairs typing at once on one node; signals beyond it are not shown (the
/// state is what would have to be cleared later, so nothing untracked is ever shown).
pub const MAX_TYPING_ENTRIES: usize = 100_000;

/// What to do with a typing signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypingOutcome {
    /// Forward this signal to the room.
    pub forward: bool,
}

#[derive(Debug)]
struct Entry {
    last_forwarded: Instant,
    /// The key of this entry's deadline in `State::deadlines`.
    due: (Instant, u64),
}

#[derive(Debug, Default)]
struct State {
    /// user → room → entry, so a user's last socket leaving clears only their rooms.
    users: HashMap<String, HashMap<String, Entry>>,
    /// Automatic `false` deadlines, earliest first; the sequence number keeps keys unique.
    deadlines: BTreeMap<(Instant, u64), (String, String)>,
    len: usize,
    sequence: u64,
}

impl State {
    fn remove(&mut self, user: &str, room: &str) -> Option<Entry> {
        let rooms = self.users.get_mut(user)?;
        let entry = rooms.remove(room)?;
        if rooms.is_empty() {
            self.users.remove(user);
        }
        self.deadlines.remove(&entry.due);
        self.len -= 1;
        Some(entry)
    }
}

/// Who is typing where, on this node.
pub struct TypingTracker {
    throttle: Duration,
    timeout: Duration,
    state: Mutex<State>,
    /// Wakes the sweeper when a deadline earlier than every other one appears.
    earlier: Notify,
}

impl TypingTracker {
    pub fn new(throttle: Duration, timeout: Duration) -> Self {
        Self {
            throttle,
            timeout,
            state: Mutex::new(State::default()),
            earlier: Notify::new(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // A poisoned lock only means a panic mid-update of plain data; keep going.
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A `true` signal: forwarded unless one was forwarded within the throttle window; always
    /// moves the automatic `false` to `timeout` from `now` (a throttled signal is a refresh too).
    pub fn start(&self, user: &str, room: &str, now: Instant) -> TypingOutcome {
        let deadline = now + self.timeout;
        let (forward, earliest) = self.with(|state| {
            state.sequence += 1;
            let due = (deadline, state.sequence);
            let known = state
                .users
                .get_mut(user)
                .and_then(|rooms| rooms.get_mut(room));
            let forward = match known {
                Some(entry) => {
                    let old = std::mem::replace(&mut entry.due, due);
                    let forward = now.duration_since(entry.last_forwarded) >= self.throttle;
                    if forward {
                        entry.last_forwarded = now;
                    }
                    state.deadlines.remove(&old);
                    forward
                }
                None if state.len >= MAX_TYPING_ENTRIES => return (false, false),
                None => {
                    state.users.entry(user.to_owned()).or_default().insert(
                        room.to_owned(),
                        Entry {
                            last_forwarded: now,
                            due,
                        },
                    );
                    state.len += 1;
                    true
                }
            };
            state
                .deadlines
                .insert(due, (user.to_owned(), room.to_owned()));
            let earliest = state.deadlines.keys().next() == Some(&due);
            (forward, earliest)
        });
        if earliest {
            self.earlier.notify_one();
        }
        TypingOutcome { forward }
    }

    /// A `false` signal (explicit): forwarded only if the user was typing there.
    pub fn stop(&self, user: &str, room: &str) -> bool {
        self.with(|state| state.remove(user, room).is_some())
    }

    /// The pairs whose automatic `false` is due by `now`, forgotten as they are returned.
    pub fn take_due(&self, now: Instant) -> Vec<(String, String)> {
        self.with(|state| {
            let mut due = Vec::new();
            while let Some((&key, _)) = state.deadlines.first_key_value() {
                if key.0 > now {
                    break;
                }
                if let Some((user, room)) = state.deadlines.remove(&key) {
                    state.remove(&user, &room);
                    due.push((user, room));
                }
            }
            due
        })
    }

    /// When the next automatic `false` is due, if anyone is typing.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.with(|state| state.deadlines.keys().next().map(|(at, _)| *at))
    }

    /// Resolves when a deadline earlier than all others was added (the sweeper then sleeps
    /// until it instead).
    pub async fn earlier_deadline(&self) {
        self.earlier.notified().await;
    }

    /// How many (user, room) pairs are typing.
    pub fn len(&self) -> usize {
        self.with(|state| state.len)
    }

    /// Whether nobody is typing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The user's last socket left: every room they were typing in, now cleared.
    pub fn stop_all(&self, user: &str) -> Vec<String> {
        self.with(|state| {
            let rooms: Vec<String> = state
                .users
                .get(user)
                .map(|rooms| rooms.keys().cloned().collect())
                .unwrap_or_default();
            for room in &rooms {
                state.remove(user, room);
            }
            rooms
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THROTTLE: Duration = Duration::from_secs(2);
    const TIMEOUT: Duration = Duration::from_secs(5);

    #[test]
    fn throttles_true_but_each_signal_moves_the_deadline() {
        let t = TypingTracker::new(THROTTLE, TIMEOUT);
        let now = Instant::now();
        assert!(t.start("u", "r", now).forward);
        let refreshed = now + Duration::from_millis(500);
        assert!(!t.start("u", "r", refreshed).forward);
        assert_eq!(t.next_deadline(), Some(refreshed + TIMEOUT));
        assert!(
            t.take_due(now + TIMEOUT).is_empty(),
            "a refreshed timer must not clear"
        );
        assert!(t.start("u", "r", now + THROTTLE).forward);
    }

    #[test]
    fn expired_state_is_dropped() {
        let t = TypingTracker::new(THROTTLE, TIMEOUT);
        let now = Instant::now();
        for i in 0..1000 {
            t.start(&format!("u{i}"), "r", now);
            // Throttled refreshes add no state of their own.
            t.start(&format!("u{i}"), "r", now + Duration::from_millis(10));
        }
        assert_eq!(t.len(), 1000);
        assert!(t.take_due(now + TIMEOUT).is_empty());
        let due = t.take_due(now + TIMEOUT + Duration::from_millis(10));
        assert_eq!(due.len(), 1000);
        assert!(
            t.is_empty(),
            "nothing is kept once the automatic false is due"
        );
        assert_eq!(t.next_deadline(), None);
        assert!(t.take_due(now + TIMEOUT * 2).is_empty(), "each is due once");
    }

    #[test]
    fn stop_and_stop_all_clear_once() {
        let t = TypingTracker::new(THROTTLE, TIMEOUT);
        let now = Instant::now();
        t.start("u", "r", now);
        assert!(t.stop("u", "r"));
        assert!(!t.stop("u", "r"));
        t.start("u", "a", now);
        t.start("u", "b", now);
        t.start("v", "a", now);
        let mut rooms = t.stop_all("u");
        rooms.sort();
        assert_eq!(rooms, vec!["a", "b"]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.take_due(now + TIMEOUT), vec![("v".into(), "a".into())]);
    }

    #[test]
    fn the_map_is_capped() {
        let t = TypingTracker::new(THROTTLE, TIMEOUT);
        let now = Instant::now();
        for i in 0..MAX_TYPING_ENTRIES {
            t.start(&format!("u{i}"), "r", now);
        }
        assert!(!t.start("one-too-many", "r", now).forward);
        assert_eq!(t.len(), MAX_TYPING_ENTRIES);
    }
}
