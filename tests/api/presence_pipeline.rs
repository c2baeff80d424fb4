//! The presence pipeline: the bounded, coalescing queue under a burst with a stalled audience
//! lookup, and the audience cache dropped on follow, unfollow, privacy and membership changes,
//! on this node and across a cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use switchboard::domain::chat::{NewRoom, RoomType};
use switchboard::domain::presence::{Audience, PresenceEvent, PresenceQueue, Status, StatusChange};
use switchboard::metrics::Metrics;
use tokio::sync::Semaphore;

use crate::common::{Backend, TestApp, spawn_app_with, spawn_cluster};

const SERVICE_KEY: &str = "service-key-for-the-presence-tests-01";

fn status(user: &str, status: Status) -> PresenceEvent {
    PresenceEvent::Status(StatusChange {
        user_id: user.to_owned(),
        status,
        last_seen: Utc::now(),
    })
}

fn activity(user: &str, n: usize) -> PresenceEvent {
    PresenceEvent::Activity {
        user_id: user.to_owned(),
        activity: format!("a{n}"),
        metadata: serde_json::Value::Null,
    }
}

/// 200 users each change status four times, from concurrent senders, while every worker is
/// stuck in its audience lookup: the queue never holds more than its cap of users, senders wait
/// rather than lose a status, and once the lookups proceed each user's last status is announced,
/// with each user's statuses in the order they were made.
#[tokio::test]
async fn a_status_burst_stays_within_the_cap_and_every_final_state_is_announced() {
    const CAP: usize = 16;
    const USERS: usize = 200;
    let queue = Arc::new(PresenceQueue::new(
        CAP,
        Metrics::install().expect("metrics"),
    ));
    let gate = Arc::new(Semaphore::new(0));
    let announced: Arc<Mutex<HashMap<String, Vec<Status>>>> = Arc::default();
    let max_depth = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (queue, gate, announced) = (queue.clone(), gate.clone(), announced.clone());
        workers.push(tokio::spawn(async move {
            while let Some((user, pending)) = queue.next().await {
                // The "audience lookup": blocked until the test opens the gate.
                gate.acquire().await.expect("gate").forget();
                if let Some(change) = pending.status {
                    announced
                        .lock()
                        .unwrap()
                        .entry(user.clone())
                        .or_default()
                        .push(change.status);
                }
                queue.done(&user);
            }
        }));
    }
    let order = [Status::Online, Status::Away, Status::Busy, Status::Offline];
    let mut senders = Vec::new();
    for u in 0..USERS {
        let (queue, max_depth) = (queue.clone(), max_depth.clone());
        senders.push(tokio::spawn(async move {
            let user = format!("u{u:03}");
            for s in order {
                queue.push(status(&user, s)).await;
                max_depth.fetch_max(queue.depth(), Ordering::SeqCst);
            }
        }));
    }
    // With the lookups stalled the queue fills up to its cap and stays there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while queue.depth() < CAP {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue never filled"
        );
        tokio::task::yield_now().await;
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
        assert!(queue.depth() <= CAP, "queue grew to {}", queue.depth());
    }
    assert!(
        senders.iter().any(|s| !s.is_finished()),
        "senders must wait at the cap"
    );
    // An activity for a user not queued is dropped at the cap, not waited for.
    tokio::time::timeout(Duration::from_secs(1), queue.push(activity("late", 0)))
        .await
        .expect("an activity push waited at the cap");
    assert_eq!(queue.dropped(), 1);

    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    for s in senders {
        s.await.expect("sender");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let done = {
            let announced = announced.lock().unwrap();
            announced.len() == USERS
                && announced
                    .values()
                    .all(|s| s.last() == Some(&Status::Offline))
        };
        if done && queue.depth() == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every final state was announced"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(max_depth.load(Ordering::SeqCst) <= CAP);
    for (user, statuses) in announced.lock().unwrap().iter() {
        let ranks: Vec<usize> = statuses
            .iter()
            .map(|s| order.iter().position(|o| o == s).unwrap())
            .collect();
        assert!(
            ranks.windows(2).all(|w| w[0] < w[1]),
            "{user}'s statuses out of order: {statuses:?}"
        );
    }
    queue.close();
    for w in workers {
        w.await.expect("worker");
    }
}

/// Many changes of one user while it waits are one announcement: the latest of each kind, in
/// the order the kinds last arrived.
#[tokio::test]
async fn changes_of_one_user_coalesce() {
    let queue = PresenceQueue::new(4, Metrics::install().expect("metrics"));
    for n in 0..1000 {
        queue.push(activity("u", n)).await;
    }
    queue.push(status("u", Status::Away)).await;
    queue.push(status("u", Status::Busy)).await;
    assert_eq!(queue.depth(), 1);
    let (user, pending) = queue.next().await.expect("a user");
    assert_eq!(user, "u");
    assert_eq!(
        pending.activity.map(|a| a.activity).as_deref(),
        Some("a999")
    );
    assert_eq!(pending.status.map(|s| s.status), Some(Status::Busy));
    assert!(!pending.activity_last, "the status came last");
    // What arrives while the user is being announced waits for the next round.
    queue.push(activity("u", 1000)).await;
    assert_eq!(queue.depth(), 1);
    queue.done("u");
    let (_, pending) = queue.next().await.expect("the user again");
    assert!(pending.activity_last && pending.status.is_none());
}

async fn audience(app: &TestApp, user: &str) -> Audience {
    let core = &app.core;
    let audience = core
        .presence_audience
        .get(
            &core.presence,
            &core.preferences,
            core.chat.membership_generation(),
            user,
        )
        .await
        .expect("audience");
    (*audience).clone()
}

async fn service(app: &TestApp, method: reqwest::Method, path: &str, body: serde_json::Value) {
    let res = app
        .client
        .request(method.clone(), app.url(path))
        .header("x-api-key", SERVICE_KEY)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert!(
        res.status().is_success(),
        "{method} {path}: {}",
        res.status()
    );
}

async fn follow(app: &TestApp, follower: &str, followee: &str, on: bool) {
    let method = if on {
        reqwest::Method::PUT
    } else {
        reqwest::Method::DELETE
    };
    let body = json!({ "followerId": follower, "followeeId": followee });
    service(app, method, "/api/v1/internal/follows", body).await;
}

/// A cached audience is dropped by follow, unfollow, `shareOnlineStatus` and new rooms, so the
/// next announcement reaches exactly who it should at once.
async fn the_audience_cache_follows_every_change(backend: Backend) {
    let app = spawn_app_with(backend, &["--service-api-key", SERVICE_KEY]).await;
    follow(&app, "b", "a", true).await;
    assert_eq!(audience(&app, "a").await.users, ["b"]);
    assert!(app.core.presence_audience.contains("a"), "cached");

    follow(&app, "c", "a", true).await;
    assert!(
        !app.core.presence_audience.contains("a"),
        "dropped on follow"
    );
    assert_eq!(audience(&app, "a").await.users, ["b", "c"]);

    follow(&app, "b", "a", false).await;
    assert_eq!(audience(&app, "a").await.users, ["c"], "unfollow");

    let token = app.token("a");
    let res = app
        .client
        .put(app.url("/api/v1/realtime/notifications/preferences"))
        .bearer_auth(&token)
        .json(&json!({ "preferences": { "shareOnlineStatus": false } }))
        .send()
        .await
        .expect("PUT preferences");
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(audience(&app, "a").await, Audience::default(), "hidden");
    let res = app
        .client
        .put(app.url("/api/v1/realtime/notifications/preferences"))
        .bearer_auth(&token)
        .json(&json!({ "preferences": { "shareOnlineStatus": true } }))
        .send()
        .await
        .expect("PUT preferences");
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(audience(&app, "a").await.users, ["c"], "shown again");

    let (room, _) = app
        .core
        .chat
        .create_room(
            "a",
            NewRoom {
                participants: vec!["d".to_owned()],
                room_type: Some(RoomType::Direct),
                name: None,
            },
        )
        .await
        .expect("direct room");
    let now = audience(&app, "a").await;
    assert_eq!(now.users, ["c", "d"], "a new direct partner hears at once");
    assert_eq!(now.rooms, std::slice::from_ref(&room.id));
    assert_eq!(audience(&app, "d").await.users, ["a"]);
}

/// A follow made through one node drops the audience another node cached.
async fn a_follow_on_one_node_drops_the_audience_cached_on_another(backend: Backend) {
    let nodes = spawn_cluster(backend, 2, &["--service-api-key", SERVICE_KEY]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    assert!(audience(a, "x").await.users.is_empty());
    assert!(a.core.presence_audience.contains("x"));
    follow(b, "y", "x", true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.core.presence_audience.contains("x") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the invalidation never reached the other node"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(audience(a, "x").await.users, ["y"]);
    follow(b, "y", "x", false).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while a.core.presence_audience.contains("x") {
        assert!(tokio::time::Instant::now() < deadline, "unfollow not heard");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(audience(a, "x").await.users.is_empty());
}

backend_tests!(
    the_audience_cache_follows_every_change,
    a_follow_on_one_node_drops_the_audience_cached_on_another,
);
