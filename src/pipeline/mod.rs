//! The event pipeline: every server→client event is built once as an [`Event`], journaled when
//! it reflects persisted state (so a client that was away can resume from its cursor), ordered
//! by its journal id, and delivered by one dispatcher per node to every transport — Socket.IO
//! rooms, SSE streams and long-poll sessions — so no transport keeps its own emit table.
//!
//! Design notes (ordering, gap filling, the resume handoff) are in `docs/delivery.md`.

pub mod model;
pub mod sessions;

pub use model::{Cursor, Event, Kind};
