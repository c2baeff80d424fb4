//! The chat objects exactly as clients receive them (contract §3), built from table rows.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::{message, room};
use serde::Serialize;
use utoipa::ToSchema;

use crate::time::serde_rfc3339;

/// Kinds of room; the string forms are the contract's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoomType {
    Direct,
    Group,
    Public,
}

impl RoomType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Group => "group",
            Self::Public => "public",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(Self::Direct),
            "group" => Some(Self::Group),
            "public" => Some(Self::Public),
            _ => None,
        }
    }
}

/// Member roles. The creator of a room is its owner.
pub const ROLE_OWNER: &str = "owner";
pub const ROLE_MEMBER: &str = "member";

/// One member as listed in a room object.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub user_id: String,
    pub name: String,
    pub role: String,
    #[serde(with = "serde_rfc3339")]
    pub joined_at: DateTime<Utc>,
    /// The member's read watermark, used to compute their unread count; not sent.
    #[serde(skip)]
    pub read_seq: i64,
}

/// A room as seen by one user (`unread_count` is theirs). Rooms with more members than
/// `ROOM_MEMBERS_INLINE_MAX` list only the first ones (by join order) in `members`, so a room
/// object stays a bounded size; `member_count` is always the total, and the full list is paged by
/// `GET /chat/rooms/:id/members`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Room {
    pub id: String,
    #[serde(rename = "type")]
    pub room_type: RoomType,
    #[schema(required = true)]
    pub name: Option<String>,
    pub created_by: String,
    #[serde(with = "serde_rfc3339")]
    pub created_at: DateTime<Utc>,
    pub members: Vec<Member>,
    /// How many members the room has, whether or not `members` lists them all.
    pub member_count: i64,
    pub last_seq: i64,
    pub unread_count: i64,
    /// Present in room lists (`GET /chat/rooms`), absent elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Message>)]
    pub last_message: Option<Option<Message>>,
    /// Read watermarks of would-be viewers that `members` does not list (a big room's
    /// capped list), so `for_viewer` still finds their unread count; not sent.
    #[serde(skip)]
    pub(crate) unlisted_read_seqs: HashMap<String, i64>,
}

impl Room {
    pub(crate) fn from_row(row: room::Model, members: Vec<Member>, member_count: i64) -> Self {
        Self {
            room_type: RoomType::parse(&row.room_type).unwrap_or(RoomType::Group),
            id: row.id,
            name: row.name,
            created_by: row.created_by,
            created_at: row.created_at,
            member_count: member_count.max(members.len() as i64),
            members,
            last_seq: row.last_seq,
            unread_count: 0,
            last_message: None,
            unlisted_read_seqs: HashMap::new(),
        }
    }

    /// The same room with `unread_count` set for `viewer`.
    pub fn for_viewer(mut self, viewer: &str) -> Self {
        let read_seq = self
            .members
            .iter()
            .find(|m| m.user_id == viewer)
            .map(|m| m.read_seq)
            .or_else(|| self.unlisted_read_seqs.get(viewer).copied());
        self.unread_count = read_seq.map_or(0, |seq| (self.last_seq - seq).max(0));
        self
    }

    /// Whether `members` lists every member (false for rooms over the inline maximum).
    pub fn lists_all_members(&self) -> bool {
        self.members.len() as i64 >= self.member_count
    }

    /// Whether `user_id` is among the listed members (see [`Room::lists_all_members`]).
    pub fn is_member(&self, user_id: &str) -> bool {
        self.members.iter().any(|m| m.user_id == user_id)
    }

    /// Ids of the listed members (see [`Room::lists_all_members`]).
    pub fn member_ids(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.user_id.as_str())
    }
}

/// Message kinds. `system` messages are written by the server only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    Text,
    Image,
    File,
    System,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Image => "image",
            Self::File => "file",
            Self::System => "system",
        }
    }
}

/// A chat message on the wire.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    pub room_id: String,
    pub seq: i64,
    pub user_id: String,
    pub sender_name: String,
    pub content: String,
    #[serde(rename = "type")]
    pub message_type: String,
    #[schema(required = true)]
    pub reply_to_id: Option<String>,
    #[schema(required = true)]
    pub client_message_id: Option<String>,
    #[serde(with = "serde_rfc3339")]
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    #[serde(with = "serde_rfc3339::option")]
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted: bool,
    /// Sent → delivered → read, on the viewer's own messages of a direct room in history and
    /// `chat:sync` answers; absent everywhere else (live events go to both members alike).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<super::MessageStatus>,
}

impl From<message::Model> for Message {
    fn from(row: message::Model) -> Self {
        Self {
            id: row.id,
            room_id: row.room_id,
            seq: row.seq,
            user_id: row.user_id,
            sender_name: row.sender_name,
            // A deleted message keeps its seq but never its text.
            content: if row.deleted {
                String::new()
            } else {
                row.content
            },
            message_type: row.message_type,
            reply_to_id: row.reply_to_id,
            client_message_id: row.client_message_id,
            created_at: row.created_at,
            edited_at: row.edited_at,
            deleted: row.deleted,
            status: None,
        }
    }
}

/// What a room change was, for `chat:room_updated`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomChange {
    Created,
    MemberAdded,
    MemberRemoved,
    Renamed,
}
