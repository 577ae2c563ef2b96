//! Human-readable durations (`90s`, `5m`, `1h30m`, `7d`) for configuration files, flags and job
//! specifications. A bare number means seconds.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the way people write them. Serialises back to the same notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason} (expected e.g. \"30s\", \"5m\", \"1h30m\", \"7d\", \"250ms\")"
)]
pub struct DurationParseError {
    input: String,
    reason: &'static str,
}

impl HumanDuration {
    pub fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    pub fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl FromStr for HumanDuration {
    type Err = DurationParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationParseError {
            input: input.chars().take(64).collect(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if let Ok(secs) = s.parse::<f64>() {
            return secs_to_duration(secs)
                .map(Self)
                .ok_or_else(|| err("out of range"));
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let digits_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| err("a number needs a unit"))?;
            if digits_end == 0 {
                return Err(err("expected a number before the unit"));
            }
            let value: f64 = rest[..digits_end]
                .parse()
                .map_err(|_| err("not a number"))?;
            rest = &rest[digits_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit_secs = match rest[..unit_end].trim() {
                "ms" => 0.001,
                "s" | "sec" | "secs" => 1.0,
                "m" | "min" | "mins" => 60.0,
                "h" | "hr" | "hrs" => 3600.0,
                "d" | "day" | "days" => 86_400.0,
                "w" => 604_800.0,
                _ => return Err(err("unknown unit (use ms, s, m, h, d or w)")),
            };
            rest = &rest[unit_end..];
            let part = secs_to_duration(value * unit_secs).ok_or_else(|| err("out of range"))?;
            total = total.checked_add(part).ok_or_else(|| err("out of range"))?;
        }
        Ok(Self(total))
    }
}

/// Durations have millisecond resolution: finer input is rounded to the nearest millisecond, so
/// that a duration written back out (`1500ms`, in `trawl config show` or a job sent to the API)
/// reads back as the same duration.
fn secs_to_duration(secs: f64) -> Option<Duration> {
    // Ten years is far beyond any window, lease or retention anyone means; larger values are typos.
    if secs.is_finite() && (0.0..=315_360_000.0).contains(&secs) {
        // In range, so the product is a finite non-negative number well below 2^53.
        Some(Duration::from_millis((secs * 1000.0).round() as u64))
    } else {
        None
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() != 0 {
            return write!(f, "{}ms", d.as_millis());
        }
        let secs = d.as_secs();
        let (value, unit) = match secs {
            0 => (0, "s"),
            s if s % 86_400 == 0 => (s / 86_400, "d"),
            s if s % 3600 == 0 => (s / 3600, "h"),
            s if s % 60 == 0 => (s / 60, "m"),
            s => (s, "s"),
        };
        write!(f, "{value}{unit}")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"5m\", \"1h\" or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                secs_to_duration(v as f64)
                    .map(HumanDuration)
                    .ok_or_else(|| E::custom(format!("{v} seconds is out of range")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                secs_to_duration(v as f64)
                    .map(HumanDuration)
                    .ok_or_else(|| E::custom(format!("{v} seconds is out of range")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                secs_to_duration(v)
                    .map(HumanDuration)
                    .ok_or_else(|| E::custom(format!("{v} seconds is out of range")))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_and_bare_values() {
        let cases = [
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("2d", 172_800_000),
            ("250ms", 250),
            ("1.5s", 1500),
            ("45", 45_000),
        ];
        for (input, ms) in cases {
            let d: HumanDuration = input.parse().unwrap();
            assert_eq!(d.0.as_millis(), ms, "{input}");
        }
    }

    #[test]
    fn refuses_nonsense_with_a_reason() {
        for bad in ["", "s", "5 parsecs", "-3s", "1e400", "nan"] {
            let e = bad.parse::<HumanDuration>().unwrap_err().to_string();
            assert!(e.contains("invalid duration"), "{bad}: {e}");
        }
    }

    /// Found with the fuzz targets `batch_jsonl` and `config`: below a millisecond a duration
    /// was kept exactly but displayed truncated (`1.0000005s` showed as `1000ms`), so a job file's
    /// `recrawl_every` changed on its way to the API and `config show` printed another value.
    #[test]
    fn sub_millisecond_input_is_rounded_and_round_trips() {
        for (input, ms) in [
            ("1.0000005s", 1000),
            ("120.0000005s", 120_000),
            ("0.0004s", 0),
            ("0.0005s", 1),
            ("1.2345", 1235),
            ("1h0.9999s", 3_601_000),
        ] {
            let d: HumanDuration = input.parse().unwrap();
            assert_eq!(d.0, Duration::from_millis(ms), "{input}");
            assert_eq!(
                d.to_string().parse::<HumanDuration>().unwrap(),
                d,
                "{input}"
            );
        }
    }

    #[test]
    fn every_displayed_duration_reads_back() {
        for ms in [
            0,
            1,
            999,
            1000,
            1001,
            59_999,
            60_000,
            3_599_999,
            86_400_000,
            315_360_000_000,
        ] {
            let d = HumanDuration::from_millis(ms);
            assert_eq!(d.to_string().parse::<HumanDuration>().unwrap(), d, "{d}");
        }
    }

    #[test]
    fn displays_in_the_largest_whole_unit() {
        assert_eq!(HumanDuration::from_secs(3600).to_string(), "1h");
        assert_eq!(HumanDuration::from_secs(90).to_string(), "90s");
        assert_eq!(HumanDuration::from_millis(1500).to_string(), "1500ms");
        assert_eq!(HumanDuration::from_secs(7 * 86_400).to_string(), "7d");
    }
}
