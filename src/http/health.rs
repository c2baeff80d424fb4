//! Operational endpoints outside the API prefix: `/health` for balancers and orchestrators,
//! `/metrics` for Prometheus.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use socketioxide::adapter::Adapter;

use crate::state::AppState;

pub fn router<A: Adapter>() -> Router<AppState<A>> {
    Router::new()
        .route("/health", get(health::<A>))
        .route("/metrics", get(metrics::<A>))
}

/// 200 when every dependency answers, 503 otherwise; always lists each one. Each check is
/// bounded by `DB_HEALTH_TIMEOUT_MS`, so a probe gets its answer in about a second even when a
/// dependency hangs; a Redis known to be disconnected is reported down without asking it.
async fn health<A: Adapter>(State(state): State<AppState<A>>) -> impl IntoResponse {
    let core = &state.core;
    let timeout = core.config.db_health_timeout();
    let database = core.db_probe.probe();
    let redis = async {
        match &core.redis {
            None => "disabled",
            Some(client) => {
                use fred::interfaces::ClientLike;
                let answered = client.is_connected()
                    && tokio::time::timeout(timeout, crate::cluster::ping(client))
                        .await
                        .unwrap_or(false);
                if answered { "ok" } else { "down" }
            }
        }
    };
    let (database_ok, redis) = tokio::join!(database, redis);
    core.db_status.record(database_ok);
    let healthy = database_ok && redis != "down";
    let connections = state
        .io
        .of(crate::realtime::NAMESPACE)
        .map_or(0, |ns| ns.sockets().len());
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "timestamp": crate::time::now_rfc3339(),
        "connections": connections,
        // This node's sessions per transport: sockets by engine.io transport, SSE, long polls.
        "transports": super::realtime::transport_counts(&state.io, core),
        "services": {
            "database": if database_ok { "ok" } else { "down" },
            "redis": redis,
        },
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Also sets `switchboard_sessions{transport}` from this node's live sessions, so the gauge is
/// exact whenever it is scraped (the label set is fixed: see `realtime::status::TRANSPORTS`).
async fn metrics<A: Adapter>(State(state): State<AppState<A>>) -> impl IntoResponse {
    for (transport, count) in super::realtime::transport_counts(&state.io, &state.core) {
        ::metrics::gauge!("switchboard_sessions", "transport" => transport).set(count as f64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.core.metrics.render(),
    )
}
