//! `GET /stream` and `GET /stream/rooms/:roomId`: Server-Sent Events. The first event is
//! `session:ready`, then the events missed since `Last-Event-ID` (or `cursor`) from the journal,
//! then live ones from this node's dispatcher. Every journaled event carries its cursor as the
//! SSE `id`, so the browser's automatic reconnect resumes exactly where it stopped.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use serde::Deserialize;
use socketioxide::adapter::Adapter;

use super::{FeedParam, Opened, StreamUser, open_session, replay, session_ready};
use crate::http::json::Query;
use crate::pipeline::Event;
use crate::pipeline::sessions::{CloseReason, Next, Session, Transport};
use crate::state::{AppState, Core};

pub fn router<A: Adapter>() -> Router<AppState<A>> {
    Router::new()
        .route("/stream", get(stream_all::<A>))
        .route("/stream/rooms/{room_id}", get(stream_room::<A>))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(in crate::http) struct StreamParams {
    /// Adds feed activities: `all` (followed and public) or `following`; none without it.
    /// Ignored by the one-room stream.
    feed: Option<FeedParam>,
    /// Where to resume (a frame's `id`); `Last-Event-ID` wins when both are sent.
    cursor: Option<String>,
}

async fn stream_all<A: Adapter>(
    State(state): State<AppState<A>>,
    StreamUser(user): StreamUser,
    Query(params): Query<StreamParams>,
    headers: HeaderMap,
) -> Response {
    open(state.core, user, params, &headers, None).await
}

async fn stream_room<A: Adapter>(
    State(state): State<AppState<A>>,
    StreamUser(user): StreamUser,
    Path(room_id): Path<String>,
    Query(params): Query<StreamParams>,
    headers: HeaderMap,
) -> Response {
    if room_id.is_empty() || room_id.chars().count() > 64 {
        return crate::error::AppError::field("roomId", "must be 1 to 64 characters")
            .into_response();
    }
    let params = StreamParams {
        feed: None,
        ..params
    };
    open(state.core, user, params, &headers, Some(&room_id)).await
}

/// The resume position: the `Last-Event-ID` the browser sends on reconnect, else `cursor`.
fn cursor_of(headers: &HeaderMap, params: &StreamParams) -> Option<String> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .or_else(|| params.cursor.clone())
}

async fn open(
    core: Arc<Core>,
    user: crate::auth::AuthUser,
    params: StreamParams,
    headers: &HeaderMap,
    room: Option<&str>,
) -> Response {
    let cursor = cursor_of(headers, &params);
    let depth = core.config.sse_queue_depth;
    let opened = match open_session(&core, user, Transport::Sse, room, params.feed, depth).await {
        Ok(opened) => opened,
        Err(response) => return response,
    };
    // From here on the session is registered: the guard forgets it on every path.
    let guard = Registered {
        core: core.clone(),
        id: opened.session.id,
    };
    let first = match first_frames(&core, &opened, cursor.as_deref(), params.feed, room).await {
        Ok(frames) => frames,
        Err(e) => return e.into_response(),
    };
    let keep_alive = KeepAlive::new()
        .interval(Duration::from_millis(core.config.sse_keepalive_ms))
        .text("keep-alive");
    let state = Live {
        epoch: core.pipeline.epoch().to_owned(),
        pending: first,
        seen: opened.last,
        session: opened.session,
        done: false,
        registered: guard,
    };
    let mut response = Sse::new(live(state)).keep_alive(keep_alive).into_response();
    // Reverse proxies (nginx) must pass frames on at once, not buffer them.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `session:ready` (with the `retry:` hint, and the resume position as its id when nothing
/// is replayed), then the replayed events.
async fn first_frames(
    core: &Core,
    opened: &Opened,
    cursor: Option<&str>,
    feed: Option<FeedParam>,
    room: Option<&str>,
) -> crate::error::AppResult<VecDeque<SseEvent>> {
    let user_id = &opened.user.id;
    let replay = replay(core, user_id, cursor, opened.last, feed, room).await?;
    let unread = crate::domain::notifications::unread_count(&core.db, user_id).await?;
    let ready = session_ready(opened, &replay, unread);
    let mut frames = VecDeque::with_capacity(replay.events.len() + 1);
    let mut ready = SseEvent::default()
        .event("session:ready")
        .retry(Duration::from_millis(core.config.sse_retry_ms))
        .data(ready.to_string());
    // The resume position becomes the browser's `Last-Event-ID` only when nothing is replayed:
    // with a replay, a stream cut before its last replayed frame must resume from the client's
    // own cursor (an SSE event without `id:` keeps the previous one), not skip what is missing.
    if replay.events.is_empty() {
        ready = ready.id(replay.cursor.to_string());
    }
    frames.push_back(ready);
    let epoch = replay.cursor.epoch.clone();
    frames.extend(replay.events.iter().map(|e| frame(e, &epoch)));
    Ok(frames)
}

/// One event as SSE: `id:` for journaled events, `event:` its name, `data:` its payload bytes.
fn frame(event: &Event, epoch: &str) -> SseEvent {
    let mut frame = SseEvent::default()
        .event(&*event.name)
        .data(event.payload.get());
    if let Some(id) = event.id {
        frame = frame.id(format!("{epoch}:{id}"));
    }
    frame
}

/// The last frame of a stream the server closes.
fn closing_frame(reason: CloseReason) -> SseEvent {
    let body = serde_json::json!({ "code": reason.code(), "message": reason.message() });
    SseEvent::default()
        .event("session:error")
        .data(body.to_string())
}

/// Forgets the session (and gives its slot back) when the response is dropped: the client
/// went away, or the stream ended.
struct Registered {
    core: Arc<Core>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.core.sessions.remove(self.id);
    }
}

struct Live {
    epoch: String,
    pending: VecDeque<SseEvent>,
    /// The highest journal id sent: a journaled event at or below it is a duplicate.
    seen: u64,
    session: Session,
    done: bool,
    registered: Registered,
}

fn live(state: Live) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if let Some(frame) = st.pending.pop_front() {
            return Some((Ok(frame), st));
        }
        loop {
            // A graceful stop ends the stream: the client reconnects (to another node) and
            // resumes from its last id, losing nothing the journal holds.
            let next = tokio::select! {
                next = st.session.next() => next,
                () = st.registered.core.shutdown.cancelled() => return None,
            };
            match next {
                Next::Event(event) => {
                    if let Some(id) = event.id {
                        if id <= st.seen {
                            continue;
                        }
                        st.seen = id;
                    }
                    let frame = frame(&event, &st.epoch);
                    return Some((Ok(frame), st));
                }
                Next::Closed(reason) => {
                    st.done = true;
                    return Some((Ok(closing_frame(reason)), st));
                }
            }
        }
    })
}
