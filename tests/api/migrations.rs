//! Migrations on both backends: run at start, idempotent, reversible.

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement};

use switchboard::domain::chat::{NewRoom, RoomType};

use crate::common::{Backend, TestApp, fresh_database, spawn_app};

/// Every table the first migration creates.
const TABLES: &[&str] = &[
    "users",
    "follows",
    "rooms",
    "room_members",
    "messages",
    "notifications",
    "notification_preferences",
    "feed_activities",
];

async fn count(db: &DatabaseConnection, table: &str) -> Result<i64, DbErr> {
    let statement = Statement::from_string(
        db.get_database_backend(),
        format!("SELECT count(*) FROM {table}"),
    );
    let row = db
        .query_one_raw(statement)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("count of {table}")))?;
    row.try_get_by_index::<i64>(0)
}

/// The full-text search object of the second migration, which differs per backend.
fn search_probe(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "SELECT count(*) FROM messages_fts",
        Backend::Postgres => "SELECT count(search) FROM messages",
    }
}

/// A connection of its own to the app's database, for migrating under a live app the way the
/// server migrates at startup (see [`switchboard::db::migration_session`]).
async fn session(app: &TestApp) -> DatabaseConnection {
    switchboard::db::migration_session(&app.core.config.database_url, Default::default())
        .await
        .expect("a migration session")
}

async fn applied(db: &DatabaseConnection) -> usize {
    Migrator::get_applied_migrations(db)
        .await
        .expect("listing applied migrations")
        .len()
}

async fn startup_creates_the_schema(backend: Backend) {
    let app = spawn_app(backend).await;
    let db = &app.core.db;

    for table in TABLES {
        let rows = count(db, table)
            .await
            .unwrap_or_else(|e| panic!("table {table}: {e}"));
        assert_eq!(rows, 0, "a fresh {table} is empty");
    }
    db.execute_unprepared(search_probe(backend))
        .await
        .expect("message search is set up");
    assert!(
        Migrator::get_pending_migrations(db)
            .await
            .expect("listing pending migrations")
            .is_empty(),
        "migrations left pending after start"
    );
    assert_eq!(applied(db).await, Migrator::migrations().len());
}

async fn running_migrations_again_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let db = &app.core.db;
    db.execute_unprepared(
        "INSERT INTO users (id, name, created_at, updated_at) \
         VALUES ('u1', 'User One', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    )
    .await
    .expect("inserting a user");

    Migrator::up(db, None).await.expect("second `up`");
    // What `switchboard migrate` and a second node starting do: connect and migrate again.
    let url = app.core.config.database_url.clone();
    let again = switchboard::db::connect_and_migrate(&url)
        .await
        .expect("connect_and_migrate on a migrated database");
    again.close().await.ok();

    assert_eq!(applied(db).await, Migrator::migrations().len());
    assert_eq!(count(db, "users").await.expect("counting users"), 1);
}

async fn migrations_go_down_and_up_again(backend: Backend) {
    let app = spawn_app(backend).await;
    let db = &session(&app).await;

    Migrator::down(db, None)
        .await
        .expect("`down` of everything");

    assert_eq!(applied(db).await, 0);
    for table in TABLES {
        assert!(
            count(db, table).await.is_err(),
            "{table} still exists after `down`"
        );
    }
    assert!(
        db.execute_unprepared(search_probe(backend)).await.is_err(),
        "message search still exists after `down`"
    );

    Migrator::up(db, None).await.expect("`up` after `down`");

    assert_eq!(applied(db).await, Migrator::migrations().len());
    for table in TABLES {
        count(db, table)
            .await
            .unwrap_or_else(|e| panic!("table {table} after `up`: {e}"));
    }
    db.execute_unprepared(search_probe(backend))
        .await
        .expect("message search after `up`");
    let health = app.get("/health").await;
    assert_eq!(health.status(), reqwest::StatusCode::OK);
}

/// Cluster nodes start together against one new database; all of them must come up.
async fn nodes_starting_together_all_migrate(backend: Backend) {
    let (url, _scratch) = fresh_database(backend).await;
    let starts = (0..3).map(|_| switchboard::db::connect_and_migrate(&url));
    for started in futures::future::join_all(starts).await {
        let db = started.expect("a node starting alongside others");
        assert_eq!(applied(&db).await, Migrator::migrations().len());
    }
}

/// How many steps `down` takes to undo the migration `name` and every later one.
fn steps_back_to(name: &str) -> u32 {
    let all = Migrator::migrations();
    let at = all
        .iter()
        .position(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no migration {name}"));
    u32::try_from(all.len() - at).expect("a small number of migrations")
}

fn direct_with(other: &str) -> NewRoom {
    NewRoom {
        participants: vec![other.to_owned()],
        room_type: Some(RoomType::Direct),
        name: None,
    }
}

/// A direct room made under the newline key is found again once its key is rewritten.
async fn direct_rooms_made_before_the_key_change_are_still_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let db = &session(&app).await;
    Migrator::down(db, Some(steps_back_to("m20261201_000001_direct_room_key")))
        .await
        .expect("going back before the key change");
    // Rooms as the first schema made them.
    let old = |id: &str, key: &str| {
        format!(
            "INSERT INTO rooms (id, room_type, created_by, created_at, last_seq, direct_key) \
             VALUES ('{id}', 'direct', 'alice', CURRENT_TIMESTAMP, 0, '{key}')"
        )
    };
    let member = |room: &str, user: &str| {
        format!(
            "INSERT INTO room_members (room_id, user_id, role, joined_at, read_seq, delivered_seq) \
             VALUES ('{room}', '{user}', 'member', CURRENT_TIMESTAMP, 0, 0)"
        )
    };
    for sql in [
        "INSERT INTO users (id, name, created_at, updated_at) VALUES \
         ('alice', 'alice', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP), \
         ('bob', 'bob', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            .to_owned(),
        old("00000000-0000-7000-8000-000000000001", "alice\nbob"),
        member("00000000-0000-7000-8000-000000000001", "alice"),
        member("00000000-0000-7000-8000-000000000001", "bob"),
    ] {
        db.execute_unprepared(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    Migrator::up(db, None).await.expect("`up` again");

    let (room, created) = app
        .core
        .chat
        .create_room("bob", direct_with("alice"))
        .await
        .expect("re-creating the direct room");
    assert!(!created, "the existing room is returned");
    assert_eq!(room.id, "00000000-0000-7000-8000-000000000001");
    assert_eq!(count(db, "rooms").await.expect("counting rooms"), 1);
}

/// Messages stored before the search index was re-keyed are found after it.
async fn messages_indexed_before_the_search_key_change_are_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let db = &session(&app).await;
    let (room, _) = app
        .core
        .chat
        .create_room("alice", direct_with("bob"))
        .await
        .expect("a room");
    Migrator::down(
        db,
        Some(steps_back_to("m20261201_000002_message_search_id")),
    )
    .await
    .expect("going back before the search key change");
    let alice = switchboard::auth::AuthUser {
        id: "alice".to_owned(),
        name: "Alice".to_owned(),
        name_from_token: true,
    };
    for content in ["old pizza", "old pasta"] {
        let message = switchboard::domain::chat::NewMessage {
            room_id: room.id.clone(),
            content: content.to_owned(),
            message_type: None,
            reply_to_id: None,
            client_message_id: None,
        };
        app.core
            .chat
            .send_message(&alice, message)
            .await
            .expect("sending under the old schema");
    }
    Migrator::up(db, None).await.expect("`up` again");
    let found = app
        .core
        .chat
        .search("bob", &room.id, "pizza", 10)
        .await
        .expect("searching");
    let contents: Vec<&str> = found.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["old pizza"]);
}

backend_tests!(
    direct_rooms_made_before_the_key_change_are_still_found,
    messages_indexed_before_the_search_key_change_are_found,
    nodes_starting_together_all_migrate,
    startup_creates_the_schema,
    running_migrations_again_changes_nothing,
    migrations_go_down_and_up_again
);

/// Going back before the deferred search index indexes the messages still pending, so the
/// index the old triggers keep has them all; coming up again leaves every message findable.
#[tokio::test]
async fn sqlite_pending_messages_are_indexed_when_the_deferred_index_is_undone() {
    let app =
        &crate::common::spawn_app_with(Backend::Sqlite, &["--search-index-interval-ms", "0"]).await;
    let db = &session(app).await;
    let (room, _) = app
        .core
        .chat
        .create_room("alice", direct_with("bob"))
        .await
        .expect("a room");
    let send = |text: &'static str| crate::common::send_text(app, "alice", &room.id, text);
    send("pending plum").await;
    let matches = |word: &str| {
        let sql = format!("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH '{word}'");
        async move { crate::common::count(app, &sql).await }
    };
    assert_eq!(matches("plum").await, 0, "pending, not indexed yet");
    Migrator::down(
        db,
        Some(steps_back_to("m20261206_000001_deferred_search_index")),
    )
    .await
    .expect("undoing the deferred index");
    assert_eq!(matches("plum").await, 1, "indexed on the way down");
    send("triggered quince").await;
    assert_eq!(
        matches("quince").await,
        1,
        "the old trigger indexes in the commit"
    );

    Migrator::up(db, None).await.expect("`up` again");
    send("deferred plum").await;
    let found = app
        .core
        .chat
        .search("bob", &room.id, "plum", 10)
        .await
        .expect("searching");
    let contents: Vec<&str> = found.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["deferred plum", "pending plum"]);
}
