//! Chat: rooms, membership, messages with a gapless per-room `seq`, receipts, history and
//! search. [`ChatService`] is called by both REST and Socket.IO handlers; it returns values and
//! never emits, so both transports deliver the same results the same way.

mod content;
mod messages;
pub mod model;
mod receipts;
pub(crate) mod rooms;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use dashmap::DashMap;
use entity::{room, room_member, user};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect,
};

pub use content::sanitize;
pub use messages::{History, HistoryQuery, NewMessage, Sent};
pub use model::{Member, Message, MessageType, Room, RoomChange, RoomType};
pub use receipts::Watermark;
pub use rooms::{CreatedRoom, MemberChange, NewRoom, RoomPage, group_invite};

use crate::domain::cache::{CacheBus, Generation, Invalidation};
use crate::domain::rate_limit::RateLimiter;
use crate::error::{AppError, AppResult};

/// Who may act in a room: its type and member ids. Cached because every message, typing and
/// receipt event checks it; dropped whenever membership changes.
#[derive(Debug)]
pub struct RoomAccess {
    pub room_type: RoomType,
    pub members: HashSet<String>,
}

/// Limits the chat rules need from the configuration.
#[derive(Clone, Debug)]
pub struct ChatLimits {
    pub max_message_length: usize,
}

/// The chat rules over the database.
pub struct ChatService {
    db: DatabaseConnection,
    limits: ChatLimits,
    rate_limiter: Arc<dyn RateLimiter>,
    access: DashMap<String, Arc<RoomAccess>>,
    generation: Generation,
    bus: Arc<dyn CacheBus>,
    /// On SQLite, message inserts queue here rather than in SQLite's sleeping busy handler.
    sqlite_writes: Option<tokio::sync::Mutex<()>>,
}

impl ChatService {
    pub fn new(
        db: DatabaseConnection,
        limits: ChatLimits,
        rate_limiter: Arc<dyn RateLimiter>,
        bus: Arc<dyn CacheBus>,
    ) -> Self {
        Self {
            limits,
            rate_limiter,
            access: DashMap::new(),
            generation: Generation::default(),
            bus,
            sqlite_writes: (db.get_database_backend() == sea_orm::DatabaseBackend::Sqlite)
                .then(|| tokio::sync::Mutex::new(())),
            db,
        }
    }

    /// The room's type and members, from the cache or the database. `NOT_FOUND` if no room.
    pub async fn access(&self, room_id: &str) -> AppResult<Arc<RoomAccess>> {
        if let Some(found) = self.access.get(room_id) {
            return Ok(found.clone());
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
        if self.generation.current() == generation {
            self.access.insert(room_id.to_owned(), access.clone());
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

    /// Loads full room objects (members with names), in the order of `rows`.
    async fn load_rooms(&self, rows: Vec<room::Model>) -> AppResult<Vec<Room>> {
        load_rooms_on(&self.db, rows).await
    }

    /// One full room. `NOT_FOUND` if it does not exist.
    pub async fn load_room(&self, room_id: &str) -> AppResult<Room> {
        load_room_on(&self.db, room_id).await
    }
}

/// [`ChatService::load_rooms`] on any connection, e.g. inside the transaction that just wrote
/// the room, so its answer cannot fail after the commit.
async fn load_rooms_on(db: &impl ConnectionTrait, rows: Vec<room::Model>) -> AppResult<Vec<Room>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let member_rows = room_member::Entity::find()
        .filter(room_member::Column::RoomId.is_in(ids))
        .all(db)
        .await?;
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
            Room::from_row(row, members)
        })
        .collect())
}

/// [`ChatService::load_room`] on any connection.
pub(crate) async fn load_room_on(db: &impl ConnectionTrait, room_id: &str) -> AppResult<Room> {
    let row = room::Entity::find_by_id(room_id)
        .one(db)
        .await?
        .ok_or_else(|| AppError::NotFound("room not found".into()))?;
    load_rooms_on(db, vec![row])
        .await?
        .pop()
        .ok_or_else(|| AppError::NotFound("room not found".into()))
}

/// Display names of users, by id.
async fn names_of(
    db: &impl ConnectionTrait,
    ids: impl Iterator<Item = String>,
) -> AppResult<HashMap<String, String>> {
    let ids: HashSet<String> = ids.collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .column(user::Column::Name)
        .filter(user::Column::Id.is_in(ids))
        .into_tuple::<(String, String)>()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
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
