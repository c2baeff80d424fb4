//! Connection slots (the per-user socket limit) as this node holds them. A slot taken in the
//! handshake is given back on every path: by `on_disconnect`, or by the [`SlotGuard`] being
//! dropped when the handshake is cancelled or the socket goes away without a disconnect. The
//! [`SlotRegistry`] lists the sockets this node believes live, so a periodic reconciliation can
//! free slots whose release failed (Redis down) and register sockets accepted during an outage.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dashmap::DashMap;

use crate::state::Core;

/// This node's sockets that hold (or should hold) a slot: user id → socket ids.
#[derive(Default)]
pub struct SlotRegistry {
    live: DashMap<String, HashSet<String>>,
}

impl SlotRegistry {
    fn add(&self, user: &str, sid: &str) {
        self.live
            .entry(user.to_owned())
            .or_default()
            .insert(sid.to_owned());
    }

    fn remove(&self, user: &str, sid: &str) {
        if let Some(mut sids) = self.live.get_mut(user) {
            sids.remove(sid);
        }
        self.live.remove_if(user, |_, sids| sids.is_empty());
    }

    /// The user's sockets on this node: the connection limit while Redis cannot count them.
    pub fn count(&self, user: &str) -> usize {
        self.live.get(user).map_or(0, |sids| sids.len())
    }

    /// Every live socket of this node, by user.
    pub fn snapshot(&self) -> HashMap<String, HashSet<String>> {
        self.live
            .iter()
            .map(|entry| (entry.key().clone(), entry.value().clone()))
            .collect()
    }
}

/// The slot of one socket, taken from the moment its reservation is attempted. Dropped while
/// still armed (a cancelled handshake, a socket that never reached `on_disconnect`), it releases
/// the slot in the background.
pub struct SlotGuard {
    core: Arc<Core>,
    user: String,
    sid: String,
    armed: AtomicBool,
}

impl SlotGuard {
    /// Arms the guard before the slot is reserved, so a handshake cancelled mid-reservation
    /// still gives it back.
    pub fn new(core: Arc<Core>, user: &str, sid: &str) -> Self {
        Self {
            core,
            user: user.to_owned(),
            sid: sid.to_owned(),
            armed: AtomicBool::new(true),
        }
    }

    /// Nothing was reserved (the limit refused it): nothing to give back.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
        self.core.slots.remove(&self.user, &self.sid);
    }

    /// The socket is accepted: list it among the node's live sockets.
    pub fn accept(&self) {
        self.core.slots.add(&self.user, &self.sid);
    }

    /// Gives the slot back now; returns how many sockets the user still holds anywhere. A
    /// failure is left to the reconciliation, which no longer counts this socket as live.
    pub async fn release(&self, offline_at: chrono::DateTime<chrono::Utc>) -> anyhow::Result<u32> {
        self.armed.store(false, Ordering::SeqCst);
        self.core.slots.remove(&self.user, &self.sid);
        self.core
            .presence
            .store
            .release_connection(&self.user, &self.sid, offline_at)
            .await
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if !self.armed.swap(false, Ordering::SeqCst) {
            return;
        }
        self.core.slots.remove(&self.user, &self.sid);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // the runtime is gone: the process is exiting, the node's slots with it
        };
        let core = self.core.clone();
        let user = std::mem::take(&mut self.user);
        let sid = std::mem::take(&mut self.sid);
        tracing::debug!(%user, %sid, "slot released by its guard");
        runtime.spawn(async move {
            let offline_at = chrono::Utc::now() + super::grace(&core);
            if let Err(e) = core
                .presence
                .store
                .release_connection(&user, &sid, offline_at)
                .await
            {
                tracing::warn!(%user, error = ?e, "releasing a slot failed; left to reconciliation");
            }
        });
    }
}

/// Makes this node's slots in the presence store match its live sockets; users whose sockets
/// had to be registered again are told to the presence pipeline as coming online.
pub async fn reconcile(core: &Core) {
    let offline_at = chrono::Utc::now() + super::grace(core);
    match core
        .presence
        .store
        .reconcile_slots(&|| core.slots.snapshot(), offline_at)
        .await
    {
        Ok(outcome) => {
            if outcome.released > 0 || !outcome.registered.is_empty() {
                tracing::info!(
                    released = outcome.released,
                    registered = outcome.registered.len(),
                    "connection slots reconciled"
                );
            }
            for user in outcome.registered {
                super::presence::socket_ready(core, &user).await;
            }
        }
        Err(e) => tracing::debug!(error = ?e, "slot reconciliation failed"),
    }
}
