//! Fan-out paths under load (issue 8): what one change costs must not grow with the size of
//! the room, the recipient list or the follow graph. Costs are read from the server's own
//! fan-out counters (`core.metrics.fan_out_stats`), which count what it handed the adapter.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use entity::{follow, notification, room, room_member};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use serde_json::{Map, Value, json};
use switchboard::domain::chat::{NewRoom, RoomType};
use switchboard::domain::notifications::NewNotification;

use crate::common::{Backend, TestApp, spawn_app, spawn_app_with, spawn_cluster};

const SERVICE_KEY: &str = "service-key-for-the-load-tests-0123";
const REST: &str = "/api/v1/realtime";

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// `GET path` as `user`; returns the status and the JSON body.
async fn get_as(app: &TestApp, user: &str, path: &str) -> (u16, Value) {
    let res = app
        .client
        .get(app.url(path))
        .bearer_auth(app.token(user))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Waits (bounded) until `done` holds: for effects of background tasks.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A public room owned by `owner` with `extra` more members, each with a different read
/// watermark (so a different unread count): the worst case for per-member room updates.
async fn big_public_room(app: &TestApp, owner: &str, extra: usize) -> String {
    let (room, _) = app
        .core
        .chat
        .create_room(
            owner,
            NewRoom {
                participants: Vec::new(),
                room_type: Some(RoomType::Public),
                name: Some("town square".to_owned()),
            },
        )
        .await
        .expect("creating the room");
    let rows: Vec<room_member::ActiveModel> = (0..extra)
        .map(|i| room_member::ActiveModel {
            room_id: Set(room.id.clone()),
            user_id: Set(format!("m{i:05}")),
            role: Set("member".to_owned()),
            joined_at: Set(Utc::now()),
            read_seq: Set(i as i64),
            read_at: Set(None),
            delivered_seq: Set(i as i64),
        })
        .collect();
    for chunk in rows.chunks(500) {
        room_member::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&app.core.db)
            .await
            .expect("inserting members");
    }
    room::Entity::update_many()
        .col_expr(room::Column::LastSeq, Expr::value(extra as i64))
        .filter(room::Column::Id.eq(room.id.as_str()))
        .exec(&app.core.db)
        .await
        .expect("setting lastSeq");
    app.core.chat.forget_all_local();
    room.id
}

async fn big_room_changes_cost_one_bounded_emit(backend: Backend) {
    let app = spawn_app(backend).await;
    const MEMBERS: usize = 3000;
    let room_id = big_public_room(&app, "owner", MEMBERS).await;
    let inline_max = app.core.config.room_members_inline_max;
    assert!(MEMBERS > inline_max * 10);

    // A join (adding a member) and a leave.
    let res = app
        .client
        .post(app.url(&format!("{REST}/chat/rooms/{room_id}/members")))
        .bearer_auth(app.token("owner"))
        .json(&json!({ "userIds": ["newcomer"] }))
        .send()
        .await
        .expect("adding a member");
    assert_eq!(res.status().as_u16(), 200);
    let room: Value = res.json().await.expect("room body");
    assert_eq!(room["memberCount"], json!(MEMBERS + 2));
    assert_eq!(
        room["members"].as_array().map(Vec::len),
        Some(inline_max),
        "a big room's object lists only its first members"
    );
    assert_eq!(room["members"][0]["userId"], "owner", "first by join order");

    let updates = app.core.metrics.fan_out_stats("chat:room_updated");
    assert_eq!(
        updates.emits, 1,
        "one emit per change, whatever the room size"
    );
    assert_eq!(updates.max_rooms, 1, "to the room's chat: room");
    assert!(
        updates.max_bytes < 64 * 1024,
        "a bounded payload, not every member: {} bytes",
        updates.max_bytes
    );

    let res = app
        .client
        .delete(app.url(&format!("{REST}/chat/rooms/{room_id}/members/newcomer")))
        .bearer_auth(app.token("newcomer"))
        .send()
        .await
        .expect("leaving");
    assert_eq!(res.status().as_u16(), 204);
    let updates = app.core.metrics.fan_out_stats("chat:room_updated");
    assert_eq!(updates.emits, 2);
    assert_eq!(
        updates.max_rooms, 2,
        "the chat room plus the one who left (told before their sockets leave)"
    );
    assert!(updates.max_bytes < 64 * 1024);

    // A member the capped list leaves out still sees their own unread count.
    let (status, seen) = get_as(&app, "m02990", &format!("{REST}/chat/rooms/{room_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(seen["unreadCount"], json!(MEMBERS - 2990));
    assert_eq!(seen["memberCount"], json!(MEMBERS + 1));
}

async fn room_members_are_paged(backend: Backend) {
    let app = spawn_app(backend).await;
    const MEMBERS: usize = 250;
    let room_id = big_public_room(&app, "owner", MEMBERS).await;
    let path = format!("{REST}/chat/rooms/{room_id}/members");

    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("?limit=100&before={}", urlencode(c)),
            None => "?limit=100".to_owned(),
        };
        let (status, page) = get_as(&app, "m00007", &format!("{path}{query}")).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 100);
        for m in items {
            for key in ["userId", "name", "role", "joinedAt"] {
                assert!(m.get(key).is_some(), "member lacks {key}: {m}");
            }
            seen.push(m["userId"].as_str().expect("userId").to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), MEMBERS + 1);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), MEMBERS + 1);
    assert_eq!(
        seen.last().map(String::as_str),
        Some("owner"),
        "newest first"
    );

    let (status, body) = get_as(&app, "m00007", &format!("{path}?before=nonsense")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "INVALID_PAYLOAD");
    let (status, _) = get_as(&app, "m00007", &format!("{REST}/chat/rooms/nope/members")).await;
    assert_eq!(status, 404);
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn notifications_to_a_thousand_users_in_one_call(backend: Backend) {
    let app = spawn_app_with(backend, &["--service-api-key", SERVICE_KEY]).await;
    let users: Vec<String> = (0..1000).map(|i| format!("r{i:04}")).collect();
    // A third already have one unread notification; one turned in-app delivery off.
    let earlier = NewNotification {
        user_ids: users.iter().step_by(3).cloned().collect(),
        notification_type: "system".to_owned(),
        title: "Earlier".to_owned(),
        message: "An earlier one".to_owned(),
        data: json!({}),
        priority: "normal".to_owned(),
        actor_id: None,
        expires_at: None,
        dedup_key: None,
    };
    let before = app
        .core
        .notifications
        .create(&app.core.preferences, earlier)
        .await
        .expect("earlier notifications");
    assert_eq!(before.len(), 334);
    app.core
        .preferences
        .update("r0001", &object(json!({ "like": { "inApp": false } })))
        .await
        .expect("preferences");
    let baseline_new = app.core.metrics.fan_out_stats("notification:new").emits;
    let baseline_counts = app
        .core
        .metrics
        .fan_out_stats("notification:unread_count")
        .emits;

    let res = app
        .client
        .post(app.url("/api/v1/internal/notifications"))
        .header("x-api-key", SERVICE_KEY)
        .json(&json!({
            "userIds": users, "type": "like", "title": "New like",
            "message": "Someone liked your post", "actorId": "actor",
            "dedupKey": "post:1:like",
        }))
        .send()
        .await
        .expect("creating notifications");
    assert_eq!(res.status().as_u16(), 201);
    let body: Value = res.json().await.expect("body");
    assert_eq!(body["created"], 1000);
    let listed: HashSet<&str> = body["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .filter_map(|n| n["userId"].as_str())
        .collect();
    assert_eq!(listed.len(), 1000);

    let stored = notification::Entity::find()
        .filter(notification::Column::NotificationType.eq("like"))
        .count(&app.core.db)
        .await
        .expect("counting");
    assert_eq!(stored, 1000, "all stored");
    let counts = app
        .core
        .notifications
        .unread_counts(&users)
        .await
        .expect("unread counts");
    for (i, user) in users.iter().enumerate() {
        let expected = if i % 3 == 0 { 2 } else { 1 };
        assert_eq!(counts.get(user).copied(), Some(expected), "{user}");
        if i % 97 == 0 {
            let one = app
                .core
                .notifications
                .unread_count(user)
                .await
                .expect("count");
            assert_eq!(one, expected, "{user}");
        }
    }

    let metrics = &app.core.metrics;
    let new = metrics.fan_out_stats("notification:new").emits - baseline_new;
    assert_eq!(
        new, 999,
        "delivered to everyone but the one with in-app off"
    );
    let count_emits = metrics.fan_out_stats("notification:unread_count").emits - baseline_counts;
    assert_eq!(
        count_emits, 2,
        "one unread_count emit per distinct count (1 and 2)"
    );

    // The same dedupKey again creates nothing for anyone.
    let res = app
        .client
        .post(app.url("/api/v1/internal/notifications"))
        .header("x-api-key", SERVICE_KEY)
        .json(&json!({
            "userIds": users, "type": "like", "title": "New like",
            "message": "again", "dedupKey": "post:1:like",
        }))
        .send()
        .await
        .expect("repeating");
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.expect("body");
    assert_eq!(body["created"], 0);
}

async fn online_friends_are_paged_past_40000_followees(backend: Backend) {
    let app = spawn_app(backend).await;
    const FOLLOWEES: usize = 40_000;
    let now = Utc::now();
    let rows: Vec<follow::ActiveModel> = (0..FOLLOWEES)
        .map(|i| follow::ActiveModel {
            follower_id: Set("viewer".to_owned()),
            followee_id: Set(format!("f{i:05}")),
            created_at: Set(now),
        })
        .collect();
    for chunk in rows.chunks(1000) {
        follow::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&app.core.db)
            .await
            .expect("inserting follows");
    }
    // 45 followees online, spread over the whole list; one of them hides it.
    let online: Vec<String> = (0..45).map(|i| format!("f{:05}", i * 887)).collect();
    let store = &app.core.presence.store;
    for user in &online {
        assert!(
            store
                .reserve_connection(user, &format!("{user}-sid"), 10)
                .await
                .expect("reserving")
        );
        store.came_online(user, Utc::now()).await.expect("online");
    }
    app.core
        .preferences
        .update(&online[10], &object(json!({ "shareOnlineStatus": false })))
        .await
        .expect("hiding");

    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = cursor
            .as_ref()
            .map_or(String::new(), |c| format!("?before={}", urlencode(c)));
        let (status, page) = get_as(
            &app,
            "viewer",
            &format!("{REST}/presence/online-friends{query}"),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 20, "default page size, got {}", items.len());
        for item in items {
            assert_eq!(item["status"], "online");
            seen.push(item["userId"].as_str().expect("userId").to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    let mut expected: Vec<String> = online
        .iter()
        .filter(|u| **u != online[10])
        .cloned()
        .collect();
    expected.sort();
    expected.reverse();
    assert_eq!(seen, expected, "every online friend once, by id descending");
    assert!(pages >= 3, "44 friends take several pages of 20");
}

async fn presence_fan_out_is_chunked(backend: Backend) {
    let app = spawn_app(backend).await;
    let now = Utc::now();
    let rows: Vec<follow::ActiveModel> = (0..2500)
        .map(|i| follow::ActiveModel {
            follower_id: Set(format!("fan{i:04}")),
            followee_id: Set("star".to_owned()),
            created_at: Set(now),
        })
        .collect();
    for chunk in rows.chunks(1000) {
        follow::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&app.core.db)
            .await
            .expect("inserting follows");
    }
    let store = &app.core.presence.store;
    assert!(store.reserve_connection("star", "sid", 10).await.unwrap());
    let status = store.came_online("star", Utc::now()).await.unwrap();
    let status = status.expect("star comes online");
    switchboard::realtime::presence::queue_status(&app.core, "star", status).await;

    let metrics = &app.core.metrics;
    until("the presence announcement", || {
        metrics.fan_out_stats("presence:update").rooms >= 2500
    })
    .await;
    let stats = metrics.fan_out_stats("presence:update");
    assert_eq!(stats.rooms, 2500, "every follower once");
    assert_eq!(stats.emits, 3, "in chunks");
    assert!(stats.max_rooms <= 1000);
}

backend_tests!(
    big_room_changes_cost_one_bounded_emit,
    room_members_are_paged,
    notifications_to_a_thousand_users_in_one_call,
    online_friends_are_paged_past_40000_followees,
    presence_fan_out_is_chunked,
);

/// The Redis idle sweep checks the users that may be due, a batch per script call, and finds
/// exactly the silent ones.
#[tokio::test]
async fn redis_idle_sweep_finds_exactly_the_silent_users() {
    let nodes = spawn_cluster(Backend::Sqlite, 1, &[]).await;
    let store = &nodes[0].core.presence.store;
    let t0 = Utc::now();
    let users: Vec<String> = (0..1200).map(|i| format!("idle{i:04}")).collect();
    for user in &users {
        assert!(store.reserve_connection(user, "sid", 10).await.unwrap());
        store.came_online(user, t0).await.unwrap();
    }
    for user in users.iter().step_by(2) {
        store
            .touch(user, t0 + chrono::Duration::seconds(10))
            .await
            .unwrap();
    }
    let mut turned = store
        .sweep_idle(t0 + chrono::Duration::seconds(5))
        .await
        .unwrap();
    turned.sort();
    let silent: Vec<String> = users.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(turned, silent, "only the silent half turns away");
    assert!(
        store
            .sweep_idle(t0 + chrono::Duration::seconds(5))
            .await
            .unwrap()
            .is_empty(),
        "reported once"
    );
    let mut later = store
        .sweep_idle(t0 + chrono::Duration::seconds(20))
        .await
        .unwrap();
    later.sort();
    let active: Vec<String> = users.iter().step_by(2).cloned().collect();
    assert_eq!(later, active, "the active half, once silent too");
}
