//! The audience cache. Every presence announcement needs to know who hears it (followers,
//! direct-room partners, the watchers of the user's rooms, nobody when the user hides their
//! status), which costs several queries; in a reconnect storm that is the pipeline's bottleneck.
//! So each user's audience is cached, for at most `PRESENCE_AUDIENCE_TTL_MS` and for at most
//! `PRESENCE_AUDIENCE_CACHE_MAX` users, and dropped when it changes:
//!
//! - a follow or unfollow, or a change of the user's `shareOnlineStatus`, drops that user's entry
//!   here and, through an [`Invalidation::Audience`] on the [`CacheBus`], on every node;
//! - any room membership change (which every node already hears about, as an
//!   [`Invalidation::Room`]) moves the chat service's membership generation, and entries read
//!   under an older generation are not used again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::PresenceService;
use crate::domain::cache::{CacheBus, Generation, Invalidation};
use crate::domain::preferences::PreferenceService;
use crate::error::AppResult;

/// Who hears about one user's presence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audience {
    /// Followers and direct-room partners (their `user:{id}` rooms get every change).
    pub users: Vec<String>,
    /// The user's chat rooms, whose `presence:watch` watchers get status changes.
    pub rooms: Vec<String>,
}

struct Entry {
    audience: Arc<Audience>,
    loaded: Instant,
    /// The chat membership generation the entry was read under.
    membership: u64,
}

/// Per-user audiences, bounded in age and number.
pub struct AudienceCache {
    entries: Mutex<HashMap<String, Entry>>,
    ttl: Duration,
    max_entries: usize,
    generation: Generation,
}

impl AudienceCache {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            entries: Mutex::default(),
            ttl,
            max_entries,
            generation: Generation::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The audience of `user_id`, cached unless older than the TTL or than the membership
    /// generation `membership` (the chat service's current one).
    pub async fn get(
        &self,
        presence: &PresenceService,
        prefs: &PreferenceService,
        membership: u64,
        user_id: &str,
    ) -> AppResult<Arc<Audience>> {
        if let Some(entry) = self.lock().get(user_id)
            && entry.membership == membership
            && entry.loaded.elapsed() < self.ttl
        {
            return Ok(entry.audience.clone());
        }
        let generation = self.generation.current();
        let audience = Arc::new(presence.load_audience(prefs, user_id).await?);
        if self.max_entries == 0 || self.ttl.is_zero() {
            return Ok(audience);
        }
        let mut entries = self.lock();
        // A follow, unfollow or privacy change that raced this read must win.
        if self.generation.current() == generation {
            if entries.len() >= self.max_entries && !entries.contains_key(user_id) {
                let ttl = self.ttl;
                entries.retain(|_, e| e.membership == membership && e.loaded.elapsed() < ttl);
                if entries.len() >= self.max_entries {
                    // Still full of live entries: make room for the newest at random.
                    let victim = entries.keys().next().cloned();
                    if let Some(victim) = victim {
                        entries.remove(&victim);
                    }
                }
            }
            entries.insert(
                user_id.to_owned(),
                Entry {
                    audience: audience.clone(),
                    loaded: Instant::now(),
                    membership,
                },
            );
        }
        Ok(audience)
    }

    /// Users whose audience is cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `user_id`'s audience is cached (for tests of invalidation).
    pub fn contains(&self, user_id: &str) -> bool {
        self.lock().contains_key(user_id)
    }

    /// `user_id`'s audience changed here: drop it on this node and on every other.
    pub fn changed(&self, bus: &dyn CacheBus, user_id: &str) {
        self.forget_local(user_id);
        bus.publish(Invalidation::Audience(user_id.to_owned()));
    }

    /// Drops `user_id`'s entry on this node (another node changed it).
    pub fn forget_local(&self, user_id: &str) {
        self.generation.bump();
        self.lock().remove(user_id);
    }

    /// Drops every entry on this node (invalidations were missed).
    pub fn forget_all_local(&self) {
        self.generation.bump();
        self.lock().clear();
    }
}
