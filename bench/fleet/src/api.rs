//! The scheduler's API under concurrent clients, with `wrk` (Debian's package): a Lua script per
//! route adds the bearer token (and, for submissions, a fresh unique key per request so that every
//! POST inserts a job) and prints its figures on one line that is parsed here.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// One `wrk` run.
#[derive(Debug, Clone)]
pub struct Load {
    pub label: String,
    pub requests: u64,
    pub seconds: f64,
    /// Non-2xx/3xx answers, and socket errors (connect, read, write, timeout).
    pub bad_status: u64,
    pub socket_errors: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// The `done` hook every script shares: figures on a line of their own.
const DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK_RESULT %d %d %d %d %d %d %d %.0f %.0f %.0f\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50.0), latency:percentile(99.0), latency.max))
end
"#;

/// A script for `GET` of the URL given to wrk.
pub fn get_script(token: &str) -> String {
    format!("wrk.method = \"GET\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n{DONE}")
}

/// A script that POSTs a `profile` job of one of `targets` per request, each with a unique key of
/// its own (thread id and counter), so that every request inserts.
pub fn submit_script(token: &str, targets: &[String]) -> String {
    let list = targets
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["Content-Type"] = "application/json"
local targets = {{ {list} }}
local threads = 0
local n = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
request = function()
  n = n + 1
  local body = string.format('{{"kind":"profile","target":"%s","unique_key":"api:%d:%d"}}',
    targets[(n % #targets) + 1], tid, n)
  return wrk.format(nil, nil, nil, body)
end
{DONE}"#
    )
}

/// Whether `wrk` is on PATH.
pub fn available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .map(|o| !o.stdout.is_empty() || !o.stderr.is_empty())
        .unwrap_or(false)
}

/// Runs `wrk -t2 -c{clients} -d{seconds}s -s SCRIPT URL` and parses its result line.
pub async fn run(
    label: &str,
    url: &str,
    script: &str,
    clients: usize,
    seconds: u64,
    scratch: &Path,
) -> Result<Load> {
    let file = scratch.join(format!("wrk-{}.lua", label.replace(' ', "-")));
    std::fs::write(&file, script)?;
    let out = tokio::process::Command::new("wrk")
        .args([
            "-t2".to_owned(),
            format!("-c{clients}"),
            format!("-d{seconds}s"),
            "--timeout".into(),
            "10s".into(),
            "-s".into(),
        ])
        .arg(&file)
        .arg(url)
        .output()
        .await
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.starts_with("WRK_RESULT ")) else {
        bail!(
            "wrk printed no result for {label}: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {line:?}"))?;
    let [
        requests,
        duration_us,
        status,
        connect,
        read,
        write,
        timeout,
        p50,
        p99,
        max,
    ] = v[..]
    else {
        bail!("unexpected wrk result line {line:?}");
    };
    let us = |x: f64| Duration::from_secs_f64(x.max(0.0) / 1e6);
    Ok(Load {
        label: label.to_owned(),
        requests: requests as u64,
        seconds: duration_us / 1e6,
        bad_status: status as u64,
        socket_errors: (connect + read + write + timeout) as u64,
        p50: us(p50),
        p99: us(p99),
        max: us(max),
    })
}
