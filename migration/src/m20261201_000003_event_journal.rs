//! The event journal behind resume cursors (issue #10, `docs/delivery.md`): every server event
//! that reflects persisted state is stored with a global, dense id, so a client that was away
//! can be sent exactly what it missed. Ids come from the single `event_head` row (never from a
//! sequence, which leaves holes on rollback); its `epoch` is random per database, so a cursor
//! from a wiped or restored database is recognised instead of being misread.
//!
//! Plain SQL, identical on SQLite and PostgreSQL except for how the epoch is drawn.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000003_event_journal"
    }
}

/// The tables and the indexes of the replay query (see `src/pipeline/journal.rs`).
const CREATE: &[&str] = &[
    // `created_at` is Unix milliseconds: retention compares numbers on both backends.
    "CREATE TABLE events (
        id BIGINT NOT NULL PRIMARY KEY,
        kind VARCHAR(16) NOT NULL,
        event VARCHAR(64) NOT NULL,
        payload TEXT NOT NULL,
        except_rooms TEXT NULL,
        feed_actor VARCHAR(128) NULL,
        feed_public BOOLEAN NOT NULL DEFAULT FALSE,
        created_at BIGINT NOT NULL
    )",
    // Feed activities are found by kind and id range (their audience comes from `follows`);
    // retention deletes per kind from the oldest id.
    "CREATE INDEX idx_events_kind_id ON events (kind, id)",
    // One row per Socket.IO room an event went to: replay is a range scan per room.
    "CREATE TABLE event_targets (
        target VARCHAR(200) NOT NULL,
        event_id BIGINT NOT NULL,
        PRIMARY KEY (target, event_id)
    )",
    // Retention deletes targets by event id.
    "CREATE INDEX idx_event_targets_event ON event_targets (event_id)",
    "CREATE TABLE event_head (
        id INTEGER NOT NULL PRIMARY KEY,
        last_id BIGINT NOT NULL,
        epoch VARCHAR(16) NOT NULL
    )",
    "CREATE TABLE event_purges (
        kind VARCHAR(16) NOT NULL PRIMARY KEY,
        through_id BIGINT NOT NULL
    )",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for sql in CREATE {
            db.execute_unprepared(sql).await?;
        }
        // 16 random lowercase hex characters, drawn by the database itself.
        let epoch = match db.get_database_backend() {
            DbBackend::Postgres => "substr(md5(random()::text || clock_timestamp()::text), 1, 16)",
            _ => "lower(hex(randomblob(8)))",
        };
        db.execute_unprepared(&format!(
            "INSERT INTO event_head (id, last_id, epoch) VALUES (1, 0, {epoch})"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for table in ["event_purges", "event_head", "event_targets", "events"] {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        Ok(())
    }
}
