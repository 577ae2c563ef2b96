//! Finding the writable primary among a database URL's hosts, and following it after a failover.
//!
//! A URL may list several hosts, as libpq's do: `postgres://user@db1:5432,db2:5432/trawl`. sqlx
//! connects to one host, so Trawl splits the list itself: it asks each host in turn whether it is
//! in recovery and opens its pool on the first that is not. Every connection the pool opens later
//! is refused when it lands on a standby (a host demoted since, or an endpoint that a proxy or DNS
//! has not moved yet), and a follower task checks the primary once a second: when the host the
//! pool uses is gone or has become a standby, it finds the new primary and points the pool there.
//! Connections to the old host die with it; new ones go to the new primary. No restart needed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};

use crate::secret::redact_url_password;

/// How often a process checks that its pool still talks to the primary.
pub const PRIMARY_CHECK_INTERVAL: Duration = Duration::from_secs(1);

static PRIMARY_SWITCHES: AtomicU64 = AtomicU64::new(0);

/// How many times this process has moved its pools to a new primary.
pub fn primary_switches() -> u64 {
    PRIMARY_SWITCHES.load(Ordering::Relaxed)
}

/// What a host said when asked whether it is the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostState {
    Primary,
    Standby,
    Unreachable(String),
}

/// Why a connection was refused by the pool's connect check.
#[derive(Debug, thiserror::Error)]
#[error(
    "{host} is a standby (in recovery), not the writable primary; Trawl only works on the primary"
)]
pub struct StandbyRefused {
    pub host: String,
}

/// The hosts of a database URL, each as a URL of its own.
#[derive(Debug, Clone)]
pub struct HostList {
    /// One single-host URL per host, in the order given.
    pub urls: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostListError {
    #[error("database URL {0} has an empty host in its host list")]
    EmptyHost(String),
}

impl HostList {
    /// Splits `postgres://user:pw@h1:p1,h2:p2/db?params` into one URL per host. A URL with one
    /// host comes back unchanged. libpq's `target_session_attrs` is dropped: Trawl always wants the
    /// read-write primary, and sqlx would only warn about a parameter it does not know.
    pub fn parse(url: &str) -> Result<Self, HostListError> {
        let url = drop_query_parameter(url, "target_session_attrs");
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return Ok(Self { urls: vec![url] });
        };
        let rest = &url[scheme_end..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        let tail = &rest[authority_end..];
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(at) => (&authority[..=at], &authority[at + 1..]),
            None => ("", authority),
        };
        if !hosts.contains(',') {
            return Ok(Self { urls: vec![url] });
        }
        let mut urls = Vec::new();
        for host in hosts.split(',') {
            if host.trim().is_empty() {
                return Err(HostListError::EmptyHost(redact_url_password(&url)));
            }
            urls.push(format!(
                "{}{userinfo}{}{tail}",
                &url[..scheme_end],
                host.trim()
            ));
        }
        Ok(Self { urls })
    }

    pub fn is_multi_host(&self) -> bool {
        self.urls.len() > 1
    }
}

fn drop_query_parameter(url: &str, name: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some(name))
        .collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// `host:port` of a connection's options, for logs.
pub fn describe(options: &PgConnectOptions) -> String {
    format!("{}:{}", options.get_host(), options.get_port())
}

/// Whether the server behind `connection` is a standby.
pub async fn in_recovery(connection: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(connection)
        .await
}

/// Asks one host, on a connection of its own, whether it is the primary.
pub async fn probe(options: &PgConnectOptions, timeout: Duration) -> HostState {
    let asked = tokio::time::timeout(timeout, async {
        let mut connection = PgConnection::connect_with(options).await?;
        let standby = in_recovery(&mut connection).await;
        let _ = connection.close().await;
        standby
    })
    .await;
    match asked {
        Ok(Ok(false)) => HostState::Primary,
        Ok(Ok(true)) => HostState::Standby,
        Ok(Err(e)) => HostState::Unreachable(e.to_string()),
        Err(_) => HostState::Unreachable(format!("no answer within {timeout:?}")),
    }
}

/// The first host of `hosts` that is the primary, or what each one said.
pub async fn find_primary(
    hosts: &[PgConnectOptions],
    timeout: Duration,
) -> Result<PgConnectOptions, Vec<(String, HostState)>> {
    let mut answers = Vec::with_capacity(hosts.len());
    for options in hosts {
        match probe(options, timeout).await {
            HostState::Primary => return Ok(options.clone()),
            other => answers.push((describe(options), other)),
        }
    }
    Err(answers)
}

/// Keeps `pool` on the primary of `hosts` until the pool is closed: checks it every
/// [`PRIMARY_CHECK_INTERVAL`] on one of the pool's connections, and when that fails (no answer
/// within `probe_timeout`, or a standby now), asks every host on a connection of its own and
/// points the pool's new connections at the primary.
/// Each switch counts in [`primary_switches`].
pub fn follow_primary(
    pool: PgPool,
    hosts: Vec<PgConnectOptions>,
    probe_timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(PRIMARY_CHECK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !pool.is_closed() {
            ticker.tick().await;
            // Through the pool: a connection of its own every second, in every process, would
            // cost the server a fork each time.
            let checked = tokio::time::timeout(probe_timeout, async {
                let mut connection = pool.acquire().await?;
                in_recovery(&mut connection).await
            })
            .await;
            if let Ok(Ok(false)) = checked {
                continue;
            }
            let current = pool.connect_options();
            match find_primary(&hosts, probe_timeout).await {
                Ok(primary) if describe(&primary) != describe(&current) => {
                    tracing::warn!(
                        from = %describe(&current),
                        to = %describe(&primary),
                        "the database primary moved; following it"
                    );
                    pool.set_connect_options(primary);
                    PRIMARY_SWITCHES.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(answers) => {
                    tracing::warn!(hosts = ?answers, "no database host is a writable primary; checking again");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_host_list_into_urls() {
        let hosts =
            HostList::parse("postgres://u:p@db1:5432,db2:5433/trawl?sslmode=disable").unwrap();
        assert_eq!(
            hosts.urls,
            vec![
                "postgres://u:p@db1:5432/trawl?sslmode=disable",
                "postgres://u:p@db2:5433/trawl?sslmode=disable"
            ]
        );
        assert!(hosts.is_multi_host());
    }

    #[test]
    fn one_host_stays_as_it_was_and_target_session_attrs_goes() {
        let one = HostList::parse("postgres://u@db/trawl").unwrap();
        assert_eq!(one.urls, vec!["postgres://u@db/trawl"]);
        assert!(!one.is_multi_host());
        let attrs =
            HostList::parse("postgres://u@a:1,b:2/t?target_session_attrs=read-write&x=1").unwrap();
        assert_eq!(
            attrs.urls,
            vec!["postgres://u@a:1/t?x=1", "postgres://u@b:2/t?x=1"]
        );
        assert_eq!(
            HostList::parse("postgres://a,b?target_session_attrs=any")
                .unwrap()
                .urls,
            vec!["postgres://a", "postgres://b"]
        );
    }

    #[test]
    fn an_empty_host_is_refused_without_the_password() {
        let err = HostList::parse("postgres://u:secret@a:1,,b/t").unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("empty host"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
