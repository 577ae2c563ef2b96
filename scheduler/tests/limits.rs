//! Limits at the API's edge, over raw TCP where a well-behaved HTTP client cannot misbehave: a
//! slow or silent client loses its connection, a slow body gets 408, a big body or batch 413, a
//! bad page size 400, an overlong target 422; nothing is stored by any of them.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use trawl_scheduler::testing::{self, RunningScheduler};
use trawl_shared::duration::HumanDuration;
use trawl_shared::testing::{TestDb, fresh_db};

const TOKEN: &str = "limits-token";

async fn start() -> (TestDb, RunningScheduler) {
    let db = fresh_db().await;
    let mut config = testing::config(&db.url, TOKEN);
    config.scheduler.header_timeout = HumanDuration::from_millis(500);
    config.scheduler.body_timeout = HumanDuration::from_millis(500);
    config.scheduler.max_body_bytes = 4096;
    config.scheduler.max_batch = 10;
    let running = testing::spawn(config).await;
    (db, running)
}

/// Reads until the server closes the connection (or `limit` passes); returns what it sent.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) => None,
    }
}

async fn jobs(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&db.pool)
        .await
        .expect("count jobs")
}

#[tokio::test]
async fn a_slow_or_silent_client_cannot_hold_a_connection() {
    let (_db, s) = start().await;
    // Half a request head, then nothing.
    let mut slow = TcpStream::connect(s.addr).await.expect("connect");
    slow.write_all(b"POST /v1/jobs HTTP/1.1\r\nHost: trawl\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let answer = read_to_close(&mut slow, Duration::from_secs(10)).await;
    assert!(
        answer.is_some(),
        "a half-sent head still holds its connection after 10 s"
    );
    eprintln!("half a head: closed after {:?}", started.elapsed());
    // A connection that never says anything.
    let mut silent = TcpStream::connect(s.addr).await.expect("connect");
    assert!(
        read_to_close(&mut silent, Duration::from_secs(10))
            .await
            .is_some(),
        "a silent connection is still open after 10 s"
    );
    // The server still serves others.
    let ok = reqwest::get(format!("{}/healthz", s.url()))
        .await
        .expect("healthz");
    assert!(ok.status().is_success());
    s.stop().await.expect("stop");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_gets_408_and_stores_nothing() {
    let (db, s) = start().await;
    let mut stream = TcpStream::connect(s.addr).await.expect("connect");
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: trawl\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 60\r\n\r\n{{\"kind\": \"profile\""
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let answer = read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("the server answers and closes within 10 s");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"REQUEST_TIMEOUT\""), "{answer}");
    assert!(answer.contains("scheduler.body_timeout"), "{answer}");
    assert_eq!(jobs(&db).await, 0);
    s.stop().await.expect("stop");
}

#[tokio::test]
async fn big_bodies_big_batches_bad_pages_and_long_targets_are_refused_by_name() {
    let (db, s) = start().await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>| {
        http.post(format!("{}{path}", s.url()))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let error = |answer: reqwest::Response| async move {
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_owned(),
            body,
        )
    };

    let huge = format!(
        "{{\"kind\": \"profile\", \"target\": \"natgeo\", \"pad\": \"{}\"}}",
        "x".repeat(5000)
    );
    let (status, code, _) = error(post("/v1/jobs", huge.into_bytes()).await.expect("post")).await;
    assert_eq!((status, code.as_str()), (413, "PAYLOAD_TOO_LARGE"));

    let batch = json!({"jobs": (0..11).map(|k| json!({"kind": "profile", "target": format!("u{k}")}))
        .collect::<Vec<_>>()});
    let (status, code, body) = error(
        post("/v1/jobs/batch", batch.to_string().into_bytes())
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (413, "PAYLOAD_TOO_LARGE"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_batch")
    );

    for count in ["0", "-1", "1001", "99999999999999999999", "ten"] {
        let answer = http
            .get(format!("{}/v1/jobs?count={count}", s.url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("get");
        let (status, code, body) = error(answer).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "INVALID_REQUEST"),
            "count={count}"
        );
        assert_eq!(body["error"]["details"]["field"], "count");
    }

    let long = json!({"kind": "hashtag_posts", "target": "a".repeat(300)});
    let (status, code, body) = error(
        post("/v1/jobs", long.to_string().into_bytes())
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (422, "VALIDATION_FAILED"),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["field"], "target");

    assert_eq!(jobs(&db).await, 0, "nothing refused was stored");
    s.stop().await.expect("stop");
}
