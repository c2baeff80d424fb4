//! The event pipeline: every server→client event is built once as an [`Event`], journaled when
//! it reflects persisted state (so a client that was away can resume from its cursor), ordered
//! by its journal id, and delivered by one dispatcher per node to every transport — Socket.IO
//! rooms, SSE streams and long-poll sessions — so no transport keeps its own emit table.
//!
//! Design notes (ordering, gap filling, the resume handoff) are in `docs/delivery.md`.

pub mod journal;
pub mod model;
pub mod sessions;

pub use model::{Cursor, Event, Kind};

/// TEMP stub of helper A's pipeline API (replaced by the merge of pA).
pub struct Pipeline;

impl Pipeline {
    pub fn stub() -> Self {
        Pipeline
    }
    pub async fn in_order<R: Send + 'static>(
        &self,
        f: impl FnOnce(u64) -> R + Send + 'static,
    ) -> Result<R, crate::error::AppError> {
        Ok(f(0))
    }
    pub fn epoch(&self) -> &str {
        "stub"
    }
    pub fn node_id(&self) -> &str {
        "stub"
    }
}
