//! What every client event handler needs, extracted once: the socket, the Socket.IO handle,
//! the shared state, the authenticated user, and the event's place in the socket's order.
//!
//! An event the socket's budget refuses is answered here, synchronously, in the socket's read
//! loop, and the extractor fails so that socketioxide never spawns its handler task. A
//! flooder's refused events therefore cost no task and no handler future (several KiB each):
//! when every refusal was a task, one socket sending 60k events/s queued them faster than two
//! cores could run them, and the server grew by gigabytes while every other socket's events
//! waited behind the queue.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Event as EventName, Extension, SocketRef, State};
use socketioxide::handler::{FromMessageParts, Value as RawValue};
use socketioxide::socket::Socket;
use tokio::sync::oneshot;

use super::ack::{answer, respond};
use super::budget::Refusal;
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

/// Why an event gets no handler.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The socket lacks state set up at connect time (never the case once connected).
    #[error("event context unavailable: no {0}")]
    Missing(&'static str),
    /// Over the socket's budget, its line full, or the socket being dropped: already answered
    /// `RATE_LIMITED`.
    #[error("event refused")]
    Refused,
}

fn infallible<T>(result: Result<T, Infallible>) -> T {
    match result {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

impl<A: Adapter> FromMessageParts<A> for EventCtx<A> {
    type Error = ContextError;

    fn from_message_parts(
        s: &Arc<Socket<A>>,
        v: &mut RawValue,
        ack: &Option<i64>,
    ) -> Result<Self, ContextError> {
        // Runs synchronously, in arrival order, before the handler task exists: the turn is
        // taken here (see `order`).
        let turn = infallible(Turn::from_message_parts(s, v, ack));
        let State(core) = State::<Arc<Core>>::from_message_parts(s, v, ack)
            .map_err(|_| ContextError::Missing("state"))?;
        if let Some(refusal) = turn.refusal() {
            refuse(s, &core, v, ack, refusal);
            return Err(ContextError::Refused);
        }
        let socket = infallible(SocketRef::from_message_parts(s, v, ack));
        let io = infallible(SocketIo::from_message_parts(s, v, ack));
        let Extension(user) = Extension::<AuthUser>::from_message_parts(s, v, ack)
            .map_err(|_| ContextError::Missing("user"))?;
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
    /// and answers the ack. (Refused events never get here: see [`refuse`].)
    pub async fn respond<F>(&self, event: &'static str, ack: AckSender<A>, body: F)
    where
        F: Future<Output = AppResult<Value>>,
    {
        self.turn.wait_alone().await;
        self.run(event, ack, body).await;
    }

    /// [`EventCtx::respond`] for an event ordered by its place in the write path's queue (a
    /// `chat:message`): it starts once the earlier events started theirs — messages before it
    /// may still wait for their commits — and lets the next event go as soon as `queued`
    /// fires (see `order`).
    pub async fn respond_queued<F>(
        &self,
        event: &'static str,
        ack: AckSender<A>,
        queued: oneshot::Receiver<()>,
        body: F,
    ) where
        F: Future<Output = AppResult<Value>>,
    {
        self.turn.wait().await;
        let hand_over = async {
            if queued.await.is_ok() {
                self.turn.hand_over();
            }
        };
        self.run(event, ack, async {
            let (result, ()) = tokio::join!(body, hand_over);
            result
        })
        .await;
    }

    async fn run<F>(&self, event: &'static str, ack: AckSender<A>, body: F)
    where
        F: Future<Output = AppResult<Value>>,
    {
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

/// Answers a refused event `RATE_LIMITED` (when it asked for an ack) and counts it, all in the
/// read loop; the refusal that marks a flood drops the socket. It took no place in the line.
fn refuse<A: Adapter>(
    socket: &Arc<Socket<A>>,
    core: &Core,
    v: &mut RawValue,
    ack: &Option<i64>,
    refusal: Refusal,
) {
    let event = EventName::from_message_parts(socket, v, ack)
        .map(|EventName(name)| super::events::label(&name))
        .unwrap_or("unknown");
    let refused = Err(AppError::RateLimited {
        retry_after_ms: refusal.retry_after_ms(),
    });
    let sender = infallible(AckSender::from_message_parts(socket, v, ack));
    answer(event, core, sender, refused, std::time::Duration::ZERO);
    if refusal.flood {
        let socket = infallible(SocketRef::from_message_parts(socket, v, ack));
        super::slow::drop_socket(socket, core, DropReason::Flood);
    }
}
