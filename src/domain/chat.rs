//! Chat: rooms, membership, messages with a gapless per-room `seq`, receipts and history.

use entity::room_member;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};

use crate::error::AppResult;

/// Ids of every room the user is a member of; sockets join these on connect.
pub async fn room_ids_of(db: &DatabaseConnection, user_id: &str) -> AppResult<Vec<String>> {
    let ids = room_member::Entity::find()
        .select_only()
        .column(room_member::Column::RoomId)
        .filter(room_member::Column::UserId.eq(user_id))
        .into_tuple::<String>()
        .all(db)
        .await?;
    Ok(ids)
}
