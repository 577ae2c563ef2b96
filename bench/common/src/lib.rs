//! What every Trawl benchmark shares: a PostgreSQL server (a private durable cluster unless a URL
//! is given) with a fresh database per run, percentiles, the machine report, and the writer that
//! replaces one benchmark's section of `bench/RESULTS.md` while keeping the others.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use trawl_shared::db;
use trawl_shared::pgcluster::{Durability, PrivateCluster};

pub struct Server {
    pub admin_url: String,
    cluster: Option<PrivateCluster>,
}

impl Server {
    /// Starts a private durable cluster, or uses `url`.
    pub async fn start(url: Option<String>) -> Result<Self> {
        Self::start_with(url, &[]).await
    }

    /// [`Server::start`] with server settings of the benchmark's own for the private cluster
    /// (`("max_connections", "100")`); a server given by `url` keeps its own settings.
    pub async fn start_with(url: Option<String>, settings: &[(&str, &str)]) -> Result<Self> {
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let cluster = match &url {
            Some(_) => None,
            None => {
                eprintln!("starting a private durable PostgreSQL cluster…");
                Some(
                    tokio::task::spawn_blocking(move || {
                        let settings: Vec<(&str, &str)> = settings
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect();
                        PrivateCluster::start_with(Durability::Durable, &settings)
                    })
                    .await??,
                )
            }
        };
        let admin_url = match (url, &cluster) {
            (Some(url), _) => url,
            (None, Some(c)) => c.url("postgres"),
            (None, None) => anyhow::bail!("no server"),
        };
        Ok(Self { admin_url, cluster })
    }

    pub fn cluster(&self) -> Option<&PrivateCluster> {
        self.cluster.as_ref()
    }

    /// A fresh, migrated database named `name` (dropped first if it exists).
    pub async fn fresh(&self, name: &str, pool_size: u32) -> Result<PgPool> {
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .await?;
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await?;
        admin.close().await?;
        let url = db::with_database(&self.admin_url, name);
        let pool = db::connect_url(&url, pool_size, Duration::from_secs(30)).await?;
        db::migrate(&pool).await?;
        Ok(pool)
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

pub async fn machine_report(admin_url: &str) -> Result<String> {
    let mut conn = PgConnection::connect(admin_url).await?;
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&mut conn)
        .await?;
    let mut settings = Vec::new();
    for name in [
        "shared_buffers",
        "synchronous_commit",
        "fsync",
        "max_connections",
    ] {
        let v: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&mut conn)
            .await?;
        settings.push(format!("{name}={v}"));
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    Ok(format!(
        "- Machine: {cores} cores ({cpu}), {mem_gib:.0} GiB RAM; PostgreSQL on the same machine\n\
         - PostgreSQL: {}\n- Settings: {}\n",
        version.split(" on ").next().unwrap_or(&version),
        settings.join(", ")
    ))
}

/// Replaces the section of `path` between `<!-- bench-NAME:begin -->` and `<!-- bench-NAME:end -->`
/// with `report`, keeping every other benchmark's section.
pub fn write_section(path: &Path, name: &str, report: &str) -> Result<()> {
    let begin = format!("<!-- bench-{name}:begin -->");
    let end = format!("<!-- bench-{name}:end -->");
    let existing = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmark results\n".into());
    let section = format!("{begin}\n{report}\n{end}");
    let updated = match (existing.find(&begin), existing.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!(
                "{}{}{}",
                &existing[..b],
                section,
                &existing[e + end.len()..]
            )
        }
        _ => format!("{}\n\n{}\n", existing.trim_end(), section),
    };
    std::fs::write(path, updated)?;
    Ok(())
}
