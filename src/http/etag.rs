//! Conditional GETs: every successful `GET` under the user API carries a strong `ETag` (a hash
//! of the exact body bytes) and `Cache-Control: private, no-cache`, and a request whose
//! `If-None-Match` names the current tag gets `304 Not Modified` with no body. Polling clients
//! then pay one round trip of headers when nothing changed; `private` keeps shared caches from
//! serving one user's rooms to another, and `no-cache` makes every reuse revalidate.
//!
//! The tag is computed from the response the handler produced, so it can never disagree with
//! the body (no per-resource version bookkeeping to forget), and it is the same on every node
//! for the same data.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// Largest body hashed; bigger ones (none of the paged lists gets near it) go out untagged.
const MAX_TAGGED_BODY: usize = 8 * 1024 * 1024;

/// Bytes of the SHA-256 digest kept in the tag: 128 bits, plenty against accidental matches.
const TAG_BYTES: usize = 16;

/// The `Cache-Control` of tagged responses.
const CACHE_CONTROL: &str = "private, no-cache";

/// Middleware: tags `200` answers to `GET`/`HEAD` and answers a matching `If-None-Match`
/// with `304`. Other methods and statuses pass through untouched.
pub async fn conditional_get(request: Request, next: Next) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match to_bytes(body, MAX_TAGGED_BODY).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(error = %e, "response body too large or unreadable for an ETag");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let tag = etag_of(&bytes);
    let Ok(tag_value) = HeaderValue::from_str(&tag) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    set_cache_headers(&mut parts.headers, tag_value);
    if if_none_match
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches_any(v, &tag))
    {
        let mut not_modified = Response::new(Body::empty());
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        // RFC 9110 §15.4.5: a 304 carries the validators and caching headers a 200 would.
        for name in [header::ETAG, header::CACHE_CONTROL, header::VARY] {
            if let Some(value) = parts.headers.get(&name) {
                not_modified.headers_mut().insert(name, value.clone());
            }
        }
        return not_modified;
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

fn set_cache_headers(headers: &mut HeaderMap, tag: HeaderValue) {
    headers.insert(header::ETAG, tag);
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    // The same URL answers differently per token.
    headers.append(header::VARY, HeaderValue::from_static("Authorization"));
}

/// The strong entity tag of a body: `"` + 32 hex digits of its SHA-256 + `"`.
pub fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(TAG_BYTES * 2 + 2);
    tag.push('"');
    for byte in &digest[..TAG_BYTES] {
        tag.push_str(&format!("{byte:02x}"));
    }
    tag.push('"');
    tag
}

/// Whether an `If-None-Match` value (`*`, or a comma-separated list of tags) names `tag`.
/// The comparison is weak, as RFC 9110 requires for `If-None-Match`: `W/"x"` matches `"x"`.
fn matches_any(header_value: &str, tag: &str) -> bool {
    header_value.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == tag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_quoted_stable_and_differ_by_body() {
        let a = etag_of(b"{\"items\":[]}");
        assert_eq!(a, etag_of(b"{\"items\":[]}"));
        assert_ne!(a, etag_of(b"{\"items\":[1]}"));
        assert!(a.starts_with('"') && a.ends_with('"'));
        assert_eq!(a.len(), 34);
    }

    #[test]
    fn if_none_match_lists_star_and_weak_tags() {
        let tag = etag_of(b"x");
        assert!(matches_any(&tag, &tag));
        assert!(matches_any(&format!("\"other\", {tag}"), &tag));
        assert!(matches_any(&format!("W/{tag}"), &tag));
        assert!(matches_any("*", &tag));
        assert!(!matches_any("\"other\"", &tag));
        assert!(!matches_any("", &tag));
    }
}
