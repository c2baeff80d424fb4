//! Database connection and migrations, for SQLite and PostgreSQL.

use std::time::Duration;

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, QueryResult,
    Statement, Values,
};

/// Any constant shared by every node: the key of the PostgreSQL advisory lock that lets one
/// node at a time run migrations.
const MIGRATION_LOCK: i64 = 0x5357_4954_4348; // "SWITCH"

/// How long a caller waits for a pooled connection unless configured (`DB_ACQUIRE_TIMEOUT_MS`).
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a SQLite connection waits for a lock held by another process, unless configured
/// (`SQLITE_BUSY_TIMEOUT_MS`).
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the pool lets a caller wait. The acquire timeout is short, so a database that stops
/// answering turns requests into prompt errors instead of a pile of waiting ones; SQLite's busy
/// timeout covers locks held by other processes (this process's writers queue on its
/// [`crate::write_path::WritePath`]).
#[derive(Clone, Copy, Debug)]
pub struct Waits {
    pub acquire: Duration,
    pub busy: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Self {
            acquire: DEFAULT_ACQUIRE_TIMEOUT,
            busy: DEFAULT_BUSY_TIMEOUT,
        }
    }
}

/// Opens the pool for `url` and brings the schema up to date.
pub async fn connect_and_migrate(url: &str) -> anyhow::Result<DatabaseConnection> {
    connect_and_migrate_with(url, Waits::default()).await
}

/// [`connect_and_migrate`] with the pool's waits.
pub async fn connect_and_migrate_with(
    url: &str,
    waits: Waits,
) -> anyhow::Result<DatabaseConnection> {
    let db = connect_with(url, waits).await?;
    migrate(url, waits).await?;
    Ok(db)
}

/// A single connection of its own, for migrations. They must not wander across a pool: SQLite
/// checks DDL against a connection's cached schema without asking whether it is current, so a
/// `CREATE INDEX` on a connection that last ran before another one's `DROP` is refused ("index
/// … already exists"); and PostgreSQL's advisory lock belongs to one session.
pub async fn migration_session(url: &str, waits: Waits) -> anyhow::Result<DatabaseConnection> {
    open(url, waits, 1)
        .await
        .context("opening the migration session")
}

/// Runs pending migrations on a [`migration_session`]. Nodes of a cluster start together, so on
/// PostgreSQL they queue on an advisory lock.
async fn migrate(url: &str, waits: Waits) -> anyhow::Result<()> {
    let session = migration_session(url, waits).await?;
    let result = if session.get_database_backend() == DbBackend::Postgres {
        migrate_postgres(&session).await
    } else {
        migrate_sqlite(&session).await
    };
    let _ = session.close().await;
    result
}

async fn migrate_postgres(session: &DatabaseConnection) -> anyhow::Result<()> {
    let lock = |sql: &str| {
        Statement::from_sql_and_values(DbBackend::Postgres, sql, [MIGRATION_LOCK.into()])
    };
    session
        .execute_raw(lock("SELECT pg_advisory_lock($1)"))
        .await
        .context("taking the migration lock")?;
    let result = Migrator::up(session, None)
        .await
        .context("running migrations");
    let _ = session
        .execute_raw(lock("SELECT pg_advisory_unlock($1)"))
        .await;
    result
}

/// SQLite has no advisory locks: a process that loses the race to another one migrating the
/// same file retries once the other is done, finding the migrations applied.
async fn migrate_sqlite(session: &DatabaseConnection) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match Migrator::up(session, None).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::debug!(attempt, error = %e, "migration raced another process; retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(e).context("running migrations"),
        }
    }
}

/// Opens the pool with the default waits.
pub async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    connect_with(url, Waits::default()).await
}

/// Opens the pool. SQLite gets WAL, and its file is created on first start whatever form the
/// URL takes (see [`crate::sqlite_url`]).
pub async fn connect_with(url: &str, waits: Waits) -> anyhow::Result<DatabaseConnection> {
    open(url, waits, pool_size(url)).await
}

/// Connections in the app's pool for `url`: SQLite serves its readers from a few (one writer
/// at a time, see [`writer`]), PostgreSQL from more.
pub fn pool_size(url: &str) -> u32 {
    if is_sqlite(url) { 8 } else { 32 }
}

fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// SQLite's page cache of the writer connection, in KiB (each pooled reader keeps SQLite's
/// default 2 MiB): the tables and indexes every message touches stay in it between commits.
const WRITER_CACHE_KIB: u32 = 16 * 1024;

/// The writer's WAL auto-checkpoint threshold, in pages, while [`checkpointer`] runs: only a
/// safety net for when it cannot keep up. SQLite's default (1,000) is kept without it.
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 8_000;

/// On SQLite, the one connection every write uses ([`crate::write_path::WritePath`]); `None`
/// on PostgreSQL, whose writes share the pool. Open it after migrating. A profile of the
/// persist bench showed what each of its settings removes from the write path:
///
/// - **One connection.** A connection's page cache is only valid while no other connection
///   writes; when the write turn went to whichever pooled connection was free, each commit
///   found a cache another connection had made stale and re-read the pages it was about to
///   change. The same connection also keeps the hot statements prepared.
/// - **`temp_store = MEMORY`.** A multi-row statement inside a transaction keeps a statement
///   journal, which SQLite spills to a temporary file past 64 KiB: a batch of messages wrote
///   its pages there (about an eighth of the SQLite threads' time was those `pwrite`s).
/// - **Checkpoints elsewhere** (with `background_checkpoints`): SQLite checkpoints the WAL in
///   the commit that crosses 1,000 pages, with an `fsync`, while every writer waits (another
///   fifth of that time). [`checkpointer`] does it every `SQLITE_CHECKPOINT_INTERVAL_MS` on a
///   pooled connection, concurrently with the writer.
pub async fn writer(
    url: &str,
    waits: Waits,
    background_checkpoints: bool,
) -> anyhow::Result<Option<DatabaseConnection>> {
    if !is_sqlite(url) {
        return Ok(None);
    }
    let writer = Writer {
        autocheckpoint_pages: background_checkpoints.then_some(WRITER_AUTOCHECKPOINT_PAGES),
    };
    open_with(url, waits, 1, Some(writer))
        .await
        .context("opening the SQLite writer connection")
        .map(Some)
}

/// What [`writer`] sets on its connection beyond [`WRITER_CACHE_KIB`] and in-memory temp
/// storage.
#[derive(Clone, Copy, Debug)]
struct Writer {
    /// `None`: SQLite's own threshold.
    autocheckpoint_pages: Option<u32>,
}

/// A pool of one connection for the database prober and `/health`, used on the prober's own
/// thread ([`crate::db_status::Prober`]). Probing through the app's pool measured how busy the
/// pool was, not whether the database answers: in a burst of 10,000 connects every pooled
/// connection was taken by session reads, the probe waited past its timeout, the database was
/// declared unreachable, and 29 % of the sockets were refused "the database is unavailable"
/// while it answered every query.
pub async fn probe_connection(url: &str, waits: Waits) -> anyhow::Result<DatabaseConnection> {
    open(url, waits, 1)
        .await
        .context("opening the database probe connection")
}

/// Checkpoints the SQLite WAL every `SQLITE_CHECKPOINT_INTERVAL_MS` (never when it is 0, nor on
/// PostgreSQL), `PASSIVE`: it copies what no reader still needs and never blocks the writer.
/// See [`writer`].
///
/// Often and small rather than rarely and large: at 500 one-message commits a second, a
/// checkpoint every second copied and synced a second's worth of WAL (megabytes) in one go,
/// and the commits around it waited (per-second ack p99 20–48 ms, against 6–12 ms with a
/// checkpoint every 100 ms; `bench/RESULTS.md`). On an idle database a checkpoint finds
/// nothing to copy and returns at once.
pub async fn checkpointer(core: std::sync::Arc<crate::state::Core>) {
    let every = core.config.sqlite_checkpoint_interval_ms;
    if every == 0 || core.db.get_database_backend() != DbBackend::Sqlite {
        return;
    }
    tracing::info!(task = "sqlite_checkpointer", every_ms = every, "started");
    let mut tick = tokio::time::interval(Duration::from_millis(every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = core.shutdown.cancelled() => break,
        }
        let checkpoint =
            Statement::from_string(DbBackend::Sqlite, "PRAGMA wal_checkpoint(PASSIVE)");
        match core.db.query_one_raw(checkpoint).await {
            // Its row: busy, frames in the WAL, frames copied.
            Ok(Some(row)) => tracing::trace!(
                task = "sqlite_checkpointer",
                wal = row.try_get_by_index::<i64>(1).ok(),
                copied = row.try_get_by_index::<i64>(2).ok(),
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(task = "sqlite_checkpointer", error = %e, "checkpoint failed"),
        }
    }
    tracing::info!(task = "sqlite_checkpointer", "stopped");
}

/// Opens `max_connections` connections with the options every connection of this server gets.
async fn open(url: &str, waits: Waits, max_connections: u32) -> anyhow::Result<DatabaseConnection> {
    open_with(url, waits, max_connections, None).await
}

/// [`open`], with the writer's settings when given.
async fn open_with(
    url: &str,
    waits: Waits,
    max_connections: u32,
    writer: Option<Writer>,
) -> anyhow::Result<DatabaseConnection> {
    let Waits {
        acquire: acquire_timeout,
        busy: busy_timeout,
    } = waits;
    let sqlite_target = if is_sqlite(url) {
        let target = crate::sqlite_url::parse(url)?;
        crate::sqlite_url::prepare(&target)?;
        Some(target)
    } else {
        None
    };
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(acquire_timeout)
        .sqlx_logging(false);
    if let Some(target) = &sqlite_target {
        // sqlx pings a connection before each checkout, and on SQLite a ping is a round trip to
        // the connection's worker thread: a thread wake-up each way, for a peer (the library,
        // in process) that cannot have hung up. Every pooled call paid it, and every group
        // commit on the writer. PostgreSQL keeps the check: there a server can go away.
        options.test_before_acquire(false);
        let create = target.create;
        options.map_sqlx_sqlite_opts(move |o| {
            let o = o
                .create_if_missing(create)
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(busy_timeout)
                .foreign_keys(true);
            let Some(writer) = writer else { return o };
            let o = o
                // A negative cache_size is in KiB.
                .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
                .pragma("temp_store", "MEMORY");
            match writer.autocheckpoint_pages {
                Some(pages) => o.pragma("wal_autocheckpoint", pages.to_string()),
                None => o,
            }
        });
    }
    let db = Database::connect(options)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    Ok(db)
}

/// Whether the database answers a trivial query.
pub async fn ping(db: &DatabaseConnection) -> bool {
    db.execute_unprepared("SELECT 1").await.is_ok()
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A statement whose rows travel as one JSON array parameter (`rows` serialised), read back
/// with `json_each` on SQLite and `json_array_elements` on PostgreSQL: its text is the same for
/// every batch, so the driver prepares it once per connection, where `VALUES (?, …), (?, …)`
/// had a text (and a preparation) per batch size. `sqlite` and `postgres` are the two texts.
pub fn json_rows(
    backend: DbBackend,
    sqlite: &str,
    postgres: &str,
    rows: &impl serde::Serialize,
) -> Result<Statement, DbErr> {
    Ok(json_statement(backend, sqlite, postgres, json_param(rows)?))
}

/// [`json_rows`] for rows already encoded ([`json_param`]), e.g. kept in a prepared batch.
pub fn json_statement(backend: DbBackend, sqlite: &str, postgres: &str, json: String) -> Statement {
    let sql = match backend {
        DbBackend::Postgres => postgres,
        _ => sqlite,
    };
    Statement::from_sql_and_values(backend, sql, [json.into()])
}

/// Rows as the one JSON array parameter of a [`json_rows`] statement.
pub fn json_param(rows: &impl serde::Serialize) -> Result<String, DbErr> {
    // Never an empty array in its place: that would store nothing and report success.
    serde_json::to_string(rows).map_err(|e| DbErr::Custom(format!("encoding a batch as JSON: {e}")))
}

/// Runs `statements` in order on `conn` (in the caller's transaction) and returns every row
/// they produce, in order. On SQLite they go to the driver's worker thread as one script, one
/// hand-off instead of one per statement: each hand-off wakes two threads, which costs more
/// than a small statement's work (a one-message group commit made nine). sqlx binds a script's
/// unnumbered `?` placeholders in order across its statements; a statement with numbered ones
/// (`?1`, `$1`) could not share the numbering, so its presence makes this run them one by one.
/// PostgreSQL always runs them one by one (its extended protocol prepares one statement at a
/// time).
pub async fn run_all(
    conn: &impl ConnectionTrait,
    statements: Vec<Statement>,
) -> Result<Vec<QueryResult>, DbErr> {
    let backend = conn.get_database_backend();
    if backend == DbBackend::Sqlite && statements.len() > 1 && statements.iter().all(plain_sqlite) {
        let mut sql = String::new();
        let mut values = Vec::new();
        for statement in statements {
            if !sql.is_empty() {
                sql.push_str(";\n");
            }
            sql.push_str(&statement.sql);
            values.extend(statement.values.map(|v| v.0).unwrap_or_default());
        }
        return conn
            .query_all_raw(Statement::from_sql_and_values(backend, sql, Values(values)))
            .await;
    }
    let mut rows = Vec::new();
    for statement in statements {
        rows.extend(conn.query_all_raw(statement).await?);
    }
    Ok(rows)
}

/// Whether a SQLite statement binds only unnumbered `?` placeholders (no `?NNN`, `$n`, `:name`
/// or `@name`; texts here never hold those characters in literals, which at worst would make
/// [`run_all`] take the slower way).
fn plain_sqlite(statement: &Statement) -> bool {
    let sql = statement.sql.as_bytes();
    !sql.iter().enumerate().any(|(i, &c)| match c {
        b'?' => sql.get(i + 1).is_some_and(u8::is_ascii_digit),
        b'$' | b':' | b'@' => true,
        _ => false,
    })
}

/// An in-memory SQLite database with `schema` (a script; empty for none) run on it, for unit
/// tests of statements.
#[cfg(test)]
pub(crate) async fn memory_sqlite(schema: &str) -> DatabaseConnection {
    let db = Database::connect("sqlite::memory:")
        .await
        .unwrap_or_else(|e| panic!("opening SQLite: {e}"));
    if !schema.is_empty() {
        db.execute_unprepared(schema)
            .await
            .unwrap_or_else(|e| panic!("the schema: {e}"));
    }
    db
}

#[cfg(test)]
mod tests {
    use sea_orm::{DbBackend, Statement};

    use super::{redact, run_all};

    /// A script's values bind in order across its statements, and its rows come back in order:
    /// what the group commit relies on when its statements travel together.
    #[tokio::test]
    async fn a_script_binds_across_statements_and_returns_every_row() {
        let db = super::memory_sqlite("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)").await;
        let sqlite = |sql: &str, values: Vec<sea_orm::Value>| {
            Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
        };
        let script = vec![
            sqlite(
                "INSERT INTO t VALUES (?, ?), (?, ?)",
                vec!["a".into(), 1.into(), "b".into(), 2.into()],
            ),
            sqlite(
                "UPDATE t SET v = v + ? WHERE k = ? RETURNING v",
                vec![10.into(), "b".into()],
            ),
            sqlite(
                "SELECT v FROM t WHERE k = ? OR v = ? ORDER BY k",
                vec!["a".into(), 12.into()],
            ),
        ];
        let values = |rows: Vec<sea_orm::QueryResult>| -> Vec<i64> {
            rows.iter()
                .map(|r| r.try_get_by_index(0).expect("v"))
                .collect()
        };
        assert_eq!(
            values(run_all(&db, script).await.expect("the script")),
            [12, 1, 12]
        );
        // Numbered placeholders cannot share a script's numbering: run one by one, still right.
        let mixed = vec![
            sqlite(
                "UPDATE t SET v = v + ? WHERE k = ?",
                vec![1.into(), "a".into()],
            ),
            sqlite("SELECT v FROM t WHERE k = ?1 AND ?1 = k", vec!["a".into()]),
        ];
        assert_eq!(values(run_all(&db, mixed).await.expect("one by one")), [2]);
    }

    #[test]
    fn redact_hides_password_only() {
        assert_eq!(
            redact("postgres://sb:secret@db:5432/sb"),
            "postgres://sb:***@db:5432/sb"
        );
        assert_eq!(
            redact("sqlite://switchboard.db?mode=rwc"),
            "sqlite://switchboard.db?mode=rwc"
        );
    }
}
