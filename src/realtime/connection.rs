//! The `/realtime` namespace: what happens when a socket connects and disconnects.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::adapter::Adapter;
use socketioxide::extract::{Extension, SocketRef, State, TryData};
use socketioxide::socket::DisconnectReason;
use socketioxide::{SendError, SocketError, SocketIo};

use super::rooms;
use super::slots::SlotGuard;
use crate::auth::AuthUser;
use crate::domain::{chat, notifications, users};
use crate::error::{AppError, AppResult};
use crate::pipeline::Event;
use crate::pipeline::journal::{self, FeedMode, ReplayRequest};
use crate::state::Core;

/// The namespace every client connects to.
pub const NAMESPACE: &str = "/realtime";

/// Connect handler: the socket passed [`crate::auth::authenticate_socket`], so it has a user.
/// Every connect is a resume (see [`start_session`]); `auth.cursor` and `auth.feed` say from
/// where and whether feed activities are included.
pub async fn on_connect<A: Adapter>(
    socket: SocketRef<A>,
    Extension(user): Extension<AuthUser>,
    State(core): State<Arc<Core>>,
    TryData(auth): TryData<Value>,
) {
    core.metrics.socket_connected();
    socket
        .extensions
        .insert(Arc::new(super::order::Sequencer::new(line_limits(&core))));
    socket.on_disconnect(on_disconnect::<A>);
    super::events::register(&socket);

    let resume = ResumeAuth::from_auth(auth.ok().as_ref());
    let mut attempt = 1;
    loop {
        let Err(e) = start_session(&socket, &user, &core, &resume).await else {
            return;
        };
        core.pipeline.release(&socket.id.to_string());
        if e.is_pool_timeout() && attempt < SETUP_ATTEMPTS && socket.connected() {
            tracing::warn!(sid = %socket.id, user = %user.id, attempt, "socket setup waited out the pool; retrying");
            attempt += 1;
            continue;
        }
        // Without its rooms the socket would silently miss events: better to make the client
        // reconnect (and resume) than to leave it half set up.
        tracing::error!(sid = %socket.id, user = %user.id, error = %e, "socket setup failed");
        let _ = socket.disconnect();
        return;
    }
}

/// How many connecting sockets read their session from the database at once (64 per pooled
/// connection); the others wait their turn in arrival order. In a reconnect avalanche every
/// setup in flight holds its queries' buffers (10 to 15 KiB each) while it waits for the pool:
/// 10,000 at once left the process about 280 MB larger after the burst, for no gain, since
/// the pool serves only so many at a time. Sending (`session:ready`, the replay) is outside
/// the turn, so a client that reads slowly holds none. Fewer turns (4 per connection) kept
/// even less but readied the sockets a third slower: setups also wait for the dispatcher.
pub fn setup_turns(database_url: &str) -> usize {
    64 * crate::db::pool_size(database_url) as usize
}

/// How many times a socket's setup is tried when it only waited out the pool
/// (`DB_ACQUIRE_TIMEOUT_MS`), as in a reconnect avalanche whose session reads queue for the
/// pool. A disconnected socket (`io server disconnect`) is one socket.io-client never
/// reconnects by itself, so a busy pool must not end it; trying again costs no more than the
/// wait itself, where a reconnect would add a handshake. A socket that went away meanwhile
/// is not tried again.
const SETUP_ATTEMPTS: u32 = 4;

/// What a connecting client asked to resume from, read from its CONNECT auth payload.
#[derive(Debug, Default, PartialEq)]
struct ResumeAuth {
    /// `auth.cursor`: the last cursor the client received (any string; checked by replay).
    cursor: Option<String>,
    /// `auth.feed`: `"all"` or `"following"` subscribes the socket to the feed at connect.
    feed: Option<FeedMode>,
}

impl ResumeAuth {
    fn from_auth(auth: Option<&Value>) -> Self {
        let Some(auth) = auth else {
            return Self::default();
        };
        let cursor = auth
            .get("cursor")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty() && c.len() <= 128)
            .map(str::to_owned);
        let feed = auth.get("feed").and_then(Value::as_str).and_then(|f| {
            let mode = FeedMode::parse(f);
            if mode.is_none() {
                tracing::debug!(feed = f, "unknown auth.feed ignored");
            }
            mode
        });
        Self { cursor, feed }
    }
}

/// How long one resume waits for room in a socket's outgoing buffer before giving it up.
const RESUME_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Rounds of emptying the held buffer outside the dispatcher before the final handoff.
const HANDOFF_ROUNDS: usize = 8;

/// Sets a new socket up with no gap and no duplicate between what it missed and what comes
/// live: (1) inside the dispatcher, start holding the events for its rooms and note the last
/// id delivered; (2) replay the journal from the client's cursor up to that id; (3) send
/// `session:ready` (with `cursor`, `recovered`, `reset`, `replayed`) and the replayed events;
/// (4) send what was held meanwhile, and, inside the dispatcher again, join the rooms and stop
/// holding; (5) `presence:snapshot`, and `notification:unread_count` after a resume.
async fn start_session<A: Adapter>(
    socket: &SocketRef<A>,
    user: &AuthUser,
    core: &Arc<Core>,
    resume: &ResumeAuth,
) -> AppResult<()> {
    let turn = core
        .setups
        .acquire()
        .await
        .map_err(|e| AppError::Internal(e.into()))?;
    if !socket.connected() {
        // Gone while it waited (the client gave up and reconnects): nothing to set up.
        return Ok(());
    }
    core.db_status.check()?;
    let claim = user.name_from_token.then_some(user.name.as_str());
    let name = users::sign_in(&core.writes, &core.db, &user.id, claim).await?;
    if name != user.name {
        // Later events of this socket show the profile's name, not the bare id.
        socket.extensions.insert(AuthUser {
            name,
            ..user.clone()
        });
    }
    let room_ids = chat::room_ids_of(&core.db, &user.id).await?;
    let mut rooms: HashSet<String> = room_ids.iter().map(|id| rooms::chat(id)).collect();
    rooms.insert(rooms::user(&user.id));
    match resume.feed {
        Some(FeedMode::All) => {
            rooms.insert(rooms::feed(&user.id));
            rooms.insert(rooms::FEED_PUBLIC.to_owned());
        }
        Some(FeedMode::Following) => {
            rooms.insert(rooms::feed(&user.id));
        }
        None => {}
    }
    let unread = notifications::unread_count(&core.db, &user.id).await?;

    // (1) Hold from here on, once this node's dispatcher delivered everything journaled so
    // far: a dispatcher behind the journal (its bus was down, or the client comes from a node
    // that was further) catches up first, so the cursor given is the journal's head and
    // nothing before it arrives again as live.
    let sid = socket.id.to_string();
    let (min, epoch) = journal::head(&core.db).await?;
    // The replay's one query runs outside the turn: waiting for the dispatcher with a turn
    // held left the pool idle.
    drop(turn);
    let through = {
        let c = core.clone();
        let sid = sid.clone();
        let user_id = user.id.clone();
        let mut held_rooms = rooms.clone();
        held_rooms.insert(sid.clone());
        core.pipeline
            .in_order_after(min, move |last| {
                c.pipeline.hold(&sid, &user_id, held_rooms);
                last
            })
            .await?
    };

    // (2) What was missed, in one query.
    let replay = journal::replay(
        &core.db,
        ReplayRequest {
            user_id: &user.id,
            after: resume.cursor.as_deref(),
            through,
            feed: resume.feed,
            limit: core.config.resume_max_events,
            epoch: Some(&epoch),
        },
    )
    .await?;

    // (3) Ready, then the replay. Nothing from here on may fail with a pool timeout:
    // `on_connect` runs the whole setup again on one, which must not send a second ready.
    super::presence::socket_ready(core, &user.id).await;
    let reset: Vec<&str> = replay.reset.iter().map(|k| k.as_str()).collect();
    let ready = json!({
        "userId": user.id,
        "rooms": room_ids,
        "unreadNotifications": unread,
        "serverTime": crate::time::now_rfc3339(),
        "cursor": replay.cursor.to_string(),
        "recovered": replay.recovered,
        "reset": reset,
        "replayed": replay.events.len(),
    });
    core.metrics.event_out("session:ready");
    if !send_waiting(socket, "session:ready", &ready).await {
        return Ok(());
    }
    for event in &replay.events {
        if !send_event(socket, core, event).await {
            return Ok(());
        }
    }

    // (4) Hand over to the live stream.
    for _ in 0..HANDOFF_ROUNDS {
        let Some((held, overflowed)) = core.pipeline.take_held(&sid) else {
            return Ok(());
        };
        if overflowed {
            core.pipeline.release(&sid);
            super::slow::drop_socket(socket.clone(), core, super::slow::DropReason::SlowConsumer);
            return Ok(());
        }
        if held.is_empty() {
            break;
        }
        for event in &held {
            if !send_event(socket, core, event).await {
                return Ok(());
            }
        }
    }
    let handed = {
        let c = core.clone();
        let socket = socket.clone();
        let sid = sid.clone();
        core.pipeline
            .in_order(move |_| {
                let core = c;
                let Some(held) = core.pipeline.release(&sid) else {
                    return false;
                };
                let mut rooms = held.rooms;
                rooms.remove(&sid);
                socket.join(rooms.into_iter().collect::<Vec<_>>());
                // What arrived since the last round: sent now, in order, before anything live.
                !held.overflowed
                    && held.events.iter().all(|e| {
                        let cursor = e.id.map(|id| core.pipeline.cursor(id).to_string());
                        let sent = match cursor {
                            Some(c) => socket.emit(&*e.name, &(&*e.payload, c)),
                            None => socket.emit(&*e.name, &*e.payload),
                        };
                        sent.is_ok()
                    })
            })
            .await?
    };
    if !handed {
        super::slow::drop_socket(socket.clone(), core, super::slow::DropReason::SlowConsumer);
        return Ok(());
    }

    // (5) State, not history. A fresh client has its count in `session:ready` already (and
    // existing clients expect no count they did not cause), so only a resume gets it again.
    let snapshot = presence_snapshot(core, &user.id).await;
    send_waiting(socket, "presence:snapshot", &snapshot).await;
    if resume.cursor.is_some() {
        send_waiting(
            socket,
            "notification:unread_count",
            &json!({ "count": unread }),
        )
        .await;
    }
    Ok(())
}

/// `presence:snapshot { users: [{ userId, status, lastSeen }] }`: everyone the user may see
/// (followees, at most 1,000, and direct-room partners), privacy rules applied. Empty when the
/// store cannot be read (live updates follow anyway).
async fn presence_snapshot(core: &Core, user_id: &str) -> Value {
    const MAX_FOLLOWEES: u64 = 1_000;
    let views = async {
        let users = core.presence.visible_to(user_id, MAX_FOLLOWEES).await?;
        core.presence.view(&core.preferences, user_id, &users).await
    }
    .await;
    let users: Vec<Value> = match views {
        Ok(views) => views
            .into_iter()
            .map(|v| {
                json!({
                    "userId": v.user_id,
                    "status": v.status,
                    "lastSeen": v.last_seen.as_ref().map(crate::time::rfc3339),
                })
            })
            .collect(),
        Err(e) => {
            tracing::warn!(user = user_id, error = %e, "presence snapshot failed");
            Vec::new()
        }
    };
    json!({ "users": users })
}

/// Sends one pipeline event to one socket as live delivery would (journaled ones with their
/// cursor as trailing argument), waiting for room in its buffer.
async fn send_event<A: Adapter>(socket: &SocketRef<A>, core: &Core, event: &Event) -> bool {
    match event.id {
        Some(id) => {
            let cursor = core.pipeline.cursor(id).to_string();
            send_waiting(socket, &event.name, &(&*event.payload, cursor)).await
        }
        None => send_waiting(socket, &event.name, &*event.payload).await,
    }
}

/// Emits to one socket, waiting (up to [`RESUME_SEND_TIMEOUT`]) while its outgoing buffer is
/// full: a replay can be longer than the buffer. False when the socket is gone or stayed full.
async fn send_waiting<A: Adapter, T: Serialize + ?Sized>(
    socket: &SocketRef<A>,
    event: &str,
    data: &T,
) -> bool {
    let deadline = tokio::time::Instant::now() + RESUME_SEND_TIMEOUT;
    loop {
        match socket.emit(event, data) {
            Ok(()) => return true,
            Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                if tokio::time::Instant::now() >= deadline {
                    tracing::debug!(sid = %socket.id, "resume: socket buffer stayed full");
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => {
                tracing::debug!(sid = %socket.id, error = %e, event, "resume: not sent");
                return false;
            }
        }
    }
}

/// The socket's event budget and line depth, from the settings.
/// The per-socket budget is never stricter than the message rate limit the operator set: a
/// deployment that allows 1,000 messages a minute lets one socket send them in one burst, and
/// keeps that many waiting (up to [`MAX_QUEUE_DEPTH`]).
fn line_limits(core: &Core) -> super::order::LineLimits {
    let config = &core.config;
    let messages = config.rate_limit_per_minute;
    let burst = config.socket_event_burst.max(messages);
    super::order::LineLimits {
        budget: super::budget::BudgetLimits {
            per_second: config.socket_events_per_second.max(messages.div_ceil(60)),
            burst,
            flood_rejections: config.socket_flood_rejections,
        },
        depth: config
            .socket_queue_depth
            .max((burst as usize).min(MAX_QUEUE_DEPTH)),
    }
}

/// The deepest per-socket queue a raised message rate limit can ask for.
const MAX_QUEUE_DEPTH: usize = 10_000;

async fn on_disconnect<A: Adapter>(
    socket: SocketRef<A>,
    reason: DisconnectReason,
    State(core): State<Arc<Core>>,
    io: SocketIo<A>,
) {
    core.metrics.socket_disconnected();
    let Some(user) = socket.extensions.get::<AuthUser>() else {
        return;
    };
    tracing::debug!(sid = %socket.id, user = %user.id, %reason, "socket disconnected");
    // A socket that goes while resuming leaves no held buffer behind.
    core.pipeline.release(&socket.id.to_string());
    super::feed_counts::socket_gone(&socket);
    let offline_at = chrono::Utc::now() + grace(&core);
    let left = match socket.extensions.remove::<Arc<SlotGuard>>() {
        Some(slot) => slot.release(offline_at).await,
        None => {
            core.presence
                .store
                .release_connection(&user.id, &socket.id.to_string(), offline_at)
                .await
        }
    };
    let left = left.unwrap_or_else(|e| {
        // The socket is no longer listed as live: the slot reconciliation frees it.
        tracing::warn!(user = %user.id, error = ?e, "releasing connection slot failed; left to reconciliation");
        0
    });
    if left == 0 {
        // The user's last socket, on any node: whatever they were typing is over, here and on
        // the node their typing socket was on.
        super::chat::clear_typing(&io, &core, &user.id).await;
        core.bus
            .publish(crate::domain::cache::Invalidation::Typing(user.id.clone()));
    }
}

/// The presence grace period as a chrono duration.
pub fn grace(core: &Core) -> chrono::Duration {
    chrono::Duration::from_std(core.config.presence_grace()).unwrap_or(chrono::Duration::seconds(5))
}
