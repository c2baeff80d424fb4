//! SQLite's full-text index, filled after the commit instead of inside it. The insert trigger
//! of `m20261201_000002` tokenised each message and flushed a new FTS5 segment in the
//! message's own transaction: of the 19–25 pages a one-message commit wrote to the WAL, 5–11
//! were the index's (`bench/RESULTS.md`, 2026-12-06), and the commits of a chat server are
//! mostly of one or a few messages. Now a new message is stored with `search_id` NULL (its
//! "not indexed yet" mark), and the server's search indexer numbers and indexes the pending
//! rows in batches, in the background and before every search, so a search still finds every
//! message sent before it (`src/domain/chat/search_index.rs`).
//!
//! The edit and delete triggers only touch rows already in the index: a row still pending is
//! indexed later with whatever its content is then. PostgreSQL's `tsvector` column lives in the
//! row itself: nothing to do.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

use crate::m20261201_000002_message_search_id::SQLITE_TRIGGERS;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000001_deferred_search_index"
    }
}

const SQLITE_UP: &str = r#"
DROP TRIGGER IF EXISTS messages_fts_insert;
DROP TRIGGER IF EXISTS messages_fts_update;
DROP TRIGGER IF EXISTS messages_fts_delete;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
WHEN old.search_id IS NOT NULL BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content)
        VALUES ('delete', old.search_id, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages
WHEN old.search_id IS NOT NULL BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content)
        VALUES ('delete', old.search_id, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.search_id, new.content);
END;
"#;

/// Indexes what is pending (numbered after every indexed row, in insertion order), then puts
/// back the triggers of `m20261201_000002` ([`SQLITE_TRIGGERS`], run after this).
const SQLITE_DOWN: &str = r#"
UPDATE messages SET search_id = n.search_id FROM (
    SELECT id, (SELECT coalesce(max(search_id), 0) FROM messages)
        + row_number() OVER (ORDER BY rowid) AS search_id
    FROM messages WHERE search_id IS NULL
) AS n WHERE messages.id = n.id;
DROP TRIGGER IF EXISTS messages_fts_update;
DROP TRIGGER IF EXISTS messages_fts_delete;
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == DatabaseBackend::Sqlite {
            m.get_connection().execute_unprepared(SQLITE_UP).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == DatabaseBackend::Sqlite {
            let db = m.get_connection();
            db.execute_unprepared(SQLITE_DOWN).await?;
            db.execute_unprepared(SQLITE_TRIGGERS).await?;
        }
        Ok(())
    }
}
