//! Presence (who is told, what viewers see, online friends, the in-memory store) and the
//! notification service (dedup, expiry, in-app preferences, marking read, purging).

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use entity::{follow, notification};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use serde_json::{Map, Value, json};
use switchboard::domain::chat::{NewRoom, RoomType};
use switchboard::domain::notifications::NewNotification;
use switchboard::domain::presence::{MemoryPresence, PresenceStore, PresenceView, Status};

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

async fn follows(app: &TestApp, follower: &str, followee: &str) {
    follow::ActiveModel {
        follower_id: Set(follower.to_owned()),
        followee_id: Set(followee.to_owned()),
        created_at: Set(Utc::now()),
    }
    .insert(&app.core.db)
    .await
    .unwrap_or_else(|e| panic!("{follower} follows {followee}: {e}"));
}

async fn hide_status(app: &TestApp, user_id: &str) {
    app.core
        .preferences
        .update(user_id, &object(json!({ "shareOnlineStatus": false })))
        .await
        .expect("updating preferences");
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

async fn create_room(app: &TestApp, creator: &str, others: &[&str], kind: RoomType) {
    app.core
        .chat
        .create_room(
            creator,
            NewRoom {
                participants: others.iter().map(|s| (*s).to_owned()).collect(),
                room_type: Some(kind),
                name: (kind != RoomType::Direct).then(|| "room".to_owned()),
            },
        )
        .await
        .expect("creating a room");
}

/// A fixed, whole-second instant: stored and read back identically on both backends.
fn instant(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0)
        .single()
        .expect("valid timestamp")
}

fn view_of<'a>(views: &'a [PresenceView], user_id: &str) -> &'a PresenceView {
    views
        .iter()
        .find(|v| v.user_id == user_id)
        .unwrap_or_else(|| panic!("no view of {user_id} in {views:?}"))
}

fn user_set(views: &[PresenceView]) -> BTreeSet<&str> {
    views.iter().map(|v| v.user_id.as_str()).collect()
}

// ---------------------------------------------------------------------------------------------
// Presence over the database
// ---------------------------------------------------------------------------------------------

async fn audience_is_followers_and_direct_partners(backend: Backend) {
    let app = spawn_app(backend).await;
    let presence = &app.core.presence;
    let prefs = &app.core.preferences;
    follows(&app, "fan1", "alice").await;
    follows(&app, "fan2", "alice").await;
    follows(&app, "alice", "idol").await; // alice follows idol: idol is not told about alice.
    follows(&app, "fan1", "someone_else").await;
    create_room(&app, "alice", &["partner"], RoomType::Direct).await;
    create_room(&app, "fan1", &["alice"], RoomType::Direct).await; // also a follower
    create_room(&app, "alice", &["groupmate"], RoomType::Group).await;
    create_room(&app, "stranger", &["other"], RoomType::Direct).await;

    let audience = presence.audience(prefs, "alice").await.unwrap();
    assert_eq!(
        audience,
        ["fan1", "fan2", "partner"],
        "sorted, without repeats"
    );
    let partner = presence.audience(prefs, "partner").await.unwrap();
    assert_eq!(partner, ["alice"]);
    assert!(presence.audience(prefs, "nobody").await.unwrap().is_empty());

    hide_status(&app, "alice").await;
    assert!(
        presence.audience(prefs, "alice").await.unwrap().is_empty(),
        "a hidden status is told to nobody"
    );
    assert_eq!(
        presence.audience(prefs, "partner").await.unwrap(),
        ["alice"],
        "others are unaffected"
    );

    app.core
        .preferences
        .update("alice", &object(json!({ "shareOnlineStatus": true })))
        .await
        .unwrap();
    assert_eq!(
        presence.audience(prefs, "alice").await.unwrap(),
        ["fan1", "fan2", "partner"]
    );
}

async fn view_shows_live_stored_and_hidden_presence(backend: Backend) {
    let app = spawn_app(backend).await;
    let presence = &app.core.presence;
    let prefs = &app.core.preferences;
    for id in ["online", "busy", "gone", "hidden"] {
        switchboard::domain::users::upsert(&app.core.writes, id, id, None)
            .await
            .unwrap();
    }
    connect(&app, "online").await;
    presence
        .store
        .set_activity("online", "viewing:post:1", json!({ "k": 1 }), Utc::now())
        .await
        .unwrap();
    connect(&app, "busy").await;
    presence
        .store
        .set_status("busy", Status::Busy, Utc::now())
        .await
        .unwrap();
    presence
        .record_last_seen("gone", instant(1_700_000_000))
        .await
        .unwrap();
    connect(&app, "hidden").await;
    presence
        .record_last_seen("hidden", instant(1_700_000_100))
        .await
        .unwrap();
    hide_status(&app, "hidden").await;

    let users: Vec<String> = ["online", "busy", "gone", "hidden", "unknown"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let views = presence.view(prefs, "viewer", &users).await.unwrap();
    assert_eq!(
        views.iter().map(|v| v.user_id.as_str()).collect::<Vec<_>>(),
        ["online", "busy", "gone", "hidden", "unknown"],
        "one view per user, in order"
    );

    let online = view_of(&views, "online");
    assert_eq!(online.status, Status::Online);
    assert_eq!(online.activity.as_deref(), Some("viewing:post:1"));
    assert_eq!(online.metadata, json!({ "k": 1 }));
    assert!(online.last_seen.is_some());
    assert_eq!(view_of(&views, "busy").status, Status::Busy);

    let gone = view_of(&views, "gone");
    assert_eq!(gone.status, Status::Offline);
    assert_eq!(gone.last_seen, Some(instant(1_700_000_000)));
    assert_eq!(gone.activity, None);

    let hidden = view_of(&views, "hidden");
    assert_eq!(hidden.status, Status::Offline, "hidden users look offline");
    assert_eq!(hidden.activity, None);
    assert_eq!(hidden.metadata, Value::Null);
    assert_eq!(hidden.last_seen, None, "and reveal no last seen");

    let unknown = view_of(&views, "unknown");
    assert_eq!((unknown.status, unknown.last_seen), (Status::Offline, None));

    // Users always see themselves as they are.
    let own = presence
        .view(prefs, "hidden", &["hidden".to_owned()])
        .await
        .unwrap();
    assert_eq!(own[0].status, Status::Online);

    // After the last socket's grace period, the live state is gone: offline again.
    let store = &presence.store;
    assert_eq!(
        store
            .release_connection("online", "online-sid", Utc::now())
            .await
            .unwrap(),
        0
    );
    // The grace period is over at once; the app's own reaper may end it before we look.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        store.take_due_offline(Utc::now()).await.unwrap();
        if store
            .get_many(&["online".to_owned()])
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the user never went offline"
        );
        tokio::task::yield_now().await;
    }
    presence
        .record_last_seen("online", instant(1_700_000_200))
        .await
        .unwrap();
    let after = presence
        .view(prefs, "viewer", &["online".to_owned()])
        .await
        .unwrap();
    assert_eq!(after[0].status, Status::Offline);
    assert_eq!(after[0].last_seen, Some(instant(1_700_000_200)));
    assert_eq!(after[0].activity, None);
}

async fn online_friends_are_followed_online_and_sharing(backend: Backend) {
    let app = spawn_app(backend).await;
    let presence = &app.core.presence;
    let prefs = &app.core.preferences;
    for friend in ["online", "away", "hidden", "offline"] {
        follows(&app, "viewer", friend).await;
    }
    follows(&app, "fan", "viewer").await; // follows the viewer, not followed back
    connect(&app, "online").await;
    connect(&app, "away").await;
    presence
        .store
        .set_status("away", Status::Away, Utc::now())
        .await
        .unwrap();
    connect(&app, "hidden").await;
    hide_status(&app, "hidden").await;
    connect(&app, "fan").await;
    connect(&app, "stranger").await;

    let friends = presence
        .online_friends(prefs, "viewer", 100, None)
        .await
        .unwrap()
        .0;
    assert_eq!(user_set(&friends), BTreeSet::from(["away", "online"]));
    assert_eq!(view_of(&friends, "away").status, Status::Away);
    assert!(
        presence
            .online_friends(prefs, "nobody", 100, None)
            .await
            .unwrap()
            .0
            .is_empty()
    );

    app.core
        .preferences
        .update("hidden", &object(json!({ "shareOnlineStatus": true })))
        .await
        .unwrap();
    let friends = presence
        .online_friends(prefs, "viewer", 100, None)
        .await
        .unwrap()
        .0;
    assert_eq!(
        user_set(&friends),
        BTreeSet::from(["away", "hidden", "online"])
    );
}

/// Preferences are cached per node. A user who hides their status through one node (REST)
/// while their socket lives on another must be hidden there too.
async fn hidden_status_reaches_other_nodes(backend: Backend) {
    let nodes = spawn_cluster(backend, 2, &[]).await;
    let (here, there) = (&nodes[0], &nodes[1]);
    follows(here, "fan", "alice").await;
    // The other node has alice's preferences cached.
    assert!(
        there
            .core
            .preferences
            .get("alice")
            .await
            .unwrap()
            .share_online_status
    );

    hide_status(here, "alice").await;

    // The invalidation travels over Redis pub/sub: wait for it, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !there
        .core
        .presence
        .audience(&there.core.preferences, "alice")
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the other node still announces alice"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

backend_tests!(
    audience_is_followers_and_direct_partners,
    view_shows_live_stored_and_hidden_presence,
    online_friends_are_followed_online_and_sharing,
    notification_dedup_key_suppresses_repeats,
    expired_notifications_are_not_created,
    in_app_off_stores_without_delivering,
    mark_read_touches_only_own_notifications,
    purge_removes_only_expired,
);

mod races {
    use super::*;

    #[tokio::test]
    async fn sqlite_concurrent_dedup_creates_one() {
        concurrent_dedup_creates_one(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn postgres_concurrent_dedup_creates_one() {
        if crate::common::skip_postgres() {
            return;
        }
        concurrent_dedup_creates_one(Backend::Postgres).await;
    }

    #[tokio::test]
    async fn sqlite_hidden_status_reaches_other_nodes() {
        hidden_status_reaches_other_nodes(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn postgres_hidden_status_reaches_other_nodes() {
        if crate::common::skip_postgres() {
            return;
        }
        hidden_status_reaches_other_nodes(Backend::Postgres).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The in-memory store
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn memory_store_reload_within_grace_keeps_status() {
    let store = MemoryPresence::default();
    let now = Utc::now();
    assert!(store.reserve_connection("u", "a", 5).await.unwrap());
    assert_eq!(
        store.came_online("u", now).await.unwrap(),
        Some(Status::Online)
    );
    store.set_status("u", Status::Busy, now).await.unwrap();
    let grace_end = now + chrono::Duration::seconds(5);
    assert_eq!(
        store.release_connection("u", "a", grace_end).await.unwrap(),
        0
    );
    // The page reloads before the grace period ends.
    assert!(store.reserve_connection("u", "b", 5).await.unwrap());
    assert_eq!(store.came_online("u", now).await.unwrap(), None, "no flap");
    assert!(
        store.take_due_offline(grace_end).await.unwrap().is_empty(),
        "the ended grace period finds a socket"
    );
    let live = store.get_many(&["u".to_owned()]).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(
        live[0].1.status,
        Status::Busy,
        "a chosen status survives a reload"
    );
}

#[tokio::test]
async fn memory_store_lists_only_announced_users() {
    let store = MemoryPresence::default();
    let now = Utc::now();
    // Reserved but not finished connecting: not online yet.
    store.reserve_connection("pending", "p", 5).await.unwrap();
    store.reserve_connection("ready", "r", 5).await.unwrap();
    store.came_online("ready", now).await.unwrap();
    let users = [
        "pending".to_owned(),
        "ready".to_owned(),
        "absent".to_owned(),
    ];
    let live = store.get_many(&users).await.unwrap();
    assert_eq!(
        live.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(),
        ["ready"]
    );
    // A refused/failed connection leaves nothing behind to announce.
    assert_eq!(
        store.release_connection("pending", "p", now).await.unwrap(),
        0
    );
    assert!(store.take_due_offline(now).await.unwrap().is_empty());
    assert_eq!(store.connection_count("pending").await.unwrap(), 0);
    // Events for users this node does not know change nothing.
    assert_eq!(store.touch("absent", now).await.unwrap(), None);
    assert_eq!(
        store.set_status("absent", Status::Busy, now).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn memory_store_status_choices() {
    let store = MemoryPresence::default();
    let now = Utc::now();
    store.reserve_connection("u", "a", 5).await.unwrap();
    store.came_online("u", now).await.unwrap();
    assert_eq!(
        store.set_status("u", Status::Online, now).await.unwrap(),
        None,
        "already online"
    );
    assert_eq!(
        store.set_status("u", Status::Away, now).await.unwrap(),
        Some(Status::Away)
    );
    assert_eq!(
        store.touch("u", now).await.unwrap(),
        None,
        "activity does not undo a chosen away"
    );
    assert_eq!(
        store.set_status("u", Status::Online, now).await.unwrap(),
        Some(Status::Online)
    );
    // Idle, then a new tab: back online.
    let later = now + Duration::minutes(10);
    assert_eq!(store.sweep_idle(later).await.unwrap(), ["u"]);
    store.reserve_connection("u", "b", 5).await.unwrap();
    assert_eq!(
        store.came_online("u", later).await.unwrap(),
        Some(Status::Online)
    );
    let store: Arc<dyn PresenceStore> = Arc::new(store);
    assert_eq!(store.connection_count("u").await.unwrap(), 2);
}

// ---------------------------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------------------------

fn notification_for(users: &[&str], kind: &str) -> NewNotification {
    NewNotification {
        user_ids: users.iter().map(|s| (*s).to_owned()).collect(),
        notification_type: kind.to_owned(),
        title: "Title".to_owned(),
        message: "Something happened".to_owned(),
        data: json!({ "postId": 7 }),
        priority: "normal".to_owned(),
        actor_id: None,
        expires_at: None,
        dedup_key: None,
    }
}

async fn notifications_of(app: &TestApp, user_id: &str) -> u64 {
    notification::Entity::find()
        .filter(notification::Column::UserId.eq(user_id))
        .count(&app.core.db)
        .await
        .unwrap()
}

async fn notification_dedup_key_suppresses_repeats(backend: Backend) {
    let app = spawn_app(backend).await;
    let service = &app.core.notifications;
    let prefs = &app.core.preferences;
    let mut input = notification_for(&["alice", "bob"], "like");
    input.dedup_key = Some("like:post:7:by:carol".to_owned());

    let first = service.create(prefs, input.clone()).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|c| c.deliver));
    assert_eq!(first[0].notification.data, json!({ "postId": 7 }));
    assert!(!first[0].notification.is_read);

    let second = service.create(prefs, input.clone()).await.unwrap();
    assert!(second.is_empty(), "{second:?}");
    assert_eq!(notifications_of(&app, "alice").await, 1);
    assert_eq!(notifications_of(&app, "bob").await, 1);

    // The key is per user: someone new still gets it, the others still do not.
    input.user_ids = vec!["alice".to_owned(), "dave".to_owned()];
    let third = service.create(prefs, input).await.unwrap();
    assert_eq!(
        third
            .iter()
            .map(|c| c.notification.user_id.as_str())
            .collect::<Vec<_>>(),
        ["dave"]
    );
    assert_eq!(notifications_of(&app, "alice").await, 1);

    // Without a key, repeats are separate notifications.
    service
        .create(prefs, notification_for(&["alice"], "like"))
        .await
        .unwrap();
    service
        .create(prefs, notification_for(&["alice"], "like"))
        .await
        .unwrap();
    assert_eq!(notifications_of(&app, "alice").await, 3);
}

/// The backend retries a timed-out `POST /notifications` while the first is still running:
/// the same `dedupKey` for the same user must still create one notification.
async fn concurrent_dedup_creates_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let core = app.core.clone();
        tasks.push(tokio::spawn(async move {
            let mut input = notification_for(&["alice"], "mention");
            input.dedup_key = Some("mention:comment:9".to_owned());
            core.notifications.create(&core.preferences, input).await
        }));
    }
    let mut created = 0;
    for task in tasks {
        created += task.await.expect("task panicked").expect("create").len();
    }
    assert_eq!(notifications_of(&app, "alice").await, 1);
    assert_eq!(created, 1);
}

async fn expired_notifications_are_not_created(backend: Backend) {
    let app = spawn_app(backend).await;
    let service = &app.core.notifications;
    let mut input = notification_for(&["alice"], "event");
    input.expires_at = Some(Utc::now() - Duration::seconds(1));
    let created = service
        .create(&app.core.preferences, input.clone())
        .await
        .unwrap();
    assert!(created.is_empty());
    assert_eq!(notifications_of(&app, "alice").await, 0);

    input.expires_at = Some(Utc::now() + Duration::hours(1));
    let created = service.create(&app.core.preferences, input).await.unwrap();
    assert_eq!(created.len(), 1);
    assert!(created[0].notification.expires_at.is_some());
    assert_eq!(service.unread_count("alice").await.unwrap(), 1);
}

async fn in_app_off_stores_without_delivering(backend: Backend) {
    let app = spawn_app(backend).await;
    let service = &app.core.notifications;
    let prefs = &app.core.preferences;
    prefs
        .update("alice", &object(json!({ "like": { "inApp": false } })))
        .await
        .unwrap();

    let likes = service
        .create(prefs, notification_for(&["alice", "bob"], "like"))
        .await
        .unwrap();
    assert_eq!(likes.len(), 2, "stored for both");
    let deliver: Vec<(&str, bool)> = likes
        .iter()
        .map(|c| (c.notification.user_id.as_str(), c.deliver))
        .collect();
    assert_eq!(deliver, [("alice", false), ("bob", true)]);
    assert_eq!(notifications_of(&app, "alice").await, 1);
    assert_eq!(
        service.unread_count("alice").await.unwrap(),
        1,
        "still listed"
    );

    let comments = service
        .create(prefs, notification_for(&["alice"], "comment"))
        .await
        .unwrap();
    assert!(comments[0].deliver, "other types are still delivered");
}

async fn mark_read_touches_only_own_notifications(backend: Backend) {
    let app = spawn_app(backend).await;
    let service = &app.core.notifications;
    let prefs = &app.core.preferences;
    let alices = service
        .create(prefs, notification_for(&["alice"], "like"))
        .await
        .unwrap();
    let alices2 = service
        .create(prefs, notification_for(&["alice"], "comment"))
        .await
        .unwrap();
    let bobs = service
        .create(prefs, notification_for(&["bob"], "like"))
        .await
        .unwrap();
    let bob_id = bobs[0].notification.id.clone();
    let alice_id = alices[0].notification.id.clone();

    let (updated, unread) = service
        .mark_read("alice", Some(std::slice::from_ref(&bob_id)))
        .await
        .unwrap();
    assert_eq!((updated, unread), (0, 2));
    assert_eq!(
        service.unread_count("bob").await.unwrap(),
        1,
        "bob's is untouched"
    );

    let (updated, unread) = service
        .mark_read("alice", Some(&[bob_id.clone(), alice_id.clone()]))
        .await
        .unwrap();
    assert_eq!((updated, unread), (1, 1));
    let (updated, unread) = service
        .mark_read("alice", Some(std::slice::from_ref(&alice_id)))
        .await
        .unwrap();
    assert_eq!((updated, unread), (0, 1), "already read");
    assert_eq!(service.mark_read("alice", Some(&[])).await.unwrap(), (0, 1));

    let (updated, unread) = service.mark_read("alice", None).await.unwrap();
    assert_eq!((updated, unread), (1, 0));
    assert_eq!(
        service.unread_count("bob").await.unwrap(),
        1,
        "all means alice's"
    );
    let (items, _) = service.list("alice", 10, false, None).await.unwrap();
    assert!(items.iter().all(|n| n.is_read));
    let ids: BTreeSet<&str> = items.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(
        ids,
        BTreeSet::from([alice_id.as_str(), alices2[0].notification.id.as_str()])
    );
    let bob_row = notification::Entity::find_by_id(bob_id.as_str())
        .one(&app.core.db)
        .await
        .unwrap()
        .unwrap();
    assert!(!bob_row.is_read);
}

async fn purge_removes_only_expired(backend: Backend) {
    let app = spawn_app(backend).await;
    let service = &app.core.notifications;
    let now = Utc::now();
    let insert =
        |id: &str, user_id: &str, expires_at: Option<DateTime<Utc>>| notification::ActiveModel {
            id: Set(id.to_owned()),
            user_id: Set(user_id.to_owned()),
            notification_type: Set("event".to_owned()),
            title: Set("t".to_owned()),
            message: Set("m".to_owned()),
            data: Set("{}".to_owned()),
            priority: Set("normal".to_owned()),
            actor_id: Set(None),
            actor_name: Set(None),
            is_read: Set(false),
            created_at: Set(now - Duration::hours(2)),
            expires_at: Set(expires_at),
            dedup_key: Set(None),
        };
    for row in [
        insert("n1-expired", "alice", Some(now - Duration::hours(1))),
        insert("n2-future", "alice", Some(now + Duration::hours(1))),
        insert("n3-never", "alice", None),
        insert("n4-expired", "bob", Some(now - Duration::seconds(5))),
    ] {
        row.insert(&app.core.db).await.unwrap();
    }

    // Expired rows are never listed or counted, even before the purge.
    assert_eq!(service.unread_count("alice").await.unwrap(), 2);
    let (items, next) = service.list("alice", 10, false, None).await.unwrap();
    assert_eq!(next, None);
    let listed: BTreeSet<&str> = items.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(listed, BTreeSet::from(["n2-future", "n3-never"]));
    assert_eq!(service.unread_count("bob").await.unwrap(), 0);

    // The server's own purger ticks once at start and may race these inserts, so the count this
    // call returns is at most the two expired rows; what is left is exact either way.
    let purged = service.purge_expired().await.unwrap();
    assert!(purged <= 2, "purged {purged} of 2 expired rows");
    let left: BTreeSet<String> = notification::Entity::find()
        .all(&app.core.db)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(
        left,
        BTreeSet::from(["n2-future".to_owned(), "n3-never".to_owned()])
    );
    assert_eq!(service.purge_expired().await.unwrap(), 0);
}
