//! Oversized request bodies get their 413 `PAYLOAD_TOO_LARGE`, and the client gets to read it.
//!
//! Most HTTP clients (reqwest, `fetch` in Node, curl without `Expect`) write the whole body
//! before they read the answer. A server that answers early and closes the connection while
//! bytes are still arriving makes the kernel reset it, and the client sees a broken pipe instead
//! of the 413. So a body over the limit is refused on its `Content-Length` before any of it is
//! read, and the rest of it is read and thrown away (up to a bound) before the answer goes out
//! with `Connection: close`. Bodies without a `Content-Length` (chunked) are read here up to the
//! limit, so they are refused the same way.

use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::json::BodyLimit;
use crate::error::AppError;

/// At most this much of a refused body is read and discarded so the answer reaches the client;
/// a larger upload is cut off (its client may then see a reset instead of the 413).
const DRAIN_BYTES: usize = 8 * 1024 * 1024;
/// And for at most this long, so a slow sender cannot hold a connection open.
const DRAIN_TIME: Duration = Duration::from_secs(3);

/// Middleware: refuses bodies over the limit with 413 in the contract's shape.
pub async fn refuse_oversized(
    State(BodyLimit(limit)): State<BodyLimit>,
    request: Request,
    next: Next,
) -> Response {
    let declared = declared_length(request.headers());
    if declared.is_some_and(|length| length > limit) {
        return if expects_continue(request.headers()) {
            // The client waits for `100 Continue` before sending; never asking for the body
            // means it never sends it.
            too_large(limit)
        } else {
            discard(request.into_body().into_data_stream(), 0).await;
            too_large(limit)
        };
    }
    if declared.is_some() || request.body().is_end_stream() {
        // Within the limit (hyper holds the sender to its Content-Length), or no body at all.
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let mut stream = body.into_data_stream();
    let mut buffered = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                return AppError::invalid(format!("unreadable body: {e}")).into_response();
            }
        };
        if buffered.len() + chunk.len() > limit {
            discard(stream, buffered.len() + chunk.len()).await;
            return too_large(limit);
        }
        buffered.extend_from_slice(&chunk);
    }
    let request = Request::from_parts(parts, Body::from(Bytes::from(buffered)));
    next.run(request).await
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// Reads and drops what is left of a refused body, within [`DRAIN_BYTES`] and [`DRAIN_TIME`].
async fn discard(mut stream: axum::body::BodyDataStream, already: usize) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    let mut read = already;
    while read <= DRAIN_BYTES {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => read += chunk.len(),
            _ => return,
        }
    }
}

/// The 413, closing the connection: what is left of the body must not be read as a request.
fn too_large(limit: usize) -> Response {
    let mut response = AppError::PayloadTooLarge { limit }.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
