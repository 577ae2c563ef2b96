//! The PostgreSQL pool, the embedded migrations, and the schema check every long-running process
//! makes before it starts work.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseConfig;
use crate::primary::{self, HostList, HostListError};
use crate::secret::redact_url_password;

/// The schema, embedded at compile time from `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database URL {url} is not valid: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the database has no Trawl schema (no migrations applied); run `trawl migrate` first")]
    NoSchema,
    #[error(
        "the database schema is at version {found} but this trawl needs version {needed}; run `trawl migrate` first"
    )]
    SchemaBehind { found: i64, needed: i64 },
    #[error(
        "the database schema is at version {found}, newer than this trawl knows ({needed}); upgrade trawl"
    )]
    SchemaAhead { found: i64, needed: i64 },
    #[error(
        "migration {version} was changed after it was applied to this database (checksum differs); refusing to run"
    )]
    SchemaModified { version: i64 },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error(transparent)]
    Hosts(#[from] HostListError),
    #[error("no host of {url} is a writable primary ({answers})")]
    NoPrimary { url: String, answers: String },
}

/// Opens a pool. Connection failures name the server without its password.
pub async fn connect(config: &DatabaseConfig) -> Result<PgPool, DbError> {
    connect_as(config, "trawl").await
}

/// [`connect`] with the role's name as PostgreSQL's `application_name` (`trawl-scheduler`,
/// `trawl-worker`), so `pg_stat_activity` tells who holds which connection.
pub async fn connect_as(
    config: &DatabaseConfig,
    application_name: &str,
) -> Result<PgPool, DbError> {
    open(
        config.url.expose(),
        config.max_connections,
        config.connect_timeout.0,
        application_name,
    )
    .await
}

pub async fn connect_url(
    url: &str,
    max_connections: u32,
    connect_timeout: Duration,
) -> Result<PgPool, DbError> {
    open(url, max_connections, connect_timeout, "trawl").await
}

async fn open(
    url: &str,
    max_connections: u32,
    connect_timeout: Duration,
    application_name: &str,
) -> Result<PgPool, DbError> {
    let shown = redact_url_password(url);
    let hosts = HostList::parse(url)?;
    let mut host_options = Vec::with_capacity(hosts.urls.len());
    for single in &hosts.urls {
        let options: PgConnectOptions = single.parse().map_err(|source| DbError::BadUrl {
            url: shown.clone(),
            source,
        })?;
        // Every statement is planned with its real parameters. A cached generic plan of the
        // lease query does not know that LIMIT is small and, once the table is large, trades the
        // ordered scan of `jobs_runnable` for a full scan and sort: the slowdown measured in
        // apalis-postgres. Our statements are short, so planning each execution costs far less
        // than one bad plan.
        host_options.push(
            options
                .application_name(application_name)
                .options([("plan_cache_mode", "force_custom_plan")]),
        );
    }
    let probe_timeout = connect_timeout.min(Duration::from_secs(2));
    let options = if hosts.is_multi_host() {
        primary::find_primary(&host_options, probe_timeout)
            .await
            .map_err(|answers| DbError::NoPrimary {
                url: shown.clone(),
                answers: answers
                    .iter()
                    .map(|(host, state)| format!("{host}: {state:?}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            })?
    } else {
        host_options[0].clone()
    };
    let pooled = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(connect_timeout)
        // A standby accepts connections and reads, and refuses the first write; refusing it at
        // connect makes the pool retry until the primary (or the endpoint in front of it) answers.
        .after_connect(|connection, _| {
            Box::pin(async move {
                if primary::in_recovery(connection).await? {
                    return Err(sqlx::Error::Configuration(Box::new(
                        primary::StandbyRefused {
                            host: "the database server".into(),
                        },
                    )));
                }
                Ok(())
            })
        })
        .connect_with(options.clone())
        .await;
    let pool = match pooled {
        Ok(pool) => pool,
        // The pool retries a refused connection until its timeout and then says only that it
        // timed out; one direct attempt says why (refused, no such host, a TLS failure, a
        // standby).
        Err(sqlx::Error::PoolTimedOut) => {
            let source = match primary::probe(&options, probe_timeout).await {
                primary::HostState::Standby => {
                    sqlx::Error::Configuration(Box::new(primary::StandbyRefused {
                        host: primary::describe(&options),
                    }))
                }
                primary::HostState::Unreachable(why) => sqlx::Error::Configuration(why.into()),
                primary::HostState::Primary => sqlx::Error::PoolTimedOut,
            };
            return Err(DbError::Connect { url: shown, source });
        }
        Err(source) => return Err(DbError::Connect { url: shown, source }),
    };
    if hosts.is_multi_host() {
        primary::follow_primary(pool.clone(), host_options, probe_timeout);
    }
    Ok(pool)
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// The newest migration this binary carries.
pub fn required_schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Refuses to work against a schema that is older or newer than this binary, or whose applied
/// migrations differ from the embedded ones.
pub async fn check_schema(pool: &PgPool) -> Result<(), DbError> {
    let table_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    if !table_exists {
        return Err(DbError::NoSchema);
    }
    let applied: Vec<(i64, Vec<u8>, bool)> =
        sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await?;
    let needed = required_schema_version();
    let found = applied
        .iter()
        .filter(|(_, _, ok)| *ok)
        .map(|(v, _, _)| *v)
        .max()
        .unwrap_or(0);
    if applied.is_empty() {
        return Err(DbError::NoSchema);
    }
    if found > needed {
        return Err(DbError::SchemaAhead { found, needed });
    }
    for migration in MIGRATOR.iter() {
        match applied.iter().find(|(v, _, _)| *v == migration.version) {
            None | Some((_, _, false)) => return Err(DbError::SchemaBehind { found, needed }),
            Some((version, checksum, true)) => {
                if checksum.as_slice() != &*migration.checksum {
                    return Err(DbError::SchemaModified { version: *version });
                }
            }
        }
    }
    Ok(())
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5/old?sslmode=disable", "new"),
            "postgres://u@h:5/new?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:5", "new"),
            "postgres://u@h:5/new"
        );
    }
}
