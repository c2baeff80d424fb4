//! Checks every transport applies to raw input before it is parsed. Ids and texts are stored as
//! database strings, and PostgreSQL refuses a NUL character in any of them with an error that
//! would surface as a 500 or an `INTERNAL` ack; a NUL is never meaningful in this API, so input
//! carrying one is refused up front as `INVALID_PAYLOAD`, naming where it was. The one exception
//! is message text (a top-level `message` string): the contract strips control characters from
//! it rather than refusing it, so its NULs are removed here and the rest is cleaned later.

use serde_json::Value;

use crate::error::AppError;

/// Removes NULs from the message text of a body or payload (see the module doc) and refuses a
/// NUL anywhere else.
pub fn check_nul(value: &mut Value) -> Result<(), AppError> {
    if let Some(Value::String(text)) = value.get_mut("message")
        && text.contains('\0')
    {
        text.retain(|c| c != '\0');
    }
    reject_nul(value)
}

/// Refuses a JSON value with a NUL character in any string or object key.
pub fn reject_nul(value: &Value) -> Result<(), AppError> {
    match find_nul(value, String::new()) {
        None => Ok(()),
        Some(path) if path.is_empty() => Err(AppError::invalid("must not contain NUL characters")),
        Some(path) => Err(AppError::field(path, "must not contain NUL characters")),
    }
}

/// Refuses a NUL character in a decoded path segment or query value.
pub fn reject_nul_in(field: &str, text: &str) -> Result<(), AppError> {
    if text.contains('\0') {
        Err(AppError::field(field, "must not contain NUL characters"))
    } else {
        Ok(())
    }
}

/// Where the first NUL is, as a field path (`participants[0]`, `metadata.key`).
fn find_nul(value: &Value, path: String) -> Option<String> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::String(s) => s.contains('\0').then_some(path),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_nul(item, format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(join(&key.replace('\0', "\\u0000")))
            } else {
                find_nul(item, join(key))
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_where_the_nul_is() {
        assert!(reject_nul(&json!({ "a": ["x", { "b": "ok" }] })).is_ok());
        let at = |v: Value| match reject_nul(&v) {
            Err(AppError::InvalidPayload { details, .. }) => {
                details.first().map(|d| d.field.clone()).unwrap_or_default()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            at(json!({ "participants": ["bob", "a\u{0}"] })),
            "participants[1]"
        );
        assert_eq!(at(json!({ "metadata": { "k": "\u{0}" } })), "metadata.k");
        assert_eq!(at(json!({ "x\u{0}": 1 })), "x\\u0000");
        assert!(reject_nul(&json!("\u{0}")).is_err());
    }
}
