//! Room lifecycle: create (direct rooms are unique per pair), list, rename, membership.

use std::collections::HashMap;

use chrono::Utc;
use entity::{message, room, room_member, user};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use super::model::{Member, Message, ROLE_MEMBER, ROLE_OWNER, Room, RoomType};
use super::{ChatService, is_unique_violation, new_id};
use crate::auth::AuthUser;
use crate::domain::notifications::{self, NewNotification, Notification};
use crate::error::{AppError, AppResult};

/// A room to create: `participants` are the other users; the creator is added as owner.
#[derive(Clone, Debug)]
pub struct NewRoom {
    pub participants: Vec<String>,
    pub room_type: Option<RoomType>,
    pub name: Option<String>,
}

/// A page of the caller's rooms, newest first.
#[derive(Debug)]
pub struct RoomPage {
    pub items: Vec<Room>,
    pub next_cursor: Option<String>,
}

/// The outcome of a membership change, for the transport to fan out.
#[derive(Debug)]
pub struct MemberChange {
    /// The room after the change (seen by the actor).
    pub room: Room,
    /// Users who became members (already-members are not repeated).
    pub added: Vec<String>,
    /// Users who stopped being members.
    pub removed: Vec<String>,
}

/// The key that makes a direct room unique per pair, whoever creates it: the JSON array of
/// the two ids in byte order. User ids may contain any character, so a plain separator could be
/// forged by an id that contains it; JSON string escaping cannot. Migration
/// m20261201_000001 rewrote the keys of older rooms into this form.
pub(crate) fn direct_key(a: &str, b: &str) -> String {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    serde_json::json!([first, second]).to_string()
}

/// What creating a room did.
#[derive(Debug)]
pub struct CreatedRoom {
    /// The room as its creator sees it.
    pub room: Room,
    /// False when an existing direct room was returned.
    pub created: bool,
    /// The `group_invite`s committed together with the room, for the transport to deliver.
    pub invites: Vec<Notification>,
}

impl CreatedRoom {
    fn existing(room: Room) -> Self {
        Self {
            room,
            created: false,
            invites: Vec::new(),
        }
    }
}

/// The `group_invite` for users `actor` added to a group.
pub fn group_invite(
    room_id: &str,
    room_name: Option<&str>,
    actor: &AuthUser,
    invited: Vec<String>,
) -> NewNotification {
    let shown = room_name.unwrap_or("a group");
    NewNotification {
        user_ids: invited,
        notification_type: "group_invite".to_owned(),
        title: format!("Added to {shown}"),
        message: format!("{} added you to {shown}", actor.name),
        data: serde_json::json!({ "roomId": room_id, "roomName": room_name }),
        priority: "normal".to_owned(),
        actor_id: Some(actor.id.clone()),
        expires_at: None,
        dedup_key: None,
    }
}

impl ChatService {
    /// Creates a room for a creator known by id only (named after it in invites). For a direct
    /// room that already exists, returns it with `false`.
    pub async fn create_room(&self, creator: &str, input: NewRoom) -> AppResult<(Room, bool)> {
        let creator = AuthUser {
            id: creator.to_owned(),
            name: creator.to_owned(),
            name_from_token: false,
        };
        let done = self.create_room_by(&creator, input).await?;
        Ok((done.room, done.created))
    }

    /// Creates a room: the room, its members and the invites of a group's participants commit
    /// in one transaction, so a failure leaves nothing behind and a retry can never make a
    /// second group. For a direct room that already exists, returns it with `created: false`.
    pub async fn create_room_by(&self, actor: &AuthUser, input: NewRoom) -> AppResult<CreatedRoom> {
        let creator = actor.id.as_str();
        let mut participants: Vec<String> = Vec::new();
        for p in input.participants {
            if p != creator && !participants.contains(&p) {
                participants.push(p);
            }
        }
        let name = input
            .name
            .map(|n| super::sanitize(&n))
            .filter(|n| !n.is_empty());
        let room_type = input
            .room_type
            .unwrap_or(if participants.len() == 1 && name.is_none() {
                RoomType::Direct
            } else {
                RoomType::Group
            });
        let key = match room_type {
            RoomType::Direct => {
                if participants.len() != 1 {
                    return Err(AppError::field(
                        "participants",
                        "a direct room takes exactly one other participant",
                    ));
                }
                let key = direct_key(creator, &participants[0]);
                if let Some(existing) = self.find_direct(&key).await? {
                    return Ok(CreatedRoom::existing(existing.for_viewer(creator)));
                }
                Some(key)
            }
            RoomType::Group | RoomType::Public => {
                if name.is_none() {
                    return Err(AppError::field(
                        "name",
                        "is required for group and public rooms",
                    ));
                }
                None
            }
        };
        let room_id = new_id();
        let now = Utc::now();
        let invite = (room_type == RoomType::Group && !participants.is_empty())
            .then(|| group_invite(&room_id, name.as_deref(), actor, participants.clone()));
        let inline_max = self.limits.members_inline_max;
        let inserted = self
            .writes
            .transaction::<_, (Room, Vec<Notification>), AppError>(|tx| {
                let room_id = room_id.clone();
                let creator = creator.to_owned();
                let participants = participants.clone();
                let name = if room_type == RoomType::Direct {
                    None
                } else {
                    name.clone()
                };
                let invite = invite.clone();
                Box::pin(async move {
                    ensure_users(tx, participants.iter().map(String::as_str)).await?;
                    room::ActiveModel {
                        id: Set(room_id.clone()),
                        room_type: Set(room_type.as_str().to_owned()),
                        name: Set(name),
                        created_by: Set(creator.clone()),
                        created_at: Set(now),
                        last_seq: Set(0),
                        direct_key: Set(key),
                    }
                    .insert(tx)
                    .await?;
                    let members = std::iter::once((creator.clone(), ROLE_OWNER))
                        .chain(participants.into_iter().map(|p| (p, ROLE_MEMBER)))
                        .map(|(user_id, role)| member_row(&room_id, user_id, role, 0));
                    room_member::Entity::insert_many(members).exec(tx).await?;
                    let invites = match &invite {
                        Some(invite) => notifications::insert_in(tx, invite).await?,
                        None => Vec::new(),
                    };
                    // Read back inside the transaction: nothing after the commit can fail.
                    let room =
                        super::load_room_on(tx, inline_max, &room_id, Some(&creator)).await?;
                    Ok((room, invites))
                })
            })
            .await;
        let (room, invites) = match inserted {
            Ok(done) => done,
            // Two users created the same direct room at once: the other insert won.
            Err(sea_orm::TransactionError::Transaction(AppError::Internal(e)))
                if room_type == RoomType::Direct
                    && e.downcast_ref::<sea_orm::DbErr>()
                        .is_some_and(is_unique_violation) =>
            {
                let key = direct_key(creator, &participants[0]);
                if let Some(existing) = self.find_direct(&key).await? {
                    return Ok(CreatedRoom::existing(existing.for_viewer(creator)));
                }
                return Err(AppError::Conflict(
                    "direct room creation raced; retry".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        // New memberships: what is derived from memberships (presence audiences) is stale.
        self.invalidate(&room_id);
        Ok(CreatedRoom {
            room: room.for_viewer(creator),
            created: true,
            invites,
        })
    }

    async fn find_direct(&self, key: &str) -> AppResult<Option<Room>> {
        let Some(row) = room::Entity::find()
            .filter(room::Column::DirectKey.eq(key))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        Ok(self.load_rooms(vec![row], None).await?.pop())
    }

    /// One room as seen by `viewer`, who must be a member (or the room public).
    pub async fn get_room(&self, viewer: &str, room_id: &str) -> AppResult<Room> {
        let access = self.access(room_id).await?;
        if !access.members.contains(viewer) && access.room_type != RoomType::Public {
            return Err(AppError::Forbidden(
                "you are not a member of this room".into(),
            ));
        }
        Ok(self
            .load_room_for(room_id, Some(viewer))
            .await?
            .for_viewer(viewer))
    }

    /// The viewer's rooms, newest first, each with its last message and the viewer's unread
    /// count. A fixed number of queries per page, whatever its size.
    pub async fn list_rooms(
        &self,
        viewer: &str,
        limit: u64,
        before: Option<&str>,
    ) -> AppResult<RoomPage> {
        let mut query = room::Entity::find()
            .inner_join(room_member::Entity)
            .filter(room_member::Column::UserId.eq(viewer))
            .order_by_desc(room::Column::Id)
            .limit(limit + 1);
        if let Some(before) = before {
            query = query.filter(room::Column::Id.lt(before));
        }
        let mut rows = query.all(&self.db).await?;
        let has_more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if has_more {
            rows.last().map(|r| r.id.clone())
        } else {
            None
        };

        let keys: Vec<(String, i64)> = rows
            .iter()
            .filter(|r| r.last_seq > 0)
            .map(|r| (r.id.clone(), r.last_seq))
            .collect();
        let mut last_messages = self.last_messages(&keys).await?;
        let items = self
            .load_rooms(rows, Some(viewer))
            .await?
            .into_iter()
            .map(|room| {
                let last = last_messages.remove(&room.id);
                let mut room = room.for_viewer(viewer);
                room.last_message = Some(last);
                room
            })
            .collect();
        Ok(RoomPage { items, next_cursor })
    }

    /// The message at each room's `last_seq`, in one query.
    async fn last_messages(&self, keys: &[(String, i64)]) -> AppResult<HashMap<String, Message>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let mut condition = sea_orm::Condition::any();
        for (room_id, seq) in keys {
            condition = condition.add(
                message::Column::RoomId
                    .eq(room_id.as_str())
                    .and(message::Column::Seq.eq(*seq)),
            );
        }
        let rows = message::Entity::find()
            .filter(condition)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|m| (m.room_id.clone(), Message::from(m)))
            .collect())
    }

    /// Renames a group or public room; any member may.
    pub async fn rename_room(&self, actor: &str, room_id: &str, name: &str) -> AppResult<Room> {
        let access = self.require_member(room_id, actor).await?;
        if access.room_type == RoomType::Direct {
            return Err(AppError::Conflict("direct rooms have no name".into()));
        }
        let name = super::sanitize(name);
        if name.is_empty() {
            return Err(AppError::field("name", "must not be empty"));
        }
        room::Entity::update_many()
            .col_expr(room::Column::Name, Expr::value(name))
            .filter(room::Column::Id.eq(room_id))
            .exec(&*self.writes.turn().await?)
            .await?;
        self.load_room(room_id).await
    }

    /// Adds users to a group or public room; the actor must be a member. New members start
    /// with nothing unread.
    pub async fn add_members(
        &self,
        actor: &str,
        room_id: &str,
        user_ids: &[String],
    ) -> AppResult<MemberChange> {
        let access = self.require_member(room_id, actor).await?;
        if access.room_type == RoomType::Direct {
            return Err(AppError::Conflict(
                "members cannot be added to a direct room".into(),
            ));
        }
        let mut added: Vec<String> = Vec::new();
        for id in user_ids {
            if !access.members.contains(id) && !added.contains(id) {
                added.push(id.clone());
            }
        }
        if !added.is_empty() {
            self.insert_members(room_id, &added).await?;
            self.invalidate(room_id);
        }
        let room = self
            .load_room_for(room_id, Some(actor))
            .await?
            .for_viewer(actor);
        Ok(MemberChange {
            room,
            added,
            removed: Vec::new(),
        })
    }

    /// Joins a public room (idempotent). Returns whether the user was newly added.
    pub async fn join_public(&self, user_id: &str, room_id: &str) -> AppResult<bool> {
        let access = self.access(room_id).await?;
        if access.members.contains(user_id) {
            return Ok(false);
        }
        if access.room_type != RoomType::Public {
            return Err(AppError::Forbidden(
                "you are not a member of this room".into(),
            ));
        }
        self.insert_members(room_id, &[user_id.to_owned()]).await?;
        self.invalidate(room_id);
        Ok(true)
    }

    /// Adds members (creating unknown users) in one turn of the write path: on SQLite, where
    /// messages take the same turn, none commits between reading `last_seq` and the insert.
    async fn insert_members(&self, room_id: &str, user_ids: &[String]) -> AppResult<()> {
        let turn = self.writes.turn().await?;
        ensure_users(&*turn, user_ids.iter().map(String::as_str)).await?;
        let last_seq: i64 = room::Entity::find_by_id(room_id)
            .select_only()
            .column(room::Column::LastSeq)
            .into_tuple()
            .one(&*turn)
            .await?
            .unwrap_or(0);
        let rows = user_ids
            .iter()
            .map(|u| member_row(room_id, u.clone(), ROLE_MEMBER, last_seq));
        room_member::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([room_member::Column::RoomId, room_member::Column::UserId])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&*turn)
            .await?;
        Ok(())
    }

    /// Removes `target` from a room. Anyone may leave (target = actor) a group or public room;
    /// removing someone else takes the owner.
    pub async fn remove_member(
        &self,
        actor: &str,
        room_id: &str,
        target: &str,
    ) -> AppResult<MemberChange> {
        let access = self.require_member(room_id, actor).await?;
        if access.room_type == RoomType::Direct {
            return Err(AppError::Conflict(
                "direct rooms always keep both members".into(),
            ));
        }
        if !access.members.contains(target) {
            return Err(AppError::NotFound(
                "that user is not a member of this room".into(),
            ));
        }
        if actor != target {
            let role: Option<String> =
                room_member::Entity::find_by_id((room_id.to_owned(), actor.to_owned()))
                    .select_only()
                    .column(room_member::Column::Role)
                    .into_tuple()
                    .one(&self.db)
                    .await?;
            if role.as_deref() != Some(ROLE_OWNER) {
                return Err(AppError::Forbidden(
                    "only the room owner can remove other members".into(),
                ));
            }
        }
        room_member::Entity::delete_by_id((room_id.to_owned(), target.to_owned()))
            .exec(&*self.writes.turn().await?)
            .await?;
        self.invalidate(room_id);
        let room = self
            .load_room_for(room_id, Some(actor))
            .await?
            .for_viewer(actor);
        Ok(MemberChange {
            room,
            added: Vec::new(),
            removed: vec![target.to_owned()],
        })
    }
}

/// A page of a room's members, most recently joined first.
#[derive(Debug)]
pub struct MemberPage {
    pub items: Vec<Member>,
    pub next_cursor: Option<String>,
}

/// The cursor of a member page: where the last member listed stands in join order. Opaque to
/// clients; it stays valid when that member leaves.
fn member_cursor(m: &room_member::Model) -> String {
    format!(
        "{}|{}",
        m.joined_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        m.user_id
    )
}

fn parse_member_cursor(cursor: &str) -> AppResult<(chrono::DateTime<Utc>, String)> {
    let invalid = || AppError::field("before", "is not a cursor this list returned");
    let (at, user_id) = cursor.split_once('|').ok_or_else(invalid)?;
    let at = chrono::DateTime::parse_from_rfc3339(at)
        .map_err(|_| invalid())?
        .with_timezone(&Utc);
    Ok((at, user_id.to_owned()))
}

impl ChatService {
    /// A page of the room's members for `viewer` (a member, or anyone for a public room):
    /// the complete list that a big room's object only starts.
    pub async fn list_members(
        &self,
        viewer: &str,
        room_id: &str,
        limit: u64,
        before: Option<&str>,
    ) -> AppResult<MemberPage> {
        let access = self.access(room_id).await?;
        if !access.members.contains(viewer) && access.room_type != RoomType::Public {
            return Err(AppError::Forbidden(
                "you are not a member of this room".into(),
            ));
        }
        let mut query = room_member::Entity::find()
            .filter(room_member::Column::RoomId.eq(room_id))
            .order_by_desc(room_member::Column::JoinedAt)
            .order_by_desc(room_member::Column::UserId)
            .limit(limit + 1);
        if let Some(before) = before {
            let (at, user_id) = parse_member_cursor(before)?;
            query = query.filter(
                sea_orm::Condition::any()
                    .add(room_member::Column::JoinedAt.lt(at))
                    .add(
                        room_member::Column::JoinedAt
                            .eq(at)
                            .and(room_member::Column::UserId.lt(user_id)),
                    ),
            );
        }
        let mut rows = query.all(&self.db).await?;
        let has_more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if has_more {
            rows.last().map(member_cursor)
        } else {
            None
        };
        let names = self
            .names_of(rows.iter().map(|m| m.user_id.clone()))
            .await?;
        let items = rows
            .into_iter()
            .map(|m| Member {
                name: names
                    .get(&m.user_id)
                    .cloned()
                    .unwrap_or_else(|| m.user_id.clone()),
                user_id: m.user_id,
                role: m.role,
                joined_at: m.joined_at,
                read_seq: m.read_seq,
            })
            .collect();
        Ok(MemberPage { items, next_cursor })
    }
}

fn member_row(
    room_id: &str,
    user_id: String,
    role: &str,
    seen_seq: i64,
) -> room_member::ActiveModel {
    room_member::ActiveModel {
        room_id: Set(room_id.to_owned()),
        user_id: Set(user_id),
        role: Set(role.to_owned()),
        joined_at: Set(Utc::now()),
        read_seq: Set(seen_seq),
        read_at: Set(None),
        delivered_seq: Set(seen_seq),
    }
}

/// Makes sure users referenced by id exist (named after their id until they connect or the
/// backend sets a profile), without touching existing profiles.
pub(crate) async fn ensure_users<'a>(
    db: &impl ConnectionTrait,
    ids: impl Iterator<Item = &'a str>,
) -> AppResult<()> {
    let now = Utc::now();
    let rows: Vec<user::ActiveModel> = ids
        .map(|id| user::ActiveModel {
            id: Set(id.to_owned()),
            name: Set(id.to_owned()),
            avatar_url: Set(None),
            last_seen: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    user::Entity::insert_many(rows)
        .on_conflict(OnConflict::column(user::Column::Id).do_nothing().to_owned())
        .exec_without_returning(db)
        .await?;
    Ok(())
}
