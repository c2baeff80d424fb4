//! TEMP stub of helper A's journal API.
use super::{Cursor, Event, Kind};
use crate::error::AppError;

pub enum FeedMode {
    All,
    Following,
}
pub struct ReplayRequest<'a> {
    pub user_id: &'a str,
    pub after: Option<&'a str>,
    pub through: u64,
    pub feed: Option<FeedMode>,
    pub limit: usize,
}
pub struct Replay {
    pub events: Vec<Event>,
    pub recovered: bool,
    pub reset: Vec<Kind>,
    pub cursor: Cursor,
}
pub async fn replay(
    _db: &sea_orm::DatabaseConnection,
    req: ReplayRequest<'_>,
) -> Result<Replay, AppError> {
    Ok(Replay {
        events: vec![],
        recovered: req.after.is_some(),
        reset: vec![],
        cursor: Cursor {
            epoch: "stub".into(),
            id: req.through,
        },
    })
}
