//! The one error type of both transports. A domain call fails with an [`AppError`]; the REST
//! layer turns it into a status and `{ error: { code, message, details? } }`, the Socket.IO layer
//! into an ack `{ ok: false, error: { … } }`. Internal causes are logged, never shown.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

/// The stable codes clients switch on (contract §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidPayload,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    RateLimited,
    PayloadTooLarge,
    /// REST only: the path exists, the method does not (405, with `Allow`).
    MethodNotAllowed,
    TooManyConnections,
    Internal,
}

impl ErrorCode {
    /// The code as clients see it, e.g. in a `connect_error` message.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidPayload => "INVALID_PAYLOAD",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::Conflict => "CONFLICT",
            Self::RateLimited => "RATE_LIMITED",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::TooManyConnections => "TOO_MANY_CONNECTIONS",
            Self::Internal => "INTERNAL",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::InvalidPayload => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict => StatusCode::CONFLICT,
            Self::RateLimited | Self::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// One failing input field, as listed in `details` of an `INVALID_PAYLOAD` error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Everything a request or event can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the input is malformed or fails validation; `details` names the fields.
    #[error("{message}")]
    InvalidPayload {
        message: String,
        details: Vec<FieldError>,
    },
    /// 401: no valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: the thing does not exist (or the caller may not know it does).
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 429: the caller must wait `retry_after_ms` before trying again.
    #[error("rate limit exceeded, retry in {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    /// 413: the body or frame is over the transport's size limit.
    #[error("payload is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 405: the route exists but not with this method; the response keeps axum's `Allow`.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A dependency is known to be down (the database): refused at once instead of waiting.
    /// Code `INTERNAL` (the contract's code for server-side failures); HTTP 503 with
    /// `Retry-After`, since the same call will work once the dependency is back.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or a dependency failure; the cause is logged, the client sees a generic text.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Shorthand for results of domain and transport code.
pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// Whether this is a wait for a pooled database connection that ran out
    /// (`DB_ACQUIRE_TIMEOUT_MS`): the pool was busy, not broken, and the same call may work
    /// a moment later.
    pub fn is_pool_timeout(&self) -> bool {
        matches!(
            self,
            Self::Internal(e) if matches!(
                e.downcast_ref::<sea_orm::DbErr>(),
                Some(sea_orm::DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout))
            )
        )
    }

    /// An `INVALID_PAYLOAD` error about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = FieldError::new(field, message);
        Self::InvalidPayload {
            message: format!("{}: {}", field.field, field.message),
            details: vec![field],
        }
    }

    /// An `INVALID_PAYLOAD` error about the payload as a whole.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidPayload {
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidPayload { .. } => ErrorCode::InvalidPayload,
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            Self::Internal(_) | Self::Unavailable(_) => ErrorCode::Internal,
        }
    }

    /// The `error` object shared by REST bodies and acks.
    pub fn body(&self) -> Value {
        let message = match self {
            Self::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                "internal server error".to_owned()
            }
            other => other.to_string(),
        };
        let mut error = json!({ "code": self.code(), "message": message });
        match self {
            Self::InvalidPayload { details, .. } if !details.is_empty() => {
                error["details"] = json!(details);
            }
            Self::RateLimited { retry_after_ms } => {
                error["retryAfterMs"] = json!(retry_after_ms);
                error["details"] = json!({ "retryAfterMs": retry_after_ms });
            }
            _ => {}
        }
        error
    }

    /// The negative ack payload: `{ ok: false, error }`.
    pub fn ack(&self) -> Value {
        json!({ "ok": false, "error": self.body() })
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let code = self.code();
        let status = match self {
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => code.status(),
        };
        let mut response = (status, axum::Json(json!({ "error": self.body() }))).into_response();
        if let Self::Unavailable(_) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::RateLimited { retry_after_ms } = self {
            let seconds = retry_after_ms.div_ceil(1000).max(1);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(err: sea_orm::DbErr) -> Self {
        Self::Internal(err.into())
    }
}

impl From<sea_orm::TransactionError<AppError>> for AppError {
    fn from(err: sea_orm::TransactionError<AppError>) -> Self {
        match err {
            sea_orm::TransactionError::Connection(db) => db.into(),
            sea_orm::TransactionError::Transaction(app) => app,
        }
    }
}

impl From<validator::ValidationErrors> for AppError {
    fn from(errors: validator::ValidationErrors) -> Self {
        let mut details = Vec::new();
        collect_field_errors("", &errors, &mut details);
        details.sort_by(|a, b| a.field.cmp(&b.field));
        let message = match details.first() {
            Some(first) => format!("{}: {}", first.field, first.message),
            None => "invalid payload".to_owned(),
        };
        Self::InvalidPayload { message, details }
    }
}

/// Flattens nested validator errors into `field.sub[2]`-style paths.
fn collect_field_errors(
    prefix: &str,
    errors: &validator::ValidationErrors,
    out: &mut Vec<FieldError>,
) {
    use validator::ValidationErrorsKind;
    for (field, kind) in errors.errors() {
        // Validator reports Rust field names; clients know the camelCase wire names.
        let field = camel_case(field);
        let path = if prefix.is_empty() {
            field
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                for error in list {
                    let message = error
                        .message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| format!("is invalid ({})", error.code));
                    out.push(FieldError::new(path.clone(), message));
                }
            }
            ValidationErrorsKind::Struct(inner) => collect_field_errors(&path, inner, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    collect_field_errors(&format!("{path}[{index}]"), inner, out);
                }
            }
        }
    }
}

/// `reply_to_id` → `replyToId`; a raw identifier (`r#type`) is its plain name.
fn camel_case(snake: &str) -> String {
    let snake = snake.strip_prefix("r#").unwrap_or(snake);
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Turns a deserialization failure into a field error, using the path serde reached.
pub fn from_json_error(err: serde_path_to_error::Error<serde_json::Error>) -> AppError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    let text = inner.to_string();
    // serde's text ends with " at line 1 column 12", which means nothing for a socket payload.
    let text = text.split(" at line ").next().unwrap_or(&text).to_owned();
    if path == "." || path.is_empty() {
        // Missing fields are reported at the parent; name the field itself.
        if let Some(field) = text
            .strip_prefix("missing field `")
            .and_then(|s| s.strip_suffix('`'))
        {
            return AppError::field(field, "is required");
        }
        return AppError::invalid(text);
    }
    AppError::field(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use validator::Validate;

    #[derive(Validate)]
    struct Body {
        #[validate(length(max = 1))]
        reply_to_id: String,
    }

    #[test]
    fn field_errors_use_wire_names() {
        assert_eq!(camel_case("notification_ids"), "notificationIds");
        assert_eq!(camel_case("room_id"), "roomId");
        assert_eq!(camel_case("name"), "name");
        assert_eq!(camel_case("r#type"), "type");
        let err = AppError::from(
            Body {
                reply_to_id: "xx".into(),
            }
            .validate()
            .unwrap_err(),
        );
        let AppError::InvalidPayload { details, .. } = err else {
            panic!("expected INVALID_PAYLOAD")
        };
        assert_eq!(details[0].field, "replyToId");
    }

    #[test]
    fn rate_limited_carries_retry_after_in_ack() {
        let ack = AppError::RateLimited {
            retry_after_ms: 1500,
        }
        .ack();
        assert_eq!(ack["ok"], false);
        assert_eq!(ack["error"]["code"], "RATE_LIMITED");
        assert_eq!(ack["error"]["retryAfterMs"], 1500);
    }
}
