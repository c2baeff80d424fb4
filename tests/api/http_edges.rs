//! The edges of the REST surface: oversized bodies, wrong methods, list shapes and metric
//! labels a client could otherwise grow without bound.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, spawn_app};

/// 5 MB, five times the default `MAX_PAYLOAD_BYTES`.
const OVERSIZED: usize = 5 * 1024 * 1024;

async fn assert_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("an error body in JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    body
}

// --- 413 ---------------------------------------------------------------------------------

/// reqwest writes the whole body before it reads the answer, as most clients do.
#[tokio::test]
async fn an_oversized_body_gets_its_413_not_a_broken_pipe() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.token("alice");

    for path in [
        "/api/v1/realtime/chat/rooms",
        "/api/v1/internal/notifications",
        "/no/such/route",
    ] {
        let response = app
            .client
            .post(app.url(path))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(vec![b' '; OVERSIZED])
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: the 413 did not arrive: {e:?}"));

        assert_eq!(
            response.headers().get("connection").map(|v| v.as_bytes()),
            Some(&b"close"[..]),
            "{path}"
        );
        assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE").await;
    }
}

/// POSTs `body` to `path` chunked (no `Content-Length`) in 64 KB chunks over a raw
/// connection, writing all of it before reading; returns the raw answer.
async fn post_chunked(app: &TestApp, path: &str, body: Vec<u8>) -> String {
    let token = app.token("alice");
    let port = app.port;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
        tcp.set_read_timeout(Some(Duration::from_secs(20))).ok();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ntransfer-encoding: chunked\r\n\
             connection: close\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).expect("writing the head");
        for chunk in body.chunks(64 * 1024) {
            tcp.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .and_then(|()| tcp.write_all(chunk))
                .and_then(|()| tcp.write_all(b"\r\n"))
                .expect("the server reset the connection while the body was being sent");
        }
        tcp.write_all(b"0\r\n\r\n").expect("ending the body");
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .expect("the raw client")
}

#[tokio::test]
async fn an_oversized_chunked_body_gets_413() {
    let app = spawn_app(Backend::Sqlite).await;

    let answer = post_chunked(&app, "/api/v1/realtime/chat/rooms", vec![b' '; OVERSIZED]).await;

    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"PAYLOAD_TOO_LARGE\""), "{answer}");
}

#[tokio::test]
async fn a_chunked_body_within_the_limit_is_served() {
    let app = spawn_app(Backend::Sqlite).await;
    let body = json!({ "participants": ["bob"] }).to_string().into_bytes();

    let answer = post_chunked(&app, "/api/v1/realtime/chat/rooms", body).await;

    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("\"direct\""), "{answer}");
}

// --- 405 ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_wrong_method_is_405_in_the_error_shape_with_allow() {
    let app = spawn_app(Backend::Sqlite).await;

    for (method, path, allowed) in [
        (
            Method::DELETE,
            "/api/v1/realtime/chat/rooms",
            "GET,HEAD,POST",
        ),
        (Method::POST, "/health", "GET,HEAD"),
        (Method::PATCH, "/api/v1/internal/follows", "PUT,DELETE"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(app.token("alice"))
            .send()
            .await
            .expect("request");

        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap_or_default().replace(' ', ""));
        assert_eq!(allow.as_deref(), Some(allowed), "{method} {path}");
        let body = assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        )
        .await;
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(method.as_str())),
            "{body}"
        );
    }
}

// --- list shapes -------------------------------------------------------------------------

#[tokio::test]
async fn every_list_endpoint_answers_items_and_next_cursor() {
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.token("alice");
    let room: Value = app
        .client
        .post(app.url("/api/v1/realtime/chat/rooms"))
        .bearer_auth(&token)
        .json(&json!({ "participants": ["bob"] }))
        .send()
        .await
        .expect("creating a room")
        .json()
        .await
        .expect("the room");
    let room_id = room["id"].as_str().expect("room id");

    for path in [
        "/api/v1/realtime/notifications".to_owned(),
        "/api/v1/realtime/feed".to_owned(),
        "/api/v1/realtime/feed/trending".to_owned(),
        "/api/v1/realtime/presence/online-friends".to_owned(),
        "/api/v1/realtime/chat/rooms".to_owned(),
        format!("/api/v1/realtime/chat/rooms/{room_id}/messages"),
        format!("/api/v1/realtime/chat/rooms/{room_id}/messages?after_seq=0"),
        format!("/api/v1/realtime/chat/rooms/{room_id}/messages/search?q=hi"),
    ] {
        let response = app
            .client
            .get(app.url(&path))
            .bearer_auth(&token)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body: Value = response.json().await.expect("JSON");

        assert!(body["items"].is_array(), "{path}: {body}");
        assert_eq!(
            body.get("nextCursor"),
            Some(&Value::Null),
            "{path}: nextCursor is null on the last page: {body}"
        );
    }
}

// --- metric labels -----------------------------------------------------------------------

/// A token unlikely to appear in `/metrics` unless a request put it there.
fn random_token(i: usize) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("RND{i}X{}", &id[id.len() - 10..]).to_uppercase()
}

async fn metrics_text(app: &TestApp) -> String {
    app.get("/metrics").await.text().await.expect("metrics")
}

#[tokio::test]
async fn invented_methods_and_paths_add_no_metric_series() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut invented = Vec::new();

    for i in 0..50 {
        let method = random_token(i);
        let path = format!("/{}/{}", random_token(i).to_lowercase(), i);
        for target in [path.as_str(), "/api/v1/realtime/chat/rooms"] {
            let response = app
                .client
                .request(
                    Method::from_bytes(method.as_bytes()).expect("a valid method token"),
                    app.url(target),
                )
                .send()
                .await
                .expect("request");
            assert!(response.status().is_client_error(), "{method} {target}");
        }
        invented.push(method);
        invented.push(path);
    }

    let metrics = metrics_text(&app).await;
    for token in &invented {
        assert!(
            !metrics.contains(token.as_str()),
            "{token} became a metric label"
        );
    }
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    assert!(metrics.contains("route=\"unmatched\""), "{metrics}");
    assert!(
        metrics.contains("route=\"/api/v1/realtime/chat/rooms\""),
        "{metrics}"
    );
}
