//! R5: workers whose wall clocks are ten minutes ahead and ten minutes behind (libfaketime, as
//! Debian's `faketime` installs it: `scripts/install-faketime.sh`). The windows hold because only
//! the database's clock decides grants, leases and penalties.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::support::{Fleet, FleetOptions, posts_with_comments};
use crate::{Verdict, assert_no_panics, long};

/// The preload library behind Debian's `faketime` command.
/// Installed by scripts/install-faketime.sh when it is missing.
fn libfaketime() -> PathBuf {
    let find = || {
        std::fs::read_dir("/usr/lib")
            .into_iter()
            .flatten()
            .flatten()
            .map(|arch| arch.path().join("faketime/libfaketime.so.1"))
            .find(|p| p.exists())
    };
    if let Some(found) = find() {
        return found;
    }
    if let Err(e) = trawl_shared::testing::install("install-faketime.sh") {
        panic!("libfaketime is not installed and installing it failed: {e}");
    }
    find()
        .unwrap_or_else(|| panic!("libfaketime is still missing after scripts/install-faketime.sh"))
}

/// The time of a worker's first log line (tracing's RFC 3339 timestamp, its own wall clock).
fn first_log_time(log: &str) -> Option<DateTime<Utc>> {
    log.lines().find_map(|line| {
        let stamp = line.split_whitespace().next()?;
        DateTime::parse_from_rfc3339(stamp)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// Four workers (two ahead, two behind) share two accounts: two crawl, two wait. Every 3 s one is
/// SIGKILLed and started again, so each account's windows are filled by workers of both skews in
/// turn, at a time scale where the windows, not the data, limit the crawl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r5_workers_ten_minutes_ahead_and_behind_keep_the_windows() {
    let library = libfaketime();
    let mut fleet = Fleet::start(FleetOptions {
        workers: 0,
        accounts: 2,
        time_scale: 0.02,
        ..FleetOptions::default()
    })
    .await;
    let skews = ["+10m", "-10m", "+10m", "-10m"];
    let started: DateTime<Utc> = Utc::now();
    for skew in skews {
        fleet.add_worker_with(vec![
            ("LD_PRELOAD".into(), library.display().to_string()),
            ("FAKETIME".into(), skew.into()),
            // Timers and elapsed times stay true; only the wall clock is skewed.
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ]);
    }
    let users = fleet.public_users_with_posts(if long() { 80 } else { 30 });
    let (posts, comments) = fleet.expected_posts_and_comments(&users);
    fleet.submit(posts_with_comments(&users)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut kills = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if fleet.active_jobs().await == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the crawl did not finish; logs in {}",
            fleet.logs.display()
        );
        fleet.kill_and_restart_random_worker();
        kills += 1;
    }
    assert_no_panics(&fleet);

    // The skew is real: each worker's own log clock is ten minutes off ours.
    let mut offsets = Vec::new();
    for (i, skew) in skews.iter().enumerate() {
        let seen = first_log_time(&fleet.worker_log(i)).unwrap_or_else(|| {
            panic!(
                "worker {i} logged no timestamp; logs in {}",
                fleet.logs.display()
            )
        });
        let offset = (seen - started).num_seconds();
        let expected = if skew.starts_with('+') { 600 } else { -600 };
        assert!(
            (offset - expected).abs() < 60,
            "worker {i} runs {offset} s off the real clock, expected {skew}"
        );
        offsets.push(offset);
    }
    let verdict = Verdict::of(&fleet, "true", &posts, Some(&comments)).await;
    verdict.assert_clean(&fleet);
    assert!(
        verdict.busiest >= 0.9,
        "the windows were never under pressure (busiest {:.0}% of its cap): the scenario \
         proves nothing",
        verdict.busiest * 100.0
    );
    verdict.record(
        "R5 clock skew",
        &format!(
            "4 workers with wall clocks {offsets:?} s off (libfaketime) sharing 2 accounts, one \
             SIGKILLed every 3 s ({kills} kills); windows held on the database clock"
        ),
    );
}
