//! The shared rate limiter (docs/rate-limits.md): Instaloader's windows, exact across every worker and
//! every restart.
//!
//! Two layers, one job each:
//! - [`ledger::Ledger`]: a sliding-window log in PostgreSQL keyed by (scope, query type), on the
//!   database clock. It is what guarantees the caps.
//! - [`pacing::Pacer`]: a `governor` limiter per query type in each worker that spaces requests
//!   smoothly, so a worker never bursts a whole window in a second.
//!
//! [`Limiter`] puts them together: pace locally, then ask the ledger; a refusal's wait is slept
//! once, then the ledger is asked again.

pub mod hints;
pub mod ledger;
pub mod metrics;
pub mod pacing;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::config::{EgressWindows, LimiterConfig};

pub use hints::ServerHints;
pub use ledger::{Decision, Ledger, LedgerError};
pub use pacing::Pacer;

/// What one request to Instagram counts against (docs/rate-limits.md, query types).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum QueryType {
    /// Web GraphQL by `query_hash`: each hash is its own type.
    QueryHash(String),
    /// GraphQL by `doc_id`: each id is its own type.
    DocId(String),
    /// Any request to the mobile API (`i.instagram.com`).
    Iphone,
    /// Any other web request (REST, login, profile info).
    Other,
    /// A request of another platform's API, counted in its tier's window
    /// (`limiter.platforms.<platform>.tiers.<tier>`).
    Tier { platform: String, tier: String },
}

/// The closed set of query-type classes used as metric labels (never a hash value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueryClass {
    Graphql,
    DocId,
    Iphone,
    Other,
    /// Any tier of another platform.
    Tier,
}

impl QueryClass {
    pub const ALL: [QueryClass; 5] = [
        QueryClass::Graphql,
        QueryClass::DocId,
        QueryClass::Iphone,
        QueryClass::Other,
        QueryClass::Tier,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QueryClass::Graphql => "graphql",
            QueryClass::DocId => "doc_id",
            QueryClass::Iphone => "iphone",
            QueryClass::Other => "other",
            QueryClass::Tier => "tier",
        }
    }
}

impl QueryType {
    /// The ledger's key for this type: `qh:HASH`, `doc:ID`, `iphone`, `other` or
    /// `PLATFORM:TIER`.
    pub fn key(&self) -> String {
        match self {
            QueryType::QueryHash(h) => format!("qh:{h}"),
            QueryType::DocId(d) => format!("doc:{d}"),
            QueryType::Iphone => "iphone".into(),
            QueryType::Other => "other".into(),
            QueryType::Tier { platform, tier } => format!("{platform}:{tier}"),
        }
    }

    /// A tier of another platform.
    pub fn tier(platform: &str, tier: &str) -> Self {
        QueryType::Tier {
            platform: platform.to_owned(),
            tier: tier.to_owned(),
        }
    }

    /// Parses a ledger key back.
    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            "iphone" => Some(QueryType::Iphone),
            "other" => Some(QueryType::Other),
            k => k
                .strip_prefix("qh:")
                .map(|h| QueryType::QueryHash(h.into()))
                .or_else(|| k.strip_prefix("doc:").map(|d| QueryType::DocId(d.into())))
                .or_else(|| {
                    let (platform, tier) = k.split_once(':')?;
                    Some(QueryType::tier(platform, tier))
                }),
        }
    }

    /// GraphQL types share the all-GraphQL window; `iphone` and `other` do not.
    pub fn is_graphql(&self) -> bool {
        matches!(self, QueryType::QueryHash(_) | QueryType::DocId(_))
    }

    pub fn class(&self) -> QueryClass {
        match self {
            QueryType::QueryHash(_) => QueryClass::Graphql,
            QueryType::DocId(_) => QueryClass::DocId,
            QueryType::Iphone => QueryClass::Iphone,
            QueryType::Other => QueryClass::Other,
            QueryType::Tier { .. } => QueryClass::Tier,
        }
    }
}

impl fmt::Display for QueryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// Whose windows a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "scope", content = "name", rename_all = "snake_case")]
pub enum Scope {
    /// One Instagram account (or anonymous identity).
    Account(String),
    /// The egress IP a group of accounts leaves from.
    Egress(String),
}

impl Scope {
    /// The ledger's key: `account:NAME` or `egress:GROUP`.
    pub fn key(&self) -> String {
        match self {
            Scope::Account(a) => format!("account:{a}"),
            Scope::Egress(e) => format!("egress:{e}"),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// One request about to be sent: its type and the scopes it counts against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub query_type: QueryType,
    pub account: String,
    /// The egress group, when the account's requests leave from a shared IP.
    pub egress: Option<String>,
}

/// One sliding window: at most `cap` grants in any half-open interval of `window`; when full, the
/// next grant waits until the oldest leaves, plus `margin`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub cap: u32,
    pub window: Duration,
    pub margin: Duration,
}

/// Caps, windows and margins after `time_scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub per_type: Window,
    pub other: Window,
    pub graphql: Window,
    pub iphone: Window,
    /// Other platforms' tier windows: platform → tier → window.
    pub platforms: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Window>>,
    /// Other platforms' shared windows: platform → (the window, the tiers counting in it).
    pub platform_shared:
        std::collections::BTreeMap<String, (Window, std::collections::BTreeSet<String>)>,
    /// Grants are kept this long: the configured history, or longer when a platform's window
    /// (with its margin) is longer.
    pub history: Duration,
    pub egress: EgressWindows,
    pub time_scale: f64,
}

impl Profile {
    pub fn from_config(c: &LimiterConfig) -> Self {
        let scale = |d: Duration| d.mul_f64(c.time_scale);
        let w = |cap: u32, window: Duration, margin: Duration| Window {
            cap,
            window: scale(window),
            margin: scale(margin),
        };
        let platforms: std::collections::BTreeMap<_, std::collections::BTreeMap<_, _>> = c
            .platforms
            .iter()
            .map(|(name, p)| {
                let tiers = p
                    .tiers
                    .iter()
                    .map(|(tier, t)| (tier.clone(), w(t.cap, t.window.0, t.margin.0)))
                    .collect();
                (name.clone(), tiers)
            })
            .collect();
        let platform_shared: std::collections::BTreeMap<_, _> = c
            .platforms
            .iter()
            .filter_map(|(name, p)| {
                let s = p.shared.as_ref()?;
                let tiers = s.tiers.iter().cloned().collect();
                Some((name.clone(), (w(s.cap, s.window.0, s.margin.0), tiers)))
            })
            .collect();
        let longest_tier = platforms
            .values()
            .flat_map(|tiers| tiers.values())
            .chain(platform_shared.values().map(|(w, _)| w))
            .map(|t| t.window + t.margin)
            .max()
            .unwrap_or_default();
        Self {
            platforms,
            platform_shared,
            per_type: w(c.per_type_cap, c.per_type_window.0, c.per_type_margin.0),
            other: w(c.other_cap, c.per_type_window.0, c.per_type_margin.0),
            graphql: w(c.graphql_cap, c.graphql_window.0, c.graphql_margin.0),
            iphone: w(c.iphone_cap, c.iphone_window.0, c.iphone_margin.0),
            history: scale(c.history.0).max(longest_tier),
            egress: c.egress,
            time_scale: c.time_scale,
        }
    }

    /// The per-type window of `q` (75 for `other`, 200 for every other Instagram type, a
    /// platform tier's own). A tier the profile does not name counts under `other`, the
    /// strictest window, rather than under none.
    pub fn type_window(&self, q: &QueryType) -> Window {
        match q {
            QueryType::Other => self.other,
            QueryType::Tier { platform, tier } => self
                .platforms
                .get(platform)
                .and_then(|tiers| tiers.get(tier))
                .copied()
                .unwrap_or(self.other),
            _ => self.per_type,
        }
    }

    /// The window `q` counts in besides its own, when there is one: all-GraphQL for Instagram's
    /// GraphQL types, a platform's shared window for the tiers it names.
    pub fn shared_window(&self, q: &QueryType) -> Option<Window> {
        match q {
            QueryType::Tier { platform, tier } => self
                .platform_shared
                .get(platform)
                .filter(|(_, tiers)| tiers.contains(tier))
                .map(|(w, _)| *w),
            q if q.is_graphql() => Some(self.graphql),
            _ => None,
        }
    }

    /// Whether the profile names this tier (Instagram's types are always known).
    pub fn knows(&self, q: &QueryType) -> bool {
        match q {
            QueryType::Tier { platform, tier } => self
                .platforms
                .get(platform)
                .is_some_and(|tiers| tiers.contains_key(tier)),
            _ => true,
        }
    }

    /// The scopes a request counts against under this profile.
    pub fn scopes(&self, request: &Request) -> Vec<Scope> {
        let mut scopes = vec![Scope::Account(request.account.clone())];
        if let (Some(group), EgressWindows::SameAsAccount) = (&request.egress, self.egress) {
            scopes.push(Scope::Egress(group.clone()));
        }
        scopes
    }

    /// The steady rate each type may sustain, as a period between requests: the tightest of the
    /// windows that apply, `(window + margin) / cap`.
    pub fn steady_period(&self, q: &QueryType) -> Duration {
        let period = |w: Window| (w.window + w.margin) / w.cap.max(1);
        let mut p = period(self.type_window(q));
        if *q == QueryType::Iphone {
            p = p.max(period(self.iphone));
        }
        if let QueryType::Tier { .. } = q
            && let Some(shared) = self.shared_window(q)
        {
            p = p.max(period(shared));
        }
        p
    }
}

/// A request let through: when the ledger recorded it and how long it waited in all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grant {
    pub at: DateTime<Utc>,
    pub waited: Duration,
}

/// Pacing and the ledger together, with metrics. One per worker process.
pub struct Limiter {
    ledger: Ledger,
    pacer: Pacer,
    metrics: Arc<metrics::LimiterMetrics>,
}

impl Limiter {
    pub fn new(
        pool: PgPool,
        config: &LimiterConfig,
        metrics: Arc<metrics::LimiterMetrics>,
    ) -> Self {
        Self {
            ledger: Ledger::new(pool, Profile::from_config(config)),
            pacer: Pacer::new(config),
            metrics,
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Waits until `request` may be sent and records it. Paces locally first, then asks the
    /// ledger; each refusal's exact wait is slept once before asking again (another worker may
    /// have taken the slot meanwhile). Fails closed: if the ledger cannot be reached, no permit.
    pub async fn acquire(&self, request: &Request) -> Result<Grant, LedgerError> {
        loop {
            // No wait exceeds Duration::MAX, so this returns a grant on the first pass.
            if let Ok(grant) = self.acquire_within(request, Duration::MAX).await? {
                return Ok(grant);
            }
        }
    }

    /// Like [`Limiter::acquire`], but gives up when the ledger asks for a wait longer than
    /// `max_wait`, returning that wait (`Err`) so the caller can snooze its job instead of holding
    /// a lease while it sleeps.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %request.account,
        query_type = %request.query_type), err(level = "warn"))]
    pub async fn acquire_within(
        &self,
        request: &Request,
        max_wait: Duration,
    ) -> Result<Result<Grant, Duration>, LedgerError> {
        let started = Instant::now();
        let class = [request.query_type.class().as_str()];
        self.pacer.pace(&request.query_type).await;
        let cap = f64::from(self.ledger.profile().type_window(&request.query_type).cap);
        loop {
            match self.ledger.try_acquire(request, None).await? {
                Decision::Granted { at, type_used } => {
                    let waited = started.elapsed();
                    self.metrics.grants.with_label_values(&class).inc();
                    self.metrics
                        .wait_seconds
                        .with_label_values(&class)
                        .observe(waited.as_secs_f64());
                    self.metrics
                        .window_utilisation
                        .with_label_values(&class)
                        .set(f64::from(type_used) / cap);
                    return Ok(Ok(Grant { at, waited }));
                }
                Decision::Wait {
                    wait,
                    type_used,
                    fenced,
                    ..
                } => {
                    self.metrics.denials.with_label_values(&class).inc();
                    if fenced {
                        self.metrics.fence_denials.with_label_values(&class).inc();
                    }
                    self.metrics
                        .window_utilisation
                        .with_label_values(&class)
                        .set(f64::from(type_used) / cap);
                    if wait > max_wait {
                        return Ok(Err(wait));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// After a 429: records Instaloader's penalty and any later hint from the server; returns when
    /// requests of this scope may resume.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %request.account,
        query_type = %request.query_type), err(level = "warn"))]
    pub async fn on_429(
        &self,
        request: &Request,
        hints: &ServerHints,
    ) -> Result<DateTime<Utc>, LedgerError> {
        let class = [request.query_type.class().as_str()];
        self.metrics.responses_429.with_label_values(&class).inc();
        self.metrics.penalties.with_label_values(&class).inc();
        let mut until = self.ledger.record_429(request, None).await?;
        if let Some(hinted) = hints.block_until(Utc::now(), true)
            && hinted > until
        {
            self.ledger.block_until(request, hinted).await?;
            until = hinted;
        }
        Ok(until)
    }

    /// After any other response: honours a server that says its quota is used up.
    pub async fn on_hints(
        &self,
        request: &Request,
        hints: &ServerHints,
    ) -> Result<(), LedgerError> {
        if let Some(until) = hints.block_until(Utc::now(), false) {
            self.metrics
                .penalties
                .with_label_values(&[request.query_type.class().as_str()])
                .inc();
            self.ledger.block_until(request, until).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_classes_are_closed() {
        for q in [
            QueryType::QueryHash("abc123".into()),
            QueryType::DocId("17888".into()),
            QueryType::Iphone,
            QueryType::Other,
        ] {
            assert_eq!(QueryType::from_key(&q.key()), Some(q.clone()));
        }
        assert!(QueryType::DocId("1".into()).is_graphql());
        assert!(!QueryType::Iphone.is_graphql());
        assert_eq!(QueryType::QueryHash("x".into()).class().as_str(), "graphql");
    }

    #[test]
    fn time_scale_shrinks_windows_and_margins_not_caps() {
        let c = LimiterConfig {
            time_scale: 0.01,
            ..LimiterConfig::default()
        };
        let p = Profile::from_config(&c);
        assert_eq!(p.per_type.cap, 200);
        assert_eq!(p.per_type.window, Duration::from_millis(6600));
        assert_eq!(p.per_type.margin, Duration::from_millis(60));
        assert_eq!(p.iphone.window, Duration::from_secs(18));
    }

    #[test]
    fn steady_periods_follow_the_tightest_window() {
        let p = Profile::from_config(&LimiterConfig::default());
        assert_eq!(
            p.steady_period(&QueryType::Other),
            Duration::from_secs(666) / 75
        );
        assert_eq!(
            p.steady_period(&QueryType::Iphone),
            Duration::from_secs(1818) / 199
        );
        assert_eq!(
            p.steady_period(&QueryType::QueryHash("h".into())),
            Duration::from_secs(666) / 200
        );
    }

    #[test]
    fn egress_scope_is_added_when_configured() {
        let mut c = LimiterConfig::default();
        let r = Request {
            query_type: QueryType::Other,
            account: "a".into(),
            egress: Some("ip1".into()),
        };
        assert_eq!(
            Profile::from_config(&c).scopes(&r),
            vec![Scope::Account("a".into()), Scope::Egress("ip1".into())]
        );
        c.egress = EgressWindows::None;
        assert_eq!(
            Profile::from_config(&c).scopes(&r),
            vec![Scope::Account("a".into())]
        );
    }
}
