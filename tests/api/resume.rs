//! Resume after a disconnect (issue #10): a socket that reconnects with its last cursor gets
//! exactly the persisted events it missed, once, in order, each with an increasing cursor,
//! then the live ones — on one node and across two (through Redis); or an explicit `reset`
//! when that is not possible. Also: the dispatcher delivers an event whose bus message was lost.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard::pipeline::{Cursor, Event, Kind, journal};

use crate::common::socket::PollingSocket;
use crate::common::{Backend, TestApp, spawn_app_with, spawn_cluster};

const SERVICE_KEY: &str = "service-key-for-the-resume-tests-012";
const REST: &str = "/api/v1/realtime";

fn args() -> Vec<&'static str> {
    vec![
        "--service-api-key",
        SERVICE_KEY,
        // Gap and tail checks quick, so a lost event shows up fast.
        "--pipeline-gap-wait-ms",
        "50",
        "--pipeline-head-check-ms",
        "100",
    ]
}

/// Connects `user` with `cursor`/`feed` in its auth and waits until the handoff is over (the
/// `presence:snapshot` that follows it): the replayed events are queued by then.
async fn connect(
    app: &TestApp,
    user: &str,
    cursor: Option<&str>,
    feed: Option<&str>,
) -> (PollingSocket, Value) {
    let mut auth = json!({ "token": app.token(user) });
    if let Some(c) = cursor {
        auth["cursor"] = json!(c);
    }
    if let Some(f) = feed {
        auth["feed"] = json!(f);
    }
    let (mut socket, ready) = PollingSocket::connect_with(&app.address, auth)
        .await
        .unwrap_or_else(|e| panic!("{user} refused: {e:?}"));
    socket.next_event("presence:snapshot").await;
    (socket, ready)
}

/// The persisted events (those with a cursor) the socket got so far, in order, as
/// `(name, payload, cursor)`; ephemeral ones are dropped. An ack is the barrier: everything
/// sent before it is queued by then.
async fn journaled(socket: &mut PollingSocket) -> Vec<(String, Value, String)> {
    let _ = socket
        .emit_with_ack("chat:leave", json!({ "roomId": "none" }))
        .await;
    socket
        .take_events()
        .into_iter()
        .filter_map(|(name, args)| match args.as_slice() {
            [payload, Value::String(cursor)] => Some((name, payload.clone(), cursor.clone())),
            _ => None,
        })
        .collect()
}

fn cursor_id(cursor: &str) -> u64 {
    cursor.parse::<Cursor>().expect("a cursor").id
}

/// Cursors strictly increase, and the last one is where the socket now stands.
fn assert_increasing(events: &[(String, Value, String)]) {
    for pair in events.windows(2) {
        assert!(
            cursor_id(&pair[0].2) < cursor_id(&pair[1].2),
            "cursors must increase: {events:?}"
        );
    }
}

async fn call(app: &TestApp, method: &str, path: &str, user: &str, body: Value) -> Value {
    let url = app.url(&format!("{REST}{path}"));
    let request = match method {
        "POST" => app.client.post(url),
        "PATCH" => app.client.patch(url),
        "PUT" => app.client.put(url),
        "DELETE" => app.client.delete(url),
        _ => app.client.get(url),
    };
    let response = request
        .bearer_auth(app.token(user))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn service(app: &TestApp, method: &str, path: &str, body: Value) {
    let url = app.url(&format!("/api/v1/internal{path}"));
    let request = match method {
        "PUT" => app.client.put(url),
        _ => app.client.post(url),
    };
    let response = request
        .header("x-api-key", SERVICE_KEY)
        .json(&body)
        .send()
        .await
        .expect("service call");
    assert!(
        response.status().is_success(),
        "{method} {path}: {}",
        response.status()
    );
}

async fn group(app: &TestApp, owner: &str, others: &[&str]) -> String {
    let room = call(
        app,
        "POST",
        "/chat/rooms",
        owner,
        json!({ "participants": others, "type": "group", "name": "resume" }),
    )
    .await;
    room["id"].as_str().expect("room id").to_owned()
}

async fn send(app: &TestApp, user: &str, room: &str, text: &str) -> Value {
    call(
        app,
        "POST",
        &format!("/chat/rooms/{room}/messages"),
        user,
        json!({ "message": text }),
    )
    .await
}

/// Everything that happens to bob while away, through `actor_node` (bob's rooms: `room`, with
/// alice and dave, and `gone`, which he is removed from). Returns the event names bob must get, in order.
async fn while_away(
    actor_node: &TestApp,
    dave: &mut PollingSocket,
    room: &str,
    gone: &str,
) -> Vec<&'static str> {
    let sent = send(actor_node, "alice", room, "missed one").await;
    let message = sent.get("message").unwrap_or(&sent);
    let id = message["id"].as_str().expect("message id").to_owned();
    let seq = message["seq"].as_i64().expect("seq");
    call(
        actor_node,
        "PATCH",
        &format!("/chat/rooms/{room}/messages/{id}"),
        "alice",
        json!({ "message": "edited" }),
    )
    .await;
    call(
        actor_node,
        "DELETE",
        &format!("/chat/rooms/{room}/messages/{id}"),
        "alice",
        json!({}),
    )
    .await;
    call(
        actor_node,
        "PATCH",
        &format!("/chat/rooms/{room}"),
        "alice",
        json!({ "name": "renamed" }),
    )
    .await;
    call(
        actor_node,
        "POST",
        &format!("/chat/rooms/{room}/members"),
        "alice",
        json!({ "userIds": ["carol"] }),
    )
    .await;
    call(
        actor_node,
        "DELETE",
        &format!("/chat/rooms/{room}/members/carol"),
        "alice",
        json!({}),
    )
    .await;
    // dave (another member) receives, then reads, what alice sent (a read implies delivery,
    // so the other order would move only one watermark).
    let delivered = dave
        .emit_with_ack("chat:delivered", json!({ "roomId": room, "upToSeq": seq }))
        .await;
    assert!(delivered.get("error").is_none(), "{delivered}");
    let read = dave
        .emit_with_ack("chat:read", json!({ "roomId": room, "upToSeq": seq }))
        .await;
    assert!(read.get("error").is_none(), "{read}");
    call(
        actor_node,
        "DELETE",
        &format!("/chat/rooms/{gone}/members/bob"),
        "alice",
        json!({}),
    )
    .await;
    send(actor_node, "alice", gone, "bob is no longer here").await;
    service(
        actor_node,
        "POST",
        "/notifications",
        json!({ "userIds": ["bob"], "type": "like", "title": "A like", "message": "x" }),
    )
    .await;
    // bob reads it from another device (REST): his sockets learn it on resume.
    call(
        actor_node,
        "PUT",
        "/notifications/read",
        "bob",
        json!({ "all": true }),
    )
    .await;
    vec![
        "chat:new_message",
        "chat:message_updated",
        "chat:message_updated",
        "chat:room_updated",
        "chat:room_updated",
        "chat:room_updated",
        "chat:messages_delivered",
        "chat:messages_read",
        "chat:room_updated",
        "notification:new",
        "notification:read",
    ]
}

/// Disconnect, miss every kind of persisted event, resume on `back_on`: exactly the missed
/// events, once, in order, increasing cursors, then live ones.
async fn resume_case(first: &TestApp, actor_node: &TestApp, back_on: &TestApp) {
    let room = group(first, "alice", &["bob", "dave"]).await;
    let gone = group(first, "alice", &["bob"]).await;
    let (mut dave, _) = connect(actor_node, "dave", None, None).await;
    let (mut bob, ready) = connect(first, "bob", None, None).await;
    assert_eq!(ready["recovered"], json!(false), "a fresh client: {ready}");
    assert_eq!(ready["reset"], json!(["chat", "notifications", "feed"]));
    assert_eq!(ready["replayed"], json!(0));
    let cursor = ready["cursor"].as_str().expect("a cursor").to_owned();
    // Live events carry cursors past the one session:ready gave.
    send(actor_node, "alice", &room, "live before").await;
    let live = bob.next_event_args("chat:new_message").await;
    let before = live[1].as_str().expect("a trailing cursor").to_owned();
    assert!(cursor_id(&before) > cursor_id(&cursor));
    assert_eq!(
        live[0]["message"]["content"], "live before",
        "payload unchanged"
    );
    bob.close().await;

    let expected = while_away(actor_node, &mut dave, &room, &gone).await;

    let (mut bob, ready) = connect(back_on, "bob", Some(&before), None).await;
    assert_eq!(ready["recovered"], json!(true), "{ready}");
    assert_eq!(ready["reset"], json!([]));
    let got = journaled(&mut bob).await;
    let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, expected, "{got:#?}");
    assert_eq!(ready["replayed"], json!(expected.len()));
    assert_increasing(&got);
    assert_eq!(
        ready["cursor"].as_str(),
        got.last().map(|e| e.2.as_str()),
        "session:ready's cursor is where the replay leaves the client"
    );
    let contents: Vec<&Value> = got.iter().map(|e| &e.1).collect();
    assert_eq!(contents[0]["message"]["content"], "missed one");
    assert_eq!(contents[1]["message"]["content"], "edited");
    assert_eq!(contents[3]["change"], "renamed");
    assert_eq!(contents[4]["change"], "member_added");
    assert_eq!(contents[5]["change"], "member_removed");
    assert_eq!(contents[8]["change"], "member_removed");
    assert_eq!(contents[8]["room"]["id"], json!(gone));
    assert_eq!(contents[10]["all"], json!(true));
    assert_eq!(contents[10]["unreadCount"], json!(0));

    // Then live, once, after the replay.
    send(actor_node, "alice", &room, "live after").await;
    let live = bob.next_event_args("chat:new_message").await;
    assert_eq!(live[0]["message"]["content"], "live after");
    let last = got.last().map(|e| cursor_id(&e.2)).unwrap_or_default();
    assert!(cursor_id(live[1].as_str().expect("cursor")) > last);
    let rest = journaled(&mut bob).await;
    assert!(rest.is_empty(), "nothing twice: {rest:?}");
}

async fn every_kind_is_resumed_on_one_node(backend: Backend) {
    let app = spawn_app_with(backend, &args()).await;
    resume_case(&app, &app, &app).await;
}

async fn a_cursor_that_cannot_be_resumed_resets(backend: Backend) {
    let mut a = args();
    a.extend(["--resume-max-events", "3"]);
    let app = spawn_app_with(backend, &a).await;
    let room = group(&app, "alice", &["bob"]).await;
    let (bob, ready) = connect(&app, "bob", None, None).await;
    let cursor = ready["cursor"].as_str().expect("cursor").to_owned();
    bob.close().await;

    for (label, sent) in [
        ("another database's", "zzzz9999:1".to_owned()),
        ("garbage", "not a cursor".to_owned()),
        (
            "ahead of the journal",
            format!("{}:999999", app.core.pipeline.epoch()),
        ),
    ] {
        let (socket, ready) = connect(&app, "bob", Some(&sent), None).await;
        assert_eq!(ready["recovered"], json!(false), "{label}: {ready}");
        assert_eq!(
            ready["reset"],
            json!(["chat", "notifications", "feed"]),
            "{label}"
        );
        assert_eq!(ready["replayed"], json!(0), "{label}");
        socket.close().await;
    }

    // Within the limit: recovered.
    for i in 0..3 {
        send(&app, "alice", &room, &format!("m{i}")).await;
    }
    let (socket, ready) = connect(&app, "bob", Some(&cursor), None).await;
    assert_eq!(ready["recovered"], json!(true), "{ready}");
    assert_eq!(ready["replayed"], json!(3));
    socket.close().await;
    // One more than RESUME_MAX_EVENTS: nothing replayed, everything to refetch.
    send(&app, "alice", &room, "m3").await;
    let (mut socket, ready) = connect(&app, "bob", Some(&cursor), None).await;
    assert_eq!(ready["recovered"], json!(false), "{ready}");
    assert_eq!(ready["reset"], json!(["chat", "notifications", "feed"]));
    assert!(journaled(&mut socket).await.is_empty());
    socket.close().await;

    // Chat events purged past the cursor: chat must be refetched, notifications still resume.
    let fresh = ready["cursor"].as_str().expect("cursor").to_owned();
    service(
        &app,
        "POST",
        "/notifications",
        json!({ "userIds": ["bob"], "type": "like", "title": "t", "message": "m" }),
    )
    .await;
    send(&app, "alice", &room, "purged soon").await;
    let purged = async {
        let tx = app.core.writes.begin().await?;
        let n = journal::purge(&*tx, Kind::Chat, i64::MAX, 1_000).await?;
        tx.commit().await?;
        Ok::<u64, sea_orm::DbErr>(n)
    }
    .await
    .expect("purging");
    assert!(purged >= 1);
    let (mut socket, ready) = connect(&app, "bob", Some(&fresh), None).await;
    assert_eq!(ready["recovered"], json!(false), "{ready}");
    assert_eq!(ready["reset"], json!(["chat"]));
    let names: Vec<String> = journaled(&mut socket)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(names, ["notification:new"]);
}

async fn feed_activities_resume_for_feed_sockets(backend: Backend) {
    let app = spawn_app_with(backend, &args()).await;
    service(
        &app,
        "PUT",
        "/follows",
        json!({ "followerId": "bob", "followeeId": "alice" }),
    )
    .await;
    let (bob, ready) = connect(&app, "bob", None, Some("following")).await;
    let cursor = ready["cursor"].as_str().expect("cursor").to_owned();
    bob.close().await;
    let post = json!({
        "activityType": "post", "actorId": "alice", "targetId": "p1", "targetType": "post",
        "content": "hello", "audience": "followers",
    });
    service(&app, "POST", "/feed/activities", post).await;
    // Without auth.feed, feed activities are not part of the resume.
    let (mut plain, ready) = connect(&app, "bob", Some(&cursor), None).await;
    assert_eq!(ready["recovered"], json!(true));
    assert!(journaled(&mut plain).await.is_empty());
    plain.close().await;
    let (mut bob, ready) = connect(&app, "bob", Some(&cursor), Some("following")).await;
    assert_eq!(ready["recovered"], json!(true), "{ready}");
    let got = journaled(&mut bob).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "feed:new_post");
    assert_eq!(got[0].1["targetId"], "p1");
    // And live, since auth.feed subscribed the socket.
    let again = json!({
        "activityType": "post", "actorId": "alice", "targetId": "p2", "targetType": "post",
        "content": "again", "audience": "followers",
    });
    service(&app, "POST", "/feed/activities", again).await;
    let live = bob.next_event_args("feed:new_post").await;
    assert_eq!(live[0]["targetId"], "p2");
    assert!(live[1].is_string(), "journaled: a cursor follows");
}

/// An event committed to the journal whose bus message never came (here: appended directly,
/// as if its node died between commit and publish) still reaches a connected socket, in order.
async fn an_event_missing_from_the_bus_is_filled_from_the_journal(backend: Backend) {
    let app = spawn_app_with(backend, &args()).await;
    let room = group(&app, "alice", &["bob"]).await;
    let (mut bob, _) = connect(&app, "bob", None, None).await;
    let mut lost = Event::new(
        "chat:new_message",
        &json!({ "roomId": room, "message": { "content": "lost on the bus" } }),
        vec![format!("chat:{room}")],
    )
    .expect("event")
    .journaled(Kind::Chat);
    let tx = app.core.writes.begin().await.expect("tx");
    journal::append(&*tx, std::slice::from_mut(&mut lost))
        .await
        .expect("append");
    tx.commit().await.expect("commit");
    // A later event arrives normally: the dispatcher holds it until the gap is filled.
    send(&app, "alice", &room, "after the lost one").await;
    let first = bob.next_event_args("chat:new_message").await;
    let second = bob.next_event_args("chat:new_message").await;
    assert_eq!(first[0]["message"]["content"], "lost on the bus");
    assert_eq!(second[0]["message"]["content"], "after the lost one");
    assert!(cursor_id(first[1].as_str().unwrap()) < cursor_id(second[1].as_str().unwrap()));
    // And a lost LAST event is found by the head check, with nothing after it.
    let mut tail = lost.clone();
    tail.id = None;
    let tx = app.core.writes.begin().await.expect("tx");
    journal::append(&*tx, std::slice::from_mut(&mut tail))
        .await
        .expect("append");
    tx.commit().await.expect("commit");
    let third = bob.next_event_args("chat:new_message").await;
    assert_eq!(
        third[1],
        json!(app.core.pipeline.cursor(tail.id.unwrap()).to_string())
    );
}

/// The purge task deletes chat events past `EVENT_RETENTION_CHAT_MS`: a cursor from before
/// them is told to refetch chat, and still gets the notifications it missed.
async fn retention_purges_and_resets_only_that_kind(backend: Backend) {
    let mut a = args();
    a.extend([
        "--event-retention-chat-ms",
        "1",
        "--event-purge-interval-ms",
        "20",
    ]);
    let app = spawn_app_with(backend, &a).await;
    let room = group(&app, "alice", &["bob"]).await;
    let (bob, ready) = connect(&app, "bob", None, None).await;
    let cursor = ready["cursor"].as_str().expect("cursor").to_owned();
    bob.close().await;
    send(&app, "alice", &room, "soon gone").await;
    service(
        &app,
        "POST",
        "/notifications",
        json!({ "userIds": ["bob"], "type": "like", "title": "t", "message": "m" }),
    )
    .await;
    let (bob, ready) = loop {
        let (socket, ready) = connect(&app, "bob", Some(&cursor), None).await;
        if ready["reset"] == json!(["chat"]) {
            break (socket, ready);
        }
        // Not purged yet: what it got is the full replay.
        assert_eq!(ready["recovered"], json!(true), "{ready}");
        socket.close().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let mut bob = bob;
    assert_eq!(ready["recovered"], json!(false));
    let names: Vec<String> = journaled(&mut bob).await.into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["notification:new"]);
}

backend_tests!(
    retention_purges_and_resets_only_that_kind,
    every_kind_is_resumed_on_one_node,
    a_cursor_that_cannot_be_resumed_resets,
    feed_activities_resume_for_feed_sockets,
    an_event_missing_from_the_bus_is_filled_from_the_journal,
);

/// Two nodes on Redis: bob leaves node A, everything happens on node B, bob comes back on B.
#[tokio::test]
async fn every_kind_is_resumed_on_another_node() {
    let nodes = spawn_cluster(Backend::Sqlite, 2, &args()).await;
    resume_case(&nodes[0], &nodes[1], &nodes[1]).await;
}

/// Two nodes: bob on A resumes on A after everything happened on B (through the bus).
#[tokio::test]
async fn events_made_on_another_node_resume_here() {
    let nodes = spawn_cluster(Backend::Sqlite, 2, &args()).await;
    resume_case(&nodes[0], &nodes[1], &nodes[0]).await;
}

/// Messages sent continuously (on both nodes) while bob's sockets keep resuming: every
/// message is received exactly once across the sockets, in seq order, none missing.
#[tokio::test]
async fn messages_sent_while_resuming_arrive_exactly_once() {
    const MESSAGES: usize = 60;
    let nodes = spawn_cluster(Backend::Sqlite, 2, &args()).await;
    let room = group(&nodes[0], "alice", &["bob"]).await;
    let (bob, ready) = connect(&nodes[0], "bob", None, None).await;
    bob.close().await;
    let mut cursor = ready["cursor"].as_str().map(str::to_owned);
    let senders = {
        let (a, b) = (
            (nodes[0].address.clone(), nodes[0].token("alice")),
            (nodes[1].address.clone(), nodes[1].token("alice")),
        );
        let room = room.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..MESSAGES {
                let (address, token) = if i % 2 == 0 { &a } else { &b };
                let response = client
                    .post(format!("{address}{REST}/chat/rooms/{room}/messages"))
                    .bearer_auth(token)
                    .json(&json!({ "message": format!("n{i}") }))
                    .send()
                    .await
                    .expect("send");
                assert_eq!(response.status(), StatusCode::CREATED);
            }
        })
    };
    let mut seqs: Vec<i64> = Vec::new();
    let mut round = 0;
    loop {
        let node = &nodes[round % 2];
        round += 1;
        // Checked before connecting: once the senders are done, every message is committed.
        let done = senders.is_finished();
        let (mut bob, ready) = connect(node, "bob", cursor.as_deref(), None).await;
        assert_eq!(ready["recovered"], json!(true), "{ready}");
        cursor = ready["cursor"].as_str().map(str::to_owned);
        for (name, payload, c) in journaled(&mut bob).await {
            if name == "chat:new_message" {
                seqs.push(payload["message"]["seq"].as_i64().expect("seq"));
            }
            cursor = Some(c);
        }
        bob.close().await;
        if done {
            break;
        }
        assert!(round < 10_000, "the senders never finished");
    }
    let unique: HashSet<i64> = seqs.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seqs.len(),
        "a message arrived twice: {seqs:?}"
    );
    let expected: Vec<i64> = (1..=MESSAGES as i64).collect();
    assert_eq!(seqs, expected, "every message, in order");
}

/// A rolling restart: node A is shut down gracefully while messages are being sent through it.
/// Every message A answered 201 for reaches bob on node B, live or on his resume, exactly once.
#[tokio::test]
async fn a_node_shut_down_gracefully_loses_nothing() {
    let mut nodes = spawn_cluster(Backend::Sqlite, 2, &args()).await;
    // A is the second node: the first holds the SQLite file both use.
    let a = nodes.pop().expect("node a");
    let b = nodes.pop().expect("node b");
    let room = group(&a, "alice", &["bob"]).await;
    let (mut bob, _) = connect(&b, "bob", None, None).await;
    let (address, token) = (a.address.clone(), a.token("alice"));
    let sender = {
        let room = room.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut acknowledged = Vec::new();
            for i in 0..10_000 {
                let sent = client
                    .post(format!("{address}{REST}/chat/rooms/{room}/messages"))
                    .bearer_auth(&token)
                    .json(&json!({ "message": format!("r{i}") }))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        let body: Value = r.json().await.expect("message body");
                        let message = body.get("message").unwrap_or(&body);
                        acknowledged.push(message["seq"].as_i64().expect("seq"));
                    }
                    // Shutting down: refused or cut off; the client would retry elsewhere.
                    _ => break,
                }
            }
            acknowledged
        })
    };
    // Some traffic first, then the graceful stop of A in the middle of it.
    let first = bob.next_event_args("chat:new_message").await;
    assert!(first[1].is_string());
    drop(a);
    let acknowledged = sender.await.expect("sender");
    assert!(!acknowledged.is_empty());
    let mut seqs = vec![first[0]["message"]["seq"].as_i64().expect("seq")];
    let mut cursor = first[1].as_str().expect("cursor").to_owned();
    for (name, payload, c) in journaled(&mut bob).await {
        if name == "chat:new_message" {
            seqs.push(payload["message"]["seq"].as_i64().expect("seq"));
        }
        cursor = c;
    }
    bob.close().await;
    // Whatever did not arrive live (it all should) comes with the resume on B.
    let (mut bob, ready) = connect(&b, "bob", Some(&cursor), None).await;
    assert_eq!(ready["recovered"], json!(true), "{ready}");
    for (name, payload, _) in journaled(&mut bob).await {
        if name == "chat:new_message" {
            seqs.push(payload["message"]["seq"].as_i64().expect("seq"));
        }
    }
    let unique: HashSet<i64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), seqs.len(), "nothing twice: {seqs:?}");
    for seq in &acknowledged {
        assert!(
            unique.contains(seq),
            "message {seq} was acknowledged and lost"
        );
    }
}
