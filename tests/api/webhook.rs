//! The notification webhook end to end: a local receiver checks each body's HMAC signature and
//! headers, fails on cue, and sees the same delivery (same body, same idempotency key) again
//! until it answers 2xx, also across a restart of the server.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use switchboard::outbound::Outcome;

use crate::common::receiver::{Received, Receiver, answer};
use crate::common::{
    Backend, TestApp, fresh_database, spawn_app_on_database, spawn_app_with, unix_now,
};

const SERVICE_KEY: &str = "webhook-test-service-key-0123456789";
const SECRET: &str = "webhook-test-secret";

fn webhook_args(url: &str) -> Vec<String> {
    [
        "--service-api-key",
        SERVICE_KEY,
        "--notification-webhook-url",
        url,
        "--notification-webhook-secret",
        SECRET,
        "--notification-webhook-retry-base-ms",
        "20",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn notify(app: &TestApp, user: &str, kind: &str) -> Value {
    let response = app
        .client
        .post(app.url("/api/v1/internal/notifications"))
        .header("x-api-key", SERVICE_KEY)
        .json(&json!({
            "userIds": [user],
            "type": kind,
            "title": format!("a {kind}"),
            "message": "hello",
            "priority": "high",
        }))
        .send()
        .await
        .expect("POST notification");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["notifications"][0].clone()
}

/// Checks what every receiver must: the signature is the HMAC-SHA256 of the raw body under the
/// shared secret, the idempotency key is the body's id, the timestamp is now. Returns the body.
fn verified(request: &Received) -> Value {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&request.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        request.header("x-switchboard-signature"),
        format!("sha256={expected}")
    );
    assert_eq!(request.header("content-type"), "application/json");
    let timestamp: u64 = request.header("x-switchboard-timestamp").parse().unwrap();
    assert!(timestamp.abs_diff(unix_now()) < 60);
    let body: Value = serde_json::from_slice(&request.body).expect("a JSON body");
    assert_eq!(
        request.header("idempotency-key"),
        body["id"].as_str().unwrap()
    );
    body
}

async fn outbox_rows(app: &TestApp) -> u64 {
    use sea_orm::{EntityTrait, PaginatorTrait};
    entity::webhook_delivery::Entity::find()
        .count(&app.core.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_failed_delivery_is_retried_with_the_same_key_until_accepted() {
    let mut receiver = Receiver::start().await;
    receiver.script(&[answer(500, None)]);
    let url = format!("{}/hooks/notifications", receiver.address);
    let args = webhook_args(&url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = spawn_app_with(Backend::Sqlite, &args).await;
    let profile = app
        .client
        .put(app.url("/api/v1/internal/users/alice"))
        .header("x-api-key", SERVICE_KEY)
        .json(&json!({ "name": "Alice A." }))
        .send()
        .await
        .unwrap();
    assert_eq!(profile.status(), 200);

    let notification = notify(&app, "alice", "mention").await;
    let first = receiver.next().await;
    assert_eq!(first.path, "/hooks/notifications");
    let body = verified(&first);
    assert_eq!(body["type"], "notification.created");
    assert_eq!(body["channel"], "email");
    assert_eq!(body["notification"]["id"], notification["id"]);
    assert_eq!(body["notification"]["title"], "a mention");
    assert_eq!(body["notification"]["priority"], "high");
    assert_eq!(body["user"], json!({ "id": "alice", "name": "Alice A." }));
    assert!(body["createdAt"].is_string());

    let second = receiver.next().await;
    assert_eq!(verified(&second), body, "the retry sends the same body");
    assert_eq!(
        second.header("idempotency-key"),
        first.header("idempotency-key")
    );
    let stats = &app.core.outbound.stats;
    tokio::time::timeout(
        Duration::from_secs(10),
        stats.wait_until(|s| s.get(Outcome::WebhookDelivered) == 1),
    )
    .await
    .expect("the delivery completed");
    assert_eq!(stats.get(Outcome::WebhookRetried), 1);
    assert_eq!(
        outbox_rows(&app).await,
        0,
        "a delivered row leaves the outbox"
    );
    assert!(
        receiver.try_next().is_none(),
        "delivered once after the 500"
    );
}

#[tokio::test]
async fn email_false_sends_no_webhook_for_that_type() {
    let mut receiver = Receiver::start().await;
    let args = webhook_args(&format!("{}/hook", receiver.address));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = spawn_app_with(Backend::Sqlite, &args).await;
    let put = app
        .client
        .put(app.url("/api/v1/realtime/notifications/preferences"))
        .bearer_auth(app.token("alice"))
        .json(&json!({ "preferences": { "like": { "email": false } } }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    notify(&app, "alice", "like").await;
    assert_eq!(outbox_rows(&app).await, 0, "no delivery was written");
    notify(&app, "alice", "comment").await;
    let body = verified(&receiver.next().await);
    assert_eq!(body["notification"]["type"], "comment");
    assert_eq!(
        body["user"]["name"], "alice",
        "a user without a profile is named by id"
    );
}

backend_tests!(a_pending_delivery_is_sent_after_a_restart);

async fn a_pending_delivery_is_sent_after_a_restart(backend: Backend) {
    let mut receiver = Receiver::start().await;
    // The first node's attempt fails and asks for a retry a second later; the node stops
    // before then.
    receiver.script(&[answer(503, Some("1"))]);
    let (database_url, _scratch) = fresh_database(backend).await;
    let args = webhook_args(&format!("{}/hook", receiver.address));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first_node = spawn_app_on_database(&database_url, &args).await;
    let notification = notify(&first_node, "alice", "follow").await;
    let first = receiver.next().await;
    let body = verified(&first);
    assert_eq!(body["notification"]["id"], notification["id"]);
    let stats = &first_node.core.outbound.stats;
    tokio::time::timeout(
        Duration::from_secs(10),
        stats.wait_until(|s| s.get(Outcome::WebhookRetried) == 1),
    )
    .await
    .expect("the retry was scheduled");
    assert_eq!(outbox_rows(&first_node).await, 1, "pending in the outbox");
    drop(first_node);

    let second_node = spawn_app_on_database(&database_url, &args).await;
    let again = receiver.next().await;
    assert_eq!(verified(&again), body);
    assert_eq!(
        again.header("idempotency-key"),
        first.header("idempotency-key")
    );
    let stats = &second_node.core.outbound.stats;
    tokio::time::timeout(
        Duration::from_secs(10),
        stats.wait_until(|s| s.get(Outcome::WebhookDelivered) == 1),
    )
    .await
    .expect("the restarted node delivered it");
    assert_eq!(outbox_rows(&second_node).await, 0);
}

#[tokio::test]
async fn a_delivery_out_of_attempts_is_marked_failed() {
    let mut receiver = Receiver::start().await;
    receiver.script(&[answer(500, None), answer(400, None)]);
    let mut args = webhook_args(&format!("{}/hook", receiver.address));
    args.extend(["--notification-webhook-max-attempts".into(), "2".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = spawn_app_with(Backend::Sqlite, &args).await;
    notify(&app, "alice", "system").await;
    receiver.next().await;
    receiver.next().await;
    let stats = &app.core.outbound.stats;
    tokio::time::timeout(
        Duration::from_secs(10),
        stats.wait_until(|s| s.get(Outcome::WebhookFailed) == 1),
    )
    .await
    .expect("the delivery was given up");
    use sea_orm::EntityTrait;
    let rows = entity::webhook_delivery::Entity::find()
        .all(&app.core.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "failed");
    assert_eq!(rows[0].attempts, 2);
    assert_eq!(rows[0].last_error.as_deref(), Some("HTTP 400 Bad Request"));
}

#[tokio::test]
async fn group_invites_made_with_a_new_group_reach_the_webhook() {
    let mut receiver = Receiver::start().await;
    let args = webhook_args(&format!("{}/hook", receiver.address));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = spawn_app_with(Backend::Sqlite, &args).await;
    let created = app
        .client
        .post(app.url("/api/v1/realtime/chat/rooms"))
        .bearer_auth(app.token("alice"))
        .json(&json!({ "participants": ["bob", "carol"], "type": "group", "name": "Trip" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let mut invited = Vec::new();
    for _ in 0..2 {
        let body = verified(&receiver.next().await);
        assert_eq!(body["notification"]["type"], "group_invite");
        invited.push(body["user"]["id"].as_str().unwrap().to_owned());
    }
    invited.sort();
    assert_eq!(invited, ["bob", "carol"], "the creator is not invited");
}
