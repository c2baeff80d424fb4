//! Single-node presence state, in process memory.

use std::collections::{HashMap, HashSet};
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
/// lookups and is never held across an await.
#[derive(Default)]
pub struct MemoryPresence {
    users: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Users whose last socket went away, and when their grace period ends.
    pending_offline: HashMap<String, DateTime<Utc>>,
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
                    state.entries.remove(user);
                }
            }
            left
        }))
    }

    async fn connection_count(&self, user: &str) -> anyhow::Result<u32> {
        Ok(self.with(|map| map.get(user).map_or(0, |e| e.sockets.len() as u32)))
    }

    async fn came_online(&self, user: &str, now: DateTime<Utc>) -> anyhow::Result<Option<Status>> {
        Ok(self.with(|map| {
            let entry = map.get_mut(user)?;
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
                if gone && state.entries.remove(&user).is_some_and(|e| e.announced) {
                    offline.push(user);
                }
            }
            offline
        }))
    }

    async fn touch(&self, user: &str, now: DateTime<Utc>) -> anyhow::Result<Option<Status>> {
        Ok(self.with(|map| {
            let entry = map.get_mut(user)?;
            entry.last_active = now;
            if entry.idle && entry.announced {
                entry.idle = false;
                return entry.manual.is_none().then_some(Status::Online);
            }
            None
        }))
    }

    async fn sweep_idle(&self, cutoff: DateTime<Utc>) -> anyhow::Result<Vec<String>> {
        Ok(self.with(|map| {
            let mut turned = Vec::new();
            for (user, entry) in map.iter_mut() {
                if entry.announced
                    && !entry.idle
                    && !entry.sockets.is_empty()
                    && entry.last_active < cutoff
                {
                    entry.idle = true;
                    if entry.manual.is_none() {
                        turned.push(user.clone());
                    }
                }
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
        Ok(self.with(|map| {
            let entry = map.get_mut(user)?;
            let before = entry.status();
            entry.manual = match status {
                Status::Online | Status::Offline => None,
                chosen => Some(chosen),
            };
            entry.idle = false;
            entry.last_active = now;
            let after = entry.status();
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
}
