//! Property tests of every REST route (contract §7–§8): arbitrary JSON bodies, arbitrary bytes,
//! odd path segments and query strings never get a 5xx or a hang; every refusal is a 4xx in the
//! contract's error shape; and a refused request persists nothing. Case counts are bounded so
//! the whole file runs in seconds; set `PROPTEST_CASES` to run more.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use reqwest::Method;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Map, Value, json};

use crate::common::{Backend, TestApp, skip_postgres, spawn_app_with};

const SERVICE_KEY: &str = "fuzz-service-key-0123456789";

/// Codes an error body may carry (contract §2).
const CODES: &[&str] = &[
    "INVALID_PAYLOAD",
    "UNAUTHORIZED",
    "FORBIDDEN",
    "NOT_FOUND",
    "CONFLICT",
    "RATE_LIMITED",
    "PAYLOAD_TOO_LARGE",
    "TOO_MANY_CONNECTIONS",
    "INTERNAL",
];

/// Every table, so "nothing persisted" covers every kind of data.
const TABLES: &[&str] = &[
    "users",
    "follows",
    "rooms",
    "room_members",
    "messages",
    "notifications",
    "notification_preferences",
    "feed_activities",
    "push_subscriptions",
    "webhook_deliveries",
];

/// Who a route is for.
#[derive(Clone, Copy, Debug)]
enum Caller {
    User,
    Service,
}

/// Every route of the contract; `{room}`, `{message}` and `{user}` are filled per case.
const ROUTES: &[(&str, &str, Caller)] = &[
    ("GET", "/api/v1/realtime/notifications", Caller::User),
    ("PUT", "/api/v1/realtime/notifications/read", Caller::User),
    (
        "GET",
        "/api/v1/realtime/notifications/preferences",
        Caller::User,
    ),
    (
        "PUT",
        "/api/v1/realtime/notifications/preferences",
        Caller::User,
    ),
    ("GET", "/api/v1/realtime/feed", Caller::User),
    ("GET", "/api/v1/realtime/feed/trending", Caller::User),
    ("GET", "/api/v1/realtime/feed/statistics", Caller::User),
    ("GET", "/api/v1/realtime/presence/me", Caller::User),
    ("PUT", "/api/v1/realtime/presence/activity", Caller::User),
    (
        "GET",
        "/api/v1/realtime/presence/online-friends",
        Caller::User,
    ),
    ("GET", "/api/v1/realtime/chat/rooms", Caller::User),
    ("POST", "/api/v1/realtime/chat/rooms", Caller::User),
    ("GET", "/api/v1/realtime/chat/rooms/{room}", Caller::User),
    ("PATCH", "/api/v1/realtime/chat/rooms/{room}", Caller::User),
    (
        "POST",
        "/api/v1/realtime/chat/rooms/{room}/members",
        Caller::User,
    ),
    (
        "DELETE",
        "/api/v1/realtime/chat/rooms/{room}/members/{user}",
        Caller::User,
    ),
    (
        "GET",
        "/api/v1/realtime/chat/rooms/{room}/messages",
        Caller::User,
    ),
    (
        "POST",
        "/api/v1/realtime/chat/rooms/{room}/messages",
        Caller::User,
    ),
    (
        "PATCH",
        "/api/v1/realtime/chat/rooms/{room}/messages/{message}",
        Caller::User,
    ),
    (
        "DELETE",
        "/api/v1/realtime/chat/rooms/{room}/messages/{message}",
        Caller::User,
    ),
    (
        "GET",
        "/api/v1/realtime/chat/rooms/{room}/messages/search",
        Caller::User,
    ),
    (
        "GET",
        "/api/v1/realtime/push/vapid-public-key",
        Caller::User,
    ),
    ("GET", "/api/v1/realtime/push/subscriptions", Caller::User),
    ("POST", "/api/v1/realtime/push/subscriptions", Caller::User),
    (
        "DELETE",
        "/api/v1/realtime/push/subscriptions/{message}",
        Caller::User,
    ),
    (
        "POST",
        "/api/v1/realtime/chat/rooms/{room}/typing",
        Caller::User,
    ),
    (
        "POST",
        "/api/v1/realtime/chat/rooms/{room}/read",
        Caller::User,
    ),
    (
        "POST",
        "/api/v1/realtime/chat/rooms/{room}/delivered",
        Caller::User,
    ),
    ("PUT", "/api/v1/realtime/presence/status", Caller::User),
    ("GET", "/api/v1/realtime/status", Caller::User),
    ("PUT", "/api/v1/internal/users/{user}", Caller::Service),
    ("PUT", "/api/v1/internal/follows", Caller::Service),
    ("DELETE", "/api/v1/internal/follows", Caller::Service),
    ("POST", "/api/v1/internal/notifications", Caller::Service),
    ("POST", "/api/v1/internal/feed/activities", Caller::Service),
    ("POST", "/api/v1/internal/broadcast", Caller::Service),
];

/// Field names of every body and payload, so generated objects reach past "unknown shape".
const FIELDS: &[&str] = &[
    "participants",
    "type",
    "name",
    "userIds",
    "message",
    "replyToId",
    "clientMessageId",
    "notificationIds",
    "all",
    "preferences",
    "activity",
    "metadata",
    "status",
    "roomId",
    "upToSeq",
    "afterSeq",
    "limit",
    "isTyping",
    "followingOnly",
    "followerId",
    "followeeId",
    "title",
    "data",
    "priority",
    "actorId",
    "expiresAt",
    "dedupKey",
    "activityType",
    "targetId",
    "targetType",
    "content",
    "audience",
    "event",
    "rooms",
    "except",
    "avatarUrl",
    "like",
    "group_invite",
    "shareTyping",
    "shareOnlineStatus",
    "shareReadReceipts",
    "inApp",
    "push",
    "email",
    "endpoint",
    "keys",
    "p256dh",
    "auth",
    "expirationTime",
];

/// Query parameter names of the list routes.
const PARAMS: &[&str] = &[
    "limit",
    "before",
    "after_seq",
    "unread_only",
    "following_only",
    "types",
    "time_range",
    "q",
];

/// Strings that mean something somewhere: enum values, ids, edge lengths, control characters.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            " ",
            "group",
            "direct",
            "public",
            "text",
            "image",
            "system",
            "like",
            "normal",
            "urgent",
            "followers",
            "online",
            "away",
            "busy",
            "offline",
            "1h",
            "24h",
            "7d",
            "alice",
            "bob",
            "post",
            "comment",
            "chat:x",
            "user:bob",
            "feed:public",
            "connect",
            "2030-01-01T00:00:00Z",
            "1999-01-01T00:00:00Z",
            "not-a-date",
            "\u{0}",
            "a\u{0}b",
            "\n",
            "<script>",
            "\"",
            "%",
            "../",
            "🙂",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
        "[a-z_]{1,40}",
        (0usize..300).prop_map(|n| "x".repeat(n)),
        Just("y".repeat(4001)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec![0i64, 1, -1, 20, 100, 101, 501, i64::MAX, i64::MIN])
            .prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        interesting_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        let key = prop_oneof![
            3 => prop::sample::select(FIELDS).prop_map(str::to_owned),
            1 => interesting_string(),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A valid body for each route (`{}` for those without one), for mutations to start from:
/// changing one field of a valid body reaches rules that a random object never gets to.
fn template(route: usize) -> Value {
    let (_, path, _) = ROUTES[route];
    match (ROUTES[route].0, path.rsplit('/').next().unwrap_or_default()) {
        ("PUT", "read") => json!({ "notificationIds": ["00000000-0000-7000-8000-000000000000"] }),
        ("PUT", "preferences") => {
            json!({ "preferences": { "like": { "inApp": false }, "shareTyping": true } })
        }
        ("PUT", "activity") => json!({ "activity": "viewing:post:1", "metadata": { "a": 1 } }),
        ("POST", "typing") => json!({ "isTyping": true }),
        ("POST", "read" | "delivered") => json!({ "upToSeq": 1 }),
        ("PUT", "status") => json!({ "status": "busy" }),
        ("POST", "rooms") => {
            json!({ "participants": ["bob", "carol"], "type": "group", "name": "G" })
        }
        ("PATCH", "{room}") => json!({ "name": "Renamed" }),
        ("POST", "members") => json!({ "userIds": ["dave"] }),
        ("POST", "messages") => json!({ "message": "hi", "type": "text", "clientMessageId": "c1" }),
        ("PATCH", "{message}") => json!({ "message": "edited" }),
        ("PUT", "{user}") => json!({ "name": "Bob", "avatarUrl": "https://example.com/b.png" }),
        (_, "follows") => json!({ "followerId": "alice", "followeeId": "bob" }),
        ("POST", "notifications") => json!({
            "userIds": ["bob"], "type": "like", "title": "T", "message": "M", "data": { "p": 1 },
            "priority": "normal", "actorId": "alice", "dedupKey": "k",
            "expiresAt": "2030-01-01T00:00:00Z"
        }),
        ("POST", "activities") => json!({
            "activityType": "post", "actorId": "alice", "targetId": "p1", "targetType": "post",
            "content": "c", "metadata": { "m": 1 }, "audience": "public"
        }),
        ("POST", "subscriptions") => json!({
            "endpoint": "https://push.example.com/send/fuzz", "expirationTime": null,
            "keys": {
                "p256dh": "BGUtS9N0KhF9v5RiSVsuQKfBdCLgAztiZ9WsQ_iBUD11mumsBtlBQw23yTwfZEBqgQD3nuF7AJ9cqJv63_g6_Yo",
                "auth": "AAECAwQFBgcICQoLDA0ODw"
            }
        }),
        ("POST", "broadcast") => json!({
            "event": "app:x", "data": { "d": 1 }, "rooms": ["feed:public"], "userIds": ["bob"],
            "except": ["user:carol"]
        }),
        _ => json!({}),
    }
}

/// One change to a valid body: a field set to anything, or removed.
#[derive(Clone, Debug)]
enum Mutation {
    Set(String, Value),
    Remove(String),
}

fn mutated(route: usize) -> impl Strategy<Value = Value> {
    let base = template(route);
    let own: Vec<String> = base
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let key = if own.is_empty() {
        prop::sample::select(FIELDS).prop_map(str::to_owned).boxed()
    } else {
        prop_oneof![
            3 => prop::sample::select(own),
            1 => prop::sample::select(FIELDS).prop_map(str::to_owned),
        ]
        .boxed()
    };
    let mutation = prop_oneof![
        4 => (key.clone(), json_value()).prop_map(|(k, v)| Mutation::Set(k, v)),
        1 => key.prop_map(Mutation::Remove),
    ];
    prop::collection::vec(mutation, 1..4).prop_map(move |mutations| {
        let mut body = base.clone();
        if let Some(object) = body.as_object_mut() {
            for m in mutations {
                match m {
                    Mutation::Set(k, v) => {
                        object.insert(k, v);
                    }
                    Mutation::Remove(k) => {
                        object.remove(&k);
                    }
                }
            }
        }
        body
    })
}

/// A body: mostly JSON objects with known field names, sometimes any JSON or any bytes.
#[derive(Clone, Debug)]
enum Body {
    None,
    Json(Value),
    Bytes(Vec<u8>),
}

fn body(route: usize) -> impl Strategy<Value = Body> {
    let object = prop::collection::vec(
        (
            prop::sample::select(FIELDS).prop_map(str::to_owned),
            json_value(),
        ),
        0..6,
    )
    .prop_map(|pairs| Value::Object(pairs.into_iter().collect()));
    prop_oneof![
        1 => Just(Body::None),
        6 => mutated(route).prop_map(Body::Json),
        3 => object.prop_map(Body::Json),
        2 => json_value().prop_map(Body::Json),
        2 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Body::Bytes),
    ]
}

/// A path segment: a real id (so requests get past "not found"), or anything, percent-encoded.
fn segment(real: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(real),
        1 => interesting_string(),
    ]
    .prop_map(|s| form_urlencoded::byte_serialize(s.as_bytes()).collect())
}

#[derive(Clone, Debug)]
struct Case {
    route: usize,
    room: String,
    message: String,
    user: String,
    query: Vec<(String, String)>,
    body: Body,
}

fn case(room: String, message: String) -> impl Strategy<Value = Case> {
    let param = prop_oneof![
        3 => prop::sample::select(PARAMS).prop_map(str::to_owned),
        1 => interesting_string(),
    ];
    (0..ROUTES.len())
        .prop_flat_map(move |route| {
            (
                Just(route),
                segment(vec![room.clone()]),
                segment(vec![message.clone()]),
                segment(vec!["bob".to_owned(), "carol".to_owned()]),
                prop::collection::vec((param.clone(), interesting_string()), 0..4),
                body(route),
            )
        })
        .prop_map(|(route, room, message, user, query, body)| Case {
            route,
            room,
            message,
            user,
            query,
            body,
        })
}

async fn row_counts(app: &TestApp) -> Vec<i64> {
    let db = &app.core.db;
    let mut counts = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let statement = Statement::from_string(
            db.get_database_backend(),
            format!("SELECT count(*) FROM {table}"),
        );
        let row = db
            .query_one_raw(statement)
            .await
            .expect("counting rows")
            .expect("a count");
        counts.push(row.try_get_by_index::<i64>(0).expect("a count"));
    }
    counts
}

/// Sends one case and checks what must hold for any input.
async fn check(app: &TestApp, client: &reqwest::Client, c: &Case) -> Result<(), TestCaseError> {
    let (method, template, caller) = ROUTES[c.route];
    let mut url = app.url(
        &template
            .replace("{room}", &c.room)
            .replace("{message}", &c.message)
            .replace("{user}", &c.user),
    );
    if !c.query.is_empty() {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&c.query)
            .finish();
        url = format!("{url}?{query}");
    }
    let method = Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = client.request(method, url);
    request = match caller {
        Caller::User => request.bearer_auth(app.token("alice")),
        Caller::Service => request.header("x-api-key", SERVICE_KEY),
    };
    request = match &c.body {
        Body::None => request,
        Body::Json(value) => request
            .header("content-type", "application/json")
            .body(value.to_string()),
        Body::Bytes(bytes) => request
            .header("content-type", "application/json")
            .body(bytes.clone()),
    };
    let before = row_counts(app).await;
    let response = request
        .send()
        .await
        .map_err(|e| TestCaseError::fail(format!("no answer (hang or dropped): {e}")))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    prop_assert!(!status.is_server_error(), "{status} for {c:?}: {text}");
    if status.is_client_error() {
        // A 405's body is the business of the method-routing layer; every other refusal is in
        // the contract's shape.
        if status != reqwest::StatusCode::METHOD_NOT_ALLOWED {
            let error: Value = serde_json::from_str(&text).map_err(|e| {
                TestCaseError::fail(format!("{status} body not JSON ({e}): {text}"))
            })?;
            let code = error["error"]["code"].as_str().unwrap_or_default();
            prop_assert!(CODES.contains(&code), "{status} with code {code:?}: {text}");
            prop_assert!(error["error"]["message"].is_string(), "no message: {text}");
        }
        let after = row_counts(app).await;
        prop_assert_eq!(
            before,
            after,
            "a refused {} persisted something: {:?}",
            status,
            c
        );
    }
    Ok(())
}

/// Runs the property on one backend, with a room, a message and both users in place so that
/// generated requests reach the deeper rules.
fn rest_routes_refuse_junk_cleanly(backend: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let app = runtime.block_on(spawn_app_with(
        backend,
        &[
            "--service-api-key",
            SERVICE_KEY,
            "--rate-limit-per-minute",
            "1000000",
        ],
    ));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    let (room, message) = runtime.block_on(async {
        let room: Value = client
            .post(app.url("/api/v1/realtime/chat/rooms"))
            .bearer_auth(app.token("alice"))
            .json(&json!({ "participants": ["bob", "carol"], "type": "group", "name": "Fuzz" }))
            .send()
            .await
            .expect("creating a room")
            .json()
            .await
            .expect("a room");
        let room_id = room["id"].as_str().expect("a room id").to_owned();
        let message: Value = client
            .post(app.url(&format!("/api/v1/realtime/chat/rooms/{room_id}/messages")))
            .bearer_auth(app.token("alice"))
            .json(&json!({ "message": "hello fuzz" }))
            .send()
            .await
            .expect("sending a message")
            .json()
            .await
            .expect("a message");
        (
            room_id,
            message["id"].as_str().expect("a message id").to_owned(),
        )
    });

    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(room, message), |c| {
        runtime.block_on(check(&app, &client, &c))
    });
    drop(app);
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, case)) => panic!("{reason}\nminimal failing case: {case:#?}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn sqlite_rest_routes_refuse_junk_cleanly() {
    rest_routes_refuse_junk_cleanly(Backend::Sqlite);
}

#[test]
fn postgres_rest_routes_refuse_junk_cleanly() {
    if skip_postgres() {
        return;
    }
    rest_routes_refuse_junk_cleanly(Backend::Postgres);
}
