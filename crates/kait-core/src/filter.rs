//! Which endpoints a message goes to.
//!
//! Svix's rules: a disabled endpoint gets nothing; an endpoint with an event-type filter gets
//! only those types; an endpoint with channels gets only messages sharing at least one of its
//! channels, while an endpoint without channels gets every message.

use std::collections::BTreeSet;

use crate::model::{Endpoint, EndpointKind};

/// Whether `endpoint` should receive a message of `event_type` on `message_channels`.
pub fn endpoint_matches(
    endpoint: &Endpoint,
    event_type: &str,
    message_channels: Option<&BTreeSet<String>>,
) -> bool {
    if endpoint.disabled || endpoint.kind == EndpointKind::Polling {
        return false;
    }
    if let Some(event_types) = &endpoint.event_types
        && !event_types.is_empty()
        && !event_types.contains(event_type)
    {
        return false;
    }
    match &endpoint.channels {
        Some(endpoint_channels) if !endpoint_channels.is_empty() => {
            message_channels.is_some_and(|channels| !channels.is_disjoint(endpoint_channels))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{AppId, EndpointId};
    use crate::signing::Secret;

    fn endpoint(event_types: Option<&[&str]>, channels: Option<&[&str]>) -> Endpoint {
        let set = |names: &[&str]| names.iter().map(|name| name.to_string()).collect();
        Endpoint {
            id: EndpointId::generate(),
            app_id: AppId::generate(),
            uid: None,
            url: "https://example.com/hook".into(),
            description: String::new(),
            version: 1,
            disabled: false,
            event_types: event_types.map(set),
            channels: channels.map(set),
            rate_limit: None,
            metadata: Default::default(),
            secret: Secret::generate(),
            previous_secret: None,
            headers: Default::default(),
            ordering: Default::default(),
            format: Default::default(),
            kind: Default::default(),
            created_at: 0,
            updated_at: 0,
            revision: 0,
            transformation: Default::default(),
            media: Default::default(),
            ownership: Default::default(),
        }
    }

    fn channels(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn unfiltered_endpoint_gets_everything() {
        let open = endpoint(None, None);
        assert!(endpoint_matches(&open, "a.b", None));
        assert!(endpoint_matches(&open, "a.b", Some(&channels(&["x"]))));
    }

    #[test]
    fn event_type_filter() {
        let filtered = endpoint(Some(&["camera.motion"]), None);
        assert!(endpoint_matches(&filtered, "camera.motion", None));
        assert!(!endpoint_matches(&filtered, "camera.sound", None));
        let empty_filter = endpoint(Some(&[]), None);
        assert!(endpoint_matches(&empty_filter, "anything", None));
    }

    #[test]
    fn channel_filter() {
        let on_channel = endpoint(None, Some(&["site-1", "site-2"]));
        assert!(endpoint_matches(
            &on_channel,
            "t",
            Some(&channels(&["site-2"]))
        ));
        assert!(!endpoint_matches(
            &on_channel,
            "t",
            Some(&channels(&["site-3"]))
        ));
        assert!(!endpoint_matches(&on_channel, "t", None));
    }

    #[test]
    fn disabled_gets_nothing() {
        let mut disabled = endpoint(None, None);
        disabled.disabled = true;
        assert!(!endpoint_matches(&disabled, "t", None));
    }
}
