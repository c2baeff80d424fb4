//! Display names: the profile the backend sets through the service API is not overwritten by
//! tokens without a `name` claim, and is what messages show for such users.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, spawn_app_with};

const SERVICE_KEY: &str = "service-key-for-the-tests-0123456789";

async fn set_profile(app: &TestApp, user_id: &str, name: &str) {
    let response = app
        .client
        .put(app.url(&format!("/api/v1/internal/users/{user_id}")))
        .header("x-api-key", SERVICE_KEY)
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect("PUT profile");
    assert_eq!(response.status(), StatusCode::OK);
}

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let response = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    assert!(
        response.status().is_success(),
        "POST {path}: {}",
        response.status()
    );
    response.json().await.expect("JSON")
}

async fn a_token_without_a_name_keeps_the_profile_name(backend: Backend) {
    let app = spawn_app_with(backend, &["--service-api-key", SERVICE_KEY]).await;
    set_profile(&app, "bob", "Bob Builder").await;
    let alice = app.token_named("alice", Some("Alice"));
    let bob = app.token("bob");
    let room = post(
        &app,
        &alice,
        "/api/v1/realtime/chat/rooms",
        json!({ "participants": ["bob"] }),
    )
    .await;
    let messages = format!(
        "/api/v1/realtime/chat/rooms/{}/messages",
        room["id"].as_str().expect("id")
    );

    let from_bob = post(&app, &bob, &messages, json!({ "message": "hi" })).await;
    let from_alice = post(&app, &alice, &messages, json!({ "message": "hello" })).await;

    assert_eq!(from_bob["senderName"], "Bob Builder", "{from_bob}");
    assert_eq!(
        from_alice["senderName"], "Alice",
        "a claim names the sender"
    );
    let room: Value = app
        .client
        .get(app.url(&format!(
            "/api/v1/realtime/chat/rooms/{}",
            room["id"].as_str().expect("id")
        )))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("GET room")
        .json()
        .await
        .expect("room JSON");
    let bob_member = room["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["userId"] == "bob"))
        .unwrap_or_else(|| panic!("bob is a member: {room}"));
    assert_eq!(bob_member["name"], "Bob Builder", "{room}");
}

async fn a_user_without_a_profile_is_named_after_their_id(backend: Backend) {
    let app = spawn_app_with(backend, &["--service-api-key", SERVICE_KEY]).await;
    let carol = app.token("carol");
    let room = post(
        &app,
        &carol,
        "/api/v1/realtime/chat/rooms",
        json!({ "participants": ["dave"] }),
    )
    .await;
    let messages = format!(
        "/api/v1/realtime/chat/rooms/{}/messages",
        room["id"].as_str().expect("id")
    );

    let sent = post(&app, &carol, &messages, json!({ "message": "hi" })).await;

    assert_eq!(sent["senderName"], "carol", "{sent}");
}

backend_tests!(
    a_token_without_a_name_keeps_the_profile_name,
    a_user_without_a_profile_is_named_after_their_id,
);
