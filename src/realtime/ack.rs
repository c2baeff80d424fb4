//! Turning raw event payloads into validated inputs, and results into acks. Every handler goes
//! through [`respond`], so a malformed payload is always answered and counted, never dropped.

use std::future::Future;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use socketioxide::ParserError;
use socketioxide::adapter::Adapter;
use socketioxide::extract::AckSender;
use validator::Validate;

use crate::error::{AppError, AppResult, from_json_error};
use crate::state::Core;

/// Whether an event may come without a payload (all its fields optional).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    Required,
    Optional,
}

/// Deserializes and validates an event payload, naming the failing fields.
pub fn parse<T: DeserializeOwned + Validate>(
    raw: Result<Value, ParserError>,
    kind: Payload,
) -> AppResult<T> {
    let mut value = match raw {
        Ok(Value::Null) | Err(_) if kind == Payload::Optional => Value::Object(Map::new()),
        Ok(Value::Object(map)) => Value::Object(map),
        Ok(_) => return Err(AppError::invalid("payload must be an object")),
        Err(_) => return Err(AppError::invalid("payload is missing")),
    };
    crate::input::check_nul(&mut value)?;
    let parsed: T = serde_path_to_error::deserialize(value).map_err(from_json_error)?;
    parsed.validate()?;
    Ok(parsed)
}

/// Runs a handler body and answers the ack with `{ ok: true, ...result }` or the error.
pub async fn respond<A, F>(event: &'static str, core: &Core, ack: AckSender<A>, body: F)
where
    A: Adapter,
    F: Future<Output = AppResult<Value>>,
{
    let started = Instant::now();
    let result = body.await;
    answer(event, core, ack, result, started.elapsed());
}

/// Answers the ack with `{ ok: true, ...result }` or the error, and counts the event. Sync, so
/// an event refused in the read loop is answered the same way (see `context`).
pub fn answer<A: Adapter>(
    event: &'static str,
    core: &Core,
    ack: AckSender<A>,
    result: AppResult<Value>,
    elapsed: std::time::Duration,
) {
    let reply = match result {
        Ok(result) => {
            let mut object = match result {
                Value::Object(map) => map,
                Value::Null => Map::new(),
                other => Map::from_iter([("result".to_owned(), other)]),
            };
            object.insert("ok".to_owned(), Value::Bool(true));
            Value::Object(object)
        }
        Err(error) => {
            core.metrics.ack_error(event, error.code());
            if matches!(error, AppError::Internal(_)) {
                tracing::error!(event, "event failed");
            }
            error.ack()
        }
    };
    core.metrics.event_in(event, elapsed);
    // Without an ack id (the client passed no callback) this is a no-op.
    if let Err(e) = ack.send(&reply) {
        tracing::debug!(event, error = %e, "ack not sent");
    }
}
