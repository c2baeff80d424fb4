//! This node's SSE streams and long-poll sessions, indexed like Socket.IO rooms so the
//! dispatcher delivers to them exactly what the same user's sockets get. (Filled in by the
//! SSE/long-poll work; the dispatcher already calls these.)

use super::model::Event;

/// The registry of non-Socket.IO sessions on this node.
#[derive(Default)]
pub struct Sessions {}

impl Sessions {
    /// Delivers `event` to every session in one of its targets and in none of its exceptions.
    pub fn deliver(&self, _event: &Event) {}

    /// Adds `room` to every session of `user_id` (membership followed live).
    pub fn join(&self, _user_id: &str, _room: &str) {}

    /// Removes `room` from every session of `user_id`.
    pub fn leave(&self, _user_id: &str, _room: &str) {}
}
