//! Schema types for the answers handlers build ad hoc with `json!` (pages, small results, the
//! health report, the error body) and for request bodies read as free-form JSON. They describe
//! the wire shape for the OpenAPI document only; `tests/api/openapi.rs` validates real responses
//! against them, so a handler that drifts from its description fails a test.

// Handlers still build these answers with `json!`; the enums here name the values they write
// (`"ok"`, `"degraded"`…) but are never constructed.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::chat::{Member, MemberReceipt, Message, Room};
use crate::domain::feed::{Activity, Trending};
use crate::domain::notifications::Notification;
use crate::domain::preferences::Channels;
use crate::domain::presence::PresenceView;
use crate::domain::push_subscriptions::Subscription;
use crate::error::{ErrorCode, FieldError};

/// A list page, `{ items, nextCursor }`, as every REST list answers (contract §7, §11).
macro_rules! page {
    ($(#[$doc:meta])* $name:ident of $item:ident) => {
        $(#[$doc])*
        #[derive(Serialize, ToSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `before` for the next page; `null` on the last page.
            #[schema(required = true)]
            pub next_cursor: Option<String>,
        }
    };
}

page!(
    /// The caller's rooms, each with `lastMessage` and the caller's `unreadCount`.
    RoomPage of Room
);
page!(
    /// A room's members, most recently joined first.
    MemberPage of Member
);
page!(
    /// Messages matching a search, newest first; always a single page.
    MessagePage of Message
);
page!(
    /// The caller's notifications, newest first.
    NotificationPage of Notification
);
page!(
    /// Feed activities, newest first.
    ActivityPage of Activity
);
page!(
    /// Targets with the most activity in the last 24 h; a top list, never a further page.
    TrendingPage of Trending
);
page!(
    /// Online users among those the caller follows.
    PresencePage of PresenceView
);

/// A page of a room's history: newest first, or oldest first after `after_seq`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageHistory {
    pub items: Vec<Message>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    /// Whether older (or, after `after_seq`, newer) messages remain.
    pub has_more: bool,
}

/// Which of a room's members are online, paged by user id.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomPresence {
    pub room_id: String,
    /// Members online (any status but offline) in the whole room, not just this page.
    pub online: u64,
    pub items: Vec<PresenceView>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// How far each member of a room has read and received, paged by user id.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomReceipts {
    pub room_id: String,
    /// The room's latest message `seq`.
    pub last_seq: i64,
    pub items: Vec<MemberReceipt>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The answer of `PUT /notifications/read`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MarkReadResult {
    /// Notifications that turned read with this call.
    pub updated: u64,
    /// The caller's unread count afterwards.
    pub unread_count: u64,
}

/// `{ preferences }`, every switch filled in (contract §11).
#[derive(Serialize, ToSchema)]
pub struct PreferencesView {
    pub preferences: PreferenceMap,
}

/// Channels per notification type (every known type listed, plus any the user set), and the
/// three privacy switches.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferenceMap {
    pub share_online_status: bool,
    pub share_typing: bool,
    pub share_read_receipts: bool,
    /// `<type>: { inApp, push, email }` for each notification type.
    #[serde(flatten)]
    pub types: BTreeMap<String, Channels>,
}

/// The body of `PUT /notifications/preferences`: only the keys sent change.
#[derive(Serialize, ToSchema)]
pub struct PreferencesUpdate {
    pub preferences: PreferenceChanges,
}

/// Any subset of the switches and of the per-type channels.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreferenceChanges {
    pub share_online_status: Option<bool>,
    pub share_typing: Option<bool>,
    pub share_read_receipts: Option<bool>,
    /// `<type>: { inApp?, push?, email? }`; `type` matches `^[a-z][a-z_]{0,31}$`.
    #[serde(flatten)]
    pub types: BTreeMap<String, ChannelChanges>,
}

/// Any subset of one type's channels.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelChanges {
    pub in_app: Option<bool>,
    pub push: Option<bool>,
    pub email: Option<bool>,
}

/// A user profile as the service API stored it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserProfile {
    pub id: String,
    pub name: String,
    #[schema(required = true)]
    pub avatar_url: Option<String>,
}

/// One edge of the follow graph.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FollowEdge {
    pub follower_id: String,
    pub followee_id: String,
}

/// The answer of the service `POST /notifications`.
#[derive(Serialize, ToSchema)]
pub struct CreatedNotifications {
    /// How many were new (0 when every recipient was deduplicated or it had expired).
    pub created: u64,
    pub notifications: Vec<AddressedNotification>,
}

/// A created notification with its recipient.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressedNotification {
    #[serde(flatten)]
    pub notification: Notification,
    pub user_id: String,
}

/// The answer of the service `POST /broadcast`: handed to the adapter, not acknowledged.
#[derive(Serialize, ToSchema)]
pub struct Broadcasted {
    pub delivered: bool,
}

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    pub timestamp: DateTime<Utc>,
    /// Sockets connected to this node.
    pub connections: u64,
    pub services: Services,
}

/// `ok` when every dependency answers (200), `degraded` otherwise (503).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

/// Each dependency's state.
#[derive(Serialize, ToSchema)]
pub struct Services {
    pub database: DependencyState,
    /// `disabled` on a single node (no `REDIS_URL`).
    pub redis: DependencyState,
}

/// Whether a dependency answers.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DependencyState {
    Ok,
    Down,
    Disabled,
}

/// A demo token (`POST /demo/token`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DemoToken {
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Every REST error: `{ error: { code, message, details? } }` (contract §2, §7).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// What failed; `message` is for people, `code` is for code.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorObject {
    pub code: ErrorCode,
    pub message: String,
    /// The failing fields of an `INVALID_PAYLOAD`, or `{ retryAfterMs }` of a `RATE_LIMITED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub details: Option<ErrorDetails>,
    /// `RATE_LIMITED` only: milliseconds to wait (the `Retry-After` header gives seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub retry_after_ms: Option<u64>,
}

/// The two shapes of `details`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ErrorDetails {
    Fields(Vec<FieldError>),
    RetryAfter(RetryAfter),
}

/// `details` of a `RATE_LIMITED` error.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryAfter {
    pub retry_after_ms: u64,
}

// ---- SSE, long polling and the REST actions ----

/// The data of a stream's first frame, `session:ready`: the socket's `session:ready` fields
/// plus where the client stands. The frame's `id:` is `cursor`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamReady {
    pub user_id: String,
    /// The ids of the caller's chat rooms.
    pub rooms: Vec<String>,
    pub unread_notifications: u64,
    pub server_time: DateTime<Utc>,
    /// The resume position after the replayed events; send it back as `cursor` (or let the
    /// browser send `Last-Event-ID`).
    pub cursor: String,
    /// Whether a cursor was sent and every event since it follows.
    pub recovered: bool,
    /// The kinds whose state the client must refetch over REST.
    pub reset: Vec<ResetKind>,
    /// How many missed events follow this frame.
    pub replayed: u64,
    /// The session's id, as `GET /status` lists it.
    pub session: String,
}

/// An event stream whose missed events are not all replayed: refetch its state over REST.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResetKind {
    Chat,
    Notifications,
    Feed,
}

/// One long poll's answer.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PollAnswer {
    /// Missed journaled events in order, then ephemeral ones kept for this session.
    pub events: Vec<PolledEvent>,
    /// Send it back as `last_poll_id` with the next poll.
    pub last_poll_id: String,
    /// Send it back as `session` with the next poll.
    pub session: String,
    /// Whether `last_poll_id` was sent and every event since it follows.
    pub recovered: bool,
    /// The kinds whose state the client must refetch over REST (all of them on a first poll).
    pub reset: Vec<ResetKind>,
}

/// One event of a poll, as Socket.IO would have sent it.
#[derive(Serialize, ToSchema)]
pub struct PolledEvent {
    /// The event's cursor; `null` for ephemeral events (typing, presence).
    #[schema(required = true)]
    pub id: Option<String>,
    /// The contract's event name (`chat:new_message`…).
    pub event: String,
    /// The event's payload, the same JSON as on Socket.IO.
    pub data: serde_json::Value,
}

/// The answer of `GET /status`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    pub user_id: String,
    /// The node that answered.
    pub node: String,
    /// The caller's live sessions on every node.
    pub sessions: Vec<LiveSession>,
    /// The caller's sessions per transport.
    pub by_transport: BTreeMap<String, u64>,
    /// This node's sessions per transport (every transport listed).
    pub node_counts: BTreeMap<String, u64>,
}

/// One live session of the caller.
#[derive(Serialize, ToSchema)]
pub struct LiveSession {
    pub id: String,
    pub transport: SessionTransport,
    pub node: String,
}

/// How a session is connected; `socketio` is a socket on another node (its engine.io
/// transport is known only there).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionTransport {
    Websocket,
    Polling,
    Sse,
    Longpoll,
    Socketio,
}

/// `{}`: the action was taken (an answer with nothing to report).
#[derive(Serialize, ToSchema)]
pub struct Done {}

/// The answer of `POST …/read`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadAnswer {
    /// The caller's unread messages in the room afterwards.
    pub unread_count: u64,
}

/// The answer of `PUT /presence/status`.
#[derive(Serialize, ToSchema)]
pub struct StatusAnswer {
    pub status: crate::realtime::actions::ChosenStatus,
}

// ---- Web Push ----

/// The `applicationServerKey` for `pushManager.subscribe()`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VapidPublicKey {
    /// The VAPID public key, base64url.
    pub public_key: String,
}

page!(
    /// The caller's push subscriptions, newest first; never more than one page.
    SubscriptionPage of Subscription
);
