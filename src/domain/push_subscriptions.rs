//! Web Push subscriptions: what a browser's `pushManager.subscribe()` returned, validated and
//! stored per user so notifications can reach a device with no live connection. Bounded per
//! user (the oldest makes room), unique per endpoint (a browser signed into another account
//! hands its subscription to that account).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use entity::push_subscription as subs;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde::{Deserialize, Serialize};

use crate::domain::bounded::MAX_BIND_IDS;
use crate::error::{AppError, AppResult};
use crate::time::serde_rfc3339;
use crate::write_path::WritePath;

/// Longest endpoint accepted; the column's size.
pub const MAX_ENDPOINT_LEN: usize = 2048;

/// The browser's `PushSubscription.toJSON()`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionJson {
    pub endpoint: String,
    pub keys: KeysJson,
    /// Milliseconds since the epoch, or null (most push services never expire subscriptions).
    pub expiration_time: Option<f64>,
}

/// `keys` of a `PushSubscription`.
#[derive(Debug, Deserialize)]
pub struct KeysJson {
    pub p256dh: String,
    pub auth: String,
}

/// A subscription as its owner sees it: never the keys, which only the server needs.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub endpoint: String,
    #[serde(with = "serde_rfc3339::option")]
    #[schema(required = true)]
    pub expiration_time: Option<DateTime<Utc>>,
    #[serde(with = "serde_rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl From<subs::Model> for Subscription {
    fn from(row: subs::Model) -> Self {
        Self {
            id: row.id,
            endpoint: row.endpoint,
            expiration_time: row.expiration_time,
            created_at: row.created_at,
        }
    }
}

/// A checked subscription, ready to store.
#[derive(Clone, Debug)]
pub struct NewSubscription {
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
    pub expiration_time: Option<DateTime<Utc>>,
}

/// Checks a `PushSubscription`: an `https` endpoint (plain `http` only to a loopback host, and
/// only when `allow_loopback_http`, for local push services in development and tests), a
/// `p256dh` that is a P-256 point and a 16-byte `auth`, both base64url.
pub fn validate(json: SubscriptionJson, allow_loopback_http: bool) -> AppResult<NewSubscription> {
    let endpoint = json.endpoint.trim().to_owned();
    if endpoint.len() > MAX_ENDPOINT_LEN {
        return Err(AppError::field(
            "endpoint",
            format!("must be at most {MAX_ENDPOINT_LEN} characters"),
        ));
    }
    let url = reqwest::Url::parse(&endpoint)
        .map_err(|_| AppError::field("endpoint", "must be an absolute URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => {}
        "http" if loopback && allow_loopback_http => {}
        _ => return Err(AppError::field("endpoint", "must be an https URL")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(AppError::field("endpoint", "must not carry credentials"));
    }
    let p256dh = decode(&json.keys.p256dh)
        .filter(|k| k.len() == 65 && p256::PublicKey::from_sec1_bytes(k).is_ok())
        .ok_or_else(|| {
            AppError::field(
                "keys.p256dh",
                "must be a base64url P-256 public key (65 bytes)",
            )
        })?;
    let auth = decode(&json.keys.auth)
        .filter(|k| k.len() == 16)
        .ok_or_else(|| AppError::field("keys.auth", "must be a base64url 16-byte secret"))?;
    let expiration_time = match json.expiration_time {
        None => None,
        Some(ms) if ms.is_finite() && ms >= 0.0 => {
            Some(DateTime::from_timestamp_millis(ms as i64).ok_or_else(|| {
                AppError::field("expirationTime", "must be milliseconds since 1970")
            })?)
        }
        Some(_) => {
            return Err(AppError::field(
                "expirationTime",
                "must be milliseconds since 1970 or null",
            ));
        }
    };
    Ok(NewSubscription {
        endpoint,
        p256dh: URL_SAFE_NO_PAD.encode(p256dh),
        auth: URL_SAFE_NO_PAD.encode(auth),
        expiration_time,
    })
}

/// base64url with or without padding (browsers send it unpadded; some libraries pad).
fn decode(value: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(value.trim().trim_end_matches('='))
        .ok()
}

/// Stores and reads subscriptions.
pub struct PushSubscriptions {
    db: DatabaseConnection,
    writes: WritePath,
    per_user: u64,
}

impl PushSubscriptions {
    pub fn new(db: DatabaseConnection, writes: WritePath, per_user: u64) -> Self {
        Self {
            db,
            writes,
            per_user: per_user.max(1),
        }
    }

    /// Stores `new` for `user_id`; `false` when the user already had this endpoint (its keys
    /// are refreshed). An endpoint held by another user moves to this one. Beyond the per-user
    /// bound the user's oldest subscriptions are removed.
    pub async fn register(
        &self,
        user_id: &str,
        new: NewSubscription,
    ) -> AppResult<(Subscription, bool)> {
        let tx = self.writes.begin().await?;
        let existing = subs::Entity::find()
            .filter(subs::Column::Endpoint.eq(new.endpoint.as_str()))
            .one(&*tx)
            .await?;
        if let Some(row) = existing {
            if row.user_id == user_id {
                let mut active: subs::ActiveModel = row.clone().into();
                active.p256dh = Set(new.p256dh);
                active.auth = Set(new.auth);
                active.expiration_time = Set(new.expiration_time);
                let row = sea_orm::ActiveModelTrait::update(active, &*tx).await?;
                tx.commit().await?;
                return Ok((row.into(), false));
            }
            subs::Entity::delete_by_id(row.id).exec(&*tx).await?;
        }
        let count = subs::Entity::find()
            .filter(subs::Column::UserId.eq(user_id))
            .count(&*tx)
            .await?;
        if count >= self.per_user {
            let excess = count + 1 - self.per_user;
            let oldest: Vec<String> = subs::Entity::find()
                .select_only()
                .column(subs::Column::Id)
                .filter(subs::Column::UserId.eq(user_id))
                .order_by_asc(subs::Column::Id)
                .limit(excess)
                .into_tuple()
                .all(&*tx)
                .await?;
            subs::Entity::delete_many()
                .filter(subs::Column::Id.is_in(oldest))
                .exec(&*tx)
                .await?;
        }
        let row = subs::Model {
            id: crate::domain::chat::new_id(),
            user_id: user_id.to_owned(),
            endpoint: new.endpoint,
            p256dh: new.p256dh,
            auth: new.auth,
            expiration_time: new.expiration_time,
            created_at: Utc::now(),
        };
        subs::Entity::insert(active(&row))
            .on_conflict(
                OnConflict::column(subs::Column::Endpoint)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&*tx)
            .await?;
        // A concurrent registration of the same endpoint may have won the insert.
        let stored = subs::Entity::find()
            .filter(subs::Column::Endpoint.eq(row.endpoint.as_str()))
            .one(&*tx)
            .await?
            .unwrap_or(row);
        tx.commit().await?;
        let created = stored.user_id == user_id;
        if !created {
            return Err(AppError::Conflict(
                "this endpoint was registered by someone else at the same time".into(),
            ));
        }
        Ok((stored.into(), true))
    }

    /// The user's subscriptions, newest first.
    pub async fn list(&self, user_id: &str) -> AppResult<Vec<Subscription>> {
        let rows = subs::Entity::find()
            .filter(subs::Column::UserId.eq(user_id))
            .order_by_desc(subs::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(Subscription::from).collect())
    }

    /// Deletes one of the user's own subscriptions; anyone else's is a 404, as if absent.
    pub async fn delete(&self, user_id: &str, id: &str) -> AppResult<()> {
        let deleted = subs::Entity::delete_many()
            .filter(subs::Column::Id.eq(id))
            .filter(subs::Column::UserId.eq(user_id))
            .exec(&*self.writes.turn().await?)
            .await?
            .rows_affected;
        if deleted == 0 {
            return Err(AppError::NotFound("no such push subscription".into()));
        }
        Ok(())
    }

    /// Every subscription of `users`, one query per [`MAX_BIND_IDS`] users.
    pub async fn of_users(&self, users: &[String]) -> AppResult<Vec<subs::Model>> {
        let mut all = Vec::new();
        for chunk in users.chunks(MAX_BIND_IDS) {
            let rows = subs::Entity::find()
                .filter(subs::Column::UserId.is_in(chunk.iter().map(String::as_str)))
                .all(&self.db)
                .await?;
            all.extend(rows);
        }
        Ok(all)
    }

    /// Removes a subscription the push service said is gone (404/410).
    pub async fn remove(&self, id: &str) -> AppResult<()> {
        subs::Entity::delete_by_id(id)
            .exec(&*self.writes.turn().await?)
            .await?;
        Ok(())
    }
}

fn active(row: &subs::Model) -> subs::ActiveModel {
    subs::ActiveModel {
        id: Set(row.id.clone()),
        user_id: Set(row.user_id.clone()),
        endpoint: Set(row.endpoint.clone()),
        p256dh: Set(row.p256dh.clone()),
        auth: Set(row.auth.clone()),
        expiration_time: Set(row.expiration_time),
        created_at: Set(row.created_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
            &secret.public_key(),
            false,
        );
        URL_SAFE_NO_PAD.encode(point.as_bytes())
    }

    fn sub(endpoint: &str, p256dh: &str, auth: &str) -> SubscriptionJson {
        SubscriptionJson {
            endpoint: endpoint.into(),
            keys: KeysJson {
                p256dh: p256dh.into(),
                auth: auth.into(),
            },
            expiration_time: None,
        }
    }

    #[test]
    fn accepts_a_browser_subscription() {
        let auth = URL_SAFE_NO_PAD.encode([7u8; 16]);
        let ok = validate(
            sub("https://fcm.googleapis.com/fcm/send/x", &key(), &auth),
            false,
        );
        assert!(ok.is_ok());
        let padded = format!("{auth}==");
        assert!(validate(sub("https://push.example/x", &key(), &padded), false).is_ok());
    }

    #[test]
    fn refuses_bad_endpoints_and_keys() {
        let auth = URL_SAFE_NO_PAD.encode([7u8; 16]);
        let k = key();
        let http = sub("http://127.0.0.1:9/push", &k, &auth);
        assert!(validate(http, false).is_err());
        assert!(validate(sub("http://127.0.0.1:9/push", &k, &auth), true).is_ok());
        assert!(validate(sub("http://push.example/x", &k, &auth), true).is_err());
        assert!(validate(sub("not a url", &k, &auth), false).is_err());
        assert!(validate(sub("https://u:p@push.example/x", &k, &auth), false).is_err());
        let short = URL_SAFE_NO_PAD.encode([7u8; 15]);
        assert!(validate(sub("https://push.example/x", &k, &short), false).is_err());
        let bad_point = URL_SAFE_NO_PAD.encode([4u8; 65]);
        assert!(validate(sub("https://push.example/x", &bad_point, &auth), false).is_err());
    }
}
