//! A client of the Instagram-style v1 REST API (docs/v1-client.md): one account, its tokens kept
//! fresh (refreshed before they expire, a new login when the refresh token is refused), every
//! request let through by the shared limiter under its tier's window (`v1:<tier>`), 429s and
//! `X-RateLimit-*` hints turned into ledger penalties, and cursor pagination.
//!
//! It must not keep anything another worker needs: windows live in the ledger; tokens are this
//! process's own and are made again by logging in.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;
use trawl_shared::limiter::{LedgerError, Limiter, QueryType, Request, ServerHints};
use trawl_shared::secret::Secret;

/// The platform name the v1 tiers are configured under (`limiter.platforms.v1`).
pub const PLATFORM: &str = "v1";

/// Most attempts of one request (server errors, broken answers, 429s, a token refused once).
const ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum V1Error {
    /// The API refused the account's credentials: a human must act.
    #[error("the v1 API refused the login of {account}: {message}")]
    LoginRefused { account: String, message: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request was wrong (`INVALID_REQUEST` and the like): retrying cannot help.
    #[error("the v1 API refused the request ({status}, {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the v1 API kept failing after {attempts} attempts: {last}")]
    Unavailable { attempts: u32, last: String },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The account's current tokens.
struct Tokens {
    access: Secret,
    refresh: Secret,
    /// When to refresh: before the access token's end, by a tenth of its life.
    refresh_at: Instant,
}

pub struct V1Client {
    http: reqwest::Client,
    /// The API's base, e.g. `http://127.0.0.1:8443/api/v1`.
    base: String,
    account: String,
    password: Secret,
    limiter: Arc<Limiter>,
    tokens: Mutex<Option<Tokens>>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Value>,
    /// The next page's cursor; `None` on the last page.
    pub next: Option<String>,
}

/// What one attempt came to.
enum Outcome {
    Done(Value),
    /// Try again (after the wait, when there is one), saying why.
    Again(String),
    Failed(V1Error),
}

impl V1Client {
    pub fn new(
        http: reqwest::Client,
        base: impl Into<String>,
        account: impl Into<String>,
        password: Secret,
        limiter: Arc<Limiter>,
    ) -> Self {
        Self {
            http,
            base: base.into().trim_end_matches('/').to_owned(),
            account: account.into(),
            password,
            limiter,
            tokens: Mutex::new(None),
        }
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    fn request(&self, tier: &str) -> Request {
        Request {
            query_type: QueryType::tier(PLATFORM, tier),
            account: self.account.clone(),
            egress: None,
        }
    }

    /// `GET path` under `tier`'s window, with a fresh token.
    pub async fn get(
        &self,
        tier: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, V1Error> {
        self.call(tier, Method::GET, path, query, None).await
    }

    /// One page of a cursor-paginated listing: `key`'s items and the cursor of the next page
    /// (`None` when the listing has no more).
    pub async fn page(
        &self,
        tier: &str,
        path: &str,
        query: &[(&str, String)],
        key: &str,
        count: u32,
        cursor: Option<&str>,
    ) -> Result<Page, V1Error> {
        let mut query = query.to_vec();
        query.push(("count", count.to_string()));
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        let answer = self.get(tier, path, &query).await?;
        let Some(list) = answer[key].as_array() else {
            return Err(V1Error::Refused {
                status: 200,
                code: "UNEXPECTED_SHAPE".into(),
                message: format!("{path}: the answer has no {key} list"),
            });
        };
        let next = answer["next_cursor"]
            .as_str()
            .filter(|_| answer["has_more"] == true)
            .map(str::to_owned);
        Ok(Page {
            items: list.clone(),
            next,
        })
    }

    /// Every item of a cursor-paginated listing: `key`'s items, `count` a page, following
    /// `next_cursor` while `has_more`, at most `max_items` (the last page may pass it).
    pub async fn all_pages(
        &self,
        tier: &str,
        path: &str,
        key: &str,
        count: u32,
        max_items: usize,
    ) -> Result<Vec<Value>, V1Error> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .page(tier, path, &[], key, count, cursor.as_deref())
                .await?;
            items.extend(page.items);
            cursor = page.next;
            if cursor.is_none() || items.len() >= max_items {
                return Ok(items);
            }
        }
    }

    /// One request with every retry the API's answers call for.
    pub async fn call(
        &self,
        tier: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, V1Error> {
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            let token = self.access_token().await?;
            match self
                .attempt(tier, method.clone(), path, query, body, Some(&token))
                .await?
            {
                Outcome::Done(v) => return Ok(v),
                Outcome::Failed(e) => return Err(e),
                Outcome::Again(why) => last = why,
            }
        }
        Err(V1Error::Unavailable {
            attempts: ATTEMPTS,
            last,
        })
    }

    /// A permit, the request, and its answer classified. A refused token is forgotten here, so
    /// the next attempt gets a new one.
    async fn attempt(
        &self,
        tier: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        token: Option<&Secret>,
    ) -> Result<Outcome, V1Error> {
        let request = self.request(tier);
        self.limiter.acquire(&request).await?;
        let mut url = format!("{}{path}", self.base);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&serde_urlencoded::to_string(query).unwrap_or_default());
        }
        let mut builder = self.http.request(method, url);
        if let Some(t) = token {
            builder = builder.bearer_auth(t.expose());
        }
        if let Some(b) = body {
            builder = builder.json(b);
        }
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => return Ok(Outcome::Again(format!("transport: {}", e.without_url()))),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let text = match response.text().await {
            Ok(t) => t,
            Err(e) => return Ok(Outcome::Again(format!("body: {}", e.without_url()))),
        };
        let json: Option<Value> = serde_json::from_str(&text).ok();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let hints = ServerHints::parse(header, json.as_ref(), chrono::Utc::now());
        if status == StatusCode::TOO_MANY_REQUESTS {
            let until = self.limiter.on_429(&request, &hints).await?;
            tracing::warn!(account = %self.account, tier, %until, "v1: 429; waiting out the penalty");
            return Ok(Outcome::Again("429 Too Many Requests".into()));
        }
        // `X-RateLimit-Remaining: 0` on a success is this tier's window full, which the ledger
        // holds already; a penalty (account-wide) would stall every other tier too.
        let error = json.as_ref().map(|j| &j["error"]);
        let code = error
            .and_then(|e| e["code"].as_str())
            .unwrap_or_default()
            .to_owned();
        let message = error
            .and_then(|e| e["message"].as_str())
            .unwrap_or_default()
            .to_owned();
        Ok(match status {
            s if s.is_success() => match json {
                Some(v) => Outcome::Done(v),
                None => Outcome::Again(format!("{path}: the answer is not JSON")),
            },
            StatusCode::UNAUTHORIZED => {
                // Expired or revoked: the next attempt refreshes, and logs in if that is refused.
                // Login and refresh carry no bearer token and hold the lock already.
                if token.is_some()
                    && let Some(t) = self.tokens.lock().await.as_mut()
                {
                    t.refresh_at = Instant::now();
                }
                Outcome::Again(format!("401 {message}"))
            }
            StatusCode::NOT_FOUND => {
                Outcome::Failed(V1Error::NotFound(format!("{path}: {message}")))
            }
            StatusCode::FORBIDDEN => {
                Outcome::Failed(V1Error::Forbidden(format!("{path}: {message}")))
            }
            s if s.is_server_error() => Outcome::Again(format!("{s}: {message}")),
            s => Outcome::Failed(V1Error::Refused {
                status: s.as_u16(),
                code,
                message,
            }),
        })
    }

    /// The access token, refreshed or logged in for as needed.
    /// A valid access token for a connection the client does not make itself (the stream).
    pub async fn bearer(&self) -> Result<Secret, V1Error> {
        self.access_token().await
    }

    /// Treats the access token as expired (the server said so): the next request refreshes it.
    pub async fn expire_access(&self) {
        if let Some(t) = self.tokens.lock().await.as_mut() {
            t.refresh_at = Instant::now();
        }
    }

    /// Waits until `tier`'s window lets one more request through, and counts it there: for a
    /// request the client does not send itself (the stream's connection).
    pub async fn admit(&self, tier: &str) -> Result<(), V1Error> {
        self.limiter.acquire(&self.request(tier)).await?;
        Ok(())
    }

    async fn access_token(&self) -> Result<Secret, V1Error> {
        let mut tokens = self.tokens.lock().await;
        if let Some(t) = tokens.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.access.clone());
        }
        let refreshed = match tokens.take() {
            Some(old) => self.refresh(&old.refresh).await?,
            None => None,
        };
        let fresh = match refreshed {
            Some(t) => t,
            None => self.login().await?,
        };
        let access = fresh.access.clone();
        *tokens = Some(fresh);
        Ok(access)
    }

    /// A new pair from the refresh token; `None` when it is refused (then a login follows).
    async fn refresh(&self, refresh: &Secret) -> Result<Option<Tokens>, V1Error> {
        let body = json!({"refresh_token": refresh.expose()});
        for _ in 0..ATTEMPTS {
            match self
                .attempt(
                    "auth",
                    Method::POST,
                    "/auth/refresh",
                    &[],
                    Some(&body),
                    None,
                )
                .await?
            {
                Outcome::Done(v) => return Ok(tokens_from(&v)),
                Outcome::Again(why) if why.starts_with("401") => return Ok(None),
                Outcome::Again(_) => continue,
                Outcome::Failed(_) => return Ok(None),
            }
        }
        Ok(None)
    }

    async fn login(&self) -> Result<Tokens, V1Error> {
        let body = json!({"username": self.account, "password": self.password.expose()});
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match self
                .attempt("auth", Method::POST, "/auth/login", &[], Some(&body), None)
                .await?
            {
                Outcome::Done(v) => {
                    return tokens_from(&v).ok_or_else(|| V1Error::LoginRefused {
                        account: self.account.clone(),
                        message: "the login answer has no tokens".into(),
                    });
                }
                Outcome::Again(why) if why.starts_with("401") => {
                    return Err(V1Error::LoginRefused {
                        account: self.account.clone(),
                        message: why,
                    });
                }
                Outcome::Again(why) => last = why,
                Outcome::Failed(e) => {
                    return Err(V1Error::LoginRefused {
                        account: self.account.clone(),
                        message: e.to_string(),
                    });
                }
            }
        }
        Err(V1Error::Unavailable {
            attempts: ATTEMPTS,
            last,
        })
    }
}

/// The tokens of a login or refresh answer; refreshed at nine tenths of `expires_in`.
fn tokens_from(answer: &Value) -> Option<Tokens> {
    let access = answer["access_token"].as_str()?;
    let refresh = answer["refresh_token"].as_str()?;
    let life = Duration::from_secs(answer["expires_in"].as_u64()?.max(1));
    Some(Tokens {
        access: Secret::new(access),
        refresh: Secret::new(refresh),
        refresh_at: Instant::now() + life.mul_f64(0.9),
    })
}
