//! Migrations on both backends: run at start, idempotent, reversible.

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement};

use crate::common::{Backend, fresh_database, spawn_app};

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
    let db = &app.core.db;

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

backend_tests!(
    nodes_starting_together_all_migrate,
    startup_creates_the_schema,
    running_migrations_again_changes_nothing,
    migrations_go_down_and_up_again
);
