//! Chat: rooms, membership, messages with a gapless per-room `seq`, receipts, history and
//! search. [`ChatService`] is called by both REST and Socket.IO handlers; it returns values and
//! never emits, so both transports deliver the same results the same way.

pub(crate) mod batch_sql;
mod content;
mod messages;
pub mod model;
mod receipts;
pub(crate) mod rooms;
pub mod search_index;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use entity::{room, room_member, user};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

pub use content::sanitize;
pub use messages::{
    History, HistoryQuery, Inserted, NewMessage, PreparedBatch, Sent, insert_batch, prepare_batch,
};
pub use model::{Member, Message, MessageType, Room, RoomChange, RoomType};
pub use receipts::{MemberReceipt, MessageStatus, ReceiptPage, Watermark};
pub use rooms::{CreatedRoom, MemberChange, MemberPage, NewRoom, RoomPage, group_invite};

use crate::domain::cache::{CacheBus, Generation, Invalidation};
use crate::domain::rate_limit::RateLimiter;
use crate::error::{AppError, AppResult};
use crate::write_path::WritePath;

/// Who may act in a room: its type and member ids. Cached because every message, typing and
/// receipt event checks it; dropped whenever membership changes, and read again after the
/// cache TTL in any case (an invalidation from another node can be lost in a Redis outage).
#[derive(Debug)]
pub struct RoomAccess {
    pub room_type: RoomType,
    pub members: HashSet<String>,
}

/// Beyond this many cached rooms, expired entries are swept on the next insert.
const MAX_CACHED_ROOMS: usize = 100_000;

/// Limits the chat rules need from the configuration.
#[derive(Clone, Debug)]
pub struct ChatLimits {
    pub max_message_length: usize,
    /// Rooms with more members list only this many in their room object.
    pub members_inline_max: usize,
}

/// The chat rules over the database.
pub struct ChatService {
    db: DatabaseConnection,
    limits: ChatLimits,
    rate_limiter: Arc<dyn RateLimiter>,
    access: DashMap<String, (Arc<RoomAccess>, Instant)>,
    /// How long a cached entry is trusted (`MEMBERSHIP_CACHE_TTL_MS`).
    cache_ttl: Duration,
    generation: Generation,
    bus: Arc<dyn CacheBus>,
    /// Every write of the chat rules goes through here.
    writes: WritePath,
    /// One catch-up of SQLite's search index at a time ([`ChatService::index_for_search`]).
    search_indexing: tokio::sync::Mutex<()>,
}

impl ChatService {
    pub fn new(
        db: DatabaseConnection,
        writes: WritePath,
        limits: ChatLimits,
        rate_limiter: Arc<dyn RateLimiter>,
        bus: Arc<dyn CacheBus>,
        cache_ttl: Duration,
    ) -> Self {
        Self {
            limits,
            rate_limiter,
            access: DashMap::new(),
            cache_ttl,
            generation: Generation::default(),
            bus,
            writes,
            db,
            search_indexing: tokio::sync::Mutex::new(()),
        }
    }

    /// Adds every message stored so far to SQLite's full-text index ([`search_index`]); returns
    /// how many were pending. One catch-up runs at a time, so a flood of searches queues here,
    /// one indexing transaction at a time between the commits, instead of taking write turn
    /// after write turn. A no-op on PostgreSQL.
    pub async fn index_for_search(&self) -> Result<u64, sea_orm::DbErr> {
        let _alone = self.search_indexing.lock().await;
        search_index::catch_up(&self.writes, &self.db).await
    }

    /// The room's type and members, from the cache or the database. `NOT_FOUND` if no room.
    /// While the invalidation channel is down the cache is not used at all: another node's
    /// change could not reach this one.
    pub async fn access(&self, room_id: &str) -> AppResult<Arc<RoomAccess>> {
        let use_cache = self.bus.connected();
        if use_cache && let Some(found) = self.access.get(room_id) {
            let (access, loaded) = &*found;
            if loaded.elapsed() < self.cache_ttl {
                return Ok(access.clone());
            }
        }
        let generation = self.generation.current();
        let row = room::Entity::find_by_id(room_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| AppError::NotFound("room not found".into()))?;
        let members: HashSet<String> = room_member::Entity::find()
            .select_only()
            .column(room_member::Column::UserId)
            .filter(room_member::Column::RoomId.eq(room_id))
            .into_tuple::<String>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect();
        let access = Arc::new(RoomAccess {
            room_type: RoomType::parse(&row.room_type).unwrap_or(RoomType::Group),
            members,
        });
        // An invalidation that raced this read must win: store only if none happened.
        if use_cache && self.generation.current() == generation {
            if self.access.len() >= MAX_CACHED_ROOMS {
                let ttl = self.cache_ttl;
                self.access.retain(|_, (_, loaded)| loaded.elapsed() < ttl);
            }
            self.access
                .insert(room_id.to_owned(), (access.clone(), Instant::now()));
        }
        Ok(access)
    }

    /// Checks that `user_id` is a member: `NOT_FOUND` for no room, `FORBIDDEN` for a non-member.
    pub async fn require_member(&self, room_id: &str, user_id: &str) -> AppResult<Arc<RoomAccess>> {
        let access = self.access(room_id).await?;
        if access.members.contains(user_id) {
            Ok(access)
        } else {
            Err(AppError::Forbidden(
                "you are not a member of this room".into(),
            ))
        }
    }

    /// Forgets the cached membership of a room after a change, here and on every node.
    pub fn invalidate(&self, room_id: &str) {
        self.forget_local(room_id);
        self.bus.publish(Invalidation::Room(room_id.to_owned()));
    }

    /// Moves whenever any room's membership changes, here or on another node: caches derived
    /// from memberships (presence audiences) compare it to know they are stale.
    pub fn membership_generation(&self) -> u64 {
        self.generation.current()
    }

    /// Forgets every cached membership on this node.
    pub fn forget_all_local(&self) {
        self.generation.bump();
        self.access.clear();
    }

    /// Forgets the cached membership of a room on this node (another node changed it).
    pub fn forget_local(&self, room_id: &str) {
        self.generation.bump();
        self.access.remove(room_id);
    }

    /// Loads room objects (members with names), in the order of `rows`. A room with more than
    /// `members_inline_max` members lists only its first ones (by join order), so loading a big
    /// room costs the same as loading a small one; `viewer`'s own watermark is read as well when
    /// they are not among those listed, for their unread count.
    async fn load_rooms(
        &self,
        rows: Vec<room::Model>,
        viewer: Option<&str>,
    ) -> AppResult<Vec<Room>> {
        load_rooms_on(&self.db, self.limits.members_inline_max, rows, viewer).await
    }

    /// One room. `NOT_FOUND` if it does not exist.
    pub async fn load_room(&self, room_id: &str) -> AppResult<Room> {
        self.load_room_for(room_id, None).await
    }

    /// One room, able to show `viewer` their unread count even when the room is too big to
    /// list them among its members. `NOT_FOUND` if it does not exist.
    pub async fn load_room_for(&self, room_id: &str, viewer: Option<&str>) -> AppResult<Room> {
        load_room_on(&self.db, self.limits.members_inline_max, room_id, viewer).await
    }

    /// Display names of users, by id, a bounded number of ids per query.
    async fn names_of(
        &self,
        ids: impl Iterator<Item = String>,
    ) -> AppResult<HashMap<String, String>> {
        names_of(&self.db, ids).await
    }
}

/// [`ChatService::load_rooms`] on any connection, e.g. inside the transaction that just wrote
/// the room, so its answer cannot fail after the commit.
async fn load_rooms_on(
    db: &impl ConnectionTrait,
    members_inline_max: usize,
    rows: Vec<room::Model>,
    viewer: Option<&str>,
) -> AppResult<Vec<Room>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let counts: HashMap<String, i64> = room_member::Entity::find()
        .select_only()
        .column(room_member::Column::RoomId)
        .column_as(room_member::Column::UserId.count(), "member_count")
        .filter(room_member::Column::RoomId.is_in(ids.iter().map(String::as_str)))
        .group_by(room_member::Column::RoomId)
        .into_tuple::<(String, i64)>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    let inline_max = members_inline_max.max(1);
    let (small, big): (Vec<&String>, Vec<&String>) = ids
        .iter()
        .partition(|id| counts.get(*id).copied().unwrap_or(0) <= inline_max as i64);
    let mut member_rows = Vec::new();
    if !small.is_empty() {
        member_rows = room_member::Entity::find()
            .filter(room_member::Column::RoomId.is_in(small.iter().map(|s| s.as_str())))
            .all(db)
            .await?;
    }
    for room_id in &big {
        member_rows.extend(
            room_member::Entity::find()
                .filter(room_member::Column::RoomId.eq(room_id.as_str()))
                .order_by_asc(room_member::Column::JoinedAt)
                .order_by_asc(room_member::Column::UserId)
                .limit(inline_max as u64)
                .all(db)
                .await?,
        );
    }
    let mut unlisted: HashMap<String, i64> = HashMap::new();
    if let (Some(viewer), false) = (viewer, big.is_empty()) {
        unlisted = room_member::Entity::find()
            .select_only()
            .column(room_member::Column::RoomId)
            .column(room_member::Column::ReadSeq)
            .filter(room_member::Column::UserId.eq(viewer))
            .filter(room_member::Column::RoomId.is_in(big.iter().map(|s| s.as_str())))
            .into_tuple::<(String, i64)>()
            .all(db)
            .await?
            .into_iter()
            .collect();
    }
    let names = names_of(db, member_rows.iter().map(|m| m.user_id.clone())).await?;
    let mut by_room: HashMap<String, Vec<Member>> = HashMap::new();
    for m in member_rows {
        let name = names
            .get(&m.user_id)
            .cloned()
            .unwrap_or_else(|| m.user_id.clone());
        by_room.entry(m.room_id).or_default().push(Member {
            user_id: m.user_id,
            name,
            role: m.role,
            joined_at: m.joined_at,
            read_seq: m.read_seq,
        });
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut members = by_room.remove(&row.id).unwrap_or_default();
            members.sort_by(|a, b| {
                a.joined_at
                    .cmp(&b.joined_at)
                    .then(a.user_id.cmp(&b.user_id))
            });
            let count = counts.get(&row.id).copied().unwrap_or(0);
            let read_seq = unlisted.remove(&row.id);
            let mut room = Room::from_row(row, members, count);
            if let (Some(viewer), Some(seq)) = (viewer, read_seq) {
                room.unlisted_read_seqs.insert(viewer.to_owned(), seq);
            }
            room
        })
        .collect())
}

/// [`ChatService::load_room_for`] on any connection.
pub(crate) async fn load_room_on(
    db: &impl ConnectionTrait,
    members_inline_max: usize,
    room_id: &str,
    viewer: Option<&str>,
) -> AppResult<Room> {
    let row = room::Entity::find_by_id(room_id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound("room not found".into()))?;
    load_rooms_on(db, members_inline_max, vec![row], viewer)
        .await?
        .pop()
        .ok_or_else(|| AppError::NotFound("room not found".into()))
}

/// Display names of users, by id, a bounded number of ids per query.
async fn names_of(
    db: &impl ConnectionTrait,
    ids: impl Iterator<Item = String>,
) -> AppResult<HashMap<String, String>> {
    let ids: Vec<String> = ids.collect::<HashSet<String>>().into_iter().collect();
    let mut names = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(crate::domain::bounded::MAX_BIND_IDS) {
        let rows = user::Entity::find()
            .select_only()
            .column(user::Column::Id)
            .column(user::Column::Name)
            .filter(user::Column::Id.is_in(chunk.iter().map(String::as_str)))
            .into_tuple::<(String, String)>()
            .all(db)
            .await?;
        names.extend(rows);
    }
    Ok(names)
}

/// Ids of every room the user is a member of; sockets join these on connect.
pub async fn room_ids_of(db: &impl ConnectionTrait, user_id: &str) -> AppResult<Vec<String>> {
    let ids = room_member::Entity::find()
        .select_only()
        .column(room_member::Column::RoomId)
        .filter(room_member::Column::UserId.eq(user_id))
        .into_tuple::<String>()
        .all(db)
        .await?;
    Ok(ids)
}

/// Every membership of `user_ids`: (user, room, joined at), for re-checking sockets' rooms.
pub async fn memberships_of(
    db: &impl ConnectionTrait,
    user_ids: &[String],
) -> AppResult<Vec<(String, String, chrono::DateTime<chrono::Utc>)>> {
    let rows = room_member::Entity::find()
        .select_only()
        .column(room_member::Column::UserId)
        .column(room_member::Column::RoomId)
        .column(room_member::Column::JoinedAt)
        .filter(room_member::Column::UserId.is_in(user_ids.iter().map(String::as_str)))
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows)
}

/// Which of `user_ids` are members of the room now (for moving sockets after an outage).
pub async fn members_among(
    db: &impl ConnectionTrait,
    room_id: &str,
    user_ids: &[String],
) -> AppResult<HashSet<String>> {
    let ids = room_member::Entity::find()
        .select_only()
        .column(room_member::Column::UserId)
        .filter(room_member::Column::RoomId.eq(room_id))
        .filter(room_member::Column::UserId.is_in(user_ids.iter().map(String::as_str)))
        .into_tuple::<String>()
        .all(db)
        .await?;
    Ok(ids.into_iter().collect())
}

/// Whether a database error is a unique-constraint violation (a lost insert race).
fn is_unique_violation(err: &sea_orm::DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// A new time-ordered id (UUID v7): ids double as pagination cursors.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
