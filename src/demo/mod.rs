//! The demo page (`GET /demo`): a browser client built only on the contract's events and REST
//! routes, so a developer can watch chat, typing, presence and notifications cross between two
//! windows without writing a client first. Page, script and the vendored socket.io-client bundle
//! are compiled into the binary (there may be no CDN where it runs), and `POST /demo/token` signs
//! a token for whoever the page says it is — which is why the whole router exists only while
//! [`Config::demo_enabled`] holds.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use socketioxide::adapter::Adapter;
use validator::Validate;

use crate::config::{Config, Environment, JwtAlgorithm};
use crate::error::{AppError, AppResult};
use crate::http::json::Json;
use crate::state::AppState;

/// The page: markup and styles; its behaviour is in [`SCRIPT`].
const PAGE: &str = include_str!("assets/index.html");
/// The page's script, separate so the Content-Security-Policy needs no inline scripts.
const SCRIPT: &str = include_str!("assets/demo.js");
/// `socket.io-client` 4.8.x `dist/socket.io.min.js` (MIT, license header kept), unmodified.
const SOCKET_IO_BUNDLE: &str = include_str!("assets/socket.io.min.js");

/// Long enough for an afternoon of trying things; short enough that a leaked demo token dies.
const TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// Same-origin only: the page talks to the server that served it, and nothing else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The demo routes when the demo is enabled, else an empty router, so `/demo` and
/// `/demo/token` fall through to the ordinary 404.
pub fn router<A: Adapter>(config: &Config) -> Router<AppState<A>> {
    if !config.demo_enabled() {
        return Router::new();
    }
    Router::new()
        .route("/demo", get(page))
        .route("/demo/", get(page))
        .route("/demo/demo.js", get(script))
        .route("/demo/socket.io.min.js", get(bundle))
        .route("/demo/token", post(token::<A>))
}

/// Logs what the demo exposes: a reminder in development, a loud warning in production, where
/// it was enabled on purpose (`DEMO_ENABLED=true`) and mints tokens with the real secret.
pub fn announce(config: &Config) {
    if !config.demo_enabled() {
        return;
    }
    if config.environment == Environment::Production {
        tracing::warn!(
            "DEMO_ENABLED=true in production: POST /demo/token signs a valid token for ANY user \
             id anyone asks for. Only do this on a private staging server; unset DEMO_ENABLED \
             before real users arrive."
        );
    } else {
        tracing::info!("demo page at /demo (development; DEMO_ENABLED=false turns it off)");
    }
}

/// An asset with its type. The page and script are revalidated on every load, so a new binary
/// shows at once; the bundle is a fixed vendored version and may be cached for a day.
fn asset(body: &'static str, content_type: &'static str, cache: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn page() -> Response {
    let mut response = asset(PAGE, "text/html; charset=utf-8", "no-cache");
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8", "no-cache")
}

async fn bundle() -> Response {
    asset(
        SOCKET_IO_BUNDLE,
        "text/javascript; charset=utf-8",
        "public, max-age=86400",
    )
}

#[derive(Deserialize, Validate, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenBody {
    /// 1 to [`crate::auth::MAX_USER_ID_LEN`] characters, as the token's `sub` must be.
    #[schema(min_length = 1, max_length = 128)]
    #[validate(length(min = 1, max = 128))]
    user_id: String,
    #[schema(min_length = 1, max_length = 100)]
    #[validate(length(min = 1, max = 100))]
    name: Option<String>,
}

/// `POST /demo/token { userId, name? }` → `{ token, expiresIn }`: a token signed with this
/// server's HS256 secret. A server verifying RS256/ES256 holds no signing key, so it refuses
/// (403) and the page asks for a token from the real issuer instead.
async fn token<A: Adapter>(
    State(state): State<AppState<A>>,
    Json(body): Json<TokenBody>,
) -> AppResult<Response> {
    let config = &state.core.config;
    if config.jwt_algorithm != JwtAlgorithm::Hs256 {
        return Err(AppError::Forbidden(format!(
            "this server verifies {:?} tokens and cannot sign them; paste a token from your \
             issuer instead",
            config.jwt_algorithm
        )));
    }
    let name = body
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let token = state.core.jwt.sign(&body.user_id, name, TOKEN_TTL)?;
    tracing::info!(user = %body.user_id, "demo token issued");
    let mut response =
        Json(json!({ "token": token, "expiresIn": TOKEN_TTL.as_secs() })).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
