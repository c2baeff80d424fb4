//! Shared state: what every handler, on either transport, can reach.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use tokio_util::sync::CancellationToken;

use crate::auth::JwtKeys;
use crate::config::Config;
use crate::domain::cache::CacheBus;
use crate::domain::chat::ChatService;
use crate::domain::feed::FeedService;
use crate::domain::notifications::NotificationService;
use crate::domain::preferences::PreferenceService;
use crate::domain::presence::{
    ActivityThrottle, AudienceCache, PresenceQueue, PresenceService, RoomCounts,
};
use crate::domain::typing::TypingTracker;
use crate::metrics::Metrics;
use crate::write_path::WritePath;

/// Everything that does not depend on the Socket.IO adapter type.
pub struct Core {
    pub config: Config,
    /// Reads; also what tests seed through.
    pub db: DatabaseConnection,
    /// Whether the database answered its last probe; calls fail fast while it did not.
    pub db_status: crate::db_status::DbStatus,
    /// Probes the database on a connection and a thread of their own, never one of
    /// [`Core::db`]'s connections nor the async workers.
    pub db_probe: crate::db_status::Prober,
    /// Every write of the services, queued in one line on SQLite.
    pub writes: WritePath,
    pub jwt: JwtKeys,
    pub presence: PresenceService,
    /// Presence changes waiting to be announced by the presence workers.
    pub presence_events: PresenceQueue,
    /// Who hears each user's presence, cached.
    pub presence_audience: AudienceCache,
    /// At most one announced activity per user per window.
    pub presence_activity: ActivityThrottle,
    /// Rooms whose online count may have changed, for the `presence:room_count` flush.
    pub room_counts: RoomCounts,
    pub chat: ChatService,
    pub preferences: PreferenceService,
    pub notifications: NotificationService,
    /// Browsers' Web Push subscriptions.
    pub push_subscriptions: crate::domain::push_subscriptions::PushSubscriptions,
    /// The push and webhook channels (each off unless configured) and their counters.
    pub outbound: Arc<crate::outbound::Outbound>,
    /// Stored feed activities: the REST feed, trending and statistics.
    pub feed: FeedService,
    /// The connection slots this node's sockets hold, for the per-node limit during a Redis
    /// outage and the periodic slot reconciliation.
    pub slots: crate::realtime::slots::SlotRegistry,
    /// Users just dropped for flooding, whose new sockets wait.
    pub flood_cooldown: crate::realtime::cooldown::FloodCooldown,
    /// Typing state of users whose sockets are on this node.
    pub typing: TypingTracker,
    pub metrics: Metrics,
    /// Redis client for health checks and cluster state; `None` on a single node.
    pub redis: Option<fred::clients::Client>,
    /// Tells the other nodes about changes to node-local state.
    pub bus: Arc<dyn CacheBus>,
    /// Every server→client event goes through it: journal, bus, dispatcher.
    pub pipeline: crate::pipeline::Pipeline,
    /// This node's SSE streams and long-poll sessions (fed by the dispatcher).
    pub sessions: crate::pipeline::sessions::Sessions,
    /// Turns of connecting sockets at their setup's database reads
    /// ([`crate::realtime::setup_turns`] of them at once).
    pub setups: tokio::sync::Semaphore,
    /// Cancelled once on shutdown; every background task watches it.
    pub shutdown: CancellationToken,
}

impl Core {
    /// Whether the other nodes can be reached right now (always true on a single node).
    pub fn cluster_reachable(&self) -> bool {
        use fred::interfaces::ClientLike;
        self.redis
            .as_ref()
            .is_none_or(|client| client.is_connected())
    }
}

/// The axum state: the core plus the Socket.IO handle REST handlers emit through.
pub struct AppState<A: Adapter> {
    pub core: Arc<Core>,
    pub io: SocketIo<A>,
}

impl<A: Adapter> Clone for AppState<A> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            io: self.io.clone(),
        }
    }
}
