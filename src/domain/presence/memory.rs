//! Single-node presence state, in process memory.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

use super::PresenceStore;

/// Socket ids per user. A plain mutex: every operation is a few hash lookups, never held
/// across an await.
#[derive(Default)]
pub struct MemoryPresence {
    sockets: Mutex<HashMap<String, HashSet<String>>>,
}

impl MemoryPresence {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, HashSet<String>>) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update of plain sets; the
        // data is still usable, so recover instead of taking the node down.
        let mut guard = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn reserve_connection(&self, user: &str, sid: &str, limit: u32) -> anyhow::Result<bool> {
        Ok(self.with(|map| {
            let set = map.entry(user.to_owned()).or_default();
            if set.len() >= limit as usize && !set.contains(sid) {
                return false;
            }
            set.insert(sid.to_owned());
            true
        }))
    }

    async fn release_connection(&self, user: &str, sid: &str) -> anyhow::Result<u32> {
        Ok(self.with(|map| {
            let Some(set) = map.get_mut(user) else {
                return 0;
            };
            set.remove(sid);
            let left = set.len() as u32;
            if left == 0 {
                map.remove(user);
            }
            left
        }))
    }

    async fn connection_count(&self, user: &str) -> anyhow::Result<u32> {
        Ok(self.with(|map| map.get(user).map_or(0, |s| s.len() as u32)))
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
        assert_eq!(store.release_connection("u", "a").await.unwrap(), 1);
        assert!(store.reserve_connection("u", "c", 2).await.unwrap());
        assert_eq!(store.connection_count("u").await.unwrap(), 2);
        assert_eq!(store.release_connection("nobody", "x").await.unwrap(), 0);
    }
}
