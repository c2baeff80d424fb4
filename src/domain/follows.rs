//! The follow graph, mirrored from the app's backend through the service API. It decides who
//! receives a user's feed activities (and presence). Writes are idempotent because the backend
//! may replay its sync: following twice or unfollowing a stranger is not an error.

use chrono::Utc;
use entity::follow;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, Set};

use crate::domain::chat::rooms::ensure_users;
use crate::error::{AppError, AppResult};
use crate::write_path::WritePath;

/// Makes `follower_id` follow `followee_id`. Both users are created if unknown (named after their
/// id until a profile arrives). Returns whether the edge is new.
pub async fn follow(writes: &WritePath, follower_id: &str, followee_id: &str) -> AppResult<bool> {
    check_not_self(follower_id, followee_id)?;
    let db = &*writes.turn().await?;
    ensure_users(db, [follower_id, followee_id].into_iter()).await?;
    let row = follow::ActiveModel {
        follower_id: Set(follower_id.to_owned()),
        followee_id: Set(followee_id.to_owned()),
        created_at: Set(Utc::now()),
    };
    // `do_nothing` keeps the original `created_at`; a conflict means "already following".
    let inserted = follow::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([follow::Column::FollowerId, follow::Column::FolloweeId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(inserted > 0)
}

/// Removes the edge if it exists. Returns whether there was one.
pub async fn unfollow(writes: &WritePath, follower_id: &str, followee_id: &str) -> AppResult<bool> {
    check_not_self(follower_id, followee_id)?;
    let deleted = follow::Entity::delete_many()
        .filter(follow::Column::FollowerId.eq(follower_id))
        .filter(follow::Column::FolloweeId.eq(followee_id))
        .exec(&*writes.turn().await?)
        .await?;
    Ok(deleted.rows_affected > 0)
}

/// Everyone who follows `user_id` (served by the followee index): the audience of a fan-out.
pub async fn followers_of(db: &impl ConnectionTrait, user_id: &str) -> AppResult<Vec<String>> {
    let ids = follow::Entity::find()
        .select_only()
        .column(follow::Column::FollowerId)
        .filter(follow::Column::FolloweeId.eq(user_id))
        .into_tuple::<String>()
        .all(db)
        .await?;
    Ok(ids)
}

/// Everyone `user_id` follows (served by the primary key's leading column).
pub async fn following_of(db: &impl ConnectionTrait, user_id: &str) -> AppResult<Vec<String>> {
    let ids = follow::Entity::find()
        .select_only()
        .column(follow::Column::FolloweeId)
        .filter(follow::Column::FollowerId.eq(user_id))
        .into_tuple::<String>()
        .all(db)
        .await?;
    Ok(ids)
}

/// A self-follow would put a user's own activities in their feed and their own presence in
/// their friends list; the contract's notion of a follow is between two users.
fn check_not_self(follower_id: &str, followee_id: &str) -> AppResult<()> {
    if follower_id == followee_id {
        return Err(AppError::field(
            "followeeId",
            "a user cannot follow themselves",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_not_self;
    use crate::error::ErrorCode;

    #[test]
    fn self_follow_is_a_field_error() {
        let err = check_not_self("a", "a").err().map(|e| (e.code(), e.body()));
        let (code, body) = err.unwrap_or_else(|| panic!("self-follow accepted"));
        assert_eq!(code, ErrorCode::InvalidPayload);
        assert_eq!(body["details"][0]["field"], "followeeId");
        assert!(check_not_self("a", "b").is_ok());
    }
}
