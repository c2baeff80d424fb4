//! The statements of a message group commit ([`super::insert_batch`]), each with one fixed text
//! per backend: the batch travels as a single JSON array parameter, read back row by row with
//! `json_each` (SQLite) or `json_array_elements` (PostgreSQL); see [`json_rows`].
//!
//! Statements whose text grew with the batch (`VALUES (?, …), (?, …)`, `CASE … WHEN`, `OR`
//! chains) were prepared anew for nearly every batch, since each size had its own text and the
//! driver's statement cache holds 100: on SQLite, preparing was about a tenth of the writer
//! thread's time, and building the text and binding twelve values per message cost as much on
//! the async workers. A fixed text is prepared once per connection and binds one value.
//!
//! Every row is a JSON array read by position (`value ->> n`), which both backends index the
//! same way. SQLite's `->>` gives JSON numbers back as integers and JSON booleans as 0/1, what
//! its driver binds for `i64` and `bool`; PostgreSQL's gives text, cast where the column is not.
//! Dates are written as the drivers bind them (see [`timestamp`]), so rows written here and rows
//! written through sea-orm compare and sort alike.

use std::sync::LazyLock;

use chrono::{DateTime, SecondsFormat, Utc};
use entity::message;
use sea_orm::{DatabaseBackend, DbErr, Statement};

use crate::db::{json_param, json_rows, json_statement};
use crate::pipeline::journal;

/// Retries: the stored messages matching `[room_id, user_id, client_message_id]` rows.
const LOOKUP_SQLITE: &str = "SELECT m.* FROM json_each(?) AS j CROSS JOIN messages AS m \
     WHERE m.room_id = j.value ->> 0 AND m.user_id = j.value ->> 1 \
     AND m.client_message_id = j.value ->> 2";
const LOOKUP_POSTGRES: &str = "SELECT m.* FROM json_array_elements($1::json) AS j(value) \
     JOIN messages AS m ON m.room_id = j.value ->> 0 AND m.user_id = j.value ->> 1 \
     AND m.client_message_id = j.value ->> 2";

/// The batch's first read, two kinds of `(text, integer)` rows: `(room id, last_seq)` for
/// each room of the batch that exists, and `(NULL, i)` for each `[room_id, user_id,
/// client_message_id]` key (by index `i`) already stored, a retry. On PostgreSQL the rooms are
/// locked in id order (`FOR UPDATE`), so concurrent batches of several nodes lock shared rooms
/// in the same order and cannot deadlock, and the counters read cannot move until the commit;
/// a row another batch held is read as that batch committed it. On SQLite the transaction
/// holds the file's write lock from its `BEGIN IMMEDIATE` ([`crate::write_path`]), so no
/// other connection, of this process or another, can move a counter between read and bump.
const FRONT_SQLITE: &str = "SELECT id, last_seq FROM rooms \
     WHERE id IN (SELECT value FROM json_each(?)) \
     UNION ALL SELECT NULL, j.key FROM json_each(?) AS j WHERE EXISTS (SELECT 1 FROM messages \
     AS m WHERE m.room_id = j.value ->> 0 AND m.user_id = j.value ->> 1 \
     AND m.client_message_id = j.value ->> 2)";
const FRONT_POSTGRES: &str = "WITH locked AS MATERIALIZED (SELECT id, last_seq FROM rooms \
     WHERE id IN (SELECT json_array_elements_text($1::json)) ORDER BY id FOR UPDATE) \
     SELECT id, last_seq FROM locked \
     UNION ALL SELECT NULL, j.n - 1 FROM json_array_elements($2::json) \
     WITH ORDINALITY AS j(value, n) WHERE EXISTS (SELECT 1 FROM messages AS m \
     WHERE m.room_id = j.value ->> 0 AND m.user_id = j.value ->> 1 \
     AND m.client_message_id = j.value ->> 2)";

/// Seqs: each `[room_id, read, last]` room's counter moves from `read` (what the first read
/// returned) to `last`. A counter that is no longer `read` becomes NULL, which its `NOT NULL`
/// column refuses: the batch fails (and is retried one message per transaction) rather than
/// hand out seqs twice. It cannot happen while the reasons above hold; this checks they do.
const BUMP_SQLITE: &str = "UPDATE rooms \
     SET last_seq = CASE WHEN rooms.last_seq = v.read THEN v.last END \
     FROM (SELECT value ->> 0 AS id, value ->> 1 AS read, value ->> 2 AS last \
     FROM json_each(?)) AS v WHERE rooms.id = v.id";
const BUMP_POSTGRES: &str = "UPDATE rooms \
     SET last_seq = CASE WHEN rooms.last_seq = v.read THEN v.last END \
     FROM (SELECT value ->> 0 AS id, (value ->> 1)::bigint AS read, \
     (value ->> 2)::bigint AS last FROM json_array_elements($1::json) AS j(value)) AS v \
     WHERE rooms.id = v.id";

/// The rows, in [`MessageRow`]'s column order.
const INSERT_SQLITE: &str = "INSERT INTO messages (id, room_id, seq, user_id, sender_name, \
     content, message_type, reply_to_id, client_message_id, created_at, edited_at, deleted) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
     value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11 \
     FROM json_each(?)";
const INSERT_POSTGRES: &str = "INSERT INTO messages (id, room_id, seq, user_id, sender_name, \
     content, message_type, reply_to_id, client_message_id, created_at, edited_at, deleted) \
     SELECT value ->> 0, value ->> 1, (value ->> 2)::bigint, value ->> 3, value ->> 4, \
     value ->> 5, value ->> 6, value ->> 7, value ->> 8, (value ->> 9)::timestamptz, \
     (value ->> 10)::timestamptz, (value ->> 11)::boolean \
     FROM json_array_elements($1::json) AS j(value)";

/// Watermarks: each `[room_id, user_id, seq]` sender has read and received up to `seq`.
const WATERMARKS_SQLITE: &str = "UPDATE room_members SET read_seq = v.seq, delivered_seq = v.seq \
     FROM (SELECT value ->> 0 AS room_id, value ->> 1 AS user_id, value ->> 2 AS seq \
     FROM json_each(?)) AS v \
     WHERE room_members.room_id = v.room_id AND room_members.user_id = v.user_id \
     AND room_members.read_seq < v.seq";
const WATERMARKS_POSTGRES: &str = "UPDATE room_members SET read_seq = v.seq, \
     delivered_seq = v.seq \
     FROM (SELECT value ->> 0 AS room_id, value ->> 1 AS user_id, (value ->> 2)::bigint AS seq \
     FROM json_array_elements($1::json) AS j(value)) AS v \
     WHERE room_members.room_id = v.room_id AND room_members.user_id = v.user_id \
     AND room_members.read_seq < v.seq";

/// One message as the insert reads it; a tuple serialises as a JSON array.
type MessageRow<'a> = (
    &'a str,
    &'a str,
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    String,
    Option<String>,
    bool,
);

/// The stored messages with these `(room_id, user_id, client_message_id)` keys.
pub fn lookup(backend: DatabaseBackend, keys: &[(&str, &str, &str)]) -> Result<Statement, DbErr> {
    json_rows(backend, LOOKUP_SQLITE, LOOKUP_POSTGRES, &keys)
}

/// The first read of a batch ([`FRONT_SQLITE`]): the counters of `rooms`, and which of
/// `keys` are stored.
pub fn front(
    backend: DatabaseBackend,
    rooms: &[&str],
    keys: &[(&str, &str, &str)],
) -> Result<Statement, DbErr> {
    let sql = match backend {
        DatabaseBackend::Postgres => FRONT_POSTGRES,
        _ => FRONT_SQLITE,
    };
    Ok(Statement::from_sql_and_values(
        backend,
        sql,
        [json_param(&rooms)?.into(), json_param(&keys)?.into()],
    ))
}

/// The `(room_id, read, last)` counter moves as [`bump`] binds them.
pub fn bump_rows(moves: &[(&str, i64, i64)]) -> Result<String, DbErr> {
    json_param(&moves)
}

/// Moves each room's counter of [`bump_rows`] from the value read to its last seq.
pub fn bump(backend: DatabaseBackend, moves: String) -> Statement {
    json_statement(backend, BUMP_SQLITE, BUMP_POSTGRES, moves)
}

/// The rows as [`insert`] binds them.
pub fn insert_rows<'a>(
    backend: DatabaseBackend,
    rows: impl Iterator<Item = &'a message::Model>,
) -> Result<String, DbErr> {
    let rows: Vec<MessageRow<'_>> = rows
        .map(|m| {
            (
                m.id.as_str(),
                m.room_id.as_str(),
                m.seq,
                m.user_id.as_str(),
                m.sender_name.as_str(),
                m.content.as_str(),
                m.message_type.as_str(),
                m.reply_to_id.as_deref(),
                m.client_message_id.as_deref(),
                timestamp(backend, &m.created_at),
                m.edited_at.as_ref().map(|t| timestamp(backend, t)),
                m.deleted,
            )
        })
        .collect();
    json_param(&rows)
}

/// Inserts the rows of [`insert_rows`] (no `RETURNING`: every column is known).
pub fn insert(backend: DatabaseBackend, rows: String) -> Statement {
    json_statement(backend, INSERT_SQLITE, INSERT_POSTGRES, rows)
}

/// The `(room_id, user_id, seq)` marks as [`watermarks`] binds them.
pub fn watermark_rows(marks: &[(&str, &str, i64)]) -> Result<String, DbErr> {
    json_param(&marks)
}

/// Moves each member of [`watermark_rows`] read and delivered watermarks up to its seq.
pub fn watermarks(backend: DatabaseBackend, marks: String) -> Statement {
    json_statement(backend, WATERMARKS_SQLITE, WATERMARKS_POSTGRES, marks)
}

/// On PostgreSQL, the whole rest of a group commit as ONE statement: the counters, the rows,
/// the watermarks and the journal append ([`journal::append_ctes_postgres`]) as data-modifying `WITH`
/// queries, returning the journal head's new last id. Each statement is a round trip to the
/// server, and under load each waits for the database's process to be scheduled: the ten of a
/// one-message commit (of which these were five) made its ack wait tens of milliseconds with
/// the CPU half idle. Empty arrays bind for parts with nothing to do; without events (`append`
/// `None`) the journal is left alone.
pub fn commit_postgres(
    bumps: Option<String>,
    messages: Option<String>,
    marks: Option<String>,
    append: Option<journal::AppendRows>,
) -> Statement {
    fn writes() -> String {
        format!(
            "WITH bumped AS ({BUMP_POSTGRES}), stored AS ({}), marked AS ({})",
            INSERT_POSTGRES.replace("$1", "$2"),
            WATERMARKS_POSTGRES.replace("$1", "$3"),
        )
    }
    static JOURNALED: LazyLock<String> = LazyLock::new(|| {
        let writes = writes();
        let journal = journal::append_ctes_postgres(4);
        format!("{writes}, {journal} SELECT last_id FROM head")
    });
    // Without events the journal is not touched (nor its head's row lock taken); no rows.
    static UNJOURNALED: LazyLock<String> =
        LazyLock::new(|| format!("{} SELECT NULL::bigint AS last_id WHERE false", writes()));
    let empty = || "[]".to_owned();
    let mut values: Vec<sea_orm::Value> = vec![
        bumps.unwrap_or_else(empty).into(),
        messages.unwrap_or_else(empty).into(),
        marks.unwrap_or_else(empty).into(),
    ];
    let sql = match append {
        Some(append) => {
            values.extend([
                append.count.into(),
                append.events.into(),
                append.targets.into(),
            ]);
            JOURNALED.as_str()
        }
        None => UNJOURNALED.as_str(),
    };
    Statement::from_sql_and_values(DatabaseBackend::Postgres, sql, values)
}

/// A date as the backend's driver binds a `DateTime<Utc>`: on SQLite the text sqlx writes
/// (RFC 3339, `+00:00`, as many fractional digits as needed), on PostgreSQL microseconds,
/// truncated as sqlx truncates them (the server would round a longer fraction).
fn timestamp(backend: DatabaseBackend, at: &DateTime<Utc>) -> String {
    let precision = match backend {
        DatabaseBackend::Postgres => SecondsFormat::Micros,
        _ => SecondsFormat::AutoSi,
    };
    at.to_rfc3339_opts(precision, false)
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, DatabaseBackend};

    use super::{bump, bump_rows};

    /// A counter that moved after the batch read it fails the batch instead of handing out
    /// the same seqs twice.
    #[tokio::test]
    async fn a_counter_moved_since_it_was_read_fails_the_bump() {
        let db = crate::db::memory_sqlite(
            "CREATE TABLE rooms (id TEXT PRIMARY KEY, last_seq BIGINT NOT NULL DEFAULT 0); \
             INSERT INTO rooms (id, last_seq) VALUES ('a', 5), ('b', 7)",
        )
        .await;
        let moves =
            |m: &[(&str, i64, i64)]| bump(DatabaseBackend::Sqlite, bump_rows(m).expect("JSON"));
        db.execute_raw(moves(&[("a", 5, 8), ("b", 7, 9)]))
            .await
            .expect("counters as read move");
        assert!(
            db.execute_raw(moves(&[("a", 5, 6)])).await.is_err(),
            "a counter read as 5 is 8 now"
        );
        let seqs: Vec<i64> = db
            .query_all_raw(sea_orm::Statement::from_string(
                DatabaseBackend::Sqlite,
                "SELECT last_seq FROM rooms ORDER BY id",
            ))
            .await
            .expect("reading")
            .iter()
            .map(|r| r.try_get_by_index(0).expect("last_seq"))
            .collect();
        assert_eq!(seqs, [8, 9]);
    }
}
