//! The simulator's CDN over real HTTP: every media URL the API hands out downloads, the bytes are
//! the seed's, ranges, HEAD, signatures and expiry, faults, and that downloads stay out of the
//! windows while they show in the audit log.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use trawl_simulator::cdn::{
    CdnConfig, DEFAULT_CDN_BASE, MediaFile, MediaItem, MediaKind, UrlSigner, media_bytes,
    media_sha256,
};
use trawl_simulator::data::{PostType, User};
use trawl_simulator::server::{MOBILE_APP_ID, hashes};
use trawl_simulator::{DataSet, Sim, SimConfig, Sizes};

const ACCOUNT: &str = "crawler1";
const PASSWORD: &str = "s3cret";

struct Running {
    base: String,
    sim: std::sync::Arc<Sim>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn config(seed: u64, time_scale: f64, cdn: CdnConfig) -> SimConfig {
    let data = DataSet::generate(
        seed,
        Sizes {
            users: 300,
            ..Sizes::default()
        },
    );
    SimConfig {
        cdn,
        ..SimConfig::fault_free(data, vec![(ACCOUNT.into(), PASSWORD.into())], time_scale)
    }
}

async fn serve(config: SimConfig, listen: &str) -> Running {
    let sim = Sim::new(config);
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    // `run` does this too, but the tests sign URLs before its task may have started.
    sim.adopt_served_address(addr);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = sim.clone();
    tokio::spawn(async move {
        trawl_simulator::run(listener, served, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Running {
        base: format!("http://{addr}"),
        sim,
        _stop: stop,
    }
}

async fn start(seed: u64) -> Running {
    serve(config(seed, 1.0, CdnConfig::default()), "127.0.0.1:0").await
}

/// A logged-in session's cookies, sent by hand so that web and mobile requests can carry them.
struct Session {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl Session {
    async fn login(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let home = http.get(format!("{base}/")).send().await.unwrap();
        let csrf = home
            .cookies()
            .find(|k| k.name() == "csrftoken")
            .expect("/ sets csrftoken")
            .value()
            .to_owned();
        let r = http
            .post(format!("{base}/api/v1/web/accounts/login/ajax/"))
            .header("x-csrftoken", &csrf)
            .header("cookie", format!("csrftoken={csrf}"))
            .body(format!("username={ACCOUNT}&password={PASSWORD}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let cookies = r
            .cookies()
            .map(|k| (k.name().to_owned(), k.value().to_owned()))
            .collect();
        Self { http, cookies }
    }

    async fn web(&self, url: String) -> String {
        let r = self
            .http
            .get(&url)
            .header("cookie", format!("sessionid={}", self.cookies["sessionid"]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        r.text().await.unwrap()
    }

    async fn doc(&self, base: &str, doc_id: &str, variables: Value) -> String {
        let r = self
            .http
            .post(format!("{base}/graphql/query"))
            .header("cookie", format!("sessionid={}", self.cookies["sessionid"]))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                serde_urlencoded::to_string([
                    ("doc_id", doc_id),
                    ("variables", &variables.to_string()),
                ])
                .unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "doc {doc_id}");
        r.text().await.unwrap()
    }

    async fn mobile(&self, url: String) -> String {
        let r = self
            .http
            .get(&url)
            .header("cookie", format!("sessionid={}", self.cookies["sessionid"]))
            .header("x-mid", &self.cookies["mid"])
            .header("x-ig-device-id", &self.cookies["ig_did"])
            .header("x-ig-app-id", MOBILE_APP_ID)
            .header("ig-u-ds-user-id", &self.cookies["ds_user_id"])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        r.text().await.unwrap()
    }
}

fn graphql_url(base: &str, hash: &str, vars: Value) -> String {
    let encoded =
        serde_urlencoded::to_string([("query_hash", hash), ("variables", &vars.to_string())])
            .unwrap();
    format!("{base}/graphql/query/?{encoded}")
}

/// Every media URL in an answer (JSON or HTML): the strings that start at the CDN's path.
fn media_urls(body: &str, base: &str) -> BTreeSet<String> {
    let start = format!("{base}/v/");
    let mut out = BTreeSet::new();
    let mut rest = body;
    while let Some(at) = rest.find(&start) {
        let tail = &rest[at..];
        let end = tail.find(['"', '\\', '<', ' ']).unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn the_query<'a>(url: &'a str, key: &str) -> &'a str {
    url.split_once('?')
        .map_or("", |(_, q)| q)
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
}

fn with_query(url: &str, key: &str, value: &str) -> String {
    url.replace(
        &format!("{key}={}", the_query(url, key)),
        &format!("{key}={value}"),
    )
}

fn path_of(url: &str) -> &str {
    let without_query = url.split('?').next().unwrap_or("");
    let after_scheme = without_query.split_once("://").map_or("", |(_, r)| r);
    after_scheme.find('/').map_or("/", |at| &after_scheme[at..])
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn audit(base: &str) -> Vec<Value> {
    reqwest::get(format!("{base}/__sim/audit.jsonl"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn set_faults(base: &str, faults: Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/__sim/faults"))
        .body(faults.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// A public user whose first page of posts holds an image, a sidecar and a video, with stories and
/// highlights: one profile that shows every kind of media.
fn showcase(data: &DataSet) -> &User {
    data.users
        .iter()
        .find(|u| {
            let kinds: Vec<PostType> = (0..u.post_count.min(12))
                .filter_map(|i| data.post(u.index, i))
                .map(|p| p.kind)
                .collect();
            !u.is_private
                && kinds.contains(&PostType::Image)
                && kinds.contains(&PostType::Video)
                && kinds.iter().any(|k| matches!(k, PostType::Sidecar(_)))
                && data.story_count(u) > 0
                && data.highlight_count(u) > 0
        })
        .expect("the data set has a user with every kind of media")
}

/// The URL of `item` as the simulator hands it out, for tests that need one of a given kind.
fn url_of(s: &Running, item: &MediaItem) -> String {
    s.sim.media_urls().url(item)
}

fn an_image_post(data: &DataSet) -> u64 {
    data.users
        .iter()
        .flat_map(|u| (0..u.post_count).filter_map(|i| data.post(u.index, i)))
        .find(|p| p.kind == PostType::Image)
        .expect("an image post")
        .id
}

#[tokio::test]
async fn every_media_url_of_a_profile_downloads_in_its_format_and_size() {
    let s = start(31).await;
    let data = &s.sim.data;
    let u = showcase(data);
    let session = Session::login(&s.base).await;
    let base = &s.base;
    let id = u.id.to_string();
    let mut answers = vec![
        session
            .web(format!(
                "{base}/api/v1/users/web_profile_info/?username={}",
                u.username
            ))
            .await,
        session.web(format!("{base}/{}/", u.username)).await,
        session
            .web(graphql_url(
                base,
                hashes::PROFILE_POSTS,
                json!({"id": id, "first": 12}),
            ))
            .await,
        session
            .doc(
                base,
                hashes::DOC_TIMELINE,
                json!({"username": u.username, "first": 12}),
            )
            .await,
        session
            .doc(base, hashes::DOC_PROFILE, json!({"id": id}))
            .await,
        session
            .web(graphql_url(
                base,
                hashes::STORIES,
                json!({"reel_ids": [id], "precomposed_overlay": false}),
            ))
            .await,
        session
            .web(graphql_url(
                base,
                hashes::HIGHLIGHTS,
                json!({"user_id": id, "include_chaining": false}),
            ))
            .await,
        session
            .web(graphql_url(
                base,
                hashes::HIGHLIGHT_ITEMS,
                json!({"highlight_reel_ids": [(u.id * 10).to_string()]}),
            ))
            .await,
        session
            .mobile(format!("{base}/mobile/api/v1/users/{id}/info/"))
            .await,
        session
            .mobile(format!(
                "{base}/mobile/api/v1/highlights/{id}/highlights_tray/"
            ))
            .await,
        session
            .mobile(format!(
                "{base}/mobile/api/v1/feed/reels_media/?reel_ids={id},highlight:{}",
                u.id * 10
            ))
            .await,
        session
            .web(graphql_url(base, hashes::OWN_PROFILE, json!({})))
            .await,
    ];
    let video_post = (0..12)
        .filter_map(|i| data.post(u.index, i))
        .find(|p| p.kind == PostType::Video)
        .expect("a video");
    answers.push(
        session
            .mobile(format!(
                "{base}/mobile/api/v1/media/{}/info/",
                video_post.id
            ))
            .await,
    );
    let urls: BTreeSet<String> = answers.iter().flat_map(|a| media_urls(a, base)).collect();
    let items: Vec<MediaItem> = urls
        .iter()
        .map(|url| MediaItem::from_path(url).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    // Each item under one URL wherever it appears, unless the answers straddled two periods.
    let paths: BTreeSet<String> = items.iter().map(MediaItem::path).collect();
    let periods: BTreeSet<&str> = urls.iter().map(|u| the_query(u, "oe")).collect();
    if periods.len() == 1 {
        assert_eq!(paths.len(), urls.len(), "one period signs alike");
    }
    for (name, present) in [
        (
            "post image",
            items
                .iter()
                .any(|i| matches!(i, MediaItem::PostImage { .. })),
        ),
        (
            "sidecar child",
            items
                .iter()
                .any(|i| matches!(i, MediaItem::CarouselImage { .. })),
        ),
        (
            "video",
            items
                .iter()
                .any(|i| matches!(i, MediaItem::PostVideo { .. })),
        ),
        (
            "story picture",
            items
                .iter()
                .any(|i| matches!(i, MediaItem::ReelImage { .. })),
        ),
        (
            "highlight cover",
            items
                .iter()
                .any(|i| matches!(i, MediaItem::HighlightCover { .. })),
        ),
        (
            "profile picture",
            items.contains(&MediaItem::ProfilePicture { user: u.id }),
        ),
        (
            "HD profile picture",
            items.contains(&MediaItem::ProfilePictureHd { user: u.id }),
        ),
        (
            "the viewer's own picture",
            items.contains(&MediaItem::ProfilePicture {
                user: s.sim.account_user_id(ACCOUNT),
            }),
        ),
    ] {
        assert!(present, "the answers link a {name}");
    }

    let http = reqwest::Client::new();
    for (url, item) in urls.iter().zip(&items) {
        assert!(
            url.contains(".jpg?") || url.contains(".mp4?"),
            "the extension stands before the query: {url}"
        );
        let r = http.get(url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        let length: u64 = r.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len() as u64, length);
        let (low, high) = item.kind().size_range();
        assert!((low..=high + 3).contains(&length), "{url}: {length} bytes");
        match item.kind() {
            MediaKind::Video => {
                assert_eq!(content_type, "video/mp4");
                assert_eq!(&body[4..12], b"ftypisom", "{url}");
            }
            MediaKind::Image | MediaKind::ProfilePicture => {
                assert_eq!(content_type, "image/jpeg");
                assert_eq!(&body[..4], [0xFF, 0xD8, 0xFF, 0xE0], "{url}");
                assert_eq!(&body[6..11], b"JFIF\0", "{url}");
                assert_eq!(&body[body.len() - 2..], [0xFF, 0xD9], "{url}");
            }
        }
        assert_eq!(
            sha256_hex(&body),
            media_sha256(data.seed, url, None).unwrap(),
            "{url}"
        );
    }
}

#[tokio::test]
async fn the_same_seed_serves_the_same_bytes_and_another_seed_does_not() {
    let a = start(5).await;
    let b = start(5).await;
    let other = start(6).await;
    // User ids follow from indexes alone, so user 0's picture exists under every seed.
    let item = MediaItem::ProfilePicture {
        user: a.sim.data.users[0].id,
    };
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(&url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{url}");
            r.bytes().await.unwrap()
        }
    };
    let first = get(url_of(&a, &item)).await;
    assert_eq!(first, get(url_of(&a, &item)).await, "again");
    assert_eq!(
        first,
        get(url_of(&b, &item)).await,
        "another simulator, same seed"
    );
    assert_ne!(first, get(url_of(&other, &item)).await, "another seed");
    let path = item.path();
    assert_eq!(sha256_hex(&first), media_sha256(5, &path, None).unwrap());
    assert_eq!(
        media_bytes(5, &path).unwrap(),
        (first.len() as u64, "image/jpeg")
    );
    // A URL from one seed's simulator is not signed for another's.
    let foreign = url_of(&a, &item).replace(&a.base, &other.base);
    let r = http.get(&foreign).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn ranges_return_exactly_their_slice_and_head_gives_the_length() {
    let s = start(8).await;
    let item = MediaItem::PostImage {
        post: an_image_post(&s.sim.data),
    };
    let url = url_of(&s, &item);
    let file = MediaFile::new(s.sim.data.seed, &item, None);
    let size = file.size();
    let http = reqwest::Client::new();
    let whole = http.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(whole.len() as u64, size);

    for (range, start, end) in [
        ("bytes=100-199".to_owned(), 100, 200),
        (format!("bytes={}-", size - 1000), size - 1000, size),
        ("bytes=-10".to_owned(), size - 10, size),
        (format!("bytes=5-{}", size + 100), 5, size),
    ] {
        let r = http.get(&url).header("range", &range).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {start}-{}/{size}", end - 1).as_str(),
            "{range}"
        );
        assert_eq!(
            r.headers()["content-length"],
            (end - start).to_string().as_str()
        );
        let part = r.bytes().await.unwrap();
        assert_eq!(
            part,
            whole[start as usize..end as usize],
            "{range}: exactly the slice"
        );
    }
    let r = http
        .get(&url)
        .header("range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );

    let r = http.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(h["content-length"], size.to_string().as_str());
    assert_eq!(h["content-type"], "image/jpeg");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["etag"], file.etag().as_str());
    assert_eq!(h["last-modified"], "Thu, 01 Jan 2026 00:00:00 GMT");
    assert!(r.bytes().await.unwrap().is_empty());

    let r = http
        .get(&url)
        .header("if-none-match", file.etag())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    let log = audit(&s.base).await;
    let statuses: Vec<u64> = log
        .iter()
        .filter(|e| e["query_type"] == "cdn")
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 206, 206, 206, 206, 416, 200, 304]);
    let ranged: Vec<u64> = log
        .iter()
        .filter(|e| e["status"] == 206)
        .map(|e| e["bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(ranged[0], 100, "the audit log counts the bytes sent");
}

#[tokio::test]
async fn tampered_foreign_and_expired_urls_are_refused_as_instagram_does() {
    // 100 simulated seconds at a time scale of 0.01: a URL lives one to two wall-clock seconds.
    let s = serve(
        config(
            12,
            0.01,
            CdnConfig {
                url_lifetime_secs: 100.0,
                ..CdnConfig::default()
            },
        ),
        "127.0.0.1:0",
    )
    .await;
    let item = MediaItem::PostImage {
        post: an_image_post(&s.sim.data),
    };
    let url = url_of(&s, &item);
    let http = reqwest::Client::new();
    let refused = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(&url).send().await.unwrap();
            let status = r.status();
            (status, r.text().await.unwrap())
        }
    };
    assert_eq!(
        http.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    let mismatch = (StatusCode::FORBIDDEN, "URL signature mismatch".to_owned());
    let oh = the_query(&url, "oh").to_owned();
    let mut tampered = oh.clone().into_bytes();
    tampered[0] = if tampered[0] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(refused(with_query(&url, "oh", &tampered)).await, mismatch);
    let oe = u64::from_str_radix(the_query(&url, "oe"), 16).unwrap();
    assert_eq!(
        refused(with_query(&url, "oe", &format!("{:08X}", oe + 3600))).await,
        mismatch,
        "a later expiry needs a new signature"
    );
    // Another item the data set has: the signature covers the path, so it does not carry over.
    let other_item = MediaItem::ProfilePicture {
        user: s.sim.data.users[0].id,
    };
    let moved = url.replace(path_of(&url), &other_item.path());
    assert_eq!(refused(moved).await, mismatch);
    let unsigned = url.split('?').next().unwrap().to_owned();
    assert_eq!(refused(unsigned).await, mismatch);

    // Correctly signed, but for a time that has passed.
    let path = item.path();
    let past = (s.sim.media_urls().expires()) - 10_000;
    let stale = format!(
        "{}{path}?oh={}&oe={past:08X}",
        s.base,
        UrlSigner::new(12).sign(&path, past)
    );
    let expired = (StatusCode::FORBIDDEN, "URL signature expired".to_owned());
    assert_eq!(refused(stale).await, expired);

    // The URL handed out above expires by itself once its `oe` is behind the clock.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        oe as f64 - now < 3.0,
        "the lifetime is scaled: {oe} vs {now}"
    );
    tokio::time::sleep(Duration::from_secs_f64((oe as f64 + 1.2 - now).max(0.0))).await;
    assert_eq!(refused(url.clone()).await, expired);
    let fresh = url_of(&s, &item);
    assert_ne!(fresh, url, "a new period signs anew");
    assert_eq!(
        http.get(&fresh).send().await.unwrap().status(),
        StatusCode::OK
    );

    // Items the data set does not have are not found, however well signed.
    for missing in [
        MediaItem::PostImage { post: 7 },
        MediaItem::PostVideo {
            post: an_image_post(&s.sim.data),
        },
        MediaItem::ProfilePicture { user: 3 },
        MediaItem::HashtagPicture {
            tag: "nosuchtag".into(),
        },
    ] {
        let (status, body) = refused(url_of(&s, &missing)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing:?}: {body}");
    }
    assert_eq!(
        refused(format!("{}/v/t51.2885-15/nothing.jpg", s.base))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn faults_cut_fail_and_slow_media_bodies() {
    let s = start(14).await;
    let item = MediaItem::PostImage {
        post: an_image_post(&s.sim.data),
    };
    let url = url_of(&s, &item);
    let file = MediaFile::new(s.sim.data.seed, &item, None);
    let http = reqwest::Client::new();

    set_faults(&s.base, json!({"drop_rate": 1.0})).await;
    let mut r = http.get(&url).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the cut comes after the headers"
    );
    assert_eq!(
        r.headers()["content-length"],
        file.size().to_string().as_str()
    );
    let mut received = 0u64;
    let failed = loop {
        match r.chunk().await {
            Ok(Some(bytes)) => received += bytes.len() as u64,
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(failed, "the body ends in an error, not quietly");
    assert_eq!(received, file.size() / 2, "half the body came through");

    set_faults(&s.base, json!({"error_rate": 1.0})).await;
    let r = http.get(&url).send().await.unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());

    set_faults(&s.base, json!({"invalid_json_rate": 1.0})).await;
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "invalid JSON means nothing to media"
    );
    assert_eq!(r.bytes().await.unwrap().len() as u64, file.size());

    // About one second for the whole file.
    set_faults(&s.base, json!({"cdn_bytes_per_second": file.size()})).await;
    let t0 = Instant::now();
    let body = http.get(&url).send().await.unwrap().bytes().await.unwrap();
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(850), "throttled: {took:?}");
    assert_eq!(sha256_hex(&body), file.sha256());
    set_faults(&s.base, json!({})).await;

    let log = audit(&s.base).await;
    let cdn: Vec<(u64, u64)> = log
        .iter()
        .filter(|e| e["query_type"] == "cdn")
        .map(|e| (e["status"].as_u64().unwrap(), e["bytes"].as_u64().unwrap()))
        .collect();
    assert_eq!(cdn.len(), 4);
    assert_eq!(cdn[0], (200, file.size() / 2), "the cut body's bytes");
    assert!(cdn[1].0 >= 500);
    assert_eq!(cdn[2], (200, file.size()));
}

#[tokio::test]
async fn downloads_are_audited_but_leave_every_window_untouched() {
    let s = start(15).await;
    let http = reqwest::Client::new();
    let data = &s.sim.data;
    // More downloads than the `other` window's cap of 75, from one anonymous IP.
    let items: Vec<MediaItem> = data
        .users
        .iter()
        .take(80)
        .map(|u| MediaItem::ProfilePicture { user: u.id })
        .collect();
    for item in &items {
        let r = http.get(url_of(&s, item)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.bytes().await.unwrap();
    }
    // The API still answers: none of the downloads counted against its windows.
    let r = http
        .get(format!(
            "{}/api/v1/users/web_profile_info/?username={}",
            s.base, data.users[0].username
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let log = audit(&s.base).await;
    let downloads: Vec<&Value> = log.iter().filter(|e| e["query_type"] == "cdn").collect();
    assert_eq!(downloads.len(), items.len());
    for (e, item) in downloads.iter().zip(&items) {
        assert_eq!(e["path"], "/v/{*rest}");
        assert_eq!(e["status"], 200);
        assert_eq!(
            e["bytes"].as_u64(),
            Some(MediaFile::new(data.seed, item, None).size())
        );
    }
    let oracle: Value = reqwest::get(format!("{}/__sim/oracle", s.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oracle["requests"], log.len());
    let peaks = oracle["peaks"].as_array().unwrap();
    assert!(peaks.iter().all(|p| p["key"] != "cdn"), "{peaks:?}");
    assert_eq!(
        peaks
            .iter()
            .find(|p| p["key"] == "other")
            .map(|p| p["most"].clone()),
        Some(json!(1)),
        "only the API request counted"
    );
    let metrics = reqwest::get(format!("{}/__sim/metrics", s.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "trawl_sim_requests_total{{class=\"cdn\",status=\"200\"}} {}",
            items.len()
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn video_bytes_sets_every_videos_size_and_the_base_follows_the_configuration() {
    let forced = 6_000_000;
    let s = serve(
        config(
            16,
            1.0,
            CdnConfig {
                video_bytes: Some(forced),
                base: Some("http://127.0.0.1:1/".into()),
                ..CdnConfig::default()
            },
        ),
        "127.0.0.1:0",
    )
    .await;
    assert_eq!(
        s.sim.cdn_base(),
        "http://127.0.0.1:1",
        "a configured base wins"
    );
    let data = &s.sim.data;
    let video = data
        .users
        .iter()
        .flat_map(|u| (0..u.post_count).filter_map(|i| data.post(u.index, i)))
        .find(|p| p.kind == PostType::Video)
        .expect("a video post");
    let item = MediaItem::PostVideo { post: video.id };
    let url = url_of(&s, &item).replace("http://127.0.0.1:1", &s.base);
    let mut r = reqwest::get(&url).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "video/mp4");
    assert_eq!(r.headers()["content-length"], forced.to_string().as_str());
    let mut digest = <sha2::Sha256 as sha2::Digest>::new();
    let mut total = 0u64;
    while let Some(chunk) = r.chunk().await.unwrap() {
        total += chunk.len() as u64;
        sha2::Digest::update(&mut digest, &chunk);
    }
    assert_eq!(total, forced);
    let got: String = sha2::Digest::finalize(digest)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(got, media_sha256(16, &url, Some(forced)).unwrap());

    // Served on a specific address: that address; on every address: the reserved host.
    let own = start(16).await;
    assert_eq!(own.sim.cdn_base(), own.base);
    let everywhere = serve(config(16, 1.0, CdnConfig::default()), "0.0.0.0:0").await;
    assert_eq!(everywhere.sim.cdn_base(), DEFAULT_CDN_BASE);
    assert!(url_of(&everywhere, &item).starts_with("https://scontent.sim.instagram.test/v/"));
}
