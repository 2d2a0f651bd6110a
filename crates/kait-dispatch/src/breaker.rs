//! A circuit breaker per endpoint.
//!
//! After `threshold` consecutive failures the endpoint's deliveries pause (open); when the
//! cooldown has passed, a single probe is sent (half-open): success resumes delivery (closed),
//! failure pauses again for twice as long, up to a ceiling. While open, no attempts are spent
//! from the retry schedules of the waiting deliveries. Pure logic over explicit instants.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kait_core::EndpointId;

#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; 0 disables it.
    pub threshold: u32,
    pub initial_cooldown: Duration,
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            threshold: 10,
            initial_cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, cooldown: Duration },
    HalfOpen { cooldown: Duration, probing: bool },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed { failures: 0 },
        }
    }

    /// Whether an attempt may start now (moving from open to half-open once the cooldown is
    /// over). A half-open breaker lets exactly one probe through, with nothing else in flight.
    pub fn may_send(&mut self, now: Instant, in_flight: usize) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until, cooldown } => {
                if now < until {
                    return false;
                }
                self.state = State::HalfOpen {
                    cooldown,
                    probing: false,
                };
                in_flight == 0
            }
            State::HalfOpen { probing, .. } => !probing && in_flight == 0,
        }
    }

    pub fn on_send(&mut self) {
        if let State::HalfOpen { cooldown, .. } = self.state {
            self.state = State::HalfOpen {
                cooldown,
                probing: true,
            };
        }
    }

    pub fn on_result(&mut self, succeeded: bool, now: Instant) {
        if self.config.threshold == 0 {
            return;
        }
        self.state = match (self.state, succeeded) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 >= self.config.threshold => {
                State::Open {
                    until: now + self.config.initial_cooldown,
                    cooldown: self.config.initial_cooldown,
                }
            }
            (State::Closed { failures }, false) => State::Closed {
                failures: failures + 1,
            },
            (State::HalfOpen { cooldown, .. }, false) => {
                let cooldown = (cooldown * 2).min(self.config.max_cooldown);
                State::Open {
                    until: now + cooldown,
                    cooldown,
                }
            }
            // An attempt started before the breaker opened failed too: nothing changes.
            (open @ State::Open { .. }, false) => open,
        };
    }

    /// When an open breaker will let a probe through.
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.state {
            State::Open { until, .. } => Some(until),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    /// Closed with no failures counted: nothing worth remembering.
    pub fn is_pristine(&self) -> bool {
        self.state == State::Closed { failures: 0 }
    }

    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half-open",
        }
    }
}

/// The breaker states the dispatcher publishes for the API's endpoint stats. Endpoints not
/// listed are closed.
#[derive(Clone, Default)]
pub struct CircuitStates {
    states: Arc<Mutex<HashMap<EndpointId, &'static str>>>,
}

impl CircuitStates {
    pub fn get(&self, endpoint_id: &EndpointId) -> &'static str {
        self.states
            .lock()
            .expect("circuit states lock")
            .get(endpoint_id)
            .copied()
            .unwrap_or("closed")
    }

    pub(crate) fn set(&self, endpoint_id: &EndpointId, state: &'static str) {
        let mut states = self.states.lock().expect("circuit states lock");
        if state == "closed" {
            states.remove(endpoint_id);
        } else {
            states.insert(endpoint_id.clone(), state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            threshold: 3,
            initial_cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(25),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let now = Instant::now();
        let mut breaker = breaker();
        breaker.on_result(false, now);
        breaker.on_result(false, now);
        breaker.on_result(true, now);
        breaker.on_result(false, now);
        breaker.on_result(false, now);
        assert_eq!(breaker.state_name(), "closed", "a success resets the count");
        breaker.on_result(false, now);
        assert_eq!(breaker.state_name(), "open");
        assert!(!breaker.may_send(now + Duration::from_secs(9), 0));
        assert_eq!(breaker.reopens_at(), Some(now + Duration::from_secs(10)));
    }

    #[test]
    fn half_open_sends_one_probe_and_backs_off() {
        let now = Instant::now();
        let mut breaker = breaker();
        for _ in 0..3 {
            breaker.on_result(false, now);
        }
        let later = now + Duration::from_secs(10);
        assert!(
            !breaker.may_send(later, 1),
            "not while others are in flight"
        );
        assert!(breaker.may_send(later, 0));
        breaker.on_send();
        assert_eq!(breaker.state_name(), "half-open");
        assert!(!breaker.may_send(later, 0), "one probe at a time");
        breaker.on_result(false, later);
        assert_eq!(breaker.reopens_at(), Some(later + Duration::from_secs(20)));
        let much_later = later + Duration::from_secs(20);
        assert!(breaker.may_send(much_later, 0));
        breaker.on_send();
        breaker.on_result(false, much_later);
        assert_eq!(
            breaker.reopens_at(),
            Some(much_later + Duration::from_secs(25)),
            "capped"
        );
        let recovered = much_later + Duration::from_secs(25);
        assert!(breaker.may_send(recovered, 0));
        breaker.on_send();
        breaker.on_result(true, recovered);
        assert!(breaker.is_closed());
    }
}
