//! Protocol parity: for the same targets, Trawl's crawler and the real Instaloader 4.16 send the
//! same requests, counted as (query type, route) from the simulator's audit log, operation by
//! operation, logged in and logged out. Login is left aside (the two log in once each, and the
//! simulator does not count login requests in any window). A difference fails with the first
//! request where the two sequences part.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Fleet, FleetOptions};
use trawl_shared::JobSpec;
use trawl_shared::accounts::NewAccount;
use trawl_simulator::Sizes;

/// One Instaloader process, fed one operation at a time.
struct Instaloader {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Instaloader {
    fn start(python: &str, sim_url: &str, login: Option<(&str, &str)>) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/parity/instaloader_ops.py"
        );
        let mut cmd = Command::new(python);
        cmd.arg(script).arg(sim_url);
        if let Some((user, password)) = login {
            cmd.arg(user).arg(password);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start Instaloader");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut il = Self {
            child,
            stdin,
            stdout,
        };
        let ready = il.answer();
        assert_eq!(ready["ready"], true, "Instaloader did not start: {ready}");
        il
    }

    fn answer(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read Instaloader");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("Instaloader said {line:?}"))
    }

    fn run(&mut self, kind: &str, target: &str) -> Value {
        let op = json!({"kind": kind, "target": target});
        writeln!(self.stdin, "{op}").expect("write Instaloader");
        self.stdin.flush().expect("flush");
        self.answer()
    }
}

impl Drop for Instaloader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request as the parity compares it: its query type and its route.
fn request(e: &Value) -> String {
    format!(
        "{} {}",
        e["query_type"].as_str().unwrap_or("?"),
        e["path"].as_str().unwrap_or("?")
    )
}

/// The requests a window of the audit log holds, login and media downloads aside.
fn requests(audit: &[Value]) -> Vec<String> {
    audit
        .iter()
        .filter(|e| e["query_type"] != "uncounted" && e["query_type"] != "cdn")
        .map(request)
        .collect()
}

fn counts(requests: &[String]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for r in requests {
        *counts.entry(r.as_str()).or_default() += 1;
    }
    counts
}

/// The same requests in any order, or the first one where the two parted.
fn compare(what: &str, trawl: &[String], instaloader: &[String]) -> Result<(), String> {
    if counts(trawl) == counts(instaloader) {
        return Ok(());
    }
    let at = trawl
        .iter()
        .zip(instaloader)
        .position(|(a, b)| a != b)
        .unwrap_or(trawl.len().min(instaloader.len()));
    Err(format!(
        "{what}: request {at} differs: Trawl sent {:?}, Instaloader {:?}\n  Trawl:       {trawl:?}\n  Instaloader: {instaloader:?}",
        trawl.get(at),
        instaloader.get(at),
    ))
}

/// Runs each operation with Trawl's worker (one job at a time), then with Instaloader, and
/// compares what the simulator received for each.
async fn check_parity(
    fleet: &Fleet,
    il: &mut Instaloader,
    mode: &str,
    operations: &[(&str, String)],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (kind, target) in operations {
        let before = fleet.audit().await.len();
        let ids = fleet.submit(vec![JobSpec::new(*kind, target)]).await;
        fleet.wait_until_done(Duration::from_secs(60)).await;
        let state: (String, Option<String>) =
            sqlx::query_as("SELECT state::text, last_error FROM jobs WHERE id = $1")
                .bind(ids[0])
                .fetch_one(fleet.pool())
                .await
                .expect("job");
        let middle = fleet.audit().await.len();
        let answer = il.run(kind, target);
        let audit = fleet.audit().await;
        let what = format!("{mode} {kind} {target}");
        assert_eq!(
            state.0,
            "completed",
            "{what}: Trawl's job ended {state:?}; logs in {}",
            fleet.logs.display()
        );
        assert!(
            answer["items"].as_u64().is_some(),
            "{what}: Instaloader failed: {answer}"
        );
        let trawl = requests(&audit[before..middle]);
        let instaloader = requests(&audit[middle..]);
        eprintln!(
            "parity {what}: {} requests each side, {} items by Instaloader",
            trawl.len(),
            answer["items"]
        );
        if let Err(e) = compare(&what, &trawl, &instaloader) {
            failures.push(e);
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trawl_sends_the_requests_instaloader_sends_for_the_same_work() {
    let python = support::instaloader_python();
    let mut fleet = Fleet::start(FleetOptions {
        accounts: 1,
        workers: 1,
        with_scheduler: false,
        time_scale: 0.1,
        sizes: Sizes {
            users: 120,
            max_posts: 40,
            max_following: 40,
            max_comments: 30,
        },
        ..FleetOptions::default()
    })
    .await;
    let data = &fleet.data;
    let public = |min_posts: u32| {
        data.users
            .iter()
            .find(|u| !u.is_private && u.post_count > min_posts)
            .expect("a public user with posts")
    };
    // More than two pages of posts (12 each), so paging is compared too.
    let poster = public(26);
    let posts: Vec<_> = (0..poster.post_count)
        .filter_map(|i| data.post(poster.index, i))
        .collect();
    let few_comments = posts
        .iter()
        .find(|p| (1..=12).contains(&p.comment_count))
        .expect("a post with a page of comments");
    let many_comments = posts
        .iter()
        .find(|p| p.comment_count > 12)
        .expect("a post with more than a page of comments");
    let popular = data
        .users
        .iter()
        .find(|u| !u.is_private && u.followers.len() > 12 && u.following.len() > 12)
        .expect("a public user following and followed by more than a page");
    // The smallest hashtag with more than a page of posts.
    let tag = trawl_simulator::data::TAGS
        .iter()
        .filter(|t| data.hashtag_posts(t).len() > 12)
        .min_by_key(|t| data.hashtag_posts(t).len())
        .expect("a hashtag with more than a page of posts");
    let storytellers: Vec<&str> = data
        .users
        .iter()
        .filter(|u| !u.is_private)
        .take(3)
        .map(|u| u.username.as_str())
        .collect();

    let mut logged_in: Vec<(&str, String)> = vec![
        ("profile", poster.username.clone()),
        ("profile_posts", poster.username.clone()),
        ("post", posts[0].shortcode.clone()),
        ("post_comments", few_comments.shortcode.clone()),
        ("post_comments", many_comments.shortcode.clone()),
        ("followers", popular.username.clone()),
        ("followees", popular.username.clone()),
        ("hashtag_posts", (*tag).to_owned()),
    ];
    for u in &storytellers {
        logged_in.push(("stories", (*u).to_owned()));
        logged_in.push(("highlights", (*u).to_owned()));
    }
    let logged_out: Vec<(&str, String)> = vec![
        ("profile", poster.username.clone()),
        ("profile_posts", poster.username.clone()),
        ("post", posts[1].shortcode.clone()),
        ("hashtag_posts", (*tag).to_owned()),
    ];

    let (name, password) = trawl_simulator::data::generated_account(fleet.options.seed, 0);
    let mut il = Instaloader::start(&python, &fleet.sim_url, Some((&name, &password)));
    let mut failures = check_parity(&fleet, &mut il, "logged in", &logged_in).await;
    drop(il);

    // Logged out: the worker's account is taken away and an anonymous one takes its place.
    fleet.kill_worker(0);
    let accounts = fleet.accounts();
    accounts
        .remove(&name)
        .await
        .expect("remove the login account");
    accounts
        .add(&NewAccount {
            name: "anonymous-1",
            anonymous: true,
            ..NewAccount::default()
        })
        .await
        .expect("add an anonymous account");
    fleet.add_worker();
    let mut il = Instaloader::start(&python, &fleet.sim_url, None);
    failures.extend(check_parity(&fleet, &mut il, "logged out", &logged_out).await);

    assert!(failures.is_empty(), "{}", failures.join("\n"));
    fleet.assert_windows_held().await;
}
