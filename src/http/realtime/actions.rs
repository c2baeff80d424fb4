//! REST twins of the socket events that only sockets could send — typing, read and delivered
//! watermarks, presence status — so SSE and long-poll clients can act. Each calls the same
//! function as its socket event ([`crate::realtime::actions`]); the per-user limits that bound
//! their effect on others (the typing throttle, watermarks that only move forward, status
//! changes announced once) are in those functions, so they hold on both transports.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use serde::Deserialize;
use serde_json::json;
use socketioxide::adapter::Adapter;
use validator::Validate;

use crate::auth::AuthUser;
use crate::error::{AppError, AppResult};
use crate::http::json::Json;
use crate::realtime::actions::{self, ChosenStatus};
use crate::realtime::emit::Emitter;
use crate::state::AppState;

pub fn router<A: Adapter>() -> Router<AppState<A>> {
    Router::new()
        .route("/chat/rooms/{room_id}/typing", post(typing::<A>))
        .route("/chat/rooms/{room_id}/read", post(read::<A>))
        .route("/chat/rooms/{room_id}/delivered", post(delivered::<A>))
        .route("/presence/status", put(status::<A>))
}

/// The body of `POST …/typing` (as `chat:typing`).
#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(in crate::http) struct TypingBody {
    is_typing: bool,
}

/// The body of `POST …/read` and `POST …/delivered` (as `chat:read`, `chat:delivered`).
#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(in crate::http) struct WatermarkBody {
    /// The highest `seq` read or received; the watermark only moves forward.
    #[validate(range(min = 0))]
    #[schema(minimum = 0)]
    up_to_seq: i64,
}

/// The body of `PUT /presence/status` (as `presence:status`).
#[derive(Deserialize, Validate, utoipa::ToSchema)]
pub(in crate::http) struct StatusBody {
    status: ChosenStatus,
}

fn room_id_ok(room_id: &str) -> AppResult<()> {
    if room_id.is_empty() || room_id.chars().count() > 64 {
        return Err(AppError::field("roomId", "must be 1 to 64 characters"));
    }
    Ok(())
}

async fn typing<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path(room_id): Path<String>,
    Json(body): Json<TypingBody>,
) -> AppResult<Response> {
    room_id_ok(&room_id)?;
    let core = &state.core;
    crate::realtime::presence::record_activity(core, &user.id).await;
    let emitter = Emitter::server(&state.io, core);
    actions::typing(&emitter, core, &user.id, &room_id, body.is_typing).await?;
    Ok(axum::Json(json!({})).into_response())
}

async fn read<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path(room_id): Path<String>,
    Json(body): Json<WatermarkBody>,
) -> AppResult<Response> {
    room_id_ok(&room_id)?;
    let core = &state.core;
    crate::realtime::presence::record_activity(core, &user.id).await;
    let emitter = Emitter::server(&state.io, core);
    let unread = actions::read(&emitter, core, &user.id, &room_id, body.up_to_seq).await?;
    Ok(axum::Json(json!({ "unreadCount": unread })).into_response())
}

async fn delivered<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path(room_id): Path<String>,
    Json(body): Json<WatermarkBody>,
) -> AppResult<Response> {
    room_id_ok(&room_id)?;
    let core = &state.core;
    crate::realtime::presence::record_activity(core, &user.id).await;
    let emitter = Emitter::server(&state.io, core);
    actions::delivered(&emitter, core, &user.id, &room_id, body.up_to_seq).await?;
    Ok(axum::Json(json!({})).into_response())
}

async fn status<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Json(body): Json<StatusBody>,
) -> AppResult<Response> {
    let core = &state.core;
    actions::set_status(core, &user.id, body.status).await?;
    Ok(axum::Json(json!({ "status": body.status })).into_response())
}
