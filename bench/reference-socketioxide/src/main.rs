//! The bench's reference point: a bare socketioxide 0.18.9 server speaking the subset of the
//! Switchboard contract the bench uses, with no database, no presence and no rate limits. The
//! bench runs the same scenarios against it and against Switchboard, so each run says how far
//! Switchboard is from what the framework alone costs on the same machine at the same moment.
//!
//! Subset: `GET /health` (`{ status, connections }`), `POST /api/v1/realtime/chat/rooms`
//! (`{ participants }` → `{ id }`), `POST …/rooms/{id}/members` (`{ userIds }`),
//! `GET …/rooms/{id}` (`{ id, memberCount }`); namespace `/realtime` with an HS256 JWT in
//! `auth.token` (`sub` is the user), `session:ready` `{ userId, rooms }` after joining the
//! user's rooms, and `chat:message` `{ roomId, message, clientMessageId }` → ack
//! `{ ok: true, message }` and `chat:new_message` `{ roomId, message }` to the room except the
//! sending socket. Settings: `PORT` (0 = any), `HOST` (127.0.0.1), `JWT_SECRET`, and the same
//! buffer settings as the server when set (`WS_READ_BUFFER_SIZE`, `SOCKET_BUFFER_SIZE`; unset =
//! socketioxide's defaults), so a comparison can be made tuned or untuned.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef, TryData};

/// Rooms and their members; one lock, held for microseconds.
#[derive(Default)]
struct Rooms {
    members: HashMap<String, HashSet<String>>,
    seqs: HashMap<String, Arc<AtomicI64>>,
    of_user: HashMap<String, Vec<String>>,
}

#[derive(Clone)]
struct App {
    rooms: Arc<Mutex<Rooms>>,
    key: Arc<DecodingKey>,
    io: SocketIo,
}

impl App {
    fn rooms(&self) -> MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    name: Option<String>,
}

/// The authenticated user, kept on the socket.
#[derive(Clone)]
struct User {
    id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendPayload {
    room_id: String,
    message: String,
    client_message_id: Option<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let secret = std::env::var("JWT_SECRET").unwrap_or_else(|_| "bench-secret".into());
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "0".into());
    let mut builder = SocketIo::builder();
    if let Some(n) = env_usize("WS_READ_BUFFER_SIZE") {
        builder = builder.ws_read_buffer_size(n);
    }
    if let Some(n) = env_usize("SOCKET_BUFFER_SIZE") {
        builder = builder.max_buffer_size(n);
    }
    let (layer, io) = builder.build_layer();
    let app = App {
        rooms: Arc::default(),
        key: Arc::new(DecodingKey::from_secret(secret.as_bytes())),
        io: io.clone(),
    };
    let on_connect = {
        let app = app.clone();
        move |socket: SocketRef, Data(auth): Data<Value>| {
            let app = app.clone();
            async move { connect(app, socket, auth) }
        }
    };
    io.ns("/realtime", on_connect);
    let router = Router::new()
        .route("/health", get(health))
        .route("/api/v1/realtime/chat/rooms", post(create_room))
        .route("/api/v1/realtime/chat/rooms/{id}", get(get_room))
        .route(
            "/api/v1/realtime/chat/rooms/{id}/members",
            post(add_members),
        )
        .with_state(app)
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(format!("{host}:{port}")).await?;
    let addr: SocketAddr = listener.local_addr()?;
    println!("reference-socketioxide listening on {addr}");
    // Same as Switchboard: acks and deliveries must not wait for Nagle.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).await
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn connect(app: App, socket: SocketRef, auth: Value) {
    let token = auth
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 30;
    let claims = match jsonwebtoken::decode::<Claims>(token, &app.key, &validation) {
        Ok(data) => data.claims,
        Err(_) => {
            let _ = socket.disconnect();
            return;
        }
    };
    let user = User {
        name: claims.name.unwrap_or_else(|| claims.sub.clone()),
        id: claims.sub,
    };
    let rooms: Vec<String> = app
        .rooms()
        .of_user
        .get(&user.id)
        .cloned()
        .unwrap_or_default();
    socket.join(
        rooms
            .iter()
            .map(|r| format!("chat:{r}"))
            .collect::<Vec<_>>(),
    );
    socket.join(format!("user:{}", user.id));
    let _ = socket.emit(
        "session:ready",
        &json!({ "userId": user.id, "rooms": rooms }),
    );
    let on_message = {
        let app = app.clone();
        let user = user.clone();
        move |socket: SocketRef, TryData(data): TryData<SendPayload>, ack: AckSender| {
            let app = app.clone();
            let user = user.clone();
            async move { message(&app, &user, socket, data, ack).await }
        }
    };
    socket.on("chat:message", on_message);
}

async fn message(
    app: &App,
    user: &User,
    socket: SocketRef,
    data: Result<SendPayload, impl std::fmt::Debug>,
    ack: AckSender,
) {
    let Ok(p) = data else {
        let _ = ack.send(&json!({ "ok": false, "error": { "code": "VALIDATION_ERROR" } }));
        return;
    };
    let seq = {
        let rooms = app.rooms();
        let member = rooms
            .members
            .get(&p.room_id)
            .is_some_and(|m| m.contains(&user.id));
        match (member, rooms.seqs.get(&p.room_id)) {
            (true, Some(seq)) => seq.fetch_add(1, Ordering::Relaxed) + 1,
            _ => {
                drop(rooms);
                let _ = ack.send(&json!({ "ok": false, "error": { "code": "FORBIDDEN" } }));
                return;
            }
        }
    };
    let message = json!({
        "id": uuid::Uuid::now_v7().to_string(),
        "roomId": p.room_id,
        "seq": seq,
        "userId": user.id,
        "senderName": user.name,
        "content": p.message,
        "type": "text",
        "replyToId": null,
        "clientMessageId": p.client_message_id,
        "createdAt": chrono::Utc::now().to_rfc3339(),
        "editedAt": null,
        "deleted": false,
    });
    let _ = socket
        .to(format!("chat:{}", p.room_id))
        .emit(
            "chat:new_message",
            &json!({ "roomId": p.room_id, "message": message }),
        )
        .await;
    let _ = ack.send(&json!({ "ok": true, "message": message }));
}

async fn health(State(app): State<App>) -> Json<Value> {
    let connections = app.io.of("/realtime").map_or(0, |ns| ns.sockets().len());
    Json(json!({ "status": "ok", "connections": connections }))
}

#[derive(Deserialize)]
struct CreateRoom {
    participants: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddMembers {
    user_ids: Vec<String>,
}

fn owner(headers: &axum::http::HeaderMap, app: &App) -> Result<String, StatusCode> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(StatusCode::UNAUTHORIZED)?;
    jsonwebtoken::decode::<Claims>(token, &app.key, &Validation::new(Algorithm::HS256))
        .map(|d| d.claims.sub)
        .map_err(|_| StatusCode::UNAUTHORIZED)
}

fn add(rooms: &mut Rooms, room: &str, users: impl IntoIterator<Item = String>) {
    for user in users {
        if rooms
            .members
            .entry(room.to_owned())
            .or_default()
            .insert(user.clone())
        {
            rooms.of_user.entry(user).or_default().push(room.to_owned());
        }
    }
}

async fn create_room(
    State(app): State<App>,
    headers: axum::http::HeaderMap,
    Json(body): Json<CreateRoom>,
) -> Result<(StatusCode, Json<Value>), StatusCode> {
    let owner = owner(&headers, &app)?;
    let id = uuid::Uuid::now_v7().to_string();
    let mut rooms = app.rooms();
    rooms.seqs.insert(id.clone(), Arc::default());
    add(
        &mut rooms,
        &id,
        std::iter::once(owner).chain(body.participants),
    );
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

async fn add_members(
    State(app): State<App>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<AddMembers>,
) -> Result<Json<Value>, StatusCode> {
    owner(&headers, &app)?;
    let mut rooms = app.rooms();
    if !rooms.seqs.contains_key(&id) {
        return Err(StatusCode::NOT_FOUND);
    }
    add(&mut rooms, &id, body.user_ids);
    Ok(Json(json!({ "id": id })))
}

async fn get_room(
    State(app): State<App>,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, StatusCode> {
    owner(&headers, &app)?;
    let rooms = app.rooms();
    let count = rooms.members.get(&id).ok_or(StatusCode::NOT_FOUND)?.len();
    Ok(Json(json!({ "id": id, "memberCount": count })))
}
