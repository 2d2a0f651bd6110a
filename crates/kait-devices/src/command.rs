//! Commands to devices: the topic a command is published on (a template such as
//! `devices/{device}/commands/{name}`) and the topic its reply comes back on.
//!
//! MQTT 5 devices read the reply topic and correlation data from the command's properties.
//! MQTT 3.1.1 has no properties, so the convention for those devices is to put
//! `{commandId}` in the command topic (`devices/{device}/commands/{name}/{commandId}`) and
//! to answer on `{reply prefix}/{commandId}` — the same reply topic an MQTT 5 device is given.

use crate::route::check_segment;

/// The placeholders a command topic may hold.
const NAMES: [&str; 4] = ["app", "device", "name", "commandId"];

/// A command topic template, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTopic {
    /// Literal levels and placeholders, in order.
    levels: Vec<Level>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Placeholder(&'static str),
}

/// What a command's topic is filled from (each already a valid topic segment).
#[derive(Debug, Clone, Copy)]
pub struct CommandTarget<'a> {
    pub app: &'a str,
    pub device: &'a str,
    pub name: &'a str,
    pub command_id: &'a str,
}

impl CommandTopic {
    /// Reads a template: levels separated by `/`, each a literal (no `+`, `#`) or exactly one
    /// of `{app}`, `{device}`, `{name}`, `{commandId}`; `{device}` must be among them.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > 1024 {
            return Err("a command topic has 1 to 1024 bytes".to_owned());
        }
        let mut levels = Vec::new();
        for level in text.split('/') {
            if let Some(name) = level.strip_prefix('{').and_then(|l| l.strip_suffix('}')) {
                let known = NAMES.iter().find(|known| **known == name).ok_or_else(|| {
                    format!(
                        "`{{{name}}}` is not one of {{app}}, {{device}}, {{name}}, {{commandId}}"
                    )
                })?;
                levels.push(Level::Placeholder(known));
            } else if level.contains(['+', '#', '{', '}', '\0']) {
                return Err(format!(
                    "the level `{level}` may not hold `+`, `#`, NUL or a partial placeholder"
                ));
            } else {
                levels.push(Level::Literal(level.to_owned()));
            }
        }
        if !levels.contains(&Level::Placeholder("device")) {
            return Err("a command topic must name the `{device}`".to_owned());
        }
        Ok(Self { levels })
    }

    /// Whether the command id is in the topic (the MQTT 3.1.1 convention).
    pub fn carries_command_id(&self) -> bool {
        self.levels.contains(&Level::Placeholder("commandId"))
    }

    /// The topic for one command.
    pub fn render(&self, target: CommandTarget<'_>) -> String {
        self.levels
            .iter()
            .map(|level| match level {
                Level::Literal(text) => text.as_str(),
                Level::Placeholder("app") => target.app,
                Level::Placeholder("device") => target.device,
                Level::Placeholder("name") => target.name,
                Level::Placeholder(_) => target.command_id,
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// Where replies come back: `{prefix}/{commandId}`, every node subscribed to `{prefix}/+`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTopic {
    prefix: String,
}

impl ReplyTopic {
    pub fn parse(prefix: &str) -> Result<Self, String> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() || prefix.len() > 512 {
            return Err("a reply topic prefix has 1 to 512 bytes".to_owned());
        }
        if prefix.contains(['+', '#', '\0']) {
            return Err("a reply topic prefix may not hold `+`, `#` or NUL".to_owned());
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The filter every node subscribes to.
    pub fn filter(&self) -> String {
        format!("{}/+", self.prefix)
    }

    /// The reply topic for one command.
    pub fn for_command(&self, command_id: &str) -> String {
        format!("{}/{command_id}", self.prefix)
    }

    /// The command a reply is for, when `topic` is a reply topic.
    pub fn command_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let id = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        check_segment("commandId", id).ok().map(|()| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_topic_is_filled_from_the_command() {
        let topic = CommandTopic::parse("devices/{device}/commands/{name}").unwrap();
        let target = CommandTarget {
            app: "site-1",
            device: "valve-7",
            name: "close",
            command_id: "cmd_1",
        };
        assert_eq!(topic.render(target), "devices/valve-7/commands/close");
        assert!(!topic.carries_command_id());
        let v311 = CommandTopic::parse("{app}/{device}/cmd/{name}/{commandId}").unwrap();
        assert_eq!(v311.render(target), "site-1/valve-7/cmd/close/cmd_1");
        assert!(v311.carries_command_id());
    }

    #[test]
    fn bad_command_topics_are_refused() {
        for bad in [
            "",
            "devices/+/commands",
            "devices/{device}/#",
            "devices/{nope}/{device}",
            "devices/x{device}",
            "commands/{name}",
        ] {
            assert!(CommandTopic::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replies_name_their_command() {
        let replies = ReplyTopic::parse("kait/replies/").unwrap();
        assert_eq!(replies.filter(), "kait/replies/+");
        assert_eq!(replies.for_command("cmd_9"), "kait/replies/cmd_9");
        assert_eq!(replies.command_of("kait/replies/cmd_9"), Some("cmd_9"));
        assert_eq!(replies.command_of("kait/repliesx/cmd_9"), None);
        assert_eq!(replies.command_of("kait/replies/"), None);
        assert_eq!(replies.command_of("other/cmd_9"), None);
        assert!(ReplyTopic::parse("kait/#").is_err());
    }
}
