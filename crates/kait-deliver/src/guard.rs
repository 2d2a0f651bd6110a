//! The egress guard: which IP addresses a webhook may be sent to.
//!
//! Webhook URLs are chosen by users, so without a guard Kait could be used to reach the
//! operator's private network or a cloud metadata service. Every address a target resolves to
//! is checked, and the connection is made to an address that passed (see `sender.rs`), so DNS
//! rebinding has no window. IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64,
//! 6to4) are unwrapped and the IPv4 address is checked too. Operators allow private networks
//! explicitly (`--allow-network`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{address} is a {kind} address, which webhooks may not target unless its network is allowed"
)]
pub struct BlockedAddress {
    pub address: IpAddr,
    pub kind: &'static str,
}

/// The set of networks that are allowed although not public.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    allowed: Vec<IpNet>,
    allow_everything: bool,
}

impl EgressPolicy {
    /// Refuses every non-public address except those in `allowed`.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self {
            allowed,
            allow_everything: false,
        }
    }

    /// Allows every address: only for tools such as `kait listen --forward` that target the
    /// user's own machine on purpose.
    pub fn allow_all() -> Self {
        Self {
            allowed: Vec::new(),
            allow_everything: true,
        }
    }

    /// Checks one address.
    pub fn check(&self, address: IpAddr) -> Result<(), BlockedAddress> {
        if self.allow_everything {
            return Ok(());
        }
        let embedded = embedded_ipv4(address).map(IpAddr::V4);
        let is_allowed =
            |candidate: IpAddr| self.allowed.iter().any(|net| net.contains(&candidate));
        if is_allowed(address) || embedded.is_some_and(is_allowed) {
            return Ok(());
        }
        let kind = match (address, embedded) {
            (_, Some(IpAddr::V4(inner))) => ipv4_kind(inner),
            (IpAddr::V4(v4), _) => ipv4_kind(v4),
            (IpAddr::V6(v6), _) => ipv6_kind(v6),
        };
        match kind {
            Some(kind) => Err(BlockedAddress { address, kind }),
            None => Ok(()),
        }
    }
}

/// The IPv4 address carried inside an IPv6 one, for the forms that route to it.
fn embedded_ipv4(address: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = address else {
        return None;
    };
    let segments = v6.segments();
    let octets = v6.octets();
    let last_32 = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    if let Some(mapped) = v6.to_ipv4_mapped() {
        return Some(mapped);
    }
    // IPv4-compatible ::a.b.c.d (deprecated, but some stacks still route it); :: and ::1 are not.
    if segments[..6] == [0; 6] && u32::from(last_32) > 1 {
        return Some(last_32);
    }
    // NAT64 well-known prefix 64:ff9b::/96 and local-use 64:ff9b:1::/48.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || segments[..3] == [0x64, 0xff9b, 1] {
        return Some(last_32);
    }
    // 6to4 2002:AABB:CCDD::/16 carries AA.BB.CC.DD.
    if segments[0] == 0x2002 {
        return Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]));
    }
    None
}

/// Which kind of non-public IPv4 address this is, if any.
fn ipv4_kind(address: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = address.octets();
    Some(match (a, b, c) {
        (0, _, _) => "\"this network\" (0.0.0.0/8)",
        (10, _, _) => "private (10.0.0.0/8)",
        (100, 64..=127, _) => "carrier-grade NAT (100.64.0.0/10)",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local (169.254.0.0/16, incl. cloud metadata)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 0, 0) => "IETF protocol assignment (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay anycast",
        (192, 168, _) => "private (192.168.0.0/16)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved or broadcast",
        _ => return None,
    })
}

/// Which kind of non-public IPv6 address this is, if any.
fn ipv6_kind(address: Ipv6Addr) -> Option<&'static str> {
    let segments = address.segments();
    Some(if address.is_unspecified() {
        "unspecified"
    } else if address.is_loopback() {
        "loopback"
    } else if segments[0] & 0xfe00 == 0xfc00 {
        "unique-local (fc00::/7)"
    } else if segments[0] & 0xffc0 == 0xfe80 {
        "link-local (fe80::/10)"
    } else if segments[0] & 0xffc0 == 0xfec0 {
        "site-local (fec0::/10)"
    } else if segments[0] & 0xff00 == 0xff00 {
        "multicast"
    } else if segments[..4] == [0x100, 0, 0, 0] {
        "discard-only (100::/64)"
    } else if segments[0] == 0x2001 && segments[1] == 0x0db8 {
        "documentation (2001:db8::/32)"
    } else if segments[0] == 0x2001 && segments[1] < 0x0200 {
        "IETF protocol assignment (2001::/23)"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &EgressPolicy, text: &str) -> bool {
        policy.check(text.parse().unwrap()).is_err()
    }

    #[test]
    fn refuses_non_public_addresses() {
        let policy = EgressPolicy::default();
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:0001::1",
        ] {
            assert!(refused(&policy, address), "{address} should be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        let policy = EgressPolicy::default();
        for address in [
            "93.184.216.34",
            "1.1.1.1",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "::ffff:93.184.216.34",
            "64:ff9b::1.1.1.1",
        ] {
            assert!(!refused(&policy, address), "{address} should be allowed");
        }
    }

    #[test]
    fn allowed_networks_pass_also_in_ipv6_forms() {
        let policy = EgressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(!refused(&policy, "127.0.0.1"));
        assert!(!refused(&policy, "::ffff:127.0.0.1"));
        assert!(refused(&policy, "10.0.0.1"));
        assert!(refused(&policy, "::1"));
    }

    #[test]
    fn names_the_reason() {
        let blocked = EgressPolicy::default()
            .check("169.254.169.254".parse().unwrap())
            .unwrap_err();
        assert!(blocked.to_string().contains("link-local"), "{blocked}");
    }
}
