//! User profiles: created on first sight, names kept fresh from tokens and the service API.
//!
//! Precedence of the display name: the service API (`PUT /api/v1/internal/users/:id`) sets it
//! at any time; a token's `name` claim sets it again at each socket connect (the app put it
//! there, so it is as current as the backend's word); a token without `name` changes nothing.

use chrono::Utc;
use entity::user;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, QuerySelect, Set};

use crate::error::AppResult;
use crate::write_path::WritePath;

/// Creates the user or refreshes their display name.
pub async fn upsert(
    writes: &WritePath,
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
    .exec(&*writes.turn().await?)
    .await?;
    Ok(())
}

/// A user connects: a `name` claim updates the profile, no claim creates the user named after
/// their id if they are new and keeps an existing profile as it is. Returns the name to show.
///
/// A returning user whose profile already says what the token says costs one pooled read and
/// no write: after a deploy every socket reconnects at once, and a write per connect would
/// queue the whole avalanche on the single SQLite writer, ahead of everyone's messages.
pub async fn sign_in(
    writes: &WritePath,
    db: &DatabaseConnection,
    id: &str,
    name_claim: Option<&str>,
) -> AppResult<String> {
    let stored = stored_name(db, id).await?;
    match (stored, name_claim) {
        (Some(stored), None) => Ok(stored),
        (Some(stored), Some(name)) if stored == name => Ok(stored),
        (_, Some(name)) => {
            upsert(writes, id, name, None).await?;
            Ok(name.to_owned())
        }
        (None, None) => {
            crate::domain::chat::rooms::ensure_users(&*writes.turn().await?, std::iter::once(id))
                .await?;
            // Another connect may have created the user meanwhile, with a name claim.
            Ok(stored_name(db, id).await?.unwrap_or_else(|| id.to_owned()))
        }
    }
}

/// The profile's display name, if the user exists.
pub async fn stored_name(db: &impl ConnectionTrait, id: &str) -> AppResult<Option<String>> {
    let name = user::Entity::find_by_id(id)
        .select_only()
        .column(user::Column::Name)
        .into_tuple::<String>()
        .one(db)
        .await?;
    Ok(name)
}
