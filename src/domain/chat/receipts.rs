//! Read and delivered watermarks. They only move forward, never past the room's last seq, and
//! reading implies delivery. They are also read back: per member for a room's checkmarks after
//! a reload, and as a derived `status` on the viewer's own messages in direct rooms.

use chrono::{DateTime, Utc};
use entity::{room, room_member};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;

use super::ChatService;
use super::model::{Message, RoomType};
use crate::domain::preferences::hiding_read_receipts;
use crate::error::{AppError, AppResult};

/// A member's watermark after an update, and whether the update moved it.
#[derive(Debug)]
pub struct Watermark {
    pub up_to_seq: i64,
    pub moved: bool,
    pub at: DateTime<Utc>,
    /// The member's unread count after a read (0 for delivered updates).
    pub unread_count: i64,
}

/// Which watermark to move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    Read,
    Delivered,
}

impl ChatService {
    /// Marks messages up to `up_to_seq` as read by `user_id`.
    pub async fn mark_read(
        &self,
        user_id: &str,
        room_id: &str,
        up_to_seq: i64,
    ) -> AppResult<Watermark> {
        self.mark(Mark::Read, user_id, room_id, up_to_seq).await
    }

    /// Marks messages up to `up_to_seq` as delivered to one of `user_id`'s devices.
    pub async fn mark_delivered(
        &self,
        user_id: &str,
        room_id: &str,
        up_to_seq: i64,
    ) -> AppResult<Watermark> {
        self.mark(Mark::Delivered, user_id, room_id, up_to_seq)
            .await
    }

    async fn mark(
        &self,
        mark: Mark,
        user_id: &str,
        room_id: &str,
        up_to_seq: i64,
    ) -> AppResult<Watermark> {
        self.require_member(room_id, user_id).await?;
        let last_seq: i64 = room::Entity::find_by_id(room_id)
            .select_only()
            .column(room::Column::LastSeq)
            .into_tuple()
            .one(&self.db)
            .await?
            .ok_or_else(|| AppError::NotFound("room not found".into()))?;
        let target = up_to_seq.clamp(0, last_seq);
        let now = Utc::now();
        let held: Option<(i64, i64)> =
            room_member::Entity::find_by_id((room_id.to_owned(), user_id.to_owned()))
                .select_only()
                .column(room_member::Column::ReadSeq)
                .column(room_member::Column::DeliveredSeq)
                .into_tuple()
                .one(&self.db)
                .await?;
        if let Some((read_seq, delivered_seq)) = held {
            let (current, stays) = match mark {
                Mark::Read => (read_seq, read_seq >= target && delivered_seq >= target),
                Mark::Delivered => (delivered_seq, delivered_seq >= target),
            };
            if stays {
                // Nothing would move (a repeated or late receipt): no turn of the write path,
                // which message inserts wait for on SQLite.
                return Ok(Watermark {
                    up_to_seq: current,
                    moved: false,
                    at: now,
                    unread_count: unread_after(mark, last_seq, current),
                });
            }
        }
        // Both watermarks move in one turn of the write path.
        let turn = self.writes.turn().await?;
        let (column, moved) = match mark {
            Mark::Read => {
                let result = room_member::Entity::update_many()
                    .col_expr(room_member::Column::ReadSeq, Expr::value(target))
                    .col_expr(room_member::Column::ReadAt, Expr::value(now))
                    .filter(room_member::Column::RoomId.eq(room_id))
                    .filter(room_member::Column::UserId.eq(user_id))
                    .filter(room_member::Column::ReadSeq.lt(target))
                    .exec(&*turn)
                    .await?;
                (room_member::Column::ReadSeq, result.rows_affected > 0)
            }
            Mark::Delivered => (room_member::Column::DeliveredSeq, false),
        };
        // Reading implies delivery; a delivered update alone moves only this one.
        let delivered = room_member::Entity::update_many()
            .col_expr(room_member::Column::DeliveredSeq, Expr::value(target))
            .filter(room_member::Column::RoomId.eq(room_id))
            .filter(room_member::Column::UserId.eq(user_id))
            .filter(room_member::Column::DeliveredSeq.lt(target))
            .exec(&*turn)
            .await?;
        drop(turn);
        let moved = if mark == Mark::Delivered {
            delivered.rows_affected > 0
        } else {
            moved
        };
        let current: i64 =
            room_member::Entity::find_by_id((room_id.to_owned(), user_id.to_owned()))
                .select_only()
                .column(column)
                .into_tuple()
                .one(&self.db)
                .await?
                .unwrap_or(target);
        Ok(Watermark {
            up_to_seq: current,
            moved,
            at: now,
            unread_count: unread_after(mark, last_seq, current),
        })
    }
}

/// A member's unread count once their read watermark is at `read_seq` (0 for delivered).
fn unread_after(mark: Mark, last_seq: i64, read_seq: i64) -> i64 {
    if mark == Mark::Read {
        (last_seq - read_seq).max(0)
    } else {
        0
    }
}

/// One member's watermarks as another member sees them (`GET …/receipts`). The read position
/// of a member who turned `shareReadReceipts` off is `null` to everyone but themselves; their
/// delivered position stays visible, as delivery receipts are not covered by that switch.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberReceipt {
    pub user_id: String,
    #[schema(required = true)]
    pub read_seq: Option<i64>,
    #[schema(required = true)]
    #[serde(with = "crate::time::serde_rfc3339::option")]
    pub read_at: Option<DateTime<Utc>>,
    pub delivered_seq: i64,
}

/// A page of a room's receipts, members ordered by user id; `next_cursor` is the last user id.
#[derive(Debug)]
pub struct ReceiptPage {
    pub last_seq: i64,
    pub items: Vec<MemberReceipt>,
    pub next_cursor: Option<String>,
}

/// The sent → delivered → read status of one of the viewer's own messages in a direct room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Sent,
    Delivered,
    Read,
}

impl MessageStatus {
    /// The status of message `seq` given the partner's watermarks (`read_seq` is `None` when
    /// the partner hides read receipts).
    pub fn of(seq: i64, read_seq: Option<i64>, delivered_seq: i64) -> Self {
        if read_seq.is_some_and(|r| r >= seq) {
            Self::Read
        } else if delivered_seq >= seq {
            Self::Delivered
        } else {
            Self::Sent
        }
    }
}

impl ChatService {
    /// Every member's read and delivered watermark, a page at a time (members ordered by id,
    /// continuing after `after`); the viewer must be a member.
    pub async fn receipts(
        &self,
        viewer: &str,
        room_id: &str,
        limit: u64,
        after: Option<&str>,
    ) -> AppResult<ReceiptPage> {
        self.require_member(room_id, viewer).await?;
        let last_seq: i64 = room::Entity::find_by_id(room_id)
            .select_only()
            .column(room::Column::LastSeq)
            .into_tuple()
            .one(&self.db)
            .await?
            .ok_or_else(|| AppError::NotFound("room not found".into()))?;
        let mut select = room_member::Entity::find()
            .filter(room_member::Column::RoomId.eq(room_id))
            .order_by_asc(room_member::Column::UserId)
            .limit(limit + 1);
        if let Some(after) = after {
            select = select.filter(room_member::Column::UserId.gt(after));
        }
        let mut rows = select.all(&self.db).await?;
        let has_more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let ids: Vec<String> = rows.iter().map(|r| r.user_id.clone()).collect();
        let hiding = hiding_read_receipts(&self.db, &ids).await?;
        let next_cursor = if has_more { ids.last().cloned() } else { None };
        let items = rows
            .into_iter()
            .map(|row| {
                let hidden = row.user_id != viewer && hiding.contains(&row.user_id);
                MemberReceipt {
                    read_seq: (!hidden).then_some(row.read_seq),
                    read_at: if hidden { None } else { row.read_at },
                    delivered_seq: row.delivered_seq,
                    user_id: row.user_id,
                }
            })
            .collect();
        Ok(ReceiptPage {
            last_seq,
            items,
            next_cursor,
        })
    }

    /// Sets `status` on the viewer's own messages of a direct room, from the partner's
    /// watermarks (read only when the partner shares read receipts). Other rooms are left
    /// alone: a group has no single status per message, and `GET …/receipts` answers there.
    pub(super) async fn add_direct_status(
        &self,
        viewer: &str,
        room_id: &str,
        messages: &mut [Message],
    ) -> AppResult<()> {
        if !messages.iter().any(|m| m.user_id == viewer) {
            return Ok(());
        }
        let access = self.access(room_id).await?;
        if access.room_type != RoomType::Direct {
            return Ok(());
        }
        let Some(partner) = access.members.iter().find(|m| *m != viewer).cloned() else {
            return Ok(());
        };
        let Some(row) = room_member::Entity::find_by_id((room_id.to_owned(), partner.clone()))
            .one(&self.db)
            .await?
        else {
            return Ok(());
        };
        let hides = hiding_read_receipts(&self.db, std::slice::from_ref(&partner))
            .await?
            .contains(&partner);
        let read_seq = (!hides).then_some(row.read_seq);
        for message in messages.iter_mut().filter(|m| m.user_id == viewer) {
            message.status = Some(MessageStatus::of(message.seq, read_seq, row.delivered_seq));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MessageStatus;

    #[test]
    fn status_follows_the_partner_watermarks() {
        assert_eq!(MessageStatus::of(5, Some(4), 4), MessageStatus::Sent);
        assert_eq!(MessageStatus::of(5, Some(4), 5), MessageStatus::Delivered);
        assert_eq!(MessageStatus::of(5, Some(5), 5), MessageStatus::Read);
        assert_eq!(
            MessageStatus::of(5, None, 9),
            MessageStatus::Delivered,
            "hidden read receipts show delivered at most"
        );
    }
}
