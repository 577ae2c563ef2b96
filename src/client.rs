//! The CLI's HTTP client for the scheduler API, and the errors the CLI turns into exit codes.

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

/// A failed command: what to print and which exit code to return.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Config(String),
    #[error("cannot reach the scheduler at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
        details: Option<Value>,
    },
    #[error("{0}")]
    Partial(String),
    #[error("{0}")]
    Failure(String),
    /// Something a verb that talks to PostgreSQL directly looked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change would clash with what is stored (a name already taken).
    #[error("{0}")]
    Conflict(String),
    /// PostgreSQL cannot be reached; the message names the server (without its password).
    #[error("{0}")]
    DatabaseUnreachable(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Config(_) => exit::CONFIG,
            CliError::Unreachable { .. } => exit::UNAVAILABLE,
            CliError::Partial(_) => exit::PARTIAL,
            CliError::Failure(_) => exit::FAILURE,
            CliError::NotFound(_) => exit::NOT_FOUND,
            CliError::Conflict(_) => exit::CONFLICT,
            CliError::DatabaseUnreachable(_) => exit::UNAVAILABLE,
            CliError::Api { status, .. } => match *status {
                401 | 403 => exit::UNAUTHORIZED,
                404 => exit::NOT_FOUND,
                409 => exit::CONFLICT,
                400 | 413 | 422 => exit::USAGE,
                503 => exit::UNAVAILABLE,
                _ => exit::FAILURE,
            },
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
            other => CliError::Failure(other.to_string()),
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
            .map_err(|e| CliError::Failure(format!("cannot build HTTP client: {e}")))?;
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
            return serde_json::from_slice(&bytes).map_err(|e| {
                CliError::Failure(format!(
                    "the scheduler sent a response this CLI cannot read: {e}"
                ))
            });
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
