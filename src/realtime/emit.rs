//! The emit table: which event goes to which rooms, for every domain outcome. REST, Socket.IO
//! and service handlers all call these, so a REST send and a `chat:message` deliver alike. Each
//! method only BUILDS events (payload serialised once) and hands them to the pipeline
//! (`crate::pipeline`), which journals those that reflect persisted state and delivers to
//! every transport on every node; nothing here touches a transport. Fan-outs to many `user:`
//! rooms are grouped by payload, so their cost is bounded per change, not per recipient.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::rooms;
use crate::domain::chat::{Message, Room, RoomChange, Watermark};
use crate::domain::notifications::Created;
use crate::pipeline::{Event, Kind};
use crate::state::Core;
use crate::write_path::Announce;

/// Most rooms one ephemeral fan-out event names (presence, unread counts).
const FAN_OUT_CHUNK: usize = 1000;

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
    origin: Option<&'a SocketRef<A>>,
    core: &'a Core,
}

impl<'a, A: Adapter> Emitter<'a, A> {
    /// For REST and service calls: everyone in the target rooms receives.
    pub fn server(_io: &'a SocketIo<A>, core: &'a Core) -> Self {
        Self { origin: None, core }
    }

    /// For socket events: the sending socket is skipped where the contract says so.
    pub fn from_socket(_io: &'a SocketIo<A>, socket: &'a SocketRef<A>, core: &'a Core) -> Self {
        Self {
            origin: Some(socket),
            core,
        }
    }

    /// Builds the event `name` to `targets`; `skip_origin` adds the origin socket (if any) to
    /// its exceptions. `None` (logged) for a payload serde cannot write, never built here.
    pub(crate) fn event(
        &self,
        name: &'static str,
        payload: &impl Serialize,
        targets: Vec<String>,
        skip_origin: bool,
    ) -> Option<Event> {
        self.core.metrics.event_out(name);
        match Event::new(name, payload, targets) {
            Ok(mut event) => {
                if skip_origin && let Some(socket) = self.origin {
                    event.except.push(socket.id.to_string());
                }
                Some(event)
            }
            Err(e) => {
                tracing::error!(event = name, error = %e, "event payload not serialisable");
                None
            }
        }
    }

    /// Hands events to the pipeline (journaled ones in one commit). A journal failure means
    /// nobody got them; it is logged: the change itself is committed and REST shows it.
    pub(crate) async fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.core.pipeline.publish_all(events).await {
            tracing::warn!(error = %e, "events not published");
        }
    }

    async fn publish_one(&self, event: Option<Event>) {
        if let Some(event) = event {
            self.publish(vec![event]).await;
        }
    }

    /// What announces a new message: `chat:new_message` to the room (minus the sending
    /// socket), built from the stored row and journaled in the message's own transaction
    /// (see [`crate::write_path`]). Deliver it with [`Emitter::committed`].
    pub fn new_message(&self) -> Announce {
        let except = self.origin.map(|socket| socket.id.to_string());
        Arc::new(move |row: &entity::message::Model| {
            let message = Message::from(row.clone());
            let payload = json!({ "roomId": message.room_id, "message": message });
            match Event::new(
                "chat:new_message",
                &payload,
                vec![rooms::chat(&row.room_id)],
            ) {
                Ok(event) => Some(event.journaled(Kind::Chat).except(except.clone())),
                Err(e) => {
                    tracing::error!(error = %e, "chat:new_message payload not serialisable");
                    None
                }
            }
        })
    }

    /// Delivers a new message's announcement, journaled with the message (`None` for a
    /// retry: it was announced the first time).
    pub async fn message_sent(&self, event: Option<Event>) {
        if let Some(event) = event {
            self.core.metrics.event_out("chat:new_message");
            self.core.pipeline.committed(event).await;
        }
    }

    /// `chat:message_updated` to the whole room (edits and deletes).
    pub async fn message_updated(&self, message: &Message) {
        let payload = json!({ "roomId": message.room_id, "message": message });
        let event = self
            .event(
                "chat:message_updated",
                &payload,
                vec![rooms::chat(&message.room_id)],
                false,
            )
            .map(|e| e.journaled(Kind::Chat));
        self.publish_one(event).await;
    }

    /// `chat:user_typing` to the room, never to any of the typing user's own sockets.
    pub async fn typing(&self, room_id: &str, user_id: &str, is_typing: bool) {
        let payload = json!({ "roomId": room_id, "userId": user_id, "isTyping": is_typing });
        let event = self
            .event(
                "chat:user_typing",
                &payload,
                vec![rooms::chat(room_id)],
                false,
            )
            .map(|e| e.except([rooms::user(user_id)]));
        self.publish_one(event).await;
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
        let event = self
            .event("chat:messages_read", &payload, vec![target], true)
            .map(|e| e.journaled(Kind::Chat));
        self.publish_one(event).await;
    }

    /// `chat:messages_delivered` to the room.
    pub async fn messages_delivered(&self, room_id: &str, user_id: &str, mark: &Watermark) {
        let payload = json!({ "roomId": room_id, "userId": user_id, "upToSeq": mark.up_to_seq });
        let event = self
            .event(
                "chat:messages_delivered",
                &payload,
                vec![rooms::chat(room_id)],
                true,
            )
            .map(|e| e.journaled(Kind::Chat));
        self.publish_one(event).await;
    }

    /// `chat:room_updated` for a change of `room` concerning `users` (the added or removed
    /// members; none for a rename), listed in the payload's `userIds`. Removed users are told
    /// too. A room whose object lists every member goes to each member's `user:` room, members
    /// grouped by their own `unreadCount` (one event per distinct count). A room too big to list
    /// its members inline gets one event to its `chat:` room, without `unreadCount` (it differs
    /// per member; clients keep their own): the cost of a change is then one bounded payload
    /// whatever the room size. The dispatcher moves sockets: added members join the room
    /// before the event is delivered, removed ones leave after it.
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
            // and one event reaches each socket once; their own room finds it on replay too.
            let mut targets = vec![rooms::chat(&room.id)];
            targets.extend(removed.iter().map(|u| rooms::user(u)));
            self.core
                .metrics
                .fan_out(EVENT, targets.len(), json_len(&payload));
            let event = self
                .event(EVENT, &payload, targets, false)
                .map(|e| e.journaled(Kind::Chat));
            self.publish_one(event).await;
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
        let mut events = Vec::with_capacity(by_unread.len());
        for (unread, targets) in by_unread {
            room.unread_count = unread;
            let payload = json!({ "room": room, "change": change, "userIds": users });
            self.core
                .metrics
                .fan_out(EVENT, targets.len(), json_len(&payload));
            events.extend(
                self.event(EVENT, &payload, targets, false)
                    .map(|e| e.journaled(Kind::Chat)),
            );
        }
        self.publish(events).await;
    }

    /// One ephemeral `event` to every socket in `targets`, in events of at most
    /// [`FAN_OUT_CHUNK`] rooms each, so no single event (or bus frame) grows with the
    /// audience. The targets must not share sockets (distinct `user:` rooms never do), or a
    /// socket could get it twice.
    pub(crate) async fn fan_out(
        &self,
        targets: Vec<String>,
        event: &'static str,
        payload: &impl Serialize,
    ) {
        let bytes = json_len(payload);
        let mut events = Vec::new();
        for chunk in targets.chunks(FAN_OUT_CHUNK) {
            self.core.metrics.fan_out(event, chunk.len(), bytes);
            events.extend(self.event(event, payload, chunk.to_vec(), false));
        }
        self.publish(events).await;
    }

    /// `presence:room_count { roomId, online }` to the room's presence watchers.
    pub async fn room_count(&self, room_id: &str, online: u64) {
        let event = self.event(
            "presence:room_count",
            &json!({ "roomId": room_id, "online": online }),
            vec![rooms::presence_watch(room_id)],
            false,
        );
        self.publish_one(event).await;
    }

    /// `notification:new` (when in-app delivery is on) to each recipient's sockets, journaled
    /// in one commit, then `notification:unread_count`: the counts of every recipient in one
    /// grouped query, and one event per distinct count (recipients grouped by it, like room
    /// updates), not one per user.
    pub async fn notifications(&self, created: &[Created]) {
        if created.is_empty() {
            return;
        }
        let news: Vec<Event> = created
            .iter()
            .filter(|c| c.deliver)
            .filter_map(|item| {
                let targets = vec![rooms::user(&item.notification.user_id)];
                self.core
                    .metrics
                    .fan_out("notification:new", 1, json_len(&item.notification));
                self.event("notification:new", &item.notification, targets, false)
                    .map(|e| e.journaled(Kind::Notification))
            })
            .collect();
        self.publish(news).await;
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
        let event = self.event(
            "notification:unread_count",
            &payload,
            vec![rooms::user(user_id)],
            true,
        );
        self.publish_one(event).await;
    }

    /// `notification:read { notificationIds, all, unreadCount }` (an extension of the
    /// contract) to the user's other sockets, journaled: a device that was away learns which
    /// notifications were read elsewhere when it resumes. `ids` is `None` for "all".
    pub async fn notifications_read(&self, user_id: &str, ids: Option<&[String]>, unread: u64) {
        let payload = json!({
            "notificationIds": ids.unwrap_or_default(),
            "all": ids.is_none(),
            "unreadCount": unread,
        });
        let event = self
            .event(
                "notification:read",
                &payload,
                vec![rooms::user(user_id)],
                true,
            )
            .map(|e| e.journaled(Kind::Notification));
        self.publish_one(event).await;
    }
}
