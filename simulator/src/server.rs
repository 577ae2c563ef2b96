//! The HTTP server: Instagram's web endpoints in Instagram's shapes, the login flow, server-side
//! windows, and the admin routes (`/__sim/…`) that tests use.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::audit::{self, Entry};
use crate::data::{DataSet, Post, PostType, User};
use crate::faults::{Fault, Faults};
use crate::windows::{Limits, QueryType, Windows};

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
}

/// Largest `first` a GraphQL page may ask for; more gets 400 so that clients shrink it.
pub const MAX_PAGE: u64 = 50;

pub struct Sim {
    pub data: DataSet,
    windows: Mutex<Windows>,
    audit: Mutex<Vec<Entry>>,
    /// sessionid → (account name, when it logged in).
    sessions: Mutex<HashMap<String, (String, Instant)>>,
    /// Login accounts: name → password.
    accounts: HashMap<String, String>,
    challenges: HashMap<String, LoginChallenge>,
    session_ttl: Option<std::time::Duration>,
    /// Two-factor identifiers handed out → account.
    pending_two_factor: Mutex<HashMap<String, String>>,
    started: Instant,
    /// The wall clock at `started`, so that audit times can be put beside other clocks.
    started_unix: f64,
    counter: AtomicU64,
    faults: Mutex<Faults>,
    /// Rendered deterministic pages: key → (headers, body).
    cache: std::sync::RwLock<HashMap<String, (HeaderMap, Bytes)>>,
    /// The v1 REST API of the API-design seed.
    pub(crate) v1: crate::v1::V1State,
    /// 429s per account; at `checkpoint_after` the account is put in `checkpoint_required`.
    strikes: Mutex<HashMap<String, u32>>,
    checkpoint_after: u32,
    /// Take the client IP from `X-Forwarded-For` (tests that stand in for several IPs).
    trust_forwarded_for: bool,
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
        }
    }
}

impl Sim {
    pub fn new(config: SimConfig) -> Arc<Self> {
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
            v1: crate::v1::V1State::new(config.time_scale),
            checkpoint_after: config.checkpoint_after_429s,
            trust_forwarded_for: config.trust_forwarded_for,
        })
    }

    /// Time since the simulator started.
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
                q,
                status,
                bytes,
            ));
        }
    }

    /// The numeric id of a login account (its `ds_user_id`).
    pub fn account_user_id(&self, name: &str) -> u64 {
        let h = name.bytes().fold(0u64, |acc, b| {
            crate::data::mix(self.data.seed, 7, acc, u64::from(b))
        });
        9_000_000_000 + h % 1_000_000_000
    }

    fn token(&self, prefix: &str) -> String {
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

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/api/v1/web/accounts/login/ajax/", post(login))
        .route(
            "/api/v1/web/accounts/login/ajax/two_factor/",
            post(login_two_factor),
        )
        .route("/api/v1/users/web_profile_info/", get(web_profile_info))
        .route("/p/{shortcode}/", get(post_by_shortcode))
        .route(
            "/mobile/api/v1/highlights/{id}/highlights_tray/",
            get(mobile_highlights),
        )
        .route("/graphql/query/", get(graphql_get))
        .route("/graphql/query", get(graphql_get).post(graphql_post))
        .route("/mobile/api/v1/users/{id}/info/", get(mobile_user_info))
        .route("/mobile/api/v1/feed/reels_media/", get(mobile_reels_media))
        .route("/__sim/audit.jsonl", get(audit_dump))
        .route("/__sim/oracle", get(oracle))
        .route("/__sim/clock", get(clock))
        .route("/__sim/metrics", get(metrics))
        .route("/__sim/faults", get(get_faults).post(set_faults))
        .merge(crate::v1::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            apply_override,
        ))
        .with_state(sim)
}

/// Answers a request with the first matching override (`POST /__sim/faults`), before windows,
/// other faults and handlers. The answer is logged in the audit log like any other.
async fn apply_override(
    State(sim): State<Arc<Sim>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
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
        return next.run(request).await;
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0);
    let who = caller(&sim, peer, request.headers());
    let q = if path_and_query.starts_with("/mobile/") {
        QueryType::Iphone
    } else {
        let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
        query_params(Some(query.to_owned()))
            .remove("query_hash")
            .map_or(QueryType::Other, QueryType::QueryHash)
    };
    let (response, bytes) = override_response(&answer);
    sim.log(who.account, who.ip, &q, response.status().as_u16(), bytes);
    response
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

/// The simulator's clock: `t` as in the audit log, and the Unix time the log's zero stands for, so
/// a test can compare audit times with the database's (`started_unix + t`).
async fn clock(State(sim): State<Arc<Sim>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"t": sim.started.elapsed().as_secs_f64(), "started_unix": sim.started_unix}),
    )
}

/// Who is asking: the logged-in account (from `sessionid`) or only an IP.
struct Caller {
    account: Option<String>,
    ip: String,
    cookies: HashMap<String, String>,
    /// A `sessionid` was sent but is unknown or has ended: Instagram sends such a client to the
    /// login page.
    stale_session: bool,
}

fn cookies(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn caller(sim: &Sim, peer: SocketAddr, headers: &HeaderMap) -> Caller {
    let cookies = cookies(headers);
    let account = cookies.get("sessionid").and_then(|s| {
        let mut sessions = sim.sessions.lock().ok()?;
        let (account, since) = sessions.get(s).cloned()?;
        let expired = sim.session_ttl.is_some_and(|ttl| since.elapsed() >= ttl);
        if expired {
            sessions.remove(s);
            return None;
        }
        Some(account)
    });
    let stale_session = account.is_none() && cookies.contains_key("sessionid");
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
    Caller {
        account,
        ip: forwarded.unwrap_or_else(|| peer.ip().to_string()),
        cookies,
        stale_session,
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
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

fn fail(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "message": message, "status": "fail" }))
}

fn too_many() -> Response {
    fail(
        StatusCode::TOO_MANY_REQUESTS,
        "Please wait a few minutes before you try again.",
    )
}

fn login_redirect() -> Response {
    (StatusCode::FOUND, [(header::LOCATION, "/accounts/login/")]).into_response()
}

/// Counts the request in its windows, applies any fault, runs `serve` if it is within its windows,
/// and logs it.
async fn handle(
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

async fn handle_cached(
    sim: &Sim,
    caller: &Caller,
    q: QueryType,
    cache_key: Option<&str>,
    serve: impl FnOnce() -> Response,
) -> Response {
    let now = Instant::now();
    let scope = match &caller.account {
        Some(a) => format!("account:{a}"),
        None => format!("ip:{}", caller.ip),
    };
    let admitted = sim
        .windows
        .lock()
        .map(|mut w| w.admit(&scope, &q, now))
        .unwrap_or(false);
    let n = sim.counter.fetch_add(1, Ordering::Relaxed);
    let roll = |k: u64| (crate::data::mix(sim.data.seed, 1000 + k, n, 0) % 1_000_000) as f64 / 1e6;
    // One look at the fault settings per request, without copying them.
    let (latency, fault, forced_checkpoint) = sim
        .faults
        .lock()
        .map(|f| {
            let (latency, fault) = f.draw(roll);
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
            Some(Fault::Drop) => {
                // A body that fails after the headers: the connection is cut mid-response.
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
            &q,
            response.status().as_u16(),
            bytes,
        ));
    }
    response
}

async fn home(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let mut c = caller(&sim, peer, &headers);
    c.stale_session = false;
    handle(&sim, &c, QueryType::Other, || {
        let csrf = sim.token("");
        let mut r = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!DOCTYPE html><html><head><title>Instagram</title></head><body></body></html>",
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("csrftoken={csrf}; Path=/; Secure")) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        r
    })
    .await
}

async fn login(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut c = caller(&sim, peer, &headers);
    c.stale_session = false;
    handle(&sim, &c, QueryType::Other, || {
        let csrf_header = headers.get("x-csrftoken").and_then(|v| v.to_str().ok());
        match (csrf_header, c.cookies.get("csrftoken")) {
            (Some(h), Some(cookie)) if h == cookie => {}
            _ => return fail(StatusCode::FORBIDDEN, "CSRF token missing or incorrect"),
        }
        let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        let Some(username) = form.get("username") else {
            return fail(StatusCode::BAD_REQUEST, "username missing");
        };
        // Instagram's web client sends `enc_password` = "#PWD_INSTAGRAM_BROWSER:0:<time>:<pw>".
        let password = form
            .get("enc_password")
            .and_then(|p| p.splitn(4, ':').nth(3))
            .or_else(|| form.get("password").map(String::as_str));
        let Some(expected) = sim.accounts.get(username) else {
            return json_response(
                StatusCode::OK,
                &json!({"authenticated": false, "user": false, "status": "ok"}),
            );
        };
        if password != Some(expected.as_str()) {
            return json_response(
                StatusCode::OK,
                &json!({"authenticated": false, "user": true, "status": "ok"}),
            );
        }
        match sim.challenges.get(username) {
            Some(LoginChallenge::Checkpoint) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"message": "checkpoint_required",
                            "checkpoint_url": "/challenge/action/AXH0/",
                            "lock": false, "status": "fail",
                            "error_type": "checkpoint_challenge_required"}),
                );
            }
            Some(LoginChallenge::TwoFactor) => {
                let identifier = sim.token("2F");
                if let Ok(mut pending) = sim.pending_two_factor.lock() {
                    pending.insert(identifier.clone(), username.clone());
                }
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"message": "", "two_factor_required": true,
                            "two_factor_info": {"username": username,
                                "two_factor_identifier": identifier,
                                "sms_two_factor_on": false, "totp_two_factor_on": true},
                            "status": "fail", "error_type": "two_factor_required"}),
                );
            }
            None => {}
        }
        logged_in(&sim, username)
    })
    .await
}

/// Creates a session for `username` and sets Instagram's cookies.
fn logged_in(sim: &Sim, username: &str) -> Response {
    {
        let session = sim.token("");
        if let Ok(mut sessions) = sim.sessions.lock() {
            sessions.insert(session.clone(), (username.to_owned(), Instant::now()));
        }
        let user_id = sim.account_user_id(username);
        let mut r = json_response(
            StatusCode::OK,
            &json!({"authenticated": true, "user": true, "userId": user_id.to_string(),
                    "oneTapPrompt": false, "status": "ok"}),
        );
        for cookie in [
            format!("sessionid={session}; Path=/; HttpOnly; Secure"),
            format!("ds_user_id={user_id}; Path=/; Secure"),
            format!("mid={}; Path=/; Secure", sim.token("Z")),
            format!("ig_did={}; Path=/; HttpOnly; Secure", sim.token("D")),
            format!("rur=\"NAO\\054{user_id}\\0541790000000:01f7\"; Path=/; HttpOnly; Secure"),
            format!("csrftoken={}; Path=/; Secure", sim.token("")),
        ] {
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        r
    }
}

/// The second step of a two-factor login: form `username`, `identifier`, `verificationCode`.
async fn login_two_factor(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut c = caller(&sim, peer, &headers);
    c.stale_session = false;
    handle(&sim, &c, QueryType::Other, || {
        let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        let pending = form
            .get("identifier")
            .and_then(|id| sim.pending_two_factor.lock().ok()?.get(id).cloned());
        let Some(username) = pending.filter(|u| form.get("username") == Some(u)) else {
            return fail(StatusCode::BAD_REQUEST, "Invalid two-factor identifier.");
        };
        if form.get("verificationCode").map(String::as_str) != Some(TWO_FACTOR_CODE) {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"message": "Please check the security code and try again.",
                        "status": "fail", "error_type": "sms_code_validation_code_invalid"}),
            );
        }
        if let (Some(id), Ok(mut pending)) = (form.get("identifier"), sim.pending_two_factor.lock())
        {
            pending.remove(id);
        }
        logged_in(&sim, &username)
    })
    .await
}

fn query_params(raw: Option<String>) -> HashMap<String, String> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default()
}

fn user_summary(u: &User) -> Value {
    json!({
        "id": u.id.to_string(),
        "username": u.username,
        "full_name": u.full_name,
        "profile_pic_url": u.profile_pic_url(),
        "is_private": u.is_private,
        "is_verified": u.is_verified,
    })
}

fn post_node(p: &Post, data: &DataSet) -> Value {
    let owner = &data.users[p.owner as usize];
    let display = format!("https://scontent.sim.instagram.test/v/t51/{}_n.jpg", p.id);
    let mut node = json!({
        "__typename": match p.kind { PostType::Image => "GraphImage", PostType::Sidecar(_) => "GraphSidecar", PostType::Video => "GraphVideo" },
        "id": p.id.to_string(),
        "shortcode": p.shortcode,
        "display_url": display,
        "is_video": p.kind == PostType::Video,
        "taken_at_timestamp": p.taken_at,
        "edge_media_to_caption": {"edges": [{"node": {"text": p.caption}}]},
        "edge_media_to_comment": {"count": p.comment_count},
        "edge_media_preview_like": {"count": p.likes},
        "edge_liked_by": {"count": p.likes},
        "comments_disabled": false,
        "owner": {"id": owner.id.to_string(), "username": owner.username},
        "location": p.location.map(|name| json!({"id": format!("{}", name.len() * 1000 + 7), "name": name, "has_public_page": true})),
        "edge_media_to_tagged_user": {"edges": p.tagged.iter().map(|&t| json!({"node": {"user": {"username": data.users[t as usize].username, "id": data.users[t as usize].id.to_string()}}})).collect::<Vec<_>>()},
    });
    match p.kind {
        PostType::Sidecar(n) => {
            node["edge_sidecar_to_children"] = json!({"edges": (0..n).map(|k| json!({"node": {
                "__typename": "GraphImage", "id": format!("{}{k}", p.id),
                "display_url": format!("https://scontent.sim.instagram.test/v/t51/{}_{k}_n.jpg", p.id),
                "is_video": false}})).collect::<Vec<_>>()});
        }
        PostType::Video => {
            node["video_url"] = json!(format!(
                "https://scontent.sim.instagram.test/v/t50/{}_n.mp4",
                p.id
            ));
            node["video_view_count"] = json!(p.likes * 7);
        }
        PostType::Image => {}
    }
    node
}

/// A comment with its replies (`edge_threaded_comments`), as Instagram nests them.
fn comment_node(sim: &Sim, cm: &crate::data::Comment) -> Value {
    let owner = &sim.data.users[cm.owner as usize];
    let replies: Vec<Value> = sim
        .data
        .replies(cm)
        .into_iter()
        .map(|(id, who, created_at, likes)| {
            let who = &sim.data.users[who as usize];
            json!({"node": {"id": id.to_string(), "text": format!("@{} agreed", owner.username),
                "created_at": created_at,
                "owner": {"id": who.id.to_string(), "username": who.username, "profile_pic_url": who.profile_pic_url()},
                "edge_liked_by": {"count": likes}}})
        })
        .collect();
    json!({"id": cm.id.to_string(), "text": cm.text, "created_at": cm.created_at,
        "owner": {"id": owner.id.to_string(), "username": owner.username, "profile_pic_url": owner.profile_pic_url()},
        "edge_liked_by": {"count": cm.likes},
        "edge_threaded_comments": {"count": replies.len(),
            "page_info": {"has_next_page": false, "end_cursor": null}, "edges": replies}})
}

fn encode_cursor(tag: &str, owner: u64, next: u64) -> String {
    let raw = format!("{tag}:{owner}:{next}");
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(cursor: &str, tag: &str, owner: u64) -> Option<u64> {
    if !cursor.len().is_multiple_of(2) || cursor.len() > 200 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let mut parts = text.split(':');
    (parts.next()? == tag && parts.next()?.parse::<u64>().ok()? == owner)
        .then(|| parts.next()?.parse().ok())
        .flatten()
}

/// One page of `total` items starting at `after`: (start, end, page_info).
fn page(total: u64, start: u64, first: u64, tag: &str, owner: u64) -> (u64, u64, Value) {
    let end = (start + first).min(total);
    let has_next = end < total;
    let info = json!({
        "has_next_page": has_next,
        "end_cursor": if has_next { Value::String(encode_cursor(tag, owner, end)) } else { Value::Null },
    });
    (start, end, info)
}

async fn web_profile_info(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let c = caller(&sim, peer, &headers);
    let key = format!("profile|{}", raw.as_deref().unwrap_or(""));
    let params = query_params(raw);
    handle_cached(&sim, &c, QueryType::Other, Some(&key), || {
        let Some(u) = params
            .get("username")
            .and_then(|n| sim.data.user_by_name(n))
        else {
            return fail(StatusCode::NOT_FOUND, "User not found");
        };
        let visible = !u.is_private;
        let (_, end, info) = page(
            u64::from(u.post_count),
            0,
            if visible { 12 } else { 0 },
            "posts",
            u.id,
        );
        let edges: Vec<Value> = (0..end as u32)
            .filter_map(|i| sim.data.post(u.index, i))
            .map(|p| json!({"node": post_node(&p, &sim.data)}))
            .collect();
        let mut user = user_summary(u);
        user["biography"] = json!(u.biography);
        user["profile_pic_url_hd"] = json!(u.profile_pic_url());
        user["edge_followed_by"] = json!({"count": u.followers.len()});
        user["edge_follow"] = json!({"count": u.following.len()});
        user["followed_by_viewer"] = json!(false);
        user["edge_owner_to_timeline_media"] = json!({
            "count": u.post_count,
            "page_info": if visible { info } else { json!({"has_next_page": false, "end_cursor": null}) },
            "edges": edges,
        });
        json_response(
            StatusCode::OK,
            &json!({"data": {"user": user}, "status": "ok"}),
        )
    })
    .await
}

/// A post by its shortcode, with its first comments (`/p/{shortcode}/?__a=1&__d=dis`).
async fn post_by_shortcode(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(code): axum::extract::Path<String>,
) -> Response {
    let c = caller(&sim, peer, &headers);
    let key = format!("post|{code}");
    handle_cached(&sim, &c, QueryType::Other, Some(&key), || {
        let Some(p) = sim.data.post_by_shortcode(&code) else {
            return fail(StatusCode::NOT_FOUND, "Post not found");
        };
        if sim.data.users[p.owner as usize].is_private {
            return fail(StatusCode::FORBIDDEN, "Not authorized to view user");
        }
        let (_, end, info) = page(u64::from(p.comment_count), 0, 24, "comments", p.id);
        let comments: Vec<Value> = (0..end as u32)
            .filter_map(|i| sim.data.comment(&p, i))
            .map(|cm| json!({"node": comment_node(&sim, &cm)}))
            .collect();
        let mut node = post_node(&p, &sim.data);
        node["edge_media_to_parent_comment"] =
            json!({"count": p.comment_count, "page_info": info, "edges": comments});
        json_response(
            StatusCode::OK,
            &json!({"graphql": {"shortcode_media": node}}),
        )
    })
    .await
}

async fn graphql_get(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let c = caller(&sim, peer, &headers);
    let raw_query = raw.clone().unwrap_or_default();
    let params = query_params(raw);
    let Some(hash) = params.get("query_hash").cloned() else {
        return handle(&sim, &c, QueryType::Other, || {
            fail(StatusCode::BAD_REQUEST, "query_hash missing")
        })
        .await;
    };
    let logged_in = c.account.is_some();
    let key = format!("graphql|{logged_in}|{}", raw_query);
    handle_cached(&sim, &c, QueryType::QueryHash(hash.clone()), Some(&key), || {
        let vars: Value = match params.get("variables").map(|v| serde_json::from_str(v)) {
            Some(Ok(v @ Value::Object(_))) => v,
            _ => return fail(StatusCode::BAD_REQUEST, "variables must be a JSON object"),
        };
        let first = vars["first"].as_u64().unwrap_or(12);
        if first > MAX_PAGE {
            return fail(
                StatusCode::BAD_REQUEST,
                &format!("first must be at most {MAX_PAGE}"),
            );
        }
        let after = vars["after"].as_str();
        let id_of = |v: &Value| -> Option<u64> {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| v.as_u64())
        };
        let cursor_start = |tag: &str, owner: u64| -> Option<u64> {
            match after {
                None | Some("") => Some(0),
                Some(cur) => decode_cursor(cur, tag, owner),
            }
        };
        match hash.as_str() {
            hashes::PROFILE_POSTS => profile_posts_page(&sim, &vars, first, after),
            hashes::COMMENTS => {
                let Some(p) = vars["shortcode"]
                    .as_str()
                    .and_then(|c| sim.data.post_by_shortcode(c))
                else {
                    return json_response(
                        StatusCode::OK,
                        &json!({"data": {"shortcode_media": null}, "status": "ok"}),
                    );
                };
                if sim.data.users[p.owner as usize].is_private {
                    return fail(StatusCode::FORBIDDEN, "Not authorized to view user");
                }
                let Some(start) = cursor_start("comments", p.id) else {
                    return fail(StatusCode::BAD_REQUEST, "invalid cursor");
                };
                let (s, e, info) = page(u64::from(p.comment_count), start, first, "comments", p.id);
                let edges: Vec<Value> = (s as u32..e as u32)
                    .filter_map(|i| sim.data.comment(&p, i))
                    .map(|cm| json!({"node": comment_node(&sim, &cm)}))
                    .collect();
                json_response(
                    StatusCode::OK,
                    &json!({"data": {"shortcode_media": {"edge_media_to_comment": {
                    "count": p.comment_count, "page_info": info, "edges": edges}}}, "status": "ok"}),
                )
            }
            hashes::FOLLOWERS | hashes::FOLLOWEES => {
                if !logged_in {
                    return login_redirect();
                }
                let Some(u) = id_of(&vars["id"]).and_then(|id| sim.data.user_by_id(id)) else {
                    return json_response(
                        StatusCode::OK,
                        &json!({"data": {"user": null}, "status": "ok"}),
                    );
                };
                if u.is_private {
                    return fail(StatusCode::FORBIDDEN, "Not authorized to view user");
                }
                let (list, edge, tag) = if hash == hashes::FOLLOWERS {
                    (&u.followers, "edge_followed_by", "followers")
                } else {
                    (&u.following, "edge_follow", "followees")
                };
                let Some(start) = cursor_start(tag, u.id) else {
                    return fail(StatusCode::BAD_REQUEST, "invalid cursor");
                };
                let (s, e, info) = page(list.len() as u64, start, first, tag, u.id);
                let edges: Vec<Value> = list[s as usize..e as usize]
                    .iter()
                    .map(|&i| json!({"node": user_summary(&sim.data.users[i as usize])}))
                    .collect();
                let mut user = json!({});
                user[edge] = json!({"count": list.len(), "page_info": info, "edges": edges});
                json_response(
                    StatusCode::OK,
                    &json!({"data": {"user": user}, "status": "ok"}),
                )
            }
            hashes::HASHTAG => {
                let tag = vars["tag_name"].as_str().unwrap_or("").to_lowercase();
                let posts = sim.data.hashtag_posts(&tag);
                let tag_key = tag
                    .bytes()
                    .fold(0u64, |acc, b| crate::data::mix(0, 11, acc, u64::from(b)));
                let Some(start) = cursor_start("tag", tag_key) else {
                    return fail(StatusCode::BAD_REQUEST, "invalid cursor");
                };
                let (s, e, info) = page(posts.len() as u64, start, first, "tag", tag_key);
                let node = |&(o, j): &(u32, u32)| {
                    sim.data.post(o, j).map(|p| json!({"node": post_node(&p, &sim.data)}))
                };
                let edges: Vec<Value> = posts[s as usize..e as usize].iter().filter_map(node).collect();
                // Top posts: the most liked of the newest 200, so the cost stays bounded.
                let mut recent: Vec<_> = posts.iter().take(200).filter_map(|&(o, j)| sim.data.post(o, j)).collect();
                recent.sort_by(|a, b| b.likes.cmp(&a.likes).then(a.id.cmp(&b.id)));
                let top: Vec<Value> = recent.iter().take(9).map(|p| json!({"node": post_node(p, &sim.data)})).collect();
                json_response(StatusCode::OK, &json!({"data": {"hashtag": {"name": tag,
                    "edge_hashtag_to_media": {"count": posts.len(), "page_info": info, "edges": edges},
                    "edge_hashtag_to_top_posts": {"edges": top}}}, "status": "ok"}))
            }
            hashes::TAGGED => {
                let Some(u) = id_of(&vars["id"]).and_then(|id| sim.data.user_by_id(id)) else {
                    return json_response(StatusCode::OK, &json!({"data": {"user": null}, "status": "ok"}));
                };
                let posts = sim.data.tagged_posts(u.index);
                let Some(start) = cursor_start("tagged", u.id) else {
                    return fail(StatusCode::BAD_REQUEST, "invalid cursor");
                };
                let (s, e, info) = page(posts.len() as u64, start, first, "tagged", u.id);
                let edges: Vec<Value> = posts[s as usize..e as usize]
                    .iter()
                    .filter_map(|&(o, j)| sim.data.post(o, j))
                    .map(|p| json!({"node": post_node(&p, &sim.data)}))
                    .collect();
                json_response(StatusCode::OK, &json!({"data": {"user": {"edge_user_to_photos_of_you": {
                    "count": posts.len(), "page_info": info, "edges": edges}}}, "status": "ok"}))
            }
            _ => fail(StatusCode::BAD_REQUEST, "unknown query_hash"),
        }
    })
    .await
}

fn id_of(v: &Value) -> Option<u64> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
}

/// A profile's posts, for both the `query_hash` and the `doc_id` query.
fn profile_posts_page(sim: &Sim, vars: &Value, first: u64, after: Option<&str>) -> Response {
    let cursor_start = |tag: &str, owner: u64| -> Option<u64> {
        match after {
            None | Some("") => Some(0),
            Some(cur) => decode_cursor(cur, tag, owner),
        }
    };
    let Some(u) = id_of(&vars["id"]).and_then(|id| sim.data.user_by_id(id)) else {
        return json_response(
            StatusCode::OK,
            &json!({"data": {"user": null}, "status": "ok"}),
        );
    };
    if u.is_private {
        return fail(StatusCode::FORBIDDEN, "Not authorized to view user");
    }
    let Some(start) = cursor_start("posts", u.id) else {
        return fail(StatusCode::BAD_REQUEST, "invalid cursor");
    };
    let (s, e, info) = page(u64::from(u.post_count), start, first, "posts", u.id);
    let edges: Vec<Value> = (s as u32..e as u32)
        .filter_map(|i| sim.data.post(u.index, i))
        .map(|p| json!({"node": post_node(&p, &sim.data)}))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"data": {"user": {"edge_owner_to_timeline_media": {
        "count": u.post_count, "page_info": info, "edges": edges}}}, "status": "ok"}),
    )
}

async fn graphql_post(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let c = caller(&sim, peer, &headers);
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let Some(doc_id) = form.get("doc_id").cloned() else {
        return handle(&sim, &c, QueryType::Other, || {
            fail(StatusCode::BAD_REQUEST, "doc_id missing")
        })
        .await;
    };
    handle(&sim, &c, QueryType::DocId(doc_id.clone()), || {
        let vars: Value = match form.get("variables").map(|v| serde_json::from_str(v)) {
            Some(Ok(v @ Value::Object(_))) => v,
            _ => return fail(StatusCode::BAD_REQUEST, "variables must be a JSON object"),
        };
        let first = vars["first"].as_u64().unwrap_or(12);
        if first > MAX_PAGE {
            return fail(
                StatusCode::BAD_REQUEST,
                &format!("first must be at most {MAX_PAGE}"),
            );
        }
        match doc_id.as_str() {
            hashes::DOC_PROFILE_POSTS => {
                profile_posts_page(&sim, &vars, first, vars["after"].as_str())
            }
            _ => fail(StatusCode::BAD_REQUEST, "unknown doc_id"),
        }
    })
    .await
}

/// The iPad app's id, which every mobile request must carry.
pub const MOBILE_APP_ID: &str = "124024574287414";

/// Checks what Instagram's mobile API checks: the app id, a logged-in session, and the headers the
/// app derives from its cookies. `Ok` carries the account.
fn mobile_guard(sim: &Sim, c: &Caller, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("x-ig-app-id") != Some(MOBILE_APP_ID) {
        return Err(Box::new(fail(
            StatusCode::BAD_REQUEST,
            "useragent mismatch",
        )));
    }
    let Some(account) = c.account.clone() else {
        return Err(Box::new(json_response(
            StatusCode::FORBIDDEN,
            &json!({"message": "login_required", "logout_reason": 2, "status": "fail"}),
        )));
    };
    let expected = sim.account_user_id(&account).to_string();
    if header("ig-u-ds-user-id") != Some(expected.as_str())
        || header("x-mid").is_none()
        || header("x-ig-device-id").is_none()
    {
        return Err(Box::new(fail(
            StatusCode::BAD_REQUEST,
            "missing or mismatched device headers (ig-u-ds-user-id, x-mid, x-ig-device-id)",
        )));
    }
    Ok(account)
}

fn with_ig_set(mut r: Response, sim: &Sim, account: &str) -> Response {
    let rur = format!("\"NAO,{},1790000000:01f7\"", sim.account_user_id(account));
    if let Ok(v) = HeaderValue::from_str(&rur) {
        r.headers_mut().insert("ig-set-ig-u-rur", v);
    }
    r
}

/// A mobile request: counted as `iphone`, checked by [`mobile_guard`], answered with `ig-set-*`.
async fn mobile(
    sim: &Sim,
    peer: SocketAddr,
    headers: &HeaderMap,
    serve: impl FnOnce(&str) -> Response,
) -> Response {
    let c = caller(sim, peer, headers);
    handle(sim, &c, QueryType::Iphone, || {
        match mobile_guard(sim, &c, headers) {
            Err(refused) => *refused,
            Ok(account) => with_ig_set(serve(&account), sim, &account),
        }
    })
    .await
}

async fn mobile_user_info(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    mobile(&sim, peer, &headers, |_| {
        let Some(u) = id.parse().ok().and_then(|id| sim.data.user_by_id(id)) else {
            return fail(StatusCode::NOT_FOUND, "User not found");
        };
        let body = json!({"user": {
            "pk": u.id, "pk_id": u.id.to_string(), "username": u.username, "full_name": u.full_name,
            "is_private": u.is_private, "is_verified": u.is_verified, "biography": u.biography,
            "profile_pic_url": u.profile_pic_url(), "media_count": u.post_count,
            "follower_count": u.followers.len(), "following_count": u.following.len()},
            "status": "ok"});
        json_response(StatusCode::OK, &body)
    })
    .await
}

async fn mobile_reels_media(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = query_params(raw);
    mobile(&sim, peer, &headers, |_| {
        let mut reels = serde_json::Map::new();
        for id in params
            .get("reel_ids")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
        {
            if let Some(reel) = reel(&sim, id) {
                reels.insert(id.to_owned(), reel);
            }
        }
        let body = json!({"reels": reels, "status": "ok"});
        json_response(StatusCode::OK, &body)
    })
    .await
}

/// Highlights of a user: (highlight number, title, items).
fn highlight_count(sim: &Sim, u: &User) -> u64 {
    crate::data::mix(sim.data.seed, 14, u64::from(u.index), 0) % 4
}

/// A story reel (`ID`: the user's current stories) or a highlight (`highlight:N`).
fn reel(sim: &Sim, id: &str) -> Option<Value> {
    let (user_id, highlight) = match id.strip_prefix("highlight:") {
        Some(n) => {
            let n: u64 = n.parse().ok()?;
            (n / 10, Some(n % 10))
        }
        None => (id.parse().ok()?, None),
    };
    let u = sim.data.user_by_id(user_id)?;
    if u.is_private || highlight.is_some_and(|h| h >= highlight_count(sim, u)) {
        return None;
    }
    let (salt, count) = match highlight {
        None => (
            8,
            crate::data::mix(sim.data.seed, 8, u64::from(u.index), 0) % 4,
        ),
        Some(h) => (
            20 + h,
            1 + crate::data::mix(sim.data.seed, 15, u64::from(u.index), h) % 5,
        ),
    };
    let items: Vec<Value> = (0..count)
        .map(|k| {
            // Stories are from the last day before the data set's "now"; highlights are older.
            let taken_at = match highlight {
                None => crate::data::EPOCH - (k as i64 + 1) * 3600,
                Some(h) => crate::data::EPOCH - (h as i64 + 1) * 30 * 86_400 - k as i64 * 3600,
            };
            let video =
                crate::data::mix(sim.data.seed, salt, u64::from(u.index), k).is_multiple_of(3);
            let pk = (u.id * 100 + salt) * 100 + k;
            let mut item = json!({
                "pk": pk, "id": format!("{pk}_{}", u.id), "taken_at": taken_at,
                "media_type": if video { 2 } else { 1 },
                "image_versions2": {"candidates": [{"width": 1080, "height": 1920,
                    "url": format!("https://scontent.sim.instagram.test/v/t51/{pk}_story.jpg")}]},
            });
            if highlight.is_none() {
                item["expiring_at"] = json!(taken_at + 86_400);
            }
            if video {
                item["video_versions"] = json!([{"type": 101, "width": 720, "height": 1280,
                    "url": format!("https://scontent.sim.instagram.test/v/t50/{pk}_story.mp4")}]);
            }
            item
        })
        .collect();
    let mut reel = json!({"id": id, "user": user_summary(u), "items": items, "media_count": count});
    if highlight.is_none() {
        reel["expiring_at"] = json!(crate::data::EPOCH + 86_400 - 3600);
    }
    Some(reel)
}

async fn mobile_highlights(
    State(sim): State<Arc<Sim>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    mobile(&sim, peer, &headers, |_| {
        let Some(u) = id.parse().ok().and_then(|id| sim.data.user_by_id(id)) else {
            return fail(StatusCode::NOT_FOUND, "User not found");
        };
        const TITLES: [&str; 4] = ["Travels", "Field notes", "Studio", "Archive"];
        let tray: Vec<Value> = if u.is_private {
            Vec::new()
        } else {
            (0..highlight_count(&sim, u))
                .map(|h| {
                    let id = format!("highlight:{}", u.id * 10 + h);
                    let media_count = 1 + crate::data::mix(sim.data.seed, 15, u64::from(u.index), h) % 5;
                    json!({"id": id, "title": TITLES[h as usize], "media_count": media_count,
                        "cover_media": {"cropped_image_version": {"url":
                            format!("https://scontent.sim.instagram.test/v/t51/{}_{h}_cover.jpg", u.id)}}})
                })
                .collect()
        };
        json_response(StatusCode::OK, &json!({"tray": tray, "status": "ok"}))
    })
    .await
}

async fn audit_dump(State(sim): State<Arc<Sim>>) -> Response {
    let log = sim.audit.lock().map(|l| l.clone()).unwrap_or_default();
    let mut out = String::new();
    for e in &log {
        if let Ok(line) = serde_json::to_string(e) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response()
}

/// What the simulator received, in Prometheus's text format: requests by query-type class and
/// status, and each window's busiest moment over every scope as a share of its cap.
async fn metrics(State(sim): State<Arc<Sim>>) -> Response {
    let log = sim.audit.lock().map(|l| l.clone()).unwrap_or_default();
    let limits = sim
        .windows
        .lock()
        .map(|w| w.limits())
        .unwrap_or(Limits::instagram(1.0));
    let class = |q: &str| -> &'static str {
        if q.starts_with("qh:") {
            "graphql"
        } else if q.starts_with("doc:") {
            "doc_id"
        } else if q == "iphone" {
            "iphone"
        } else {
            "other"
        }
    };
    let mut requests: std::collections::BTreeMap<(&str, u16), u64> =
        ["graphql", "doc_id", "iphone", "other"]
            .iter()
            .flat_map(|c| [(*c, 200), (*c, 429)])
            .map(|k| (k, 0))
            .collect();
    for e in &log {
        *requests
            .entry((class(&e.query_type), e.status))
            .or_default() += 1;
    }
    let mut peaks: std::collections::BTreeMap<&str, f64> =
        ["per_type", "graphql_total", "iphone_30m", "other"]
            .iter()
            .map(|w| (*w, 0.0))
            .collect();
    for p in audit::oracle(&log, &limits).peaks {
        let window = match p.key.as_str() {
            "graphql" => "graphql_total",
            "iphone-30m" => "iphone_30m",
            "other" => "other",
            _ => "per_type",
        };
        let ratio = p.most as f64 / p.cap.max(1) as f64;
        let slot = peaks.entry(window).or_default();
        *slot = slot.max(ratio);
    }
    let mut text = String::from(
        "# HELP trawl_sim_requests_total Requests the simulator received, by query-type class and status\n\
         # TYPE trawl_sim_requests_total counter\n",
    );
    for ((c, status), n) in &requests {
        text.push_str(&format!(
            "trawl_sim_requests_total{{class=\"{c}\",status=\"{status}\"}} {n}\n"
        ));
    }
    text.push_str(
        "# HELP trawl_sim_window_peak_ratio The busiest sliding window so far over every scope, divided by its cap\n\
         # TYPE trawl_sim_window_peak_ratio gauge\n",
    );
    for (w, r) in &peaks {
        text.push_str(&format!(
            "trawl_sim_window_peak_ratio{{window=\"{w}\"}} {r}\n"
        ));
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn oracle(State(sim): State<Arc<Sim>>) -> Response {
    let log = sim.audit.lock().map(|l| l.clone()).unwrap_or_default();
    let limits = sim
        .windows
        .lock()
        .map(|w| w.limits())
        .unwrap_or(Limits::instagram(1.0));
    let report = audit::oracle(&log, &limits);
    json_response(
        StatusCode::OK,
        &serde_json::to_value(report).unwrap_or(Value::Null),
    )
}

async fn get_faults(State(sim): State<Arc<Sim>>) -> Response {
    let faults = sim.faults.lock().map(|f| f.clone()).unwrap_or_default();
    json_response(
        StatusCode::OK,
        &serde_json::to_value(faults).unwrap_or(Value::Null),
    )
}

/// Replaces the fault settings (a JSON body in the shape `GET /__sim/faults` returns).
async fn set_faults(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return fail(StatusCode::BAD_REQUEST, &format!("invalid faults: {e}")),
    };
    if let Err(e) = faults.validate() {
        return fail(StatusCode::BAD_REQUEST, &e);
    }
    // A forced logout happens now: the sessions the accounts hold end, and a later login starts
    // a session that works (as when Instagram logs a device out once).
    if !faults.logout.is_empty()
        && let Ok(mut sessions) = sim.sessions.lock()
    {
        sessions.retain(|_, (account, _)| !faults.logout.contains(account));
    }
    if let Ok(mut current) = sim.faults.lock() {
        *current = Faults {
            logout: Default::default(),
            ..faults.clone()
        };
    }
    json_response(
        StatusCode::OK,
        &serde_json::to_value(faults).unwrap_or(Value::Null),
    )
}

async fn not_found() -> Response {
    fail(StatusCode::NOT_FOUND, "Page not found")
}
