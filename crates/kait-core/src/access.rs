//! What an app-scoped token may do: Svix's app-portal capabilities.
//!
//! A token from `POST /api/v1/auth/app-portal-access/{app}` is confined to one application
//! and carries a set of capabilities, chosen by whoever issued it (Svix's names and
//! defaults, so the Svix SDKs and portals issue the same rights against Kait). The API
//! decides per route which capability a request needs; this module only says which sets
//! satisfy which need, so that rule lives in one place and is tested without a server.

use std::fmt;

/// One capability, as the Svix API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Capability {
    /// Read the application's endpoints (without secrets or headers), messages, attempts,
    /// statistics and the event-type catalog; poll its polling endpoints.
    ViewBase,
    /// Also read endpoint signing secrets and custom headers.
    ViewEndpointSecret,
    /// Rotate (and read) endpoint signing secrets.
    ManageEndpointSecret,
    /// Change endpoint transformations.
    ManageTransformations,
    /// Resend messages, recover failed deliveries and replay missing ones.
    CreateAttempts,
    /// Create, change and delete endpoints and their headers (and read their secrets).
    ManageEndpoint,
}

impl Capability {
    pub const ALL: [Capability; 6] = [
        Capability::ViewBase,
        Capability::ViewEndpointSecret,
        Capability::ManageEndpointSecret,
        Capability::ManageTransformations,
        Capability::CreateAttempts,
        Capability::ManageEndpoint,
    ];

    fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// The capabilities any of which satisfies a need for this one: managing endpoints
    /// includes their secrets, and rotating a secret includes reading it (Svix's rules).
    fn satisfied_by(self) -> Capabilities {
        use Capability::*;
        match self {
            ViewEndpointSecret => {
                Capabilities::of(&[ViewEndpointSecret, ManageEndpointSecret, ManageEndpoint])
            }
            ManageEndpointSecret => Capabilities::of(&[ManageEndpointSecret, ManageEndpoint]),
            other => Capabilities::of(&[other]),
        }
    }

    /// Whether a request needing this capability changes anything.
    fn writes(self) -> bool {
        !matches!(self, Capability::ViewBase | Capability::ViewEndpointSecret)
    }
}

/// A set of capabilities, stored as bits.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities(u32);

impl Capabilities {
    pub const NONE: Capabilities = Capabilities(0);

    pub fn of(capabilities: &[Capability]) -> Self {
        Self(capabilities.iter().fold(0, |bits, c| bits | c.bit()))
    }

    pub fn all() -> Self {
        Self::of(&Capability::ALL)
    }

    /// What a token gets for an app-portal-access request, with Svix's defaults: the listed
    /// capabilities (`ViewBase` always included), or when none are listed everything, or only
    /// `ViewBase` when `read_only`. `read_only` also strips the writing capabilities from an
    /// explicit list, so a read-only token never writes.
    pub fn for_portal_access(listed: Option<&[Capability]>, read_only: bool) -> Self {
        let granted = match listed {
            Some(listed) => Self::of(listed).with(Capability::ViewBase),
            None if read_only => Self::of(&[Capability::ViewBase]),
            None => Self::all(),
        };
        if read_only {
            Self::of(
                &granted
                    .iter()
                    .filter(|capability| !capability.writes())
                    .collect::<Vec<_>>(),
            )
        } else {
            granted
        }
    }

    pub fn with(self, capability: Capability) -> Self {
        Self(self.0 | capability.bit())
    }

    /// Whether this set may make a request that needs `needed`.
    pub fn allows(self, needed: Capability) -> bool {
        self.0 & needed.satisfied_by().0 != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |capability| self.0 & capability.bit() != 0)
    }

    /// The stored form.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// From the stored form; bits no capability uses are dropped.
    pub fn from_bits(bits: u32) -> Self {
        Self(bits & Self::all().0)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Capability::*;
    use super::*;

    #[test]
    fn svix_defaults() {
        assert_eq!(
            Capabilities::for_portal_access(None, false),
            Capabilities::all()
        );
        assert_eq!(
            Capabilities::for_portal_access(None, true),
            Capabilities::of(&[ViewBase])
        );
        // ViewBase is always part of a listed set.
        assert_eq!(
            Capabilities::for_portal_access(Some(&[ViewEndpointSecret]), false),
            Capabilities::of(&[ViewBase, ViewEndpointSecret])
        );
        // Read-only strips the writing capabilities from a list.
        assert_eq!(
            Capabilities::for_portal_access(Some(&[ManageEndpoint, ViewEndpointSecret]), true),
            Capabilities::of(&[ViewBase, ViewEndpointSecret])
        );
    }

    #[test]
    fn managing_implies_reading_secrets_and_nothing_else_implies_more() {
        let manage = Capabilities::of(&[ManageEndpoint]);
        assert!(manage.allows(ViewEndpointSecret));
        assert!(manage.allows(ManageEndpointSecret));
        assert!(!manage.allows(CreateAttempts));
        let rotate = Capabilities::of(&[ManageEndpointSecret]);
        assert!(rotate.allows(ViewEndpointSecret));
        assert!(!rotate.allows(ManageEndpoint));
        let base = Capabilities::of(&[ViewBase]);
        for capability in Capability::ALL {
            assert_eq!(
                base.allows(capability),
                capability == ViewBase,
                "{capability:?}"
            );
        }
    }

    #[test]
    fn bits_round_trip_and_unknown_bits_are_dropped() {
        for capability in Capability::ALL {
            let set = Capabilities::of(&[capability, ViewBase]);
            assert_eq!(Capabilities::from_bits(set.bits()), set);
        }
        assert_eq!(Capabilities::from_bits(1 << 20), Capabilities::NONE);
    }
}
