//! Cron sources: when their events are due. A schedule is a cron pattern (five fields, or six
//! with seconds first; `@hourly`-style nicknames), read in UTC.
//!
//! Only the latest tick that has come is ever due, once: after downtime the ticks missed
//! while the server was down collapse into that one (never a burst), and a tick already
//! fired (its time recorded by the runner) does not fire again.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use kait_core::time::Millis;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule(Cron);

impl Schedule {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        Cron::from_str(pattern)
            .map(Self)
            .map_err(|error| format!("not a cron schedule: {error}"))
    }

    /// The latest tick at or before `now`.
    pub fn latest_at_or_before(&self, now: Millis) -> Option<Millis> {
        let now = to_utc(now)?;
        self.0
            .find_previous_occurrence(&now, true)
            .ok()
            .map(|at| at.timestamp_millis())
    }

    /// The first tick after `after`.
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        let after = to_utc(after)?;
        self.0
            .find_next_occurrence(&after, false)
            .ok()
            .map(|at| at.timestamp_millis())
    }
}

fn to_utc(at: Millis) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(at).single()
}

/// The tick to fire now, if any: the latest one that has come, if it came after the source
/// was created and after the last tick fired.
pub fn due_tick(
    schedule: &Schedule,
    now: Millis,
    created_at: Millis,
    last_fired: Option<Millis>,
) -> Option<Millis> {
    let latest = schedule.latest_at_or_before(now)?;
    let floor = last_fired.map_or(created_at - 1, |last| last.max(created_at - 1));
    (latest > floor).then_some(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Millis = 60_000;
    /// 2026-12-01T00:00:00Z.
    const MIDNIGHT: Millis = 1_796_083_200_000;

    #[test]
    fn five_and_six_field_patterns_and_nicknames_parse() {
        let every_five = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(
            every_five.latest_at_or_before(MIDNIGHT + 7 * MINUTE),
            Some(MIDNIGHT + 5 * MINUTE)
        );
        assert_eq!(
            every_five.next_after(MIDNIGHT + 5 * MINUTE),
            Some(MIDNIGHT + 10 * MINUTE)
        );
        let every_two_seconds = Schedule::parse("*/2 * * * * *").unwrap();
        assert_eq!(
            every_two_seconds.next_after(MIDNIGHT + 1_500),
            Some(MIDNIGHT + 2_000)
        );
        assert!(Schedule::parse("@hourly").is_ok());
        assert!(Schedule::parse("every tuesday").is_err());
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("").is_err());
    }

    #[test]
    fn only_the_latest_tick_fires_once_never_a_burst() {
        let schedule = Schedule::parse("* * * * *").unwrap();
        let created = MIDNIGHT - 30_000;
        // Down for ten minutes: one tick, the latest.
        assert_eq!(
            due_tick(
                &schedule,
                MIDNIGHT + 10 * MINUTE + 5,
                created,
                Some(MIDNIGHT)
            ),
            Some(MIDNIGHT + 10 * MINUTE)
        );
        // Fired: not again until the next one has come.
        let fired = Some(MIDNIGHT + 10 * MINUTE);
        assert_eq!(
            due_tick(&schedule, MIDNIGHT + 10 * MINUTE + 59_999, created, fired),
            None
        );
        assert_eq!(
            due_tick(&schedule, MIDNIGHT + 11 * MINUTE, created, fired),
            Some(MIDNIGHT + 11 * MINUTE)
        );
        // Ticks before the source existed never fire; one at its creation does.
        assert_eq!(due_tick(&schedule, MIDNIGHT - 1, created, None), None);
        assert_eq!(
            due_tick(&schedule, MIDNIGHT, MIDNIGHT, None),
            Some(MIDNIGHT)
        );
    }
}
