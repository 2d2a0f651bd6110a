//! Per-endpoint rate limit: a token bucket holding one token, refilled at the endpoint's rate.
//!
//! One token means no bursts: consecutive attempts are at least `1 / rate` apart. Deliveries
//! over the rate wait in the endpoint's lane; they are never dropped.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens per second; `None` is unlimited.
    rate: Option<f64>,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(rate: Option<u16>, now: Instant) -> Self {
        Self {
            rate: rate.filter(|rate| *rate > 0).map(f64::from),
            tokens: 1.0,
            updated: now,
        }
    }

    /// Changes the rate, keeping the tokens already earned.
    pub fn set_rate(&mut self, rate: Option<u16>) {
        self.rate = rate.filter(|rate| *rate > 0).map(f64::from);
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.rate {
            let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate).min(1.0);
        }
        self.updated = now;
    }

    /// Takes a token if one is available.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let Some(_) = self.rate else { return true };
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket holds its token at `now`: forgetting it then changes nothing.
    pub fn is_full(&self, now: Instant) -> bool {
        match self.rate {
            None => true,
            Some(rate) => {
                let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
                self.tokens + elapsed * rate >= 1.0
            }
        }
    }

    /// When the next token will be there, if there is none now.
    pub fn next_token_at(&self) -> Option<Instant> {
        let rate = self.rate?;
        if self.tokens >= 1.0 {
            return None;
        }
        Some(self.updated + Duration::from_secs_f64((1.0 - self.tokens) / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_without_a_rate() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(None, now);
        assert!((0..1000).all(|_| bucket.try_take(now)));
        assert_eq!(bucket.next_token_at(), None);
    }

    #[test]
    fn spaces_attempts_by_the_rate() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(Some(4), now);
        assert!(bucket.try_take(now));
        assert!(!bucket.try_take(now));
        assert_eq!(
            bucket.next_token_at(),
            Some(now + Duration::from_millis(250))
        );
        assert!(!bucket.try_take(now + Duration::from_millis(249)));
        assert!(bucket.try_take(now + Duration::from_millis(250)));
        // A long pause does not build up a burst.
        let later = now + Duration::from_secs(10);
        assert!(bucket.try_take(later));
        assert!(!bucket.try_take(later));
        assert!(!bucket.is_full(later));
        assert!(bucket.is_full(later + Duration::from_millis(250)));
    }
}
