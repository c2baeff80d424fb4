//! Background tasks of a node. Each is named, logs its start and stop, and ends when the
//! shutdown token is cancelled.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::domain::presence::PresenceEvent;
use crate::realtime::presence;
use crate::state::Core;

/// Starts every background task of this node.
pub fn spawn_all<A: Adapter>(
    io: SocketIo<A>,
    core: Arc<Core>,
    presence_events: UnboundedReceiver<PresenceEvent>,
) {
    tokio::spawn(presence::announce(io, core.clone(), presence_events));
    tokio::spawn(idle_sweeper(core.clone()));
    tokio::spawn(notification_purger(core));
}

/// How often idle users are looked for: a fifth of the timeout, between 20 ms and 1 s, so
/// `away` arrives close to the timeout whatever it is set to.
fn sweep_interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 5).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// Turns users with no client events for `IDLE_TIMEOUT_MS` away.
async fn idle_sweeper(core: Arc<Core>) {
    let timeout = core.config.idle_timeout();
    let mut tick = tokio::time::interval(sweep_interval(timeout));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(task = "idle_sweeper", ?timeout, "started");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = core.shutdown.cancelled() => break,
        }
        let Ok(timeout) = chrono::Duration::from_std(timeout) else {
            break;
        };
        match core.presence.store.sweep_idle(Utc::now() - timeout).await {
            Ok(users) => {
                for user in users {
                    presence::queue_status(&core, &user, crate::domain::presence::Status::Away);
                }
            }
            Err(e) => tracing::warn!(task = "idle_sweeper", error = ?e, "sweep failed"),
        }
    }
    tracing::info!(task = "idle_sweeper", "stopped");
}

/// Deletes expired notifications every `NOTIFICATION_PURGE_INTERVAL_MS`.
async fn notification_purger(core: Arc<Core>) {
    let period = Duration::from_millis(core.config.notification_purge_interval_ms.max(1000));
    let mut tick = tokio::time::interval(period);
    tracing::info!(task = "notification_purger", ?period, "started");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = core.shutdown.cancelled() => break,
        }
        match core.notifications.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                task = "notification_purger",
                purged = n,
                "expired notifications purged"
            ),
            Err(e) => tracing::warn!(task = "notification_purger", error = %e, "purge failed"),
        }
    }
    tracing::info!(task = "notification_purger", "stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_interval_is_bounded() {
        assert_eq!(
            sweep_interval(Duration::from_secs(300)),
            Duration::from_secs(1)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(500)),
            Duration::from_millis(100)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(10)),
            Duration::from_millis(20)
        );
    }
}
