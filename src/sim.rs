//! `trawl sim`: runs the Instagram simulator, or prints the users of its data set.

use trawl_simulator::server::LoginChallenge;
use trawl_simulator::{DataSet, Sim, SimConfig, Sizes};

use crate::cli::{SimArgs, SimCommand};
use crate::client::CliError;

/// Most users a data set may have.
const MAX_USERS: u32 = 1_000_000;

/// Parses `NAME:PASSWORD` or `NAME:PASSWORD:2fa` / `NAME:PASSWORD:checkpoint`.
fn account(spec: &str) -> Result<(String, String, Option<LoginChallenge>), CliError> {
    let bad = || CliError::BadFlag {
        flag: "--account",
        reason: format!(
            "{spec:?}: expected NAME:PASSWORD, NAME:PASSWORD:2fa or NAME:PASSWORD:checkpoint"
        ),
    };
    let mut parts = spec.splitn(3, ':');
    let name = parts.next().filter(|n| !n.is_empty()).ok_or_else(bad)?;
    let password = parts.next().filter(|p| !p.is_empty()).ok_or_else(bad)?;
    let challenge = match parts.next() {
        None => None,
        Some("2fa") => Some(LoginChallenge::TwoFactor),
        Some("checkpoint") => Some(LoginChallenge::Checkpoint),
        Some(_) => return Err(bad()),
    };
    Ok((name.to_owned(), password.to_owned(), challenge))
}

pub async fn run(args: SimArgs) -> Result<(), CliError> {
    if !(args.time_scale.is_finite() && args.time_scale > 0.0) {
        return Err(CliError::BadFlag {
            flag: "--time-scale",
            reason: "must be above 0".into(),
        });
    }
    // The users and the follow graph are built in memory at start (100,000 users take about
    // 200 MiB), so a huge count would exhaust memory instead of serving.
    if args.users > MAX_USERS {
        return Err(CliError::BadFlag {
            flag: "--users",
            reason: format!("at most {MAX_USERS}"),
        });
    }
    if args.max_posts > 100_000 || args.max_following > 100_000 || args.max_comments > 100_000 {
        return Err(CliError::Invalid(
            "--max-posts, --max-following and --max-comments are at most 100000".into(),
        ));
    }
    let sizes = Sizes {
        users: args.users.max(2),
        max_posts: args.max_posts,
        max_following: args.max_following,
        max_comments: args.max_comments,
    };
    let started = std::time::Instant::now();
    let data = DataSet::generate(args.seed, sizes);
    if let Some(SimCommand::Accounts) = args.command {
        for k in 0..args.generate_accounts {
            let (name, password) = trawl_simulator::data::generated_account(args.seed, k);
            println!("{name} {password}");
        }
        return Ok(());
    }
    if let Some(SimCommand::Users { count }) = args.command {
        println!(
            "{:<24} {:>6} {:>9} {:>9}  PRIVATE",
            "USERNAME", "POSTS", "FOLLOWERS", "FOLLOWING"
        );
        for u in data.users.iter().take(count) {
            println!(
                "{:<24} {:>6} {:>9} {:>9}  {}",
                u.username,
                u.post_count,
                u.followers.len(),
                u.following.len(),
                if u.is_private { "yes" } else { "no" }
            );
        }
        return Ok(());
    }
    let parsed = args
        .accounts
        .iter()
        .map(|a| account(a))
        .collect::<Result<Vec<_>, _>>()?;
    let challenges = parsed
        .iter()
        .filter_map(|(name, _, c)| c.map(|c| (name.clone(), c)))
        .collect();
    let mut accounts: Vec<(String, String)> = parsed.into_iter().map(|(n, p, _)| (n, p)).collect();
    for k in 0..args.generate_accounts {
        let (name, password) = trawl_simulator::data::generated_account(args.seed, k);
        accounts.push((name, password));
    }
    if args.generate_accounts > 0 {
        // Names only: a server's log is no place for passwords, even trial ones. The provisioning
        // command prints them on purpose.
        eprintln!(
            "login accounts sim_account0..sim_account{}; their passwords: trawl sim accounts \
             --seed {} --accounts {}",
            args.generate_accounts - 1,
            args.seed,
            args.generate_accounts
        );
    }
    eprintln!(
        "generated {} users (seed {}) in {:.2?}",
        data.users.len(),
        args.seed,
        started.elapsed()
    );
    let faults = trawl_simulator::faults::Faults {
        latency_ms: args.latency_ms,
        error_rate: args.error_rate,
        invalid_json_rate: args.invalid_json_rate,
        drop_rate: args.drop_rate,
        cdn_bytes_per_second: args.cdn_bytes_per_second,
        ..Default::default()
    };
    faults.validate().map_err(CliError::Invalid)?;
    let cdn = trawl_simulator::cdn::CdnConfig {
        base: args.cdn_base,
        url_lifetime_secs: args.cdn_url_lifetime,
        video_bytes: args.video_bytes,
    };
    cdn.validate().map_err(CliError::Invalid)?;
    if !(args.v1_activity_every.is_finite() && args.v1_activity_every >= 0.0) {
        return Err(CliError::BadFlag {
            flag: "--v1-activity-every",
            reason: "must be 0 or more seconds".into(),
        });
    }
    let v1 = trawl_simulator::v1::V1Config {
        activity_every: (args.v1_activity_every > 0.0)
            .then(|| std::time::Duration::from_secs_f64(args.v1_activity_every)),
    };
    let sim = Sim::new(SimConfig {
        data,
        faults,
        checkpoint_after_429s: args.checkpoint_after_429s,
        challenges,
        session_ttl: (args.session_ttl_seconds > 0)
            .then(|| std::time::Duration::from_secs(args.session_ttl_seconds)),
        accounts,
        time_scale: args.time_scale,
        trust_forwarded_for: args.trust_forwarded_for,
        cdn,
        v1,
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| CliError::Listen {
            key: "--listen",
            addr: args.listen,
            source,
        })?;
    eprintln!("simulator listening on http://{}", args.listen);
    if let Ok(address) = listener.local_addr() {
        sim.adopt_served_address(address);
    }
    eprintln!("media URLs point at {}", sim.cdn_base());
    trawl_simulator::run(listener, sim, trawl_shared::shutdown::os_signal())
        .await
        .map_err(|e| CliError::failed("simulator failed", e))
}
