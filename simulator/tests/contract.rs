//! The simulator over real HTTP: shapes, pagination, determinism, windows, login, the oracle.

use std::collections::HashSet;
use std::net::SocketAddr;

use reqwest::StatusCode;
use serde_json::Value;
use trawl_simulator::server::hashes;
use trawl_simulator::{DataSet, Sim, SimConfig, Sizes};

struct Running {
    base: String,
    sim: std::sync::Arc<Sim>,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(seed: u64, time_scale: f64) -> Running {
    let sim = Sim::new(SimConfig {
        data: DataSet::generate(
            seed,
            Sizes {
                users: 300,
                ..Sizes::default()
            },
        ),
        accounts: vec![("crawler1".into(), "s3cret".into())],
        time_scale,
        trust_forwarded_for: true,
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
    let user = s
        .sim
        .data
        .users
        .iter()
        .find(|u| !u.is_private && u.post_count > 30)
        .unwrap()
        .clone();
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
    let owner = s
        .sim
        .data
        .users
        .iter()
        .find(|u| !u.is_private && u.post_count > 0 && u.followers.len() > 25)
        .unwrap()
        .clone();
    let post = (0..owner.post_count)
        .filter_map(|i| s.sim.data.post(owner.index, i))
        .find(|p| p.comment_count > 10)
        .unwrap();
    let mut comments = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut vars = serde_json::json!({"shortcode": post.shortcode, "first": 7});
        if let Some(a) = &after {
            vars["after"] = Value::String(a.clone());
        }
        let (status, page) = get_json(&c, &graphql_url(&s.base, hashes::COMMENTS, vars)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let edge = &page["data"]["shortcode_media"]["edge_media_to_comment"];
        assert_eq!(edge["count"], post.comment_count);
        comments.extend(
            edge["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["id"].as_str().unwrap().to_owned()),
        );
        match edge["page_info"]["end_cursor"].as_str() {
            Some(cur) => after = Some(cur.to_owned()),
            None => break,
        }
    }
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
    let mut followers = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut vars = serde_json::json!({"id": owner.id.to_string(), "first": 10});
        if let Some(a) = &after {
            vars["after"] = Value::String(a.clone());
        }
        let (status, page) = get_json(&c, &graphql_url(&s.base, hashes::FOLLOWERS, vars)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let edge = &page["data"]["user"]["edge_followed_by"];
        followers.extend(
            edge["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["username"].as_str().unwrap().to_owned()),
        );
        match edge["page_info"]["end_cursor"].as_str() {
            Some(cur) => after = Some(cur.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = owner
        .followers
        .iter()
        .map(|&i| s.sim.data.users[i as usize].username.clone())
        .collect();
    assert_eq!(followers, expected);
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
    let body = |base: String, name: String| {
        let c = c.clone();
        async move {
            c.get(format!(
                "{base}/api/v1/users/web_profile_info/?username={name}"
            ))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
        }
    };
    let from_a = body(a.base.clone(), name.clone()).await;
    let from_b = body(b.base.clone(), name.clone()).await;
    assert_eq!(from_a, from_b);
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
