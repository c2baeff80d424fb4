//! Sending Web Push (RFC 8030): each notification whose recipient wants push is queued here
//! (bounded; overflow is dropped and counted, never waited for), and one worker takes them in
//! batches, looks up the recipients' subscriptions in one query, skips recipients who are
//! connected when `PUSH_ONLY_WHEN_OFFLINE` is on, and sends one encrypted push (RFC 8291
//! `aes128gcm`, VAPID-signed) per subscription, at most `PUSH_CONCURRENCY` at once. A 404/410
//! removes the subscription; 429/5xx and network errors are retried with backoff (honouring
//! `Retry-After`) up to `PUSH_MAX_ATTEMPTS`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use entity::push_subscription;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::{Outcome, Vapid, backoff};
use crate::config::Config;
use crate::domain::notifications::Notification;
use crate::state::Core;

/// Notifications taken from the queue at once (one subscription query for all).
const BATCH: usize = 256;
/// Longest plaintext that fits the 4096-byte body push services accept: the `aes128gcm`
/// header with its 65-byte key id takes 86 bytes, the record's padding delimiter and tag 17.
pub const MAX_PLAINTEXT: usize = 4096 - 86 - 17;
/// Longest TTL push services keep a message (28 days).
const MAX_TTL_SECS: u64 = 28 * 24 * 3600;
/// Longest wait between two attempts of one push, whatever `Retry-After` says: the retry is held
/// in memory.
const RETRY_CAP: Duration = Duration::from_secs(300);

/// The push channel: the VAPID key and the queue of notifications to push.
pub struct PushQueue {
    vapid: Vapid,
    tx: mpsc::Sender<Notification>,
    /// Taken once by the worker.
    rx: Mutex<Option<mpsc::Receiver<Notification>>>,
}

impl PushQueue {
    pub fn new(vapid: Vapid, config: &Config) -> Self {
        let (tx, rx) = mpsc::channel(config.push_queue_max.max(1));
        Self {
            vapid,
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// The browser's `applicationServerKey`.
    pub fn public_key(&self) -> &str {
        self.vapid.public_key()
    }

    /// Queues `notification` for pushing; `false` when the queue is full (it is dropped).
    pub fn offer(&self, notification: Notification) -> bool {
        match self.tx.try_send(notification) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(n)) => {
                tracing::debug!(notification = %n.id, "push queue full: not pushed");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn take_receiver(&self) -> Option<mpsc::Receiver<Notification>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What is pushed for one notification, to each of its recipient's subscriptions.
pub struct Message {
    /// The notification object JSON (trimmed when too large, see [`payload`]).
    pub payload: Vec<u8>,
    pub ttl: u64,
    pub urgency: &'static str,
}

impl Message {
    pub fn of(n: &Notification, default_ttl: u64) -> Self {
        let ttl = match n.expires_at {
            Some(at) => (at - Utc::now()).num_seconds().max(0) as u64,
            None => default_ttl,
        };
        Self {
            payload: payload(n),
            ttl: ttl.min(MAX_TTL_SECS),
            urgency: urgency(&n.priority),
        }
    }
}

/// RFC 8030 `Urgency` of a priority: `urgent` is the highest the header has, `high`.
pub fn urgency(priority: &str) -> &'static str {
    match priority {
        "low" => "low",
        "high" | "urgent" => "high",
        _ => "normal",
    }
}

/// The notification object as JSON; when it does not fit a push (large `data` or message), the
/// object without `data` and `message`, marked `truncated: true`, so the service worker can
/// show the title and fetch the rest over REST.
pub fn payload(n: &Notification) -> Vec<u8> {
    let full = serde_json::to_vec(n).unwrap_or_default();
    if full.len() <= MAX_PLAINTEXT {
        return full;
    }
    let short = json!({
        "id": n.id,
        "type": n.notification_type,
        "title": n.title,
        "priority": n.priority,
        "actor": n.actor,
        "isRead": n.is_read,
        "createdAt": crate::time::rfc3339(&n.created_at),
        "expiresAt": n.expires_at.as_ref().map(crate::time::rfc3339),
        "truncated": true,
    });
    serde_json::to_vec(&short).unwrap_or_default()
}

/// The push worker: runs until shutdown; does nothing when push is off.
pub async fn run(core: Arc<Core>) {
    let Some(queue) = core.outbound.push.as_ref() else {
        return;
    };
    let Some(mut rx) = queue.take_receiver() else {
        return;
    };
    let client = match super::http_client(&core.config) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(task = "push_sender", error = %e, "no HTTP client: push is off");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(core.config.push_concurrency.max(1)));
    tracing::info!(task = "push_sender", "started");
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let taken = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => n,
            () = core.shutdown.cancelled() => break,
        };
        if taken == 0 {
            break;
        }
        dispatch(&core, &client, &permits, std::mem::take(&mut batch)).await;
    }
    tracing::info!(task = "push_sender", "stopped");
}

/// Sends one batch of notifications to their recipients' subscriptions.
async fn dispatch(
    core: &Arc<Core>,
    client: &reqwest::Client,
    permits: &Arc<Semaphore>,
    batch: Vec<Notification>,
) {
    let now = Utc::now();
    let batch: Vec<Notification> = batch
        .into_iter()
        .filter(|n| n.expires_at.is_none_or(|at| at > now))
        .collect();
    let mut users: Vec<String> = batch.iter().map(|n| n.user_id.clone()).collect();
    users.sort();
    users.dedup();
    let subscriptions = match core.push_subscriptions.of_users(&users).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(task = "push_sender", error = %e, "subscriptions unreadable: batch not pushed");
            return;
        }
    };
    let mut by_user: HashMap<String, Vec<push_subscription::Model>> = HashMap::new();
    for s in subscriptions {
        by_user.entry(s.user_id.clone()).or_default().push(s);
    }
    let mut online = HashSet::new();
    if core.config.push_only_when_offline {
        for user in by_user.keys() {
            match core.presence.store.connection_count(user).await {
                Ok(0) => {}
                Ok(_) => {
                    online.insert(user.clone());
                }
                // Unknown presence: a push too many beats a notification never seen.
                Err(e) => tracing::debug!(error = ?e, "presence unknown: pushing"),
            }
        }
    }
    for n in batch {
        let Some(subs) = by_user.get(&n.user_id) else {
            continue;
        };
        if online.contains(&n.user_id) {
            core.outbound.stats.record(Outcome::PushSkippedOnline);
            continue;
        }
        let message = Arc::new(Message::of(&n, core.config.push_default_ttl_secs));
        for sub in subs {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = core.shutdown.cancelled() => return,
            };
            tokio::spawn(send(
                core.clone(),
                client.clone(),
                message.clone(),
                sub.clone(),
                permit,
            ));
        }
    }
}

/// One push to one subscription, retries included; records its outcome.
async fn send(
    core: Arc<Core>,
    client: reqwest::Client,
    message: Arc<Message>,
    sub: push_subscription::Model,
    _permit: OwnedSemaphorePermit,
) {
    let outcome = deliver(&core, &client, &message, &sub).await;
    core.outbound.stats.record(outcome);
}

async fn deliver(
    core: &Core,
    client: &reqwest::Client,
    message: &Message,
    sub: &push_subscription::Model,
) -> Outcome {
    let Some(queue) = core.outbound.push.as_ref() else {
        return Outcome::PushFailed;
    };
    let Ok(url) = reqwest::Url::parse(&sub.endpoint) else {
        return Outcome::PushFailed;
    };
    let body = match encrypt(&message.payload, sub) {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(subscription = %sub.id, error = %e, "push not encrypted");
            return Outcome::PushFailed;
        }
    };
    let base = Duration::from_millis(core.config.push_retry_base_ms);
    let attempts = core.config.push_max_attempts.max(1);
    for attempt in 1..=attempts {
        let authorization = match queue.vapid.authorization(&url) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "VAPID signature failed");
                return Outcome::PushFailed;
            }
        };
        let response = client
            .post(url.clone())
            .header("TTL", message.ttl)
            .header("Urgency", message.urgency)
            .header(CONTENT_ENCODING, "aes128gcm")
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(AUTHORIZATION, authorization)
            .body(body.clone())
            .send()
            .await;
        let retry_headers: Option<HeaderMap> = match response {
            Ok(r) if r.status().is_success() => return Outcome::PushSent,
            Ok(r) if matches!(r.status().as_u16(), 404 | 410) => {
                if let Err(e) = core.push_subscriptions.remove(&sub.id).await {
                    tracing::warn!(subscription = %sub.id, error = %e, "expired subscription not removed");
                }
                tracing::info!(subscription = %sub.id, user = %sub.user_id, status = %r.status(),
                    "push subscription gone: removed");
                return Outcome::PushGone;
            }
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                Some(r.headers().clone())
            }
            Ok(r) => {
                tracing::warn!(subscription = %sub.id, status = %r.status(), "push refused");
                return Outcome::PushFailed;
            }
            Err(e) => {
                tracing::debug!(subscription = %sub.id, error = %e, "push service unreachable");
                None
            }
        };
        if attempt == attempts {
            break;
        }
        core.outbound.stats.record(Outcome::PushRetried);
        let wait = backoff::next_wait(retry_headers.as_ref(), base, attempt, RETRY_CAP);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = core.shutdown.cancelled() => return Outcome::PushFailed,
        }
    }
    tracing::warn!(subscription = %sub.id, attempts, "push given up");
    Outcome::PushFailed
}

/// The `aes128gcm` body of `payload` for `sub`'s keys.
fn encrypt(payload: &[u8], sub: &push_subscription::Model) -> anyhow::Result<Vec<u8>> {
    let p256dh = URL_SAFE_NO_PAD.decode(&sub.p256dh)?;
    let auth = URL_SAFE_NO_PAD.decode(&sub.auth)?;
    if auth.len() != 16 {
        anyhow::bail!("auth secret is not 16 bytes");
    }
    let public = web_push_native::p256::PublicKey::from_sec1_bytes(&p256dh)?;
    let mut secret = web_push_native::Auth::default();
    secret.copy_from_slice(&auth);
    web_push_native::encrypt(payload.to_vec(), &public, &secret).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(data: serde_json::Value) -> Notification {
        Notification {
            id: "n1".into(),
            notification_type: "like".into(),
            title: "t".into(),
            message: "m".into(),
            data,
            priority: "urgent".into(),
            actor: None,
            is_read: false,
            created_at: Utc::now(),
            expires_at: None,
            user_id: "u".into(),
        }
    }

    #[test]
    fn priorities_map_to_urgency() {
        assert_eq!(urgency("low"), "low");
        assert_eq!(urgency("normal"), "normal");
        assert_eq!(urgency("high"), "high");
        assert_eq!(urgency("urgent"), "high");
    }

    #[test]
    fn large_notifications_are_trimmed_to_fit() {
        let small = payload(&notification(json!({ "k": 1 })));
        let parsed: serde_json::Value = serde_json::from_slice(&small).unwrap();
        assert_eq!(parsed["data"]["k"], 1);
        let big = payload(&notification(json!({ "k": "x".repeat(10_000) })));
        assert!(big.len() <= MAX_PLAINTEXT);
        let parsed: serde_json::Value = serde_json::from_slice(&big).unwrap();
        assert_eq!(parsed["truncated"], true);
        assert_eq!(parsed["id"], "n1");
    }
}
