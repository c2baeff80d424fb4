//! Cache invalidation between nodes over Redis pub/sub.

use std::sync::Arc;

use fred::clients::SubscriberClient;
use fred::prelude::*;

use crate::domain::cache::{CacheBus, Invalidation};
use crate::domain::presence::PresenceEvent;
use crate::state::Core;

/// Publishes invalidations on the cluster's channel.
pub struct RedisCacheBus {
    client: Client,
    channel: String,
}

impl RedisCacheBus {
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client,
            channel: channel(prefix),
        }
    }
}

/// The channel every node listens on.
pub fn channel(prefix: &str) -> String {
    format!("{prefix}:invalidate")
}

impl CacheBus for RedisCacheBus {
    fn publish(&self, what: Invalidation) {
        let client = self.client.clone();
        let channel = self.channel.clone();
        tokio::spawn(async move {
            if let Err(e) = client.publish::<i64, _, _>(channel, what.encode()).await {
                tracing::warn!(error = %e, "publishing a cache invalidation failed");
            }
        });
    }
}

/// Drops this node's cached entries that other nodes changed, until shutdown.
pub async fn listen(subscriber: SubscriberClient, core: Arc<Core>) {
    let mut messages = subscriber.message_rx();
    tracing::info!(task = "cache_invalidation", "started");
    loop {
        let message = tokio::select! {
            m = messages.recv() => m,
            () = core.shutdown.cancelled() => break,
        };
        let message = match message {
            Ok(m) => m,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                // Some invalidations were missed: forget everything rather than serve stale data.
                tracing::warn!(missed = n, "cache invalidations lagged; clearing caches");
                core.chat.forget_all_local();
                core.presence_audience.forget_all_local();
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        };
        let Some(text) = message.value.as_string() else {
            continue;
        };
        match Invalidation::decode(&text) {
            Some(Invalidation::Room(id)) => core.chat.forget_local(&id),
            Some(Invalidation::Typing(user_id)) => {
                // Queued from a task of its own: a full presence queue must not hold up the
                // invalidations behind this one.
                let core = core.clone();
                tokio::spawn(async move {
                    core.presence_events
                        .push(PresenceEvent::TypingEnded { user_id })
                        .await;
                });
            }
            Some(Invalidation::Audience(user_id)) => core.presence_audience.forget_local(&user_id),
            None => tracing::debug!(payload = %text, "unknown invalidation"),
        }
    }
    let _ = subscriber.quit().await;
    tracing::info!(task = "cache_invalidation", "stopped");
}
