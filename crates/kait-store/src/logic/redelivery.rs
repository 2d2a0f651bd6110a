//! Which messages a `replay-missing` gives an endpoint.

use std::collections::BTreeSet;

use kait_core::Endpoint;

/// Whether the endpoint's filters take a message of this type and channels, disabled or not:
/// replaying what it missed is about what it should have had.
pub fn should_have_had(
    endpoint: &Endpoint,
    event_type: &str,
    channels: Option<&BTreeSet<String>>,
) -> bool {
    let enabled = Endpoint {
        disabled: false,
        ..endpoint.clone()
    };
    kait_core::filter::endpoint_matches(&enabled, event_type, channels)
}

/// A message's stored channel set (JSON text), or none when absent or unreadable.
pub fn stored_channels(text: Option<&str>) -> Option<BTreeSet<String>> {
    text.and_then(|text| serde_json::from_str(text).ok())
}
