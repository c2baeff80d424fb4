//! Retry timing shared by the push sender and the webhook worker: exponential backoff with a
//! cap, overridden by the receiver's own `Retry-After` when it sent one (RFC 9110 §10.2.3), so
//! a push service or an app that asks us to slow down is obeyed rather than hammered.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The delay before attempt `attempt + 1`, after `attempt` (≥ 1) failed: `base · 2^(attempt-1)`,
/// at most `cap`.
pub fn delay(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(20);
    base.saturating_mul(factor).min(cap)
}

/// The `Retry-After` of a response, in delay-seconds or as an HTTP date; `None` when absent,
/// unreadable or already past.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

/// The wait before the next attempt: the receiver's `Retry-After` when given (still at most
/// `cap`), else the backoff.
pub fn next_wait(
    headers: Option<&HeaderMap>,
    base: Duration,
    attempt: u32,
    cap: Duration,
) -> Duration {
    headers
        .and_then(retry_after)
        .map(|d| d.min(cap))
        .unwrap_or_else(|| delay(base, attempt, cap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn doubles_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        assert_eq!(delay(base, 1, cap), Duration::from_millis(100));
        assert_eq!(delay(base, 2, cap), Duration::from_millis(200));
        assert_eq!(delay(base, 4, cap), Duration::from_millis(800));
        assert_eq!(delay(base, 5, cap), cap);
        assert_eq!(delay(base, 1000, cap), cap);
    }

    #[test]
    fn retry_after_wins_over_backoff() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        let base = Duration::from_millis(10);
        let cap = Duration::from_secs(60);
        assert_eq!(
            next_wait(Some(&headers), base, 1, cap),
            Duration::from_secs(3)
        );
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3600"));
        assert_eq!(next_wait(Some(&headers), base, 1, cap), cap);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(next_wait(Some(&headers), base, 2, cap), base * 2);
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let wait = next_wait(Some(&headers), base, 1, cap);
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
    }
}
