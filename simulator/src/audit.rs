//! The audit log: every request the simulator received, and the oracle tests use to prove that no
//! sliding window was ever overshot.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::v1::tiers::Tier;
use crate::windows::{Limits, QueryType};

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Seconds since the simulator started (unscaled).
    pub t: f64,
    pub account: Option<String>,
    pub ip: String,
    /// The route template the request matched (`/{username}/`, `/api/graphql`, …), or the literal
    /// path of one that fell to the 404 fallback.
    pub path: String,
    pub query_type: String,
    pub status: u16,
    pub bytes: usize,
    #[serde(skip)]
    pub graphql: bool,
    #[serde(skip)]
    pub iphone: bool,
}

impl Entry {
    pub fn new(
        t: f64,
        account: Option<String>,
        ip: String,
        path: String,
        q: &QueryType,
        status: u16,
        bytes: usize,
    ) -> Self {
        Self {
            t,
            account,
            ip,
            path,
            query_type: q.label(),
            status,
            bytes,
            graphql: q.is_graphql(),
            iphone: *q == QueryType::Iphone,
        }
    }

    /// Whether the request counts against a window (see [`QueryType::is_counted`]).
    pub fn counted(&self) -> bool {
        self.query_type != QueryType::Uncounted.label() && self.query_type != QueryType::Cdn.label()
    }

    /// Logged-in requests count against their account, anonymous ones against their IP.
    pub fn scope(&self) -> String {
        match &self.account {
            Some(a) => format!("account:{a}"),
            None => format!("ip:{}", self.ip),
        }
    }
}

/// Per key and window: the most requests seen in any half-open sliding window, and the cap.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowPeak {
    pub scope: String,
    pub key: String,
    pub window_seconds: f64,
    pub cap: usize,
    pub most: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Oracle {
    pub requests: usize,
    pub responses_429: usize,
    pub peaks: Vec<WindowPeak>,
}

fn most_in_window(times: &mut [f64], length: f64) -> usize {
    times.sort_by(f64::total_cmp);
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        // Half-open (t - length, t]: drop arrivals at least `length` before this one.
        while times[end] - times[start] >= length {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// Computes the peaks of every key from the log.
pub fn oracle(entries: &[Entry], limits: &Limits) -> Oracle {
    let mut groups: BTreeMap<(String, String), (Duration, usize, Vec<f64>)> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.counted()) {
        let scope = e.scope();
        if let Some(tier) = Tier::from_label(&e.query_type) {
            if let Some(w) = limits.v1_tier(tier, e.account.is_none()) {
                groups
                    .entry((scope, e.query_type.clone()))
                    .or_insert_with(|| (w.length, w.cap, Vec::new()))
                    .2
                    .push(e.t);
            }
            continue;
        }
        let per_type = if e.query_type == "other" {
            limits.other
        } else {
            limits.per_type
        };
        let mut push = |key: String, w: crate::windows::Window| {
            groups
                .entry((scope.clone(), key))
                .or_insert_with(|| (w.length, w.cap, Vec::new()))
                .2
                .push(e.t);
        };
        push(e.query_type.clone(), per_type);
        if e.graphql {
            push("graphql".into(), limits.graphql);
        }
        if e.iphone {
            push("iphone-30m".into(), limits.iphone);
        }
    }
    let peaks = groups
        .into_iter()
        .map(|((scope, key), (length, cap, mut times))| WindowPeak {
            scope,
            key,
            window_seconds: length.as_secs_f64(),
            cap,
            most: most_in_window(&mut times, length.as_secs_f64()),
        })
        .collect();
    Oracle {
        requests: entries.len(),
        responses_429: entries.iter().filter(|e| e.status == 429).count(),
        peaks,
    }
}

#[cfg(test)]
mod tests {
    use super::most_in_window;

    #[test]
    fn counts_the_busiest_half_open_window() {
        let mut t = vec![0.0, 1.0, 2.0, 10.0, 10.5, 11.0, 12.0];
        assert_eq!(most_in_window(&mut t, 2.0), 3); // 10, 10.5, 11
        let mut t = vec![0.0, 600.0];
        assert_eq!(most_in_window(&mut t, 600.0), 1, "exactly one window apart");
    }
}
