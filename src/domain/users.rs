//! User profiles: created on first sight, names kept fresh from tokens and the service API.

use chrono::Utc;
use entity::user;
use sea_orm::sea_query::OnConflict;
use sea_orm::{DatabaseConnection, EntityTrait, Set};

use crate::error::AppResult;

/// Creates the user or refreshes their display name.
pub async fn upsert(
    db: &DatabaseConnection,
    id: &str,
    name: &str,
    avatar_url: Option<&str>,
) -> AppResult<()> {
    let now = Utc::now();
    let mut update = vec![user::Column::Name, user::Column::UpdatedAt];
    if avatar_url.is_some() {
        update.push(user::Column::AvatarUrl);
    }
    user::Entity::insert(user::ActiveModel {
        id: Set(id.to_owned()),
        name: Set(name.to_owned()),
        avatar_url: Set(avatar_url.map(str::to_owned)),
        last_seen: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(user::Column::Id)
            .update_columns(update)
            .to_owned(),
    )
    .exec(db)
    .await?;
    Ok(())
}
