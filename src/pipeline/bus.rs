//! The bus between nodes: every event (journaled or not) is published on one Redis pub/sub
//! channel, `{REDIS_KEY_PREFIX}:events`, and every node's subscriber feeds its own dispatcher.
//! Our own channel rather than socketioxide-redis broadcasts because the dispatcher must see
//! every event to order journaled ones by id, fill gaps from the journal, hand resuming
//! receivers over, and feed SSE and long-poll sessions; the adapter stays for cross-node
//! join/leave/fetch_sockets/disconnect.
//!
//! A frame is a JSON array of events, the payload kept verbatim (no re-serialisation), with the
//! producing node's id so a node skips its own echo (it delivered its copy directly). Pub/sub
//! is at most once: a lost journaled event is filled from the journal by the dispatcher; a lost
//! ephemeral one is gone (documented as best effort).

use std::sync::Arc;

use anyhow::Context;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::model::{Event, FeedScope, Kind};
use super::{Input, Pipeline};

/// The channel of a deployment's events.
pub fn channel(prefix: &str) -> String {
    format!("{prefix}:events")
}

#[derive(Serialize)]
struct OutFrame<'a> {
    n: &'a str,
    e: Vec<OutEvent<'a>>,
}

#[derive(Serialize)]
struct OutEvent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    i: Option<u64>,
    e: &'a str,
    p: &'a RawValue,
    t: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    x: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    f: Option<(&'a str, bool)>,
}

#[derive(Deserialize)]
struct InFrame {
    n: String,
    e: Vec<InEvent>,
}

#[derive(Deserialize)]
struct InEvent {
    i: Option<u64>,
    e: String,
    p: Box<RawValue>,
    t: Vec<String>,
    #[serde(default)]
    x: Vec<String>,
    k: Option<String>,
    f: Option<(String, bool)>,
}

/// Encodes `events` produced by `node`.
pub fn encode(node: &str, events: &[Event]) -> serde_json::Result<String> {
    let frame = OutFrame {
        n: node,
        e: events
            .iter()
            .map(|e| OutEvent {
                i: e.id,
                e: &e.name,
                p: &e.payload,
                t: &e.targets,
                x: &e.except,
                k: e.kind.map(Kind::as_str),
                f: e.feed.as_ref().map(|f| (f.actor.as_str(), f.public)),
            })
            .collect(),
    };
    serde_json::to_string(&frame)
}

/// Decodes a frame: the producing node and its events.
pub fn decode(bytes: &[u8]) -> serde_json::Result<(String, Vec<Event>)> {
    let frame: InFrame = serde_json::from_slice(bytes)?;
    let events = frame
        .e
        .into_iter()
        .map(|e| Event {
            id: e.i,
            name: Arc::from(e.e),
            payload: Arc::from(e.p),
            targets: e.t,
            except: e.x,
            kind: e.k.as_deref().and_then(Kind::parse),
            feed: e.f.map(|(actor, public)| FeedScope { actor, public }),
        })
        .collect();
    Ok((frame.n, events))
}

/// Publishes this node's events to the others.
pub struct Publisher {
    client: Client,
    channel: String,
}

impl Publisher {
    /// A publisher on the command client, for the deployment's `prefix`.
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client,
            channel: channel(prefix),
        }
    }

    /// One frame for `events`. Not sent while Redis is known to be down (the other nodes fill
    /// journaled events from the journal); failures are logged, never returned.
    pub async fn publish(&self, node: &str, events: &[Event]) {
        if events.is_empty() || !self.client.is_connected() {
            return;
        }
        let frame = match encode(node, events) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(error = %e, "encoding a bus frame failed");
                return;
            }
        };
        if let Err(e) = self
            .client
            .publish::<i64, _, _>(self.channel.as_str(), frame)
            .await
        {
            tracing::warn!(error = %e, events = events.len(), "publishing events to the cluster failed");
        }
    }
}

/// Connects and subscribes this node's bus subscriber.
pub async fn subscribe(url: &str, prefix: &str) -> anyhow::Result<SubscriberClient> {
    let client = crate::cluster::subscriber_builder(url)?
        .build_subscriber_client()
        .context("building the event bus subscriber")?;
    client
        .init()
        .await
        .context("connecting the event bus subscriber")?;
    crate::cluster::keep_subscriptions(&client, Arc::new(tokio::sync::Notify::new()));
    client
        .subscribe(channel(prefix))
        .await
        .context("subscribing to the event bus")?;
    Ok(client)
}

/// Feeds other nodes' events to this node's dispatcher until shutdown; after every reconnect
/// the dispatcher checks the journal head (it may have missed events meanwhile).
pub async fn listen(
    client: SubscriberClient,
    pipeline: &Pipeline,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut messages = client.message_rx();
    let mut reconnects = client.reconnect_rx();
    tracing::info!(task = "event_bus", "started");
    loop {
        tokio::select! {
            m = messages.recv() => match m {
                Ok(message) => {
                    let Some(bytes) = message.value.as_bytes() else { continue };
                    match decode(bytes) {
                        Ok((node, events)) if node != pipeline.node_id() => {
                            for e in events {
                                pipeline.feed(Input::Event(e, None)).await;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "invalid event bus frame"),
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "event bus lagged; checking the journal");
                    pipeline.feed(Input::HeadCheck).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            r = reconnects.recv() => {
                if r.is_err() { break; }
                pipeline.feed(Input::HeadCheck).await;
            }
            () = shutdown.cancelled() => break,
        }
    }
    let _ = client.quit().await;
    tracing::info!(task = "event_bus", "stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_the_payload_verbatim() {
        let mut e = Event::new(
            "chat:new_message",
            &serde_json::json!({"b": 1, "a": [2]}),
            vec!["chat:r".into()],
        )
        .unwrap()
        .journaled(Kind::Chat)
        .except(["sid1".to_owned()]);
        e.id = Some(7);
        e.feed = Some(FeedScope {
            actor: "u".into(),
            public: true,
        });
        let frame = encode("node-a", std::slice::from_ref(&e)).unwrap();
        let (node, back) = decode(frame.as_bytes()).unwrap();
        assert_eq!(node, "node-a");
        assert_eq!(back.len(), 1);
        let b = &back[0];
        assert_eq!(b.id, Some(7));
        assert_eq!(&*b.name, "chat:new_message");
        assert_eq!(b.payload.get(), e.payload.get());
        assert_eq!(b.targets, e.targets);
        assert_eq!(b.except, e.except);
        assert_eq!(b.kind, Some(Kind::Chat));
        assert_eq!(b.feed, e.feed);
    }
}
