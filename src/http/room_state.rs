//! REST views of a chat room's live state after a reload: who of its members is online
//! (`GET /chat/rooms/:id/presence`) and how far each has read (`GET /chat/rooms/:id/receipts`).
//! Both are member lists, ordered by user id and paged with `limit` and `before` (which takes
//! the previous page's `nextCursor`, like every list here; it is opaque to clients).

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use socketioxide::adapter::Adapter;

use super::json::{Json, Query, page_limit};
use crate::auth::AuthUser;
use crate::domain::presence::room_presence;
use crate::error::AppResult;
use crate::realtime::room_presence::page_json;
use crate::state::AppState;

pub fn router<A: Adapter>() -> Router<AppState<A>> {
    Router::new()
        .route("/chat/rooms/{room_id}/presence", get(presence::<A>))
        .route("/chat/rooms/{room_id}/receipts", get(receipts::<A>))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct MemberPageParams {
    /// Page size: 1 to 100 (larger values are capped), default 20.
    limit: Option<u64>,
    /// The previous page's `nextCursor`.
    before: Option<String>,
}

/// `{ roomId, online, items: [{ userId, status, activity, metadata, lastSeen }], nextCursor }`.
async fn presence<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path(room_id): Path<String>,
    Query(params): Query<MemberPageParams>,
) -> AppResult<Response> {
    let core = &state.core;
    let limit = page_limit(params.limit)?;
    let page = room_presence(
        &core.chat,
        &core.presence,
        &core.preferences,
        &user.id,
        &room_id,
        limit,
        params.before.as_deref(),
    )
    .await?;
    Ok(Json(page_json(&room_id, &page)).into_response())
}

/// `{ roomId, lastSeq, items: [{ userId, readSeq, readAt, deliveredSeq }], nextCursor }`.
async fn receipts<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path(room_id): Path<String>,
    Query(params): Query<MemberPageParams>,
) -> AppResult<Response> {
    let limit = page_limit(params.limit)?;
    let page = state
        .core
        .chat
        .receipts(&user.id, &room_id, limit, params.before.as_deref())
        .await?;
    Ok(Json(json!({
        "roomId": room_id,
        "lastSeq": page.last_seq,
        "items": page.items,
        "nextCursor": page.next_cursor,
    }))
    .into_response())
}
