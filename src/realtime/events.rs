//! The client events the `/realtime` namespace answers, and the one handler that routes them.
//! The names are `'static`: metrics label events with them, and a refused event (answered
//! before any handler exists) only has the name the client sent, which must not become an
//! unbounded label.

use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event as EventName, SocketRef, TryData};

use super::context::EventCtx;
use super::{chat, feed, notifications, presence, room_presence};
use crate::error::AppError;

/// Declares the event table once: [`EVENTS`] and [`route`] come from the same list, so they
/// cannot drift apart.
macro_rules! events {
    ($($name:literal => $handler:path),* $(,)?) => {
        /// Every event with a handler.
        const EVENTS: &[&str] = &[$($name),*];

        /// Runs the handler of the event, or answers `NOT_FOUND` for one the server does not
        /// know (so a client awaiting an ack is not left hanging; it spends the socket's budget
        /// like any other event).
        async fn route<A: Adapter>(
            ctx: EventCtx<A>,
            EventName(event): EventName,
            data: TryData<Value>,
            ack: AckSender<A>,
        ) {
            match event.as_str() {
                $($name => $handler(ctx, data, ack).await,)*
                _ => {
                    ctx.respond("unknown", ack, async move {
                        Err::<Value, _>(AppError::NotFound(format!("unknown event `{event}`")))
                    })
                    .await
                }
            }
        }
    };
}

events! {
    "chat:join" => chat::on_join,
    "chat:leave" => chat::on_leave,
    "chat:message" => chat::on_message,
    "chat:typing" => chat::on_typing,
    "chat:read" => chat::on_read,
    "chat:delivered" => chat::on_delivered,
    "chat:sync" => chat::on_sync,
    "feed:subscribe" => feed::on_subscribe,
    "feed:unsubscribe" => feed::on_unsubscribe,
    "feed:watch" => feed::on_watch,
    "feed:unwatch" => feed::on_unwatch,
    "notifications:subscribe" => notifications::on_subscribe,
    "notifications:mark_read" => notifications::on_mark_read,
    "presence:activity" => presence::on_activity,
    "presence:status" => presence::on_status,
    "presence:watch" => room_presence::on_watch,
    "presence:unwatch" => room_presence::on_unwatch,
}

/// Registers the event handlers on a new socket: one fallback handler that routes by name.
/// socketioxide keeps a hash map of handlers per socket, and seventeen entries cost every
/// idle connection about 1.4 KiB; the fallback is one boxed zero-sized handler and leaves
/// that map empty.
pub fn register<A: Adapter>(socket: &SocketRef<A>) {
    socket.on_fallback(route::<A>);
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
