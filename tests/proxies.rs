//! Egress through real forward proxies: tinyproxy (HTTP) and microsocks (SOCKS5) from Debian's
//! packages, each leaving from an exit address of its own, so the simulator tells them apart by
//! the peer address alone, as Instagram tells real exits apart.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Fleet, FleetOptions, KEY, posts_with_comments};
use trawl_shared::JobSpec;
use trawl_shared::accounts::{AccountState, NewAccount};
use trawl_shared::crypto::SecretBox;
use trawl_shared::domain::JobOptions;
use trawl_shared::proxies::{self, NewProxy};
use trawl_shared::testing::proxy::{ForwardProxy, ProxyKind};

const DIRECT: &str = "127.0.0.1";

fn exit(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn start(kind: ProxyKind, last: u8, credentials: Option<(&str, &str)>) -> ForwardProxy {
    ForwardProxy::start(kind, exit(last), credentials).expect("start a forward proxy")
}

/// Stores `proxy` as `name`, with `credentials` sealed.
async fn add_proxy(
    fleet: &Fleet,
    name: &str,
    proxy: &ForwardProxy,
    credentials: Option<(&str, &str)>,
) {
    proxies::add(
        fleet.pool(),
        &SecretBox::from_hex(KEY).expect("key"),
        &NewProxy {
            name,
            url: &proxy.url(),
            username: credentials.map(|c| c.0),
            password: credentials.map(|c| c.1),
            egress_group: None,
        },
    )
    .await
    .expect("add proxy");
}

/// Adds the simulator's login account `k` behind `proxy`.
async fn add_login_account(fleet: &Fleet, k: usize, proxy: Option<&str>) -> String {
    let (name, password) = trawl_simulator::data::generated_account(fleet.options.seed, k);
    fleet
        .accounts()
        .add(&NewAccount {
            name: &name,
            password: Some(&password),
            proxy,
            ..NewAccount::default()
        })
        .await
        .expect("add account");
    name
}

async fn add_anonymous_account(fleet: &Fleet, name: &str, proxy: &str) {
    fleet
        .accounts()
        .add(&NewAccount {
            name,
            anonymous: true,
            proxy: Some(proxy),
            ..NewAccount::default()
        })
        .await
        .expect("add anonymous account");
}

/// The simulator's audit log without the test's own admin requests.
async fn crawl_requests(fleet: &Fleet) -> Vec<Value> {
    fleet
        .audit()
        .await
        .into_iter()
        .filter(|e| !e["path"].as_str().unwrap_or_default().starts_with("/__sim"))
        .collect()
}

/// Requests per peer address.
fn by_ip(audit: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in audit {
        *counts
            .entry(e["ip"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    counts
}

/// Every request of each logged-in account came from its proxy's exit, and none at all from the
/// machine's own address.
fn assert_every_request_left_through(audit: &[Value], exits: &BTreeMap<String, String>) {
    assert!(!audit.is_empty(), "the simulator saw no request");
    let direct: Vec<&Value> = audit.iter().filter(|e| e["ip"] == DIRECT).take(5).collect();
    assert!(
        direct.is_empty(),
        "requests reached the simulator directly: {direct:?}"
    );
    for e in audit {
        if let Some(account) = e["account"].as_str() {
            let expected = exits.get(account).map(String::as_str);
            assert_eq!(
                e["ip"].as_str(),
                expected,
                "a request of {account} left from the wrong exit: {e}"
            );
        }
    }
}

fn fleet_options(workers: usize) -> FleetOptions {
    FleetOptions {
        accounts: 4,
        workers,
        add_accounts: false,
        metrics_ports: true,
        worker_env: vec![
            ("TRAWL_WORKER__PROXY_REST".into(), "1s".into()),
            ("TRAWL_WORKER__PROXY_REST_MAX".into(), "2s".into()),
            ("TRAWL_WORKER__PROXY_CHECK_TIMEOUT".into(), "2s".into()),
        ],
        ..FleetOptions::default()
    }
}

/// `profile_posts` with media for each user: anonymous accounts can take these.
fn posts_with_media(users: &[String]) -> Vec<JobSpec> {
    users
        .iter()
        .map(|u| JobSpec {
            options: Some(JobOptions {
                with_media: true,
                ..JobOptions::default()
            }),
            ..JobSpec::new("profile_posts", u)
        })
        .collect()
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, fleet: &Fleet, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}; logs in {}",
            fleet.logs.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of a worker counter over every worker of the fleet.
async fn worker_counter(fleet: &Fleet, series: &str) -> f64 {
    let http = reqwest::Client::new();
    let mut total = 0.0;
    for port in &fleet.worker_ports {
        let Ok(response) = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        else {
            continue;
        };
        let text = response.text().await.unwrap_or_default();
        total += text
            .lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_on_two_proxies_and_an_anonymous_pool_on_a_third_each_leave_from_their_own_exit() {
    // Workers start once every account is routed: a worker that leased an account before its
    // proxy was set would rightly keep the direct route for that whole lease.
    let mut fleet = Fleet::start(fleet_options(0)).await;
    let a_credentials = ("alice", "a-secret_1");
    let b_credentials = ("bob", "b.secret-2");
    let a = start(ProxyKind::Http, 2, Some(a_credentials));
    let b = start(ProxyKind::Socks5, 3, Some(b_credentials));
    let c = start(ProxyKind::Http, 4, None);
    add_proxy(&fleet, "a", &a, Some(a_credentials)).await;
    add_proxy(&fleet, "b", &b, Some(b_credentials)).await;
    add_proxy(&fleet, "c", &c, None).await;
    let mut exits = BTreeMap::new();
    for k in 0..2 {
        exits.insert(
            add_login_account(&fleet, k, Some("a")).await,
            "127.0.0.2".to_owned(),
        );
    }
    exits.insert(
        add_login_account(&fleet, 2, Some("b")).await,
        "127.0.0.3".to_owned(),
    );
    // The last one is routed after it was added, as an operator would, with the CLI.
    let moved = add_login_account(&fleet, 3, None).await;
    let (code, out, err) = fleet.trawl(&["accounts", "set-proxy", &moved, "b"]);
    assert_eq!(code, Some(0), "{out}{err}");
    exits.insert(moved, "127.0.0.3".to_owned());
    add_anonymous_account(&fleet, "anon0", "c").await;
    for _ in 0..5 {
        fleet.add_worker();
    }

    let users = fleet.public_users_with_posts(10);
    let (with_comments, with_media) = users.split_at(8);
    let (_, comments) = fleet.expected_posts_and_comments(with_comments);
    let (posts, _) = fleet.expected_posts_and_comments(&users);
    let mut jobs = posts_with_comments(with_comments);
    jobs.extend(posts_with_media(with_media));
    fleet.submit(jobs).await;
    fleet.wait_until_done(Duration::from_secs(240)).await;

    fleet.assert_stored_exactly(&posts, Some(&comments)).await;
    fleet.assert_windows_held().await;
    let audit = crawl_requests(&fleet).await;
    assert_every_request_left_through(&audit, &exits);
    let ips = by_ip(&audit);
    for exit in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        assert!(
            ips.get(exit).is_some_and(|n| *n > 0),
            "nothing left from {exit}: {ips:?}"
        );
    }
    // Media came through the proxies too: the CDN saw no other address.
    let cdn: BTreeSet<&str> = audit
        .iter()
        .filter(|e| e["query_type"] == "cdn")
        .filter_map(|e| e["ip"].as_str())
        .collect();
    assert!(!cdn.is_empty(), "no media was downloaded");
    assert!(!cdn.contains(DIRECT), "media left directly: {cdn:?}");

    // Egress groups follow the proxies: the ledger counted each exit's logged-out requests
    // (logins, the anonymous pool) under the proxy's name.
    let scopes: BTreeSet<String> =
        sqlx::query_scalar("SELECT DISTINCT scope FROM limiter_grants WHERE scope LIKE 'egress:%'")
            .fetch_all(fleet.pool())
            .await
            .expect("egress scopes")
            .into_iter()
            .collect();
    assert!(scopes.contains("egress:c"), "{scopes:?}");
    assert!(
        !scopes.contains("egress:shared"),
        "a proxied request counted as direct: {scopes:?}"
    );

    // No process logged a proxy's password (reqwest carries SOCKS credentials in the proxy URL).
    for entry in std::fs::read_dir(&fleet.logs)
        .expect("log directory")
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for secret in [a_credentials.1, b_credentials.1] {
            assert!(
                !text.contains(secret),
                "{} holds a proxy password",
                entry.path().display()
            );
        }
    }
    // Nobody can read a proxy's credentials back: not the list, not the accounts.
    let (code, listed, err) = fleet.trawl(&["proxies", "list", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    for secret in [a_credentials.1, b_credentials.1, "alice", "bob"] {
        assert!(
            !listed.contains(secret),
            "a credential was listed: {listed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_killed_mid_crawl_rests_its_accounts_and_the_crawl_finishes_on_the_others() {
    let fleet = Fleet::start(fleet_options(4)).await;
    let mut a = start(ProxyKind::Http, 5, None);
    let b = start(ProxyKind::Socks5, 6, None);
    add_proxy(&fleet, "a", &a, None).await;
    add_proxy(&fleet, "b", &b, None).await;
    let mut exits = BTreeMap::new();
    let mut behind_a = Vec::new();
    for k in 0..4 {
        let (proxy, ip) = if k < 2 {
            ("a", "127.0.0.5")
        } else {
            ("b", "127.0.0.6")
        };
        let name = add_login_account(&fleet, k, Some(proxy)).await;
        if k < 2 {
            behind_a.push(name.clone());
        }
        exits.insert(name, ip.to_owned());
    }
    let users = fleet.public_users_with_posts(14);
    let (posts, comments) = fleet.expected_posts_and_comments(&users);
    fleet.submit(posts_with_comments(&users)).await;

    let target = posts.len() as i64 / 4;
    let pool = fleet.pool();
    wait_for(
        "a quarter of the posts stored",
        Duration::from_secs(120),
        &fleet,
        || async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ig_posts")
                .fetch_one(pool)
                .await
                .unwrap_or(0)
                >= target
        },
    )
    .await;
    a.kill();

    let accounts = fleet.accounts();
    let (accounts_ref, behind) = (&accounts, &behind_a);
    wait_for(
        "the accounts behind the dead proxy resting",
        Duration::from_secs(60),
        &fleet,
        || async move {
            let listed = accounts_ref.list().await.expect("accounts");
            let resting = listed
                .iter()
                .filter(|acc| behind.contains(&acc.name) && acc.state == AccountState::ProxyDown)
                .count();
            resting == behind.len()
        },
    )
    .await;
    let down = proxies::get(fleet.pool(), "a").await.expect("proxy a");
    assert_eq!(down.state, "down");
    let reason = down.down_reason.unwrap_or_default();
    assert!(reason.contains("cannot get through the proxy"), "{reason}");
    assert!(worker_counter(&fleet, "trawl_proxy_failures_total{reason=\"refused\"}").await >= 1.0);
    let listed = accounts.list().await.expect("accounts");
    let shown = listed
        .iter()
        .find(|acc| acc.name == behind_a[0])
        .and_then(|acc| acc.proxy_down_reason.clone());
    assert_eq!(shown.as_deref(), Some(reason.as_str()));

    fleet.wait_until_done(Duration::from_secs(240)).await;
    fleet.assert_stored_exactly(&posts, Some(&comments)).await;
    fleet.assert_windows_held().await;
    // While its proxy was dead, no request of those accounts went out directly instead.
    assert_every_request_left_through(&crawl_requests(&fleet).await, &exits);

    // Back in service by itself once the proxy answers again.
    a.restart().expect("restart proxy a");
    wait_for(
        "proxy a checked and up again",
        Duration::from_secs(30),
        &fleet,
        || async move { proxies::get(pool, "a").await.is_ok_and(|p| p.state == "up") },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_proxy_credentials_rest_the_account_without_touching_its_jobs() {
    let fleet = Fleet::start(fleet_options(1)).await;
    let proxy = start(ProxyKind::Http, 7, Some(("carol", "right")));
    add_proxy(&fleet, "p", &proxy, Some(("carol", "wrong"))).await;
    let name = add_login_account(&fleet, 0, Some("p")).await;
    let user = fleet.public_users_with_posts(1);
    let ids = fleet.submit(vec![JobSpec::new("profile", &user[0])]).await;

    let pool = fleet.pool();
    wait_for(
        "the proxy marked down",
        Duration::from_secs(60),
        &fleet,
        || async move {
            proxies::get(pool, "p")
                .await
                .is_ok_and(|p| p.state == "down")
        },
    )
    .await;
    let p = proxies::get(fleet.pool(), "p").await.expect("proxy");
    let reason = p.down_reason.unwrap_or_default();
    assert!(reason.contains("credentials"), "{reason}");
    let account = fleet
        .accounts()
        .list()
        .await
        .expect("accounts")
        .into_iter()
        .find(|a| a.name == name)
        .expect("account");
    assert_ne!(
        account.state,
        AccountState::Checkpoint,
        "the account itself is fine"
    );
    // The job never ran: it waits for an account that can reach Instagram.
    let states = fleet.job_states().await;
    assert_eq!(states.get("failed"), None, "{states:?}");
    assert_eq!(ids.len(), 1);
    // The check is a bare tunnel, refused by the proxy: the simulator saw nothing at all.
    assert!(crawl_requests(&fleet).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_lists_routes_and_removes_proxies_and_refuses_bad_input_with_the_reason() {
    let fleet = Fleet::start(FleetOptions {
        workers: 0,
        accounts: 1,
        ..FleetOptions::default()
    })
    .await;
    let account = trawl_simulator::data::generated_account(fleet.options.seed, 0).0;
    for (args, code, says) in [
        (
            vec!["proxies", "add", "s", "socks5h://proxy.lan:1080"],
            0,
            "added proxy s",
        ),
        (
            vec![
                "proxies",
                "add",
                "h",
                "http://10.0.0.5:3128",
                "--egress",
                "dc-east",
            ],
            0,
            "egress group dc-east",
        ),
        (
            vec!["proxies", "add", "x", "http://user:pw@10.0.0.5:3128"],
            2,
            "credentials do not belong in the URL",
        ),
        (
            vec!["proxies", "add", "x", "https://10.0.0.5:443"],
            2,
            "TLS to the proxy",
        ),
        (
            vec!["proxies", "add", "x", "10.0.0.5:3128"],
            2,
            "scheme://host:port",
        ),
        (
            vec!["proxies", "add", "s", "http://10.0.0.6:1"],
            4,
            "already exists",
        ),
        (
            vec!["accounts", "set-proxy", &account, "nope"],
            3,
            "does not exist",
        ),
        (
            vec!["accounts", "set-proxy", "nobody", "s"],
            3,
            "does not exist",
        ),
        (
            vec!["accounts", "set-proxy", &account, "h"],
            0,
            "through proxy h",
        ),
        (vec!["proxies", "remove", "h"], 4, &account),
        (
            vec!["accounts", "set-proxy", &account, "--none"],
            0,
            "straight out",
        ),
        (vec!["proxies", "remove", "h"], 0, "removed proxy h"),
    ] {
        let (got, out, err) = fleet.trawl(&args);
        assert_eq!(got, Some(code), "trawl {args:?}: {out}{err}");
        assert!(
            format!("{out}{err}").contains(says),
            "trawl {args:?}: {out}{err}"
        );
    }
    let (code, listed, err) = fleet.trawl(&["proxies", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        listed.contains("socks5h://proxy.lan:1080") && !listed.contains("10.0.0.5"),
        "{listed}"
    );
    // A proxy whose credentials need sealing needs the key; the password comes from stdin only.
    let out = support::trawl_command(
        &[
            "proxies",
            "add",
            "k",
            "http://10.0.0.7:3128",
            "--username",
            "u",
            "--password-stdin",
        ],
        fleet
            .env()
            .into_iter()
            .filter(|(k, _)| k != "TRAWL_SECRETS__KEY"),
    )
    .output()
    .expect("run trawl");
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        proxies::get(fleet.pool(), "k").await.is_err(),
        "nothing stored without a key"
    );
}
