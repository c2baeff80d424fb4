//! Notifications: stored per user, delivered live unless the user's preferences say otherwise.

use chrono::Utc;
use entity::notification;
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
};

use crate::error::AppResult;

/// Unread, unexpired notifications of a user.
pub async fn unread_count(db: &DatabaseConnection, user_id: &str) -> AppResult<u64> {
    let now = Utc::now();
    let count = notification::Entity::find()
        .filter(notification::Column::UserId.eq(user_id))
        .filter(notification::Column::IsRead.eq(false))
        .filter(
            Condition::any()
                .add(notification::Column::ExpiresAt.is_null())
                .add(notification::Column::ExpiresAt.gt(now)),
        )
        .count(db)
        .await?;
    Ok(count)
}
