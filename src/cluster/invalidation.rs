//! Cache invalidation between nodes over Redis pub/sub. Pub/sub delivers at most once, so the
//! gaps are closed explicitly: a node whose subscriber reconnects drops its whole cache (it may
//! have missed anything while away), a node that could not publish tells everyone to drop
//! everything once Redis answers again, and caches are bypassed while the subscriber is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::domain::cache::{CacheBus, Invalidation};
use crate::domain::presence::PresenceEvent;
use crate::state::Core;

/// Publishes invalidations on the cluster's channel.
pub struct RedisCacheBus(Arc<BusInner>);

struct BusInner {
    client: Client,
    /// The invalidation subscriber: while it is not connected, invalidations are missed.
    subscriber: SubscriberClient,
    channel: String,
    /// Set when a publish failed; an [`Invalidation::All`] is owed to the other nodes.
    lost: AtomicBool,
    shutdown: CancellationToken,
}

impl RedisCacheBus {
    pub fn new(
        client: Client,
        subscriber: SubscriberClient,
        prefix: &str,
        shutdown: CancellationToken,
    ) -> Self {
        Self(Arc::new(BusInner {
            client,
            subscriber,
            channel: channel(prefix),
            lost: AtomicBool::new(false),
            shutdown,
        }))
    }
}

impl BusInner {
    /// Publishes `all` until it gets through (backing off up to 5 s), once per run of failures.
    fn make_up_for_lost(self: &Arc<Self>) {
        if self.lost.swap(true, Ordering::SeqCst) {
            return; // a make-up task is already running
        }
        let bus = self.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(100);
            loop {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = bus.shutdown.cancelled() => return,
                }
                wait = (wait * 2).min(Duration::from_secs(5));
                if !bus.client.is_connected() {
                    continue;
                }
                match bus
                    .client
                    .publish::<i64, _, _>(bus.channel.as_str(), Invalidation::All.encode())
                    .await
                {
                    Ok(_) => {
                        bus.lost.store(false, Ordering::SeqCst);
                        tracing::info!("lost cache invalidations made up for: every node flushes");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "publishing a cache flush failed; retrying")
                    }
                }
            }
        });
    }
}

/// The channel every node listens on.
pub fn channel(prefix: &str) -> String {
    format!("{prefix}:invalidate")
}

impl CacheBus for RedisCacheBus {
    fn publish(&self, what: Invalidation) {
        if !self.0.client.is_connected() {
            // Known down: don't queue behind fred's reconnect; owe a full flush instead.
            self.0.make_up_for_lost();
            return;
        }
        let bus = self.0.clone();
        tokio::spawn(async move {
            if let Err(e) = bus
                .client
                .publish::<i64, _, _>(bus.channel.as_str(), what.encode())
                .await
            {
                tracing::warn!(error = %e, "publishing a cache invalidation failed");
                bus.make_up_for_lost();
            }
        });
    }

    fn connected(&self) -> bool {
        self.0.subscriber.is_connected()
    }
}

/// Subscribes the invalidation channel, then drops every cached entry (anything may have
/// changed while the subscription was missing).
async fn resubscribe(subscriber: &SubscriberClient, core: &Core) -> bool {
    let channel = channel(&core.config.redis_key_prefix);
    match subscriber.subscribe(channel).await {
        Ok(()) => {
            core.chat.forget_all_local();
            core.presence_audience.forget_all_local();
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "re-subscribing to cache invalidations failed");
            false
        }
    }
}

/// Drops this node's cached entries that other nodes changed, until shutdown.
pub async fn listen(subscriber: SubscriberClient, core: Arc<Core>) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    // Set while the channel may be unsubscribed after a reconnect: retried every second.
    let mut unsubscribed = false;
    let mut retry = tokio::time::interval(Duration::from_secs(1));
    tracing::info!(task = "cache_invalidation", "started");
    loop {
        let message = tokio::select! {
            m = messages.recv() => m,
            r = reconnects.recv() => {
                if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    break;
                }
                tracing::info!("invalidation subscriber reconnected; clearing caches");
                core.chat.forget_all_local();
                core.presence_audience.forget_all_local();
                unsubscribed = !resubscribe(&subscriber, &core).await;
                continue;
            }
            _ = retry.tick(), if unsubscribed => {
                unsubscribed = !resubscribe(&subscriber, &core).await;
                continue;
            }
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
            Some(Invalidation::All) => {
                core.chat.forget_all_local();
                core.presence_audience.forget_all_local();
            }
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
