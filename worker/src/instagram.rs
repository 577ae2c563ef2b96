//! The Instagram client (reference §5–6): the three API types with their headers, one account's
//! cookies, the login flow, redirect handling, the error taxonomy and retries. Every request,
//! retries and followed redirects included, is let through by the shared limiter first.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::Semaphore;
use trawl_shared::config::InstagramConfig;
use trawl_shared::limiter::{LedgerError, Limiter, QueryType, Request, ServerHints};

use crate::metrics::{Outcome, WorkerMetrics};

/// The iPad app's id (reference §6).
pub const MOBILE_APP_ID: &str = "124024574287414";
const MOBILE_USER_AGENT: &str = "Instagram 361.0.0.35.82 (iPad13,8; iOS 18_0; en_US; en-US; \
                                 scale=2.00; 2048x2732; 674117118) AppleWebKit/420+";
/// Redirects followed within one request before it counts as a connection error.
const MAX_REDIRECTS: usize = 5;
/// Longest body read; a bigger answer is a connection error, not an out-of-memory.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// What went wrong, in the terms the worker acts on (reference §5).
#[derive(Debug, thiserror::Error)]
pub enum IgError {
    /// checkpoint/challenge/feedback required: the account needs a human.
    #[error("the account needs a human: {0}")]
    AccountBlocked(String),
    /// Redirected to the login page, or told `login_required`.
    #[error("not logged in (redirected to the login page)")]
    LoginRequired,
    #[error("not found: {0}")]
    NotFound(String),
    /// 403 on content: a private profile, a removed post.
    #[error("not authorised to view it: {0}")]
    Forbidden(String),
    /// A 429 (the penalty is recorded) or a limiter wait too long to hold a lease through.
    #[error("rate limited until {until}")]
    RateLimited { until: DateTime<Utc>, got_429: bool },
    /// A 400 on a paginated query: the caller may halve its page length.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Every attempt failed with a connection-class error (reference §5).
    #[error("connection error after {attempts} attempts: {last}")]
    Connection { attempts: u32, last: String },
    /// The login itself was refused (wrong password, unknown user, two-factor).
    #[error("login refused: {0}")]
    LoginRefused(String),
    /// The ledger cannot be reached: no request is sent without a permit (fail closed).
    #[error("rate-limit ledger unavailable: {0}")]
    Ledger(#[from] LedgerError),
}

/// The API a request goes to, which decides its headers and its query type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    /// Web REST on the web host (`other`).
    Web,
    /// Web GraphQL by `query_hash` (GET).
    Graphql { query_hash: String },
    /// GraphQL by `doc_id` (form POST).
    DocId { doc_id: String },
    /// The mobile API (`iphone`), with the iPad headers.
    Mobile,
}

impl Api {
    pub fn query_type(&self) -> QueryType {
        match self {
            Api::Web => QueryType::Other,
            Api::Graphql { query_hash } => QueryType::QueryHash(query_hash.clone()),
            Api::DocId { doc_id } => QueryType::DocId(doc_id.clone()),
            Api::Mobile => QueryType::Iphone,
        }
    }
}

/// One account's cookies and the headers the mobile API asked to have sent back.
#[derive(Clone, Default)]
pub struct Session {
    cookies: BTreeMap<String, String>,
    ig_set: BTreeMap<String, String>,
    pigeon_session_id: String,
}

/// Cookie names only: their values are secrets.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("cookies", &self.cookies.keys().collect::<Vec<_>>())
            .field("ig_set", &self.ig_set.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Session {
    /// From the stored form: `name=value` pairs joined by `; `.
    pub fn from_cookie_string(stored: &str) -> Self {
        let cookies = stored
            .split(';')
            .filter_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
            })
            .collect();
        Self {
            cookies,
            ..Self::default()
        }
    }

    pub fn to_cookie_string(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn is_logged_in(&self) -> bool {
        self.cookies.get("sessionid").is_some_and(|s| !s.is_empty())
    }

    pub fn user_id(&self) -> Option<&str> {
        self.cookies.get("ds_user_id").map(String::as_str)
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// Forgets the login (an expired session), keeping nothing that could be replayed.
    pub fn clear(&mut self) {
        self.cookies.clear();
        self.ig_set.clear();
    }

    fn absorb(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let first = text.split(';').next().unwrap_or("");
            if let Some((k, v)) = first.trim().split_once('=') {
                let expired = text.to_ascii_lowercase().contains("max-age=0");
                if v.is_empty() || v == "\"\"" || expired {
                    self.cookies.remove(k.trim());
                } else {
                    self.cookies.insert(k.trim().to_owned(), v.to_owned());
                }
            }
        }
        for (name, value) in headers {
            let name = name.as_str();
            let sent_as = if let Some(rest) = name.strip_prefix("ig-set-") {
                rest.to_owned()
            } else if let Some(rest) = name.strip_prefix("x-ig-set-") {
                format!("x-ig-{rest}")
            } else {
                continue;
            };
            if let Ok(v) = value.to_str() {
                self.ig_set.insert(sent_as, v.to_owned());
            }
        }
    }

    fn cookie_header(&self, skip: &[&str]) -> Option<String> {
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }
}

/// The `rur` cookie as the app sends it in `ig-u-rur`: unquoted, with `\ooo` octal escapes (how
/// Python's cookie jar writes `,`) decoded.
pub fn decode_rur(raw: &str) -> String {
    let unquoted = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    let bytes = unquoted.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let octal = bytes
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
                .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
            if let Some(b) = octal {
                out.push(b);
                i += 4;
                continue;
            }
            if let Some(&next) = bytes.get(i + 1) {
                out.push(next);
                i += 2;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request as the crawlers describe it. Its `Debug` leaves out form values (a login form holds
/// the password).
#[derive(Clone)]
pub struct Call {
    pub api: Api,
    /// Path below the API's base, e.g. `/api/v1/users/web_profile_info/`.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Form fields (sent as a POST).
    pub form: Option<Vec<(String, String)>>,
    /// A paginated GraphQL query: a 400 is returned at once so the caller can halve `first`.
    pub paginated: bool,
    /// Referer for GraphQL queries.
    pub referer: Option<String>,
    /// An HTML page (the home page): a body that is not JSON is the answer, not an error.
    pub html: bool,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("api", &self.api)
            .field("path", &self.path)
            .field("query", &self.query)
            .field(
                "form",
                &self
                    .form
                    .as_ref()
                    .map(|fields| fields.iter().map(|(k, _)| k).collect::<Vec<_>>()),
            )
            .finish()
    }
}

impl Call {
    pub fn web(path: impl Into<String>, query: &[(&str, &str)]) -> Self {
        Self::new(Api::Web, path, query)
    }

    pub fn mobile(path: impl Into<String>, query: &[(&str, &str)]) -> Self {
        Self::new(Api::Mobile, path, query)
    }

    /// `GET /graphql/query/?query_hash=…&variables=…` with compact JSON variables.
    pub fn graphql(query_hash: &str, variables: &Value) -> Self {
        let vars = variables.to_string();
        let mut call = Self::new(
            Api::Graphql {
                query_hash: query_hash.to_owned(),
            },
            "/graphql/query/",
            &[("query_hash", query_hash), ("variables", &vars)],
        );
        call.paginated = variables.get("first").is_some();
        call
    }

    /// `POST /graphql/query` with `doc_id`, `variables` and `server_timestamps=true`.
    pub fn doc_id(doc_id: &str, variables: &Value) -> Self {
        let mut call = Self::new(
            Api::DocId {
                doc_id: doc_id.to_owned(),
            },
            "/graphql/query",
            &[],
        );
        call.form = Some(vec![
            ("variables".into(), variables.to_string()),
            ("doc_id".into(), doc_id.to_owned()),
            ("server_timestamps".into(), "true".into()),
        ]);
        call.paginated = variables.get("first").is_some();
        call
    }

    fn new(api: Api, path: impl Into<String>, query: &[(&str, &str)]) -> Self {
        Self {
            api,
            path: path.into(),
            query: query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            form: None,
            paginated: false,
            referer: None,
            html: false,
        }
    }
}

/// The egress group of accounts that have none: the one IP their workers share.
pub const SHARED_EGRESS: &str = "shared";

/// Whose requests a client sends: the account (its limiter scope), its egress group and cookies.
pub struct Identity {
    pub account: String,
    pub egress: Option<String>,
    pub session: Session,
}

/// One account's client. Requests of one client share its cookies and its limiter scopes.
pub struct InstagramClient {
    http: reqwest::Client,
    config: InstagramConfig,
    limiter: Arc<Limiter>,
    metrics: Arc<WorkerMetrics>,
    account: String,
    egress: Option<String>,
    session: Mutex<Session>,
    /// Requests in flight for this account (one by default).
    in_flight: Semaphore,
    /// Longest limiter wait slept inside a request; longer ones become `RateLimited`.
    max_inline_wait: Duration,
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    pub json: Value,
    pub status: u16,
}

/// What one attempt ended with.
#[derive(Debug)]
pub enum Attempt {
    Done(Answer),
    /// Try again (a connection-class error), with the reason.
    Retry(Outcome, String),
    Fail(IgError),
}

impl InstagramClient {
    pub fn new(
        config: &InstagramConfig,
        limiter: Arc<Limiter>,
        metrics: Arc<WorkerMetrics>,
        identity: Identity,
        requests_in_flight: usize,
        max_inline_wait: Duration,
    ) -> Result<Self, reqwest::Error> {
        let Identity {
            account,
            egress,
            session,
        } = identity;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout.0)
            .connect_timeout(config.request_timeout.0.min(Duration::from_secs(10)))
            .build()?;
        let mut session = session;
        session.pigeon_session_id = uuid::Uuid::new_v4().to_string();
        Ok(Self {
            http,
            config: config.clone(),
            limiter,
            metrics,
            account,
            egress,
            session: Mutex::new(session),
            in_flight: Semaphore::new(requests_in_flight.max(1)),
            max_inline_wait,
        })
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// The egress group a request counts against besides its account. Instagram counts a request
    /// without a session (a login, an anonymous account) against the IP it comes from, which
    /// every worker without an egress group of its own shares: [`SHARED_EGRESS`]. Without this,
    /// a fleet logging in at once overflows the IP's window (64 workers did, in bench/fleet).
    fn egress_scope(&self) -> Option<String> {
        match &self.egress {
            Some(group) => Some(group.clone()),
            None if !self.with_session(|s| s.is_logged_in()) => Some(SHARED_EGRESS.to_owned()),
            None => None,
        }
    }

    pub fn page_length(&self) -> u32 {
        self.config.page_length
    }

    pub fn session(&self) -> Session {
        self.session
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn with_session<T>(&self, f: impl FnOnce(&mut Session) -> T) -> T {
        match self.session.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    pub fn is_logged_in(&self) -> bool {
        self.with_session(|s| s.is_logged_in())
    }

    /// Drops an expired session before logging in again.
    pub fn forget_session(&self) {
        self.with_session(Session::clear);
    }

    /// Sends `call`, retrying connection-class errors up to `max_connection_attempts`.
    pub async fn send(&self, call: &Call) -> Result<Answer, IgError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| IgError::Connection {
                attempts: 0,
                last: "client closed".into(),
            })?;
        let attempts = self.config.max_connection_attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.attempt(call).await? {
                Attempt::Done(answer) => return Ok(answer),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(outcome, reason) => {
                    tracing::debug!(
                        account = %self.account, path = %call.path, attempt,
                        outcome = outcome.as_str(), %reason, "request failed; retrying"
                    );
                    last = reason;
                    if attempt < attempts {
                        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    }
                }
            }
        }
        Err(IgError::Connection { attempts, last })
    }

    fn base(&self, api: &Api) -> &str {
        match api {
            Api::Mobile => &self.config.mobile_base,
            _ => &self.config.web_base,
        }
    }

    /// One attempt: a permit, the request, its redirects, and the answer classified.
    async fn attempt(&self, call: &Call) -> Result<Attempt, IgError> {
        let request = Request {
            query_type: call.api.query_type(),
            account: self.account.clone(),
            egress: self.egress_scope(),
        };
        let class = request.query_type.class().as_str();
        let mut url = format!("{}{}", self.base(&call.api), call.path);
        let mut query = call.query.clone();
        let mut form = call.form.clone();
        for _ in 0..=MAX_REDIRECTS {
            self.permit(&request).await?;
            let started = Instant::now();
            let sent = self.build(call, &url, &query, form.as_ref()).send().await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    self.count(class, Outcome::Transport, started);
                    return Ok(Attempt::Retry(Outcome::Transport, without_url(&e)));
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            self.with_session(|s| s.absorb(&headers));
            if status.is_redirection() {
                let location = headers
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                if location.contains("/accounts/login") {
                    self.count(class, Outcome::LoginRequired, started);
                    return Ok(Attempt::Fail(IgError::LoginRequired));
                }
                let base = self.base(&call.api);
                let next = if location.starts_with('/') {
                    Some(format!("{base}{location}"))
                } else if location.starts_with(&format!("{base}/")) {
                    Some(location.clone())
                } else {
                    None
                };
                let Some(mut next) = next else {
                    self.count(class, Outcome::ServerError, started);
                    let reason = if location.is_empty() {
                        format!("redirect ({status}) without a Location header")
                    } else {
                        format!("redirect to another host ({status})")
                    };
                    return Ok(Attempt::Retry(Outcome::ServerError, reason));
                };
                if !next.contains('?') && !next.ends_with('/') {
                    next.push('/');
                }
                self.count(class, Outcome::Ok, started);
                url = next;
                query.clear();
                form = None;
                continue;
            }
            let body = match read_body(response).await {
                Ok(b) => b,
                Err(reason) => {
                    self.count(class, Outcome::Transport, started);
                    return Ok(Attempt::Retry(Outcome::Transport, reason));
                }
            };
            let json = parse_body(&body);
            let hints = ServerHints::parse(
                |name| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                },
                json.as_ref(),
                Utc::now(),
            );
            let (attempt, label) = self
                .classify(status.as_u16(), json, call, &request, &hints)
                .await?;
            self.count(class, label, started);
            return Ok(attempt);
        }
        self.count(class, Outcome::ServerError, Instant::now());
        Ok(Attempt::Retry(
            Outcome::ServerError,
            format!("more than {MAX_REDIRECTS} redirects"),
        ))
    }

    /// Tells the limiter what the answer said (its hints on a 200, the penalty of a 429), then
    /// what the attempt ended with.
    async fn classify(
        &self,
        status: u16,
        json: Option<Value>,
        call: &Call,
        request: &Request,
        hints: &ServerHints,
    ) -> Result<(Attempt, Outcome), IgError> {
        if status == 200 {
            self.limiter.on_hints(request, hints).await?;
        }
        Ok(match judge(status, json, call) {
            Verdict::Attempt(attempt, outcome) => (attempt, outcome),
            Verdict::TooManyRequests => {
                let until = self.limiter.on_429(request, hints).await?;
                tracing::warn!(account = %self.account, query_type = %request.query_type, %until,
                    "429 Too Many Requests; the penalty is recorded");
                (
                    Attempt::Fail(IgError::RateLimited {
                        until,
                        got_429: true,
                    }),
                    Outcome::RateLimited,
                )
            }
        })
    }

    /// Waits for the limiter's permit, or reports a wait too long to sleep through.
    async fn permit(&self, request: &Request) -> Result<(), IgError> {
        match self
            .limiter
            .acquire_within(request, self.max_inline_wait)
            .await?
        {
            Ok(_) => Ok(()),
            Err(wait) => Err(IgError::RateLimited {
                until: Utc::now()
                    + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1)),
                got_429: false,
            }),
        }
    }

    fn count(&self, class: &str, outcome: Outcome, started: Instant) {
        self.metrics
            .requests
            .with_label_values(&[class, outcome.as_str()])
            .inc();
        self.metrics
            .request_seconds
            .with_label_values(&[class])
            .observe(started.elapsed().as_secs_f64());
        self.metrics.touch();
    }

    fn build(
        &self,
        call: &Call,
        url: &str,
        query: &[(String, String)],
        form: Option<&Vec<(String, String)>>,
    ) -> reqwest::RequestBuilder {
        let url = if query.is_empty() {
            url.to_owned()
        } else {
            format!(
                "{url}{}{}",
                if url.contains('?') { '&' } else { '?' },
                serde_urlencoded::to_string(query).unwrap_or_default()
            )
        };
        let url = url.as_str();
        let builder = match form {
            Some(fields) => self
                .http
                .post(url)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(serde_urlencoded::to_string(fields).unwrap_or_default()),
            None => self.http.get(url),
        };
        let session = self.session();
        let web = "https://www.instagram.com";
        let mut headers = HeaderMap::new();
        let mut put = |name: &str, value: &str| {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(n, v);
            }
        };
        match &call.api {
            Api::Mobile => {
                put("user-agent", MOBILE_USER_AGENT);
                put("x-ig-app-id", MOBILE_APP_ID);
                put("x-ig-capabilities", "3brTvw==");
                put("x-ig-connection-type", "WIFI");
                put("x-ig-connection-speed", "2000kbps");
                put("x-pigeon-session-id", &session.pigeon_session_id);
                let now = Utc::now();
                put(
                    "x-pigeon-rawclienttime",
                    &format!("{}.{:03}", now.timestamp(), now.timestamp_subsec_millis()),
                );
                put("accept-language", "en-US");
                let mut sent_as_header = Vec::new();
                for (cookie, header) in [
                    ("mid", "x-mid"),
                    ("ds_user_id", "ig-u-ds-user-id"),
                    ("ig_did", "x-ig-device-id"),
                    ("ig_did", "x-ig-family-device-id"),
                ] {
                    if let Some(v) = session.cookie(cookie) {
                        put(header, v);
                        sent_as_header.push(cookie);
                    }
                }
                if let Some(uid) = session.user_id() {
                    put("ig-intended-user-id", uid);
                }
                if let Some(rur) = session.cookie("rur") {
                    put("ig-u-rur", &decode_rur(rur));
                    sent_as_header.push("rur");
                }
                for (name, value) in &session.ig_set {
                    put(name, value);
                }
                // With a bearer token (sent back from `ig-set-authorization`) cookies are not sent.
                if !session.ig_set.contains_key("authorization")
                    && let Some(cookies) = session.cookie_header(&sent_as_header)
                {
                    put("cookie", &cookies);
                }
            }
            api => {
                put("user-agent", &self.config.user_agent);
                put("accept-language", "en-US,en;q=0.8");
                put("origin", web);
                put(
                    "referer",
                    call.referer
                        .as_deref()
                        .unwrap_or("https://www.instagram.com/"),
                );
                put("x-instagram-ajax", "1");
                put("x-requested-with", "XMLHttpRequest");
                if let Some(csrf) = session.cookie("csrftoken") {
                    put("x-csrftoken", csrf);
                }
                if matches!(api, Api::Graphql { .. } | Api::DocId { .. }) {
                    put("authority", "www.instagram.com");
                    put("scheme", "https");
                    put("accept", "*/*");
                }
                if let Some(cookies) = session.cookie_header(&[]) {
                    put("cookie", &cookies);
                }
            }
        }
        builder.headers(headers)
    }

    /// Instaloader's login (reference §6): the home page for a CSRF token, then the ajax login
    /// with `enc_password`. On success the session holds Instagram's cookies.
    pub async fn login(&self, username: &str, password: &str) -> Result<(), IgError> {
        self.forget_session();
        let mut home = Call::web("/", &[]);
        home.html = true;
        self.send(&home).await?;
        if self.with_session(|s| s.cookie("csrftoken").is_none()) {
            return Err(IgError::LoginRefused(
                "the home page set no csrftoken cookie".into(),
            ));
        }
        let enc_password = format!(
            "#PWD_INSTAGRAM_BROWSER:0:{}:{password}",
            Utc::now().timestamp()
        );
        let mut call = Call::web("/api/v1/web/accounts/login/ajax/", &[]);
        call.form = Some(vec![
            ("enc_password".into(), enc_password),
            ("username".into(), username.to_owned()),
        ]);
        call.referer = Some("https://www.instagram.com/accounts/login/".into());
        let answer = self.send(&call).await?;
        let j = &answer.json;
        if j.get("authenticated").and_then(Value::as_bool) == Some(true) && self.is_logged_in() {
            return Ok(());
        }
        if j.get("user").and_then(Value::as_bool) == Some(false) {
            return Err(IgError::LoginRefused(format!(
                "Instagram knows no user {username:?}"
            )));
        }
        Err(IgError::LoginRefused(format!(
            "wrong password for {username:?}"
        )))
    }
}

/// What an answer's status and body say, before the limiter hears of it.
#[derive(Debug)]
pub enum Verdict {
    /// The attempt's end, and the outcome it is counted under.
    Attempt(Attempt, Outcome),
    /// A 429: the limiter records the penalty and says until when.
    TooManyRequests,
}

/// Longest piece of Instagram's text that goes into an error (and so into a job's `last_error`).
pub const MAX_REASON_CHARS: usize = 200;

/// The part of reading an answer that needs no I/O: its status and JSON (as [`parse_body`] made
/// it) to done, retry or fail (reference §5). Every reason quotes Instagram's words at most
/// [`MAX_REASON_CHARS`] characters long. `fuzz/fuzz_targets/ig_verdict.rs` feeds it any answer.
pub fn judge(status: u16, json: Option<Value>, call: &Call) -> Verdict {
    const BLOCKED: [&str; 3] = [
        "checkpoint_required",
        "challenge_required",
        "feedback_required",
    ];
    let message = short(
        json.as_ref()
            .and_then(|j| j.get("message"))
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    let (attempt, outcome) = match status {
        200 => match json {
            None if call.html => (
                Attempt::Done(Answer {
                    json: Value::Null,
                    status,
                }),
                Outcome::Ok,
            ),
            None => (
                Attempt::Retry(Outcome::InvalidJson, "the answer is not JSON".into()),
                Outcome::InvalidJson,
            ),
            // Instagram's `status` is "ok" or "fail"; anything else (an object, a number) is an
            // answer we do not understand, not a success.
            Some(j) if j.get("status").is_none_or(|s| s == "ok") => {
                (Attempt::Done(Answer { json: j, status }), Outcome::Ok)
            }
            Some(j) => {
                let said = match &j["status"] {
                    Value::String(s) => format!("{:?}", short(s)),
                    value => short(&value.to_string()),
                };
                (
                    Attempt::Retry(Outcome::ServerError, format!("status {said}: {message}")),
                    Outcome::ServerError,
                )
            }
        },
        400 if json
            .as_ref()
            .and_then(|j| j.get("two_factor_required"))
            .and_then(Value::as_bool)
            == Some(true) =>
        {
            (
                Attempt::Fail(IgError::LoginRefused(
                    "two-factor authentication is required: log in with Instaloader and \
                     import its session file (trawl accounts import-session)"
                        .into(),
                )),
                Outcome::BadRequest,
            )
        }
        400 if BLOCKED.contains(&message.as_str()) => (
            Attempt::Fail(IgError::AccountBlocked(message)),
            Outcome::Checkpoint,
        ),
        400 if call.paginated => (
            Attempt::Fail(IgError::BadRequest(message)),
            Outcome::BadRequest,
        ),
        400 => (
            Attempt::Retry(Outcome::BadRequest, format!("400: {message}")),
            Outcome::BadRequest,
        ),
        401 => (
            Attempt::Fail(IgError::LoginRequired),
            Outcome::LoginRequired,
        ),
        403 if message == "login_required" => (
            Attempt::Fail(IgError::LoginRequired),
            Outcome::LoginRequired,
        ),
        403 => (
            Attempt::Fail(IgError::Forbidden(message)),
            Outcome::Forbidden,
        ),
        404 => (Attempt::Fail(IgError::NotFound(message)), Outcome::NotFound),
        429 => return Verdict::TooManyRequests,
        other => (
            Attempt::Retry(Outcome::ServerError, format!("HTTP {other}: {message}")),
            Outcome::ServerError,
        ),
    };
    Verdict::Attempt(attempt, outcome)
}

fn short(message: &str) -> String {
    message.chars().take(MAX_REASON_CHARS).collect()
}

/// A transport error without its URL (a query string can hold a cursor; never log secrets).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "connection dropped while reading the answer"
    } else {
        "transport error"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// An answer's body as the client reads it: its JSON with NUL scrubbed, or `None` when it is not
/// JSON (a retry for a 200, unless an HTML page was asked for).
pub fn parse_body(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok().map(|mut j| {
        scrub_nul(&mut j);
        j
    })
}

/// PostgreSQL's text and jsonb cannot hold NUL (`\u0000`): it becomes U+FFFD in every string
/// and key of an answer, so one odd character cannot make a page (or a reason) unstorable.
fn scrub_nul(value: &mut Value) {
    match value {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{fffd}"),
        Value::Array(items) => items.iter_mut().for_each(scrub_nul),
        Value::Object(map) if map.keys().any(|k| k.contains('\0')) => {
            for (key, mut v) in std::mem::take(map) {
                scrub_nul(&mut v);
                map.insert(key.replace('\0', "\u{fffd}"), v);
            }
        }
        Value::Object(map) => map.values_mut().for_each(scrub_nul),
        _ => {}
    }
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(format!("answer larger than {MAX_BODY_BYTES} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(without_url(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(egress: Option<&str>, cookies: &str) -> InstagramClient {
        let config = trawl_shared::config::Config::default();
        // Never connected: only the scopes a request would count against are asked for.
        let pool = sqlx::PgPool::connect_lazy("postgres://localhost/unused").expect("lazy pool");
        let limiter = Arc::new(Limiter::new(
            pool,
            &config.limiter,
            Arc::new(trawl_shared::limiter::metrics::LimiterMetrics::new().expect("metrics")),
        ));
        InstagramClient::new(
            &config.instagram,
            limiter,
            Arc::new(WorkerMetrics::new().expect("metrics")),
            Identity {
                account: "a1".into(),
                egress: egress.map(str::to_owned),
                session: Session::from_cookie_string(cookies),
            },
            1,
            Duration::from_secs(1),
        )
        .expect("client")
    }

    /// Instagram counts requests without a session against the IP: a fleet logging in at once
    /// must share that window, not count each login only against its own account.
    #[tokio::test]
    async fn requests_without_a_session_count_against_the_shared_ip() {
        assert_eq!(
            client(None, "csrftoken=t").egress_scope().as_deref(),
            Some(SHARED_EGRESS)
        );
        assert_eq!(
            client(None, "sessionid=s; csrftoken=t").egress_scope(),
            None
        );
        assert_eq!(
            client(Some("ip-7"), "csrftoken=t")
                .egress_scope()
                .as_deref(),
            Some("ip-7")
        );
        assert_eq!(
            client(Some("ip-7"), "sessionid=s")
                .egress_scope()
                .as_deref(),
            Some("ip-7")
        );
    }

    #[test]
    fn debug_output_never_shows_cookie_or_form_values() {
        let s = Session::from_cookie_string("sessionid=SECRETVALUE; csrftoken=t");
        assert!(!format!("{s:?}").contains("SECRETVALUE"));
        let mut call = Call::web("/login", &[]);
        call.form = Some(vec![("enc_password".into(), "hunter2".into())]);
        let shown = format!("{call:?}");
        assert!(shown.contains("enc_password") && !shown.contains("hunter2"));
    }

    #[test]
    fn rur_is_unquoted_and_unescaped() {
        assert_eq!(
            decode_rur("\"NAO\\054123\\0541790000000:01f7\""),
            "NAO,123,1790000000:01f7"
        );
        assert_eq!(decode_rur("plain"), "plain");
        assert_eq!(decode_rur("\"a\\\"b\""), "a\"b");
    }

    #[test]
    fn sessions_round_trip_and_know_their_user() {
        let s = Session::from_cookie_string("sessionid=abc; ds_user_id=42; csrftoken=t");
        assert!(s.is_logged_in());
        assert_eq!(s.user_id(), Some("42"));
        let again = Session::from_cookie_string(&s.to_cookie_string());
        assert_eq!(again.cookies, s.cookies);
        assert!(!Session::from_cookie_string("csrftoken=t").is_logged_in());
    }

    #[test]
    fn set_cookie_and_ig_set_headers_are_absorbed() {
        let mut s = Session::default();
        let mut h = HeaderMap::new();
        h.append(
            reqwest::header::SET_COOKIE,
            HeaderValue::from_static("sessionid=xyz; Path=/; HttpOnly"),
        );
        h.append(
            reqwest::header::SET_COOKIE,
            HeaderValue::from_static("csrftoken=\"\"; Max-Age=0"),
        );
        h.insert("ig-set-ig-u-rur", HeaderValue::from_static("NAO,1,2:3"));
        h.insert("x-ig-set-www-claim", HeaderValue::from_static("hmac.1"));
        s.cookies.insert("csrftoken".into(), "old".into());
        s.absorb(&h);
        assert_eq!(s.cookie("sessionid"), Some("xyz"));
        assert_eq!(s.cookie("csrftoken"), None);
        assert_eq!(
            s.ig_set.get("ig-u-rur").map(String::as_str),
            Some("NAO,1,2:3")
        );
        assert_eq!(
            s.ig_set.get("x-ig-www-claim").map(String::as_str),
            Some("hmac.1")
        );
    }

    fn verdict(status: u16, body: &str, call: &Call) -> String {
        match judge(status, parse_body(body.as_bytes()), call) {
            Verdict::Attempt(Attempt::Done(a), o) => format!("done {} {}", a.status, o.as_str()),
            Verdict::Attempt(Attempt::Retry(o, reason), _) => {
                format!("retry {}: {reason}", o.as_str())
            }
            Verdict::Attempt(Attempt::Fail(e), o) => format!("fail {}: {e}", o.as_str()),
            Verdict::TooManyRequests => "429".into(),
        }
    }

    #[test]
    fn answers_are_judged_as_the_reference_says() {
        let web = Call::web("/api/v1/users/web_profile_info/", &[]);
        let page = Call {
            paginated: true,
            ..Call::graphql("9b498c08", &serde_json::json!({}))
        };
        let home = Call {
            html: true,
            ..Call::web("/", &[])
        };
        let cases = [
            (200, r#"{"data": {}}"#, &web, "done 200 ok"),
            (200, r#"{"status": "ok"}"#, &web, "done 200 ok"),
            (200, "<html>", &home, "done 200 ok"),
            (
                200,
                "<html>",
                &web,
                "retry invalid_json: the answer is not JSON",
            ),
            (
                200,
                r#"{"status": "fail", "message": "try later"}"#,
                &web,
                r#"retry server_error: status "fail": try later"#,
            ),
            (
                400,
                r#"{"message": "checkpoint_required"}"#,
                &web,
                "fail checkpoint: the account needs a human: checkpoint_required",
            ),
            (
                400,
                r#"{"message": "bad first"}"#,
                &page,
                "fail bad_request: bad request: bad first",
            ),
            (
                200,
                r#"{"status": {"caption": "ok"}}"#,
                &web,
                r#"retry server_error: status {"caption":"ok"}: "#,
            ),
            (
                400,
                r#"{"message": "x"}"#,
                &web,
                "retry bad_request: 400: x",
            ),
            (
                403,
                r#"{"message": "login_required"}"#,
                &web,
                "fail login_required: not logged in (redirected to the login page)",
            ),
            (404, "", &web, "fail not_found: not found: "),
            (429, "", &web, "429"),
            (502, "<html>", &web, "retry server_error: HTTP 502: "),
        ];
        for (status, body, call, want) in cases {
            assert_eq!(verdict(status, body, call), want, "{status} {body}");
        }
    }

    /// Instagram's words go into `last_error` and logs: a huge `status` or `message` is cut.
    #[test]
    fn a_reason_quotes_at_most_a_bounded_piece_of_the_answer() {
        let web = Call::web("/", &[]);
        let huge = "x".repeat(1_000_000);
        for body in [
            serde_json::json!({ "status": huge }),
            serde_json::json!({ "status": "fail", "message": huge }),
        ] {
            let reason = verdict(200, &body.to_string(), &web);
            assert!(
                reason.len() < 3 * MAX_REASON_CHARS,
                "{} bytes",
                reason.len()
            );
        }
    }
}
