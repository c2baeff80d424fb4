//! Summaries instead of items: `feed:subscribe { mode: "counts" }` sends
//! `feed:updates_available { count, latestId, feedType }` and `feed:watch { targetId }` sends
//! `feed:new_comments_available { targetId, count }`, each at most once per interval and only
//! when something arrived, so a social app can show "3 new posts" instead of inserting them
//! under the reader's thumb.
//!
//! A counts-mode socket is in no feed room, so it never gets the individual feed events. Its
//! summaries come from one timer task per socket (started by the first summary subscription,
//! ended by the last unsubscribe, by the disconnect, or by shutdown) that counts what the
//! database holds since the last summary. The database is shared by every node, so this is
//! cluster-wide without any extra channel, and a quiet feed costs one index lookup per socket
//! per interval. Per socket: one interval (the latest `intervalMs` given, raised to
//! `FEED_COUNTS_MIN_INTERVAL_MS`), one feed summary and at most `MAX_WATCHES_PER_SOCKET` targets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use tokio_util::sync::CancellationToken;

use crate::domain::feed::Summary;
use crate::error::{AppError, AppResult};
use crate::state::Core;

/// Longest interval a client may ask for.
pub const MAX_INTERVAL_MS: u64 = 3_600_000;

/// How a socket takes its feed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each activity as it arrives (`feed:new_post`, …): the contract's behaviour.
    #[default]
    Events,
    /// A periodic `feed:updates_available` count.
    Counts,
}

/// The feed summary of a counts-mode socket.
#[derive(Clone, Debug)]
struct FeedSummary {
    following_only: bool,
    /// Newest activity id already summarised (or existing at subscription).
    cursor: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    feed: Option<FeedSummary>,
    /// Watched targets and their cursors.
    targets: HashMap<String, Option<String>>,
    interval: Duration,
    /// The running timer task, cancelled when the socket goes away.
    task: Option<CancellationToken>,
}

/// A socket's summary subscriptions, kept in its extensions.
#[derive(Clone, Default)]
pub struct Summaries(Arc<Mutex<State>>);

impl Summaries {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data, never held across an await: a poisoned lock is still consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn summaries_of<A: Adapter>(socket: &SocketRef<A>) -> Summaries {
    if let Some(found) = socket.extensions.get::<Summaries>() {
        return found;
    }
    let fresh = Summaries::default();
    socket.extensions.insert(fresh.clone());
    fresh
}

/// The interval asked for, raised to the configured minimum; `None` keeps the socket's.
pub fn interval(core: &Core, asked_ms: Option<u64>) -> AppResult<Option<Duration>> {
    let Some(ms) = asked_ms else { return Ok(None) };
    if ms > MAX_INTERVAL_MS {
        return Err(AppError::field(
            "intervalMs",
            format!("must be at most {MAX_INTERVAL_MS}"),
        ));
    }
    Ok(Some(Duration::from_millis(
        ms.max(core.config.feed_counts_min_interval_ms),
    )))
}

fn apply_interval(core: &Core, state: &mut State, asked: Option<Duration>) -> Duration {
    if let Some(asked) = asked {
        state.interval = asked;
    } else if state.interval.is_zero() {
        state.interval = Duration::from_millis(core.config.feed_counts_interval_ms);
    }
    state.interval
}

/// Switches the socket to counts mode (or updates its interval); returns the interval.
pub async fn subscribe_counts<A: Adapter>(
    socket: &SocketRef<A>,
    core: &Arc<Core>,
    user_id: &str,
    following_only: bool,
    asked: Option<Duration>,
) -> AppResult<Duration> {
    let cursor = core.feed.newest_id().await?;
    let summaries = summaries_of(socket);
    let every = {
        let mut state = summaries.lock();
        let keep = state
            .feed
            .as_ref()
            .filter(|f| f.following_only == following_only)
            .map(|f| f.cursor.clone());
        state.feed = Some(FeedSummary {
            following_only,
            cursor: keep.unwrap_or(cursor),
        });
        apply_interval(core, &mut state, asked)
    };
    ensure_task(socket, core, user_id, &summaries);
    Ok(every)
}

/// Ends the feed summary of the socket (targets stay watched).
pub fn unsubscribe_counts<A: Adapter>(socket: &SocketRef<A>) {
    if let Some(summaries) = socket.extensions.get::<Summaries>() {
        summaries.lock().feed = None;
    }
}

/// Starts counting new comments on `target_id`; returns the interval.
pub async fn watch_target<A: Adapter>(
    socket: &SocketRef<A>,
    core: &Arc<Core>,
    user_id: &str,
    target_id: &str,
    asked: Option<Duration>,
) -> AppResult<Duration> {
    let cursor = core.feed.newest_id().await?;
    let summaries = summaries_of(socket);
    let every = {
        let mut state = summaries.lock();
        let limit = core.config.max_watches_per_socket;
        if !state.targets.contains_key(target_id) && state.targets.len() >= limit {
            return Err(AppError::Conflict(format!(
                "a socket watches at most {limit} targets; feed:unwatch one first"
            )));
        }
        state.targets.entry(target_id.to_owned()).or_insert(cursor);
        apply_interval(core, &mut state, asked)
    };
    ensure_task(socket, core, user_id, &summaries);
    Ok(every)
}

/// Stops counting comments on `target_id`.
pub fn unwatch_target<A: Adapter>(socket: &SocketRef<A>, target_id: &str) {
    if let Some(summaries) = socket.extensions.get::<Summaries>() {
        summaries.lock().targets.remove(target_id);
    }
}

/// The socket disconnected: its timer stops now rather than at its next tick.
pub fn socket_gone<A: Adapter>(socket: &SocketRef<A>) {
    if let Some(summaries) = socket.extensions.get::<Summaries>() {
        let mut state = summaries.lock();
        state.feed = None;
        state.targets.clear();
        if let Some(task) = state.task.take() {
            task.cancel();
        }
    }
}

fn ensure_task<A: Adapter>(
    socket: &SocketRef<A>,
    core: &Arc<Core>,
    user_id: &str,
    summaries: &Summaries,
) {
    let token = {
        let mut state = summaries.lock();
        if state.task.is_some() {
            return;
        }
        let token = CancellationToken::new();
        state.task = Some(token.clone());
        token
    };
    tokio::spawn(run(
        socket.clone(),
        core.clone(),
        user_id.to_owned(),
        summaries.clone(),
        token,
    ));
}

/// What one tick has to count, copied out of the lock.
struct Due {
    feed: Option<FeedSummary>,
    targets: Vec<(String, Option<String>)>,
}

async fn run<A: Adapter>(
    socket: SocketRef<A>,
    core: Arc<Core>,
    user_id: String,
    summaries: Summaries,
    token: CancellationToken,
) {
    tracing::debug!(sid = %socket.id, "feed summaries started");
    loop {
        let every = summaries.lock().interval;
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = token.cancelled() => break,
            () = core.shutdown.cancelled() => break,
        }
        let due = {
            let mut state = summaries.lock();
            if !socket.connected() || (state.feed.is_none() && state.targets.is_empty()) {
                state.task = None;
                break;
            }
            Due {
                feed: state.feed.clone(),
                targets: state
                    .targets
                    .iter()
                    .map(|(t, c)| (t.clone(), c.clone()))
                    .collect(),
            }
        };
        if let Err(e) = tick(&socket, &core, &user_id, &summaries, due).await {
            tracing::warn!(sid = %socket.id, error = %e, "feed summary failed");
        }
    }
    tracing::debug!(sid = %socket.id, "feed summaries stopped");
}

/// Counts what arrived since each cursor, emits the non-zero summaries and moves the cursors
/// to the newest activity seen, so the next summary counts only what came after.
async fn tick<A: Adapter>(
    socket: &SocketRef<A>,
    core: &Core,
    user_id: &str,
    summaries: &Summaries,
    due: Due,
) -> AppResult<()> {
    let Some(newest) = core.feed.newest_id().await? else {
        return Ok(());
    };
    let stale = |cursor: &Option<String>| cursor.as_deref().is_none_or(|c| c < newest.as_str());
    if let Some(feed) = due.feed.filter(|f| stale(&f.cursor)) {
        let summary = Summary::Feed {
            following_only: feed.following_only,
        };
        let arrived = core
            .feed
            .arrived(user_id, summary, feed.cursor.as_deref(), &newest)
            .await?;
        if let Some(state) = summaries.lock().feed.as_mut() {
            state.cursor = Some(newest.clone());
        }
        if arrived.count > 0 {
            let feed_type = if feed.following_only {
                "following"
            } else {
                "all"
            };
            emit(
                socket,
                core,
                "feed:updates_available",
                json!({ "count": arrived.count, "latestId": arrived.latest_id, "feedType": feed_type }),
            );
        }
    }
    for (target_id, cursor) in due.targets.into_iter().filter(|(_, c)| stale(c)) {
        let summary = Summary::Comments {
            target_id: &target_id,
        };
        let arrived = core
            .feed
            .arrived(user_id, summary, cursor.as_deref(), &newest)
            .await?;
        if let Some(state) = summaries.lock().targets.get_mut(&target_id) {
            *state = Some(newest.clone());
        }
        if arrived.count > 0 {
            emit(
                socket,
                core,
                "feed:new_comments_available",
                json!({ "targetId": target_id, "count": arrived.count }),
            );
        }
    }
    Ok(())
}

fn emit<A: Adapter>(
    socket: &SocketRef<A>,
    core: &Core,
    event: &'static str,
    payload: serde_json::Value,
) {
    match socket.emit(event, &payload) {
        Ok(()) => core.metrics.event_out(event),
        Err(e) => tracing::debug!(sid = %socket.id, event, error = %e, "summary not sent"),
    }
}
