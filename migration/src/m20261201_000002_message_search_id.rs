//! SQLite's full-text index keyed on a stable integer. The first FTS5 table pointed at the
//! implicit `rowid` of `messages`, whose primary key is text: SQLite may renumber such rowids
//! (`VACUUM` is allowed to, and a dump and restore or a table rebuild does), after which search
//! answered with other messages. Messages now carry an explicit `search_id` (set by a trigger
//! on insert, never changed, copied with the row by anything that copies rows), and the index
//! is rebuilt on it. PostgreSQL's `tsvector` column lives in the row itself: nothing to do.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261201_000002_message_search_id"
    }
}

/// The triggers keep the index in step with inserts, edits and deletes. A new message takes one
/// more than the largest `search_id` so far (an index lookup; SQLite writers are serialised, so
/// two inserts never take the same one).
const SQLITE_UP: &str = r#"
DROP TRIGGER IF EXISTS messages_fts_update;
DROP TRIGGER IF EXISTS messages_fts_delete;
DROP TRIGGER IF EXISTS messages_fts_insert;
DROP TABLE IF EXISTS messages_fts;
ALTER TABLE messages ADD COLUMN search_id INTEGER;
UPDATE messages SET search_id = rowid;
CREATE UNIQUE INDEX idx_messages_search_id ON messages (search_id);
CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='search_id');
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
"#;

/// The triggers that go with [`SQLITE_UP`]; `m20261206_000001` puts them back on its way down.
pub(crate) const SQLITE_TRIGGERS: &str = r#"
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    UPDATE messages SET search_id = (SELECT coalesce(max(search_id), 0) + 1 FROM messages)
        WHERE id = new.id;
    INSERT INTO messages_fts(rowid, content)
        SELECT search_id, content FROM messages WHERE id = new.id;
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content)
        VALUES ('delete', old.search_id, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content)
        VALUES ('delete', old.search_id, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.search_id, new.content);
END;
"#;

/// Back to the rowid-keyed index of `m20261122_000002_message_search`.
const SQLITE_DOWN: &str = r#"
DROP TRIGGER IF EXISTS messages_fts_update;
DROP TRIGGER IF EXISTS messages_fts_delete;
DROP TRIGGER IF EXISTS messages_fts_insert;
DROP TABLE IF EXISTS messages_fts;
DROP INDEX IF EXISTS idx_messages_search_id;
ALTER TABLE messages DROP COLUMN search_id;
CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='rowid');
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.rowid, new.content);
END;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// The index is dropped and rebuilt: all of it or none.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == DatabaseBackend::Sqlite {
            let db = m.get_connection();
            db.execute_unprepared(SQLITE_UP).await?;
            db.execute_unprepared(SQLITE_TRIGGERS).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() == DatabaseBackend::Sqlite {
            m.get_connection().execute_unprepared(SQLITE_DOWN).await?;
        }
        Ok(())
    }
}
