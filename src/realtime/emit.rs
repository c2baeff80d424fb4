//! The emit table: which event goes to which Socket.IO rooms, for every domain outcome. REST
//! and Socket.IO handlers both call these, so a REST send and a `chat:message` deliver alike.
//! Each emit serialises its payload once and hands it to the adapter once, whatever the room
//! size; the adapter fans it out on every node. Fan-outs to many `user:` rooms are chunked and
//! grouped by payload, so their cost is bounded per change, not per recipient.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;
use socketioxide::{BroadcastError, SocketIo};

use super::feed::FAN_OUT_CHUNK;
use super::{NAMESPACE, rooms};
use crate::domain::chat::{Message, Room, RoomChange, Watermark};
use crate::domain::notifications::Created;
use crate::state::Core;

/// How many `notification:new` emits of one batch are in flight at once.
const NOTIFY_CONCURRENCY: usize = 16;

/// The size of `payload` serialised, for the fan-out metrics, without building the string.
fn json_len(payload: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, payload);
    count.0
}

/// Emits on behalf of one request or event. With an origin socket, events "to the room"
/// skip that socket (the sender already has the result in its ack).
pub struct Emitter<'a, A: Adapter> {
    io: &'a SocketIo<A>,
    origin: Option<&'a SocketRef<A>>,
    core: &'a Core,
}

impl<'a, A: Adapter> Emitter<'a, A> {
    /// For REST and service calls: everyone in the target rooms receives.
    pub fn server(io: &'a SocketIo<A>, core: &'a Core) -> Self {
        Self {
            io,
            origin: None,
            core,
        }
    }

    /// For socket events: the sending socket is skipped where the contract says so.
    pub fn from_socket(io: &'a SocketIo<A>, socket: &'a SocketRef<A>, core: &'a Core) -> Self {
        Self {
            io,
            origin: Some(socket),
            core,
        }
    }

    pub(crate) fn namespace(&self) -> Option<BroadcastOperators<A>> {
        let ns = self.io.of(NAMESPACE);
        if ns.is_none() {
            tracing::error!("namespace {NAMESPACE} is not registered");
        }
        ns
    }

    /// The target rooms, minus the origin socket when there is one.
    pub(crate) fn to_room_except_origin(
        &self,
        targets: Vec<String>,
    ) -> Option<BroadcastOperators<A>> {
        match self.origin {
            Some(socket) => Some(socket.to(targets)),
            None => self.namespace().map(|ns| ns.to(targets)),
        }
    }

    /// The target rooms, every socket in them.
    pub(crate) fn to_all(&self, targets: Vec<String>) -> Option<BroadcastOperators<A>> {
        self.namespace().map(|ns| ns.to(targets))
    }

    /// Emits through the adapter. Only an adapter error (the cluster was not reached, so the
    /// adapter delivered to nobody) falls back to this node's sockets. A socket error means
    /// every other socket got the event and some sockets of this node were full or closing:
    /// emitting again would deliver it twice to everyone else, so the full ones are dropped
    /// instead (see `slow`) and catch up after reconnecting.
    pub(crate) async fn send(
        &self,
        ops: Option<BroadcastOperators<A>>,
        event: &'static str,
        payload: &impl Serialize,
    ) {
        let Some(ops) = ops else { return };
        let result = if self.core.cluster_reachable() {
            ops.clone().emit(event, payload).await
        } else {
            // Redis is known to be down: don't wait out a timeout per emit.
            ops.clone().local().emit(event, payload).await
        };
        let result = match result {
            Err(BroadcastError::Adapter(e)) => {
                // The adapter skips this node's sockets when publishing fails: deliver here.
                tracing::warn!(event, error = %e, "cluster broadcast failed; delivering locally");
                ops.clone().local().emit(event, payload).await
            }
            other => other,
        };
        match result {
            Ok(()) => self.core.metrics.event_out(event),
            Err(BroadcastError::Socket(errors)) => {
                self.core.metrics.event_out(event);
                if super::slow::any_full(&errors) {
                    super::slow::after_full_emit(ops, self.core);
                }
            }
            Err(BroadcastError::Adapter(e)) => {
                tracing::warn!(event, error = %e, "local delivery failed");
            }
            Err(BroadcastError::Serialize(e)) => {
                tracing::error!(event, error = %e, "event payload not serialisable");
            }
        }
    }

    /// `chat:new_message` to the room (minus the sending socket).
    pub async fn new_message(&self, message: &Message) {
        let payload = json!({ "roomId": message.room_id, "message": message });
        self.send(
            self.to_room_except_origin(vec![rooms::chat(&message.room_id)]),
            "chat:new_message",
            &payload,
        )
        .await;
    }

    /// `chat:message_updated` to the whole room (edits and deletes).
    pub async fn message_updated(&self, message: &Message) {
        let payload = json!({ "roomId": message.room_id, "message": message });
        self.send(
            self.to_all(vec![rooms::chat(&message.room_id)]),
            "chat:message_updated",
            &payload,
        )
        .await;
    }

    /// `chat:user_typing` to the room, never to any of the typing user's own sockets.
    pub async fn typing(&self, room_id: &str, user_id: &str, is_typing: bool) {
        let payload = json!({ "roomId": room_id, "userId": user_id, "isTyping": is_typing });
        let ops = self
            .namespace()
            .map(|ns| ns.to(rooms::chat(room_id)).except(rooms::user(user_id)));
        self.send(ops, "chat:user_typing", &payload).await;
    }

    /// `chat:messages_read`: to the room when the reader shares receipts, otherwise only to
    /// the reader's other devices (which still need their badge cleared).
    pub async fn messages_read(
        &self,
        room_id: &str,
        user_id: &str,
        mark: &Watermark,
        shared: bool,
    ) {
        let payload = json!({
            "roomId": room_id,
            "userId": user_id,
            "upToSeq": mark.up_to_seq,
            "readAt": crate::time::rfc3339(&mark.at),
        });
        let target = if shared {
            rooms::chat(room_id)
        } else {
            rooms::user(user_id)
        };
        self.send(
            self.to_room_except_origin(vec![target]),
            "chat:messages_read",
            &payload,
        )
        .await;
    }

    /// `chat:messages_delivered` to the room.
    pub async fn messages_delivered(&self, room_id: &str, user_id: &str, mark: &Watermark) {
        let payload = json!({ "roomId": room_id, "userId": user_id, "upToSeq": mark.up_to_seq });
        self.send(
            self.to_room_except_origin(vec![rooms::chat(room_id)]),
            "chat:messages_delivered",
            &payload,
        )
        .await;
    }

    /// `chat:room_updated` for a change of `room` concerning `users` (the added or removed
    /// members; none for a rename), listed in the payload's `userIds`. Removed users are told
    /// too. A room whose object lists every member goes to each member's `user:` room, members
    /// grouped by their own `unreadCount` (one emit per distinct count). A room too big to list
    /// its members inline gets one emit to its `chat:` room, without `unreadCount` (it differs
    /// per member; clients keep their own): the cost of a change is then one bounded payload
    /// whatever the room size.
    pub async fn room_updated(&self, room: &Room, change: RoomChange, users: &[String]) {
        const EVENT: &str = "chat:room_updated";
        let removed: &[String] = if change == RoomChange::MemberRemoved {
            users
        } else {
            &[]
        };
        if !room.lists_all_members() {
            let mut payload = json!({ "room": room, "change": change, "userIds": users });
            if let Some(object) = payload["room"].as_object_mut() {
                object.remove("unreadCount");
            }
            // Removed users' sockets are still in the chat room (they leave after being told),
            // and one broadcast reaches each socket once.
            let mut targets = vec![rooms::chat(&room.id)];
            targets.extend(removed.iter().map(|u| rooms::user(u)));
            self.core
                .metrics
                .fan_out(EVENT, targets.len(), json_len(&payload));
            self.send(self.to_all(targets), EVENT, &payload).await;
            return;
        }
        let mut by_unread: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for member in &room.members {
            let unread = (room.last_seq - member.read_seq).max(0);
            by_unread
                .entry(unread)
                .or_default()
                .push(rooms::user(&member.user_id));
        }
        by_unread
            .entry(0)
            .or_default()
            .extend(removed.iter().map(|u| rooms::user(u)));
        let mut room = room.clone();
        for (unread, targets) in by_unread {
            room.unread_count = unread;
            let payload = json!({ "room": room, "change": change, "userIds": users });
            self.fan_out(targets, EVENT, &payload).await;
        }
    }

    /// Sends `payload` to `targets` in broadcasts of at most [`FAN_OUT_CHUNK`] rooms each, so
    /// no single broadcast (or Redis message) grows with the audience. The targets must not
    /// share sockets (distinct `user:` rooms never do), or a socket could get it twice.
    pub(crate) async fn fan_out(
        &self,
        targets: Vec<String>,
        event: &'static str,
        payload: &impl Serialize,
    ) {
        let bytes = json_len(payload);
        for chunk in targets.chunks(FAN_OUT_CHUNK) {
            self.core.metrics.fan_out(event, chunk.len(), bytes);
            self.send(self.to_all(chunk.to_vec()), event, payload).await;
        }
    }

    /// Joins every socket of `user_ids`, on any node, to the room's Socket.IO room. When the
    /// other nodes cannot be reached, this node's sockets join now and the rest is retried.
    pub async fn join_room(&self, user_ids: &[String], room_id: &str) {
        self.move_sockets(user_ids, room_id, true).await;
    }

    /// Removes every socket of `user_ids`, on any node, from the room's Socket.IO room (and
    /// from its presence watchers). When the other nodes cannot be reached, this node's sockets
    /// leave now and the rest is retried.
    pub async fn leave_room(&self, user_ids: &[String], room_id: &str) {
        self.move_sockets(user_ids, room_id, false).await;
    }

    async fn move_sockets(&self, user_ids: &[String], room_id: &str, join: bool) {
        if user_ids.is_empty() {
            return;
        }
        // Membership changes change the room's online count.
        self.core.room_counts.mark([room_id.to_owned()]);
        let Some(ns) = self.namespace() else { return };
        let targets: Vec<String> = user_ids.iter().map(|u| rooms::user(u)).collect();
        let ops = ns.to(targets);
        let moved = if join {
            vec![rooms::chat(room_id)]
        } else {
            // Former members stop watching the room's presence too.
            vec![rooms::chat(room_id), rooms::presence_watch(room_id)]
        };
        if self.core.cluster_reachable() {
            let result = if join {
                ops.clone().join(moved.clone()).await
            } else {
                ops.clone().leave(moved.clone()).await
            };
            match result {
                Ok(()) => return,
                Err(e) => tracing::warn!(
                    room = room_id,
                    join,
                    error = ?e,
                    "moving members' sockets across nodes failed; moving local ones, retrying the rest"
                ),
            }
        }
        let local = ops.local();
        let _ = if join {
            local.join(moved).await
        } else {
            local.leave(moved).await
        };
        self.core.room_moves.push(room_id, user_ids);
    }

    /// `notification:new` (when in-app delivery is on) to each recipient's sockets, then
    /// `notification:unread_count`: the counts of every recipient in one grouped query, and one
    /// emit per distinct count (recipients grouped by it, like room updates), not one per user.
    pub async fn notifications(&self, created: &[Created]) {
        if created.is_empty() {
            return;
        }
        // Each recipient's notification has its own id, so each is its own emit; a few run at
        // once so a large batch does not wait out one round trip per recipient (with Redis).
        futures::stream::iter(created.iter().filter(|c| c.deliver))
            .for_each_concurrent(NOTIFY_CONCURRENCY, |item| async move {
                let targets = vec![rooms::user(&item.notification.user_id)];
                self.core
                    .metrics
                    .fan_out("notification:new", 1, json_len(&item.notification));
                self.send(self.to_all(targets), "notification:new", &item.notification)
                    .await;
            })
            .await;
        let mut recipients: Vec<String> = created
            .iter()
            .map(|c| c.notification.user_id.clone())
            .collect();
        recipients.sort();
        recipients.dedup();
        let counts = match self.core.notifications.unread_counts(&recipients).await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!(recipients = recipients.len(), error = %e, "unread counts failed");
                return;
            }
        };
        let mut by_count: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for user_id in &recipients {
            let count = counts.get(user_id).copied().unwrap_or(0);
            by_count
                .entry(count)
                .or_default()
                .push(rooms::user(user_id));
        }
        for (count, targets) in by_count {
            self.fan_out(
                targets,
                "notification:unread_count",
                &json!({ "count": count }),
            )
            .await;
        }
    }

    /// `notification:unread_count` to the user's sockets (minus the origin socket when set).
    pub async fn unread_count(&self, user_id: &str, known: Option<u64>) {
        let count = match known {
            Some(count) => count,
            None => match self.core.notifications.unread_count(user_id).await {
                Ok(count) => count,
                Err(e) => {
                    tracing::warn!(user = user_id, error = %e, "unread count failed");
                    return;
                }
            },
        };
        let payload = json!({ "count": count });
        self.send(
            self.to_room_except_origin(vec![rooms::user(user_id)]),
            "notification:unread_count",
            &payload,
        )
        .await;
    }
}
