//! Real forward proxies for tests: Debian's `squid` (HTTP, CONNECT included) and `microsocks`
//! (SOCKS5), installed by `scripts/install-proxies.sh` when missing.
//!
//! Each proxy listens on a free port of 127.0.0.1 and opens its connections to targets from an
//! exit address of its own (all of 127.0.0.0/8 is this machine on Linux), so that a server on
//! 127.0.0.1 tells the proxies apart by the peer address alone, as a real site tells real exits
//! apart, with no forwarded header to trust. Squid is told to add none (no `Via`, no
//! `X-Forwarded-For`); microsocks relays bytes and cannot add any.
//!
//! Not tinyproxy: 1.11 (Debian 12) keeps only the first of repeated response headers, so a login
//! answer's several `Set-Cookie` lines arrive as one, and a session through it is broken.
//!
//! As for the S3 server, the process is started by a thread of its own, with the kernel told to
//! kill it when that thread dies: it stops when its [`ForwardProxy`] is killed or dropped, and
//! also when the test process exits or is killed.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which proxy program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// Squid: plain HTTP requests in absolute form, and CONNECT tunnels to any port.
    Http,
    /// microsocks: SOCKS5 CONNECT, the target's name resolved by the proxy.
    Socks5,
}

/// One running (or killed) proxy; stopped on drop.
pub struct ForwardProxy {
    kind: ProxyKind,
    exit: Ipv4Addr,
    credentials: Option<(String, String)>,
    port: u16,
    /// The configuration and the log, there only while the proxy starts: the proxy has read the
    /// one and holds the other open by then, and nothing is left behind when the test process
    /// is killed.
    dir: PathBuf,
    running: Option<Running>,
    /// While no proxy runs: a socket bound to the port and not listening, so that connections
    /// are refused, as by a dead proxy, and no other test is handed the port meanwhile.
    reserved: Option<tokio::net::TcpSocket>,
}

struct Running {
    stop: mpsc::Sender<()>,
    /// The proxy's exit status, when it ends without being stopped.
    exited: mpsc::Receiver<String>,
    owner: JoinHandle<()>,
}

struct Binaries {
    squid: PathBuf,
    /// Squid's helper that checks Basic credentials against an htpasswd file.
    basic_auth: PathBuf,
    microsocks: PathBuf,
    openssl: PathBuf,
}

static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();

/// How long a proxy may take to accept connections after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

impl ForwardProxy {
    /// Starts a proxy listening on 127.0.0.1 and a free port; every connection it opens to a
    /// target leaves from `exit` (an address of this machine, such as 127.0.0.2). With
    /// `credentials`, clients must give that user name and password (HTTP Basic for squid,
    /// RFC 1929 for microsocks); neither may hold blanks or quotes, nor the user name a colon.
    pub fn start(
        kind: ProxyKind,
        exit: Ipv4Addr,
        credentials: Option<(&str, &str)>,
    ) -> Result<ForwardProxy, String> {
        binaries()?;
        if let Some((user, password)) = credentials {
            check_credentials(user, password)?;
        }
        let reserved = reserve(0)?;
        let port = reserved
            .local_addr()
            .map_err(|e| format!("cannot read the reserved port: {e}"))?
            .port();
        let dir = std::env::temp_dir().join(format!(
            "trawl-proxy-{}-{port}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut proxy = ForwardProxy {
            kind,
            exit,
            credentials: credentials.map(|(u, p)| (u.to_owned(), p.to_owned())),
            port,
            dir,
            running: None,
            reserved: Some(reserved),
        };
        proxy.restart()?;
        Ok(proxy)
    }

    /// `http://127.0.0.1:PORT` or `socks5h://127.0.0.1:PORT`, without the credentials, which
    /// each client passes its own way.
    pub fn url(&self) -> String {
        let scheme = match self.kind {
            ProxyKind::Http => "http",
            ProxyKind::Socks5 => "socks5h",
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the target sees connections come from.
    pub fn exit(&self) -> Ipv4Addr {
        self.exit
    }

    /// Kills the proxy with SIGKILL, as a proxy host that dies does: open tunnels break and new
    /// connections to the port are refused until [`ForwardProxy::restart`].
    pub fn kill(&mut self) {
        self.stop();
        if self.reserved.is_none() {
            // Best effort: without it connections are still refused, only the port is not kept.
            self.reserved = reserve(self.port).ok();
        }
    }

    /// Starts the proxy again on the same port, with the same exit and credentials (killing it
    /// first if it runs), and waits until it accepts connections.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        let result = self.spawn();
        // Squid's credential helper reads its password file while the proxy runs; the other
        // proxies hold what they need open by now.
        if self.kind != ProxyKind::Http {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if result.is_err() {
            self.kill();
        }
        result
    }

    fn spawn(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let command = self.command()?;
        // Freed only now, as the proxy is about to bind the port.
        self.reserved = None;
        self.running = Some(Running::spawn(command)?);
        self.wait_until_listening()
    }

    fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("proxy.log")
    }

    fn command(&self) -> Result<Command, String> {
        let binaries = binaries()?;
        let log_path = self.log_path();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot share the proxy's log: {e}"))?;
        let mut command = match self.kind {
            ProxyKind::Http => {
                let config_path = self.dir.join("squid.conf");
                std::fs::write(&config_path, self.squid_config(binaries)?)
                    .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
                let mut command = Command::new(&binaries.squid);
                // -N: in the foreground, one process (and its credential helper).
                command.arg("-N").arg("-f").arg(&config_path);
                command
            }
            ProxyKind::Socks5 => {
                let mut command = Command::new(&binaries.microsocks);
                command.args([
                    "-i",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-b",
                    &self.exit.to_string(),
                ]);
                if let Some((user, password)) = &self.credentials {
                    command.args(["-u", user, "-P", password]);
                }
                command
            }
        };
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        Ok(command)
    }

    fn squid_config(&self, binaries: &Binaries) -> Result<String, String> {
        // `tcp_outgoing_address` is the source address of every connection to a target, CONNECT
        // tunnels included. Nothing about the client is passed on (`forwarded_for delete`,
        // `via off`), nothing is cached, and a killed squid is restarted at once
        // (`shutdown_lifetime`). No `Safe_ports`/`SSL_ports` rules: CONNECT reaches any port, as
        // the worker's checks and the tests' targets on arbitrary ports need.
        let dir = self.dir.display();
        let mut config = format!(
            "http_port 127.0.0.1:{port}\n\
             tcp_outgoing_address {exit}\n\
             forwarded_for delete\n\
             via off\n\
             cache deny all\n\
             cache_mem 0 MB\n\
             access_log none\n\
             cache_log {dir}/cache.log\n\
             pid_filename {dir}/squid.pid\n\
             coredump_dir {dir}\n\
             visible_hostname trawl-test-proxy\n\
             shutdown_lifetime 0 seconds\n",
            port = self.port,
            exit = self.exit,
        );
        match &self.credentials {
            Some((user, password)) => {
                let passwd = self.dir.join("passwd");
                let hash = Command::new(&binaries.openssl)
                    .args(["passwd", "-apr1", password])
                    .output()
                    .map_err(|e| format!("cannot run openssl passwd: {e}"))?;
                if !hash.status.success() {
                    return Err("openssl passwd failed".into());
                }
                let hash = String::from_utf8_lossy(&hash.stdout).trim().to_owned();
                std::fs::write(&passwd, format!("{user}:{hash}\n"))
                    .map_err(|e| format!("cannot write {}: {e}", passwd.display()))?;
                config.push_str(&format!(
                    "auth_param basic program {helper} {passwd}\n\
                     auth_param basic realm trawl-test-proxy\n\
                     acl authenticated proxy_auth REQUIRED\n\
                     http_access allow authenticated\n\
                     http_access deny all\n",
                    helper = binaries.basic_auth.display(),
                    passwd = passwd.display(),
                ));
            }
            None => config.push_str("http_access allow all\n"),
        }
        Ok(config)
    }

    fn wait_until_listening(&mut self) -> Result<(), String> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            let exited = self
                .running
                .as_ref()
                .and_then(|running| running.exited.try_recv().ok());
            if let Some(status) = exited {
                return Err(format!(
                    "{:?} proxy exited at start ({status}):\n{}",
                    self.kind,
                    self.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{:?} proxy did not accept connections on port {} within {START_TIMEOUT:?}:\n{}",
                    self.kind,
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Running {
    fn spawn(mut command: Command) -> Result<Running, String> {
        // SAFETY: prctl is async-signal-safe and touches only the child being started.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let program = command.get_program().to_string_lossy().into_owned();
        let (started_tx, started_rx) = mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (exited_tx, exited_rx) = mpsc::channel::<String>();
        let owner = std::thread::spawn(move || {
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    let _ = started_tx.send(Err(format!("cannot run {program}: {e}")));
                    return;
                }
            };
            let _ = started_tx.send(Ok(()));
            // Polled rather than waited on, so that a proxy that exits at start (a refused
            // configuration, a taken port) is reported at once instead of at the start timeout.
            // Ends on a stop, or when the ForwardProxy is gone without sending one.
            while let Err(RecvTimeoutError::Timeout) =
                stop_rx.recv_timeout(Duration::from_millis(50))
            {
                if let Ok(Some(status)) = child.try_wait() {
                    let _ = exited_tx.send(status.to_string());
                    return;
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        });
        started_rx
            .recv()
            .map_err(|_| "the proxy's owner thread died".to_string())??;
        Ok(Running {
            stop: stop_tx,
            exited: exited_rx,
            owner,
        })
    }

    /// Returns once the process is gone, so that its port is free.
    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.owner.join();
    }
}

/// A socket bound to 127.0.0.1:`port` (0: a free one) that does not listen.
fn reserve(port: u16) -> Result<tokio::net::TcpSocket, String> {
    let socket =
        tokio::net::TcpSocket::new_v4().map_err(|e| format!("cannot open a socket: {e}"))?;
    // The killed proxy's connections linger in TIME_WAIT on this port.
    socket
        .set_reuseaddr(true)
        .map_err(|e| format!("cannot set SO_REUSEADDR: {e}"))?;
    socket
        .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .map_err(|e| format!("cannot reserve port {port}: {e}"))?;
    Ok(socket)
}

fn check_credentials(user: &str, password: &str) -> Result<(), String> {
    // Kept to characters no configuration file, command line or htpasswd line needs to quote;
    // RFC 1929 gives each a length byte.
    let unusable = |s: &str| {
        s.is_empty()
            || s.len() > 255
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    if unusable(user) || unusable(password) {
        return Err(format!(
            "unusable proxy credentials {user:?}: 1 to 255 of letters, digits, '.', '_' or '-' each"
        ));
    }
    Ok(())
}

fn binaries() -> Result<&'static Binaries, String> {
    BINARIES
        .get_or_init(|| {
            if let Some(found) = find_binaries() {
                return Ok(found);
            }
            super::install("install-proxies.sh")?;
            find_binaries().ok_or_else(|| {
                "install-proxies.sh succeeded but squid, microsocks or openssl is still missing"
                    .to_string()
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn find_binaries() -> Option<Binaries> {
    let basic_auth = PathBuf::from("/usr/lib/squid/basic_ncsa_auth");
    basic_auth.is_file().then_some(())?;
    Some(Binaries {
        squid: find_binary("squid")?,
        basic_auth,
        microsocks: find_binary("microsocks")?,
        openssl: find_binary("openssl")?,
    })
}

fn find_binary(name: &str) -> Option<PathBuf> {
    // The system's directories, sbin ones included, before PATH: a non-root user's PATH often
    // lacks the sbin ones.
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"]
        .into_iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
