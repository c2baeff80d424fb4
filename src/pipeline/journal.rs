//! The event journal: journaled events are stored with global, dense, commit-ordered ids, so a
//! client can resume from its cursor and a dispatcher can fill a gap its bus left. Raw SQL on
//! purpose: this is the hot path of every persisted event, and the replay is one query whatever
//! the number of rooms (see `docs/delivery.md`).
//!
//! Tables (migration `m20261201_000003_event_journal`): `events`, `event_targets` (one row per
//! Socket.IO room; none for feed activities, whose audience is the follow graph),
//! `event_head` (the last id and the database's epoch), `event_purges` (per kind, the highest
//! id retention deleted).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, Value};
use serde_json::value::RawValue;

use super::model::{Cursor, Event, FeedScope, Kind};
use crate::db::json_statement;
use crate::error::AppError;

/// The head's last id, read after the head moved in the same transaction: what appended
/// events compute their ids from. A macro so the texts below can be `concat!`ed.
macro_rules! head_last_id {
    () => {
        "(SELECT last_id FROM event_head WHERE id = 1)"
    };
}

/// Moves the head by the number of events appended; its `RETURNING` row is the only one an
/// append produces, and gives the batch's last id.
const BUMP_HEAD_SQLITE: &str =
    "UPDATE event_head SET last_id = last_id + ? WHERE id = 1 RETURNING last_id";
const BUMP_HEAD_POSTGRES: &str =
    "UPDATE event_head SET last_id = last_id + $1 WHERE id = 1 RETURNING last_id";
/// The appended events, in [`EventRow`]'s column order, as one JSON parameter
/// ([`crate::db::json_rows`]). Each row carries how far before the head's new last id its id
/// is, so the ids are computed in SQL after the head moved, in the same script.
const INSERT_EVENTS_SQLITE: &str = concat!(
    "INSERT INTO events (id, kind, event, payload, except_rooms, feed_actor, feed_public, \
     created_at) SELECT ",
    head_last_id!(),
    " - (value ->> 0), value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
     value ->> 6, value ->> 7 FROM json_each(?)"
);
const INSERT_EVENTS_POSTGRES: &str = concat!(
    "INSERT INTO events (id, kind, event, payload, except_rooms, feed_actor, feed_public, \
     created_at) SELECT ",
    head_last_id!(),
    " - (value ->> 0)::bigint, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
     value ->> 5, (value ->> 6)::boolean, (value ->> 7)::bigint \
     FROM json_array_elements($1::json) AS j(value)"
);
/// Each event's Socket.IO rooms, as `[target, distance from the last id]` rows.
const INSERT_TARGETS_SQLITE: &str = concat!(
    "INSERT INTO event_targets (target, event_id) SELECT value ->> 0, ",
    head_last_id!(),
    " - (value ->> 1) FROM json_each(?)"
);
const INSERT_TARGETS_POSTGRES: &str = concat!(
    "INSERT INTO event_targets (target, event_id) SELECT value ->> 0, ",
    head_last_id!(),
    " - (value ->> 1)::bigint FROM json_array_elements($1::json) AS j(value)"
);

/// One event as [`INSERT_EVENTS_SQLITE`] reads it; a tuple serialises as a JSON array.
type EventRow<'a> = (
    i64,
    &'a str,
    &'a str,
    &'a str,
    Option<String>,
    Option<&'a str>,
    bool,
    i64,
);

/// A statement written with `$n` placeholders, in the backend's own syntax (see
/// [`sqlite_placeholders`]).
fn stmt(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Postgres => sql.to_owned(),
        _ => sqlite_placeholders(sql),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// SQLite's syntax for `$n` placeholders: a plain `?` when they come in order (`$1`, `$2`, …,
/// each once), else numbered `?n`. Numbered placeholders are named parameters to SQLite, and
/// binding each one looks its name up in a list: a 1,600-parameter journal insert took a
/// quadratic number of steps (`sqlite3_bind_parameter_name`, 4% of the server's CPU under
/// message load). Plain ones have no name.
fn sqlite_placeholders(sql: &str) -> String {
    let mut plain = String::with_capacity(sql.len());
    let mut next = 1u64;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            plain.push(c);
            continue;
        }
        let mut n = 0u64;
        while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
            n = n * 10 + u64::from(d);
            chars.next();
        }
        if n != next {
            return sql.replace('$', "?");
        }
        next += 1;
        plain.push('?');
    }
    plain
}

fn db_id(id: u64) -> Value {
    Value::BigInt(Some(db_i64(id)))
}

fn db_i64(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

fn get_u64(row: &QueryResult, column: &str) -> Result<u64, DbErr> {
    let v: i64 = row.try_get("", column)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

/// The journal's position: the last id allocated (every id up to it is committed or purged)
/// and the database's epoch.
pub async fn head(db: &impl ConnectionTrait) -> Result<(u64, String), DbErr> {
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(stmt(
            backend,
            "SELECT last_id, epoch FROM event_head WHERE id = 1",
            vec![],
        ))
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("event_head".into()))?;
    Ok((get_u64(&row, "last_id")?, row.try_get("", "epoch")?))
}

/// Assigns the next ids to `events` (in slice order) and stores them, inside the caller's
/// transaction: the `event_head` row lock (PostgreSQL) or the single writer (SQLite) makes an
/// id visible only once every smaller one is.
pub async fn append(tx: &impl ConnectionTrait, events: &mut [Event]) -> Result<(), DbErr> {
    let statements = append_statements(tx.get_database_backend(), events)?;
    let rows = crate::db::run_all(tx, statements).await?;
    assign_ids(events, &rows)
}

/// The statements of [`append`], for a caller that runs them with statements of its own in one
/// script ([`crate::db::run_all`]), then hands the rows to [`assign_ids`]. They must run in
/// this order, last in the transaction: on PostgreSQL the head's row lock is then held only
/// until the commit. None for no events.
pub fn append_statements(backend: DbBackend, events: &[Event]) -> Result<Vec<Statement>, DbErr> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let rows = AppendRows::new(events)?;
    let head = match backend {
        DbBackend::Postgres => BUMP_HEAD_POSTGRES,
        _ => BUMP_HEAD_SQLITE,
    };
    let json = |sqlite, postgres, rows| json_statement(backend, sqlite, postgres, rows);
    let mut statements = vec![
        Statement::from_sql_and_values(backend, head, [Value::BigInt(Some(rows.count))]),
        json(INSERT_EVENTS_SQLITE, INSERT_EVENTS_POSTGRES, rows.events),
    ];
    if rows.targets != "[]" {
        statements.push(json(
            INSERT_TARGETS_SQLITE,
            INSERT_TARGETS_POSTGRES,
            rows.targets,
        ));
    }
    Ok(statements)
}

/// An append as the values its statements bind: the number of events, the events and their
/// targets as JSON arrays (see [`crate::db::json_param`]).
pub struct AppendRows {
    /// How far the head moves.
    pub count: i64,
    /// `[distance before the last id, kind, event, payload, …]` rows.
    pub events: String,
    /// `[Socket.IO room, distance before the last id]` rows.
    pub targets: String,
}

impl AppendRows {
    /// The values appending `events` binds, in slice order (the last gets the head's new id).
    pub fn new(events: &[Event]) -> Result<Self, DbErr> {
        let n = events.len();
        let before_last = |i: usize| db_i64((n - 1 - i) as u64);
        let now = chrono::Utc::now().timestamp_millis();
        let rows: Vec<EventRow<'_>> = events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    before_last(i),
                    e.kind.map(Kind::as_str).unwrap_or("chat"),
                    &*e.name,
                    e.payload.get(),
                    (!e.except.is_empty())
                        .then(|| serde_json::to_string(&e.except).unwrap_or_default()),
                    e.feed.as_ref().map(|f| f.actor.as_str()),
                    e.feed.as_ref().is_some_and(|f| f.public),
                    now,
                )
            })
            .collect();
        let targets: Vec<(&str, i64)> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind != Some(Kind::Feed))
            .flat_map(|(i, e)| {
                let mut seen: Vec<&str> = e.targets.iter().map(String::as_str).collect();
                seen.sort_unstable();
                seen.dedup();
                seen.into_iter().map(move |t| (t, before_last(i)))
            })
            .collect();
        Ok(Self {
            count: db_i64(n as u64),
            events: crate::db::json_param(&rows)?,
            targets: crate::db::json_param(&targets)?,
        })
    }
}

/// On PostgreSQL, an append as data-modifying `WITH` queries for a caller's single statement:
/// `head` (moves the head, `RETURNING last_id`), then the events and their targets taking their
/// ids from it, binding `$first` (the count), `$first + 1` (events) and `$first + 2` (targets)
/// in [`AppendRows`]' order. Sibling `WITH` queries all see the statement's starting snapshot,
/// so the ids are read from `head`'s `RETURNING` row rather than from the table.
pub fn append_ctes_postgres(first: usize) -> String {
    let param = |sql: &str, n: usize| sql.replace("$1", &format!("${n}"));
    let from_head = |sql: &str| sql.replace(head_last_id!(), "(SELECT last_id FROM head)");
    format!(
        "head AS ({}), appended AS ({}), targeted AS ({})",
        param(BUMP_HEAD_POSTGRES, first),
        param(&from_head(INSERT_EVENTS_POSTGRES), first + 1),
        param(&from_head(INSERT_TARGETS_POSTGRES), first + 2),
    )
}

/// Sets the ids of events stored by [`append_statements`] from `rows`, what the script that
/// ran them returned (the head's new last id must be its only row).
pub fn assign_ids(events: &mut [Event], rows: &[QueryResult]) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    let [row] = rows else {
        return Err(DbErr::Custom(format!(
            "appending events returned {} rows, expected the journal head",
            rows.len()
        )));
    };
    let last = get_u64(row, "last_id")?;
    let first = (last + 1).checked_sub(events.len() as u64).ok_or_else(|| {
        DbErr::Custom(format!("journal head {last} is below the events appended"))
    })?;
    for (i, event) in events.iter_mut().enumerate() {
        event.id = Some(first + i as u64);
    }
    Ok(())
}

const EVENT_COLUMNS: &str = "id, kind, event, payload, except_rooms, feed_actor, feed_public";

/// One stored event, without its targets.
fn decode(row: &QueryResult) -> Result<Event, DbErr> {
    let kind: String = row.try_get("", "kind")?;
    let payload: String = row.try_get("", "payload")?;
    let except: Option<String> = row.try_get("", "except_rooms")?;
    let actor: Option<String> = row.try_get("", "feed_actor")?;
    let public: bool = row.try_get("", "feed_public")?;
    let payload = RawValue::from_string(payload)
        .map_err(|e| DbErr::Custom(format!("journal payload is not JSON: {e}")))?;
    let name: String = row.try_get("", "event")?;
    Ok(Event {
        id: Some(get_u64(row, "id")?),
        name: Arc::from(name),
        payload: Arc::from(payload),
        targets: Vec::new(),
        except: except
            .and_then(|e| serde_json::from_str(&e).ok())
            .unwrap_or_default(),
        kind: Kind::parse(&kind),
        feed: actor.map(|actor| FeedScope { actor, public }),
    })
}

/// The stored events with ids in `(after, through]`, with their live targets (feed
/// activities' recomputed from the follow graph), for a dispatcher filling a gap. Purged ids
/// are simply absent.
pub async fn range(
    db: &impl ConnectionTrait,
    after: u64,
    through: u64,
) -> Result<Vec<Event>, DbErr> {
    if through <= after {
        return Ok(Vec::new());
    }
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(stmt(
            backend,
            &format!("SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 AND id <= $2 ORDER BY id"),
            vec![db_id(after), db_id(through)],
        ))
        .await?;
    let mut events = BTreeMap::new();
    for row in &rows {
        let e = decode(row)?;
        events.insert(e.id.unwrap_or_default(), e);
    }
    let targets = db
        .query_all_raw(stmt(
            backend,
            "SELECT event_id, target FROM event_targets WHERE event_id > $1 AND event_id <= $2",
            vec![db_id(after), db_id(through)],
        ))
        .await?;
    for row in &targets {
        let id = get_u64(row, "event_id")?;
        let target: String = row.try_get("", "target")?;
        if let Some(e) = events.get_mut(&id) {
            e.targets.push(target);
        }
    }
    let mut followers: HashMap<String, Vec<String>> = HashMap::new();
    for e in events.values_mut() {
        let Some(scope) = e.feed.clone() else {
            continue;
        };
        if !followers.contains_key(&scope.actor) {
            let rows = db
                .query_all_raw(stmt(
                    backend,
                    "SELECT follower_id FROM follows WHERE followee_id = $1",
                    vec![scope.actor.clone().into()],
                ))
                .await?;
            let list = rows
                .iter()
                .filter_map(|r| r.try_get::<String>("", "follower_id").ok())
                .collect();
            followers.insert(scope.actor.clone(), list);
        }
        e.targets = super::feed_targets(&scope, &followers[&scope.actor]);
    }
    Ok(events.into_values().collect())
}

/// Which feed activities a resuming receiver asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedMode {
    /// Followees' activities and public ones (`feed:subscribe` without `followingOnly`).
    All,
    /// Followees' activities only.
    Following,
}

impl FeedMode {
    /// `"all"` or `"following"`, as clients send it in `auth.feed` / `?feed=`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "all" => Some(Self::All),
            "following" => Some(Self::Following),
            _ => None,
        }
    }
}

/// What a resuming receiver asks for.
pub struct ReplayRequest<'a> {
    pub user_id: &'a str,
    /// The cursor string the client sent, unparsed; `None` for a fresh client.
    pub after: Option<&'a str>,
    /// The highest id delivered live by the dispatcher when the receiver registered: replay
    /// covers `(after, through]`, the live stream the rest.
    pub through: u64,
    /// Whether (and which) feed activities are replayed.
    pub feed: Option<FeedMode>,
    /// Most events replayed; more means the client must refetch everything.
    pub limit: usize,
    /// The journal's epoch when the caller read it already, with the head ([`head`]): it is
    /// fixed per database, so a connecting socket reads it once, not twice. `None`: read it.
    pub epoch: Option<&'a str>,
}

/// The answer to a resume.
#[derive(Debug)]
pub struct Replay {
    /// The missed events, ids set, in id order, only ids in `(after, through]`. Their
    /// `targets` are not loaded (they go to one receiver).
    pub events: Vec<Event>,
    /// Whether the client sent a cursor and everything since it follows.
    pub recovered: bool,
    /// The kinds the client must refetch (their events since the cursor are not all here).
    pub reset: Vec<Kind>,
    /// The position once `events` are applied: `through`.
    pub cursor: Cursor,
}

/// The current epoch of the database (what cursors are checked against).
pub async fn epoch(db: &impl ConnectionTrait) -> Result<String, DbErr> {
    Ok(head(db).await?.1)
}

/// Everything the user missed since `req.after`, in one query (a UNION of index range scans:
/// the user's own room, each chat room the user is a member of now, feed activities when
/// asked for), or the kinds to refetch when that is not possible.
pub async fn replay(db: &impl ConnectionTrait, req: ReplayRequest<'_>) -> Result<Replay, AppError> {
    let epoch = match req.epoch {
        Some(known) => known.to_owned(),
        None => epoch(db).await?,
    };
    let cursor = Cursor {
        epoch: epoch.clone(),
        id: req.through,
    };
    let reset_all = |cursor: Cursor| Replay {
        events: Vec::new(),
        recovered: false,
        reset: Kind::ALL.to_vec(),
        cursor,
    };
    let Some(raw) = req.after else {
        return Ok(reset_all(cursor));
    };
    let after = match raw.parse::<Cursor>() {
        Ok(c) if c.epoch == epoch && c.id <= req.through => c.id,
        Ok(c) => {
            tracing::debug!(cursor = %c, through = req.through, "cursor of another epoch or ahead of the journal");
            return Ok(reset_all(cursor));
        }
        Err(_) => {
            tracing::debug!(cursor = raw, "unparseable resume cursor");
            return Ok(reset_all(cursor));
        }
    };
    let backend = db.get_database_backend();
    let purges = db
        .query_all_raw(stmt(
            backend,
            "SELECT kind, through_id FROM event_purges",
            vec![],
        ))
        .await?;
    let mut reset = Vec::new();
    for row in &purges {
        let kind: String = row.try_get("", "kind")?;
        let through_id = get_u64(row, "through_id")?;
        if let Some(kind) = Kind::parse(&kind)
            && after < through_id
            && (kind != Kind::Feed || req.feed.is_some())
        {
            reset.push(kind);
        }
    }
    if after == req.through {
        reset.sort();
        return Ok(Replay {
            events: Vec::new(),
            recovered: reset.is_empty(),
            reset,
            cursor,
        });
    }
    let feed_clause = match req.feed {
        None => String::new(),
        Some(mode) => {
            let audience = match mode {
                FeedMode::All => {
                    "(feed_public = TRUE OR feed_actor IN (SELECT followee_id FROM follows WHERE follower_id = $1))"
                }
                FeedMode::Following => {
                    "feed_actor IN (SELECT followee_id FROM follows WHERE follower_id = $1)"
                }
            };
            format!(
                " UNION ALL SELECT id FROM events WHERE kind = 'feed' AND id > $3 AND id <= $4 \
                 AND feed_actor <> $1 AND {audience}"
            )
        }
    };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE id IN (\
           SELECT event_id FROM event_targets WHERE target = $2 AND event_id > $3 AND event_id <= $4 \
           UNION ALL SELECT t.event_id FROM room_members m JOIN event_targets t \
             ON t.target = 'chat:' || m.room_id \
             WHERE m.user_id = $1 AND t.event_id > $3 AND t.event_id <= $4\
           {feed_clause}) ORDER BY id LIMIT $5"
    );
    let limit = i64::try_from(req.limit.saturating_add(1)).unwrap_or(i64::MAX);
    let rows = db
        .query_all_raw(stmt(
            backend,
            &sql,
            vec![
                req.user_id.into(),
                super::super::realtime::rooms::user(req.user_id).into(),
                db_id(after),
                db_id(req.through),
                Value::BigInt(Some(limit)),
            ],
        ))
        .await?;
    if rows.len() > req.limit {
        return Ok(reset_all(cursor));
    }
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let e = decode(row)?;
        if e.kind.is_some_and(|k| reset.contains(&k)) {
            continue;
        }
        events.push(e);
    }
    reset.sort();
    Ok(Replay {
        events,
        recovered: reset.is_empty(),
        reset,
        cursor,
    })
}

/// Deletes up to `batch` events of `kind` created before `before_ms` (Unix ms), oldest
/// first, with their targets, and raises the kind's purge mark. Returns how many went.
pub async fn purge(
    tx: &impl ConnectionTrait,
    kind: Kind,
    before_ms: i64,
    batch: u64,
) -> Result<u64, DbErr> {
    let backend = tx.get_database_backend();
    let row = tx
        .query_one_raw(stmt(
            backend,
            "SELECT MAX(id) AS max_id, COUNT(*) AS n FROM (SELECT id FROM events \
             WHERE kind = $1 AND created_at < $2 ORDER BY id LIMIT $3) AS old",
            vec![
                kind.as_str().into(),
                Value::BigInt(Some(before_ms)),
                Value::BigInt(Some(i64::try_from(batch).unwrap_or(i64::MAX))),
            ],
        ))
        .await?;
    let Some(row) = row else { return Ok(0) };
    let max: Option<i64> = row.try_get("", "max_id")?;
    let Some(max) = max else { return Ok(0) };
    let n: i64 = row.try_get("", "n")?;
    tx.execute_raw(stmt(
        backend,
        "DELETE FROM event_targets WHERE event_id IN \
         (SELECT id FROM events WHERE kind = $1 AND id <= $2)",
        vec![kind.as_str().into(), Value::BigInt(Some(max))],
    ))
    .await?;
    tx.execute_raw(stmt(
        backend,
        "DELETE FROM events WHERE kind = $1 AND id <= $2",
        vec![kind.as_str().into(), Value::BigInt(Some(max))],
    ))
    .await?;
    let updated = tx
        .execute_raw(stmt(
            backend,
            "UPDATE event_purges SET through_id = $2 WHERE kind = $1 AND through_id < $2",
            vec![kind.as_str().into(), Value::BigInt(Some(max))],
        ))
        .await?;
    if updated.rows_affected() == 0 {
        let exists = tx
            .query_one_raw(stmt(
                backend,
                "SELECT through_id FROM event_purges WHERE kind = $1",
                vec![kind.as_str().into()],
            ))
            .await?;
        if exists.is_none() {
            tx.execute_raw(stmt(
                backend,
                "INSERT INTO event_purges (kind, through_id) VALUES ($1, $2)",
                vec![kind.as_str().into(), Value::BigInt(Some(max))],
            ))
            .await?;
        }
    }
    Ok(u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod placeholder_tests {
    use super::sqlite_placeholders;

    #[test]
    fn sqlite_placeholders_are_plain_when_in_order_and_numbered_otherwise() {
        assert_eq!(
            sqlite_placeholders("INSERT INTO t VALUES ($1, $2), ($3, $4)"),
            "INSERT INTO t VALUES (?, ?), (?, ?)"
        );
        assert_eq!(
            sqlite_placeholders("SELECT x FROM t WHERE a = $1 AND b > $2 AND c <> $1"),
            "SELECT x FROM t WHERE a = ?1 AND b > ?2 AND c <> ?1"
        );
        assert_eq!(sqlite_placeholders("SELECT $2, $1"), "SELECT ?2, ?1");
        assert_eq!(sqlite_placeholders("SELECT 1"), "SELECT 1");
    }
}
