//! Prometheus metrics. One process-wide recorder (the `metrics` facade is global); every
//! app instance in the process shares it, which only matters to tests that start several.
//!
//! Every label has a bounded set of values, so no client can grow `/metrics`: event names are
//! the server's own `&'static str`s (unknown client events count as `unknown`), codes are
//! [`ErrorCode`]s, HTTP routes are matched templates or `unmatched`, HTTP methods go through
//! [`method_label`], statuses are three digits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ErrorCode;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds, from sub-millisecond acks to slow HTTP calls.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Records what the server does; cheap to clone, all methods are fire-and-forget.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    /// Fan-out emits of this app instance. Kept here as well as in the (process-wide)
    /// recorder so a test can read what one server did while others run in the same process.
    fan_out: Arc<Mutex<HashMap<&'static str, FanOut>>>,
}

/// What the fan-out paths (room updates, notifications, presence) emitted for one event name:
/// the cost of a change, in emits, target rooms and payload bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FanOut {
    /// Broadcasts handed to the adapter.
    pub emits: u64,
    /// Socket.IO rooms named, summed over the emits.
    pub rooms: u64,
    /// Most rooms named by one emit.
    pub max_rooms: u64,
    /// Serialised payload bytes, summed over the emits.
    pub bytes: u64,
    /// Largest serialised payload.
    pub max_bytes: u64,
}

impl Metrics {
    /// Installs the recorder on first use and returns a handle to it.
    pub fn install() -> anyhow::Result<Self> {
        if let Some(handle) = HANDLE.get() {
            return Ok(Self {
                handle: handle.clone(),
                fan_out: Arc::default(),
            });
        }
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
            .build_recorder();
        let handle = recorder.handle();
        // A second app in the same process loses this race harmlessly and uses the winner's.
        if metrics::set_global_recorder(recorder).is_ok() {
            let _ = HANDLE.set(handle.clone());
        }
        let handle = HANDLE.get().cloned().unwrap_or(handle);
        Ok(Self {
            handle,
            fan_out: Arc::default(),
        })
    }

    /// The text exposition for `GET /metrics`.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    pub fn socket_connected(&self) {
        counter!("switchboard_socket_connects_total").increment(1);
        gauge!("switchboard_sockets_connected").increment(1.0);
    }

    pub fn socket_disconnected(&self) {
        counter!("switchboard_socket_disconnects_total").increment(1);
        gauge!("switchboard_sockets_connected").decrement(1.0);
    }

    pub fn connect_refused(&self, code: ErrorCode) {
        counter!("switchboard_socket_connects_refused_total", "code" => code.as_str()).increment(1);
    }

    pub fn event_in(&self, event: &'static str, elapsed: Duration) {
        counter!("switchboard_events_in_total", "event" => event).increment(1);
        histogram!("switchboard_event_duration_seconds", "event" => event).record(elapsed);
    }

    pub fn event_out(&self, event: &'static str) {
        counter!("switchboard_events_out_total", "event" => event).increment(1);
    }

    /// One fan-out broadcast of `event` naming `rooms` Socket.IO rooms with a `bytes` payload.
    pub fn fan_out(&self, event: &'static str, rooms: usize, bytes: usize) {
        counter!("switchboard_fan_out_emits_total", "event" => event).increment(1);
        counter!("switchboard_fan_out_bytes_total", "event" => event).increment(bytes as u64);
        let mut all = self.fan_out.lock().unwrap_or_else(|p| p.into_inner());
        let stats = all.entry(event).or_default();
        stats.emits += 1;
        stats.rooms += rooms as u64;
        stats.max_rooms = stats.max_rooms.max(rooms as u64);
        stats.bytes += bytes as u64;
        stats.max_bytes = stats.max_bytes.max(bytes as u64);
    }

    /// What this instance's fan-out paths emitted for `event` so far.
    pub fn fan_out_stats(&self, event: &str) -> FanOut {
        let all = self.fan_out.lock().unwrap_or_else(|p| p.into_inner());
        all.get(event).copied().unwrap_or_default()
    }

    /// Users waiting in the presence queue (the bench's storm scenario reads this gauge).
    pub fn presence_queue_depth(&self, depth: usize) {
        gauge!("switchboard_presence_queue_depth").set(depth as f64);
    }

    /// An activity update dropped because the presence queue was full.
    pub fn presence_activity_dropped(&self) {
        counter!("switchboard_presence_dropped_total", "kind" => "activity").increment(1);
    }

    pub fn ack_error(&self, event: &'static str, code: ErrorCode) {
        counter!("switchboard_ack_errors_total", "event" => event, "code" => code.as_str())
            .increment(1);
    }

    /// A socket dropped for being too slow or flooding (`reason`: `slow_consumer`, `flood`).
    pub fn socket_dropped(&self, reason: &'static str) {
        counter!("switchboard_sockets_dropped_total", "reason" => reason).increment(1);
    }

    /// A message from `@socket.io/redis-emitter`. `kind` is `broadcast`, `join`, `leave`,
    /// `disconnect`, `request` (not yet decoded) or `unknown`; `outcome` is `delivered`,
    /// `ignored` (another namespace, `serverSideEmit`), `invalid`, `failed` or `dropped`.
    pub fn emitter_message(&self, kind: &'static str, outcome: &'static str, n: u64) {
        counter!("switchboard_redis_emitter_messages_total", "kind" => kind, "outcome" => outcome)
            .increment(n);
    }

    /// `route` is a matched route template or `unmatched`, `method` one of [`method_label`]'s.
    pub fn http_request(
        &self,
        route: String,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        let status = status.to_string();
        counter!("switchboard_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
            .increment(1);
        histogram!("switchboard_http_request_duration_seconds", "route" => route, "method" => method)
            .record(elapsed);
    }
}

/// The `method` label of HTTP metrics: the standard methods, and `other` for anything a client
/// invents (`curl -X RANDOM…` must not grow `/metrics`).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}
