//! Who may call which REST route: user JWTs on `/api/v1/realtime`, the service key on
//! `/api/v1/internal`, and every refusal a 401 `UNAUTHORIZED` in the contract's error shape.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::common::{
    Backend, TEST_JWT_SECRET, TestApp, hs256_token, spawn_app, spawn_app_with, unix_now,
};

/// User routes that take no body and answer 200 to any authenticated caller.
const USER_GETS: &[&str] = &[
    "/api/v1/realtime/chat/rooms",
    "/api/v1/realtime/notifications",
    "/api/v1/realtime/notifications/preferences",
    "/api/v1/realtime/feed",
];

const SERVICE_KEY: &str = "service-key-for-the-tests-0123456789";

/// `Authorization` values that must not authenticate anyone, with why.
fn bad_authorizations() -> Vec<(&'static str, String)> {
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({ "alg": "none", "typ": "JWT" }).to_string()),
        URL_SAFE_NO_PAD.encode(json!({ "sub": "mallory", "exp": unix_now() + 600 }).to_string()),
    );
    vec![
        ("basic auth", "Basic dXNlcjpwYXNz".to_owned()),
        ("empty bearer", "Bearer ".to_owned()),
        ("not a JWT", "Bearer not-a-jwt".to_owned()),
        (
            "expired",
            format!(
                "Bearer {}",
                hs256_token(
                    &json!({ "sub": "u1", "exp": unix_now() - 600 }),
                    TEST_JWT_SECRET.as_bytes()
                )
            ),
        ),
        (
            "another secret",
            format!(
                "Bearer {}",
                hs256_token(
                    &json!({ "sub": "u1", "exp": unix_now() + 600 }),
                    b"not-the-server-secret"
                )
            ),
        ),
        ("alg none", format!("Bearer {alg_none}")),
    ]
}

/// Sends `request` and checks it was refused with a 401 `UNAUTHORIZED` error body.
async fn assert_unauthorized(request: RequestBuilder, what: &str) {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
    assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{what}: {body}");
    assert!(
        body["error"]["message"].is_string(),
        "{what}: no message in {body}"
    );
}

async fn user_routes_need_a_valid_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let bad = bad_authorizations();

    for path in USER_GETS {
        assert_unauthorized(
            app.client.get(app.url(path)),
            &format!("GET {path}, no token"),
        )
        .await;
        for (why, header) in &bad {
            let request = app
                .client
                .get(app.url(path))
                .header("authorization", header);
            assert_unauthorized(request, &format!("GET {path}, {why}")).await;
        }

        let response = app
            .client
            .get(app.url(path))
            .bearer_auth(app.token("u1"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "GET {path} with a valid token"
        );
    }
}

backend_tests!(user_routes_need_a_valid_token);

#[tokio::test]
async fn authentication_is_judged_before_the_body() {
    let app = spawn_app(Backend::Sqlite).await;

    let request = app
        .client
        .post(app.url("/api/v1/realtime/chat/rooms"))
        .header("content-type", "application/json")
        .body("{ not json");

    assert_unauthorized(request, "POST /chat/rooms, malformed body, no token").await;
}

#[tokio::test]
async fn the_token_query_parameter_is_not_rest_authentication() {
    let app = spawn_app(Backend::Sqlite).await;
    let path = format!("/api/v1/realtime/chat/rooms?token={}", app.token("u1"));

    assert_unauthorized(app.client.get(app.url(&path)), "GET with ?token=").await;
}

/// `PUT /users/u1` on the service API with `with` applied.
fn upsert_user(
    app: &TestApp,
    with: impl FnOnce(RequestBuilder) -> RequestBuilder,
) -> RequestBuilder {
    with(
        app.client
            .put(app.url("/api/v1/internal/users/u1"))
            .json(&json!({ "name": "User One" })),
    )
}

#[tokio::test]
async fn the_service_api_needs_its_key() {
    let app = spawn_app_with(Backend::Sqlite, &["--service-api-key", SERVICE_KEY]).await;

    assert_unauthorized(upsert_user(&app, |r| r), "no key").await;
    assert_unauthorized(
        upsert_user(&app, |r| {
            r.header("x-api-key", "service-key-for-the-tests-012345678")
        }),
        "wrong key",
    )
    .await;
    assert_unauthorized(
        upsert_user(&app, |r| r.bearer_auth(app.token("u1"))),
        "user JWT instead of the key",
    )
    .await;
    let malformed = app
        .client
        .put(app.url("/api/v1/internal/users/u1"))
        .header("content-type", "application/json")
        .body("{ not json");
    assert_unauthorized(malformed, "malformed body, no key").await;

    let response = upsert_user(&app, |r| r.header("x-api-key", SERVICE_KEY))
        .send()
        .await
        .expect("PUT /users/u1");
    assert!(
        response.status().is_success(),
        "right key refused: {}",
        response.status()
    );
}

#[tokio::test]
async fn the_service_api_is_closed_without_a_configured_key() {
    let app = spawn_app(Backend::Sqlite).await;

    assert_unauthorized(upsert_user(&app, |r| r), "no key configured, none sent").await;
    assert_unauthorized(
        upsert_user(&app, |r| r.header("x-api-key", "")),
        "no key configured, empty key sent",
    )
    .await;
    assert_unauthorized(
        upsert_user(&app, |r| r.header("x-api-key", SERVICE_KEY)),
        "no key configured, some key sent",
    )
    .await;
}
