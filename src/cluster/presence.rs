//! Presence in Redis, shared by every node. Each transition is one Lua script, so it is atomic
//! across nodes and reported by exactly one of them.
//!
//! Keys (all under the configured prefix `P`):
//! - `P:conns:{user}`: hash socket id → node id (the user's sockets, cluster-wide)
//! - `P:presence:{user}`: hash `announced`, `idle`, `manual`, `activity`, `metadata`,
//!   `last_active` (ms)
//! - `P:node:{node}:users`: set of users with a socket on that node
//! - `P:nodes`: sorted set node id → heartbeat expiry (ms)
//! - `P:offline`: sorted set user → end of their grace period (ms)
//!
//! The scripts address keys they are given, so a standalone Redis (or one shard) is required.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use fred::prelude::*;
use fred::types::scripts::Script;
use serde_json::Value as Json;

use crate::domain::bounded::{DueQueue, Generations};
use crate::domain::presence::{Live, LiveSockets, PresenceStore, Reconciled, Status};

const RESERVE: &str = r#"
local n = redis.call('HLEN', KEYS[1])
if n >= tonumber(ARGV[3]) and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
return 1
"#;

const RELEASE: &str = r#"
redis.call('HDEL', KEYS[1], ARGV[1])
local vals = redis.call('HVALS', KEYS[1])
local here = false
for _, v in ipairs(vals) do if v == ARGV[2] then here = true end end
if not here then redis.call('SREM', KEYS[2], ARGV[3]) end
if #vals == 0 then
  if redis.call('HGET', KEYS[3], 'announced') == '1' then
    redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
  else
    redis.call('DEL', KEYS[3])
  end
end
return #vals
"#;

const STATUS_FN: &str = r#"
local function status(key)
  local m = redis.call('HGET', key, 'manual')
  if m then return m end
  if redis.call('HGET', key, 'idle') == '1' then return 'away' end
  return 'online'
end
"#;

const CAME_ONLINE: &str = r#"
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'last_active', ARGV[2])
if redis.call('HGET', KEYS[1], 'announced') == '1' then
  if redis.call('HGET', KEYS[1], 'idle') == '1' then
    redis.call('HSET', KEYS[1], 'idle', '0')
    if not redis.call('HGET', KEYS[1], 'manual') then return 'online' end
  end
  return false
end
redis.call('HSET', KEYS[1], 'announced', '1', 'idle', '0')
return status(KEYS[1])
"#;

const TAKE_OFFLINE: &str = r#"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HLEN', KEYS[2]) > 0 then return 0 end
local announced = redis.call('HGET', KEYS[3], 'announced') == '1'
redis.call('DEL', KEYS[3])
if announced then return 1 end
return 0
"#;

const TOUCH: &str = r#"
if redis.call('HGET', KEYS[1], 'announced') ~= '1' then return false end
redis.call('HSET', KEYS[1], 'last_active', ARGV[1])
if redis.call('HGET', KEYS[1], 'idle') == '1' then
  redis.call('HSET', KEYS[1], 'idle', '0')
  if not redis.call('HGET', KEYS[1], 'manual') then return 'online' end
end
return false
"#;

/// The idle check of a batch of users: KEYS are (state, conns) pairs, ARGV[1] the cutoff. One
/// result per user: -1 turned away (to announce), 0 nothing to watch (gone, idle or not yet
/// online; a chosen status turns idle silently), or the `last_active` (ms) of a user active
/// since the cutoff, to look at again later.
const SWEEP_BATCH: &str = r#"
local results = {}
local cutoff = tonumber(ARGV[1])
for i = 1, #KEYS, 2 do
  local state, conns = KEYS[i], KEYS[i + 1]
  local result = 0
  if redis.call('HGET', state, 'announced') == '1' and redis.call('HGET', state, 'idle') ~= '1'
     and redis.call('HLEN', conns) > 0 then
    local last = tonumber(redis.call('HGET', state, 'last_active') or '0')
    if last >= cutoff then
      result = last
    else
      redis.call('HSET', state, 'idle', '1')
      if not redis.call('HGET', state, 'manual') then result = -1 end
    end
  end
  results[#results + 1] = result
end
return results
"#;

/// Users checked by one idle-sweep script call: one round trip per this many local users.
const SWEEP_BATCH_USERS: usize = 500;

const SET_STATUS: &str = r#"
if redis.call('HGET', KEYS[1], 'announced') ~= '1' then return false end
local before = status(KEYS[1])
if ARGV[1] == 'online' then redis.call('HDEL', KEYS[1], 'manual') else redis.call('HSET', KEYS[1], 'manual', ARGV[1]) end
redis.call('HSET', KEYS[1], 'idle', '0', 'last_active', ARGV[2])
local after = status(KEYS[1])
if before == after then return false end
return after
"#;

const SET_ACTIVITY: &str = r#"
if redis.call('HGET', KEYS[1], 'announced') ~= '1' then return 0 end
redis.call('HSET', KEYS[1], 'activity', ARGV[1], 'metadata', ARGV[2], 'last_active', ARGV[3])
return 1
"#;

/// Removes one node's sockets of a user; a user left with none becomes due offline.
const DROP_NODE_USER: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i + 1] == ARGV[1] then redis.call('HDEL', KEYS[1], all[i]) end
end
if redis.call('HLEN', KEYS[1]) == 0 then
  if redis.call('HGET', KEYS[2], 'announced') == '1' then
    redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
  else
    redis.call('DEL', KEYS[2])
  end
end
return 1
"#;

/// Presence state in Redis for one node of the cluster.
pub struct RedisPresence {
    client: Client,
    prefix: String,
    node_id: String,
    node_ttl: Duration,
    /// Skip writing `last_active` to Redis more often than this per user: events can be many
    /// per second, and idleness is measured in minutes (or, in tests, a few hundred ms).
    touch_every: Duration,
    /// When each recently active user was last written; forgets users idle for a period or two
    /// without any scan (see [`Generations`]).
    last_touch: Mutex<Generations<String, Instant>>,
    /// This node's users that may turn idle, by the time of their activity seen here: the idle
    /// sweep checks only the ones filed before its cutoff, not every local user each tick.
    idle_candidates: Mutex<DueQueue>,
    /// Set by the first heartbeat: later heartbeats that find the node missing mean it was reaped.
    registered: AtomicBool,
    reserve: Script,
    release: Script,
    came_online: Script,
    take_offline: Script,
    touch: Script,
    sweep_batch: Script,
    set_status: Script,
    set_activity: Script,
    drop_node_user: Script,
}

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn parse_status(s: &str) -> Option<Status> {
    match s {
        "online" => Some(Status::Online),
        "away" => Some(Status::Away),
        "busy" => Some(Status::Busy),
        "offline" => Some(Status::Offline),
        _ => None,
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Online => "online",
        Status::Away => "away",
        Status::Busy => "busy",
        Status::Offline => "offline",
    }
}

impl RedisPresence {
    pub fn new(
        client: Client,
        prefix: &str,
        node_id: String,
        node_ttl: Duration,
        idle_timeout: Duration,
    ) -> Self {
        let with_status = |body: &str| Script::from_lua(format!("{STATUS_FN}\n{body}"));
        let touch_every = (idle_timeout / 4).min(Duration::from_secs(1));
        Self {
            client,
            prefix: prefix.to_owned(),
            node_id,
            node_ttl,
            touch_every,
            last_touch: Mutex::new(Generations::new(touch_every, Instant::now())),
            idle_candidates: Mutex::new(DueQueue::default()),
            registered: AtomicBool::new(false),
            reserve: Script::from_lua(RESERVE),
            release: Script::from_lua(RELEASE),
            came_online: with_status(CAME_ONLINE),
            take_offline: Script::from_lua(TAKE_OFFLINE),
            touch: Script::from_lua(TOUCH),
            sweep_batch: Script::from_lua(SWEEP_BATCH),
            set_status: with_status(SET_STATUS),
            set_activity: Script::from_lua(SET_ACTIVITY),
            drop_node_user: Script::from_lua(DROP_NODE_USER),
        }
    }

    fn conns(&self, user: &str) -> String {
        format!("{}:conns:{user}", self.prefix)
    }

    fn state(&self, user: &str) -> String {
        format!("{}:presence:{user}", self.prefix)
    }

    fn node_users(&self, node: &str) -> String {
        format!("{}:node:{node}:users", self.prefix)
    }

    fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    fn offline(&self) -> String {
        format!("{}:offline", self.prefix)
    }

    /// Whether a client event of `user` at `now` must be written to Redis (none was written
    /// within `touch_every`); records it when so.
    fn touch_due(&self, user: &str, now: Instant) -> bool {
        let mut last = self.last_touch.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = last
            .peek(&user.to_owned())
            .is_some_and(|t| now.saturating_duration_since(*t) < self.touch_every);
        if fresh {
            return false;
        }
        let (at, dropped) = last.entry_with(user.to_owned(), now, || now);
        *at = now;
        drop(last);
        drop(dropped);
        true
    }

    /// Files `user` as an idle candidate (activity at `at` ms), unless already filed.
    fn file_candidate(&self, user: &str, at: i64) {
        self.idle_candidates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .file(user, at);
    }

    /// How many users' last write times are held (for tests of the memory bound).
    pub fn touch_entries(&self) -> usize {
        self.last_touch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Drops every socket `node` had; its users without other sockets go offline at `offline_at`.
    async fn drop_node(&self, node: &str, offline_at: DateTime<Utc>) -> anyhow::Result<()> {
        let users: Vec<String> = self.client.smembers(self.node_users(node)).await?;
        for user in users {
            let keys = vec![self.conns(&user), self.state(&user), self.offline()];
            let args = vec![node.to_owned(), user.clone(), ms(offline_at).to_string()];
            let _: i64 = self
                .drop_node_user
                .evalsha_with_reload(&self.client, keys, args)
                .await?;
        }
        let _: i64 = self.client.del(self.node_users(node)).await?;
        Ok(())
    }
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn connections(&self, user: &str) -> anyhow::Result<Vec<(String, String)>> {
        super::ensure_connected(&self.client)?;
        let conns: HashMap<String, String> = self.client.hgetall(self.conns(user)).await?;
        let mut list: Vec<(String, String)> = conns.into_iter().collect();
        list.sort();
        Ok(list)
    }

    async fn reserve_connection(&self, user: &str, sid: &str, limit: u32) -> anyhow::Result<bool> {
        super::ensure_connected(&self.client)?;
        let keys = vec![self.conns(user), self.node_users(&self.node_id)];
        let args = vec![
            sid.to_owned(),
            self.node_id.clone(),
            limit.to_string(),
            user.to_owned(),
        ];
        let granted: i64 = self
            .reserve
            .evalsha_with_reload(&self.client, keys, args)
            .await?;
        Ok(granted == 1)
    }

    async fn release_connection(
        &self,
        user: &str,
        sid: &str,
        offline_at: DateTime<Utc>,
    ) -> anyhow::Result<u32> {
        super::ensure_connected(&self.client)?;
        let keys = vec![
            self.conns(user),
            self.node_users(&self.node_id),
            self.state(user),
            self.offline(),
        ];
        let args = vec![
            sid.to_owned(),
            self.node_id.clone(),
            user.to_owned(),
            ms(offline_at).to_string(),
        ];
        let left: i64 = self
            .release
            .evalsha_with_reload(&self.client, keys, args)
            .await?;
        Ok(left.max(0) as u32)
    }

    async fn connection_count(&self, user: &str) -> anyhow::Result<u32> {
        super::ensure_connected(&self.client)?;
        let n: i64 = self.client.hlen(self.conns(user)).await?;
        Ok(n.max(0) as u32)
    }

    async fn came_online(&self, user: &str, now: DateTime<Utc>) -> anyhow::Result<Option<Status>> {
        super::ensure_connected(&self.client)?;
        let keys = vec![self.state(user), self.offline()];
        let args = vec![user.to_owned(), ms(now).to_string()];
        let status: Option<String> = self
            .came_online
            .evalsha_with_reload(&self.client, keys, args)
            .await?;
        self.file_candidate(user, ms(now));
        Ok(status.as_deref().and_then(parse_status))
    }

    async fn take_due_offline(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<String>> {
        super::ensure_connected(&self.client)?;
        let due: Vec<String> = self
            .client
            .zrangebyscore(self.offline(), "-inf", ms(now), false, Some((0, 500)))
            .await?;
        let mut offline = Vec::new();
        for user in due {
            let keys = vec![self.offline(), self.conns(&user), self.state(&user)];
            let went: i64 = self
                .take_offline
                .evalsha_with_reload(&self.client, keys, vec![user.clone()])
                .await?;
            if went == 1 {
                offline.push(user);
            }
        }
        Ok(offline)
    }

    async fn touch(&self, user: &str, now: DateTime<Utc>) -> anyhow::Result<Option<Status>> {
        if !self.client.is_connected() {
            // Activity is best effort: an outage must not slow every event down or flood logs.
            return Ok(None);
        }
        if !self.touch_due(user, Instant::now()) {
            return Ok(None);
        }
        self.file_candidate(user, ms(now));
        let status: Option<String> = self
            .touch
            .evalsha_with_reload(
                &self.client,
                vec![self.state(user)],
                vec![ms(now).to_string()],
            )
            .await?;
        Ok(status.as_deref().and_then(parse_status))
    }

    async fn sweep_idle(&self, cutoff: DateTime<Utc>) -> anyhow::Result<Vec<String>> {
        super::ensure_connected(&self.client)?;
        // Each node sweeps the users active on it (a user on two nodes may be swept by both;
        // the script makes only one of the sweeps count), and only those whose activity seen
        // here is older than the cutoff: the cost of a tick follows who may be due.
        let cutoff = ms(cutoff);
        let due = self
            .idle_candidates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_before(cutoff);
        let mut turned = Vec::new();
        // One script call per batch of users, not one round trip per user.
        for (index, batch) in due.chunks(SWEEP_BATCH_USERS).enumerate() {
            let keys: Vec<String> = batch
                .iter()
                .flat_map(|user| [self.state(user), self.conns(user)])
                .collect();
            let results: Vec<i64> = match self
                .sweep_batch
                .evalsha_with_reload(&self.client, keys, vec![cutoff.to_string()])
                .await
            {
                Ok(results) => results,
                Err(e) => {
                    // Keep watching the users not checked yet; the next tick tries again.
                    for user in due.iter().skip(index * SWEEP_BATCH_USERS) {
                        self.file_candidate(user, cutoff - 1);
                    }
                    return Err(e.into());
                }
            };
            for (user, result) in batch.iter().zip(results) {
                match result {
                    -1 => turned.push(user.clone()),
                    last if last > 0 => self.file_candidate(user, last),
                    _ => {}
                }
            }
        }
        Ok(turned)
    }

    async fn set_status(
        &self,
        user: &str,
        status: Status,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Status>> {
        super::ensure_connected(&self.client)?;
        let args = vec![status_name(status).to_owned(), ms(now).to_string()];
        let changed: Option<String> = self
            .set_status
            .evalsha_with_reload(&self.client, vec![self.state(user)], args)
            .await?;
        self.file_candidate(user, ms(now));
        Ok(changed.as_deref().and_then(parse_status))
    }

    async fn set_activity(
        &self,
        user: &str,
        activity: &str,
        metadata: Json,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        super::ensure_connected(&self.client)?;
        let args = vec![
            activity.to_owned(),
            metadata.to_string(),
            ms(now).to_string(),
        ];
        let _: i64 = self
            .set_activity
            .evalsha_with_reload(&self.client, vec![self.state(user)], args)
            .await?;
        Ok(())
    }

    async fn get_many(&self, users: &[String]) -> anyhow::Result<Vec<(String, Live)>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        super::ensure_connected(&self.client)?;
        let pipeline = self.client.pipeline();
        for user in users {
            let _: () = pipeline.hgetall(self.state(user)).await?;
        }
        let states: Vec<HashMap<String, String>> = pipeline.all().await?;
        let mut live = Vec::new();
        for (user, state) in users.iter().zip(states) {
            if state.get("announced").map(String::as_str) != Some("1") {
                continue;
            }
            let status = match state.get("manual").and_then(|m| parse_status(m)) {
                Some(chosen) => chosen,
                None if state.get("idle").map(String::as_str) == Some("1") => Status::Away,
                None => Status::Online,
            };
            let last_active = state
                .get("last_active")
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|v| Utc.timestamp_millis_opt(v).single())
                .unwrap_or_else(Utc::now);
            live.push((
                user.clone(),
                Live {
                    status,
                    activity: state.get("activity").cloned(),
                    metadata: state
                        .get("metadata")
                        .and_then(|m| serde_json::from_str(m).ok())
                        .unwrap_or(Json::Null),
                    last_active,
                },
            ));
        }
        Ok(live)
    }

    async fn maintain(
        &self,
        now: DateTime<Utc>,
        offline_at: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        super::ensure_connected(&self.client)?;
        let expiry = ms(now) + self.node_ttl.as_millis() as i64;
        // ZADD answers 1 when the member was new: we had been reaped as dead meanwhile.
        let added: i64 = self
            .client
            .zadd(
                self.nodes(),
                None,
                None,
                false,
                false,
                (expiry as f64, self.node_id.as_str()),
            )
            .await?;
        let dead: Vec<String> = self
            .client
            .zrangebyscore(self.nodes(), "-inf", ms(now), false, None)
            .await?;
        for node in dead {
            // Whoever removes the node from the set cleans up after it; the others skip it.
            let claimed: i64 = self.client.zrem(self.nodes(), node.as_str()).await?;
            if claimed == 1 {
                tracing::warn!(node = %node, "node heartbeat expired; its users go offline");
                self.drop_node(&node, offline_at).await?;
            }
        }
        let was_registered = self.registered.swap(true, Ordering::SeqCst);
        Ok(added == 1 && was_registered)
    }

    async fn reconcile_slots(
        &self,
        live: LiveSockets<'_>,
        offline_at: DateTime<Utc>,
    ) -> anyhow::Result<Reconciled> {
        super::ensure_connected(&self.client)?;
        let users: Vec<String> = self.client.smembers(self.node_users(&self.node_id)).await?;
        let mut held: HashMap<String, HashSet<String>> = HashMap::new();
        if !users.is_empty() {
            let pipeline = self.client.pipeline();
            for user in &users {
                let _: () = pipeline.hgetall(self.conns(user)).await?;
            }
            let conns: Vec<HashMap<String, String>> = pipeline.all().await?;
            for (user, conns) in users.into_iter().zip(conns) {
                let here = conns
                    .into_iter()
                    .filter(|(_, node)| *node == self.node_id)
                    .map(|(sid, _)| sid)
                    .collect();
                held.insert(user, here);
            }
        }
        let live = live();
        let mut outcome = Reconciled::default();
        for (user, sids) in &held {
            for sid in sids {
                if !live.get(user).is_some_and(|l| l.contains(sid)) {
                    self.release_connection(user, sid, offline_at).await?;
                    outcome.released += 1;
                }
            }
        }
        for (user, sids) in &live {
            let mut registered = false;
            for sid in sids {
                if !held.get(user).is_some_and(|h| h.contains(sid)) {
                    self.reserve_connection(user, sid, u32::MAX).await?;
                    registered = true;
                }
            }
            if registered {
                outcome.registered.push(user.clone());
            }
        }
        Ok(outcome)
    }

    async fn leave(&self, offline_at: DateTime<Utc>) -> anyhow::Result<()> {
        super::ensure_connected(&self.client)?;
        let _: i64 = self
            .client
            .zrem(self.nodes(), self.node_id.as_str())
            .await?;
        self.drop_node(&self.node_id, offline_at).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_times_of_idle_users_are_dropped() {
        let client = Client::new(Config::default(), None, None, None);
        // An idle timeout of 4 s: Redis is written at most once a second per user.
        let p = RedisPresence::new(
            client,
            "t",
            "n".into(),
            Duration::from_secs(30),
            Duration::from_secs(4),
        );
        let t0 = Instant::now();
        for i in 0..1000 {
            assert!(p.touch_due(&format!("u{i}"), t0));
        }
        assert!(!p.touch_due("u0", t0 + Duration::from_millis(500)));
        assert_eq!(p.touch_entries(), 1000);
        // u0 stays active; the others fall silent.
        assert!(p.touch_due("u0", t0 + Duration::from_millis(1100)));
        assert!(p.touch_due("u0", t0 + Duration::from_millis(2300)));
        assert_eq!(p.touch_entries(), 1, "silent users are forgotten");
        assert!(p.touch_due("u1", t0 + Duration::from_secs(10)));
        assert_eq!(p.touch_entries(), 1);
    }
}
