//! The command line: one binary, every role and every client verb.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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

    /// PostgreSQL URL (database.url) for `scheduler` and `migrate`.
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
    /// Show the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Start a private PostgreSQL and a scheduler, submit sample jobs and show them being worked.
    Demo(DemoArgs),
    /// Run the Instagram simulator (tests, demos and benchmarks without the internet).
    Sim(SimArgs),
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
    /// Also generate N login accounts; their passwords are printed at start.
    #[arg(long = "accounts", default_value_t = 0)]
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
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Job kind: profile, profile_posts, post_comments, followers, followees, hashtag_posts,
    /// stories, highlights, post.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub kind: Option<String>,
    /// Username, hashtag or post shortcode, depending on the kind.
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
pub enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets redacted.
    Show,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Sample jobs to submit.
    #[arg(long, default_value_t = 60)]
    pub jobs: usize,
    /// Keep the scheduler and database running after the demo, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
}
