//! Presence over Socket.IO: the `presence:*` events, the lifecycle hooks the connection
//! handlers call, the activity throttle's windows, and the workers that announce queued
//! presence changes.

use std::sync::Arc;

use chrono::Utc;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, TryData};
use validator::Validate;

use super::ack::{Payload, parse};
use super::context::EventCtx;
use super::emit::Emitter;
use super::rooms;
use crate::auth::AuthUser;
use crate::domain::presence::{
    ActivityUpdate, Offer, Pending, PresenceEvent, Status, StatusChange,
};
use crate::error::{AppError, AppResult};
use crate::state::Core;

/// Largest accepted `metadata`, serialized.
const MAX_METADATA_BYTES: usize = 1024;

/// `presence:activity` / `PUT /presence/activity`.
#[derive(Deserialize, Validate, utoipa::ToSchema)]
pub struct ActivityPayload {
    #[schema(min_length = 1, max_length = 64)]
    #[validate(length(min = 1, max = 64))]
    pub activity: String,
    pub metadata: Option<Map<String, Value>>,
}

/// Stores the activity and announces it, throttled per user (`PRESENCE_ACTIVITY_THROTTLE_MS`);
/// shared by both transports. The caller's answer never waits for the announcement.
pub async fn set_activity(
    core: &Arc<Core>,
    user_id: &str,
    payload: ActivityPayload,
) -> AppResult<()> {
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
    let update = ActivityUpdate {
        activity: payload.activity,
        metadata,
    };
    match core.presence_activity.offer(user_id, update) {
        Offer::Now(update) => {
            queue_activity(core, user_id, update).await;
            if !core.presence_activity.window().is_zero() {
                tokio::spawn(activity_window(core.clone(), user_id.to_owned()));
            }
        }
        Offer::Held => {}
    }
    Ok(())
}

async fn queue_activity(core: &Core, user_id: &str, update: ActivityUpdate) {
    core.presence_events
        .push(PresenceEvent::Activity {
            user_id: user_id.to_owned(),
            activity: update.activity,
            metadata: update.metadata,
        })
        .await;
}

/// One user's throttle windows, back to back while activities keep coming: at the end of
/// each, the latest activity held in it is announced (and the next window starts).
async fn activity_window(core: Arc<Core>, user_id: String) {
    let window = core.presence_activity.window();
    loop {
        tokio::select! {
            () = tokio::time::sleep(window) => {}
            () = core.shutdown.cancelled() => return,
        }
        match core.presence_activity.window_ended(&user_id) {
            Some(update) => queue_activity(&core, &user_id, update).await,
            None => return,
        }
    }
}

pub(super) async fn on_activity<A: Adapter>(
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
    status: super::actions::ChosenStatus,
}

pub(super) async fn on_status<A: Adapter>(
    ctx: EventCtx<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
) {
    let EventCtx { core, user, .. } = &ctx;
    ctx.respond("presence:status", ack, async {
        let payload: StatusPayload = parse(data, Payload::Required)?;
        super::actions::set_status(core, &user.id, payload.status).await?;
        Ok(json!({}))
    })
    .await;
}

/// Client activity on any transport (a socket event, a REST action, a poll): an idle user
/// comes back online. Failures are logged, never refused: activity is best effort.
pub async fn record_activity(core: &Core, user_id: &str) {
    match core.presence.store.touch(user_id, chrono::Utc::now()).await {
        Ok(Some(status)) => queue_status(core, user_id, status).await,
        Ok(None) => {}
        Err(e) => tracing::warn!(user = %user_id, error = ?e, "recording activity failed"),
    }
}

/// Queues a status change of `user_id` for announcement; waits only while the presence queue
/// is full (`PRESENCE_QUEUE_MAX` distinct users).
pub async fn queue_status(core: &Core, user_id: &str, status: Status) {
    core.presence_events
        .push(PresenceEvent::Status(StatusChange {
            user_id: user_id.to_owned(),
            status,
            last_seen: Utc::now(),
        }))
        .await;
}

/// A socket of `user_id` finished connecting.
pub async fn socket_ready(core: &Core, user_id: &str) {
    match core.presence.store.came_online(user_id, Utc::now()).await {
        Ok(Some(status)) => queue_status(core, user_id, status).await,
        Ok(None) => {}
        Err(e) => tracing::warn!(user = user_id, error = ?e, "presence update failed"),
    }
}

/// Users whose grace period ended: store their `lastSeen` and announce them offline. The
/// announcements are queued from a task of their own, so a full presence queue slows them down
/// without holding up the caller (the reaper, which also keeps this node's heartbeat).
pub async fn went_offline(core: &Arc<Core>, users: Vec<String>) {
    let now = Utc::now();
    for user_id in &users {
        if core.db_status.is_down() {
            tracing::warn!(user = %user_id, "database down: lastSeen not stored");
        } else if let Err(e) = core.presence.record_last_seen(user_id, now).await {
            tracing::warn!(user = %user_id, error = %e, "storing lastSeen failed");
        }
    }
    let core = core.clone();
    tokio::spawn(async move {
        for user_id in users {
            core.presence_events
                .push(PresenceEvent::Status(StatusChange {
                    user_id,
                    status: Status::Offline,
                    last_seen: now,
                }))
                .await;
        }
    });
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

/// One presence worker (`PRESENCE_WORKERS` run per node): takes users from the presence queue
/// and announces what waits for them, until shutdown. The queue never hands one user to two
/// workers at once, so each user's changes arrive in order. An audience is named in chunks of
/// at most `FAN_OUT_CHUNK` rooms per emit, like the feed.
pub async fn announce<A: Adapter>(io: SocketIo<A>, core: Arc<Core>, worker: usize) {
    tracing::debug!(worker, "presence worker started");
    loop {
        let next = tokio::select! {
            next = core.presence_events.next() => next,
            () = core.shutdown.cancelled() => None,
        };
        let Some((user_id, pending)) = next else {
            break;
        };
        if core.db_status.is_down() {
            // The audience lives in the database: skip rather than stall every later change.
            tracing::debug!(user = %user_id, "database down: presence change not announced");
        } else {
            announce_user(&io, &core, &user_id, pending).await;
        }
        core.presence_events.done(&user_id);
    }
    // Senders waiting for room must not wait forever once nobody takes from the queue.
    core.presence_events.close();
    tracing::debug!(worker, "presence worker stopped");
}

/// Announces what waited for one user: the end of typing, then the status and the activity in
/// the order they arrived.
async fn announce_user<A: Adapter>(io: &SocketIo<A>, core: &Core, user_id: &str, pending: Pending) {
    if pending.typing_ended {
        super::chat::clear_typing(io, core, user_id).await;
    }
    if pending.status.is_none() && pending.activity.is_none() {
        return;
    }
    let audience = match core
        .presence_audience
        .get(
            &core.presence,
            &core.preferences,
            core.chat.membership_generation(),
            user_id,
        )
        .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(user = %user_id, error = %e, "presence audience failed");
            return;
        }
    };
    let emitter = Emitter::server(io, core);
    let users: Vec<String> = audience.users.iter().map(|u| rooms::user(u)).collect();
    let status = pending.status.map(|change| {
        // Watchers of the user's rooms hear status changes too, in the same emits, so a
        // socket that is both a follower's and a watcher's gets each change once.
        let mut targets = users.clone();
        targets.extend(audience.rooms.iter().map(|r| rooms::presence_watch(r)));
        core.room_counts.mark(audience.rooms.iter().cloned());
        let payload = json!({
            "userId": change.user_id,
            "status": change.status,
            "lastSeen": crate::time::rfc3339(&change.last_seen),
        });
        (targets, payload)
    });
    let activity = pending
        .activity
        .filter(|_| !users.is_empty())
        .map(|a| json!({ "userId": user_id, "activity": a.activity, "metadata": a.metadata }));
    if !pending.activity_last
        && let Some(payload) = &activity
    {
        emitter
            .fan_out(users.clone(), "presence:friend_activity", payload)
            .await;
    }
    if let Some((targets, payload)) = status {
        emitter.fan_out(targets, "presence:update", &payload).await;
    }
    if pending.activity_last
        && let Some(payload) = &activity
    {
        emitter
            .fan_out(users, "presence:friend_activity", payload)
            .await;
    }
}
