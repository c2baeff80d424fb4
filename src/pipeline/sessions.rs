//! This node's SSE streams and long-poll sessions, indexed like Socket.IO rooms so the
//! dispatcher delivers to them exactly what the same user's sockets get.
//!
//! Why a registry of our own rather than fake sockets: a session is an HTTP response (SSE) or a
//! series of requests (long polling), so it has no socketioxide socket to join rooms with. The
//! dispatcher calls [`Sessions::deliver`] for every event right after its Socket.IO emit, from
//! its single loop, so a session sees events in the same order as a socket. Delivery never
//! blocks the dispatcher: each session has a bounded queue, and a stream that falls behind is
//! closed with a reason (like a slow socket) instead of holding the others up.

use std::any::Any;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Notify;

use super::model::Event;

/// How a session reaches the server; also the `transport` label of its metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `GET /stream` or `/stream/rooms/:roomId`.
    Sse,
    /// `GET /poll`.
    Longpoll,
}

impl Transport {
    /// Both transports, in the order status and metrics list them.
    pub const ALL: [Transport; 2] = [Transport::Sse, Transport::Longpoll];

    /// The label clients and metrics see.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Longpoll => "longpoll",
        }
    }

    /// The session id prefix, which tells the transport of a connection slot on any node.
    pub fn sid_prefix(self) -> &'static str {
        match self {
            Transport::Sse => "sse:",
            Transport::Longpoll => "poll:",
        }
    }
}

/// Why a session was closed by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Its queue was full: the reader does not keep up (`SLOW_CONSUMER`).
    SlowConsumer,
    /// A room stream whose user left or was removed from the room (`FORBIDDEN`).
    RoomLeft,
}

impl CloseReason {
    /// The code the last `session:error` frame carries.
    pub fn code(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "SLOW_CONSUMER",
            CloseReason::RoomLeft => "FORBIDDEN",
        }
    }

    /// A human-readable explanation for the same frame.
    pub fn message(self) -> &'static str {
        match self {
            CloseReason::SlowConsumer => "the stream was not read fast enough and was closed",
            CloseReason::RoomLeft => "no longer a member of this room",
        }
    }
}

/// What a full queue does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Close the session (SSE: the client reconnects with `Last-Event-ID` and loses nothing
    /// journaled).
    Close,
    /// Drop the oldest queued event (long polling: only ephemeral events are queued, journaled
    /// ones are read from the journal by every poll, so only best-effort events are lost).
    DropOldest,
}

/// How to register a session.
pub struct SessionSpec {
    pub user_id: String,
    pub transport: Transport,
    /// The room names (as Socket.IO rooms) the session is in from the start.
    pub rooms: Vec<String>,
    /// Whether the session follows the user's chat memberships (`join`/`leave`); a room stream
    /// follows only its own room, and is closed when the user leaves it.
    pub follows_membership: bool,
    /// Most events waiting to be read.
    pub depth: usize,
    pub overflow: Overflow,
    /// Whether journaled events are queued (SSE) or only wake the reader up (long polling,
    /// which reads them from the journal).
    pub queue_journaled: bool,
    /// Whatever the session holds while it is registered (its connection slot): dropped when
    /// the session is removed, for whatever reason, so nothing it holds outlives it.
    pub holds: Option<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for SessionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSpec")
            .field("user_id", &self.user_id)
            .field("transport", &self.transport)
            .field("rooms", &self.rooms)
            .finish_non_exhaustive()
    }
}

/// The reading end of one session: its queue and its fate.
pub struct Session {
    pub id: u64,
    /// Unique across nodes (`sse:…`, `poll:…`): the connection slot's id, the `session` a
    /// poller sends back, and what an event's `except` names to skip this session.
    pub tag: String,
    pub user_id: String,
    pub transport: Transport,
    shared: Arc<Shared>,
}

/// What the reader of a session gets next.
#[derive(Debug)]
pub enum Next {
    Event(Arc<Event>),
    Closed(CloseReason),
}

struct Shared {
    queue: Mutex<VecDeque<Arc<Event>>>,
    notify: Notify,
    closed: OnceLock<CloseReason>,
    depth: usize,
    overflow: Overflow,
    queue_journaled: bool,
    /// Events dropped by [`Overflow::DropOldest`].
    dropped: AtomicU64,
    /// When the session's owner last used it (a poll arriving), for expiry.
    touched: Mutex<Instant>,
    /// Polls of this session in progress: a session is never expired while one waits.
    busy: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Queues `event`; false when the session must be closed for being full.
    fn push(&self, event: &Arc<Event>) -> bool {
        if self.closed.get().is_some() {
            return true;
        }
        if event.id.is_some() && !self.queue_journaled {
            self.notify.notify_one();
            return true;
        }
        let mut queue = lock(&self.queue);
        if queue.len() >= self.depth {
            match self.overflow {
                Overflow::Close => return false,
                Overflow::DropOldest => {
                    queue.pop_front();
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        queue.push_back(event.clone());
        drop(queue);
        self.notify.notify_one();
        true
    }

    fn close(&self, reason: CloseReason) {
        let _ = self.closed.set(reason);
        if reason == CloseReason::SlowConsumer {
            // Never to be read: free it now, not when the stalled response is finally dropped.
            lock(&self.queue).clear();
        }
        self.notify.notify_one();
    }
}

impl Session {
    /// The next queued event, waiting for one; once closed, the reason (after what was queued
    /// before the close for a room stream; at once for a slow consumer, whose queue is stale).
    pub async fn next(&self) -> Next {
        loop {
            if let Some(CloseReason::SlowConsumer) = self.shared.closed.get() {
                return Next::Closed(CloseReason::SlowConsumer);
            }
            if let Some(event) = lock(&self.shared.queue).pop_front() {
                return Next::Event(event);
            }
            if let Some(reason) = self.shared.closed.get() {
                return Next::Closed(*reason);
            }
            self.shared.notify.notified().await;
        }
    }

    /// Everything queued now, without waiting.
    pub fn drain(&self) -> Vec<Arc<Event>> {
        lock(&self.shared.queue).drain(..).collect()
    }

    /// Waits until something is delivered to the session (an event queued, or a journaled
    /// event that only wakes it) or it is closed.
    pub async fn woken(&self) {
        if !lock(&self.shared.queue).is_empty() || self.shared.closed.get().is_some() {
            return;
        }
        self.shared.notify.notified().await;
    }

    /// Why the server closed the session, if it did.
    pub fn closed(&self) -> Option<CloseReason> {
        self.shared.closed.get().copied()
    }

    /// Records that the owner used the session now (it does not expire yet).
    pub fn touch(&self) {
        *lock(&self.shared.touched) = Instant::now();
    }

    /// Marks a poll in progress until the returned guard is dropped (which touches the
    /// session again: its expiry counts from the end of the last poll).
    pub fn busy(&self) -> Busy {
        self.shared.busy.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Busy(self.shared.clone())
    }

    /// Ephemeral events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Another handle on the same session (long polling keeps one in the registry's table of
    /// idle pollers, and each poll takes one).
    pub fn share(&self) -> Session {
        Session {
            id: self.id,
            tag: self.tag.clone(),
            user_id: self.user_id.clone(),
            transport: self.transport,
            shared: self.shared.clone(),
        }
    }
}

/// A poll in progress (see [`Session::busy`]).
pub struct Busy(Arc<Shared>);

impl Drop for Busy {
    fn drop(&mut self) {
        *lock(&self.0.touched) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Entry {
    user_id: String,
    /// `user:{id}`: an exception naming the user skips every session of theirs, a room stream
    /// (which is not in that room) included.
    user_room: String,
    transport: Transport,
    tag: String,
    rooms: HashSet<String>,
    follows_membership: bool,
    shared: Arc<Shared>,
    holds: Option<Box<dyn Any + Send + Sync>>,
}

#[derive(Default)]
struct Index {
    sessions: HashMap<u64, Entry>,
    by_tag: HashMap<String, u64>,
    by_room: HashMap<String, HashSet<u64>>,
    by_user: HashMap<String, HashSet<u64>>,
}

impl Index {
    fn add_room(&mut self, id: u64, room: &str) {
        self.by_room.entry(room.to_owned()).or_default().insert(id);
    }

    fn remove_room(&mut self, id: u64, room: &str) {
        if let Some(ids) = self.by_room.get_mut(room) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_room.remove(room);
            }
        }
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.sessions.remove(&id)?;
        self.by_tag.remove(&entry.tag);
        for room in &entry.rooms {
            self.remove_room(id, room);
        }
        if let Some(ids) = self.by_user.get_mut(&entry.user_id) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_user.remove(&entry.user_id);
            }
        }
        Some(entry)
    }
}

/// The registry of non-Socket.IO sessions on this node.
#[derive(Default)]
pub struct Sessions {
    index: RwLock<Index>,
    next_id: AtomicU64,
}

/// One session as `GET /status` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub transport: Transport,
}

impl Sessions {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session tag for `transport`, unique across nodes: taken before registering, so
    /// the connection slot can be reserved under it first.
    pub fn new_tag(transport: Transport) -> String {
        format!(
            "{}{}",
            transport.sid_prefix(),
            uuid::Uuid::now_v7().simple()
        )
    }

    /// Registers a session under `tag` (from [`Sessions::new_tag`]); it receives every event
    /// delivered from now on.
    pub fn register(&self, tag: String, spec: SessionSpec) -> Session {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            closed: OnceLock::new(),
            depth: spec.depth.max(1),
            overflow: spec.overflow,
            queue_journaled: spec.queue_journaled,
            dropped: AtomicU64::new(0),
            touched: Mutex::new(Instant::now()),
            busy: AtomicU64::new(0),
        });
        let entry = Entry {
            user_id: spec.user_id.clone(),
            user_room: format!("user:{}", spec.user_id),
            transport: spec.transport,
            tag: tag.clone(),
            rooms: spec.rooms.iter().cloned().collect(),
            follows_membership: spec.follows_membership,
            shared: shared.clone(),
            holds: spec.holds,
        };
        let mut index = self.write();
        for room in &entry.rooms {
            index.add_room(id, room);
        }
        index
            .by_user
            .entry(spec.user_id.clone())
            .or_default()
            .insert(id);
        index.by_tag.insert(tag.clone(), id);
        index.sessions.insert(id, entry);
        Session {
            id,
            tag,
            user_id: spec.user_id,
            transport: spec.transport,
            shared,
        }
    }

    /// Forgets a session (its stream ended, its poller went away).
    pub fn remove(&self, id: u64) {
        self.write().remove(id);
    }

    /// The session `tag` of `user_id` and `transport`, if this node has it.
    pub fn get(&self, tag: &str, user_id: &str, transport: Transport) -> Option<Session> {
        let index = self.read();
        let id = *index.by_tag.get(tag)?;
        let entry = index.sessions.get(&id)?;
        (entry.user_id == user_id && entry.transport == transport).then(|| Session {
            id,
            tag: entry.tag.clone(),
            user_id: entry.user_id.clone(),
            transport,
            shared: entry.shared.clone(),
        })
    }

    /// Delivers `event` to every session in one of its targets and in none of its exceptions.
    /// Never waits: a session whose queue is full is closed instead (see [`Overflow`]).
    pub fn deliver(&self, event: &Event) {
        let mut full = Vec::new();
        {
            let index = self.read();
            if index.sessions.is_empty() {
                return;
            }
            let mut reached: HashSet<u64> = HashSet::new();
            for target in &event.targets {
                if let Some(ids) = index.by_room.get(target) {
                    reached.extend(ids);
                }
            }
            if reached.is_empty() {
                return;
            }
            let shared_event = Arc::new(event.clone());
            for id in reached {
                let Some(entry) = index.sessions.get(&id) else {
                    continue;
                };
                let excepted = event
                    .except
                    .iter()
                    .any(|e| *e == entry.tag || *e == entry.user_room || entry.rooms.contains(e));
                if excepted {
                    continue;
                }
                if !entry.shared.push(&shared_event) {
                    full.push(id);
                }
            }
        }
        if full.is_empty() {
            return;
        }
        let mut index = self.write();
        for id in full {
            if let Some(entry) = index.remove(id) {
                tracing::debug!(
                    session = %entry.tag,
                    user = %entry.user_id,
                    "session closed: its reader fell behind"
                );
                entry.shared.close(CloseReason::SlowConsumer);
            }
        }
    }

    /// Adds `room` to every session of `user_id` that follows memberships.
    pub fn join(&self, user_id: &str, room: &str) {
        let mut index = self.write();
        let Some(ids) = index.by_user.get(user_id).cloned() else {
            return;
        };
        for id in ids {
            let added = index
                .sessions
                .get_mut(&id)
                .is_some_and(|e| e.follows_membership && e.rooms.insert(room.to_owned()));
            if added {
                index.add_room(id, room);
            }
        }
    }

    /// Removes `room` from every session of `user_id`; a stream of that one room is closed.
    pub fn leave(&self, user_id: &str, room: &str) {
        let mut index = self.write();
        let Some(ids) = index.by_user.get(user_id).cloned() else {
            return;
        };
        for id in ids {
            let Some(entry) = index.sessions.get_mut(&id) else {
                continue;
            };
            if !entry.rooms.remove(room) {
                continue;
            }
            let room_stream = !entry.follows_membership;
            index.remove_room(id, room);
            if room_stream && let Some(entry) = index.remove(id) {
                entry.shared.close(CloseReason::RoomLeft);
            }
        }
    }

    /// Adds or removes the feed rooms of one session (e.g. a poller changing `feed=`).
    pub fn set_rooms(&self, id: u64, add: &[String], remove: &[String]) {
        let mut index = self.write();
        let Some(entry) = index.sessions.get_mut(&id) else {
            return;
        };
        let added: Vec<String> = add
            .iter()
            .filter(|r| entry.rooms.insert((*r).clone()))
            .cloned()
            .collect();
        let removed: Vec<String> = remove
            .iter()
            .filter(|r| entry.rooms.remove(*r))
            .cloned()
            .collect();
        for room in &added {
            index.add_room(id, room);
        }
        for room in &removed {
            index.remove_room(id, room);
        }
    }

    /// The sessions of `user_id` on this node.
    pub fn of_user(&self, user_id: &str) -> Vec<SessionInfo> {
        let index = self.read();
        let mut list: Vec<SessionInfo> = index
            .by_user
            .get(user_id)
            .into_iter()
            .flatten()
            .filter_map(|id| index.sessions.get(id))
            .map(|e| SessionInfo {
                id: e.tag.clone(),
                transport: e.transport,
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// How many sessions of `transport` this node has.
    pub fn count(&self, transport: Transport) -> usize {
        self.read()
            .sessions
            .values()
            .filter(|e| e.transport == transport)
            .count()
    }

    /// Sessions of `transport` not used since `cutoff`: removed, and what they held returned,
    /// so their owner can release it on its own terms.
    pub fn expire(
        &self,
        transport: Transport,
        cutoff: Instant,
    ) -> Vec<Option<Box<dyn Any + Send + Sync>>> {
        let stale: Vec<u64> = self
            .read()
            .sessions
            .iter()
            .filter(|(_, e)| {
                e.transport == transport
                    && e.shared.busy.load(Ordering::SeqCst) == 0
                    && *lock(&e.shared.touched) < cutoff
            })
            .map(|(id, _)| *id)
            .collect();
        let mut index = self.write();
        stale
            .into_iter()
            .filter_map(|id| index.remove(id))
            .map(|e| e.holds)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(user: &str, rooms: &[&str], depth: usize) -> SessionSpec {
        SessionSpec {
            user_id: user.into(),
            transport: Transport::Sse,
            rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
            follows_membership: true,
            depth,
            overflow: Overflow::Close,
            queue_journaled: true,
            holds: None,
        }
    }

    fn register(sessions: &Sessions, spec: SessionSpec) -> Session {
        sessions.register(Sessions::new_tag(spec.transport), spec)
    }

    fn event(name: &str, targets: &[&str]) -> Event {
        Event::new(
            name,
            &serde_json::json!({}),
            targets.iter().map(|t| (*t).to_owned()).collect(),
        )
        .unwrap()
    }

    fn names(s: &Session) -> Vec<String> {
        s.drain().iter().map(|e| e.name.to_string()).collect()
    }

    #[test]
    fn delivers_once_by_target_minus_exceptions() {
        let sessions = Sessions::default();
        let a = register(&sessions, spec("a", &["user:a", "chat:r"], 8));
        let b = register(&sessions, spec("b", &["user:b", "chat:r"], 8));
        sessions.deliver(&event("both", &["chat:r", "user:a"]));
        sessions.deliver(&event("typing", &["chat:r"]).except(["user:a".to_owned()]));
        sessions.deliver(&event("other", &["chat:x"]));
        sessions.deliver(&event("origin", &["chat:r"]).except([a.tag.clone()]));
        assert_eq!(names(&a), ["both"]);
        assert_eq!(names(&b), ["both", "typing", "origin"]);
    }

    #[test]
    fn membership_follows_join_and_leave() {
        let sessions = Sessions::default();
        let all = register(&sessions, spec("a", &["user:a"], 8));
        let room = register(
            &sessions,
            SessionSpec {
                follows_membership: false,
                ..spec("a", &["chat:r"], 8)
            },
        );
        sessions.join("a", "chat:n");
        sessions.deliver(&event("n", &["chat:n"]));
        assert_eq!(names(&all), ["n"]);
        assert!(names(&room).is_empty(), "a room stream keeps to its room");
        sessions.deliver(&event("typing", &["chat:r"]).except(["user:a".to_owned()]));
        assert!(
            names(&room).is_empty(),
            "nor does it hear its own user's typing"
        );
        sessions.leave("a", "chat:n");
        sessions.deliver(&event("n2", &["chat:n"]));
        assert!(names(&all).is_empty());
        sessions.leave("a", "chat:r");
        assert_eq!(room.closed(), Some(CloseReason::RoomLeft));
        assert_eq!(sessions.count(Transport::Sse), 1);
    }

    #[tokio::test]
    async fn a_full_queue_closes_only_that_session() {
        let sessions = Sessions::default();
        let slow = register(&sessions, spec("a", &["chat:r"], 2));
        let fast = register(&sessions, spec("b", &["chat:r"], 2));
        for i in 0..3 {
            sessions.deliver(&event(&format!("e{i}"), &["chat:r"]));
            if let Next::Event(e) = fast.next().await {
                assert_eq!(&*e.name, format!("e{i}"));
            } else {
                panic!("fast reader closed");
            }
        }
        assert!(matches!(
            slow.next().await,
            Next::Closed(CloseReason::SlowConsumer)
        ));
        assert_eq!(sessions.count(Transport::Sse), 1);
    }

    #[test]
    fn pollers_drop_oldest_and_are_only_woken_by_journaled_events() {
        let sessions = Sessions::default();
        let p = register(
            &sessions,
            SessionSpec {
                transport: Transport::Longpoll,
                overflow: Overflow::DropOldest,
                queue_journaled: false,
                ..spec("a", &["chat:r"], 2)
            },
        );
        let mut journaled = event("j", &["chat:r"]);
        journaled.id = Some(1);
        sessions.deliver(&journaled);
        for i in 0..3 {
            sessions.deliver(&event(&format!("e{i}"), &["chat:r"]));
        }
        assert_eq!(names(&p), ["e1", "e2"]);
        assert_eq!(p.dropped(), 1);
        assert_eq!(
            sessions.expire(Transport::Longpoll, Instant::now()).len(),
            1
        );
        assert_eq!(sessions.count(Transport::Longpoll), 0);
    }
}
