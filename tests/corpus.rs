//! The hostile-input corpus (`tests/corpus/README.md`): every case under `tests/corpus/<entrance>/`
//! is sent through its real entrance (raw HTTP to a live scheduler, the `trawl` binary, a config
//! file, an Instaloader session file, a JSONL batch file, an Instagram answer served by the
//! simulator to a real worker) and must get the clear error its `.expect.toml` states, never a
//! panic or a 5xx, with the database unchanged unless the case says otherwise.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trawl_shared::accounts::{Accounts, NewAccount};
use trawl_shared::crypto::SecretBox;
use trawl_shared::domain::JobSpec;
use trawl_shared::testing::fresh_db;
use trawl_shared::tokens::{Scope, TokenEntry, hash_hex};

use crate::support::{Fleet, FleetOptions};

/// A token with every scope, and one that may only read (`{{TOKEN}}`, `{{READ_TOKEN}}`).
const TOKEN: &str = "corpus-admin-token";
const READ_TOKEN: &str = "corpus-read-token";
/// The account the session cases import into (`{{ACCOUNT}}`).
const ACCOUNT: &str = "corpus_acct";
const ENTRANCES: [&str; 6] = ["api", "cli", "config", "session", "jsonl", "instagram"];
/// Longest any one `trawl` process or HTTP exchange may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What a case must end with, and how to build its input. One shape for every entrance; each
/// entrance reads the fields it needs (README.md lists them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// What the input is and why it is hostile.
    about: String,
    /// `{{REPEAT}}` in the case file becomes `repeat` (or the bytes of `repeat_hex`) joined by
    /// `repeat_separator`, `repeat_times` times or until the input is `repeat_to_bytes` long;
    /// `{{I}}` in the unit becomes the copy's index.
    repeat: Option<String>,
    repeat_hex: Option<String>,
    #[serde(default)]
    repeat_separator: String,
    repeat_times: Option<usize>,
    repeat_to_bytes: Option<usize>,
    /// Rows the `jobs` table may gain (its other rows and every other table stay as they were).
    #[serde(default)]
    jobs_added: i64,
    // api
    status: Option<u16>,
    code: Option<String>,
    message_contains: Option<String>,
    field: Option<String>,
    // processes (cli, config, session, jsonl)
    exit: Option<i32>,
    #[serde(default)]
    stderr_contains: Vec<String>,
    #[serde(default)]
    stdout_contains: Vec<String>,
    stdin: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    commands: Option<Vec<Vec<String>>>,
    bad_lines: Option<Vec<usize>>,
    /// Instead of `bad_lines`, only how many lines are reported (long files).
    bad_line_count: Option<usize>,
    // instagram
    kind: Option<String>,
    target: Option<String>,
    max_attempts: Option<i32>,
    path_contains: Option<String>,
    answer_status: Option<u16>,
    #[serde(default)]
    answer_headers: BTreeMap<String, String>,
    answer_count: Option<u64>,
    drop_after_bytes: Option<usize>,
    job_state: Option<String>,
    last_error_contains: Option<String>,
    results: Option<String>,
    posts_added_at_least: Option<i64>,
    snoozed_at_most_secs: Option<i64>,
}

struct Case {
    entrance: &'static str,
    name: String,
    input: PathBuf,
    expect: Expect,
}

impl Case {
    fn id(&self) -> String {
        format!("{}/{}", self.entrance, self.name)
    }
}

/// Every case of one entrance, in name order; a case file without an expect file (or the
/// reverse) is an error.
fn load_cases(entrance: &'static str) -> Result<Vec<Case>, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(entrance);
    let mut inputs = BTreeMap::new();
    let mut expects = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        if let Some(stem) = file.strip_suffix(".expect.toml") {
            expects.insert(stem.to_owned(), path);
        } else if let Some((stem, _ext)) = file.rsplit_once('.') {
            if inputs.insert(stem.to_owned(), path).is_some() {
                return Err(format!("{entrance}/{stem}: two case files"));
            }
        } else {
            return Err(format!("{entrance}/{file}: a case file needs an extension"));
        }
    }
    let mut cases = Vec::new();
    for (name, input) in inputs {
        let expect_path = expects
            .remove(&name)
            .ok_or_else(|| format!("{entrance}/{name}: no {name}.expect.toml beside it"))?;
        let text = std::fs::read_to_string(&expect_path)
            .map_err(|e| format!("{}: {e}", expect_path.display()))?;
        let expect: Expect =
            toml::from_str(&text).map_err(|e| format!("{entrance}/{name}.expect.toml: {e}"))?;
        if expect.about.trim().is_empty() {
            return Err(format!(
                "{entrance}/{name}: `about` must say what the case is"
            ));
        }
        cases.push(Case {
            entrance,
            name,
            input,
            expect,
        });
    }
    if let Some(name) = expects.keys().next() {
        return Err(format!(
            "{entrance}/{name}.expect.toml: no case file beside it"
        ));
    }
    if cases.is_empty() {
        return Err(format!("tests/corpus/{entrance}: no cases"));
    }
    Ok(cases)
}

/// The values `{{NAME}}` placeholders stand for.
type Placeholders = Vec<(String, Vec<u8>)>;

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// `bytes` with every `{{NAME}}` placeholder filled in.
fn fill(mut bytes: Vec<u8>, values: &Placeholders) -> Vec<u8> {
    for (name, value) in values {
        bytes = replace_all(&bytes, format!("{{{{{name}}}}}").as_bytes(), value);
    }
    bytes
}

/// The case file's bytes with placeholders filled in and `{{REPEAT}}` expanded.
fn build_input(case: &Case, values: &Placeholders) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(&case.input).map_err(|e| e.to_string())?;
    expand_repeat(&fill(bytes, values), &case.expect)
}

fn expand_repeat(bytes: &[u8], e: &Expect) -> Result<Vec<u8>, String> {
    let unit = match (&e.repeat, &e.repeat_hex) {
        (None, None) => return Ok(bytes.to_vec()),
        (Some(text), None) => text.clone().into_bytes(),
        (None, Some(hex)) => trawl_simulator::faults::decode_hex(hex)?,
        (Some(_), Some(_)) => return Err("give repeat or repeat_hex, not both".into()),
    };
    let marker = b"{{REPEAT}}";
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .ok_or("repeat needs a {{REPEAT}} marker in the case file")?;
    let sep = e.repeat_separator.as_bytes();
    if unit.is_empty() && sep.is_empty() && e.repeat_to_bytes.is_some() {
        return Err("an empty repeat never reaches repeat_to_bytes".into());
    }
    let mut middle = Vec::new();
    let fixed = bytes.len() - marker.len();
    let mut i = 0usize;
    loop {
        let done = match (e.repeat_times, e.repeat_to_bytes) {
            (Some(n), None) => i >= n,
            (None, Some(total)) => fixed + middle.len() >= total,
            _ => return Err("give exactly one of repeat_times and repeat_to_bytes".into()),
        };
        if done {
            break;
        }
        if i > 0 {
            middle.extend_from_slice(sep);
        }
        middle.extend_from_slice(&replace_all(&unit, b"{{I}}", i.to_string().as_bytes()));
        i += 1;
    }
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(&middle);
    out.extend_from_slice(&bytes[at + marker.len()..]);
    Ok(out)
}

/// Per table of the `public` schema: its row count and an md5 of every row. `jobs` counts only
/// rows up to `jobs_upto` in its checksum (rows a case may add come after).
type Snapshot = BTreeMap<String, (i64, String)>;

async fn snapshot(pool: &PgPool, only_prefix: Option<&str>, jobs_upto: i64) -> Snapshot {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("list tables");
    let mut out = Snapshot::new();
    for table in tables
        .into_iter()
        .filter(|t| only_prefix.is_none_or(|p| t.starts_with(p)))
    {
        let filter = if table == "jobs" {
            format!("WHERE t.id <= {jobs_upto}")
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT (SELECT count(*) FROM public.\"{table}\"),
                    md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))
             FROM public.\"{table}\" t {filter}"
        );
        let row: (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .expect("snapshot a table");
        out.insert(table, row);
    }
    out
}

async fn max_job_id(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM jobs")
        .fetch_one(pool)
        .await
        .expect("max job id")
}

/// Runs `step` between two snapshots and checks that only `jobs_added` new jobs appeared; then
/// removes them so that every case starts from the same rows.
async fn unchanged_but_jobs<F>(pool: &PgPool, jobs_added: i64, step: F) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), String>>,
{
    let upto = max_job_id(pool).await;
    let before = snapshot(pool, None, upto).await;
    let result = step.await;
    let after = snapshot(pool, None, upto).await;
    let added: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE id > $1")
        .bind(upto)
        .fetch_one(pool)
        .await
        .expect("count new jobs");
    sqlx::query("DELETE FROM jobs WHERE id > $1")
        .bind(upto)
        .execute(pool)
        .await
        .expect("remove the case's jobs");
    result?;
    let mut problems = Vec::new();
    for (table, (count, sum)) in &before {
        let (count_after, sum_after) = after.get(table).cloned().unwrap_or_default();
        let expected_count = if table == "jobs" {
            count + jobs_added
        } else {
            *count
        };
        if count_after != expected_count || &sum_after != sum {
            let rows = if table == "jobs" {
                "the rows that were there"
            } else {
                "its rows"
            };
            problems.push(format!(
                "table {table} changed: {count} rows before, {count_after} after (expected \
                 {expected_count}){}",
                if &sum_after != sum {
                    format!(", and the checksum of {rows} differs")
                } else {
                    String::new()
                }
            ));
        }
    }
    if added != jobs_added && problems.is_empty() {
        problems.push(format!("{added} jobs added, expected {jobs_added}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

// ------------------------------------------------------------------------------------------------
// api: raw HTTP requests to a live scheduler.

struct RawAnswer {
    status: u16,
    body: Vec<u8>,
}

/// The request a case file describes: `METHOD TARGET`, header lines, a blank line, then the body
/// exactly as sent. `Host` and `Connection: close` are added, and `Content-Length` when the case
/// gives neither it nor `Transfer-Encoding`.
fn raw_request(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (head, body) = match bytes.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&bytes[..i], &bytes[i + 2..]),
        None => match bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) => (&bytes[..i], &bytes[i + 4..]),
            None => (bytes, &b""[..]),
        },
    };
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().ok_or("empty request file")?;
    let mut out = request_line.to_vec();
    if !request_line.ends_with(b" HTTP/1.1") {
        out.extend_from_slice(b" HTTP/1.1");
    }
    out.extend_from_slice(b"\r\nHost: corpus.test\r\nConnection: close\r\n");
    let mut framed = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        framed |= lower.starts_with(b"content-length:") || lower.starts_with(b"transfer-encoding:");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    if !framed {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(out)
}

async fn send_raw(addr: SocketAddr, request: Vec<u8>) -> Result<RawAnswer, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    // Written while the answer is read: a server may answer (413) before the body is all sent.
    let sending = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut raw = Vec::new();
    let read = tokio::time::timeout(STEP_TIMEOUT, reader.read_to_end(&mut raw)).await;
    sending.abort();
    match read {
        Err(_) => return Err(format!("no complete answer in {STEP_TIMEOUT:?}")),
        Ok(Err(e)) if raw.is_empty() => return Err(format!("reading the answer: {e}")),
        _ => {}
    }
    if raw.is_empty() {
        return Err("the connection closed without an answer (a panic in a handler?)".into());
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("an answer without a header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body)?;
    }
    Ok(RawAnswer { status, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without a size line")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&rest[..eol])
                .map_err(|e| e.to_string())?
                .trim(),
            16,
        )
        .map_err(|e| e.to_string())?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(rest.get(..size).ok_or("a truncated chunk")?);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

fn check_api_answer(e: &Expect, answer: &RawAnswer) -> Result<(), String> {
    let text = String::from_utf8_lossy(&answer.body);
    let shown: String = text.chars().take(400).collect();
    if answer.status >= 500 {
        return Err(format!(
            "answered {} (a server error): {shown}",
            answer.status
        ));
    }
    let status = e.status.ok_or("api cases need `status`")?;
    if answer.status != status {
        return Err(format!(
            "answered {}, expected {status}: {shown}",
            answer.status
        ));
    }
    if status < 400 {
        return Ok(());
    }
    let json: Value = serde_json::from_slice(&answer.body)
        .map_err(|_| format!("an error that is not JSON in the error shape: {shown}"))?;
    let error = &json["error"];
    let code = error["code"].as_str().unwrap_or_default();
    let message = error["message"].as_str().unwrap_or_default();
    if code.is_empty() || message.is_empty() {
        return Err(format!(
            "not the error shape {{error: {{code, message}}}}: {shown}"
        ));
    }
    if let Some(want) = &e.code
        && code != want
    {
        return Err(format!("code {code}, expected {want}: {shown}"));
    }
    if let Some(want) = &e.message_contains
        && !message.to_lowercase().contains(&want.to_lowercase())
    {
        return Err(format!("message does not contain {want:?}: {message:?}"));
    }
    if let Some(want) = &e.field
        && error["details"]["field"].as_str() != Some(want.as_str())
    {
        return Err(format!(
            "details.field is {}, expected {want:?}",
            error["details"]["field"]
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Processes: the `trawl` binary.

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run_trawl(
    args: Vec<OsString>,
    env: &[(String, String)],
    stdin: Option<&[u8]>,
    dir: &Path,
) -> Result<Run, String> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_trawl"));
    cmd.args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| format!("spawn trawl: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input).await;
    }
    let out = tokio::time::timeout(STEP_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("trawl {args:?} did not exit within {STEP_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Exit code, no panic, and the expected words on stderr and stdout.
fn check_run(e: &Expect, run: &Run, what: &str) -> Result<(), String> {
    let stderr: String = run.stderr.chars().take(600).collect();
    if run.stderr.contains("panicked at") || run.code == Some(101) {
        return Err(format!("{what} panicked: {stderr}"));
    }
    let Some(code) = run.code else {
        return Err(format!("{what} was killed by a signal: {stderr}"));
    };
    let want = e.exit.ok_or("process cases need `exit`")?;
    if code != want {
        return Err(format!("{what} exited {code}, expected {want}: {stderr}"));
    }
    if want != 0 && run.stderr.trim().is_empty() {
        return Err(format!("{what} failed without a message"));
    }
    for needle in &e.stderr_contains {
        if !run.stderr.to_lowercase().contains(&needle.to_lowercase()) {
            return Err(format!("{what}: stderr lacks {needle:?}: {stderr}"));
        }
    }
    for needle in &e.stdout_contains {
        if !run.stdout.to_lowercase().contains(&needle.to_lowercase()) {
            let stdout: String = run.stdout.chars().take(600).collect();
            return Err(format!("{what}: stdout lacks {needle:?}: {stdout}"));
        }
    }
    Ok(())
}

/// Command-line arguments from a JSON array of strings; `{{HEX:…}}` inside one becomes raw bytes
/// (arguments that are not UTF-8).
fn parse_args(bytes: &[u8]) -> Result<Vec<OsString>, String> {
    let args: Vec<String> =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON array of strings: {e}"))?;
    args.iter()
        .map(|arg| {
            let mut out = Vec::new();
            let mut rest = arg.as_str();
            while let Some(start) = rest.find("{{HEX:") {
                out.extend_from_slice(&rest.as_bytes()[..start]);
                let after = &rest[start + 6..];
                let end = after.find("}}").ok_or("an unclosed {{HEX:")?;
                out.extend(trawl_simulator::faults::decode_hex(&after[..end])?);
                rest = &after[end + 2..];
            }
            out.extend_from_slice(rest.as_bytes());
            Ok(OsString::from_vec(out))
        })
        .collect()
}

fn os_args(args: &[String]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

// ------------------------------------------------------------------------------------------------
// The groups.

struct Env {
    pool: PgPool,
    scheduler: SocketAddr,
    values: Placeholders,
    /// Environment of processes that talk to the scheduler and the database.
    process_env: Vec<(String, String)>,
    workdir: PathBuf,
}

async fn seed(pool: &PgPool) -> (i64, i64) {
    let queued: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (kind, target, max_attempts, unique_key)
         VALUES ('profile', 'seedqueued', 5, 'profile:seedqueued') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .expect("seed a queued job");
    let done: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (kind, target, max_attempts, unique_key, state, finished_at)
         VALUES ('profile', 'seeddone', 5, 'profile:seeddone', 'completed', now()) RETURNING id",
    )
    .fetch_one(pool)
    .await
    .expect("seed a completed job");
    sqlx::query("INSERT INTO paused_kinds (kind) VALUES ('highlights')")
        .execute(pool)
        .await
        .expect("seed a paused kind");
    sqlx::query(
        "INSERT INTO ig_users (id, username, raw) VALUES (42, 'seeduser', '{\"id\": \"42\"}')",
    )
    .execute(pool)
    .await
    .expect("seed a result");
    Accounts::new(
        pool.clone(),
        SecretBox::from_hex(support::KEY).expect("key"),
    )
    .add(&NewAccount {
        name: ACCOUNT,
        password: Some("corpus-password"),
        egress_group: Some("corpus-egress"),
        ..NewAccount::default()
    })
    .await
    .expect("seed an account");
    (queued, done)
}

async fn api_case(env: &Env, case: &Case) -> Result<(), String> {
    let bytes = build_input(case, &env.values)?;
    let request = raw_request(&bytes)?;
    let answer = send_raw(env.scheduler, request).await?;
    check_api_answer(&case.expect, &answer)
}

async fn cli_case(env: &Env, case: &Case) -> Result<(), String> {
    let args = parse_args(&build_input(case, &env.values)?)?;
    let mut process_env = env.process_env.clone();
    process_env.extend(case.expect.env.clone());
    let run = run_trawl(
        args,
        &process_env,
        case.expect.stdin.as_deref().map(str::as_bytes),
        &env.workdir,
    )
    .await?;
    check_run(&case.expect, &run, "trawl")
}

async fn config_case(env: &Env, case: &Case) -> Result<(), String> {
    let file = env.workdir.join(format!("{}.toml", case.name));
    std::fs::write(&file, build_input(case, &env.values)?).map_err(|e| e.to_string())?;
    let commands = case.expect.commands.clone().unwrap_or_else(|| {
        vec![
            vec!["config".into(), "show".into()],
            vec!["accounts".into(), "list".into()],
        ]
    });
    // Only the file (and the case's own variables) configure these processes.
    let process_env: Vec<(String, String)> = case.expect.env.clone().into_iter().collect();
    for command in commands {
        let mut args = os_args(&["--config".to_owned(), file.display().to_string()]);
        args.extend(os_args(&command));
        let run = run_trawl(args, &process_env, None, &env.workdir).await?;
        check_run(&case.expect, &run, &format!("trawl {}", command.join(" ")))?;
    }
    Ok(())
}

async fn session_case(env: &Env, case: &Case) -> Result<(), String> {
    let file = env.workdir.join(format!("{}.session", case.name));
    std::fs::write(&file, build_input(case, &env.values)?).map_err(|e| e.to_string())?;
    let path = file.display().to_string();
    for command in [
        [
            "accounts",
            "import-session",
            ACCOUNT,
            "--session-file",
            &path,
        ],
        ["accounts", "add", "corpus_new", "--session-file", &path],
    ] {
        let args: Vec<String> = command.iter().map(|s| (*s).to_owned()).collect();
        let run = run_trawl(os_args(&args), &env.process_env, None, &env.workdir).await?;
        check_run(
            &case.expect,
            &run,
            &format!("trawl {}", command[..3].join(" ")),
        )?;
    }
    Ok(())
}

async fn jsonl_case(env: &Env, case: &Case) -> Result<(), String> {
    let file = env.workdir.join(format!("{}.jsonl", case.name));
    std::fs::write(&file, build_input(case, &env.values)?).map_err(|e| e.to_string())?;
    let path = file.display().to_string();
    let args = os_args(&["submit".into(), "--file".into(), path.clone()]);
    let run = run_trawl(args, &env.process_env, None, &env.workdir).await?;
    check_run(&case.expect, &run, "trawl submit --file")?;
    let prefix = format!("{path}:");
    let mut reported: Vec<usize> = run
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix)?.split(':').next()?.parse().ok())
        .collect();
    reported.sort_unstable();
    if let Some(count) = case.expect.bad_line_count {
        if reported.len() != count {
            return Err(format!(
                "{} bad lines reported, expected {count}",
                reported.len()
            ));
        }
        return Ok(());
    }
    let want = case.expect.bad_lines.clone().unwrap_or_default();
    if reported != want {
        return Err(format!(
            "bad lines reported {reported:?}, expected {want:?}"
        ));
    }
    Ok(())
}

/// Cases of every entrance but `instagram`, on one database with a scheduler in this process.
/// What the groups found: every failure, and how long each case took.
#[derive(Default)]
struct Report {
    failures: Vec<String>,
    timings: Vec<(String, Duration)>,
}

async fn local_groups(cases: &[Case], report: &mut Report) {
    let db = fresh_db().await;
    let (queued, done) = seed(&db.pool).await;
    let mut config = trawl_scheduler::testing::config(&db.url, TOKEN);
    config.scheduler.tokens.push(TokenEntry {
        name: "corpus-reader".into(),
        sha256: hash_hex(READ_TOKEN),
        scopes: vec![Scope::Read],
    });
    let running = trawl_scheduler::testing::spawn(config).await;
    let workdir = std::env::temp_dir().join(format!("trawl-corpus-{}", std::process::id()));
    std::fs::create_dir_all(&workdir).expect("work directory");
    let values: Placeholders = [
        ("TOKEN", TOKEN.to_owned()),
        ("READ_TOKEN", READ_TOKEN.to_owned()),
        ("QUEUED_ID", queued.to_string()),
        ("DONE_ID", done.to_string()),
        ("ACCOUNT", ACCOUNT.to_owned()),
        ("DATABASE_URL", db.url.clone()),
        ("SCHEDULER_URL", running.url()),
        ("KEY", support::KEY.to_owned()),
        ("WORKDIR", workdir.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_bytes()))
    .collect();
    let process_env = vec![
        ("TRAWL_CLIENT__URL".to_owned(), running.url()),
        ("TRAWL_CLIENT__TOKEN".to_owned(), TOKEN.to_owned()),
        ("TRAWL_DATABASE__URL".to_owned(), db.url.clone()),
        ("TRAWL_DATABASE__MAX_CONNECTIONS".to_owned(), "2".to_owned()),
        ("TRAWL_SECRETS__KEY".to_owned(), support::KEY.to_owned()),
    ];
    let env = Env {
        pool: db.pool.clone(),
        scheduler: running.addr,
        values,
        process_env,
        workdir: workdir.clone(),
    };
    for case in cases {
        let started = Instant::now();
        let step = async {
            match case.entrance {
                "api" => api_case(&env, case).await,
                "cli" => cli_case(&env, case).await,
                "config" => config_case(&env, case).await,
                "session" => session_case(&env, case).await,
                "jsonl" => jsonl_case(&env, case).await,
                other => Err(format!("unknown entrance {other}")),
            }
        };
        if let Err(problem) = unchanged_but_jobs(&env.pool, case.expect.jobs_added, step).await {
            report.failures.push(format!("{}: {problem}", case.id()));
        }
        report.timings.push((case.id(), started.elapsed()));
    }
    if let Err(e) = running.stop().await {
        report
            .failures
            .push(format!("api: the scheduler ended with an error: {e}"));
    }
    let _ = std::fs::remove_dir_all(&workdir);
}

// ------------------------------------------------------------------------------------------------
// instagram: answers served by the simulator's overrides to a real worker.

async fn instagram_group(cases: &[Case], report: &mut Report) {
    if cases.is_empty() {
        return;
    }
    let mut fleet = Fleet::start(FleetOptions {
        accounts: 1,
        workers: 1,
        with_scheduler: false,
        // The fleet's 2 s lease is for tests of rescue; here nothing rescues, and the 20,000-post
        // page's transaction can take seconds on a loaded machine.
        worker_env: vec![("TRAWL_QUEUE__LEASE".into(), "20s".into())],
        ..FleetOptions::default()
    })
    .await;
    let http = reqwest::Client::new();
    // A public user with more than one page of posts, current stories and highlights (so that
    // every crawler reaches the request a case answers), one of its posts with a page of
    // comments, and a hashtag with posts.
    let data = &fleet.data;
    let user = data
        .users
        .iter()
        .find(|u| {
            !u.is_private
                && u.post_count > 2 * fleet.options.page_length
                && data.story_count(u) > 0
                && data.highlight_count(u) > 0
        })
        .expect("a public user with several pages of posts, stories and highlights")
        .clone();
    let post = (0..user.post_count)
        .filter_map(|i| data.post(user.index, i))
        .find(|p| (1..=12).contains(&p.comment_count))
        .expect("a post with a page of comments")
        .shortcode;
    let tag = trawl_simulator::data::TAGS
        .iter()
        .find(|t| !data.hashtag_posts(t).is_empty())
        .expect("a hashtag with posts");
    let values: Placeholders = [
        ("USER", user.username.clone()),
        ("USER_ID", user.id.to_string()),
        ("POST", post),
        ("TAG", (*tag).to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_bytes()))
    .collect();
    let failures = &mut report.failures;
    for case in cases {
        let started = Instant::now();
        let result = instagram_case(&fleet, &http, case, &values).await;
        report.timings.push((case.id(), started.elapsed()));
        // Whatever happened, the next case starts with a simulator that answers truly.
        let cleared = http
            .post(format!("{}/__sim/faults", fleet.sim_url))
            .body("{}")
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        if let Err(problem) = result {
            failures.push(format!(
                "{}: {problem}; logs in {}",
                case.id(),
                fleet.logs.display()
            ));
        }
        if cleared.is_err() {
            failures.push(format!(
                "{}: cannot clear the simulator's overrides",
                case.id()
            ));
        }
        if let Err(dead) = fleet.all_alive() {
            failures.push(format!("{}: {dead}", case.id()));
            return;
        }
    }
    let log = fleet.worker_log(0);
    if log.contains("panicked at") {
        failures.push(format!(
            "instagram: the worker panicked; logs in {}",
            fleet.logs.display()
        ));
    }
}

async fn instagram_case(
    fleet: &Fleet,
    http: &reqwest::Client,
    case: &Case,
    values: &Placeholders,
) -> Result<(), String> {
    let e = &case.expect;
    let pool = fleet.pool();
    // The body goes to the simulator as text when it is UTF-8, else as hex; a `{{REPEAT}}` is
    // expanded by the simulator itself, so a huge answer costs one small request.
    let body = fill(
        std::fs::read(&case.input).map_err(|e| e.to_string())?,
        values,
    );
    let mut answer = json!({
        "path_contains": e.path_contains.clone().ok_or("instagram cases need `path_contains`")?,
        "status": e.answer_status.unwrap_or(200),
        "headers": e.answer_headers,
        "count": e.answer_count.unwrap_or(1000),
    });
    match String::from_utf8(body) {
        Ok(text) => answer["body"] = json!(text),
        Err(bytes) => {
            answer["body_hex"] = json!(
                bytes
                    .into_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        }
    }
    if e.repeat_hex.is_some() || e.repeat_to_bytes.is_some() {
        return Err(
            "instagram repeats take `repeat` and `repeat_times` (the simulator expands them)"
                .into(),
        );
    }
    if let Some(unit) = &e.repeat {
        answer["repeat"] = json!({
            "item": unit,
            "separator": e.repeat_separator,
            "times": e.repeat_times.ok_or("instagram repeats need repeat_times")?,
        });
    }
    if let Some(n) = e.drop_after_bytes {
        answer["drop_after_bytes"] = json!(n);
    }
    let set = http
        .post(format!("{}/__sim/faults", fleet.sim_url))
        .body(json!({ "overrides": [answer] }).to_string())
        .send()
        .await
        .map_err(|e| format!("install the override: {e}"))?;
    if !set.status().is_success() {
        let text = set.text().await.unwrap_or_default();
        return Err(format!("the simulator refused the override: {text}"));
    }

    let before = snapshot(pool, Some("ig_"), 0).await;
    let target = fill(
        e.target
            .clone()
            .unwrap_or_else(|| "{{USER}}".into())
            .into_bytes(),
        values,
    );
    let target = String::from_utf8(target).map_err(|e| e.to_string())?;
    let spec = JobSpec {
        max_attempts: Some(e.max_attempts.unwrap_or(1)),
        ..JobSpec::new(e.kind.clone().ok_or("instagram cases need `kind`")?, target)
    };
    let id = fleet.submit(vec![spec]).await[0];
    let want = e
        .job_state
        .clone()
        .ok_or("instagram cases need `job_state`")?;
    let deadline = Instant::now() + Duration::from_secs(45);
    let (state, last_error, snoozed_for): (String, Option<String>, f64) = loop {
        let row: (String, Option<String>, f64) = sqlx::query_as(
            "SELECT state::text, last_error, extract(epoch FROM run_at - now())::float8
             FROM jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .map_err(|e| e.to_string())?;
        let settled = match want.as_str() {
            "snoozed" => row.0 == "queued" && row.2 > 1.0,
            _ => matches!(row.0.as_str(), "completed" | "failed" | "cancelled"),
        };
        if settled {
            break row;
        }
        if Instant::now() > deadline {
            let _ = fleet.queue.cancel(id).await;
            return Err(format!(
                "job {id} did not settle in 45 s: {} ({:?})",
                row.0, row.1
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let state = if want == "snoozed" {
        let _ = fleet.queue.cancel(id).await;
        "snoozed".to_owned()
    } else {
        state
    };
    if state != want {
        return Err(format!(
            "job ended {state} ({last_error:?}), expected {want}"
        ));
    }
    if let Some(needle) = &e.last_error_contains {
        let got = last_error.clone().unwrap_or_default();
        if !got.to_lowercase().contains(&needle.to_lowercase()) {
            return Err(format!("last_error {got:?} does not contain {needle:?}"));
        }
    }
    if let Some(most) = e.snoozed_at_most_secs
        && snoozed_for > most as f64
    {
        return Err(format!(
            "snoozed for {snoozed_for:.0} s, at most {most} s expected"
        ));
    }
    let after = snapshot(pool, Some("ig_"), 0).await;
    let without_users = |s: &Snapshot| {
        s.iter()
            .filter(|(t, _)| t.as_str() != "ig_users")
            .map(|(t, v)| (t.clone(), v.clone()))
            .collect::<Snapshot>()
    };
    match e.results.as_deref().unwrap_or("none") {
        "none" if after != before => {
            return Err(format!(
                "results were stored from a bad answer: {before:?} → {after:?}"
            ));
        }
        // The profile (a good answer) is stored before the bad one arrives.
        "profile" if without_users(&after) != without_users(&before) => {
            return Err(format!(
                "results beyond the profile were stored from a bad answer: {before:?} → {after:?}"
            ));
        }
        "stored" if after == before => return Err("nothing was stored".into()),
        "none" | "profile" | "stored" => {}
        other => {
            return Err(format!(
                "results = {other:?}: expected none, profile or stored"
            ));
        }
    }
    if let Some(least) = e.posts_added_at_least {
        let added =
            after.get("ig_posts").map_or(0, |r| r.0) - before.get("ig_posts").map_or(0, |r| r.0);
        if added < least {
            return Err(format!("{added} posts stored, expected at least {least}"));
        }
    }
    let account_state: String =
        sqlx::query_scalar("SELECT state::text FROM accounts ORDER BY name LIMIT 1")
            .fetch_one(pool)
            .await
            .map_err(|e| e.to_string())?;
    if matches!(account_state.as_str(), "checkpoint" | "disabled") {
        return Err(format!(
            "the account was taken out of rotation ({account_state})"
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_input_gets_a_clear_error_and_changes_nothing() {
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut local = Vec::new();
    let mut instagram = Vec::new();
    let mut counts = Vec::new();
    for entrance in ENTRANCES {
        match load_cases(entrance) {
            Ok(cases) => {
                counts.push(format!("{entrance} {}", cases.len()));
                if entrance == "instagram" {
                    instagram = cases;
                } else {
                    local.extend(cases);
                }
            }
            Err(e) => failures.push(e),
        }
    }
    let total = local.len() + instagram.len();
    // The two halves use databases of their own, so they run side by side.
    let mut local_report = Report::default();
    let mut instagram_report = Report::default();
    tokio::join!(
        local_groups(&local, &mut local_report),
        instagram_group(&instagram, &mut instagram_report),
    );
    failures.extend(local_report.failures);
    failures.extend(instagram_report.failures);
    let mut timings = local_report.timings;
    timings.extend(instagram_report.timings);
    timings.sort_by_key(|(_, took)| std::cmp::Reverse(*took));
    let slowest: Vec<String> = timings
        .iter()
        .take(5)
        .map(|(id, took)| format!("{id} {:.1} s", took.as_secs_f64()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {total} corpus cases failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    // Written past the test harness's capture, so that CI's log shows the count.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "corpus: {total} cases passed ({}) in {:.1} s; slowest: {}",
        counts.join(", "),
        started.elapsed().as_secs_f64(),
        slowest.join(", ")
    );
}
