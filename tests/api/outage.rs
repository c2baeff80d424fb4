//! Redis and database outages: what a node refuses, what it keeps serving at full speed, and
//! how it converges once the dependency is back. Each test owns the Redis or PostgreSQL it
//! stops, so the shared ones other tests use stay up.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use switchboard::auth::AuthUser;
use switchboard::domain::chat::{HistoryQuery, NewMessage, NewRoom, Room, RoomType};
use switchboard::error::ErrorCode;

use crate::common::socket::{PollingSocket, Refused};
use crate::common::{
    Backend, OwnPostgres, OwnRedis, TestApp, spawn_app_on_database, spawn_cluster_on,
};

/// Bounds that tell "failed fast" from "waited on a dependency known to be down" with a wide
/// margin on a loaded machine: fred's command timeout is 2 s per call (a connect and five sends
/// waited 14 s before), and the database tests set a 20 s pool wait (and `/health` waited 10 s).
const NODE_BUDGET: Duration = Duration::from_secs(6);
const FAST: Duration = Duration::from_secs(5);

/// Waits until `done` holds, polling every 20 ms, failing the test after `within`.
async fn wait_for(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn redis_down_everywhere(nodes: &[TestApp]) {
    wait_for(
        "every node notices Redis is down",
        Duration::from_secs(10),
        async || nodes.iter().all(|n| !n.core.cluster_reachable()),
    )
    .await;
}

async fn redis_back_everywhere(nodes: &[TestApp]) {
    wait_for(
        "every node reconnects to Redis",
        Duration::from_secs(15),
        async || nodes.iter().all(|n| n.core.cluster_reachable()),
    )
    .await;
}

fn user(id: &str) -> AuthUser {
    AuthUser {
        id: id.to_owned(),
        name: id.to_owned(),
        name_from_token: true,
    }
}

fn text(room_id: &str, content: &str) -> NewMessage {
    NewMessage {
        room_id: room_id.to_owned(),
        content: content.to_owned(),
        message_type: None,
        reply_to_id: None,
        client_message_id: None,
    }
}

async fn group(app: &TestApp, owner: &str, others: &[&str]) -> Room {
    let (room, _) = app
        .core
        .chat
        .create_room(
            owner,
            NewRoom {
                participants: others.iter().map(|s| (*s).to_owned()).collect(),
                room_type: Some(RoomType::Group),
                name: Some("outage".into()),
            },
        )
        .await
        .expect("creating a group");
    room
}

async fn socket(app: &TestApp, user_id: &str) -> PollingSocket {
    let (socket, _) = PollingSocket::connect(&app.address, &app.token(user_id))
        .await
        .unwrap_or_else(|Refused(code)| panic!("{user_id} refused: {code}"));
    socket
}

/// Whether the node lets `user_id` act in the room (the check behind sending, sync, history).
async fn lets_in(app: &TestApp, room_id: &str, user_id: &str) -> bool {
    match app.core.chat.require_member(room_id, user_id).await {
        Ok(_) => true,
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::Forbidden, "{e:?}");
            false
        }
    }
}

/// A member removed on one node while Redis is down (the invalidation cannot be published)
/// loses access on the other node too: at once while the outage lasts, since caches are not
/// trusted then, and for good once Redis is back. The cache TTL is set far beyond the test, so
/// only the outage handling can pass it.
async fn a_member_removed_while_redis_is_down_loses_access_on_every_node(backend: Backend) {
    let mut redis = OwnRedis::start();
    let nodes = spawn_cluster_on(
        backend,
        2,
        &redis.url(),
        &["--membership-cache-ttl-ms", "3600000"],
    )
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let room = group(a, "alice", &["bob"]).await;
    assert!(lets_in(b, &room.id, "bob").await, "node b caches bob in");

    redis.stop();
    redis_down_everywhere(&nodes).await;
    a.core
        .chat
        .remove_member("alice", &room.id, "bob")
        .await
        .expect("removing bob during the outage");
    wait_for(
        "node b refuses bob during the outage",
        Duration::from_secs(5),
        async || !lets_in(b, &room.id, "bob").await,
    )
    .await;

    redis.resume();
    redis_back_everywhere(&nodes).await;
    for node in &nodes {
        wait_for(
            "every node refuses bob after the outage",
            Duration::from_secs(10),
            async || !lets_in(node, &room.id, "bob").await,
        )
        .await;
        let sent = node
            .core
            .chat
            .send_message(&user("bob"), text(&room.id, "still here?"))
            .await;
        assert_eq!(sent.err().map(|e| e.code()), Some(ErrorCode::Forbidden));
    }
    // And it stays so: nothing re-fills a stale entry.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!lets_in(b, &room.id, "bob").await);
}

backend_tests!(a_member_removed_while_redis_is_down_loses_access_on_every_node);

/// While Redis is down every node keeps serving its own sockets at full speed: connecting
/// (slot reservation), sending (rate limit) and the presence touch of every event do not wait
/// on fred's reconnect queue, and messages reach the other sockets of the node.
#[tokio::test]
async fn chat_flows_at_full_speed_on_each_node_while_redis_is_down() {
    let mut redis = OwnRedis::start();
    let nodes = spawn_cluster_on(Backend::Sqlite, 2, &redis.url(), &[]).await;
    let room = group(&nodes[0], "alice", &["bob"]).await;
    redis.stop();
    redis_down_everywhere(&nodes).await;

    for (i, node) in nodes.iter().enumerate() {
        let started = Instant::now();
        let mut alice = socket(node, "alice").await;
        let mut bob = socket(node, "bob").await;
        for n in 0..5 {
            let ack = alice
                .emit_with_ack(
                    "chat:message",
                    json!({ "roomId": room.id, "message": format!("node {i} #{n}") }),
                )
                .await;
            assert_eq!(ack["ok"], true, "node {i}: {ack}");
            let delivered = bob.next_event("chat:new_message").await;
            assert_eq!(delivered["message"]["content"], format!("node {i} #{n}"));
        }
        assert!(
            started.elapsed() < NODE_BUDGET,
            "node {i}: two connects and five messages took {:?}",
            started.elapsed()
        );
        alice.close().await;
        bob.close().await;
    }
}

/// A slot whose release failed during the outage is freed once Redis is back; sockets accepted
/// during the outage (limited per node meanwhile) get their slots then; and when they close,
/// no slot is left behind.
#[tokio::test]
async fn no_slot_survives_its_socket_after_a_redis_outage() {
    let mut redis = OwnRedis::start();
    let nodes = spawn_cluster_on(
        Backend::Sqlite,
        1,
        &redis.url(),
        &[
            "--slot-reconcile-interval-ms",
            "200",
            "--max-connections-per-user",
            "2",
        ],
    )
    .await;
    let app = &nodes[0];
    let count = async || {
        app.core
            .presence
            .store
            .connection_count("carol")
            .await
            .unwrap_or(u32::MAX)
    };

    let first = socket(app, "carol").await;
    assert_eq!(count().await, 1);

    redis.stop();
    redis_down_everywhere(&nodes).await;
    first.close().await;
    wait_for(
        "the closed socket is gone from the node",
        Duration::from_secs(5),
        async || app.core.slots.count("carol") == 0,
    )
    .await;
    let second = socket(app, "carol").await;
    let third = socket(app, "carol").await;
    match PollingSocket::connect(&app.address, &app.token("carol")).await {
        Err(Refused(code)) => assert_eq!(code, "TOO_MANY_CONNECTIONS"),
        Ok(_) => panic!("a third socket on the node was accepted during the outage (limit 2)"),
    }

    redis.resume();
    redis_back_everywhere(&nodes).await;
    wait_for(
        "Redis holds exactly the two live sockets' slots",
        Duration::from_secs(10),
        async || count().await == 2,
    )
    .await;

    second.close().await;
    third.close().await;
    wait_for(
        "no slot outlives its socket",
        Duration::from_secs(10),
        async || count().await == 0,
    )
    .await;
}

/// The events of `event` this socket has received so far, taken out of its inbox.
async fn contents_received(socket: &mut PollingSocket) -> Vec<String> {
    // The ack comes after every packet the server queued for this socket before it.
    let _ = socket
        .emit_with_ack("chat:leave", json!({ "roomId": "none" }))
        .await;
    let mut contents = Vec::new();
    while socket.has_received("chat:new_message") {
        let event = socket.next_event("chat:new_message").await;
        contents.push(
            event["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    contents
}

/// A member removed through one node while Redis is down has sockets on another node: the
/// cross-node leave cannot be published then, and must not be dropped. Once Redis is back,
/// their socket stops receiving the room's messages, while a remaining member's socket on the
/// same node keeps receiving them.
#[tokio::test]
async fn a_removed_members_socket_on_another_node_leaves_the_room_after_redis_returns() {
    let mut redis = OwnRedis::start();
    let nodes = spawn_cluster_on(Backend::Sqlite, 2, &redis.url(), &[]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let room = group(a, "alice", &["bob", "carol"]).await;
    let mut bob = socket(b, "bob").await;
    let mut carol = socket(b, "carol").await;

    redis.stop();
    redis_down_everywhere(&nodes).await;
    let removed = a
        .client
        .delete(a.url(&format!(
            "/api/v1/realtime/chat/rooms/{}/members/bob",
            room.id
        )))
        .bearer_auth(a.token("alice"))
        .send()
        .await
        .expect("DELETE member");
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);

    redis.resume();
    redis_back_everywhere(&nodes).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        let content = format!("after the outage #{n}");
        let sent = a
            .client
            .post(a.url(&format!("/api/v1/realtime/chat/rooms/{}/messages", room.id)))
            .bearer_auth(a.token("alice"))
            .json(&json!({ "message": content }))
            .send()
            .await
            .expect("POST message");
        assert_eq!(sent.status(), StatusCode::CREATED);
        let at_carol = contents_received(&mut carol).await;
        let at_bob = contents_received(&mut bob).await;
        if at_carol.contains(&content) && !at_bob.contains(&content) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {n} sends, carol got {at_carol:?} and bob (removed) got {at_bob:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn rooms_status(app: &TestApp) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let response = app
        .client
        .get(app.url("/api/v1/realtime/chat/rooms"))
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .expect("GET rooms");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

/// With PostgreSQL stopped, `/health` answers 503 within about a second, and calls that need
/// the database are refused at once (503, code INTERNAL) instead of each waiting out the pool;
/// once PostgreSQL is back the node recovers by itself, with everything acknowledged before.
#[tokio::test]
async fn health_and_calls_fail_fast_while_postgres_is_down_then_recover() {
    if crate::common::skip_postgres() {
        return;
    }
    let pg = OwnPostgres::start().await;
    let app = spawn_app_on_database(
        &pg.url(),
        &[
            "--db-probe-interval-ms",
            "200",
            "--db-acquire-timeout-ms",
            "20000",
        ],
    )
    .await;
    let room = group(&app, "alice", &["bob"]).await;
    app.core
        .chat
        .send_message(&user("alice"), text(&room.id, "acknowledged before"))
        .await
        .expect("sending before the outage");

    pg.stop().await;
    let started = Instant::now();
    let health = app.get("/health").await;
    let took = started.elapsed();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = health.json().await.expect("health JSON");
    assert_eq!(body["services"]["database"], "down", "{body}");
    assert!(took < FAST, "/health took {took:?} with the database down");

    wait_for(
        "the node knows the database is down",
        Duration::from_secs(5),
        async || app.core.db_status.is_down(),
    )
    .await;
    let (status, body, took) = rooms_status(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "INTERNAL", "{body}");
    assert!(took < FAST, "a refused call took {took:?}");

    pg.resume().await;
    wait_for(
        "the node recovers by itself",
        Duration::from_secs(20),
        async || app.get("/health").await.status() == StatusCode::OK,
    )
    .await;
    let (status, body, _) = rooms_status(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let history = app
        .core
        .chat
        .history("alice", &room.id, HistoryQuery::AfterSeq(0), 50)
        .await;
    assert!(
        format!("{history:?}").contains("acknowledged before"),
        "{history:?}"
    );
}

/// An invalidation that never arrives (lost in an outage, or a write made behind the node's
/// back) stops mattering after `MEMBERSHIP_CACHE_TTL_MS`: the entry is read again.
#[tokio::test]
async fn cached_membership_expires_after_its_ttl() {
    let app =
        crate::common::spawn_app_with(Backend::Sqlite, &["--membership-cache-ttl-ms", "200"]).await;
    let room = group(&app, "alice", &["bob"]).await;
    assert!(lets_in(&app, &room.id, "bob").await, "bob is cached in");
    // Removed without any invalidation, as if it had been lost.
    entity::room_member::Entity::delete_by_id((room.id.clone(), "bob".to_owned()))
        .exec(&app.core.db)
        .await
        .expect("deleting the membership row");
    assert!(lets_in(&app, &room.id, "bob").await, "still cached");
    wait_for(
        "the cached entry expires",
        Duration::from_secs(5),
        async || !lets_in(&app, &room.id, "bob").await,
    )
    .await;
}

/// A handshake abandoned after its slot was reserved (the client dropped while the middleware
/// awaited Redis, so the future was cancelled) gives the slot back: its guard releases on drop.
#[tokio::test]
async fn a_slot_whose_handshake_is_abandoned_is_given_back() {
    let nodes = crate::common::spawn_cluster(Backend::Sqlite, 1, &[]).await;
    let core = nodes[0].core.clone();
    let guard = switchboard::realtime::slots::SlotGuard::new(core.clone(), "dave", "abandoned");
    let store = &core.presence.store;
    assert!(
        store
            .reserve_connection("dave", "abandoned", 10)
            .await
            .unwrap()
    );
    drop(guard);
    wait_for(
        "the abandoned slot is released",
        Duration::from_secs(5),
        async || store.connection_count("dave").await.unwrap_or(u32::MAX) == 0,
    )
    .await;
}
