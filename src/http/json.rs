//! The JSON body extractor of every REST route. Its rejection is an [`AppError`], so malformed
//! JSON, a non-object body, a failing field or an oversized body all answer in the contract's
//! error shape (400 / 413), never axum's plain-text defaults or a 500.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use validator::Validate;

use crate::error::{AppError, from_json_error};

/// A validated JSON body on the way in; a JSON response on the way out.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let limit = req.extensions().get::<BodyLimit>().map(|l| l.0);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::PayloadTooLarge {
                    limit: limit.unwrap_or_default(),
                }
            } else {
                AppError::invalid(format!("unreadable body: {rejection}"))
            }
        })?;
        Ok(Self(parse_body(&bytes)?))
    }
}

/// Parses and validates a JSON object body.
pub fn parse_body<T: DeserializeOwned + Validate>(bytes: &[u8]) -> Result<T, AppError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| AppError::invalid(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(AppError::invalid("body must be a JSON object"));
    }
    crate::input::check_nul(&mut value)?;
    let parsed: T = serde_path_to_error::deserialize(value).map_err(from_json_error)?;
    parsed.validate()?;
    Ok(parsed)
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The configured body limit, put in request extensions so the rejection can state it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Query-string parameters; a bad value is a 400 `INVALID_PAYLOAD`, like a bad body.
pub struct Query<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, AppError> {
        let query = parts.uri.query().unwrap_or_default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            crate::input::reject_nul_in(&key, &key)?;
            crate::input::reject_nul_in(&key, &value)?;
        }
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|e| {
                let field = e.path().to_string();
                AppError::field(field, e.into_inner().to_string())
            })
    }
}

/// `limit` of list endpoints: default 20, at most 100 (larger values are capped).
pub fn page_limit(limit: Option<u64>) -> Result<u64, AppError> {
    match limit {
        None => Ok(20),
        Some(0) => Err(AppError::field("limit", "must be at least 1")),
        Some(n) => Ok(n.min(100)),
    }
}
