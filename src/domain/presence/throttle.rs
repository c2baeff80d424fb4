//! The per-user activity throttle. `presence:activity` and `PUT /presence/activity` are cheap
//! to send in a loop, and each announcement costs a fan-out, so at most one activity per user
//! per `PRESENCE_ACTIVITY_THROTTLE_MS` window is announced: the first at once (leading edge),
//! later ones within the window replace each other and the latest is announced when the window
//! ends (trailing edge), which starts the next window. The stored activity (`GET /presence/me`)
//! is always the latest; only its announcement is throttled.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::queue::ActivityUpdate;

/// What to do with an offered activity.
#[derive(Debug, PartialEq)]
pub enum Offer {
    /// Announce it now and start a window: call [`ActivityThrottle::window_ended`] after
    /// [`ActivityThrottle::window`].
    Now(ActivityUpdate),
    /// Held until the current window ends.
    Held,
}

/// Open windows, one per user that announced an activity within the last window.
pub struct ActivityThrottle {
    window: Duration,
    /// The latest activity held per user with an open window.
    open: Mutex<HashMap<String, Option<ActivityUpdate>>>,
}

impl ActivityThrottle {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            open: Mutex::default(),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Offers `update` of `user`: announce now (no window open, or throttling off) or held.
    pub fn offer(&self, user: &str, update: ActivityUpdate) -> Offer {
        if self.window.is_zero() {
            return Offer::Now(update);
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        match open.get_mut(user) {
            Some(held) => {
                *held = Some(update);
                Offer::Held
            }
            None => {
                open.insert(user.to_owned(), None);
                Offer::Now(update)
            }
        }
    }

    /// The window of `user` ended: the activity held in it, to announce now (a new window
    /// starts, so call again after [`ActivityThrottle::window`]), or `None` when nothing was
    /// held and the window is closed.
    pub fn window_ended(&self, user: &str) -> Option<ActivityUpdate> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        match open.get_mut(user).map(Option::take) {
            Some(Some(update)) => Some(update),
            _ => {
                open.remove(user);
                None
            }
        }
    }

    /// Users with an open window.
    pub fn open_windows(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(n: u32) -> ActivityUpdate {
        ActivityUpdate {
            activity: format!("a{n}"),
            metadata: serde_json::Value::Null,
        }
    }

    #[test]
    fn leading_then_latest_on_the_trailing_edge() {
        let t = ActivityThrottle::new(Duration::from_secs(1));
        assert_eq!(t.offer("u", update(0)), Offer::Now(update(0)));
        for n in 1..100 {
            assert_eq!(t.offer("u", update(n)), Offer::Held);
        }
        assert_eq!(t.offer("v", update(7)), Offer::Now(update(7)));
        assert_eq!(t.window_ended("u"), Some(update(99)));
        assert_eq!(
            t.offer("u", update(100)),
            Offer::Held,
            "the next window is open"
        );
        assert_eq!(t.window_ended("u"), Some(update(100)));
        assert_eq!(t.window_ended("u"), None);
        assert_eq!(t.open_windows(), 1);
        assert_eq!(t.offer("u", update(101)), Offer::Now(update(101)));
    }

    #[test]
    fn a_zero_window_throttles_nothing() {
        let t = ActivityThrottle::new(Duration::ZERO);
        assert_eq!(t.offer("u", update(0)), Offer::Now(update(0)));
        assert_eq!(t.offer("u", update(1)), Offer::Now(update(1)));
        assert_eq!(t.open_windows(), 0);
    }
}
