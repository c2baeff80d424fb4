//! The presence pipeline's queue. A reconnect storm or a looping client must not delay everyone
//! else's presence, so changes are coalesced per user (the latest status and the latest activity
//! win) and the queue holds each user at most once: its length is bounded by a number of
//! distinct users, `PRESENCE_QUEUE_MAX`. Workers take users from its front; a user being
//! announced is held back until that worker is done, so one user's changes stay in order while
//! different users are announced concurrently.
//!
//! At the cap nothing that matters is lost: a status change (or the end of typing) for a user not
//! yet queued waits for room, which slows its sender down; an activity update for such a user is
//! dropped and counted (activity is superseded by the next one and stays readable through
//! `GET /presence/...`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::Notify;

use super::{PresenceEvent, StatusChange};
use crate::metrics::Metrics;

/// An activity to announce.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivityUpdate {
    pub activity: String,
    pub metadata: Value,
}

/// What waits to be told about one user: only the latest of each kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pending {
    /// The user has no socket left anywhere: end the typing state this node holds for them.
    pub typing_ended: bool,
    pub status: Option<StatusChange>,
    pub activity: Option<ActivityUpdate>,
    /// Whether the activity arrived after the status, so it is announced after it.
    pub activity_last: bool,
}

impl Pending {
    fn merge(&mut self, event: PresenceEvent) {
        match event {
            PresenceEvent::Status(change) => {
                self.status = Some(change);
                self.activity_last = false;
            }
            PresenceEvent::Activity {
                activity, metadata, ..
            } => {
                self.activity = Some(ActivityUpdate { activity, metadata });
                self.activity_last = true;
            }
            PresenceEvent::TypingEnded { .. } => self.typing_ended = true,
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Users with something to announce, whether queued or being announced right now.
    pending: HashMap<String, Pending>,
    /// Users ready to be taken: pending and not busy, each once.
    ready: VecDeque<String>,
    /// Users a worker is announcing.
    busy: HashSet<String>,
    /// Shutdown: senders stop waiting, workers stop taking.
    closed: bool,
    dropped: u64,
}

/// The bounded, coalescing presence queue shared by every sender and worker of a node.
pub struct PresenceQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    /// Wakes a worker when a user becomes ready.
    work: Notify,
    /// Wakes senders waiting at the cap when a user leaves the queue.
    space: Notify,
    metrics: Metrics,
}

impl PresenceQueue {
    pub fn new(capacity: usize, metrics: Metrics) -> Self {
        Self {
            inner: Mutex::default(),
            capacity: capacity.max(1),
            work: Notify::new(),
            space: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Users waiting to be announced (the `switchboard_presence_queue_depth` gauge).
    pub fn depth(&self) -> usize {
        self.lock().pending.len()
    }

    /// Activity updates dropped at the cap so far.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Queues `event`, merging it into what already waits for its user. Waits for room only
    /// when the queue is full and the event is a status change or the end of typing for a user
    /// not queued yet.
    pub async fn push(&self, event: PresenceEvent) {
        let user = match &event {
            PresenceEvent::Status(change) => change.user_id.clone(),
            PresenceEvent::Activity { user_id, .. } | PresenceEvent::TypingEnded { user_id } => {
                user_id.clone()
            }
        };
        let mut event = Some(event);
        loop {
            let space = self.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.closed {
                    return;
                }
                let queued = inner.pending.contains_key(&user);
                if queued || inner.pending.len() < self.capacity {
                    if let Some(event) = event.take() {
                        inner.pending.entry(user.clone()).or_default().merge(event);
                    }
                    if !queued && !inner.busy.contains(&user) {
                        inner.ready.push_back(user);
                        self.work.notify_one();
                    }
                    self.metrics.presence_queue_depth(inner.pending.len());
                    return;
                }
                if matches!(event, Some(PresenceEvent::Activity { .. })) {
                    inner.dropped += 1;
                    let dropped = inner.dropped;
                    drop(inner);
                    self.metrics.presence_activity_dropped();
                    if dropped == 1 || dropped.is_multiple_of(1000) {
                        tracing::warn!(
                            dropped,
                            capacity = self.capacity,
                            "presence queue full: activity updates dropped"
                        );
                    }
                    return;
                }
            }
            space.await;
        }
    }

    /// Takes the next ready user and what waits for them; `None` once closed. The caller must
    /// call [`PresenceQueue::done`] when it has announced them.
    pub async fn next(&self) -> Option<(String, Pending)> {
        loop {
            let work = self.work.notified();
            tokio::pin!(work);
            work.as_mut().enable();
            {
                let mut inner = self.lock();
                if inner.closed {
                    return None;
                }
                if let Some(user) = inner.ready.pop_front() {
                    let pending = inner.pending.remove(&user).unwrap_or_default();
                    inner.busy.insert(user.clone());
                    self.metrics.presence_queue_depth(inner.pending.len());
                    drop(inner);
                    self.space.notify_waiters();
                    return Some((user, pending));
                }
            }
            work.await;
        }
    }

    /// A worker finished announcing `user`: what arrived for them meanwhile becomes ready.
    pub fn done(&self, user: &str) {
        let mut inner = self.lock();
        inner.busy.remove(user);
        if inner.pending.contains_key(user) {
            inner.ready.push_back(user.to_owned());
            self.work.notify_one();
        }
    }

    /// Shutdown: waiting senders and workers return.
    pub fn close(&self) {
        self.lock().closed = true;
        self.space.notify_waiters();
        self.work.notify_waiters();
    }
}
