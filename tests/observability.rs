//! The observability proofs: the dashboards and alert rules are well-formed, and every panel and alert
//! expression returns data from a real Prometheus scraping a real crawl (with 429s and waits).
//!
//! Needs `prometheus` and `promtool`, which `scripts/install-prometheus.sh` installs when they
//! are missing (the test runs it).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{Fleet, FleetOptions, posts_with_comments};
use trawl_shared::JobSpec;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `prometheus` or `promtool`, installed by scripts/install-prometheus.sh when it is missing.
fn tool(name: &str) -> PathBuf {
    let on_path = || {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    };
    if let Some(found) = on_path() {
        return found;
    }
    if let Err(e) = trawl_shared::testing::install("install-prometheus.sh") {
        panic!("{name} is not installed and installing it failed: {e}");
    }
    on_path()
        .unwrap_or_else(|| panic!("{name} is still missing after scripts/install-prometheus.sh"))
}

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
            out.push((path.display().to_string(), json));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 2, "both dashboards are present");
    out
}

/// Every (dashboard, panel title, expression) of the dashboards.
fn expressions() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                out.push((
                    file.clone(),
                    p["title"].as_str().unwrap_or("").to_owned(),
                    t["expr"].as_str().unwrap_or("").to_owned(),
                ));
            }
        }
    }
    out
}

/// Grafana's variables replaced the way Grafana would for a query.
fn substitute(expr: &str, rate_interval: &str) -> String {
    expr.replace("$__rate_interval", rate_interval)
        .replace("$instance", ".*")
}

/// The alert rules' expressions, each with its threshold comparison turned into `bool`, so that
/// the signal returns a sample whether or not the alert fires.
fn alert_signals() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("deploy/prometheus/alerts.yml")).unwrap();
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("- alert: ") {
            name = n.to_owned();
        } else if let Some(expr) = line.strip_prefix("expr: ") {
            let (signal, threshold) = ["==", ">", "<"]
                .iter()
                .find_map(|op| {
                    let at = expr.rfind(&format!(" {op} "))?;
                    Some((
                        expr[..at].to_owned(),
                        format!("{op} bool{}", &expr[at + op.len() + 1..]),
                    ))
                })
                .unwrap_or_else(|| panic!("alert {name}: expected `SIGNAL OP THRESHOLD`"));
            out.push((name.clone(), format!("{signal} {threshold}")));
        }
    }
    let alerts = text
        .lines()
        .filter(|l| l.trim().starts_with("- alert: "))
        .count();
    assert!(alerts >= 5, "the alert rules were read ({alerts})");
    assert_eq!(out.len(), alerts, "every alert has an expression");
    out
}

#[test]
fn dashboards_follow_the_rules_and_every_expression_parses() {
    let rate = regex_lite_ranges();
    for (file, d) in dashboards() {
        assert!(
            d["uid"].as_str().is_some_and(|u| u.starts_with("trawl-")),
            "{file}: a stable uid"
        );
        let vars = d["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
            "{file}: a `datasource` variable"
        );
        assert!(
            d["schemaVersion"].as_u64().unwrap() >= 39,
            "{file}: schema version"
        );
        for p in d["panels"].as_array().unwrap() {
            if p["type"] == "row" {
                continue;
            }
            let title = p["title"].as_str().unwrap_or("?");
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{file} / {title}: datasource"
            );
            assert!(
                p["description"].as_str().is_some_and(|s| s.len() > 20),
                "{file} / {title}: a description"
            );
            assert!(
                p["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .is_some_and(|u| !u.is_empty()),
                "{file} / {title}: a unit"
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file} / {title}: a query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{file} / {title}");
                let expr = t["expr"].as_str().unwrap();
                for range in rate(expr) {
                    assert_eq!(range, "$__rate_interval", "{file} / {title}: `{expr}`");
                }
                let unrated = unrated_counters(expr);
                assert!(
                    unrated.is_empty(),
                    "{file} / {title}: counters {unrated:?} are not rated in `{expr}`"
                );
            }
        }
    }

    // Every expression parses as PromQL: promtool checks them as recording rules.
    let dir = tempdir("lint");
    let mut rules = String::from("groups:\n  - name: lint\n    rules:\n");
    for (i, (_, _, expr)) in expressions().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: trawl:lint_{i}\n        expr: {}\n",
            serde_json::to_string(&substitute(expr, "1m")).unwrap()
        ));
    }
    let file = dir.join("dashboards.rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new(tool("promtool"))
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "a dashboard expression does not parse: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_config_and_alert_rules_pass_promtool() {
    for args in [
        vec!["check", "config", "deploy/prometheus/prometheus.yml"],
        vec!["check", "rules", "deploy/prometheus/alerts.yml"],
        vec!["test", "rules", "deploy/prometheus/alerts.test.yml"],
    ] {
        let out = Command::new(tool("promtool"))
            .args(&args)
            .current_dir(repo(""))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The `[...]` ranges of an expression.
fn regex_lite_ranges() -> impl Fn(&str) -> Vec<String> {
    |expr: &str| {
        let mut out = Vec::new();
        let mut rest = expr;
        while let Some(open) = rest.find('[') {
            let Some(close) = rest[open..].find(']') else {
                break;
            };
            out.push(rest[open + 1..open + close].to_owned());
            rest = &rest[open + close + 1..];
        }
        out
    }
}

/// Counter-like series (`_total`, `_bucket`, `_count`, `_sum`) not directly inside `rate(` or
/// `increase(`.
fn unrated_counters(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let word = &expr[start..i];
            let counter = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .any(|s| word.ends_with(s))
                && word.starts_with("trawl_");
            if counter {
                let before = expr[..start].trim_end();
                if !(before.ends_with("rate(") || before.ends_with("increase(")) {
                    out.push(word.to_owned());
                }
            }
        } else {
            i += 1;
        }
    }
    out
}

fn tempdir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "trawl-obs-{what}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(fleet: &Fleet) -> Prometheus {
    let dir = tempdir("prometheus");
    let workers: Vec<String> = fleet
        .worker_ports
        .iter()
        .map(|p| format!("\"127.0.0.1:{p}\""))
        .collect();
    let sim = fleet.sim_url.trim_start_matches("http://");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {alerts}\n\
         scrape_configs:\n\
         \x20 - job_name: trawl-scheduler\n    static_configs:\n      - targets: [\"127.0.0.1:{sched}\"]\n\
         \x20 - job_name: trawl-workers\n    static_configs:\n      - targets: [{workers}]\n\
         \x20 - job_name: trawl-simulator\n    metrics_path: /__sim/metrics\n    static_configs:\n      - targets: [\"{sim}\"]\n",
        alerts = repo("deploy/prometheus/alerts.yml").display(),
        sched = fleet.scheduler_port,
        workers = workers.join(", "),
    );
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).unwrap();
    let port = support::free_port();
    let log = std::fs::File::create(fleet.logs.join("prometheus.log")).unwrap();
    let child = Command::new(tool("prometheus"))
        .arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn query(http: &reqwest::Client, prometheus: &Prometheus, expr: &str) -> Value {
    support::prometheus_query(http, &prometheus.url, expr)
        .await
        .unwrap()
}

/// Why a query's answer is not acceptable data, if it is not.
fn problem(answer: &Value) -> Option<String> {
    if answer["status"] != "success" {
        return Some(format!("error: {answer}"));
    }
    let Some(result) = answer["data"]["result"].as_array() else {
        return Some(format!("no result vector: {answer}"));
    };
    if result.is_empty() {
        return Some("empty result".into());
    }
    let nan = result
        .iter()
        .filter(|s| s["value"][1].as_str().is_some_and(|v| v == "NaN"))
        .count();
    (nan > 0).then(|| format!("{nan} NaN samples in {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_and_alert_has_data_from_a_real_prometheus_during_a_crawl() {
    // The simulator's windows are twice as long as the workers believe: they earn 429s, penalties
    // and ledger waits, which the dashboards must show.
    let fleet = Fleet::start(FleetOptions {
        accounts: 2,
        workers: 2,
        time_scale: 0.01,
        sim_time_scale: Some(0.02),
        metrics_ports: true,
        worker_env: vec![
            ("TRAWL_LIMITER__PACING_PERIOD".into(), "1ms".into()),
            ("TRAWL_LIMITER__PACING_JITTER".into(), "0ms".into()),
        ],
        ..FleetOptions::default()
    })
    .await;
    let prometheus = start_prometheus(&fleet);
    let users = fleet.public_users_with_posts(30);
    let mut jobs = posts_with_comments(&users);
    jobs.extend(users.iter().take(4).map(|u| JobSpec::new("stories", u)));
    jobs.extend(users.iter().take(4).map(|u| JobSpec::new("followers", u)));
    fleet.submit(jobs).await;

    // Crawl until the simulator has refused some requests and the crawl has run a while.
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    loop {
        let oracle = fleet.oracle().await;
        if oracle["responses_429"].as_u64().unwrap_or(0) > 0
            && started.elapsed() > Duration::from_secs(20)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no 429 in two minutes; logs in {}",
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Every /metrics body passes promtool.
    let mut bodies = vec![(
        "scheduler".to_owned(),
        format!("http://127.0.0.1:{}/metrics", fleet.scheduler_port),
    )];
    for (i, p) in fleet.worker_ports.iter().enumerate() {
        bodies.push((
            format!("worker {i}"),
            format!("http://127.0.0.1:{p}/metrics"),
        ));
    }
    bodies.push((
        "simulator".into(),
        format!("{}/__sim/metrics", fleet.sim_url),
    ));
    for (who, url) in bodies {
        let body = http.get(&url).send().await.unwrap().text().await.unwrap();
        let mut check = Command::new(tool("promtool"))
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut check.stdin.take().unwrap(), body.as_bytes()).unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics on the {who}'s /metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Every dashboard and alert expression returns data (no empty result, no NaN).
    let mut failures = Vec::new();
    let mut checked = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        failures.clear();
        for (file, title, expr) in expressions() {
            let q = substitute(&expr, "1m");
            if let Some(p) = problem(&query(&http, &prometheus, &q).await) {
                failures.push(format!("{file} / {title}: `{q}`: {p}"));
            }
            checked += 1;
        }
        for (alert, signal) in alert_signals() {
            if let Some(p) = problem(&query(&http, &prometheus, &signal).await) {
                failures.push(format!("alert {alert}: `{signal}`: {p}"));
            }
            checked += 1;
        }
        // Prometheus needs a few scrapes before every rate has two samples.
        if failures.is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        failures.is_empty(),
        "{} of the queries have no data:\n{}\nlogs in {}",
        failures.len(),
        failures.join("\n"),
        fleet.logs.display()
    );
    assert!(checked > 30);
    // The pressure the dashboards exist to show was there.
    let seen = query(
        &http,
        &prometheus,
        "sum(trawl_instagram_429_responses_total) > 0",
    )
    .await;
    assert!(problem(&seen).is_none(), "Prometheus saw no 429: {seen}");
}
