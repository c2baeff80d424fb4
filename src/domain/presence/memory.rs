//! Single-node presence state, in process memory.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Live, PresenceStore, Status};

#[derive(Debug)]
struct Entry {
    sockets: HashSet<String>,
    /// A status the user chose (`away`/`busy`); wins over the automatic one.
    manual: Option<Status>,
    /// Turned away by the idle sweeper; any event undoes it.
    idle: bool,
    /// Whether `came_online` ran: a reserved slot alone is not yet "online".
    announced: bool,
    activity: Option<String>,
    metadata: Value,
    last_active: DateTime<Utc>,
    /// The time this user is filed under in `State::idle_queue`, if filed. Every announced,
    /// non-idle user is filed at or before their `last_active`.
    queued: Option<DateTime<Utc>>,
}

impl Entry {
    fn status(&self) -> Status {
        self.manual.unwrap_or(if self.idle {
            Status::Away
        } else {
            Status::Online
        })
    }
}

/// Presence of the users connected to this node. A plain mutex: every operation is a few hash
/// lookups (or one ordered-set step) and is never held across an await.
#[derive(Default)]
pub struct MemoryPresence {
    users: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Users whose last socket went away, and when their grace period ends.
    pending_offline: HashMap<String, DateTime<Utc>>,
    /// Idle candidates, oldest activity first: the sweeper looks only at the front (users that
    /// may be due), never at everyone. A user is filed once and re-filed at their latest
    /// activity when looked at too early, so client events cost no ordered-set update.
    idle_queue: BTreeSet<(DateTime<Utc>, String)>,
}

impl State {
    /// Files `user` as an idle candidate unless already filed.
    fn file(&mut self, user: &str) {
        if let Some(entry) = self.entries.get_mut(user)
            && entry.queued.is_none()
        {
            entry.queued = Some(entry.last_active);
            self.idle_queue.insert((entry.last_active, user.to_owned()));
        }
    }

    /// Forgets `user` entirely.
    fn forget(&mut self, user: &str) -> Option<Entry> {
        let entry = self.entries.remove(user)?;
        if let Some(at) = entry.queued {
            self.idle_queue.remove(&(at, user.to_owned()));
        }
        Some(entry)
    }
}

impl MemoryPresence {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> R) -> R {
        self.with_state(|state| f(&mut state.entries))
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update of plain data; it is
        // still usable, so recover rather than take the node down.
        let mut guard = self.users.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn reserve_connection(&self, user: &str, sid: &str, limit: u32) -> anyhow::Result<bool> {
        Ok(self.with(|map| {
            let entry = map.entry(user.to_owned()).or_insert_with(|| Entry {
                sockets: HashSet::new(),
                manual: None,
                idle: false,
                announced: false,
                activity: None,
                metadata: Value::Null,
                last_active: Utc::now(),
                queued: None,
            });
            if entry.sockets.len() >= limit as usize && !entry.sockets.contains(sid) {
                return false;
            }
            entry.sockets.insert(sid.to_owned());
            true
        }))
    }

    async fn release_connection(
        &self,
        user: &str,
        sid: &str,
        offline_at: DateTime<Utc>,
    ) -> anyhow::Result<u32> {
        Ok(self.with_state(|state| {
            let Some(entry) = state.entries.get_mut(user) else {
                return 0;
            };
            entry.sockets.remove(sid);
            let left = entry.sockets.len() as u32;
            if left == 0 {
                if entry.announced {
                    state.pending_offline.insert(user.to_owned(), offline_at);
                } else {
                    // Never came online (refused or failed setup): nothing to announce later.
                    state.forget(user);
                }
            }
            left
        }))
    }

    async fn connection_count(&self, user: &str) -> anyhow::Result<u32> {
        Ok(self.with(|map| map.get(user).map_or(0, |e| e.sockets.len() as u32)))
    }

    async fn came_online(&self, user: &str, now: DateTime<Utc>) -> anyhow::Result<Option<Status>> {
        Ok(self.with_state(|state| {
            let changed = came_online(state.entries.get_mut(user)?, now);
            state.file(user);
            changed
        }))
    }

    async fn take_due_offline(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<String>> {
        Ok(self.with_state(|state| {
            let due: Vec<String> = state
                .pending_offline
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(u, _)| u.clone())
                .collect();
            let mut offline = Vec::new();
            for user in due {
                state.pending_offline.remove(&user);
                let gone = state
                    .entries
                    .get(&user)
                    .is_some_and(|e| e.sockets.is_empty());
                if gone && state.forget(&user).is_some_and(|e| e.announced) {
                    offline.push(user);
                }
            }
            offline
        }))
    }

    async fn touch(&self, user: &str, now: DateTime<Utc>) -> anyhow::Result<Option<Status>> {
        Ok(self.with_state(|state| {
            let entry = state.entries.get_mut(user)?;
            entry.last_active = now;
            if !(entry.idle && entry.announced) {
                return None;
            }
            entry.idle = false;
            let online = entry.manual.is_none();
            state.file(user);
            online.then_some(Status::Online)
        }))
    }

    async fn sweep_idle(&self, cutoff: DateTime<Utc>) -> anyhow::Result<Vec<String>> {
        Ok(self.with_state(|state| {
            let mut turned = Vec::new();
            // Only users filed before the cutoff can be idle; the rest of the queue is newer.
            while let Some(first) = state.idle_queue.first() {
                if first.0 >= cutoff {
                    break;
                }
                let Some((at, user)) = state.idle_queue.pop_first() else {
                    break;
                };
                let Some(entry) = state.entries.get_mut(&user) else {
                    continue;
                };
                if entry.queued != Some(at) {
                    continue;
                }
                entry.queued = None;
                if entry.last_active >= cutoff {
                    // Active since it was filed: file it again at its latest activity.
                    state.file(&user);
                    continue;
                }
                if entry.announced && !entry.idle && !entry.sockets.is_empty() {
                    entry.idle = true;
                    if entry.manual.is_none() {
                        turned.push(user);
                    }
                }
                // Not filed again until an event (or a new socket) makes it a candidate.
            }
            turned
        }))
    }

    async fn set_status(
        &self,
        user: &str,
        status: Status,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Status>> {
        Ok(self.with_state(|state| {
            let entry = state.entries.get_mut(user)?;
            let before = entry.status();
            entry.manual = match status {
                Status::Online | Status::Offline => None,
                chosen => Some(chosen),
            };
            entry.idle = false;
            entry.last_active = now;
            let after = entry.status();
            state.file(user);
            (before != after).then_some(after)
        }))
    }

    async fn set_activity(
        &self,
        user: &str,
        activity: &str,
        metadata: Value,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.with(|map| {
            if let Some(entry) = map.get_mut(user) {
                entry.activity = Some(activity.to_owned());
                entry.metadata = metadata;
                entry.last_active = now;
            }
        });
        Ok(())
    }

    async fn get_many(&self, users: &[String]) -> anyhow::Result<Vec<(String, Live)>> {
        Ok(self.with(|map| {
            users
                .iter()
                .filter_map(|u| {
                    let e = map.get(u).filter(|e| e.announced)?;
                    Some((
                        u.clone(),
                        Live {
                            status: e.status(),
                            activity: e.activity.clone(),
                            metadata: e.metadata.clone(),
                            last_active: e.last_active,
                        },
                    ))
                })
                .collect()
        }))
    }

    async fn maintain(
        &self,
        _now: DateTime<Utc>,
        _offline_at: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        // One node: no heartbeats, no other nodes to clean up after.
        Ok(false)
    }

    async fn leave(&self, _offline_at: DateTime<Utc>) -> anyhow::Result<()> {
        // The state dies with the process.
        Ok(())
    }
}

/// A socket finished connecting (see [`PresenceStore::came_online`]).
fn came_online(entry: &mut Entry, now: DateTime<Utc>) -> Option<Status> {
    entry.last_active = now;
    if entry.announced {
        // Reconnected within the grace period, or another tab: no visible change
        // unless the user had gone idle.
        if entry.idle {
            entry.idle = false;
            return (entry.manual.is_none()).then_some(Status::Online);
        }
        return None;
    }
    entry.announced = true;
    entry.idle = false;
    Some(entry.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limit_is_enforced_and_released() {
        let store = MemoryPresence::default();
        assert!(store.reserve_connection("u", "a", 2).await.unwrap());
        assert!(store.reserve_connection("u", "b", 2).await.unwrap());
        assert!(!store.reserve_connection("u", "c", 2).await.unwrap());
        assert_eq!(
            store
                .release_connection("u", "a", Utc::now())
                .await
                .unwrap(),
            1
        );
        assert!(store.reserve_connection("u", "c", 2).await.unwrap());
        assert_eq!(store.connection_count("u").await.unwrap(), 2);
        assert_eq!(
            store
                .release_connection("nobody", "x", Utc::now())
                .await
                .unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn online_once_then_offline_only_without_sockets() {
        let s = MemoryPresence::default();
        let now = Utc::now();
        s.reserve_connection("u", "a", 5).await.unwrap();
        assert_eq!(s.came_online("u", now).await.unwrap(), Some(Status::Online));
        s.reserve_connection("u", "b", 5).await.unwrap();
        assert_eq!(
            s.came_online("u", now).await.unwrap(),
            None,
            "second tab changes nothing"
        );
        let grace_end = now + chrono::Duration::seconds(5);
        s.release_connection("u", "a", grace_end).await.unwrap();
        assert!(
            s.take_due_offline(grace_end).await.unwrap().is_empty(),
            "one socket left"
        );
        s.release_connection("u", "b", grace_end).await.unwrap();
        assert!(
            s.take_due_offline(now).await.unwrap().is_empty(),
            "still in the grace period"
        );
        assert_eq!(
            s.take_due_offline(grace_end).await.unwrap(),
            vec!["u".to_owned()]
        );
        assert!(
            s.take_due_offline(grace_end).await.unwrap().is_empty(),
            "reported once"
        );
    }

    #[tokio::test]
    async fn reconnect_within_grace_cancels_offline() {
        let s = MemoryPresence::default();
        let now = Utc::now();
        let grace_end = now + chrono::Duration::seconds(5);
        s.reserve_connection("u", "a", 5).await.unwrap();
        s.came_online("u", now).await.unwrap();
        s.release_connection("u", "a", grace_end).await.unwrap();
        s.reserve_connection("u", "b", 5).await.unwrap();
        assert_eq!(
            s.came_online("u", now).await.unwrap(),
            None,
            "a reload is no change"
        );
        assert!(s.take_due_offline(grace_end).await.unwrap().is_empty());
        assert_eq!(s.connection_count("u").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn idle_then_back_unless_chosen() {
        let s = MemoryPresence::default();
        let t0 = Utc::now();
        s.reserve_connection("u", "a", 5).await.unwrap();
        s.came_online("u", t0).await.unwrap();
        let later = t0 + chrono::Duration::seconds(10);
        assert_eq!(s.sweep_idle(later).await.unwrap(), vec!["u".to_owned()]);
        assert!(
            s.sweep_idle(later).await.unwrap().is_empty(),
            "reported once"
        );
        assert_eq!(s.touch("u", later).await.unwrap(), Some(Status::Online));
        assert_eq!(
            s.set_status("u", Status::Busy, later).await.unwrap(),
            Some(Status::Busy)
        );
        assert!(
            s.sweep_idle(later + chrono::Duration::seconds(10))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(s.touch("u", later).await.unwrap(), None, "busy stays busy");
    }

    #[tokio::test]
    async fn a_sweep_looks_only_at_users_that_may_be_due() {
        let s = MemoryPresence::default();
        let t0 = Utc::now();
        for i in 0..1000 {
            let user = format!("u{i}");
            s.reserve_connection(&user, "sid", 5).await.unwrap();
            s.came_online(&user, t0 + chrono::Duration::milliseconds(i))
                .await
                .unwrap();
        }
        // Half of them keep sending events.
        for i in (0..1000).step_by(2) {
            s.touch(&format!("u{i}"), t0 + chrono::Duration::seconds(10))
                .await
                .unwrap();
        }
        let queued = || s.with_state(|state| state.idle_queue.len());
        assert_eq!(
            queued(),
            1000,
            "one candidate entry per user, however many events"
        );
        let mut turned = s
            .sweep_idle(t0 + chrono::Duration::seconds(5))
            .await
            .unwrap();
        turned.sort();
        let mut expected: Vec<String> = (1..1000).step_by(2).map(|i| format!("u{i}")).collect();
        expected.sort();
        assert_eq!(turned, expected, "only the silent half turns away");
        assert_eq!(
            queued(),
            500,
            "the active half is filed again, the idle half is not"
        );
        assert!(s.sweep_idle(t0).await.unwrap().is_empty());
        // An idle user's next event files them again.
        assert_eq!(
            s.touch("u1", t0 + chrono::Duration::seconds(11))
                .await
                .unwrap(),
            Some(Status::Online)
        );
        assert_eq!(queued(), 501);
        let later = t0 + chrono::Duration::seconds(20);
        assert_eq!(s.sweep_idle(later).await.unwrap().len(), 501);
        // Users who go offline leave no candidate behind.
        for i in 0..1000 {
            s.release_connection(&format!("u{i}"), "sid", later)
                .await
                .unwrap();
        }
        s.take_due_offline(later).await.unwrap();
        assert_eq!(queued(), 0);
    }
}
