//! The command line: one binary, every role and every client verb.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "trawl",
    version,
    about = "A distributed crawl job scheduler for rate-limited Instagram crawls",
    long_about = "Trawl stores crawl jobs in PostgreSQL, hands them to workers that each hold one \
                  account session, and keeps Instagram's request windows exact across every worker \
                  and restart.\n\nConfiguration: defaults < trawl.toml (--config / TRAWL_CONFIG) < \
                  TRAWL_* environment variables (nested with __, e.g. TRAWL_CLIENT__TOKEN) < flags.",
    after_help = "Exit codes: 0 ok, 1 failure, 2 bad input or usage, 3 not found, 4 conflict, \
                  5 unauthorized, 6 scheduler or database unreachable, 7 batch partly rejected, \
                  8 configuration error."
)]
pub struct Cli {
    /// Configuration file (default: ./trawl.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Scheduler URL for client verbs (client.url).
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,

    /// API token for client verbs (client.token). Prefer TRAWL_CLIENT__TOKEN: flags show in `ps`.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,

    /// PostgreSQL URL (database.url) for `scheduler`, `migrate`, `accounts` and `export`.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the scheduler: the HTTP API and the maintenance loops.
    Scheduler {
        /// Address to listen on (scheduler.listen).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Apply the database migrations.
    Migrate,
    /// Run a worker: lease one account, log in when needed, crawl the jobs it can do.
    Worker {
        /// Address of /metrics, /healthz and /readyz (worker.listen).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Without secrets.key, use a fixed, publicly known key: secrets are NOT protected.
        #[arg(long)]
        insecure_dev_key: bool,
    },
    /// Hold one v1 account's realtime stream and turn its events into jobs (stream.rules).
    Stream {
        /// Address of /metrics, /healthz and /readyz (stream.listen).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Without secrets.key, use a fixed, publicly known key: secrets are NOT protected.
        #[arg(long)]
        insecure_dev_key: bool,
    },
    /// Submit one job, or a JSONL file of jobs.
    Submit(SubmitArgs),
    /// Inspect and manage jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Rate-limit usage: per query type, used/cap in each window, the next free slot, penalties,
    /// and the request counts of the last 10/11/20/22/30/60 minutes.
    Limits {
        /// One account (default: every account and egress group active in the last hour).
        #[arg(long, conflicts_with = "egress")]
        account: Option<String>,
        /// One egress group.
        #[arg(long)]
        egress: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Instagram accounts and their sealed secrets (talks to PostgreSQL directly).
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Forward proxies accounts leave through, and their sealed credentials (talks to
    /// PostgreSQL directly).
    #[command(subcommand)]
    Proxies(ProxiesCommand),
    /// Stream crawl results from PostgreSQL as JSONL or CSV, or write the tree Instaloader
    /// writes (`trawl export instaloader --output DIR`).
    Export(ExportArgs),
    /// Show the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// API tokens for the scheduler.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Start a private PostgreSQL and a scheduler, submit sample jobs and show them being worked.
    Demo(DemoArgs),
    /// Run the Instagram simulator (tests, demos and benchmarks without the internet).
    Sim(SimArgs),
    /// Probe a local scheduler or worker (for container health checks, no shell needed): exit 0
    /// when it answers 200.
    Healthcheck {
        /// Whose probe: the worker (worker.listen) or the scheduler (scheduler.listen).
        #[arg(long, value_enum, default_value = "worker")]
        role: HealthRole,
        /// Ask /readyz (ready to work) instead of /healthz (alive).
        #[arg(long)]
        ready: bool,
    },
}

#[derive(Debug, Args)]
pub struct SimArgs {
    #[command(subcommand)]
    pub command: Option<SimCommand>,
    /// Seed of the data set: the same seed serves byte-identical data.
    #[arg(long, default_value_t = 1, global = true)]
    pub seed: u64,
    /// Users in the data set.
    #[arg(long, default_value_t = 1000, global = true)]
    pub users: u32,
    /// Most posts a user has (counts spread from 0 to this).
    #[arg(long, default_value_t = 60, global = true)]
    pub max_posts: u32,
    /// Most accounts a user follows.
    #[arg(long, default_value_t = 80, global = true)]
    pub max_following: u32,
    /// Most comments on a post.
    #[arg(long, default_value_t = 40, global = true)]
    pub max_comments: u32,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Multiplies every server-side window (0.01: 11 minutes become 6.6 s).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// A login account, NAME:PASSWORD, or NAME:PASSWORD:2fa / NAME:PASSWORD:checkpoint for one
    /// whose login is challenged (repeatable). The two-factor code is 123456.
    #[arg(long = "account", value_name = "NAME:PASSWORD")]
    pub accounts: Vec<String>,
    /// Also generate N login accounts, sim_account0 and on; `trawl sim accounts --accounts N`
    /// prints their passwords (the server never logs them).
    #[arg(long = "accounts", default_value_t = 0, global = true)]
    pub generate_accounts: usize,
    /// Take the client IP from X-Forwarded-For (to stand in for several IPs in tests).
    #[arg(long)]
    pub trust_forwarded_for: bool,
    /// Fault: up to this much added latency per request (more faults: POST /__sim/faults).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Fault: share of requests answered with a 5xx.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Fault: share answered with invalid JSON.
    #[arg(long, default_value_t = 0.0)]
    pub invalid_json_rate: f64,
    /// Fault: share whose connection is dropped mid-response.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Where media URLs point (scheme and host, e.g. https://cdn.example:8443). Default: this
    /// simulator's own http://ADDRESS when --listen names a specific address, else
    /// https://scontent.sim.instagram.test.
    #[arg(long, value_name = "URL")]
    pub cdn_base: Option<String>,
    /// How long a media URL stays valid at least, in seconds of simulated time (scaled by
    /// --time-scale like the windows). A URL is good for one to two lifetimes.
    #[arg(long, value_name = "SECONDS", default_value_t = 86_400.0)]
    pub cdn_url_lifetime: f64,
    /// The v1 API's activity generator: every this many seconds of simulated time (scaled by
    /// --time-scale) a followed user posts, posts a story, or an account gets a notification, and
    /// the realtime stream carries it. 0: nothing happens unless a client writes.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub v1_activity_every: f64,
    /// Every video the CDN serves is this many bytes (for download benchmarks); default: 0.5 to
    /// 4 MB, chosen per video.
    #[arg(long, value_name = "N")]
    pub video_bytes: Option<u64>,
    /// Fault: media bodies are sent at most this many bytes a second (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub cdn_bytes_per_second: u64,
    /// Sessions end this many seconds after login (0: never).
    #[arg(long, default_value_t = 0)]
    pub session_ttl_seconds: u64,
    /// Put an account into checkpoint_required after this many 429s (0: never).
    #[arg(long, default_value_t = 10)]
    pub checkpoint_after_429s: u32,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Print the generated usernames with their post and follower counts.
    Users {
        /// How many to print.
        #[arg(long, default_value_t = 20)]
        count: usize,
    },
    /// Print the generated login accounts (`--accounts N`) as `NAME PASSWORD` lines, for scripts
    /// that add them to Trawl (`trawl accounts add NAME --password-stdin`).
    Accounts,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Job kind: profile, profile_posts, post_comments, followers, followees, hashtag_posts,
    /// stories, highlights, post, media.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub kind: Option<String>,
    /// Username, hashtag or post shortcode, depending on the kind; for media, one item:
    /// post:SHORTCODE, story:ITEM_ID or profile:USERNAME.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub target: Option<String>,
    /// Higher runs first (-100 to 100).
    #[arg(long, allow_hyphen_values = true)]
    pub priority: Option<i16>,
    /// When to run: an RFC 3339 time (2026-12-01T08:00:00Z) or a delay from now (+10m).
    #[arg(long, value_name = "TIME")]
    pub run_at: Option<String>,
    /// Attempts before the job fails for good.
    #[arg(long)]
    pub max_attempts: Option<i32>,
    /// Dedup key among active jobs (default: KIND:TARGET).
    #[arg(long)]
    pub unique_key: Option<String>,
    /// Crawl again this long after each run finishes (e.g. 6h, 1d).
    #[arg(long, value_name = "DURATION")]
    pub recrawl_every: Option<String>,
    /// Stop after this many items.
    #[arg(long)]
    pub max_items: Option<u64>,
    /// Stop at the first item an earlier crawl already stored (Instaloader's fast update).
    #[arg(long)]
    pub since: bool,
    /// For profile_posts, hashtag_posts and post: also crawl the comments of every post found.
    #[arg(long)]
    pub with_comments: bool,
    /// For profile, profile_posts, hashtag_posts, post, stories and highlights: also download
    /// the pictures and videos of every item found (one media job per item).
    #[arg(long)]
    pub with_media: bool,
    /// A JSONL file: one job object per line ({"kind":..,"target":..,...}). Bad lines are
    /// reported with their line number; the good ones are still submitted.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Print the server's JSON answer.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        state: Option<String>,
        /// Jobs per page (1 to 1000).
        #[arg(long, default_value_t = 50)]
        count: u32,
        /// Continue after this cursor (printed as next_cursor).
        #[arg(long)]
        cursor: Option<String>,
        /// Follow every page.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show one job.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a queued or running job.
    Cancel {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Queue a failed or cancelled job again.
    Retry {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Stop leasing jobs of a kind.
    Pause {
        kind: String,
        #[arg(long)]
        json: bool,
    },
    /// Lease jobs of a paused kind again.
    Resume {
        kind: String,
        #[arg(long)]
        json: bool,
    },
    /// Jobs by kind and state.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Live progress bars per kind until interrupted (or until nothing is left with --until-done).
    Watch {
        /// Refresh period.
        #[arg(long, default_value = "1s")]
        interval: String,
        /// Exit when no job is queued or running.
        #[arg(long)]
        until_done: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Add an account with exactly one secret source: a password, a session file, or none
    /// (anonymous).
    #[command(group(
        ArgGroup::new("secret")
            .required(true)
            .args(["password_stdin", "session_file", "anonymous"])
    ))]
    Add {
        /// 1 to 64 letters, digits, '.', '_' or '-' (usually the Instagram username).
        name: String,
        /// Read the password from the first line of standard input (it never appears in `ps`).
        #[arg(long)]
        password_stdin: bool,
        /// An Instaloader session file (`instaloader --login` writes one).
        #[arg(long, value_name = "FILE")]
        session_file: Option<PathBuf>,
        /// No login: crawls only what Instagram shows logged-out visitors.
        #[arg(long)]
        anonymous: bool,
        /// The egress group (the IP the account's requests leave from); default: its proxy's.
        #[arg(long, value_name = "GROUP")]
        egress: Option<String>,
        /// Send every request of the account through this proxy (`trawl proxies add`).
        #[arg(long, value_name = "PROXY")]
        proxy: Option<String>,
        /// Whose API the account logs in to: `instagram`, or `v1` (the Instagram-style REST API;
        /// needs --password-stdin).
        #[arg(long, value_name = "PLATFORM", default_value = "instagram")]
        platform: trawl_shared::Platform,
        /// Seal with the publicly known development key when secrets.key is unset (demos only).
        #[arg(long)]
        insecure_dev_key: bool,
    },
    /// Route an account through a proxy from its next lease on, or straight out with --none.
    #[command(group(ArgGroup::new("route").required(true).args(["proxy", "none"])))]
    SetProxy {
        name: String,
        /// The proxy's name.
        proxy: Option<String>,
        /// No proxy: requests leave from the worker's own address.
        #[arg(long)]
        none: bool,
    },
    /// List accounts, their state and whether a secret is stored (never the secret).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Take an account out of rotation (a worker holding it loses its lease).
    Disable { name: String },
    /// Put an account back into rotation, clearing a checkpoint, cooldown and error score.
    Enable { name: String },
    /// Delete an account and its secrets.
    Remove { name: String },
    /// Replace the stored session of an existing account with an Instaloader session file.
    ImportSession {
        name: String,
        #[arg(long, value_name = "FILE")]
        session_file: PathBuf,
        /// Seal with the publicly known development key when secrets.key is unset (demos only).
        #[arg(long)]
        insecure_dev_key: bool,
    },
    /// Re-encrypt every stored password and session with a new key, in one transaction. The
    /// current key comes from secrets.key; the new one is read from stdin (64 hex characters).
    /// A value the current key cannot open aborts the rotation and changes nothing.
    RotateKey,
    /// Print a new random key for secrets.key (needs no database).
    NewKey,
}

#[derive(Debug, Subcommand)]
pub enum ProxiesCommand {
    /// Store a proxy; its credentials are sealed with secrets.key like account passwords.
    Add {
        /// 1 to 64 letters, digits, '.', '_' or '-'.
        name: String,
        /// `http://host:port`, `socks5://host:port` or `socks5h://host:port` (names resolved
        /// by the proxy), without credentials. Its own name: the global `--url` is the
        /// scheduler's, and clap would hand one argument's value to the other.
        #[arg(value_name = "PROXY_URL")]
        proxy_url: String,
        /// The proxy's username (the password comes from --password-stdin).
        #[arg(long, requires = "password_stdin")]
        username: Option<String>,
        /// Read the proxy's password from the first line of standard input.
        #[arg(long, requires = "username")]
        password_stdin: bool,
        /// The egress group of its accounts (default: the proxy's name).
        #[arg(long, value_name = "GROUP")]
        egress: Option<String>,
        /// Seal with the publicly known development key when secrets.key is unset (demos only).
        #[arg(long)]
        insecure_dev_key: bool,
    },
    /// List proxies, their health and their accounts (never a credential).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a proxy no account uses.
    Remove { name: String },
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// What to export: a table of results, or `instaloader` (the directory tree Instaloader 4.16
    /// writes, with media from the blob store).
    #[arg(value_enum)]
    pub kind: ExportKind,
    /// Only rows of this target: a username (users, posts, follows, stories), a post shortcode
    /// (comments) or a hashtag (hashtag_posts). For `instaloader`: a profile to write, repeatable
    /// (default: every stored profile with posts or story items).
    #[arg(long)]
    pub target: Vec<String>,
    /// Only rows seen at or after TIME: RFC 3339 (2026-12-01T08:00:00Z), a date (2026-12-01,
    /// midnight UTC) or a span back from now (24h, 7d). Not for `instaloader`.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Output format (required, except for `instaloader`, which takes none).
    #[arg(long, value_enum)]
    pub format: Option<ExportFormat>,
    /// Write here instead of standard output; for `instaloader`, the directory to write the tree
    /// in (required).
    #[arg(long, short = 'o', value_name = "FILE|DIR")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportKind {
    Users,
    Posts,
    Comments,
    Follows,
    Stories,
    #[value(name = "hashtag_posts", alias = "hashtag-posts")]
    HashtagPosts,
    /// Instaloader 4.16's directory tree.
    Instaloader,
    /// The v1 platform's users (`--target`: a user id).
    #[value(name = "v1_users", alias = "v1-users")]
    V1Users,
    /// The v1 platform's posts (`--target`: the poster's user id).
    #[value(name = "v1_posts", alias = "v1-posts")]
    V1Posts,
    /// The v1 platform's comments (`--target`: the post id).
    #[value(name = "v1_comments", alias = "v1-comments")]
    V1Comments,
    /// The v1 platform's follow edges (`--target`: a user id on either end).
    #[value(name = "v1_follows", alias = "v1-follows")]
    V1Follows,
    /// The v1 platform's stories (`--target`: the poster's user id).
    #[value(name = "v1_stories", alias = "v1-stories")]
    V1Stories,
    /// The v1 platform's notifications (`--target`: the account's name).
    #[value(name = "v1_notifications", alias = "v1-notifications")]
    V1Notifications,
    /// Hashtags found by v1 searches.
    #[value(name = "v1_hashtags", alias = "v1-hashtags")]
    V1Hashtags,
    /// Locations found by v1 searches.
    #[value(name = "v1_locations", alias = "v1-locations")]
    V1Locations,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// RFC 4180, with a header row.
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets redacted.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh random token, and the lines to add to the scheduler's trawl.toml (which
    /// holds only the token's SHA-256). The token itself is shown once, here.
    New {
        /// What it may do: read (list and show), submit (submit, cancel, retry), admin
        /// (pause and resume kinds; everything). Repeat or separate with commas.
        #[arg(long = "scope", required = true, value_delimiter = ',', value_parser = parse_scope)]
        scopes: Vec<trawl_shared::tokens::Scope>,
        /// Who will hold it (letters, digits, '-', '_', '.'), shown in the scheduler's answers.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

fn parse_scope(text: &str) -> Result<trawl_shared::tokens::Scope, String> {
    trawl_shared::tokens::Scope::parse(text)
        .ok_or_else(|| format!("unknown scope {text:?}: expected read, submit or admin"))
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Workers, each with its own simulator account.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Profiles to crawl (with their posts, comments, followers, stories and highlights).
    #[arg(long, default_value_t = 8)]
    pub profiles: usize,
    /// Multiplies every rate-limit window, on both sides (0.05: 11 minutes become 33 s).
    #[arg(long, default_value_t = 0.05)]
    pub time_scale: f64,
    /// Print the summary as JSON (and nothing else on stdout).
    #[arg(long)]
    pub json: bool,
    /// Exit when the crawl is done instead of serving /metrics until Ctrl-C.
    #[arg(long)]
    pub exit_when_done: bool,
    /// Where the private PostgreSQL cluster and the demo's key are kept between runs
    /// (default: $TMPDIR/trawl-demo-UID).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HealthRole {
    Worker,
    Scheduler,
    /// A `trawl stream` process (stream.listen).
    Stream,
}
