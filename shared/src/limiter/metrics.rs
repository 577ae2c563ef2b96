//! The limiter's metrics, labelled by query-type class only (`graphql`, `doc_id`, `iphone`,
//! `other`): never a username, an account or a hash value.

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::QueryClass;

pub struct LimiterMetrics {
    pub registry: Registry,
    pub wait_seconds: HistogramVec,
    pub grants: IntCounterVec,
    pub denials: IntCounterVec,
    pub fence_denials: IntCounterVec,
    pub responses_429: IntCounterVec,
    pub penalties: IntCounterVec,
    pub window_utilisation: GaugeVec,
}

impl LimiterMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let wait_seconds = HistogramVec::new(
            HistogramOpts::new(
                "trawl_limiter_wait_seconds",
                "Time a request waited for pacing and the ledger before it was let through",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                1800.0,
            ]),
            &["class"],
        )?;
        let counter =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["class"]);
        let grants = counter(
            "trawl_limiter_grants_total",
            "Permits granted by the ledger",
        )?;
        let denials = counter(
            "trawl_limiter_denials_total",
            "Ledger refusals (each followed by one sleep until the next free slot)",
        )?;
        let fence_denials = counter(
            "trawl_limiter_fence_denials_total",
            "Ledger refusals by the failover fence: a promotion may have lost grants, so windows \
             count as full until no lost grant can be in them",
        )?;
        let responses_429 = counter(
            "trawl_instagram_429_responses_total",
            "HTTP 429 answers from Instagram",
        )?;
        let penalties = counter(
            "trawl_limiter_penalties_total",
            "Penalties recorded after a 429 or a server hint",
        )?;
        let window_utilisation = GaugeVec::new(
            Opts::new(
                "trawl_limiter_window_utilisation_ratio",
                "Grants in the per-type window divided by its cap, at the last decision",
            ),
            &["class"],
        )?;
        registry.register(Box::new(wait_seconds.clone()))?;
        registry.register(Box::new(grants.clone()))?;
        registry.register(Box::new(denials.clone()))?;
        registry.register(Box::new(fence_denials.clone()))?;
        registry.register(Box::new(responses_429.clone()))?;
        registry.register(Box::new(penalties.clone()))?;
        registry.register(Box::new(window_utilisation.clone()))?;
        for class in QueryClass::ALL {
            let c = [class.as_str()];
            wait_seconds.with_label_values(&c);
            grants.with_label_values(&c);
            denials.with_label_values(&c);
            fence_denials.with_label_values(&c);
            responses_429.with_label_values(&c);
            penalties.with_label_values(&c);
            window_utilisation.with_label_values(&c).set(0.0);
        }
        Ok(Self {
            registry,
            wait_seconds,
            grants,
            denials,
            fence_denials,
            responses_429,
            penalties,
            window_utilisation,
        })
    }
}
