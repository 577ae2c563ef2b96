//! `trawl accounts …`: Instagram accounts and their sealed secrets.
//!
//! These verbs talk to PostgreSQL directly rather than through the scheduler API, so a password or
//! session cookie travels only from this process to the database, already sealed, and never through
//! an HTTP body, a proxy or a request log.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Read};
use std::path::Path;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use trawl_shared::accounts::{Account, AccountError, AccountState, Accounts, NewAccount};
use trawl_shared::config::Config;
use trawl_shared::crypto::{INSECURE_DEV_KEY, SecretBox};
use trawl_shared::db;
use trawl_worker::session_file;

use crate::cli::{AccountsCommand, ProxiesCommand};
use crate::client::CliError;
use trawl_shared::proxies::{self, NewProxy, Proxy, ProxyError, ProxyUrl};

/// Longest egress group name the schema accepts.
const MAX_EGRESS_LEN: usize = 64;

pub async fn run(config: &Config, command: AccountsCommand) -> Result<(), CliError> {
    match command {
        AccountsCommand::NewKey => new_key(),
        AccountsCommand::RotateKey => {
            let current = sealing_key(config, false)?;
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|source| CliError::CannotRead {
                    what: "the new key from stdin".into(),
                    source,
                })?;
            let new = SecretBox::from_hex(line.trim())
                .map_err(|e| CliError::Invalid(format!("the new key (stdin): {e}")))?;
            let (pool, accounts) = open(config, current).await?;
            let rotated = accounts.rotate_key(&new).await.map_err(|e| match e {
                AccountError::Rotate(..) | AccountError::RotateProxy(..) => {
                    CliError::Config(e.to_string())
                }
                other => account_error(other),
            });
            pool.close().await;
            let n = rotated?;
            println!(
                "re-encrypted the secrets of {n} account(s); set secrets.key (TRAWL_SECRETS__KEY) \
                 to the new key before starting workers"
            );
            Ok(())
        }
        AccountsCommand::Add {
            name,
            password_stdin,
            session_file,
            anonymous,
            egress,
            proxy,
            platform,
            insecure_dev_key,
        } => {
            check_egress(egress.as_deref())?;
            // The key comes first, so nobody types a password only to learn it cannot be stored.
            // An anonymous account has nothing to seal and needs no key.
            let secrets = if anonymous {
                unused_key(config)?
            } else {
                sealing_key(config, insecure_dev_key)?
            };
            let password = password_stdin.then(|| read_password(&name)).transpose()?;
            let session = session_file.as_deref().map(read_session_file).transpose()?;
            let (pool, accounts) = open(config, secrets).await?;
            let added = accounts
                .add(&NewAccount {
                    name: &name,
                    password: password.as_deref(),
                    session: session.as_deref(),
                    anonymous,
                    egress_group: egress.as_deref(),
                    proxy: proxy.as_deref(),
                    platform,
                })
                .await
                .map_err(|e| match e {
                    AccountError::Exists(_) => CliError::Conflict(format!(
                        "{e}; `trawl accounts import-session {name} --session-file FILE` replaces \
                         its session, `trawl accounts remove {name}` deletes it"
                    )),
                    other => account_error(other),
                });
            pool.close().await;
            let added = added?;
            let mut egress = added
                .egress_group
                .as_deref()
                .map(|g| format!(", egress group {g}"))
                .unwrap_or_default();
            if let Some(p) = &added.proxy {
                egress.push_str(&format!(", through proxy {p}"));
            }
            if added.platform != trawl_shared::Platform::Instagram {
                egress.push_str(&format!(", platform {}", added.platform));
            }
            println!(
                "added account {} ({}{egress})",
                added.name,
                secrets_stored(&added)
            );
            Ok(())
        }
        AccountsCommand::List { json } => {
            let (pool, accounts) = open(config, unused_key(config)?).await?;
            let listed = accounts.list().await.map_err(account_error);
            pool.close().await;
            let listed = listed?;
            if json {
                let text = serde_json::to_string_pretty(&listed)
                    .map_err(|e| CliError::failed("cannot print the accounts", e))?;
                println!("{text}");
            } else if listed.is_empty() {
                println!("no accounts; add one with `trawl accounts add NAME --session-file FILE`");
            } else {
                print!("{}", render_table(&listed, Utc::now()));
            }
            Ok(())
        }
        AccountsCommand::SetProxy { name, proxy, none } => {
            let proxy = if none { None } else { proxy };
            let pool = connect(config).await?;
            let done = proxies::assign(&pool, &name, proxy.as_deref()).await;
            pool.close().await;
            done.map_err(proxy_error)?;
            match proxy {
                Some(p) => println!(
                    "account {name} goes through proxy {p} from its next lease (a worker holding                      it now keeps its route until it gives it back)"
                ),
                None => println!("account {name} goes straight out from its next lease"),
            }
            Ok(())
        }
        AccountsCommand::Disable { name } => {
            let account = set_enabled(config, &name, false).await?;
            println!(
                "disabled account {}: out of rotation until `trawl accounts enable {}`",
                account.name, account.name
            );
            Ok(())
        }
        AccountsCommand::Enable { name } => {
            let account = set_enabled(config, &name, true).await?;
            println!(
                "enabled account {}: available, with its checkpoint, cooldown and error score cleared",
                account.name
            );
            Ok(())
        }
        AccountsCommand::Remove { name } => {
            let (pool, accounts) = open(config, unused_key(config)?).await?;
            let removed = accounts.remove(&name).await.map_err(account_error);
            pool.close().await;
            removed?;
            println!("removed account {name} and its secrets");
            Ok(())
        }
        AccountsCommand::ImportSession {
            name,
            session_file,
            insecure_dev_key,
        } => {
            let secrets = sealing_key(config, insecure_dev_key)?;
            let session = read_session_file(&session_file)?;
            let (pool, accounts) = open(config, secrets).await?;
            // Only an existing account: creating one here would turn a typo into a stray account
            // with no egress group. `add --session-file` is the way to create one.
            let replaced = accounts
                .replace_session(&name, &session)
                .await
                .map_err(|e| match e {
                    AccountError::NotFound(_) => CliError::NotFound(format!(
                        "{e}; `trawl accounts add {name} --session-file {}` creates it",
                        session_file.display()
                    )),
                    other => account_error(other),
                });
            pool.close().await;
            let account = replaced?;
            let hint = match account.state {
                AccountState::Checkpoint | AccountState::Disabled => format!(
                    "; it is {}: `trawl accounts enable {name}` puts it back into rotation",
                    state_name(account.state)
                ),
                AccountState::Leased => {
                    "; the worker holding it uses the new session from its next lease".to_owned()
                }
                _ => String::new(),
            };
            println!("replaced the session of account {name}{hint}");
            Ok(())
        }
    }
}

/// Control characters: `trawl limits --egress` and the API refuse such a name, so the group's
/// usage could never be shown.
fn check_egress(group: Option<&str>) -> Result<(), CliError> {
    if let Some(group) = group
        && (!(1..=MAX_EGRESS_LEN).contains(&group.chars().count())
            || group.chars().any(char::is_control))
    {
        return Err(CliError::BadFlag {
            flag: "--egress",
            reason: format!("must be 1 to {MAX_EGRESS_LEN} printable characters"),
        });
    }
    Ok(())
}

/// `trawl proxies …`.
pub async fn proxies(config: &Config, command: ProxiesCommand) -> Result<(), CliError> {
    match command {
        ProxiesCommand::Add {
            name,
            proxy_url,
            username,
            password_stdin,
            egress,
            insecure_dev_key,
        } => {
            check_egress(egress.as_deref())?;
            // Parsed before anything is read or opened, so a typo costs no password prompt.
            proxy_url
                .parse::<ProxyUrl>()
                .map_err(|e| CliError::BadFlag {
                    flag: "PROXY_URL",
                    reason: e.to_string(),
                })?;
            let secrets = if username.is_some() {
                sealing_key(config, insecure_dev_key)?
            } else {
                unused_key(config)?
            };
            let password = password_stdin
                .then(|| read_password(&format!("proxy {name}")))
                .transpose()?;
            let pool = connect(config).await?;
            let added = proxies::add(
                &pool,
                &secrets,
                &NewProxy {
                    name: &name,
                    url: &proxy_url,
                    username: username.as_deref(),
                    password: password.as_deref(),
                    egress_group: egress.as_deref(),
                },
            )
            .await;
            pool.close().await;
            let added = added.map_err(proxy_error)?;
            println!(
                "added proxy {} ({}{}, egress group {}); route accounts through it with                  `trawl accounts set-proxy ACCOUNT {}`",
                added.name,
                added.url,
                if added.has_credentials {
                    ", credentials sealed"
                } else {
                    ""
                },
                added.egress_group,
                added.name
            );
            Ok(())
        }
        ProxiesCommand::List { json } => {
            let pool = connect(config).await?;
            let listed = proxies::list(&pool).await;
            pool.close().await;
            let listed = listed.map_err(proxy_error)?;
            if json {
                let text = serde_json::to_string_pretty(&listed)
                    .map_err(|e| CliError::failed("cannot print the proxies", e))?;
                println!("{text}");
            } else if listed.is_empty() {
                println!("no proxies; add one with `trawl proxies add NAME http://HOST:PORT`");
            } else {
                print!("{}", render_proxies(&listed, Utc::now()));
            }
            Ok(())
        }
        ProxiesCommand::Remove { name } => {
            let pool = connect(config).await?;
            let removed = proxies::remove(&pool, &name).await;
            pool.close().await;
            removed.map_err(proxy_error)?;
            println!("removed proxy {name} and its credentials");
            Ok(())
        }
    }
}

fn proxy_error(e: ProxyError) -> CliError {
    match e {
        ProxyError::NotFound(_) | ProxyError::AccountNotFound(_) => {
            CliError::NotFound(e.to_string())
        }
        ProxyError::Exists(_) | ProxyError::InUse { .. } => CliError::Conflict(e.to_string()),
        ProxyError::BadName(_) | ProxyError::BadUrl { .. } | ProxyError::BadUsername(_) => {
            CliError::Invalid(e.to_string())
        }
        ProxyError::Database(e) => CliError::Database(e),
        other => CliError::failed("proxies", other),
    }
}

fn render_proxies(listed: &[Proxy], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|p| {
            let state = match (&p.down_reason, p.check_after) {
                (Some(reason), Some(at)) if at > now => {
                    format!("down, checked again in {}: {reason}", span(at - now))
                }
                (Some(reason), _) => format!("down, checked at the next lease: {reason}"),
                (None, _) => "up".to_owned(),
            };
            vec![
                p.name.clone(),
                p.url.clone(),
                if p.has_credentials { "yes" } else { "no" }.to_owned(),
                p.egress_group.clone(),
                if p.accounts.is_empty() {
                    "-".to_owned()
                } else {
                    p.accounts.join(",")
                },
                state.replace(['\n', '\r'], " "),
            ]
        })
        .collect();
    table(
        &["NAME", "URL", "CREDENTIALS", "EGRESS", "ACCOUNTS", "STATE"],
        &rows,
    )
}

async fn connect(config: &Config) -> Result<PgPool, CliError> {
    Ok(open(config, unused_key(config)?).await?.0)
}

fn new_key() -> Result<(), CliError> {
    let key = SecretBox::generate_hex().map_err(|e| CliError::failed("cannot make a key", e))?;
    // The key alone on stdout, so `$(trawl accounts new-key)` captures exactly the key.
    println!("{key}");
    eprintln!(
        "Give the same key to every worker and to `trawl accounts`, in the environment:\n  \
         TRAWL_SECRETS__KEY={key}\nor in trawl.toml:\n  [secrets]\n  key = \"{key}\"\n\
         Keep it safe: secrets sealed with a lost key cannot be recovered."
    );
    Ok(())
}

/// The key for verbs that seal secrets: configured, or the development key on request.
fn sealing_key(config: &Config, insecure_dev_key: bool) -> Result<SecretBox, CliError> {
    SecretBox::from_config(config.secrets.key.as_ref(), insecure_dev_key)
        .map_err(|e| CliError::Config(e.to_string()))
}

/// A key for verbs that never seal or open a secret (`Accounts` wants one all the same), so they
/// work on a machine that is not trusted with the real key.
fn unused_key(config: &Config) -> Result<SecretBox, CliError> {
    if let Some(key) = &config.secrets.key
        && let Ok(secrets) = SecretBox::from_hex(key.expose())
    {
        return Ok(secrets);
    }
    SecretBox::from_hex(INSECURE_DEV_KEY)
        .map_err(|e| CliError::failed("the development key does not load", e))
}

async fn open(config: &Config, secrets: SecretBox) -> Result<(PgPool, Accounts), CliError> {
    let pool = db::connect(&config.database).await?;
    if let Err(e) = db::check_schema(&pool).await {
        pool.close().await;
        return Err(e.into());
    }
    Ok((pool.clone(), Accounts::new(pool, secrets)))
}

async fn set_enabled(config: &Config, name: &str, enabled: bool) -> Result<Account, CliError> {
    let (pool, accounts) = open(config, unused_key(config)?).await?;
    let result = accounts
        .set_enabled(name, enabled)
        .await
        .map_err(account_error);
    pool.close().await;
    result
}

fn account_error(e: AccountError) -> CliError {
    match e {
        AccountError::NotFound(_) => CliError::NotFound(e.to_string()),
        AccountError::Exists(_) => CliError::Conflict(e.to_string()),
        AccountError::BadName(_) | AccountError::NoSecret(_) | AccountError::V1NeedsPassword(_) => {
            CliError::Invalid(e.to_string())
        }
        AccountError::Database(e) => CliError::Database(e),
        other => CliError::failed("accounts", other),
    }
}

/// The first line of standard input, without its line ending. Spaces are kept: they may be part
/// of the password.
fn read_password(name: &str) -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password for {name}: ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::BadFlag {
            flag: "--password-stdin",
            reason: format!("cannot read the password from standard input: {e}"),
        })?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(CliError::BadFlag {
            flag: "--password-stdin",
            reason: "the first line of standard input is empty; an account needs a non-empty \
                     password (or use --session-file or --anonymous)"
                .into(),
        });
    }
    Ok(password.to_owned())
}

/// Reads an Instaloader session file into the stored form of a session. Every error names the
/// file and never shows a cookie's value.
fn read_session_file(path: &Path) -> Result<String, CliError> {
    let shown = path.display();
    let refuse = |problem: String| CliError::Invalid(format!("session file {shown}: {problem}"));
    let file = std::fs::File::open(path).map_err(|e| refuse(format!("cannot open it: {e}")))?;
    if let Ok(meta) = file.metadata()
        && meta.len() > session_file::MAX_FILE_BYTES as u64
    {
        return Err(refuse(format!(
            "it is {} bytes; at most {} are accepted",
            meta.len(),
            session_file::MAX_FILE_BYTES
        )));
    }
    // Bounded even when the size was unknown (a pipe): one byte over is enough for the parser to
    // refuse it.
    let mut bytes = Vec::new();
    file.take(session_file::MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(format!("cannot read it: {e}")))?;
    let cookies = session_file::parse_session(&bytes).map_err(|e| refuse(e.to_string()))?;
    cookie_string(&cookies).map_err(refuse)
}

/// `name=value; name2=value2`, the form sessions are stored in (a Cookie header's).
fn cookie_string(cookies: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    for (name, value) in cookies {
        // The stored form is split at `; ` and at a pair's first `=`; a cookie holding either
        // would come back as different cookies, so it is refused rather than stored wrong.
        let bad_name = name.is_empty()
            || name.contains(['=', ';'])
            || name.chars().any(|c| c.is_whitespace() || c.is_control());
        if bad_name {
            return Err(format!(
                "cookie name {name:?} cannot be stored: it is empty or holds '=', ';', a space or \
                 a control character"
            ));
        }
        if value.contains(';') || value.chars().any(char::is_control) {
            return Err(format!(
                "the value of cookie {name:?} holds ';' or a control character, which a Cookie \
                 header cannot carry"
            ));
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    Ok(out)
}

fn secrets_stored(account: &Account) -> &'static str {
    match (account.anonymous, account.has_password, account.has_session) {
        (_, true, true) => "password and session",
        (_, true, false) => "password",
        (_, false, true) => "session",
        (true, false, false) => "anonymous",
        (false, false, false) => "no secret",
    }
}

fn state_name(state: AccountState) -> &'static str {
    match state {
        AccountState::Available => "available",
        AccountState::Leased => "leased",
        AccountState::Cooldown => "cooldown",
        AccountState::Checkpoint => "checkpoint",
        AccountState::Disabled => "disabled",
        AccountState::ProxyDown => "proxy down",
    }
}

/// `45s`, `12m`, `5h`, `3d`: the largest whole unit.
fn span(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn render_table(accounts: &[Account], now: DateTime<Utc>) -> String {
    let header = [
        "NAME",
        "PLATFORM",
        "STATE",
        "ANON",
        "EGRESS",
        "PROXY",
        "SECRETS",
        "SESSION AGE",
        "ERRORS",
        "LEASE",
        "LAST ERROR",
    ];
    let rows: Vec<Vec<String>> = accounts
        .iter()
        .map(|a| {
            let state = match (a.state, a.cooldown_until) {
                (AccountState::Cooldown, Some(until)) if until > now => {
                    format!("cooldown {} left", span(until - now))
                }
                (state, _) => state_name(state).to_owned(),
            };
            let lease = match (&a.lease_owner, a.lease_expires_at) {
                (Some(owner), Some(at)) if at >= now => format!("{owner}, {} left", span(at - now)),
                (Some(owner), Some(at)) => format!("{owner}, expired {} ago", span(now - at)),
                (Some(owner), None) => owner.clone(),
                (None, _) => "-".to_owned(),
            };
            // While its proxy is down, that is what keeps the account out of rotation.
            let error = match (&a.proxy, &a.proxy_down_reason) {
                (Some(p), Some(reason)) => Some(format!("proxy {p}: {reason}")),
                _ => a.last_error.clone(),
            };
            let last_error: String = match error {
                Some(e) if e.chars().count() > 60 => {
                    e.chars().take(59).chain(std::iter::once('…')).collect()
                }
                Some(e) => e,
                None => "-".to_owned(),
            };
            vec![
                a.name.clone(),
                a.platform.as_str().to_owned(),
                state,
                if a.anonymous { "yes" } else { "no" }.to_owned(),
                a.egress_group.clone().unwrap_or_else(|| "-".to_owned()),
                a.proxy.clone().unwrap_or_else(|| "-".to_owned()),
                secrets_stored(a).to_owned(),
                a.session_updated_at
                    .map(|t| span(now - t))
                    .unwrap_or_else(|| "-".to_owned()),
                a.error_score.to_string(),
                lease,
                // Newlines in a stored error would break the table's rows.
                last_error.replace(['\n', '\r'], " "),
            ]
        })
        .collect();
    table(&header, &rows)
}

/// Columns padded to their widest cell, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if i + 1 < widths.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_become_one_header_string_in_name_order() {
        let cookies = BTreeMap::from([
            ("sessionid".to_owned(), "abc%3A1".to_owned()),
            ("ds_user_id".to_owned(), "42".to_owned()),
            ("rur".to_owned(), "\"NAO\\05442\"".to_owned()),
        ]);
        assert_eq!(
            cookie_string(&cookies).unwrap(),
            "ds_user_id=42; rur=\"NAO\\05442\"; sessionid=abc%3A1"
        );
    }

    #[test]
    fn cookies_that_would_not_round_trip_are_refused_without_showing_values() {
        for (name, value) in [("a=b", "v"), ("", "v"), ("a b", "v"), ("ok", "x;secret")] {
            let cookies = BTreeMap::from([(name.to_owned(), value.to_owned())]);
            let err = cookie_string(&cookies).unwrap_err();
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn spans_use_the_largest_whole_unit() {
        assert_eq!(span(chrono::Duration::seconds(45)), "45s");
        assert_eq!(span(chrono::Duration::seconds(3599)), "59m");
        assert_eq!(span(chrono::Duration::hours(5)), "5h");
        assert_eq!(span(chrono::Duration::days(3)), "3d");
        assert_eq!(span(chrono::Duration::seconds(-5)), "0s");
    }
}
