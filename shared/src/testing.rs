//! Test support: a fresh, migrated database per test, a private S3-compatible server (`s3`), real
//! forward proxies with exit addresses of their own (`proxy`), a primary with a streaming standby
//! (`replication`), and the tools the tests need
//! installed when they are missing.
//!
//! The PostgreSQL server is the one named by `DATABASE_URL`, or, when that is unset, a private throwaway
//! cluster this process starts on first use and stops when it exits (PostgreSQL's server binaries
//! are installed first if the machine has none). Each test database is copied from a template that
//! was migrated once per process, which takes milliseconds.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection, PgPool};

use crate::db::{self, with_database};
use crate::pgcluster::{Durability, PrivateCluster};

pub mod proxy;
pub mod replication;
pub mod s3;

/// A database of its own for one test.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

struct Server {
    admin_url: String,
    template: String,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static CLUSTER: Mutex<Option<PrivateCluster>> = Mutex::new(None);
static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static COUNTER: AtomicU32 = AtomicU32::new(0);
static CREATE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

extern "C" fn cleanup_at_exit() {
    if let Ok(mut cluster) = CLUSTER.lock()
        && let Some(mut c) = cluster.take()
    {
        c.stop();
        return;
    }
    // An external server: drop the databases this process created.
    let names: Vec<String> = CREATED.lock().map(|v| v.clone()).unwrap_or_default();
    let Some(Ok(server)) = SERVER.get() else {
        return;
    };
    let url = server.admin_url.clone();
    let template = server.template.clone();
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            if let Ok(mut conn) = PgConnection::connect(&url).await {
                for name in names.iter().chain(std::iter::once(&template)) {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = conn.execute(sqlx::AssertSqlSafe(sql)).await;
                }
            }
        });
    })
    .join();
}

fn server() -> &'static Server {
    let server = SERVER.get_or_init(|| {
        // Runs on its own thread with its own runtime: the caller's runtime may be current-thread.
        std::thread::spawn(start_server)
            .join()
            .unwrap_or_else(|_| Err("test server setup panicked".into()))
    });
    match server {
        Ok(s) => s,
        Err(e) => panic!("cannot provide a test database: {e}"),
    }
}

/// Runs the repository's `scripts/<script>`, one of the "install it when it is missing" scripts,
/// so that `cargo test --workspace` needs nothing installed by hand on a fresh Debian machine. Test
/// binaries run in parallel and apt-get takes one lock: a lock file serialises them.
pub fn install(script: &str) -> Result<(), String> {
    install_tool(script).map(|_| ())
}

/// [`install`], returning the last line the script printed: the installed executable's path,
/// for the scripts that print one.
pub fn install_tool(script: &str) -> Result<String, String> {
    use std::os::fd::AsRawFd;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(script);
    let lock = std::fs::File::create(std::env::temp_dir().join("trawl-test-install.lock"))
        .map_err(|e| format!("cannot create the install lock: {e}"))?;
    // SAFETY: flock on a descriptor this function owns; released when `lock` is dropped.
    unsafe {
        libc::flock(lock.as_raw_fd(), libc::LOCK_EX);
    }
    let out = std::process::Command::new("bash")
        .arg(&path)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned())
    } else {
        Err(format!(
            "{} failed: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn start_server() -> Result<Server, String> {
    // SAFETY: registering a plain extern "C" function with no captured state.
    unsafe {
        libc::atexit(cleanup_at_exit);
    }
    let admin_url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            if crate::pgcluster::find_bin_dir().is_none() {
                install("install-postgres.sh")?;
            }
            let cluster =
                PrivateCluster::start(Durability::Throwaway).map_err(|e| e.to_string())?;
            let url = cluster.url("postgres");
            *CLUSTER.lock().map_err(|e| e.to_string())? = Some(cluster);
            url
        }
    };
    let template = format!(
        "trawl_tpl_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .map_err(|e| format!("connect {admin_url}: {e}"))?;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE \"{template}\""
            )))
            .await
            .map_err(|e| e.to_string())?;
        let url = with_database(&admin_url, &template);
        let pool = db::connect_url(&url, 2, Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())?;
        db::migrate(&pool).await.map_err(|e| e.to_string())?;
        pool.close().await;
        Ok::<(), String>(())
    })?;
    Ok(Server {
        admin_url,
        template,
    })
}

/// The admin URL of the test server (a database any test may connect to for server-wide
/// statements), starting the private cluster if needed.
pub fn admin_url() -> String {
    server().admin_url.clone()
}

/// A fresh database with the schema applied, and a pool of up to 20 connections on it.
pub async fn fresh_db() -> TestDb {
    fresh_db_with(20).await
}

pub async fn fresh_db_with(max_connections: u32) -> TestDb {
    let server = server();
    let name = format!(
        "trawl_t_{}_{}_{:06x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>() & 0xff_ffff
    );
    {
        let _guard = CREATE_LOCK.lock().await;
        let mut admin = PgConnection::connect(&server.admin_url)
            .await
            .expect("connect to the test server");
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE \"{name}\" TEMPLATE \"{}\"",
                server.template
            )))
            .await
            .expect("create a test database");
        let _ = admin.close().await;
    }
    if let Ok(mut created) = CREATED.lock() {
        created.push(name.clone());
    }
    let url = with_database(&server.admin_url, &name);
    let pool = db::connect_url(&url, max_connections, Duration::from_secs(30))
        .await
        .expect("connect to the test database");
    TestDb { pool, url, name }
}
