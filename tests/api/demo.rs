//! The demo page's switch: served in development, absent in production unless `DEMO_ENABLED`
//! says so, and never a token minted while it is off.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, spawn_app_with};

/// A production server that starts on SQLite (the harness' fresh database), plus `extra` flags.
async fn production(extra: &[&str]) -> TestApp {
    let mut args = vec![
        "--environment",
        "production",
        "--allow-sqlite-in-production",
        "--cors-origins",
        "https://app.example.com",
    ];
    args.extend_from_slice(extra);
    spawn_app_with(Backend::Sqlite, &args).await
}

async fn post_token(app: &TestApp, user_id: &str) -> reqwest::Response {
    app.client
        .post(app.url("/demo/token"))
        .json(&json!({ "userId": user_id, "name": "Eve" }))
        .send()
        .await
        .expect("POST /demo/token")
}

async fn assert_not_found(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], "NOT_FOUND", "{body}");
}

#[tokio::test]
async fn production_has_no_demo_page_and_mints_no_tokens_by_default() {
    let app = production(&[]).await;
    assert_not_found(app.get("/demo").await).await;
    assert_not_found(app.get("/demo/socket.io.min.js").await).await;
    assert_not_found(post_token(&app, "eve").await).await;
}

#[tokio::test]
async fn demo_enabled_false_turns_it_off_in_development() {
    let app = spawn_app_with(Backend::Sqlite, &["--demo-enabled", "false"]).await;
    assert_not_found(app.get("/demo").await).await;
    assert_not_found(post_token(&app, "eve").await).await;
}

#[tokio::test]
async fn demo_enabled_true_serves_it_in_production() {
    let app = production(&["--demo-enabled", "true"]).await;
    let page = app.get("/demo").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/html")),
        "{:?}",
        page.headers()
    );

    let response = post_token(&app, "eve").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("a JSON body");
    let token = body["token"].as_str().expect("a token");
    let user = app
        .core
        .jwt
        .verify(token)
        .expect("the server accepts its demo token");
    assert_eq!(user.id, "eve");
    assert_eq!(user.name, "Eve");
}

#[tokio::test]
async fn demo_is_on_by_default_in_development() {
    let app = spawn_app_with(Backend::Sqlite, &[]).await;
    let bundle = app.get("/demo/socket.io.min.js").await;
    assert_eq!(bundle.status(), StatusCode::OK);
    let response = post_token(&app, "").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
