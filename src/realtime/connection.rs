//! The `/realtime` namespace: what happens when a socket connects and disconnects.

use std::sync::Arc;

use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event, Extension, SocketRef, State};
use socketioxide::socket::DisconnectReason;

use super::context::EventCtx;
use super::rooms;
use super::slots::SlotGuard;
use crate::auth::AuthUser;
use crate::domain::{chat, notifications, users};
use crate::error::{AppError, AppResult};
use crate::state::Core;

/// The namespace every client connects to.
pub const NAMESPACE: &str = "/realtime";

/// Connect handler: the socket passed [`crate::auth::authenticate_socket`], so it has a user.
pub async fn on_connect<A: Adapter>(
    socket: SocketRef<A>,
    Extension(user): Extension<AuthUser>,
    State(core): State<Arc<Core>>,
) {
    core.metrics.socket_connected();
    socket
        .extensions
        .insert(Arc::new(super::order::Sequencer::new(line_limits(&core))));
    socket
        .extensions
        .insert(super::membership::ConnectedAt(chrono::Utc::now()));
    socket.on_disconnect(on_disconnect::<A>);
    register_handlers(&socket);

    match session_ready(&socket, &user, &core).await {
        Ok(ready) => {
            super::presence::socket_ready(&core, &user.id).await;
            core.metrics.event_out("session:ready");
            if let Err(e) = socket.emit("session:ready", &ready) {
                tracing::debug!(sid = %socket.id, error = %e, "session:ready not sent");
            }
        }
        Err(e) => {
            // Without its rooms the socket would silently miss messages: better to make the
            // client reconnect than to leave it half set up.
            tracing::error!(sid = %socket.id, user = %user.id, error = %e, "socket setup failed");
            let _ = socket.disconnect();
        }
    }
}

/// Joins the socket to its rooms and builds the `session:ready` payload.
async fn session_ready<A: Adapter>(
    socket: &SocketRef<A>,
    user: &AuthUser,
    core: &Core,
) -> AppResult<Value> {
    core.db_status.check()?;
    let claim = user.name_from_token.then_some(user.name.as_str());
    let name = users::sign_in(&core.writes, &core.db, &user.id, claim).await?;
    if name != user.name {
        // Later events of this socket show the profile's name, not the bare id.
        socket.extensions.insert(AuthUser {
            name,
            ..user.clone()
        });
    }
    let room_ids = chat::room_ids_of(&core.db, &user.id).await?;
    let mut join: Vec<String> = room_ids.iter().map(|id| rooms::chat(id)).collect();
    join.push(rooms::user(&user.id));
    socket.join(join);
    let unread = notifications::unread_count(&core.db, &user.id).await?;
    Ok(json!({
        "userId": user.id,
        "rooms": room_ids,
        "unreadNotifications": unread,
        "serverTime": crate::time::now_rfc3339(),
    }))
}

fn register_handlers<A: Adapter>(socket: &SocketRef<A>) {
    super::chat::register(socket);
    super::feed::register(socket);
    super::notifications::register(socket);
    super::presence::register(socket);
    super::room_presence::register(socket);
    socket.on_fallback(on_unknown_event::<A>);
}

/// The socket's event budget and line depth, from the settings.
/// The per-socket budget is never stricter than the message rate limit the operator set: a
/// deployment that allows 1,000 messages a minute lets one socket send them in one burst, and
/// keeps that many waiting (up to [`MAX_QUEUE_DEPTH`]).
fn line_limits(core: &Core) -> super::order::LineLimits {
    let config = &core.config;
    let messages = config.rate_limit_per_minute;
    let burst = config.socket_event_burst.max(messages);
    super::order::LineLimits {
        budget: super::budget::BudgetLimits {
            per_second: config.socket_events_per_second.max(messages.div_ceil(60)),
            burst,
            flood_rejections: config.socket_flood_rejections,
        },
        depth: config
            .socket_queue_depth
            .max((burst as usize).min(MAX_QUEUE_DEPTH)),
    }
}

/// The deepest per-socket queue a raised message rate limit can ask for.
const MAX_QUEUE_DEPTH: usize = 10_000;

/// Answers events the server does not know, so a client awaiting an ack is not left hanging.
/// They spend the socket's budget like any other event.
async fn on_unknown_event<A: Adapter>(ctx: EventCtx<A>, Event(event): Event, ack: AckSender<A>) {
    ctx.respond("unknown", ack, async move {
        Err::<Value, _>(AppError::NotFound(format!("unknown event `{event}`")))
    })
    .await;
}

async fn on_disconnect<A: Adapter>(
    socket: SocketRef<A>,
    reason: DisconnectReason,
    State(core): State<Arc<Core>>,
    io: SocketIo<A>,
) {
    core.metrics.socket_disconnected();
    let Some(user) = socket.extensions.get::<AuthUser>() else {
        return;
    };
    tracing::debug!(sid = %socket.id, user = %user.id, %reason, "socket disconnected");
    super::feed_counts::socket_gone(&socket);
    let offline_at = chrono::Utc::now() + grace(&core);
    let left = match socket.extensions.remove::<Arc<SlotGuard>>() {
        Some(slot) => slot.release(offline_at).await,
        None => {
            core.presence
                .store
                .release_connection(&user.id, &socket.id.to_string(), offline_at)
                .await
        }
    };
    let left = left.unwrap_or_else(|e| {
        // The socket is no longer listed as live: the slot reconciliation frees it.
        tracing::warn!(user = %user.id, error = ?e, "releasing connection slot failed; left to reconciliation");
        0
    });
    if left == 0 {
        // The user's last socket, on any node: whatever they were typing is over, here and on
        // the node their typing socket was on.
        super::chat::clear_typing(&io, &core, &user.id).await;
        core.bus
            .publish(crate::domain::cache::Invalidation::Typing(user.id.clone()));
    }
}

/// The presence grace period as a chrono duration.
pub fn grace(core: &Core) -> chrono::Duration {
    chrono::Duration::from_std(core.config.presence_grace()).unwrap_or(chrono::Duration::seconds(5))
}
