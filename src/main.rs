//! `trawl`: one binary for every role (scheduler, migrate, demo) and every client verb.

mod accounts;
mod cli;
mod client;
mod demo;
mod export;
mod jobs;
mod limits;
mod sim;

use std::process::ExitCode;

use clap::Parser;
use trawl_shared::config::{Config, ConfigLoader, LogFormat};
use trawl_shared::db;

use crate::cli::{Cli, Command, ConfigCommand, TokenCommand};
use crate::client::{ApiClient, CliError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trawl: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trawl: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let listen = match &cli.command {
        Command::Scheduler { listen } => *listen,
        _ => None,
    };
    let worker_listen = match &cli.command {
        Command::Worker { listen, .. } => *listen,
        _ => None,
    };
    let stream_listen = match &cli.command {
        Command::Stream { listen, .. } => *listen,
        _ => None,
    };
    let config = ConfigLoader::new(cli.config.clone())
        .flag_opt("client.url", cli.url.clone())
        .flag_opt("client.token", cli.token.clone())
        .flag_opt("database.url", cli.database_url.clone())
        .flag_opt("scheduler.listen", listen.map(|a| a.to_string()))
        .flag_opt("worker.listen", worker_listen.map(|a| a.to_string()))
        .flag_opt("stream.listen", stream_listen.map(|a| a.to_string()))
        .load_with(|c| {
            tracing_subscriber::EnvFilter::try_new(&c.log.filter)
                .map(|_| ())
                .map_err(|e| {
                    (
                        "log.filter",
                        format!("{e} (expected a filter such as \"info\" or \"trawl_worker=debug,info\")"),
                    )
                })
        })
        .map_err(|e| CliError::Config(e.to_string()))?;
    let server_role = matches!(
        cli.command,
        Command::Scheduler { .. }
            | Command::Migrate
            | Command::Worker { .. }
            | Command::Stream { .. }
    );
    init_tracing(&config, server_role);

    match cli.command {
        Command::Scheduler { .. } => run_scheduler(&config).await,
        Command::Migrate => migrate(&config).await,
        Command::Worker {
            insecure_dev_key, ..
        } => run_worker(&config, insecure_dev_key).await,
        Command::Stream {
            insecure_dev_key, ..
        } => run_stream(&config, insecure_dev_key).await,
        Command::Submit(args) => {
            jobs::submit(&client(&config)?, args, config.queue.default_max_attempts).await
        }
        Command::Jobs(command) => jobs::jobs(&client(&config)?, command).await,
        Command::Limits {
            account,
            egress,
            json,
        } => limits::show(&client(&config)?, account, egress, json).await,
        Command::Accounts(cmd) => accounts::run(&config, cmd).await,
        Command::Proxies(cmd) => accounts::proxies(&config, cmd).await,
        Command::Export(args) => export::run(&config, args).await,
        Command::Config(ConfigCommand::Show) => {
            print!("{}", config.to_redacted_toml());
            Ok(())
        }
        Command::Token(TokenCommand::New { scopes, name }) => new_token(&scopes, &name),
        Command::Demo(args) => demo::run(args, &config).await,
        Command::Sim(args) => sim::run(args).await,
        Command::Healthcheck { role, ready } => healthcheck(&config, role, ready).await,
    }
}

/// Prints a fresh token and its configuration entry. The entry is checked the way the scheduler
/// will check it, so what is printed always loads.
fn new_token(scopes: &[trawl_shared::tokens::Scope], name: &str) -> Result<(), CliError> {
    use trawl_shared::tokens::{self, TokenEntry, TokenSet};
    let (token, sha256) =
        tokens::generate().map_err(|e| CliError::failed("cannot make a token", e))?;
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let entry = TokenEntry {
        name: name.to_owned(),
        sha256,
        scopes,
    };
    TokenSet::new(std::slice::from_ref(&entry), None)
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let scopes: Vec<&str> = entry.scopes.iter().map(|s| s.as_str()).collect();
    println!("token: {token}");
    println!();
    println!("# Add to the scheduler's trawl.toml (it holds only the hash); give the token to its");
    println!("# holder as client.token or TRAWL_CLIENT__TOKEN. It is not shown again.");
    println!("[[scheduler.tokens]]");
    println!("name = {:?}", entry.name);
    println!("sha256 = {:?}", entry.sha256);
    println!(
        "scopes = [{}]",
        scopes
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn client(config: &Config) -> Result<ApiClient, CliError> {
    ApiClient::new(
        &config.client.url,
        config.client.token.as_ref().map(|t| t.expose().to_owned()),
        config.client.timeout.0,
    )
}

fn init_tracing(config: &Config, server_role: bool) {
    // Client verbs print their own results; only warnings and errors go to the log.
    let filter = if server_role {
        config.log.filter.clone()
    } else {
        "warn".to_owned()
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn run_scheduler(config: &Config) -> Result<(), CliError> {
    let listener = tokio::net::TcpListener::bind(config.scheduler.listen)
        .await
        .map_err(|source| CliError::Listen {
            key: "scheduler.listen",
            addr: config.scheduler.listen,
            source,
        })?;
    let (stop, signal) = trawl_shared::shutdown::channel();
    tokio::spawn(async move {
        trawl_shared::shutdown::os_signal().await;
        tracing::info!("shutting down");
        stop.trigger();
    });
    trawl_scheduler::run(config, listener, signal)
        .await
        .map_err(|e| match e {
            trawl_scheduler::SchedulerError::NoToken => CliError::Config(e.to_string()),
            trawl_scheduler::SchedulerError::Database(d) => CliError::from(d),
            other => CliError::Scheduler(other),
        })
}

async fn run_worker(config: &Config, insecure_dev_key: bool) -> Result<(), CliError> {
    let listener = bind("worker.listen", config.worker.listen).await?;
    let signal = stop_on_signal("stopping: finishing or checkpointing the page in flight");
    trawl_worker::run(config, listener, signal, insecure_dev_key)
        .await
        .map_err(worker_error)
}

async fn run_stream(config: &Config, insecure_dev_key: bool) -> Result<(), CliError> {
    let listener = bind("stream.listen", config.stream.listen).await?;
    let signal = stop_on_signal("stopping: giving the stream back");
    trawl_worker::stream::run(config, listener, signal, insecure_dev_key)
        .await
        .map_err(worker_error)
}

async fn bind(
    key: &'static str,
    addr: std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, CliError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CliError::Listen { key, addr, source })
}

/// A shutdown that SIGTERM or SIGINT triggers, saying `message` when it does.
fn stop_on_signal(message: &'static str) -> trawl_shared::shutdown::Shutdown {
    let (stop, signal) = trawl_shared::shutdown::channel();
    tokio::spawn(async move {
        trawl_shared::shutdown::os_signal().await;
        tracing::info!("{message}");
        stop.trigger();
    });
    signal
}

fn worker_error(e: trawl_worker::WorkerError) -> CliError {
    match e {
        trawl_worker::WorkerError::Key(_) => CliError::Config(e.to_string()),
        trawl_worker::WorkerError::Database(d) => CliError::from(d),
        other => CliError::Worker(other),
    }
}

async fn healthcheck(config: &Config, role: cli::HealthRole, ready: bool) -> Result<(), CliError> {
    let mut address = match role {
        cli::HealthRole::Worker => config.worker.listen,
        cli::HealthRole::Scheduler => config.scheduler.listen,
        cli::HealthRole::Stream => config.stream.listen,
    };
    // A server listening on every interface is probed on loopback.
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!(
        "http://{address}/{}",
        if ready { "readyz" } else { "healthz" }
    );
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| CliError::failed("cannot build the HTTP client", e))?;
    match http.get(&url).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(CliError::failed(url, format!("answered {}", r.status()))),
        Err(e) => Err(CliError::failed(format!("cannot reach {url}"), e)),
    }
}

async fn migrate(config: &Config) -> Result<(), CliError> {
    let pool = db::connect(&config.database).await?;
    db::migrate(&pool).await?;
    db::check_schema(&pool).await?;
    println!(
        "database schema is at version {}",
        db::required_schema_version()
    );
    pool.close().await;
    Ok(())
}
