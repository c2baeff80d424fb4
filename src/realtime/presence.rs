//! Presence over Socket.IO: the `presence:*` events, the lifecycle hooks the connection
//! handlers call, and the task that announces queued presence changes.

use std::sync::Arc;

use chrono::Utc;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use tokio::sync::mpsc::UnboundedReceiver;
use validator::Validate;

use super::ack::{Payload, parse};
use super::context::EventCtx;
use super::emit::Emitter;
use super::rooms;
use crate::auth::AuthUser;
use crate::domain::presence::{PresenceEvent, Status, StatusChange};
use crate::error::{AppError, AppResult};
use crate::state::Core;

/// Largest accepted `metadata`, serialized.
const MAX_METADATA_BYTES: usize = 1024;

pub fn register<A: Adapter>(socket: &SocketRef<A>) {
    socket.on("presence:activity", on_activity::<A>);
    socket.on("presence:status", on_status::<A>);
}

/// `presence:activity` / `PUT /presence/activity`.
#[derive(Deserialize, Validate)]
pub struct ActivityPayload {
    #[validate(length(min = 1, max = 64))]
    pub activity: String,
    pub metadata: Option<Map<String, Value>>,
}

/// Stores the activity and queues its announcement; shared by both transports.
pub async fn set_activity(core: &Core, user_id: &str, payload: ActivityPayload) -> AppResult<()> {
    let metadata = payload.metadata.map(Value::Object).unwrap_or(Value::Null);
    if metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(AppError::field(
            "metadata",
            format!("must be at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    core.presence
        .store
        .set_activity(user_id, &payload.activity, metadata.clone(), Utc::now())
        .await?;
    queue(
        core,
        PresenceEvent::Activity {
            user_id: user_id.to_owned(),
            activity: payload.activity,
            metadata,
        },
    );
    Ok(())
}

async fn on_activity<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx { core, user, .. } = &ctx;
    ctx.respond("presence:activity", ack, async {
        let payload: ActivityPayload = parse(data, Payload::Required)?;
        set_activity(core, &user.id, payload).await?;
        Ok(json!({}))
    })
    .await;
}

#[derive(Deserialize, Validate)]
struct StatusPayload {
    status: ChosenStatus,
}

/// The statuses a user may choose (`offline` is not a choice: it follows from disconnecting).
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ChosenStatus {
    Online,
    Away,
    Busy,
}

async fn on_status<A: Adapter>(ctx: EventCtx<A>, TryData(data): TryData<Value>, ack: AckSender<A>) {
    let EventCtx { core, user, .. } = &ctx;
    ctx.respond("presence:status", ack, async {
        let payload: StatusPayload = parse(data, Payload::Required)?;
        let status = match payload.status {
            ChosenStatus::Online => Status::Online,
            ChosenStatus::Away => Status::Away,
            ChosenStatus::Busy => Status::Busy,
        };
        let now = Utc::now();
        if let Some(status) = core
            .presence
            .store
            .set_status(&user.id, status, now)
            .await?
        {
            queue_status(core, &user.id, status);
        }
        Ok(json!({}))
    })
    .await;
}

fn queue(core: &Core, event: PresenceEvent) {
    // Only fails when the announcer has stopped, i.e. during shutdown.
    let _ = core.presence_events.send(event);
}

/// Queues a status change of `user_id` for announcement.
pub fn queue_status(core: &Core, user_id: &str, status: Status) {
    queue(
        core,
        PresenceEvent::Status(StatusChange {
            user_id: user_id.to_owned(),
            status,
            last_seen: Utc::now(),
        }),
    );
}

/// A socket of `user_id` finished connecting.
pub async fn socket_ready(core: &Core, user_id: &str) {
    match core.presence.store.came_online(user_id, Utc::now()).await {
        Ok(Some(status)) => queue_status(core, user_id, status),
        Ok(None) => {}
        Err(e) => tracing::warn!(user = user_id, error = ?e, "presence update failed"),
    }
}

/// Users whose grace period ended: store their `lastSeen` and announce them offline.
pub async fn went_offline(core: &Core, users: Vec<String>) {
    let now = Utc::now();
    for user_id in users {
        if core.db_status.is_down() {
            tracing::warn!(user = %user_id, "database down: lastSeen not stored");
        } else if let Err(e) = core.presence.record_last_seen(&user_id, now).await {
            tracing::warn!(user = %user_id, error = %e, "storing lastSeen failed");
        }
        queue(
            core,
            PresenceEvent::Status(StatusChange {
                user_id,
                status: Status::Offline,
                last_seen: now,
            }),
        );
    }
}

/// This node had been given up for dead (e.g. Redis was unreachable for longer than the node
/// TTL) while its sockets stayed connected: register them again, without announcing anything
/// twice.
pub async fn reregister_local<A: Adapter>(io: &SocketIo<A>, core: &Core) {
    let Some(ns) = io.of(super::NAMESPACE) else {
        return;
    };
    let sockets = ns.local().sockets();
    tracing::warn!(
        sockets = sockets.len(),
        "this node was presumed dead; re-registering its sockets"
    );
    let limit = u32::MAX;
    for socket in sockets {
        let Some(user) = socket.extensions.get::<AuthUser>() else {
            continue;
        };
        if let Err(e) = core
            .presence
            .store
            .reserve_connection(&user.id, &socket.id.to_string(), limit)
            .await
        {
            tracing::warn!(user = %user.id, error = ?e, "re-registering a socket failed");
            continue;
        }
        socket_ready(core, &user.id).await;
    }
}

/// Announces queued presence changes to each user's audience, in order, until shutdown. An
/// audience is named in chunks of at most `FAN_OUT_CHUNK` rooms per emit, like the feed.
pub async fn announce<A: Adapter>(
    io: SocketIo<A>,
    core: Arc<Core>,
    mut events: UnboundedReceiver<PresenceEvent>,
) {
    tracing::debug!("presence announcer started");
    loop {
        let event = tokio::select! {
            event = events.recv() => match event { Some(e) => e, None => break },
            () = core.shutdown.cancelled() => break,
        };
        let user_id = match &event {
            PresenceEvent::Status(change) => change.user_id.clone(),
            PresenceEvent::Activity { user_id, .. } => user_id.clone(),
            PresenceEvent::TypingEnded { user_id } => {
                super::chat::clear_typing(&io, &core, user_id).await;
                continue;
            }
        };
        if core.db_status.is_down() {
            // The audience lives in the database: skip rather than stall every later change.
            tracing::debug!(user = %user_id, "database down: presence change not announced");
            continue;
        }
        let audience = match core.presence.audience(&core.preferences, &user_id).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(user = %user_id, error = %e, "presence audience failed");
                continue;
            }
        };
        let emitter = Emitter::server(&io, &core);
        let mut targets: Vec<String> = audience.iter().map(|u| rooms::user(u)).collect();
        match event {
            PresenceEvent::Status(change) => {
                // Watchers of the user's rooms hear status changes too, in the same emits, so a
                // socket that is both a follower's and a watcher's gets each change once.
                targets.extend(super::room_presence::watch_targets(&core, &user_id).await);
                let payload = json!({
                    "userId": change.user_id,
                    "status": change.status,
                    "lastSeen": crate::time::rfc3339(&change.last_seen),
                });
                emitter.fan_out(targets, "presence:update", &payload).await;
            }
            PresenceEvent::TypingEnded { .. } => {}
            PresenceEvent::Activity {
                user_id,
                activity,
                metadata,
            } => {
                if targets.is_empty() {
                    continue;
                }
                let payload =
                    json!({ "userId": user_id, "activity": activity, "metadata": metadata });
                emitter
                    .fan_out(targets, "presence:friend_activity", &payload)
                    .await;
            }
        }
    }
    tracing::debug!("presence announcer stopped");
}
