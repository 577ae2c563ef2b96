//! The fleet's processes (`trawl sim`, `trawl scheduler`, `trawl worker`, each its own process
//! with its log file) and what `/proc` says about them: resident memory, and the TCP connections
//! each one holds to PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Simulator,
    Scheduler,
    Worker,
}

/// One running `trawl` process.
pub struct Proc {
    pub name: String,
    pub role: Role,
    /// The port it serves HTTP on (simulator, API, or a worker's `/metrics`).
    pub port: u16,
    pub started: Instant,
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Every process of the fleet; dropping it kills whatever still runs.
pub struct Procs {
    trawl: PathBuf,
    pub logs: PathBuf,
    pub all: Vec<Proc>,
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Procs {
    pub fn new(trawl: PathBuf, logs: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("creating the log folder {}", logs.display()))?;
        Ok(Self {
            trawl,
            logs,
            all: Vec::new(),
        })
    }

    /// Starts `trawl ARGS` with exactly `env` (and PATH), its output in `LOGS/NAME.log`.
    pub fn spawn(
        &mut self,
        name: &str,
        role: Role,
        port: u16,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<()> {
        let log = File::create(self.logs.join(format!("{name}.log")))?;
        let err = log.try_clone()?;
        let child = Command::new(&self.trawl)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", self.trawl.display()))?;
        self.all.push(Proc {
            name: name.to_owned(),
            role,
            port,
            started: Instant::now(),
            child,
        });
        Ok(())
    }

    pub fn of(&self, role: Role) -> impl Iterator<Item = &Proc> {
        self.all.iter().filter(move |p| p.role == role)
    }

    /// Fails, naming the log, if any process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for p in &mut self.all {
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "{} exited ({status}); see {}",
                    p.name,
                    self.logs.join(format!("{}.log", p.name)).display()
                );
            }
        }
        Ok(())
    }

    /// SIGTERM to every process of `role`, then waits up to `grace` for them (SIGKILL after).
    /// Returns how many had to be killed.
    pub async fn stop(&mut self, role: Role, grace: Duration) -> usize {
        for p in self.all.iter().filter(|p| p.role == role) {
            // SAFETY: kill(2) on the pid of a child we started and have not reaped.
            unsafe {
                libc::kill(p.pid() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        let mut killed = 0;
        for p in self.all.iter_mut().filter(|p| p.role == role) {
            loop {
                if matches!(p.child.try_wait(), Ok(Some(_)) | Err(_)) {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    killed += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.all.retain(|p| p.role != role);
        killed
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.all {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// Waits until `url` answers 2xx, or fails after `timeout` naming `what`.
pub async fn wait_ready(
    http: &reqwest::Client,
    url: &str,
    what: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not answer {url} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `VmRSS` and `VmHWM` (peak resident) of a process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// CPU time a process has used (user + system), in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks / per_second as f64)
}

/// Socket inodes of established TCP connections to `port` on this machine (the client ends).
fn sockets_to(port: u16) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(remote), Some(state), Some(inode)) = (cols.get(2), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let remote_port = remote
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port)
                && *state == "01"
                && let Ok(inode) = inode.parse()
            {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

/// How many connections to PostgreSQL (listening on `pg_port`) each of `pids` holds.
pub fn pg_connections(pids: &[u32], pg_port: u16) -> HashMap<u32, usize> {
    let inodes = sockets_to(pg_port);
    pids.iter()
        .map(|&pid| {
            let held = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|target| socket_inode(&target))
                .filter(|inode| inodes.contains(inode))
                .count();
            (pid, held)
        })
        .collect()
}

fn socket_inode(link: &Path) -> Option<u64> {
    link.to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}
