//! Timestamps as the store keeps them: milliseconds since the Unix epoch in an `i64`.
//!
//! One integer is cheap to index and compare in SQLite and PostgreSQL alike; conversion to
//! RFC 3339 happens only at the API edge.

use chrono::{DateTime, TimeZone, Utc};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The current wall-clock time in milliseconds.
pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

/// Converts stored milliseconds to a UTC date-time (saturating on out-of-range values).
pub fn to_datetime(millis: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
