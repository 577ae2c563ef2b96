//! `trawl export instaloader` against the real Instaloader 4.16: real workers crawl two profiles
//! of the simulator (posts with comments, stories, highlights, all with media), the real
//! Instaloader command line downloads the same profiles from the same simulator with an account
//! of its own, and the two trees must be the same, file for file (tests/export/compare_trees.py,
//! JSON key order included). Then Instaloader's `--fast-update` over a copy of Trawl's tree must
//! find everything already there: no post or story media downloaded, no path added.
//!
//! Small on purpose: Instaloader's own rate controller sleeps half an hour after 199 app API
//! requests in one process, and comments cost app requests.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Fleet, FleetOptions, sim_password};
use trawl_shared::JobSpec;
use trawl_shared::domain::JobOptions;
use trawl_simulator::Sizes;
use trawl_simulator::data::{DataSet, PostType, User};

fn script(name: &str) -> String {
    format!("{}/tests/export/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn shown(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The comment count Instagram reports for a post (comments and their replies), which decides
/// whether Instaloader reads the comments through the web query or the app API.
fn comment_total(data: &DataSet, user: &User, i: u32) -> u64 {
    let Some(post) = data.post(user.index, i) else {
        return 0;
    };
    (0..post.comment_count)
        .filter_map(|c| data.comment(&post, c))
        .map(|cm| 1 + data.replies(&cm).len() as u64)
        .sum()
}

/// Two public users that together have an image post, a sidecar, a video, a post with comments
/// on one web page and one with more (the app API's path), stories and highlights.
fn targets(data: &DataSet) -> Vec<String> {
    let kinds = |u: &User| -> BTreeSet<&'static str> {
        (0..u.post_count)
            .filter_map(|i| data.post(u.index, i))
            .map(|p| match p.kind {
                PostType::Image => "image",
                PostType::Sidecar(_) => "sidecar",
                PostType::Video => "video",
            })
            .collect()
    };
    let comments = |u: &User| -> BTreeSet<&'static str> {
        (0..u.post_count)
            .map(|i| comment_total(data, u, i))
            .filter(|&n| n > 0)
            .map(|n| if n > 12 { "app" } else { "web" })
            .collect()
    };
    let public: Vec<&User> = data
        .users
        .iter()
        .filter(|u| !u.is_private && u.post_count > 0)
        .collect();
    for a in &public {
        if data.story_count(a) == 0 || data.highlight_count(a) == 0 {
            continue;
        }
        for b in &public {
            if a.index == b.index || data.story_count(b) == 0 {
                continue;
            }
            let mut k = kinds(a);
            k.extend(kinds(b));
            let mut c = comments(a);
            c.extend(comments(b));
            if k.len() == 3 && c.len() == 2 {
                return vec![a.username.clone(), b.username.clone()];
            }
        }
    }
    panic!(
        "the data set has no two users with every kind of post, comment path, stories and highlights"
    );
}

fn with_options(kind: &str, target: &str, with_comments: bool) -> JobSpec {
    JobSpec {
        options: Some(JobOptions {
            with_media: true,
            with_comments,
            ..JobOptions::default()
        }),
        ..JobSpec::new(kind, target)
    }
}

/// Runs `tests/export/instaloader_cli.py` against the fleet's simulator.
fn instaloader(
    python: &str,
    fleet: &Fleet,
    dir: &Path,
    config_home: &Path,
    log: Option<&Path>,
    extra: &[&str],
    targets: &[String],
) -> Output {
    let k = fleet.options.accounts;
    let (name, _) = trawl_simulator::data::generated_account(fleet.options.seed, k);
    let password = sim_password(fleet.options.seed, k);
    let mut cmd = Command::new(python);
    cmd.arg(script("instaloader_cli.py"))
        .args(["--base", &fleet.sim_url])
        .arg("--dir")
        .arg(dir)
        .arg("--config-home")
        .arg(config_home);
    if let Some(log) = log {
        cmd.arg("--log-requests").arg(log);
    }
    cmd.args(["--", "--login", &name, "--password", &password])
        .args([
            "--no-sleep",
            "--quiet",
            "--no-resume",
            "--comments",
            "--stories",
            "--highlights",
        ])
        .args(extra)
        .args(targets);
    cmd.output().expect("run Instaloader")
}

fn compare(python: &str, a: &Path, b: &Path, extra: &[&str]) -> Output {
    Command::new(python)
        .arg(script("compare_trees.py"))
        .arg(a)
        .arg(b)
        .args(extra)
        .output()
        .expect("run compare_trees.py")
}

/// Every path under `root` (relative), files with their inode.
fn paths(root: &Path) -> BTreeMap<PathBuf, Option<u64>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            let meta = entry.metadata().expect("metadata");
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            if meta.is_dir() {
                stack.push(path);
                out.insert(rel, None);
            } else {
                out.insert(rel, Some(meta.ino()));
            }
        }
    }
    out
}

fn is_media(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("jpg" | "mp4")
    )
}

/// A URL without its query (signatures aside, the CDN path names the file).
fn url_path(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_is_the_tree_instaloader_writes_and_instaloader_finds_it_complete() {
    let started = Instant::now();
    let python = support::instaloader_python();
    let fleet = Fleet::start(FleetOptions {
        seed: 12,
        sizes: Sizes {
            users: 60,
            max_posts: 6,
            max_following: 5,
            max_comments: 14,
        },
        accounts: 2,
        // Instaloader logs in with an account of its own, so that its requests count in windows
        // of their own and never against what the workers' limiter believes.
        spare_accounts: 1,
        workers: 2,
        // Media URLs are signed per expiry bucket: one bucket for the whole test gives Trawl and
        // Instaloader the same URLs, as two clients reading at the same time get them.
        sim_args: vec!["--cdn-url-lifetime".into(), "1000000000000000".into()],
        ..FleetOptions::default()
    })
    .await;
    let targets = targets(&fleet.data);
    eprintln!("targets: {targets:?}");

    // Trawl crawls what `instaloader --comments --stories --highlights` downloads.
    let mut jobs = Vec::new();
    for t in &targets {
        jobs.push(with_options("profile_posts", t, true));
        jobs.push(with_options("stories", t, false));
        jobs.push(with_options("highlights", t, false));
    }
    fleet.submit(jobs).await;
    fleet.wait_until_done(Duration::from_secs(120)).await;
    let states = fleet.job_states().await;
    assert_eq!(
        states.get("failed"),
        None,
        "{states:?}; logs in {}",
        fleet.logs.display()
    );
    // Trawl's own requests held every window (Instaloader has not run yet).
    fleet.assert_windows_held().await;
    let crawled = started.elapsed();

    let work = tempdir("trawl-export-test");
    let (tree_a, tree_b, tree_c) = (work.join("a"), work.join("b"), work.join("c"));
    let config_home = work.join("instaloader-config");

    // A: the real Instaloader.
    let out = instaloader(&python, &fleet, &tree_a, &config_home, None, &[], &targets);
    assert!(out.status.success(), "Instaloader failed: {}", shown(&out));

    // B: Trawl's export.
    let tree_b_arg = tree_b.to_str().expect("utf-8 path").to_owned();
    let mut args = vec!["export", "instaloader", "--output", &tree_b_arg];
    for t in &targets {
        args.extend(["--target", t.as_str()]);
    }
    let (code, _, stderr) = fleet.trawl(&args);
    assert_eq!(code, Some(0), "trawl export failed: {stderr}");
    assert!(stderr.contains("exported 2 profiles"), "{stderr}");

    let out = compare(&python, &tree_a, &tree_b, &["--key-order"]);
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "the trees differ: {}", shown(&out));
    // Same JSON, same compressor settings: the same bytes.
    for (rel, _) in paths(&tree_a)
        .into_iter()
        .filter(|(p, ino)| ino.is_some() && p.to_string_lossy().ends_with(".json.xz"))
    {
        let a = std::fs::read(tree_a.join(&rel)).expect("read A");
        let b = std::fs::read(tree_b.join(&rel)).expect("read B");
        assert!(a == b, "{}: the compressed bytes differ", rel.display());
    }

    // Instaloader's --fast-update over a copy of Trawl's tree finds everything there.
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&tree_b)
        .arg(&tree_c)
        .status()
        .expect("cp");
    assert!(copied.success());
    let before = paths(&tree_c);
    let log = work.join("fast-update.jsonl");
    let out = instaloader(
        &python,
        &fleet,
        &tree_c,
        &config_home,
        Some(&log),
        &["--fast-update"],
        &targets,
    );
    assert!(
        out.status.success(),
        "Instaloader --fast-update failed: {}",
        shown(&out)
    );
    let after = paths(&tree_c);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "--fast-update added or removed paths"
    );
    for (rel, inode) in &before {
        if is_media(rel) {
            assert_eq!(
                &after[rel],
                inode,
                "{}: --fast-update replaced a picture or video",
                rel.display()
            );
        }
    }
    let out = compare(&python, &tree_b, &tree_c, &["--key-order"]);
    assert!(
        out.status.success(),
        "--fast-update changed the tree: {}",
        shown(&out)
    );

    // Its only media requests were the title pictures it always fetches.
    let post_and_story_urls: BTreeSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT url FROM ig_media WHERE item LIKE 'post:%' OR item LIKE 'story:%'",
    )
    .fetch_all(fleet.pool())
    .await
    .expect("media urls")
    .iter()
    .map(|u| url_path(u).to_owned())
    .collect();
    let title_pictures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ig_media WHERE item LIKE 'profile:%' OR item LIKE 'highlight:%'",
    )
    .fetch_one(fleet.pool())
    .await
    .expect("title pictures");
    let requests: Vec<Value> = std::fs::read_to_string(&log)
        .expect("request log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let media: Vec<&str> = requests
        .iter()
        .filter(|r| r["media"] == true)
        .filter_map(|r| r["url"].as_str())
        .collect();
    for url in &media {
        assert!(
            !post_and_story_urls.contains(url_path(url)),
            "--fast-update downloaded post or story media: {url}"
        );
    }
    assert_eq!(
        media.len() as i64,
        title_pictures,
        "one request per profile picture and highlight cover: {media:?}"
    );

    // Instaloader's requests, on an account of their own, held the windows too.
    fleet.assert_windows_held().await;

    // Exporting again into the same tree is Instaloader run again over it: nothing added.
    let (code, _, stderr) = fleet.trawl(&args);
    assert_eq!(code, Some(0), "a second export failed: {stderr}");
    assert_eq!(
        paths(&tree_b).keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "a second export added or removed paths"
    );

    // A profile that is not stored is named; a file whose bytes left the store names its item,
    // and the rest of the tree is still written.
    let missing = work.join("missing").to_str().expect("utf-8").to_owned();
    let (code, _, stderr) = fleet.trawl(&[
        "export",
        "instaloader",
        "--output",
        &missing,
        "--target",
        "nobody_stored",
    ]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("nobody_stored"), "{stderr}");
    let (item, sha): (String, String) = sqlx::query_as(
        "SELECT item, sha256 FROM ig_media WHERE item LIKE 'post:%' AND variant = 'picture'
         ORDER BY item, position LIMIT 1",
    )
    .fetch_one(fleet.pool())
    .await
    .expect("a stored post picture");
    let blob = fleet
        .blob_dir()
        .join("sha256")
        .join(&sha[..2])
        .join(&sha[2..4])
        .join(&sha);
    std::fs::remove_file(&blob).expect("remove a blob");
    let mut broken_args = vec!["export", "instaloader", "--output", &missing];
    for t in &targets {
        broken_args.extend(["--target", t.as_str()]);
    }
    let (code, _, stderr) = fleet.trawl(&broken_args);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&item) && stderr.contains("missing from the blob store"),
        "{stderr}"
    );
    let metadata = |tree: &BTreeMap<PathBuf, Option<u64>>| {
        tree.keys()
            .filter(|p| p.to_string_lossy().ends_with(".json.xz"))
            .count()
    };
    assert_eq!(
        metadata(&paths(Path::new(&missing))),
        metadata(&before) - 1,
        "every item but the broken post is written whole"
    );
    eprintln!(
        "crawl {:.1?}, whole test {:.1?}",
        crawled,
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&work);
}

fn tempdir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
