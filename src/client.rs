//! The CLI's HTTP client for the scheduler API, and the errors the CLI turns into exit codes.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Exit codes of every `trawl` command (documented in `docs/cli.md`).
pub mod exit {
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const NOT_FOUND: i32 = 3;
    pub const CONFLICT: i32 = 4;
    pub const UNAUTHORIZED: i32 = 5;
    pub const UNAVAILABLE: i32 = 6;
    pub const PARTIAL: i32 = 7;
    pub const CONFIG: i32 = 8;
}

/// A failed command: what to print and which exit code to return. Each variant says what went
/// wrong, and [`CliError::exit_code`] maps it to the codes `docs/cli.md` documents.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag's value does not parse or is out of range (exit 2).
    #[error("{flag}: {reason}")]
    BadFlag { flag: &'static str, reason: String },
    /// A file or stream named on the command line cannot be read (exit 2).
    #[error("cannot read {what}: {source}")]
    CannotRead { what: String, source: io::Error },
    /// An output file cannot be created (exit 2).
    #[error("cannot create output file {}: {source}", path.display())]
    CannotCreate { path: PathBuf, source: io::Error },
    /// Input the command refuses: an invalid job, account name or session file, a batch whose
    /// every line was rejected (exit 2). The message names what and why.
    #[error("{0}")]
    Invalid(String),
    /// Some lines of a batch were rejected, the others submitted (exit 7).
    #[error("{0}")]
    PartlyRejected(String),
    /// The configuration is wrong; the message names the key (exit 8).
    #[error("{0}")]
    Config(String),
    /// The scheduler cannot be reached (exit 6).
    #[error("cannot reach the scheduler at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// PostgreSQL cannot be reached; the message names the server without its password (exit 6).
    #[error("{0}")]
    DatabaseUnreachable(String),
    /// The scheduler refused the request; the exit code follows its HTTP status.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
        details: Option<Value>,
    },
    /// Something a verb that talks to PostgreSQL directly looked for does not exist (exit 3).
    #[error("{0}")]
    NotFound(String),
    /// The change would clash with what is stored, such as a name already taken (exit 4).
    #[error("{0}")]
    Conflict(String),
    /// The scheduler answered with JSON this CLI does not understand (exit 1): the two are
    /// probably different versions.
    #[error("the scheduler sent an answer this CLI cannot read: {0}")]
    UnreadableAnswer(serde_json::Error),
    /// A statement failed on a database that could be reached (exit 1).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Writing the output failed (exit 1; a reader that closed standard output early is not
    /// one).
    #[error("cannot write to {destination}: {source}")]
    Write {
        destination: String,
        source: io::Error,
    },
    /// A server's address is taken or not allowed (exit 1).
    #[error("cannot listen on {addr} ({key}): {source}")]
    Listen {
        key: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    /// The database is reachable but not usable as it is: no or another schema, a failed
    /// migration (exit 1); the message says what to run.
    #[error(transparent)]
    Schema(trawl_shared::db::DbError),
    #[error(transparent)]
    Scheduler(trawl_scheduler::SchedulerError),
    #[error(transparent)]
    Worker(trawl_worker::WorkerError),
    /// A step of a command failed for a reason none of the above covers (exit 1).
    #[error("{context}: {reason}")]
    Failed { context: String, reason: String },
}

impl CliError {
    /// [`CliError::Failed`] from what was being done and what went wrong.
    pub fn failed(context: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        CliError::Failed {
            context: context.into(),
            reason: reason.to_string(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::BadFlag { .. }
            | CliError::CannotRead { .. }
            | CliError::CannotCreate { .. }
            | CliError::Invalid(_) => exit::USAGE,
            CliError::PartlyRejected(_) => exit::PARTIAL,
            CliError::Config(_) => exit::CONFIG,
            CliError::Unreachable { .. } | CliError::DatabaseUnreachable(_) => exit::UNAVAILABLE,
            CliError::NotFound(_) => exit::NOT_FOUND,
            CliError::Conflict(_) => exit::CONFLICT,
            CliError::Api { status, .. } => match *status {
                401 | 403 => exit::UNAUTHORIZED,
                404 => exit::NOT_FOUND,
                409 => exit::CONFLICT,
                400 | 413 | 422 => exit::USAGE,
                503 => exit::UNAVAILABLE,
                _ => exit::FAILURE,
            },
            CliError::UnreadableAnswer(_)
            | CliError::Database(_)
            | CliError::Write { .. }
            | CliError::Listen { .. }
            | CliError::Schema(_)
            | CliError::Scheduler(_)
            | CliError::Worker(_)
            | CliError::Failed { .. } => exit::FAILURE,
        }
    }
}

impl From<trawl_shared::db::DbError> for CliError {
    /// For the verbs that talk to PostgreSQL directly (`accounts`, `export`). Every message
    /// already names the server without its password.
    fn from(e: trawl_shared::db::DbError) -> Self {
        use trawl_shared::db::DbError;
        match e {
            DbError::BadUrl { .. } => CliError::Config(e.to_string()),
            DbError::Connect { .. } => CliError::DatabaseUnreachable(e.to_string()),
            other => CliError::Schema(other),
        }
    }
}

/// A client bound to one scheduler and token.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ApiClient {
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("trawl-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::failed("cannot build the HTTP client", e))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CliError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            reason: error_chain(&e),
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            reason: error_chain(&e),
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(CliError::UnreadableAnswer);
        }
        Err(api_error(status, &bytes, self.token.is_none()))
    }
}

fn api_error(status: StatusCode, body: &[u8], no_token: bool) -> CliError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    let code = error
        .and_then(|e| e["code"].as_str())
        .unwrap_or("UNKNOWN")
        .to_owned();
    let mut message = error
        .and_then(|e| e["message"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
    if status == StatusCode::UNAUTHORIZED && no_token {
        message.push_str("; set client.token (TRAWL_CLIENT__TOKEN or --token)");
    }
    CliError::Api {
        status: status.as_u16(),
        code,
        message,
        details: error.and_then(|e| e.get("details")).cloned(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
