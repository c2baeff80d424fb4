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
//! (single autocommit statements), [`WritePath::begin`] or [`WritePath::transaction`]. This is
//! also where group commit can go later: a queue of message inserts drained into one
//! transaction by whoever holds the turn, without changing the callers of the other methods.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;

use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, TransactionError, TransactionTrait,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The shared write path; clone it into every service (clones share the gate).
#[derive(Clone, Debug)]
pub struct WritePath {
    db: DatabaseConnection,
    /// One permit, on SQLite only. Tokio's semaphore is fair: waiters get it in arrival order,
    /// so a burst of writes drains in order and none waits behind later ones.
    gate: Option<Arc<Semaphore>>,
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
        let gate =
            (db.get_database_backend() == DbBackend::Sqlite).then(|| Arc::new(Semaphore::new(1)));
        Self { db, gate }
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
        let tx = self.db.begin().await?;
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
        self.db.transaction(callback).await
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

    use sea_orm::{ConnectionTrait, Database};

    use super::WritePath;

    async fn sqlite() -> WritePath {
        let db = Database::connect("sqlite::memory:")
            .await
            .unwrap_or_else(|e| panic!("opening SQLite: {e}"));
        WritePath::new(db)
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
