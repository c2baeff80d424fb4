//! Read and delivered watermarks. They only move forward, never past the room's last seq, and
//! reading implies delivery.

use chrono::{DateTime, Utc};
use entity::{room, room_member};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use super::ChatService;
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
        let (column, moved) = match mark {
            Mark::Read => {
                let result = room_member::Entity::update_many()
                    .col_expr(room_member::Column::ReadSeq, Expr::value(target))
                    .col_expr(room_member::Column::ReadAt, Expr::value(now))
                    .filter(room_member::Column::RoomId.eq(room_id))
                    .filter(room_member::Column::UserId.eq(user_id))
                    .filter(room_member::Column::ReadSeq.lt(target))
                    .exec(&self.db)
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
            .exec(&self.db)
            .await?;
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
        let unread_count = if mark == Mark::Read {
            (last_seq - current).max(0)
        } else {
            0
        };
        Ok(Watermark {
            up_to_seq: current,
            moved,
            at: now,
            unread_count,
        })
    }
}
