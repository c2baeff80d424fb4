//! The OpenAPI 3.1 document of every HTTP route, served at `GET /api/v1/openapi.json` (no
//! auth), so product teams and client generators read the API from the server that implements
//! it. Request and response schemas are derived (`utoipa::ToSchema`) from the types the handlers
//! read and write; where a handler builds its answer with `json!`, [`schemas`] holds a type
//! describing it. `tests/api/openapi.rs` fails when a route the router registers is missing here,
//! when a documented route is not served, or when a real response does not match its schema.
//!
//! # Adding a route
//!
//! 1. Derive `utoipa::ToSchema` on its body and answer types (or `utoipa::IntoParams` with
//!    `#[into_params(parameter_in = Query)]` on its query struct); for a `json!` answer add a
//!    type to [`schemas`].
//! 2. Add a stub to [`paths`]: `#[utoipa::path(method, path = "/full/path/{param}", tag = …,
//!    params(…), request_body = …, responses(…))] fn operation_name() {}`, listing the answers
//!    particular to the route (201, 403, 404, 409, 429…). The shared ones (401, 400, 413, 500,
//!    503, 304 on user GETs) and the security scheme come from the path prefix, in
//!    [`common_answers`]; a user route that needs no token goes in [`PUBLIC_USER_PATHS`], a
//!    GET outside the conditional-GET layer in [`UNCONDITIONAL_PREFIXES`].
//! 3. Name the stub in `paths(…)` of [`ApiDoc`] below.
//!
//! `cargo test --test api openapi` then checks the route is documented, served, and answers as
//! documented (add a request for it to `responses_match_the_documented_schemas` there).

mod paths;
mod schemas;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use socketioxide::adapter::Adapter;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    Components, Content, Header, HeaderBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder,
};
use utoipa::{Modify, OpenApi};

use crate::config::Config;
use crate::state::AppState;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/api/v1/openapi.json";
/// Prefix of the user REST API (Bearer JWT).
const USER_PREFIX: &str = "/api/v1/realtime/";
/// Prefix of the service API (`X-Api-Key`).
const SERVICE_PREFIX: &str = "/api/v1/internal/";
/// Prefix of the demo routes, left out while the demo is off.
const DEMO_PREFIX: &str = "/demo";
/// Security scheme names in `components.securitySchemes`.
const BEARER: &str = "bearerAuth";
const API_KEY: &str = "apiKey";
const TOKEN_QUERY: &str = "tokenQuery";
/// User routes that need no token: what a page fetches before it has a user.
const PUBLIC_USER_PATHS: &[&str] = &["/api/v1/realtime/push/vapid-public-key"];
/// Prefixes of the routes that also take the JWT as `?token=` (`EventSource` sets no headers).
const TOKEN_QUERY_PREFIXES: &[&str] = &["/api/v1/realtime/stream", "/api/v1/realtime/poll"];
/// Prefixes of the user GETs outside the conditional-GET layer (no `ETag`, never 304): a
/// stream has no end to hash, a poll or status answer is never the same twice.
const UNCONDITIONAL_PREFIXES: &[&str] = &[
    "/api/v1/realtime/stream",
    "/api/v1/realtime/poll",
    "/api/v1/realtime/status",
];

/// The document as derived from the stubs in [`paths`]; [`document`] adapts it to a config.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard",
        description = "REST and service API of the Switchboard realtime server. Socket.IO \
            events (namespace `/realtime`) are described in the client contract, not here.",
    ),
    paths(
        paths::list_rooms,
        paths::create_room,
        paths::get_room,
        paths::rename_room,
        paths::list_members,
        paths::add_members,
        paths::remove_member,
        paths::history,
        paths::send_message,
        paths::search_messages,
        paths::edit_message,
        paths::delete_message,
        paths::room_presence,
        paths::room_receipts,
        paths::feed,
        paths::feed_trending,
        paths::feed_statistics,
        paths::list_notifications,
        paths::mark_notifications_read,
        paths::get_preferences,
        paths::put_preferences,
        paths::own_presence,
        paths::put_activity,
        paths::online_friends,
        paths::stream,
        paths::stream_room,
        paths::poll,
        paths::session_status,
        paths::typing,
        paths::mark_read,
        paths::mark_delivered,
        paths::put_status,
        paths::vapid_public_key,
        paths::subscribe_push,
        paths::list_push_subscriptions,
        paths::unsubscribe_push,
        paths::upsert_user,
        paths::follow,
        paths::unfollow,
        paths::create_notifications,
        paths::publish_activity,
        paths::broadcast,
        paths::health,
        paths::metrics,
        paths::openapi_document,
        paths::demo_page,
        paths::demo_page_slash,
        paths::demo_script,
        paths::demo_bundle,
        paths::demo_token,
    ),
    // Schemas reached only through `#[serde(flatten)]` maps or query parameters are not
    // collected on their own; `StreamReady` is the data of a stream's first frame.
    components(schemas(
        schemas::ErrorBody,
        schemas::ChannelChanges,
        schemas::StreamReady,
        crate::http::realtime::FeedParam,
        crate::domain::preferences::Channels
    )),
    modifiers(&CommonAnswers),
    tags(
        (name = "chat", description = "Rooms, members and messages (Bearer JWT)"),
        (name = "feed", description = "The caller's feed (Bearer JWT)"),
        (name = "notifications", description = "Notifications and preferences (Bearer JWT)"),
        (name = "presence", description = "Own and friends' presence (Bearer JWT)"),
        (name = "realtime", description = "SSE streams, long polling and the REST twins of \
            socket actions, for clients without Socket.IO (Bearer JWT or `?token=`)"),
        (name = "push", description = "Web Push subscriptions (Bearer JWT)"),
        (name = "service", description = "For the app's backend (`X-Api-Key`)"),
        (name = "operations", description = "Health, metrics and this document"),
        (name = "demo", description = "The demo page, only while `DEMO_ENABLED`"),
    )
)]
pub struct ApiDoc;

/// The document this server serves: the demo routes only while the demo is on.
pub fn document(config: &Config) -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if !config.demo_enabled() {
        doc.paths
            .paths
            .retain(|path, _| !path.starts_with(DEMO_PREFIX));
        if let Some(tags) = &mut doc.tags {
            tags.retain(|tag| tag.name != "demo");
        }
    }
    doc
}

/// `GET /api/v1/openapi.json`, the document serialized once when the router is built.
pub fn router<A: Adapter>(config: &Config) -> Router<AppState<A>> {
    let body = match document(config).to_json() {
        Ok(json) => Bytes::from(json),
        Err(e) => {
            // Only a bug in a schema could get here; the rest of the server still works.
            tracing::error!(error = %e, "the OpenAPI document does not serialize");
            Bytes::from_static(b"{}")
        }
    };
    Router::new().route(DOCUMENT_PATH, get(move || serve(body.clone())))
}

async fn serve(body: Bytes) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The reusable error answers: `components.responses` name, status, description.
const ERROR_ANSWERS: &[(&str, &str, &str)] = &[
    (
        "InvalidPayload",
        "400",
        "`INVALID_PAYLOAD`: malformed JSON, a body that is not an object, a failing field \
         (`details` lists them), a bad query parameter, or a NUL in the path",
    ),
    (
        "Unauthorized",
        "401",
        "`UNAUTHORIZED`: missing or invalid credentials",
    ),
    (
        "PayloadTooLarge",
        "413",
        "`PAYLOAD_TOO_LARGE`: the body is over the server's size limit",
    ),
    (
        "Internal",
        "500",
        "`INTERNAL`: a server-side failure; the cause is logged, never shown",
    ),
    (
        "Unavailable",
        "503",
        "`INTERNAL`: the database is known to be down; retry after `Retry-After` seconds",
    ),
];

/// Adds what routes share by their prefix: security requirements and the error answers every
/// route of a kind can give, so no stub can forget them.
struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Components::new);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A user's JWT (`sub` is the user id), as for the Socket.IO handshake",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "`SERVICE_API_KEY`; without it configured the service API answers 401",
            ))),
        );
        components.add_security_scheme(
            TOKEN_QUERY,
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "The user's JWT as a query parameter, for streams and polls only \
                 (`EventSource` cannot set headers); `Authorization` wins when both are sent",
            ))),
        );
        for (name, _, description) in ERROR_ANSWERS {
            components
                .responses
                .insert((*name).to_owned(), RefOr::T(error_answer(description)));
        }
        components.responses.insert(
            "NotModified".to_owned(),
            RefOr::T(
                ResponseBuilder::new()
                    .description("The `If-None-Match` tag is current; no body")
                    .build(),
            ),
        );
        for (path, item) in &mut doc.paths.paths {
            for (method, operation) in operations(item) {
                common_answers(path, method, operation);
            }
        }
    }
}

/// The shared answers and security of one operation, by its path prefix and inputs.
fn common_answers(path: &str, method: &str, operation: &mut Operation) {
    let user = path.starts_with(USER_PREFIX);
    let service = path.starts_with(SERVICE_PREFIX);
    let public = PUBLIC_USER_PATHS.contains(&path);
    let conditional = !UNCONDITIONAL_PREFIXES.iter().any(|p| path.starts_with(p));
    if public {
        // Explicitly none, so a client generator sends no credentials.
        operation.security = Some(Vec::new());
    } else if user {
        let mut security = vec![SecurityRequirement::new(BEARER, [""; 0])];
        if TOKEN_QUERY_PREFIXES.iter().any(|p| path.starts_with(p)) {
            security.push(SecurityRequirement::new(TOKEN_QUERY, [""; 0]));
        }
        operation.security = Some(security);
    } else if service {
        operation.security = Some(vec![SecurityRequirement::new(API_KEY, [""; 0])]);
    }
    let has_body = operation.request_body.is_some();
    let has_input = has_body
        || path.contains('{')
        || operation
            .parameters
            .as_ref()
            .is_some_and(|params| !params.is_empty());
    let responses = &mut operation.responses.responses;
    let mut shared = |status: &str, name: &str| {
        responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    };
    if has_input {
        shared("400", "InvalidPayload");
    }
    if has_body {
        shared("413", "PayloadTooLarge");
    }
    if (user && !public) || service {
        shared("401", "Unauthorized");
    }
    if user || service {
        shared("500", "Internal");
        shared("503", "Unavailable");
    }
    if user && conditional && method == "get" {
        shared("304", "NotModified");
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if status == "429" || status == "503" {
            response
                .headers
                .insert("Retry-After".to_owned(), retry_after());
        }
        if user && conditional && method == "get" && status == "200" {
            response.headers.insert(
                "ETag".to_owned(),
                text_header("A strong tag of the body; send it back in `If-None-Match`"),
            );
        }
    }
}

/// An error answer in the contract's shape.
fn error_answer(description: &str) -> utoipa::openapi::Response {
    let mut builder = ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
    );
    if description.contains("Retry-After") {
        builder = builder.header("Retry-After", retry_after());
    }
    builder.build()
}

fn retry_after() -> Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer))
        .description(Some("Seconds to wait before trying again"))
        .build()
}

fn text_header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

/// Every operation of a path, with its lowercase method.
fn operations(item: &mut PathItem) -> impl Iterator<Item = (&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.as_mut().map(|op| (method, op)))
}
