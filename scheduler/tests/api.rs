//! The scheduler's HTTP API over real HTTP against a real PostgreSQL.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use trawl_scheduler::testing::{self, RunningScheduler};
use trawl_shared::config::Config;
use trawl_shared::duration::HumanDuration;
use trawl_shared::shutdown;
use trawl_shared::testing::{TestDb, fresh_db};

const TOKEN: &str = "test-token-123";

struct Server {
    base: String,
    http: reqwest::Client,
    db: TestDb,
    running: RunningScheduler,
}

impl Server {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let db = fresh_db().await;
        let mut config = testing::config(&db.url, TOKEN);
        tweak(&mut config);
        let running = testing::spawn(config).await;
        Self {
            base: running.url(),
            http: reqwest::Client::new(),
            db,
            running,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn post_raw(&self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn job_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM jobs")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.running.stop().await.unwrap();
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test]
async fn requests_without_the_token_are_refused_and_health_is_open() {
    let s = Server::start().await;
    let r = s.http.get(s.url("/v1/jobs")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "UNAUTHORIZED");

    for auth in ["Bearer wrong", "Basic dGVzdA==", "Bearer", TOKEN] {
        let r = s
            .http
            .post(s.url("/v1/jobs"))
            .header("authorization", auth)
            .json(&json!({"kind": "profile", "target": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth}");
    }
    assert_eq!(s.job_count().await, 0, "nothing written without the token");

    for open in ["/healthz", "/readyz", "/metrics"] {
        let r = s.http.get(s.url(open)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{open}");
    }
    s.stop().await;
}

#[tokio::test]
async fn malformed_bodies_get_an_error_naming_the_problem_and_write_nothing() {
    let s = Server::start().await;
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (b"{not json".to_vec(), StatusCode::BAD_REQUEST, ""),
        (b"".to_vec(), StatusCode::BAD_REQUEST, ""),
        (b"[1,2]".to_vec(), StatusCode::UNPROCESSABLE_ENTITY, ""),
        (
            b"{\"kind\":\"pro\xfffile\",\"target\":\"x\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            br#"{"kind":"teleport","target":"x"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "kind",
        ),
        (
            br#"{"kind":"profile","target":""}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "target",
        ),
        (
            br#"{"kind":"profile","target":"no spaces please"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "target",
        ),
        (
            br#"{"kind":"profile","target":"x\u0000y"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "target",
        ),
        (
            br#"{"kind":"profile"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "target",
        ),
        (
            br#"{"kind":"profile","target":"x","priority":"high"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "priority",
        ),
        (
            br#"{"kind":"profile","target":"x","priorty":1}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "priorty",
        ),
        (
            br#"{"kind":"profile","target":"x","max_attempts":0}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "max_attempts",
        ),
        (
            br#"{"kind":"profile","target":"x","recrawl_every":"often"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "recrawl_every",
        ),
        (
            br#"{"kind":"profile","target":"x","run_at":"tomorrow"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "run_at",
        ),
        (
            br#"{"kind":"profile","target":"x"} trailing"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "",
        ),
    ];
    for (body, status, field) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (got, json) = s.post_raw("/v1/jobs", body).await;
        assert_eq!(got, status, "{shown}: {json}");
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{shown}: no message");
        if !field.is_empty() {
            assert_eq!(json["error"]["details"]["field"], field, "{shown}: {json}");
            assert!(message.contains(field), "{shown}: {message}");
        }
    }
    assert_eq!(s.job_count().await, 0);

    // A batch with one bad job is refused whole, naming the index.
    let (status, body) = s
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "profile", "target": "good"}, {"kind": "nope", "target": "x"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"]["errors"][0]["index"], 1);
    assert_eq!(body["error"]["details"]["errors"][0]["field"], "kind");
    assert_eq!(s.job_count().await, 0);
    s.stop().await;
}

#[tokio::test]
async fn oversized_bodies_and_batches_are_refused() {
    let s = Server::start_with(|c| {
        c.scheduler.max_body_bytes = 4096;
        c.scheduler.max_batch = 3;
    })
    .await;
    let huge = format!(r#"{{"kind":"profile","target":"{}"}}"#, "a".repeat(10_000));
    let (status, body) = s.post_raw("/v1/jobs", huge.into_bytes()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "PAYLOAD_TOO_LARGE");
    let jobs: Vec<Value> = (0..4)
        .map(|i| json!({"kind": "profile", "target": format!("u{i}")}))
        .collect();
    let (status, _) = s.post("/v1/jobs/batch", json!({ "jobs": jobs })).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.job_count().await, 0);
    s.stop().await;
}

#[tokio::test]
async fn submit_dedups_lists_with_cursors_and_manages_jobs() {
    let s = Server::start().await;
    let (status, first) = s
        .post(
            "/v1/jobs",
            json!({"kind": "profile_posts", "target": "natgeo", "priority": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(first["created"], true);
    let id = first["job"]["id"].as_i64().unwrap();
    assert_eq!(first["job"]["state"], "queued");
    assert!(
        first["job"].get("lease_token").is_none(),
        "the lease token never leaves the server"
    );

    let (status, again) = s
        .post(
            "/v1/jobs",
            json!({"kind": "profile_posts", "target": "NatGeo"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (again["created"].as_bool(), again["job"]["id"].as_i64()),
        (Some(false), Some(id))
    );

    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"kind": "followers", "target": format!("u{i}")}))
        .collect();
    let (status, body) = s.post("/v1/jobs/batch", json!({ "jobs": batch })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 5);

    // Cursor pagination: 2 per page over the 5 followers jobs, newest first, no repeats.
    let mut seen = Vec::new();
    let mut path = "/v1/jobs?kind=followers&state=queued&count=2".to_owned();
    loop {
        let (status, page) = s.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_i64().unwrap()),
        );
        if page["has_more"] == false {
            assert!(page["next_cursor"].is_null());
            break;
        }
        path = format!(
            "/v1/jobs?kind=followers&state=queued&count=2&cursor={}",
            page["next_cursor"].as_str().unwrap()
        );
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0] > w[1]));

    for (query, field) in [
        ("count=0", "count"),
        ("count=5000", "count"),
        ("count=-1", "count"),
        ("count=abc", "count"),
        ("cursor=garbage", "cursor"),
        ("kind=nope", "kind"),
        ("state=sleeping", "state"),
    ] {
        let (status, body) = s.get(&format!("/v1/jobs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["details"]["field"], field, "{query}");
    }
    let (status, _) = s.get("/v1/jobs?colour=red").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Show, cancel, retry, and their refusals.
    let (status, shown) = s.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        (status, shown["target"].as_str()),
        (StatusCode::OK, Some("natgeo"))
    );
    assert_eq!(s.get("/v1/jobs/999999").await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.get("/v1/jobs/abc").await.0, StatusCode::BAD_REQUEST);
    let (status, retried) = s.post(&format!("/v1/jobs/{id}/retry"), json!({})).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a queued job cannot be retried: {retried}"
    );
    let (status, cancelled) = s.post(&format!("/v1/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (status, retried) = s.post(&format!("/v1/jobs/{id}/retry"), json!({})).await;
    assert_eq!(
        (status, retried["state"].as_str()),
        (StatusCode::OK, Some("queued"))
    );

    // Pause and resume a kind, visible in stats.
    let (status, _) = s.post("/v1/kinds/followers/pause", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, stats) = s.get("/v1/stats").await;
    assert_eq!(stats["paused_kinds"], json!(["followers"]));
    let queued_followers = stats["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "followers" && r["state"] == "queued")
        .unwrap();
    assert_eq!(queued_followers["jobs"], 5);
    assert_eq!(
        s.post("/v1/kinds/teleport/pause", json!({})).await.0,
        StatusCode::NOT_FOUND
    );
    s.post("/v1/kinds/followers/resume", json!({})).await;
    let (_, stats) = s.get("/v1/stats").await;
    assert_eq!(stats["paused_kinds"], json!([]));

    assert_eq!(s.get("/v1/nothing-here").await.0, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn the_leader_exports_queue_depth_and_rescues_expired_leases() {
    let s = Server::start_with(|c| c.queue.lease = HumanDuration::from_millis(200)).await;
    for i in 0..3 {
        s.post(
            "/v1/jobs",
            json!({"kind": "hashtag_posts", "target": format!("tag{i}")}),
        )
        .await;
    }
    // A worker leases one job and dies.
    let queue = trawl_shared::queue::Queue::new(
        s.db.pool.clone(),
        trawl_shared::queue::QueueSettings {
            lease: Duration::from_millis(200),
            ..Default::default()
        },
    );
    let leased = queue.lease("doomed", 1, None).await.unwrap();
    assert_eq!(leased.len(), 1);

    let mut body = String::new();
    let mut rescued = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = s.http.get(s.url("/metrics")).send().await.unwrap();
        assert_eq!(
            r.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        body = r.text().await.unwrap();
        if body.contains("trawl_queue_lease_rescues_total 1")
            && body.contains("trawl_queue_jobs{kind=\"hashtag_posts\",state=\"queued\"} 3")
        {
            rescued = true;
            break;
        }
    }
    assert!(rescued, "no rescue or depth seen in:\n{body}");
    assert!(body.contains("trawl_scheduler_leader 1"));
    assert!(
        body.contains("trawl_queue_jobs{kind=\"post\",state=\"failed\"} 0"),
        "pre-registered"
    );
    assert!(body.contains("trawl_queue_oldest_runnable_age_seconds{kind=\"hashtag_posts\"}"));
    s.stop().await;
}

async fn metrics_text(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_second_scheduler_stands_by_and_exports_no_queue_depth() {
    let first = Server::start().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = testing::spawn(testing::config(&first.db.url, TOKEN)).await;
    let addr = second.addr;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let body = metrics_text(addr).await;
    assert!(body.contains("trawl_scheduler_leader 0"), "{body}");
    assert!(!body.contains("trawl_queue_jobs"), "{body}");

    // When the leader stops, the standby takes over.
    first.stop().await;
    let mut took_over = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let body = metrics_text(addr).await;
        if body.contains("trawl_scheduler_leader 1") && body.contains("trawl_queue_jobs") {
            took_over = true;
            break;
        }
    }
    assert!(took_over);
    second.stop().await.unwrap();
}

#[tokio::test]
async fn the_scheduler_refuses_an_old_schema_and_a_missing_token() {
    let db = fresh_db().await;
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut config = testing::config(&db.url, TOKEN);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_stop, signal) = shutdown::channel();
    let err = trawl_scheduler::run(&config, listener, signal)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("trawl migrate"), "{err}");

    config.scheduler.api_token = None;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_stop, signal) = shutdown::channel();
    let err = trawl_scheduler::run(&config, listener, signal)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("api_token"), "{err}");
}
