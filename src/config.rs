//! Every setting, its environment variable and its default, in one place. Each is also a CLI
//! flag of `switchboard serve`; `.env.example` lists them for operators.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// The secret used when `JWT_SECRET` is unset, so a new user can try the server at once.
/// Startup refuses it in production.
pub const DEV_JWT_SECRET: &str = "switchboard-dev-secret-do-not-use-in-production";

/// Deployment mode: production refuses defaults that are only safe on a laptop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

/// Log output: readable lines for people, JSON lines for log shippers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Signature algorithms accepted for user tokens. `none` is deliberately absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

/// Server configuration (`switchboard serve`).
#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Port to listen on; 0 picks a free one (tests).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// SQLite file (`sqlite://…?mode=rwc`) or PostgreSQL (`postgres://…`).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://switchboard.db?mode=rwc"
    )]
    pub database_url: String,
    /// How long a SQLite connection waits for another process's write lock before failing
    /// with "database is locked". This process's own writers queue on its write path instead
    /// (see `write_path`), so it matters only when other processes write the same file.
    #[arg(long, env = "SQLITE_BUSY_TIMEOUT_MS", default_value_t = 10_000)]
    pub sqlite_busy_timeout_ms: u64,
    /// Redis 7+ URL; set, it turns on multi-node mode.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel, so deployments can share one Redis.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "switchboard")]
    pub redis_key_prefix: String,
    /// Deliver what Node backends publish with `@socket.io/redis-emitter` into the same Redis
    /// (only with `REDIS_URL`). Off, the emitter's channels are not subscribed at all.
    #[arg(long, env = "REDIS_EMITTER_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub redis_emitter_enabled: bool,
    /// The emitter's `key` option: it publishes on `{key}#/realtime#…` and `{key}-request#…`.
    /// Independent of `REDIS_KEY_PREFIX`, because the emitter does not know that prefix.
    #[arg(long, env = "REDIS_EMITTER_KEY", default_value = "socket.io")]
    pub redis_emitter_key: String,
    /// HS256 shared secret for user tokens.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256/ES256 tokens.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Token signature algorithm.
    #[arg(long, env = "JWT_ALGORITHM", value_enum, default_value = "HS256")]
    pub jwt_algorithm: JwtAlgorithm,
    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`.
    #[arg(long, env = "JWT_LEEWAY_MS", default_value_t = 30_000)]
    pub jwt_leeway_ms: u64,
    /// Key for the service API (`/api/v1/internal`); unset disables that API.
    #[arg(long, env = "SERVICE_API_KEY", hide_env_values = true)]
    pub service_api_key: Option<String>,
    /// Comma-separated allowed origins; unset means `*` in development.
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Engine.IO heartbeat: how often the server pings each client. Clients learn it from the
    /// handshake; apps built for a 30 s heartbeat set 30000.
    #[arg(long, env = "PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,
    /// How long the server waits for a client's pong before closing the connection; with the
    /// interval, it bounds how long a vanished client still counts as connected.
    #[arg(long, env = "PING_TIMEOUT_MS", default_value_t = 20_000)]
    pub ping_timeout_ms: u64,
    /// Sockets one user may hold at once.
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", default_value_t = 10)]
    pub max_connections_per_user: u32,
    /// Chat messages per user in any 60 s window.
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", default_value_t = 60)]
    pub rate_limit_per_minute: u32,
    /// Characters of message content, after trimming.
    #[arg(long, env = "MAX_MESSAGE_LENGTH", default_value_t = 4000)]
    pub max_message_length: usize,
    /// Largest HTTP body and Socket.IO packet, in bytes.
    #[arg(long, env = "MAX_PAYLOAD_BYTES", default_value_t = 1_000_000)]
    pub max_payload_bytes: usize,
    /// Rooms with more members than this list only their first ones (by join order) in the
    /// room object, and send `chat:room_updated` as one emit to the room; the full list is paged
    /// by `GET /chat/rooms/:id/members`. Keeps a membership change's cost independent of size.
    #[arg(long, env = "ROOM_MEMBERS_INLINE_MAX", default_value_t = 100)]
    pub room_members_inline_max: usize,
    /// Packets waiting to be written to one socket before it counts as too slow. A socket found
    /// with a full buffer has missed (or is about to miss) an event, so it is told
    /// `SLOW_CONSUMER` and disconnected, and catches up with `chat:sync` after reconnecting.
    #[arg(long, env = "SOCKET_BUFFER_SIZE", default_value_t = 128)]
    pub socket_buffer_size: usize,
    /// Bytes of the read buffer each WebSocket connection keeps (it grows for a bigger packet).
    /// Every idle connection pays for it, and client events are small (a `chat:message` with a
    /// short text is about 200 bytes): socketioxide's default of 4 KiB costs 3.5 KiB per
    /// connection more than this one, 1 KiB about 1 KiB more.
    #[arg(long, env = "WS_READ_BUFFER_SIZE", default_value_t = 512)]
    pub ws_read_buffer_size: usize,
    /// How often every socket's buffer is checked, so sockets fed by other nodes' broadcasts
    /// (whose failures this node never sees) are found too; also the retry period of the
    /// disconnect of a socket too stuck to take it.
    #[arg(long, env = "SLOW_SOCKET_CHECK_MS", default_value_t = 1_000)]
    pub slow_socket_check_ms: u64,
    /// Client events per second one socket may send, every event counted (token bucket).
    #[arg(long, env = "SOCKET_EVENTS_PER_SECOND", default_value_t = 20)]
    pub socket_events_per_second: u32,
    /// Client events one socket may send at once above its steady rate (the bucket's size),
    /// e.g. a `chat:sync` per room after a reconnect.
    #[arg(long, env = "SOCKET_EVENT_BURST", default_value_t = 100)]
    pub socket_event_burst: u32,
    /// Events of one socket admitted but not yet handled; beyond it events are refused.
    #[arg(long, env = "SOCKET_QUEUE_DEPTH", default_value_t = 128)]
    pub socket_queue_depth: usize,
    /// Refused events within 10 s after which a socket is disconnected as a flooder.
    #[arg(long, env = "SOCKET_FLOOD_REJECTIONS", default_value_t = 100)]
    pub socket_flood_rejections: u32,
    /// After a socket is disconnected for flooding, its user's new sockets are refused on this
    /// node (`connect_error` `RATE_LIMITED`) for this long; 0 turns it off.
    #[arg(long, env = "SOCKET_FLOOD_COOLDOWN_MS", default_value_t = 10_000)]
    pub socket_flood_cooldown_ms: u64,
    /// Delay before a user whose last socket went away turns offline.
    #[arg(long, env = "PRESENCE_GRACE_MS", default_value_t = 5_000)]
    pub presence_grace_ms: u64,
    /// No client events for this long turns a user `away`.
    #[arg(long, env = "IDLE_TIMEOUT_MS", default_value_t = 300_000)]
    pub idle_timeout_ms: u64,
    /// Auto `isTyping: false` after this long without a refresh.
    #[arg(long, env = "TYPING_TIMEOUT_MS", default_value_t = 5_000)]
    pub typing_timeout_ms: u64,
    /// At most one forwarded `isTyping: true` per user and room in this window.
    #[arg(long, env = "TYPING_THROTTLE_MS", default_value_t = 2_000)]
    pub typing_throttle_ms: u64,
    /// How long a silent node's presence entries survive in Redis.
    #[arg(long, env = "NODE_TTL_MS", default_value_t = 30_000)]
    pub node_ttl_ms: u64,
    /// Rooms one socket may watch with `presence:watch`, and targets with `feed:watch` (each).
    #[arg(long, env = "MAX_WATCHES_PER_SOCKET", default_value_t = 50)]
    pub max_watches_per_socket: usize,
    /// Coalescing window of `presence:room_count`: at most one count per room per window.
    #[arg(long, env = "PRESENCE_COUNT_INTERVAL_MS", default_value_t = 1_000)]
    pub presence_count_interval_ms: u64,
    /// Most distinct users whose presence changes wait to be announced; beyond it, status
    /// changes wait for room and activity updates are dropped (and counted).
    #[arg(long, env = "PRESENCE_QUEUE_MAX", default_value_t = 10_000)]
    pub presence_queue_max: usize,
    /// Workers announcing presence changes concurrently (one user is never on two at once).
    #[arg(long, env = "PRESENCE_WORKERS", default_value_t = 4)]
    pub presence_workers: usize,
    /// At most one `presence:friend_activity` per user per window; the latest activity of a
    /// window is announced at its end. `0` turns the throttle off.
    #[arg(long, env = "PRESENCE_ACTIVITY_THROTTLE_MS", default_value_t = 2_000)]
    pub presence_activity_throttle_ms: u64,
    /// How long a user's presence audience (followers, direct partners, rooms, privacy) is
    /// cached at most; changes drop it sooner. `0` turns the cache off.
    #[arg(long, env = "PRESENCE_AUDIENCE_TTL_MS", default_value_t = 60_000)]
    pub presence_audience_ttl_ms: u64,
    /// Most users whose presence audience is cached per node.
    #[arg(long, env = "PRESENCE_AUDIENCE_CACHE_MAX", default_value_t = 10_000)]
    pub presence_audience_cache_max: usize,
    /// Interval of `feed:subscribe { mode: "counts" }` and `feed:watch` when none is asked for.
    #[arg(long, env = "FEED_COUNTS_INTERVAL_MS", default_value_t = 30_000)]
    pub feed_counts_interval_ms: u64,
    /// Shortest interval a client may ask for in counts mode (shorter requests are raised).
    #[arg(long, env = "FEED_COUNTS_MIN_INTERVAL_MS", default_value_t = 5_000)]
    pub feed_counts_min_interval_ms: u64,
    /// How long a node trusts its cached room membership before reading it again. Invalidations
    /// travel over Redis pub/sub and can be lost in an outage: this bounds how long a member
    /// removed on another node can keep acting on this one.
    #[arg(long, env = "MEMBERSHIP_CACHE_TTL_MS", default_value_t = 30_000)]
    pub membership_cache_ttl_ms: u64,
    /// How often this node's connection slots in Redis are checked against its live sockets, so
    /// a slot whose release failed (Redis down) or never ran is freed.
    #[arg(long, env = "SLOT_RECONCILE_INTERVAL_MS", default_value_t = 30_000)]
    pub slot_reconcile_interval_ms: u64,
    /// How long a request waits for a database connection before failing, instead of piling up
    /// behind a database that does not answer.
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT_MS", default_value_t = 3_000)]
    pub db_acquire_timeout_ms: u64,
    /// How often the database is probed: while the last probe failed, calls that need the
    /// database are refused at once instead of each waiting out the pool's timeout.
    #[arg(long, env = "DB_PROBE_INTERVAL_MS", default_value_t = 1_000)]
    pub db_probe_interval_ms: u64,
    /// Longest wait of one database probe, and of `/health` for the database.
    #[arg(long, env = "DB_HEALTH_TIMEOUT_MS", default_value_t = 1_000)]
    pub db_health_timeout_ms: u64,
    /// How often expired notifications are purged.
    #[arg(
        long,
        env = "NOTIFICATION_PURGE_INTERVAL_MS",
        default_value_t = 3_600_000
    )]
    pub notification_purge_interval_ms: u64,
    /// Connections the kernel may hold completed but not yet accepted (capped by
    /// `net.core.somaxconn`): a reconnect avalanche arrives faster than any server accepts.
    #[arg(long, env = "LISTEN_BACKLOG", default_value_t = 8_192)]
    pub listen_backlog: u32,
    /// How often the SQLite WAL is checkpointed off the write path (`db::checkpointer`); 0 =
    /// leave it to SQLite, inside the commit that crosses 1,000 pages. Short: a second's worth
    /// of WAL copied and synced at once held up the commits around it (see `db::checkpointer`).
    #[arg(long, env = "SQLITE_CHECKPOINT_INTERVAL_MS", default_value_t = 100)]
    pub sqlite_checkpoint_interval_ms: u64,
    /// How often new messages are added to SQLite's full-text index, in batches, after their
    /// commits (`domain::chat::search_index`); 0 = only when someone searches. A search always
    /// indexes what is pending first, so this bounds the work a search may find waiting (with
    /// 0, everything sent since the last search).
    #[arg(long, env = "SEARCH_INDEX_INTERVAL_MS", default_value_t = 500)]
    pub search_index_interval_ms: u64,
    /// How often freed heap memory is handed back to the OS (glibc's `malloc_trim`); 0 = never.
    #[arg(long, env = "HEAP_TRIM_INTERVAL_MS", default_value_t = 30_000)]
    pub heap_trim_interval_ms: u64,
    /// How long resume cursors into chat events stay valid: older journal entries are purged.
    #[arg(long, env = "EVENT_RETENTION_CHAT_MS", default_value_t = 604_800_000)]
    pub event_retention_chat_ms: u64,
    /// How long resume cursors into notification events stay valid.
    #[arg(
        long,
        env = "EVENT_RETENTION_NOTIFICATIONS_MS",
        default_value_t = 604_800_000
    )]
    pub event_retention_notifications_ms: u64,
    /// How long resume cursors into feed activities stay valid.
    #[arg(long, env = "EVENT_RETENTION_FEED_MS", default_value_t = 86_400_000)]
    pub event_retention_feed_ms: u64,
    /// How often the event journal is purged of entries past their retention.
    #[arg(long, env = "EVENT_PURGE_INTERVAL_MS", default_value_t = 60_000)]
    pub event_purge_interval_ms: u64,
    /// Most events one resume replays; a client further behind is told to refetch (`reset`).
    #[arg(long, env = "RESUME_MAX_EVENTS", default_value_t = 10_000)]
    pub resume_max_events: usize,
    /// How long the dispatcher waits for a missing event id (lost or late on the bus) before
    /// reading it from the journal.
    #[arg(long, env = "PIPELINE_GAP_WAIT_MS", default_value_t = 200)]
    pub pipeline_gap_wait_ms: u64,
    /// How often the dispatcher compares what it delivered with the journal head, so a lost
    /// last event is delivered without waiting for the next one.
    #[arg(long, env = "PIPELINE_HEAD_CHECK_MS", default_value_t = 1_000)]
    pub pipeline_head_check_ms: u64,
    /// Interval of the keep-alive comments on an SSE stream: they keep proxies from closing an
    /// idle stream and let the server notice a client that went away.
    #[arg(long, env = "SSE_KEEPALIVE_MS", default_value_t = 15_000)]
    pub sse_keepalive_ms: u64,
    /// The `retry:` hint of an SSE stream: how long `EventSource` waits before reconnecting.
    #[arg(long, env = "SSE_RETRY_MS", default_value_t = 3_000)]
    pub sse_retry_ms: u64,
    /// Events waiting to be written to one SSE stream; a stream that falls this far behind is
    /// closed with `session:error` `SLOW_CONSUMER` (it resumes from `Last-Event-ID`).
    #[arg(long, env = "SSE_QUEUE_DEPTH", default_value_t = 256)]
    pub sse_queue_depth: usize,
    /// Longest wait of a long poll, and its default `timeout_ms`.
    #[arg(long, env = "POLL_TIMEOUT_MS", default_value_t = 30_000)]
    pub poll_timeout_ms: u64,
    /// VAPID private key (RFC 8292): the raw 32-byte P-256 scalar, base64url, as
    /// `npx web-push generate-vapid-keys` prints it. Unset: Web Push is off (in development, an
    /// ephemeral key is generated instead, with a warning). Browsers bind a subscription to the
    /// public key, so every node must share one key and it must outlive restarts.
    #[arg(long, env = "VAPID_PRIVATE_KEY", hide_env_values = true)]
    pub vapid_private_key: Option<String>,
    /// Contact the push services may use (`mailto:…` or `https:…`); needed with
    /// `VAPID_PRIVATE_KEY`.
    #[arg(long, env = "VAPID_SUBJECT")]
    pub vapid_subject: Option<String>,
    /// Push only to users with no live connection on any node (an app in the foreground
    /// already got `notification:new`). `false` pushes whether or not the user is connected.
    #[arg(long, env = "PUSH_ONLY_WHEN_OFFLINE", default_value_t = true, action = clap::ArgAction::Set)]
    pub push_only_when_offline: bool,
    /// Push subscriptions one user may hold; the oldest is replaced beyond it.
    #[arg(long, env = "PUSH_SUBSCRIPTIONS_PER_USER", default_value_t = 20)]
    pub push_subscriptions_per_user: u64,
    /// Notifications waiting to be pushed; beyond it new ones are not pushed (and counted).
    #[arg(long, env = "PUSH_QUEUE_MAX", default_value_t = 10_000)]
    pub push_queue_max: usize,
    /// Pushes in flight at once (each to one subscription, retries included).
    #[arg(long, env = "PUSH_CONCURRENCY", default_value_t = 32)]
    pub push_concurrency: usize,
    /// Attempts per push when the push service answers 429 or 5xx (or does not answer).
    #[arg(long, env = "PUSH_MAX_ATTEMPTS", default_value_t = 5)]
    pub push_max_attempts: u32,
    /// First retry delay of a push, doubled per attempt (a `Retry-After` overrides it).
    #[arg(long, env = "PUSH_RETRY_BASE_MS", default_value_t = 1_000)]
    pub push_retry_base_ms: u64,
    /// `TTL` of a push whose notification has no `expiresAt` (one with it lives until then).
    #[arg(long, env = "PUSH_DEFAULT_TTL_SECS", default_value_t = 86_400)]
    pub push_default_ttl_secs: u64,
    /// Where `notification.created` webhooks are POSTed (for `email: true`); unset: off.
    #[arg(long, env = "NOTIFICATION_WEBHOOK_URL")]
    pub notification_webhook_url: Option<String>,
    /// HMAC-SHA256 key of `X-Switchboard-Signature`; needed with `NOTIFICATION_WEBHOOK_URL`.
    #[arg(long, env = "NOTIFICATION_WEBHOOK_SECRET", hide_env_values = true)]
    pub notification_webhook_secret: Option<String>,
    /// Attempts per webhook delivery before it is marked failed.
    #[arg(long, env = "NOTIFICATION_WEBHOOK_MAX_ATTEMPTS", default_value_t = 15)]
    pub notification_webhook_max_attempts: u32,
    /// First retry delay of a webhook delivery, doubled per attempt up to an hour (a
    /// `Retry-After` overrides it). With the default attempts, a delivery is tried for about
    /// five and a half hours before it is marked failed.
    #[arg(
        long,
        env = "NOTIFICATION_WEBHOOK_RETRY_BASE_MS",
        default_value_t = 5_000
    )]
    pub notification_webhook_retry_base_ms: u64,
    /// Longest wait for a push service or the webhook to answer one request.
    #[arg(long, env = "OUTBOUND_TIMEOUT_MS", default_value_t = 10_000)]
    pub outbound_timeout_ms: u64,
    /// How long a graceful shutdown waits for in-flight work.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    pub shutdown_timeout_ms: u64,
    /// `pretty` or `json`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    /// `development` or `production`.
    #[arg(
        long,
        env = "SWITCHBOARD_ENV",
        value_enum,
        default_value = "development"
    )]
    pub environment: Environment,
    /// Allow SQLite when `SWITCHBOARD_ENV=production` (single-node deployments).
    #[arg(long, env = "ALLOW_SQLITE_IN_PRODUCTION", default_value_t = false)]
    pub allow_sqlite_in_production: bool,
    /// Serve the demo page at `/demo` and its token endpoint. Unset: on in development, off in
    /// production, because `POST /demo/token` signs a token for any user id it is asked for.
    #[arg(long, env = "DEMO_ENABLED")]
    pub demo_enabled: Option<bool>,
}

impl Config {
    /// Checks the combination of settings, refusing what would be unsafe in production.
    pub fn validate(&self) -> anyhow::Result<()> {
        let production = self.environment == Environment::Production;
        match self.jwt_algorithm {
            JwtAlgorithm::Hs256 => {
                if self.jwt_secret.as_deref().is_some_and(str::is_empty) {
                    anyhow::bail!("JWT_SECRET is set but empty");
                }
                if production && self.jwt_secret.is_none() {
                    anyhow::bail!(
                        "SWITCHBOARD_ENV=production needs JWT_SECRET (or JWT_ALGORITHM=RS256/ES256 \
                         with JWT_PUBLIC_KEY_FILE); the built-in development secret is refused"
                    );
                }
            }
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => {
                if self.jwt_public_key_file.is_none() {
                    anyhow::bail!(
                        "JWT_ALGORITHM={:?} needs JWT_PUBLIC_KEY_FILE",
                        self.jwt_algorithm
                    );
                }
            }
        }
        if production && self.is_sqlite() && !self.allow_sqlite_in_production {
            anyhow::bail!(
                "SWITCHBOARD_ENV=production with a SQLite DATABASE_URL: point DATABASE_URL at \
                 PostgreSQL, or set ALLOW_SQLITE_IN_PRODUCTION=true for a single-node deployment"
            );
        }
        if production && self.cors_origins.is_empty() {
            anyhow::bail!(
                "SWITCHBOARD_ENV=production needs CORS_ORIGINS (comma-separated origins)"
            );
        }
        if self
            .service_api_key
            .as_deref()
            .is_some_and(|k| k.len() < 16)
            && production
        {
            anyhow::bail!("SERVICE_API_KEY must be at least 16 characters in production");
        }
        if self.ping_interval_ms == 0 || self.ping_timeout_ms == 0 {
            anyhow::bail!("PING_INTERVAL_MS and PING_TIMEOUT_MS must be at least 1");
        }
        if self.feed_counts_min_interval_ms == 0
            || self.feed_counts_interval_ms < self.feed_counts_min_interval_ms
        {
            anyhow::bail!(
                "FEED_COUNTS_MIN_INTERVAL_MS must be at least 1 and at most FEED_COUNTS_INTERVAL_MS"
            );
        }
        if self.event_purge_interval_ms == 0
            || self.pipeline_gap_wait_ms == 0
            || self.pipeline_head_check_ms == 0
        {
            anyhow::bail!(
                "EVENT_PURGE_INTERVAL_MS, PIPELINE_GAP_WAIT_MS and PIPELINE_HEAD_CHECK_MS must be at least 1"
            );
        }
        if self.resume_max_events == 0 {
            anyhow::bail!("RESUME_MAX_EVENTS must be at least 1");
        }
        if self.sse_keepalive_ms == 0 || self.sse_queue_depth == 0 {
            anyhow::bail!("SSE_KEEPALIVE_MS and SSE_QUEUE_DEPTH must be at least 1");
        }
        if self.presence_count_interval_ms == 0 {
            anyhow::bail!("PRESENCE_COUNT_INTERVAL_MS must be at least 1");
        }
        if self.presence_queue_max == 0 || self.presence_workers == 0 {
            anyhow::bail!("PRESENCE_QUEUE_MAX and PRESENCE_WORKERS must be at least 1");
        }
        if self.max_connections_per_user == 0 || self.rate_limit_per_minute == 0 {
            anyhow::bail!("MAX_CONNECTIONS_PER_USER and RATE_LIMIT_PER_MINUTE must be at least 1");
        }
        if self.ws_read_buffer_size < 128 {
            anyhow::bail!("WS_READ_BUFFER_SIZE must be at least 128 (bytes)");
        }
        if self.socket_buffer_size == 0
            || self.slow_socket_check_ms == 0
            || self.socket_events_per_second == 0
            || self.socket_event_burst == 0
            || self.socket_queue_depth == 0
            || self.socket_flood_rejections == 0
        {
            anyhow::bail!(
                "SOCKET_BUFFER_SIZE, SLOW_SOCKET_CHECK_MS, SOCKET_EVENTS_PER_SECOND, \
                 SOCKET_EVENT_BURST, SOCKET_QUEUE_DEPTH and SOCKET_FLOOD_REJECTIONS must be at least 1"
            );
        }
        self.validate_outbound()?;
        Ok(())
    }

    /// Checks the push and webhook settings: a key needs a subject, a webhook URL a secret.
    fn validate_outbound(&self) -> anyhow::Result<()> {
        if self.vapid_private_key.is_some() {
            match self.vapid_subject.as_deref() {
                Some(s) if s.starts_with("mailto:") || s.starts_with("https:") => {}
                _ => anyhow::bail!(
                    "VAPID_PRIVATE_KEY needs VAPID_SUBJECT, a mailto: or https: URL the push \
                     services can reach you at"
                ),
            }
        }
        if let Some(url) = &self.notification_webhook_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                anyhow::bail!("NOTIFICATION_WEBHOOK_URL must be an http(s) URL");
            }
            if self
                .notification_webhook_secret
                .as_deref()
                .is_none_or(str::is_empty)
            {
                anyhow::bail!(
                    "NOTIFICATION_WEBHOOK_URL needs NOTIFICATION_WEBHOOK_SECRET to sign its bodies"
                );
            }
        }
        if self.push_queue_max == 0
            || self.push_concurrency == 0
            || self.push_max_attempts == 0
            || self.notification_webhook_max_attempts == 0
            || self.push_subscriptions_per_user == 0
        {
            anyhow::bail!(
                "PUSH_QUEUE_MAX, PUSH_CONCURRENCY, PUSH_MAX_ATTEMPTS, PUSH_SUBSCRIPTIONS_PER_USER \
                 and NOTIFICATION_WEBHOOK_MAX_ATTEMPTS must be at least 1"
            );
        }
        Ok(())
    }

    pub fn outbound_timeout(&self) -> Duration {
        Duration::from_millis(self.outbound_timeout_ms.max(1))
    }

    /// Whether `/demo` is served: `DEMO_ENABLED` when set, else only in development.
    pub fn demo_enabled(&self) -> bool {
        self.demo_enabled
            .unwrap_or(self.environment == Environment::Development)
    }

    /// Whether persistence is the embedded SQLite backend.
    pub fn is_sqlite(&self) -> bool {
        self.database_url.starts_with("sqlite:")
    }

    pub fn presence_grace(&self) -> Duration {
        Duration::from_millis(self.presence_grace_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn typing_timeout(&self) -> Duration {
        Duration::from_millis(self.typing_timeout_ms)
    }

    pub fn typing_throttle(&self) -> Duration {
        Duration::from_millis(self.typing_throttle_ms)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    pub fn membership_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.membership_cache_ttl_ms)
    }

    pub fn slot_reconcile_interval(&self) -> Duration {
        Duration::from_millis(self.slot_reconcile_interval_ms.max(10))
    }

    /// The database pool's waits: acquire timeout and SQLite's busy timeout.
    pub fn db_waits(&self) -> crate::db::Waits {
        crate::db::Waits {
            acquire: self.db_acquire_timeout(),
            busy: Duration::from_millis(self.sqlite_busy_timeout_ms),
        }
    }

    pub fn db_acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.db_acquire_timeout_ms.max(1))
    }

    pub fn db_probe_interval(&self) -> Duration {
        Duration::from_millis(self.db_probe_interval_ms.max(10))
    }

    pub fn db_health_timeout(&self) -> Duration {
        Duration::from_millis(self.db_health_timeout_ms.max(1))
    }

    pub fn socket_flood_cooldown(&self) -> Duration {
        Duration::from_millis(self.socket_flood_cooldown_ms)
    }

    pub fn slow_socket_check(&self) -> Duration {
        Duration::from_millis(self.slow_socket_check_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}
