//! A plugin's reply: the actions it asks Kait to take, and whether its grant allows each.

use kait_core::scope::{ScopeKind, Scopes};
use serde::Deserialize;
use serde_json::Value;

/// The most actions one reply may hold.
pub const MAX_ACTIONS: usize = 16;

/// One action of a reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Action {
    /// A new message in the installation's application (`messages:write`, narrowed by
    /// event type).
    #[serde(rename_all = "camelCase")]
    CreateMessage {
        event_type: String,
        payload: Value,
        /// Default: derived from the attempt and the action's place, so it is made once.
        event_id: Option<String>,
        channels: Option<Vec<String>>,
    },
    /// A command to a device of the application (`devices:command`, narrowed by device);
    /// asynchronous: its outcome is an event.
    #[serde(rename_all = "camelCase")]
    SendCommand {
        device: String,
        name: String,
        #[serde(default)]
        payload: Value,
        timeout_ms: Option<u64>,
        expires_in_ms: Option<u64>,
    },
    /// Changes the plugin's own endpoint (`endpoints:write`): pause it, or change what it
    /// receives.
    #[serde(rename_all = "camelCase")]
    PatchEndpoint {
        disabled: Option<bool>,
        description: Option<String>,
        event_types: Option<Vec<String>>,
    },
    /// Says the event was taken; nothing to do (no scope needed).
    Acknowledge,
}

impl Action {
    /// The action's type, as the reply names it (for the audit log).
    pub fn name(&self) -> &'static str {
        match self {
            Action::CreateMessage { .. } => "createMessage",
            Action::SendCommand { .. } => "sendCommand",
            Action::PatchEndpoint { .. } => "patchEndpoint",
            Action::Acknowledge => "acknowledge",
        }
    }

    /// The scope the action needs, and the name it acts on (for narrowed scopes).
    fn needs(&self) -> Option<(ScopeKind, Option<&str>)> {
        match self {
            Action::CreateMessage { event_type, .. } => {
                Some((ScopeKind::MessagesWrite, Some(event_type)))
            }
            Action::SendCommand { device, .. } => Some((ScopeKind::DevicesCommand, Some(device))),
            Action::PatchEndpoint { .. } => Some((ScopeKind::EndpointsWrite, None)),
            Action::Acknowledge => None,
        }
    }
}

/// What a successful answer held.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// No `actions`: an ordinary answer.
    Plain,
    /// Actions, each read or refused with the reason (in order).
    Actions(Vec<Result<Action, String>>),
    /// `actions` that cannot be read at all.
    Unreadable(String),
}

/// Reads an answer's body. Only a JSON object with an `actions` member is a reply with
/// actions; each action is read on its own, so one bad action does not hide the others.
pub fn read(body: &str) -> Reply {
    let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(body) else {
        return Reply::Plain;
    };
    let Some(actions) = object.remove("actions") else {
        return Reply::Plain;
    };
    let Value::Array(actions) = actions else {
        return Reply::Unreadable("`actions` must be an array".into());
    };
    if actions.len() > MAX_ACTIONS {
        return Reply::Unreadable(format!("at most {MAX_ACTIONS} actions per reply"));
    }
    Reply::Actions(
        actions
            .into_iter()
            .map(|action| serde_json::from_value(action).map_err(|error| error.to_string()))
            .collect(),
    )
}

/// Whether an installation may take `action`: the plugin must be allowed to answer with
/// actions at all, and its grant must hold the action's scope for the name it acts on.
pub fn decide(replies_allowed: bool, scopes: &Scopes, action: &Action) -> Result<(), String> {
    if !replies_allowed {
        return Err("the plugin's manifest does not allow reply actions".into());
    }
    match action.needs() {
        None => Ok(()),
        Some((kind, None)) if scopes.allows(kind) => Ok(()),
        Some((kind, Some(name))) if scopes.allows_name(kind, name) => Ok(()),
        Some((kind, None)) => Err(format!("needs the scope {kind}")),
        Some((kind, Some(name))) => Err(format!("needs the scope {kind}:{name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(body: &str) -> Vec<Result<Action, String>> {
        match read(body) {
            Reply::Actions(actions) => actions,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_an_object_with_actions_is_a_reply_with_actions() {
        for plain in ["", "ok", "[]", r#"{"received": true}"#, "null"] {
            assert_eq!(read(plain), Reply::Plain, "{plain}");
        }
        assert!(matches!(read(r#"{"actions": {}}"#), Reply::Unreadable(_)));
        let many = format!(
            r#"{{"actions": [{}]}}"#,
            vec![r#"{"type":"acknowledge"}"#; 17].join(",")
        );
        assert!(matches!(read(&many), Reply::Unreadable(_)));
    }

    #[test]
    fn each_action_is_read_on_its_own() {
        let read = actions(
            r#"{"actions": [
                {"type": "createMessage", "eventType": "camera.person", "payload": {"zone": 3}},
                {"type": "explode"},
                {"type": "sendCommand", "device": "gate-7", "name": "open"},
                {"type": "patchEndpoint", "disabled": true},
                {"type": "acknowledge"}
            ]}"#,
        );
        assert_eq!(read.len(), 5);
        assert!(
            matches!(&read[0], Ok(Action::CreateMessage { event_type, .. }) if event_type == "camera.person")
        );
        assert!(read[1].is_err());
        assert!(matches!(
            &read[2],
            Ok(Action::SendCommand {
                payload: Value::Null,
                ..
            })
        ));
        assert!(matches!(
            &read[3],
            Ok(Action::PatchEndpoint {
                disabled: Some(true),
                ..
            })
        ));
        assert_eq!(read[4], Ok(Action::Acknowledge));
    }

    #[test]
    fn scopes_decide_each_action() {
        let scopes = Scopes::parse(&["messages:write:camera.*", "devices:command:gate-*"]).unwrap();
        let decide_all = |body: &str| {
            actions(body)
                .into_iter()
                .map(|action| decide(true, &scopes, &action.unwrap()))
                .collect::<Vec<_>>()
        };
        let decisions = decide_all(
            r#"{"actions": [
                {"type": "createMessage", "eventType": "camera.person", "payload": {}},
                {"type": "createMessage", "eventType": "invoice.paid", "payload": {}},
                {"type": "sendCommand", "device": "gate-7", "name": "open"},
                {"type": "sendCommand", "device": "boiler", "name": "off"},
                {"type": "patchEndpoint", "disabled": true},
                {"type": "acknowledge"}
            ]}"#,
        );
        assert_eq!(
            decisions,
            [
                Ok(()),
                Err("needs the scope messages:write:invoice.paid".into()),
                Ok(()),
                Err("needs the scope devices:command:boiler".into()),
                Err("needs the scope endpoints:write".into()),
                Ok(()),
            ]
        );
        assert!(decide(false, &scopes, &Action::Acknowledge).is_err());
    }
}
