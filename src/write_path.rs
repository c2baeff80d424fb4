//! The one way writes reach the database.
//!
//! SQLite lets one connection write at a time. A connection that finds the write lock taken
//! waits in SQLite's busy handler, which sleeps and retries in steps of 1 to 100 ms, so under
//! mixed concurrent writes (connect upserts, receipts, notifications, messages) the unlucky
//! writer wakes tens of milliseconds after the lock was free and p99 jumps. Instead, every
//! write of every service takes its turn here first: a one-permit FIFO semaphore, shared by all
//! services, hands the turn to the next waiter the moment the previous write commits. Writers
//! of this process therefore never meet each other inside SQLite; the busy timeout only matters
//! when another process writes the same file (`SQLITE_BUSY_TIMEOUT_MS`). The turn is taken
//! before a pooled connection is borrowed, so queued writers do not starve readers of
//! connections.
//!
//! On PostgreSQL there is no gate: taking a turn is free and writes run concurrently, row
//! locks ordering the ones that touch the same rows.
//!
//! Services keep a plain [`DatabaseConnection`] for reads; writes go through [`WritePath::turn`]
//! (single autocommit statements), [`WritePath::begin`] or [`WritePath::transaction`].
//!
//! Chat messages, the one write that comes in thousands per second, are group-committed
//! ([`WritePath::insert_message`]): each insert joins a queue, and whoever gets the turn next
//! drains the whole queue (up to [`MAX_BATCH`]) into one transaction of a few statements
//! ([`crate::domain::chat::prepare_batch`]; the writes after the seqs are taken go in one call:
//! a script on SQLite, one statement on PostgreSQL), while the messages that arrive meanwhile
//! queue for the next one. A commit costs about the same for one message as for a hundred, so
//! under load the cost per message falls instead of the queue growing. Each caller still gets
//! its answer only after the transaction holding its message committed. A caller that gave up
//! (its future dropped) before its batch started is skipped, so nothing it did not wait for is
//! stored. If a batch fails, its messages are retried one transaction each, so one bad message
//! (a deleted room, a concurrent duplicate on another node) fails alone.
//!
//! A message is announced in the same transaction: the `chat:new_message` event built from the
//! stored row (its seq is only known then) is appended to the event journal before the commit,
//! so a message is stored if and only if its event is journaled. Two commits (message, then
//! event) left a window where a crash stored the message but never announced it, and the
//! client's retry, answered as a duplicate, announced nothing either. It also halves the
//! commits per message.
//!
//! On PostgreSQL a separate one-permit gate serialises this node's message batches (other
//! writes stay concurrent); batches of different nodes order themselves on the rooms' row locks,
//! taken in room id order so two batches never deadlock.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use entity::message;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionError, TransactionOptions, TransactionTrait,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::domain::chat::{Inserted, batch_sql, prepare_batch};
use crate::pipeline::{Event, journal};

/// Builds the event that announces a stored message (`None`: nothing to announce). Shared, so
/// a batch that fails and is retried one message per transaction builds it again.
pub type Announce = Arc<dyn Fn(&message::Model) -> Option<Event> + Send + Sync>;

/// Fired once a message insert has its place in the group-commit queue: messages queued
/// later get later seqs in their rooms and commit in the same batch or a later one.
pub type Queued = oneshot::Sender<()>;

/// A message insert's outcome: the row, and the event journaled with it (its id set), which
/// the caller hands to the pipeline for delivery. `None` for a retry (announced the first
/// time) or an insert without an [`Announce`].
#[derive(Debug)]
pub struct Committed {
    pub inserted: Inserted,
    pub event: Option<Event>,
}

/// Most messages one group commit takes; the rest wait for the next. Bounds the statements'
/// sizes (12 bound values per message: well under SQLite's and PostgreSQL's limits).
pub const MAX_BATCH: usize = 256;

/// The shared write path; clone it into every service (clones share the gate).
#[derive(Clone, Debug)]
pub struct WritePath {
    /// Where writes run: on SQLite the dedicated writer connection when one was given
    /// ([`crate::db::writer`]), else the pool.
    db: DatabaseConnection,
    /// One permit, on SQLite only. Tokio's semaphore is fair: waiters get it in arrival order,
    /// so a burst of writes drains in order and none waits behind later ones.
    gate: Option<Arc<Semaphore>>,
    /// Message inserts waiting for a group commit.
    messages: Arc<MessageQueue>,
}

/// The group-commit queue of message inserts.
#[derive(Debug)]
struct MessageQueue {
    /// Waiting inserts, oldest first. Only ever locked for a push or a drain.
    jobs: Mutex<Vec<Job>>,
    /// On PostgreSQL, one batch of this node at a time (SQLite batches take the shared gate).
    batch_gate: Option<Arc<Semaphore>>,
}

/// One queued insert and where its answer goes.
struct Job {
    row: message::Model,
    announce: Option<Announce>,
    reply: oneshot::Sender<Result<Committed, DbErr>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("row", &self.row.id)
            .field("announce", &self.announce.is_some())
            .finish()
    }
}

/// The right to write, held until dropped: single statements run on it in autocommit.
pub struct Turn {
    db: DatabaseConnection,
    _permit: Option<OwnedSemaphorePermit>,
}

/// A write transaction holding the turn until it commits or is dropped (rolled back).
pub struct WriteTx {
    // Declared first so it is dropped (rolled back) before the permit is released.
    tx: DatabaseTransaction,
    _permit: Option<OwnedSemaphorePermit>,
}

impl WritePath {
    /// Gated on SQLite, free on PostgreSQL.
    pub fn new(db: DatabaseConnection) -> Self {
        let sqlite = db.get_database_backend() == DbBackend::Sqlite;
        let gate = sqlite.then(|| Arc::new(Semaphore::new(1)));
        let messages = Arc::new(MessageQueue {
            jobs: Mutex::new(Vec::new()),
            batch_gate: (!sqlite).then(|| Arc::new(Semaphore::new(1))),
        });
        Self { db, gate, messages }
    }

    /// Runs every write on `writer` (on SQLite, the one connection of [`crate::db::writer`])
    /// instead of the pool the path was made with.
    pub fn with_writer(mut self, writer: Option<DatabaseConnection>) -> Self {
        if let Some(writer) = writer {
            self.db = writer;
        }
        self
    }

    /// Stores a new message with its room's next seq, group-committed with whatever other
    /// messages are queued: see the module documentation. `row.seq` is ignored (assigned
    /// here). Answers after the commit: the stored row, or the existing message with the same
    /// `(room, sender, client_message_id)` when this is a retry. With `announce`, the event it
    /// builds is journaled in the same transaction. `queued` fires once the insert is queued.
    pub async fn insert_message(
        &self,
        row: message::Model,
        announce: Option<Announce>,
        queued: Option<Queued>,
    ) -> Result<Committed, DbErr> {
        let (reply, mut answer) = oneshot::channel();
        self.lock_jobs().push(Job {
            row,
            announce,
            reply,
        });
        if let Some(queued) = queued {
            let _ = queued.send(());
        }
        // Either an earlier holder of the turn takes our insert along, or we get the turn and
        // take it (and everyone queued behind it) ourselves.
        let permit = tokio::select! {
            biased;
            done = &mut answer => return done.unwrap_or_else(|_| Err(abandoned())),
            permit = self.batch_permit() => permit?,
        };
        let jobs = {
            let mut queue = self.lock_jobs();
            let take = queue.len().min(MAX_BATCH);
            queue.drain(..take).collect::<Vec<_>>()
        };
        if !jobs.is_empty() {
            self.run_batch(jobs).await;
        }
        drop(permit);
        answer.await.unwrap_or_else(|_| Err(abandoned()))
    }

    /// Message inserts queued for the next group commit (tests and diagnostics).
    pub fn queued_messages(&self) -> usize {
        self.lock_jobs().len()
    }

    fn lock_jobs(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        // A panic while holding this lock cannot leave the Vec half-updated.
        self.messages.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn batch_permit(&self) -> Result<Option<OwnedSemaphorePermit>, DbErr> {
        match &self.messages.batch_gate {
            None => self.permit().await,
            Some(gate) => gate
                .clone()
                .acquire_owned()
                .await
                .map(Some)
                .map_err(|_| DbErr::Custom("the write path is closed".into())),
        }
    }

    /// One transaction for `jobs`; if it fails, one transaction per job.
    async fn run_batch(&self, jobs: Vec<Job>) {
        // Callers that gave up before their batch started are not stored.
        let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
        if jobs.is_empty() {
            return;
        }
        match self.commit_rows(&jobs).await {
            Ok(results) => {
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) if jobs.len() == 1 => {
                if let Some(job) = jobs.into_iter().next() {
                    let _ = job.reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, size = jobs.len(), "message batch failed; one by one");
                for job in jobs {
                    let result = match self.commit_rows(std::slice::from_ref(&job)).await {
                        Ok(mut results) => results.pop().unwrap_or_else(|| Err(abandoned())),
                        Err(e) => Err(e),
                    };
                    let _ = job.reply.send(result);
                }
            }
        }
    }

    /// Inserts the jobs' rows and journals their announcements in one transaction.
    async fn commit_rows(&self, jobs: &[Job]) -> Result<Vec<Result<Committed, DbErr>>, DbErr> {
        let rows: Vec<message::Model> = jobs.iter().map(|j| j.row.clone()).collect();
        let tx = self.open().await?;
        let mut batch = prepare_batch(&tx, rows).await?;
        // The announcements in job order, and which jobs have one.
        let mut events = Vec::new();
        let announced: Vec<bool> = jobs
            .iter()
            .zip(&batch.results)
            .map(|(job, result)| {
                let event = match (&job.announce, result) {
                    (Some(announce), Ok(Inserted::Stored(row))) => announce(row),
                    _ => None,
                };
                let some = event.is_some();
                events.extend(event);
                some
            })
            .collect();
        // The rows, the watermarks and the journal in one call: a script on SQLite, one
        // statement on PostgreSQL. The journal last, so that on PostgreSQL its head's row lock
        // is held only for the commit.
        let backend = tx.get_database_backend();
        if batch.messages.is_some() || !events.is_empty() {
            let rows = match backend {
                DbBackend::Postgres => {
                    let append = (!events.is_empty())
                        .then(|| journal::AppendRows::new(&events))
                        .transpose()?;
                    let commit = batch_sql::commit_postgres(
                        batch.bumps.take(),
                        batch.messages.take(),
                        batch.watermarks.take(),
                        append,
                    );
                    tx.query_all_raw(commit).await?
                }
                _ => {
                    let mut statements = batch.take_statements(backend);
                    statements.extend(journal::append_statements(backend, &events)?);
                    crate::db::run_all(&tx, statements).await?
                }
            };
            journal::assign_ids(&mut events, &rows)?;
        }
        tx.commit().await?;
        let mut events = events.into_iter();
        Ok(batch
            .results
            .into_iter()
            .zip(announced)
            .map(|(result, announced)| {
                result.map(|inserted| Committed {
                    inserted,
                    event: if announced { events.next() } else { None },
                })
            })
            .collect())
    }

    /// Waits for the turn to write (at once on PostgreSQL).
    pub async fn turn(&self) -> Result<Turn, DbErr> {
        Ok(Turn {
            _permit: self.permit().await?,
            db: self.db.clone(),
        })
    }

    /// Waits for the turn, then opens a transaction that keeps it until commit.
    pub async fn begin(&self) -> Result<WriteTx, DbErr> {
        let permit = self.permit().await?;
        let tx = self.open().await?;
        Ok(WriteTx {
            tx,
            _permit: permit,
        })
    }

    /// [`TransactionTrait::transaction`] on the write path: commits when `callback` succeeds,
    /// rolls back when it fails, and holds the turn throughout.
    pub async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c DatabaseTransaction,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let _permit = self.permit().await.map_err(TransactionError::Connection)?;
        let tx = self.open().await.map_err(TransactionError::Connection)?;
        match callback(&tx).await {
            Ok(value) => {
                tx.commit().await.map_err(TransactionError::Connection)?;
                Ok(value)
            }
            Err(e) => {
                tx.rollback().await.map_err(TransactionError::Connection)?;
                Err(TransactionError::Transaction(e))
            }
        }
    }

    /// A transaction on the write connection; on SQLite `BEGIN IMMEDIATE`, holding the file's
    /// write lock from the start. The turn orders this process's writes only: a transaction
    /// that began as a reader and then wanted to write after another process (another node
    /// on the same file, a `sqlite3` shell) had committed failed at once with "database is
    /// locked", where taking the lock first waits for it (`SQLITE_BUSY_TIMEOUT_MS`).
    async fn open(&self) -> Result<DatabaseTransaction, DbErr> {
        let immediate = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        self.db.begin_with_options(immediate).await
    }

    async fn permit(&self) -> Result<Option<OwnedSemaphorePermit>, DbErr> {
        match &self.gate {
            None => Ok(None),
            Some(gate) => gate
                .clone()
                .acquire_owned()
                .await
                .map(Some)
                .map_err(|_| DbErr::Custom("the write path is closed".into())),
        }
    }
}

fn abandoned() -> DbErr {
    DbErr::Custom("the message batch ended without an answer".into())
}

impl Deref for Turn {
    type Target = DatabaseConnection;

    fn deref(&self) -> &DatabaseConnection {
        &self.db
    }
}

impl WriteTx {
    /// Commits, then gives the turn to the next writer.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.tx.commit().await
    }
}

impl Deref for WriteTx {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.tx
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use sea_orm::ConnectionTrait;

    use super::WritePath;

    async fn sqlite() -> WritePath {
        WritePath::new(crate::db::memory_sqlite("").await)
    }

    #[tokio::test]
    async fn writers_take_turns_in_arrival_order() {
        let path = sqlite().await;
        let first = path.turn().await.unwrap();
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..8 {
            let path = path.clone();
            let order = order.clone();
            waiters.push(tokio::spawn(async move {
                let _turn = path.turn().await.unwrap();
                order.lock().unwrap().push(i);
                // Hold the turn across an await: nobody else may get in meanwhile.
                tokio::task::yield_now().await;
                order.lock().unwrap().push(i);
            }));
            // On this single-threaded runtime, yielding runs waiter i up to its queueing
            // before waiter i + 1 is spawned.
            tokio::task::yield_now().await;
        }
        assert!(
            order.lock().unwrap().is_empty(),
            "someone wrote out of turn"
        );
        drop(first);
        for w in waiters {
            w.await.unwrap();
        }
        let expected: Vec<i32> = (0..8).flat_map(|i| [i, i]).collect();
        assert_eq!(*order.lock().unwrap(), expected);
    }

    /// Writes on the read pool compile (sea-orm takes any connection), so this looks for the
    /// usual shapes of one in the services and transports: a write there must take a turn.
    #[test]
    fn no_write_bypasses_the_path() {
        let writes = [
            ".exec(",
            ".exec_without_returning(",
            ".exec_with_returning(",
            ".update(",
        ];
        let writes = writes
            .iter()
            .chain(&[".insert(", ".delete(", ".execute_unprepared("]);
        let pools = ["&self.db)", "&core.db)", "&state.core.db)", "&app.core.db)"];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs")
                    || path.ends_with("db.rs")
                    || path.ends_with("write_path.rs")
                {
                    continue;
                }
                let text: String = std::fs::read_to_string(&path)
                    .unwrap()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                for write in writes.clone() {
                    for pool in pools {
                        if text.contains(&format!("{write}{pool}")) {
                            offenders.push(format!("{}: {write}{pool}", path.display()));
                        }
                    }
                }
                for opener in ["self.db.transaction", "self.db.begin(", "core.db.begin("] {
                    if text.contains(opener) {
                        offenders.push(format!("{}: {opener}", path.display()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "writes outside the write path: {offenders:?}"
        );
    }

    #[tokio::test]
    async fn a_transaction_holds_the_turn_until_it_ends() {
        let path = sqlite().await;
        let tx = path.begin().await.unwrap();
        tx.execute_unprepared("CREATE TABLE t (x INTEGER)")
            .await
            .unwrap();
        let waiting = tokio::spawn({
            let path = path.clone();
            async move { path.turn().await.map(|_| ()) }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !waiting.is_finished(),
            "a turn was given during a transaction"
        );
        tx.commit().await.unwrap();
        waiting.await.unwrap().unwrap();
        // A dropped (rolled back) transaction gives the turn back too.
        drop(path.begin().await.unwrap());
        path.turn().await.unwrap();
    }
}
