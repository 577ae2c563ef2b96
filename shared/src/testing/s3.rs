//! A private S3-compatible server for tests: moto's `moto_server` (installed by
//! `scripts/install-s3-server.sh` when missing) on a free loopback port, with a fresh bucket per
//! test.
//!
//! The server process is started by a thread of its own that waits for the stop signal, with
//! the kernel told to kill the server when that thread dies: so it stops when its
//! [`S3Server`] is dropped, and also when the test process exits or is killed, which a static
//! never dropped would otherwise leave running.

use std::io::{Read, Seek, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::{BlobBackend, BlobStoreConfig};
use crate::duration::HumanDuration;
use crate::secret::Secret;

/// The credentials the tests' stores use; moto accepts any unless started with
/// [`S3Server::start_with_auth`].
pub const ACCESS_KEY_ID: &str = "trawl-test";
pub const SECRET_ACCESS_KEY: &str = "trawl-test-secret";

/// One running server; stopped on drop.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    port: u16,
    stop: Option<mpsc::Sender<()>>,
    owner: Option<std::thread::JoinHandle<()>>,
}

static SHARED: OnceLock<Result<S3Server, String>> = OnceLock::new();
static BUCKETS: AtomicU32 = AtomicU32::new(0);

/// The server this test process shares (started on first use; one per process costs about a
/// second). Panics when it cannot start, with the reason.
pub fn shared_server() -> &'static S3Server {
    match SHARED.get_or_init(S3Server::start) {
        Ok(server) => server,
        Err(e) => panic!("cannot start the test S3 server: {e}"),
    }
}

impl S3Server {
    /// A server that accepts any credentials.
    pub fn start() -> Result<S3Server, String> {
        Self::spawn(false)
    }

    /// A server that checks credentials and knows none: every request is refused as S3 refuses
    /// an unknown access key (403 `InvalidAccessKeyId`).
    pub fn start_with_auth() -> Result<S3Server, String> {
        Self::spawn(true)
    }

    fn spawn(check_credentials: bool) -> Result<S3Server, String> {
        let executable = PathBuf::from(super::install_tool("install-s3-server.sh")?);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("cannot find a free port: {e}"))?
            .port();
        // The server's log, unlinked at once: it is read only if the server does not start, and
        // nothing is left in the temporary directory either way.
        let log_path =
            std::env::temp_dir().join(format!("trawl-moto-{}-{port}.log", std::process::id()));
        let mut log = std::fs::File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let _ = std::fs::remove_file(&log_path);
        let log_file = log
            .try_clone()
            .map_err(|e| format!("cannot share the server's log: {e}"))?;
        let mut command = Command::new(&executable);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        if check_credentials {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        // SAFETY: prctl is async-signal-safe and touches only the child being started.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }

        let (started_tx, started_rx) = mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let owner = std::thread::spawn(move || {
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    let _ =
                        started_tx.send(Err(format!("cannot run {}: {e}", executable.display())));
                    return;
                }
            };
            let _ = started_tx.send(Ok(()));
            // Returns on stop, or when the S3Server is gone without sending it.
            let _ = stop_rx.recv();
            let _ = child.kill();
            let _ = child.wait();
        });
        started_rx
            .recv()
            .map_err(|_| "the server's owner thread died".to_string())??;
        let server = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            stop: Some(stop_tx),
            owner: Some(owner),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.request("GET", "/").is_err() {
            if Instant::now() > deadline {
                let mut output = String::new();
                let _ = log
                    .seek(std::io::SeekFrom::Start(0))
                    .and_then(|_| log.read_to_string(&mut output));
                return Err(format!(
                    "moto_server did not answer on port {port} within 30 s:\n{output}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// Creates a bucket no other test uses and returns its name.
    pub fn fresh_bucket(&self) -> Result<String, String> {
        let name = format!(
            "trawl-{}-{}-{:06x}",
            std::process::id(),
            BUCKETS.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>() & 0xff_ffff
        );
        let status = self.request("PUT", &format!("/{name}"))?;
        if status == 200 {
            Ok(name)
        } else {
            Err(format!("creating bucket {name} answered {status}"))
        }
    }

    /// A store configuration for `bucket` on this server, with few retries so that failures
    /// show quickly.
    pub fn store_config(&self, bucket: &str, spool: PathBuf) -> BlobStoreConfig {
        BlobStoreConfig {
            backend: BlobBackend::S3,
            path: spool,
            endpoint: Some(self.endpoint.clone()),
            bucket: Some(bucket.to_owned()),
            access_key_id: Some(ACCESS_KEY_ID.to_owned()),
            secret_access_key: Some(Secret::new(SECRET_ACCESS_KEY)),
            path_style: true,
            request_timeout: HumanDuration::from_secs(30),
            max_retries: 1,
            ..BlobStoreConfig::default()
        }
    }

    /// [`S3Server::store_config`] as the `TRAWL_MEDIA__STORE__*` variables a `trawl worker`
    /// process reads, for tests and benchmarks that run the binary.
    pub fn worker_env(&self, bucket: &str, spool: &std::path::Path) -> Vec<(String, String)> {
        s3_worker_env(&self.endpoint, bucket, spool)
    }

    /// An unsigned HTTP/1.1 request (moto takes those unless it checks credentials); returns
    /// the status code.
    fn request(&self, method: &str, path: &str) -> Result<u16, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .map_err(|e| e.to_string())?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).map_err(|e| e.to_string())?;
        // "HTTP/1.1 200"
        std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {:?}", String::from_utf8_lossy(&head)))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(owner) = self.owner.take() {
            let _ = owner.join();
        }
    }
}

/// The `TRAWL_MEDIA__STORE__*` variables for bucket `bucket` of the S3 server at `endpoint`
/// (which may be one that does not answer), with this module's credentials and no retries.
pub fn s3_worker_env(
    endpoint: &str,
    bucket: &str,
    spool: &std::path::Path,
) -> Vec<(String, String)> {
    [
        ("TRAWL_MEDIA__STORE__BACKEND", "s3"),
        ("TRAWL_MEDIA__STORE__ENDPOINT", endpoint),
        ("TRAWL_MEDIA__STORE__BUCKET", bucket),
        ("TRAWL_MEDIA__STORE__ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("TRAWL_MEDIA__STORE__SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("TRAWL_MEDIA__STORE__PATH_STYLE", "true"),
        ("TRAWL_MEDIA__STORE__MAX_RETRIES", "0"),
        ("TRAWL_MEDIA__STORE__CONNECT_TIMEOUT", "1s"),
        ("TRAWL_MEDIA__STORE__PATH", &spool.display().to_string()),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}
