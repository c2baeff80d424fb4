//! Notifications: stored per user, delivered live unless the user's preferences turned in-app
//! delivery off for the type, and handed to the push and webhook channels
//! ([`crate::outbound`]) per the `push` and `email` switches. Expired ones are never listed,
//! counted or delivered.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use entity::{notification, user};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::bounded::MAX_BIND_IDS;
use crate::domain::preferences::{Channels, PreferenceService, channels_of};
use crate::error::{AppError, AppResult};
use crate::outbound::{Outbound, webhook};
use crate::time::serde_rfc3339;
use crate::write_path::WritePath;

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
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Actor {
    pub id: String,
    pub name: String,
}

/// A notification on the wire.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: String,
    #[serde(rename = "type")]
    pub notification_type: String,
    pub title: String,
    pub message: String,
    pub data: Value,
    pub priority: String,
    #[schema(required = true)]
    pub actor: Option<Actor>,
    pub is_read: bool,
    #[serde(with = "serde_rfc3339")]
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
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
    /// The recipient's channels for the type (`deliver` is `channels.in_app`): push and the
    /// webhook follow `push` and `email`.
    pub channels: Channels,
}

/// Stores and reads notifications.
pub struct NotificationService {
    db: DatabaseConnection,
    writes: WritePath,
    outbound: Arc<Outbound>,
}

/// Unexpired at `now`.
fn live(now: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(notification::Column::ExpiresAt.is_null())
        .add(notification::Column::ExpiresAt.gt(now))
}

impl NotificationService {
    pub fn new(db: DatabaseConnection, writes: WritePath, outbound: Arc<Outbound>) -> Self {
        Self {
            db,
            writes,
            outbound,
        }
    }

    /// Creates one notification per user (skipping users with the same `dedup_key` in the last
    /// 24 h, and already-expired ones), and says which to deliver. A fixed number of statements
    /// per [`MAX_BIND_IDS`] recipients, in one transaction: a notification to a thousand users is
    /// a few bulk inserts and one preference query per chunk, not thousands of round trips. The
    /// webhook's outbox rows (recipients with `email: true`) are written in the same
    /// transaction, so a stored notification never misses its webhook; pushes are queued after
    /// the commit, without waiting. (`_prefs` is kept for callers: the channels are read
    /// inside the transaction instead.)
    pub async fn create(
        &self,
        _prefs: &PreferenceService,
        input: NewNotification,
    ) -> AppResult<Vec<Created>> {
        let now = Utc::now();
        if input.expires_at.is_some_and(|at| at <= now) {
            return Ok(Vec::new());
        }
        let actor_name = actor_name(&self.db, input.actor_id.as_deref()).await?;
        let mut seen = HashSet::new();
        let mut recipients: Vec<String> = input
            .user_ids
            .iter()
            .filter(|u| seen.insert(u.as_str()))
            .cloned()
            .collect();
        // Sorted, so concurrent creators lock users' rows in the same order (no deadlock).
        recipients.sort();
        let rows: Vec<notification::Model> = recipients
            .iter()
            .map(|user_id| new_row(&input, user_id, actor_name.clone(), now))
            .collect();
        let dedup_key = input.dedup_key.clone();
        let notification_type = input.notification_type.clone();
        let webhook_on = self.outbound.webhook.is_some();
        let (stored, channels) = self
            .writes
            .transaction::<_, (Vec<notification::Model>, HashMap<String, Channels>), sea_orm::DbErr>(
                |tx| {
                    Box::pin(async move {
                        let stored = insert_batch(tx, rows, dedup_key.as_deref(), now).await?;
                        let users: Vec<String> =
                            stored.iter().map(|n| n.user_id.clone()).collect();
                        let channels = channels_of(tx, &users, &notification_type).await?;
                        if webhook_on {
                            let wire: Vec<Notification> =
                                stored.iter().cloned().map(Notification::from).collect();
                            write_deliveries(tx, &wire, |_| Some(&channels), now).await?;
                        }
                        Ok((stored, channels))
                    })
                },
            )
            .await
            .map_err(|e| match e {
                sea_orm::TransactionError::Connection(e)
                | sea_orm::TransactionError::Transaction(e) => e,
            })?;
        // Recipients in the order they were given.
        let order: HashMap<&str, usize> = input
            .user_ids
            .iter()
            .enumerate()
            .map(|(i, u)| (u.as_str(), i))
            .rev()
            .collect();
        let mut created: Vec<Created> = stored
            .into_iter()
            .map(|row| {
                let channels = channels.get(&row.user_id).copied().unwrap_or_default();
                Created {
                    deliver: channels.in_app,
                    channels,
                    notification: row.into(),
                }
            })
            .collect();
        created.sort_by_key(|c| {
            order
                .get(c.notification.user_id.as_str())
                .copied()
                .unwrap_or(usize::MAX)
        });
        self.outbound.created(&created);
        Ok(created)
    }

    /// Pairs notifications stored by [`insert_in`] (inside the transaction of the change that
    /// caused them) with their recipients' channels, writes their webhook deliveries and queues
    /// their pushes: one preference query per type and [`MAX_BIND_IDS`] recipients. The outbox
    /// rows are written just after that transaction, not in it: a crash in between loses their
    /// webhook (the notifications themselves stay stored and listed).
    pub async fn with_delivery(&self, stored: Vec<Notification>) -> AppResult<Vec<Created>> {
        let mut by_type: HashMap<&str, Vec<String>> = HashMap::new();
        for n in &stored {
            by_type
                .entry(n.notification_type.as_str())
                .or_default()
                .push(n.user_id.clone());
        }
        let mut channels: HashMap<String, HashMap<String, Channels>> = HashMap::new();
        for (notification_type, users) in by_type {
            let of_type = channels_of(&self.db, &users, notification_type).await?;
            channels.insert(notification_type.to_owned(), of_type);
        }
        if self.outbound.webhook.is_some() {
            let turn = self.writes.turn().await?;
            write_deliveries(
                &*turn,
                &stored,
                |n| channels.get(&n.notification_type),
                Utc::now(),
            )
            .await?;
        }
        let created: Vec<Created> = stored
            .into_iter()
            .map(|notification| {
                let channels = channels
                    .get(&notification.notification_type)
                    .and_then(|of_type| of_type.get(&notification.user_id))
                    .copied()
                    .unwrap_or_default();
                Created {
                    deliver: channels.in_app,
                    channels,
                    notification,
                }
            })
            .collect();
        self.outbound.created(&created);
        Ok(created)
    }

    /// Unread, unexpired notifications of each of `users` (absent users have none), counted
    /// by one grouped query per [`MAX_BIND_IDS`] users.
    pub async fn unread_counts(&self, users: &[String]) -> AppResult<HashMap<String, u64>> {
        let now = Utc::now();
        let mut counts = HashMap::with_capacity(users.len());
        for chunk in users.chunks(MAX_BIND_IDS) {
            let rows: Vec<(String, i64)> = notification::Entity::find()
                .select_only()
                .column(notification::Column::UserId)
                .column_as(notification::Column::Id.count(), "unread")
                .filter(notification::Column::UserId.is_in(chunk.iter().map(String::as_str)))
                .filter(notification::Column::IsRead.eq(false))
                .filter(live(now))
                .group_by(notification::Column::UserId)
                .into_tuple()
                .all(&self.db)
                .await?;
            counts.extend(rows.into_iter().map(|(u, n)| (u, n.max(0) as u64)));
        }
        Ok(counts)
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
        let updated = update
            .exec(&*self.writes.turn().await?)
            .await?
            .rows_affected;
        Ok((updated, self.unread_count(user_id).await?))
    }

    /// Deletes expired notifications; returns how many.
    pub async fn purge_expired(&self) -> AppResult<u64> {
        let result = notification::Entity::delete_many()
            .filter(notification::Column::ExpiresAt.lte(Utc::now()))
            .exec(&*self.writes.turn().await?)
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

/// The row of `input` for one recipient.
fn new_row(
    input: &NewNotification,
    user_id: &str,
    actor_name: Option<String>,
    now: DateTime<Utc>,
) -> notification::Model {
    notification::Model {
        id: crate::domain::chat::new_id(),
        user_id: user_id.to_owned(),
        notification_type: input.notification_type.clone(),
        title: input.title.clone(),
        message: input.message.clone(),
        data: input.data.to_string(),
        priority: input.priority.clone(),
        actor_id: input.actor_id.clone(),
        actor_name,
        is_read: false,
        created_at: now,
        expires_at: input.expires_at,
        dedup_key: input.dedup_key.clone(),
    }
}

/// Stores one notification per user on `db` without dedup or expiry checks: for notifications
/// that must commit or fail together with the change that causes them, `db` being that
/// change's transaction (a group's invites are written with the group). One bulk insert per
/// [`MAX_BIND_IDS`] recipients.
pub(crate) async fn insert_in(
    db: &impl ConnectionTrait,
    input: &NewNotification,
) -> Result<Vec<Notification>, sea_orm::DbErr> {
    let now = Utc::now();
    let actor_name = actor_name(db, input.actor_id.as_deref()).await?;
    let mut seen = HashSet::new();
    let rows: Vec<notification::Model> = input
        .user_ids
        .iter()
        .filter(|u| seen.insert(u.as_str()))
        .map(|user_id| new_row(input, user_id, actor_name.clone(), now))
        .collect();
    for chunk in rows.chunks(MAX_BIND_IDS) {
        notification::Entity::insert_many(chunk.iter().map(active))
            .exec_without_returning(db)
            .await?;
    }
    Ok(rows.into_iter().map(Notification::from).collect())
}

/// Writes the webhook deliveries of the `notifications` whose recipient has `email: true`
/// (`channels` gives the recipients' channels for a notification's type; a recipient absent
/// from them has the defaults), with the recipients' stored names.
async fn write_deliveries<'a>(
    db: &impl ConnectionTrait,
    notifications: &[Notification],
    channels: impl Fn(&Notification) -> Option<&'a HashMap<String, Channels>>,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    let emailed: Vec<&Notification> = notifications
        .iter()
        .filter(|n| {
            channels(n)
                .and_then(|of_type| of_type.get(&n.user_id))
                .copied()
                .unwrap_or_default()
                .email
        })
        .collect();
    if emailed.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = emailed.iter().map(|n| n.user_id.clone()).collect();
    let names = webhook::user_names(db, &ids).await?;
    let rows: Vec<_> = emailed
        .iter()
        .map(|n| webhook::delivery_of(n, names.get(&n.user_id).map(String::as_str), now))
        .collect();
    webhook::insert(db, &rows).await
}

/// Inserts `rows` (one per recipient, recipients sorted), skipping recipients who got a
/// notification with `dedup_key` in the last 24 h. With a key, concurrent creators for the same
/// users queue on locks of the users' rows (PostgreSQL, taken in id order) or the database write
/// lock (SQLite, taken by the first statement), so exactly one of them inserts for each user.
async fn insert_batch(
    tx: &DatabaseTransaction,
    rows: Vec<notification::Model>,
    dedup_key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<notification::Model>, sea_orm::DbErr> {
    let mut stored = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(MAX_BIND_IDS) {
        let mut chunk: Vec<notification::Model> = chunk.to_vec();
        if let Some(key) = dedup_key {
            let ids: Vec<&str> = chunk.iter().map(|n| n.user_id.as_str()).collect();
            // The dedup check locks the users' rows, which must exist.
            crate::domain::chat::rooms::ensure_users(tx, ids.iter().copied())
                .await
                .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
            user::Entity::update_many()
                .col_expr(user::Column::UpdatedAt, Expr::col(user::Column::UpdatedAt))
                .filter(user::Column::Id.is_in(ids.iter().copied()))
                .exec(tx)
                .await?;
            let seen: HashSet<String> = notification::Entity::find()
                .select_only()
                .column(notification::Column::UserId)
                .filter(notification::Column::UserId.is_in(ids.iter().copied()))
                .filter(notification::Column::DedupKey.eq(key))
                .filter(
                    notification::Column::CreatedAt.gt(now - Duration::hours(DEDUP_WINDOW_HOURS)),
                )
                .into_tuple::<String>()
                .all(tx)
                .await?
                .into_iter()
                .collect();
            chunk.retain(|n| !seen.contains(&n.user_id));
        }
        if chunk.is_empty() {
            continue;
        }
        notification::Entity::insert_many(chunk.iter().map(active))
            .exec_without_returning(tx)
            .await?;
        stored.extend(chunk);
    }
    Ok(stored)
}

/// A row to insert, every column set.
fn active(n: &notification::Model) -> notification::ActiveModel {
    notification::ActiveModel {
        id: Set(n.id.clone()),
        user_id: Set(n.user_id.clone()),
        notification_type: Set(n.notification_type.clone()),
        title: Set(n.title.clone()),
        message: Set(n.message.clone()),
        data: Set(n.data.clone()),
        priority: Set(n.priority.clone()),
        actor_id: Set(n.actor_id.clone()),
        actor_name: Set(n.actor_name.clone()),
        is_read: Set(n.is_read),
        created_at: Set(n.created_at),
        expires_at: Set(n.expires_at),
        dedup_key: Set(n.dedup_key.clone()),
    }
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
