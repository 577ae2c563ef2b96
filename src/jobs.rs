//! The client verbs: `submit` and `jobs …`, talking to the scheduler API.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use trawl_shared::batch::{self, Batch};
use trawl_shared::domain::{JobOptions, JobSpec, JobState};
use trawl_shared::duration::HumanDuration;
use trawl_shared::queue::{Job, QueueStats, Submitted};

use crate::cli::{JobsCommand, SubmitArgs};
use crate::client::{ApiClient, CliError};

/// Jobs per batch request when submitting a file (well under the server's default limit).
const FILE_CHUNK: usize = 1000;

pub async fn submit(
    client: &ApiClient,
    args: SubmitArgs,
    default_attempts: i32,
) -> Result<(), CliError> {
    if let Some(file) = &args.file {
        return submit_file(client, file, args.json, default_attempts).await;
    }
    let (Some(kind), Some(target)) = (args.kind, args.target) else {
        return Err(CliError::Invalid(
            "submit needs KIND and TARGET, or --file".into(),
        ));
    };
    let run_at = args.run_at.as_deref().map(parse_run_at).transpose()?;
    let recrawl_every = args
        .recrawl_every
        .as_deref()
        .map(|s| s.parse::<HumanDuration>())
        .transpose()
        .map_err(|e| CliError::BadFlag {
            flag: "--recrawl-every",
            reason: e.to_string(),
        })?;
    let spec = JobSpec {
        kind,
        target,
        priority: args.priority,
        run_at,
        max_attempts: args.max_attempts,
        unique_key: args.unique_key,
        recrawl_every,
        options: (args.max_items.is_some() || args.since || args.with_comments || args.with_media)
            .then_some(JobOptions {
                max_items: args.max_items,
                stop_at_stored: args.since,
                with_comments: args.with_comments,
                with_media: args.with_media,
            }),
    };
    // Checked here too, so a typo is reported without a round trip and names the flag's field.
    spec.clone()
        .validate(default_attempts)
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let answer: Value = client.post("/v1/jobs", &spec).await?;
    if args.json {
        print_json(&answer);
        return Ok(());
    }
    let job: Job =
        serde_json::from_value(answer["job"].clone()).map_err(CliError::UnreadableAnswer)?;
    if answer["created"] == true {
        println!(
            "created job {} ({} {}), {}",
            job.id, job.kind, job.target, job.state
        );
    } else {
        println!(
            "job {} with key {} is already {}; not submitted again",
            job.id, job.unique_key, job.state
        );
    }
    Ok(())
}

/// `+10m` (from now) or an RFC 3339 time.
fn parse_run_at(s: &str) -> Result<DateTime<Utc>, CliError> {
    if let Some(delay) = s.strip_prefix('+') {
        let d = delay
            .parse::<HumanDuration>()
            .map_err(|e| CliError::BadFlag {
                flag: "--run-at",
                reason: e.to_string(),
            })?;
        let d = chrono::Duration::from_std(d.0).map_err(|_| CliError::BadFlag {
            flag: "--run-at",
            reason: "delay out of range".into(),
        })?;
        return Ok(Utc::now() + d);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| CliError::BadFlag {
            flag: "--run-at",
            reason: format!(
                "{s:?} is neither an RFC 3339 time (2026-12-01T08:00:00Z) nor a delay (+10m): {e}"
            ),
        })
}

async fn submit_file(
    client: &ApiClient,
    path: &Path,
    json_out: bool,
    default_attempts: i32,
) -> Result<(), CliError> {
    let bytes = std::fs::read(path).map_err(|source| CliError::CannotRead {
        what: path.display().to_string(),
        source,
    })?;
    let Batch {
        jobs: good,
        rejected,
    } = batch::parse_jsonl(&bytes, default_attempts);
    let mut submitted: Vec<(usize, Submitted)> = Vec::with_capacity(good.len());
    for chunk in good.chunks(FILE_CHUNK) {
        let body = json!({ "jobs": chunk.iter().map(|(_, s)| s).collect::<Vec<_>>() });
        let answer: Value = client.post("/v1/jobs/batch", &body).await?;
        let results: Vec<Submitted> = serde_json::from_value(answer["results"].clone())
            .map_err(CliError::UnreadableAnswer)?;
        submitted.extend(chunk.iter().map(|(line, _)| *line).zip(results));
    }
    let created = submitted.iter().filter(|(_, s)| s.created).count();
    if json_out {
        print_json(&json!({
            "submitted": submitted.iter().map(|(line, s)| json!({
                "line": line, "id": s.id, "created": s.created, "unique_key": s.unique_key
            })).collect::<Vec<_>>(),
            "rejected": rejected.iter().map(|(line, e)| json!({"line": line, "error": e})).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "submitted {} jobs from {} ({} created, {} already active)",
            submitted.len(),
            path.display(),
            created,
            submitted.len() - created
        );
        for (line, error) in &rejected {
            eprintln!("{}:{line}: {error}", path.display());
        }
    }
    match (rejected.len(), submitted.len()) {
        (0, _) => Ok(()),
        (r, 0) => Err(CliError::Invalid(format!(
            "all {r} job lines of {} were rejected; nothing submitted",
            path.display()
        ))),
        (r, s) => Err(CliError::PartlyRejected(format!(
            "{r} lines of {} were rejected (listed above); the other {s} jobs were submitted",
            path.display()
        ))),
    }
}

pub async fn jobs(client: &ApiClient, command: JobsCommand) -> Result<(), CliError> {
    match command {
        JobsCommand::List {
            kind,
            state,
            count,
            cursor,
            all,
            json,
        } => list(client, kind, state, count, cursor, all, json).await,
        JobsCommand::Show { id, json } => {
            let job: Value = client.get(&format!("/v1/jobs/{id}")).await?;
            show_job(job, json)
        }
        JobsCommand::Cancel { id, json } => {
            let job: Value = client
                .post(&format!("/v1/jobs/{id}/cancel"), &json!({}))
                .await?;
            show_job(job, json)
        }
        JobsCommand::Retry { id, json } => {
            let job: Value = client
                .post(&format!("/v1/jobs/{id}/retry"), &json!({}))
                .await?;
            show_job(job, json)
        }
        JobsCommand::Pause { kind, json } => set_paused(client, &kind, "pause", json).await,
        JobsCommand::Resume { kind, json } => set_paused(client, &kind, "resume", json).await,
        JobsCommand::Stats { json } => {
            let stats: Value = client.get("/v1/stats").await?;
            if json {
                print_json(&stats);
                return Ok(());
            }
            let stats: QueueStats =
                serde_json::from_value(stats).map_err(CliError::UnreadableAnswer)?;
            print_stats(&stats);
            Ok(())
        }
        JobsCommand::Watch {
            interval,
            until_done,
        } => {
            let interval = interval
                .parse::<HumanDuration>()
                .map_err(|e| CliError::BadFlag {
                    flag: "--interval",
                    reason: e.to_string(),
                })?;
            watch(
                client,
                interval.0.max(Duration::from_millis(100)),
                until_done,
            )
            .await
        }
    }
}

async fn set_paused(
    client: &ApiClient,
    kind: &str,
    verb: &str,
    json_out: bool,
) -> Result<(), CliError> {
    let answer: Value = client
        .post(
            &format!("/v1/kinds/{}/{verb}", url_segment(kind)),
            &json!({}),
        )
        .await?;
    if json_out {
        print_json(&answer);
    } else {
        let paused = answer["paused"] == true;
        println!("{kind}: {}", if paused { "paused" } else { "leasing" });
    }
    Ok(())
}

/// Percent-encodes everything but unreserved characters, so a hostile argument stays one segment.
pub fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn list(
    client: &ApiClient,
    kind: Option<String>,
    state: Option<String>,
    count: u32,
    mut cursor: Option<String>,
    all: bool,
    json_out: bool,
) -> Result<(), CliError> {
    let mut first = true;
    loop {
        let mut query = vec![format!("count={count}")];
        if let Some(k) = &kind {
            query.push(format!("kind={}", url_segment(k)));
        }
        if let Some(s) = &state {
            query.push(format!("state={}", url_segment(s)));
        }
        if let Some(c) = &cursor {
            query.push(format!("cursor={}", url_segment(c)));
        }
        let page: Value = client.get(&format!("/v1/jobs?{}", query.join("&"))).await?;
        if json_out {
            print_json(&page);
        } else {
            let jobs: Vec<Job> =
                serde_json::from_value(page["jobs"].clone()).map_err(CliError::UnreadableAnswer)?;
            print_table(&jobs, first);
        }
        first = false;
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        match (&cursor, all) {
            (Some(_), true) => continue,
            (Some(c), false) if !json_out => {
                println!("more: --cursor {c}");
                return Ok(());
            }
            _ => return Ok(()),
        }
    }
}

fn print_table(jobs: &[Job], header: bool) {
    if header {
        println!(
            "{:>8}  {:<14} {:<24} {:<10} {:>7}  {:<20} LAST ERROR",
            "ID", "KIND", "TARGET", "STATE", "ATTEMPT", "RUN AT"
        );
    }
    for j in jobs {
        println!(
            "{:>8}  {:<14} {:<24} {:<10} {:>3}/{:<3}  {:<20} {}",
            j.id,
            j.kind,
            truncate(&j.target, 24),
            j.state,
            j.attempt,
            j.max_attempts,
            j.run_at.format("%Y-%m-%d %H:%M:%S"),
            j.last_error
                .as_deref()
                .map(|e| truncate(e, 60))
                .unwrap_or_default()
        );
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn show_job(job: Value, json_out: bool) -> Result<(), CliError> {
    if json_out {
        print_json(&job);
        return Ok(());
    }
    let j: Job = serde_json::from_value(job).map_err(CliError::UnreadableAnswer)?;
    println!("job {}: {} {}", j.id, j.kind, j.target);
    println!("  state        {}", j.state);
    println!("  attempt      {} of {}", j.attempt, j.max_attempts);
    println!("  priority     {}", j.priority);
    println!("  run at       {}", j.run_at);
    println!("  unique key   {}", j.unique_key);
    if let Some(every) = j.recrawl_every_secs {
        println!(
            "  recrawl      every {}",
            HumanDuration(Duration::from_secs_f64(every))
        );
    }
    if let Some(owner) = &j.lease_owner {
        println!(
            "  leased by    {owner} until {}",
            j.lease_expires_at
                .map(|t| t.to_string())
                .unwrap_or_default()
        );
    }
    if let Some(cp) = &j.checkpoint {
        println!("  checkpoint   {cp}");
    }
    if let Some(e) = &j.last_error {
        println!("  last error   {e}");
    }
    println!("  created      {}", j.created_at);
    if let Some(t) = j.finished_at {
        println!("  finished     {t}");
    }
    Ok(())
}

/// Totals per kind: state → count.
fn per_kind(stats: &QueueStats) -> BTreeMap<String, BTreeMap<JobState, i64>> {
    let mut kinds: BTreeMap<String, BTreeMap<JobState, i64>> = BTreeMap::new();
    for row in &stats.rows {
        *kinds
            .entry(row.kind.clone())
            .or_default()
            .entry(row.state)
            .or_default() += row.jobs;
    }
    kinds
}

fn print_stats(stats: &QueueStats) {
    println!(
        "{:<14} {:>8} {:>8} {:>10} {:>8} {:>10}  OLDEST RUNNABLE",
        "KIND", "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"
    );
    for (kind, states) in per_kind(stats) {
        let get = |s| states.get(&s).copied().unwrap_or(0);
        let oldest = stats
            .rows
            .iter()
            .filter(|r| r.kind == kind)
            .filter_map(|r| r.oldest_runnable_age_seconds)
            .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
        println!(
            "{:<14} {:>8} {:>8} {:>10} {:>8} {:>10}  {}",
            kind,
            get(JobState::Queued),
            get(JobState::Running),
            get(JobState::Completed),
            get(JobState::Failed),
            get(JobState::Cancelled),
            oldest
                .map(|s| format!("{s:.0}s ago"))
                .unwrap_or_else(|| "-".into())
        );
    }
    if !stats.paused_kinds.is_empty() {
        println!("paused: {}", stats.paused_kinds.join(", "));
    }
}

/// Draws one progress bar per kind: finished (completed, failed, cancelled) out of all jobs.
pub fn render_progress(stats: &QueueStats) -> String {
    const WIDTH: usize = 30;
    let mut out = String::new();
    for (kind, states) in per_kind(stats) {
        let get = |s| states.get(&s).copied().unwrap_or(0);
        let total: i64 = states.values().sum();
        let done = get(JobState::Completed) + get(JobState::Failed) + get(JobState::Cancelled);
        let filled = if total == 0 {
            0
        } else {
            (done as usize * WIDTH) / total as usize
        };
        let paused = if stats.paused_kinds.contains(&kind) {
            "  (paused)"
        } else {
            ""
        };
        out.push_str(&format!(
            "{kind:<14} [{}{}] {done:>6}/{total:<6} queued {:<5} running {:<4} failed {}{paused}\n",
            "█".repeat(filled),
            "░".repeat(WIDTH - filled),
            get(JobState::Queued),
            get(JobState::Running),
            get(JobState::Failed),
        ));
    }
    if out.is_empty() {
        out.push_str("(no jobs)\n");
    }
    out
}

/// Whether any job is still queued or running.
pub fn has_active(stats: &QueueStats) -> bool {
    stats
        .rows
        .iter()
        .any(|r| matches!(r.state, JobState::Queued | JobState::Running) && r.jobs > 0)
}

pub async fn watch(
    client: &ApiClient,
    interval: Duration,
    until_done: bool,
) -> Result<(), CliError> {
    let tty = std::io::stdout().is_terminal();
    let mut previous_lines = 0;
    let mut previous_frame = String::new();
    loop {
        let stats: QueueStats = client.get("/v1/stats").await?;
        let frame = render_progress(&stats);
        if until_done && !has_active(&stats) && frame == previous_frame {
            return Ok(());
        }
        if !tty && frame == previous_frame {
            // A log file gets a frame only when something changed.
            tokio::time::sleep(interval).await;
            continue;
        }
        let mut stdout = std::io::stdout().lock();
        if tty && previous_lines > 0 {
            // Move up over the previous frame and clear it, so the bars redraw in place.
            let _ = write!(stdout, "\x1b[{previous_lines}A\x1b[J");
        }
        let _ = write!(stdout, "{frame}");
        let _ = stdout.flush();
        previous_lines = frame.lines().count();
        previous_frame = frame;
        drop(stdout);
        if until_done && !has_active(&stats) {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

pub fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use trawl_shared::queue::StatsRow;

    #[test]
    fn progress_bars_show_finished_out_of_total() {
        let stats = QueueStats {
            rows: vec![
                StatsRow {
                    kind: "profile".into(),
                    state: JobState::Completed,
                    jobs: 3,
                    oldest_runnable_age_seconds: None,
                },
                StatsRow {
                    kind: "profile".into(),
                    state: JobState::Queued,
                    jobs: 3,
                    oldest_runnable_age_seconds: Some(1.0),
                },
            ],
            paused_kinds: vec![],
        };
        let frame = render_progress(&stats);
        assert!(frame.contains(&"█".repeat(15)), "{frame}");
        assert!(frame.contains("3/6"), "{frame}");
        assert!(has_active(&stats));
    }

    #[test]
    fn run_at_accepts_delays_and_rfc3339() {
        let t = parse_run_at("+10m").unwrap();
        assert!((t - Utc::now()).num_seconds() > 590);
        assert_eq!(
            parse_run_at("2026-12-01T08:00:00Z").unwrap().to_rfc3339(),
            "2026-12-01T08:00:00+00:00"
        );
        assert!(parse_run_at("tomorrow").is_err());
    }

    #[test]
    fn url_segments_cannot_escape_their_path() {
        assert_eq!(url_segment("../admin?x=1"), "..%2Fadmin%3Fx%3D1");
    }
}
