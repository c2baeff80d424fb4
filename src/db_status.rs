//! Whether the database answers, as the background prober last saw it. While it does not,
//! calls that need it are refused at once ([`DbStatus::check`]) instead of each waiting out
//! the pool's acquire timeout, and queues (the presence pipeline) do not stall behind those
//! waits. The prober flips it back as soon as a probe succeeds, so service resumes by itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sea_orm::DatabaseConnection;

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

/// One bounded probe: a trivial query that must answer within `timeout`.
pub async fn probe(db: &DatabaseConnection, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, crate::db::ping(db)).await,
        Ok(true)
    )
}
