//! Socket.IO handlers of the notification events (contract §5).

use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, TryData};
use validator::Validate;

use super::ack::{Payload, parse};
use super::context::EventCtx;
use crate::http::MarkReadBody;

/// How many notifications `notifications:subscribe` returns.
const SUBSCRIBE_LATEST: u64 = 20;

#[derive(Deserialize, Validate)]
struct Empty {}

pub(super) async fn on_subscribe<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx { core, user, .. } = &ctx;
    ctx.respond("notifications:subscribe", ack, async {
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

pub(super) async fn on_mark_read<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx { core, user, .. } = &ctx;
    ctx.respond("notifications:mark_read", ack, async {
        let body: MarkReadBody = parse(data, Payload::Required)?;
        let target = body.target()?;
        let (updated, unread) = core.notifications.mark_read(&user.id, target).await?;
        let emitter = ctx.emitter();
        emitter.notifications_read(&user.id, target, unread).await;
        emitter.unread_count(&user.id, Some(unread)).await;
        Ok(json!({ "updated": updated, "unreadCount": unread }))
    })
    .await;
}
