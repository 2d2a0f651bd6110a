//! The event type a received request is filed under, so that a source endpoint's
//! `filterTypes` can pick events: the provider's own name for the event where it sends one
//! (GitHub's `X-GitHub-Event`, Shopify's `X-Shopify-Topic`, Stripe's and Standard Webhooks'
//! `type`, Slack's inner `event.type`), else the source's type (`generic-webhook`, …).

use std::borrow::Cow;

use kait_core::validate;
use serde::Deserialize;

use crate::SourceKind;
use crate::verify::Headers;

/// The fields of a payload that name its event: `type`, and Slack's `event.type`.
#[derive(Deserialize)]
struct Named<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event: Option<Inner<'a>>,
}

#[derive(Deserialize)]
struct Inner<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
}

/// The event type of a request from a `kind` source, with `payload` its JSON reading.
/// Always a valid event type name: a provider's name is mapped onto the allowed characters
/// (`orders/create` → `orders.create`) and is dropped for the fallback if still invalid.
pub fn event_type(kind: SourceKind, headers: &(impl Headers + ?Sized), payload: &str) -> String {
    // Only the names are read: the rest of the payload is skipped, not built.
    let named_in_payload = || serde_json::from_str::<Named<'_>>(payload).ok();
    let named = match kind {
        SourceKind::Github => headers.header("x-github-event").map(str::to_owned),
        SourceKind::Shopify => headers.header("x-shopify-topic").map(str::to_owned),
        SourceKind::Slack => named_in_payload().and_then(|named| {
            named
                .event
                .and_then(|event| event.kind)
                .or(named.kind)
                .map(Cow::into_owned)
        }),
        SourceKind::Stripe
        | SourceKind::Svix
        | SourceKind::StandardWebhooks
        | SourceKind::GenericWebhook => {
            named_in_payload().and_then(|named| named.kind.map(Cow::into_owned))
        }
        SourceKind::Cron => None,
    };
    named
        .map(|name| {
            name.chars()
                .map(|c| match c {
                    'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
                    _ => '.',
                })
                .collect::<String>()
        })
        .filter(|name| validate::event_type_name(name).is_ok())
        .unwrap_or_else(|| kind.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_name_their_events() {
        let github: &[(&str, &str)] = &[("X-GitHub-Event", "pull_request")];
        assert_eq!(event_type(SourceKind::Github, github, "{}"), "pull_request");
        let shopify: &[(&str, &str)] = &[("X-Shopify-Topic", "orders/create")];
        assert_eq!(
            event_type(SourceKind::Shopify, shopify, "{}"),
            "orders.create"
        );
        let none: &[(&str, &str)] = &[];
        assert_eq!(
            event_type(
                SourceKind::Stripe,
                none,
                r#"{"id":"evt_1","type":"invoice.paid"}"#
            ),
            "invoice.paid"
        );
        assert_eq!(
            event_type(
                SourceKind::Slack,
                none,
                r#"{"type":"event_callback","event":{"type":"app_mention"}}"#
            ),
            "app_mention"
        );
    }

    #[test]
    fn without_a_usable_name_the_source_type_is_used() {
        let none: &[(&str, &str)] = &[];
        assert_eq!(
            event_type(SourceKind::GenericWebhook, none, "{}"),
            "generic-webhook"
        );
        assert_eq!(event_type(SourceKind::Github, none, "{}"), "github");
        let long = format!(r#"{{"type":"{}"}}"#, "a".repeat(1000));
        assert_eq!(event_type(SourceKind::Svix, none, &long), "svix");
        assert_eq!(
            event_type(SourceKind::Stripe, none, r#"{"type":""}"#),
            "stripe"
        );
    }
}
