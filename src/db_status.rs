//! Whether the database answers, as the background prober last saw it. While it does not,
//! calls that need it are refused at once ([`DbStatus::check`]) instead of each waiting out
//! the pool's acquire timeout, and queues (the presence pipeline) do not stall behind those
//! waits. The prober flips it back as soon as a probe succeeds, so service resumes by itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};

use crate::db::Waits;
use crate::error::{AppError, AppResult};

/// The database's last known state.
#[derive(Default)]
pub struct DbStatus {
    down: AtomicBool,
}

impl DbStatus {
    /// Whether the last probe failed.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    /// Records a probe's outcome, logging transitions once.
    pub fn record(&self, up: bool) {
        let was_down = self.down.swap(!up, Ordering::SeqCst);
        match (was_down, up) {
            (false, false) => tracing::error!("database unreachable: refusing calls that need it"),
            (true, true) => tracing::info!("database reachable again"),
            _ => {}
        }
    }

    /// Refuses at once while the database is known to be down.
    pub fn check(&self) -> AppResult<()> {
        if self.is_down() {
            Err(AppError::Unavailable(
                "the database is unavailable; retry shortly".into(),
            ))
        } else {
            Ok(())
        }
    }
}

/// Asks the database a trivial query from a thread of its own, so the answer measures the
/// database and not this process. Timed on the node's own async workers, a probe measured how
/// long they took to get back to it: in a burst of 10,000 connects every wakeup waited seconds
/// in their run queue, the 1 s probe "timed out" while the database answered in microseconds,
/// and thousands of connecting sockets were turned away "the database is unavailable". The
/// prober thread runs a single-threaded runtime that does nothing else, so its timeout only
/// fires when the query really takes that long; the caller gets the verdict whenever its own
/// runtime comes back to it.
#[derive(Clone, Debug)]
pub struct Prober {
    requests: mpsc::Sender<Request>,
}

/// What the prober thread is asked.
#[derive(Debug)]
enum Request {
    /// Probe, and send whether the database answered.
    Probe(oneshot::Sender<bool>),
    /// Close the probe connection (shutdown); later probes answer down.
    Close(oneshot::Sender<()>),
}

/// Probe requests that may wait for the prober thread; later callers wait for room. Requests
/// that arrive while a probe runs share its answer, so a flood of `/health` costs one probe
/// per round trip, not one each.
const PENDING_PROBES: usize = 256;

impl Prober {
    /// Opens the probe connection ([`crate::db::probe_connection`]) on a new thread; fails as
    /// opening it fails. The thread ends when the last clone is dropped.
    pub async fn start(url: &str, waits: Waits, timeout: Duration) -> anyhow::Result<Self> {
        let (requests, mut pending) = mpsc::channel::<Request>(PENDING_PROBES);
        let (opened, opening) = oneshot::channel::<anyhow::Result<()>>();
        let url = url.to_owned();
        std::thread::Builder::new()
            .name("db-prober".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = opened.send(Err(e.into()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let db = match crate::db::probe_connection(&url, waits).await {
                        Ok(db) => db,
                        Err(e) => {
                            let _ = opened.send(Err(e));
                            return;
                        }
                    };
                    let _ = opened.send(Ok(()));
                    serve(db, &mut pending, timeout).await;
                });
            })
            .context("starting the database prober thread")?;
        opening
            .await
            .context("the database prober thread stopped while opening its connection")??;
        Ok(Self { requests })
    }

    /// Whether the database answered a trivial query within the probe timeout.
    pub async fn probe(&self) -> bool {
        let (answer, verdict) = oneshot::channel();
        if self.requests.send(Request::Probe(answer)).await.is_err() {
            return false;
        }
        verdict.await.unwrap_or(false)
    }

    /// Closes the probe connection, at shutdown; every later probe answers down.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.requests.send(Request::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// The prober thread's loop: answers requests until every [`Prober`] is dropped.
async fn serve(db: DatabaseConnection, pending: &mut mpsc::Receiver<Request>, timeout: Duration) {
    let mut db = Some(db);
    while let Some(request) = pending.recv().await {
        let first = match request {
            Request::Probe(first) => first,
            Request::Close(done) => {
                close(&mut db, done).await;
                continue;
            }
        };
        let up = match &db {
            Some(db) => probe(db, timeout).await,
            None => false,
        };
        let _ = first.send(up);
        // Who asked meanwhile shares this answer.
        while let Ok(request) = pending.try_recv() {
            match request {
                Request::Probe(waiting) => {
                    let _ = waiting.send(up);
                }
                Request::Close(done) => close(&mut db, done).await,
            }
        }
    }
    if let Some(db) = db {
        let _ = db.close().await;
    }
}

/// Closes the probe connection (once) and says so.
async fn close(db: &mut Option<DatabaseConnection>, done: oneshot::Sender<()>) {
    if let Some(db) = db.take() {
        let _ = db.close().await;
    }
    let _ = done.send(());
}

/// One bounded probe: a trivial query that must answer within `timeout`.
async fn probe(db: &DatabaseConnection, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, crate::db::ping(db)).await,
        Ok(true)
    )
}
