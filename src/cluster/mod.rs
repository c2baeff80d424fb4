//! Multi-node plumbing: the Redis connections behind the Socket.IO adapter, and the Redis
//! implementations of the state nodes share (presence, rate limits, cache invalidation).

pub mod emitter;
pub mod invalidation;
pub mod presence;
pub mod rate_limit;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::RespVersion;
use socketioxide_redis::{FredAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::sync::Notify;

/// The adapter type used when `REDIS_URL` is set.
pub type ClusterAdapter = FredAdapter<socketioxide::adapter::Emitter>;

/// The Redis connections one node holds.
pub struct RedisConnections {
    /// Commands (presence, rate limits, health checks).
    pub client: Client,
    /// The Socket.IO adapter's pub/sub constructor.
    pub adapter: RedisAdapterCtr<socketioxide_redis::drivers::fred::FredDriver>,
    /// Subscribed to the cache invalidation channel.
    pub invalidations: SubscriberClient,
    /// Notified each time the adapter's subscriptions were restored after a reconnect: moves
    /// published by other nodes meanwhile were missed.
    pub resubscribed: Arc<Notify>,
}

fn config(url: &str) -> anyhow::Result<Config> {
    let mut config = Config::from_url(url).context("parsing REDIS_URL")?;
    // The adapter's sharded pub/sub needs RESP3, and fred does not read it from the URL.
    config.version = RespVersion::RESP3;
    Ok(config)
}

/// Reconnect forever with exponential backoff (100 ms up to 5 s): a Redis restart must not
/// need a node restart.
fn reconnect_policy() -> ReconnectPolicy {
    ReconnectPolicy::new_exponential(0, 100, 5_000, 2)
}

/// A client builder with the node's policies: reconnect forever, and never let a command
/// wait on a dead Redis for more than a couple of seconds (a handler would hang with it).
pub(crate) fn builder(url: &str) -> anyhow::Result<Builder> {
    let mut builder = Builder::from_config(config(url)?);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
        })
        .with_performance_config(|p| {
            p.default_command_timeout = Duration::from_secs(2);
        })
        .set_policy(reconnect_policy());
    Ok(builder)
}

/// How many pub/sub messages a subscriber client holds for its reader. fred hands them over
/// in a broadcast channel of 32 by default, and a reader that falls further behind loses the
/// oldest: a backend publishing a burst of 80 emitter events at once lost the first 50 on
/// every node. 1,024 absorbs such bursts for about 1 MB per subscriber (fred allocates
/// the slots of its eight notification channels up front).
const SUBSCRIBER_BACKLOG: usize = 1024;

/// [`builder`] for a pub/sub subscriber, with [`SUBSCRIBER_BACKLOG`].
pub(crate) fn subscriber_builder(url: &str) -> anyhow::Result<Builder> {
    let mut builder = builder(url)?;
    builder.with_performance_config(|p| {
        p.broadcast_channel_capacity = SUBSCRIBER_BACKLOG;
    });
    Ok(builder)
}

/// Connects the command client, the adapter's subscriber and the invalidation subscriber.
pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<RedisConnections> {
    let client = builder(url)?.build().context("building the Redis client")?;
    client.init().await.context("connecting to Redis")?;

    let invalidations = subscriber_builder(url)?
        .build_subscriber_client()
        .context("building the Redis subscriber")?;
    invalidations
        .init()
        .await
        .context("connecting the Redis subscriber")?;
    // Re-subscribed by `invalidation::listen` after every reconnect, which then flushes caches.
    invalidations
        .subscribe(invalidation::channel(prefix))
        .await
        .context("subscribing to invalidations")?;

    let subscriber = subscriber_builder(url)?
        .build_subscriber_client()
        .context("building the Redis subscriber")?;
    let resubscribed = Arc::new(Notify::new());
    keep_subscriptions(&subscriber, resubscribed.clone());
    let adapter_config = RedisAdapterConfig::new().with_prefix(format!("{prefix}-socket.io"));
    let adapter = RedisAdapterCtr::new_with_fred_config(subscriber, adapter_config)
        .await
        .context("connecting the Socket.IO Redis adapter")?;
    Ok(RedisConnections {
        client,
        adapter,
        invalidations,
        resubscribed,
    })
}

/// Re-subscribes a subscriber's channels after every reconnect (a restarted Redis forgets
/// them). fred's own `manage_subscriptions` sends `SUBSCRIBE` even with no channels, which Redis
/// answers with an error that aborts the rest of the resubscription (and, on the first connect,
/// can be taken as the answer to another command); this one skips empty sets.
pub(crate) fn keep_subscriptions(client: &SubscriberClient, restored: Arc<Notify>) {
    let client = client.clone();
    let mut reconnects = client.reconnect_rx();
    tokio::spawn(async move {
        while reconnects.recv().await.is_ok() {
            let channels: Vec<String> = client
                .tracked_channels()
                .iter()
                .map(|c| c.to_string())
                .collect();
            let patterns: Vec<String> = client
                .tracked_patterns()
                .iter()
                .map(|c| c.to_string())
                .collect();
            let shards: Vec<String> = client
                .tracked_shard_channels()
                .iter()
                .map(|c| c.to_string())
                .collect();
            let mut result = Ok(());
            if !channels.is_empty() {
                result = result.and(client.subscribe(channels).await);
            }
            if !patterns.is_empty() {
                result = result.and(client.psubscribe(patterns).await);
            }
            for shard in shards {
                result = result.and(client.ssubscribe(shard).await);
            }
            match result {
                Ok(()) => {
                    tracing::info!("Redis reconnected; subscriptions restored");
                    restored.notify_one();
                }
                Err(e) => tracing::error!(error = %e, "restoring Redis subscriptions failed"),
            }
        }
    });
}

/// Fails at once while `client` is known to be disconnected. fred queues commands sent while
/// it reconnects until the command timeout, and hot paths (every message's rate limit, every
/// connect's slot) must not wait on a Redis that is known to be down.
pub fn ensure_connected(client: &Client) -> anyhow::Result<()> {
    if client.is_connected() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("Redis is unreachable"))
    }
}

/// Whether Redis answers right now (bounded, so `/health` never hangs on a dead Redis).
pub async fn ping(client: &Client) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.ping::<String>(None)).await,
        Ok(Ok(_))
    )
}
