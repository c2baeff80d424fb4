//! The emit table: which event goes to which Socket.IO rooms, for every domain outcome. REST
//! and Socket.IO handlers both call these, so a REST send and a `chat:message` deliver alike.
//! Each emit serialises its payload once and hands it to the adapter once, whatever the room
//! size; the adapter fans it out on every node.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;
use socketioxide::{BroadcastError, SocketIo};

use super::{NAMESPACE, rooms};
use crate::domain::chat::{Message, Room, RoomChange, Watermark};
use crate::domain::notifications::Created;
use crate::state::Core;

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

    /// `chat:room_updated` to every member and to `also` (e.g. just-removed users). The room
    /// object carries each member's own `unreadCount`, so members are grouped by that count and
    /// each group gets one emit: a few serialisations per change, not one per member.
    pub async fn room_updated(&self, room: &Room, change: RoomChange, also: &[String]) {
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
            .extend(also.iter().map(|u| rooms::user(u)));
        let mut room = room.clone();
        for (unread, targets) in by_unread {
            if targets.is_empty() {
                continue;
            }
            room.unread_count = unread;
            let payload = json!({ "room": room, "change": change });
            self.send(self.to_all(targets), "chat:room_updated", &payload)
                .await;
        }
    }

    /// Joins every socket of `user_ids`, on any node, to the room's Socket.IO room.
    pub async fn join_room(&self, user_ids: &[String], room_id: &str) {
        if user_ids.is_empty() {
            return;
        }
        let Some(ns) = self.namespace() else { return };
        let targets: Vec<String> = user_ids.iter().map(|u| rooms::user(u)).collect();
        let ops = ns.to(targets);
        if let Err(e) = ops.clone().join(rooms::chat(room_id)).await {
            tracing::warn!(room = room_id, error = ?e, "joining members' sockets failed; joining local ones");
            let _ = ops.local().join(rooms::chat(room_id)).await;
        }
    }

    /// Removes every socket of `user_ids`, on any node, from the room's Socket.IO room.
    pub async fn leave_room(&self, user_ids: &[String], room_id: &str) {
        if user_ids.is_empty() {
            return;
        }
        let Some(ns) = self.namespace() else { return };
        let targets: Vec<String> = user_ids.iter().map(|u| rooms::user(u)).collect();
        let ops = ns.to(targets);
        if let Err(e) = ops.clone().leave(rooms::chat(room_id)).await {
            tracing::warn!(room = room_id, error = ?e, "removing members' sockets failed; removing local ones");
            let _ = ops.local().leave(rooms::chat(room_id)).await;
        }
    }

    /// `notification:new` (when in-app delivery is on) then `notification:unread_count`, to
    /// each recipient's sockets.
    pub async fn notifications(&self, created: &[Created]) {
        for item in created {
            let user_id = &item.notification.user_id;
            if item.deliver {
                self.send(
                    self.to_all(vec![rooms::user(user_id)]),
                    "notification:new",
                    &item.notification,
                )
                .await;
            }
            self.unread_count(user_id, None).await;
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
