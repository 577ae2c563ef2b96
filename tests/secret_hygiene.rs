//! Secret hygiene: a full crawl with known passwords, session cookies, the API token and the
//! secrets key, with every account behind a forward proxy that has a password, then a search of
//! everything Trawl shows or keeps in the clear: every log line (text and JSON, at debug level),
//! every /metrics body, every API answer, `config show`, `accounts list --json`,
//! `proxies list --json`, and every database column that is not sealed. Zero hits.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use support::{Fleet, FleetOptions, KEY, TOKEN, posts_with_comments, sim_password};
use trawl_shared::JobSpec;
use trawl_shared::crypto::SecretBox;
use trawl_shared::proxies::{self, NewProxy};
use trawl_shared::testing::proxy::{ForwardProxy, ProxyKind};

/// The proxy's user name and password.
const PROXY_LOGIN: (&str, &str) = ("hygiene", "proxy-pass-7f3a9c");

/// The values of a stored cookie string (`name=value; …`) that are credentials.
fn credential_cookies(stored: &str) -> Vec<String> {
    stored
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, value)| matches!(*name, "sessionid" | "csrftoken") && value.len() >= 8)
        .map(|(_, value)| value.to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_cookie_token_or_key_is_shown_or_stored_in_the_clear() {
    let mut fleet = Fleet::start(FleetOptions {
        workers: 0,
        accounts: 2,
        time_scale: 0.01,
        metrics_ports: true,
        ..FleetOptions::default()
    })
    .await;
    // Every account leaves through a proxy with credentials, so those are searched for too.
    let proxy = ForwardProxy::start(
        ProxyKind::Http,
        Ipv4Addr::new(127, 0, 0, 9),
        Some(PROXY_LOGIN),
    )
    .expect("start a forward proxy");
    proxies::add(
        fleet.pool(),
        &SecretBox::from_hex(KEY).expect("key"),
        &NewProxy {
            name: "exit1",
            url: &proxy.url(),
            username: Some(PROXY_LOGIN.0),
            password: Some(PROXY_LOGIN.1),
            egress_group: None,
        },
    )
    .await
    .expect("add the proxy");
    for k in 0..fleet.options.accounts {
        let (name, _) = trawl_simulator::data::generated_account(fleet.options.seed, k);
        proxies::assign(fleet.pool(), &name, Some("exit1"))
            .await
            .expect("route the account");
    }
    // Everything at debug level, one worker logging JSON and one text.
    for format in ["json", "text"] {
        fleet.add_worker_with(vec![
            ("TRAWL_LOG__FILTER".into(), "debug".into()),
            ("TRAWL_LOG__FORMAT".into(), format.into()),
        ]);
    }
    let users = fleet.public_users_with_posts(4);
    let mut jobs = posts_with_comments(&users);
    // Login-only kinds, so the sessions are used for what only they open.
    jobs.extend(users.iter().map(|u| JobSpec::new("followers", u)));
    jobs.extend(users.iter().map(|u| JobSpec::new("stories", u)));
    let ids = fleet.submit(jobs).await;
    fleet.wait_until_done(Duration::from_secs(180)).await;

    // The secrets, as the fleet holds them.
    let mut secrets: Vec<(String, String)> = vec![
        ("the API token".into(), TOKEN.into()),
        ("the secrets key".into(), KEY.into()),
        ("the proxy's password".into(), PROXY_LOGIN.1.into()),
    ];
    for k in 0..fleet.options.accounts {
        secrets.push((
            format!("the password of account {k}"),
            sim_password(fleet.options.seed, k),
        ));
    }
    /// An account's name, sealed password and sealed session.
    type SealedRow = (String, Option<Vec<u8>>, Option<Vec<u8>>);
    let sealed: Vec<SealedRow> =
        sqlx::query_as("SELECT name, password_sealed, session_sealed FROM accounts")
            .fetch_all(fleet.pool())
            .await
            .expect("accounts");
    let key = SecretBox::from_hex(KEY).expect("key");
    let mut sessions = 0;
    for (name, password, session) in &sealed {
        let session = session
            .as_ref()
            .expect("every account logged in and kept its session");
        let opened = key
            .open(session, &format!("account:{name}:session"))
            .expect("the session opens with the key");
        let cookies = credential_cookies(&String::from_utf8_lossy(&opened));
        assert!(!cookies.is_empty(), "{name}'s session has a sessionid");
        sessions += cookies.len();
        for cookie in cookies {
            secrets.push((format!("a session cookie of {name}"), cookie));
        }
        // Sealed really means sealed: no plaintext inside the stored bytes.
        for (what, value) in &secrets {
            for stored in [Some(session), password.as_ref()].into_iter().flatten() {
                assert!(
                    !stored.windows(value.len()).any(|w| w == value.as_bytes()),
                    "{what} is readable inside {name}'s sealed column"
                );
            }
        }
    }
    assert!(
        sessions >= 2,
        "the crawl logged in and holds session cookies"
    );

    // Everything Trawl shows or keeps in the clear.
    let mut haystacks: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(&fleet.logs).expect("logs").flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        haystacks.push((format!("log {}", entry.path().display()), text));
    }
    let json_lines = haystacks
        .iter()
        .filter(|(name, _)| name.contains("worker0-"))
        .flat_map(|(_, text)| text.lines())
        .filter(|l| l.starts_with('{'))
        .count();
    assert!(json_lines > 20, "worker 0 logged JSON ({json_lines} lines)");
    let http = reqwest::Client::new();
    let get = |url: String, token: bool| {
        let http = http.clone();
        async move {
            let mut request = http.get(&url);
            if token {
                request = request.bearer_auth(TOKEN);
            }
            let body = request
                .send()
                .await
                .expect("get")
                .text()
                .await
                .unwrap_or_default();
            (url, body)
        }
    };
    let scheduler = format!("http://127.0.0.1:{}", fleet.scheduler_port);
    let mut urls = vec![
        (format!("{scheduler}/metrics"), false),
        (format!("{}/__sim/metrics", fleet.sim_url), false),
        (format!("{scheduler}/v1/jobs?count=1000"), true),
        (format!("{scheduler}/v1/stats"), true),
        (format!("{scheduler}/v1/limits"), true),
        (format!("{scheduler}/v1/accounts"), true),
        (format!("{scheduler}/v1/proxies"), true),
    ];
    urls.extend(
        ids.iter()
            .take(20)
            .map(|id| (format!("{scheduler}/v1/jobs/{id}"), true)),
    );
    urls.extend(
        fleet
            .worker_ports
            .iter()
            .map(|p| (format!("http://127.0.0.1:{p}/metrics"), false)),
    );
    for (url, token) in urls {
        let (url, body) = get(url, token).await;
        assert!(!body.is_empty(), "{url} answered");
        haystacks.push((url, body));
    }
    for args in [
        &["config", "show"][..],
        &["accounts", "list", "--json"],
        &["proxies", "list", "--json"],
    ] {
        let (code, out, err) = fleet.trawl(args);
        assert_eq!(code, Some(0), "trawl {args:?}: {err}");
        haystacks.push((format!("trawl {}", args.join(" ")), format!("{out}{err}")));
    }
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(fleet.pool())
    .await
    .expect("tables");
    assert!(tables.len() >= 10, "every table: {tables:?}");
    for table in tables {
        let dump: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(string_agg((to_jsonb(t) - 'password_sealed' - 'session_sealed'
                                                      - 'credentials_sealed')::text,
                                        E'\\n'), '')
               FROM \"{table}\" t"
        )))
        .fetch_one(fleet.pool())
        .await
        .expect("dump");
        haystacks.push((format!("table {table}"), dump));
    }

    let mut hits = Vec::new();
    for (what, value) in &secrets {
        for (place, text) in &haystacks {
            if text.contains(value.as_str()) {
                hits.push(format!("{what} in {place}"));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "secrets in the clear: {hits:#?}; logs in {}",
        fleet.logs.display()
    );
    eprintln!(
        "secret hygiene: {} secrets searched in {} places, 0 hits",
        secrets.len(),
        haystacks.len()
    );
}
