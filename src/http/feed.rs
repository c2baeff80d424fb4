//! REST feed routes (contract §7): the caller's feed, trending targets and per-type statistics.
//! Reads only; activities are published through the service API.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use socketioxide::adapter::Adapter;

use super::json::{Json, Query, page_limit};
use crate::auth::AuthUser;
use crate::domain::feed::{FeedQuery, TimeRange, parse_types};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// `/feed`, `/feed/trending` and `/feed/statistics`, for authenticated users.
pub fn router<A: Adapter>() -> Router<AppState<A>> {
    Router::new()
        .route("/feed", get(list::<A>))
        .route("/feed/trending", get(trending::<A>))
        .route("/feed/statistics", get(statistics::<A>))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct FeedParams {
    /// Page size: 1 to 100 (larger values are capped), default 20.
    limit: Option<u64>,
    /// The previous page's `nextCursor`.
    before: Option<String>,
    /// Only actors the caller follows (no public activities of strangers).
    following_only: Option<bool>,
    /// Comma-separated activity types.
    types: Option<String>,
    /// `1h`, `24h`, `7d` or `30d`.
    time_range: Option<String>,
}

impl FeedParams {
    fn into_query(self) -> AppResult<FeedQuery> {
        let time_range = match self.time_range.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(
                TimeRange::parse(raw)
                    .ok_or_else(|| AppError::field("time_range", "must be 1h, 24h, 7d or 30d"))?,
            ),
        };
        let types = match self.types.as_deref() {
            None => None,
            Some(raw) => parse_types(raw)?,
        };
        Ok(FeedQuery {
            limit: page_limit(self.limit)?,
            before: self.before.filter(|b| !b.is_empty()),
            following_only: self.following_only.unwrap_or(false),
            types,
            time_range,
        })
    }
}

async fn list<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Query(params): Query<FeedParams>,
) -> AppResult<Response> {
    let query = params.into_query()?;
    let (items, next) = state.core.feed.list(&user.id, &query).await?;
    Ok(Json(json!({ "items": items, "nextCursor": next })).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TrendingParams {
    /// Page size: 1 to 100 (larger values are capped), default 20.
    limit: Option<u64>,
}

async fn trending<A: Adapter>(
    State(state): State<AppState<A>>,
    _: AuthUser,
    Query(params): Query<TrendingParams>,
) -> AppResult<Response> {
    let items = state.core.feed.trending(page_limit(params.limit)?).await?;
    // A top-N list, not a paginated one: there is never a further page.
    Ok(Json(json!({ "items": items, "nextCursor": null })).into_response())
}

async fn statistics<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
) -> AppResult<Response> {
    let stats = state.core.feed.statistics(&user.id).await?;
    Ok(Json(stats).into_response())
}
