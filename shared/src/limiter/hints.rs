//! Rate-limit hints a server may send: `Retry-After` (seconds or an HTTP date),
//! `X-RateLimit-Remaining` with `X-RateLimit-Reset` (epoch seconds, or seconds from now when
//! small), and a JSON body's `reset_at` (RFC 3339). They can only lengthen a wait: the ledger's own
//! arithmetic is always applied as well.

use std::time::Duration;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerHints {
    pub retry_after: Option<Duration>,
    pub retry_after_date: Option<DateTime<Utc>>,
    pub remaining: Option<u64>,
    pub reset: Option<DateTime<Utc>>,
    pub reset_at: Option<DateTime<Utc>>,
}

/// Values of `X-RateLimit-Reset` below this are read as seconds from now, above as epoch seconds.
const EPOCH_THRESHOLD: u64 = 1_000_000_000;

impl ServerHints {
    /// Reads the hints from response headers (looked up case-insensitively by `header`) and an
    /// optional JSON body. Unparseable values are ignored, never trusted.
    pub fn parse(
        header: impl Fn(&str) -> Option<String>,
        body: Option<&serde_json::Value>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut hints = ServerHints::default();
        if let Some(v) = header("retry-after") {
            let v = v.trim();
            if let Ok(secs) = v.parse::<u64>() {
                hints.retry_after = Some(Duration::from_secs(secs.min(86_400)));
            } else if let Ok(date) = DateTime::parse_from_rfc2822(v) {
                hints.retry_after_date = Some(date.with_timezone(&Utc));
            }
        }
        hints.remaining = header("x-ratelimit-remaining").and_then(|v| v.trim().parse().ok());
        hints.reset = header("x-ratelimit-reset")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .and_then(|n| {
                if n < EPOCH_THRESHOLD {
                    chrono::Duration::try_seconds(n.min(86_400) as i64).map(|d| now + d)
                } else {
                    DateTime::from_timestamp(i64::try_from(n).ok()?, 0)
                }
            });
        hints.reset_at = body
            .and_then(|b| {
                b.get("reset_at")
                    .or_else(|| b.get("error").and_then(|e| e.get("reset_at")))
            })
            .and_then(|v| v.as_str())
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc));
        hints
    }

    /// Until when the server asks us to hold off, if it does. `X-RateLimit-Reset` counts only when
    /// nothing remains. Hints more than a day away are capped at a day (a broken clock, not a plan).
    pub fn block_until(&self, now: DateTime<Utc>, got_429: bool) -> Option<DateTime<Utc>> {
        let mut until: Option<DateTime<Utc>> = None;
        let mut push =
            |t: DateTime<Utc>| until = Some(until.map_or(t, |u: DateTime<Utc>| u.max(t)));
        if let Some(d) = self
            .retry_after
            .and_then(|d| chrono::Duration::from_std(d).ok())
        {
            push(now + d);
        }
        if let Some(t) = self.retry_after_date {
            push(t);
        }
        if let Some(t) = self
            .reset_at
            .filter(|_| got_429 || self.remaining == Some(0))
        {
            push(t);
        }
        if let Some(t) = self.reset.filter(|_| self.remaining == Some(0)) {
            push(t);
        }
        let day = now + chrono::Duration::days(1);
        until.filter(|t| *t > now).map(|t| t.min(day))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn reads_every_hint_and_takes_the_latest() {
        let now = at("2026-01-08T10:00:00Z");
        let headers = |name: &str| match name {
            "retry-after" => Some("30".to_owned()),
            "x-ratelimit-remaining" => Some("0".to_owned()),
            "x-ratelimit-reset" => Some("1767866520".to_owned()), // 10:02:00
            _ => None,
        };
        let body =
            serde_json::json!({"error": "Rate limit exceeded", "reset_at": "2026-01-08T10:05:00Z"});
        let hints = ServerHints::parse(headers, Some(&body), now);
        assert_eq!(hints.retry_after, Some(Duration::from_secs(30)));
        assert_eq!(hints.reset, Some(at("2026-01-08T10:02:00Z")));
        assert_eq!(
            hints.block_until(now, true),
            Some(at("2026-01-08T10:05:00Z"))
        );
    }

    #[test]
    fn remaining_quota_means_no_block_and_garbage_is_ignored() {
        let now = at("2026-01-08T10:00:00Z");
        let headers = |name: &str| match name {
            "x-ratelimit-remaining" => Some("12".to_owned()),
            "x-ratelimit-reset" => Some("60".to_owned()),
            "retry-after" => Some("soon".to_owned()),
            _ => None,
        };
        let hints = ServerHints::parse(headers, Some(&serde_json::json!({"reset_at": 5})), now);
        assert_eq!(hints.block_until(now, false), None);
        let hints = ServerHints::parse(
            |n| (n == "retry-after").then(|| "Thu, 08 Jan 2026 10:01:00 GMT".into()),
            None,
            now,
        );
        assert_eq!(
            hints.block_until(now, true),
            Some(at("2026-01-08T10:01:00Z"))
        );
    }
}
