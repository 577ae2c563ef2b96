//! The HTTP server: Instagram's web endpoints in Instagram's shapes, the login flow, server-side
//! windows, and the admin routes (`/__sim/…`) that tests use.
//!
//! This module holds the state ([`Sim`]) and the request gate every Instagram route goes through
//! ([`handle`], [`handle_cached`]): windows, faults, the cache and the audit log. The routes live
//! in `login` (start page, login, two-factor), `web` (REST pages and the HTML profile page),
//! `graphql` (`query_hash` and `doc_id` queries), `mobile` (the app's API under `/mobile`), `cdn`
//! (media downloads, which bypass the gate's windows) and `admin` (`/__sim/*`).
//!
//! Lock order: each of the `Sim`'s locks is held only for one short, synchronous step, never across
//! an `.await`, and no path holds two at once (a request takes `sessions`, then `windows`, then
//! `faults`, `strikes`, `cache` and `audit`, each released before the next). A new step that must
//! hold two takes them in field order (`windows`, `audit`, `sessions`, `pending_two_factor`,
//! `faults`, `cache`, `strikes`), so that two requests can never wait on each other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::audit::{self, Entry};
use crate::data::DataSet;
use crate::faults::{Fault, Faults};
use crate::windows::{Limits, QueryType, Windows};

mod admin;
mod cdn;
mod graphql;
mod login;
mod mobile;
pub(crate) mod shapes;
mod web;

pub use mobile::MOBILE_APP_ID;

/// The query hashes this simulator serves (Instaloader's well-known values).
pub mod hashes {
    /// `doc_id` of the mobile-style GraphQL query for a profile's posts (POST /graphql/query).
    pub const DOC_PROFILE_POSTS: &str = "17991233890457762";
    pub const PROFILE_POSTS: &str = "003056d32c2554def87228bc3fd9668a";
    pub const COMMENTS: &str = "97b41c52301f77ce508f55e66d17620e";
    pub const FOLLOWERS: &str = "37479f2b8209594dde7facb0d904896a";
    pub const FOLLOWEES: &str = "58712303d941c6855d4e888c5f0cd22f";
    pub const HASHTAG: &str = "9b498c08113f1e09617a1703c22b2f32";
    pub const TAGGED: &str = "e31a871f7301132ceaab56507a66bbb7";
    /// The viewer's own profile (Instaloader's `test_login`).
    pub const OWN_PROFILE: &str = "d6f4427fbe92d846298cf93df0b937d3";
    /// The replies of one comment.
    pub const COMMENT_REPLIES: &str = "51fdd02b67508306ad4484ff574a0b62";
    /// The viewer's story tray.
    pub const STORY_TRAY: &str = "d15efd8c0c5b23f0ef71f18bf363c704";
    /// Story reels of users by id.
    pub const STORIES: &str = "303a4ae99711322310f25250d988f3b7";
    /// A user's highlights.
    pub const HIGHLIGHTS: &str = "7c16654f22c819fb63d1183034a5162f";
    /// The items of highlights by id.
    pub const HIGHLIGHT_ITEMS: &str = "45246d3fe16ccc6577e0bd297a5db1ab";

    /// doc_id: a profile by user id (`data.user`), on `graphql/query` and `api/graphql`.
    pub const DOC_PROFILE: &str = "27937681195819736";
    /// doc_id: a post by shortcode (`xdt_api__v1__media__shortcode__web_info`).
    pub const DOC_POST: &str = "27128499623469141";
    /// doc_id: a profile's posts for a logged-in viewer, in the app's media shape.
    pub const DOC_TIMELINE: &str = "29104886249145907";
    /// doc_id: a profile's further posts for a logged-out viewer, by the page's id.
    pub const DOC_TIMELINE_ANONYMOUS: &str = "28904005159232689";
    /// doc_id: a profile's reels.
    pub const DOC_REELS: &str = "7845543455542541";
    /// doc_id: a profile's reels with play counts (Instaloader's fallback for a reel's plays).
    pub const DOC_REELS_PLAYS: &str = "27234427476213202";
}

/// Largest `first` a GraphQL page may ask for; more gets 400 so that clients shrink it.
pub const MAX_PAGE: u64 = 50;

pub struct Sim {
    pub data: DataSet,
    pub(crate) windows: Mutex<Windows>,
    pub(crate) audit: Mutex<Vec<Entry>>,
    /// sessionid → (account name, when it logged in).
    pub(crate) sessions: Mutex<HashMap<String, (String, Instant)>>,
    /// Login accounts: name → password.
    pub(crate) accounts: HashMap<String, String>,
    pub(crate) challenges: HashMap<String, LoginChallenge>,
    pub(crate) session_ttl: Option<std::time::Duration>,
    /// Two-factor identifiers handed out → account.
    pub(crate) pending_two_factor: Mutex<HashMap<String, String>>,
    pub(crate) started: Instant,
    /// The wall clock at `started`, so that audit times can be put beside other clocks.
    pub(crate) started_unix: f64,
    pub(crate) counter: AtomicU64,
    pub(crate) faults: Mutex<Faults>,
    /// Rendered deterministic pages: key → (headers, body).
    pub(crate) cache: std::sync::RwLock<HashMap<String, (HeaderMap, Bytes)>>,
    /// The Instagram-style v1 REST API.
    pub(crate) v1: crate::v1::V1State,
    /// 429s per account; at `checkpoint_after` the account is put in `checkpoint_required`.
    pub(crate) strikes: Mutex<HashMap<String, u32>>,
    pub(crate) checkpoint_after: u32,
    /// Take the client IP from `X-Forwarded-For` (tests that stand in for several IPs).
    pub(crate) trust_forwarded_for: bool,
    /// The media URLs' base, signer and lifetime.
    pub(crate) cdn: cdn::CdnState,
    /// The user ids of the login accounts, whose profile pictures the CDN also serves.
    pub(crate) account_ids: std::collections::HashSet<u64>,
}

/// What a login of a configured account runs into after the right password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginChallenge {
    /// `two_factor_required`; the code is [`TWO_FACTOR_CODE`].
    TwoFactor,
    /// `checkpoint_required`: a human must act; the login cannot complete.
    Checkpoint,
}

/// The one code the simulator's two-factor step accepts.
pub const TWO_FACTOR_CODE: &str = "123456";

pub struct SimConfig {
    pub data: DataSet,
    /// Accounts whose login is challenged.
    pub challenges: Vec<(String, LoginChallenge)>,
    /// Sessions end this long after login (`None`: never); a request with an ended session is
    /// redirected to the login page.
    pub session_ttl: Option<std::time::Duration>,
    pub faults: Faults,
    /// Put an account in `checkpoint_required` after this many 429s (0: never).
    pub checkpoint_after_429s: u32,
    pub accounts: Vec<(String, String)>,
    pub time_scale: f64,
    pub trust_forwarded_for: bool,
    /// Media URLs and the bytes behind them.
    pub cdn: crate::cdn::CdnConfig,
    /// The v1 REST API's settings.
    pub v1: crate::v1::V1Config,
}

impl SimConfig {
    /// A well-behaved Instagram: no faults, no challenges, sessions that never end, the given
    /// login accounts, windows scaled by `time_scale` (demos and benchmarks).
    pub fn fault_free(data: DataSet, accounts: Vec<(String, String)>, time_scale: f64) -> Self {
        Self {
            data,
            faults: Faults::default(),
            checkpoint_after_429s: 0,
            challenges: Vec::new(),
            session_ttl: None,
            accounts,
            time_scale,
            trust_forwarded_for: false,
            cdn: crate::cdn::CdnConfig::default(),
            v1: crate::v1::V1Config::default(),
        }
    }
}

impl Sim {
    pub fn new(config: SimConfig) -> Arc<Self> {
        let seed = config.data.seed;
        let account_ids = config
            .accounts
            .iter()
            .map(|(name, _)| account_user_id(seed, name))
            .collect();
        Arc::new(Self {
            data: config.data,
            windows: Mutex::new(Windows::new(Limits::instagram(config.time_scale))),
            audit: Mutex::new(Vec::new()),
            sessions: Mutex::new(HashMap::new()),
            accounts: config.accounts.into_iter().collect(),
            challenges: config.challenges.into_iter().collect(),
            session_ttl: config.session_ttl,
            pending_two_factor: Mutex::new(HashMap::new()),
            started: Instant::now(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            counter: AtomicU64::new(1),
            faults: Mutex::new(config.faults),
            cache: std::sync::RwLock::new(HashMap::new()),
            strikes: Mutex::new(HashMap::new()),
            v1: crate::v1::V1State::new(config.time_scale, config.v1),
            checkpoint_after: config.checkpoint_after_429s,
            trust_forwarded_for: config.trust_forwarded_for,
            cdn: cdn::CdnState::new(seed, &config.cdn, config.time_scale),
            account_ids,
        })
    }

    /// Time since the simulator started.
    /// The windows the simulator enforces (scaled by its time scale).
    pub fn limits(&self) -> Limits {
        self.windows
            .lock()
            .map(|w| w.limits())
            .unwrap_or(Limits::instagram(1.0))
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub(crate) fn check_password(&self, username: &str, password: &str) -> bool {
        self.accounts.get(username).is_some_and(|p| p == password)
    }

    /// Appends one request to the audit log.
    pub(crate) fn log(
        &self,
        account: Option<String>,
        ip: String,
        q: &QueryType,
        status: u16,
        bytes: usize,
    ) {
        if let Ok(mut log) = self.audit.lock() {
            log.push(Entry::new(
                self.started.elapsed().as_secs_f64(),
                account,
                ip,
                current_route(),
                q,
                status,
                bytes,
            ));
        }
    }

    /// The numeric id of a login account (its `ds_user_id`).
    pub fn account_user_id(&self, name: &str) -> u64 {
        account_user_id(self.data.seed, name)
    }

    pub(crate) fn token(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{prefix}{:016x}",
            crate::data::mix(
                self.data.seed,
                99,
                n,
                self.started.elapsed().as_nanos() as u64
            )
        )
    }
}

fn account_user_id(seed: u64, name: &str) -> u64 {
    let h = name
        .bytes()
        .fold(0u64, |acc, b| crate::data::mix(seed, 7, acc, u64::from(b)));
    9_000_000_000 + h % 1_000_000_000
}

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .merge(login::routes())
        .merge(web::routes())
        .merge(graphql::routes())
        .merge(mobile::routes())
        .merge(cdn::routes())
        .merge(admin::routes())
        .merge(crate::v1::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            gate_layer,
        ))
        .fallback(fallback)
        .with_state(sim)
}

tokio::task_local! {
    /// The route template the request being served matched, for its audit entry.
    static ROUTE: String;
}

/// The route label of the request being served (see [`route_label`]); `fallback` outside one.
pub(crate) fn current_route() -> String {
    ROUTE
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "fallback".to_owned())
}

/// The audit log's `path`: the route template the request matched, so that the same request gets
/// the same label whoever sends it. `/graphql/query/` and `/graphql/query` are one endpoint.
fn route_label(request: &axum::extract::Request) -> String {
    let matched = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let path = matched.unwrap_or_else(|| {
        // Unmatched paths are kept literally (bounded), so a missing route shows what was asked.
        request.uri().path().chars().take(200).collect()
    });
    match path.as_str() {
        "/graphql/query/" => "/graphql/query".to_owned(),
        "/api/graphql/" => "/api/graphql".to_owned(),
        _ => path,
    }
}

/// Every routed request: tags it with its route for the audit log, then answers it with the first
/// matching override (`POST /__sim/faults`) before windows, other faults and handlers.
async fn gate_layer(
    State(sim): State<Arc<Sim>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = route_label(&request);
    ROUTE
        .scope(route, async move {
            match overridden(&sim, request).await {
                Ok(answer) => answer,
                Err(request) => next.run(request).await,
            }
        })
        .await
}

/// The 404 fallback: audited (and open to overrides) like any other request, under its literal
/// path.
async fn fallback(State(sim): State<Arc<Sim>>, request: axum::extract::Request) -> Response {
    let route = route_label(&request);
    ROUTE
        .scope(route, async move {
            let request = match overridden(&sim, request).await {
                Ok(answer) => return answer,
                Err(request) => request,
            };
            let peer = peer_of(&request);
            let c = caller(&sim, peer, request.headers());
            handle(&sim, &c, QueryType::Other, || {
                fail(StatusCode::NOT_FOUND, "Page not found")
            })
            .await
        })
        .await
}

fn peer_of(request: &axum::extract::Request) -> SocketAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0)
}

/// The override answer for `request` if one matches, else the request back untouched.
async fn overridden(
    sim: &Sim,
    request: axum::extract::Request,
) -> Result<Response, axum::extract::Request> {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let taken = sim
        .faults
        .lock()
        .ok()
        .and_then(|mut f| f.take_override(request.method().as_str(), &path_and_query));
    let Some(answer) = taken else {
        return Err(request);
    };
    let peer = peer_of(&request);
    let who = caller(sim, peer, request.headers());
    let (parts, body) = request.into_parts();
    // A doc_id query names its doc_id in the form body: read it so the override is labelled as
    // the handler would label the same request.
    let form: HashMap<String, String> = if parts.method == axum::http::Method::POST {
        let bytes = axum::body::to_bytes(body, 1024 * 1024)
            .await
            .unwrap_or_default();
        serde_urlencoded::from_bytes(&bytes).unwrap_or_default()
    } else {
        HashMap::new()
    };
    let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
    let q = classify(
        parts.uri.path(),
        &query_params(Some(query.to_owned())),
        &form,
        &parts.headers,
    );
    let (response, bytes) = override_response(&answer);
    sim.log(who.account, who.ip, &q, response.status().as_u16(), bytes);
    Ok(response)
}

/// The window a request counts against, as Instaloader 4.16 keys it: GraphQL by its query_hash
/// or doc_id (on `graphql/query` and `api/graphql` alike), everything under `/mobile` as
/// `iphone`, the rest as `other`; the requests 4.16 never counts (the login steps and the bare
/// start-page GET for a csrftoken) are `uncounted`, and media downloads are `cdn`. The handlers
/// decide the same way.
pub(crate) fn classify(
    path: &str,
    query: &HashMap<String, String>,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
) -> QueryType {
    if path.starts_with("/v/") {
        return QueryType::Cdn;
    }
    let graphql = path.starts_with("/graphql/query") || path.starts_with("/api/graphql");
    if graphql {
        if let Some(h) = query.get("query_hash") {
            return QueryType::QueryHash(h.clone());
        }
        if let Some(d) = form.get("doc_id") {
            return QueryType::DocId(d.clone());
        }
    }
    if path.starts_with("/mobile/") {
        return QueryType::Iphone;
    }
    let login = path == "/api/v1/web/accounts/login/ajax/"
        || path.ends_with("/accounts/login/ajax/two_factor/");
    if login || (path == "/" && !is_page_navigation(headers)) {
        return QueryType::Uncounted;
    }
    QueryType::Other
}

/// Whether a request is a browser's page navigation (Instaloader's `_get_page`), which 4.16
/// counts as `other`, unlike its bare `GET /` for a csrftoken.
pub(crate) fn is_page_navigation(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-dest")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("document"))
}

/// The response an override describes, and its body's length.
fn override_response(answer: &crate::faults::Override) -> (Response, usize) {
    // Checked when the override was posted; a failure here would be a bug in that check.
    let body = match answer.body_bytes() {
        Ok(b) => b,
        Err(e) => return (fail(StatusCode::INTERNAL_SERVER_ERROR, &e), 0),
    };
    let total = body.len();
    let mut response = match answer.drop_after_bytes {
        Some(n) if n < total => {
            use futures_util::StreamExt;
            let head = Bytes::from(body[..n].to_vec());
            // The pause lets the server flush the headers and the first bytes before the cut; an
            // error at once would drop the connection with nothing sent.
            let cut = futures_util::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                Err::<Bytes, std::io::Error>(std::io::Error::other("dropped by the simulator"))
            });
            let stream = futures_util::stream::once(async { Ok(head) }).chain(cut);
            let mut r = Response::new(axum::body::Body::from_stream(stream));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(total));
            r
        }
        _ => Response::new(axum::body::Body::from(body)),
    };
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    for (name, value) in &answer.headers {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(n, v);
        }
    }
    (response, total)
}

/// Who is asking: the logged-in account (from `sessionid`, as a cookie or inside the app's bearer
/// token) or only an IP.
pub(crate) struct Caller {
    pub(crate) account: Option<String>,
    pub(crate) ip: String,
    pub(crate) cookies: HashMap<String, String>,
    /// A non-empty `sessionid` cookie was sent but is unknown or has ended: Instagram sends such
    /// a client to the login page. An empty one is what anonymous clients send as a placeholder.
    pub(crate) stale_session: bool,
    /// `ds_user_id` from an `authorization: Bearer IGT:2:…` header, if one was sent.
    pub(crate) bearer_user_id: Option<String>,
}

/// The request's cookies. A name sent twice keeps its non-empty value: a client whose jar holds
/// both a placeholder `sessionid=` and the real one must not be taken for anonymous.
pub(crate) fn cookies(headers: &HeaderMap) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    let pairs = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='));
    for (k, v) in pairs {
        let keep = out
            .get(k)
            .is_some_and(|old| !old.is_empty() && v.is_empty());
        if !keep {
            out.insert(k.to_owned(), v.to_owned());
        }
    }
    out
}

/// `(ds_user_id, sessionid)` from the app's `authorization: Bearer IGT:2:<base64 JSON>` header.
pub(crate) fn bearer_session(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.trim().strip_prefix("Bearer IGT:2:")?;
    let decoded = base64_decode(encoded.trim())?;
    let token: Value = serde_json::from_slice(&decoded).ok()?;
    let text = |k: &str| match &token[k] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    Some((
        text("ds_user_id")?,
        text("sessionid").filter(|s| !s.is_empty())?,
    ))
}

/// Standard base64 (padding optional); `None` on any other character.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let digits = text.trim_end_matches('=').as_bytes();
    if digits.len() > 64 * 1024 || digits.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// The caller's address: the peer's, or `X-Forwarded-For` when the simulator trusts it.
pub(crate) fn client_ip(sim: &Sim, peer: SocketAddr, headers: &HeaderMap) -> String {
    let forwarded = sim
        .trust_forwarded_for
        .then(|| {
            headers
                .get("x-forwarded-for")?
                .to_str()
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .flatten();
    forwarded.unwrap_or_else(|| peer.ip().to_string())
}

pub(crate) fn caller(sim: &Sim, peer: SocketAddr, headers: &HeaderMap) -> Caller {
    let cookies = cookies(headers);
    let cookie_session = cookies.get("sessionid").filter(|s| !s.is_empty()).cloned();
    let bearer = bearer_session(headers);
    let session = cookie_session
        .clone()
        .or_else(|| bearer.as_ref().map(|(_, s)| s.clone()));
    let account = session.and_then(|s| {
        let mut sessions = sim.sessions.lock().ok()?;
        let (account, since) = sessions.get(&s).cloned()?;
        let expired = sim.session_ttl.is_some_and(|ttl| since.elapsed() >= ttl);
        if expired {
            sessions.remove(&s);
            return None;
        }
        Some(account)
    });
    let stale_session = account.is_none() && cookie_session.is_some();
    Caller {
        account,
        ip: client_ip(sim, peer, headers),
        cookies,
        stale_session,
        bearer_user_id: bearer.map(|(id, _)| id),
    }
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let text = body.to_string();
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                "application/json; charset=utf-8".to_owned(),
            ),
            (header::CONTENT_LENGTH, text.len().to_string()),
        ],
        text,
    )
        .into_response()
}

pub(crate) fn fail(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "message": message, "status": "fail" }))
}

pub(crate) fn too_many() -> Response {
    fail(
        StatusCode::TOO_MANY_REQUESTS,
        "Please wait a few minutes before you try again.",
    )
}

/// Where Instagram sends a client whose session it does not accept. Absolute, as Instagram sends
/// it: Instaloader only recognises an absolute `https://www.instagram.com/accounts/login…`.
pub const LOGIN_PAGE: &str = "https://www.instagram.com/accounts/login/";

pub(crate) fn login_redirect() -> Response {
    (StatusCode::FOUND, [(header::LOCATION, LOGIN_PAGE)]).into_response()
}

/// Counts the request in its windows, applies any fault, runs `serve` if it is within its windows,
/// and logs it.
pub(crate) async fn handle(
    sim: &Sim,
    caller: &Caller,
    q: QueryType,
    serve: impl FnOnce() -> Response,
) -> Response {
    handle_cached(sim, caller, q, None, serve).await
}

/// Most rendered pages kept; the cache is emptied when it is full (pages are cheap to rebuild).
const CACHE_ENTRIES: usize = 50_000;

/// Serves a deterministic page from the cache when `cache_key` has been rendered before.
async fn serve_cached(
    sim: &Sim,
    cache_key: Option<&str>,
    serve: impl FnOnce() -> Response,
) -> Response {
    let Some(key) = cache_key else {
        return serve();
    };
    if let Some((headers, body)) = sim.cache.read().ok().and_then(|c| c.get(key).cloned()) {
        let mut r = Response::new(axum::body::Body::from(body));
        *r.headers_mut() = headers;
        return r;
    }
    let response = serve();
    if response.status() != StatusCode::OK {
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, "cannot render page");
    };
    if let Ok(mut cache) = sim.cache.write() {
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key.to_owned(), (parts.headers.clone(), bytes.clone()));
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

pub(crate) async fn handle_cached(
    sim: &Sim,
    caller: &Caller,
    q: QueryType,
    cache_key: Option<&str>,
    serve: impl FnOnce() -> Response,
) -> Response {
    let scope = match &caller.account {
        Some(a) => format!("account:{a}"),
        None => format!("ip:{}", caller.ip),
    };
    // The arrival time is taken under the windows' lock, so that the audit log's times order
    // requests exactly as the windows admitted them: the oracle can then recompute every 429.
    let (admitted, now) = sim
        .windows
        .lock()
        .map(|mut w| {
            let now = Instant::now();
            (w.admit(&scope, &q, now), now)
        })
        .unwrap_or_else(|_| (false, Instant::now()));
    // One look at the fault settings per request, without copying them.
    let (latency, fault, forced_checkpoint) = sim
        .faults
        .lock()
        .map(|f| {
            let (latency, fault) = f.draw(fault_roll(sim));
            let forced = caller
                .account
                .as_ref()
                .is_some_and(|a| f.checkpoint.contains(a));
            (latency, fault, forced)
        })
        .unwrap_or((0, None, false));
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    let struck_out = |a: &String| {
        sim.checkpoint_after > 0
            && sim
                .strikes
                .lock()
                .is_ok_and(|s| s.get(a).copied().unwrap_or(0) >= sim.checkpoint_after)
    };
    let checkpoint = forced_checkpoint || caller.account.as_ref().is_some_and(struck_out);
    let response = if caller.stale_session {
        login_redirect()
    } else if checkpoint {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"message": "checkpoint_required", "checkpoint_url": "/challenge/",
                    "lock": false, "status": "fail"}),
        )
    } else if !admitted {
        if let (Some(a), Ok(mut strikes)) = (&caller.account, sim.strikes.lock()) {
            *strikes.entry(a.clone()).or_default() += 1;
        }
        too_many()
    } else {
        match fault {
            Some(Fault::ServerError(code)) => fail(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "Oops, an error occurred.",
            ),
            Some(Fault::InvalidJson) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                "{\"data\": {\"user\": {\"edge_owner",
            )
                .into_response(),
            Some(Fault::Drop) => dropped_response(),
            None => serve_cached(sim, cache_key, serve).await,
        }
    };
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if let Ok(mut log) = sim.audit.lock() {
        log.push(Entry::new(
            now.duration_since(sim.started).as_secs_f64(),
            caller.account.clone(),
            caller.ip.clone(),
            current_route(),
            &q,
            response.status().as_u16(),
            bytes,
        ));
    }
    response
}

/// The uniform numbers [`Faults::draw`] takes for one request: from the seed and a request
/// counter, so a run with the same requests in the same order meets the same faults.
/// The `drop` fault: headers, then a body that fails, as when the connection is cut mid-response.
pub(crate) fn dropped_response() -> Response {
    let broken = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("dropped by the simulator"))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_LENGTH, "1000")],
        axum::body::Body::from_stream(broken),
    )
        .into_response()
}

pub(crate) fn fault_roll(sim: &Sim) -> impl Fn(u64) -> f64 + use<> {
    let n = sim.counter.fetch_add(1, Ordering::Relaxed);
    let seed = sim.data.seed;
    move |k: u64| (crate::data::mix(seed, 1000 + k, n, 0) % 1_000_000) as f64 / 1e6
}

pub(crate) fn query_params(raw: Option<String>) -> HashMap<String, String> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default()
}
