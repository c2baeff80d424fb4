//! `GET /status`: the caller's live sessions by transport and node, and this node's session
//! counts per transport — what a client (or its support engineer) asks when events seem not to
//! arrive. The same per-transport counts feed `/health` and `/metrics`.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::TransportType;
use socketioxide::adapter::Adapter;

use crate::auth::AuthUser;
use crate::error::AppResult;
use crate::pipeline::sessions::Transport;
use crate::realtime::rooms;
use crate::state::{AppState, Core};

pub fn router<A: Adapter>() -> Router<AppState<A>> {
    Router::new().route("/status", get(status::<A>))
}

/// The transport labels, a fixed set (metrics labels stay bounded).
pub const TRANSPORTS: [&str; 4] = ["websocket", "polling", "sse", "longpoll"];

fn socket_transport(t: TransportType) -> &'static str {
    match t {
        TransportType::Websocket => "websocket",
        TransportType::Polling => "polling",
    }
}

/// This node's sessions per transport: Socket.IO sockets by their engine.io transport, SSE
/// streams and long-poll sessions from the registry.
pub fn transport_counts<A: Adapter>(
    io: &SocketIo<A>,
    core: &Core,
) -> BTreeMap<&'static str, usize> {
    let mut counts: BTreeMap<&'static str, usize> = TRANSPORTS.iter().map(|t| (*t, 0)).collect();
    if let Some(ns) = io.of(crate::realtime::NAMESPACE) {
        for socket in ns.local().sockets() {
            *counts
                .entry(socket_transport(socket.transport_type()))
                .or_default() += 1;
        }
    }
    for transport in Transport::ALL {
        counts.insert(transport.as_str(), core.sessions.count(transport));
    }
    counts
}

/// One live session of the caller.
#[derive(Serialize)]
struct Live {
    id: String,
    /// `websocket`, `polling`, `sse`, `longpoll`; `socketio` for a socket on another node
    /// (its engine.io transport is known only there).
    transport: &'static str,
    node: String,
}

async fn status<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
) -> AppResult<Response> {
    let core = &state.core;
    let here = core.pipeline.node_id().to_owned();
    let mut live: BTreeMap<String, Live> = BTreeMap::new();
    if let Some(ns) = state.io.of(crate::realtime::NAMESPACE) {
        for socket in ns.local().within(rooms::user(&user.id)).sockets() {
            let id = socket.id.to_string();
            live.insert(
                id.clone(),
                Live {
                    id,
                    transport: socket_transport(socket.transport_type()),
                    node: here.clone(),
                },
            );
        }
    }
    for session in core.sessions.of_user(&user.id) {
        live.insert(
            session.id.clone(),
            Live {
                id: session.id,
                transport: session.transport.as_str(),
                node: here.clone(),
            },
        );
    }
    // The other nodes' connections, from the cluster's connection slots.
    match core.presence.store.connections(&user.id).await {
        Ok(slots) => {
            for (id, node) in slots {
                if live.contains_key(&id) {
                    continue;
                }
                let transport = Transport::ALL
                    .into_iter()
                    .find(|t| id.starts_with(t.sid_prefix()))
                    .map_or("socketio", Transport::as_str);
                live.insert(
                    id.clone(),
                    Live {
                        id,
                        transport,
                        node,
                    },
                );
            }
        }
        Err(e) => tracing::debug!(user = %user.id, error = ?e, "cluster connections not read"),
    }
    let sessions: Vec<Live> = live.into_values().collect();
    let mut by_transport: BTreeMap<&'static str, usize> = BTreeMap::new();
    for s in &sessions {
        *by_transport.entry(s.transport).or_default() += 1;
    }
    Ok(axum::Json(json!({
        "userId": user.id,
        "node": here,
        "sessions": sessions,
        "byTransport": by_transport,
        "nodeCounts": transport_counts(&state.io, core),
    }))
    .into_response())
}
