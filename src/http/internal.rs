//! The service API for the app's backend (`X-Api-Key`), under `/api/v1/internal` (contract §8):
//! user profiles, the follow graph, notifications, feed activities and free-form broadcasts.
//! Every route takes [`ServiceCaller`], so a missing or wrong key (or no `SERVICE_API_KEY` at
//! all) is a 401 and a user JWT is never accepted here.
//!
//! Bodies are checked by hand-written [`Validate`] impls rather than the derive: the derive
//! names failing fields after Rust fields (`user_ids`), while the backend sent (and must read
//! back in `details`) the camelCase wire names (`userIds`).

use std::borrow::Cow;
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
use validator::{Validate, ValidateUrl, ValidationError, ValidationErrors};

use super::json::Json;
use crate::auth::ServiceCaller;
use crate::domain::feed::{Audience, NewActivity};
use crate::domain::notifications::{NewNotification, PRIORITIES, is_valid_type};
use crate::domain::{follows, users};
use crate::error::{AppError, AppResult};
use crate::realtime::NAMESPACE;
use crate::realtime::emit::Emitter;
use crate::realtime::rooms;
use crate::state::AppState;

/// Most recipients of one `POST /notifications`.
const MAX_NOTIFICATION_RECIPIENTS: usize = 1000;
/// Most rooms, users or exceptions in one `POST /broadcast`.
const MAX_BROADCAST_TARGETS: usize = 1000;
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

/// Field errors under wire names, turned into the `INVALID_PAYLOAD` details by [`AppError`].
#[derive(Default)]
struct Checks(ValidationErrors);

impl Checks {
    /// Records `message` against `field` unless `ok`.
    fn check(&mut self, ok: bool, field: &'static str, message: impl Into<Cow<'static, str>>) {
        if !ok {
            let error = ValidationError::new("invalid").with_message(message.into());
            self.0.add(field, error);
        }
    }

    /// Checks an optional string's length in characters.
    fn length(&mut self, value: Option<&str>, field: &'static str, min: usize, max: usize) {
        if let Some(value) = value {
            let len = value.chars().count();
            let message = if min == 0 {
                format!("must be at most {max} characters")
            } else {
                format!("must be {min} to {max} characters")
            };
            self.check((min..=max).contains(&len), field, message);
        }
    }

    /// Checks a user id (1 to 128 characters).
    fn user_id(&mut self, value: Option<&str>, field: &'static str) {
        self.length(value, field, 1, crate::auth::MAX_USER_ID_LEN);
    }

    /// Checks a list of user ids: each valid, and between `min` and `max` of them.
    fn user_ids(&mut self, ids: Option<&[String]>, field: &'static str, min: usize, max: usize) {
        let Some(ids) = ids else { return };
        let message = if min == 0 {
            format!("must list at most {max} user ids")
        } else {
            format!("must list {min} to {max} user ids")
        };
        self.check((min..=max).contains(&ids.len()), field, message);
        if let Err(error) = crate::http::validate_user_ids(ids) {
            self.0.add(field, error);
        }
    }

    fn done(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

// ---- users ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserBody {
    name: String,
    avatar_url: Option<String>,
}

impl Validate for UserBody {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut checks = Checks::default();
        checks.length(Some(&self.name), "name", 1, 200);
        checks.length(self.avatar_url.as_deref(), "avatarUrl", 1, 2048);
        if let Some(url) = &self.avatar_url {
            checks.check(url.validate_url(), "avatarUrl", "must be a URL");
        }
        checks.done()
    }
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
        &state.core.db,
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FollowBody {
    follower_id: String,
    followee_id: String,
}

impl Validate for FollowBody {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut checks = Checks::default();
        checks.user_id(Some(&self.follower_id), "followerId");
        checks.user_id(Some(&self.followee_id), "followeeId");
        checks.done()
    }
}

/// Idempotent: 200 with the edge whether it was new or already there.
async fn follow<A: Adapter>(
    State(state): State<AppState<A>>,
    _: ServiceCaller,
    Json(body): Json<FollowBody>,
) -> AppResult<Response> {
    follows::follow(&state.core.db, &body.follower_id, &body.followee_id).await?;
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
    follows::unfollow(&state.core.db, &body.follower_id, &body.followee_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- notifications ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationBody {
    user_ids: Vec<String>,
    #[serde(rename = "type")]
    notification_type: String,
    title: String,
    message: String,
    data: Option<Value>,
    priority: Option<String>,
    actor_id: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    dedup_key: Option<String>,
}

impl Validate for NotificationBody {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut checks = Checks::default();
        checks.user_ids(
            Some(&self.user_ids),
            "userIds",
            1,
            MAX_NOTIFICATION_RECIPIENTS,
        );
        checks.check(
            is_valid_type(&self.notification_type),
            "type",
            "must match ^[a-z][a-z_]{0,31}$",
        );
        checks.length(Some(&self.title), "title", 1, 200);
        checks.length(Some(&self.message), "message", 0, 2000);
        checks.check(
            matches!(self.data, None | Some(Value::Null | Value::Object(_))),
            "data",
            "must be an object",
        );
        if let Some(priority) = &self.priority {
            checks.check(
                PRIORITIES.contains(&priority.as_str()),
                "priority",
                "must be one of low, normal, high, urgent",
            );
        }
        checks.user_id(self.actor_id.as_deref(), "actorId");
        checks.length(self.dedup_key.as_deref(), "dedupKey", 1, 128);
        checks.done()
    }
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
        notification_type: body.notification_type,
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActivityBody {
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

/// The activity's own rules live with the domain ([`NewActivity::validate`]), which reports
/// every failing field under its wire name; `publish` runs them.
impl Validate for ActivityBody {
    fn validate(&self) -> Result<(), ValidationErrors> {
        Ok(())
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BroadcastBody {
    event: String,
    data: Value,
    rooms: Option<Vec<String>>,
    user_ids: Option<Vec<String>>,
    except: Option<Vec<String>>,
}

impl BroadcastBody {
    fn check_rooms(checks: &mut Checks, rooms: Option<&[String]>, field: &'static str) {
        let Some(rooms) = rooms else { return };
        checks.check(
            rooms.len() <= MAX_BROADCAST_TARGETS,
            field,
            format!("must list at most {MAX_BROADCAST_TARGETS} rooms"),
        );
        checks.check(
            rooms
                .iter()
                .all(|r| (1..=MAX_ROOM_NAME_CHARS).contains(&r.chars().count())),
            field,
            format!("each room name must be 1 to {MAX_ROOM_NAME_CHARS} characters"),
        );
    }
}

impl Validate for BroadcastBody {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut checks = Checks::default();
        checks.length(Some(&self.event), "event", 1, 64);
        checks.check(
            !RESERVED_EVENTS.contains(&self.event.as_str()),
            "event",
            "is reserved by Socket.IO",
        );
        Self::check_rooms(&mut checks, self.rooms.as_deref(), "rooms");
        Self::check_rooms(&mut checks, self.except.as_deref(), "except");
        checks.user_ids(
            self.user_ids.as_deref(),
            "userIds",
            0,
            MAX_BROADCAST_TARGETS,
        );
        let targets =
            self.rooms.as_ref().map_or(0, Vec::len) + self.user_ids.as_ref().map_or(0, Vec::len);
        checks.check(
            targets > 0,
            "rooms",
            "give at least one room in rooms or one user in userIds",
        );
        checks.done()
    }
}

/// One emit, cluster-wide, to `rooms` plus `user:{id}` of each of `userIds`, minus the sockets
/// in `except`. A socket in several targets gets the event once. 202: delivery is handed to the
/// adapter, not acknowledged by clients.
async fn broadcast<A: Adapter>(
    State(state): State<AppState<A>>,
    _: ServiceCaller,
    Json(body): Json<BroadcastBody>,
) -> AppResult<Response> {
    let mut targets = body.rooms.unwrap_or_default();
    targets.extend(
        body.user_ids
            .unwrap_or_default()
            .iter()
            .map(|u| rooms::user(u)),
    );
    let Some(ns) = state.io.of(NAMESPACE) else {
        return Err(AppError::Internal(anyhow::anyhow!(
            "namespace {NAMESPACE} is not registered"
        )));
    };
    ns.to(targets)
        .except(body.except.unwrap_or_default())
        .emit(&body.event, &body.data)
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("broadcast failed: {e}")))?;
    state.core.metrics.event_out("service:broadcast");
    Ok((StatusCode::ACCEPTED, Json(json!({ "delivered": true }))).into_response())
}
