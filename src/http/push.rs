//! REST routes of Web Push: the VAPID public key a page subscribes with, and the caller's own
//! subscriptions (register what `pushManager.subscribe()` returned, list, remove).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::json;
use socketioxide::adapter::Adapter;
use validator::Validate;

use super::json::Json;
use crate::auth::AuthUser;
use crate::config::Environment;
use crate::domain::push_subscriptions::{self, KeysJson, SubscriptionJson};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub fn router<A: Adapter>() -> Router<AppState<A>> {
    Router::new()
        .route("/push/vapid-public-key", get(public_key::<A>))
        .route("/push/subscriptions", get(list::<A>).post(subscribe::<A>))
        .route("/push/subscriptions/{id}", delete(unsubscribe::<A>))
}

/// `{ publicKey }`: the `applicationServerKey` for `pushManager.subscribe()`. Public, like the
/// key itself; 404 when push is off.
async fn public_key<A: Adapter>(State(state): State<AppState<A>>) -> AppResult<Response> {
    let Some(push) = state.core.outbound.push.as_ref() else {
        return Err(AppError::NotFound(
            "Web Push is not configured (VAPID_PRIVATE_KEY)".into(),
        ));
    };
    Ok(Json(json!({ "publicKey": push.public_key() })).into_response())
}

/// The browser's `PushSubscription.toJSON()`.
#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct SubscribeBody {
    /// The push service's URL: `https` (plain `http` only for loopback in development).
    #[validate(length(min = 1, max = 2048, message = "must be 1 to 2048 characters"))]
    #[schema(min_length = 1, max_length = 2048)]
    endpoint: String,
    keys: KeysBody,
    /// Milliseconds since the epoch, or null.
    expiration_time: Option<f64>,
}

/// `keys` of a `PushSubscription`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct KeysBody {
    /// The browser's P-256 public key (65 bytes), base64url.
    p256dh: String,
    /// The 16-byte authentication secret, base64url.
    auth: String,
}

/// 201 with `{ id, endpoint, expirationTime, createdAt }`; 200 with the same when the caller
/// already had this endpoint.
async fn subscribe<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Json(body): Json<SubscribeBody>,
) -> AppResult<Response> {
    let json = SubscriptionJson {
        endpoint: body.endpoint,
        keys: KeysJson {
            p256dh: body.keys.p256dh,
            auth: body.keys.auth,
        },
        expiration_time: body.expiration_time,
    };
    // Local push services over plain http, for development and the tests only.
    let loopback_http = state.core.config.environment == Environment::Development;
    let new = push_subscriptions::validate(json, loopback_http)?;
    let (subscription, created) = state
        .core
        .push_subscriptions
        .register(&user.id, new)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(subscription)).into_response())
}

/// `{ items, nextCursor: null }`: the caller's subscriptions (at most
/// `PUSH_SUBSCRIPTIONS_PER_USER`, so never paged), newest first.
async fn list<A: Adapter>(State(state): State<AppState<A>>, user: AuthUser) -> AppResult<Response> {
    let items = state.core.push_subscriptions.list(&user.id).await?;
    Ok(Json(json!({ "items": items, "nextCursor": null })).into_response())
}

/// 204; 404 for an id that is not one of the caller's.
async fn unsubscribe<A: Adapter>(
    State(state): State<AppState<A>>,
    user: AuthUser,
    Path(id): Path<String>,
) -> AppResult<Response> {
    state.core.push_subscriptions.delete(&user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
