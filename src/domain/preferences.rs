//! Per-user delivery channels per notification type and the three privacy switches. Every
//! switch defaults to on; a PUT changes only the keys it sends. Always read from the database:
//! they are consulted on low-rate paths (forwarded typing, receipts, presence changes,
//! notifications), and a change made through one node must hold on every node at once, which a
//! per-node cache cannot promise.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use entity::notification_preference as prefs;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::bounded::MAX_BIND_IDS;
use crate::error::{AppError, AppResult};
use crate::write_path::WritePath;

/// Notification types the contract names; others matching the type pattern are accepted too.
pub const KNOWN_TYPES: &[&str] = &[
    "like",
    "comment",
    "follow",
    "follow_request",
    "mention",
    "message",
    "group_invite",
    "event",
    "post",
    "recommendation",
    "system",
];

/// Where one notification type is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Channels {
    pub in_app: bool,
    pub push: bool,
    pub email: bool,
}

impl Default for Channels {
    fn default() -> Self {
        Self {
            in_app: true,
            push: true,
            email: true,
        }
    }
}

/// A user's preferences, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preferences {
    pub channels: BTreeMap<String, Channels>,
    pub share_online_status: bool,
    pub share_typing: bool,
    pub share_read_receipts: bool,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            channels: BTreeMap::new(),
            share_online_status: true,
            share_typing: true,
            share_read_receipts: true,
        }
    }
}

impl Preferences {
    /// Channels of one type (defaults when never set).
    pub fn channels_for(&self, notification_type: &str) -> Channels {
        self.channels
            .get(notification_type)
            .copied()
            .unwrap_or_default()
    }

    /// The wire shape: every known type plus any set ones, and the three switches.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        for t in KNOWN_TYPES {
            map.insert((*t).to_owned(), serde_json::json!(self.channels_for(t)));
        }
        for (t, c) in &self.channels {
            map.insert(t.clone(), serde_json::json!(c));
        }
        map.insert("shareOnlineStatus".into(), self.share_online_status.into());
        map.insert("shareTyping".into(), self.share_typing.into());
        map.insert("shareReadReceipts".into(), self.share_read_receipts.into());
        Value::Object(map)
    }

    /// Applies a partial update `{ <type>: { inApp?, push?, email? }, share*? }`.
    pub fn apply(&mut self, update: &Map<String, Value>) -> AppResult<()> {
        for (key, value) in update {
            let switch = match key.as_str() {
                "shareOnlineStatus" => Some(&mut self.share_online_status),
                "shareTyping" => Some(&mut self.share_typing),
                "shareReadReceipts" => Some(&mut self.share_read_receipts),
                _ => None,
            };
            if let Some(switch) = switch {
                *switch = value.as_bool().ok_or_else(|| {
                    AppError::field(format!("preferences.{key}"), "must be a boolean")
                })?;
                continue;
            }
            if !crate::domain::notifications::is_valid_type(key) {
                return Err(AppError::field(
                    format!("preferences.{key}"),
                    "is not a notification type",
                ));
            }
            let Value::Object(fields) = value else {
                return Err(AppError::field(
                    format!("preferences.{key}"),
                    "must be an object",
                ));
            };
            let mut channels = self.channels_for(key);
            for (field, flag) in fields {
                let slot = match field.as_str() {
                    "inApp" => &mut channels.in_app,
                    "push" => &mut channels.push,
                    "email" => &mut channels.email,
                    _ => {
                        return Err(AppError::field(
                            format!("preferences.{key}.{field}"),
                            "unknown channel (inApp, push, email)",
                        ));
                    }
                };
                *slot = flag.as_bool().ok_or_else(|| {
                    AppError::field(format!("preferences.{key}.{field}"), "must be a boolean")
                })?;
            }
            self.channels.insert(key.clone(), channels);
        }
        Ok(())
    }
}

/// Reads and writes preferences.
pub struct PreferenceService {
    db: DatabaseConnection,
    writes: WritePath,
}

impl PreferenceService {
    pub fn new(db: DatabaseConnection, writes: WritePath) -> Self {
        Self { db, writes }
    }

    /// Which of `users` turned `shareOnlineStatus` off (for presence listings), one query per
    /// [`MAX_BIND_IDS`] users.
    pub async fn hiding_online_status(&self, users: &[String]) -> AppResult<HashSet<String>> {
        let mut hidden = HashSet::new();
        for chunk in users.chunks(MAX_BIND_IDS) {
            let rows: Vec<String> = prefs::Entity::find()
                .select_only()
                .column(prefs::Column::UserId)
                .filter(prefs::Column::UserId.is_in(chunk.iter().map(String::as_str)))
                .filter(prefs::Column::ShareOnlineStatus.eq(false))
                .into_tuple()
                .all(&self.db)
                .await?;
            hidden.extend(rows);
        }
        Ok(hidden)
    }

    /// Which of `users` turned in-app delivery off for `notification_type`: one query per
    /// [`MAX_BIND_IDS`] recipients of a notification, instead of one per recipient.
    pub async fn in_app_off(
        &self,
        users: &[String],
        notification_type: &str,
    ) -> AppResult<HashSet<String>> {
        let mut off = HashSet::new();
        for chunk in users.chunks(MAX_BIND_IDS) {
            let rows: Vec<(String, String)> = prefs::Entity::find()
                .select_only()
                .column(prefs::Column::UserId)
                .column(prefs::Column::Channels)
                .filter(prefs::Column::UserId.is_in(chunk.iter().map(String::as_str)))
                .into_tuple()
                .all(&self.db)
                .await?;
            for (user_id, channels) in rows {
                let prefs = Preferences {
                    channels: serde_json::from_str(&channels).unwrap_or_default(),
                    ..Preferences::default()
                };
                if !prefs.channels_for(notification_type).in_app {
                    off.insert(user_id);
                }
            }
        }
        Ok(off)
    }

    /// Which of `users` turned `shareReadReceipts` off, in one query (for receipt listings).
    pub async fn hiding_read_receipts(&self, users: &[String]) -> AppResult<HashSet<String>> {
        hiding_read_receipts(&self.db, users).await
    }

    /// The user's preferences, defaults when none were saved.
    pub async fn get(&self, user_id: &str) -> AppResult<Arc<Preferences>> {
        let row = prefs::Entity::find_by_id(user_id).one(&self.db).await?;
        Ok(Arc::new(row.map(from_row).unwrap_or_default()))
    }

    /// Applies a partial update and returns the result. Read, merge and write happen in one
    /// transaction that holds the user's row from the first statement on, so concurrent PUTs
    /// of different keys queue instead of overwriting each other's changes: an insert of the
    /// default row comes first (a write, which takes SQLite's write lock at once and gives
    /// PostgreSQL a row to lock even for a user who never saved any), then the row is read
    /// `FOR UPDATE`. An invalid update is refused before anything is written.
    pub async fn update(
        &self,
        user_id: &str,
        update: &Map<String, Value>,
    ) -> AppResult<Arc<Preferences>> {
        Preferences::default().apply(update)?;
        let (user_id, update) = (user_id.to_owned(), update.clone());
        let next = self
            .writes
            .transaction::<_, Preferences, AppError>(|tx| {
                Box::pin(async move {
                    prefs::Entity::insert(row_of(&user_id, &Preferences::default())?)
                        .on_conflict(
                            OnConflict::column(prefs::Column::UserId)
                                .do_nothing()
                                .to_owned(),
                        )
                        .exec_without_returning(tx)
                        .await?;
                    let current = prefs::Entity::find_by_id(user_id.as_str())
                        .lock_exclusive()
                        .one(tx)
                        .await?
                        .map(from_row)
                        .unwrap_or_default();
                    let mut next = current;
                    next.apply(&update)?;
                    row_of(&user_id, &next)?.update(tx).await?;
                    Ok(next)
                })
            })
            .await?;
        Ok(Arc::new(next))
    }
}

/// The channels of `notification_type` for each of `users` who saved preferences (the others
/// have [`Channels::default`]), one query per [`MAX_BIND_IDS`] users, on `db`: the notification
/// service reads them inside the transaction that stores the notifications, so the webhook
/// outbox rows it writes there follow the same preferences as live delivery.
pub async fn channels_of(
    db: &impl ConnectionTrait,
    users: &[String],
    notification_type: &str,
) -> Result<HashMap<String, Channels>, sea_orm::DbErr> {
    let mut channels = HashMap::new();
    for chunk in users.chunks(MAX_BIND_IDS) {
        let rows: Vec<(String, String)> = prefs::Entity::find()
            .select_only()
            .column(prefs::Column::UserId)
            .column(prefs::Column::Channels)
            .filter(prefs::Column::UserId.is_in(chunk.iter().map(String::as_str)))
            .into_tuple()
            .all(db)
            .await?;
        for (user_id, saved) in rows {
            let prefs = Preferences {
                channels: serde_json::from_str(&saved).unwrap_or_default(),
                ..Preferences::default()
            };
            channels.insert(user_id, prefs.channels_for(notification_type));
        }
    }
    Ok(channels)
}

/// Which of `users` turned `shareReadReceipts` off, in one query; the chat service uses it to
/// derive message status without holding the preference service.
pub async fn hiding_read_receipts(
    db: &DatabaseConnection,
    users: &[String],
) -> AppResult<HashSet<String>> {
    if users.is_empty() {
        return Ok(HashSet::new());
    }
    let hidden: Vec<String> = prefs::Entity::find()
        .select_only()
        .column(prefs::Column::UserId)
        .filter(prefs::Column::UserId.is_in(users.iter().map(String::as_str)))
        .filter(prefs::Column::ShareReadReceipts.eq(false))
        .into_tuple()
        .all(db)
        .await?;
    Ok(hidden.into_iter().collect())
}

fn from_row(row: prefs::Model) -> Preferences {
    Preferences {
        channels: serde_json::from_str(&row.channels).unwrap_or_default(),
        share_online_status: row.share_online_status,
        share_typing: row.share_typing,
        share_read_receipts: row.share_read_receipts,
    }
}

fn row_of(user_id: &str, p: &Preferences) -> AppResult<prefs::ActiveModel> {
    let channels = serde_json::to_string(&p.channels).map_err(anyhow::Error::from)?;
    Ok(prefs::ActiveModel {
        user_id: Set(user_id.to_owned()),
        channels: Set(channels),
        share_online_status: Set(p.share_online_status),
        share_typing: Set(p.share_typing),
        share_read_receipts: Set(p.share_read_receipts),
        updated_at: Set(Utc::now()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partial_update_changes_only_sent_keys() {
        let mut p = Preferences::default();
        let update = json!({ "like": { "inApp": false }, "shareTyping": false });
        p.apply(update.as_object().unwrap()).unwrap();
        assert_eq!(
            p.channels_for("like"),
            Channels {
                in_app: false,
                push: true,
                email: true
            }
        );
        assert!(!p.share_typing);
        assert!(p.share_read_receipts);
        assert_eq!(
            p.to_json()["comment"],
            json!({ "inApp": true, "push": true, "email": true })
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut p = Preferences::default();
        let err = p
            .apply(json!({ "shareTyping": "no" }).as_object().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("preferences.shareTyping"));
        assert!(
            p.apply(json!({ "Bad-Type": {} }).as_object().unwrap())
                .is_err()
        );
        assert!(
            p.apply(json!({ "like": { "sms": true } }).as_object().unwrap())
                .is_err()
        );
    }
}
