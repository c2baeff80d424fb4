//! Multi-node plumbing: the Redis connections behind the Socket.IO adapter and shared state.

use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;
use fred::types::RespVersion;
use socketioxide_redis::{FredAdapter, RedisAdapterConfig, RedisAdapterCtr};

/// The adapter type used when `REDIS_URL` is set.
pub type ClusterAdapter = FredAdapter<socketioxide::adapter::Emitter>;

/// The Redis connections one node holds.
pub struct RedisConnections {
    /// Commands (presence, rate limits, health checks).
    pub client: Client,
    /// The Socket.IO adapter's pub/sub constructor.
    pub adapter: RedisAdapterCtr<socketioxide_redis::drivers::fred::FredDriver>,
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

/// Connects the command client and the adapter's subscriber.
pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<RedisConnections> {
    let client = Builder::from_config(config(url)?)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
        })
        .set_policy(reconnect_policy())
        .build()
        .context("building the Redis client")?;
    client.init().await.context("connecting to Redis")?;

    let subscriber = Builder::from_config(config(url)?)
        .set_policy(reconnect_policy())
        .build_subscriber_client()
        .context("building the Redis subscriber")?;
    // Re-subscribes the adapter's channels after a reconnect.
    subscriber.manage_subscriptions();
    let adapter_config = RedisAdapterConfig::new().with_prefix(format!("{prefix}-socket.io"));
    let adapter = RedisAdapterCtr::new_with_fred_config(subscriber, adapter_config)
        .await
        .context("connecting the Socket.IO Redis adapter")?;
    Ok(RedisConnections { client, adapter })
}

/// Whether Redis answers right now (bounded, so `/health` never hangs on a dead Redis).
pub async fn ping(client: &Client) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.ping::<String>(None)).await,
        Ok(Ok(_))
    )
}
