//! Timestamps as clients see them: RFC 3339, UTC, millisecond precision (`…T12:00:00.000Z`).

use chrono::{DateTime, SecondsFormat, Utc};

/// Formats a timestamp the way every payload carries it.
pub fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The current time, formatted.
pub fn now_rfc3339() -> String {
    rfc3339(&Utc::now())
}

/// Serde helpers for `DateTime<Utc>` fields in payload structs.
pub mod serde_rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(at))
    }

    /// For `Option<DateTime<Utc>>` fields.
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::Serializer;

        pub fn serialize<S: Serializer>(
            at: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => s.serialize_str(&super::super::rfc3339(at)),
                None => s.serialize_none(),
            }
        }
    }
}
