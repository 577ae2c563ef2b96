//! `trawl accounts …` and `trawl export …` as a user runs them: the real binary against a real,
//! freshly migrated PostgreSQL, with no scheduler in between.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use trawl_shared::accounts::Accounts;
use trawl_shared::crypto::SecretBox;
use trawl_shared::testing::{TestDb, fresh_db};

const KEY: &str = "3c5a0e1f9b7d2c4e6a8f0b1d3e5c7a9f1b3d5e7c9a0b2d4f6e8a1c3e5b7d9f0a";
const PASSWORD: &str = "correct horse battery staple";
const PROTO4_COOKIES: &str = "csrftoken=Zk2x9AbCdEf; ds_user_id=9123456789; ig_did=3F2A-11B2; \
    mid=ZxYwVu_AAAAA; rur=\"NAO\\0549123456789\\0541790000000:01f7\"; \
    sessionid=9123456789%3AaBcDeF%3A12%3AAYf-secret; shbid=\"1234\\0549123456789\"; \
    ünïcode=välue ✓";

struct Env {
    db: TestDb,
    workdir: PathBuf,
}

impl Env {
    async fn new() -> Self {
        let db = fresh_db().await;
        let workdir = std::env::temp_dir().join(format!(
            "trawl-accounts-export-{}-{}",
            std::process::id(),
            db.name
        ));
        std::fs::create_dir_all(&workdir).unwrap();
        Self { db, workdir }
    }

    /// `trawl ARGS` with the secrets key set.
    async fn trawl(&self, args: &[&str]) -> Output {
        self.run(args, &[("TRAWL_SECRETS__KEY", KEY)], None).await
    }

    /// `trawl ARGS` with only the database URL and `env` in its environment, and `stdin` piped
    /// in (an empty stdin when `None`).
    async fn run(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        // The case's own settings come last, so that they override the database's URL.
        let base = [("TRAWL_DATABASE__URL", self.db.url.as_str())];
        let mut cmd = support::trawl_command(args, base.into_iter().chain(env.iter().copied()));
        cmd.current_dir(&self.workdir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let input = stdin.unwrap_or_default().to_owned();
        tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn().unwrap();
            let mut pipe = child.stdin.take().unwrap();
            // The binary may exit before reading (a refused key): a closed pipe is fine.
            let _ = pipe.write_all(input.as_bytes());
            drop(pipe);
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap()
    }

    async fn accounts_json(&self) -> Vec<Value> {
        let out = self.trawl(&["accounts", "list", "--json"]).await;
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("list --json prints an array")
    }

    /// The secrets of the one account a worker would lease next, opened with `KEY`.
    async fn lease_secrets(&self) -> (Option<String>, Option<String>) {
        let accounts = Accounts::new(self.db.pool.clone(), SecretBox::from_hex(KEY).unwrap());
        let held = accounts
            .lease("test-worker", Duration::from_secs(60))
            .await
            .unwrap()
            .expect("an account to lease");
        accounts.release(&held).await.unwrap();
        (held.password.clone(), held.session.clone())
    }

    async fn sql(&self, sql: &'static str) {
        sqlx::query(sql).execute(&self.db.pool).await.unwrap();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

fn fixture(name: &str) -> String {
    format!(
        "{}/worker/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_is_sealed_and_never_shown() {
    let env = Env::new().await;
    let out = env
        .run(
            &[
                "accounts",
                "add",
                "alice",
                "--password-stdin",
                "--egress",
                "ip-a",
            ],
            &[("TRAWL_SECRETS__KEY", KEY)],
            Some(&format!("{PASSWORD}\n")),
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("added account alice (password, egress group ip-a)"));
    let mut shown = stdout(&out) + &stderr(&out);

    let listed = env.accounts_json().await;
    assert_eq!(listed.len(), 1);
    let alice = &listed[0];
    assert_eq!(alice["name"], "alice");
    assert_eq!(alice["has_password"], true);
    assert_eq!(alice["has_session"], false);
    assert_eq!(alice["anonymous"], false);
    assert_eq!(alice["state"], "available");
    assert_eq!(alice["egress_group"], "ip-a");
    let out = env.trawl(&["accounts", "list"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with("NAME "), "{table}");
    assert!(
        table.contains("alice") && table.contains("available") && table.contains("ip-a"),
        "{table}"
    );
    shown += &serde_json::to_string(&listed).unwrap();
    shown += &table;
    shown += &stderr(&out);
    assert!(
        !shown.contains("horse"),
        "the password is never printed: {shown}"
    );

    // At rest: only in the sealed column, and not readable there.
    let clear: String = sqlx::query_scalar(
        "SELECT (to_jsonb(a) - 'password_sealed' - 'session_sealed')::text FROM accounts a",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert!(!clear.contains("horse"), "{clear}");
    let sealed: Vec<u8> =
        sqlx::query_scalar("SELECT password_sealed FROM accounts WHERE name = 'alice'")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert!(!sealed.windows(5).any(|w| w == b"horse"));
    assert_eq!(
        env.lease_secrets().await,
        (Some(PASSWORD.to_owned()), None),
        "the password is stored exactly, without its newline"
    );

    // A second add of the same name is a conflict and changes nothing.
    let out = env
        .run(
            &["accounts", "add", "alice", "--password-stdin"],
            &[("TRAWL_SECRETS__KEY", KEY)],
            Some("other\n"),
        )
        .await;
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(env.lease_secrets().await.0.as_deref(), Some(PASSWORD));

    // An empty password is refused before anything is stored.
    for input in ["\n", "", "\r\n"] {
        let out = env
            .run(
                &["accounts", "add", "bob", "--password-stdin"],
                &[("TRAWL_SECRETS__KEY", KEY)],
                Some(input),
            )
            .await;
        assert_eq!(code(&out), 2, "{input:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    }
    assert_eq!(env.accounts_json().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_account_needs_a_password_and_is_listed_with_its_platform() {
    let env = Env::new().await;
    let add = async |name: &str, platform: &str, secret: &str| {
        let password = (secret == "--password-stdin").then_some("pw\n");
        env.run(
            &["accounts", "add", name, "--platform", platform, secret],
            &[("TRAWL_SECRETS__KEY", KEY)],
            password,
        )
        .await
    };
    for (name, platform, secret, says) in [
        (
            "anon",
            "v1",
            "--anonymous",
            "\"anon\" is a v1 account: it logs in with a username and password",
        ),
        ("alice", "v2", "--password-stdin", "unknown platform \"v2\""),
    ] {
        let out = add(name, platform, secret).await;
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    let out = add("alice", "v1", "--password-stdin").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("added account alice (password, platform v1)"),
        "{}",
        stdout(&out)
    );
    let out = env.trawl(&["accounts", "list", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["platform"], "v1", "{listed}");
    let out = env.trawl(&["accounts", "list"]).await;
    let table = stdout(&out);
    assert!(table.starts_with("NAME   PLATFORM"), "{table}");
    assert!(
        table.lines().nth(1).is_some_and(|l| l.contains(" v1 ")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealing_needs_a_key_or_the_explicit_development_key() {
    let env = Env::new().await;
    let out = env
        .run(
            &["accounts", "add", "bob", "--password-stdin"],
            &[],
            Some("pw\n"),
        )
        .await;
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("TRAWL_SECRETS__KEY")
            && stderr(&out).contains("--insecure-dev-key")
            && stderr(&out).contains("trawl accounts new-key"),
        "{}",
        stderr(&out)
    );
    let out = env
        .run(
            &[
                "accounts",
                "import-session",
                "bob",
                "--session-file",
                &fixture("session-proto4.pickle"),
            ],
            &[],
            None,
        )
        .await;
    assert_eq!(code(&out), 8, "{}", stderr(&out));

    // Verbs that never seal or open a secret work without the key.
    let out = env.run(&["accounts", "list", "--json"], &[], None).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "[]");
    let out = env
        .run(&["accounts", "add", "anon", "--anonymous"], &[], None)
        .await;
    assert_eq!(code(&out), 0, "nothing to seal: {}", stderr(&out));
    for verb in ["disable", "enable", "remove"] {
        let out = env.run(&["accounts", verb, "anon"], &[], None).await;
        assert_eq!(code(&out), 0, "{verb}: {}", stderr(&out));
    }

    let out = env
        .run(
            &[
                "accounts",
                "add",
                "bob",
                "--password-stdin",
                "--insecure-dev-key",
            ],
            &[],
            Some("pw\n"),
        )
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("insecure development key"),
        "the dev key is announced: {}",
        stderr(&out)
    );
    let out = env.run(&["accounts", "list"], &[], None).await;
    assert!(stdout(&out).contains("bob"), "{}", stdout(&out));

    // A key that is not 64 hex characters is a configuration error, named.
    let out = env
        .run(
            &["accounts", "add", "carol", "--anonymous"],
            &[("TRAWL_SECRETS__KEY", "abc")],
            None,
        )
        .await;
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    assert!(stderr(&out).contains("secrets.key"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_files_are_stored_as_cookies_and_bad_ones_are_refused() {
    let env = Env::new().await;
    let good = fixture("session-proto4.pickle");
    let out = env
        .trawl(&["accounts", "add", "carol", "--session-file", &good])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("added account carol (session)"));
    assert!(!(stdout(&out) + &stderr(&out)).contains("AYf-secret"));
    let listed = env.accounts_json().await;
    assert_eq!(listed[0]["has_session"], true);
    assert_eq!(listed[0]["has_password"], false);
    assert!(listed[0]["session_updated_at"].is_string());
    assert_eq!(
        env.lease_secrets().await,
        (None, Some(PROTO4_COOKIES.to_owned()))
    );

    // Hostile, broken and missing files: a clear error naming the file, and no account.
    for (file, problem) in [
        (fixture("global.pickle"), "unexpected pickle opcode"),
        (fixture("int-value.pickle"), "not a string"),
        (fixture("list.pickle"), "unexpected pickle opcode"),
        (fixture("no-such-file.pickle"), "cannot open it"),
    ] {
        let out = env
            .trawl(&["accounts", "add", "dave", "--session-file", &file])
            .await;
        assert_eq!(code(&out), 2, "{file}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&file) && err.contains(problem), "{err}");
    }
    let empty = env.workdir.join("empty.pickle");
    std::fs::write(&empty, b"").unwrap();
    let out = env
        .trawl(&[
            "accounts",
            "add",
            "dave",
            "--session-file",
            empty.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));
    // A dict without the login cookies is not a session.
    let anonymous_cookies = env.workdir.join("nologin.pickle");
    std::fs::write(&anonymous_cookies, b"\x80\x04}.").unwrap();
    let out = env
        .trawl(&[
            "accounts",
            "add",
            "dave",
            "--session-file",
            anonymous_cookies.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("no sessionid cookie"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.accounts_json().await.len(), 1, "nothing stored");

    // Exactly one secret source.
    let out = env.trawl(&["accounts", "add", "dave"]).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = env
        .trawl(&[
            "accounts",
            "add",
            "dave",
            "--anonymous",
            "--session-file",
            &good,
        ])
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));

    // import-session replaces the session of an existing account only.
    env.sql("UPDATE accounts SET session_updated_at = now() - interval '9 days'")
        .await;
    let memo = fixture("session-memo.pickle");
    let out = env
        .trawl(&[
            "accounts",
            "import-session",
            "carol",
            "--session-file",
            &memo,
        ])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("replaced the session of account carol"));
    assert_eq!(
        env.lease_secrets().await.1.as_deref(),
        Some("ds_user_id=1; mirror=shared-value; sessionid=shared-value")
    );
    let out = env.trawl(&["accounts", "list"]).await;
    assert!(
        !stdout(&out).contains("9d"),
        "the session age starts again: {}",
        stdout(&out)
    );
    let out = env
        .trawl(&[
            "accounts",
            "import-session",
            "carol",
            "--session-file",
            &fixture("global.pickle"),
        ])
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(
        env.lease_secrets().await.1.as_deref(),
        Some("ds_user_id=1; mirror=shared-value; sessionid=shared-value"),
        "a bad file leaves the stored session alone"
    );
    let out = env
        .trawl(&[
            "accounts",
            "import-session",
            "ghost",
            "--session-file",
            &memo,
        ])
        .await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("trawl accounts add ghost"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.accounts_json().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_enable_and_remove() {
    let env = Env::new().await;
    let out = env
        .trawl(&[
            "accounts",
            "add",
            "anon-1",
            "--anonymous",
            "--egress",
            "ip-b",
        ])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.accounts_json().await[0]["anonymous"], true);

    let out = env.trawl(&["accounts", "disable", "anon-1"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.accounts_json().await[0]["state"], "disabled");

    // Instagram asked for a human; enabling clears the checkpoint and the error score.
    env.sql(
        "UPDATE accounts SET state = 'checkpoint', error_score = 3, \
         last_error = 'checkpoint_required'",
    )
    .await;
    let out = env.trawl(&["accounts", "list"]).await;
    assert!(
        stdout(&out).contains("checkpoint_required"),
        "{}",
        stdout(&out)
    );
    let out = env.trawl(&["accounts", "enable", "anon-1"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let account = &env.accounts_json().await[0];
    assert_eq!(account["state"], "available");
    assert_eq!(account["error_score"], 0);

    for verb in ["disable", "enable", "remove"] {
        let out = env.trawl(&["accounts", verb, "ghost"]).await;
        assert_eq!(code(&out), 3, "{verb}: {}", stderr(&out));
        assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    }
    let out = env
        .trawl(&["accounts", "add", "bad name", "--anonymous"])
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("not valid"), "{}", stderr(&out));

    let out = env.trawl(&["accounts", "remove", "anon-1"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(env.accounts_json().await.is_empty());
    let out = env.trawl(&["accounts", "list"]).await;
    assert!(stdout(&out).contains("no accounts"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_key_needs_no_database_and_an_unreachable_one_is_exit_6() {
    let env = Env::new().await;
    let unreachable = [
        (
            "TRAWL_DATABASE__URL",
            "postgres://trawl:pw@127.0.0.1:9/trawl",
        ),
        ("TRAWL_DATABASE__CONNECT_TIMEOUT", "2s"),
    ];
    let mut keys = Vec::new();
    for _ in 0..2 {
        let out = env.run(&["accounts", "new-key"], &unreachable, None).await;
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let key = stdout(&out).trim().to_owned();
        assert_eq!(key.len(), 64, "{key}");
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
        assert!(SecretBox::from_hex(&key).is_ok());
        assert!(
            stderr(&out).contains(&format!("TRAWL_SECRETS__KEY={key}"))
                && stderr(&out).contains(&format!("key = \"{key}\"")),
            "{}",
            stderr(&out)
        );
        keys.push(key);
    }
    assert_ne!(keys[0], keys[1]);

    let out = env.run(&["accounts", "list"], &unreachable, None).await;
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot connect to PostgreSQL") && !stderr(&out).contains(":pw@"),
        "{}",
        stderr(&out)
    );
    let out = env
        .run(
            &["export", "posts", "--format", "jsonl"],
            &unreachable,
            None,
        )
        .await;
    assert_eq!(code(&out), 6, "{}", stderr(&out));
}

/// Three users, four posts (one ten days old, one whose owner is known only by id), comments,
/// follow edges, a story and a hashtag.
async fn seed_results(env: &Env) {
    env.sql(
        "INSERT INTO ig_users (id, username, full_name, raw) VALUES
           (1, 'alice', 'Alice A.', '{\"pk\": 1}'),
           (2, 'bob', NULL, '{\"pk\": 2}'),
           (3, 'carol', 'Carol', '{\"pk\": 3}')",
    )
    .await;
    env.sql(
        "INSERT INTO ig_posts (id, shortcode, owner_id, owner_username, typename, taken_at,
                               caption, like_count, is_video, raw, last_seen_at, last_job_id) VALUES
           (10, 'AAA', 1, 'alice', 'GraphImage', '2026-01-02T03:04:05.123456Z', 'old post', 5,
            false, '{\"id\": \"10\"}', now() - interval '10 days', 7),
           (11, 'BBB', 1, 'alice', 'GraphImage', '2026-01-03T00:00:00Z',
            E'Hello, \"world\"\\nsecond line', 12, false,
            '{\"id\": \"11\", \"big\": 3141592653589793238, \"nested\": {\"a\": [1, 2]}}', now(), 8),
           (12, 'CCC', 2, 'bob', 'GraphVideo', NULL, NULL, NULL, true, '{}', now(), NULL),
           (13, 'DDD', 1, NULL, NULL, NULL, 'no owner name', NULL, NULL, '{\"id\": \"13\"}',
            now(), NULL)",
    )
    .await;
    env.sql(
        "INSERT INTO ig_comments (id, post_shortcode, owner_id, owner_username, text, raw) VALUES
           (100, 'BBB', 2, 'bob', 'nice', '{}'),
           (101, 'BBB', 3, 'carol', 'wow, \"so\" good', '{}'),
           (102, 'AAA', 2, 'bob', 'first', '{}')",
    )
    .await;
    env.sql(
        "INSERT INTO ig_follows (follower_id, followee_id) VALUES (1, 2), (2, 3), (3, 1), (4, 1)",
    )
    .await;
    env.sql(
        "INSERT INTO ig_stories (id, owner_id, media_type, raw) VALUES
           ('s1', 2, 1, '{}'), ('s2', 3, 2, '{}')",
    )
    .await;
    env.sql(
        "INSERT INTO ig_hashtag_posts (tag, post_id) VALUES ('sunset', 11), ('sunset', 99),
                                                            ('sea', 12)",
    )
    .await;
}

fn jsonl(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// An RFC 4180 reader, strict about quotes and CRLF record ends.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                other => field.push(other),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => quoted = true,
            ',' => record.push(std::mem::take(&mut field)),
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "CR only before LF");
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            '"' | '\n' => panic!("unquoted {c:?} in a field: {text:?}"),
            other => field.push(other),
        }
    }
    assert!(
        field.is_empty() && record.is_empty() && !quoted,
        "ends with CRLF"
    );
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_posts_as_jsonl_and_csv() {
    let env = Env::new().await;
    seed_results(&env).await;

    let out = env
        .trawl(&["export", "posts", "--target", "@Alice", "--format", "jsonl"])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), "exported 3 posts to stdout");
    let rows = jsonl(&out);
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [10, 11, 13], "by id; post 13 matched through ig_users");
    let old = &rows[0];
    assert_eq!(old["shortcode"], "AAA");
    assert_eq!(old["owner_id"], 1);
    assert_eq!(old["taken_at"], "2026-01-02T03:04:05.123456Z");
    assert_eq!(old["like_count"], 5);
    assert_eq!(old["is_video"], false);
    assert_eq!(old["last_job_id"], 7);
    assert_eq!(old["comment_count"], Value::Null);
    assert_eq!(old["raw"], serde_json::json!({"id": "10"}));
    let keys: Vec<&str> = old
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 14, "{keys:?}");
    let second = &rows[1];
    assert_eq!(second["caption"], "Hello, \"world\"\nsecond line");
    assert_eq!(second["raw"]["nested"], serde_json::json!({"a": [1, 2]}));
    assert!(
        stdout(&out).contains("3141592653589793238"),
        "raw JSON is written verbatim, large numbers intact"
    );
    assert!(chrono::DateTime::parse_from_rfc3339(second["last_seen_at"].as_str().unwrap()).is_ok());
    let first_line = stdout(&out).lines().next().unwrap().to_owned();
    assert!(
        first_line.starts_with("{\"id\":10,\"shortcode\":\"AAA\",\"owner_id\":1,"),
        "columns in table order: {first_line}"
    );

    // CSV to a file: header, the same rows, RFC 4180 quoting.
    let out = env
        .trawl(&[
            "export",
            "posts",
            "--target",
            "alice",
            "--format",
            "csv",
            "-o",
            "posts.csv",
        ])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), "exported 3 posts to posts.csv");
    assert!(stdout(&out).is_empty());
    let text = std::fs::read_to_string(env.workdir.join("posts.csv")).unwrap();
    assert!(!env.workdir.join("posts.csv.partial").exists());
    assert!(
        text.starts_with(
            "id,shortcode,owner_id,owner_username,typename,taken_at,caption,like_count,\
             comment_count,is_video,raw,first_seen_at,last_seen_at,last_job_id\r\n10,AAA,1,alice,\
             GraphImage,2026-01-02T03:04:05.123456Z,old post,5,,false,\"{\"\"id\"\": \"\"10\"\"}\","
        ),
        "{text}"
    );
    assert!(
        text.contains(",\"Hello, \"\"world\"\"\nsecond line\",12,,false,"),
        "{text}"
    );
    let records = parse_csv(&text);
    assert_eq!(records.len(), 4, "header and three rows");
    assert!(records.iter().all(|r| r.len() == 14));
    assert_eq!(records[2][6], "Hello, \"world\"\nsecond line");
    let raw: Value = serde_json::from_str(&records[2][10]).unwrap();
    assert_eq!(raw["big"].to_string(), "3141592653589793238");
    assert_eq!(records[3][0], "13");
    assert_eq!(records[3][3], "", "NULL is an empty field");

    // --since: a span back from now, or a time.
    let out = env
        .trawl(&[
            "export", "posts", "--target", "alice", "--since", "7d", "--format", "jsonl",
        ])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let ids: Vec<i64> = jsonl(&out)
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [11, 13]);
    let five_days_ago = (chrono::Utc::now() - chrono::Duration::days(5)).to_rfc3339();
    let out = env
        .trawl(&[
            "export",
            "posts",
            "--since",
            &five_days_ago,
            "--format",
            "jsonl",
        ])
        .await;
    let ids: Vec<i64> = jsonl(&out)
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [11, 12, 13], "every owner when no --target");
    let out = env
        .trawl(&[
            "export",
            "posts",
            "--since",
            "last tuesday",
            "--format",
            "jsonl",
        ])
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--since"), "{}", stderr(&out));

    // Nothing matches: a header only, and the count says so.
    let out = env
        .trawl(&["export", "posts", "--target", "nobody", "--format", "csv"])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(parse_csv(&stdout(&out)).len(), 1);
    assert_eq!(stderr(&out).trim(), "exported 0 posts to stdout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_every_kind_by_its_target() {
    let env = Env::new().await;
    seed_results(&env).await;
    let export = |args: &'static [&'static str]| {
        let env = &env;
        async move {
            let mut full = vec!["export"];
            full.extend_from_slice(args);
            full.extend_from_slice(&["--format", "jsonl"]);
            let out = env.trawl(&full).await;
            assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
            jsonl(&out)
        }
    };

    let users = export(&["users", "--target", "bob"]).await;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["username"], "bob");
    assert_eq!(users[0]["full_name"], Value::Null);
    assert_eq!(export(&["users"]).await.len(), 3);

    let comments = export(&["comments", "--target", "BBB"]).await;
    let texts: Vec<&str> = comments
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["nice", "wow, \"so\" good"]);

    let follows = export(&["follows", "--target", "bob"]).await;
    let edges: Vec<(i64, &str, i64, &str)> = follows
        .iter()
        .map(|f| {
            (
                f["follower_id"].as_i64().unwrap(),
                f["follower_username"].as_str().unwrap(),
                f["followee_id"].as_i64().unwrap(),
                f["followee_username"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(edges, [(1, "alice", 2, "bob"), (2, "bob", 3, "carol")]);
    let alice = export(&["follows", "--target", "alice"]).await;
    assert_eq!(alice.len(), 3, "follower or followee");
    assert_eq!(
        alice[2]["follower_username"],
        Value::Null,
        "user 4 is unknown"
    );

    let stories = export(&["stories", "--target", "carol"]).await;
    assert_eq!(stories.len(), 1);
    assert_eq!(stories[0]["id"], "s2");
    assert_eq!(stories[0]["media_type"], 2);

    let tagged = export(&["hashtag_posts", "--target", "#Sunset"]).await;
    let posts: Vec<(i64, Value)> = tagged
        .iter()
        .map(|t| (t["post_id"].as_i64().unwrap(), t["shortcode"].clone()))
        .collect();
    assert_eq!(posts, [(11, "BBB".into()), (99, Value::Null)]);
    assert_eq!(export(&["hashtag_posts"]).await.len(), 3);

    let out = env.trawl(&["export", "likes", "--format", "jsonl"]).await;
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("hashtag_posts"), "{}", stderr(&out));
    let out = env.trawl(&["export", "posts"]).await;
    assert_eq!(code(&out), 2, "--format is required");

    let bad = env.workdir.join("no-such-dir").join("posts.csv");
    let out = env
        .trawl(&[
            "export",
            "posts",
            "--format",
            "csv",
            "-o",
            bad.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(bad.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
}
