//! Server-side sliding windows, the simulator's own implementation (it shares no code with
//! Trawl's limiter): every request a key receives is counted; a request that finds a window
//! already holding its cap gets Instagram's 429.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::v1::tiers::Tier;

/// What a request counts against, as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueryType {
    QueryHash(String),
    DocId(String),
    Iphone,
    Other,
    /// Audited but counted against no window: the requests Instaloader 4.16's own rate controller
    /// never counts (the login steps, the bare start-page GET for a csrftoken).
    Uncounted,
    /// A media download from the CDN: also in no window, because Instagram's CDN is another
    /// service with no such limits and Instaloader's downloads bypass its rate controller. Its
    /// own label keeps downloads countable in the audit log.
    Cdn,
    /// A request of the v1 REST API: counted in its tier's hourly window, with the tier's cap for
    /// callers with a token or for anonymous ones.
    V1 {
        tier: Tier,
        anonymous: bool,
    },
}

impl QueryType {
    pub fn label(&self) -> String {
        match self {
            QueryType::QueryHash(h) => format!("qh:{h}"),
            QueryType::DocId(d) => format!("doc:{d}"),
            QueryType::Iphone => "iphone".into(),
            QueryType::Other => "other".into(),
            QueryType::Uncounted => "uncounted".into(),
            QueryType::Cdn => "cdn".into(),
            QueryType::V1 { tier, .. } => tier.label(),
        }
    }

    /// Whether requests of this type count against a window.
    pub fn is_counted(&self) -> bool {
        !matches!(self, QueryType::Uncounted | QueryType::Cdn)
    }

    pub fn is_graphql(&self) -> bool {
        matches!(self, QueryType::QueryHash(_) | QueryType::DocId(_))
    }
}

/// One window: at most `cap` requests in any half-open interval of `length`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub cap: usize,
    pub length: Duration,
}

/// The reference's defaults, scaled.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_type: Window,
    pub other: Window,
    pub graphql: Window,
    pub iphone: Window,
    /// The v1 API's tier windows are this long (an hour, scaled).
    pub v1_hour: Duration,
}

impl Limits {
    pub fn instagram(time_scale: f64) -> Self {
        let w = |cap, secs: f64| Window {
            cap,
            length: Duration::from_secs_f64(secs * time_scale),
        };
        Self {
            per_type: w(200, 660.0),
            other: w(75, 660.0),
            graphql: w(275, 600.0),
            iphone: w(199, 1800.0),
            v1_hour: Duration::from_secs_f64(3600.0 * time_scale),
        }
    }

    /// The window of a v1 tier for a caller with a token or without; `None` when the tier's
    /// endpoints need a token.
    pub fn v1_tier(&self, tier: Tier, anonymous: bool) -> Option<Window> {
        tier.per_hour(anonymous).map(|cap| Window {
            cap,
            length: self.v1_hour,
        })
    }
}

/// Where a caller stands in one window after a request: what `X-RateLimit-*` report.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub admitted: bool,
    pub cap: usize,
    /// Requests in the window, this one included when it was admitted.
    pub used: usize,
    /// Until the oldest request in the window leaves it.
    pub reset_in: Duration,
}

/// The windows of every (scope, key) the server has seen.
pub struct Windows {
    limits: Limits,
    /// (scope, window name) → arrival times, oldest first.
    seen: HashMap<(String, String), VecDeque<Instant>>,
}

impl Windows {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            seen: HashMap::new(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Counts a request of `q` by `scope` arriving `now`; returns whether it is within every
    /// window (it is counted either way: the server saw it).
    pub fn admit(&mut self, scope: &str, q: &QueryType, now: Instant) -> bool {
        if !q.is_counted() {
            return true;
        }
        if let QueryType::V1 { tier, anonymous } = q {
            return self.admit_tier(scope, *tier, *anonymous, now).admitted;
        }
        let mut keys: Vec<(String, Window)> = Vec::with_capacity(2);
        let per_type = if *q == QueryType::Other {
            self.limits.other
        } else {
            self.limits.per_type
        };
        keys.push((q.label(), per_type));
        if q.is_graphql() {
            keys.push(("graphql".into(), self.limits.graphql));
        }
        if *q == QueryType::Iphone {
            keys.push(("iphone-30m".into(), self.limits.iphone));
        }
        let mut ok = true;
        for (name, window) in keys {
            let times = self.seen.entry((scope.to_owned(), name)).or_default();
            while times
                .front()
                .is_some_and(|&t| now.duration_since(t) >= window.length)
            {
                times.pop_front();
            }
            if times.len() >= window.cap {
                ok = false;
            }
            times.push_back(now);
        }
        ok
    }

    /// Counts a v1 request in its tier's window. As with Instagram's windows, a refused request
    /// counts too (the server saw it), so a caller that keeps knocking stays refused. A tier a
    /// caller without a token may not use admits nothing and counts nothing.
    pub fn admit_tier(&mut self, scope: &str, tier: Tier, anonymous: bool, now: Instant) -> Usage {
        let Some(window) = self.limits.v1_tier(tier, anonymous) else {
            return Usage {
                admitted: false,
                cap: 0,
                used: 0,
                reset_in: Duration::ZERO,
            };
        };
        let times = self
            .seen
            .entry((scope.to_owned(), tier.label()))
            .or_default();
        while times
            .front()
            .is_some_and(|&t| now.duration_since(t) >= window.length)
        {
            times.pop_front();
        }
        let admitted = times.len() < window.cap;
        times.push_back(now);
        let reset_in = times.front().map_or(window.length, |&t| {
            window.length.saturating_sub(now.duration_since(t))
        });
        Usage {
            admitted,
            cap: window.cap,
            used: times.len(),
            reset_in,
        }
    }
}
