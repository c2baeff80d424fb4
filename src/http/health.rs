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

/// 200 when every dependency answers, 503 otherwise; always lists each one.
async fn health<A: Adapter>(State(state): State<AppState<A>>) -> impl IntoResponse {
    let database_ok = crate::db::ping(&state.core.db).await;
    let redis = match &state.core.redis {
        None => "disabled",
        Some(client) => {
            if crate::cluster::ping(client).await {
                "ok"
            } else {
                "down"
            }
        }
    };
    let healthy = database_ok && redis != "down";
    let connections = state
        .io
        .of(crate::realtime::NAMESPACE)
        .map_or(0, |ns| ns.sockets().len());
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "timestamp": crate::time::now_rfc3339(),
        "connections": connections,
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

async fn metrics<A: Adapter>(State(state): State<AppState<A>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.core.metrics.render(),
    )
}
