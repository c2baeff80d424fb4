//! The service API for the app's backend (`X-Api-Key`), under `/api/v1/internal` (contract §8):
//! user profiles, the follow graph, notifications, feed activities and free-form broadcasts.
//! Every route takes [`ServiceCaller`], so a missing or wrong key (or no `SERVICE_API_KEY` at
//! all) is a 401 and a user JWT is never accepted here.

use std::collections::HashSet;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use socketioxide::adapter::Adapter;
use validator::{Validate, ValidationError};

use super::json::Json;
use crate::auth::ServiceCaller;
use crate::domain::feed::{Audience, NewActivity};
use crate::domain::notifications::{NewNotification, PRIORITIES, is_valid_type};
use crate::domain::{follows, users};
use crate::error::{AppError, AppResult};
use crate::realtime::emit::Emitter;
use crate::realtime::rooms;
use crate::state::AppState;

/// Longest room name a broadcast may target.
const MAX_ROOM_NAME_CHARS: usize = 256;
/// Events Socket.IO clients reserve for themselves; emitting them would confuse client code.
const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Every service route; each handler takes [`ServiceCaller`].
pub fn router<A: Adapter>() -> Router<AppState<A>> {
    Router::new()
        .route("/users/{user_id}", put(upsert_user::<A>))
        .route("/follows", put(follow::<A>).delete(unfollow::<A>))
        .route("/notifications", post(create_notifications::<A>))
        .route("/feed/activities", post(publish_activity::<A>))
        .route("/broadcast", post(broadcast::<A>))
}

/// `type`: the notification type pattern.
fn valid_notification_type(value: &str) -> Result<(), ValidationError> {
    is_valid_type(value)
        .then_some(())
        .ok_or_else(|| invalid("must match ^[a-z][a-z_]{0,31}$"))
}

/// `priority`: one of the four levels.
fn valid_priority(value: &str) -> Result<(), ValidationError> {
    PRIORITIES
        .contains(&value)
        .then_some(())
        .ok_or_else(|| invalid("must be one of low, normal, high, urgent"))
}

/// `data`: a JSON object.
fn json_object(value: &Value) -> Result<(), ValidationError> {
    value
        .is_object()
        .then_some(())
        .ok_or_else(|| invalid("must be an object"))
}

/// `event`: not one of the names Socket.IO clients reserve.
fn not_reserved(event: &str) -> Result<(), ValidationError> {
    (!RESERVED_EVENTS.contains(&event))
        .then_some(())
        .ok_or_else(|| invalid("is reserved by Socket.IO"))
}

/// `rooms` / `except`: Socket.IO room names of sane length.
fn room_names(rooms: &[String]) -> Result<(), ValidationError> {
    rooms
        .iter()
        .all(|r| (1..=MAX_ROOM_NAME_CHARS).contains(&r.chars().count()))
        .then_some(())
        .ok_or_else(|| invalid("each room name must be 1 to 256 characters"))
}

fn invalid(message: &'static str) -> ValidationError {
    ValidationError::new("invalid").with_message(message.into())
}

// ---- users ----

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserBody {
    #[schema(min_length = 1, max_length = 200)]
    #[validate(length(min = 1, max = 200, message = "must be 1 to 200 characters"))]
    name: String,
    /// An absolute URL.
    #[schema(max_length = 2048)]
    #[validate(
        url(message = "must be a URL"),
        length(max = 2048, message = "must be at most 2048 characters")
    )]
    avatar_url: Option<String>,
}

async fn upsert_user<A: Adapter>(
    State(state): State<AppState<A>>,
    _: ServiceCaller,
    Path(user_id): Path<String>,
    Json(body): Json<UserBody>,
) -> AppResult<Response> {
    if user_id.is_empty() || user_id.chars().count() > crate::auth::MAX_USER_ID_LEN {
        return Err(AppError::field("userId", "must be 1 to 128 characters"));
    }
    users::upsert(
        &state.core.writes,
        &user_id,
        &body.name,
        body.avatar_url.as_deref(),
    )
    .await?;
    Ok(
        Json(json!({ "id": user_id, "name": body.name, "avatarUrl": body.avatar_url }))
            .into_response(),
    )
}

// ---- follows ----

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct FollowBody {
    #[schema(min_length = 1, max_length = 128)]
    #[validate(length(min = 1, max = 128, message = "must be 1 to 128 characters"))]
    follower_id: String,
    #[schema(min_length = 1, max_length = 128)]
    #[validate(length(min = 1, max = 128, message = "must be 1 to 128 characters"))]
    followee_id: String,
}

/// Idempotent: 200 with the edge whether it was new or already there.
async fn follow<A: Adapter>(
    State(state): State<AppState<A>>,
    _: ServiceCaller,
    Json(body): Json<FollowBody>,
) -> AppResult<Response> {
    follows::follow(&state.core.writes, &body.follower_id, &body.followee_id).await?;
    state
        .core
        .presence_audience
        .changed(state.core.bus.as_ref(), &body.followee_id);
    Ok(
        Json(json!({ "followerId": body.follower_id, "followeeId": body.followee_id }))
            .into_response(),
    )
}

/// Idempotent: 204 whether or not the edge existed.
async fn unfollow<A: Adapter>(
    State(state): State<AppState<A>>,
    _: ServiceCaller,
    Json(body): Json<FollowBody>,
) -> AppResult<Response> {
    follows::unfollow(&state.core.writes, &body.follower_id, &body.followee_id).await?;
    state
        .core
        .presence_audience
        .changed(state.core.bus.as_ref(), &body.followee_id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- notifications ----

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct NotificationBody {
    #[schema(min_items = 1, max_items = 1000)]
    #[validate(
        length(min = 1, max = 1000, message = "must list 1 to 1000 user ids"),
        custom(function = "crate::http::validate_user_ids")
    )]
    user_ids: Vec<String>,
    #[schema(pattern = "^[a-z][a-z_]{0,31}$")]
    #[validate(custom(function = "valid_notification_type"))]
    r#type: String,
    #[schema(min_length = 1, max_length = 200)]
    #[validate(length(min = 1, max = 200, message = "must be 1 to 200 characters"))]
    title: String,
    #[schema(max_length = 2000)]
    #[validate(length(max = 2000, message = "must be at most 2000 characters"))]
    message: String,
    /// An object, delivered as is.
    #[validate(custom(function = "json_object"))]
    data: Option<Value>,
    /// `low`, `normal` (the default), `high` or `urgent`.
    #[validate(custom(function = "valid_priority"))]
    priority: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    #[validate(length(min = 1, max = 128, message = "must be 1 to 128 characters"))]
    actor_id: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    /// The same key for the same user within 24 h creates nothing new.
    #[schema(min_length = 1, max_length = 128)]
    #[validate(length(min = 1, max = 128, message = "must be 1 to 128 characters"))]
    dedup_key: Option<String>,
}

/// Creates one notification per distinct user and delivers the live ones. 201 with
/// `{ created, notifications }` (each with its recipient's `userId`); 200 with `created: 0`
/// when nothing was new (every recipient deduplicated, or `expiresAt` already past).
async fn create_notifications<A: Adapter>(
    State(state): State<AppState<A>>,
    _: ServiceCaller,
    Json(body): Json<NotificationBody>,
) -> AppResult<Response> {
    let mut seen = HashSet::new();
    let user_ids: Vec<String> = body
        .user_ids
        .into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect();
    let input = NewNotification {
        user_ids,
        notification_type: body.r#type,
        title: body.title,
        message: body.message,
        data: match body.data {
            Some(Value::Object(map)) => Value::Object(map),
            _ => Value::Object(Map::new()),
        },
        priority: body.priority.unwrap_or_else(|| "normal".to_owned()),
        actor_id: body.actor_id,
        expires_at: body.expires_at,
        dedup_key: body.dedup_key,
    };
    let created = state
        .core
        .notifications
        .create(&state.core.preferences, input)
        .await?;
    Emitter::server(&state.io, &state.core)
        .notifications(&created)
        .await;
    let items: Vec<Value> = created
        .iter()
        .map(|c| {
            let mut item = json!(c.notification);
            item["userId"] = json!(c.notification.user_id);
            item
        })
        .collect();
    let status = if items.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = json!({ "created": items.len(), "notifications": items });
    Ok((status, Json(body)).into_response())
}

// ---- feed ----

/// The activity's own rules live with the domain (`NewActivity::validate`), which reports every
/// failing field under its wire name; `publish` runs them.
#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ActivityBody {
    activity_type: String,
    actor_id: String,
    target_id: String,
    target_type: String,
    content: Option<String>,
    metadata: Option<Value>,
    audience: Option<Audience>,
}

impl ActivityBody {
    fn into_new(self) -> NewActivity {
        NewActivity {
            activity_type: self.activity_type,
            actor_id: self.actor_id,
            target_id: self.target_id,
            target_type: self.target_type,
            content: self.content,
            metadata: self.metadata,
            audience: self.audience.unwrap_or_default(),
        }
    }
}

/// Stores the activity and fans it out; 201 with the stored activity.
async fn publish_activity<A: Adapter>(
    State(state): State<AppState<A>>,
    _: ServiceCaller,
    Json(body): Json<ActivityBody>,
) -> AppResult<Response> {
    let activity = state.core.feed.publish(body.into_new()).await?;
    let followers = follows::followers_of(&state.core.db, &activity.actor_id).await?;
    Emitter::server(&state.io, &state.core)
        .fan_out_activity(&activity, &followers)
        .await;
    Ok((StatusCode::CREATED, Json(activity)).into_response())
}

// ---- broadcast ----

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct BroadcastBody {
    #[schema(min_length = 1, max_length = 64)]
    #[validate(
        length(min = 1, max = 64, message = "must be 1 to 64 characters"),
        custom(function = "not_reserved")
    )]
    event: String,
    data: Value,
    /// Socket.IO room names (`chat:{id}`, `user:{id}`, `feed:public`).
    #[schema(max_items = 1000)]
    #[validate(
        length(max = 1000, message = "must list at most 1000 rooms"),
        custom(function = "room_names")
    )]
    rooms: Option<Vec<String>>,
    /// Users whose `user:{id}` rooms get the event.
    #[schema(max_items = 1000)]
    #[validate(
        length(max = 1000, message = "must list at most 1000 user ids"),
        custom(function = "crate::http::validate_user_ids")
    )]
    user_ids: Option<Vec<String>>,
    /// Room names whose sockets are left out.
    #[schema(max_items = 1000)]
    #[validate(
        length(max = 1000, message = "must list at most 1000 rooms"),
        custom(function = "room_names")
    )]
    except: Option<Vec<String>>,
}

/// One emit, cluster-wide, to `rooms` plus `user:{id}` of each of `userIds`, minus the sockets
/// in `except`. A socket in several targets gets the event once. 202: delivery is handed to the
/// adapter, not acknowledged by clients.
async fn broadcast<A: Adapter>(
    State(state): State<AppState<A>>,
    _: ServiceCaller,
    Json(body): Json<BroadcastBody>,
) -> AppResult<Response> {
    if body.rooms.as_ref().is_none_or(Vec::is_empty)
        && body.user_ids.as_ref().is_none_or(Vec::is_empty)
    {
        return Err(AppError::field(
            "rooms",
            "give at least one room in rooms or one user in userIds",
        ));
    }
    let mut targets = body.rooms.unwrap_or_default();
    targets.extend(
        body.user_ids
            .unwrap_or_default()
            .iter()
            .map(|u| rooms::user(u)),
    );
    // Ephemeral: delivered live on every node, to every transport, never journaled.
    let event = crate::pipeline::Event::new(body.event, &body.data, targets)
        .map_err(|e| AppError::Internal(anyhow::anyhow!("broadcast payload: {e}")))?
        .except(body.except.unwrap_or_default());
    state.core.pipeline.publish(event).await?;
    state.core.metrics.event_out("service:broadcast");
    Ok((StatusCode::ACCEPTED, Json(json!({ "delivered": true }))).into_response())
}
