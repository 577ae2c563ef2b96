//! A wrapper for values that must never reach a log, a metric label or `trawl config show`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The text printed wherever a secret would have been.
pub const REDACTED: &str = "********";

/// A secret string. `Debug` and `Display` print [`REDACTED`]; the value is reachable only through
/// [`Secret::expose`], so every place that reads it is easy to find.
///
/// It serialises to its real value because configuration layers are merged through serde; code that
/// shows configuration to people uses [`crate::config::Config::redacted`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares in time independent of where the first difference is, so a token cannot be guessed
    /// byte by byte from response times.
    pub fn constant_time_eq(&self, other: &str) -> bool {
        let a = self.0.as_bytes();
        let b = other.as_bytes();
        let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
        for i in 0..a.len().max(b.len()) {
            let x = a.get(i).copied().unwrap_or(0);
            let y = b.get(i).copied().unwrap_or(0);
            diff |= x ^ y;
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Replaces the password of a `postgres://user:password@host/db` URL with [`REDACTED`].
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:{}{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            REDACTED,
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), format!("{REDACTED} {REDACTED}"));
    }

    #[test]
    fn compares_exactly() {
        let s = Secret::new("abc");
        assert!(s.constant_time_eq("abc"));
        assert!(!s.constant_time_eq("abd"));
        assert!(!s.constant_time_eq("ab"));
        assert!(!s.constant_time_eq("abcd"));
        assert!(!s.constant_time_eq(""));
    }

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(
            redact_url_password("postgres://trawl:s3cret@db:5432/trawl?sslmode=require"),
            format!("postgres://trawl:{REDACTED}@db:5432/trawl?sslmode=require")
        );
        assert_eq!(
            redact_url_password("postgres://trawl@db/trawl"),
            "postgres://trawl@db/trawl"
        );
        assert_eq!(redact_url_password("not a url"), "not a url");
    }
}
