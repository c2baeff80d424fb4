//! Presence: who is connected, and how that is counted across nodes. The [`PresenceStore`]
//! is the single source of truth for per-user socket counts, so the per-user connection limit
//! and online/offline decisions hold whether the sockets are on one node or many.

mod memory;

pub use memory::MemoryPresence;

use async_trait::async_trait;

/// Where per-user connection state lives: process memory on a single node, Redis in a cluster.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Records socket `sid` for `user` unless the user already holds `limit` sockets.
    /// Returns whether the slot was granted.
    async fn reserve_connection(&self, user: &str, sid: &str, limit: u32) -> anyhow::Result<bool>;

    /// Forgets socket `sid`; returns how many sockets the user still holds (on any node).
    async fn release_connection(&self, user: &str, sid: &str) -> anyhow::Result<u32>;

    /// How many sockets the user holds (on any node).
    async fn connection_count(&self, user: &str) -> anyhow::Result<u32>;
}
