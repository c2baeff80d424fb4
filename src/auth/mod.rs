//! Who is calling: user JWTs (REST and Socket.IO) and the backend's service API key.

mod api_key;
mod jwt;
mod socket;

pub use api_key::ServiceCaller;
pub use jwt::{AuthUser, JwtKeys, MAX_USER_ID_LEN};
pub use socket::{authenticate_socket, token_from_handshake};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use socketioxide::adapter::Adapter;

use crate::error::AppError;
use crate::state::AppState;

/// The bearer token of an `Authorization` header, if the header has that form.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    Some(token.ok_or(()))
}

impl<A: Adapter> FromRequestParts<AppState<A>> for AuthUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<A>) -> Result<Self, AppError> {
        let mut user = match bearer_token(&parts.headers) {
            Some(Ok(token)) => state.core.jwt.verify(token)?,
            Some(Err(())) => {
                return Err(AppError::Unauthorized(
                    "malformed Authorization header".into(),
                ));
            }
            None => return Err(AppError::Unauthorized("missing bearer token".into())),
        };
        if !user.name_from_token {
            // The name messages and invites show is the profile's, not the bare id.
            match crate::domain::users::stored_name(&state.core.db, &user.id).await {
                Ok(Some(name)) => user.name = name,
                Ok(None) => {}
                Err(e) => tracing::debug!(user = %user.id, error = %e, "profile name not read"),
            }
        }
        Ok(user)
    }
}
