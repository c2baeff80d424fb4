//! What every client event handler needs, extracted once: the socket, the Socket.IO handle,
//! the shared state, the authenticated user, and the event's place in the socket's order.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Extension, SocketRef, State};
use socketioxide::handler::{FromMessageParts, Value as RawValue};
use socketioxide::socket::Socket;

use super::ack::respond;
use super::emit::Emitter;
use super::order::Turn;
use super::slow::DropReason;
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult};
use crate::state::Core;

/// The context of one client event of an authenticated socket.
pub struct EventCtx<A: Adapter> {
    pub socket: SocketRef<A>,
    pub io: SocketIo<A>,
    pub core: Arc<Core>,
    pub user: AuthUser,
    turn: Turn,
}

/// The socket lacks state set up at connect time (never the case once connected).
#[derive(Debug, thiserror::Error)]
#[error("event context unavailable: no {0}")]
pub struct ContextMissing(&'static str);

fn infallible<T>(result: Result<T, Infallible>) -> T {
    match result {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

impl<A: Adapter> FromMessageParts<A> for EventCtx<A> {
    type Error = ContextMissing;

    fn from_message_parts(
        s: &Arc<Socket<A>>,
        v: &mut RawValue,
        ack: &Option<i64>,
    ) -> Result<Self, ContextMissing> {
        // Runs synchronously, in arrival order, before the handler task exists: the turn is
        // taken here (see `order`).
        let turn = infallible(Turn::from_message_parts(s, v, ack));
        let socket = infallible(SocketRef::from_message_parts(s, v, ack));
        let io = infallible(SocketIo::from_message_parts(s, v, ack));
        let State(core) = State::<Arc<Core>>::from_message_parts(s, v, ack)
            .map_err(|_| ContextMissing("state"))?;
        let Extension(user) = Extension::<AuthUser>::from_message_parts(s, v, ack)
            .map_err(|_| ContextMissing("user"))?;
        Ok(Self {
            socket,
            io,
            core,
            user,
            turn,
        })
    }
}

impl<A: Adapter> EventCtx<A> {
    /// Emits on behalf of this event: "to the room" skips this socket.
    pub fn emitter(&self) -> Emitter<'_, A> {
        Emitter::from_socket(&self.io, &self.socket, &self.core)
    }

    /// Runs the handler body once every earlier event of this socket is done, records the
    /// activity that keeps the user from turning idle (and brings an idle user back online),
    /// and answers the ack. An event refused by the socket's budget is answered
    /// `RATE_LIMITED` without running; the refusal that marks a flood drops the socket.
    pub async fn respond<F>(&self, event: &'static str, ack: AckSender<A>, body: F)
    where
        F: Future<Output = AppResult<Value>>,
    {
        if let Some(refusal) = self.turn.refusal() {
            // Over the socket's budget or its line is full: answered now, never run, and it
            // took no place in the line.
            let retry_after_ms = refusal.retry_after_ms();
            respond(event, &self.core, ack, async move {
                Err::<Value, _>(AppError::RateLimited { retry_after_ms })
            })
            .await;
            if refusal.flood {
                super::slow::drop_socket(self.socket.clone(), &self.core, DropReason::Flood);
            }
            return;
        }
        self.turn.wait().await;
        let core = &self.core;
        if let Err(e) = core.db_status.check() {
            // Known down: answer at once rather than after the pool's acquire timeout.
            respond(event, core, ack, async { Err(e) }).await;
            return;
        }
        super::presence::record_activity(core, &self.user.id).await;
        respond(event, core, ack, body).await;
    }
}
