//! Engine.IO heartbeat settings: what the handshake tells clients is what was configured.

use serde_json::Value;

use crate::common::{Backend, TestApp, spawn_app, spawn_app_with};

/// The JSON of an Engine.IO 4 polling handshake (`0{"sid":…,"pingInterval":…}`).
async fn handshake(app: &TestApp) -> Value {
    let response = app.get("/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("handshake body");
    let open = body
        .strip_prefix('0')
        .unwrap_or_else(|| panic!("not an Engine.IO open packet: {body}"));
    serde_json::from_str(open).unwrap_or_else(|e| panic!("handshake {open}: {e}"))
}

#[tokio::test]
async fn the_handshake_announces_the_default_heartbeat() {
    let app = spawn_app(Backend::Sqlite).await;

    let open = handshake(&app).await;

    assert_eq!(open["pingInterval"], 25_000, "{open}");
    assert_eq!(open["pingTimeout"], 20_000, "{open}");
}

#[tokio::test]
async fn the_handshake_announces_the_configured_heartbeat() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &["--ping-interval-ms", "30000", "--ping-timeout-ms", "7000"],
    )
    .await;

    let open = handshake(&app).await;

    assert_eq!(open["pingInterval"], 30_000, "{open}");
    assert_eq!(open["pingTimeout"], 7_000, "{open}");
}

#[test]
fn a_zero_heartbeat_is_refused() {
    for flag in ["--ping-interval-ms", "--ping-timeout-ms"] {
        let config = crate::common::test_config(&[flag, "0"]);

        let error = format!("{:#}", config.validate().expect_err("zero accepted"));

        assert!(error.contains("PING_"), "{flag}: {error}");
    }
}
