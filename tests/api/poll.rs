//! Long polling (`GET /api/v1/realtime/poll`): the first poll's cursor, a waiting poll
//! answered by a live event, resume after a gap from `last_poll_id` (on any node), ephemeral
//! events kept between polls in the poller's session, timeouts, and pollers that stop polling
//! going offline.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Backend, TestApp, spawn_app_with, spawn_cluster};
use crate::sse::{call, create_room, send};

async fn poll(app: &TestApp, user: &str, query: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url(&format!("/api/v1/realtime/poll?{query}")))
        .bearer_auth(app.token(user))
        .send()
        .await
        .expect("polling");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A poll that must succeed; answers its body.
async fn poll_ok(app: &TestApp, user: &str, query: &str) -> Value {
    let (status, body) = poll(app, user, query).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn next_query(answer: &Value, timeout_ms: u64) -> String {
    format!(
        "last_poll_id={}&session={}&timeout_ms={timeout_ms}",
        answer["lastPollId"].as_str().expect("lastPollId"),
        answer["session"].as_str().expect("session"),
    )
}

fn names(answer: &Value) -> Vec<String> {
    answer["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn app() -> TestApp {
    spawn_app_with(Backend::Sqlite, &["--typing-throttle-ms", "0"]).await
}

#[tokio::test]
async fn polls_need_a_token() {
    let app = app().await;
    let response = app
        .client
        .get(app.url("/api/v1/realtime/poll"))
        .send()
        .await
        .expect("polling");
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("error JSON");
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    let token = app.token("a");
    let response = app
        .client
        .get(app.url(&format!("/api/v1/realtime/poll?token={token}&timeout_ms=x")))
        .send()
        .await
        .expect("polling");
    assert_eq!(response.status(), 400, "a bad timeout is refused");
}

#[tokio::test]
async fn a_first_poll_answers_at_once_and_a_waiting_poll_gets_the_next_event() {
    let app = app().await;
    let room = create_room(&app, "a", &["b"]).await;
    let started = Instant::now();
    let first = poll_ok(&app, "b", "timeout_ms=20000").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no waiting without last_poll_id"
    );
    assert_eq!(first["events"], json!([]));
    assert!(first["lastPollId"].is_string());
    assert_eq!(first["reset"], json!(["chat", "notifications", "feed"]));

    let waiting = {
        let app_url = app.url(&format!(
            "/api/v1/realtime/poll?{}",
            next_query(&first, 20_000)
        ));
        let client = app.client.clone();
        let token = app.token("b");
        tokio::spawn(async move {
            client
                .get(app_url)
                .bearer_auth(token)
                .send()
                .await
                .expect("polling")
                .json::<Value>()
                .await
                .expect("poll JSON")
        })
    };
    // The poll is waiting (its session is busy); a message answers it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiting.is_finished(),
        "the poll waits for something to happen"
    );
    let message = send(&app, "a", &room, "wake up").await;
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the poll answered")
        .expect("poll task");
    assert_eq!(names(&answer), ["chat:new_message"], "{answer}");
    let event = &answer["events"][0];
    assert_eq!(event["data"]["message"]["id"], message["id"]);
    assert_eq!(
        event["id"], answer["lastPollId"],
        "the cursor of the last event"
    );
    assert_eq!(answer["session"], first["session"]);
    assert_eq!(answer["recovered"], true);
}

#[tokio::test]
async fn last_poll_id_resumes_after_a_gap_in_order() {
    let app = app().await;
    let room = create_room(&app, "a", &["b"]).await;
    let first = poll_ok(&app, "b", "").await;
    for text in ["one", "two", "three"] {
        send(&app, "a", &room, text).await;
    }
    let started = Instant::now();
    let answer = poll_ok(&app, "b", &next_query(&first, 20_000)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "pending events answer at once"
    );
    let texts: Vec<&str> = answer["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["data"]["message"]["content"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);
    // Polling again from the answer's cursor: nothing new, a short timeout ends it empty.
    let started = Instant::now();
    let again = poll_ok(&app, "b", &next_query(&answer, 300)).await;
    assert_eq!(again["events"], json!([]));
    assert_eq!(again["lastPollId"], answer["lastPollId"]);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it waited out its timeout"
    );
}

#[tokio::test]
async fn typing_and_presence_wait_for_the_poller_between_polls() {
    let app = app().await;
    let room = create_room(&app, "a", &["b"]).await;
    let first = poll_ok(&app, "b", "").await;
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        "a",
        &format!("/api/v1/realtime/chat/rooms/{room}/typing"),
        json!({ "isTyping": true }),
    )
    .await;
    assert_eq!(status, 200);
    let answer = poll_ok(&app, "b", &next_query(&first, 5_000)).await;
    let event = answer["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["event"] == "chat:user_typing")
        .unwrap_or_else(|| panic!("typing kept for the poller: {answer}"))
        .clone();
    assert_eq!(event["id"], Value::Null, "ephemeral events have no cursor");
    assert_eq!(event["data"]["userId"], "a");
}

#[tokio::test]
async fn a_poller_is_online_while_it_polls_and_offline_after() {
    let app = spawn_app_with(Backend::Sqlite, &["--presence-grace-ms", "300"]).await;
    let first = poll_ok(&app, "p", "").await;
    let online = |app: &TestApp| {
        let core = app.core.clone();
        async move {
            core.presence
                .store
                .connection_count("p")
                .await
                .expect("count")
        }
    };
    assert_eq!(online(&app).await, 1, "a poller holds a connection slot");
    // Polls within the grace period keep it.
    let mut answer = first;
    for _ in 0..3 {
        answer = poll_ok(&app, "p", &next_query(&answer, 200)).await;
    }
    assert_eq!(online(&app).await, 1);
    assert_eq!(
        app.core
            .sessions
            .count(switchboard::pipeline::sessions::Transport::Longpoll),
        1
    );
    // No poll for longer than the grace period: the session and the slot are gone.
    for _ in 0..100 {
        if online(&app).await == 0 {
            assert_eq!(
                app.core
                    .sessions
                    .count(switchboard::pipeline::sessions::Transport::Longpoll),
                0
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the idle poller was never released");
}

#[tokio::test]
async fn a_poll_on_another_node_resumes_from_the_journal() {
    let nodes = spawn_cluster(Backend::Sqlite, 2, &[]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let room = create_room(a, "a", &["b"]).await;
    let first = poll_ok(b, "b", "").await;
    send(a, "a", &room, "sent on a").await;
    // Polled on node A with node B's cursor (and a session A does not know).
    let answer = poll_ok(a, "b", &next_query(&first, 5_000)).await;
    assert_eq!(names(&answer), ["chat:new_message"], "{answer}");
    assert_ne!(
        answer["session"], first["session"],
        "a new session on the other node"
    );
    // A waiting poll on node B is answered by an event produced on node A.
    let waiting = {
        let url = b.url(&format!(
            "/api/v1/realtime/poll?{}",
            next_query(&answer, 20_000)
        ));
        let client = b.client.clone();
        let token = b.token("b");
        tokio::spawn(async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("polling")
                .json::<Value>()
                .await
                .expect("poll JSON")
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(a, "a", &room, "live across nodes").await;
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered")
        .expect("poll task");
    assert_eq!(
        answer["events"][0]["data"]["message"]["content"],
        "live across nodes"
    );
}
