//! Fault injection, switched on by flags or at run time through `POST /__sim/faults`: latency,
//! a share of 5xx answers, a share of invalid JSON, dropped connections, slow media bodies, a
//! forced checkpoint or logout for named accounts, and overrides: exact answers (status, headers,
//! body) for the next requests whose path matches. Which request gets a random fault is decided
//! from the seed and a request counter, so a run is repeatable.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Added latency: most requests get up to `latency_ms`; `spike_rate` of them get `spike_ms`.
    pub latency_ms: u64,
    pub spike_rate: f64,
    pub spike_ms: u64,
    /// Share of requests answered 500/502/503.
    pub error_rate: f64,
    /// Share answered 200 with a truncated, invalid JSON body.
    pub invalid_json_rate: f64,
    /// Share whose connection is dropped before a complete response.
    pub drop_rate: f64,
    /// Media bodies from the CDN are sent at most this fast (0: as fast as the client reads), to
    /// stand in for a slow CDN edge or a congested link.
    pub cdn_bytes_per_second: u64,
    /// Accounts that get `checkpoint_required` on every request.
    pub checkpoint: BTreeSet<String>,
    /// Accounts whose sessions end when this is posted (their next requests are sent to the
    /// login page; a new login works). One-shot: not kept in the settings.
    pub logout: BTreeSet<String>,
    /// Exact answers for matching requests, tried in order; each answers `count` requests and is
    /// then spent. They come before windows and every other fault.
    pub overrides: Vec<Override>,
}

/// Most bytes an override's body may expand to.
pub const MAX_OVERRIDE_BODY: usize = 64 * 1024 * 1024;

/// One canned answer: what a hostile or broken Instagram could send, exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Override {
    /// Matches requests whose path and query (`/graphql/query/?query_hash=…`) contain this;
    /// empty matches every request (but never `/__sim/…`).
    pub path_contains: String,
    /// Only this method (`GET`, `POST`), if given.
    pub method: Option<String>,
    /// How many matching requests get this answer (default 1).
    pub count: u64,
    /// Status code (default 200).
    pub status: u16,
    /// Response headers, e.g. `{"location": "/accounts/login/"}` for a redirect.
    pub headers: BTreeMap<String, String>,
    /// The body as text.
    pub body: String,
    /// The body as hex instead (bytes that are not UTF-8).
    pub body_hex: Option<String>,
    /// Replaces `{{REPEAT}}` in the body with `times` copies of `item` joined by `separator`
    /// (`{{I}}` in `item` becomes the copy's index), for huge answers without huge requests.
    pub repeat: Option<Repeat>,
    /// Sends only this many bytes of the body, then cuts the connection (the `content-length`
    /// announces the whole body).
    pub drop_after_bytes: Option<usize>,
}

impl Default for Override {
    fn default() -> Self {
        Self {
            path_contains: String::new(),
            method: None,
            count: 1,
            status: 200,
            headers: BTreeMap::new(),
            body: String::new(),
            body_hex: None,
            repeat: None,
            drop_after_bytes: None,
        }
    }
}

/// Copies of `item` for an override's `{{REPEAT}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Repeat {
    pub item: String,
    pub separator: String,
    pub times: usize,
}

impl Override {
    /// Whether this override answers a `method` request for `path_and_query`.
    pub fn matches(&self, method: &str, path_and_query: &str) -> bool {
        self.count > 0
            && !path_and_query.starts_with("/__sim/")
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && path_and_query.contains(&self.path_contains)
    }

    /// The body's bytes, with any repeat expanded.
    pub fn body_bytes(&self) -> Result<Vec<u8>, String> {
        let base = match &self.body_hex {
            Some(hex) => decode_hex(hex)?,
            None => self.body.clone().into_bytes(),
        };
        let Some(repeat) = &self.repeat else {
            return Ok(base);
        };
        let marker = b"{{REPEAT}}";
        let at = base
            .windows(marker.len())
            .position(|w| w == marker)
            .ok_or("repeat needs a {{REPEAT}} marker in the body")?;
        let estimate = repeat
            .times
            .saturating_mul(repeat.item.len() + repeat.separator.len() + 8);
        if estimate.saturating_add(base.len()) > MAX_OVERRIDE_BODY {
            return Err(format!(
                "an override body is at most {MAX_OVERRIDE_BODY} bytes"
            ));
        }
        let mut out = Vec::with_capacity(estimate + base.len());
        out.extend_from_slice(&base[..at]);
        for i in 0..repeat.times {
            if i > 0 {
                out.extend_from_slice(repeat.separator.as_bytes());
            }
            out.extend_from_slice(repeat.item.replace("{{I}}", &i.to_string()).as_bytes());
        }
        out.extend_from_slice(&base[at + marker.len()..]);
        Ok(out)
    }

    fn validate(&self) -> Result<(), String> {
        if !(100..=599).contains(&self.status) {
            return Err(format!(
                "override status {} is not an HTTP status",
                self.status
            ));
        }
        for (name, value) in &self.headers {
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || axum::http::HeaderValue::from_str(value).is_err()
            {
                return Err(format!("override header {name:?} is not a valid header"));
            }
        }
        if self.body_hex.is_some() && !self.body.is_empty() {
            return Err("give an override body or body_hex, not both".into());
        }
        self.body_bytes().map(|_| ())
    }
}

/// Hex digits (whitespace between them ignored) as bytes: an override's `body_hex`, and the
/// corpus test's bytes that are not UTF-8.
pub fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("hex has an odd number of digits".into());
    }
    // Not `u8::from_str_radix` alone: it takes a sign, so "+f" would pass for a digit pair.
    if let Some(bad) = digits.iter().find(|b| !b.is_ascii_hexdigit()) {
        return Err(format!(
            "hex holds {:?}, which is not a hex digit",
            char::from(*bad)
        ));
    }
    Ok(digits
        .chunks(2)
        .map(|pair| (hex_value(pair[0]) << 4) | hex_value(pair[1]))
        .collect())
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    ServerError(u16),
    InvalidJson,
    Drop,
}

impl Faults {
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("spike_rate", self.spike_rate),
            ("error_rate", self.error_rate),
            ("invalid_json_rate", self.invalid_json_rate),
            ("drop_rate", self.drop_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        if self.latency_ms > 60_000 || self.spike_ms > 60_000 {
            return Err("latencies are capped at 60000 ms".into());
        }
        self.overrides.iter().try_for_each(Override::validate)
    }

    /// Takes one answer from the first override that matches, if any.
    pub fn take_override(&mut self, method: &str, path_and_query: &str) -> Option<Override> {
        let found = self
            .overrides
            .iter_mut()
            .find(|o| o.matches(method, path_and_query))?;
        found.count -= 1;
        Some(found.clone())
    }

    /// The latency and fault for a request, from a uniform random number per draw.
    pub fn draw(&self, roll: impl Fn(u64) -> f64) -> (u64, Option<Fault>) {
        let mut latency = (roll(1) * self.latency_ms as f64) as u64;
        if roll(2) < self.spike_rate {
            latency = latency.max(self.spike_ms);
        }
        let r = roll(3);
        let fault = if r < self.error_rate {
            Some(Fault::ServerError(
                [500, 502, 503][(roll(4) * 3.0) as usize % 3],
            ))
        } else if r < self.error_rate + self.invalid_json_rate {
            Some(Fault::InvalidJson)
        } else if r < self.error_rate + self.invalid_json_rate + self.drop_rate {
            Some(Fault::Drop)
        } else {
            None
        };
        (latency, fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_match_in_order_until_spent_and_never_the_admin_routes() {
        let mut faults: Faults = serde_json::from_str(
            r#"{"overrides": [{"path_contains": "web_profile_info", "count": 2, "status": 503},
                              {"method": "post", "body": "any"}]}"#,
        )
        .unwrap();
        faults.validate().unwrap();
        let path = "/api/v1/users/web_profile_info/?username=x";
        assert_eq!(faults.take_override("GET", path).unwrap().status, 503);
        assert_eq!(faults.take_override("GET", path).unwrap().status, 503);
        assert!(faults.take_override("GET", path).is_none(), "spent");
        assert!(faults.take_override("POST", "/__sim/faults").is_none());
        assert_eq!(
            faults.take_override("POST", "/graphql/query").unwrap().body,
            "any"
        );
    }

    #[test]
    fn bodies_expand_repeats_and_hex_and_bad_overrides_are_refused() {
        let o = Override {
            body: "[{{REPEAT}}]".into(),
            repeat: Some(Repeat {
                item: "{{I}}".into(),
                separator: ",".into(),
                times: 4,
            }),
            ..Override::default()
        };
        assert_eq!(o.body_bytes().unwrap(), b"[0,1,2,3]");
        let hex = Override {
            body_hex: Some("ff fe 7b".into()),
            ..Override::default()
        };
        assert_eq!(hex.body_bytes().unwrap(), [0xff, 0xfe, b'{']);
        for bad in [
            r#"{"overrides": [{"status": 99}]}"#,
            r#"{"overrides": [{"headers": {"bad name": "x"}}]}"#,
            r#"{"overrides": [{"body_hex": "abc"}]}"#,
            r#"{"overrides": [{"body_hex": "+f"}]}"#,
            r#"{"overrides": [{"body": "no marker", "repeat": {"item": "x", "times": 2}}]}"#,
            r#"{"overrides": [{"body": "{{REPEAT}}", "repeat": {"item": "x", "times": 99999999999}}]}"#,
        ] {
            let faults: Faults = serde_json::from_str(bad).unwrap();
            assert!(faults.validate().is_err(), "{bad}");
        }
    }
}
