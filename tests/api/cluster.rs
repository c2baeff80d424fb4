//! The Redis presence store as several nodes see it: each transition happens once, whichever
//! node makes it, and a dead node's users go offline.

use std::time::Duration;

use chrono::{DateTime, Utc};
use fred::prelude::*;
use switchboard::cluster::presence::RedisPresence;
use switchboard::domain::presence::{PresenceStore, Status};

use crate::common::redis_url;

const TTL: Duration = Duration::from_secs(2);

async fn client() -> Client {
    let mut config = Config::from_url(&redis_url()).expect("test Redis URL");
    config.version = fred::types::RespVersion::RESP3;
    let client = Builder::from_config(config)
        .build()
        .expect("building a Redis client");
    client.init().await.expect("connecting to the test Redis");
    client
}

/// Two nodes of one fresh cluster (their own key prefix).
async fn two_nodes() -> (RedisPresence, RedisPresence) {
    let prefix = format!("sbtest-{}", uuid::Uuid::now_v7().simple());
    let node = |id: &str| {
        let prefix = prefix.clone();
        let id = id.to_owned();
        async move { RedisPresence::new(client().await, &prefix, id, TTL, Duration::from_secs(300)) }
    };
    (node("a").await, node("b").await)
}

fn later(seconds: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(seconds)
}

#[tokio::test]
async fn the_connection_limit_counts_every_node() {
    let (a, b) = two_nodes().await;
    assert!(a.reserve_connection("u", "a1", 3).await.unwrap());
    assert!(a.reserve_connection("u", "a2", 3).await.unwrap());
    assert!(b.reserve_connection("u", "b1", 3).await.unwrap());
    assert!(!b.reserve_connection("u", "b2", 3).await.unwrap());
    assert!(!a.reserve_connection("u", "a3", 3).await.unwrap());
    assert_eq!(a.connection_count("u").await.unwrap(), 3);
    assert_eq!(b.release_connection("u", "b1", later(5)).await.unwrap(), 2);
    assert!(a.reserve_connection("u", "a3", 3).await.unwrap());
}

#[tokio::test]
async fn online_and_offline_are_reported_once_across_nodes() {
    let (a, b) = two_nodes().await;
    let now = Utc::now();
    a.reserve_connection("u", "a1", 10).await.unwrap();
    b.reserve_connection("u", "b1", 10).await.unwrap();
    let first = a.came_online("u", now).await.unwrap();
    let second = b.came_online("u", now).await.unwrap();
    assert_eq!((first, second), (Some(Status::Online), None));

    a.release_connection("u", "a1", now).await.unwrap();
    assert!(
        a.take_due_offline(later(1)).await.unwrap().is_empty(),
        "a socket is left on b"
    );
    b.release_connection("u", "b1", now).await.unwrap();
    let (from_a, from_b) = tokio::join!(a.take_due_offline(later(1)), b.take_due_offline(later(1)));
    let mut reported = from_a.unwrap();
    reported.extend(from_b.unwrap());
    assert_eq!(
        reported,
        vec!["u".to_owned()],
        "offline reported exactly once"
    );
}

#[tokio::test]
async fn a_reconnect_on_another_node_within_grace_is_no_change() {
    let (a, b) = two_nodes().await;
    let now = Utc::now();
    a.reserve_connection("u", "a1", 10).await.unwrap();
    a.came_online("u", now).await.unwrap();
    a.set_status("u", Status::Busy, now).await.unwrap();
    a.release_connection("u", "a1", later(5)).await.unwrap();
    b.reserve_connection("u", "b1", 10).await.unwrap();
    assert_eq!(b.came_online("u", now).await.unwrap(), None, "no flap");
    assert!(b.take_due_offline(later(10)).await.unwrap().is_empty());
    let live = b.get_many(&["u".to_owned()]).await.unwrap();
    assert_eq!(
        live[0].1.status,
        Status::Busy,
        "a chosen status survives the move"
    );
}

#[tokio::test]
async fn idle_is_noticed_once_and_undone_by_any_event() {
    let (a, b) = two_nodes().await;
    let now = Utc::now();
    a.reserve_connection("u", "a1", 10).await.unwrap();
    b.reserve_connection("u", "b1", 10).await.unwrap();
    a.came_online("u", now).await.unwrap();
    let cutoff = later(60);
    let (swept_a, swept_b) = tokio::join!(a.sweep_idle(cutoff), b.sweep_idle(cutoff));
    let mut swept = swept_a.unwrap();
    swept.extend(swept_b.unwrap());
    assert_eq!(swept, vec!["u".to_owned()], "away reported exactly once");
    assert_eq!(b.touch("u", later(61)).await.unwrap(), Some(Status::Online));
    assert_eq!(
        b.set_status("u", Status::Away, later(62)).await.unwrap(),
        Some(Status::Away)
    );
    assert!(
        a.sweep_idle(later(600)).await.unwrap().is_empty(),
        "a chosen away is not idleness"
    );
}

#[tokio::test]
async fn a_dead_nodes_users_go_offline() {
    let (a, b) = two_nodes().await;
    let now = Utc::now();
    a.maintain(now, now).await.unwrap();
    b.maintain(now, now).await.unwrap();
    a.reserve_connection("u", "a1", 10).await.unwrap();
    a.came_online("u", now).await.unwrap();
    // a stops renewing its heartbeat; once it expired, b cleans up after it.
    let after_ttl = now + chrono::Duration::from_std(TTL * 2).unwrap();
    assert!(!b.maintain(after_ttl, after_ttl).await.unwrap());
    assert_eq!(b.connection_count("u").await.unwrap(), 0);
    assert_eq!(
        b.take_due_offline(after_ttl).await.unwrap(),
        vec!["u".to_owned()]
    );
    // a was alive after all (e.g. Redis was unreachable): its next heartbeat says so.
    assert!(
        a.maintain(after_ttl, after_ttl).await.unwrap(),
        "a must re-register its sockets"
    );
}

#[tokio::test]
async fn leaving_drops_the_nodes_sockets_and_keeps_the_grace_period() {
    let (a, b) = two_nodes().await;
    let now = Utc::now();
    a.maintain(now, now).await.unwrap();
    a.reserve_connection("u", "a1", 10).await.unwrap();
    a.came_online("u", now).await.unwrap();
    a.leave(later(5)).await.unwrap();
    assert_eq!(b.connection_count("u").await.unwrap(), 0);
    assert!(
        b.take_due_offline(now).await.unwrap().is_empty(),
        "still in the grace period"
    );
    assert_eq!(
        b.take_due_offline(later(6)).await.unwrap(),
        vec!["u".to_owned()]
    );
}
