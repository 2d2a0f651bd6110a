//! The retry schedule: how long to wait after each failed attempt, and when to give up.
//!
//! The schedule lists the delays *between* attempts; the first attempt is immediate. With the
//! default `5s,5m,30m,2h,5h,10h,10h` a delivery gets eight attempts over about 28 hours (more
//! with jitter) before it is marked failed. Jitter spreads retries of a burst so that an
//! endpoint coming back is not hit by all of them in the same second.

use std::time::Duration;

/// Fraction of each delay by which it may be shortened or lengthened at random.
const JITTER_FRACTION: f64 = 0.2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid retry schedule entry `{entry}`: expected a duration such as 5s, 5m, 2h")]
pub struct RetryScheduleError {
    entry: String,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        const MINUTE: u64 = 60;
        const HOUR: u64 = 60 * MINUTE;
        Self::new(
            [
                5,
                5 * MINUTE,
                30 * MINUTE,
                2 * HOUR,
                5 * HOUR,
                10 * HOUR,
                10 * HOUR,
            ]
            .into_iter()
            .map(Duration::from_secs)
            .collect(),
        )
    }
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Self {
        Self { delays }
    }

    /// Parses a comma-separated list such as `5s,5m,30m` (an empty string means no retries).
    pub fn parse(text: &str) -> Result<Self, RetryScheduleError> {
        let delays = text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                humantime::parse_duration(entry).map_err(|_| RetryScheduleError {
                    entry: entry.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { delays })
    }

    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// Total attempts a delivery gets: the first one plus one per listed delay.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The delay before the next attempt after `attempts_made` attempts have failed, or
    /// `None` when the schedule is exhausted. `unit_random` is uniform in `[0, 1)`; passing it
    /// in keeps this function pure and testable.
    pub fn next_delay(&self, attempts_made: u32, unit_random: f64) -> Option<Duration> {
        let index = attempts_made.checked_sub(1)? as usize;
        let base = *self.delays.get(index)?;
        let factor = 1.0 + JITTER_FRACTION * (2.0 * unit_random - 1.0);
        Some(base.mul_f64(factor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_gives_eight_attempts() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.max_attempts(), 8);
        assert_eq!(
            schedule.next_delay(1, 0.5),
            Some(Duration::from_secs(5)),
            "jitter at the midpoint is zero"
        );
        assert_eq!(
            schedule.next_delay(7, 0.5),
            Some(Duration::from_secs(36_000))
        );
        assert_eq!(schedule.next_delay(8, 0.5), None);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let schedule = RetrySchedule::default();
        let low = schedule.next_delay(2, 0.0).unwrap();
        let high = schedule.next_delay(2, 0.999_999).unwrap();
        assert_eq!(low, Duration::from_secs(240));
        assert!(high > Duration::from_secs(359) && high <= Duration::from_secs(360));
    }

    #[test]
    fn parses_and_rejects() {
        let schedule = RetrySchedule::parse("1s, 2m,3h").unwrap();
        assert_eq!(
            schedule.delays(),
            &[
                Duration::from_secs(1),
                Duration::from_secs(120),
                Duration::from_secs(10_800)
            ]
        );
        assert_eq!(RetrySchedule::parse("").unwrap().max_attempts(), 1);
        assert!(RetrySchedule::parse("5s,soon").is_err());
    }
}
