//! `GET /poll`: long polling. Journaled events come straight from the journal after
//! `last_poll_id`, so any node can answer any poll; when there are none the poll waits (up to
//! `timeout_ms`) for this node's dispatcher to deliver something to the poller's session.
//! Ephemeral events (typing, presence) have no journal: they wait between polls in a small
//! per-poller buffer on the node, keyed by the `session` id the responses carry — best effort
//! when the next poll lands on another node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use socketioxide::adapter::Adapter;

use super::{FeedParam, PolledEvent, StreamUser, open_session, replay};
use crate::auth::AuthUser;
use crate::error::AppResult;
use crate::http::json::Query;
use crate::pipeline::Kind;
use crate::pipeline::sessions::Transport;
use crate::realtime::slots::SlotGuard;
use crate::state::{AppState, Core};

/// Ephemeral events kept for one poller between two polls; the oldest go first beyond it.
pub const POLL_BUFFER_DEPTH: usize = 256;

pub fn router<A: Adapter>() -> Router<AppState<A>> {
    Router::new().route("/poll", get(poll::<A>))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(in crate::http) struct PollParams {
    /// The previous answer's `lastPollId`; without it the poll answers at once with the
    /// current cursor.
    last_poll_id: Option<String>,
    /// How long to wait for an event, capped at (and by default) `POLL_TIMEOUT_MS`.
    timeout_ms: Option<u64>,
    /// The previous answer's `session`, so ephemeral events kept between polls reach you.
    session: Option<String>,
    /// Adds feed activities: `all` (followed and public) or `following`; none without it.
    feed: Option<FeedParam>,
}

async fn poll<A: Adapter>(
    State(state): State<AppState<A>>,
    StreamUser(user): StreamUser,
    Query(params): Query<PollParams>,
) -> Response {
    match answer(state.core, user, params).await {
        Ok(response) => response,
        Err(response) => response,
    }
}

async fn answer(core: Arc<Core>, user: AuthUser, params: PollParams) -> Result<Response, Response> {
    let max = core.config.poll_timeout_ms;
    let timeout = Duration::from_millis(params.timeout_ms.unwrap_or(max).min(max));
    let known = params
        .session
        .as_deref()
        .and_then(|tag| core.sessions.get(tag, &user.id, Transport::Longpoll));
    let (session, mut through) = match known {
        Some(session) => {
            crate::realtime::presence::record_activity(&core, &user.id).await;
            (session, None)
        }
        None => {
            let opened = open_session(
                &core,
                user,
                Transport::Longpoll,
                None,
                params.feed,
                POLL_BUFFER_DEPTH,
            )
            .await?;
            (opened.session, Some(opened.last))
        }
    };
    let _busy = session.busy();
    let epoch = core.pipeline.epoch().to_owned();
    let Some(cursor) = params.last_poll_id.filter(|c| !c.is_empty()) else {
        // A first poll: where the client stands now; its state it loads over REST.
        let last = match through {
            Some(last) => last,
            None => in_order_last(&core)
                .await
                .map_err(IntoResponse::into_response)?,
        };
        let events: Vec<PolledEvent> = session
            .drain()
            .iter()
            .map(|e| PolledEvent::of(e, &epoch))
            .collect();
        return Ok(axum::Json(json!({
            "events": events,
            "lastPollId": format!("{epoch}:{last}"),
            "session": session.tag,
            "recovered": false,
            "reset": Kind::ALL,
        }))
        .into_response());
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let started = Instant::now();
    loop {
        let last = match through.take() {
            Some(last) => last,
            None => in_order_last(&core)
                .await
                .map_err(IntoResponse::into_response)?,
        };
        let replay = replay(
            &core,
            &session.user_id,
            Some(&cursor),
            last,
            params.feed,
            None,
        )
        .await
        .map_err(IntoResponse::into_response)?;
        let ephemeral = session.drain();
        let timed_out = started.elapsed() >= timeout || core.shutdown.is_cancelled();
        if !replay.events.is_empty() || !ephemeral.is_empty() || !replay.recovered || timed_out {
            let epoch = replay.cursor.epoch.clone();
            let events: Vec<PolledEvent> = replay
                .events
                .iter()
                .chain(ephemeral.iter().map(|e| &**e))
                .map(|e| PolledEvent::of(e, &epoch))
                .collect();
            return Ok(axum::Json(json!({
                "events": events,
                "lastPollId": replay.cursor.to_string(),
                "session": session.tag,
                "recovered": replay.recovered,
                "reset": replay.reset,
            }))
            .into_response());
        }
        // A graceful stop answers waiting polls at once rather than holding them.
        tokio::select! {
            () = session.woken() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = core.shutdown.cancelled() => {}
        }
    }
}

/// The highest journal id this node's dispatcher has delivered.
async fn in_order_last(core: &Core) -> AppResult<u64> {
    core.pipeline.in_order(|last| last).await
}

/// Forgets pollers that have not polled within the presence grace period, giving their
/// connection slot back (their user then turns offline like one whose last socket went away,
/// the grace period having already run). Runs until shutdown.
pub async fn sweep_pollers(core: Arc<Core>) {
    let grace = core.config.presence_grace();
    let period = (grace / 2).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = core.shutdown.cancelled() => break,
        }
        let Some(cutoff) = Instant::now().checked_sub(grace) else {
            continue;
        };
        for held in core.sessions.expire(Transport::Longpoll, cutoff) {
            let Some(held) = held else { continue };
            if let Ok(slot) = held.downcast::<SlotGuard>()
                && let Err(e) = slot.release(chrono::Utc::now()).await
            {
                tracing::warn!(error = ?e, "releasing a poller's slot failed; left to reconciliation");
            }
        }
    }
}
