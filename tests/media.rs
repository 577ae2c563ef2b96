//! Media end to end: real workers crawl the real simulator with `with_media`, fetch every picture
//! and video from its CDN into the local blob store, and record item → blob in `ig_media`.
//! What is stored is checked byte for byte against the files the simulator serves.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};
use support::{Fleet, FleetOptions};
use trawl_shared::JobSpec;
use trawl_shared::domain::JobOptions;
use trawl_simulator::data::PostType;

fn with_media(kind: &str, target: &str) -> JobSpec {
    JobSpec {
        options: Some(JobOptions {
            with_media: true,
            ..JobOptions::default()
        }),
        ..JobSpec::new(kind, target)
    }
}

/// Every `ig_media` row: (item, position, variant, url, sha256, size).
async fn media_rows(
    fleet: &Fleet,
) -> Vec<(String, i32, String, String, Option<String>, Option<i64>)> {
    sqlx::query_as(
        "SELECT item, position, variant, url, sha256, size FROM ig_media ORDER BY item, position, variant",
    )
    .fetch_all(fleet.pool())
    .await
    .expect("media rows")
}

fn blob_path(root: &Path, sha: &str) -> std::path::PathBuf {
    root.join("sha256")
        .join(&sha[..2])
        .join(&sha[2..4])
        .join(sha)
}

fn sha256_of_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{:x}", Sha256::digest(&bytes))
}

/// Every blob under the store's addresses holds the bytes its name says: nothing partial or
/// corrupt is ever visible. Returns how many there are.
fn assert_every_visible_blob_whole(root: &Path) -> usize {
    let mut seen = 0;
    let Ok(top) = std::fs::read_dir(root.join("sha256")) else {
        return 0;
    };
    for a in top.flatten() {
        for b in std::fs::read_dir(a.path()).expect("fan-out").flatten() {
            for blob in std::fs::read_dir(b.path()).expect("fan-out").flatten() {
                let name = blob.file_name().to_string_lossy().into_owned();
                assert_eq!(
                    sha256_of_file(&blob.path()),
                    name,
                    "a visible blob is not whole"
                );
                seen += 1;
            }
        }
    }
    seen
}

/// Users of the fleet's data set with posts, stories and highlights, and one with a video post.
fn targets(fleet: &Fleet) -> (Vec<String>, String) {
    let data = &fleet.data;
    let rich = data
        .users
        .iter()
        .find(|u| {
            !u.is_private
                && u.post_count > 0
                && data.story_count(u) > 0
                && data.highlight_count(u) > 0
        })
        .expect("a user with posts, stories and highlights");
    let with_video = data
        .users
        .iter()
        .filter(|u| !u.is_private && u.username != rich.username)
        .find(|u| {
            (0..u.post_count).any(|i| {
                data.post(u.index, i)
                    .is_some_and(|p| matches!(p.kind, PostType::Video))
            }) && (0..u.post_count).any(|i| {
                data.post(u.index, i)
                    .is_some_and(|p| matches!(p.kind, PostType::Sidecar(_)))
            })
        })
        .expect("a user with a video and a sidecar");
    (
        vec![rich.username.clone(), with_video.username.clone()],
        rich.username.clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_with_media_stores_every_file_once_verified_and_outside_the_windows() {
    let fleet = Fleet::start(FleetOptions::default()).await;
    let (users, rich) = targets(&fleet);
    let mut jobs: Vec<JobSpec> = users
        .iter()
        .map(|u| with_media("profile_posts", u))
        .collect();
    jobs.push(with_media("stories", &rich));
    jobs.push(with_media("highlights", &rich));
    fleet.submit(jobs).await;
    fleet.wait_until_done(Duration::from_secs(240)).await;
    fleet.assert_none_failed().await;

    let rows = media_rows(&fleet).await;
    let seed = fleet.options.seed;
    let mut items = BTreeSet::new();
    for (item, position, variant, url, sha, size) in &rows {
        let sha = sha
            .as_deref()
            .unwrap_or_else(|| panic!("{item} {position} {variant} not stored"));
        let expected = trawl_simulator::cdn::media_sha256(seed, url, None).expect("a CDN URL");
        assert_eq!(
            sha, expected,
            "{item} {position} {variant}: stored bytes differ"
        );
        let path = blob_path(&fleet.blob_dir(), sha);
        assert_eq!(
            std::fs::metadata(&path).map(|m| m.len() as i64).ok(),
            *size,
            "{}",
            path.display()
        );
        items.insert(item.clone());
    }

    // Every post, story item, profile and highlight has its files.
    let (posts, _) = fleet.expected_posts_and_comments(&users);
    let codes: BTreeSet<String> = sqlx::query_scalar("SELECT shortcode FROM ig_posts")
        .fetch_all(fleet.pool())
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(codes.len(), posts.len());
    for code in &codes {
        assert!(
            items.contains(&format!("post:{code}")),
            "post {code} has no media"
        );
    }
    let stories: Vec<String> = sqlx::query_scalar("SELECT id FROM ig_stories")
        .fetch_all(fleet.pool())
        .await
        .unwrap();
    assert!(!stories.is_empty());
    for id in &stories {
        assert!(
            items.contains(&format!("story:{id}")),
            "story item {id} has no media"
        );
    }
    for user in &users {
        assert!(
            items.contains(&format!("profile:{user}")),
            "{user} has no profile picture"
        );
    }
    let covers = items.iter().filter(|i| i.starts_with("highlight:")).count() as u64;
    let rich_user = fleet.data.user_by_name(&rich).expect("user");
    assert_eq!(covers, fleet.data.highlight_count(rich_user));

    // Videos have their thumbnail and their video; sidecars number their children from 1.
    let video_rows = rows.iter().filter(|r| r.2 == "video").count();
    assert!(video_rows > 0, "no video was stored");
    assert!(rows.iter().any(|r| r.1 >= 2), "no sidecar child was stored");

    // Each file was fetched once, and none of it counted in a window.
    let audit = fleet.audit().await;
    let cdn: Vec<&serde_json::Value> = audit.iter().filter(|e| e["query_type"] == "cdn").collect();
    let distinct: BTreeSet<&str> = rows.iter().filter_map(|r| r.4.as_deref()).collect();
    assert_eq!(
        cdn.iter().filter(|e| e["status"] == 200).count(),
        distinct.len(),
        "each distinct file downloaded exactly once"
    );
    assert_eq!(
        assert_every_visible_blob_whole(&fleet.blob_dir()),
        distinct.len()
    );
    fleet.assert_windows_held().await;

    // Asking again for what is stored downloads nothing: the store already holds the bytes.
    let again: Vec<JobSpec> = items
        .iter()
        .filter(|i| i.starts_with("post:"))
        .take(3)
        .map(|i| JobSpec {
            unique_key: Some(format!("again:{i}")),
            ..JobSpec::new("media", i)
        })
        .collect();
    fleet.submit(again).await;
    fleet.wait_until_done(Duration::from_secs(60)).await;
    let after = fleet
        .audit()
        .await
        .iter()
        .filter(|e| e["query_type"] == "cdn")
        .count();
    assert_eq!(after, cdn.len(), "stored files were downloaded again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_urls_are_renewed_and_cut_downloads_resume_where_they_stopped() {
    // A lifetime of 300 s at time scale 0.01: links live 3 to 6 s.
    let fleet = Fleet::start(FleetOptions {
        sim_args: ["--cdn-url-lifetime", "300"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..FleetOptions::default()
    })
    .await;
    let (users, _) = targets(&fleet);
    let user = &users[1];
    fleet
        .submit(vec![JobSpec::new("profile_posts", user)])
        .await;
    fleet.wait_until_done(Duration::from_secs(120)).await;
    let codes: Vec<String> = sqlx::query_scalar("SELECT shortcode FROM ig_posts ORDER BY id")
        .fetch_all(fleet.pool())
        .await
        .unwrap();
    assert!(!codes.is_empty());
    // Every URL the crawl stored is now expired.
    tokio::time::sleep(Duration::from_secs(7)).await;
    fleet
        .post("/__sim/faults", &json!({"drop_rate": 0.3}))
        .await;
    fleet
        .submit(
            codes
                .iter()
                .map(|c| JobSpec::new("media", format!("post:{c}")))
                .collect(),
        )
        .await;
    fleet.wait_until_done(Duration::from_secs(180)).await;
    fleet.assert_none_failed().await;

    let seed = fleet.options.seed;
    let rows = media_rows(&fleet).await;
    for (item, position, variant, url, sha, _) in &rows {
        let expected = trawl_simulator::cdn::media_sha256(seed, url, None).expect("a CDN URL");
        assert_eq!(
            sha.as_deref(),
            Some(expected.as_str()),
            "{item} {position} {variant}"
        );
    }
    for code in &codes {
        assert!(
            rows.iter().any(|r| r.0 == format!("post:{code}")),
            "post {code} has no media"
        );
    }
    let audit = fleet.audit().await;
    let cdn = |status: u64| {
        audit
            .iter()
            .filter(|e| e["query_type"] == "cdn" && e["status"] == status)
            .count()
    };
    assert!(
        cdn(403) > 0,
        "no URL was refused as expired: the test proves nothing"
    );
    assert!(
        cdn(206) > 0,
        "no cut download was resumed with a range request"
    );
    assert_every_visible_blob_whole(&fleet.blob_dir());
    fleet.assert_windows_held().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_object_store_is_a_retried_job_error_and_s3_holds_every_file() {
    let s3 = trawl_shared::testing::s3::shared_server();
    let bucket = s3.fresh_bucket().expect("bucket");
    let mut fleet = Fleet::start(FleetOptions {
        workers: 0,
        accounts: 1,
        ..FleetOptions::default()
    })
    .await;
    let spool = fleet.logs.join("spool");
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    let cut_off = fleet.add_worker_with(trawl_shared::testing::s3::s3_worker_env(
        &closed, &bucket, &spool,
    ));
    let (users, _) = targets(&fleet);
    fleet
        .submit(vec![with_media("profile_posts", &users[1])])
        .await;

    // The store is down: media jobs are tried, fail with a reason that names the store, and
    // wait for their next attempt; nothing is recorded as stored.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let reason = loop {
        let retried: Option<String> = sqlx::query_scalar(
            "SELECT last_error FROM jobs WHERE kind = 'media' AND attempt >= 2 AND last_error IS NOT NULL LIMIT 1",
        )
        .fetch_optional(fleet.pool())
        .await
        .expect("jobs");
        if let Some(reason) = retried {
            break reason;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no media job was retried; logs in {}",
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(reason.contains("blob store"), "{reason}");
    let states = fleet.job_states().await;
    assert_eq!(
        states.get("failed"),
        None,
        "a store outage failed a job for good: {states:?}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM ig_media WHERE sha256 IS NOT NULL")
        .fetch_one(fleet.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0);

    // The store is back (a worker that reaches it): every file lands in the bucket.
    fleet.kill_worker(cut_off);
    fleet.add_worker_with(s3.worker_env(&bucket, &spool));
    fleet.wait_until_done(Duration::from_secs(180)).await;
    fleet.assert_none_failed().await;
    let store = trawl_shared::blobs::BlobStore::open(&s3.store_config(&bucket, spool.clone()))
        .await
        .expect("store");
    let rows = media_rows(&fleet).await;
    assert!(!rows.is_empty());
    for (item, position, variant, url, sha, size) in &rows {
        let sha = sha
            .as_deref()
            .unwrap_or_else(|| panic!("{item} {position} {variant} not stored"));
        let expected =
            trawl_simulator::cdn::media_sha256(fleet.options.seed, url, None).expect("CDN URL");
        assert_eq!(sha, expected);
        assert_eq!(
            store.size(sha).await.ok().map(|s| s as i64),
            *size,
            "{item} not in the bucket"
        );
    }
    fleet.assert_windows_held().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_download_leaves_nothing_partial_and_the_job_finishes() {
    // 12 MB videos at 3 MB/s: each takes four seconds, time enough to kill the worker in one.
    let mut fleet = Fleet::start(FleetOptions {
        workers: 1,
        accounts: 1,
        sim_args: [
            "--video-bytes",
            "12000000",
            "--cdn-bytes-per-second",
            "3000000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        ..FleetOptions::default()
    })
    .await;
    let data = &fleet.data;
    let video = data
        .users
        .iter()
        .filter(|u| !u.is_private)
        .flat_map(|u| (0..u.post_count).filter_map(move |i| data.post(u.index, i)))
        .find(|p| matches!(p.kind, PostType::Video))
        .expect("a video post");
    fleet
        .submit(vec![with_media("post", &video.shortcode)])
        .await;

    // Kill the worker once the video is streaming.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // The audit log records a download when its body starts, with the bytes it will send.
        let streaming = fleet.audit().await.iter().any(|e| {
            e["query_type"] == "cdn" && e["bytes"].as_u64().is_some_and(|b| b >= 10_000_000)
        });
        if streaming {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the video never started; logs in {}",
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fleet.kill_worker(0);
    let mp4_rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ig_media WHERE variant = 'video' AND sha256 IS NOT NULL",
    )
    .fetch_one(fleet.pool())
    .await
    .unwrap();
    assert_eq!(mp4_rows, 0, "the video was recorded before it was whole");
    let visible = assert_every_visible_blob_whole(&fleet.blob_dir());
    let partial: u64 = std::fs::read_dir(fleet.blob_dir().join("tmp"))
        .map(|d| {
            d.flatten()
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    assert!(
        partial > 0 && partial < 12_000_000,
        "no partial download in the store's tmp ({partial} bytes)"
    );

    // Another worker (the same one restarted) takes the job once its lease expires.
    fleet.start_worker(0);
    fleet.wait_until_done(Duration::from_secs(120)).await;
    fleet.assert_none_failed().await;
    let rows = media_rows(&fleet).await;
    let video_row = rows.iter().find(|r| r.2 == "video").expect("the video row");
    let expected =
        trawl_simulator::cdn::media_sha256(fleet.options.seed, &video_row.3, Some(12_000_000))
            .expect("CDN URL");
    assert_eq!(video_row.4.as_deref(), Some(expected.as_str()));
    assert!(assert_every_visible_blob_whole(&fleet.blob_dir()) > visible);
}
