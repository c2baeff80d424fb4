//! `/health`, `/metrics` and the 404 fallback.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::socket::PollingSocket;
use crate::common::{Backend, spawn_app};

async fn health_lists_every_service(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_ne!(
        app.port, 0,
        "the app reports the port it bound, not the 0 it was given"
    );

    let response = app.get("/health").await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("health body is JSON");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["services"]["database"], "ok", "{body}");
    assert_eq!(body["services"]["redis"], "disabled", "{body}");
    assert_eq!(body["connections"].as_u64(), Some(0), "{body}");
    let timestamp = body["timestamp"].as_str().expect("timestamp is a string");
    let parsed = chrono::DateTime::parse_from_rfc3339(timestamp).expect("timestamp is RFC 3339");
    assert_eq!(
        parsed.offset().local_minus_utc(),
        0,
        "timestamp is UTC: {timestamp}"
    );
}

async fn health_is_503_when_the_database_is_down(backend: Backend) {
    let app = spawn_app(backend).await;
    // Closing a clone closes the pool the server shares; a database that is down is down for
    // the probe's own connection too.
    app.core.db.clone().close().await.expect("closing the pool");
    app.core.db_probe.close().await;

    let response = app.get("/health").await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.expect("health body is JSON");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["services"]["database"], "down", "{body}");
    assert_eq!(body["services"]["redis"], "disabled", "{body}");
}

/// A pool busy to its last connection (a reconnect avalanche's session reads) is not a
/// database that is down: `/health` answers from a connection of its own, and nothing is
/// refused. Probing through the pool, the probe waited past its timeout, the database was
/// marked down, and 29 % of a 10,000-socket burst was refused "the database is unavailable".
async fn a_busy_pool_is_not_a_database_that_is_down(backend: Backend) {
    let app = crate::common::spawn_app_with(
        backend,
        &[
            "--db-health-timeout-ms",
            "300",
            "--db-acquire-timeout-ms",
            "5000",
        ],
    )
    .await;
    let core = &app.core;
    let held = hold_every_pooled_connection(core).await;

    let response = app.get("/health").await;
    let body: Value = response.json().await.expect("health body is JSON");
    assert_eq!(body["services"]["database"], "ok", "{body}");
    assert!(
        !core.db_status.is_down(),
        "the busy pool was recorded as down"
    );
    assert!(core.db_status.check().is_ok());
    drop(held);
}

/// In a reconnect avalanche the session reads of connecting sockets queue for the pool. A
/// socket whose setup waited out `DB_ACQUIRE_TIMEOUT_MS` is set up again rather than
/// disconnected (`io server disconnect`, which socket.io-client never reconnects from by
/// itself), and gets its `session:ready` once the pool has room.
async fn a_busy_pool_delays_a_socket_setup_instead_of_ending_it(backend: Backend) {
    let app = crate::common::spawn_app_with(backend, &["--db-acquire-timeout-ms", "1000"]).await;
    let core = &app.core;
    let held = hold_every_pooled_connection(core).await;
    let address = app.address.clone();
    let token = app.token("alice");
    let connecting = tokio::spawn(async move { PollingSocket::connect(&address, &token).await });
    // The pool stays busy for more than one acquire wait (the first setup attempt gives up)
    // and less than all of them.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    drop(held);
    let (socket, ready) = tokio::time::timeout(std::time::Duration::from_secs(10), connecting)
        .await
        .expect("session:ready once the pool had room (the socket was not ended)")
        .expect("the connecting task")
        .expect("connecting");
    assert_eq!(ready["userId"], "alice", "{ready}");
    socket.close().await;
}

/// Connecting sockets take turns at their setup's database reads; one whose client left while
/// it waited for its turn is not set up at all (in an avalanche, clients that gave up come back
/// as new sockets, and the server would otherwise read every abandoned session too).
async fn a_socket_gone_before_its_setup_turn_is_not_set_up(backend: Backend) {
    let app = crate::common::spawn_app(backend).await;
    let core = &app.core;
    let turns = switchboard::realtime::setup_turns(&core.config.database_url);
    let held = core
        .setups
        .acquire_many(turns as u32)
        .await
        .expect("taking every setup turn");

    // A raw Engine.IO session: handshake, then the namespace CONNECT, which waits for a turn.
    let open = app
        .get("/socket.io/?EIO=4&transport=polling")
        .await
        .text()
        .await
        .expect("the open packet");
    let open: Value = serde_json::from_str(open.trim_start_matches('0')).expect("open JSON");
    let url = format!(
        "{}/socket.io/?EIO=4&transport=polling&sid={}",
        app.address,
        open["sid"].as_str().expect("a sid")
    );
    let connect = format!(
        "40{},{}",
        switchboard::realtime::NAMESPACE,
        json!({ "token": app.token("newcomer") })
    );
    let sent = app.client.post(&url).body(connect).send().await;
    assert!(sent.expect("CONNECT").status().is_success());
    let connections = || async {
        let body: Value = app.get("/health").await.json().await.expect("health JSON");
        body["connections"].as_u64()
    };
    while connections().await != Some(1) {
        tokio::task::yield_now().await;
    }
    // The client leaves (Engine.IO close) before its turn.
    let sent = app.client.post(&url).body("1").send().await;
    assert!(sent.expect("close").status().is_success());
    while connections().await != Some(0) {
        tokio::task::yield_now().await;
    }
    drop(held);
    // Every turn free again means the waiting setup has run and returned.
    let all = core
        .setups
        .acquire_many(turns as u32)
        .await
        .expect("every setup turn back");
    drop(all);
    let signed_in = <entity::user::Entity as sea_orm::EntityTrait>::find_by_id("newcomer")
        .one(&core.db)
        .await
        .expect("reading users");
    assert!(
        signed_in.is_none(),
        "the abandoned socket's session was read (its user signed in)"
    );
}

/// A node whose async workers are swamped (ten thousand sockets reconnecting at once after a
/// deploy) gets its probe answers late, which is not a database that is down: probes run on a
/// thread of their own, so the node does not take its own backlog for an outage and turn away
/// every socket that is connecting. Here the runtime that serves the app has hundreds of tasks
/// ready to run, each busy for a millisecond per turn, so every wakeup waits ~0.3 s in line,
/// longer than the probe's 100 ms budget.
async fn a_swamped_runtime_is_not_a_database_that_is_down(backend: Backend) {
    let app = crate::common::spawn_app_with(
        backend,
        &[
            "--db-probe-interval-ms",
            "20",
            "--db-health-timeout-ms",
            "100",
        ],
    )
    .await;
    let core = app.core.clone();
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    let busy: Vec<_> = (0..300)
        .map(|_| {
            let core = core.clone();
            tokio::spawn(async move {
                let mut saw_down = false;
                while std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    saw_down |= core.db_status.is_down();
                    tokio::task::yield_now().await;
                }
                saw_down
            })
        })
        .collect();
    for task in busy {
        assert!(
            !task.await.expect("a busy task"),
            "the swamped node recorded its database as down"
        );
    }
    let response = app.get("/health").await;
    let body: Value = response.json().await.expect("health body is JSON");
    assert_eq!(body["services"]["database"], "ok", "{body}");
}

/// While the database is down, a new connection is refused at the Engine.IO handshake (503,
/// `Retry-After: 1`), which socket.io-client retries with its backoff by itself; a socket that
/// was open keeps its session (its events are acked `INTERNAL`), and once the database is back
/// the next handshake opens. Disconnected after connecting instead, a client waited for its app
/// to call `connect()` again.
async fn new_connections_are_refused_at_the_handshake_while_the_database_is_down(backend: Backend) {
    // One probe at startup, the next an hour later: the test sets the status itself.
    let app = crate::common::spawn_app_with(backend, &["--db-probe-interval-ms", "3600000"]).await;
    let (mut open, _) = PollingSocket::connect(&app.address, &app.token("alice"))
        .await
        .expect("connecting before the outage");

    app.core.db_status.record(false);
    let refused = app.get("/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = refused.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], "INTERNAL", "{body}");
    let ack = open
        .emit_with_ack("notifications:subscribe", json!({}))
        .await;
    assert_eq!(ack["error"]["code"], "INTERNAL", "{ack}");

    app.core.db_status.record(true);
    let (second, _) = PollingSocket::connect(&app.address, &app.token("bob"))
        .await
        .expect("connecting after the outage");
    let ack = open
        .emit_with_ack("notifications:subscribe", json!({}))
        .await;
    assert_eq!(
        ack["ok"], true,
        "the open socket outlived the outage: {ack}"
    );
    second.close().await;
    open.close().await;
}

/// Takes every connection of the app's pool, each in a transaction, until dropped.
async fn hold_every_pooled_connection(
    core: &switchboard::state::Core,
) -> Vec<sea_orm::DatabaseTransaction> {
    let mut held = Vec::new();
    for _ in 0..switchboard::db::pool_size(&core.config.database_url) {
        held.push(
            sea_orm::TransactionTrait::begin(&core.db)
                .await
                .expect("taking a pooled connection"),
        );
    }
    held
}

backend_tests!(
    health_lists_every_service,
    health_is_503_when_the_database_is_down,
    a_busy_pool_is_not_a_database_that_is_down,
    new_connections_are_refused_at_the_handshake_while_the_database_is_down,
    a_swamped_runtime_is_not_a_database_that_is_down,
    a_busy_pool_delays_a_socket_setup_instead_of_ending_it,
    a_socket_gone_before_its_setup_turn_is_not_set_up
);

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let app = spawn_app(Backend::Sqlite).await;
    // The recorder renders nothing until something was recorded; a request is.
    app.get("/health").await;

    let response = app.get("/metrics").await;

    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .expect("content type is text")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain"),
        "content type {content_type}"
    );
    let body = response.text().await.expect("metrics body");
    assert!(body.contains("# TYPE"), "no `# TYPE` line in:\n{body}");
    assert!(
        body.contains("switchboard_http_requests_total"),
        "the /health request was not counted:\n{body}"
    );
}

#[tokio::test]
async fn unknown_paths_are_404_in_the_error_shape() {
    let app = spawn_app(Backend::Sqlite).await;

    for path in ["/nope", "/api/v1/realtime/nope", "/api/v1/nope/deeper"] {
        let response = app.get(path).await;

        assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET {path}");
        let body: Value = response.json().await.expect("404 body is JSON");
        assert_eq!(body["error"]["code"], "NOT_FOUND", "GET {path}: {body}");
        assert!(
            body["error"]["message"].is_string(),
            "GET {path}: no message in {body}"
        );
    }

    let response = app
        .client
        .post(app.url("/nope"))
        .json(&serde_json::json!({ "a": 1 }))
        .send()
        .await
        .expect("POST /nope");
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "POST /nope");
    let body: Value = response.json().await.expect("404 body is JSON");
    assert_eq!(body["error"]["code"], "NOT_FOUND", "POST /nope: {body}");
}
