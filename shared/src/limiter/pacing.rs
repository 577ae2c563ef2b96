//! The local, smooth layer: one `governor` limiter per query type in each worker, so requests are
//! spaced by about `(window + margin) / cap` with jitter instead of bursting a window's worth at
//! once. It cannot guarantee a cap on its own (a GCRA with burst B and period W/N admits up to
//! B + N in one window, and it knows nothing of other workers): that is the ledger's job.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::{Profile, QueryType};
use crate::config::LimiterConfig;

pub struct Pacer {
    profile: Profile,
    burst: NonZeroU32,
    period: Option<Duration>,
    jitter: Duration,
    limiters: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
}

impl Pacer {
    pub fn new(config: &LimiterConfig) -> Self {
        Self {
            profile: Profile::from_config(config),
            burst: NonZeroU32::new(config.pacing_burst).unwrap_or(NonZeroU32::MIN),
            period: config.pacing_period.map(|p| p.0.mul_f64(config.time_scale)),
            jitter: config.pacing_jitter.0.mul_f64(config.time_scale),
            limiters: Mutex::new(HashMap::new()),
        }
    }

    /// The spacing used for `q`.
    pub fn period(&self, q: &QueryType) -> Duration {
        self.period
            .unwrap_or_else(|| self.profile.steady_period(q))
            .max(Duration::from_nanos(1))
    }

    fn limiter(&self, q: &QueryType) -> Arc<DefaultDirectRateLimiter> {
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        limiters
            .entry(q.key())
            .or_insert_with(|| {
                let quota = Quota::with_period(self.period(q))
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(self.burst);
                Arc::new(RateLimiter::direct(quota))
            })
            .clone()
    }

    /// Waits for this worker's next slot of `q`, then a random jitter; returns how long it waited.
    ///
    /// The slot is taken before the jitter is slept (not after, as governor's
    /// `until_ready_with_jitter` does), so the jitter moves each request within its slot without
    /// pushing every later slot back: the steady rate stays one per period.
    pub async fn pace(&self, q: &QueryType) -> Duration {
        let started = Instant::now();
        let limiter = self.limiter(q);
        limiter.until_ready().await;
        let jitter = self.jitter.mul_f64(rand::random::<f64>());
        if !jitter.is_zero() {
            tokio::time::sleep(jitter).await;
        }
        started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spaces_requests_of_one_type_but_not_of_another() {
        let config = LimiterConfig {
            pacing_period: Some(crate::duration::HumanDuration::from_millis(100)),
            pacing_jitter: crate::duration::HumanDuration::from_millis(0),
            ..LimiterConfig::default()
        };
        let pacer = Pacer::new(&config);
        let a = QueryType::QueryHash("a".into());
        let start = Instant::now();
        for _ in 0..4 {
            pacer.pace(&a).await;
        }
        // Burst 1: the first is free, the next three wait a period each.
        assert!(
            start.elapsed() >= Duration::from_millis(290),
            "{:?}",
            start.elapsed()
        );
        let other = Instant::now();
        pacer.pace(&QueryType::Other).await;
        assert!(other.elapsed() < Duration::from_millis(50));
    }
}
