//! Web Push end to end: subscriptions over REST, and notifications created through the service
//! API reaching a local push service that decrypts each payload (RFC 8291) with the
//! subscription's private key and checks the VAPID signature (RFC 8292), as a browser's push
//! service would.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::{OsRng, RngCore};
use serde_json::{Value, json};
use switchboard::outbound::Outcome;

use crate::common::receiver::{Received, Receiver, answer};
use crate::common::socket::PollingSocket;
use crate::common::{Backend, TestApp, spawn_app_with};

const SERVICE_KEY: &str = "push-test-service-key-0123456789";
const SUBJECT: &str = "mailto:ops@example.com";

/// A browser's side of a subscription: its key pair and auth secret.
struct Browser {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Browser {
    fn new() -> Self {
        let mut auth = [0u8; 16];
        OsRng.fill_bytes(&mut auth);
        Self {
            secret: p256::SecretKey::random(&mut OsRng),
            auth,
        }
    }

    /// `PushSubscription.toJSON()` for a push service at `endpoint`.
    fn subscription(&self, endpoint: &str) -> Value {
        let point = self.secret.public_key().to_encoded_point(false);
        json!({
            "endpoint": endpoint,
            "expirationTime": null,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(point.as_bytes()),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            }
        })
    }

    /// Decrypts a push body, failing the test when it is not valid `aes128gcm` for this key.
    fn decrypt(&self, push: &Received) -> Value {
        let mut auth = web_push_native::Auth::default();
        auth.copy_from_slice(&self.auth);
        let plain = web_push_native::decrypt(push.body.to_vec(), &self.secret, &auth)
            .expect("the push decrypts with the subscription's key");
        serde_json::from_slice(&plain).expect("the push is JSON")
    }
}

/// A fresh VAPID private key, base64url.
fn vapid_key() -> String {
    URL_SAFE_NO_PAD.encode(p256::SecretKey::random(&mut OsRng).to_bytes())
}

async fn push_app(extra: &[&str]) -> TestApp {
    push_app_on(Backend::Sqlite, extra).await
}

async fn push_app_on(backend: Backend, extra: &[&str]) -> TestApp {
    // `=` form: a base64url key may start with `-`, which clap would take for a flag.
    let key = format!("--vapid-private-key={}", vapid_key());
    let mut args = vec![
        "--service-api-key",
        SERVICE_KEY,
        key.as_str(),
        "--vapid-subject",
        SUBJECT,
        "--push-retry-base-ms",
        "20",
    ];
    args.extend_from_slice(extra);
    spawn_app_with(backend, &args).await
}

async fn subscribe(app: &TestApp, user: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/realtime/push/subscriptions"))
        .bearer_auth(app.token(user))
        .json(body)
        .send()
        .await
        .expect("POST subscription")
}

async fn notify(app: &TestApp, users: &[&str], kind: &str, priority: &str) -> Value {
    let response = app
        .client
        .post(app.url("/api/v1/internal/notifications"))
        .header("x-api-key", SERVICE_KEY)
        .json(&json!({
            "userIds": users,
            "type": kind,
            "title": format!("a {kind}"),
            "message": "hello",
            "data": { "postId": "p1" },
            "priority": priority,
        }))
        .send()
        .await
        .expect("POST notification");
    assert_eq!(response.status(), 201);
    response.json().await.expect("notification JSON")
}

/// Checks `Authorization: vapid t=…, k=…`: an ES256 JWT by the server's public key, for the
/// push service's origin, with the configured subject and an expiry within 24 h.
async fn assert_vapid(app: &TestApp, push: &Received, origin: &str) {
    let public: Value = app
        .get("/api/v1/realtime/push/vapid-public-key")
        .await
        .json()
        .await
        .unwrap();
    let public = public["publicKey"].as_str().unwrap();
    let header = push.header("authorization");
    let rest = header
        .strip_prefix("vapid t=")
        .expect("a vapid authorization");
    let (token, k) = rest.split_once(", k=").expect("t= and k=");
    assert_eq!(k, public, "k is the key browsers subscribed with");
    let point = URL_SAFE_NO_PAD.decode(k).unwrap();
    let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
    let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
    let key = jsonwebtoken::DecodingKey::from_ec_components(&x, &y).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[origin]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .expect("the VAPID JWT verifies")
        .claims;
    assert_eq!(claims["sub"], SUBJECT);
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp <= crate::common::unix_now() + 24 * 3600);
}

backend_tests!(subscriptions_are_registered_listed_and_removed_by_their_owner);

async fn subscriptions_are_registered_listed_and_removed_by_their_owner(backend: Backend) {
    let app = push_app_on(backend, &["--push-subscriptions-per-user", "2"]).await;
    let browser = Browser::new();
    let body = browser.subscription("https://push.example.com/send/one");

    let first = subscribe(&app, "alice", &body).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["endpoint"], "https://push.example.com/send/one");
    assert!(first["createdAt"].is_string());
    assert!(first.get("keys").is_none(), "keys are never echoed");

    let again = subscribe(&app, "alice", &body).await;
    assert_eq!(
        again.status(),
        200,
        "the same endpoint again is the existing one"
    );
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let list: Value = app
        .client
        .get(app.url("/api/v1/realtime/push/subscriptions"))
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    let id = first["id"].as_str().unwrap();
    let path = format!("/api/v1/realtime/push/subscriptions/{id}");
    let by_bob = app
        .client
        .delete(app.url(&path))
        .bearer_auth(app.token("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_bob.status(),
        404,
        "someone else's subscription is not found"
    );

    // The per-user bound: a third subscription replaces the oldest.
    for n in 2..=3 {
        let endpoint = format!("https://push.example.com/send/{n}");
        let r = subscribe(&app, "alice", &Browser::new().subscription(&endpoint)).await;
        assert_eq!(r.status(), 201);
    }
    let list: Value = app
        .client
        .get(app.url("/api/v1/realtime/push/subscriptions"))
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoints: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(
        endpoints,
        [
            "https://push.example.com/send/3",
            "https://push.example.com/send/2"
        ]
    );

    let by_alice = app
        .client
        .delete(app.url(&format!(
            "/api/v1/realtime/push/subscriptions/{}",
            list["items"][0]["id"].as_str().unwrap()
        )))
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_alice.status(), 204);

    // Bob signs into the same browser: its subscription moves to him.
    let shared = Browser::new().subscription("https://push.example.com/send/2");
    assert_eq!(subscribe(&app, "bob", &shared).await.status(), 201);
    let list: Value = app
        .client
        .get(app.url("/api/v1/realtime/push/subscriptions"))
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["items"],
        json!([]),
        "alice no longer gets bob's pushes"
    );
}

#[tokio::test]
async fn invalid_subscriptions_are_refused_with_the_field() {
    let app = push_app(&[]).await;
    let browser = Browser::new();
    let good = browser.subscription("https://push.example.com/x");
    let cases = [
        ("endpoint", json!("http://push.example.com/x")),
        ("endpoint", json!("ftp://push.example.com/x")),
        ("endpoint", json!("not a url")),
        ("keys.p256dh", json!("AAAA")),
        ("keys.auth", json!(URL_SAFE_NO_PAD.encode([1u8; 8]))),
    ];
    for (field, value) in cases {
        let mut body = good.clone();
        match field {
            "endpoint" => body["endpoint"] = value,
            "keys.p256dh" => body["keys"]["p256dh"] = value,
            _ => body["keys"]["auth"] = value,
        }
        let response = subscribe(&app, "alice", &body).await;
        assert_eq!(response.status(), 400, "{field}: {body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "INVALID_PAYLOAD");
        assert_eq!(error["error"]["details"][0]["field"], field, "{error}");
    }
    let no_keys = subscribe(&app, "alice", &json!({ "endpoint": "https://p.example/x" })).await;
    assert_eq!(no_keys.status(), 400);
    let unauthenticated = app
        .client
        .post(app.url("/api/v1/realtime/push/subscriptions"))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test]
async fn a_notification_reaches_the_push_service_encrypted_and_signed() {
    let mut service = Receiver::start().await;
    let app = push_app(&[]).await;
    let browser = Browser::new();
    let endpoint = format!("{}/push/alice-1", service.address);
    assert_eq!(
        subscribe(&app, "alice", &browser.subscription(&endpoint))
            .await
            .status(),
        201
    );

    let created = notify(&app, &["alice"], "like", "normal").await;
    let push = service.next().await;
    assert_eq!(push.path, "/push/alice-1");
    assert_eq!(push.header("content-encoding"), "aes128gcm");
    assert_eq!(push.header("urgency"), "normal");
    let ttl: u64 = push.header("ttl").parse().unwrap();
    assert_eq!(ttl, 86_400, "the default TTL without expiresAt");
    let payload = browser.decrypt(&push);
    let sent = &created["notifications"][0];
    assert_eq!(payload["id"], sent["id"]);
    assert_eq!(payload["title"], "a like");
    assert_eq!(payload["data"]["postId"], "p1");
    assert_eq!(payload["type"], "like");
    assert_vapid(&app, &push, &service.address).await;
}

#[tokio::test]
async fn push_false_sends_nothing_for_that_type() {
    let mut service = Receiver::start().await;
    let app = push_app(&[]).await;
    let browser = Browser::new();
    let endpoint = format!("{}/push/a", service.address);
    subscribe(&app, "alice", &browser.subscription(&endpoint)).await;
    let put = app
        .client
        .put(app.url("/api/v1/realtime/notifications/preferences"))
        .bearer_auth(app.token("alice"))
        .json(&json!({ "preferences": { "like": { "push": false } } }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    notify(&app, &["alice"], "like", "normal").await;
    notify(&app, &["alice"], "comment", "normal").await;
    let push = browser.decrypt(&service.next().await);
    assert_eq!(push["type"], "comment", "the like was never pushed");
    assert_eq!(app.core.outbound.stats.get(Outcome::PushQueued), 1);
    assert!(service.try_next().is_none());
}

#[tokio::test]
async fn connected_users_are_not_pushed_unless_configured() {
    let mut service = Receiver::start().await;
    let app = push_app(&[]).await;
    let browser = Browser::new();
    subscribe(
        &app,
        "alice",
        &browser.subscription(&format!("{}/push/a", service.address)),
    )
    .await;
    let (socket, _) = PollingSocket::connect(&app.address, &app.token("alice"))
        .await
        .expect("alice connects");

    notify(&app, &["alice"], "like", "normal").await;
    let stats = &app.core.outbound.stats;
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stats.wait_until(|s| s.get(Outcome::PushSkippedOnline) == 1),
    )
    .await
    .expect("the push was skipped");
    assert!(
        service.try_next().is_none(),
        "nothing reached the push service"
    );
    socket.close().await;

    // With PUSH_ONLY_WHEN_OFFLINE=false a connected user is pushed too.
    let app = push_app(&["--push-only-when-offline", "false"]).await;
    subscribe(
        &app,
        "alice",
        &browser.subscription(&format!("{}/push/b", service.address)),
    )
    .await;
    let (socket, _) = PollingSocket::connect(&app.address, &app.token("alice"))
        .await
        .expect("alice connects");
    notify(&app, &["alice"], "like", "normal").await;
    let push = service.next().await;
    assert_eq!(push.path, "/push/b");
    assert_eq!(browser.decrypt(&push)["type"], "like");
    socket.close().await;
}

#[tokio::test]
async fn a_gone_subscription_is_removed() {
    let mut service = Receiver::start().await;
    service.script(&[answer(410, None)]);
    let app = push_app(&[]).await;
    let browser = Browser::new();
    subscribe(
        &app,
        "alice",
        &browser.subscription(&format!("{}/push/gone", service.address)),
    )
    .await;
    notify(&app, &["alice"], "like", "normal").await;
    service.next().await;
    let stats = &app.core.outbound.stats;
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stats.wait_until(|s| s.get(Outcome::PushGone) == 1),
    )
    .await
    .expect("the subscription was dropped");
    let list: Value = app
        .client
        .get(app.url("/api/v1/realtime/push/subscriptions"))
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn a_throttled_push_is_retried_until_accepted() {
    let mut service = Receiver::start().await;
    service.script(&[answer(429, Some("0")), answer(503, None)]);
    let app = push_app(&[]).await;
    let browser = Browser::new();
    subscribe(
        &app,
        "alice",
        &browser.subscription(&format!("{}/push/slow", service.address)),
    )
    .await;
    let created = notify(&app, &["alice"], "like", "normal").await;
    let id = &created["notifications"][0]["id"];
    for _ in 0..3 {
        let push = service.next().await;
        assert_eq!(
            &browser.decrypt(&push)["id"],
            id,
            "every attempt is the same push"
        );
    }
    let stats = &app.core.outbound.stats;
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stats.wait_until(|s| s.get(Outcome::PushSent) == 1),
    )
    .await
    .expect("the third attempt was accepted");
    assert_eq!(stats.get(Outcome::PushRetried), 2);
    assert!(service.try_next().is_none(), "no attempt after the 201");
}

#[tokio::test]
async fn priority_sets_the_urgency_header() {
    let mut service = Receiver::start().await;
    let app = push_app(&[]).await;
    let browser = Browser::new();
    subscribe(
        &app,
        "alice",
        &browser.subscription(&format!("{}/push/u", service.address)),
    )
    .await;
    let mut expected = std::collections::HashMap::new();
    for (priority, urgency) in [
        ("low", "low"),
        ("normal", "normal"),
        ("high", "high"),
        ("urgent", "high"),
    ] {
        let created = notify(&app, &["alice"], "like", priority).await;
        let id = created["notifications"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        expected.insert(id, urgency);
    }
    for _ in 0..4 {
        let push = service.next().await;
        let payload = browser.decrypt(&push);
        let id = payload["id"].as_str().unwrap();
        assert_eq!(
            push.header("urgency"),
            expected[id],
            "priority {}",
            payload["priority"]
        );
    }
}

#[tokio::test]
async fn a_full_push_queue_drops_and_counts_instead_of_waiting() {
    use switchboard::domain::notifications::{Created, Notification};
    use switchboard::domain::preferences::Channels;
    use switchboard::outbound::Outbound;
    let config = crate::common::test_config(&["--push-queue-max", "1"]);
    // No worker takes from this queue: the second notification finds it full.
    let outbound = Outbound::from_config(&config).expect("push on in development");
    let created = |id: &str, push: bool| Created {
        notification: Notification {
            id: id.into(),
            notification_type: "like".into(),
            title: "t".into(),
            message: "m".into(),
            data: json!({}),
            priority: "normal".into(),
            actor: None,
            is_read: false,
            created_at: chrono::Utc::now(),
            expires_at: None,
            user_id: "alice".into(),
        },
        deliver: true,
        channels: Channels {
            in_app: true,
            push,
            email: true,
        },
    };
    outbound.created(&[
        created("n1", true),
        created("n2", false),
        created("n3", true),
    ]);
    assert_eq!(outbound.stats.get(Outcome::PushQueued), 1);
    assert_eq!(
        outbound.stats.get(Outcome::PushDropped),
        1,
        "n3 is dropped, n2 never offered"
    );
}
