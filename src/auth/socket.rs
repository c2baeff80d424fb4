//! Socket.IO handshake authentication: a connect middleware, so a rejected socket never joins
//! the namespace and the client gets a `connect_error` whose message is the contract's code.

use std::sync::Arc;

use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, State, TryData};

use super::{AuthUser, bearer_token};
use crate::error::ErrorCode;
use crate::realtime::slots::SlotGuard;
use crate::state::Core;

/// A refused handshake. Its `Display` is what the client reads as `err.message`.
#[derive(Debug)]
pub struct ConnectRefused(pub ErrorCode);

impl std::fmt::Display for ConnectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// Where a handshake's token was found; the first location present is the only one judged.
#[derive(Debug, PartialEq, Eq)]
pub enum HandshakeToken {
    Found(String),
    /// A location was present but held no usable token (e.g. `auth.token` is a number).
    Malformed,
    Missing,
}

/// Finds the token: `auth.token`, then the `token` query parameter, then `Authorization`.
pub fn token_from_handshake(
    auth: Option<&Value>,
    parts: &axum::http::request::Parts,
) -> HandshakeToken {
    if let Some(token) = auth.and_then(|a| a.get("token")) {
        return match token.as_str() {
            Some(t) if !t.is_empty() => HandshakeToken::Found(t.to_owned()),
            _ => HandshakeToken::Malformed,
        };
    }
    let query_token = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    if let Some(token) = query_token {
        return if token.is_empty() {
            HandshakeToken::Malformed
        } else {
            HandshakeToken::Found(token)
        };
    }
    match bearer_token(&parts.headers) {
        Some(Ok(token)) => HandshakeToken::Found(token.to_owned()),
        Some(Err(())) => HandshakeToken::Malformed,
        None => HandshakeToken::Missing,
    }
}

/// Connect middleware: verifies the token, reserves a connection slot for the user and stores
/// the [`AuthUser`] in the socket's extensions for every later handler.
pub async fn authenticate_socket<A: Adapter>(
    socket: SocketRef<A>,
    TryData(auth): TryData<Value>,
    State(core): State<Arc<Core>>,
) -> Result<(), ConnectRefused> {
    let token = match token_from_handshake(auth.ok().as_ref(), socket.req_parts()) {
        HandshakeToken::Found(token) => token,
        HandshakeToken::Malformed | HandshakeToken::Missing => {
            core.metrics.connect_refused(ErrorCode::Unauthorized);
            return Err(ConnectRefused(ErrorCode::Unauthorized));
        }
    };
    let user = core.jwt.verify(&token).map_err(|e| {
        tracing::debug!(sid = %socket.id, error = %e, "handshake refused");
        core.metrics.connect_refused(ErrorCode::Unauthorized);
        ConnectRefused(ErrorCode::Unauthorized)
    })?;
    if core.flood_cooldown.remaining(&user.id).is_some() {
        tracing::debug!(sid = %socket.id, user = %user.id, "handshake refused: flood cooldown");
        core.metrics.connect_refused(ErrorCode::RateLimited);
        return Err(ConnectRefused(ErrorCode::RateLimited));
    }
    let limit = core.config.max_connections_per_user;
    let sid = socket.id.to_string();
    // Armed before the reservation: a handshake cancelled while it waits still gives it back.
    let slot = SlotGuard::new(core.clone(), &user.id, &sid);
    match core
        .presence
        .store
        .reserve_connection(&user.id, &sid, limit)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            slot.disarm();
            core.metrics.connect_refused(ErrorCode::TooManyConnections);
            return Err(ConnectRefused(ErrorCode::TooManyConnections));
        }
        Err(e) => {
            // Redis unreachable: the limit holds per node until the slot reconciliation
            // registers the socket cluster-wide, rather than locking everyone out.
            if core.slots.count(&user.id) >= limit as usize {
                slot.disarm();
                core.metrics.connect_refused(ErrorCode::TooManyConnections);
                return Err(ConnectRefused(ErrorCode::TooManyConnections));
            }
            tracing::warn!(error = ?e, "reserving a connection slot failed; counting it on this node");
        }
    }
    slot.accept();
    socket.extensions.insert(Arc::new(slot));
    socket.extensions.insert::<AuthUser>(user);
    Ok(())
}
