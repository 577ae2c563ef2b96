//! The account and proxy routes over real HTTP against a real PostgreSQL: listing never shows a
//! secret, an admin token moves an account between proxies, and every refusal says why and
//! changes nothing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use trawl_scheduler::testing::{self, RunningScheduler};
use trawl_shared::accounts::{Accounts, NewAccount};
use trawl_shared::crypto::SecretBox;
use trawl_shared::proxies::{self, NewProxy};
use trawl_shared::testing::{TestDb, fresh_db};
use trawl_shared::tokens::{Scope, TokenEntry, hash_hex};

const ADMIN: &str = "accounts-admin-token";
const READER: &str = "accounts-read-token";
const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Every secret the set-up stores; none may appear in any answer.
const SECRETS: [&str; 4] = [
    "account-password-41",
    "sessionid=cookie-secret-42",
    "proxy-user-43",
    "proxy-password-44",
];

struct Server {
    base: String,
    http: reqwest::Client,
    db: TestDb,
    running: RunningScheduler,
}

impl Server {
    /// A scheduler over a database with proxies `eu-1` (with credentials) and `us-1` (without),
    /// and account `alice` behind no proxy.
    async fn start() -> Self {
        let db = fresh_db().await;
        let secrets = SecretBox::from_hex(KEY).expect("a 64-hex key");
        proxies::add(
            &db.pool,
            &secrets,
            &NewProxy {
                name: "eu-1",
                url: "http://proxy.example:3128",
                username: Some(SECRETS[2]),
                password: Some(SECRETS[3]),
                egress_group: None,
            },
        )
        .await
        .expect("add eu-1");
        proxies::add(
            &db.pool,
            &secrets,
            &NewProxy {
                name: "us-1",
                url: "socks5h://10.0.0.7:1080",
                ..NewProxy::default()
            },
        )
        .await
        .expect("add us-1");
        Accounts::new(db.pool.clone(), secrets)
            .add(&NewAccount {
                name: "alice",
                password: Some(SECRETS[0]),
                session: Some(SECRETS[1]),
                ..NewAccount::default()
            })
            .await
            .expect("add alice");

        let mut config = testing::config(&db.url, ADMIN);
        config.scheduler.tokens = vec![TokenEntry {
            name: "only-read".into(),
            sha256: hash_hex(READER),
            scopes: vec![Scope::Read],
        }];
        let running = testing::spawn(config).await;
        Self {
            base: running.url(),
            http: reqwest::Client::new(),
            db,
            running,
        }
    }

    /// The answer's status and body, after checking that the body holds no secret.
    async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = request.send().await.expect("the scheduler answers");
        let status = r.status();
        let text = r.text().await.expect("a body");
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret:?} in an answer: {text}");
        }
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        Self::answer(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(token),
        )
        .await
    }

    async fn put_raw(&self, path: &str, token: &str, body: &[u8]) -> (StatusCode, Value) {
        Self::answer(
            self.http
                .put(format!("{}{path}", self.base))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.to_vec()),
        )
        .await
    }

    async fn set_proxy(&self, account: &str, body: Value) -> (StatusCode, Value) {
        let path = format!("/v1/accounts/{account}/proxy");
        let body = serde_json::to_vec(&body).expect("JSON");
        self.put_raw(&path, ADMIN, &body).await
    }

    /// `alice`'s proxy as stored, whatever the API says.
    async fn stored_proxy(&self) -> Option<String> {
        sqlx::query_scalar("SELECT proxy FROM accounts WHERE name = 'alice'")
            .fetch_one(&self.db.pool)
            .await
            .expect("alice is stored")
    }

    async fn stop(self) {
        self.running.stop().await.expect("the scheduler stops");
    }
}

fn error_of(body: &Value) -> (&str, &str) {
    (
        body["error"]["code"].as_str().unwrap_or("<no code>"),
        body["error"]["details"]["field"]
            .as_str()
            .unwrap_or("<no field>"),
    )
}

#[tokio::test]
async fn accounts_move_between_proxies_and_listings_never_show_a_secret() {
    let s = Server::start().await;

    let (status, listed) = s.get("/v1/proxies", READER).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let names: Vec<_> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["eu-1", "us-1"]);
    assert_eq!(listed[0]["url"], "http://proxy.example:3128");
    assert_eq!(listed[0]["has_credentials"], true);
    assert_eq!(listed[1]["has_credentials"], false);
    assert_eq!(listed[0]["state"], "up");
    assert_eq!(listed[0]["accounts"], json!([]));

    let (status, listed) = s.get("/v1/accounts", READER).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let alice = &listed[0];
    assert_eq!(alice["name"], "alice");
    assert_eq!(alice["has_password"], true);
    assert_eq!(alice["has_session"], true);
    assert_eq!(alice["proxy"], Value::Null);
    assert_eq!(alice["state"], "available");

    let (status, alice) = s.set_proxy("alice", json!({"proxy": "eu-1"})).await;
    assert_eq!(status, StatusCode::OK, "{alice}");
    assert_eq!(alice["name"], "alice");
    assert_eq!(alice["proxy"], "eu-1");
    assert_eq!(alice["proxy_down_reason"], Value::Null);
    assert_eq!(s.stored_proxy().await.as_deref(), Some("eu-1"));
    let (_, listed) = s.get("/v1/accounts", READER).await;
    assert_eq!(listed[0]["proxy"], "eu-1");
    let (_, listed) = s.get("/v1/proxies", READER).await;
    assert_eq!(listed[0]["accounts"], json!(["alice"]));
    assert_eq!(listed[1]["accounts"], json!([]));

    // A proxy that went down shows on the accounts behind it, with its reason.
    proxies::mark_down(
        &s.db.pool,
        "eu-1",
        "connect refused",
        Duration::from_secs(60),
        Duration::from_secs(600),
    )
    .await
    .expect("mark eu-1 down");
    let (_, listed) = s.get("/v1/accounts", READER).await;
    assert_eq!(listed[0]["state"], "proxy_down", "{listed}");
    assert_eq!(listed[0]["proxy_down_reason"], "connect refused");
    let (_, listed) = s.get("/v1/proxies", READER).await;
    assert_eq!(listed[0]["state"], "down");
    assert_eq!(listed[0]["down_reason"], "connect refused");
    assert_eq!(listed[0]["failures"], 1);

    // Moving it to a healthy proxy brings it back into rotation at once.
    let (status, alice) = s.set_proxy("alice", json!({"proxy": "us-1"})).await;
    assert_eq!(status, StatusCode::OK, "{alice}");
    assert_eq!(
        (&alice["proxy"], &alice["state"]),
        (&json!("us-1"), &json!("available"))
    );

    let (status, alice) = s.set_proxy("alice", json!({"proxy": null})).await;
    assert_eq!(status, StatusCode::OK, "{alice}");
    assert_eq!(alice["proxy"], Value::Null);
    assert_eq!(s.stored_proxy().await, None);
    let (_, listed) = s.get("/v1/proxies", READER).await;
    assert!(
        listed
            .as_array()
            .expect("a list")
            .iter()
            .all(|p| p["accounts"] == json!([])),
        "{listed}"
    );
    s.stop().await;
}

#[tokio::test]
async fn refusals_say_what_is_wrong_and_change_nothing() {
    let s = Server::start().await;
    let (status, _) = s.set_proxy("alice", json!({"proxy": "eu-1"})).await;
    assert_eq!(status, StatusCode::OK);

    let long = "a".repeat(65);
    for (account, body, want) in [
        // The path's account is named first when neither exists.
        ("bob", json!({"proxy": "eu-1"}), (404, "NOT_FOUND", "name")),
        (
            "bob",
            json!({"proxy": "nowhere"}),
            (404, "NOT_FOUND", "name"),
        ),
        (
            "alice",
            json!({"proxy": "nowhere"}),
            (404, "NOT_FOUND", "proxy"),
        ),
        (
            "bad%20name",
            json!({"proxy": "eu-1"}),
            (400, "INVALID_REQUEST", "name"),
        ),
        (
            long.as_str(),
            json!({"proxy": "eu-1"}),
            (400, "INVALID_REQUEST", "name"),
        ),
        ("alice", json!({}), (422, "VALIDATION_FAILED", "proxy")),
        (
            "alice",
            json!({"proxy": 7}),
            (422, "VALIDATION_FAILED", "proxy"),
        ),
        (
            "alice",
            json!({"proxy": "bad name"}),
            (422, "VALIDATION_FAILED", "proxy"),
        ),
        (
            "alice",
            json!({"proxy": ""}),
            (422, "VALIDATION_FAILED", "proxy"),
        ),
        (
            "alice",
            json!({"proxy": null, "via": "x"}),
            (422, "VALIDATION_FAILED", "via"),
        ),
        ("alice", json!(["eu-1"]), (422, "VALIDATION_FAILED", "")),
        ("alice", json!([null]), (422, "VALIDATION_FAILED", "")),
    ] {
        let (status, answer) = s.set_proxy(account, body.clone()).await;
        let (code, field) = error_of(&answer);
        assert_eq!(
            (status.as_u16(), code, field),
            want,
            "{account} {body}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{account} {body}: {answer}");
    }
    let (status, answer) = s.set_proxy("bad%20name", json!({"proxy": "eu-1"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("1 to 64"), "{message}");

    for body in [
        &b""[..],
        b"{\"proxy\":",
        b"{\"proxy\": \"eu-1\"} x",
        b"\xff",
    ] {
        let (status, answer) = s.put_raw("/v1/accounts/alice/proxy", ADMIN, body).await;
        assert_eq!(
            (status, error_of(&answer).0),
            (StatusCode::BAD_REQUEST, "INVALID_REQUEST"),
            "{body:?}: {answer}"
        );
    }

    // Reading is not enough to move an account.
    let (status, answer) = s
        .put_raw("/v1/accounts/alice/proxy", READER, br#"{"proxy": null}"#)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"]["details"]["scope"], "admin");
    let (status, _) = Server::answer(
        s.http
            .put(format!("{}/v1/accounts/alice/proxy", s.base))
            .json(&json!({"proxy": null})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    assert_eq!(s.stored_proxy().await.as_deref(), Some("eu-1"));
    s.stop().await;
}
