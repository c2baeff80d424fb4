//! SQLite's full-text index, kept up after the commit (migration `m20261206_000001`): a message
//! is stored with `search_id` NULL, and [`catch_up`] numbers the pending rows after every
//! indexed one, in insertion order, and adds them to `messages_fts`, a batch per transaction.
//! Tokenising a message and flushing an FTS5 segment inside its own commit was a third of the
//! pages a one-message commit wrote; a segment per batch costs a few pages for dozens of
//! messages, and it is paid off the messages' path.
//!
//! [`indexer`] catches up every `SEARCH_INDEX_INTERVAL_MS`, and a search catches up first
//! ([`super::ChatService::index_for_search`]), so it finds every message stored before it. PostgreSQL keeps its `tsvector` in the row: there
//! both are no-ops.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

use crate::state::Core;
use crate::write_path::WritePath;

/// Most messages one indexing transaction takes, so it holds the write turn only briefly.
const BATCH: i64 = 500;

/// Whether any message waits to be indexed: one probe of the `search_id` index, on a reader.
const ANY_PENDING: &str = "SELECT EXISTS (SELECT 1 FROM messages WHERE search_id IS NULL)";

/// The largest `search_id`, the pending rows are numbered after.
const LAST: &str = "SELECT coalesce(max(search_id), 0) FROM messages";

/// Numbers up to `BATCH` pending rows after `?` (the [`LAST`] read in the same transaction),
/// oldest first; the pending ones are found through the `search_id` index (NULLs first).
const NUMBER: &str = "UPDATE messages SET search_id = n.search_id FROM ( \
     SELECT id, ? + row_number() OVER (ORDER BY rowid) AS search_id \
     FROM messages WHERE search_id IS NULL ORDER BY rowid LIMIT ?) AS n \
     WHERE messages.id = n.id";

/// Indexes the rows numbered above `?`.
const INDEX: &str = "INSERT INTO messages_fts(rowid, content) \
     SELECT search_id, content FROM messages WHERE search_id > ? ORDER BY search_id";

/// Indexes every message stored so far that is not yet; returns how many. Nothing pending (a
/// probe on `reader`) costs no write turn. Otherwise each batch is a transaction on the write
/// path, which waits for the commit in progress and holds the next ones back only for its own
/// short write. Callers serialise it: [`crate::domain::chat::ChatService::index_for_search`].
pub(super) async fn catch_up(
    writes: &WritePath,
    reader: &DatabaseConnection,
) -> Result<u64, DbErr> {
    let mut indexed = 0;
    if reader.get_database_backend() != DbBackend::Sqlite {
        return Ok(indexed);
    }
    let pending = reader
        .query_one_raw(Statement::from_string(DbBackend::Sqlite, ANY_PENDING))
        .await?
        .map(|row| row.try_get_by_index::<bool>(0))
        .transpose()?
        .unwrap_or(false);
    if !pending {
        return Ok(indexed);
    }
    loop {
        let tx = writes.begin().await?;
        let last: i64 = match tx
            .query_one_raw(Statement::from_string(DbBackend::Sqlite, LAST))
            .await?
        {
            Some(row) => row.try_get_by_index(0)?,
            None => 0,
        };
        let numbered = tx
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                NUMBER,
                [last.into(), BATCH.into()],
            ))
            .await?
            .rows_affected();
        if numbered == 0 {
            return Ok(indexed);
        }
        tx.execute_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            INDEX,
            [last.into()],
        ))
        .await?;
        tx.commit().await?;
        indexed += numbered;
        if numbered < BATCH as u64 {
            return Ok(indexed);
        }
    }
}

/// Catches the index up every `SEARCH_INDEX_INTERVAL_MS` (never when it is 0: then only
/// searches do), on SQLite only.
pub async fn indexer(core: Arc<Core>) {
    let every = core.config.search_index_interval_ms;
    if every == 0 || core.db.get_database_backend() != DbBackend::Sqlite {
        return;
    }
    tracing::info!(task = "search_indexer", every_ms = every, "started");
    let mut tick = tokio::time::interval(Duration::from_millis(every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = core.shutdown.cancelled() => break,
        }
        match core.chat.index_for_search().await {
            Ok(indexed) => tracing::trace!(task = "search_indexer", indexed),
            Err(e) => tracing::warn!(task = "search_indexer", error = %e, "indexing failed"),
        }
    }
    tracing::info!(task = "search_indexer", "stopped");
}
