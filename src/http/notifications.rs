//! REST notification routes: the user's list, marking read, and preferences.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use socketioxide::adapter::Adapter;
use validator::Validate;

use super::json::{Json, Query, page_limit};
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult};
use crate::realtime::emit::Emitter;
use crate::state::AppState;

pub fn router<A: Adapter>() -> Router<AppState<A>> {
    Router::new()
        .route("/notifications", get(list::<A>))
        .route("/notifications/read", put(mark_read::<A>))
        .route(
            "/notifications/preferences",
            get(get_preferences::<A>).put(put_preferences::<A>),
        )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Page size: 1 to 100 (larger values are capped), default 20.
    limit: Option<u64>,
    /// Only unread notifications.
    unread_only: Option<bool>,
    /// The previous page's `nextCursor`.
    before: Option<String>,
}

async fn list<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Query(params): Query<ListParams>,
) -> AppResult<Response> {
    let limit = page_limit(params.limit)?;
    let unread_only = params.unread_only.unwrap_or(false);
    let (items, next) = state
        .core
        .notifications
        .list(&user.id, limit, unread_only, params.before.as_deref())
        .await?;
    Ok(Json(json!({ "items": items, "nextCursor": next })).into_response())
}

/// `{ notificationIds }` (at most 500) or `{ all: true }`; shared with the socket event.
#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MarkReadBody {
    #[schema(max_items = 500)]
    #[validate(length(max = 500))]
    pub notification_ids: Option<Vec<String>>,
    pub all: Option<bool>,
}

impl MarkReadBody {
    /// The ids to mark, or `None` for all.
    pub fn target(&self) -> AppResult<Option<&[String]>> {
        match (&self.notification_ids, self.all) {
            (_, Some(true)) => Ok(None),
            (Some(ids), _) => Ok(Some(ids.as_slice())),
            _ => Err(AppError::field(
                "notificationIds",
                "give notificationIds or all: true",
            )),
        }
    }
}

async fn mark_read<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Json(body): Json<MarkReadBody>,
) -> AppResult<Response> {
    let target = body.target()?;
    let (updated, unread) = state.core.notifications.mark_read(&user.id, target).await?;
    let emitter = Emitter::server(&state.io, &state.core);
    emitter.notifications_read(&user.id, target, unread).await;
    emitter.unread_count(&user.id, Some(unread)).await;
    Ok(Json(json!({ "updated": updated, "unreadCount": unread })).into_response())
}

async fn get_preferences<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
) -> AppResult<Response> {
    let prefs = state.core.preferences.get(&user.id).await?;
    Ok(Json(json!({ "preferences": prefs.to_json() })).into_response())
}

#[derive(Deserialize, Validate)]
struct PreferencesBody {
    preferences: Map<String, Value>,
}

async fn put_preferences<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Json(body): Json<PreferencesBody>,
) -> AppResult<Response> {
    let prefs = state
        .core
        .preferences
        .update(&user.id, &body.preferences)
        .await?;
    if body.preferences.contains_key("shareOnlineStatus") {
        // Who hears the user's presence depends on it: cached audiences must not outlive it.
        state
            .core
            .presence_audience
            .changed(state.core.bus.as_ref(), &user.id);
    }
    Ok(Json(json!({ "preferences": prefs.to_json() })).into_response())
}
