//! One documentation stub per route: `#[utoipa::path]` on an empty function, named for the
//! operation (the name is its `operationId`). The stubs live here rather than on the handlers
//! because the handlers are generic over the Socket.IO adapter and several domains are edited
//! at once; the real request and response types are still the ones the handlers use (see
//! `schemas` for the shapes handlers build ad hoc).
//!
//! Each stub lists the answers particular to its route; the ones every route of a kind shares
//! (401, 400 on bad input, 413, 500, 503, 304 on user GETs) are added in `super::common_answers`.

// The functions exist only for their attributes: utoipa reads them, nothing calls them.
#![allow(dead_code)]

use crate::demo::TokenBody;
use crate::domain::chat::{Message, Room};
use crate::domain::feed::{Activity, Statistics};
use crate::domain::presence::PresenceView;
use crate::domain::push_subscriptions::Subscription;
use crate::http::chat::{
    AddMembersBody, CreateRoomBody, EditBody, HistoryParams, PageParams, RenameBody, SearchParams,
    SendBody,
};
use crate::http::feed::{FeedParams, TrendingParams};
use crate::http::internal::{ActivityBody, BroadcastBody, FollowBody, NotificationBody, UserBody};
use crate::http::notifications::{ListParams, MarkReadBody};
use crate::http::push::SubscribeBody;
use crate::http::realtime::actions::{StatusBody, TypingBody, WatermarkBody};
use crate::http::realtime::poll::PollParams;
use crate::http::realtime::stream::StreamParams;
use crate::http::room_state::MemberPageParams;
use crate::realtime::presence::ActivityPayload;

use super::schemas::*;

// ---- chat ----

#[utoipa::path(get, path = "/api/v1/realtime/chat/rooms", tag = "chat",
    summary = "The caller's rooms, most recently active first",
    params(PageParams),
    responses((status = 200, description = "A page of rooms", body = RoomPage)))]
fn list_rooms() {}

#[utoipa::path(post, path = "/api/v1/realtime/chat/rooms", tag = "chat",
    summary = "Create a room; the caller is its owner",
    description = "`participants` are the other users. A direct room takes exactly one and is \
        unique per pair: creating it again returns the existing room with 200.",
    request_body = CreateRoomBody,
    responses(
        (status = 201, description = "The new room", body = Room),
        (status = 200, description = "The direct room that already existed", body = Room),
        (status = 409, description = "The room conflicts with an existing one", body = ErrorBody)))]
fn create_room() {}

#[utoipa::path(get, path = "/api/v1/realtime/chat/rooms/{room_id}", tag = "chat",
    summary = "One room",
    params(("room_id" = String, Path, description = "The room's id")),
    responses(
        (status = 200, description = "The room", body = Room),
        (status = 403, description = "Not a member of this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody)))]
fn get_room() {}

#[utoipa::path(patch, path = "/api/v1/realtime/chat/rooms/{room_id}", tag = "chat",
    summary = "Rename a room",
    params(("room_id" = String, Path, description = "The room's id")),
    request_body = RenameBody,
    responses(
        (status = 200, description = "The renamed room", body = Room),
        (status = 403, description = "Not a member of this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 409, description = "Direct rooms have no name", body = ErrorBody)))]
fn rename_room() {}

#[utoipa::path(get, path = "/api/v1/realtime/chat/rooms/{room_id}/members", tag = "chat",
    summary = "Every member of a room, most recently joined first",
    description = "For rooms whose object lists only the first `ROOM_MEMBERS_INLINE_MAX`.",
    params(("room_id" = String, Path, description = "The room's id"), PageParams),
    responses(
        (status = 200, description = "A page of members", body = MemberPage),
        (status = 403, description = "Not a member of this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody)))]
fn list_members() {}

#[utoipa::path(post, path = "/api/v1/realtime/chat/rooms/{room_id}/members", tag = "chat",
    summary = "Add members; their sockets join the room at once",
    params(("room_id" = String, Path, description = "The room's id")),
    request_body = AddMembersBody,
    responses(
        (status = 200, description = "The room with its new members", body = Room),
        (status = 403, description = "Not a member of this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 409, description = "Members cannot be added to a direct room", body = ErrorBody)))]
fn add_members() {}

#[utoipa::path(delete, path = "/api/v1/realtime/chat/rooms/{room_id}/members/{user_id}",
    tag = "chat",
    summary = "Remove a member, or leave with your own id",
    params(
        ("room_id" = String, Path, description = "The room's id"),
        ("user_id" = String, Path, description = "The member to remove")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Only the owner removes others", body = ErrorBody),
        (status = 404, description = "No such room or member", body = ErrorBody),
        (status = 409, description = "Direct rooms keep both members", body = ErrorBody)))]
fn remove_member() {}

#[utoipa::path(get, path = "/api/v1/realtime/chat/rooms/{room_id}/messages", tag = "chat",
    summary = "A room's history",
    description = "Newest first, paged with `before`; with `after_seq`, oldest first from that \
        `seq` on, for catch-up.",
    params(("room_id" = String, Path, description = "The room's id"), HistoryParams),
    responses(
        (status = 200, description = "A page of messages", body = MessageHistory),
        (status = 403, description = "Not a member of this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody)))]
fn history() {}

#[utoipa::path(post, path = "/api/v1/realtime/chat/rooms/{room_id}/messages", tag = "chat",
    summary = "Send a message (same effects as `chat:message`)",
    description = "Idempotent on `clientMessageId`: a retry returns the original with 200 and \
        is not delivered again. Counts against `RATE_LIMIT_PER_MINUTE`.",
    params(("room_id" = String, Path, description = "The room's id")),
    request_body = SendBody,
    responses(
        (status = 201, description = "The stored message", body = Message),
        (status = 200, description = "The original of a retried `clientMessageId`", body = Message),
        (status = 403, description = "Not a member of this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 429, description = "Over `RATE_LIMIT_PER_MINUTE`; retry after `Retry-After` \
            seconds", body = ErrorBody)))]
fn send_message() {}

#[utoipa::path(get, path = "/api/v1/realtime/chat/rooms/{room_id}/messages/search",
    tag = "chat",
    summary = "Full-text search in one room",
    params(("room_id" = String, Path, description = "The room's id"), SearchParams),
    responses(
        (status = 200, description = "Matching messages", body = MessagePage),
        (status = 403, description = "Not a member of this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody)))]
fn search_messages() {}

#[utoipa::path(patch, path = "/api/v1/realtime/chat/rooms/{room_id}/messages/{message_id}",
    tag = "chat",
    summary = "Edit your own message",
    params(
        ("room_id" = String, Path, description = "The room's id"),
        ("message_id" = String, Path, description = "The message's id")),
    request_body = EditBody,
    responses(
        (status = 200, description = "The edited message", body = Message),
        (status = 403, description = "Not your message, or not a member", body = ErrorBody),
        (status = 404, description = "No such room or message", body = ErrorBody),
        (status = 409, description = "The message was deleted", body = ErrorBody)))]
fn edit_message() {}

#[utoipa::path(delete, path = "/api/v1/realtime/chat/rooms/{room_id}/messages/{message_id}",
    tag = "chat",
    summary = "Delete your own message; it keeps its `seq`",
    params(
        ("room_id" = String, Path, description = "The room's id"),
        ("message_id" = String, Path, description = "The message's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Not your message, or not a member", body = ErrorBody),
        (status = 404, description = "No such room or message", body = ErrorBody)))]
fn delete_message() {}

#[utoipa::path(get, path = "/api/v1/realtime/chat/rooms/{room_id}/presence", tag = "chat",
    summary = "Who of a room's members is online, by user id",
    params(("room_id" = String, Path, description = "The room's id"), MemberPageParams),
    responses(
        (status = 200, description = "A page of members' presence", body = RoomPresence),
        (status = 403, description = "Not a member of this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody)))]
fn room_presence() {}

#[utoipa::path(get, path = "/api/v1/realtime/chat/rooms/{room_id}/receipts", tag = "chat",
    summary = "How far each member has read and received, by user id",
    params(("room_id" = String, Path, description = "The room's id"), MemberPageParams),
    responses(
        (status = 200, description = "A page of watermarks", body = RoomReceipts),
        (status = 403, description = "Not a member of this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody)))]
fn room_receipts() {}

// ---- feed ----

#[utoipa::path(get, path = "/api/v1/realtime/feed", tag = "feed",
    summary = "Activities of people the caller follows, plus public ones",
    params(FeedParams),
    responses((status = 200, description = "A page of activities", body = ActivityPage)))]
fn feed() {}

#[utoipa::path(get, path = "/api/v1/realtime/feed/trending", tag = "feed",
    summary = "Targets with the most activity in the last 24 h",
    params(TrendingParams),
    responses((status = 200, description = "The top targets", body = TrendingPage)))]
fn feed_trending() {}

#[utoipa::path(get, path = "/api/v1/realtime/feed/statistics", tag = "feed",
    summary = "Counts per activity type in the caller's feed over 24 h and 7 d",
    responses((status = 200, description = "Counts per type", body = Statistics)))]
fn feed_statistics() {}

// ---- notifications ----

#[utoipa::path(get, path = "/api/v1/realtime/notifications", tag = "notifications",
    summary = "The caller's notifications (expired ones never listed)",
    params(ListParams),
    responses((status = 200, description = "A page of notifications", body = NotificationPage)))]
fn list_notifications() {}

#[utoipa::path(put, path = "/api/v1/realtime/notifications/read", tag = "notifications",
    summary = "Mark some or all notifications read",
    description = "Ids of other users' notifications are ignored. The caller's other sockets \
        get `notification:unread_count`.",
    request_body = MarkReadBody,
    responses((status = 200, description = "How many changed, and the unread count",
        body = MarkReadResult)))]
fn mark_notifications_read() {}

#[utoipa::path(get, path = "/api/v1/realtime/notifications/preferences",
    tag = "notifications",
    summary = "Delivery channels per type and the privacy switches",
    responses((status = 200, description = "Every switch, defaults filled in",
        body = PreferencesView)))]
fn get_preferences() {}

#[utoipa::path(put, path = "/api/v1/realtime/notifications/preferences",
    tag = "notifications",
    summary = "Change some preferences; keys not sent keep their value",
    request_body = PreferencesUpdate,
    responses((status = 200, description = "Every switch after the change",
        body = PreferencesView)))]
fn put_preferences() {}

// ---- presence ----

#[utoipa::path(get, path = "/api/v1/realtime/presence/me", tag = "presence",
    summary = "The caller's own presence",
    responses((status = 200, description = "Own presence", body = PresenceView)))]
fn own_presence() {}

#[utoipa::path(put, path = "/api/v1/realtime/presence/activity", tag = "presence",
    summary = "Set the caller's activity (same as `presence:activity`)",
    request_body = ActivityPayload,
    responses((status = 200, description = "Own presence after the change", body = PresenceView)))]
fn put_activity() {}

#[utoipa::path(get, path = "/api/v1/realtime/presence/online-friends", tag = "presence",
    summary = "Online users among those the caller follows",
    params(crate::http::presence::PageParams),
    responses((status = 200, description = "A page of online friends", body = PresencePage)))]
fn online_friends() {}

// ---- realtime over HTTP: SSE, long polling, REST actions ----

#[utoipa::path(get, path = "/api/v1/realtime/stream", tag = "realtime",
    summary = "Server-Sent Events: every event a socket of the caller would get",
    description = "A `text/event-stream` that stays open. The first frame is `event: \
        session:ready` with `data:` a `StreamReady` object, its `id:` the cursor and a `retry:` \
        hint; then the events missed since `Last-Event-ID` (or `cursor`) from the journal, then \
        live ones. Each event frame has `event:` the contract's event name, `data:` the same \
        JSON as on Socket.IO and, for journaled events, `id:` its cursor. Keep-alive comments \
        come every `SSE_KEEPALIVE_MS`. A stream the server closes ends with `event: \
        session:error` `{ code, message }` (`SLOW_CONSUMER` past `SSE_QUEUE_DEPTH`). Errors \
        before the stream starts are JSON in the contract's shape. The token may be sent as \
        `?token=` (`EventSource` cannot set headers).",
    params(StreamParams,
        ("Last-Event-ID" = Option<String>, Header,
            description = "The last frame's `id`, as the browser sends it on reconnect")),
    responses(
        (status = 200, description = "The event stream (never ends on its own)", body = String,
            content_type = "text/event-stream"),
        (status = 429, description = "`TOO_MANY_CONNECTIONS`: over `MAX_CONNECTIONS_PER_USER` \
            sockets, streams and pollers together", body = ErrorBody)))]
fn stream() {}

#[utoipa::path(get, path = "/api/v1/realtime/stream/rooms/{room_id}", tag = "realtime",
    summary = "Server-Sent Events of one chat room, for a member",
    description = "Frames as for `GET /stream` (`session:ready` first), limited to the room's \
        events; `feed` is ignored. Ends with `session:error` `FORBIDDEN` when the caller leaves \
        the room.",
    params(("room_id" = String, Path, description = "The room's id"), StreamParams,
        ("Last-Event-ID" = Option<String>, Header,
            description = "The last frame's `id`, as the browser sends it on reconnect")),
    responses(
        (status = 200, description = "The room's event stream", body = String,
            content_type = "text/event-stream"),
        (status = 403, description = "Not a member of this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 429, description = "`TOO_MANY_CONNECTIONS`: over `MAX_CONNECTIONS_PER_USER`",
            body = ErrorBody)))]
fn stream_room() {}

#[utoipa::path(get, path = "/api/v1/realtime/poll", tag = "realtime",
    summary = "Long polling: the events since `last_poll_id`",
    description = "Without `last_poll_id`, answers at once with the current cursor (load state \
        over REST, as `reset` says). With it, journaled events after it come at once; otherwise \
        the poll waits up to `timeout_ms` for one. Send `session` back so ephemeral events kept \
        between polls reach you. The token may be sent as `?token=`.",
    params(PollParams),
    responses(
        (status = 200, description = "Events, possibly none, and where to poll next",
            body = PollAnswer),
        (status = 429, description = "`TOO_MANY_CONNECTIONS`: over `MAX_CONNECTIONS_PER_USER`",
            body = ErrorBody)))]
fn poll() {}

#[utoipa::path(get, path = "/api/v1/realtime/status", tag = "realtime",
    summary = "The caller's live sessions by transport and node, and this node's counts",
    responses((status = 200, description = "Sessions and counts", body = SessionStatus)))]
fn session_status() {}

#[utoipa::path(post, path = "/api/v1/realtime/chat/rooms/{room_id}/typing", tag = "realtime",
    summary = "Typing on or off in a room (same as `chat:typing`)",
    params(("room_id" = String, Path, description = "The room's id")),
    request_body = TypingBody,
    responses(
        (status = 200, description = "Announced (or throttled)", body = Done),
        (status = 403, description = "Not a member of this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody)))]
fn typing() {}

#[utoipa::path(post, path = "/api/v1/realtime/chat/rooms/{room_id}/read", tag = "realtime",
    summary = "Move the caller's read watermark (same as `chat:read`)",
    params(("room_id" = String, Path, description = "The room's id")),
    request_body = WatermarkBody,
    responses(
        (status = 200, description = "The caller's unread count in the room", body = ReadAnswer),
        (status = 403, description = "Not a member of this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody)))]
fn mark_read() {}

#[utoipa::path(post, path = "/api/v1/realtime/chat/rooms/{room_id}/delivered", tag = "realtime",
    summary = "Move the caller's delivered watermark (same as `chat:delivered`)",
    params(("room_id" = String, Path, description = "The room's id")),
    request_body = WatermarkBody,
    responses(
        (status = 200, description = "Recorded", body = Done),
        (status = 403, description = "Not a member of this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody)))]
fn mark_delivered() {}

#[utoipa::path(put, path = "/api/v1/realtime/presence/status", tag = "realtime",
    summary = "Choose the caller's status (same as `presence:status`)",
    request_body = StatusBody,
    responses((status = 200, description = "The chosen status", body = StatusAnswer)))]
fn put_status() {}

// ---- Web Push ----

#[utoipa::path(get, path = "/api/v1/realtime/push/vapid-public-key", tag = "push",
    summary = "The VAPID public key to subscribe with (no token needed)",
    responses(
        (status = 200, description = "The key", body = VapidPublicKey),
        (status = 404, description = "Web Push is off (no `VAPID_PRIVATE_KEY`)",
            body = ErrorBody)))]
fn vapid_public_key() {}

#[utoipa::path(post, path = "/api/v1/realtime/push/subscriptions", tag = "push",
    summary = "Register a `PushSubscription` for the caller",
    description = "At most `PUSH_SUBSCRIPTIONS_PER_USER` per user (a new one replaces the \
        oldest). An endpoint another user registered moves to the caller.",
    request_body = SubscribeBody,
    responses(
        (status = 201, description = "The new subscription", body = Subscription),
        (status = 200, description = "The caller had this endpoint already", body = Subscription)))]
fn subscribe_push() {}

#[utoipa::path(get, path = "/api/v1/realtime/push/subscriptions", tag = "push",
    summary = "The caller's push subscriptions, newest first",
    responses((status = 200, description = "Every subscription (one page)",
        body = SubscriptionPage)))]
fn list_push_subscriptions() {}

#[utoipa::path(delete, path = "/api/v1/realtime/push/subscriptions/{id}", tag = "push",
    summary = "Remove one of the caller's push subscriptions",
    params(("id" = String, Path, description = "The subscription's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "Not one of the caller's subscriptions", body = ErrorBody)))]
fn unsubscribe_push() {}

// ---- service API ----

#[utoipa::path(put, path = "/api/v1/internal/users/{user_id}", tag = "service",
    summary = "Create or update a user's profile",
    params(("user_id" = String, Path, description = "The user's id (1 to 128 characters)")),
    request_body = UserBody,
    responses((status = 200, description = "The stored profile", body = UserProfile)))]
fn upsert_user() {}

#[utoipa::path(put, path = "/api/v1/internal/follows", tag = "service",
    summary = "Record that one user follows another (idempotent)",
    request_body = FollowBody,
    responses((status = 200, description = "The edge", body = FollowEdge)))]
fn follow() {}

#[utoipa::path(delete, path = "/api/v1/internal/follows", tag = "service",
    summary = "Remove a follow edge (idempotent)",
    request_body = FollowBody,
    responses((status = 204, description = "Gone, or never there")))]
fn unfollow() {}

#[utoipa::path(post, path = "/api/v1/internal/notifications", tag = "service",
    summary = "Create notifications and deliver the live ones",
    description = "One per distinct user. The same `dedupKey` for the same user within 24 h \
        creates nothing new.",
    request_body = NotificationBody,
    responses(
        (status = 201, description = "Created", body = CreatedNotifications),
        (status = 200, description = "Nothing new (deduplicated or already expired)",
            body = CreatedNotifications)))]
fn create_notifications() {}

#[utoipa::path(post, path = "/api/v1/internal/feed/activities", tag = "service",
    summary = "Store a feed activity and fan it out",
    request_body = ActivityBody,
    responses((status = 201, description = "The stored activity", body = Activity)))]
fn publish_activity() {}

#[utoipa::path(post, path = "/api/v1/internal/broadcast", tag = "service",
    summary = "Emit any event to rooms and/or users, cluster-wide",
    description = "`rooms` and `except` are Socket.IO room names (`chat:{id}`, `user:{id}`, \
        `feed:public`); `userIds` target `user:{id}` rooms. A socket in several targets gets \
        the event once.",
    request_body = BroadcastBody,
    responses((status = 202, description = "Handed to the adapter", body = Broadcasted)))]
fn broadcast() {}

// ---- operations ----

#[utoipa::path(get, path = "/health", tag = "operations",
    summary = "Liveness and dependencies, for balancers and orchestrators",
    responses(
        (status = 200, description = "Every dependency answers", body = Health),
        (status = 503, description = "A dependency is down", body = Health)))]
fn health() {}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text exposition format", body = String,
        content_type = "text/plain")))]
fn metrics() {}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", body = serde_json::Value)))]
fn openapi_document() {}

// ---- demo (only while `DEMO_ENABLED`) ----

#[utoipa::path(get, path = "/demo", tag = "demo",
    summary = "The demo page",
    responses((status = 200, description = "HTML", body = String, content_type = "text/html")))]
fn demo_page() {}

#[utoipa::path(get, path = "/demo/", tag = "demo",
    summary = "The demo page (trailing slash)",
    responses((status = 200, description = "HTML", body = String, content_type = "text/html")))]
fn demo_page_slash() {}

#[utoipa::path(get, path = "/demo/demo.js", tag = "demo",
    summary = "The demo page's script",
    responses((status = 200, description = "JavaScript", body = String,
        content_type = "text/javascript")))]
fn demo_script() {}

#[utoipa::path(get, path = "/demo/socket.io.min.js", tag = "demo",
    summary = "The vendored socket.io-client bundle",
    responses((status = 200, description = "JavaScript", body = String,
        content_type = "text/javascript")))]
fn demo_bundle() {}

#[utoipa::path(post, path = "/demo/token", tag = "demo",
    summary = "Sign a demo token for any user id",
    description = "Signed with this server's HS256 secret; a server verifying RS256/ES256 holds \
        no signing key and refuses.",
    request_body = TokenBody,
    responses(
        (status = 200, description = "A token", body = DemoToken),
        (status = 403, description = "This server cannot sign tokens", body = ErrorBody)))]
fn demo_token() {}
