//! Topic patterns (`sites/{site}/devices/{device}/events/{event}`) and templates
//! (`device.{event}`).
//!
//! A pattern is a sequence of levels, each a literal or one named segment that matches any one
//! level; it stands for the MQTT filter with `+` in place of each name, so the broker sends
//! exactly what the pattern can match. Names are what templates may use.

use std::collections::BTreeMap;

/// Levels in a pattern, and bytes in a topic or template: MQTT topics are short in practice,
/// and these bound what one route may cost to match.
pub const MAX_LEVELS: usize = 16;
pub const MAX_TOPIC_BYTES: usize = 1024;
const MAX_NAME_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Named(String),
}

/// A parsed topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    text: String,
    levels: Vec<Level>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

impl TopicPattern {
    /// Reads a pattern: levels separated by `/`, each a literal (no MQTT wildcards `+` `#`,
    /// no braces) or a whole-level `{name}` (letters, digits, `_`), each name once.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > MAX_TOPIC_BYTES {
            return Err(format!("must be 1 to {MAX_TOPIC_BYTES} bytes"));
        }
        if text.starts_with('$') {
            return Err("topics starting with `$` are the broker's".into());
        }
        let mut levels = Vec::new();
        for level in text.split('/') {
            if levels.len() == MAX_LEVELS {
                return Err(format!("at most {MAX_LEVELS} levels"));
            }
            if let Some(name) = level
                .strip_prefix('{')
                .and_then(|rest| rest.strip_suffix('}'))
            {
                if !valid_name(name) {
                    return Err(format!(
                        "`{{{name}}}`: a segment name is 1 to {MAX_NAME_BYTES} letters, digits or `_`"
                    ));
                }
                if levels.contains(&Level::Named(name.to_owned())) {
                    return Err(format!("`{{{name}}}` is named twice"));
                }
                levels.push(Level::Named(name.to_owned()));
            } else if level.contains(['+', '#', '{', '}', '\0']) {
                return Err(format!(
                    "`{level}`: a level is a literal or a whole `{{name}}`; MQTT wildcards are written as names"
                ));
            } else {
                levels.push(Level::Literal(level.to_owned()));
            }
        }
        Ok(Self {
            text: text.to_owned(),
            levels,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The MQTT subscription filter: each named level as `+`.
    pub fn filter(&self) -> String {
        self.levels
            .iter()
            .map(|level| match level {
                Level::Literal(text) => text.as_str(),
                Level::Named(_) => "+",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().filter_map(|level| match level {
            Level::Named(name) => Some(name.as_str()),
            Level::Literal(_) => None,
        })
    }

    pub fn has_name(&self, name: &str) -> bool {
        self.names().any(|known| known == name)
    }

    /// The named segments of `topic`, if it matches (a named level matches any non-empty
    /// level).
    pub fn captures(&self, topic: &str) -> Option<BTreeMap<String, String>> {
        if topic.len() > MAX_TOPIC_BYTES {
            return None;
        }
        let mut parts = topic.split('/');
        let mut captures = BTreeMap::new();
        for level in &self.levels {
            let part = parts.next()?;
            match level {
                Level::Literal(text) if text == part => {}
                Level::Literal(_) => return None,
                Level::Named(_) if part.is_empty() => return None,
                Level::Named(name) => {
                    captures.insert(name.clone(), part.to_owned());
                }
            }
        }
        parts.next().is_none().then_some(captures)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Name(String),
}

/// A template filled from a topic's named segments: `device.{event}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    pieces: Vec<Piece>,
}

impl Template {
    /// Reads a template whose every `{name}` is one of `pattern`'s names.
    pub fn parse(text: &str, pattern: &TopicPattern) -> Result<Self, String> {
        if text.is_empty() || text.len() > 256 {
            return Err("must be 1 to 256 bytes".into());
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("`{text}`: a `{{` without its `}}`"));
            };
            let name = &rest[open + 1..open + close];
            if !pattern.has_name(name) {
                return Err(format!(
                    "`{{{name}}}` is not a segment of the topic pattern `{}`",
                    pattern.as_str()
                ));
            }
            pieces.push(Piece::Name(name.to_owned()));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{text}`: a `}}` without its `{{`"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self {
            text: text.to_owned(),
            pieces,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The template with the captured segments in place.
    pub fn render(&self, captures: &BTreeMap<String, String>) -> String {
        let mut out = String::with_capacity(self.text.len() + 16);
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Name(name) => out.push_str(captures.get(name).map_or("", String::as_str)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern() -> TopicPattern {
        TopicPattern::parse("sites/{site}/devices/{device}/events/{event}").unwrap()
    }

    #[test]
    fn a_pattern_subscribes_with_plus_and_captures_its_names() {
        let pattern = pattern();
        assert_eq!(pattern.filter(), "sites/+/devices/+/events/+");
        assert_eq!(
            pattern.names().collect::<Vec<_>>(),
            ["site", "device", "event"]
        );
        let captures = pattern
            .captures("sites/s1/devices/d-7/events/motion")
            .unwrap();
        assert_eq!(captures["device"], "d-7");
        assert_eq!(captures["event"], "motion");
        for other in [
            "sites/s1/devices/d-7/events",
            "sites/s1/devices/d-7/events/motion/extra",
            "sites//devices/d-7/events/motion",
            "site/s1/devices/d-7/events/motion",
        ] {
            assert_eq!(pattern.captures(other), None, "{other}");
        }
    }

    #[test]
    fn bad_patterns_say_why() {
        for (bad, why) in [
            ("", "1 to"),
            ("$SYS/broker", "broker"),
            ("a/+/b", "wildcards"),
            ("a/#", "wildcards"),
            ("a/{x}{y}", "segment name"),
            ("a/{x}/b/{x}", "twice"),
            ("a/{}", "segment name"),
            ("a/pre{x}", "whole"),
        ] {
            let error = TopicPattern::parse(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
        let deep = vec!["a"; MAX_LEVELS + 1].join("/");
        assert!(TopicPattern::parse(&deep).is_err());
    }

    #[test]
    fn templates_use_the_pattern_names_only() {
        let pattern = pattern();
        let template = Template::parse("device.{event}", &pattern).unwrap();
        let captures = pattern
            .captures("sites/s1/devices/d7/events/motion")
            .unwrap();
        assert_eq!(template.render(&captures), "device.motion");
        let key = Template::parse("{site}:{device}", &pattern).unwrap();
        assert_eq!(key.render(&captures), "s1:d7");
        assert_eq!(
            Template::parse("plain", &pattern)
                .unwrap()
                .render(&captures),
            "plain"
        );
        assert!(
            Template::parse("device.{nope}", &pattern)
                .unwrap_err()
                .contains("not a segment")
        );
        assert!(Template::parse("device.{event", &pattern).is_err());
        assert!(Template::parse("device.event}", &pattern).is_err());
        assert!(Template::parse("", &pattern).is_err());
    }
}
