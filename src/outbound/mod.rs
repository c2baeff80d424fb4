//! Delivery beyond live sockets: Web Push to devices with no connection, and the notification
//! webhook through which the app sends email (or any channel it handles itself). Both are fed
//! by the notification domain right after notifications are created, and both stay off the
//! caller's path: pushes go through a bounded in-memory queue to a worker (overflow is dropped
//! and counted), webhook deliveries are rows of a persisted outbox that a worker drains, so a
//! slow or failing receiver never delays `notification:new` or the service API's answer.

pub mod backoff;
pub mod push;
pub mod vapid;
pub mod webhook;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Config;
use crate::domain::notifications::Created;

pub use push::PushQueue;
pub use vapid::Vapid;
pub use webhook::Webhook;

/// The channels that are configured; each is `None` when off.
pub struct Outbound {
    pub push: Option<PushQueue>,
    pub webhook: Option<Webhook>,
    /// What this node sent, for tests and logs; Prometheus gets the same counts.
    pub stats: Stats,
}

impl Outbound {
    /// Push when a VAPID key is known (see [`Vapid::from_config`]), the webhook when
    /// `NOTIFICATION_WEBHOOK_URL` is set.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let push = Vapid::from_config(config)?.map(|vapid| PushQueue::new(vapid, config));
        let webhook = Webhook::from_config(config)?;
        if let Some(webhook) = &webhook {
            tracing::info!(url = %webhook.url(), "notification webhook on");
        }
        Ok(Self {
            push,
            webhook,
            stats: Stats::default(),
        })
    }

    /// Neither channel: for services built without a configuration.
    pub fn off() -> Self {
        Self {
            push: None,
            webhook: None,
            stats: Stats::default(),
        }
    }

    /// Hands the created notifications whose recipients want push to the push queue, and wakes
    /// the webhook worker (their outbox rows were written with them). Never waits.
    pub fn created(&self, created: &[Created]) {
        if let Some(push) = &self.push {
            for c in created.iter().filter(|c| c.channels.push) {
                if push.offer(c.notification.clone()) {
                    self.stats.record(Outcome::PushQueued);
                } else {
                    self.stats.record(Outcome::PushDropped);
                }
            }
        }
        if let Some(webhook) = &self.webhook
            && created.iter().any(|c| c.channels.email)
        {
            webhook.wake();
        }
    }
}

/// What happened to one push or one webhook delivery: the label of its counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A notification entered the push queue.
    PushQueued,
    /// The push queue was full: that notification is not pushed.
    PushDropped,
    /// The recipient was connected and `PUSH_ONLY_WHEN_OFFLINE` is on.
    PushSkippedOnline,
    /// A push service accepted a push.
    PushSent,
    /// A push service asked for a retry (429/5xx) or did not answer.
    PushRetried,
    /// A subscription the push service no longer knows (404/410) was removed.
    PushGone,
    /// A push was given up: refused, or out of attempts.
    PushFailed,
    /// The webhook answered 2xx.
    WebhookDelivered,
    /// The webhook failed one attempt; another is scheduled.
    WebhookRetried,
    /// A webhook delivery ran out of attempts and is marked failed.
    WebhookFailed,
}

impl Outcome {
    fn labels(self) -> (&'static str, &'static str) {
        match self {
            Self::PushQueued => ("push", "queued"),
            Self::PushDropped => ("push", "dropped"),
            Self::PushSkippedOnline => ("push", "skipped_online"),
            Self::PushSent => ("push", "sent"),
            Self::PushRetried => ("push", "retried"),
            Self::PushGone => ("push", "gone"),
            Self::PushFailed => ("push", "failed"),
            Self::WebhookDelivered => ("webhook", "delivered"),
            Self::WebhookRetried => ("webhook", "retried"),
            Self::WebhookFailed => ("webhook", "failed"),
        }
    }
}

/// Counts per [`Outcome`] on this node (the `metrics` recorder is process-wide, so tests that
/// run several servers read these instead), with a signal on every change so a test can await
/// an outcome instead of sleeping.
pub struct Stats {
    counts: [AtomicU64; 10],
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            counts: Default::default(),
            changes: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Stats {
    fn slot(outcome: Outcome) -> usize {
        outcome as usize
    }

    /// Counts one outcome here and in `switchboard_outbound_total{channel, outcome}`.
    pub fn record(&self, outcome: Outcome) {
        self.counts[Self::slot(outcome)].fetch_add(1, Ordering::Relaxed);
        let (channel, label) = outcome.labels();
        metrics::counter!("switchboard_outbound_total", "channel" => channel, "outcome" => label)
            .increment(1);
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Resolves once `condition` holds (checked now and after every recorded outcome).
    pub async fn wait_until(&self, condition: impl Fn(&Self) -> bool) {
        let mut changes = self.changes.subscribe();
        while !condition(self) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// How often `outcome` happened on this node.
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.counts[Self::slot(outcome)].load(Ordering::Relaxed)
    }
}

/// The HTTP client of both channels: rustls, a per-request timeout, no redirects (a push
/// service or webhook that redirects is misconfigured, and following would resend the body).
pub fn http_client(config: &Config) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(config.outbound_timeout())
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
        .build()?)
}
