//! What a plugin may do: the scopes of installation tokens (issue 17).
//!
//! A plugin asks for scopes in its manifest, an installation grants all or some of them, and
//! a token carries the grant (or less). The vocabulary is small and covers the API route by
//! route (the API declares which scope each route needs, in one place); two scopes can be
//! narrowed to names: `messages:write:camera.*` creates only messages whose event type
//! matches, `devices:command:gate-*` commands only matching devices. This module says which
//! grants satisfy which needs, so that rule lives once and is tested without a server.

use std::fmt;
use std::str::FromStr;

/// One kind of right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeKind {
    /// The application, its event-type catalog, its endpoints (without secrets or headers)
    /// and their statistics.
    EndpointsRead,
    /// Create, change, pause and delete endpoints, their headers, secrets and
    /// transformations (and read them).
    EndpointsWrite,
    /// The application's messages and their payloads; its polling endpoints.
    MessagesRead,
    /// Create messages (narrowable by event type); includes `messages:read`.
    MessagesWrite,
    /// Delivery attempts and their responses.
    AttemptsRead,
    /// Resend messages, recover and replay deliveries; includes `attempts:read`.
    AttemptsWrite,
    /// The device registry (presence) and commands' outcomes.
    DevicesRead,
    /// Send commands to devices (narrowable by device).
    DevicesCommand,
    /// The application's attachments.
    AttachmentsRead,
    /// The pipes triggered by the application's events, their runs and waits.
    PipesRead,
}

impl ScopeKind {
    pub const ALL: [ScopeKind; 10] = [
        ScopeKind::EndpointsRead,
        ScopeKind::EndpointsWrite,
        ScopeKind::MessagesRead,
        ScopeKind::MessagesWrite,
        ScopeKind::AttemptsRead,
        ScopeKind::AttemptsWrite,
        ScopeKind::DevicesRead,
        ScopeKind::DevicesCommand,
        ScopeKind::AttachmentsRead,
        ScopeKind::PipesRead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::EndpointsRead => "endpoints:read",
            Self::EndpointsWrite => "endpoints:write",
            Self::MessagesRead => "messages:read",
            Self::MessagesWrite => "messages:write",
            Self::AttemptsRead => "attempts:read",
            Self::AttemptsWrite => "attempts:write",
            Self::DevicesRead => "devices:read",
            Self::DevicesCommand => "devices:command",
            Self::AttachmentsRead => "attachments:read",
            Self::PipesRead => "pipes:read",
        }
    }

    /// Whether a scope of this kind may be narrowed to names (event types, devices).
    pub fn narrowable(self) -> bool {
        matches!(self, Self::MessagesWrite | Self::DevicesCommand)
    }

    /// The kinds whose grant satisfies a need for this one: writing includes reading.
    fn satisfied_by(self) -> &'static [ScopeKind] {
        use ScopeKind::*;
        match self {
            EndpointsRead => &[EndpointsRead, EndpointsWrite],
            MessagesRead => &[MessagesRead, MessagesWrite],
            AttemptsRead => &[AttemptsRead, AttemptsWrite],
            EndpointsWrite => &[EndpointsWrite],
            MessagesWrite => &[MessagesWrite],
            AttemptsWrite => &[AttemptsWrite],
            DevicesRead => &[DevicesRead],
            DevicesCommand => &[DevicesCommand],
            AttachmentsRead => &[AttachmentsRead],
            PipesRead => &[PipesRead],
        }
    }
}

impl fmt::Display for ScopeKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A scope as granted: a kind, narrowed or not.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub kind: ScopeKind,
    /// Names the scope is narrowed to: exact, or a prefix ending in `*`.
    pub only: Option<String>,
}

/// Why a scope's text was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeError(pub String);

impl fmt::Display for ScopeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The longest narrowing pattern.
const MAX_PATTERN: usize = 256;

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(text: &str) -> Result<Self, ScopeError> {
        let (kind_text, only) = match text.match_indices(':').nth(1) {
            Some((at, _)) => (&text[..at], Some(&text[at + 1..])),
            None => (text, None),
        };
        let kind = ScopeKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == kind_text)
            .ok_or_else(|| {
                ScopeError(format!(
                    "`{text}` is not a scope; the scopes are {}",
                    ScopeKind::ALL.map(ScopeKind::as_str).join(", ")
                ))
            })?;
        let only = match only {
            None => None,
            Some(_) if !kind.narrowable() => {
                return Err(ScopeError(format!(
                    "`{text}`: only messages:write and devices:command can be narrowed"
                )));
            }
            Some(pattern) => {
                let stem = pattern.strip_suffix('*').unwrap_or(pattern);
                if pattern.is_empty()
                    || pattern.chars().count() > MAX_PATTERN
                    || stem.contains('*')
                    || pattern.chars().any(|c| c.is_control() || c.is_whitespace())
                {
                    return Err(ScopeError(format!(
                        "`{text}`: a narrowing is a name or a prefix ending in `*` (at most {MAX_PATTERN} characters, no spaces or control characters)"
                    )));
                }
                Some(pattern.to_owned())
            }
        };
        Ok(Scope { kind, only })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.only {
            Some(pattern) => write!(formatter, "{}:{pattern}", self.kind),
            None => formatter.write_str(self.kind.as_str()),
        }
    }
}

impl Scope {
    pub fn of(kind: ScopeKind) -> Self {
        Self { kind, only: None }
    }

    /// Whether this scope lets its holder act on `name` (an event type, a device).
    fn admits(&self, name: &str) -> bool {
        match &self.only {
            None => true,
            Some(pattern) => match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            },
        }
    }

    /// Whether holding `self` gives at least what `other` gives. A narrowing limits only its
    /// own kind: `messages:write:camera.*` reads every message.
    fn covers(&self, other: &Scope) -> bool {
        other.kind.satisfied_by().contains(&self.kind)
            && (self.kind != other.kind
                || match (&self.only, &other.only) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(mine), Some(theirs)) => match mine.strip_suffix('*') {
                        Some(prefix) => theirs.starts_with(prefix),
                        None => mine == theirs,
                    },
                })
    }
}

/// The scopes of a grant (an installation, a token).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(Vec<Scope>);

/// The most scopes one grant holds.
pub const MAX_SCOPES: usize = 64;

impl Scopes {
    /// Reads a list of scopes; duplicates are kept once, in order.
    pub fn parse<S: AsRef<str>>(texts: &[S]) -> Result<Self, ScopeError> {
        if texts.len() > MAX_SCOPES {
            return Err(ScopeError(format!("at most {MAX_SCOPES} scopes")));
        }
        let mut scopes: Vec<Scope> = Vec::with_capacity(texts.len());
        for text in texts {
            let scope: Scope = text.as_ref().parse()?;
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        Ok(Self(scopes))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scopes as text, for storing and answering.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(Scope::to_string).collect()
    }

    /// Whether the grant allows a route that needs `kind` at all (a narrowed scope does:
    /// the name is checked where it is known, with [`Scopes::allows_name`]).
    pub fn allows(&self, kind: ScopeKind) -> bool {
        self.0
            .iter()
            .any(|scope| kind.satisfied_by().contains(&scope.kind))
    }

    /// Whether the grant allows acting with `kind` on `name` (an event type, a device).
    pub fn allows_name(&self, kind: ScopeKind, name: &str) -> bool {
        self.0.iter().any(|scope| {
            kind.satisfied_by().contains(&scope.kind) && (scope.kind != kind || scope.admits(name))
        })
    }

    /// The scopes of `wanted` that this grant does not cover (empty: `wanted` is within it).
    pub fn not_covered<'a>(&self, wanted: &'a Scopes) -> Vec<&'a Scope> {
        wanted
            .0
            .iter()
            .filter(|scope| !self.0.iter().any(|mine| mine.covers(scope)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(texts: &[&str]) -> Scopes {
        Scopes::parse(texts).unwrap()
    }

    #[test]
    fn scopes_read_and_write_back_as_text() {
        for text in [
            "messages:read",
            "messages:write",
            "messages:write:camera.*",
            "devices:command:gate-7",
            "attachments:read",
        ] {
            assert_eq!(text.parse::<Scope>().unwrap().to_string(), text);
        }
        for bad in [
            "",
            "messages",
            "messages:delete",
            "endpoints:read:ep_1",
            "messages:write:",
            "messages:write:a*b*",
            "messages:write:has space",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad}");
        }
        assert!(Scopes::parse(&vec!["messages:read"; MAX_SCOPES + 1]).is_err());
        assert_eq!(
            scopes(&["messages:read", "messages:read"]).to_strings(),
            ["messages:read"]
        );
    }

    #[test]
    fn writing_includes_reading_but_not_the_other_way() {
        let grant = scopes(&["messages:write", "endpoints:read"]);
        assert!(grant.allows(ScopeKind::MessagesRead));
        assert!(grant.allows(ScopeKind::MessagesWrite));
        assert!(grant.allows(ScopeKind::EndpointsRead));
        assert!(!grant.allows(ScopeKind::EndpointsWrite));
        assert!(!grant.allows(ScopeKind::DevicesCommand));
    }

    #[test]
    fn narrowed_scopes_admit_only_their_names() {
        let grant = scopes(&["messages:write:camera.*", "devices:command:gate-7"]);
        assert!(grant.allows(ScopeKind::MessagesWrite), "the route is open");
        assert!(grant.allows_name(ScopeKind::MessagesWrite, "camera.motion"));
        assert!(!grant.allows_name(ScopeKind::MessagesWrite, "invoice.paid"));
        assert!(grant.allows_name(ScopeKind::DevicesCommand, "gate-7"));
        assert!(!grant.allows_name(ScopeKind::DevicesCommand, "gate-70"));
        // Reading messages is not narrowed by a narrowed write.
        assert!(grant.allows_name(ScopeKind::MessagesRead, "invoice.paid"));
    }

    #[test]
    fn a_token_asks_for_at_most_its_grant() {
        let grant = scopes(&["messages:write:camera.*", "devices:read"]);
        assert!(
            grant
                .not_covered(&scopes(&["messages:write:camera.motion", "messages:read"]))
                .is_empty()
        );
        let refused = scopes(&["messages:write", "devices:command", "devices:read"]);
        assert_eq!(
            grant
                .not_covered(&refused)
                .iter()
                .map(|scope| scope.to_string())
                .collect::<Vec<_>>(),
            ["messages:write", "devices:command"]
        );
    }
}
