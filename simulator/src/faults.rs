//! Fault injection, switched on by flags or at run time through `POST /__sim/faults`: latency,
//! a share of 5xx answers, a share of invalid JSON, dropped connections, and a forced checkpoint or
//! logout for named accounts. Which request gets a fault is decided from the seed and a request
//! counter, so a run is repeatable.

use std::collections::BTreeSet;

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
    /// Accounts that get `checkpoint_required` on every request.
    pub checkpoint: BTreeSet<String>,
    /// Accounts whose sessions end when this is posted (their next requests are sent to the
    /// login page; a new login works). One-shot: not kept in the settings.
    pub logout: BTreeSet<String>,
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
        Ok(())
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
