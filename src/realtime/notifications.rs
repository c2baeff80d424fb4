//! Socket.IO handlers of the notification events (contract §5).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use validator::Validate;

use super::ack::{Payload, parse, respond_for};
use super::emit::Emitter;
use super::order::Turn;
use crate::auth::AuthUser;
use crate::http::MarkReadBody;
use crate::state::Core;

/// How many notifications `notifications:subscribe` returns.
const SUBSCRIBE_LATEST: u64 = 20;

pub fn register<A: Adapter>(socket: &SocketRef<A>) {
    socket.on("notifications:subscribe", on_subscribe::<A>);
    socket.on("notifications:mark_read", on_mark_read::<A>);
}

#[derive(Deserialize, Validate)]
struct Empty {}

async fn on_subscribe<A: Adapter>(
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    turn: Turn,
    Extension(user): Extension<AuthUser>,
    State(core): State<Arc<Core>>,
) {
    respond_for("notifications:subscribe", &core, &user, turn, ack, async {
        parse::<Empty>(data, Payload::Optional)?;
        let (items, _) = core
            .notifications
            .list(&user.id, SUBSCRIBE_LATEST, false, None)
            .await?;
        let unread = core.notifications.unread_count(&user.id).await?;
        Ok(json!({ "unreadCount": unread, "notifications": items }))
    })
    .await;
}

async fn on_mark_read<A: Adapter>(
    socket: SocketRef<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    turn: Turn,
    Extension(user): Extension<AuthUser>,
    State(core): State<Arc<Core>>,
    io: SocketIo<A>,
) {
    respond_for("notifications:mark_read", &core, &user, turn, ack, async {
        let body: MarkReadBody = parse(data, Payload::Required)?;
        let (updated, unread) = core
            .notifications
            .mark_read(&user.id, body.target()?)
            .await?;
        Emitter::from_socket(&io, &socket, &core)
            .unread_count(&user.id, Some(unread))
            .await;
        Ok(json!({ "updated": updated, "unreadCount": unread }))
    })
    .await;
}
