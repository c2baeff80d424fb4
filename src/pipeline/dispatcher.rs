//! The dispatcher: the one place a node delivers events, one task consuming one ordered line
//! (events from the appender, publishers and the bus, plus commands). Journaled events are
//! delivered strictly in id order — duplicates dropped, early ones held until the gap is filled
//! (by the bus within `PIPELINE_GAP_WAIT_MS`, else from the journal) — and the journal head is
//! checked every `PIPELINE_HEAD_CHECK_MS` so a lost last event is not left waiting for the next
//! one. Because every delivery and every [`Input::InOrder`] command runs in this one loop, a
//! receiver registered by a command misses nothing delivered after it and gets nothing twice.
//!
//! Delivering one event: membership effects first (members added to a room join it on this
//! node), then Socket.IO (`local()` emits: every node delivers to its own sockets; journaled
//! events carry the cursor as a trailing argument), SSE/poll sessions, resuming receivers'
//! buffers, and last the removals (removed members leave after being told).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use socketioxide::adapter::Adapter;
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::Sid;
use socketioxide::{BroadcastError, SocketIo};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::model::Event;
use super::{Done, Input, journal};
use crate::realtime::{NAMESPACE, rooms};
use crate::state::Core;

/// The fields of a `chat:room_updated` payload the membership effects need.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomUpdate {
    room: RoomRef,
    change: String,
    #[serde(default)]
    user_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomRef {
    id: String,
    #[serde(default)]
    created_by: Option<String>,
}

/// Who joins and who leaves a room with this event, if it is a membership change.
fn membership(event: &Event) -> Option<(String, Vec<String>, bool)> {
    if &*event.name != "chat:room_updated" {
        return None;
    }
    let update: RoomUpdate = serde_json::from_str(event.payload.get()).ok()?;
    match update.change.as_str() {
        "created" | "member_added" => {
            let mut users = update.user_ids;
            if update.change == "created"
                && let Some(creator) = update.room.created_by
                && !users.contains(&creator)
            {
                users.push(creator);
            }
            Some((update.room.id, users, true))
        }
        "member_removed" => Some((update.room.id, update.user_ids, false)),
        _ => None,
    }
}

/// Tells a publisher its event was delivered here.
fn signal(done: Option<Done>) {
    if let Some(done) = done {
        let _ = done.send(());
    }
}

struct Dispatcher<A: Adapter> {
    io: SocketIo<A>,
    core: Arc<Core>,
    /// The highest journal id delivered.
    last: u64,
    /// Journaled events that arrived ahead of a gap (with their publishers' signals).
    pending: BTreeMap<u64, (Event, Option<Done>)>,
    /// When the current gap is read from the journal.
    gap_deadline: Option<Instant>,
    gap_wait: Duration,
}

/// Runs this node's dispatcher until shutdown. `last` starts at the journal head: what was
/// journaled before this node started is history, found by replay.
pub(crate) async fn run<A: Adapter>(
    io: SocketIo<A>,
    core: Arc<Core>,
    mut input: mpsc::Receiver<Input>,
) {
    let last = loop {
        match journal::head(&core.db).await {
            Ok((last, _)) => break last,
            Err(e) => {
                tracing::warn!(error = %e, "reading the journal head failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = core.shutdown.cancelled() => return,
                }
            }
        }
    };
    let head_every = Duration::from_millis(core.config.pipeline_head_check_ms);
    let gap_wait = Duration::from_millis(core.config.pipeline_gap_wait_ms);
    let mut d = Dispatcher {
        io,
        core: core.clone(),
        last,
        pending: BTreeMap::new(),
        gap_deadline: None,
        gap_wait,
    };
    let mut head_tick = tokio::time::interval_at(Instant::now() + head_every, head_every);
    head_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(task = "event_dispatcher", last, "started");
    loop {
        let gap = d.gap_deadline;
        tokio::select! {
            biased;
            next = input.recv() => match next {
                Some(Input::Event(event, done)) => d.accept(event, done).await,
                Some(Input::InOrder { min, run }) => {
                    if min > d.last {
                        d.fill_to_head().await;
                    }
                    run(d.last);
                }
                Some(Input::HeadCheck) => d.fill_to_head().await,
                None => break,
            },
            () = async { match gap { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                d.fill_gap().await;
            }
            _ = head_tick.tick() => d.fill_to_head().await,
            () = core.shutdown.cancelled() => break,
        }
    }
    tracing::info!(task = "event_dispatcher", "stopped");
}

impl<A: Adapter> Dispatcher<A> {
    async fn accept(&mut self, event: Event, done: Option<Done>) {
        let Some(id) = event.id else {
            self.deliver(&event).await;
            signal(done);
            return;
        };
        if id <= self.last {
            signal(done);
            return;
        }
        if id == self.last + 1 {
            self.deliver(&event).await;
            self.last = id;
            signal(done);
            self.drain_pending().await;
            return;
        }
        self.pending.insert(id, (event, done));
        if self.gap_deadline.is_none() {
            self.gap_deadline = Some(Instant::now() + self.gap_wait);
        }
    }

    /// Delivers the held events that follow `last` without a gap; re-arms the gap timer when
    /// a gap remains.
    async fn drain_pending(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            let id = *entry.key();
            if id <= self.last {
                signal(entry.remove().1);
            } else if id == self.last + 1 {
                let (event, done) = entry.remove();
                self.deliver(&event).await;
                self.last = id;
                signal(done);
            } else {
                break;
            }
        }
        self.gap_deadline = if self.pending.is_empty() {
            None
        } else {
            Some(Instant::now() + self.gap_wait)
        };
    }

    /// The gap before the first held event was not filled by the bus in time: read it.
    async fn fill_gap(&mut self) {
        let Some(first) = self.pending.keys().next().copied() else {
            self.gap_deadline = None;
            return;
        };
        // A held id is committed, and so is every id below it (see `journal::append`).
        self.fill_to(first - 1).await;
    }

    async fn fill_to_head(&mut self) {
        match journal::head(&self.core.db).await {
            Ok((head, _)) if head > self.last => self.fill_to(head).await,
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "journal head check failed"),
        }
    }

    /// Delivers the journal's events in `(last, through]` (purged ids are skipped), then the
    /// held ones that follow.
    async fn fill_to(&mut self, through: u64) {
        if through <= self.last {
            self.drain_pending().await;
            return;
        }
        match journal::range(&self.core.db, self.last, through).await {
            Ok(events) => {
                if !events.is_empty() {
                    tracing::debug!(
                        from = self.last + 1,
                        through,
                        found = events.len(),
                        "events filled from the journal"
                    );
                }
                for event in events {
                    // A held live copy of the same id is the same event; drop it.
                    let done = event
                        .id
                        .and_then(|id| self.pending.remove(&id))
                        .and_then(|p| p.1);
                    self.deliver(&event).await;
                    signal(done);
                }
                self.last = through;
                self.drain_pending().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "filling events from the journal failed; retrying");
                self.gap_deadline = Some(Instant::now() + self.gap_wait);
            }
        }
    }

    async fn deliver(&self, event: &Event) {
        let effect = membership(event);
        let ns = self.io.of(NAMESPACE);
        if let (Some((room, users, true)), Some(ns)) = (&effect, &ns) {
            self.move_members(ns, room, users, true).await;
        }
        if let Some(ns) = &ns {
            self.emit(ns, event).await;
        }
        self.core.sessions.deliver(event);
        self.core.pipeline.hold_event(event);
        if let (Some((room, users, false)), Some(ns)) = (&effect, &ns) {
            self.move_members(ns, room, users, false).await;
        }
    }

    /// This node's sockets, sessions and held receivers of `users` join (or leave) the room.
    async fn move_members(
        &self,
        ns: &BroadcastOperators<A>,
        room_id: &str,
        users: &[String],
        join: bool,
    ) {
        if users.is_empty() {
            return;
        }
        // Membership changes change the room's online count.
        self.core.room_counts.mark([room_id.to_owned()]);
        let chat = rooms::chat(room_id);
        let targets: Vec<String> = users.iter().map(|u| rooms::user(u)).collect();
        let ops = ns.clone().to(targets).local();
        let result = if join {
            ops.join(chat.clone()).await
        } else {
            // Former members stop watching the room's presence too.
            ops.leave(vec![chat.clone(), rooms::presence_watch(room_id)])
                .await
        };
        if let Err(e) = result {
            tracing::warn!(room = room_id, join, error = ?e, "moving local sockets failed");
        }
        for user in users {
            if join {
                self.core.sessions.join(user, &chat);
            } else {
                self.core.sessions.leave(user, &chat);
            }
            self.core.pipeline.hold_membership(user, &chat, join);
        }
    }

    /// This node's Socket.IO delivery. The origin socket (a socket id among the exceptions)
    /// is skipped by broadcasting from it.
    async fn emit(&self, ns: &BroadcastOperators<A>, event: &Event) {
        if event.targets.is_empty() {
            // No rooms would mean "every socket": never what an event means.
            return;
        }
        let mut origin = None;
        let mut except_rooms = Vec::new();
        for e in &event.except {
            match e.parse::<Sid>() {
                Ok(sid) if origin.is_none() => origin = ns.get_socket(sid),
                _ => except_rooms.push(e.clone()),
            }
        }
        let mut ops = match &origin {
            Some(socket) => socket.to(event.targets.clone()).local(),
            None => ns.clone().to(event.targets.clone()).local(),
        };
        if !except_rooms.is_empty() {
            ops = ops.except(except_rooms);
        }
        let result = match event.id {
            Some(id) => {
                let cursor = self.core.pipeline.cursor(id).to_string();
                ops.clone()
                    .emit(&*event.name, &(&*event.payload, cursor))
                    .await
            }
            None => ops.clone().emit(&*event.name, &*event.payload).await,
        };
        match result {
            Ok(()) => {}
            Err(BroadcastError::Socket(errors)) => {
                if crate::realtime::slow::any_full(&errors) {
                    crate::realtime::slow::after_full_emit(ops, &self.core);
                }
            }
            Err(e) => tracing::warn!(event = %event.name, error = %e, "local delivery failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room_updated(payload: serde_json::Value) -> Event {
        Event::new("chat:room_updated", &payload, vec![]).unwrap()
    }

    #[test]
    fn membership_effects_of_room_updates() {
        let created = room_updated(serde_json::json!({
            "room": { "id": "r", "createdBy": "a" }, "change": "created", "userIds": ["b"]
        }));
        assert_eq!(
            membership(&created),
            Some(("r".into(), vec!["b".into(), "a".into()], true))
        );
        let removed = room_updated(serde_json::json!({
            "room": { "id": "r" }, "change": "member_removed", "userIds": ["b"]
        }));
        assert_eq!(
            membership(&removed),
            Some(("r".into(), vec!["b".into()], false))
        );
        let renamed = room_updated(serde_json::json!({
            "room": { "id": "r" }, "change": "renamed", "userIds": []
        }));
        assert_eq!(membership(&renamed), None);
        let other = Event::new("chat:new_message", &1, vec![]).unwrap();
        assert_eq!(membership(&other), None);
    }
}
