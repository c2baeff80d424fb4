//! The client events the `/realtime` namespace answers, as `'static` names: metrics label
//! events with them, and a refused event (answered before any handler exists) only has the
//! name the client sent, which must not become an unbounded label.

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::MessageHandler;

/// Every event with a handler (see each module's `register`).
const EVENTS: &[&str] = &[
    "chat:join",
    "chat:leave",
    "chat:message",
    "chat:typing",
    "chat:read",
    "chat:delivered",
    "chat:sync",
    "feed:subscribe",
    "feed:unsubscribe",
    "feed:watch",
    "feed:unwatch",
    "notifications:subscribe",
    "notifications:mark_read",
    "presence:activity",
    "presence:status",
    "presence:watch",
    "presence:unwatch",
];

/// Registers a handler for one of [`EVENTS`]: the list and the handlers cannot drift apart
/// unnoticed (every test connect registers them all).
pub fn on<A, H, T>(socket: &SocketRef<A>, event: &'static str, handler: H)
where
    A: Adapter,
    H: MessageHandler<A, T>,
    T: Send + Sync + 'static,
{
    debug_assert!(EVENTS.contains(&event), "{event} is missing from EVENTS");
    socket.on(event, handler);
}

/// The metric label of an event name: itself when known, `unknown` otherwise (like the
/// fallback handler's).
pub fn label(name: &str) -> &'static str {
    EVENTS
        .iter()
        .find(|known| **known == name)
        .copied()
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_events_keep_their_name_and_others_share_one_label() {
        assert_eq!(label("chat:typing"), "chat:typing");
        assert_eq!(label("presence:unwatch"), "presence:unwatch");
        assert_eq!(label("chat:typing\u{0}"), "unknown");
        assert_eq!(label(&"x".repeat(10_000)), "unknown");
    }
}
