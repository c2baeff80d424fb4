//! What screens read after a reload (issue 13): a room's member presence and online count,
//! each member's receipts, the derived status of own messages in direct rooms, feed summaries,
//! and conditional GETs (`ETag` / `If-None-Match` → 304) on the user REST routes.

use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use serde_json::{Map, Value, json};
use switchboard::auth::AuthUser;
use switchboard::domain::chat::{NewMessage, NewRoom, Room, RoomType};
use switchboard::domain::feed::{Arrived, Audience, NewActivity, Summary};

use crate::common::{Backend, TestApp, spawn_app, spawn_cluster};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

async fn room(app: &TestApp, kind: RoomType, owner: &str, others: &[&str]) -> Room {
    app.core
        .chat
        .create_room(
            owner,
            NewRoom {
                participants: others.iter().map(|s| (*s).to_owned()).collect(),
                room_type: Some(kind),
                name: (kind != RoomType::Direct).then(|| "room".to_owned()),
            },
        )
        .await
        .expect("creating a room")
        .0
}

async fn send(app: &TestApp, sender: &str, room_id: &str, content: &str) {
    let who = AuthUser {
        id: sender.to_owned(),
        name: sender.to_owned(),
        name_from_token: true,
    };
    let message = NewMessage {
        room_id: room_id.to_owned(),
        content: content.to_owned(),
        message_type: None,
        reply_to_id: None,
        client_message_id: None,
    };
    app.core
        .chat
        .send_message(&who, message)
        .await
        .expect("sending");
}

/// The user connects one socket and finishes connecting (what the socket layer does).
async fn connect(app: &TestApp, user_id: &str) {
    let store = &app.core.presence.store;
    assert!(
        store
            .reserve_connection(user_id, &format!("{user_id}-sid"), 10)
            .await
            .unwrap()
    );
    store.came_online(user_id, Utc::now()).await.unwrap();
}

async fn set_prefs(app: &TestApp, user_id: &str, prefs: Value) {
    app.core
        .preferences
        .update(user_id, &object(prefs))
        .await
        .expect("updating preferences");
}

/// `GET` as `user_id`, optionally conditional; the status, the ETag and the JSON body.
async fn get_as(
    app: &TestApp,
    user_id: &str,
    path: &str,
    if_none_match: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let mut request = app
        .client
        .get(app.url(&format!("/api/v1/realtime{path}")))
        .bearer_auth(app.token(user_id));
    if let Some(tag) = if_none_match {
        request = request.header(IF_NONE_MATCH, tag);
    }
    let response = request.send().await.expect("GET");
    let status = response.status();
    let tag = response
        .headers()
        .get(ETAG)
        .map(|v| v.to_str().expect("ascii ETag").to_owned());
    if status == StatusCode::OK {
        assert_eq!(
            response
                .headers()
                .get(CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
            Some("private, no-cache"),
            "{path}"
        );
    }
    (status, tag, response.text().await.expect("body"))
}

async fn get_json(app: &TestApp, user_id: &str, path: &str) -> Value {
    let (status, _, body) = get_as(app, user_id, path, None).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    serde_json::from_str(&body).expect("JSON body")
}

fn item<'a>(page: &'a Value, user_id: &str) -> &'a Value {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["userId"] == user_id)
        .unwrap_or_else(|| panic!("no {user_id} in {page}"))
}

// ---------------------------------------------------------------------------------------------
// Room presence
// ---------------------------------------------------------------------------------------------

/// Members' status and the online count, hidden members offline and uncounted, members only,
/// paged by user id.
async fn room_presence_lists_members_and_counts_online(backend: Backend) {
    let app = spawn_app(backend).await;
    let group = room(&app, RoomType::Group, "ann", &["bob", "cat", "dan"]).await;
    connect(&app, "ann").await;
    connect(&app, "bob").await;
    connect(&app, "cat").await;
    set_prefs(&app, "cat", json!({ "shareOnlineStatus": false })).await;
    let path = format!("/chat/rooms/{}/presence", group.id);

    let page = get_json(&app, "ann", &path).await;
    assert_eq!(
        page["online"], 2,
        "ann and bob; cat hides, dan is away: {page}"
    );
    assert_eq!(page["roomId"], group.id.as_str());
    assert_eq!(item(&page, "bob")["status"], "online");
    assert!(item(&page, "bob")["lastSeen"].is_string());
    assert_eq!(
        item(&page, "cat")["status"],
        "offline",
        "hidden looks offline"
    );
    assert!(item(&page, "cat")["lastSeen"].is_null());
    assert_eq!(item(&page, "dan")["status"], "offline");
    assert!(page["nextCursor"].is_null());
    // Cat sees herself as she is.
    let own = get_json(&app, "cat", &path).await;
    assert_eq!(item(&own, "cat")["status"], "online");
    assert_eq!(own["online"], 2, "the count is the same for everyone");

    let first = get_json(&app, "ann", &format!("{path}?limit=3")).await;
    let users: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["userId"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["ann", "bob", "cat"]);
    assert_eq!(first["nextCursor"], "cat");
    let rest = get_json(&app, "ann", &format!("{path}?limit=3&before=cat")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["userId"], "dan");
    assert!(rest["nextCursor"].is_null());

    let (status, _, _) = get_as(&app, "stranger", &path, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let public = room(&app, RoomType::Public, "ann", &[]).await;
    let (status, _, _) = get_as(
        &app,
        "stranger",
        &format!("/chat/rooms/{}/presence", public.id),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "public rooms: members only");
    let (status, _, _) = get_as(
        &app,
        "ann",
        "/chat/rooms/0190d6a0-0000-7000-8000-000000000000/presence",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A member connected to one node is online in the room as read through another.
async fn room_presence_is_cluster_wide(backend: Backend) {
    let nodes = spawn_cluster(backend, 2, &[]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let group = room(a, RoomType::Group, "ann", &["bob"]).await;
    connect(a, "bob").await;
    let page = get_json(b, "ann", &format!("/chat/rooms/{}/presence", group.id)).await;
    assert_eq!(page["online"], 1);
    assert_eq!(item(&page, "bob")["status"], "online");
}

// ---------------------------------------------------------------------------------------------
// Receipts and message status
// ---------------------------------------------------------------------------------------------

async fn receipts_list_watermarks_and_hide_private_reads(backend: Backend) {
    let app = spawn_app(backend).await;
    let group = room(&app, RoomType::Group, "ann", &["bob", "cat"]).await;
    for n in 1..=4 {
        send(&app, "ann", &group.id, &format!("m{n}")).await;
    }
    let chat = &app.core.chat;
    chat.mark_read("bob", &group.id, 2).await.unwrap();
    chat.mark_delivered("bob", &group.id, 3).await.unwrap();
    chat.mark_read("cat", &group.id, 4).await.unwrap();
    set_prefs(&app, "cat", json!({ "shareReadReceipts": false })).await;
    let path = format!("/chat/rooms/{}/receipts", group.id);

    let page = get_json(&app, "ann", &path).await;
    assert_eq!(page["lastSeq"], 4);
    assert_eq!(page["roomId"], group.id.as_str());
    assert_eq!(item(&page, "ann")["readSeq"], 4, "sending implies reading");
    let bob = item(&page, "bob");
    assert_eq!(
        (&bob["readSeq"], &bob["deliveredSeq"]),
        (&json!(2), &json!(3))
    );
    assert!(bob["readAt"].is_string());
    let cat = item(&page, "cat");
    assert!(cat["readSeq"].is_null() && cat["readAt"].is_null(), "{cat}");
    assert_eq!(cat["deliveredSeq"], 4, "delivery stays visible");
    let own = get_json(&app, "cat", &path).await;
    assert_eq!(
        item(&own, "cat")["readSeq"],
        4,
        "cat sees her own read position"
    );

    let first = get_json(&app, "ann", &format!("{path}?limit=2")).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["nextCursor"], "bob");
    let rest = get_json(&app, "ann", &format!("{path}?limit=2&before=bob")).await;
    assert_eq!(rest["items"][0]["userId"], "cat");
    assert!(rest["nextCursor"].is_null());

    let (status, _, _) = get_as(&app, "stranger", &path, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The room object gained nothing.
    let room_json = get_json(&app, "ann", &format!("/chat/rooms/{}", group.id)).await;
    assert!(room_json.get("receipts").is_none());
    assert!(room_json["members"][0].get("readSeq").is_none());
}

async fn direct_history_carries_own_message_status(backend: Backend) {
    let app = spawn_app(backend).await;
    let direct = room(&app, RoomType::Direct, "ann", &["bob"]).await;
    for n in 1..=3 {
        send(&app, "ann", &direct.id, &format!("m{n}")).await;
    }
    send(&app, "bob", &direct.id, "reply").await; // seq 4: bob has read up to 4 now
    send(&app, "ann", &direct.id, "m5").await;
    let chat = &app.core.chat;
    chat.mark_delivered("bob", &direct.id, 5).await.unwrap();
    let path = format!("/chat/rooms/{}/messages", direct.id);
    let status_of = |page: &Value| -> Vec<(i64, Value)> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["seq"].as_i64().unwrap(),
                    m.get("status").cloned().unwrap_or(Value::Null),
                )
            })
            .collect()
    };
    let page = get_json(&app, "ann", &path).await;
    assert_eq!(
        status_of(&page),
        [
            (5, json!("delivered")),
            (4, Value::Null),
            (3, json!("read")),
            (2, json!("read")),
            (1, json!("read")),
        ]
    );
    let catch_up = get_json(&app, "bob", &format!("{path}?after_seq=0")).await;
    assert_eq!(
        catch_up["items"][3]["status"], "read",
        "bob's reply: ann answered it, so she read it"
    );
    assert!(
        catch_up["items"][0].get("status").is_none(),
        "only own messages"
    );

    set_prefs(&app, "bob", json!({ "shareReadReceipts": false })).await;
    let hidden = get_json(&app, "ann", &path).await;
    assert_eq!(
        hidden["items"][2]["status"], "delivered",
        "read is private now"
    );

    let group = room(&app, RoomType::Group, "ann", &["bob"]).await;
    send(&app, "ann", &group.id, "hi").await;
    let page = get_json(&app, "ann", &format!("/chat/rooms/{}/messages", group.id)).await;
    assert!(
        page["items"][0].get("status").is_none(),
        "groups use receipts instead"
    );
}

// ---------------------------------------------------------------------------------------------
// Conditional GETs
// ---------------------------------------------------------------------------------------------

/// GET → ETag; the same ETag → 304 with no body; a change → 200 with another ETag.
async fn conditional_gets_answer_not_modified(backend: Backend) {
    let app = spawn_app(backend).await;
    let group = room(&app, RoomType::Group, "ann", &["bob"]).await;
    send(&app, "ann", &group.id, "first").await;
    let paths = [
        "/chat/rooms".to_owned(),
        format!("/chat/rooms/{}", group.id),
        format!("/chat/rooms/{}/messages", group.id),
        format!("/chat/rooms/{}/receipts", group.id),
        format!("/chat/rooms/{}/presence", group.id),
        "/notifications".to_owned(),
        "/notifications/preferences".to_owned(),
        "/presence/me".to_owned(),
    ];
    let mut tags = Vec::new();
    for path in &paths {
        let (status, tag, _) = get_as(&app, "bob", path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let tag = tag.unwrap_or_else(|| panic!("no ETag on {path}"));
        assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
        let (status, again, body) = get_as(&app, "bob", path, Some(&tag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(
            again.as_deref(),
            Some(tag.as_str()),
            "a 304 repeats the ETag"
        );
        assert!(body.is_empty(), "a 304 has no body: {body:?}");
        let (status, _, _) = get_as(&app, "bob", path, Some("\"other\", W/\"x\"")).await;
        assert_eq!(status, StatusCode::OK, "{path}: other tags do not match");
        tags.push(tag);
    }

    // A new message changes the room list, the room and its history, and bob's receipts.
    send(&app, "ann", &group.id, "second").await;
    for (path, tag) in paths.iter().zip(&tags).take(4) {
        let (status, new_tag, _) = get_as(&app, "bob", path, Some(tag)).await;
        assert_eq!(status, StatusCode::OK, "{path} changed");
        assert_ne!(new_tag.as_deref(), Some(tag.as_str()), "{path}");
    }
    set_prefs(&app, "bob", json!({ "shareTyping": false })).await;
    let (status, _, _) = get_as(&app, "bob", &paths[6], Some(&tags[6])).await;
    assert_eq!(status, StatusCode::OK, "preferences changed");
    // Another user's view of the same URL is not the same entity.
    let (status, _, _) = get_as(&app, "ann", &paths[0], Some(&tags[0])).await;
    assert_eq!(status, StatusCode::OK);
    // Errors are never tagged.
    let (status, tag, _) = get_as(&app, "stranger", &paths[1], None).await;
    assert_eq!((status, tag), (StatusCode::FORBIDDEN, None));
}

// ---------------------------------------------------------------------------------------------
// Feed summaries
// ---------------------------------------------------------------------------------------------

async fn publish(app: &TestApp, actor: &str, kind: &str, target: &str, audience: Audience) {
    app.core
        .feed
        .publish(NewActivity {
            activity_type: kind.to_owned(),
            actor_id: actor.to_owned(),
            target_id: target.to_owned(),
            target_type: "post".to_owned(),
            content: None,
            metadata: None,
            audience,
        })
        .await
        .expect("publishing");
}

/// What `feed:updates_available` and `feed:new_comments_available` count: what the viewer's
/// feed would show, between two cursors.
async fn arrived_counts_the_viewers_feed_between_cursors(backend: Backend) {
    let app = spawn_app(backend).await;
    let feed = &app.core.feed;
    switchboard::domain::follows::follow(&app.core.writes, "reader", "friend")
        .await
        .expect("following");
    publish(&app, "friend", "post", "p0", Audience::Followers).await;
    let start = feed.newest_id().await.unwrap().expect("an activity");
    publish(&app, "friend", "post", "p1", Audience::Followers).await;
    publish(&app, "stranger", "post", "p2", Audience::Followers).await; // not visible
    publish(&app, "stranger", "post", "p3", Audience::Public).await;
    publish(&app, "reader", "post", "p4", Audience::Public).await; // own
    publish(&app, "friend", "comment", "p1", Audience::Followers).await;
    let last_visible = feed.newest_id().await.unwrap();
    publish(&app, "stranger", "comment", "p1", Audience::Followers).await; // not visible
    let newest = feed.newest_id().await.unwrap().unwrap();

    let all = feed
        .arrived(
            "reader",
            Summary::Feed {
                following_only: false,
            },
            Some(&start),
            &newest,
        )
        .await
        .unwrap();
    assert_eq!(all.count, 3, "p1, p3 and the friend's comment");
    assert_eq!(all.latest_id, last_visible, "the newest the reader may see");
    let following = feed
        .arrived(
            "reader",
            Summary::Feed {
                following_only: true,
            },
            Some(&start),
            &newest,
        )
        .await
        .unwrap();
    assert_eq!(following.count, 2);
    let comments = feed
        .arrived(
            "reader",
            Summary::Comments { target_id: "p1" },
            Some(&start),
            &newest,
        )
        .await
        .unwrap();
    assert_eq!(comments.count, 1);
    let nothing = feed
        .arrived(
            "reader",
            Summary::Feed {
                following_only: false,
            },
            Some(&newest),
            &newest,
        )
        .await
        .unwrap();
    assert_eq!(nothing, Arrived::default());
}

backend_tests!(
    room_presence_lists_members_and_counts_online,
    receipts_list_watermarks_and_hide_private_reads,
    direct_history_carries_own_message_status,
    conditional_gets_answer_not_modified,
    arrived_counts_the_viewers_feed_between_cursors,
);

mod cluster {
    use super::*;

    #[tokio::test]
    async fn sqlite_room_presence_is_cluster_wide() {
        room_presence_is_cluster_wide(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn postgres_room_presence_is_cluster_wide() {
        if crate::common::skip_postgres() {
            return;
        }
        room_presence_is_cluster_wide(Backend::Postgres).await;
    }
}
