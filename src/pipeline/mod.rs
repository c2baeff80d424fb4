//! The event pipeline: every server→client event is built once as an [`Event`], journaled when
//! it reflects persisted state (so a client that was away can resume from its cursor), ordered
//! by its journal id, and delivered by one dispatcher per node to every transport — Socket.IO
//! rooms, SSE streams and long-poll sessions — so no transport keeps its own emit table.
//!
//! The parts: [`Pipeline`] (the handle in `Core` everyone publishes through), the appender
//! (`appender`: group commit into the journal), the bus (`bus`: the other nodes, over one
//! Redis pub/sub channel), the dispatcher (`dispatcher`: ordering, gap filling, delivery) and
//! the journal (`journal`: storage and replay). How they fit is in `docs/delivery.md`.

mod appender;
pub mod bus;
pub mod dispatcher;
pub mod journal;
pub mod model;
pub mod sessions;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

pub use journal::{FeedMode, Replay, ReplayRequest};
pub use model::{Cursor, Event, FeedScope, Kind};

use crate::error::AppError;

/// Journaled events waiting for the appender; a full queue makes publishers wait.
const APPEND_QUEUE: usize = 8_192;
/// Events and commands waiting for the dispatcher.
const DISPATCH_QUEUE: usize = 65_536;
/// Most events a resuming receiver's buffer holds before it is given up (it reconnects and
/// resumes again from its cursor).
pub const HOLD_MAX: usize = 10_000;

/// Fired by the dispatcher once it delivered an event on this node (or knew it already had).
pub(crate) type Done = oneshot::Sender<()>;

/// What the appender answers: the ids, and a signal fired once this node delivered them.
type Appended = Result<(Vec<u64>, oneshot::Receiver<()>), String>;

/// What the appender is asked: store these events in one transaction and answer their ids.
struct Append {
    events: Vec<Event>,
    reply: oneshot::Sender<Appended>,
}

/// Longest a publisher waits for this node's delivery of its event (a gap being filled).
const DELIVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits (bounded) until this node delivered: a REST answer or an ack then comes after the
/// event reached this node's receivers, as when emits were synchronous.
async fn delivered(done: oneshot::Receiver<()>) {
    let _ = tokio::time::timeout(DELIVERY_WAIT, done).await;
}

/// What the dispatcher consumes, in one totally ordered line.
pub(crate) enum Input {
    /// An event to deliver (from this node's appender or publishers, or from the bus), with
    /// the signal its publisher waits on.
    Event(Event, Option<Done>),
    /// Run a closure between two events once everything up to `min` is delivered (or the
    /// journal has nothing more).
    InOrder {
        min: u64,
        run: Box<dyn FnOnce(u64) + Send>,
    },
    /// Compare with the journal head now (the bus subscriber came back).
    HeadCheck,
}

/// A receiver that is resuming: the events that reach its rooms are kept for it until it is
/// handed over to the live stream (see `realtime::connection`).
pub struct Held {
    pub user_id: String,
    /// Its Socket.IO-style rooms (and its own socket id, so exceptions apply).
    pub rooms: HashSet<String>,
    /// What reached it since it registered, in delivery order.
    pub events: Vec<Event>,
    /// Set when more than [`HOLD_MAX`] arrived: some are lost, it must resume again.
    pub overflowed: bool,
}

/// The held receivers, by id and by room, so matching an event costs its targets, not the
/// number of receivers resuming (a reconnect avalanche holds thousands at once).
#[derive(Default)]
struct HeldSet {
    by_id: HashMap<String, Held>,
    by_room: HashMap<String, HashSet<String>>,
}

impl HeldSet {
    fn index(&mut self, id: &str, room: &str) {
        self.by_room
            .entry(room.to_owned())
            .or_default()
            .insert(id.to_owned());
    }

    fn unindex(&mut self, id: &str, room: &str) {
        if let Some(ids) = self.by_room.get_mut(room) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_room.remove(room);
            }
        }
    }

    fn remove(&mut self, id: &str) -> Option<Held> {
        let held = self.by_id.remove(id)?;
        for room in &held.rooms {
            self.unindex(id, room);
        }
        Some(held)
    }
}

/// The receiving ends, taken once by the tasks that consume them.
struct Parts {
    appends: mpsc::Receiver<Append>,
    input: mpsc::Receiver<Input>,
}

/// This node's handle on the pipeline.
pub struct Pipeline {
    epoch: String,
    /// Tells this node's frames on the bus from the others'.
    node_id: String,
    appends: Mutex<Option<mpsc::Sender<Append>>>,
    input: mpsc::Sender<Input>,
    parts: Mutex<Option<Parts>>,
    bus: Option<bus::Publisher>,
    /// Receivers being handed over, with what reached them meanwhile.
    held: Mutex<HeldSet>,
    held_count: AtomicUsize,
    /// Set when the appender has stored and handed on everything it accepted.
    drained: tokio::sync::Notify,
    appender_done: std::sync::atomic::AtomicBool,
}

impl Pipeline {
    /// A pipeline over the database with `epoch` (read from the journal at start); with a
    /// publisher, events also go to the other nodes.
    pub fn new(epoch: String, node_id: String, bus: Option<bus::Publisher>) -> Self {
        let (append_tx, appends) = mpsc::channel(APPEND_QUEUE);
        let (input_tx, input) = mpsc::channel(DISPATCH_QUEUE);
        Self {
            epoch,
            node_id,
            appends: Mutex::new(Some(append_tx)),
            input: input_tx,
            parts: Mutex::new(Some(Parts { appends, input })),
            bus,
            held: Mutex::new(HeldSet::default()),
            held_count: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
            appender_done: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The database's epoch: the part of every cursor that tells this journal from another.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// This node's id on the bus.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The cursor of journal id `id`.
    pub fn cursor(&self, id: u64) -> Cursor {
        Cursor {
            epoch: self.epoch.clone(),
            id,
        }
    }

    fn appender(&self) -> Option<mpsc::Sender<Append>> {
        self.appends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Journals (when `ev.kind` is `Some`) and distributes; returns the cursor of a journaled
    /// event once it is committed and handed to the bus. Err only when the journal write
    /// failed (then nobody received it).
    pub async fn publish(&self, ev: Event) -> Result<Option<Cursor>, AppError> {
        if ev.kind.is_none() {
            self.publish_ephemeral(ev).await;
            return Ok(None);
        }
        let ids = self.append(vec![ev]).await?;
        Ok(ids.first().map(|id| self.cursor(*id)))
    }

    /// Many at once: the journaled ones in one group commit, in order; the ephemeral ones after.
    pub async fn publish_all(&self, evs: Vec<Event>) -> Result<(), AppError> {
        let (journaled, ephemeral): (Vec<Event>, Vec<Event>) =
            evs.into_iter().partition(|e| e.kind.is_some());
        if !journaled.is_empty() {
            self.append(journaled).await?;
        }
        for ev in ephemeral {
            self.publish_ephemeral(ev).await;
        }
        Ok(())
    }

    /// Delivers an event journaled by its writer's own transaction (a new message, see
    /// [`crate::write_path`]), like the appender does after its commits: to the other nodes,
    /// then to this node's dispatcher, waiting for the local delivery. The dispatcher orders
    /// it by id among the appender's events; if this never runs (the request was cancelled
    /// after the commit) the gap is filled from the journal.
    pub async fn committed(&self, event: Event) -> Option<Cursor> {
        let id = event.id?;
        self.hand_over(event).await;
        Some(self.cursor(id))
    }

    async fn append(&self, events: Vec<Event>) -> Result<Vec<u64>, AppError> {
        let Some(appends) = self.appender() else {
            return Err(AppError::Unavailable("the server is shutting down".into()));
        };
        let (reply, answer) = oneshot::channel();
        appends
            .send(Append { events, reply })
            .await
            .map_err(|_| AppError::Unavailable("the event journal is not running".into()))?;
        match answer.await {
            Ok(Ok((ids, done))) => {
                delivered(done).await;
                Ok(ids)
            }
            Ok(Err(e)) => Err(AppError::Internal(anyhow::anyhow!(
                "journaling events failed: {e}"
            ))),
            Err(_) => Err(AppError::Unavailable(
                "the event journal stopped before answering".into(),
            )),
        }
    }

    async fn publish_ephemeral(&self, ev: Event) {
        self.hand_over(ev).await;
    }

    /// To the other nodes, then to this node's dispatcher, waiting for the local delivery.
    async fn hand_over(&self, ev: Event) {
        if let Some(bus) = &self.bus {
            bus.publish(&self.node_id, std::slice::from_ref(&ev)).await;
        }
        let (done, wait) = oneshot::channel();
        if self.input.send(Input::Event(ev, Some(done))).await.is_err() {
            tracing::debug!("dispatcher stopped; event not delivered");
            return;
        }
        delivered(wait).await;
    }

    /// Delivers on this node only, never journaled or republished (redis-emitter input, and
    /// events that arrived from the bus). Dropped, with a warning, when the dispatcher's queue
    /// is full.
    pub fn dispatch_local(&self, ev: Event) {
        if let Err(e) = self.input.try_send(Input::Event(ev, None)) {
            tracing::warn!(error = %e, "dispatcher queue full; a local event was dropped");
        }
    }

    /// Queues input for the dispatcher, waiting while its queue is full.
    pub(crate) async fn feed(&self, input: Input) {
        let _ = self.input.send(input).await;
    }

    /// Runs `f` inside the dispatcher loop, between two events, with the highest journal id
    /// delivered so far: registering a receiver here and replaying `(cursor, last]` from the
    /// journal afterwards leaves neither a gap nor a duplicate.
    pub async fn in_order<R: Send + 'static>(
        &self,
        f: impl FnOnce(u64) -> R + Send + 'static,
    ) -> Result<R, AppError> {
        self.in_order_after(0, f).await
    }

    /// [`Pipeline::in_order`] once the dispatcher delivered every id up to `min` (it reads
    /// the journal at once for what it has not seen; ids beyond the journal head are not
    /// waited for).
    pub async fn in_order_after<R: Send + 'static>(
        &self,
        min: u64,
        f: impl FnOnce(u64) -> R + Send + 'static,
    ) -> Result<R, AppError> {
        let (tx, rx) = oneshot::channel();
        let run = Box::new(move |last: u64| {
            let _ = tx.send(f(last));
        });
        self.input
            .send(Input::InOrder { min, run })
            .await
            .map_err(|_| AppError::Unavailable("the event dispatcher is not running".into()))?;
        rx.await
            .map_err(|_| AppError::Unavailable("the event dispatcher stopped".into()))
    }

    /// Starts holding the events that reach `rooms` for the receiver `id` (call it inside
    /// [`Pipeline::in_order`]).
    pub fn hold(&self, id: &str, user_id: &str, rooms: HashSet<String>) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(id);
        for room in &rooms {
            held.index(id, room);
        }
        held.by_id.insert(
            id.to_owned(),
            Held {
                user_id: user_id.to_owned(),
                rooms,
                events: Vec::new(),
                overflowed: false,
            },
        );
        self.held_count.store(held.by_id.len(), Ordering::Release);
    }

    /// Takes what was held for `id` so far and keeps holding (an empty buffer from now on).
    pub fn take_held(&self, id: &str) -> Option<(Vec<Event>, bool)> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.by_id
            .get_mut(id)
            .map(|h| (std::mem::take(&mut h.events), h.overflowed))
    }

    /// Stops holding for `id`; returns its state (rooms as they are now, held events).
    pub fn release(&self, id: &str) -> Option<Held> {
        if self.held_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let out = held.remove(id);
        self.held_count.store(held.by_id.len(), Ordering::Release);
        out
    }

    /// The dispatcher: keeps `event` for every held receiver it reaches. What is kept is the
    /// event without its audience (it goes to that one receiver): shared name and payload.
    pub(crate) fn hold_event(&self, event: &Event) {
        if self.held_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut guard = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let held = &mut *guard;
        let mut reached: HashSet<&String> = HashSet::new();
        for target in &event.targets {
            if let Some(ids) = held.by_room.get(target) {
                reached.extend(ids.iter());
            }
        }
        if reached.is_empty() {
            return;
        }
        let kept = event.clone_shallow();
        for id in reached {
            let Some(h) = held.by_id.get_mut(id) else {
                continue;
            };
            if event.except.iter().any(|e| h.rooms.contains(e)) {
                continue;
            }
            if h.events.len() >= HOLD_MAX {
                h.overflowed = true;
            } else {
                h.events.push(kept.clone());
            }
        }
    }

    /// The dispatcher: `user_id`'s held receivers join or leave `room`.
    pub(crate) fn hold_membership(&self, user_id: &str, room: &str, join: bool) {
        if self.held_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut guard = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let held = &mut *guard;
        let ids: Vec<String> = held
            .by_id
            .iter()
            .filter(|(_, h)| h.user_id == user_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(h) = held.by_id.get_mut(&id) {
                if join {
                    h.rooms.insert(room.to_owned());
                } else {
                    h.rooms.remove(room);
                }
            }
            if join {
                held.index(&id, room);
            } else {
                held.unindex(&id, room);
            }
        }
    }

    fn take_parts(&self) -> Option<Parts> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Stops accepting journaled events and waits until every accepted one is committed and
    /// handed to the bus (the end of a graceful shutdown, once the last request is done).
    pub async fn drain(&self) {
        let sender = self
            .appends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(sender);
        let notified = self.drained.notified();
        if self.appender_done.load(Ordering::Acquire) {
            return;
        }
        // Bounded: a wedged database must not keep the process from exiting.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), notified).await;
    }

    fn mark_drained(&self) {
        self.appender_done.store(true, Ordering::Release);
        self.drained.notify_waiters();
    }
}

/// The live targets of a feed activity: the followers' feed rooms (minus the actor) and
/// `feed:public` when public. Shared by the emit table and the journal's gap filling.
pub fn feed_targets(scope: &FeedScope, followers: &[String]) -> Vec<String> {
    let mut targets = Vec::with_capacity(followers.len() + 1);
    if scope.public {
        targets.push(crate::realtime::rooms::FEED_PUBLIC.to_owned());
    }
    targets.extend(
        followers
            .iter()
            .filter(|f| **f != scope.actor)
            .map(|f| crate::realtime::rooms::feed(f)),
    );
    targets
}

/// Starts the appender (and, with Redis, the bus subscriber is started by the caller).
pub(crate) fn spawn_appender(
    core: std::sync::Arc<crate::state::Core>,
) -> Option<mpsc::Receiver<Input>> {
    let parts = core.pipeline.take_parts()?;
    tokio::spawn(appender::run(core.clone(), parts.appends));
    Some(parts.input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(targets: &[&str], except: &[&str]) -> Event {
        Event::new("e", &1, targets.iter().map(|t| (*t).to_owned()).collect())
            .unwrap()
            .except(except.iter().map(|e| (*e).to_owned()))
    }

    #[test]
    fn held_receivers_get_what_reaches_their_rooms_once() {
        let p = Pipeline::new("ep".into(), "n".into(), None);
        let rooms = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect();
        p.hold("s1", "u", rooms(&["user:u", "chat:a", "s1"]));
        p.hold("s2", "v", rooms(&["user:v", "chat:a", "s2"]));
        p.hold_event(&event(&["chat:a", "user:u"], &[]));
        p.hold_event(&event(&["chat:a"], &["s1"]));
        p.hold_event(&event(&["chat:a"], &["user:v"]));
        p.hold_event(&event(&["chat:b"], &[]));
        // u joins chat:b while held; v's socket is not concerned.
        p.hold_membership("u", "chat:b", true);
        p.hold_event(&event(&["chat:b"], &[]));
        let (s1, overflowed) = p.take_held("s1").unwrap();
        assert!(!overflowed);
        assert_eq!(s1.len(), 3, "once per event, minus its exception");
        assert!(
            s1.iter().all(|e| e.targets.is_empty()),
            "kept without audience"
        );
        assert_eq!(p.take_held("s2").unwrap().0.len(), 2);
        let released = p.release("s1").unwrap();
        assert!(released.rooms.contains("chat:b"));
        p.hold_event(&event(&["chat:a"], &[]));
        assert!(p.take_held("s1").is_none(), "released: nothing more held");
        assert_eq!(p.take_held("s2").unwrap().0.len(), 1);
        p.release("s2");
        assert!(
            p.held.lock().unwrap().by_room.is_empty(),
            "no index left behind"
        );
    }
}
