//! Data integrity under faults and races: a group's creation commits with its invites or not
//! at all, direct rooms of different pairs never share a key, message search survives SQLite
//! renumbering rowids, and concurrent preference updates never lose each other's keys.

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DbErr, Statement};
use serde_json::{Value, json};
use switchboard::domain::chat::{NewRoom, RoomType};

use crate::common::{Backend, TestApp, count, spawn_app};

async fn post(app: &TestApp, user: &str, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(app.token(user))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// Makes every insert into `notifications` fail, as a broken disk or a lost connection would
/// in the middle of creating a group.
async fn break_notification_inserts(app: &TestApp, backend: Backend) {
    let sql = match backend {
        Backend::Sqlite => {
            "CREATE TRIGGER fail_notifications BEFORE INSERT ON notifications \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
        }
        Backend::Postgres => {
            "CREATE FUNCTION fail_notifications() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
             CREATE TRIGGER fail_notifications BEFORE INSERT ON notifications \
             FOR EACH ROW EXECUTE FUNCTION fail_notifications();"
        }
    };
    app.core
        .db
        .execute_unprepared(sql)
        .await
        .expect("installing the failing trigger");
}

async fn repair_notification_inserts(app: &TestApp, backend: Backend) {
    let sql = match backend {
        Backend::Sqlite => "DROP TRIGGER fail_notifications",
        Backend::Postgres => "DROP TRIGGER fail_notifications ON notifications",
    };
    app.core
        .db
        .execute_unprepared(sql)
        .await
        .expect("dropping the failing trigger");
}

/// A group whose invites cannot be stored is not created at all (500, nothing committed), so
/// the client's retry makes exactly one group, with its invites.
async fn group_creation_is_atomic_with_its_invites(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = json!({ "participants": ["bob", "carol"], "type": "group", "name": "Trip" });
    break_notification_inserts(&app, backend).await;

    let failed = post(&app, "alice", "/api/v1/realtime/chat/rooms", body.clone()).await;
    assert_eq!(failed.status(), 500);
    let error: Value = failed.json().await.expect("an error body");
    assert_eq!(error["error"]["code"], "INTERNAL");
    assert_eq!(count(&app, "SELECT count(*) FROM rooms").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM room_members").await, 0);

    repair_notification_inserts(&app, backend).await;
    let retried = post(&app, "alice", "/api/v1/realtime/chat/rooms", body).await;
    assert_eq!(retried.status(), 201);
    assert_eq!(count(&app, "SELECT count(*) FROM rooms").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM room_members").await, 3);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM notifications WHERE notification_type = 'group_invite'"
        )
        .await,
        2,
        "one invite each for bob and carol"
    );
    let listed: Value = app
        .client
        .get(app.url("/api/v1/realtime/chat/rooms"))
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .expect("listing rooms")
        .json()
        .await
        .expect("a room list");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
}

fn direct(other: &str) -> NewRoom {
    NewRoom {
        participants: vec![other.to_owned()],
        room_type: Some(RoomType::Direct),
        name: None,
    }
}

/// User ids are any string: pairs whose ids joined by a newline read the same are different
/// pairs, with different rooms.
async fn direct_rooms_of_lookalike_pairs_are_distinct(backend: Backend) {
    let app = spawn_app(backend).await;
    let chat = &app.core.chat;
    let (first, created_first) = chat
        .create_room("a\nb", direct("c"))
        .await
        .expect("the first direct room");
    let (second, created_second) = chat
        .create_room("a", direct("b\nc"))
        .await
        .expect("the second direct room");
    assert!(created_first && created_second, "both pairs get a new room");
    assert_ne!(first.id, second.id);
    let mut members: Vec<&str> = second.member_ids().collect();
    members.sort_unstable();
    assert_eq!(members, ["a", "b\nc"]);
    // And each pair still finds its own room again, from either side.
    let (again, created) = chat.create_room("c", direct("a\nb")).await.expect("again");
    assert!(!created);
    assert_eq!(again.id, first.id);
}

/// Search in SQLite after the `messages` table got new rowids (which `VACUUM` may do, and a
/// dump and restore or a table rebuild does): copies every row out and back in with the search
/// triggers set aside, as a restore does, then `VACUUM`s.
async fn search_survives_renumbered_rowids(backend: Backend) {
    assert_eq!(backend, Backend::Sqlite);
    let app = spawn_app(backend).await;
    let created = post(
        &app,
        "alice",
        "/api/v1/realtime/chat/rooms",
        json!({ "participants": ["bob"] }),
    )
    .await;
    assert_eq!(created.status(), 201);
    let room: Value = created.json().await.expect("a room");
    let room_id = room["id"].as_str().expect("a room id").to_owned();
    let messages = format!("/api/v1/realtime/chat/rooms/{room_id}/messages");
    let mut ids = Vec::new();
    for word in ["apple", "banana", "cherry", "durian", "elder", "fig"] {
        let sent = post(&app, "alice", &messages, json!({ "message": word })).await;
        assert_eq!(sent.status(), 201);
        let sent: Value = sent.json().await.expect("a message");
        ids.push(sent["id"].as_str().expect("a message id").to_owned());
    }
    // Rows gone for good (a retention job, a moderator's purge) leave gaps in the rowids.
    app.core
        .db
        .execute_unprepared(&format!(
            "DELETE FROM messages WHERE id IN ('{}', '{}')",
            ids[1], ids[2]
        ))
        .await
        .expect("deleting two messages");
    renumber_messages(&app.core.config.database_url)
        .await
        .expect("renumbering the messages table");

    let search = |q: &'static str| {
        let url = app.url(&format!("{messages}/search?q={q}"));
        let token = app.token("bob");
        let client = app.client.clone();
        async move {
            let found: Value = client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("searching")
                .json()
                .await
                .expect("search results");
            found["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(search("durian").await, ["durian"]);
    assert_eq!(search("fig").await, ["fig"]);
    assert_eq!(search("apple").await, ["apple"]);
    assert!(search("banana").await.is_empty());
    // New messages are indexed under fresh keys that collide with no restored one.
    let sent = post(&app, "alice", &messages, json!({ "message": "grape fig" })).await;
    assert_eq!(sent.status(), 201);
    assert_eq!(search("grape").await, ["grape fig"]);
    assert_eq!(search("fig").await, ["grape fig", "fig"]);
}

/// What restoring a dump does to a table without an integer primary key: the rows come back in
/// order with new, gapless rowids, and the triggers are created only after the data is in.
async fn renumber_messages(url: &str) -> Result<(), DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(1).min_connections(1);
    let db = Database::connect(options).await?;
    let triggers: Vec<String> = db
        .query_all_raw(Statement::from_string(
            DatabaseBackend::Sqlite,
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'messages'",
        ))
        .await?
        .into_iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect::<Result<_, _>>()?;
    let names: Vec<String> = db
        .query_all_raw(Statement::from_string(
            DatabaseBackend::Sqlite,
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'messages'",
        ))
        .await?
        .into_iter()
        .map(|row| row.try_get_by_index::<String>(0))
        .collect::<Result<_, _>>()?;
    db.execute_unprepared("PRAGMA foreign_keys = OFF").await?;
    let mut script = String::from("BEGIN; CREATE TEMP TABLE saved AS SELECT * FROM messages;");
    for name in &names {
        script.push_str(&format!("DROP TRIGGER \"{name}\";"));
    }
    script
        .push_str("DELETE FROM messages; INSERT INTO messages SELECT * FROM saved ORDER BY rowid;");
    for sql in &triggers {
        script.push_str(sql);
        script.push(';');
    }
    script.push_str("DROP TABLE saved; COMMIT;");
    db.execute_unprepared(&script).await?;
    db.execute_unprepared("VACUUM").await?;
    db.close().await
}

/// Concurrent PUTs of different keys all land: none reads a state another is about to replace.
async fn concurrent_preference_updates_keep_every_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let types: Vec<String> = (0..16)
        .map(|i| format!("kind_{}", char::from(b'a' + i)))
        .collect();
    let token = app.token("alice");
    let puts = types.iter().map(|t| {
        let request = app
            .client
            .put(app.url("/api/v1/realtime/notifications/preferences"))
            .bearer_auth(&token)
            .json(&json!({ "preferences": { t.as_str(): { "inApp": false } } }));
        async move { request.send().await.expect("PUT preferences").status() }
    });
    for status in futures::future::join_all(puts).await {
        assert_eq!(status, 200);
    }
    let got: Value = app
        .client
        .get(app.url("/api/v1/realtime/notifications/preferences"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET preferences")
        .json()
        .await
        .expect("preferences");
    for t in &types {
        assert_eq!(
            got["preferences"][t],
            json!({ "inApp": false, "push": true, "email": true }),
            "{t} kept its update"
        );
    }
}

/// A NUL character anywhere in input (body, query, path) is refused as `INVALID_PAYLOAD` and
/// stores nothing, on PostgreSQL (which cannot store it and used to answer 500) as on SQLite.
async fn nul_characters_are_refused_everywhere(backend: Backend) {
    let app = spawn_app(backend).await;
    let refused = |response: reqwest::Response| async move {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "INVALID_PAYLOAD", "{body}");
        body
    };
    let body = refused(
        post(
            &app,
            "alice",
            "/api/v1/realtime/chat/rooms",
            json!({ "participants": ["bob", "eve\u{0}"], "type": "group", "name": "G" }),
        )
        .await,
    )
    .await;
    assert_eq!(body["error"]["details"][0]["field"], "participants[1]");
    refused(
        post(
            &app,
            "alice",
            "/api/v1/realtime/chat/rooms",
            json!({ "participants": ["bob"], "type": "group", "name": "a\u{0}b" }),
        )
        .await,
    )
    .await;
    for path in [
        "/api/v1/realtime/chat/rooms/%00",
        "/api/v1/realtime/chat/rooms/x%00y/messages",
        "/api/v1/realtime/chat/rooms?before=%00",
        "/api/v1/realtime/notifications?before=a%00",
    ] {
        let response = app
            .client
            .get(app.url(path))
            .bearer_auth(app.token("alice"))
            .send()
            .await
            .expect("a GET");
        refused(response).await;
    }
    assert_eq!(count(&app, "SELECT count(*) FROM rooms").await, 0);
}

backend_tests!(
    nul_characters_are_refused_everywhere,
    group_creation_is_atomic_with_its_invites,
    direct_rooms_of_lookalike_pairs_are_distinct,
    concurrent_preference_updates_keep_every_key
);

#[tokio::test]
async fn sqlite_search_survives_renumbered_rowids() {
    search_survives_renumbered_rowids(Backend::Sqlite).await;
}
