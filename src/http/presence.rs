//! REST presence routes: your own presence, your activity, and which friends are online.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::Deserialize;
use serde_json::json;
use socketioxide::adapter::Adapter;

use super::json::{Json, Query, page_limit};
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult};
use crate::realtime::presence::{ActivityPayload, set_activity};
use crate::state::AppState;

pub fn router<A: Adapter>() -> Router<AppState<A>> {
    Router::new()
        .route("/presence/me", get(me::<A>))
        .route("/presence/activity", put(put_activity::<A>))
        .route("/presence/online-friends", get(online_friends::<A>))
}

async fn own_view<A: Adapter>(state: &AppState<A>, user: &AuthUser) -> AppResult<Response> {
    let core = &state.core;
    let mut views = core
        .presence
        .view(&core.preferences, &user.id, std::slice::from_ref(&user.id))
        .await?;
    let view = views
        .pop()
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("no presence view")))?;
    Ok(Json(view).into_response())
}

async fn me<A: Adapter>(State(state): State<AppState<A>>, user: AuthUser) -> AppResult<Response> {
    own_view(&state, &user).await
}

async fn put_activity<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Json(body): Json<ActivityPayload>,
) -> AppResult<Response> {
    set_activity(&state.core, &user.id, body).await?;
    own_view(&state, &user).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageParams {
    /// Page size: 1 to 100 (larger values are capped), default 20.
    limit: Option<u64>,
    /// The previous page's `nextCursor`.
    before: Option<String>,
}

/// Online friends a page at a time (`limit`, `before` = the previous page's `nextCursor`).
async fn online_friends<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Query(params): Query<PageParams>,
) -> AppResult<Response> {
    let core = &state.core;
    let limit = page_limit(params.limit)?;
    let (items, next_cursor) = core
        .presence
        .online_friends(&core.preferences, &user.id, limit, params.before.as_deref())
        .await?;
    Ok(Json(json!({ "items": items, "nextCursor": next_cursor })).into_response())
}
