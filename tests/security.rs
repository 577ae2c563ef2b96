//! API access: scoped tokens stored as hashes, 401 and 403 in the error shape, `trawl token new`,
//! and a scheduler that refuses to run open. Real scheduler processes and PostgreSQL.

mod support;

use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use trawl_shared::testing::fresh_db;
use trawl_shared::tokens::hash_hex;

use support::{free_port, trawl_command};

fn trawl(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    trawl_command(args, env.iter().copied())
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run trawl")
}

/// A scheduler process; killed on drop.
struct Scheduler {
    child: std::process::Child,
    base: String,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn scheduler(args: &[&str], env: &[(&str, &str)]) -> Scheduler {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = trawl_command(args, env.iter().copied());
    cmd.args(["scheduler", "--listen", &listen])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Owned by its guard from the start: a failed start still kills and reaps it.
    let scheduler = Scheduler {
        child: cmd.spawn().expect("spawn the scheduler"),
        base: format!("http://{listen}"),
    };
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http
            .get(format!("{}/healthz", scheduler.base))
            .send()
            .await
            .is_ok()
        {
            return scheduler;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the scheduler did not come up");
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http.request(method, url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request.json(&b);
    }
    let answer = request.send().await.expect("request");
    let status = answer.status();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn each_scope_opens_only_its_routes_and_the_rest_get_401_or_403() {
    let db = fresh_db().await;
    let tokens = format!(
        "[{{name=\"reader\",sha256=\"{}\",scopes=[\"read\"]}},\
          {{name=\"submitter\",sha256=\"{}\",scopes=[\"submit\"]}},\
          {{name=\"ops\",sha256=\"{}\",scopes=[\"admin\"]}}]",
        hash_hex("reader-token"),
        hash_hex("submitter-token"),
        hash_hex("ops-token"),
    );
    let s = scheduler(
        &[],
        &[
            ("TRAWL_DATABASE__URL", &db.url),
            ("TRAWL_SCHEDULER__TOKENS", &tokens),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let jobs = || format!("{}/v1/jobs", s.base);
    let pause = || format!("{}/v1/kinds/followers/pause", s.base);
    let job = json!({"kind": "profile", "target": "natgeo"});
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs")
            .fetch_one(&db.pool)
            .await
            .expect("count")
    };
    use reqwest::Method as M;

    // No token, a wrong token, the hash instead of the token: 401 in the error shape.
    let hash = hash_hex("ops-token");
    for token in [None, Some("nope"), Some(hash.as_str())] {
        let (status, body) = call(&http, M::GET, jobs(), token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    }
    let answer = http.get(jobs()).send().await.expect("request");
    assert_eq!(
        answer
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );

    // read: lists, but may not submit or pause.
    let (status, _) = call(&http, M::GET, jobs(), Some("reader-token"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        &http,
        M::POST,
        jobs(),
        Some("reader-token"),
        Some(job.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "FORBIDDEN");
    assert_eq!(body["error"]["details"]["scope"], "submit");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reader")
    );
    let (status, _) = call(&http, M::POST, pause(), Some("reader-token"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(count().await, 0, "a refused submission stores nothing");

    // submit: submits, cancels, retries; may not read the list or pause.
    let (status, body) = call(&http, M::POST, jobs(), Some("submitter-token"), Some(job)).await;
    assert!(status.is_success(), "{status} {body}");
    let id = body["job"]["id"].as_i64().expect("job id");
    let (status, _) = call(
        &http,
        M::POST,
        format!("{}/v1/jobs/{id}/cancel", s.base),
        Some("submitter-token"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&http, M::GET, jobs(), Some("submitter-token"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["details"]["scope"], "read");
    let (status, _) = call(&http, M::POST, pause(), Some("submitter-token"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let paused: i64 = sqlx::query_scalar("SELECT count(*) FROM paused_kinds")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(paused, 0, "a refused pause changes nothing");

    // admin: everything.
    let (status, _) = call(&http, M::POST, pause(), Some("ops-token"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&http, M::GET, jobs(), Some("ops-token"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count().await, 1);
}

#[tokio::test]
async fn a_token_from_trawl_token_new_works_with_the_lines_it_prints() {
    let out = trawl(
        &["token", "new", "--scope", "read,submit", "--name", "ci"],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("the token line")
        .to_owned();
    let config: String = text
        .lines()
        .skip_while(|l| !l.starts_with("[[scheduler.tokens]]"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        !config.contains(&token),
        "the configuration holds only the hash"
    );
    assert!(config.contains(&hash_hex(&token)));

    let db = fresh_db().await;
    let dir = std::env::temp_dir().join(format!("trawl-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("trawl.toml");
    std::fs::write(&file, &config).expect("write config");
    let s = scheduler(
        &["--config", file.to_str().expect("utf-8 path")],
        &[("TRAWL_DATABASE__URL", &db.url)],
    )
    .await;
    let http = reqwest::Client::new();
    use reqwest::Method as M;
    let (status, _) = call(
        &http,
        M::GET,
        format!("{}/v1/jobs", s.base),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &http,
        M::POST,
        format!("{}/v1/jobs", s.base),
        Some(&token),
        Some(json!({"kind": "profile", "target": "natgeo"})),
    )
    .await;
    assert!(status.is_success());
    let (status, _) = call(
        &http,
        M::POST,
        format!("{}/v1/kinds/profile/pause", s.base),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "no admin scope was asked for"
    );

    // The CLI as a client, with the token.
    let out = trawl(
        &["jobs", "list", "--json"],
        &[
            ("TRAWL_CLIENT__URL", &s.base),
            ("TRAWL_CLIENT__TOKEN", &token),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);

    let out = trawl(&["token", "new", "--scope", "root"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scope \"root\""));
}

#[tokio::test]
async fn the_scheduler_refuses_to_run_open_and_binds_loopback_by_default() {
    let db = fresh_db().await;
    // Anywhere, and on loopback too: no token, no scheduler.
    for listen in ["0.0.0.0:0", "127.0.0.1:0"] {
        let out = trawl(
            &["scheduler", "--listen", listen],
            &[("TRAWL_DATABASE__URL", &db.url)],
        );
        assert!(!out.status.success(), "started open on {listen}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no API token is configured") && err.contains("trawl token new"),
            "{err}"
        );
    }
    let shown = trawl(&["config", "show"], &[]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("listen = \"127.0.0.1:8080\""),
        "the scheduler's default address is loopback"
    );
    // A broken token entry is named, and nothing starts.
    let out = trawl(
        &["scheduler", "--listen", "127.0.0.1:0"],
        &[
            ("TRAWL_DATABASE__URL", &db.url),
            (
                "TRAWL_SCHEDULER__TOKENS",
                "[{name=\"ci\",sha256=\"abc\",scopes=[\"read\"]}]",
            ),
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("token \"ci\": sha256 must be 64 hex digits"),
        "{out:?}"
    );
}
