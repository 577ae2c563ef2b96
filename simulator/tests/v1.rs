//! The v1 REST API and its realtime stream over real HTTP and a real WebSocket client, endpoint by
//! endpoint against the API document: shapes, status codes, the standard error body, tokens,
//! cursors, the hourly tiers in the windows and the oracle, and stream events across a reconnect.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use trawl_simulator::data::User;
use trawl_simulator::{DataSet, Sim, SimConfig, Sizes};

struct Running {
    base: String,
    sim: Arc<Sim>,
    http: reqwest::Client,
    _served: trawl_simulator::Background,
}

/// A simulator with two login accounts, `alice` and `bob`, and windows scaled by `time_scale`.
async fn start(seed: u64, time_scale: f64) -> Running {
    start_with(seed, time_scale, &["alice", "bob"]).await
}

/// A simulator whose login accounts are `names`, each with the password `pw-` + its first letter.
async fn start_with(seed: u64, time_scale: f64, names: &[&str]) -> Running {
    let data = DataSet::generate(
        seed,
        Sizes {
            users: 300,
            ..Sizes::default()
        },
    );
    let accounts = names
        .iter()
        .map(|n| (n.to_string(), format!("pw-{}", &n[..1])))
        .collect();
    let sim = Sim::new(SimConfig {
        trust_forwarded_for: true,
        ..SimConfig::fault_free(data, accounts, time_scale)
    });
    let served = trawl_simulator::serve_in_background(sim).await.unwrap();
    Running {
        base: served.base.clone(),
        sim: served.sim.clone(),
        http: reqwest::Client::new(),
        _served: served,
    }
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    async fn login(&self, username: &str, password: &str) -> Value {
        let r = self
            .http
            .post(self.url("/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    async fn token(&self, username: &str, password: &str) -> String {
        self.login(username, password).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = r.send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(path)).bearer_auth(token))
            .await
    }

    fn user(&self, fits: impl Fn(&User) -> bool) -> User {
        self.sim
            .data
            .users
            .iter()
            .find(|u| fits(u))
            .cloned()
            .expect("the data set has such a user")
    }
}

/// The document's error body: `{"error": {"code", "message", ...}}`.
fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// A multipart body by hand (the HTTP client here has no multipart support built in).
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "trawl-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, file, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

const JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 1, 1, 0,
];

async fn upload(
    s: &Running,
    token: &str,
    path: &str,
    parts: &[(&str, Option<&str>, &[u8])],
) -> (StatusCode, Value) {
    let (content_type, body) = multipart(parts);
    s.send(
        s.http
            .post(s.url(path))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

#[tokio::test]
async fn tokens_expire_refresh_once_and_end_when_revoked() {
    let s = start(61, 0.001).await; // an hour is 3.6 s: tokens live 4 s
    let (status, body) = s
        .send(
            s.http
                .post(s.url("/auth/login"))
                .json(&json!({"username": "alice", "password": "no"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "UNAUTHORIZED");
    let (status, body) = s
        .send(
            s.http
                .post(s.url("/auth/login"))
                .json(&json!({"username": "alice"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["details"]["field"], "password");
    let (status, body) = s
        .send(s.http.post(s.url("/auth/login")).body("{not json"))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "INVALID_REQUEST")
    );

    let login = s.login("alice", "pw-a").await;
    assert_eq!(login["expires_in"], 4);
    assert_eq!(login["user"]["username"], "alice");
    assert_eq!(login["user"]["user_id"], s.sim.account_user_id("alice"));
    let token = login["access_token"].as_str().unwrap().to_owned();
    assert_eq!(token.split('.').count(), 3, "header.payload.signature");
    let (status, _) = s.get(&token, "/feed").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s.get("not-a-token", "/feed").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["details"]["reason"], "invalid_token");
    let (status, body) = s.send(s.http.get(s.url("/feed"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["details"]["reason"], "missing_token");

    // A refresh token works once and gives a working pair.
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();
    let (status, renewed) = s
        .send(
            s.http
                .post(s.url("/auth/refresh"))
                .json(&json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let fresh = renewed["access_token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, token);
    let (status, body) = s
        .send(
            s.http
                .post(s.url("/auth/refresh"))
                .json(&json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a spent refresh token");
    assert_eq!(body["error"]["details"]["reason"], "invalid_refresh_token");

    // The first token ends after expires_in.
    tokio::time::sleep(std::time::Duration::from_millis(4_300)).await;
    let (status, body) = s.get(&token, "/feed").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["details"]["reason"], "token_expired");

    // Revocation ends every token of the account: the refresh token is refused too.
    let pair = s.login("alice", "pw-a").await;
    let r = s
        .http
        .post(format!("{}/__sim/v1/revoke", s.base))
        .json(&json!({"account": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (status, _) = s.get(pair["access_token"].as_str().unwrap(), "/feed").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s
        .send(
            s.http
                .post(s.url("/auth/refresh"))
                .json(&json!({"refresh_token": pair["refresh_token"]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn profiles_posts_comments_and_the_graph_read_as_the_document_says() {
    let s = start(62, 1.0).await;
    let token = s.token("alice", "pw-a").await;
    let owner = s.user(|u| !u.is_private && u.post_count > 25 && u.followers.len() > 5);

    let (status, profile) = s.get(&token, &format!("/users/{}", owner.id)).await;
    assert_eq!(status, StatusCode::OK);
    for key in [
        "user_id",
        "username",
        "full_name",
        "bio",
        "website",
        "profile_image_url",
        "verified",
        "private_account",
        "stats",
        "following",
        "followed_by",
        "requested",
    ] {
        assert!(!profile[key].is_null(), "{key} in {profile}");
    }
    assert_eq!(profile["user_id"], owner.id.to_string());
    assert_eq!(profile["stats"]["posts_count"], owner.post_count);
    assert!(
        profile["stats"]["followers_count"].as_u64().unwrap() as usize >= owner.followers.len()
    );
    let (status, body) = s.get(&token, "/users/12").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "NOT_FOUND"));

    // Every post once, forwards with next_cursor; previous_cursor leads back.
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut second_page_previous = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/users/{}/posts?count=10&cursor={c}", owner.id),
            None => format!("/users/{}/posts?count=10", owner.id),
        };
        let (status, page) = s.get(&token, &path).await;
        assert_eq!(status, StatusCode::OK);
        if cursor.is_none() {
            assert!(page["previous_cursor"].is_null());
        } else if second_page_previous.is_none() {
            second_page_previous = page["previous_cursor"].as_str().map(str::to_owned);
        }
        for p in page["posts"].as_array().unwrap() {
            for key in [
                "post_id",
                "user",
                "caption",
                "media",
                "hashtags",
                "user_tags",
                "created_at",
                "likes_count",
                "comments_count",
                "liked_by_user",
            ] {
                assert!(!p[key].is_null(), "{key}");
            }
            ids.push(p["post_id"].as_str().unwrap().to_owned());
        }
        if page["has_more"] == false {
            assert!(page["next_cursor"].is_null());
            break;
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(ids.len(), owner.post_count as usize);
    let (_, back) = s
        .get(
            &token,
            &format!(
                "/users/{}/posts?count=10&cursor={}",
                owner.id,
                second_page_previous.unwrap()
            ),
        )
        .await;
    assert_eq!(
        back["posts"][0]["post_id"],
        ids[0].as_str(),
        "previous_cursor of page 2 is page 1"
    );
    let (_, default_page) = s.get(&token, &format!("/users/{}/posts", owner.id)).await;
    assert_eq!(
        default_page["posts"].as_array().unwrap().len(),
        20,
        "count defaults to 20"
    );
    let (status, body) = s
        .get(&token, &format!("/users/{}/posts?count=51", owner.id))
        .await;
    assert_eq!(
        (status, body["error"]["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("count"))
    );
    let (status, _) = s
        .get(&token, &format!("/users/{}/posts?cursor=bogus", owner.id))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A post and its comments, threads in order.
    let post = (0..owner.post_count)
        .filter_map(|i| s.sim.data.post(owner.index, i))
        .find(|p| p.comment_count > 3)
        .unwrap();
    let (status, one) = s.get(&token, &format!("/posts/{}", post.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["saved_by_user"], false);
    let (status, comments) = s
        .get(&token, &format!("/posts/{}/comments?count=50", post.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    let list = comments["comments"].as_array().unwrap();
    assert_eq!(comments["total_count"], one["comments_count"]);
    assert_eq!(
        list.iter()
            .filter(|c| c["parent_comment_id"].is_null())
            .count(),
        post.comment_count as usize
    );

    // Followers and following page up to 100; a private user's lists are closed.
    let (status, page) = s
        .get(&token, &format!("/users/{}/followers?count=100", owner.id))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page["users"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["following"].is_boolean())
    );
    let (status, _) = s
        .get(&token, &format!("/users/{}/following?count=101", owner.id))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let private = s.user(|u| u.is_private);
    let (status, body) = s
        .get(&token, &format!("/users/{}/followers", private.id))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "FORBIDDEN"));
    let (status, _) = s.get(&token, &format!("/users/{}/posts", private.id)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn writes_land_in_reads_and_refuse_what_the_document_refuses() {
    let s = start(63, 1.0).await;
    let alice = s.token("alice", "pw-a").await;
    let bob = s.token("bob", "pw-b").await;
    let alice_id = s.sim.account_user_id("alice");
    let tagged = s.user(|u| !u.is_private);

    // Upload: 201 with the document's fields; the bytes are served back.
    let tags = format!("[{}]", tagged.id);
    let (status, post) = upload(
        &s,
        &alice,
        "/posts",
        &[
            ("caption", None, b"Beautiful sunset! #nature #photography"),
            ("user_tags", None, tags.as_bytes()),
            ("media", Some("a.jpg"), JPEG),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{post}");
    assert_eq!(post["hashtags"], json!(["nature", "photography"]));
    assert_eq!(post["user"]["user_id"], alice_id.to_string());
    assert_eq!(post["user_tags"][0]["user_id"], tagged.id.to_string());
    assert_eq!(post["media"][0]["type"], "photo");
    assert_eq!(post["likes_count"], 0);
    let media_url = post["media"][0]["url"].as_str().unwrap();
    let bytes = s
        .http
        .get(media_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], JPEG);
    let post_id = post["post_id"].as_str().unwrap().to_owned();

    let big = vec![0xFFu8; 8 * 1024 * 1024 + 1];
    let (status, body) = upload(&s, &alice, "/posts", &[("media", Some("big.jpg"), &big)]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "MEDIA_TOO_LARGE")
    );
    let (status, body) = upload(
        &s,
        &alice,
        "/posts",
        &[("media", Some("a.gif"), b"GIF89a....")],
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "INVALID_MEDIA_FORMAT")
    );
    let long = "x".repeat(2201);
    let (status, body) = upload(
        &s,
        &alice,
        "/posts",
        &[
            ("caption", None, long.as_bytes()),
            ("media", Some("a.jpg"), JPEG),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"]["details"],
        json!({"field": "caption", "max_length": 2200})
    );
    let (status, _) = s
        .send(
            s.http
                .post(s.url("/posts"))
                .bearer_auth(&alice)
                .json(&json!({"caption": "x"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "JSON is not a multipart upload"
    );

    // Alice's feed starts with her post.
    let (_, feed) = s.get(&alice, "/feed").await;
    assert_eq!(feed["posts"][0]["post_id"], post_id.as_str());
    assert!(
        feed["posts"].as_array().unwrap().len() > 1,
        "followed users' posts too"
    );

    // Bob likes and comments; Alice is notified of both, newest first.
    let (status, liked) = s
        .send(
            s.http
                .post(s.url(&format!("/posts/{post_id}/like")))
                .bearer_auth(&bob),
        )
        .await;
    assert_eq!(
        (status, liked.clone()),
        (StatusCode::OK, json!({"liked": true, "likes_count": 1}))
    );
    let (status, c) = s
        .send(
            s.http
                .post(s.url(&format!("/posts/{post_id}/comments")))
                .bearer_auth(&bob)
                .json(&json!({"text": "Amazing photo! 😍", "parent_comment_id": null})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(c["text"], "Amazing photo! 😍");
    let (status, reply) = s
        .send(
            s.http
                .post(s.url(&format!("/posts/{post_id}/comments")))
                .bearer_auth(&alice)
                .json(&json!({"text": "thanks", "parent_comment_id": c["comment_id"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["parent_comment_id"], c["comment_id"]);
    let (_, counted) = s.get(&alice, &format!("/posts/{post_id}")).await;
    assert_eq!(counted["comments_count"], 2, "a comment and its reply");
    let (status, _) = s
        .send(
            s.http
                .post(s.url(&format!("/posts/{post_id}/comments")))
                .bearer_auth(&bob)
                .json(&json!({"text": ""})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, notes) = s.get(&alice, "/notifications").await;
    let kinds: Vec<&str> = notes["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["comment", "like"]);
    assert_eq!(notes["unread_count"], 2);
    assert_eq!(notes["notifications"][0]["actor"]["username"], "bob");
    assert_eq!(
        notes["notifications"][0]["post"]["post_id"],
        post_id.as_str()
    );
    let (_, again) = s.get(&alice, "/notifications").await;
    assert_eq!(
        again["unread_count"], 0,
        "listing the newest page marks them read"
    );
    let (_, unliked) = s
        .send(
            s.http
                .delete(s.url(&format!("/posts/{post_id}/like")))
                .bearer_auth(&bob),
        )
        .await;
    assert_eq!(unliked, json!({"liked": false, "likes_count": 0}));

    // Only the owner deletes; then the post is gone.
    let (status, _) = s
        .send(
            s.http
                .delete(s.url(&format!("/posts/{post_id}")))
                .bearer_auth(&bob),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, gone) = s
        .send(
            s.http
                .delete(s.url(&format!("/posts/{post_id}")))
                .bearer_auth(&alice),
        )
        .await;
    assert_eq!(
        (status, gone),
        (
            StatusCode::OK,
            json!({"message": "Post deleted successfully", "post_id": post_id})
        )
    );
    let (status, _) = s.get(&alice, &format!("/posts/{post_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Stories: upload, then in Bob's stories feed once he follows Alice, viewed once he views it.
    let (status, story) = upload(
        &s,
        &alice,
        "/stories",
        &[
            ("media", Some("s.jpg"), JPEG),
            ("media_type", None, b"photo"),
            ("duration", None, b"5"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{story}");
    assert_eq!(story["user_id"], alice_id.to_string());
    let (status, _) = upload(
        &s,
        &alice,
        "/stories",
        &[
            ("media", Some("s.jpg"), JPEG),
            ("media_type", None, b"video"),
        ],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the declared type must match the file"
    );
    let (status, f) = s
        .send(
            s.http
                .post(s.url(&format!("/users/{alice_id}/follow")))
                .bearer_auth(&bob),
        )
        .await;
    assert_eq!(
        (status, f["following"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (_, tray) = s.get(&bob, "/stories/feed").await;
    let alice_tray = tray["stories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"]["username"] == "alice")
        .cloned()
        .unwrap();
    assert_eq!(alice_tray["has_unseen"], true);
    let story_id = story["story_id"].as_str().unwrap();
    let (status, viewed) = s
        .send(
            s.http
                .post(s.url(&format!("/stories/{story_id}/view")))
                .bearer_auth(&bob),
        )
        .await;
    assert_eq!(
        (status, viewed),
        (
            StatusCode::OK,
            json!({"story_id": story_id, "viewed": true, "views_count": 1})
        )
    );
    let (_, tray) = s.get(&bob, "/stories/feed").await;
    let alice_tray = tray["stories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"]["username"] == "alice")
        .cloned()
        .unwrap();
    assert_eq!(alice_tray["has_unseen"], false);

    // Follow a private user: a request; unfollow; following yourself is refused.
    let private = s.user(|u| u.is_private);
    let (_, r) = s
        .send(
            s.http
                .post(s.url(&format!("/users/{}/follow", private.id)))
                .bearer_auth(&bob),
        )
        .await;
    assert_eq!(r["requested"], true);
    let (_, p) = s.get(&bob, &format!("/users/{}", private.id)).await;
    assert_eq!(p["requested"], true);
    let (_, r) = s
        .send(
            s.http
                .delete(s.url(&format!("/users/{alice_id}/follow")))
                .bearer_auth(&bob),
        )
        .await;
    assert_eq!(r, json!({"following": false}));
    let bob_id = s.sim.account_user_id("bob");
    let (status, _) = s
        .send(
            s.http
                .post(s.url(&format!("/users/{bob_id}/follow")))
                .bearer_auth(&bob),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Profile edits: one's own only, validated.
    let (status, edited) = s
        .send(s.http.put(s.url(&format!("/users/{alice_id}"))).bearer_auth(&alice)
            .json(&json!({"full_name": "Alice A.", "bio": "Updated bio", "website": "https://newsite.com"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            edited["user"]["full_name"].as_str(),
            edited["user"]["bio"].as_str()
        ),
        (Some("Alice A."), Some("Updated bio"))
    );
    let (status, _) = s
        .send(
            s.http
                .put(s.url(&format!("/users/{bob_id}")))
                .bearer_auth(&alice)
                .json(&json!({"bio": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = s
        .send(
            s.http
                .put(s.url(&format!("/users/{alice_id}")))
                .bearer_auth(&alice)
                .json(&json!({"website": "ftp://x"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("website"))
    );
}

#[tokio::test]
async fn search_explore_and_the_tiers_hold_in_the_windows_and_the_oracle() {
    let s = start(64, 1.0).await;
    let token = s.token("alice", "pw-a").await;
    let some = s.user(|u| u.username.len() > 4);
    let q = &some.username[..4];
    let (status, found) = s.get(&token, &format!("/search/users?q={q}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(found["total_count"].as_u64().unwrap() >= 1);
    assert!(
        found["users"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["username"].as_str().unwrap().contains(q)
                || u["full_name"].as_str().unwrap().to_lowercase().contains(q))
    );
    let (status, body) = s.get(&token, "/search/users").await;
    assert_eq!(
        (status, body["error"]["details"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("q"))
    );
    let (_, tags) = s.get(&token, "/search/hashtags?q=a").await;
    let first = &tags["hashtags"][0];
    assert!(
        first["name"].is_string() && first["post_count"].is_u64() && first["trending"].is_boolean()
    );
    let (_, places) = s
        .get(&token, "/search/locations?q=o&lat=38.7&lng=-9.1")
        .await;
    assert_eq!(places["locations"][0]["name"], "Lisbon", "nearest first");
    assert_eq!(places["locations"][0]["country"], "Portugal");
    let (status, _) = s.get(&token, "/search/locations?q=o&lat=91").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, explore) = s.get(&token, "/explore?count=50").await;
    let likes: Vec<u64> = explore["posts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["likes_count"].as_u64().unwrap())
        .collect();
    assert_eq!(likes.len(), 50);
    assert!(likes.windows(2).all(|w| w[0] >= w[1]), "most liked first");

    // Anonymous search: 20 an hour per IP, announced in the headers; the 21st gets the document's
    // 429 with reset_at. Another IP has its own window; a token holder has 100.
    let anonymous = |ip: &'static str| {
        s.http
            .get(s.url(&format!("/search/users?q={q}")))
            .header("x-forwarded-for", ip)
    };
    for n in 1..=20 {
        let r = anonymous("10.0.0.1").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-ratelimit-limit"], "20");
        assert_eq!(
            r.headers()["x-ratelimit-remaining"],
            (20 - n).to_string().as_str()
        );
    }
    let r = anonymous("10.0.0.1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let reset: u64 = r.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        reset > now && reset <= now + 3601,
        "a Unix time within the hour"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "Rate limit exceeded");
    assert!(body["reset_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        anonymous("10.0.0.2").send().await.unwrap().status(),
        StatusCode::OK
    );
    let r = s
        .http
        .get(s.url(&format!("/search/users?q={q}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-ratelimit-limit"], "100");
    // Anonymous user lookup: 50; the feed needs a token.
    let r = s
        .http
        .get(s.url(&format!("/users/{}", some.id)))
        .header("x-forwarded-for", "10.0.0.3")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.status(),
            r.headers()["x-ratelimit-limit"].to_str().unwrap()
        ),
        (StatusCode::OK, "50")
    );

    let oracle: Value = s
        .http
        .get(format!("{}/__sim/oracle", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let peak = |scope: &str, key: &str| {
        oracle["peaks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["scope"] == scope && p["key"] == key)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let flooded = peak("ip:10.0.0.1", "v1:search");
    assert_eq!(
        (flooded["cap"].as_u64(), flooded["most"].as_u64()),
        (Some(20), Some(21)),
        "the oracle sees the one over"
    );
    assert_eq!(flooded["window_seconds"], 3600.0);
    let alice = peak("account:alice", "v1:search");
    assert_eq!(alice["cap"], 100);
    assert_eq!(oracle["responses_429"], 1);
}

async fn stream(
    s: &Running,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = format!("{}/v1/stream", s.base.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// The next text message as JSON, or the close code.
async fn next(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Result<Value, u16> {
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s");
        match m {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                return Err(frame.map_or(1005, |f| u16::from(f.code)));
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(1006),
        }
    }
}

#[tokio::test]
async fn the_stream_carries_what_happens_and_resumes_after_a_forced_reconnect() {
    // Alice alone: every generated post is by someone she follows, every notification hers.
    let s = start_with(65, 1.0, &["alice"]).await;
    let token = s.token("alice", "pw-a").await;
    let alice_id = s.sim.account_user_id("alice");

    let r = s
        .http
        .get(format!("{}/v1/stream", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a token is required");
    let mut bad = stream(&s, &token).await;
    bad.send(Message::Text(
        json!({"type": "subscribe", "channels": ["dms"]})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut bad).await.unwrap()["type"], "error");
    assert_eq!(next(&mut bad).await, Err(4003));

    let mut ws = stream(&s, &token).await;
    ws.send(Message::Text(
        json!({"type": "subscribe", "channels": ["feed", "notifications", "stories"]})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut ws).await.unwrap()["type"], "subscribed");
    // Three steps of the generator: a followed user posts, one posts a story, Alice is followed.
    let made: Value = s
        .http
        .post(format!("{}/__sim/v1/activity?n=3", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let made = made["events"].as_array().unwrap().clone();
    assert_eq!(made.len(), 3);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut ws).await.unwrap());
    }
    assert_eq!(
        seen.iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["new_post", "new_story", "notification"]
    );
    assert_eq!(seen[0]["data"]["post_id"], made[0]["post_id"]);
    assert_eq!(seen[0]["data"]["user"]["user_id"], made[0]["user_id"]);
    assert_eq!(seen[1]["data"]["story_id"], made[1]["story_id"]);
    assert_eq!(seen[2]["data"]["type"], "follow");
    // The post is there to crawl.
    let (status, _) = s
        .get(
            &token,
            &format!("/posts/{}", seen[0]["data"]["post_id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let last = seen[2]["event_id"].as_u64().unwrap();

    // The server closes every stream; what happens meanwhile is replayed on resume, once.
    s.http
        .post(format!("{}/__sim/v1/streams/close", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, Err(4000));
    let missed: Value = s
        .http
        .post(format!("{}/__sim/v1/activity?n=3", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ws = stream(&s, &token).await;
    ws.send(Message::Text(json!({"type": "subscribe", "channels": ["feed", "notifications", "stories"], "last_event_id": last}).to_string().into())).await.unwrap();
    assert_eq!(next(&mut ws).await.unwrap()["type"], "subscribed");
    let mut replayed = Vec::new();
    for _ in 0..3 {
        replayed.push(next(&mut ws).await.unwrap());
    }
    assert_eq!(
        replayed[0]["data"]["post_id"],
        missed["events"][0]["post_id"]
    );
    let ids: Vec<u64> = replayed
        .iter()
        .map(|e| e["event_id"].as_u64().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]) && ids[0] > last,
        "in order, after the last seen"
    );
    // A live event after the replay, and nothing twice.
    let (status, _) = upload(&s, &token, "/posts", &[("media", Some("a.jpg"), JPEG)]).await;
    assert_eq!(status, StatusCode::CREATED);
    let own = next(&mut ws).await.unwrap();
    assert_eq!(
        (
            own["type"].as_str(),
            own["data"]["user"]["user_id"].as_str()
        ),
        (Some("new_post"), Some(alice_id.to_string().as_str()))
    );
    assert!(own["event_id"].as_u64().unwrap() > ids[2]);
}
