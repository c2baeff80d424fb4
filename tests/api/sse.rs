//! The SSE stream (`GET /api/v1/realtime/stream`): auth before the stream starts, the first
//! `session:ready`, live events from Socket.IO and REST actions on one node and across two,
//! `Last-Event-ID` resume after a gap, room streams, the per-user limit over every transport,
//! and a stream nobody reads being dropped without harming the others.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::common::socket::PollingSocket;
use crate::common::{Backend, TestApp, spawn_app_with, spawn_cluster};

const STREAM: &str = "/api/v1/realtime/stream";
const SERVICE_KEY: &str = "sse-service-key-0123456789";

/// One SSE frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
    pub retry: Option<u64>,
}

/// A reader of one SSE response.
pub struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    /// Opens `path` (with its query) with an optional bearer token and `Last-Event-ID`;
    /// a non-200 answer is returned as it is.
    pub async fn open(
        app: &TestApp,
        path: &str,
        bearer: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Result<Self, reqwest::Response> {
        let mut request = reqwest::Client::new().get(app.url(path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("opening the stream");
        if response.status() != 200 {
            return Err(response);
        }
        let content_type = response.headers()["content-type"].to_str().unwrap_or("");
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Ok(Self {
            response,
            buffer: String::new(),
        })
    }

    /// Opens the user's stream with the token as query parameter (as `EventSource` does).
    pub async fn user(app: &TestApp, user: &str, query: &str) -> Self {
        let path = format!("{STREAM}?token={}{query}", app.token(user));
        Self::open(app, &path, None, None)
            .await
            .unwrap_or_else(|r| panic!("stream refused: {}", r.status()))
    }

    /// The next frame (comments skipped), or `None` when the stream ended.
    pub async fn try_next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut frame = Frame {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                    retry: None,
                };
                let mut data = String::new();
                let mut any = false;
                for line in block.lines() {
                    if line.starts_with(':') || line.is_empty() {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    any = true;
                    match field {
                        "id" => frame.id = Some(value.to_owned()),
                        "event" => frame.event = value.to_owned(),
                        "data" => data.push_str(value),
                        "retry" => frame.retry = value.parse().ok(),
                        _ => {}
                    }
                }
                if !any {
                    continue;
                }
                frame.data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return Some(frame);
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next frame, failing the test after 10 s or at the end of the stream.
    pub async fn next(&mut self) -> Frame {
        tokio::time::timeout(Duration::from_secs(10), self.try_next())
            .await
            .expect("no SSE frame within 10 s")
            .expect("the stream ended")
    }

    /// Skips frames until one named `event`.
    pub async fn next_named(&mut self, event: &str) -> Frame {
        loop {
            let frame = self.next().await;
            if frame.event == event {
                return frame;
            }
        }
    }
}

/// A room of `owner` with `others`, made over REST; returns its id.
pub async fn create_room(app: &TestApp, owner: &str, others: &[&str]) -> String {
    let response = app
        .client
        .post(app.url("/api/v1/realtime/chat/rooms"))
        .bearer_auth(app.token(owner))
        .json(&json!({ "type": "group", "name": "sse", "participants": others }))
        .send()
        .await
        .expect("creating a room");
    assert!(response.status().is_success(), "{}", response.status());
    let room: Value = response.json().await.expect("room JSON");
    room["id"].as_str().expect("room id").to_owned()
}

/// `POST …/messages` as `sender`; returns the message.
pub async fn send(app: &TestApp, sender: &str, room_id: &str, text: &str) -> Value {
    let response = app
        .client
        .post(app.url(&format!("/api/v1/realtime/chat/rooms/{room_id}/messages")))
        .bearer_auth(app.token(sender))
        .json(&json!({ "message": text }))
        .send()
        .await
        .expect("sending");
    assert_eq!(response.status(), 201);
    response.json().await.expect("message JSON")
}

/// A REST call as `user`, answering its status and JSON body.
pub async fn call(
    app: &TestApp,
    method: reqwest::Method,
    user: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let response = app
        .client
        .request(method, app.url(path))
        .bearer_auth(app.token(user))
        .json(&body)
        .send()
        .await
        .expect("REST call");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut list = vec![
        "--service-api-key",
        SERVICE_KEY,
        "--sse-keepalive-ms",
        "200",
        "--typing-throttle-ms",
        "0",
    ];
    list.extend_from_slice(extra);
    list
}

async fn app(extra: &[&'static str]) -> TestApp {
    spawn_app_with(Backend::Sqlite, &args(extra)).await
}

#[tokio::test]
async fn a_bad_or_missing_token_is_a_401_before_the_stream() {
    let app = app(&[]).await;
    for (path, bearer) in [
        (STREAM.to_owned(), None),
        (format!("{STREAM}?token=nope"), None),
        (STREAM.to_owned(), Some("nope")),
        (format!("{STREAM}?token="), None),
    ] {
        let refused = SseClient::open(&app, &path, bearer, None)
            .await
            .err()
            .unwrap_or_else(|| panic!("{path} {bearer:?} was accepted"));
        assert_eq!(refused.status(), 401);
        let body: Value = refused.json().await.expect("error JSON");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{path}");
    }
    let refused = SseClient::open(
        &app,
        &format!("{STREAM}?feed=sideways&token={}", app.token("a")),
        None,
        None,
    )
    .await
    .err()
    .expect("a bad feed is refused");
    assert_eq!(refused.status(), 400);
}

#[tokio::test]
async fn the_first_event_is_session_ready_with_a_cursor() {
    let app = app(&[]).await;
    let room = create_room(&app, "a", &["b"]).await;
    let mut stream = SseClient::open(&app, STREAM, Some(&app.token("b")), None)
        .await
        .expect("stream with a bearer header");
    let ready = stream.next().await;
    assert_eq!(ready.event, "session:ready");
    assert_eq!(ready.retry, Some(3000), "the retry hint");
    let data = &ready.data;
    assert_eq!(data["userId"], "b");
    assert_eq!(data["rooms"], json!([room]));
    assert!(data["unreadNotifications"].is_u64(), "{data}");
    assert!(data["serverTime"].is_string());
    assert_eq!(data["recovered"], false);
    assert_eq!(data["reset"], json!(["chat", "notifications", "feed"]));
    assert_eq!(
        ready.id.as_deref(),
        data["cursor"].as_str(),
        "the id is the cursor"
    );
    let status: Value = app
        .client
        .get(app.url("/api/v1/realtime/status"))
        .bearer_auth(app.token("b"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status JSON");
    assert_eq!(status["byTransport"]["sse"], 1, "{status}");
    assert_eq!(status["nodeCounts"]["sse"], 1, "{status}");
    let health: Value = app.get("/health").await.json().await.expect("health");
    assert_eq!(health["transports"]["sse"], 1, "{health}");
    drop(stream);
    // The registry forgets the stream once its response is dropped.
    for _ in 0..100 {
        if app
            .core
            .sessions
            .count(switchboard::pipeline::sessions::Transport::Sse)
            == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the closed stream is still registered");
}

#[tokio::test]
async fn chat_typing_receipts_and_presence_from_rest_and_sockets_reach_a_stream() {
    let app = app(&[]).await;
    // b follows a, so b hears a's presence.
    let response = app
        .client
        .put(app.url("/api/v1/internal/follows"))
        .header("x-api-key", SERVICE_KEY)
        .json(&json!({ "followerId": "b", "followeeId": "a" }))
        .send()
        .await
        .expect("following");
    assert!(response.status().is_success(), "{}", response.status());
    let room = create_room(&app, "a", &["b", "c"]).await;
    let mut stream = SseClient::user(&app, "b", "").await;
    stream.next_named("session:ready").await;

    // A message over REST: the frame carries the payload and a cursor.
    let message = send(&app, "a", &room, "hello over REST").await;
    let frame = stream.next_named("chat:new_message").await;
    assert_eq!(frame.data["roomId"], room.as_str());
    assert_eq!(frame.data["message"]["id"], message["id"]);
    let first = frame.id.expect("a journaled event has an id");

    // A message over Socket.IO.
    let (mut socket, _) = PollingSocket::connect(&app.address, &app.token("a"))
        .await
        .expect("socket connects");
    let ack = socket
        .emit_with_ack(
            "chat:message",
            json!({ "roomId": room, "message": "over the socket" }),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let frame = stream.next_named("chat:new_message").await;
    assert_eq!(frame.data["message"]["content"], "over the socket");
    assert_ne!(frame.id.as_deref(), Some(first.as_str()));

    // Typing over REST: ephemeral, so no id.
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        "a",
        &format!("/api/v1/realtime/chat/rooms/{room}/typing"),
        json!({ "isTyping": true }),
    )
    .await;
    assert_eq!(status, 200);
    let frame = stream.next_named("chat:user_typing").await;
    assert_eq!(
        frame.data,
        json!({ "roomId": room, "userId": "a", "isTyping": true })
    );
    assert_eq!(frame.id, None);

    // Another member's read and delivered watermarks over REST.
    let seq = message["seq"].as_i64().expect("seq");
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        "c",
        &format!("/api/v1/realtime/chat/rooms/{room}/delivered"),
        json!({ "upToSeq": seq }),
    )
    .await;
    assert_eq!(status, 200);
    let frame = stream.next_named("chat:messages_delivered").await;
    assert_eq!(frame.data["upToSeq"], seq);
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        "c",
        &format!("/api/v1/realtime/chat/rooms/{room}/read"),
        json!({ "upToSeq": seq + 1 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unreadCount"], 0);
    let frame = stream.next_named("chat:messages_read").await;
    assert_eq!(frame.data["userId"], "c");

    // Presence status over REST reaches a follower.
    let (status, _) = call(
        &app,
        reqwest::Method::PUT,
        "a",
        "/api/v1/realtime/presence/status",
        json!({ "status": "busy" }),
    )
    .await;
    assert_eq!(status, 200);
    loop {
        let frame = stream.next_named("presence:update").await;
        if frame.data["userId"] == "a" && frame.data["status"] == "busy" {
            break;
        }
    }
    socket.close().await;
}

#[tokio::test]
async fn rest_actions_refuse_bad_input_and_strangers() {
    let app = app(&[]).await;
    let room = create_room(&app, "a", &["b"]).await;
    let typing = format!("/api/v1/realtime/chat/rooms/{room}/typing");
    let cases = [
        ("a", typing.clone(), json!({ "isTyping": "yes" }), 400),
        ("a", typing.clone(), json!({}), 400),
        ("c", typing.clone(), json!({ "isTyping": true }), 403),
        (
            "a",
            "/api/v1/realtime/chat/rooms/nope/typing".to_owned(),
            json!({ "isTyping": true }),
            404,
        ),
        (
            "a",
            format!("/api/v1/realtime/chat/rooms/{room}/read"),
            json!({ "upToSeq": -1 }),
            400,
        ),
        (
            "c",
            format!("/api/v1/realtime/chat/rooms/{room}/read"),
            json!({ "upToSeq": 1 }),
            403,
        ),
        (
            "a",
            "/api/v1/realtime/presence/status".to_owned(),
            json!({ "status": "offline" }),
            400,
        ),
    ];
    for (user, path, body, expected) in cases {
        let method = if path.ends_with("/status") {
            reqwest::Method::PUT
        } else {
            reqwest::Method::POST
        };
        let (status, answer) = call(&app, method, user, &path, body.clone()).await;
        assert_eq!(status, expected, "{user} {path} {body}: {answer}");
        assert!(answer["error"]["code"].is_string(), "{answer}");
    }
}

#[tokio::test]
async fn notifications_feed_and_membership_reach_a_stream() {
    let app = app(&[]).await;
    let mut stream = SseClient::user(&app, "b", "&feed=all").await;
    stream.next_named("session:ready").await;

    // A room created with b in it: b's stream hears it and then the room's messages.
    let room = create_room(&app, "a", &["b"]).await;
    let frame = stream.next_named("chat:room_updated").await;
    assert_eq!(frame.data["room"]["id"], room.as_str(), "{:?}", frame.data);
    send(&app, "a", &room, "in the new room").await;
    let frame = stream.next_named("chat:new_message").await;
    assert_eq!(frame.data["message"]["content"], "in the new room");

    // A notification from the service API.
    let response = app
        .client
        .post(app.url("/api/v1/internal/notifications"))
        .header("x-api-key", SERVICE_KEY)
        .json(&json!({ "userIds": ["b"], "type": "system", "title": "hi", "message": "there" }))
        .send()
        .await
        .expect("notifying");
    assert!(response.status().is_success(), "{}", response.status());
    let frame = stream.next_named("notification:new").await;
    assert_eq!(frame.data["title"], "hi", "{:?}", frame.data);
    assert!(frame.id.is_some());

    // A public feed activity.
    let response = app
        .client
        .post(app.url("/api/v1/internal/feed/activities"))
        .header("x-api-key", SERVICE_KEY)
        .json(&json!({ "actorId": "a", "activityType": "post", "targetId": "t1", "targetType": "post", "audience": "public" }))
        .send()
        .await
        .expect("publishing");
    assert!(response.status().is_success(), "{}", response.status());
    let frame = stream.next_named("feed:new_post").await;
    assert_eq!(frame.data["actorId"], "a", "{:?}", frame.data);

    // Removed from the room: the removal arrives, later messages of the room do not.
    let (status, _) = call(
        &app,
        reqwest::Method::DELETE,
        "a",
        &format!("/api/v1/realtime/chat/rooms/{room}/members/b"),
        Value::Null,
    )
    .await;
    assert!(status < 300, "{status}");
    let frame = stream.next_named("chat:room_updated").await;
    assert_eq!(frame.data["change"], "member_removed", "{:?}", frame.data);
    send(&app, "a", &room, "after the removal").await;
    let response = app
        .client
        .post(app.url("/api/v1/internal/broadcast"))
        .header("x-api-key", SERVICE_KEY)
        .json(&json!({ "event": "marker", "data": {}, "userIds": ["b"] }))
        .send()
        .await
        .expect("broadcasting");
    assert!(response.status().is_success());
    let frame = stream.next().await;
    assert_eq!(
        frame.event, "marker",
        "nothing of the room after the removal: {frame:?}"
    );
}

#[tokio::test]
async fn last_event_id_resumes_after_a_gap() {
    let app = app(&[]).await;
    let room = create_room(&app, "a", &["b"]).await;
    let mut stream = SseClient::user(&app, "b", "").await;
    let ready = stream.next_named("session:ready").await;
    send(&app, "a", &room, "one").await;
    let seen = stream.next_named("chat:new_message").await;
    drop(stream);

    send(&app, "a", &room, "two").await;
    send(&app, "a", &room, "three").await;
    let mut stream = SseClient::open(&app, STREAM, Some(&app.token("b")), seen.id.as_deref())
        .await
        .expect("reconnecting");
    let again = stream.next().await;
    assert_eq!(again.event, "session:ready");
    assert_eq!(again.data["recovered"], true, "{:?}", again.data);
    assert_eq!(again.data["reset"], json!([]));
    assert_eq!(again.data["replayed"], 2);
    for text in ["two", "three"] {
        let frame = stream.next().await;
        assert_eq!(frame.event, "chat:new_message");
        assert_eq!(frame.data["message"]["content"], text);
    }
    send(&app, "a", &room, "four").await;
    let frame = stream.next().await;
    assert_eq!(
        frame.data["message"]["content"], "four",
        "live after the replay"
    );

    // The `cursor` query does the same; a cursor of another database resets everything.
    let path = format!(
        "{STREAM}?token={}&cursor={}",
        app.token("b"),
        ready.data["cursor"].as_str().expect("cursor")
    );
    let mut stream = SseClient::open(&app, &path, None, None)
        .await
        .expect("cursor query");
    assert_eq!(stream.next().await.data["replayed"], 4);
    let mut stream = SseClient::open(&app, STREAM, Some(&app.token("b")), Some("zzzz:1"))
        .await
        .expect("a foreign cursor still connects");
    let ready = stream.next().await;
    assert_eq!(ready.data["recovered"], false);
    assert_eq!(
        ready.data["reset"],
        json!(["chat", "notifications", "feed"])
    );
}

#[tokio::test]
async fn a_room_stream_checks_membership_and_keeps_to_its_room() {
    let app = app(&[]).await;
    let room = create_room(&app, "a", &["b"]).await;
    let other = create_room(&app, "a", &["b"]).await;
    let token = app.token("c");
    let refused = SseClient::open(
        &app,
        &format!("{STREAM}/rooms/{room}?token={token}"),
        None,
        None,
    )
    .await
    .err()
    .expect("a stranger is refused");
    assert_eq!(refused.status(), 403);
    let refused = SseClient::open(
        &app,
        &format!("{STREAM}/rooms/nope?token={token}"),
        None,
        None,
    )
    .await
    .err()
    .expect("no such room");
    assert_eq!(refused.status(), 404);

    let path = format!("{STREAM}/rooms/{room}?token={}", app.token("b"));
    let mut stream = SseClient::open(&app, &path, None, None)
        .await
        .expect("member");
    assert_eq!(stream.next().await.event, "session:ready");
    send(&app, "a", &other, "elsewhere").await;
    send(&app, "a", &room, "here").await;
    let frame = stream.next_named("chat:new_message").await;
    assert_eq!(frame.data["message"]["content"], "here");
}

#[tokio::test]
async fn the_connection_limit_counts_every_transport() {
    let app = app(&["--max-connections-per-user", "3"]).await;
    let (socket, _) = PollingSocket::connect(&app.address, &app.token("u"))
        .await
        .expect("first: a socket");
    let _sse = SseClient::user(&app, "u", "").await;
    let poll: Value = app
        .client
        .get(app.url("/api/v1/realtime/poll"))
        .bearer_auth(app.token("u"))
        .send()
        .await
        .expect("poll")
        .json()
        .await
        .expect("poll JSON");
    assert!(poll["session"].is_string(), "third: a poller {poll}");

    let refused = SseClient::open(&app, STREAM, Some(&app.token("u")), None)
        .await
        .err()
        .expect("a fourth stream is refused");
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.expect("error JSON");
    assert_eq!(body["error"]["code"], "TOO_MANY_CONNECTIONS");
    let refused = PollingSocket::connect(&app.address, &app.token("u"))
        .await
        .err()
        .expect("a fourth socket is refused");
    assert_eq!(refused.0, "TOO_MANY_CONNECTIONS");
    let response = app
        .client
        .get(app.url("/api/v1/realtime/poll"))
        .bearer_auth(app.token("u"))
        .send()
        .await
        .expect("poll");
    assert_eq!(response.status(), 429, "a new poller is refused too");

    // Closing the socket frees a slot for a stream.
    socket.close().await;
    for _ in 0..100 {
        if SseClient::open(&app, STREAM, Some(&app.token("u")), None)
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the socket's slot was not given back");
}

#[tokio::test]
async fn an_unread_stream_is_dropped_without_harming_the_others() {
    let app = app(&["--sse-queue-depth", "8"]).await;
    let room = create_room(&app, "a", &["b", "c"]).await;
    // c's stream is opened over a bare TCP connection with a tiny receive buffer, then never
    // read again.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    let mut stalled = socket
        .connect(format!("127.0.0.1:{}", app.port).parse().expect("address"))
        .await
        .expect("connecting");
    let request = format!(
        "GET {STREAM}?token={} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
        app.token("c")
    );
    stalled
        .write_all(request.as_bytes())
        .await
        .expect("request");
    let mut reader = SseClient::user(&app, "b", "").await;
    reader.next_named("session:ready").await;
    for _ in 0..100 {
        if app
            .core
            .sessions
            .count(switchboard::pipeline::sessions::Transport::Sse)
            == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.core
            .sessions
            .count(switchboard::pipeline::sessions::Transport::Sse),
        2
    );

    // Big broadcasts fill c's socket buffers, then its queue: c is closed, b reads them all.
    let big = "x".repeat(200_000);
    let mut sent = 0;
    while app
        .core
        .sessions
        .count(switchboard::pipeline::sessions::Transport::Sse)
        == 2
    {
        assert!(sent < 400, "the stalled stream was never closed");
        let response = app
            .client
            .post(app.url("/api/v1/internal/broadcast"))
            .header("x-api-key", SERVICE_KEY)
            .json(&json!({ "event": "bulk", "data": { "n": sent, "pad": big }, "rooms": [format!("chat:{room}")] }))
            .send()
            .await
            .expect("broadcasting");
        assert!(response.status().is_success(), "{}", response.status());
        sent += 1;
        let frame = reader.next_named("bulk").await;
        assert_eq!(frame.data["n"], sent - 1);
    }
    send(&app, "a", &room, "still flowing").await;
    let frame = reader.next_named("chat:new_message").await;
    assert_eq!(frame.data["message"]["content"], "still flowing");
    drop(stalled);
}

#[tokio::test]
async fn two_nodes_deliver_to_streams_and_resume_across_them() {
    let nodes = spawn_cluster(Backend::Sqlite, 2, &args(&[])).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let room = create_room(a, "a", &["b"]).await;
    let mut stream = SseClient::user(b, "b", "").await;
    stream.next_named("session:ready").await;

    // Sent on node A over REST, read on node B.
    send(a, "a", &room, "from node a").await;
    let frame = stream.next_named("chat:new_message").await;
    assert_eq!(frame.data["message"]["content"], "from node a");
    // Typing over REST on node A: ephemeral events cross nodes too.
    let (status, _) = call(
        a,
        reqwest::Method::POST,
        "a",
        &format!("/api/v1/realtime/chat/rooms/{room}/typing"),
        json!({ "isTyping": true }),
    )
    .await;
    assert_eq!(status, 200);
    stream.next_named("chat:user_typing").await;
    drop(stream);

    // Missed while away, resumed on the other node.
    send(b, "a", &room, "missed").await;
    let mut stream = SseClient::open(a, STREAM, Some(&a.token("b")), frame.id.as_deref())
        .await
        .expect("resuming on node A");
    let ready = stream.next().await;
    assert_eq!(ready.data["recovered"], true);
    let frame = stream.next().await;
    assert_eq!(frame.data["message"]["content"], "missed");

    // The status lists the stream with its node, from either node.
    let status: Value = b
        .client
        .get(b.url("/api/v1/realtime/status"))
        .bearer_auth(b.token("b"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("status JSON");
    let sessions = status["sessions"].as_array().expect("sessions");
    assert!(
        sessions
            .iter()
            .any(|s| s["transport"] == "sse" && s["node"] != status["node"]),
        "{status}"
    );
}
