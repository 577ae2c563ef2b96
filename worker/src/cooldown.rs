//! When an account must rest: Instagram pushing back on it (`feedback_required`, or 429s coming
//! faster than the limiter's penalties absorb them) sends it to `cooldown` for
//! `worker.cooldown`, after which any worker may lease it again.
//!
//! It decides only; it must not talk to PostgreSQL or Instagram. The worker records the rest with
//! `Accounts::cool_down`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The 429s one held account drew recently. Kept per hold, in memory: an account leased afresh
/// starts clean, which is what a rest that just ended should mean.
#[derive(Debug)]
pub struct Strikes {
    limit: u32,
    window: Duration,
    at: VecDeque<Instant>,
}

impl Strikes {
    /// `limit` 429s within `window` call for a rest; a `limit` of 0 never does.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            at: VecDeque::new(),
        }
    }

    /// Records a 429 at `now`; true when it makes `limit` within `window`.
    pub fn strike(&mut self, now: Instant) -> bool {
        if self.limit == 0 {
            return false;
        }
        while let Some(&first) = self.at.front() {
            if now.saturating_duration_since(first) >= self.window {
                self.at.pop_front();
            } else {
                break;
            }
        }
        self.at.push_back(now);
        self.at.len() >= self.limit as usize
    }
}

/// Why an account rests, as the metric's `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `limit` 429s within the window.
    RateLimited,
    /// Instagram answered `feedback_required`: it blocks the account's actions for a while.
    FeedbackRequired,
}

impl Reason {
    pub const ALL: [Reason; 2] = [Reason::RateLimited, Reason::FeedbackRequired];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RateLimited => "rate_limited",
            Reason::FeedbackRequired => "feedback_required",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_enough_strikes_within_the_window_call_for_a_rest() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut strikes = Strikes::new(3, Duration::from_secs(600));
        assert!(!strikes.strike(s(0)));
        assert!(!strikes.strike(s(100)));
        // The first has left the window: two within it.
        assert!(!strikes.strike(s(650)));
        assert!(strikes.strike(s(690)));
    }

    #[test]
    fn a_limit_of_zero_never_rests() {
        let t0 = Instant::now();
        let mut strikes = Strikes::new(0, Duration::from_secs(600));
        assert!((0..10).all(|_| !strikes.strike(t0)));
    }
}
