//! A private, throwaway PostgreSQL cluster: `initdb` into a temporary folder, `pg_ctl start` on a
//! free loopback port, `pg_ctl stop` and delete on drop. Tests use it when no `DATABASE_URL` is
//! given; `trawl demo` uses it so that the demo needs nothing but PostgreSQL's server binaries.
//!
//! `initdb` refuses to run as root, so a root caller runs the server binaries as the `postgres`
//! user through `runuser`. Clusters left behind by a killed process are found by their owner's pid
//! and removed by the next start.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH or under \
         /usr/lib/postgresql/*/bin.\n  Install them with: scripts/install-postgres.sh \
         (runs `apt-get install -y postgresql`)\n  or point TRAWL_DATABASE__URL (tests: DATABASE_URL) \
         at a running PostgreSQL server"
    )]
    BinariesMissing,
    #[error(
        "running as root, but there is no `postgres` user to run PostgreSQL as (initdb refuses \
         root); create one with `useradd --system --home /var/lib/postgresql postgres`, or run as \
         an ordinary user"
    )]
    NoUnprivilegedUser,
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error("cannot prepare the cluster folder: {0}")]
    Io(#[from] std::io::Error),
}

/// How the private cluster trades safety for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fsync=off`, `synchronous_commit=off`: for tests, whose data is thrown away.
    #[default]
    Throwaway,
    /// PostgreSQL's defaults for durability (what a benchmark must measure), with 512 MB of
    /// shared buffers.
    Durable,
    /// PostgreSQL's defaults, nothing changed (the demo's kept cluster).
    Defaults,
}

/// A running private cluster. Dropping it stops the server and deletes its files.
#[derive(Debug)]
pub struct PrivateCluster {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<String>,
    stopped: bool,
    /// Kept on disk when stopped (the demo's cluster), instead of deleted.
    persistent: bool,
    /// The caller's own server settings, as `-c name=value` options after ours.
    settings: String,
}

impl PrivateCluster {
    /// Finds the binaries, creates the cluster and starts it.
    pub fn start(durability: Durability) -> Result<Self, ClusterError> {
        Self::start_with(durability, &[])
    }

    /// [`PrivateCluster::start`] with server settings of the caller's, given after this module's
    /// own so that they win: a benchmark that must run under PostgreSQL's default connection limit
    /// passes `("max_connections", "100")`.
    pub fn start_with(
        durability: Durability,
        settings: &[(&str, &str)],
    ) -> Result<Self, ClusterError> {
        let (bin, run_as) = binaries_and_user()?;
        let parent = std::env::temp_dir().join("trawl-pg");
        std::fs::create_dir_all(&parent)?;
        // Shared by every user's clusters, like /tmp itself.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o1777));
        }
        reap_abandoned(&parent, &bin, run_as.as_deref());
        let root = new_root(&parent)?;
        let mut cluster = Self {
            root,
            bin,
            port: 0,
            run_as,
            stopped: false,
            persistent: false,
            settings: settings
                .iter()
                .map(|(name, value)| format!(" -c {name}={value}"))
                .collect(),
        };
        cluster.give_to_run_as()?;
        cluster.initdb(true)?;
        cluster.start_on_a_free_port(durability)?;
        Ok(cluster)
    }

    /// A streaming standby of this cluster: a base backup (`pg_basebackup`) started on a port of
    /// its own, replicating from `upstream_port` (this cluster's port, or a proxy in front of it)
    /// under `application_name`, which `synchronous_standby_names` can name. Same settings and
    /// durability as this cluster; dropped like it.
    pub fn start_standby(
        &self,
        durability: Durability,
        upstream_port: u16,
        application_name: &str,
    ) -> Result<Self, ClusterError> {
        let parent = self.root.parent().unwrap_or(&self.root).to_path_buf();
        let root = new_root(&parent)?;
        let mut standby = Self {
            root,
            bin: self.bin.clone(),
            port: 0,
            run_as: self.run_as.clone(),
            stopped: false,
            persistent: false,
            settings: self.settings.clone(),
        };
        standby.give_to_run_as()?;
        let mut backup = standby.command("pg_basebackup");
        run(
            "pg_basebackup",
            backup
                .arg("-D")
                .arg(standby.data_dir())
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "postgres", "-X", "stream", "-R", "--no-sync"]),
        )?;
        // After -R's own line, so that this one wins: the upstream and the name to replicate as.
        let mut auto_conf = std::fs::OpenOptions::new()
            .append(true)
            .open(standby.data_dir().join("postgresql.auto.conf"))?;
        std::io::Write::write_all(
            &mut auto_conf,
            format!(
                "primary_conninfo = 'host=127.0.0.1 port={upstream_port} user=postgres \
                 application_name={application_name}'\n"
            )
            .as_bytes(),
        )?;
        standby.start_on_a_free_port(durability)?;
        Ok(standby)
    }

    /// Promotes this standby to a primary (`pg_ctl promote`, waiting until it accepts writes).
    pub fn promote(&self) -> Result<(), ClusterError> {
        let mut cmd = self.command("pg_ctl");
        run(
            "pg_ctl promote",
            cmd.arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "60", "promote"]),
        )
    }

    /// SIGKILLs the server and every process of it at once, as a machine dying would: nothing is
    /// shut down, flushed or sent to a standby. The folder is deleted on drop as usual.
    pub fn kill(&mut self) -> Result<(), ClusterError> {
        let pid_file = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))?;
        let postmaster: u32 = pid_file
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .ok_or_else(|| ClusterError::Step {
                step: "kill",
                detail: "postmaster.pid holds no process id".into(),
            })?;
        let children = children_of(postmaster);
        // The postmaster first, so that it starts no one; a child may end by itself meanwhile.
        run(
            "kill",
            Command::new("kill").args(["-KILL", &postmaster.to_string()]),
        )?;
        for child in children {
            let _ = Command::new("kill")
                .args(["-KILL", &child.to_string()])
                .output();
        }
        Ok(())
    }

    /// A cluster kept in `dir`: created there on first use, started again by later runs, and
    /// stopped but not deleted at the end. Fails clearly when another server already runs on it.
    pub fn open(dir: &Path) -> Result<Self, ClusterError> {
        let (bin, run_as) = binaries_and_user()?;
        std::fs::create_dir_all(dir)?;
        let root = std::fs::canonicalize(dir)?;
        let mut cluster = Self {
            root,
            bin,
            port: 0,
            run_as,
            stopped: false,
            persistent: true,
            settings: String::new(),
        };
        cluster.give_to_run_as()?;
        if !cluster.data_dir().join("PG_VERSION").exists() {
            cluster.initdb(false)?;
        }
        cluster.start_on_a_free_port(Durability::Defaults)?;
        Ok(cluster)
    }

    fn give_to_run_as(&self) -> Result<(), ClusterError> {
        if let Some(user) = &self.run_as {
            run(
                "chown",
                Command::new("chown").arg("-R").arg(user).arg(&self.root),
            )?;
        }
        Ok(())
    }

    /// `initdb`; `no_sync` for clusters whose data is thrown away.
    fn initdb(&self, no_sync: bool) -> Result<(), ClusterError> {
        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-instructions");
        if no_sync {
            initdb.arg("--no-sync");
        }
        run("initdb", &mut initdb)
    }

    /// Another process can take the free port we picked before the server binds it; try again.
    fn start_on_a_free_port(&mut self, durability: Durability) -> Result<(), ClusterError> {
        let mut last_error = None;
        for _ in 0..5 {
            self.port = free_port()?;
            match self.pg_ctl_start(durability) {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(ClusterError::Step {
            step: "pg_ctl start",
            detail: "no attempt made".into(),
        }))
    }

    /// A URL for database `db` on this cluster (superuser `postgres`, trust authentication).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Runs a PostgreSQL binary of this cluster's installation (e.g. `pgbench`, `psql`) as the
    /// cluster's user.
    pub fn command(&self, program: &str) -> Command {
        command_as(&self.bin, program, self.run_as.as_deref())
    }

    /// `pg_ctl restart -m immediate`, as a crash and recovery would.
    pub fn restart_immediate(&self) -> Result<(), ClusterError> {
        let mut cmd = self.command("pg_ctl");
        run(
            "pg_ctl restart",
            // With its log file: a server started without one inherits pg_ctl's output pipes,
            // and reading them to the end would wait for the server to exit.
            cmd.arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.root.join("postgres.log"))
                .args(["-m", "immediate", "-w", "-t", "60", "restart"]),
        )
    }

    fn pg_ctl_start(&self, durability: Durability) -> Result<(), ClusterError> {
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c max_connections=300",
            self.port
        );
        match durability {
            Durability::Throwaway => {
                options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            }
            Durability::Durable => options.push_str(" -c shared_buffers=512MB"),
            Durability::Defaults => {}
        }
        options.push_str(&self.settings);
        let mut cmd = self.command("pg_ctl");
        run(
            "pg_ctl start",
            cmd.arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.root.join("postgres.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"]),
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(self.root.join("postgres.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            ClusterError::Step {
                step: "pg_ctl start",
                detail: format!(
                    "{e}; server log: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                ),
            }
        })
    }

    /// Stops the server (immediately: the data is thrown away) and deletes its folder.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if self.persistent {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "-t", "30", "stop"])
                .output();
            return;
        }
        stop_cluster(&self.bin, &self.data_dir(), self.run_as.as_deref());
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A new cluster folder under `parent`, marked with this process's id for [`reap_abandoned`].
fn new_root(parent: &Path) -> Result<PathBuf, ClusterError> {
    let root = parent.join(format!(
        "{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("owner.pid"), std::process::id().to_string())?;
    Ok(root)
}

/// The processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces, so read after its closing paren.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            children.push(child);
        }
    }
    children
}

fn stop_cluster(bin: &Path, data: &Path, run_as: Option<&str>) {
    let _ = command_as(bin, "pg_ctl", run_as)
        .arg("-D")
        .arg(data)
        .args(["-m", "immediate", "-w", "-t", "30", "stop"])
        .output();
}

fn command_as(bin: &Path, program: &str, run_as: Option<&str>) -> Command {
    let path = bin.join(program);
    match run_as {
        Some(user) => {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", user, "--"]).arg(path);
            cmd
        }
        None => Command::new(path),
    }
}

fn run(step: &'static str, cmd: &mut Command) -> Result<(), ClusterError> {
    let output: Output = cmd.output().map_err(|e| ClusterError::Step {
        step,
        detail: e.to_string(),
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ClusterError::Step {
            step,
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

/// The server binaries, and the user to run them as (`postgres` when we are root: `initdb`
/// refuses root).
fn binaries_and_user() -> Result<(PathBuf, Option<String>), ClusterError> {
    let bin = find_bin_dir().ok_or(ClusterError::BinariesMissing)?;
    let run_as = if is_root() {
        if !user_exists("postgres") {
            return Err(ClusterError::NoUnprivilegedUser);
        }
        Some("postgres".to_owned())
    } else {
        None
    };
    Ok((bin, run_as))
}

/// The folder holding `initdb`, `pg_ctl` and `postgres`: the newest `/usr/lib/postgresql/*/bin`,
/// else the first such folder on `PATH`.
pub fn find_bin_dir() -> Option<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            complete(&bin).then_some((version, bin))
        })
        .collect();
    versioned.sort();
    if let Some((_, bin)) = versioned.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| complete(dir))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(name)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Stops and deletes clusters whose owning process no longer exists.
fn reap_abandoned(parent: &Path, bin: &Path, run_as: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let owner = std::fs::read_to_string(dir.join("owner.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        let alive = match owner {
            Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
            // A folder another process is creating right now has no owner file yet.
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age.as_secs() < 60),
        };
        if !alive {
            stop_cluster(bin, &dir.join("data"), run_as);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
