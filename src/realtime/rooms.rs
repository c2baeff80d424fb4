//! Names of the Socket.IO rooms the server uses (contract §1).

/// All sockets of one user.
pub fn user(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// The sockets of a chat room's members.
pub fn chat(room_id: &str) -> String {
    format!("chat:{room_id}")
}

/// Sockets of a user that subscribed to their feed.
pub fn feed(user_id: &str) -> String {
    format!("feed:{user_id}")
}

/// Sockets subscribed to public activities.
pub const FEED_PUBLIC: &str = "feed:public";

/// Prefix of the rooms of `presence:watch` subscribers.
pub const PRESENCE_WATCH_PREFIX: &str = "presence:room:";

/// Sockets that asked to hear about one chat room's member presence (`presence:watch`).
pub fn presence_watch(room_id: &str) -> String {
    format!("{PRESENCE_WATCH_PREFIX}{room_id}")
}
