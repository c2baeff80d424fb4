//! Delivery of what a Node backend publishes with `@socket.io/redis-emitter` into the
//! cluster's Redis. socketioxide-redis speaks its own protocol, so this is a separate
//! subscriber that understands the emitter's channels and frames (see [`frame`]).
//!
//! Every node receives every message and delivers it to its **own** receivers only, so each
//! gets it exactly once however many nodes there are. An event with one JSON argument and
//! named rooms goes to this node's dispatcher (`Pipeline::dispatch_local`: ephemeral, never
//! republished), so SSE and long-poll sessions get it too; one with several or binary
//! arguments, or for every socket of the namespace, is emitted to this node's sockets as is
//! (Socket.IO only: the other transports carry one JSON payload per event). The emitter publishes each
//! emit once (on the room channel when there is exactly one room, else on the namespace
//! channel), and one pattern subscription covers both, so no node sees a message twice.
//!
//! One publisher's messages keep their order on every socket: Redis hands them over in order
//! and this loop handles one at a time, and before anything it does directly (an emit that
//! bypasses the dispatcher, a join, a leave, a disconnect) it waits for the dispatcher to
//! deliver what it was handed before ([`settle`]), so a namespace-wide marker cannot overtake
//! a room emit, and a `socketsLeave` cannot overtake the emit published just before it.

pub mod frame;

use anyhow::Context;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::Message;
use socketioxide::BroadcastError;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use self::frame::{Broadcast, Request, RequestOp};
use crate::metrics::Metrics;

/// The emitter's channels for one key and namespace.
#[derive(Debug, Clone)]
pub struct Channels {
    /// `{key}#{nsp}#*`: the namespace channel and every per-room channel.
    pub broadcast_pattern: String,
    /// `{key}-request#{nsp}#`: `socketsJoin`, `socketsLeave`, `disconnectSockets`.
    pub requests: String,
}

impl Channels {
    pub fn new(key: &str, namespace: &str) -> Self {
        Self {
            broadcast_pattern: format!("{}#{}#*", glob_escape(key), glob_escape(namespace)),
            requests: format!("{key}-request#{namespace}#"),
        }
    }
}

/// Escapes Redis glob characters, so a key like `app[1]` matches only itself.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A connected, subscribed emitter subscriber. The message receiver is taken before
/// subscribing, so nothing published after [`subscribe`] returns is missed.
pub struct EmitterSubscriber {
    client: SubscriberClient,
    messages: Receiver<Message>,
    channels: Channels,
}

/// Connects a dedicated subscriber (it must not share the adapter's, whose messages it would
/// otherwise see) and subscribes to the emitter's channels for `namespace`.
pub async fn subscribe(url: &str, key: &str, namespace: &str) -> anyhow::Result<EmitterSubscriber> {
    let client = super::subscriber_builder(url)?
        .build_subscriber_client()
        .context("building the Redis emitter subscriber")?;
    client
        .init()
        .await
        .context("connecting the Redis emitter subscriber")?;
    // Nobody waits for this subscriber's restoration: its channels are all it needs back.
    super::keep_subscriptions(&client, std::sync::Arc::new(tokio::sync::Notify::new()));
    let messages = client.message_rx();
    let channels = Channels::new(key, namespace);
    client
        .psubscribe(channels.broadcast_pattern.clone())
        .await
        .context("subscribing to the Redis emitter's broadcasts")?;
    client
        .subscribe(channels.requests.clone())
        .await
        .context("subscribing to the Redis emitter's requests")?;
    Ok(EmitterSubscriber {
        client,
        messages,
        channels,
    })
}

/// Delivers emitter messages to this node's sockets until shutdown.
pub async fn listen<A: Adapter>(
    subscriber: EmitterSubscriber,
    io: SocketIo<A>,
    namespace: &'static str,
    core: std::sync::Arc<crate::state::Core>,
) {
    let metrics = core.metrics.clone();
    let shutdown = core.shutdown.clone();
    let EmitterSubscriber {
        client,
        mut messages,
        channels,
    } = subscriber;
    tracing::info!(task = "redis_emitter", pattern = %channels.broadcast_pattern, "started");
    loop {
        let message = tokio::select! {
            m = messages.recv() => m,
            () = shutdown.cancelled() => break,
        };
        let message = match message {
            Ok(m) => m,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "Redis emitter messages lagged; some were dropped"
                );
                metrics.emitter_message("unknown", "dropped", n);
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        let Some(bytes) = message.value.as_bytes() else {
            metrics.emitter_message("unknown", "invalid", 1);
            continue;
        };
        if *message.channel == *channels.requests {
            settle(&core).await;
            on_request(&io, namespace, bytes, &metrics).await;
        } else {
            on_broadcast(&io, namespace, bytes, &core).await;
        }
    }
    let _ = client.quit().await;
    tracing::info!(task = "redis_emitter", "stopped");
}

/// Whether an argument holds binary data (which a JSON payload cannot carry).
fn has_binary(arg: &frame::Arg) -> bool {
    match arg {
        frame::Arg::Bin(_) => true,
        frame::Arg::Array(items) => items.iter().any(has_binary),
        frame::Arg::Map(entries) => entries.iter().any(|(_, v)| has_binary(v)),
        _ => false,
    }
}

/// Waits until the dispatcher delivered every event this loop handed it before, so what the
/// loop does next directly lands after them. If the dispatcher is gone (shutdown) there is
/// nothing left to wait for.
async fn settle(core: &crate::state::Core) {
    let _ = core.pipeline.in_order(|_| ()).await;
}

async fn on_broadcast<A: Adapter>(
    io: &SocketIo<A>,
    namespace: &str,
    bytes: &[u8],
    core: &crate::state::Core,
) {
    let metrics = &core.metrics;
    let broadcast = match frame::decode_broadcast(bytes, namespace) {
        Ok(Some(b)) => b,
        Ok(None) => return metrics.emitter_message("broadcast", "ignored", 1),
        Err(e) => {
            tracing::warn!(error = %e, bytes = bytes.len(), "invalid Redis emitter frame");
            return metrics.emitter_message("broadcast", "invalid", 1);
        }
    };
    if let [arg] = broadcast.args.0.as_slice()
        && !has_binary(arg)
        && !broadcast.rooms.is_empty()
    {
        match crate::pipeline::Event::new(broadcast.event.as_str(), arg, broadcast.rooms.clone()) {
            Ok(event) => {
                core.pipeline
                    .dispatch_local(event.except(broadcast.except.iter().cloned()));
                return metrics.emitter_message("broadcast", "delivered", 1);
            }
            Err(e) => {
                tracing::warn!(error = %e, "a Redis emitter payload is not JSON");
                return metrics.emitter_message("broadcast", "invalid", 1);
            }
        }
    }
    let Some(ns) = io.of(namespace) else {
        return metrics.emitter_message("broadcast", "ignored", 1);
    };
    settle(core).await;
    let Broadcast {
        event,
        args,
        rooms,
        except,
    } = broadcast;
    match ns
        .to(rooms)
        .except(except)
        .local()
        .emit(&event, &args)
        .await
    {
        // A socket that is closing or full misses it, as with any other emit; the rest got it.
        Ok(()) | Err(BroadcastError::Socket(_)) => {
            metrics.emitter_message("broadcast", "delivered", 1)
        }
        Err(e) => {
            tracing::warn!(error = %e, event = %event, "delivering a Redis emitter event failed");
            metrics.emitter_message("broadcast", "failed", 1);
        }
    }
}

async fn on_request<A: Adapter>(
    io: &SocketIo<A>,
    namespace: &str,
    bytes: &[u8],
    metrics: &Metrics,
) {
    let request = match frame::decode_request(bytes) {
        Ok(Some(r)) => r,
        Ok(None) => return metrics.emitter_message("request", "ignored", 1),
        Err(e) => {
            tracing::warn!(error = %e, bytes = bytes.len(), "invalid Redis emitter request");
            return metrics.emitter_message("request", "invalid", 1);
        }
    };
    let Some(ns) = io.of(namespace) else {
        return metrics.emitter_message("request", "ignored", 1);
    };
    let Request { op, rooms, except } = request;
    let selected = ns.to(rooms).except(except).local();
    let (kind, result) = match op {
        RequestOp::Join(rooms) => (
            "join",
            selected.join(rooms).await.map_err(|e| e.to_string()),
        ),
        RequestOp::Leave(rooms) => (
            "leave",
            selected.leave(rooms).await.map_err(|e| e.to_string()),
        ),
        RequestOp::Disconnect => (
            "disconnect",
            match selected.disconnect().await {
                Ok(()) | Err(BroadcastError::Socket(_)) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
        ),
    };
    match result {
        Ok(()) => metrics.emitter_message(kind, "delivered", 1),
        Err(e) => {
            tracing::warn!(error = %e, kind, "applying a Redis emitter request failed");
            metrics.emitter_message(kind, "failed", 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_match_the_emitter() {
        let c = Channels::new("socket.io", "/realtime");
        assert_eq!(c.broadcast_pattern, "socket.io#/realtime#*");
        assert_eq!(c.requests, "socket.io-request#/realtime#");
        let odd = Channels::new("app[1]*", "/realtime");
        assert_eq!(odd.broadcast_pattern, "app\\[1\\]\\*#/realtime#*");
    }
}
