//! Accounts (docs/architecture.md): Instagram logins or anonymous identities, their sealed secrets, their
//! state, and the exclusive lease a worker holds on one of them.
//!
//! Like a job lease, an account lease carries a token; a heartbeat, a release or a state change by
//! the holder is refused once the token no longer matches, so a worker that lost its account can
//! never act for the worker that has it now.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::crypto::{CryptoError, SecretBox};
use crate::domain::Platform;
use crate::proxies::{self, ProxyError, ProxyRoute};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "account_state", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    Available,
    Leased,
    Cooldown,
    /// Instagram wants a human (checkpoint_required, repeated 401s): out of rotation.
    Checkpoint,
    Disabled,
    /// Shown, never stored: the account would be available, but its proxy is down (a worker could
    /// not get through it); it is leased again once the proxy's rest ends and a check passes.
    ProxyDown,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("account {0:?} already exists")]
    Exists(String),
    #[error("account {0:?} does not exist")]
    NotFound(String),
    #[error("account name {0:?} is not valid: 1 to 64 letters, digits, '.', '_' or '-'")]
    BadName(String),
    #[error("account {0:?} needs a password or a session, or must be anonymous")]
    NoSecret(String),
    #[error(
        "account {0:?} is a v1 account: it logs in with a username and password, so it needs a \
         password and cannot be anonymous"
    )]
    V1NeedsPassword(String),
    #[error("proxy {0:?} does not exist; add it first with `trawl proxies add`")]
    NoSuchProxy(String),
    #[error("the lease on account {0:?} is no longer held")]
    LeaseLost(String),
    #[error("the stored proxy {0:?} is not usable: {1}")]
    BadProxy(String, String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A sealed value the configured key cannot open (a wrong or rotated `secrets.key`).
    #[error(
        "cannot open the secrets of account {0:?} with the configured secrets.key ({1}); nothing \
         was changed"
    )]
    Rotate(String, CryptoError),
    /// As [`AccountError::Rotate`], for a proxy's sealed credentials.
    #[error(
        "cannot open the credentials of proxy {0:?} with the configured secrets.key ({1}); \
         nothing was changed"
    )]
    RotateProxy(String, CryptoError),
}

/// What `trawl accounts list` shows: never a secret, only whether one is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Account {
    pub name: String,
    /// Whose API the account logs in to.
    #[sqlx(try_from = "String")]
    pub platform: Platform,
    pub anonymous: bool,
    pub egress_group: Option<String>,
    pub state: AccountState,
    pub cooldown_until: Option<DateTime<Utc>>,
    pub error_score: i32,
    pub last_error: Option<String>,
    pub has_password: bool,
    pub has_session: bool,
    pub session_updated_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The proxy its requests leave through (`None`: straight from the worker's machine).
    pub proxy: Option<String>,
    /// Why its proxy is down, while it is.
    pub proxy_down_reason: Option<String>,
}

/// A new account's secrets, in clear until [`Accounts::add`] seals them.
#[derive(Default)]
pub struct NewAccount<'a> {
    pub name: &'a str,
    pub password: Option<&'a str>,
    /// Cookies as `name=value` pairs joined by `; ` (what a session file holds).
    pub session: Option<&'a str>,
    pub anonymous: bool,
    pub egress_group: Option<&'a str>,
    /// The name of a proxy stored with `proxies::add`.
    pub proxy: Option<&'a str>,
    pub platform: Platform,
}

/// An account held by a worker, with its secrets opened.
pub struct LeasedAccount {
    pub name: String,
    pub platform: Platform,
    pub token: Uuid,
    pub anonymous: bool,
    /// The account's own group, else its proxy's (whose default is the proxy's name).
    pub egress_group: Option<String>,
    pub password: Option<String>,
    pub session: Option<String>,
    /// Every request of the account goes through it, when set.
    pub proxy: Option<ProxyRoute>,
}

impl std::fmt::Debug for LeasedAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedAccount")
            .field("name", &self.name)
            .field("platform", &self.platform)
            .field("anonymous", &self.anonymous)
            .field("egress_group", &self.egress_group)
            .field("password", &self.password.as_ref().map(|_| "********"))
            .field("session", &self.session.as_ref().map(|_| "********"))
            .field("proxy", &self.proxy)
            .finish()
    }
}

/// What a lease reads back: the sealed secrets are opened before they leave this module.
#[derive(sqlx::FromRow)]
struct LeaseRow {
    name: String,
    #[sqlx(try_from = "String")]
    platform: Platform,
    lease_token: Uuid,
    anonymous: bool,
    egress_group: Option<String>,
    password_sealed: Option<Vec<u8>>,
    session_sealed: Option<Vec<u8>>,
    proxy: Option<String>,
    proxy_url: Option<String>,
    proxy_credentials: Option<Vec<u8>>,
}

/// The account's state as shown: `proxy_down` stands in for `available` and `cooldown` while
/// its proxy is down, because that, not the account, is what keeps it out of rotation.
macro_rules! account_columns {
    () => {
        "name, platform, anonymous, egress_group,
         CASE WHEN state IN ('available', 'cooldown') AND EXISTS (
                  SELECT 1 FROM proxies p WHERE p.name = accounts.proxy AND p.state = 'down')
              THEN 'proxy_down'::account_state ELSE state END AS state,
         cooldown_until, error_score, last_error,
         password_sealed IS NOT NULL AS has_password, session_sealed IS NOT NULL AS has_session,
         session_updated_at, lease_owner, lease_expires_at, proxy,
         (SELECT p.down_reason FROM proxies p WHERE p.name = accounts.proxy) AS proxy_down_reason"
    };
}

fn owner(name: &str, what: &str) -> String {
    format!("account:{name}:{what}")
}

/// Whether `name` may name an account: 1 to 64 ASCII letters, digits, `.`, `_` or `-`. Public so
/// that the API refuses a name in its paths by the rule [`Accounts::add`] enforces.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl AccountState {
    pub const ALL: [AccountState; 6] = [
        AccountState::Available,
        AccountState::Leased,
        AccountState::Cooldown,
        AccountState::Checkpoint,
        AccountState::Disabled,
        AccountState::ProxyDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Available => "available",
            AccountState::Leased => "leased",
            AccountState::Cooldown => "cooldown",
            AccountState::Checkpoint => "checkpoint",
            AccountState::Disabled => "disabled",
            AccountState::ProxyDown => "proxy_down",
        }
    }
}

/// Accounts per state (a lease whose holder stopped heartbeating still counts as `leased` until
/// another worker takes it; a cooldown that ended counts as `available`, because any worker may
/// take it now; an account that would be available or resting but whose proxy is down counts as
/// `proxy_down`). Needs no key: nothing secret is read.
pub async fn count_by_state(pool: &PgPool) -> Result<Vec<(AccountState, i64)>, AccountError> {
    Ok(sqlx::query_as(
        "SELECT CASE WHEN state IN ('available', 'cooldown') AND EXISTS (
                         SELECT 1 FROM proxies p WHERE p.name = accounts.proxy AND p.state = 'down')
                     THEN 'proxy_down'::account_state
                     WHEN state = 'cooldown' AND cooldown_until <= now()
                     THEN 'available'::account_state ELSE state END AS shown,
                count(*)
         FROM accounts GROUP BY shown ORDER BY shown",
    )
    .fetch_all(pool)
    .await?)
}

/// Every account, by name. Needs no key: nothing secret is read, so a process that may not hold
/// `secrets.key` (the scheduler's API) can list too.
pub async fn list(pool: &PgPool) -> Result<Vec<Account>, AccountError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts ORDER BY name"
    ))
    .fetch_all(pool)
    .await?)
}

/// One account, as [`list`] shows it. Needs no key.
pub async fn get(pool: &PgPool, name: &str) -> Result<Account, AccountError> {
    sqlx::query_as(concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| AccountError::NotFound(name.chars().take(80).collect()))
}

pub struct Accounts {
    pool: PgPool,
    secrets: SecretBox,
}

impl Accounts {
    pub fn new(pool: PgPool, secrets: SecretBox) -> Self {
        Self { pool, secrets }
    }

    pub async fn add(&self, new: &NewAccount<'_>) -> Result<Account, AccountError> {
        if !valid_name(new.name) {
            return Err(AccountError::BadName(new.name.chars().take(80).collect()));
        }
        if !new.anonymous && new.password.is_none() && new.session.is_none() {
            return Err(AccountError::NoSecret(new.name.to_owned()));
        }
        if new.platform == Platform::V1 && (new.anonymous || new.password.is_none()) {
            return Err(AccountError::V1NeedsPassword(new.name.to_owned()));
        }
        let password = new
            .password
            .map(|p| {
                self.secrets
                    .seal(p.as_bytes(), &owner(new.name, "password"))
            })
            .transpose()?;
        let session = new
            .session
            .map(|s| self.secrets.seal(s.as_bytes(), &owner(new.name, "session")))
            .transpose()?;
        let row = sqlx::query_as(concat!(
            "INSERT INTO accounts (name, anonymous, egress_group, password_sealed, session_sealed,
                                   session_updated_at, proxy, platform)
             VALUES ($1, $2, $3, $4, $5, CASE WHEN $5::bytea IS NULL THEN NULL ELSE now() END, $6,
                     $7)
             ON CONFLICT (name) DO NOTHING
             RETURNING ",
            account_columns!()
        ))
        .bind(new.name)
        .bind(new.anonymous)
        .bind(new.egress_group)
        .bind(password)
        .bind(session)
        .bind(new.proxy)
        .bind(new.platform.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                AccountError::NoSuchProxy(new.proxy.unwrap_or_default().to_owned())
            }
            other => other.into(),
        })?;
        row.ok_or_else(|| AccountError::Exists(new.name.to_owned()))
    }

    pub async fn list(&self) -> Result<Vec<Account>, AccountError> {
        list(&self.pool).await
    }

    /// Disables, enables (back to available, clearing a checkpoint) or removes an account.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<Account, AccountError> {
        let row = sqlx::query_as(concat!(
            "UPDATE accounts SET state = $2, cooldown_until = NULL, lease_owner = NULL,
                    lease_token = NULL, lease_expires_at = NULL, updated_at = now(),
                    error_score = CASE WHEN $2 = 'available'::account_state THEN 0 ELSE error_score END
             WHERE name = $1 RETURNING ",
            account_columns!()
        ))
        .bind(name)
        .bind(if enabled {
            AccountState::Available
        } else {
            AccountState::Disabled
        })
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| AccountError::NotFound(name.to_owned()))
    }

    /// Replaces an account's session with `cookies` (`name=value; ...`), sealed, for an operator
    /// who logged in elsewhere (`trawl accounts import-session`). An anonymous account given a
    /// session becomes a logged-in one. State and lease are untouched: a worker holding the
    /// account keeps the session it opened until its next lease.
    pub async fn replace_session(
        &self,
        name: &str,
        cookies: &str,
    ) -> Result<Account, AccountError> {
        if !valid_name(name) {
            return Err(AccountError::BadName(name.chars().take(80).collect()));
        }
        let sealed = self
            .secrets
            .seal(cookies.as_bytes(), &owner(name, "session"))?;
        let row = sqlx::query_as(concat!(
            "UPDATE accounts SET session_sealed = $2, session_updated_at = now(), anonymous = false,
                    updated_at = now()
             WHERE name = $1 RETURNING ",
            account_columns!()
        ))
        .bind(name)
        .bind(sealed)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| AccountError::NotFound(name.to_owned()))
    }

    /// The account's password, opened (`None`: none is stored), for a process that does not
    /// lease the account but acts as it (a v1 account's realtime stream).
    pub async fn password(&self, name: &str) -> Result<Option<String>, AccountError> {
        let sealed: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT password_sealed FROM accounts WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        let Some(sealed) = sealed else {
            return Err(AccountError::NotFound(name.chars().take(80).collect()));
        };
        sealed
            .map(|s| {
                self.secrets
                    .open(&s, &owner(name, "password"))
                    .map(|p| String::from_utf8_lossy(&p).into_owned())
                    .map_err(|e| AccountError::Rotate(name.to_owned(), e))
            })
            .transpose()
    }

    pub async fn remove(&self, name: &str) -> Result<(), AccountError> {
        let done = sqlx::query("DELETE FROM accounts WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(AccountError::NotFound(name.to_owned()));
        }
        Ok(())
    }

    /// Leases one usable account for `owner` (an available one, one whose cooldown ended, or one
    /// whose holder stopped heartbeating), fewest errors first. `None`: all are taken.
    pub async fn lease(
        &self,
        owner_name: &str,
        ttl: Duration,
    ) -> Result<Option<LeasedAccount>, AccountError> {
        self.lease_excluding(owner_name, ttl, &[]).await
    }

    /// [`Accounts::lease`], skipping the accounts named in `exclude` (those this worker's key
    /// could not open, so one unreadable account does not hide the others).
    #[tracing::instrument(level = "debug", skip(self, ttl, exclude),
        fields(account = tracing::field::Empty), err(level = "warn"))]
    pub async fn lease_excluding(
        &self,
        owner_name: &str,
        ttl: Duration,
        exclude: &[String],
    ) -> Result<Option<LeasedAccount>, AccountError> {
        // An account behind a resting proxy is skipped; once the rest ends it may be leased,
        // and its worker checks the proxy before anything else.
        let row: Option<LeaseRow> = sqlx::query_as(
            "WITH leased AS (
                 UPDATE accounts SET state = 'leased', lease_owner = $1,
                        lease_token = gen_random_uuid(),
                        lease_expires_at = now() + make_interval(secs => $2),
                        cooldown_until = NULL, updated_at = now()
                 WHERE name = (
                     SELECT name FROM accounts a
                     WHERE (state = 'available'
                        OR (state = 'cooldown' AND cooldown_until <= now())
                        OR (state = 'leased' AND lease_expires_at < now()))
                       AND name <> ALL($3)
                       AND NOT EXISTS (SELECT 1 FROM proxies p
                                        WHERE p.name = a.proxy AND p.state = 'down'
                                          AND p.check_after > now())
                     ORDER BY error_score, name
                     LIMIT 1
                     FOR UPDATE SKIP LOCKED)
                 RETURNING name, platform, lease_token, anonymous, egress_group,
                           password_sealed, session_sealed, proxy)
             SELECT l.name, l.platform, l.lease_token, l.anonymous,
                    coalesce(l.egress_group, p.egress_group, p.name) AS egress_group,
                    l.password_sealed, l.session_sealed, l.proxy, p.url AS proxy_url,
                    p.credentials_sealed AS proxy_credentials
               FROM leased l LEFT JOIN proxies p ON p.name = l.proxy",
        )
        .bind(owner_name)
        .bind(ttl.as_secs_f64())
        .bind(exclude)
        .fetch_optional(&self.pool)
        .await?;
        let Some(LeaseRow {
            name,
            platform,
            lease_token: token,
            anonymous,
            egress_group,
            password_sealed: password,
            session_sealed: session,
            proxy,
            proxy_url,
            proxy_credentials,
        }) = row
        else {
            return Ok(None);
        };
        tracing::Span::current().record("account", name.as_str());
        let open = |sealed: Option<Vec<u8>>, what: &str| -> Result<Option<String>, AccountError> {
            sealed
                .map(|s| {
                    self.secrets
                        .open(&s, &owner(&name, what))
                        .map(|p| String::from_utf8_lossy(&p).into_owned())
                })
                .transpose()
                .map_err(AccountError::from)
        };
        let opened = open(password, "password")
            .and_then(|p| Ok((p, open(session, "session")?)))
            .and_then(|(p, s)| {
                let route = match (proxy, proxy_url) {
                    (Some(name), Some(url)) => {
                        Some(self.open_route(name, &url, proxy_credentials)?)
                    }
                    _ => None,
                };
                Ok((p, s, route))
            });
        let (password, session, proxy) = match opened {
            Ok(secrets) => secrets,
            Err(e) => {
                // A wrong key: give the account straight back rather than hold it until the
                // lease expires, and say which account could not be opened.
                sqlx::query(
                    "UPDATE accounts SET state = 'available', lease_owner = NULL, lease_token = NULL,
                            lease_expires_at = NULL, updated_at = now()
                     WHERE name = $1 AND lease_token = $2",
                )
                .bind(&name)
                .bind(token)
                .execute(&self.pool)
                .await?;
                return Err(match e {
                    AccountError::Crypto(c) => AccountError::Rotate(name, c),
                    other => other,
                });
            }
        };
        Ok(Some(LeasedAccount {
            password,
            session,
            proxy,
            name,
            platform,
            token,
            anonymous,
            egress_group,
        }))
    }

    /// A proxy's route with its credentials opened.
    fn open_route(
        &self,
        name: String,
        url: &str,
        sealed: Option<Vec<u8>>,
    ) -> Result<ProxyRoute, AccountError> {
        let url = url
            .parse()
            .map_err(|e: ProxyError| AccountError::BadProxy(name.clone(), e.to_string()))?;
        let (username, password) = match sealed {
            Some(s) => {
                let (u, p) = proxies::open_credentials(&self.secrets, &name, &s)?;
                (Some(u), Some(p))
            }
            None => (None, None),
        };
        Ok(ProxyRoute {
            name,
            url,
            username,
            password,
        })
    }

    /// Runs a write that must touch exactly the held account, or reports the lease lost.
    async fn fenced(
        &self,
        account: &LeasedAccount,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<(), AccountError> {
        if query.execute(&self.pool).await?.rows_affected() == 1 {
            Ok(())
        } else {
            Err(AccountError::LeaseLost(account.name.clone()))
        }
    }

    pub async fn heartbeat(
        &self,
        account: &LeasedAccount,
        ttl: Duration,
    ) -> Result<(), AccountError> {
        let q = sqlx::query(
            "UPDATE accounts SET lease_expires_at = now() + make_interval(secs => $3),
                    updated_at = now()
             WHERE name = $1 AND lease_token = $2",
        )
        .bind(&account.name)
        .bind(account.token)
        .bind(ttl.as_secs_f64());
        self.fenced(account, q).await
    }

    /// Gives the account back (a worker shutting down).
    pub async fn release(&self, account: &LeasedAccount) -> Result<(), AccountError> {
        let q = sqlx::query(
            "UPDATE accounts SET state = 'available', lease_owner = NULL, lease_token = NULL,
                    lease_expires_at = NULL, updated_at = now()
             WHERE name = $1 AND lease_token = $2",
        )
        .bind(&account.name)
        .bind(account.token);
        self.fenced(account, q).await
    }

    /// Takes the account out of rotation until a person acts (checkpoint_required).
    pub async fn checkpoint(
        &self,
        account: &LeasedAccount,
        reason: &str,
    ) -> Result<(), AccountError> {
        let q = sqlx::query(
            "UPDATE accounts SET state = 'checkpoint', last_error = $3, error_score = error_score + 1,
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
             WHERE name = $1 AND lease_token = $2",
        )
        .bind(&account.name)
        .bind(account.token)
        .bind(reason.chars().take(500).collect::<String>());
        self.fenced(account, q).await
    }

    /// Rests the account for `rest` (state `cooldown`) and gives it back: Instagram is pushing
    /// back on it (`feedback_required`, repeated 429s), and more requests now would only deepen
    /// the block. No person needs to act: [`Accounts::lease`] takes it again once the rest ends
    /// (database clock), and another account carries on meanwhile.
    pub async fn cool_down(
        &self,
        account: &LeasedAccount,
        rest: Duration,
        reason: &str,
    ) -> Result<(), AccountError> {
        let q = sqlx::query(
            "UPDATE accounts SET state = 'cooldown',
                    cooldown_until = now() + make_interval(secs => $3), last_error = $4,
                    error_score = error_score + 1, lease_owner = NULL, lease_token = NULL,
                    lease_expires_at = NULL, updated_at = now()
             WHERE name = $1 AND lease_token = $2",
        )
        .bind(&account.name)
        .bind(account.token)
        .bind(rest.as_secs_f64())
        .bind(reason.chars().take(500).collect::<String>());
        self.fenced(account, q).await
    }

    /// Re-seals every password and session under `new` (this handle's key is the old one), in
    /// one transaction: a value the old key cannot open aborts it all and changes nothing.
    /// Returns how many accounts were re-sealed.
    pub async fn rotate_key(&self, new: &SecretBox) -> Result<u64, AccountError> {
        let mut tx = self.pool.begin().await?;
        type Sealed = (String, Option<Vec<u8>>, Option<Vec<u8>>);
        let rows: Vec<Sealed> = sqlx::query_as(
            "SELECT name, password_sealed, session_sealed FROM accounts ORDER BY name FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await?;
        let reseal = |name: &str, what: &str, sealed: Option<Vec<u8>>| {
            sealed
                .map(|s| {
                    let who = owner(name, what);
                    let plain = self
                        .secrets
                        .open(&s, &who)
                        .map_err(|e| AccountError::Rotate(name.to_owned(), e))?;
                    new.seal(&plain, &who).map_err(AccountError::from)
                })
                .transpose()
        };
        let mut count = 0;
        for (name, password, session) in rows {
            let password = reseal(&name, "password", password)?;
            let session = reseal(&name, "session", session)?;
            sqlx::query(
                "UPDATE accounts SET password_sealed = $2, session_sealed = $3, updated_at = now()
                 WHERE name = $1",
            )
            .bind(&name)
            .bind(password)
            .bind(session)
            .execute(&mut *tx)
            .await?;
            count += 1;
        }
        let sealed_proxies: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT name, credentials_sealed FROM proxies WHERE credentials_sealed IS NOT NULL
             ORDER BY name FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await?;
        for (name, sealed) in sealed_proxies {
            let who = proxies::credentials_owner(&name);
            let plain = self
                .secrets
                .open(&sealed, &who)
                .map_err(|e| AccountError::RotateProxy(name.clone(), e))?;
            sqlx::query(
                "UPDATE proxies SET credentials_sealed = $2, updated_at = now() WHERE name = $1",
            )
            .bind(&name)
            .bind(new.seal(&plain, &who)?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(count)
    }

    /// Stores a refreshed session (after a login), sealed.
    pub async fn store_session(
        &self,
        account: &LeasedAccount,
        cookies: &str,
    ) -> Result<(), AccountError> {
        let sealed = self
            .secrets
            .seal(cookies.as_bytes(), &owner(&account.name, "session"))?;
        let q = sqlx::query(
            "UPDATE accounts SET session_sealed = $3, session_updated_at = now(), updated_at = now()
             WHERE name = $1 AND lease_token = $2",
        )
        .bind(&account.name)
        .bind(account.token)
        .bind(sealed);
        self.fenced(account, q).await
    }
}
