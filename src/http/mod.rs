//! The REST transport: one `router()` per domain, merged here with the cross-cutting layers
//! (CORS, body limit, request metrics and tracing) and a 404 in the contract's error shape.

mod body_limit;
mod chat;

pub use chat::SendBody;
mod etag;
mod feed;
mod health;
mod internal;
pub mod json;
mod notifications;
mod openapi;
mod presence;
mod push;
mod realtime;
mod room_state;

pub use notifications::MarkReadBody;
pub use realtime::{sweep_pollers, transport_counts};

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use socketioxide::adapter::Adapter;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::error::AppError;
use crate::state::AppState;
use json::BodyLimit;

/// Every HTTP route, with its layers. The Socket.IO layer wraps this router in `startup`.
pub fn router<A: Adapter>(state: AppState<A>) -> Router {
    let limit = state.core.config.max_payload_bytes;
    let api = Router::new()
        .merge(chat::router())
        .merge(feed::router())
        .merge(notifications::router())
        .merge(presence::router())
        .merge(push::router())
        .merge(room_state::router())
        // Every user GET is conditional (rooms, history, notifications, preferences, presence,
        // receipts, feed): see `etag`.
        .layer(middleware::from_fn(etag::conditional_get))
        // Streams, polls and actions: never conditional (a stream has no end to hash).
        .merge(realtime::router())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_database::<A>,
        ));
    Router::new()
        .merge(health::router())
        .merge(openapi::router(&state.core.config))
        .merge(crate::demo::router(&state.core.config))
        .nest("/api/v1/realtime", api)
        .nest(
            "/api/v1/internal",
            internal::router().layer(middleware::from_fn_with_state(
                state.clone(),
                require_database::<A>,
            )),
        )
        .fallback(not_found)
        // Outermost first: trace everything, count every answer (405, 400 and 413 included),
        // give 405s the error shape, refuse paths with NUL characters, refuse oversized bodies,
        // then the extractor's own limit (known to it so its 413 can state it).
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    track_request::<A>,
                ))
                .layer(middleware::from_fn(method_not_allowed))
                .layer(middleware::from_fn(reject_nul_path))
                .layer(middleware::from_fn_with_state(
                    BodyLimit(limit),
                    body_limit::refuse_oversized,
                ))
                .layer(axum::extract::DefaultBodyLimit::max(limit))
                .layer(axum::Extension(BodyLimit(limit))),
        )
        .with_state(state)
}

/// Every API call needs the database: while it is known to be down, answer 503 at once
/// instead of letting each request wait out the pool's acquire timeout.
async fn require_database<A: Adapter>(
    State(state): State<AppState<A>>,
    request: Request,
    next: Next,
) -> Response {
    match state.core.db_status.check() {
        Ok(()) => next.run(request).await,
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

/// CORS per `CORS_ORIGINS`: listed origins with credentials, or any origin without.
pub fn cors(config: &Config) -> anyhow::Result<CorsLayer> {
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            "x-api-key".parse()?,
        ])
        .max_age(Duration::from_secs(600));
    if config.cors_origins.is_empty() || config.cors_origins.iter().any(|o| o == "*") {
        return Ok(layer.allow_origin(Any));
    }
    let origins = config
        .cors_origins
        .iter()
        .map(|o| HeaderValue::from_str(o.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(layer
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true))
}

async fn not_found() -> AppError {
    AppError::NotFound("no such route".into())
}

/// axum answers a known path with an unknown method by an empty 405; this gives it the
/// contract's error body, keeping axum's `Allow` header.
async fn method_not_allowed(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let allowed = allow
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .replace(',', ", ");
    let mut shaped =
        AppError::MethodNotAllowed(format!("{method} is not allowed here; allowed: {allowed}"))
            .into_response();
    if let Some(allow) = allow {
        shaped.headers_mut().insert(header::ALLOW, allow);
    }
    shaped
}

/// A path segment with a NUL character can name nothing, and PostgreSQL refuses it in a query:
/// such a request is a 400 before any handler sees it (see [`crate::input`]).
async fn reject_nul_path(request: Request, next: Next) -> Response {
    if request.uri().path().contains("%00") {
        return AppError::field("path", "must not contain NUL characters").into_response();
    }
    next.run(request).await
}

/// Counts requests by matched route template (never the raw path) and a fixed set of methods,
/// so no request can add a metric series of its own.
async fn track_request<A: Adapter>(
    State(state): State<AppState<A>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = crate::metrics::method_label(request.method());
    let response = next.run(request).await;
    state
        .core
        .metrics
        .http_request(route, method, response.status().as_u16(), started.elapsed());
    response
}

/// Validator for lists of user ids: each 1 to 128 characters.
pub fn validate_user_ids(ids: &[String]) -> Result<(), validator::ValidationError> {
    if ids
        .iter()
        .all(|id| !id.is_empty() && id.chars().count() <= crate::auth::MAX_USER_ID_LEN)
    {
        Ok(())
    } else {
        Err(validator::ValidationError::new("user_id")
            .with_message("each user id must be 1 to 128 characters".into()))
    }
}
