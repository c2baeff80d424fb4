//! The notification webhook: for each created notification whose recipient has `email: true`
//! for its type, one POST of a signed `notification.created` event to
//! `NOTIFICATION_WEBHOOK_URL`, so the app sends the email (or whatever channel it handles
//! itself). Delivery is at least once: the delivery row is written in the notification's own
//! transaction (the outbox), and a worker sends due rows until the receiver answers 2xx,
//! backing off exponentially (or as its `Retry-After` asks) and marking a row `failed` after
//! `NOTIFICATION_WEBHOOK_MAX_ATTEMPTS`. Every attempt of a delivery sends the same body, the
//! same signature and the same `Idempotency-Key`, so the receiver can drop repeats. Several
//! nodes may run the worker: each claims a row before sending it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{user, webhook_delivery as delivery};
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::Notify;

use super::{Outcome, backoff};
use crate::config::Config;
use crate::domain::bounded::MAX_BIND_IDS;
use crate::domain::notifications::Notification;
use crate::state::Core;

/// The event type of every body sent so far; receivers should ignore types they do not know.
pub const EVENT_CREATED: &str = "notification.created";
/// Header carrying `sha256=<hex HMAC-SHA256 of the raw body>`.
pub const SIGNATURE_HEADER: &str = "X-Switchboard-Signature";
/// Header carrying the attempt's Unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "X-Switchboard-Timestamp";
/// Header carrying the delivery id, also the body's `id`.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
const PENDING: &str = "pending";
const FAILED: &str = "failed";
/// Due deliveries sent at once.
const BATCH: u64 = 32;
/// Longest wait between two attempts of one delivery.
const RETRY_CAP: Duration = Duration::from_secs(3600);
/// How long the worker sleeps with nothing due: rows written by other nodes, or left by a
/// node that stopped, are found within this.
const IDLE_POLL: Duration = Duration::from_secs(30);
/// Failed deliveries are kept this long for inspection, then purged.
const FAILED_RETENTION: chrono::Duration = chrono::Duration::days(7);

/// The configured endpoint and key, and the worker's wake-up call.
pub struct Webhook {
    url: reqwest::Url,
    secret: Vec<u8>,
    wake: Notify,
}

impl Webhook {
    /// `None` when `NOTIFICATION_WEBHOOK_URL` is unset (the config check requires a secret
    /// with it).
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let Some(url) = &config.notification_webhook_url else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("NOTIFICATION_WEBHOOK_URL: {e}"))?;
        let secret = config
            .notification_webhook_secret
            .clone()
            .unwrap_or_default()
            .into_bytes();
        Ok(Some(Self {
            url,
            secret,
            wake: Notify::new(),
        }))
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// Tells the worker new rows are due (a wake before it waits is kept, not lost).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this branch is unreachable.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + digest.len() * 2);
    out.push_str("sha256=");
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Names of `ids` as stored (absent users are left out), one query per [`MAX_BIND_IDS`].
pub async fn user_names(
    db: &impl ConnectionTrait,
    ids: &[String],
) -> Result<HashMap<String, String>, sea_orm::DbErr> {
    let mut names = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_BIND_IDS) {
        let rows: Vec<(String, String)> = user::Entity::find()
            .select_only()
            .column(user::Column::Id)
            .column(user::Column::Name)
            .filter(user::Column::Id.is_in(chunk.iter().map(String::as_str)))
            .into_tuple()
            .all(db)
            .await?;
        names.extend(rows);
    }
    Ok(names)
}

/// The outbox row announcing `n` to the webhook; its body is fixed here.
pub fn delivery_of(
    n: &Notification,
    user_name: Option<&str>,
    now: DateTime<Utc>,
) -> delivery::Model {
    let id = crate::domain::chat::new_id();
    let body = json!({
        "id": id,
        "type": EVENT_CREATED,
        "channel": "email",
        "notification": n,
        "user": { "id": n.user_id, "name": user_name.unwrap_or(&n.user_id) },
        "createdAt": crate::time::rfc3339(&now),
    });
    delivery::Model {
        id,
        notification_id: n.id.clone(),
        user_id: n.user_id.clone(),
        payload: body.to_string(),
        status: PENDING.to_owned(),
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        created_at: now,
    }
}

/// Writes outbox rows on `db` (the notifications' own transaction, where there is one).
pub async fn insert(
    db: &impl ConnectionTrait,
    rows: &[delivery::Model],
) -> Result<(), sea_orm::DbErr> {
    for chunk in rows.chunks(MAX_BIND_IDS / 10) {
        delivery::Entity::insert_many(chunk.iter().map(active))
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

fn active(row: &delivery::Model) -> delivery::ActiveModel {
    delivery::ActiveModel {
        id: Set(row.id.clone()),
        notification_id: Set(row.notification_id.clone()),
        user_id: Set(row.user_id.clone()),
        payload: Set(row.payload.clone()),
        status: Set(row.status.clone()),
        attempts: Set(row.attempts),
        next_attempt_at: Set(row.next_attempt_at),
        last_error: Set(row.last_error.clone()),
        created_at: Set(row.created_at),
    }
}

/// The webhook worker: sends due deliveries until shutdown; does nothing when the webhook is
/// off. Pending rows from before a restart are due at once.
pub async fn run(core: Arc<Core>) {
    let Some(hook) = core.outbound.webhook.as_ref() else {
        return;
    };
    let client = match super::http_client(&core.config) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(task = "webhook_sender", error = %e, "no HTTP client: webhook is off");
            return;
        }
    };
    tracing::info!(task = "webhook_sender", url = %hook.url, "started");
    let mut purged_at: Option<tokio::time::Instant> = None;
    loop {
        if purged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
            purged_at = Some(tokio::time::Instant::now());
            purge_failed(&core).await;
        }
        let wait = match drain(&core, hook, &client).await {
            Ok(Some(next)) => (next - Utc::now()).to_std().unwrap_or_default(),
            Ok(None) => IDLE_POLL,
            Err(e) => {
                // The database is down: try again in a while, without a warning per second.
                tracing::warn!(task = "webhook_sender", error = %e, "outbox unreadable");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait.min(IDLE_POLL)) => {}
            () = hook.wake.notified() => {}
            () = core.shutdown.cancelled() => break,
        }
    }
    tracing::info!(task = "webhook_sender", "stopped");
}

/// Sends every due delivery; returns when the next pending one is due.
async fn drain(
    core: &Core,
    hook: &Webhook,
    client: &reqwest::Client,
) -> Result<Option<DateTime<Utc>>, sea_orm::DbErr> {
    loop {
        let now = Utc::now();
        let due = delivery::Entity::find()
            .filter(delivery::Column::Status.eq(PENDING))
            .filter(delivery::Column::NextAttemptAt.lte(now))
            .order_by_asc(delivery::Column::NextAttemptAt)
            .limit(BATCH)
            .all(&core.db)
            .await?;
        let full = due.len() as u64 == BATCH;
        let mut claimed = Vec::with_capacity(due.len());
        for row in due {
            if claim(core, &row.id, now).await? {
                claimed.push(row);
            }
        }
        futures::future::join_all(
            claimed
                .into_iter()
                .map(|row| attempt(core, hook, client, row)),
        )
        .await;
        if !full || core.shutdown.is_cancelled() {
            break;
        }
    }
    let next: Option<DateTime<Utc>> = delivery::Entity::find()
        .select_only()
        .column_as(delivery::Column::NextAttemptAt.min(), "next")
        .filter(delivery::Column::Status.eq(PENDING))
        .into_tuple::<Option<DateTime<Utc>>>()
        .one(&core.db)
        .await?
        .flatten();
    Ok(next)
}

/// Takes a due row for this node: moves its next attempt past the time one attempt can take, so
/// no other node sends it meanwhile. `false` when another node claimed it first.
async fn claim(core: &Core, id: &str, now: DateTime<Utc>) -> Result<bool, sea_orm::DbErr> {
    let lease = core.config.outbound_timeout() + Duration::from_secs(30);
    let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::minutes(1));
    let claimed = delivery::Entity::update_many()
        .col_expr(delivery::Column::NextAttemptAt, Expr::value(until))
        .filter(delivery::Column::Id.eq(id))
        .filter(delivery::Column::Status.eq(PENDING))
        .filter(delivery::Column::NextAttemptAt.lte(now))
        .exec(&*core.writes.turn().await?)
        .await?
        .rows_affected;
    Ok(claimed == 1)
}

/// One attempt of a claimed delivery, and what follows from its answer.
async fn attempt(core: &Core, hook: &Webhook, client: &reqwest::Client, row: delivery::Model) {
    let timestamp = Utc::now().timestamp();
    let response = client
        .post(hook.url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, sign(&hook.secret, row.payload.as_bytes()))
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(IDEMPOTENCY_HEADER, row.id.as_str())
        .body(row.payload.clone())
        .send()
        .await;
    let (error, headers): (String, Option<HeaderMap>) = match response {
        Ok(r) if r.status().is_success() => {
            match delete(core, &row.id).await {
                Ok(()) => core.outbound.stats.record(Outcome::WebhookDelivered),
                // Sent, but still stored: it will be sent again, which at-least-once allows.
                Err(e) => {
                    tracing::warn!(delivery = %row.id, error = %e, "delivered row not deleted")
                }
            }
            return;
        }
        Ok(r) => (format!("HTTP {}", r.status()), Some(r.headers().clone())),
        Err(e) => (format!("{e}"), None),
    };
    let attempts = row.attempts.saturating_add(1);
    let max = core.config.notification_webhook_max_attempts.max(1);
    let result = if attempts as u32 >= max {
        tracing::error!(delivery = %row.id, notification = %row.notification_id, attempts,
            error = %error, "notification webhook delivery failed for good");
        let marked = reschedule(core, &row.id, attempts, FAILED, Utc::now(), &error).await;
        // Counted once the row says so: whoever watches the counter then finds it failed.
        core.outbound.stats.record(Outcome::WebhookFailed);
        marked
    } else {
        let base = Duration::from_millis(core.config.notification_webhook_retry_base_ms);
        let wait = backoff::next_wait(headers.as_ref(), base, attempts as u32, RETRY_CAP);
        let at = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        tracing::debug!(delivery = %row.id, attempts, ?wait, error = %error, "webhook retry scheduled");
        let marked = reschedule(core, &row.id, attempts, PENDING, at, &error).await;
        core.outbound.stats.record(Outcome::WebhookRetried);
        marked
    };
    if let Err(e) = result {
        // The claim's lease expires and the row is retried then.
        tracing::warn!(delivery = %row.id, error = %e, "webhook retry not recorded");
    }
}

async fn delete(core: &Core, id: &str) -> Result<(), sea_orm::DbErr> {
    delivery::Entity::delete_by_id(id)
        .exec(&*core.writes.turn().await?)
        .await?;
    Ok(())
}

async fn reschedule(
    core: &Core,
    id: &str,
    attempts: i32,
    status: &str,
    at: DateTime<Utc>,
    error: &str,
) -> Result<(), sea_orm::DbErr> {
    let error: String = error.chars().take(500).collect();
    delivery::Entity::update_many()
        .col_expr(delivery::Column::Attempts, Expr::value(attempts))
        .col_expr(delivery::Column::Status, Expr::value(status))
        .col_expr(delivery::Column::NextAttemptAt, Expr::value(at))
        .col_expr(delivery::Column::LastError, Expr::value(error))
        .filter(delivery::Column::Id.eq(id))
        .exec(&*core.writes.turn().await?)
        .await?;
    Ok(())
}

/// Deletes failed deliveries older than a week, so the outbox stays bounded.
async fn purge_failed(core: &Core) {
    let cutoff = Utc::now() - FAILED_RETENTION;
    let result = async {
        delivery::Entity::delete_many()
            .filter(delivery::Column::Status.eq(FAILED))
            .filter(delivery::Column::CreatedAt.lt(cutoff))
            .exec(&*core.writes.turn().await?)
            .await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(task = "webhook_sender", error = %e, "failed deliveries not purged");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hex_hmac_of_the_body() {
        // RFC 4231 test case 2.
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
