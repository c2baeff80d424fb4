//! The service API's caller: the app's backend, identified by `X-Api-Key`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use socketioxide::adapter::Adapter;
use subtle::ConstantTimeEq;

use crate::error::AppError;
use crate::state::AppState;

/// Proof that the request carried the configured service key. User JWTs are never accepted here.
#[derive(Clone, Copy, Debug)]
pub struct ServiceCaller;

impl<A: Adapter> FromRequestParts<AppState<A>> for ServiceCaller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<A>) -> Result<Self, AppError> {
        let Some(expected) = state
            .core
            .config
            .service_api_key
            .as_deref()
            .filter(|k| !k.is_empty())
        else {
            return Err(AppError::Unauthorized(
                "the service API is disabled (no SERVICE_API_KEY)".into(),
            ));
        };
        let given = parts
            .headers
            .get("x-api-key")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        // Constant-time, so the key cannot be guessed byte by byte from response timings.
        if bool::from(given.ct_eq(expected.as_bytes())) {
            Ok(Self)
        } else {
            Err(AppError::Unauthorized("missing or wrong X-Api-Key".into()))
        }
    }
}
