//! Socket.IO handlers of the chat events (contract §3). Each parses its payload, calls the chat
//! service and emits through the shared emit table; every path answers the ack.

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, TryData};
use validator::Validate;

use super::ack::{Payload, parse};
use super::context::EventCtx;
use super::emit::Emitter;
use super::{membership, rooms};
use crate::domain::chat::{HistoryQuery, MessageType, RoomChange};
use crate::http::SendBody;
use crate::state::Core;

/// Most messages one `chat:sync` returns; the default when no limit is given.
const SYNC_MAX: u64 = 100;
const SYNC_DEFAULT: u64 = 50;

#[derive(Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
struct RoomRef {
    #[validate(length(min = 1, max = 64))]
    room_id: String,
}

/// `chat:message`: the REST body's fields plus `roomId`. Spelled out rather than flattened,
/// because serde's flatten loses the path of a failing field.
#[derive(Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
struct SendPayload {
    #[validate(length(min = 1, max = 64))]
    room_id: String,
    message: String,
    #[serde(rename = "type")]
    message_type: Option<MessageType>,
    #[validate(length(min = 1, max = 64))]
    reply_to_id: Option<String>,
    #[validate(length(min = 1, max = 128))]
    client_message_id: Option<String>,
}

impl SendPayload {
    fn split(self) -> (String, SendBody) {
        let body = SendBody {
            message: self.message,
            message_type: self.message_type,
            reply_to_id: self.reply_to_id,
            client_message_id: self.client_message_id,
        };
        (self.room_id, body)
    }
}

#[derive(Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
struct TypingPayload {
    #[validate(length(min = 1, max = 64))]
    room_id: String,
    is_typing: bool,
}

#[derive(Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
struct WatermarkPayload {
    #[validate(length(min = 1, max = 64))]
    room_id: String,
    #[validate(range(min = 0))]
    up_to_seq: i64,
}

#[derive(Deserialize, Validate)]
#[serde(rename_all = "camelCase")]
struct SyncPayload {
    #[validate(length(min = 1, max = 64))]
    room_id: String,
    #[validate(range(min = 0))]
    after_seq: i64,
    #[validate(range(min = 1, max = 100))]
    limit: Option<u64>,
}

pub(super) async fn on_join<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx {
        socket, core, user, ..
    } = &ctx;
    ctx.respond("chat:join", ack, async {
        let p: RoomRef = parse(data, Payload::Required)?;
        let newly_added = core.chat.join_public(&user.id, &p.room_id).await?;
        socket.join(rooms::chat(&p.room_id));
        let room = core.chat.load_room_for(&p.room_id, Some(&user.id)).await?;
        if newly_added {
            let emitter = ctx.emitter();
            let added = [user.id.clone()];
            membership::announce_added(
                &emitter,
                core,
                &room,
                &added,
                user,
                RoomChange::MemberAdded,
            )
            .await;
        }
        Ok(json!({ "room": room.for_viewer(&user.id) }))
    })
    .await;
}

pub(super) async fn on_leave<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx { socket, core, .. } = &ctx;
    ctx.respond("chat:leave", ack, async {
        let p: RoomRef = parse(data, Payload::Required)?;
        core.chat.access(&p.room_id).await?;
        socket.leave(rooms::chat(&p.room_id));
        Ok(json!({}))
    })
    .await;
}

pub(super) async fn on_message<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx { core, user, .. } = &ctx;
    let (queued, on_queued) = tokio::sync::oneshot::channel();
    ctx.respond_queued("chat:message", ack, on_queued, async {
        let (room_id, body) = parse::<SendPayload>(data, Payload::Required)?.split();
        let emitter = ctx.emitter();
        let sent = core
            .chat
            .send_in_line(
                user,
                body.into_message(room_id),
                Some(emitter.new_message()),
                Some(queued),
            )
            .await?;
        emitter.message_sent(sent.event).await;
        Ok(json!({ "message": sent.message }))
    })
    .await;
}

pub(super) async fn on_typing<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx { io, core, user, .. } = &ctx;
    ctx.respond("chat:typing", ack, async {
        let p: TypingPayload = parse(data, Payload::Required)?;
        let emitter = Emitter::server(io, core);
        super::actions::typing(&emitter, core, &user.id, &p.room_id, p.is_typing).await?;
        Ok(json!({}))
    })
    .await;
}

/// Clears the typing state of a user whose last socket on this node went away.
pub async fn clear_typing<A: Adapter>(io: &SocketIo<A>, core: &Core, user_id: &str) {
    let emitter = Emitter::server(io, core);
    for room_id in core.typing.stop_all(user_id) {
        emitter.typing(&room_id, user_id, false).await;
    }
}

pub(super) async fn on_read<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx { core, user, .. } = &ctx;
    ctx.respond("chat:read", ack, async {
        let p: WatermarkPayload = parse(data, Payload::Required)?;
        let unread_count =
            super::actions::read(&ctx.emitter(), core, &user.id, &p.room_id, p.up_to_seq).await?;
        Ok(json!({ "unreadCount": unread_count }))
    })
    .await;
}

pub(super) async fn on_delivered<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx { core, user, .. } = &ctx;
    ctx.respond("chat:delivered", ack, async {
        let p: WatermarkPayload = parse(data, Payload::Required)?;
        super::actions::delivered(&ctx.emitter(), core, &user.id, &p.room_id, p.up_to_seq).await?;
        Ok(json!({}))
    })
    .await;
}

pub(super) async fn on_sync<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx { core, user, .. } = &ctx;
    ctx.respond("chat:sync", ack, async {
        let p: SyncPayload = parse(data, Payload::Required)?;
        let limit = p.limit.unwrap_or(SYNC_DEFAULT).min(SYNC_MAX);
        let page = core
            .chat
            .history(
                &user.id,
                &p.room_id,
                HistoryQuery::AfterSeq(p.after_seq),
                limit,
            )
            .await?;
        Ok(json!({ "messages": page.messages, "hasMore": page.has_more }))
    })
    .await;
}
