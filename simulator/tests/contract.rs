//! The simulator over real HTTP: shapes, pagination, determinism, windows, login, the oracle.

use std::collections::HashSet;
use std::net::SocketAddr;

use reqwest::StatusCode;
use serde_json::Value;
use trawl_simulator::cdn::MediaItem;
use trawl_simulator::data::User;
use trawl_simulator::server::{LoginChallenge, hashes};
use trawl_simulator::{DataSet, Sim, SimConfig, Sizes};

struct Running {
    base: String,
    sim: std::sync::Arc<Sim>,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(seed: u64, time_scale: f64) -> Running {
    start_with(seed, time_scale, 0).await
}

async fn start_with(seed: u64, time_scale: f64, checkpoint_after_429s: u32) -> Running {
    let sim = Sim::new(SimConfig {
        checkpoint_after_429s,
        challenges: vec![
            ("guarded".into(), LoginChallenge::TwoFactor),
            ("flagged".into(), LoginChallenge::Checkpoint),
        ],
        session_ttl: Some(std::time::Duration::from_secs(30)),
        data: DataSet::generate(
            seed,
            Sizes {
                users: 300,
                ..Sizes::default()
            },
        ),
        faults: Default::default(),
        accounts: vec![
            ("crawler1".into(), "s3cret".into()),
            ("guarded".into(), "pw".into()),
            ("flagged".into(), "pw".into()),
        ],
        time_scale,
        trust_forwarded_for: true,
        cdn: Default::default(),
        v1: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
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
        stop,
    }
}

/// A public user of the data set that satisfies `fits`.
fn public_user(s: &Running, fits: impl Fn(&User) -> bool) -> User {
    s.sim
        .data
        .users
        .iter()
        .find(|u| !u.is_private && fits(u))
        .cloned()
        .expect("the data set has such a user")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get_json(c: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let r = c.get(url).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn graphql_url(base: &str, hash: &str, vars: Value) -> String {
    let encoded: String =
        serde_urlencoded::to_string([("query_hash", hash), ("variables", &vars.to_string())])
            .unwrap();
    format!("{base}/graphql/query/?{encoded}")
}

async fn login(c: &reqwest::Client, base: &str, password: &str) -> Value {
    let home = c.get(format!("{base}/")).send().await.unwrap();
    let csrf = home
        .cookies()
        .find(|k| k.name() == "csrftoken")
        .map(|k| k.value().to_owned())
        .expect("/ sets csrftoken");
    let r = c
        .post(format!("{base}/api/v1/web/accounts/login/ajax/"))
        .header("x-csrftoken", csrf)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "username=crawler1&enc_password=%23PWD_INSTAGRAM_BROWSER%3A0%3A1700000000%3A{password}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn profile_posts_walk_page_by_page_every_post_once_in_order() {
    let s = start(11, 1.0).await;
    let c = client();
    let user = public_user(&s, |u| u.post_count > 30);
    let (status, info) = get_json(
        &c,
        &format!(
            "{}/api/v1/users/web_profile_info/?username={}",
            s.base, user.username
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let u = &info["data"]["user"];
    assert_eq!(u["username"], user.username);
    assert_eq!(u["id"], user.id.to_string());
    assert_eq!(u["edge_followed_by"]["count"], user.followers.len());
    assert_eq!(u["edge_owner_to_timeline_media"]["count"], user.post_count);
    assert_eq!(
        u["edge_owner_to_timeline_media"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        12
    );

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut vars = serde_json::json!({"id": user.id.to_string(), "first": 12});
        if let Some(a) = &after {
            vars["after"] = Value::String(a.clone());
        }
        let (status, page) = get_json(&c, &graphql_url(&s.base, hashes::PROFILE_POSTS, vars)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["status"], "ok");
        let media = &page["data"]["user"]["edge_owner_to_timeline_media"];
        for e in media["edges"].as_array().unwrap() {
            let n = &e["node"];
            assert!(n["__typename"].as_str().unwrap().starts_with("Graph"));
            assert!(n["shortcode"].is_string() && n["taken_at_timestamp"].is_i64());
            assert!(n["edge_media_to_caption"]["edges"][0]["node"]["text"].is_string());
            seen.push((
                n["id"].as_str().unwrap().to_owned(),
                n["taken_at_timestamp"].as_i64().unwrap(),
            ));
        }
        if media["page_info"]["has_next_page"] == false {
            assert!(media["page_info"]["end_cursor"].is_null());
            break;
        }
        after = media["page_info"]["end_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen.len(), user.post_count as usize);
    let unique: HashSet<_> = seen.iter().map(|(id, _)| id).collect();
    assert_eq!(unique.len(), seen.len(), "every post exactly once");
    assert!(seen.windows(2).all(|w| w[0].1 > w[1].1), "newest first");

    // A page larger than the server allows is refused, so clients must shrink it.
    let (status, body) = get_json(
        &c,
        &graphql_url(
            &s.base,
            hashes::PROFILE_POSTS,
            serde_json::json!({"id": user.id.to_string(), "first": 51}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["status"], "fail");
    let (status, _) = get_json(
        &c,
        &graphql_url(
            &s.base,
            hashes::PROFILE_POSTS,
            serde_json::json!({"id": user.id.to_string(), "first": 12, "after": "zz"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = get_json(
        &c,
        &format!(
            "{}/api/v1/users/web_profile_info/?username=nobody_here",
            s.base
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let _ = s.stop.send(());
}

#[tokio::test]
async fn comments_and_followers_paginate_completely_and_followers_need_a_login() {
    let s = start(12, 1.0).await;
    let c = client();
    let owner = public_user(&s, |u| u.post_count > 0 && u.followers.len() > 25);
    let post = (0..owner.post_count)
        .filter_map(|i| s.sim.data.post(owner.index, i))
        .find(|p| p.comment_count > 10)
        .unwrap();
    let comments = walk(
        &c,
        &s.base,
        hashes::COMMENTS,
        serde_json::json!({"shortcode": post.shortcode, "first": 7}),
        "/data/shortcode_media/edge_media_to_comment",
    )
    .await;
    assert_eq!(comments.len(), post.comment_count as usize);
    assert_eq!(
        comments.iter().collect::<HashSet<_>>().len(),
        comments.len()
    );

    // Anonymous: followers redirect to the login page, as Instagram does.
    let url = graphql_url(
        &s.base,
        hashes::FOLLOWERS,
        serde_json::json!({"id": owner.id.to_string(), "first": 10}),
    );
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("/accounts/login/")
    );

    let answer = login(&c, &s.base, "s3cret").await;
    assert_eq!(answer["authenticated"], true);
    let followers = walk(
        &c,
        &s.base,
        hashes::FOLLOWERS,
        serde_json::json!({"id": owner.id.to_string(), "first": 10}),
        "/data/user/edge_followed_by",
    )
    .await;
    let expected: Vec<String> = owner
        .followers
        .iter()
        .map(|&i| s.sim.data.users[i as usize].id.to_string())
        .collect();
    assert_eq!(followers, expected, "every follower once, in order");
    let _ = s.stop.send(());
}

#[tokio::test]
async fn login_checks_the_csrf_token_and_the_password() {
    let s = start(13, 1.0).await;
    let c = client();
    let r = c
        .post(format!("{}/api/v1/web/accounts/login/ajax/", s.base))
        .body("username=crawler1&password=s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");
    let wrong = login(&c, &s.base, "nope").await;
    assert_eq!(
        (wrong["authenticated"].as_bool(), wrong["user"].as_bool()),
        (Some(false), Some(true))
    );
    let c2 = client();
    let home = c2.get(format!("{}/", s.base)).send().await.unwrap();
    drop(home);
    let ok = login(&c2, &s.base, "s3cret").await;
    assert_eq!(ok["authenticated"], true);
    assert!(ok["userId"].is_string());
    let _ = s.stop.send(());
}

#[tokio::test]
async fn the_same_seed_serves_identical_bytes_and_another_seed_does_not() {
    let a = start(21, 1.0).await;
    let b = start(21, 1.0).await;
    let other = start(22, 1.0).await;
    let c = client();
    let name = a.sim.data.users[5].username.clone();
    // Media URLs name the simulator they came from (its address is their CDN base), so the
    // address is set aside before the bytes are compared.
    let body = |base: String, name: String| {
        let c = c.clone();
        async move {
            let text = c
                .get(format!(
                    "{base}/api/v1/users/web_profile_info/?username={name}"
                ))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let authority = base.trim_start_matches("http://");
            assert!(
                text.contains(authority),
                "media URLs point at the simulator"
            );
            text.replace(authority, "SIMULATOR")
        }
    };
    let from_a = body(a.base.clone(), name.clone()).await;
    let from_b = body(b.base.clone(), name.clone()).await;
    assert_eq!(from_a, from_b);
    let cached = body(a.base.clone(), name.clone()).await;
    assert_eq!(
        cached, from_a,
        "a rendered page served again from the cache is the same bytes"
    );
    let other_name = other.sim.data.users[5].username.clone();
    assert_ne!(name, other_name);
    for s in [a, b, other] {
        let _ = s.stop.send(());
    }
}

#[tokio::test]
async fn windows_give_instagrams_429_per_ip_for_anonymous_and_per_account_when_logged_in() {
    // `other` allows 75 requests per 660 s; at time scale 0.01 that is 75 per 6.6 s.
    let s = start(31, 0.01).await;
    let anonymous = client();
    let url = format!(
        "{}/api/v1/users/web_profile_info/?username={}",
        s.base, s.sim.data.users[0].username
    );
    for i in 0..75 {
        let r = anonymous
            .get(&url)
            .header("x-forwarded-for", "10.0.0.1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "request {i}");
    }
    let r = anonymous
        .get(&url)
        .header("x-forwarded-for", "10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["message"],
        "Please wait a few minutes before you try again."
    );
    assert_eq!(body["status"], "fail");
    // Another IP has its own window.
    let r = anonymous
        .get(&url)
        .header("x-forwarded-for", "10.0.0.2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A logged-in account from the exhausted IP counts against the account, not the IP. Its login
    // itself (2 requests) also counts against the IP, so log in from a fresh one.
    let member = client();
    let home = member
        .get(format!("{}/", s.base))
        .header("x-forwarded-for", "10.0.0.3")
        .send()
        .await
        .unwrap();
    let csrf = home
        .cookies()
        .find(|k| k.name() == "csrftoken")
        .unwrap()
        .value()
        .to_owned();
    let r = member
        .post(format!("{}/api/v1/web/accounts/login/ajax/", s.base))
        .header("x-forwarded-for", "10.0.0.3")
        .header("x-csrftoken", csrf)
        .body("username=crawler1&password=s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["authenticated"], true);
    let r = member
        .get(&url)
        .header("x-forwarded-for", "10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "logged in: the IP's window does not apply"
    );

    // The oracle saw 76 requests in the IP's busiest window (the 429 counts: the server received
    // it) and exactly one 429.
    let (_, oracle) = get_json(&anonymous, &format!("{}/__sim/oracle", s.base)).await;
    assert_eq!(oracle["responses_429"], 1);
    let peak = oracle["peaks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["scope"] == "ip:10.0.0.1" && p["key"] == "other")
        .unwrap();
    assert_eq!(
        (peak["most"].as_u64(), peak["cap"].as_u64()),
        (Some(76), Some(75))
    );
    let audit = anonymous
        .get(format!("{}/__sim/audit.jsonl", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|e| e["account"] == "crawler1" && e["status"] == 200)
    );
    assert!(lines.iter().all(|e| e["bytes"].is_u64() && e["t"].is_f64()));

    // After the window passes, the IP may send again.
    tokio::time::sleep(std::time::Duration::from_millis(6700)).await;
    let r = anonymous
        .get(&url)
        .header("x-forwarded-for", "10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let _ = s.stop.send(());
}

#[tokio::test]
async fn a_login_session_reaches_the_mobile_api_only_with_the_cookie_derived_headers() {
    let s = start(41, 1.0).await;
    // Log in on a client without a cookie store to see the Set-Cookie headers themselves.
    let raw = reqwest::Client::new();
    let home = raw.get(format!("{}/", s.base)).send().await.unwrap();
    let csrf = home
        .cookies()
        .find(|k| k.name() == "csrftoken")
        .unwrap()
        .value()
        .to_owned();
    let r = raw
        .post(format!("{}/api/v1/web/accounts/login/ajax/", s.base))
        .header("x-csrftoken", &csrf)
        .header("cookie", format!("csrftoken={csrf}"))
        .body("username=crawler1&password=s3cret")
        .send()
        .await
        .unwrap();
    let cookies: std::collections::HashMap<String, String> = r
        .cookies()
        .map(|k| (k.name().to_owned(), k.value().to_owned()))
        .collect();
    for name in ["sessionid", "ds_user_id", "mid", "ig_did", "rur"] {
        assert!(cookies.contains_key(name), "login sets {name}");
    }
    let target = public_user(&s, |_| true);
    let url = format!("{}/mobile/api/v1/users/{}/info/", s.base, target.id);
    let mobile = |with_app_id: bool, with_user_header: bool| {
        let mut rq = raw
            .get(&url)
            .header("cookie", format!("sessionid={}", cookies["sessionid"]))
            .header("x-mid", &cookies["mid"])
            .header("x-ig-device-id", &cookies["ig_did"])
            .header("user-agent", "Instagram 361.0.0.35.82 (iPad13,8; iOS 18_0; en_US; en-US; scale=2.00; 2048x2732; 674117118)");
        if with_app_id {
            rq = rq.header("x-ig-app-id", "124024574287414");
        }
        if with_user_header {
            rq = rq.header("ig-u-ds-user-id", &cookies["ds_user_id"]);
        }
        rq.send()
    };
    let ok = mobile(true, true).await.unwrap();
    let status = ok.status();
    let ok_headers = ok.headers().clone();
    let body: Value = ok.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(ok_headers.contains_key("ig-set-ig-u-rur"));
    assert_eq!(body["user"]["username"], target.username);
    assert_eq!(body["user"]["media_count"], target.post_count);
    assert_eq!(
        mobile(false, true).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        mobile(true, false).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    let anonymous = raw
        .get(&url)
        .header("x-ig-app-id", "124024574287414")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::FORBIDDEN);

    // Stories of the same user through reels_media, counted as `iphone` in the audit log.
    let r = raw
        .get(format!(
            "{}/mobile/api/v1/feed/reels_media/?reel_ids={}",
            s.base, target.id
        ))
        .header("cookie", format!("sessionid={}", cookies["sessionid"]))
        .header("x-mid", &cookies["mid"])
        .header("x-ig-device-id", &cookies["ig_did"])
        .header("x-ig-app-id", "124024574287414")
        .header("ig-u-ds-user-id", &cookies["ds_user_id"])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let reels: Value = r.json().await.unwrap();
    assert!(reels["reels"][target.id.to_string()]["items"].is_array());
    // Highlights: the tray, then their items through reels_media.
    let mobile_get = |url: String| {
        raw.get(url)
            .header("cookie", format!("sessionid={}", cookies["sessionid"]))
            .header("x-mid", &cookies["mid"])
            .header("x-ig-device-id", &cookies["ig_did"])
            .header("x-ig-app-id", "124024574287414")
            .header("ig-u-ds-user-id", &cookies["ds_user_id"])
            .send()
    };
    let mut found = false;
    for u in s.sim.data.users.iter().filter(|u| !u.is_private).take(20) {
        let tray: Value = mobile_get(format!(
            "{}/mobile/api/v1/highlights/{}/highlights_tray/",
            s.base, u.id
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let Some(first) = tray["tray"].as_array().and_then(|t| t.first()).cloned() else {
            continue;
        };
        let id = first["id"].as_str().unwrap().to_owned();
        let reels: Value = mobile_get(format!(
            "{}/mobile/api/v1/feed/reels_media/?reel_ids={id}",
            s.base
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(
            reels["reels"][&id]["items"].as_array().unwrap().len() as u64,
            first["media_count"].as_u64().unwrap()
        );
        found = true;
        break;
    }
    assert!(found, "some user among the first 20 has highlights");
    let audit = raw
        .get(format!("{}/__sim/audit.jsonl", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"query_type\":\"iphone\""))
    );
    let _ = s.stop.send(());
}

#[tokio::test]
async fn doc_id_queries_serve_profile_posts_and_count_as_their_own_type() {
    let s = start(42, 1.0).await;
    let c = client();
    let user = public_user(&s, |u| u.post_count > 5);
    let r = c
        .post(format!("{}/graphql/query", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("doc_id", hashes::DOC_PROFILE_POSTS),
                (
                    "variables",
                    &serde_json::json!({"id": user.id.to_string(), "first": 5}).to_string(),
                ),
                ("server_timestamps", "true"),
            ])
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page: Value = r.json().await.unwrap();
    assert_eq!(
        page["data"]["user"]["edge_owner_to_timeline_media"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let audit = c
        .get(format!("{}/__sim/audit.jsonl", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(audit.contains(&format!(
        "\"query_type\":\"doc:{}\"",
        hashes::DOC_PROFILE_POSTS
    )));
    let _ = s.stop.send(());
}

#[tokio::test]
async fn every_fault_can_be_switched_on_and_a_client_sees_it() {
    let s = start(43, 1.0).await;
    let c = client();
    let url = format!(
        "{}/api/v1/users/web_profile_info/?username={}",
        s.base, s.sim.data.users[1].username
    );
    let set = |faults: Value| {
        let c = c.clone();
        let base = s.base.clone();
        async move {
            let r = c
                .post(format!("{base}/__sim/faults"))
                .body(faults.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
    };
    set(serde_json::json!({"error_rate": 1.0})).await;
    let r = c.get(&url).send().await.unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());

    set(serde_json::json!({"invalid_json_rate": 1.0})).await;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).is_err(),
        "invalid JSON"
    );

    set(serde_json::json!({"drop_rate": 1.0})).await;
    let dropped = async { c.get(&url).send().await?.bytes().await };
    assert!(dropped.await.is_err(), "the connection was cut");

    set(serde_json::json!({"latency_ms": 0, "spike_rate": 1.0, "spike_ms": 300})).await;
    let t0 = std::time::Instant::now();
    assert_eq!(c.get(&url).send().await.unwrap().status(), StatusCode::OK);
    assert!(t0.elapsed() >= std::time::Duration::from_millis(300));

    assert_eq!(login(&c, &s.base, "s3cret").await["authenticated"], true);
    set(serde_json::json!({"checkpoint": ["crawler1"]})).await;
    let (status, body) = get_json(&c, &url).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("checkpoint_required"))
    );

    set(serde_json::json!({"logout": ["crawler1"]})).await;
    let owner = public_user(&s, |_| true);
    let r = c
        .get(graphql_url(
            &s.base,
            hashes::FOLLOWERS,
            serde_json::json!({"id": owner.id.to_string(), "first": 5}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FOUND,
        "a logged-out session is sent to the login page"
    );

    let r = c
        .post(format!("{}/__sim/faults", s.base))
        .body(r#"{"error_rate": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "out-of-range fault settings are refused"
    );
    let _ = s.stop.send(());
}

/// Follows `end_cursor` through every page of a connection at `path` (a JSON pointer to it);
/// checks that every page reports the same `count` and that the walk yields exactly that many.
async fn walk(c: &reqwest::Client, base: &str, hash: &str, vars: Value, path: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    let mut count: Option<u64> = None;
    loop {
        let mut v = vars.clone();
        if let Some(a) = &after {
            v["after"] = Value::String(a.clone());
        }
        let (status, page) = get_json(c, &graphql_url(base, hash, v)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let edge = page
            .pointer(path)
            .unwrap_or_else(|| panic!("no {path} in {page}"));
        let this_count = edge["count"].as_u64().expect("a count on every page");
        assert_eq!(
            *count.get_or_insert(this_count),
            this_count,
            "count changed between pages"
        );
        ids.extend(
            edge["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["id"].as_str().unwrap().to_owned()),
        );
        match edge["page_info"]["end_cursor"].as_str() {
            Some(cur) => after = Some(cur.to_owned()),
            None => {
                assert_eq!(
                    ids.len() as u64,
                    this_count,
                    "the walk yields `count` items"
                );
                return ids;
            }
        }
    }
}

#[tokio::test]
async fn hashtag_and_tagged_posts_paginate_completely() {
    let s = start(44, 1.0).await;
    let c = client();
    let expected: Vec<String> = s
        .sim
        .data
        .hashtag_posts("coral")
        .iter()
        .map(|&(o, j)| s.sim.data.post(o, j).unwrap().id.to_string())
        .collect();
    assert!(expected.len() > 20);
    let got = walk(
        &c,
        &s.base,
        hashes::HASHTAG,
        serde_json::json!({"tag_name": "coral", "first": 20}),
        "/data/hashtag/edge_hashtag_to_media",
    )
    .await;
    assert_eq!(got, expected, "every post once, newest first");
    let (_, first_page) = get_json(
        &c,
        &graphql_url(
            &s.base,
            hashes::HASHTAG,
            serde_json::json!({"tag_name": "coral", "first": 1}),
        ),
    )
    .await;
    assert_eq!(
        first_page["data"]["hashtag"]["edge_hashtag_to_top_posts"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        9
    );

    let v = (0..s.sim.data.users.len() as u32)
        .max_by_key(|&v| s.sim.data.tagged_posts(v).len())
        .unwrap();
    let user = s.sim.data.users[v as usize].clone();
    let expected: Vec<String> = s
        .sim
        .data
        .tagged_posts(v)
        .iter()
        .map(|&(o, j)| s.sim.data.post(o, j).unwrap().id.to_string())
        .collect();
    let got = walk(
        &c,
        &s.base,
        hashes::TAGGED,
        serde_json::json!({"id": user.id.to_string(), "first": 3}),
        "/data/user/edge_user_to_photos_of_you",
    )
    .await;
    assert_eq!(got, expected);
    let _ = s.stop.send(());
}

#[tokio::test]
async fn repeated_429s_put_an_account_into_checkpoint_required() {
    let s = start_with(45, 0.01, 3).await;
    let c = client();
    assert_eq!(login(&c, &s.base, "s3cret").await["authenticated"], true);
    let url = format!(
        "{}/api/v1/users/web_profile_info/?username={}",
        s.base, s.sim.data.users[2].username
    );
    // The login itself was anonymous (counted against the IP), so the account has 75 to spend.
    let mut statuses = Vec::new();
    for _ in 0..79 {
        statuses.push(c.get(&url).send().await.unwrap().status().as_u16());
    }
    assert!(statuses[..75].iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(&statuses[75..78], &[429, 429, 429]);
    let (status, body) = get_json(&c, &url).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("checkpoint_required"))
    );
    let _ = s.stop.send(());
}

async fn login_as(
    c: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
) -> (StatusCode, Value) {
    let home = c.get(format!("{base}/")).send().await.unwrap();
    let csrf = home
        .cookies()
        .find(|k| k.name() == "csrftoken")
        .unwrap()
        .value()
        .to_owned();
    let r = c
        .post(format!("{base}/api/v1/web/accounts/login/ajax/"))
        .header("x-csrftoken", csrf)
        .body(format!("username={username}&password={password}"))
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn two_factor_and_checkpoint_accounts_answer_like_instagram() {
    let s = start(46, 1.0).await;
    let c = client();
    let (status, body) = login_as(&c, &s.base, "flagged", "pw").await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some("checkpoint_required"))
    );

    let (status, body) = login_as(&c, &s.base, "guarded", "pw").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["two_factor_required"], true);
    let identifier = body["two_factor_info"]["two_factor_identifier"]
        .as_str()
        .unwrap()
        .to_owned();
    let step = |code: &str| {
        c.post(format!(
            "{}/api/v1/web/accounts/login/ajax/two_factor/",
            s.base
        ))
        .body(format!(
            "username=guarded&identifier={identifier}&verificationCode={code}"
        ))
        .send()
    };
    let wrong = step("000000").await.unwrap();
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    let right = step("123456").await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    assert!(right.cookies().any(|k| k.name() == "sessionid"));
    assert_eq!(right.json::<Value>().await.unwrap()["authenticated"], true);
    let _ = s.stop.send(());
}

#[tokio::test]
async fn an_ended_session_is_sent_to_the_login_page() {
    let s = start(47, 1.0).await;
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!(
        "{}/api/v1/users/web_profile_info/?username={}",
        s.base, s.sim.data.users[0].username
    );
    let r = raw
        .get(&url)
        .header("cookie", "sessionid=not-a-session")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    // Absolute, as Instagram sends it: clients only recognise the absolute login URL.
    assert_eq!(
        r.headers()["location"],
        "https://www.instagram.com/accounts/login/"
    );
    let r = raw.get(&url).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "without a session cookie the page is public"
    );
    // Instaloader's anonymous placeholders: an empty sessionid is no session, not an ended one.
    let r = raw
        .get(&url)
        .header(
            "cookie",
            "sessionid=; mid=; ig_pr=1; ig_vw=1920; csrftoken=; s_network=; ds_user_id=",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "an empty sessionid is anonymous"
    );
    let _ = s.stop.send(());
}

#[tokio::test]
async fn the_seed_v1_api_logs_in_with_a_jwt_pages_with_cursors_and_reports_its_limits() {
    let s = start(48, 0.001).await; // 200 requests per 3.6 s
    let c = reqwest::Client::new();
    let r = c
        .post(format!("{}/api/v1/auth/login", s.base))
        .json(&serde_json::json!({"username": "crawler1", "password": "bad"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "UNAUTHORIZED"
    );
    let r = c
        .post(format!("{}/api/v1/auth/login", s.base))
        .json(&serde_json::json!({"username": "crawler1", "password": "s3cret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let login: Value = r.json().await.unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    assert_eq!(token.split('.').count(), 3, "header.payload.signature");
    assert_eq!(
        login["expires_in"], 4,
        "an hour at time scale 0.001, in whole seconds"
    );

    let user = public_user(&s, |u| u.post_count > 25);
    let r = c
        .get(format!("{}/api/v1/users/{}/posts", s.base, user.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a token is required");
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/api/v1/users/{}/posts?count=10", s.base, user.id);
        if let Some(cur) = &cursor {
            url.push_str(&format!("&cursor={cur}"));
        }
        let r = c.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        for h in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert!(r.headers().contains_key(h), "{h}");
        }
        let page: Value = r.json().await.unwrap();
        ids.extend(
            page["posts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["post_id"].as_str().unwrap().to_owned()),
        );
        if page["has_more"] == false {
            assert!(page["next_cursor"].is_null());
            break;
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(ids.len(), user.post_count as usize);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());

    let r = c
        .get(format!(
            "{}/api/v1/users/{}/followers?count=500",
            s.base, user.id
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["details"]["field"],
        "count"
    );
    let prefix = &user.username[..3];
    let r = c
        .get(format!("{}/api/v1/search/users?q={prefix}", s.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let found: Value = r.json().await.unwrap();
    assert!(
        found["users"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["username"].as_str().unwrap().contains(prefix))
    );

    // Exhaust the window: the seed's 429 body with reset_at, and Remaining at 0.
    let mut last = None;
    for _ in 0..220 {
        let r = c
            .get(format!("{}/api/v1/users/{}", s.base, user.id))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            last = Some(r);
            break;
        }
    }
    let r = last.expect("the window filled");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "Rate limit exceeded");
    assert!(body["reset_at"].as_str().unwrap().ends_with('Z'));
    let _ = s.stop.send(());
}

#[tokio::test]
async fn a_post_by_shortcode_carries_its_comment_threads() {
    let s = start(49, 1.0).await;
    let c = client();
    let owner = public_user(&s, |u| u.post_count > 0);
    let post = (0..owner.post_count)
        .filter_map(|i| s.sim.data.post(owner.index, i))
        .find(|p| p.comment_count > 5)
        .unwrap();
    let (status, body) = get_json(
        &c,
        &format!("{}/p/{}/?__a=1&__d=dis", s.base, post.shortcode),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let media = &body["graphql"]["shortcode_media"];
    assert_eq!(media["shortcode"], post.shortcode);
    assert_eq!(
        media["edge_media_to_parent_comment"]["count"],
        post.comment_count
    );
    let comments = media["edge_media_to_parent_comment"]["edges"]
        .as_array()
        .unwrap();
    assert!(
        comments
            .iter()
            .all(|c| c["node"]["edge_threaded_comments"]["edges"].is_array())
    );
    assert!(
        comments
            .iter()
            .any(|c| c["node"]["edge_threaded_comments"]["count"]
                .as_u64()
                .unwrap()
                > 0),
        "some comments have replies"
    );
    let (status, _) = get_json(&c, &format!("{}/p/NoSuchPost/", s.base)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let _ = s.stop.send(());
}

/// The transport a real Instaloader 4.16 needs over plain http, and how its requests are
/// labelled in the audit log.
#[tokio::test]
async fn plain_http_cookies_bearer_tokens_and_audit_labels_follow_instaloader_4_16() {
    let s = start(48, 1.0).await;
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The bare GET for a csrftoken: no Secure cookie, tokens for a logged-out page, uncounted.
    let home = raw
        .get(format!("{}/", s.base))
        .header("cookie", "sessionid=; csrftoken=")
        .send()
        .await
        .unwrap();
    let set_cookies: Vec<String> = home
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(set_cookies.iter().any(|c| c.starts_with("csrftoken=")));
    assert!(
        set_cookies.iter().all(|c| !c.contains("Secure")),
        "{set_cookies:?}"
    );
    let page = home.text().await.unwrap();
    assert!(page.contains(r#""LSD",[],{"token":""#), "{page}");
    assert!(page.contains(r#""IG_USER_EIMU":"0""#));
    assert!(
        !page.contains("DTSGInitialData"),
        "only a logged-in visitor gets fb_dtsg"
    );

    let csrf = "0123456789abcdef";
    let r = raw
        .post(format!("{}/api/v1/web/accounts/login/ajax/", s.base))
        .header("x-csrftoken", csrf)
        .header("cookie", format!("sessionid=; csrftoken={csrf}"))
        .body("username=crawler1&password=s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookies: std::collections::HashMap<String, String> = r
        .cookies()
        .map(|k| (k.name().to_owned(), k.value().to_owned()))
        .collect();
    assert!(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .all(|v| !v.to_str().unwrap().contains("Secure"))
    );
    let session = cookies["sessionid"].clone();
    let user_id = cookies["ds_user_id"].clone();

    // The start page as a logged-in page navigation: counted, with fb_dtsg and the viewer's id.
    let page = raw
        .get(format!("{}/", s.base))
        .header("cookie", format!("sessionid=; sessionid={session}"))
        .header("sec-fetch-dest", "document")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("DTSGInitialData"));
    assert!(page.contains(&format!(r#""IG_USER_EIMU":"{user_id}""#)));

    // The app's bearer token with no cookies identifies the account.
    let token = serde_json::json!({"ds_user_id": user_id, "sessionid": session}).to_string();
    let bearer = format!("Bearer IGT:2:{}", base64(token.as_bytes()));
    let target = public_user(&s, |_| true);
    let info = |auth: String| {
        raw.get(format!(
            "{}/mobile/api/v1/users/{}/info/",
            s.base, target.id
        ))
        .header("authorization", auth)
        .header("x-ig-app-id", trawl_simulator::server::MOBILE_APP_ID)
        .header("x-mid", "m")
        .header("x-ig-device-id", "d")
        .send()
    };
    let r = info(bearer).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["user"]["hd_profile_pic_url_info"]["url"]
            .as_str()
            .map(MediaItem::from_path),
        Some(Ok(MediaItem::ProfilePictureHd { user: target.id }))
    );
    let unknown = serde_json::json!({"ds_user_id": user_id, "sessionid": "nope"}).to_string();
    let r = info(format!("Bearer IGT:2:{}", base64(unknown.as_bytes())))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "an unknown token is no login"
    );

    // A forged cursor past the end (or past u64's end once a page is added) is an empty page.
    let forged: String = format!("tagged:{}:18446744073709551615", target.id)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    let url = graphql_url(
        &s.base,
        hashes::TAGGED,
        serde_json::json!({"id": target.id.to_string(), "first": 12, "after": forged}),
    );
    let (status, body) = get_json(&raw, &url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["data"]["user"]["edge_user_to_photos_of_you"]["edges"],
        serde_json::json!([])
    );

    // An override on a doc_id POST is labelled by its doc_id, and a 404 is audited.
    let faults = serde_json::json!({"overrides": [{"path_contains": "/api/graphql",
        "count": 1, "status": 503}]});
    raw.post(format!("{}/__sim/faults", s.base))
        .body(faults.to_string())
        .send()
        .await
        .unwrap();
    let r = raw
        .post(format!("{}/api/graphql", s.base))
        .body("doc_id=27128499623469141&variables=%7B%7D&lsd=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = raw
        .get(format!("{}/no/such/route/", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let log = raw
        .get(format!("{}/__sim/audit.jsonl", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let labels: Vec<(String, String)> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|e| {
            (
                e["query_type"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let pair = |q: &str, p: &str| (q.to_owned(), p.to_owned());
    assert_eq!(
        labels,
        vec![
            pair("uncounted", "/"),
            pair("uncounted", "/api/v1/web/accounts/login/ajax/"),
            pair("other", "/"),
            pair("iphone", "/mobile/api/v1/users/{id}/info/"),
            pair("iphone", "/mobile/api/v1/users/{id}/info/"),
            pair(&format!("qh:{}", hashes::TAGGED), "/graphql/query"),
            pair("doc:27128499623469141", "/api/graphql"),
            pair("other", "/no/such/route/"),
        ]
    );
    let oracle: Value = raw
        .get(format!("{}/__sim/oracle", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        oracle["peaks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["key"] != "uncounted"),
        "uncounted requests are in no window"
    );
    let _ = s.stop.send(());
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
