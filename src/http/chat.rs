//! REST chat routes (contract §7). Same service calls and the same emit table as the
//! Socket.IO handlers; a REST send reaches every socket in the room, the sender's included.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use serde::Deserialize;
use serde_json::json;
use socketioxide::adapter::Adapter;
use validator::Validate;

use super::json::{Json, Query, page_limit};
use crate::auth::AuthUser;
use crate::domain::chat::{HistoryQuery, MessageType, NewMessage, NewRoom, RoomChange, RoomType};
use crate::error::{AppError, AppResult};
use crate::realtime::emit::Emitter;
use crate::realtime::{announce_added, announce_removed, deliver_invites};
use crate::state::AppState;

pub fn router<A: Adapter>() -> Router<AppState<A>> {
    Router::new()
        .route("/chat/rooms", get(list_rooms::<A>).post(create_room::<A>))
        .route(
            "/chat/rooms/{room_id}",
            get(get_room::<A>).patch(rename_room::<A>),
        )
        .route(
            "/chat/rooms/{room_id}/members",
            get(list_members::<A>).post(add_members::<A>),
        )
        .route(
            "/chat/rooms/{room_id}/members/{user_id}",
            axum::routing::delete(remove_member::<A>),
        )
        .route(
            "/chat/rooms/{room_id}/messages",
            get(history::<A>).post(send_message::<A>),
        )
        .route("/chat/rooms/{room_id}/messages/search", get(search::<A>))
        .route(
            "/chat/rooms/{room_id}/messages/{message_id}",
            patch(edit_message::<A>).delete(delete_message::<A>),
        )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageParams {
    /// Page size: 1 to 100 (larger values are capped), default 20.
    limit: Option<u64>,
    /// The previous page's `nextCursor`.
    before: Option<String>,
}

async fn list_rooms<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Query(params): Query<PageParams>,
) -> AppResult<Response> {
    let limit = page_limit(params.limit)?;
    let page = state
        .core
        .chat
        .list_rooms(&user.id, limit, params.before.as_deref())
        .await?;
    Ok(Json(json!({ "items": page.items, "nextCursor": page.next_cursor })).into_response())
}

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateRoomBody {
    #[validate(length(max = 500), custom(function = "crate::http::validate_user_ids"))]
    #[serde(default)]
    #[schema(max_items = 500)]
    participants: Vec<String>,
    #[serde(rename = "type")]
    room_type: Option<RoomType>,
    #[schema(min_length = 1, max_length = 100)]
    #[validate(length(min = 1, max = 100))]
    name: Option<String>,
}

async fn create_room<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Json(body): Json<CreateRoomBody>,
) -> AppResult<Response> {
    // The members besides the creator, as the service counts them (a big room's object lists
    // only its first members).
    let mut added: Vec<String> = Vec::new();
    for p in &body.participants {
        if *p != user.id && !added.contains(p) {
            added.push(p.clone());
        }
    }
    let input = NewRoom {
        participants: body.participants,
        room_type: body.room_type,
        name: body.name,
    };
    let done = state.core.chat.create_room_by(&user, input).await?;
    let room = done.room;
    if !done.created {
        return Ok(Json(room).into_response());
    }
    let emitter = Emitter::server(&state.io, &state.core);
    announce_added(
        &emitter,
        &state.core,
        &room,
        &added,
        &user,
        RoomChange::Created,
    )
    .await;
    deliver_invites(&emitter, &state.core, done.invites).await;
    Ok((StatusCode::CREATED, Json(room)).into_response())
}

async fn get_room<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path(room_id): Path<String>,
) -> AppResult<Response> {
    Ok(Json(state.core.chat.get_room(&user.id, &room_id).await?).into_response())
}

#[derive(Deserialize, Validate, utoipa::ToSchema)]
pub(super) struct RenameBody {
    #[schema(min_length = 1, max_length = 100)]
    #[validate(length(min = 1, max = 100))]
    name: String,
}

async fn rename_room<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path(room_id): Path<String>,
    Json(body): Json<RenameBody>,
) -> AppResult<Response> {
    let room = state
        .core
        .chat
        .rename_room(&user.id, &room_id, &body.name)
        .await?;
    Emitter::server(&state.io, &state.core)
        .room_updated(&room, RoomChange::Renamed, &[])
        .await;
    Ok(Json(room.for_viewer(&user.id)).into_response())
}

/// `GET /chat/rooms/:id/members`: every member, paged (most recently joined first), for rooms
/// whose object lists only the first `ROOM_MEMBERS_INLINE_MAX`.
async fn list_members<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path(room_id): Path<String>,
    Query(params): Query<PageParams>,
) -> AppResult<Response> {
    let limit = page_limit(params.limit)?;
    let page = state
        .core
        .chat
        .list_members(&user.id, &room_id, limit, params.before.as_deref())
        .await?;
    Ok(Json(json!({ "items": page.items, "nextCursor": page.next_cursor })).into_response())
}

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct AddMembersBody {
    #[validate(
        length(min = 1, max = 500),
        custom(function = "crate::http::validate_user_ids")
    )]
    #[schema(min_items = 1, max_items = 500)]
    user_ids: Vec<String>,
}

async fn add_members<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path(room_id): Path<String>,
    Json(body): Json<AddMembersBody>,
) -> AppResult<Response> {
    let change = state
        .core
        .chat
        .add_members(&user.id, &room_id, &body.user_ids)
        .await?;
    if !change.added.is_empty() {
        let emitter = Emitter::server(&state.io, &state.core);
        announce_added(
            &emitter,
            &state.core,
            &change.room,
            &change.added,
            &user,
            RoomChange::MemberAdded,
        )
        .await;
    }
    Ok(Json(change.room).into_response())
}

async fn remove_member<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path((room_id, target)): Path<(String, String)>,
) -> AppResult<Response> {
    let change = state
        .core
        .chat
        .remove_member(&user.id, &room_id, &target)
        .await?;
    announce_removed(
        &Emitter::server(&state.io, &state.core),
        &change.room,
        &change.removed,
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryParams {
    /// Page size: 1 to 100 (larger values are capped), default 20.
    limit: Option<u64>,
    /// The previous page's `nextCursor`.
    before: Option<String>,
    /// Messages after this `seq`, oldest first (catch-up); not with `before`.
    after_seq: Option<i64>,
}

async fn history<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path(room_id): Path<String>,
    Query(params): Query<HistoryParams>,
) -> AppResult<Response> {
    let limit = page_limit(params.limit)?;
    let query = match (params.after_seq, params.before.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(AppError::field(
                "after_seq",
                "cannot be combined with before",
            ));
        }
        (Some(after), None) if after < 0 => {
            return Err(AppError::field("after_seq", "must be at least 0"));
        }
        (Some(after), None) => HistoryQuery::AfterSeq(after),
        (None, before) => HistoryQuery::Before(before),
    };
    let page = state
        .core
        .chat
        .history(&user.id, &room_id, query, limit)
        .await?;
    Ok(Json(
        json!({ "items": page.messages, "nextCursor": page.next_cursor, "hasMore": page.has_more }),
    )
    .into_response())
}

/// A message as clients write it; the body of `POST …/messages` and, with `roomId`, the
/// payload of `chat:message`.
#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendBody {
    pub message: String,
    #[serde(rename = "type")]
    pub message_type: Option<MessageType>,
    #[schema(min_length = 1, max_length = 64)]
    #[validate(length(min = 1, max = 64))]
    pub reply_to_id: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    #[validate(length(min = 1, max = 128))]
    pub client_message_id: Option<String>,
}

impl SendBody {
    /// The domain input for `room_id`.
    pub fn into_message(self, room_id: String) -> NewMessage {
        NewMessage {
            room_id,
            content: self.message,
            message_type: self.message_type,
            reply_to_id: self.reply_to_id,
            client_message_id: self.client_message_id,
        }
    }
}

async fn send_message<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path(room_id): Path<String>,
    Json(body): Json<SendBody>,
) -> AppResult<Response> {
    let input = body.into_message(room_id);
    let emitter = Emitter::server(&state.io, &state.core);
    let sent = state
        .core
        .chat
        .send_announced(&user, input, Some(emitter.new_message()))
        .await?;
    if sent.duplicate {
        return Ok(Json(sent.message).into_response());
    }
    emitter.message_sent(sent.event).await;
    Ok((StatusCode::CREATED, Json(sent.message)).into_response())
}

#[derive(Deserialize, Validate, utoipa::ToSchema)]
pub(super) struct EditBody {
    message: String,
}

async fn edit_message<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path((room_id, message_id)): Path<(String, String)>,
    Json(body): Json<EditBody>,
) -> AppResult<Response> {
    let message = state
        .core
        .chat
        .edit_message(&user.id, &room_id, &message_id, &body.message)
        .await?;
    Emitter::server(&state.io, &state.core)
        .message_updated(&message)
        .await;
    Ok(Json(message).into_response())
}

async fn delete_message<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path((room_id, message_id)): Path<(String, String)>,
) -> AppResult<Response> {
    let message = state
        .core
        .chat
        .delete_message(&user.id, &room_id, &message_id)
        .await?;
    Emitter::server(&state.io, &state.core)
        .message_updated(&message)
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SearchParams {
    /// The words to look for.
    q: Option<String>,
    /// Page size: 1 to 100 (larger values are capped), default 20.
    limit: Option<u64>,
}

async fn search<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path(room_id): Path<String>,
    Query(params): Query<SearchParams>,
) -> AppResult<Response> {
    let limit = page_limit(params.limit)?;
    let q = params.q.unwrap_or_default();
    let items = state
        .core
        .chat
        .search(&user.id, &room_id, &q, limit)
        .await?;
    Ok(Json(json!({ "items": items, "nextCursor": null })).into_response())
}
