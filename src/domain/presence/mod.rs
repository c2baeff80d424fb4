//! Presence: who is online, away, busy or offline, and what they are doing. The
//! [`PresenceStore`] holds the live state (process memory on one node, Redis in a cluster) and
//! makes every transition atomically, so each real change is reported exactly once; the
//! [`PresenceService`] adds the rules that need the database (audience, privacy, `lastSeen`).

mod audience;
mod memory;
mod queue;
pub mod rooms;
mod throttle;

pub use audience::{Audience, AudienceCache};
pub use memory::MemoryPresence;
pub use queue::{ActivityUpdate, Pending, PresenceQueue};
pub use rooms::{RoomCounts, RoomPresencePage, room_presence};
pub use throttle::{ActivityThrottle, Offer};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use entity::{follow, room, room_member, user};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, JoinType, QueryFilter, QueryOrder, QuerySelect,
    RelationTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::bounded::MAX_BIND_IDS;
use crate::domain::preferences::PreferenceService;
use crate::error::AppResult;
use crate::time::serde_rfc3339;
use crate::write_path::WritePath;

/// A user's presence status as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Away,
    Busy,
    Offline,
}

/// The live presence of one connected (or just disconnected) user.
#[derive(Clone, Debug, PartialEq)]
pub struct Live {
    pub status: Status,
    pub activity: Option<String>,
    pub metadata: Value,
    /// Time of the user's last client event.
    pub last_active: DateTime<Utc>,
}

/// A visible status change, to announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChange {
    pub user_id: String,
    pub status: Status,
    pub last_seen: DateTime<Utc>,
}

/// This node's live sockets by user, taken when a [`PresenceStore::reconcile_slots`] asks.
pub type LiveSockets<'a> = &'a (dyn Fn() -> HashMap<String, HashSet<String>> + Send + Sync);

/// What a slot reconciliation changed.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Slots freed because their socket is gone.
    pub released: usize,
    /// Users with sockets that had no slot and got one again.
    pub registered: Vec<String>,
}

/// Where live presence state lives. Every method is one atomic step, so concurrent sockets and
/// nodes never both report the same transition.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// The user's connections on every node, as (connection id, node id). Empty where the store
    /// cannot tell (the single-node memory store: there, this node's own lists are complete).
    async fn connections(&self, _user: &str) -> anyhow::Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    /// Records socket `sid` for `user` unless the user already holds `limit` sockets.
    async fn reserve_connection(&self, user: &str, sid: &str, limit: u32) -> anyhow::Result<bool>;

    /// Forgets socket `sid`; returns how many sockets the user still holds (on any node). When
    /// none are left, the user is due to turn offline at `offline_at` (the grace period), unless
    /// a socket comes back first.
    async fn release_connection(
        &self,
        user: &str,
        sid: &str,
        offline_at: DateTime<Utc>,
    ) -> anyhow::Result<u32>;

    /// How many sockets the user holds (on any node).
    async fn connection_count(&self, user: &str) -> anyhow::Result<u32>;

    /// A socket finished connecting: an offline user turns online (`Some(Online)`); a user
    /// still within the grace period of a reload keeps their status (`None`).
    async fn came_online(&self, user: &str, now: DateTime<Utc>) -> anyhow::Result<Option<Status>>;

    /// Users whose grace period ended by `now` with no socket back: they are now offline and
    /// forgotten. Each is returned by exactly one call, on whichever node makes it.
    async fn take_due_offline(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<String>>;

    /// A client event: records activity; an automatically away user turns online again.
    async fn touch(&self, user: &str, now: DateTime<Utc>) -> anyhow::Result<Option<Status>>;

    /// Users (of this node's sockets) with no event since `cutoff` turn `away`; returns them.
    async fn sweep_idle(&self, cutoff: DateTime<Utc>) -> anyhow::Result<Vec<String>>;

    /// The user chose a status: `Online` clears a manual `away`/`busy`. Returns the new status
    /// when it changed.
    async fn set_status(
        &self,
        user: &str,
        status: Status,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Status>>;

    /// Sets the user's activity string and metadata.
    async fn set_activity(
        &self,
        user: &str,
        activity: &str,
        metadata: Value,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()>;

    /// The live presence of users that are connected (or within their grace period).
    async fn get_many(&self, users: &[String]) -> anyhow::Result<Vec<(String, Live)>>;

    /// Periodic cluster upkeep: renew this node's heartbeat and clean up after nodes whose
    /// heartbeat expired (their users become due offline at `offline_at`). Returns true when this
    /// node had itself been given up for dead, so its live sockets must be registered again.
    async fn maintain(&self, now: DateTime<Utc>, offline_at: DateTime<Utc>)
    -> anyhow::Result<bool>;

    /// Makes this node's connection slots match its live sockets: slots whose socket is gone
    /// are released (users left with none become due offline at `offline_at`), and live
    /// sockets without a slot (accepted while the store was unreachable) get one, over the
    /// limit if need be. `live` is called after the store's own state was read, so a socket
    /// released meanwhile is not registered again. Nothing to do where releases cannot fail.
    async fn reconcile_slots(
        &self,
        _live: LiveSockets<'_>,
        _offline_at: DateTime<Utc>,
    ) -> anyhow::Result<Reconciled> {
        Ok(Reconciled::default())
    }

    /// Graceful shutdown: forget this node's sockets at once; users left without any become due
    /// offline at `offline_at`, so clients reconnecting to another node in time do not flap.
    async fn leave(&self, offline_at: DateTime<Utc>) -> anyhow::Result<()>;
}

/// What one user's presence looks like to a viewer (or to themselves).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresenceView {
    pub user_id: String,
    pub status: Status,
    #[schema(required = true)]
    pub activity: Option<String>,
    pub metadata: Value,
    #[schema(required = true)]
    #[serde(with = "serde_rfc3339::option")]
    pub last_seen: Option<DateTime<Utc>>,
}

/// Presence rules over the store and the database.
pub struct PresenceService {
    pub store: Arc<dyn PresenceStore>,
    db: DatabaseConnection,
    writes: WritePath,
}

impl PresenceService {
    pub fn new(store: Arc<dyn PresenceStore>, db: DatabaseConnection, writes: WritePath) -> Self {
        Self { store, db, writes }
    }

    /// Who is told about `user_id`'s presence: followers and direct-room partners, or nobody
    /// when the user does not share their online status.
    pub async fn audience(
        &self,
        prefs: &PreferenceService,
        user_id: &str,
    ) -> AppResult<Vec<String>> {
        if !prefs.get(user_id).await?.share_online_status {
            return Ok(Vec::new());
        }
        self.followers_and_partners(user_id).await
    }

    /// Everything an announcement of `user_id`'s presence needs to know about its audience,
    /// with the privacy switch read once: what [`AudienceCache`] holds.
    pub async fn load_audience(
        &self,
        prefs: &PreferenceService,
        user_id: &str,
    ) -> AppResult<Audience> {
        if !prefs.get(user_id).await?.share_online_status {
            return Ok(Audience::default());
        }
        Ok(Audience {
            users: self.followers_and_partners(user_id).await?,
            rooms: crate::domain::chat::room_ids_of(&self.db, user_id).await?,
        })
    }

    async fn followers_and_partners(&self, user_id: &str) -> AppResult<Vec<String>> {
        let mut audience: Vec<String> = follow::Entity::find()
            .select_only()
            .column(follow::Column::FollowerId)
            .filter(follow::Column::FolloweeId.eq(user_id))
            .into_tuple()
            .all(&self.db)
            .await?;
        audience.extend(self.direct_partners(user_id).await?);
        audience.sort();
        audience.dedup();
        audience.retain(|u| u != user_id);
        Ok(audience)
    }

    /// The other members of the user's direct rooms, in one query.
    async fn direct_partners(&self, user_id: &str) -> AppResult<Vec<String>> {
        let my_direct_rooms = sea_orm::sea_query::Query::select()
            .column(room_member::Column::RoomId)
            .from(room_member::Entity)
            .and_where(room_member::Column::UserId.eq(user_id))
            .to_owned();
        let partners: Vec<String> = room_member::Entity::find()
            .select_only()
            .column(room_member::Column::UserId)
            .join(JoinType::InnerJoin, room_member::Relation::Room.def())
            .filter(room::Column::RoomType.eq("direct"))
            .filter(room_member::Column::RoomId.in_subquery(my_direct_rooms))
            .filter(room_member::Column::UserId.ne(user_id))
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(partners)
    }

    /// The users whose presence `viewer` may see: followees and direct-room partners, at most
    /// `max` followees (a resume snapshot stays bounded; REST pages through the rest).
    pub async fn visible_to(&self, viewer: &str, max: u64) -> AppResult<Vec<String>> {
        let mut users: Vec<String> = follow::Entity::find()
            .select_only()
            .column(follow::Column::FolloweeId)
            .filter(follow::Column::FollowerId.eq(viewer))
            .limit(max)
            .into_tuple()
            .all(&self.db)
            .await?;
        users.extend(self.direct_partners(viewer).await?);
        users.sort();
        users.dedup();
        users.retain(|u| u != viewer);
        Ok(users)
    }

    /// Records that the user went offline now, for `lastSeen`.
    pub async fn record_last_seen(&self, user_id: &str, at: DateTime<Utc>) -> AppResult<()> {
        user::Entity::update_many()
            .col_expr(user::Column::LastSeen, Expr::value(at))
            .filter(user::Column::Id.eq(user_id))
            .exec(&*self.writes.turn().await?)
            .await?;
        Ok(())
    }

    /// The presence of `users` as `viewer` sees it: live state when connected, else offline
    /// with the stored `lastSeen`; users hiding their status look offline to everyone else. Ids
    /// are bound a chunk at a time, so any number of users may be asked for.
    pub async fn view(
        &self,
        prefs: &PreferenceService,
        viewer: &str,
        users: &[String],
    ) -> AppResult<Vec<PresenceView>> {
        let live: HashMap<String, Live> = self.store.get_many(users).await?.into_iter().collect();
        let mut stored: HashMap<String, Option<DateTime<Utc>>> = HashMap::new();
        for chunk in users.chunks(MAX_BIND_IDS) {
            let rows = user::Entity::find()
                .select_only()
                .column(user::Column::Id)
                .column(user::Column::LastSeen)
                .filter(user::Column::Id.is_in(chunk.iter().map(String::as_str)))
                .into_tuple::<(String, Option<DateTime<Utc>>)>()
                .all(&self.db)
                .await?;
            stored.extend(rows);
        }
        let hiding = prefs.hiding_online_status(users).await?;
        let mut views = Vec::with_capacity(users.len());
        for user_id in users {
            let hidden = user_id != viewer && hiding.contains(user_id);
            let last_seen = stored.get(user_id).copied().flatten();
            let view = match live.get(user_id) {
                Some(l) if !hidden => PresenceView {
                    user_id: user_id.clone(),
                    status: l.status,
                    activity: l.activity.clone(),
                    metadata: l.metadata.clone(),
                    last_seen: Some(l.last_active),
                },
                _ => PresenceView {
                    user_id: user_id.clone(),
                    status: Status::Offline,
                    activity: None,
                    metadata: Value::Null,
                    last_seen: if hidden { None } else { last_seen },
                },
            };
            views.push(view);
        }
        Ok(views)
    }

    /// A page of the users `viewer` follows that are online (any status but offline) and share
    /// it, by followee id, descending. Followees are read and looked up a chunk at a time, and at
    /// most [`ONLINE_FRIENDS_SCAN`] per call, so a request's cost is bounded however many users
    /// the viewer follows. A page may therefore hold fewer than `limit` friends (even none)
    /// while `next_cursor` is set: only a `None` cursor means there are no more.
    pub async fn online_friends(
        &self,
        prefs: &PreferenceService,
        viewer: &str,
        limit: u64,
        before: Option<&str>,
    ) -> AppResult<(Vec<PresenceView>, Option<String>)> {
        let limit = limit.max(1) as usize;
        let mut items: Vec<PresenceView> = Vec::new();
        let mut cursor = before.map(str::to_owned);
        let mut scanned = 0;
        loop {
            let chunk = (ONLINE_FRIENDS_SCAN - scanned).min(MAX_BIND_IDS);
            let mut query = follow::Entity::find()
                .select_only()
                .column(follow::Column::FolloweeId)
                .filter(follow::Column::FollowerId.eq(viewer))
                .order_by_desc(follow::Column::FolloweeId)
                .limit(chunk as u64 + 1);
            if let Some(cursor) = &cursor {
                query = query.filter(follow::Column::FolloweeId.lt(cursor.as_str()));
            }
            let mut followees: Vec<String> = query.into_tuple().all(&self.db).await?;
            let more_followees = followees.len() > chunk;
            followees.truncate(chunk);
            scanned += followees.len();
            let live: HashMap<String, Live> =
                self.store.get_many(&followees).await?.into_iter().collect();
            let online: Vec<String> = followees
                .iter()
                .filter(|u| live.get(*u).is_some_and(|l| l.status != Status::Offline))
                .cloned()
                .collect();
            let hiding = prefs.hiding_online_status(&online).await?;
            for user_id in &followees {
                if items.len() == limit {
                    // The page is full: the next one starts after the last friend listed.
                    let next = items.last().map(|v| v.user_id.clone());
                    return Ok((items, next));
                }
                let Some(l) = live.get(user_id) else { continue };
                if l.status == Status::Offline || hiding.contains(user_id) {
                    continue;
                }
                items.push(PresenceView {
                    user_id: user_id.clone(),
                    status: l.status,
                    activity: l.activity.clone(),
                    metadata: l.metadata.clone(),
                    last_seen: Some(l.last_active),
                });
            }
            if !more_followees {
                return Ok((items, None));
            }
            // Everything up to the last followee examined is done.
            cursor = followees.last().cloned();
            if scanned >= ONLINE_FRIENDS_SCAN {
                return Ok((items, cursor));
            }
        }
    }
}

/// Most followees one online-friends request examines; the rest are behind its `nextCursor`.
pub const ONLINE_FRIENDS_SCAN: usize = 5000;

/// Something to tell a user's audience, queued from wherever it was noticed (event handlers,
/// timers, sweepers) on the [`PresenceQueue`], which keeps only the latest of each kind per user
/// and announces each user's in order.
#[derive(Clone, Debug)]
pub enum PresenceEvent {
    Status(StatusChange),
    Activity {
        user_id: String,
        activity: String,
        metadata: Value,
    },
    /// The user has no socket left anywhere: end the typing state this node holds for them.
    TypingEnded {
        user_id: String,
    },
}
