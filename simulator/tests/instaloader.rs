//! The real, unchanged Instaloader 4.16 (from PyPI) against the simulator: every operation it
//! offers, anonymous and logged in, checked against the simulator's own data set; then two
//! Instaloader processes on one account that together pass a window, checked against the audit
//! log's recomputation.
//!
//! The test installs Instaloader itself (`scripts/install-instaloader.sh`, into a venv under the
//! target directory), so a fresh machine needs nothing by hand.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use trawl_simulator::cdn::MediaItem;
use trawl_simulator::data::{Post, PostType, User};
use trawl_simulator::server::{LoginChallenge, TWO_FACTOR_CODE, hashes};
use trawl_simulator::{DataSet, Sim, SimConfig, Sizes};

const PASSWORD: &str = "pw-4.16";
/// Requests each racing process sends: together more than the per-type cap of 200.
const RACE_REQUESTS: usize = 120;
const PER_TYPE_CAP: usize = 200;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the simulator crate sits in the workspace")
        .to_path_buf()
}

/// Installs Instaloader 4.16 (once; fast when already there) and returns the venv's python.
fn python() -> PathBuf {
    let script = repo_root().join("scripts/install-instaloader.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("run scripts/install-instaloader.sh");
    assert!(
        out.status.success(),
        "install-instaloader.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("the script prints the python")
            .trim(),
    )
}

struct Running {
    base: String,
    sim: Arc<Sim>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Running {
    let data = DataSet::generate(
        416,
        Sizes {
            users: 80,
            max_posts: 30,
            max_following: 40,
            max_comments: 20,
        },
    );
    let account = |n: &str| (n.to_owned(), PASSWORD.to_owned());
    let sim = Sim::new(SimConfig {
        challenges: vec![
            ("il_twofactor".into(), LoginChallenge::TwoFactor),
            ("il_checkpoint".into(), LoginChallenge::Checkpoint),
        ],
        accounts: vec![
            account("il_plain"),
            account("il_twofactor"),
            account("il_checkpoint"),
            account("il_racer"),
        ],
        ..SimConfig::fault_free(data, Vec::new(), 1.0)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = sim.clone();
    tokio::spawn(async move {
        let _ = trawl_simulator::run(listener, served, async {
            let _ = stopped.await;
        })
        .await;
    });
    Running {
        base: format!("http://{addr}"),
        sim,
        _stop: stop,
    }
}

/// Runs the driver in `mode` with `spec`; returns its RESULT object.
async fn drive(python: &Path, mode: &str, spec: &Value, label: &str) -> Value {
    let dir = std::env::temp_dir().join(format!("trawl-instaloader-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let spec_path = dir.join(format!("{label}.json"));
    std::fs::write(&spec_path, spec.to_string()).expect("write spec");
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/instaloader/driver.py");
    let out = tokio::process::Command::new(python)
        .arg(&driver)
        .arg(mode)
        .arg(&spec_path)
        // Instaloader keeps its session and stamps under the home and config directories.
        .env("HOME", &dir)
        .env("XDG_CONFIG_HOME", &dir)
        .current_dir(&dir)
        .output()
        .await
        .expect("run the driver");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stdout.lines().filter(|l| !l.starts_with("RESULT ")) {
        println!("[instaloader {label}] {line}");
    }
    assert!(
        out.status.success(),
        "driver {label} failed:\n{stdout}\n{stderr}"
    );
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("driver {label} printed no RESULT:\n{stdout}\n{stderr}"));
    serde_json::from_str(result).expect("RESULT is JSON")
}

fn public(data: &DataSet, fits: impl Fn(&User) -> bool) -> &User {
    data.users
        .iter()
        .find(|u| !u.is_private && fits(u))
        .expect("the data set has such a user")
}

fn posts_of(data: &DataSet, u: &User) -> Vec<Post> {
    (0..u.post_count)
        .filter_map(|i| data.post(u.index, i))
        .collect()
}

fn all_public_posts(data: &DataSet) -> Vec<Post> {
    data.users
        .iter()
        .filter(|u| !u.is_private)
        .flat_map(|u| posts_of(data, u))
        .collect()
}

/// Comments and replies together, as Instagram counts a post's comments.
fn comment_total(data: &DataSet, p: &Post) -> u64 {
    (0..p.comment_count)
        .filter_map(|i| data.comment(p, i))
        .map(|c| 1 + data.replies(&c).len() as u64)
        .sum()
}

fn shortcodes(data: &DataSet, refs: &[(u32, u32)]) -> Vec<String> {
    refs.iter()
        .filter_map(|&(o, j)| data.post(o, j))
        .map(|p| p.shortcode)
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn names(data: &DataSet, indexes: &[u32]) -> Vec<String> {
    sorted(
        indexes
            .iter()
            .map(|&i| data.users[i as usize].username.clone())
            .collect(),
    )
}

async fn audit(base: &str) -> Vec<Value> {
    reqwest::get(format!("{base}/__sim/audit.jsonl"))
        .await
        .expect("audit")
        .text()
        .await
        .expect("audit text")
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit line"))
        .collect()
}

/// Checks one post's comments as Instaloader read them against the data set.
fn check_comments(data: &DataSet, p: &Post, got: &Value, total: &Value) {
    assert_eq!(
        total.as_u64(),
        Some(comment_total(data, p)),
        "{}",
        p.shortcode
    );
    let got = got.as_array().expect("comments");
    assert_eq!(got.len(), p.comment_count as usize, "{}", p.shortcode);
    for (i, c) in got.iter().enumerate() {
        let want = data.comment(p, i as u32).expect("comment");
        assert_eq!(c["id"].as_u64(), Some(want.id));
        assert_eq!(c["text"], want.text.as_str());
        assert_eq!(
            c["owner"],
            data.users[want.owner as usize].username.as_str()
        );
        let answers: Vec<u64> = data.replies(&want).iter().map(|r| r.0).collect();
        assert_eq!(c["answers"], json!(answers), "answers of {}", want.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instaloader_4_16_crawls_every_operation_and_two_processes_pass_a_window_together() {
    let python = tokio::task::spawn_blocking(python).await.expect("install");
    let s = start().await;
    let data = &s.sim.data;

    // Targets, each chosen so that its operation pages (more than 12 items) where it can.
    let posts_user = public(data, |u| {
        (13..=30).contains(&u.post_count)
            && posts_of(data, u).iter().any(|p| p.kind == PostType::Video)
    });
    let follow_user = public(data, |u| u.followers.len() > 12 && u.following.len() > 12);
    let tagged_user = data
        .users
        .iter()
        .max_by_key(|u| data.tagged_posts(u.index).len())
        .expect("users");
    let highlight_user = public(data, |u| data.highlight_count(u) >= 2);
    let private_user = data
        .users
        .iter()
        .find(|u| u.is_private)
        .expect("a private user");
    let public_posts = all_public_posts(data);
    let few = public_posts
        .iter()
        .find(|p| {
            let t = comment_total(data, p);
            t <= 12 && t > u64::from(p.comment_count) && p.comment_count >= 2
        })
        .expect("a post with a few comments and replies");
    let many = public_posts
        .iter()
        .filter(|p| p.likes > 0 && comment_total(data, p) > 12)
        .find(|p| {
            (0..p.comment_count)
                .filter_map(|i| data.comment(p, i))
                .any(|c| data.replies(&c).len() >= 2)
        })
        .expect("a post with many comments, one with two replies");
    let tag = trawl_simulator::data::TAGS
        .iter()
        .max_by_key(|t| data.hashtag_posts(t).len())
        .expect("tags");
    let place = trawl_simulator::data::places()
        .max_by_key(|p| data.location_posts(p).len())
        .expect("places");
    let located = public_posts
        .iter()
        .find(|p| p.location == Some(place.name))
        .expect("a located post");
    let image = public_posts
        .iter()
        .find(|p| p.kind == PostType::Image)
        .expect("an image post");
    let sidecar = public_posts
        .iter()
        .find(|p| matches!(p.kind, PostType::Sidecar(_)))
        .expect("a sidecar post");
    let video = public_posts
        .iter()
        .find(|p| p.kind == PostType::Video)
        .expect("a video post");
    let downloaded_posts = [image, sidecar, video];
    let story_user = &data.users[*data.story_tray().first().expect("a story tray") as usize];
    let search = posts_user.username[..2].to_owned();
    let spec = json!({
        "base": s.base, "password": PASSWORD, "two_factor_code": TWO_FACTOR_CODE,
        "plain_account": "il_plain", "two_factor_account": "il_twofactor",
        "checkpoint_account": "il_checkpoint", "racer_account": "il_racer",
        "posts_user": posts_user.username, "follow_user": follow_user.username,
        "follow_user_id": follow_user.id, "tagged_user": tagged_user.username,
        "highlight_user": highlight_user.username, "private_user": private_user.username,
        "few_comments_post": few.shortcode, "many_comments_post": many.shortcode,
        "located_post": located.shortcode, "location_id": place.id, "tag": tag,
        "search": search, "place": place.name, "image_post": image.shortcode,
        "download_posts": downloaded_posts.iter().map(|p| p.shortcode.as_str()).collect::<Vec<_>>(),
        "story_user_id": story_user.id,
    });

    let started = std::time::Instant::now();
    let r = drive(&python, "main", &spec, "main").await;
    println!("main crawl took {:.1?}", started.elapsed());

    assert_eq!(r["errors"], json!([]), "Instaloader logged errors");
    // Anonymous profile from the page.
    let ap = &r["anon_profile"];
    assert_eq!(ap["id"], posts_user.id);
    assert_eq!(ap["username"], posts_user.username.as_str());
    assert_eq!(ap["full_name"], posts_user.full_name.as_str());
    assert_eq!(ap["biography"], posts_user.biography.as_str());
    assert_eq!(ap["is_private"], false);
    assert_eq!(ap["followers"], posts_user.followers.len());
    assert_eq!(ap["followees"], posts_user.following.len());
    assert_eq!(ap["mediacount"], posts_user.post_count);
    let want_posts = posts_of(data, posts_user);
    for key in ["anon_posts", "posts"] {
        let got = r[key].as_array().expect(key);
        assert_eq!(got.len(), want_posts.len(), "{key}");
        for (g, w) in got.iter().zip(&want_posts) {
            assert_eq!(g["shortcode"], w.shortcode.as_str(), "{key}");
            assert_eq!(g["id"], w.id, "{key}");
            assert_eq!(g["likes"], w.likes, "{key}");
            assert_eq!(g["caption"], w.caption.as_str(), "{key}");
            assert_eq!(g["taken_at"], w.taken_at, "{key}");
            assert_eq!(g["owner"], posts_user.username.as_str(), "{key}");
            let typename = match w.kind {
                PostType::Image => "GraphImage",
                PostType::Video => "GraphVideo",
                PostType::Sidecar(_) => "GraphSidecar",
            };
            assert_eq!(g["typename"], typename, "{key}");
        }
    }
    for (g, w) in r["anon_posts"]
        .as_array()
        .expect("posts")
        .iter()
        .zip(&want_posts)
    {
        assert_eq!(g["comments"], comment_total(data, w));
    }
    let one = &r["anon_post"];
    assert_eq!(one["shortcode"], few.shortcode.as_str());
    assert_eq!(one["comments"], comment_total(data, few));
    assert_eq!(one["is_video"], few.kind == PostType::Video);
    assert_eq!(one["owner_id"], data.users[few.owner as usize].id);
    assert_eq!(r["anon_from_id"], follow_user.username.as_str());
    assert_eq!(r["from_id"], follow_user.username.as_str());
    let tag_posts = shortcodes(data, data.hashtag_posts(tag));
    assert_eq!(strings(&r["anon_hashtag_resumable"]), tag_posts);
    assert_eq!(strings(&r["hashtag_resumable"]), tag_posts);
    assert_eq!(strings(&r["hashtag_posts"]), tag_posts);
    assert_eq!(r["hashtag_mediacount"], tag_posts.len());
    let top = strings(&r["hashtag_top"]);
    assert_eq!(top.len(), tag_posts.len().min(9));
    assert!(top.iter().all(|c| tag_posts.contains(c)));
    let prefixed: Vec<String> = data
        .users
        .iter()
        .filter(|u| u.username.starts_with(&search))
        .take(50)
        .map(|u| u.username.clone())
        .collect();
    assert_eq!(strings(&r["anon_topsearch_profiles"]), prefixed);
    assert_eq!(r["anon_topsearch_hashtags"], json!([tag]));
    assert_eq!(
        r["anon_topsearch_places"],
        json!([{"id": place.id, "name": place.name, "slug": place.slug()}])
    );
    assert_eq!(r["anon_private_posts"], "LoginRequiredException");
    assert_eq!(r["private_posts"], "PrivateProfileNotFollowedException");
    assert_eq!(r["anon_unknown_profile"], "ProfileNotExistsException");
    assert_eq!(r["anon_test_login"], Value::Null);

    // Logins.
    assert!(
        r["checkpoint_login"]
            .as_str()
            .is_some_and(|m| m.contains("Checkpoint required")),
        "{}",
        r["checkpoint_login"]
    );
    assert_eq!(r["two_factor_wrong_code"], "BadCredentialsException");
    assert_eq!(r["two_factor_login"], "il_twofactor");
    assert_eq!(r["test_login"], "il_plain");

    // Logged-in profile and its lists.
    let lp = &r["profile"];
    assert_eq!(lp["id"], posts_user.id);
    assert_eq!(lp["followers"], posts_user.followers.len());
    assert_eq!(lp["followees"], posts_user.following.len());
    assert_eq!(lp["mediacount"], posts_user.post_count);
    assert_eq!(lp["is_verified"], posts_user.is_verified);
    assert_eq!(lp["followed_by_viewer"], false);
    assert_eq!(
        lp["pic_hd"].as_str().map(MediaItem::from_path),
        Some(Ok(MediaItem::ProfilePictureHd {
            user: posts_user.id
        })),
        "the HD picture comes from users/info: {}",
        lp["pic_hd"]
    );
    let videos: Vec<String> = want_posts
        .iter()
        .filter(|p| p.kind == PostType::Video)
        .map(|p| p.shortcode.clone())
        .collect();
    assert!(!videos.is_empty());
    assert_eq!(strings(&r["reels"]), videos);
    assert_eq!(strings(&r["anon_reels"]), videos);
    assert_eq!(r["anon_likes"], "LoginRequiredException");
    assert_eq!(r["igtv"], json!([]));
    assert_eq!(
        sorted(strings(&r["followers"])),
        names(data, &follow_user.followers)
    );
    assert_eq!(
        sorted(strings(&r["followees"])),
        names(data, &follow_user.following)
    );
    let tagged = shortcodes(data, data.tagged_posts(tagged_user.index));
    assert!(tagged.len() > 12, "tagged posts page");
    assert_eq!(strings(&r["tagged"]), tagged);
    assert_eq!(strings(&r["anon_tagged"]), tagged);
    check_comments(data, few, &r["few_comments"], &r["few_comments_total"]);
    check_comments(data, many, &r["many_comments"], &r["many_comments_total"]);
    assert_eq!(
        sorted(strings(&r["likes"])),
        names(data, &data.likers(many))
    );
    assert_eq!(
        r["image_url"].as_str().map(MediaItem::from_path),
        Some(Ok(MediaItem::PostImage { post: image.id })),
        "{}",
        r["image_url"]
    );
    let loc = &r["post_location"];
    assert_eq!(loc["id"], place.id);
    assert_eq!(loc["name"], place.name);
    assert_eq!(
        strings(&r["location_posts"]),
        shortcodes(data, data.location_posts(&place))
    );

    // Stories and highlights.
    let stories = r["stories"].as_object().expect("stories");
    let tray = data.story_tray();
    assert_eq!(stories.len(), tray.len());
    for i in tray {
        let u = &data.users[i as usize];
        let items = stories[&u.id.to_string()].as_array().expect("story items");
        assert_eq!(items.len() as u64, data.story_count(u), "{}", u.username);
    }
    let highlights = r["highlights"].as_object().expect("highlights");
    assert_eq!(
        highlights.len() as u64,
        data.highlight_count(highlight_user)
    );
    const TITLES: [&str; 4] = ["Travels", "Field notes", "Studio", "Archive"];
    for h in 0..data.highlight_count(highlight_user) {
        let got = &highlights[&(highlight_user.id * 10 + h).to_string()];
        assert_eq!(got["title"], TITLES[h as usize]);
        assert_eq!(
            got["items"].as_array().map(Vec::len),
            Some(data.highlight_items(highlight_user, h) as usize)
        );
    }

    // Downloads: every file Instaloader wrote holds the bytes of an item it was meant to fetch,
    // exactly as the simulator serves them, and every such item arrived.
    let mut wanted: Vec<MediaItem> = vec![
        MediaItem::ProfilePictureHd {
            user: posts_user.id,
        },
        MediaItem::HighlightCover {
            user: highlight_user.id,
            highlight: 0,
        },
    ];
    for p in downloaded_posts {
        match p.kind {
            PostType::Image => wanted.push(MediaItem::PostImage { post: p.id }),
            PostType::Sidecar(n) => {
                wanted.extend((0..n).map(|child| MediaItem::CarouselImage { post: p.id, child }))
            }
            PostType::Video => wanted.extend([
                MediaItem::PostImage { post: p.id },
                MediaItem::PostVideo { post: p.id },
            ]),
        }
    }
    // A story item's picture always, its video when it is one (the CDN knows which).
    for k in 0..data.story_count(story_user) {
        let pk = (story_user.id * 100 + 8) * 100 + k;
        wanted.extend([MediaItem::ReelImage { pk }, MediaItem::ReelVideo { pk }]);
    }
    let wanted: BTreeMap<String, MediaItem> = wanted
        .into_iter()
        .filter_map(|item| Some((s.sim.media_file(&item)?.sha256(), item)))
        .collect();
    let files = r["downloads"].as_array().expect("downloads");
    let got: BTreeMap<String, &Value> = files
        .iter()
        .map(|f| (f["sha256"].as_str().unwrap_or("").to_owned(), f))
        .collect();
    for (sha, f) in &got {
        assert!(wanted.contains_key(sha), "a file no item has: {f}");
    }
    for (sha, item) in &wanted {
        assert!(got.contains_key(sha), "{item:?} was not downloaded");
    }
    assert!(
        files.iter().any(|f| f["file"]
            .as_str()
            .is_some_and(|n| n.starts_with("anonymous") && n.ends_with(".jpg"))),
        "the anonymous download: {files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f["file"].as_str().is_some_and(|n| n.ends_with(".mp4"))),
        "Instaloader names a video by its Content-Type: {files:?}"
    );

    // Every request was routed (no 404 fallback but the unknown profile), and 4.16's window keys
    // are the simulator's.
    let log = audit(&s.base).await;
    let mut pairs: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in &log {
        let key = (
            e["query_type"].as_str().unwrap_or("").to_owned(),
            e["path"].as_str().unwrap_or("").to_owned(),
        );
        *pairs.entry(key).or_default() += 1;
        let fine = e["status"] == 200
            || (e["status"] == 404 && e["path"] == "/{username}/")
            // The checkpoint and two-factor answers, and the wrong two-factor code.
            || (e["status"] == 400 && e["path"].as_str().is_some_and(|p| p.contains("/login/")));
        assert!(fine, "unexpected answer: {e}");
    }
    println!("requests by (query_type, path):");
    for ((q, p), n) in &pairs {
        println!("  {n:>4}  {q:<40} {p}");
    }
    for uncounted in [
        "/",
        "/api/v1/web/accounts/login/ajax/",
        "/accounts/login/ajax/two_factor/",
    ] {
        assert!(
            pairs.contains_key(&("uncounted".to_owned(), uncounted.to_owned())),
            "{uncounted} is audited as uncounted"
        );
    }
    assert!(
        pairs.contains_key(&("other".to_owned(), "/".to_owned())),
        "the token page"
    );
    assert!(pairs.contains_key(&(
        "iphone".to_owned(),
        "/mobile/api/v1/media/{id}/info/".to_owned()
    )));
    assert!(pairs.contains_key(&(
        format!("doc:{}", hashes::DOC_POST),
        "/api/graphql".to_owned()
    )));
    assert!(pairs.contains_key(&(
        format!("doc:{}", hashes::DOC_POST),
        "/graphql/query".to_owned()
    )));
    let downloads = log.iter().filter(|e| e["query_type"] == "cdn").count();
    assert_eq!(
        downloads,
        files.len(),
        "one CDN request per file, none refused"
    );
    assert!(pairs.contains_key(&("cdn".to_owned(), "/v/{*rest}".to_owned())));
    let main_requests = log.len();

    // Two processes, one account, one doc_id: together over the per-type cap.
    let racers = data
        .users
        .iter()
        .filter(|u| !u.is_private)
        .flat_map(|u| posts_of(data, u).into_iter().take(1))
        .take(30)
        .map(|p| p.shortcode)
        .collect::<Vec<_>>();
    let barrier =
        std::env::temp_dir().join(format!("trawl-instaloader-race-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&barrier);
    let race = json!({"base": s.base, "password": PASSWORD, "racer_account": "il_racer",
        "race_requests": RACE_REQUESTS, "race_shortcodes": racers,
        "barrier_dir": barrier, "processes": 2});
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(
        drive(&python, "race", &race, "racer-a"),
        drive(&python, "race", &race, "racer-b")
    );
    println!("the race took {:.1?}", started.elapsed());
    let ok = a["race_ok"].as_u64().unwrap_or(0) + b["race_ok"].as_u64().unwrap_or(0);
    let refused = a["race_429"].as_u64().unwrap_or(0) + b["race_429"].as_u64().unwrap_or(0);
    assert_eq!(ok + refused, 2 * RACE_REQUESTS as u64);
    assert!(
        a["race_ok"].as_u64() < Some(PER_TYPE_CAP as u64)
            && b["race_ok"].as_u64() < Some(PER_TYPE_CAP as u64),
        "neither process alone reaches the cap"
    );

    let log = audit(&s.base).await;
    let limits = s.sim.limits();
    let mut racer: Vec<&Value> = log[main_requests..]
        .iter()
        .filter(|e| e["account"] == "il_racer" && e["query_type"] != "uncounted")
        .collect();
    racer.sort_by(|x, y| {
        let t = |e: &Value| e["t"].as_f64().unwrap_or(0.0);
        t(x).total_cmp(&t(y))
    });
    // Recompute each answer from the arrivals before it: a request is refused exactly when one
    // of its windows already held its cap (every arrival counts, refused or not).
    let mut seen: HashMap<&str, Vec<f64>> = HashMap::new();
    let doc = format!("doc:{}", hashes::DOC_POST);
    let (mut served_in_window, mut refused_in_window) = (0, 0);
    for e in &racer {
        let t = e["t"].as_f64().unwrap_or(0.0);
        let q = e["query_type"].as_str().unwrap_or("");
        let per_type = if q == "other" {
            limits.other
        } else {
            limits.per_type
        };
        let mut windows = vec![(q, per_type)];
        if q.starts_with("qh:") || q.starts_with("doc:") {
            windows.push(("graphql", limits.graphql));
        }
        let full = windows.iter().any(|(key, w)| {
            let length = w.length.as_secs_f64();
            seen.get(key)
                .map_or(0, |ts| ts.iter().filter(|&&a| t - a < length).count())
                >= w.cap
        });
        for (key, _) in &windows {
            seen.entry(key).or_default().push(t);
        }
        assert_eq!(
            e["status"].as_u64(),
            Some(if full { 429 } else { 200 }),
            "recomputed answer of {e}"
        );
        if q == doc {
            if full {
                refused_in_window += 1;
            } else {
                served_in_window += 1;
            }
        }
    }
    assert_eq!(
        served_in_window, PER_TYPE_CAP,
        "the window served exactly its cap"
    );
    assert_eq!(served_in_window as u64, ok);
    assert_eq!(refused_in_window as u64, refused);
    assert_eq!(refused, (2 * RACE_REQUESTS - PER_TYPE_CAP) as u64);
    println!(
        "race: {ok} answered, {refused} refused with 429 (per-type cap {PER_TYPE_CAP}); \
         {} requests in all",
        log.len()
    );
    let distinct: HashSet<&str> = racer.iter().filter_map(|e| e["path"].as_str()).collect();
    assert_eq!(distinct, HashSet::from(["/graphql/query"]));
}
