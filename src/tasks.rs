//! Background tasks of a node. Each is named, logs its start and stop, and ends when the
//! shutdown token is cancelled.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;

use crate::realtime::emit::Emitter;
use crate::realtime::presence;
use crate::state::Core;

/// Starts every background task of this node.
pub fn spawn_all<A: Adapter>(io: SocketIo<A>, core: Arc<Core>) {
    for worker in 0..core.config.presence_workers.max(1) {
        tokio::spawn(presence::announce(io.clone(), core.clone(), worker));
    }
    tokio::spawn(crate::realtime::room_presence::count_flusher(
        io.clone(),
        core.clone(),
    ));
    tokio::spawn(presence_reaper(io.clone(), core.clone()));
    tokio::spawn(typing_sweeper(io, core.clone()));
    tokio::spawn(idle_sweeper(core.clone()));
    tokio::spawn(crate::http::sweep_pollers(core.clone()));
    tokio::spawn(database_prober(core.clone()));
    if core.redis.is_some() {
        tokio::spawn(slot_reconciler(core.clone()));
    }
    tokio::spawn(event_purger(core.clone()));
    tokio::spawn(crate::outbound::push::run(core.clone()));
    tokio::spawn(crate::outbound::webhook::run(core.clone()));
    tokio::spawn(crate::heap::trimmer(core.clone()));
    tokio::spawn(crate::db::checkpointer(core.clone()));
    tokio::spawn(crate::domain::chat::search_index::indexer(core.clone()));
    tokio::spawn(notification_purger(core));
}

/// Journal entries deleted per transaction, so a purge never holds the write path for long.
const EVENT_PURGE_BATCH: u64 = 1_000;

/// Deletes journal entries past their kind's retention (`EVENT_RETENTION_*_MS`) every
/// `EVENT_PURGE_INTERVAL_MS`, in bounded batches; a cursor older than what went is answered
/// with a `reset` of that kind.
async fn event_purger(core: Arc<Core>) {
    use crate::pipeline::{Kind, journal};
    let period = Duration::from_millis(core.config.event_purge_interval_ms);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(task = "event_purger", ?period, "started");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = core.shutdown.cancelled() => break,
        }
        for kind in Kind::ALL {
            let retention = match kind {
                Kind::Chat => core.config.event_retention_chat_ms,
                Kind::Notification => core.config.event_retention_notifications_ms,
                Kind::Feed => core.config.event_retention_feed_ms,
            };
            let before =
                Utc::now().timestamp_millis() - i64::try_from(retention).unwrap_or(i64::MAX);
            loop {
                if core.shutdown.is_cancelled() {
                    break;
                }
                let purged = async {
                    let tx = core.writes.begin().await?;
                    let n = journal::purge(&*tx, kind, before, EVENT_PURGE_BATCH).await?;
                    tx.commit().await?;
                    Ok::<u64, sea_orm::DbErr>(n)
                }
                .await;
                match purged {
                    Ok(n) if n < EVENT_PURGE_BATCH => {
                        if n > 0 {
                            tracing::debug!(
                                task = "event_purger",
                                kind = kind.as_str(),
                                purged = n,
                                "journal purged"
                            );
                        }
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(task = "event_purger", kind = kind.as_str(), error = %e, "purge failed");
                        break;
                    }
                }
            }
        }
    }
    tracing::info!(task = "event_purger", "stopped");
}

/// Probes the database every `DB_PROBE_INTERVAL_MS` (each probe bounded by
/// `DB_HEALTH_TIMEOUT_MS`, timed on the prober's own thread: see [`crate::db_status::Prober`]),
/// so calls fail fast while it is down and resume once it is back.
async fn database_prober(core: Arc<Core>) {
    let period = core.config.db_probe_interval();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(task = "database_prober", ?period, "started");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = core.shutdown.cancelled() => break,
        }
        let up = core.db_probe.probe().await;
        core.db_status.record(up);
    }
    tracing::info!(task = "database_prober", "stopped");
}

/// Reconciles this node's connection slots in Redis with its live sockets every
/// `SLOT_RECONCILE_INTERVAL_MS`, and at once whenever Redis comes back.
async fn slot_reconciler(core: Arc<Core>) {
    use fred::interfaces::EventInterface;
    let period = core.config.slot_reconcile_interval();
    let mut reconnects = match &core.redis {
        Some(client) => client.reconnect_rx(),
        None => return,
    };
    // A new node has no slots to reconcile: the first check is one period in.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(task = "slot_reconciler", ?period, "started");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = reconnects.recv() => {
                if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    break;
                }
            }
            () = core.shutdown.cancelled() => break,
        }
        crate::realtime::slots::reconcile(&core).await;
    }
    tracing::info!(task = "slot_reconciler", "stopped");
}

/// How often idle users are looked for: a fifth of the timeout, between 20 ms and 1 s, so
/// `away` arrives close to the timeout whatever it is set to.
fn sweep_interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 5).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

/// How often grace periods are checked: a fifth of the grace period, between 20 ms and 500 ms.
fn reap_interval(grace: Duration) -> Duration {
    (grace / 5).clamp(Duration::from_millis(20), Duration::from_millis(500))
}

/// Ends grace periods (users whose last socket went away turn offline), and keeps this node's
/// cluster membership alive: a heartbeat every third of `NODE_TTL_MS`, cleaning up after nodes
/// whose heartbeat expired.
async fn presence_reaper<A: Adapter>(io: SocketIo<A>, core: Arc<Core>) {
    let grace = core.config.presence_grace();
    let maintain_every = Duration::from_millis((core.config.node_ttl_ms / 3).max(50));
    let mut tick = tokio::time::interval(reap_interval(grace));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_maintained: Option<tokio::time::Instant> = None;
    tracing::info!(task = "presence_reaper", ?grace, "started");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = core.shutdown.cancelled() => break,
        }
        let now = Utc::now();
        if last_maintained.is_none_or(|at| at.elapsed() >= maintain_every) {
            last_maintained = Some(tokio::time::Instant::now());
            let offline_at = now + crate::realtime::grace(&core);
            match core.presence.store.maintain(now, offline_at).await {
                Ok(true) => presence::reregister_local(&io, &core).await,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(task = "presence_reaper", error = ?e, "cluster upkeep failed")
                }
            }
        }
        match core.presence.store.take_due_offline(now).await {
            Ok(users) if users.is_empty() => {}
            Ok(users) => presence::went_offline(&core, users).await,
            Err(e) => tracing::warn!(task = "presence_reaper", error = ?e, "grace check failed"),
        }
    }
    tracing::info!(task = "presence_reaper", "stopped");
}

/// Sends the automatic `isTyping: false` of every typing signal not refreshed for
/// `TYPING_TIMEOUT_MS`: one task sleeping until the earliest deadline, whatever the number of
/// signals.
async fn typing_sweeper<A: Adapter>(io: SocketIo<A>, core: Arc<Core>) {
    tracing::info!(task = "typing_sweeper", "started");
    loop {
        let next = core.typing.next_deadline();
        let wait = async {
            match next {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wait => {}
            () = core.typing.earlier_deadline() => continue,
            () = core.shutdown.cancelled() => break,
        }
        let emitter = Emitter::server(&io, &core);
        for (user_id, room_id) in core.typing.take_due(std::time::Instant::now()) {
            emitter.typing(&room_id, &user_id, false).await;
        }
    }
    tracing::info!(task = "typing_sweeper", "stopped");
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
                    presence::queue_status(&core, &user, crate::domain::presence::Status::Away)
                        .await;
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
