//! Notifications: stored per user, delivered live unless the user's preferences turned in-app
//! delivery off for the type. Expired ones are never listed, counted or delivered.

use chrono::{DateTime, Duration, Utc};
use entity::{notification, user};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde::Serialize;
use serde_json::Value;

use crate::domain::preferences::PreferenceService;
use crate::error::{AppError, AppResult};
use crate::time::serde_rfc3339;

/// How long a `dedupKey` suppresses repeats for the same user.
const DEDUP_WINDOW_HOURS: i64 = 24;

/// Whether `t` is a valid notification type (`^[a-z][a-z_]{0,31}$`).
pub fn is_valid_type(t: &str) -> bool {
    let mut chars = t.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && t.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c == '_')
}

/// Priorities, lowest first.
pub const PRIORITIES: &[&str] = &["low", "normal", "high", "urgent"];

/// Who caused a notification.
#[derive(Clone, Debug, Serialize)]
pub struct Actor {
    pub id: String,
    pub name: String,
}

/// A notification on the wire.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: String,
    #[serde(rename = "type")]
    pub notification_type: String,
    pub title: String,
    pub message: String,
    pub data: Value,
    pub priority: String,
    pub actor: Option<Actor>,
    pub is_read: bool,
    #[serde(with = "serde_rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "serde_rfc3339::option")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The recipient; not part of the wire object.
    #[serde(skip)]
    pub user_id: String,
}

impl From<notification::Model> for Notification {
    fn from(row: notification::Model) -> Self {
        Self {
            id: row.id,
            notification_type: row.notification_type,
            title: row.title,
            message: row.message,
            data: serde_json::from_str(&row.data).unwrap_or(Value::Null),
            priority: row.priority,
            actor: row.actor_id.map(|id| Actor {
                name: row.actor_name.unwrap_or_else(|| id.clone()),
                id,
            }),
            is_read: row.is_read,
            created_at: row.created_at,
            expires_at: row.expires_at,
            user_id: row.user_id,
        }
    }
}

/// A notification to create for each of `user_ids`.
#[derive(Clone, Debug)]
pub struct NewNotification {
    pub user_ids: Vec<String>,
    pub notification_type: String,
    pub title: String,
    pub message: String,
    pub data: Value,
    pub priority: String,
    pub actor_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub dedup_key: Option<String>,
}

/// A created notification and whether it goes out live (in-app delivery on for its type).
#[derive(Debug)]
pub struct Created {
    pub notification: Notification,
    pub deliver: bool,
}

/// Stores and reads notifications.
pub struct NotificationService {
    db: DatabaseConnection,
}

/// Unexpired at `now`.
fn live(now: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(notification::Column::ExpiresAt.is_null())
        .add(notification::Column::ExpiresAt.gt(now))
}

impl NotificationService {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Creates one notification per user (skipping users with the same `dedup_key` in the last
    /// 24 h, and already-expired ones), and says which to deliver.
    pub async fn create(
        &self,
        prefs: &PreferenceService,
        input: NewNotification,
    ) -> AppResult<Vec<Created>> {
        let now = Utc::now();
        if input.expires_at.is_some_and(|at| at <= now) {
            return Ok(Vec::new());
        }
        let actor_name = actor_name(&self.db, input.actor_id.as_deref()).await?;
        let mut created: Vec<Notification> = Vec::new();
        if input.dedup_key.is_some() {
            // The dedup check locks the user's row, which must exist.
            crate::domain::chat::rooms::ensure_users(
                &self.db,
                input.user_ids.iter().map(String::as_str),
            )
            .await?;
        }
        for user_id in &input.user_ids {
            let row = new_row(&input, user_id, actor_name.clone(), now);
            let stored = match &input.dedup_key {
                None => {
                    notification::Entity::insert(row)
                        .exec_with_returning(&self.db)
                        .await?
                }
                Some(key) => match insert_unless_recent(&self.db, user_id, key, now, row).await? {
                    Some(stored) => stored,
                    None => continue,
                },
            };
            created.push(stored.into());
        }
        with_delivery(prefs, created).await
    }

    /// Unread, unexpired notifications of a user.
    pub async fn unread_count(&self, user_id: &str) -> AppResult<u64> {
        unread_count(&self.db, user_id).await
    }

    /// A page of the user's unexpired notifications, newest first.
    pub async fn list(
        &self,
        user_id: &str,
        limit: u64,
        unread_only: bool,
        before: Option<&str>,
    ) -> AppResult<(Vec<Notification>, Option<String>)> {
        let mut query = notification::Entity::find()
            .filter(notification::Column::UserId.eq(user_id))
            .filter(live(Utc::now()))
            .order_by_desc(notification::Column::Id)
            .limit(limit + 1);
        if unread_only {
            query = query.filter(notification::Column::IsRead.eq(false));
        }
        if let Some(before) = before {
            query = query.filter(notification::Column::Id.lt(before));
        }
        let mut rows = query.all(&self.db).await?;
        let has_more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next = if has_more {
            rows.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok((rows.into_iter().map(Notification::from).collect(), next))
    }

    /// Marks the given ids (only the user's own; others are ignored) or all as read.
    /// Returns how many changed and the unread count after.
    pub async fn mark_read(&self, user_id: &str, ids: Option<&[String]>) -> AppResult<(u64, u64)> {
        let mut update = notification::Entity::update_many()
            .col_expr(notification::Column::IsRead, Expr::value(true))
            .filter(notification::Column::UserId.eq(user_id))
            .filter(notification::Column::IsRead.eq(false));
        if let Some(ids) = ids {
            if ids.is_empty() {
                return Ok((0, self.unread_count(user_id).await?));
            }
            update = update.filter(notification::Column::Id.is_in(ids.iter().map(String::as_str)));
        }
        let updated = update.exec(&self.db).await?.rows_affected;
        Ok((updated, self.unread_count(user_id).await?))
    }

    /// Deletes expired notifications; returns how many.
    pub async fn purge_expired(&self) -> AppResult<u64> {
        let result = notification::Entity::delete_many()
            .filter(notification::Column::ExpiresAt.lte(Utc::now()))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }
}

/// The stored name of the actor, falling back to the id (an actor who never connected).
async fn actor_name(
    db: &impl ConnectionTrait,
    actor_id: Option<&str>,
) -> Result<Option<String>, sea_orm::DbErr> {
    let Some(id) = actor_id else {
        return Ok(None);
    };
    let name = user::Entity::find_by_id(id)
        .select_only()
        .column(user::Column::Name)
        .into_tuple::<String>()
        .one(db)
        .await?;
    Ok(name.or_else(|| Some(id.to_owned())))
}

fn new_row(
    input: &NewNotification,
    user_id: &str,
    actor_name: Option<String>,
    now: DateTime<Utc>,
) -> notification::ActiveModel {
    notification::ActiveModel {
        id: Set(crate::domain::chat::new_id()),
        user_id: Set(user_id.to_owned()),
        notification_type: Set(input.notification_type.clone()),
        title: Set(input.title.clone()),
        message: Set(input.message.clone()),
        data: Set(input.data.to_string()),
        priority: Set(input.priority.clone()),
        actor_id: Set(input.actor_id.clone()),
        actor_name: Set(actor_name),
        is_read: Set(false),
        created_at: Set(now),
        expires_at: Set(input.expires_at),
        dedup_key: Set(input.dedup_key.clone()),
    }
}

/// Stores one notification per user on `db` without dedup or expiry checks: for notifications
/// that must commit or fail together with the change that causes them, `db` being that
/// change's transaction (a group's invites are written with the group).
pub(crate) async fn insert_in(
    db: &impl ConnectionTrait,
    input: &NewNotification,
) -> Result<Vec<Notification>, sea_orm::DbErr> {
    let now = Utc::now();
    let actor_name = actor_name(db, input.actor_id.as_deref()).await?;
    let mut stored = Vec::with_capacity(input.user_ids.len());
    for user_id in &input.user_ids {
        let row = new_row(input, user_id, actor_name.clone(), now);
        let model = notification::Entity::insert(row)
            .exec_with_returning(db)
            .await?;
        stored.push(model.into());
    }
    Ok(stored)
}

/// Pairs stored notifications with whether each goes out live (in-app delivery on for its
/// type in the recipient's preferences).
pub async fn with_delivery(
    prefs: &PreferenceService,
    stored: Vec<Notification>,
) -> AppResult<Vec<Created>> {
    let mut created = Vec::with_capacity(stored.len());
    for notification in stored {
        let deliver = prefs
            .get(&notification.user_id)
            .await?
            .channels_for(&notification.notification_type)
            .in_app;
        created.push(Created {
            notification,
            deliver,
        });
    }
    Ok(created)
}

/// Inserts `row` unless the user got a notification with `key` in the last 24 h. Concurrent
/// creators for one user queue on a lock of the user's row (PostgreSQL) or the database write
/// lock (SQLite), so exactly one of them inserts.
async fn insert_unless_recent(
    db: &DatabaseConnection,
    user_id: &str,
    key: &str,
    now: DateTime<Utc>,
    row: notification::ActiveModel,
) -> AppResult<Option<notification::Model>> {
    let (user_id, key) = (user_id.to_owned(), key.to_owned());
    let stored = db
        .transaction::<_, Option<notification::Model>, sea_orm::DbErr>(|tx| {
            Box::pin(async move {
                user::Entity::update_many()
                    .col_expr(user::Column::UpdatedAt, Expr::col(user::Column::UpdatedAt))
                    .filter(user::Column::Id.eq(user_id.as_str()))
                    .exec(tx)
                    .await?;
                let seen = notification::Entity::find()
                    .filter(notification::Column::UserId.eq(user_id.as_str()))
                    .filter(notification::Column::DedupKey.eq(key.as_str()))
                    .filter(
                        notification::Column::CreatedAt
                            .gt(now - Duration::hours(DEDUP_WINDOW_HOURS)),
                    )
                    .count(tx)
                    .await?;
                if seen > 0 {
                    return Ok(None);
                }
                Ok(Some(
                    notification::Entity::insert(row)
                        .exec_with_returning(tx)
                        .await?,
                ))
            })
        })
        .await
        .map_err(|e| match e {
            sea_orm::TransactionError::Connection(e)
            | sea_orm::TransactionError::Transaction(e) => e,
        })?;
    Ok(stored)
}

/// Unread, unexpired notifications of a user.
pub async fn unread_count(db: &impl ConnectionTrait, user_id: &str) -> AppResult<u64> {
    let count = notification::Entity::find()
        .filter(notification::Column::UserId.eq(user_id))
        .filter(notification::Column::IsRead.eq(false))
        .filter(live(Utc::now()))
        .count(db)
        .await?;
    Ok(count)
}

/// Validates a priority string.
pub fn check_priority(p: &str) -> AppResult<()> {
    if PRIORITIES.contains(&p) {
        Ok(())
    } else {
        Err(AppError::field(
            "priority",
            "must be one of low, normal, high, urgent",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid_type;

    #[test]
    fn type_pattern() {
        assert!(is_valid_type("group_invite"));
        assert!(is_valid_type("a"));
        assert!(!is_valid_type("_a"));
        assert!(!is_valid_type("Like"));
        assert!(!is_valid_type(&"a".repeat(33)));
        assert!(!is_valid_type(""));
    }
}
