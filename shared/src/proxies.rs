//! Forward proxies (docs/proxies.md): the named exits accounts send their requests through, their
//! sealed credentials, and their health.
//!
//! A proxy is a row that accounts point at. The worker holding an account sends every request of
//! it (login, API, media) through that proxy and never straight out: an account whose address
//! jumps between its proxy and the machine's own is what Instagram flags. When a worker cannot get
//! through, it marks the proxy `down`; no account behind it is leased until the proxy's
//! `check_after`, and the worker that leases one then checks the proxy before anything else.
//!
//! This module must not open a proxy's credentials for anyone but a worker's lease
//! ([`crate::accounts::Accounts::lease`]) and never shows them: listings say only whether some
//! are stored.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::crypto::{CryptoError, SecretBox};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("proxy {0:?} already exists")]
    Exists(String),
    #[error("proxy {0:?} does not exist")]
    NotFound(String),
    #[error("account {0:?} does not exist")]
    AccountNotFound(String),
    #[error("proxy name {0:?} is not valid: 1 to 64 letters, digits, '.', '_' or '-'")]
    BadName(String),
    #[error("proxy URL {url:?} is not valid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("proxy username is not valid: {0}")]
    BadUsername(&'static str),
    #[error(
        "proxy {name:?} is still assigned to {accounts}; assign those accounts elsewhere first"
    )]
    InUse { name: String, accounts: String },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// How a proxy is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyScheme {
    /// An HTTP forward proxy: plain requests in absolute form, `CONNECT` for TLS.
    Http,
    /// SOCKS5 with names resolved here.
    Socks5,
    /// SOCKS5 with names resolved by the proxy, so DNS leaves from the exit too.
    Socks5h,
}

impl ProxyScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Socks5 => "socks5",
            ProxyScheme::Socks5h => "socks5h",
        }
    }
}

/// A proxy's address: `scheme://host:port`, without credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub scheme: ProxyScheme,
    /// A name, an IPv4 address, or an IPv6 address in brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

impl FromStr for ProxyUrl {
    type Err = ProxyError;

    fn from_str(text: &str) -> Result<Self, ProxyError> {
        let bad = |reason: &str| ProxyError::BadUrl {
            url: text.chars().take(200).collect(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("expected scheme://host:port"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => ProxyScheme::Http,
            "socks5" => ProxyScheme::Socks5,
            "socks5h" => ProxyScheme::Socks5h,
            "https" => {
                return Err(bad(
                    "TLS to the proxy itself is not supported; use http:// (requests to Instagram \
                     are still TLS end to end through CONNECT)",
                ));
            }
            _ => return Err(bad("the scheme must be http, socks5 or socks5h")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('@') {
            return Err(bad(
                "credentials do not belong in the URL, where they would be stored and shown in \
                 clear; give them with --username and --password-stdin",
            ));
        }
        if rest.contains(['/', '?', '#']) || rest.chars().any(char::is_whitespace) {
            return Err(bad("a proxy URL has no path, query or spaces"));
        }
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("the port is missing (scheme://host:port)"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?;
        let bracketed = host.starts_with('[') && host.ends_with(']');
        let valid_host = !host.is_empty()
            && host.len() <= 253
            && (bracketed
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
        if !valid_host {
            return Err(bad("the host must be a name or an address"));
        }
        Ok(ProxyUrl {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// What `trawl proxies list` and the API show: never a credential, only whether one is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Proxy {
    pub name: String,
    pub url: String,
    pub has_credentials: bool,
    /// The egress group its accounts share unless they name their own (the proxy's name when
    /// not set).
    pub egress_group: String,
    /// `up` or `down`.
    pub state: String,
    pub down_reason: Option<String>,
    pub down_since: Option<DateTime<Utc>>,
    /// When a down proxy is next checked (its accounts are not leased before).
    pub check_after: Option<DateTime<Utc>>,
    pub failures: i32,
    /// The accounts assigned to it, by name.
    pub accounts: Vec<String>,
}

/// A new proxy, its credentials in clear until [`add`] seals them.
#[derive(Default)]
pub struct NewProxy<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub egress_group: Option<&'a str>,
}

/// A leased account's proxy, its credentials opened: what the worker builds its HTTP clients
/// with.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyRoute {
    pub name: String,
    pub url: ProxyUrl,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for ProxyRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyRoute")
            .field("name", &self.name)
            .field("url", &self.url.to_string())
            .field("username", &self.username.as_ref().map(|_| "********"))
            .field("password", &self.password.as_ref().map(|_| "********"))
            .finish()
    }
}

/// The sealing owner of a proxy's credentials: a sealed value moved to another row does not open.
pub(crate) fn credentials_owner(name: &str) -> String {
    format!("proxy:{name}:credentials")
}

/// Whether `name` may name a proxy: 1 to 64 ASCII letters, digits, `.`, `_` or `-`. Public so
/// that the API refuses a malformed name by the rule [`add`] enforces.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Opens `username:password` sealed for proxy `name`.
pub(crate) fn open_credentials(
    secrets: &SecretBox,
    name: &str,
    sealed: &[u8],
) -> Result<(String, String), CryptoError> {
    let plain = secrets.open(sealed, &credentials_owner(name))?;
    let text = String::from_utf8_lossy(&plain);
    let (user, password) = text.split_once(':').unwrap_or((&text, ""));
    Ok((user.to_owned(), password.to_owned()))
}

macro_rules! proxy_columns {
    () => {
        "p.name, p.url, p.credentials_sealed IS NOT NULL AS has_credentials,
         coalesce(p.egress_group, p.name) AS egress_group, p.state, p.down_reason, p.down_since,
         p.check_after, p.failures,
         coalesce((SELECT array_agg(a.name ORDER BY a.name) FROM accounts a WHERE a.proxy = p.name),
                  '{}') AS accounts"
    };
}

/// Stores a new proxy, its credentials sealed with `secrets`.
pub async fn add(
    pool: &PgPool,
    secrets: &SecretBox,
    new: &NewProxy<'_>,
) -> Result<Proxy, ProxyError> {
    if !valid_name(new.name) {
        return Err(ProxyError::BadName(new.name.chars().take(80).collect()));
    }
    let url: ProxyUrl = new.url.parse()?;
    if let Some(user) = new.username {
        if user.is_empty() || user.len() > 255 {
            return Err(ProxyError::BadUsername("1 to 255 characters"));
        }
        if user.contains(':') || user.chars().any(char::is_control) {
            return Err(ProxyError::BadUsername(
                "no ':' and no control characters (HTTP Basic authentication cannot carry them)",
            ));
        }
    }
    let credentials = match (new.username, new.password) {
        (None, None) => None,
        (user, password) => Some(secrets.seal(
            format!("{}:{}", user.unwrap_or(""), password.unwrap_or("")).as_bytes(),
            &credentials_owner(new.name),
        )?),
    };
    let inserted = sqlx::query(
        "INSERT INTO proxies (name, url, credentials_sealed, egress_group) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(new.name)
    .bind(url.to_string())
    .bind(credentials)
    .bind(new.egress_group)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ProxyError::Exists(new.name.to_owned()));
    }
    get(pool, new.name).await
}

pub async fn get(pool: &PgPool, name: &str) -> Result<Proxy, ProxyError> {
    sqlx::query_as(concat!(
        "SELECT ",
        proxy_columns!(),
        " FROM proxies p WHERE p.name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ProxyError::NotFound(name.chars().take(80).collect()))
}

pub async fn list(pool: &PgPool) -> Result<Vec<Proxy>, ProxyError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        proxy_columns!(),
        " FROM proxies p ORDER BY p.name"
    ))
    .fetch_all(pool)
    .await?)
}

/// Removes a proxy no account uses any more.
pub async fn remove(pool: &PgPool, name: &str) -> Result<(), ProxyError> {
    let users: Vec<String> =
        sqlx::query_scalar("SELECT name FROM accounts WHERE proxy = $1 ORDER BY name LIMIT 6")
            .bind(name)
            .fetch_all(pool)
            .await?;
    if !users.is_empty() {
        return Err(ProxyError::InUse {
            name: name.to_owned(),
            accounts: name_list(&users),
        });
    }
    let done = sqlx::query("DELETE FROM proxies WHERE name = $1")
        .bind(name)
        .execute(pool)
        .await;
    match done {
        Ok(d) if d.rows_affected() == 0 => Err(ProxyError::NotFound(name.to_owned())),
        Ok(_) => Ok(()),
        // An account assigned between the check and the delete.
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Err(ProxyError::InUse {
            name: name.to_owned(),
            accounts: "an account assigned meanwhile".into(),
        }),
        Err(e) => Err(e.into()),
    }
}

fn name_list(names: &[String]) -> String {
    let mut shown = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        shown.push_str(" and others");
    }
    format!("account(s) {shown}")
}

/// Sends `account`'s requests through `proxy` from its next lease on (`None`: straight out). A
/// worker holding the account now keeps the route it opened until it gives the account back.
pub async fn assign(pool: &PgPool, account: &str, proxy: Option<&str>) -> Result<(), ProxyError> {
    if let Some(p) = proxy {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM proxies WHERE name = $1)")
                .bind(p)
                .fetch_one(pool)
                .await?;
        if !exists {
            return Err(ProxyError::NotFound(p.chars().take(80).collect()));
        }
    }
    let done = sqlx::query("UPDATE accounts SET proxy = $2, updated_at = now() WHERE name = $1")
        .bind(account)
        .bind(proxy)
        .execute(pool)
        .await;
    match done {
        Ok(d) if d.rows_affected() == 0 => Err(ProxyError::AccountNotFound(
            account.chars().take(80).collect(),
        )),
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
            Err(ProxyError::NotFound(proxy.unwrap_or_default().to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

/// How long a down proxy rests before it is checked again: `base` doubled per failed check in a
/// row, at most `max`.
pub fn rest_after(failures: i32, base: Duration, max: Duration) -> Duration {
    let doublings = u32::try_from(failures.clamp(0, 16)).unwrap_or(0);
    base.saturating_mul(1 << doublings).min(max)
}

/// Marks `name` down for `reason`; its accounts are not leased until the returned time.
pub async fn mark_down(
    pool: &PgPool,
    name: &str,
    reason: &str,
    base: Duration,
    max: Duration,
) -> Result<DateTime<Utc>, ProxyError> {
    let failures: Option<i32> = sqlx::query_scalar("SELECT failures FROM proxies WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    let Some(failures) = failures else {
        return Err(ProxyError::NotFound(name.to_owned()));
    };
    let rest = rest_after(failures, base, max);
    let until: Option<DateTime<Utc>> = sqlx::query_scalar(
        "UPDATE proxies SET state = 'down', down_reason = $2,
                down_since = coalesce(down_since, now()),
                check_after = greatest(check_after, now() + make_interval(secs => $3)),
                failures = failures + 1, updated_at = now()
         WHERE name = $1 RETURNING check_after",
    )
    .bind(name)
    .bind(reason.chars().take(500).collect::<String>())
    .bind(rest.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    until.ok_or_else(|| ProxyError::NotFound(name.to_owned()))
}

/// Marks `name` up after a check got through; true when it was down.
pub async fn mark_up(pool: &PgPool, name: &str) -> Result<bool, ProxyError> {
    Ok(sqlx::query(
        "UPDATE proxies SET state = 'up', down_reason = NULL, down_since = NULL,
                check_after = NULL, failures = 0, updated_at = now()
         WHERE name = $1 AND state = 'down'",
    )
    .bind(name)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Proxies per state, for the scheduler's gauges.
pub async fn count_by_state(pool: &PgPool) -> Result<Vec<(String, i64)>, ProxyError> {
    Ok(
        sqlx::query_as("SELECT state, count(*) FROM proxies GROUP BY state ORDER BY state")
            .fetch_all(pool)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_refuse_what_they_must() {
        let u: ProxyUrl = "http://proxy.example:3128".parse().expect("http");
        assert_eq!(u.scheme, ProxyScheme::Http);
        assert_eq!(u.to_string(), "http://proxy.example:3128");
        let s: ProxyUrl = "SOCKS5H://[::1]:1080/".parse().expect("socks with v6");
        assert_eq!(s.to_string(), "socks5h://[::1]:1080");
        for (bad, says) in [
            ("http://user:pw@host:1", "credentials"),
            ("http://host", "port"),
            ("http://host:0", "port"),
            ("http://host:99999", "port"),
            ("ftp://host:21", "scheme"),
            ("https://host:443", "TLS"),
            ("host:3128", "scheme://"),
            ("http://host:1/path", "path"),
            ("http://:1", "host"),
        ] {
            let e = bad.parse::<ProxyUrl>().expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn rests_double_up_to_the_cap() {
        let base = Duration::from_secs(30);
        let max = Duration::from_secs(600);
        assert_eq!(rest_after(0, base, max), base);
        assert_eq!(rest_after(2, base, max), Duration::from_secs(120));
        assert_eq!(rest_after(9, base, max), max);
        assert_eq!(rest_after(i32::MAX, base, max), max);
    }

    #[test]
    fn routes_never_print_credentials() {
        let r = ProxyRoute {
            name: "p".into(),
            url: "http://h:1".parse().expect("url"),
            username: Some("alice".into()),
            password: Some("hunter2".into()),
        };
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("alice") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
