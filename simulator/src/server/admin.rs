//! The admin routes tests use (`/__sim/*`), and the 404 fallback.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::*;

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/__sim/audit.jsonl", get(audit_dump))
        .route("/__sim/oracle", get(oracle))
        .route("/__sim/clock", get(clock))
        .route("/__sim/metrics", get(metrics))
        .route("/__sim/faults", get(get_faults).post(set_faults))
}

/// The simulator's clock: `t` as in the audit log, and the Unix time the log's zero stands for, so
/// a test can compare audit times with the database's (`started_unix + t`).
pub(super) async fn clock(State(sim): State<Arc<Sim>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"t": sim.started.elapsed().as_secs_f64(), "started_unix": sim.started_unix}),
    )
}

pub(super) async fn audit_dump(State(sim): State<Arc<Sim>>) -> Response {
    let log = sim.audit.lock().map(|l| l.clone()).unwrap_or_default();
    let mut out = String::new();
    for e in &log {
        if let Ok(line) = serde_json::to_string(e) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response()
}

/// A copy of the audit log and the windows it is judged by.
fn audit_and_limits(sim: &Sim) -> (Vec<crate::audit::Entry>, Limits) {
    let log = sim.audit.lock().map(|l| l.clone()).unwrap_or_default();
    let limits = sim
        .windows
        .lock()
        .map(|w| w.limits())
        .unwrap_or(Limits::instagram(1.0));
    (log, limits)
}

/// What the simulator received, in Prometheus's text format: requests by query-type class and
/// status, and each window's busiest moment over every scope as a share of its cap.
pub(super) async fn metrics(State(sim): State<Arc<Sim>>) -> Response {
    let (log, limits) = audit_and_limits(&sim);
    let class = |q: &str| -> &'static str {
        if q.starts_with("qh:") {
            "graphql"
        } else if q.starts_with("doc:") {
            "doc_id"
        } else if q == "iphone" {
            "iphone"
        } else if q == "uncounted" {
            "uncounted"
        } else if q == "cdn" {
            "cdn"
        } else {
            "other"
        }
    };
    let mut requests: std::collections::BTreeMap<(&str, u16), u64> =
        ["graphql", "doc_id", "iphone", "other", "uncounted", "cdn"]
            .iter()
            .flat_map(|c| [(*c, 200), (*c, 429)])
            .map(|k| (k, 0))
            .collect();
    for e in &log {
        *requests
            .entry((class(&e.query_type), e.status))
            .or_default() += 1;
    }
    let mut peaks: std::collections::BTreeMap<&str, f64> =
        ["per_type", "graphql_total", "iphone_30m", "other"]
            .iter()
            .map(|w| (*w, 0.0))
            .collect();
    for p in audit::oracle(&log, &limits).peaks {
        let window = match p.key.as_str() {
            "graphql" => "graphql_total",
            "iphone-30m" => "iphone_30m",
            "other" => "other",
            _ => "per_type",
        };
        let ratio = p.most as f64 / p.cap.max(1) as f64;
        let slot = peaks.entry(window).or_default();
        *slot = slot.max(ratio);
    }
    let mut text = String::from(
        "# HELP trawl_sim_requests_total Requests the simulator received, by query-type class and status\n\
         # TYPE trawl_sim_requests_total counter\n",
    );
    for ((c, status), n) in &requests {
        text.push_str(&format!(
            "trawl_sim_requests_total{{class=\"{c}\",status=\"{status}\"}} {n}\n"
        ));
    }
    text.push_str(
        "# HELP trawl_sim_window_peak_ratio The busiest sliding window so far over every scope, divided by its cap\n\
         # TYPE trawl_sim_window_peak_ratio gauge\n",
    );
    for (w, r) in &peaks {
        text.push_str(&format!(
            "trawl_sim_window_peak_ratio{{window=\"{w}\"}} {r}\n"
        ));
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub(super) async fn oracle(State(sim): State<Arc<Sim>>) -> Response {
    let (log, limits) = audit_and_limits(&sim);
    let report = audit::oracle(&log, &limits);
    json_response(
        StatusCode::OK,
        &serde_json::to_value(report).unwrap_or(Value::Null),
    )
}

pub(super) async fn get_faults(State(sim): State<Arc<Sim>>) -> Response {
    let faults = sim.faults.lock().map(|f| f.clone()).unwrap_or_default();
    json_response(
        StatusCode::OK,
        &serde_json::to_value(faults).unwrap_or(Value::Null),
    )
}

/// Replaces the fault settings (a JSON body in the shape `GET /__sim/faults` returns).
pub(super) async fn set_faults(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return fail(StatusCode::BAD_REQUEST, &format!("invalid faults: {e}")),
    };
    if let Err(e) = faults.validate() {
        return fail(StatusCode::BAD_REQUEST, &e);
    }
    // A forced logout happens now: the sessions the accounts hold end, and a later login starts
    // a session that works (as when Instagram logs a device out once).
    if !faults.logout.is_empty()
        && let Ok(mut sessions) = sim.sessions.lock()
    {
        sessions.retain(|_, (account, _)| !faults.logout.contains(account));
    }
    if let Ok(mut current) = sim.faults.lock() {
        *current = Faults {
            logout: Default::default(),
            ..faults.clone()
        };
    }
    json_response(
        StatusCode::OK,
        &serde_json::to_value(faults).unwrap_or(Value::Null),
    )
}
