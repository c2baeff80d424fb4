//! Keeping per-node caches honest. Services cache what hot paths read (room membership) and
//! drop an entry when it changes; in a cluster the other nodes must drop theirs
//! too, so every change is also published on a [`CacheBus`], and entries expire after a TTL. Node-local typing state is ended
//! the same way when a user's last socket, on whichever node, goes away.

use std::sync::atomic::{AtomicU64, Ordering};

/// A cached entry that changed somewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// Membership of a room.
    Room(String),
    /// The user's last socket anywhere went away: typing state held for them ends.
    Typing(String),
    /// Some invalidations could not be published: every node drops every cached entry.
    All,
    /// Who hears about the user's presence (follows, `shareOnlineStatus`).
    Audience(String),
}

impl Invalidation {
    /// The wire form used between nodes: `room:<id>` / `typing:<user>` / `audience:<user>`.
    pub fn encode(&self) -> String {
        match self {
            Self::Room(id) => format!("room:{id}"),
            Self::Typing(user) => format!("typing:{user}"),
            Self::All => "all".to_owned(),
            Self::Audience(user) => format!("audience:{user}"),
        }
    }

    pub fn decode(s: &str) -> Option<Self> {
        if s == "all" {
            return Some(Self::All);
        }
        if let Some(id) = s.strip_prefix("room:") {
            return Some(Self::Room(id.to_owned()));
        }
        if let Some(user) = s.strip_prefix("audience:") {
            return Some(Self::Audience(user.to_owned()));
        }
        s.strip_prefix("typing:")
            .map(|user| Self::Typing(user.to_owned()))
    }
}

/// Tells the other nodes that a cached entry changed. Publishing does not wait; a message that
/// could not be published is made up for by an [`Invalidation::All`] once Redis answers again,
/// and cache entries expire after a TTL in any case.
pub trait CacheBus: Send + Sync + 'static {
    fn publish(&self, what: Invalidation);

    /// Whether invalidations from other nodes are reaching this one right now; while they are
    /// not, caches must not be trusted.
    fn connected(&self) -> bool {
        true
    }
}

/// One node: nothing to tell.
pub struct LocalOnly;

impl CacheBus for LocalOnly {
    fn publish(&self, _: Invalidation) {}
}

/// Guards a cache against filling in a value read before a concurrent invalidation: readers
/// note the generation before reading the database and store only if it did not move.
#[derive(Default)]
pub struct Generation(AtomicU64);

impl Generation {
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::Invalidation;

    #[test]
    fn round_trips() {
        for i in [
            Invalidation::Room("r:1".into()),
            Invalidation::Typing("u:2".into()),
            Invalidation::All,
            Invalidation::Audience("u:3".into()),
        ] {
            assert_eq!(Invalidation::decode(&i.encode()), Some(i));
        }
        assert_eq!(Invalidation::decode("nope"), None);
    }
}
