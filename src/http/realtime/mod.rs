//! Realtime over plain HTTP, for clients that do not speak Socket.IO: an SSE stream, long
//! polling, REST actions for what only socket events could do, and a status page of the
//! caller's sessions. Streams and polls read the same events as sockets, from the pipeline's
//! dispatcher ([`crate::pipeline::sessions`]) and its journal, so they get the same events,
//! privacy rules and resume guarantees.

pub(super) mod actions;
pub(super) mod poll;
mod status;
pub(super) mod stream;

pub use poll::sweep_pollers;
pub use status::transport_counts;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;

use crate::auth::{AuthUser, bearer_token};
use crate::error::{AppError, AppResult};
use crate::pipeline::Event;
use crate::pipeline::journal::{FeedMode, Replay};
use crate::pipeline::sessions::{Session, SessionSpec, Transport};
use crate::realtime::rooms;
use crate::realtime::slots::SlotGuard;
use crate::state::{AppState, Core};

/// The stream, poll, action and status routes (under `/api/v1/realtime`). Not behind the
/// conditional-GET layer: a stream has no end to hash, a poll's answer is never the same twice.
pub fn router<A: Adapter>() -> Router<AppState<A>> {
    Router::new()
        .merge(stream::router())
        .merge(poll::router())
        .merge(actions::router())
        .merge(status::router())
}

/// The caller of a stream or poll: `Authorization: Bearer` or, for `EventSource` (which cannot
/// set headers), a `token` query parameter. The header wins when both are sent.
pub struct StreamUser(pub AuthUser);

impl<A: Adapter> FromRequestParts<AppState<A>> for StreamUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<A>) -> Result<Self, AppError> {
        let token = match bearer_token(&parts.headers) {
            Some(Ok(token)) => token.to_owned(),
            Some(Err(())) => {
                return Err(AppError::Unauthorized(
                    "malformed Authorization header".into(),
                ));
            }
            None => {
                let query = parts.uri.query().unwrap_or_default();
                form_urlencoded::parse(query.as_bytes())
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.into_owned())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        AppError::Unauthorized("missing bearer token or token parameter".into())
                    })?
            }
        };
        Ok(StreamUser(state.core.jwt.verify(&token)?))
    }
}

/// `feed=all|following`: which feed activities a stream or poller receives (none without it).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FeedParam {
    All,
    Following,
}

impl FeedParam {
    fn mode(self) -> FeedMode {
        match self {
            FeedParam::All => FeedMode::All,
            FeedParam::Following => FeedMode::Following,
        }
    }

    /// The feed rooms a socket doing `feed:subscribe` with this choice would be in.
    fn rooms(self, user_id: &str) -> Vec<String> {
        let mut list = vec![rooms::feed(user_id)];
        if self == FeedParam::All {
            list.push(rooms::FEED_PUBLIC.to_owned());
        }
        list
    }
}

/// The 429 of a session over `MAX_CONNECTIONS_PER_USER`, with the code sockets get.
fn too_many_connections(limit: u32) -> Response {
    let body = json!({ "error": {
        "code": "TOO_MANY_CONNECTIONS",
        "message": format!("at most {limit} connections per user, sockets, streams and pollers together"),
    }});
    (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response()
}

/// Takes a connection slot for a new session, exactly as a socket's handshake does: counted
/// cluster-wide with the user's sockets, per node while Redis cannot be reached.
async fn reserve_slot(core: &Arc<Core>, user_id: &str, tag: &str) -> Result<SlotGuard, Response> {
    let limit = core.config.max_connections_per_user;
    let slot = SlotGuard::new(core.clone(), user_id, tag);
    match core
        .presence
        .store
        .reserve_connection(user_id, tag, limit)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            slot.disarm();
            return Err(too_many_connections(limit));
        }
        Err(e) => {
            if core.slots.count(user_id) >= limit as usize {
                slot.disarm();
                return Err(too_many_connections(limit));
            }
            tracing::warn!(error = ?e, "reserving a connection slot failed; counting it on this node");
        }
    }
    slot.accept();
    Ok(slot)
}

/// What a new session is in and where it starts.
struct Opened {
    session: Session,
    /// The highest journal id delivered on this node when the session was registered: live
    /// events after it reach the session's queue, earlier ones come from the journal.
    last: u64,
    user: AuthUser,
    room_ids: Vec<String>,
}

/// Signs the user in (profile, presence), takes a slot and registers a session in its rooms,
/// between two events of the dispatcher. `room` limits it to one chat room.
async fn open_session(
    core: &Arc<Core>,
    mut user: AuthUser,
    transport: Transport,
    room: Option<&str>,
    feed: Option<FeedParam>,
    depth: usize,
) -> Result<Opened, Response> {
    core.db_status
        .check()
        .map_err(IntoResponse::into_response)?;
    if let Some(room_id) = room {
        core.chat
            .require_member(room_id, &user.id)
            .await
            .map_err(IntoResponse::into_response)?;
    }
    let claim = user.name_from_token.then_some(user.name.clone());
    user.name = crate::domain::users::sign_in(&core.writes, &core.db, &user.id, claim.as_deref())
        .await
        .map_err(IntoResponse::into_response)?;
    let room_ids = crate::domain::chat::room_ids_of(&core.db, &user.id)
        .await
        .map_err(IntoResponse::into_response)?;
    let rooms_in: Vec<String> = match room {
        Some(room_id) => vec![rooms::chat(room_id)],
        None => {
            let mut list: Vec<String> = room_ids.iter().map(|id| rooms::chat(id)).collect();
            list.push(rooms::user(&user.id));
            list.extend(feed.map(|f| f.rooms(&user.id)).unwrap_or_default());
            list
        }
    };
    let tag = crate::pipeline::sessions::Sessions::new_tag(transport);
    let slot = reserve_slot(core, &user.id, &tag).await?;
    let poller = transport == Transport::Longpoll;
    let spec = SessionSpec {
        user_id: user.id.clone(),
        transport,
        rooms: rooms_in,
        follows_membership: room.is_none(),
        depth,
        overflow: if poller {
            crate::pipeline::sessions::Overflow::DropOldest
        } else {
            crate::pipeline::sessions::Overflow::Close
        },
        queue_journaled: !poller,
        holds: Some(Box::new(slot)),
    };
    let registry = core.clone();
    let (session, last) = core
        .pipeline
        .in_order(move |last| (registry.sessions.register(tag, spec), last))
        .await
        .map_err(IntoResponse::into_response)?;
    crate::realtime::presence::socket_ready(core, &user.id).await;
    Ok(Opened {
        session,
        last,
        user,
        room_ids,
    })
}

/// The journaled events after `cursor` up to `through` for this user, as a resuming socket
/// would get them; `room` keeps only that room's.
async fn replay(
    core: &Core,
    user_id: &str,
    cursor: Option<&str>,
    through: u64,
    feed: Option<FeedParam>,
    room: Option<&str>,
) -> AppResult<Replay> {
    let mut replay = crate::pipeline::journal::replay(
        &core.db,
        crate::pipeline::journal::ReplayRequest {
            user_id,
            after: cursor,
            through,
            feed: feed.map(FeedParam::mode),
            limit: core.config.resume_max_events,
            epoch: None,
        },
    )
    .await?;
    if let Some(room_id) = room {
        // The journal keeps no live targets: a chat event names its room in its payload.
        replay.events.retain(|e| about_room(e, room_id));
    }
    Ok(replay)
}

/// Whether a journaled event is about `room_id` (`roomId`, or the `room` of a room update).
fn about_room(event: &Event, room_id: &str) -> bool {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe<'a> {
        #[serde(borrow)]
        room_id: Option<&'a str>,
        #[serde(borrow)]
        room: Option<RoomProbe<'a>>,
    }
    #[derive(Deserialize)]
    struct RoomProbe<'a> {
        #[serde(borrow)]
        id: Option<&'a str>,
    }
    serde_json::from_str::<Probe<'_>>(event.payload.get())
        .is_ok_and(|p| p.room_id == Some(room_id) || p.room.and_then(|r| r.id) == Some(room_id))
}

/// The `session:ready` payload of a stream: the socket's fields plus where the client stands.
fn session_ready(opened: &Opened, replay: &Replay, unread: u64) -> Value {
    json!({
        "userId": opened.user.id,
        "rooms": opened.room_ids,
        "unreadNotifications": unread,
        "serverTime": crate::time::now_rfc3339(),
        "cursor": replay.cursor.to_string(),
        "recovered": replay.recovered,
        "reset": replay.reset,
        "replayed": replay.events.len(),
        "session": opened.session.tag,
    })
}

/// The wire form of one event for polls: `{ id, event, data }`, `data` the same JSON bytes
/// Socket.IO sends.
#[derive(serde::Serialize)]
struct PolledEvent {
    id: Option<String>,
    event: Arc<str>,
    data: Arc<serde_json::value::RawValue>,
}

impl PolledEvent {
    fn of(event: &Event, epoch: &str) -> Self {
        Self {
            id: event.id.map(|id| format!("{epoch}:{id}")),
            event: event.name.clone(),
            data: event.payload.clone(),
        }
    }
}
