//! Sockets that cannot keep up, and sockets that flood, are dropped, so one bad client never
//! costs the others. A socket's outgoing buffer holds `SOCKET_BUFFER_SIZE` packets; once it is
//! full every further event to it is lost, so a socket found full is dropped at once: it leaves
//! every room (nothing more is queued for it, nobody's emit reports it again), is told
//! `session:error` `{ code: "SLOW_CONSUMER" }` as soon as its buffer has room, and is
//! disconnected; the client reconnects and catches up with `chat:sync`.
//!
//! Finding it: socketioxide's broadcast errors say that some socket was full, not which, and a
//! broadcast from another node fails inside this node's adapter, where it is only logged. So
//! the buffer is probed wherever the socket lives: after an emit of this node that reported a
//! full socket (its local targets), and every `SLOW_SOCKET_CHECK_MS` for all local sockets. The
//! probe ([`buffer_full`]) reserves a slot and gives it back without sending anything.

use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;
use socketioxide::{SendError, SocketError};

use super::NAMESPACE;
use super::order::Sequencer;
use crate::state::Core;

/// Why a socket is dropped; the `code` of its `session:error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Its buffer filled up: it missed events.
    SlowConsumer,
    /// It kept sending events over its budget.
    Flood,
}

impl DropReason {
    pub fn code(self) -> &'static str {
        match self {
            Self::SlowConsumer => "SLOW_CONSUMER",
            Self::Flood => "RATE_LIMITED",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::SlowConsumer => {
                "this connection could not keep up and missed events; reconnect and catch up with chat:sync"
            }
            Self::Flood => "too many events over the rate limit; disconnected",
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::SlowConsumer => "slow_consumer",
            Self::Flood => "flood",
        }
    }
}

/// A payload that cannot be serialised. socketioxide's `Socket::emit` reserves a buffer slot
/// before it serialises, so emitting this answers "is the buffer full?" and sends nothing.
struct Probe;

impl Serialize for Probe {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("buffer probe"))
    }
}

/// Whether the socket's outgoing buffer is full right now.
pub fn buffer_full<A: Adapter>(socket: &SocketRef<A>) -> bool {
    matches!(
        socket.emit("session:probe", &Probe),
        Err(SendError::Socket(SocketError::InternalChannelFull))
    )
}

/// After an emit reported full sockets: drops the full ones among this node's targets.
pub fn after_full_emit<A: Adapter>(ops: BroadcastOperators<A>, core: &Core) {
    for socket in ops.local().sockets() {
        if buffer_full(&socket) {
            drop_socket(socket, core, DropReason::SlowConsumer);
        }
    }
}

/// Whether an emit's socket errors include a full buffer (not only closing sockets).
pub fn any_full(errors: &[SocketError]) -> bool {
    errors
        .iter()
        .any(|e| matches!(e, SocketError::InternalChannelFull))
}

/// Drops a socket (once): out of every room now, refused further events, told why as soon as
/// its buffer has room and disconnected one `SLOW_SOCKET_CHECK_MS` later (both retried every
/// period). A socket that never reads again is closed by the Engine.IO heartbeat, whose ping
/// cannot be queued either.
pub fn drop_socket<A: Adapter>(socket: SocketRef<A>, core: &Core, reason: DropReason) {
    if let Some(sequencer) = socket.extensions.get::<Arc<Sequencer>>()
        && !sequencer.start_dropping()
    {
        return;
    }
    let user = socket
        .extensions
        .get::<crate::auth::AuthUser>()
        .map(|u| u.id)
        .unwrap_or_default();
    tracing::warn!(sid = %socket.id, %user, reason = reason.label(), "dropping socket");
    core.metrics.socket_dropped(reason.label());
    if reason == DropReason::Flood {
        core.flood_cooldown.start(&user);
    }
    socket.leave_all();
    let shutdown = core.shutdown.clone();
    let period = core.config.slow_socket_check();
    tokio::spawn(async move {
        let payload = json!({ "code": reason.code(), "message": reason.message() });
        let mut told = false;
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            if !socket.connected() {
                return;
            }
            if !told {
                match socket.emit("session:error", &payload) {
                    // The disconnect comes a period later: once the namespace socket is gone,
                    // any packet the client still sends makes the engine close the connection
                    // at once, which could cut off the reason before it is written out.
                    Ok(()) => told = true,
                    Err(SendError::Socket(SocketError::Closed)) => return,
                    Err(_) => {}
                }
                continue;
            }
            match socket.clone().disconnect() {
                Err(SocketError::InternalChannelFull) => {}
                Ok(()) | Err(SocketError::Closed) => return,
            }
        }
    });
}

/// Probes every local socket's buffer each `SLOW_SOCKET_CHECK_MS`, for the sockets whose
/// failed deliveries came from other nodes. A probe is one try-reserve: cheap for any count.
pub async fn sweeper<A: Adapter>(io: SocketIo<A>, core: Arc<Core>) {
    tracing::info!("slow-socket sweeper started");
    let mut tick = tokio::time::interval(core.config.slow_socket_check());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = core.shutdown.cancelled() => break,
        }
        let Some(ns) = io.of(NAMESPACE) else { continue };
        for socket in ns.sockets() {
            if buffer_full(&socket) {
                drop_socket(socket, &core, DropReason::SlowConsumer);
            }
        }
    }
    tracing::info!("slow-socket sweeper stopped");
}
