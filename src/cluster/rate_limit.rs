//! The per-user message rate limit in Redis: the same sliding 60 s log as on one node, kept in
//! a sorted set per user and checked and recorded in one script, with Redis's clock, so every
//! node counts against one window. While Redis is unreachable each node counts on its own
//! (the in-memory limiter), so the limit holds per node instead of waiting or vanishing.

use async_trait::async_trait;
use fred::prelude::*;
use fred::types::scripts::Script;

use crate::domain::rate_limit::{MemoryRateLimiter, RateLimiter, WINDOW};
use crate::error::{AppError, AppResult};

const CHECK: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local wait = tonumber(oldest[2]) + window - now
  if wait < 1 then wait = 1 end
  return wait
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"#;

/// Cluster-wide limiter.
pub struct RedisRateLimiter {
    client: Client,
    prefix: String,
    limit: u32,
    script: Script,
    /// Counts while Redis is down.
    local: MemoryRateLimiter,
}

impl RedisRateLimiter {
    pub fn new(client: Client, prefix: &str, limit_per_minute: u32) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
            limit: limit_per_minute,
            script: Script::from_lua(CHECK),
            local: MemoryRateLimiter::new(limit_per_minute),
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, user_id: &str) -> AppResult<()> {
        if !self.client.is_connected() {
            return self.local.check(user_id).await;
        }
        let key = format!("{}:rate:{user_id}", self.prefix);
        // A unique member per send, so two sends in the same millisecond both count.
        let member = uuid::Uuid::now_v7().to_string();
        let args = vec![
            self.limit.to_string(),
            (WINDOW.as_millis() as u64).to_string(),
            member,
        ];
        match self
            .script
            .evalsha_with_reload::<i64, _, _>(&self.client, vec![key], args)
            .await
        {
            Ok(0) => Ok(()),
            Ok(wait) => Err(AppError::RateLimited {
                retry_after_ms: wait.max(1) as u64,
            }),
            Err(e) => {
                // Redis failed mid-call: count on this node rather than refuse or wait.
                tracing::warn!(error = %e, "rate limit check failed; counting on this node");
                self.local.check(user_id).await
            }
        }
    }
}
