//! What a pipe says: its trigger, an optional transform and a list of actions, read from
//! the JSON the API is given (and the store keeps), with its limits checked while reading.
//!
//! Expressions (`filter`, `transform`, `key`, `payload`, …) are JavaScript functions of the
//! event, e.g. `e => e.payload.total > 100`, run in `kait-script`'s sandbox.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Most actions in one pipe, nested lists included.
pub const MAX_ACTIONS: usize = 32;
/// Deepest nesting of action lists (`expect` inside `expect`'s `onTimeout`, …).
pub const MAX_DEPTH: usize = 3;
/// Longest wait a `delay` or `expect` may ask for.
pub const MAX_WAIT_MS: u64 = 30 * 24 * 3600 * 1000;
/// Most event types a trigger or an `expect` may name.
pub const MAX_EVENT_TYPES: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Definition {
    pub trigger: Trigger,
    /// `e => newPayload`: what later actions see as `e.payload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trigger {
    /// The application (id or uid) whose events trigger the pipe; kept as given, resolved by
    /// the API when the pipe is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Or the incoming source (id or uid) whose received requests trigger it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Or several incoming sources (ids or uids), any of whose received requests trigger it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// The event types that start a run.
    pub event_types: BTreeSet<String>,
    /// `e => bool`: runs only where it returns true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Action {
    /// Creates a message in an application: normal fan-out to its endpoints (and pipes).
    #[serde(rename_all = "camelCase")]
    Emit {
        /// The application's id or uid.
        app: String,
        event_type: String,
        /// `e => payload`; the (transformed) event's payload when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ordering_key: Option<String>,
        /// `e => id`; by default one derived from the run and the action, so that running
        /// the same event again never emits twice.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// Sends the (transformed) event through the delivery engine (signed, retried, logged):
    /// to a `url`, by an endpoint of its own in the pipe's application (see
    /// [`forward_app_uid`]; egress-guarded), or to an existing `endpoint` of an incoming
    /// `source`, as a message in the source's application for that endpoint alone.
    #[serde(rename_all = "camelCase")]
    Forward {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
    /// Waits, durably, then runs the actions after it.
    #[serde(rename_all = "camelCase")]
    Delay { ms: u64 },
    /// Waits up to `within_ms` for an event of `event_types` with the same key.
    #[serde(rename_all = "camelCase")]
    Expect {
        /// `e => key` over the trigger event and over the expected one.
        key: String,
        /// The awaited event types (none: only the time out matters, e.g. a silent sensor).
        #[serde(default)]
        event_types: BTreeSet<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<String>,
        within_ms: u64,
        /// A new trigger event with the same key starts the wait again (else it is ignored
        /// while one waits).
        #[serde(default)]
        restart: bool,
        #[serde(default)]
        on_match: Vec<Action>,
        #[serde(default)]
        on_timeout: Vec<Action>,
    },
    /// Sends a command to a device over MQTT, the way `POST …/device/{device}/command` does
    /// in `async` mode: its reply or timeout arrives as a `device.command.replied` or
    /// `device.command.timeout` event in the application. Needs `--mqtt-url`.
    #[serde(rename_all = "camelCase")]
    Publish {
        /// The application's id or uid (whose device it is).
        app: String,
        /// `e => device id`.
        device: String,
        /// The command's name (a topic level).
        name: String,
        /// `e => payload`; the (transformed) event's payload when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
        /// How long to wait for the reply once sent (100 ms to 5 min; 10 s).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// How long a command for an offline device waits for it (1 s to 7 days; 1 hour).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_in_ms: Option<u64>,
    },
}

/// The reply wait of a `publish` (and of a device command), in milliseconds.
pub const COMMAND_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=300_000;
pub const DEFAULT_COMMAND_TIMEOUT_MS: u64 = 10_000;
/// How long a command for an offline device waits for it, in milliseconds.
pub const COMMAND_EXPIRES_IN_MS: std::ops::RangeInclusive<u64> = 1_000..=7 * 24 * 3_600_000;
pub const DEFAULT_COMMAND_EXPIRES_IN_MS: u64 = 3_600_000;

impl Action {
    /// Where a `forward` sends (`None` for other actions, or a forward not checked yet).
    pub fn forward_target(&self) -> Option<ForwardTarget<'_>> {
        match self {
            Action::Forward {
                url: Some(url),
                source: None,
                endpoint: None,
            } => Some(ForwardTarget::Url(url)),
            Action::Forward {
                url: None,
                source: Some(source),
                endpoint: Some(endpoint),
            } => Some(ForwardTarget::SourceEndpoint { source, endpoint }),
            _ => None,
        }
    }
}

/// Which list of actions: the top-level one, or one inside an `expect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Branch {
    OnMatch,
    OnTimeout,
}

/// Where a list of actions is: the path of `(index of the expect, branch)` from the top.
pub type ListAddress = Vec<(usize, Branch)>;

/// Most incoming sources one trigger may name.
pub const MAX_SOURCES: usize = 32;

/// Where a `forward` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardTarget<'a> {
    Url(&'a str),
    SourceEndpoint { source: &'a str, endpoint: &'a str },
}

impl Trigger {
    /// The sources it names, `source` and `sources` together, each once.
    pub fn all_sources(&self) -> Vec<&str> {
        let mut all: Vec<&str> = Vec::new();
        for source in self.source.iter().chain(&self.sources) {
            if !all.contains(&source.as_str()) {
                all.push(source);
            }
        }
        all
    }
}

/// Why a definition was refused: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DefinitionError {
    pub path: String,
    pub message: String,
}

fn refuse(path: &str, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl Definition {
    /// Reads and checks a definition.
    pub fn parse(value: &serde_json::Value) -> Result<Self, DefinitionError> {
        let definition: Definition =
            serde_json::from_value(value.clone()).map_err(|error| refuse("", error.to_string()))?;
        definition.check()?;
        Ok(definition)
    }

    fn check(&self) -> Result<(), DefinitionError> {
        let sources = self.trigger.all_sources();
        if self.trigger.app.is_some() != sources.is_empty() {
            return Err(refuse(
                "trigger",
                "name either an app or one or more sources",
            ));
        }
        if sources.len() > MAX_SOURCES {
            return Err(refuse(
                "trigger.sources",
                format!("at most {MAX_SOURCES} sources"),
            ));
        }
        if sources
            .iter()
            .any(|source| source.is_empty() || source.len() > 256)
        {
            return Err(refuse(
                "trigger.sources",
                "name each source by its id or uid",
            ));
        }
        if self.trigger.event_types.is_empty() {
            return Err(refuse("trigger.eventTypes", "name at least one event type"));
        }
        check_event_types("trigger.eventTypes", &self.trigger.event_types)?;
        let mut count = 0;
        check_list(&self.actions, "actions", 1, &mut count)
    }

    /// Every event type the pipe must see: its trigger's and those its `expect`s await.
    pub fn event_types(&self) -> BTreeSet<String> {
        let mut types = self.trigger.event_types.clone();
        for (_, expect) in self.expects() {
            if let Action::Expect { event_types, .. } = expect {
                types.extend(event_types.iter().cloned());
            }
        }
        types
    }

    /// Every `expect`, with its path (for its waits' ids), however deep.
    pub fn expects(&self) -> Vec<(String, &Action)> {
        let mut found = Vec::new();
        collect_expects(&self.actions, "", &mut found);
        found
    }

    /// Every `forward`, with its path and target, however deep.
    pub fn forwards(&self) -> Vec<(String, ForwardTarget<'_>)> {
        let mut found = Vec::new();
        collect_forwards(&self.actions, "", &mut found);
        found
    }

    /// Every expression, with where it is, for checking that each compiles.
    pub fn expressions(&self) -> Vec<(String, &str)> {
        let mut found = Vec::new();
        if let Some(filter) = &self.trigger.filter {
            found.push(("trigger.filter".to_owned(), filter.as_str()));
        }
        if let Some(transform) = &self.transform {
            found.push(("transform".to_owned(), transform.as_str()));
        }
        collect_expressions(&self.actions, "actions", &mut found);
        found
    }

    /// The list of actions at `address`, if the definition still has it.
    pub fn list_at(&self, address: &[(usize, Branch)]) -> Option<&[Action]> {
        let mut list: &[Action] = &self.actions;
        for (index, branch) in address {
            let Action::Expect {
                on_match,
                on_timeout,
                ..
            } = list.get(*index)?
            else {
                return None;
            };
            list = match branch {
                Branch::OnMatch => on_match,
                Branch::OnTimeout => on_timeout,
            };
        }
        Some(list)
    }
}

/// The uid of the application holding a pipe's `forward` endpoints.
pub fn forward_app_uid(pipe_id: &kait_core::PipeId) -> String {
    format!("kait-pipe-{pipe_id}")
}

/// The uid of a `forward` action's endpoint, and the channel its messages carry, from the
/// action's path (`2/onTimeout/0` → `forward-2-onTimeout-0`).
pub fn forward_name(path: &str) -> String {
    format!("forward-{}", path.replace('/', "-"))
}

/// An action's path as text: `2` at the top, `2/onTimeout/0` inside an expect.
pub fn path_text(address: &[(usize, Branch)], index: usize) -> String {
    let mut text = String::new();
    for (at, branch) in address {
        let branch = match branch {
            Branch::OnMatch => "onMatch",
            Branch::OnTimeout => "onTimeout",
        };
        text.push_str(&format!("{at}/{branch}/"));
    }
    text.push_str(&index.to_string());
    text
}

fn collect_expects<'a>(list: &'a [Action], prefix: &str, found: &mut Vec<(String, &'a Action)>) {
    for (index, action) in list.iter().enumerate() {
        if let Action::Expect {
            on_match,
            on_timeout,
            ..
        } = action
        {
            let path = format!("{prefix}{index}");
            found.push((path.clone(), action));
            collect_expects(on_match, &format!("{path}/onMatch/"), found);
            collect_expects(on_timeout, &format!("{path}/onTimeout/"), found);
        }
    }
}

fn collect_forwards<'a>(
    list: &'a [Action],
    prefix: &str,
    found: &mut Vec<(String, ForwardTarget<'a>)>,
) {
    for (index, action) in list.iter().enumerate() {
        match action {
            Action::Forward { .. } => {
                if let Some(target) = action.forward_target() {
                    found.push((format!("{prefix}{index}"), target));
                }
            }
            Action::Expect {
                on_match,
                on_timeout,
                ..
            } => {
                collect_forwards(on_match, &format!("{prefix}{index}/onMatch/"), found);
                collect_forwards(on_timeout, &format!("{prefix}{index}/onTimeout/"), found);
            }
            _ => {}
        }
    }
}

fn collect_expressions<'a>(list: &'a [Action], prefix: &str, found: &mut Vec<(String, &'a str)>) {
    for (index, action) in list.iter().enumerate() {
        let at = format!("{prefix}[{index}]");
        match action {
            Action::Emit {
                payload,
                ordering_key,
                event_id,
                ..
            } => {
                for (name, code) in [
                    ("payload", payload),
                    ("orderingKey", ordering_key),
                    ("eventId", event_id),
                ] {
                    if let Some(code) = code {
                        found.push((format!("{at}.{name}"), code.as_str()));
                    }
                }
            }
            Action::Expect {
                key,
                filter,
                on_match,
                on_timeout,
                ..
            } => {
                found.push((format!("{at}.key"), key.as_str()));
                if let Some(filter) = filter {
                    found.push((format!("{at}.filter"), filter.as_str()));
                }
                collect_expressions(on_match, &format!("{at}.onMatch"), found);
                collect_expressions(on_timeout, &format!("{at}.onTimeout"), found);
            }
            Action::Publish {
                device, payload, ..
            } => {
                found.push((format!("{at}.device"), device.as_str()));
                if let Some(payload) = payload {
                    found.push((format!("{at}.payload"), payload.as_str()));
                }
            }
            Action::Forward { .. } | Action::Delay { .. } => {}
        }
    }
}

fn check_event_types(path: &str, types: &BTreeSet<String>) -> Result<(), DefinitionError> {
    if types.len() > MAX_EVENT_TYPES {
        return Err(refuse(
            path,
            format!("at most {MAX_EVENT_TYPES} event types"),
        ));
    }
    for name in types {
        kait_core::validate::event_type_name(name).map_err(|message| refuse(path, message))?;
    }
    Ok(())
}

fn check_list(
    list: &[Action],
    path: &str,
    depth: usize,
    count: &mut usize,
) -> Result<(), DefinitionError> {
    if depth > MAX_DEPTH {
        return Err(refuse(
            path,
            format!("actions nest at most {MAX_DEPTH} deep"),
        ));
    }
    for (index, action) in list.iter().enumerate() {
        let at = format!("{path}[{index}]");
        *count += 1;
        if *count > MAX_ACTIONS {
            return Err(refuse(
                &at,
                format!("a pipe has at most {MAX_ACTIONS} actions"),
            ));
        }
        match action {
            Action::Emit {
                app, event_type, ..
            } => {
                if app.is_empty() || app.len() > 256 {
                    return Err(refuse(&format!("{at}.app"), "name an application"));
                }
                kait_core::validate::event_type_name(event_type)
                    .map_err(|message| refuse(&format!("{at}.eventType"), message))?;
            }
            Action::Delay { ms } => check_wait(&format!("{at}.ms"), *ms)?,
            Action::Forward {
                url,
                source,
                endpoint,
            } => match (url, source, endpoint) {
                (Some(url), None, None) => {
                    kait_core::validate::endpoint_url(url)
                        .map_err(|message| refuse(&format!("{at}.url"), message))?;
                }
                (None, Some(source), Some(endpoint)) => {
                    for (name, key) in [("source", source), ("endpoint", endpoint)] {
                        if key.is_empty() || key.len() > 256 {
                            return Err(refuse(
                                &format!("{at}.{name}"),
                                "name it by its id or uid",
                            ));
                        }
                    }
                }
                _ => {
                    return Err(refuse(
                        &at,
                        "forward to a url, or to a source's endpoint (source and endpoint)",
                    ));
                }
            },
            Action::Expect {
                event_types,
                within_ms,
                on_match,
                on_timeout,
                ..
            } => {
                check_event_types(&format!("{at}.eventTypes"), event_types)?;
                check_wait(&format!("{at}.withinMs"), *within_ms)?;
                check_list(on_match, &format!("{at}.onMatch"), depth + 1, count)?;
                check_list(on_timeout, &format!("{at}.onTimeout"), depth + 1, count)?;
            }
            Action::Publish {
                app,
                name,
                timeout_ms,
                expires_in_ms,
                ..
            } => {
                if app.is_empty() || app.len() > 256 {
                    return Err(refuse(&format!("{at}.app"), "name an application"));
                }
                kait_devices::check_segment("name", name)
                    .map_err(|message| refuse(&format!("{at}.name"), message))?;
                for (field, value, range) in [
                    ("timeoutMs", timeout_ms, COMMAND_TIMEOUT_MS),
                    ("expiresInMs", expires_in_ms, COMMAND_EXPIRES_IN_MS),
                ] {
                    if let Some(value) = value
                        && !range.contains(value)
                    {
                        return Err(refuse(
                            &format!("{at}.{field}"),
                            format!("from {} to {} ms", range.start(), range.end()),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_wait(path: &str, ms: u64) -> Result<(), DefinitionError> {
    if ms == 0 || ms > MAX_WAIT_MS {
        return Err(refuse(
            path,
            format!("a wait is 1 ms to {MAX_WAIT_MS} ms (30 days)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn abandoned_cart() -> serde_json::Value {
        json!({
            "trigger": { "app": "shop", "eventTypes": ["cart.updated"] },
            "actions": [{
                "type": "expect",
                "key": "e => e.payload.cartId",
                "eventTypes": ["order.placed"],
                "withinMs": 3600000,
                "restart": true,
                "onTimeout": [{
                    "type": "emit",
                    "app": "shop",
                    "eventType": "cart.abandoned",
                    "payload": "e => ({ cartId: e.payload.cartId })"
                }]
            }]
        })
    }

    #[test]
    fn reads_an_abandoned_cart_pipe() {
        let definition = Definition::parse(&abandoned_cart()).unwrap();
        assert_eq!(
            definition.event_types(),
            BTreeSet::from(["cart.updated".to_owned(), "order.placed".to_owned()])
        );
        assert_eq!(definition.expects()[0].0, "0");
        let paths: Vec<String> = definition
            .expressions()
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(paths, ["actions[0].key", "actions[0].onTimeout[0].payload"]);
        let timeout = definition.list_at(&[(0, Branch::OnTimeout)]).unwrap();
        assert!(matches!(timeout[0], Action::Emit { .. }));
        assert!(
            definition
                .list_at(&[(0, Branch::OnMatch)])
                .unwrap()
                .is_empty()
        );
        assert!(definition.list_at(&[(1, Branch::OnMatch)]).is_none());
        assert_eq!(path_text(&[(0, Branch::OnTimeout)], 0), "0/onTimeout/0");
        // It writes back as it was read.
        assert_eq!(
            Definition::parse(&serde_json::to_value(&definition).unwrap()).unwrap(),
            definition
        );
    }

    #[test]
    fn forwards_are_found_with_their_endpoint_names() {
        let definition = Definition::parse(&json!({
            "trigger": { "app": "a", "eventTypes": ["a"] },
            "actions": [
                { "type": "forward", "url": "https://example.com/a" },
                { "type": "expect", "key": "e => 1", "withinMs": 5, "onTimeout": [
                    { "type": "forward", "url": "https://example.com/b" },
                    { "type": "forward", "source": "github", "endpoint": "ci" }
                ] }
            ]
        }))
        .unwrap();
        let names: Vec<(String, ForwardTarget)> = definition
            .forwards()
            .into_iter()
            .map(|(path, target)| (forward_name(&path), target))
            .collect();
        assert_eq!(
            names,
            [
                (
                    "forward-0".to_owned(),
                    ForwardTarget::Url("https://example.com/a")
                ),
                (
                    "forward-1-onTimeout-0".to_owned(),
                    ForwardTarget::Url("https://example.com/b")
                ),
                (
                    "forward-1-onTimeout-1".to_owned(),
                    ForwardTarget::SourceEndpoint {
                        source: "github",
                        endpoint: "ci"
                    }
                ),
            ]
        );
        let forward = |action: serde_json::Value| {
            Definition::parse(&json!({
                "trigger": { "app": "a", "eventTypes": ["a"] },
                "actions": [action]
            }))
            .unwrap_err()
            .path
        };
        assert_eq!(
            forward(json!({ "type": "forward", "url": "ftp://example.com" })),
            "actions[0].url"
        );
        assert_eq!(forward(json!({ "type": "forward" })), "actions[0]");
        assert_eq!(
            forward(json!({ "type": "forward", "source": "github" })),
            "actions[0]",
            "a source without its endpoint"
        );
        assert_eq!(
            forward(
                json!({ "type": "forward", "url": "https://example.com", "source": "s", "endpoint": "e" })
            ),
            "actions[0]",
            "both targets"
        );
        assert_eq!(
            forward(json!({ "type": "forward", "source": "", "endpoint": "e" })),
            "actions[0].source"
        );
    }

    #[test]
    fn a_trigger_names_one_app_or_sources() {
        let trigger = |trigger: serde_json::Value| {
            Definition::parse(&json!({ "trigger": trigger, "actions": [] }))
        };
        let several =
            trigger(json!({ "sources": ["a", "b", "a"], "source": "c", "eventTypes": ["x"] }))
                .unwrap();
        assert_eq!(several.trigger.all_sources(), ["c", "a", "b"]);
        for (bad, path) in [
            (
                json!({ "app": "a", "sources": ["b"], "eventTypes": ["x"] }),
                "trigger",
            ),
            (json!({ "sources": [], "eventTypes": ["x"] }), "trigger"),
            (
                json!({ "sources": [""], "eventTypes": ["x"] }),
                "trigger.sources",
            ),
            (
                json!({ "sources": (0..=MAX_SOURCES).map(|n| n.to_string()).collect::<Vec<_>>(), "eventTypes": ["x"] }),
                "trigger.sources",
            ),
        ] {
            assert_eq!(trigger(bad.clone()).unwrap_err().path, path, "{bad}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_run() {
        let cases = [
            (
                json!({ "trigger": { "app": "a", "eventTypes": [] }, "actions": [] }),
                "trigger.eventTypes",
            ),
            (
                json!({ "trigger": { "eventTypes": ["a"] }, "actions": [] }),
                "trigger",
            ),
            (
                json!({ "trigger": { "app": "a", "eventTypes": ["a"] }, "actions": [{ "type": "delay", "ms": 0 }] }),
                "actions[0].ms",
            ),
            (
                json!({ "trigger": { "app": "a", "eventTypes": ["a"] }, "actions": [{ "type": "publish", "app": "a", "device": "e => 'd'", "name": "a/b" }] }),
                "actions[0].name",
            ),
            (
                json!({ "trigger": { "app": "a", "eventTypes": ["a"] }, "actions": [{ "type": "publish", "app": "a", "device": "e => 'd'", "name": "n", "expiresInMs": 10 }] }),
                "actions[0].expiresInMs",
            ),
            (
                json!({ "trigger": { "app": "a", "eventTypes": ["a"] }, "actions": [{ "type": "teleport" }] }),
                "",
            ),
            (
                json!({ "trigger": { "app": "a", "eventTypes": ["a"] }, "actions": [], "extra": 1 }),
                "",
            ),
            (
                json!({ "trigger": { "app": "a", "eventTypes": ["a b"] }, "actions": [] }),
                "trigger.eventTypes",
            ),
        ];
        for (value, path) in cases {
            let error = Definition::parse(&value).unwrap_err();
            assert_eq!(error.path, path, "{value}: {error}");
        }
        let many: Vec<_> = (0..=MAX_ACTIONS)
            .map(|_| json!({ "type": "delay", "ms": 1 }))
            .collect();
        let error = Definition::parse(
            &json!({ "trigger": { "app": "a", "eventTypes": ["a"] }, "actions": many }),
        )
        .unwrap_err();
        assert!(error.message.contains("at most"), "{error}");
        let mut nested = json!([{ "type": "delay", "ms": 1 }]);
        for _ in 0..MAX_DEPTH {
            nested =
                json!([{ "type": "expect", "key": "e => 1", "withinMs": 1, "onTimeout": nested }]);
        }
        let error = Definition::parse(
            &json!({ "trigger": { "app": "a", "eventTypes": ["a"] }, "actions": nested }),
        )
        .unwrap_err();
        assert!(error.message.contains("nest"), "{error}");
    }
}
