//! Live presence of a chat room's members: `presence:watch` / `presence:unwatch`, the
//! `presence:update`s watchers get, and the coalesced `presence:room_count`.
//!
//! A watching socket joins the Socket.IO room `presence:room:{roomId}`, so delivery is
//! cluster-wide through the adapter like every other emit: the node that announces a user's
//! change emits it once to the user's audience and to the watch rooms of all the user's chat
//! rooms, and each socket, wherever it is, gets it once. The watch set of a socket is its
//! Socket.IO rooms, bounded by `MAX_WATCHES_PER_SOCKET` and gone when the socket is.
//!
//! Counts are recomputed from the presence store by a periodic flush, once per marked room per
//! `PRESENCE_COUNT_INTERVAL_MS`, and sent only when they differ from the last one this node
//! sent for that room.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use validator::Validate;

use super::ack::{Payload, parse};
use super::context::EventCtx;
use super::emit::Emitter;
use super::rooms;
use crate::domain::presence::{RoomPresencePage, room_presence};
use crate::error::AppError;
use crate::state::Core;

/// Members listed in the `presence:watch` ack; larger rooms page on with `GET …/presence`.
const SNAPSHOT_SIZE: u64 = 100;

#[derive(Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
struct WatchPayload {
    #[validate(length(min = 1, max = 64))]
    room_id: String,
}

/// The wire shape of a room presence page, shared by the ack and `GET …/presence`.
pub fn page_json(room_id: &str, page: &RoomPresencePage) -> Value {
    json!({
        "roomId": room_id,
        "online": page.online,
        "items": page.items,
        "nextCursor": page.next_cursor,
    })
}

/// How many rooms this socket watches.
fn watched_by<A: Adapter>(socket: &SocketRef<A>) -> usize {
    socket
        .rooms()
        .iter()
        .filter(|r| r.starts_with(rooms::PRESENCE_WATCH_PREFIX))
        .count()
}

/// `presence:watch { roomId }`: members only (`NOT_FOUND` for no room, `FORBIDDEN`
/// otherwise). Joins first, then reads the snapshot, so no change falls between the two.
pub(super) async fn on_watch<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx {
        core, user, socket, ..
    } = &ctx;
    ctx.respond("presence:watch", ack, async {
        let p: WatchPayload = parse(data, Payload::Required)?;
        core.chat.require_member(&p.room_id, &user.id).await?;
        let room = rooms::presence_watch(&p.room_id);
        let already = socket.rooms().iter().any(|r| *r == room);
        let limit = core.config.max_watches_per_socket;
        if !already && watched_by(socket) >= limit {
            return Err(AppError::Conflict(format!(
                "a socket watches at most {limit} rooms; presence:unwatch one first"
            )));
        }
        socket.join(room.clone());
        let page = room_presence(
            &core.chat,
            &core.presence,
            &core.preferences,
            &user.id,
            &p.room_id,
            SNAPSHOT_SIZE,
            None,
        )
        .await;
        match page {
            Ok(page) => Ok(page_json(&p.room_id, &page)),
            Err(e) => {
                if !already {
                    socket.leave(room);
                }
                Err(e)
            }
        }
    })
    .await;
}

/// `presence:unwatch { roomId }`: this socket stops hearing about the room. Unwatching a
/// room not watched is fine.
pub(super) async fn on_unwatch<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx { socket, .. } = &ctx;
    ctx.respond("presence:unwatch", ack, async {
        let p: WatchPayload = parse(data, Payload::Required)?;
        socket.leave(rooms::presence_watch(&p.room_id));
        Ok(json!({}))
    })
    .await;
}

/// Sends `presence:room_count { roomId, online }` for the rooms marked since the last tick,
/// every `PRESENCE_COUNT_INTERVAL_MS`, until shutdown.
pub async fn count_flusher<A: Adapter>(io: SocketIo<A>, core: Arc<Core>) {
    let period = Duration::from_millis(core.config.presence_count_interval_ms);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(task = "presence_count_flusher", ?period, "started");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = core.shutdown.cancelled() => break,
        }
        for room_id in core.room_counts.take_dirty() {
            let members: Vec<String> = match core.chat.access(&room_id).await {
                Ok(access) => access.members.iter().cloned().collect(),
                Err(AppError::NotFound(_)) => continue,
                Err(e) => {
                    tracing::warn!(task = "presence_count_flusher", room = %room_id, error = %e, "loading members failed");
                    continue;
                }
            };
            let online = match crate::domain::presence::rooms::online_count(
                &core.presence,
                &core.preferences,
                &members,
            )
            .await
            {
                Ok(online) => online,
                Err(e) => {
                    tracing::warn!(task = "presence_count_flusher", room = %room_id, error = %e, "counting failed");
                    continue;
                }
            };
            if !core.room_counts.changed(&room_id, online) {
                continue;
            }
            Emitter::server(&io, &core)
                .room_count(&room_id, online)
                .await;
        }
    }
    tracing::info!(task = "presence_count_flusher", "stopped");
}
