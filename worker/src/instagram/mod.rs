//! The Instagram client: the three API types with the headers Instaloader 4.16 sends, one
//! account's cookies, the login flow, redirect handling, the error taxonomy and retries. Every
//! request, retries and followed redirects included, is let through by the shared limiter first.
//!
//! - `call`: what a crawler asks for (API, path, variables, how it presents itself);
//! - `session`: the account's cookies and what Instagram derives from them;
//! - `verdict`: reading a status and body into done, retry or fail, without I/O;
//! - this file: sending, with the limiter, redirects and retries.

mod call;
mod session;
mod verdict;

pub use call::{Api, Call, Shape, Vars, WebTokens};
pub use session::{Session, decode_rur};
pub use verdict::{MAX_REASON_CHARS, Verdict, judge, parse_body, query_refused, whole_page};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::Semaphore;
use trawl_shared::config::InstagramConfig;
use trawl_shared::limiter::{LedgerError, Limiter, Request, ServerHints};

use crate::egress::{self, ProxyFailure};
use crate::metrics::{Outcome, WorkerMetrics};
use trawl_shared::proxies::ProxyRoute;

/// The iPad app's id.
pub const MOBILE_APP_ID: &str = "124024574287414";
/// The web app's id, sent with every web request.
const WEB_APP_ID: &str = "936619743392459";
/// Where the web app lives; Instagram checks `Origin` and `Referer` against it, whatever base URL
/// the requests are sent to.
const WEB_ORIGIN: &str = "https://www.instagram.com";
const MOBILE_USER_AGENT: &str = "Instagram 361.0.0.35.82 (iPad13,8; iOS 18_0; en_US; en-US; \
                                 scale=2.00; 2048x2732; 674117118) AppleWebKit/420+";
/// Redirects followed within one request before it counts as a connection error.
const MAX_REDIRECTS: usize = 5;
/// Longest body read; a bigger answer is a connection error, not an out-of-memory.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// What went wrong, in the terms the worker acts on.
#[derive(Debug, thiserror::Error)]
pub enum IgError {
    /// checkpoint/challenge required: the account needs a human.
    #[error("the account needs a human: {0}")]
    AccountBlocked(String),
    /// feedback_required: Instagram blocks the account's actions for a while; it rests.
    #[error("Instagram blocks the account for a while: {0}")]
    FeedbackRequired(String),
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
    /// Instagram refused a query by its id: it has probably retired that doc_id or query_hash.
    /// The job fails with the configuration key to update.
    #[error(
        "Instagram refused {id} ({message}); if it has retired that id, set {key} to the one \
         its web app sends now"
    )]
    QueryRefused {
        key: &'static str,
        id: String,
        message: String,
    },
    /// Every attempt failed with a connection-class error.
    #[error("connection error after {attempts} attempts: {last}")]
    Connection { attempts: u32, last: String },
    /// The login itself was refused (wrong password, unknown user, two-factor).
    #[error("login refused: {0}")]
    LoginRefused(String),
    /// The ledger cannot be reached: no request is sent without a permit (fail closed).
    #[error("rate-limit ledger unavailable: {0}")]
    Ledger(#[from] LedgerError),
    /// The account's proxy, not Instagram, failed: the account is fine, its exit is not.
    #[error("proxy {proxy}: {failure}")]
    ProxyDown {
        proxy: String,
        failure: ProxyFailure,
    },
}

/// The egress group of accounts that have none: the one IP their workers share.
pub const SHARED_EGRESS: &str = "shared";

/// Whose requests a client sends: the account (its limiter scope), its egress group and cookies.
pub struct Identity {
    pub account: String,
    pub egress: Option<String>,
    pub session: Session,
    /// The proxy every request leaves through (`None`: straight out).
    pub proxy: Option<ProxyRoute>,
}

/// One account's client. Requests of one client share its cookies and its limiter scopes.
pub struct InstagramClient {
    http: reqwest::Client,
    proxy: Option<ProxyRoute>,
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
    /// `Null` for an HTML page.
    pub json: Value,
    pub status: u16,
    /// The body of an HTML page (empty for JSON answers).
    pub html: String,
}

/// What one attempt ended with.
#[derive(Debug)]
pub enum Attempt {
    Done(Answer),
    /// Try again (a connection-class error), with the reason.
    Retry(Outcome, String),
    /// The proxy failed to carry the request: retried like a connection error, and reported as
    /// the proxy's failure when it is the last.
    ProxyFailed(ProxyFailure),
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
            proxy,
        } = identity;
        let http = egress::client_builder(proxy.as_ref())?
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout.0)
            .connect_timeout(config.request_timeout.0.min(Duration::from_secs(10)))
            .build()?;
        let mut session = session;
        session.pigeon_session_id = uuid::Uuid::new_v4().to_string();
        Ok(Self {
            http,
            proxy,
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
    /// A call sent as a logged-out visitor counts against the IP too, even from a logged-in
    /// account (it also still counts against the account: more conservative than Instagram).
    fn egress_scope(&self, call: &Call) -> Option<String> {
        match &self.egress {
            Some(group) => Some(group.clone()),
            None if call.anonymous || !self.with_session(|s| s.is_logged_in()) => {
                Some(SHARED_EGRESS.to_owned())
            }
            None => None,
        }
    }

    pub fn page_length(&self) -> u32 {
        self.config.page_length
    }

    /// The doc_ids and query_hashes to send (Instaloader's values unless configured).
    pub fn config(&self) -> &InstagramConfig {
        &self.config
    }

    /// The start page's tokens for `api/graphql` queries, loaded once per session (as the web app
    /// and Instaloader do) with the account's cookies.
    pub async fn web_tokens(&self) -> Result<WebTokens, IgError> {
        if let Some(tokens) = self.with_session(|s| s.web_tokens.clone()) {
            return Ok(tokens);
        }
        let mut start = Call::page("/");
        start.anonymous = false;
        let page = self.send(&start).await?;
        let tokens =
            WebTokens::from_start_page(&page.html, self.is_logged_in()).map_err(|name| {
                IgError::Connection {
                    attempts: 1,
                    last: format!("the start page did not contain the token {name}"),
                }
            })?;
        self.with_session(|s| s.web_tokens = Some(tokens.clone()));
        Ok(tokens)
    }

    /// Makes sure the session holds a `csrftoken` cookie, which doc_id queries send back as
    /// `x-csrftoken`: a session without one asks the start page for it first.
    pub async fn ensure_csrf_token(&self) -> Result<(), IgError> {
        if self.with_session(|s| s.cookie("csrftoken").is_some()) {
            return Ok(());
        }
        let mut home = Call::web("/", &[]);
        home.shape = Shape::CsrfFetch;
        self.send(&home).await.map(|_| ())
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
        let mut proxy_failure = None;
        for attempt in 1..=attempts {
            match self.attempt(call).await? {
                Attempt::Done(answer) => return Ok(answer),
                Attempt::Fail(e) => return Err(e),
                Attempt::ProxyFailed(failure) => {
                    tracing::debug!(account = %self.account, path = %call.path, attempt,
                        %failure, "the proxy failed; retrying");
                    proxy_failure = Some(failure);
                    if attempt < attempts {
                        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    }
                }
                Attempt::Retry(outcome, reason) => {
                    proxy_failure = None;
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
        match (proxy_failure, &self.proxy) {
            (Some(failure), Some(route)) => Err(IgError::ProxyDown {
                proxy: route.name.clone(),
                failure,
            }),
            _ => Err(IgError::Connection { attempts, last }),
        }
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
            egress: self.egress_scope(call),
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
                    if let Some(failure) = egress::failure_of_error(self.proxy.as_ref(), &e) {
                        return Ok(Attempt::ProxyFailed(failure));
                    }
                    return Ok(Attempt::Retry(Outcome::Transport, without_url(&e)));
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            if let Some(failure) =
                egress::failure_of_answer(self.proxy.as_ref(), status.as_u16(), &headers)
            {
                // Instagram never saw the request: nothing of the answer is Instagram's.
                self.count(class, Outcome::Transport, started);
                return Ok(match (failure, &self.proxy) {
                    (ProxyFailure::AuthRequired, Some(route)) => {
                        Attempt::Fail(IgError::ProxyDown {
                            proxy: route.name.clone(),
                            failure: ProxyFailure::AuthRequired,
                        })
                    }
                    (failure, _) => Attempt::ProxyFailed(failure),
                });
            }
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
            if status.is_success()
                && json.is_none()
                && call.shape == Shape::Page
                && !whole_page(&body)
            {
                // A page that stops before its end embeds only part of what the crawl reads from
                // it: reading it would turn a dropped tail into "no such profile".
                self.count(class, Outcome::InvalidJson, started);
                return Ok(Attempt::Retry(
                    Outcome::InvalidJson,
                    "the page stops before its end".into(),
                ));
            }
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
            let (mut attempt, label) = self
                .classify(status.as_u16(), json, call, &request, &hints)
                .await?;
            if let Attempt::Done(answer) = &mut attempt
                && call.wants_html()
            {
                answer.html = String::from_utf8_lossy(&body).into_owned();
            }
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
            Api::Mobile => mobile_headers(&session, &mut put),
            api => {
                // Instaloader's web sessions: the desktop browser headers and the web app's id;
                // GraphQL queries go out on a copy with the XHR markers removed.
                put("user-agent", &self.config.user_agent);
                put("accept-language", "en-US,en;q=0.8");
                put("x-ig-app-id", WEB_APP_ID);
                let graphql = matches!(api, Api::Graphql { .. } | Api::DocId { .. });
                if !graphql && !call.anonymous {
                    put("origin", WEB_ORIGIN);
                    put("x-instagram-ajax", "1");
                    put("x-requested-with", "XMLHttpRequest");
                }
                match &call.referer {
                    // The web app url-quotes the referer of its GraphQL queries.
                    Some(r) => put("referer", &r.replacen("https://", "https%3A//", 1)),
                    None => put("referer", &format!("{WEB_ORIGIN}/")),
                }
                if graphql {
                    put("authority", "www.instagram.com");
                    put("scheme", "https");
                    put("accept", "*/*");
                }
                if let Some(lsd) = &call.lsd {
                    put("x-fb-lsd", lsd);
                    put("sec-fetch-dest", "empty");
                    put("sec-fetch-mode", "cors");
                    put("sec-fetch-site", "same-origin");
                }
                if call.shape == Shape::Page {
                    put("accept", "text/html");
                    put("sec-fetch-dest", "document");
                    put("sec-fetch-mode", "navigate");
                    put("sec-fetch-site", "none");
                }
                if !call.anonymous {
                    if let Some(csrf) = session.cookie("csrftoken") {
                        put("x-csrftoken", csrf);
                    }
                    if let Some(cookies) = session.cookie_header(&[]) {
                        put("cookie", &cookies);
                    }
                }
            }
        }
        builder.headers(headers)
    }

    /// Instaloader's login: the home page for a CSRF token, then the ajax login
    /// with `enc_password`. On success the session holds Instagram's cookies.
    pub async fn login(&self, username: &str, password: &str) -> Result<(), IgError> {
        self.forget_session();
        let mut home = Call::web("/", &[]);
        home.shape = Shape::CsrfFetch;
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

/// The iPad app's headers as Instaloader 4.16 sends them: the device and connection markers, the
/// values Instagram asked to have sent back (`ig-set-*`), the headers the app derives from its
/// cookies, and, when logged in, a bearer token instead of any cookie.
fn mobile_headers(session: &Session, put: &mut impl FnMut(&str, &str)) {
    put("user-agent", MOBILE_USER_AGENT);
    for (name, value) in [
        ("x-ads-opt-out", "1"),
        ("x-bloks-is-panorama-enabled", "true"),
        (
            "x-bloks-version-id",
            "16b7bd25c6c06886d57c4d455265669345a2d96625385b8ee30026ac2dc5ed97",
        ),
        ("x-fb-client-ip", "True"),
        ("x-fb-connection-type", "wifi"),
        ("x-fb-http-engine", "Liger"),
        ("x-fb-server-cluster", "True"),
        ("x-fb", "1"),
        ("x-ig-abr-connection-speed-kbps", "2"),
        ("x-ig-app-id", MOBILE_APP_ID),
        ("x-ig-app-locale", "en-US"),
        ("x-ig-app-startup-country", "US"),
        ("x-ig-bandwidth-speed-kbps", "0.000"),
        ("x-ig-capabilities", "36r/F/8="),
        ("x-ig-connection-speed", "2000kbps"),
        ("x-ig-connection-type", "WiFi"),
        ("x-ig-device-locale", "en-US"),
        ("x-ig-mapped-locale", "en-US"),
        ("x-ig-timezone-offset", "0"),
        ("x-ig-www-claim", "0"),
        ("x-tigon-is-retry", "False"),
        ("x-whatsapp", "0"),
        ("accept-language", "en-US,en;q=0.8"),
    ] {
        put(name, value);
    }
    put("x-pigeon-session-id", &session.pigeon_session_id);
    let now = Utc::now();
    put(
        "x-pigeon-rawclienttime",
        &format!("{}.{:06}", now.timestamp(), now.timestamp_subsec_micros()),
    );
    if let Some(uid) = session.user_id() {
        put("ig-intended-user-id", uid);
    }
    for (name, value) in &session.ig_set {
        put(name, value);
    }
    let mut sent_as_header = Vec::new();
    for (cookie, header) in [
        ("mid", "x-mid"),
        ("ds_user_id", "ig-u-ds-user-id"),
        ("ig_did", "x-ig-device-id"),
        ("ig_did", "x-ig-family-device-id"),
        ("ig_did", "family_device_id"),
    ] {
        if let Some(v) = session.cookie(cookie) {
            put(header, v);
            sent_as_header.push(cookie);
        }
    }
    if let Some(rur) = session.cookie("rur") {
        put("ig-u-rur", &decode_rur(rur));
        sent_as_header.push("rur");
    }
    let bearer = session
        .ig_set
        .get("authorization")
        .cloned()
        .or_else(|| session.bearer_token());
    match bearer {
        Some(token) => put("authorization", &token),
        None => {
            if let Some(cookies) = session.cookie_header(&sent_as_header) {
                put("cookie", &cookies);
            }
        }
    }
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
                proxy: None,
            },
            1,
            Duration::from_secs(1),
        )
        .expect("client")
    }

    /// Instagram counts requests without a session against the IP: a fleet logging in at once
    /// must share that window, not count each login only against its own account. A page loaded
    /// as a logged-out visitor counts against the IP even from a logged-in account.
    #[tokio::test]
    async fn requests_without_a_session_count_against_the_shared_ip() {
        let api = Call::web("/api/v1/x/", &[]);
        let page = Call::page("/someone/");
        let scope = |egress: Option<&str>, cookies: &str, call: &Call| {
            client(egress, cookies).egress_scope(call)
        };
        assert_eq!(
            scope(None, "csrftoken=t", &api).as_deref(),
            Some(SHARED_EGRESS)
        );
        assert_eq!(scope(None, "sessionid=s; csrftoken=t", &api), None);
        assert_eq!(
            scope(None, "sessionid=s; csrftoken=t", &page).as_deref(),
            Some(SHARED_EGRESS)
        );
        assert_eq!(
            scope(Some("ip-7"), "csrftoken=t", &api).as_deref(),
            Some("ip-7")
        );
        assert_eq!(
            scope(Some("ip-7"), "sessionid=s", &api).as_deref(),
            Some("ip-7")
        );
    }
}
