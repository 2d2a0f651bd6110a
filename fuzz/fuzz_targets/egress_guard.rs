//! The egress guard (SSRF): endpoint URLs are the API caller's, and every address a webhook
//! may be sent to passes `EgressPolicy::check`. Against the standard library's own address
//! classes, every loopback, private, link-local, unspecified or multicast address, in any
//! IPv6 form that embeds an IPv4 one, must be refused; and URL parsing must never panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kait_deliver::{EgressPolicy, Target};
use libfuzzer_sys::fuzz_target;

fn internal_v4(address: Ipv4Addr) -> bool {
    address.is_loopback()
        || address.is_private()
        || address.is_link_local()
        || address.is_unspecified()
        || address.is_multicast()
        || address.is_broadcast()
        || address.is_documentation()
}

fn internal(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || first & 0xfe00 == 0xfc00
                || first & 0xffc0 == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(internal_v4)
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let policy = EgressPolicy::new(Vec::new());
    if let Ok(octets) = <[u8; 16]>::try_from(data.get(..16).unwrap_or_default()) {
        let address = IpAddr::V6(Ipv6Addr::from(octets));
        assert!(
            !internal(address) || policy.check(address).is_err(),
            "{address} passed"
        );
    }
    if let Ok(octets) = <[u8; 4]>::try_from(data.get(..4).unwrap_or_default()) {
        let address = IpAddr::V4(Ipv4Addr::from(octets));
        assert!(
            !internal(address) || policy.check(address).is_err(),
            "{address} passed"
        );
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Target::parse(text);
        // The address the URL really names (WHATWG parsing, as browsers and Kait do): if it
        // is internal, Kait refuses the URL.
        if let Ok(url) = url_host(text)
            && internal(url)
            && Target::parse(text).is_ok()
        {
            let sender = sender();
            assert!(
                sender.check_url(text).is_err(),
                "{text} ({url}) passed the guard"
            );
        }
    }
});

/// The address a URL's host names, read independently of Kait: IPv6 literals by the
/// standard library, IPv4 in every spelling the C library accepts (`inet_aton`: hex, octal,
/// and one- to three-part forms such as `0x7f.1` or `2130706433`).
/// Only plain URLs (`http://host[:port][/…]`, no user info, no control characters or white
/// space) are read here, so that where the host is cannot be in doubt.
fn url_host(text: &str) -> Result<IpAddr, ()> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .ok_or(())?;
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(());
    }
    let host = rest.split(['/', '?', '#', '\\']).next().unwrap_or_default();
    if host.contains('@') || host.contains('%') {
        return Err(());
    }
    if let Some(bracketed) = host.strip_prefix('[') {
        return bracketed
            .split(']')
            .next()
            .unwrap_or_default()
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(drop);
    }
    let host = host.split(':').next().unwrap_or_default();
    let host = host.strip_suffix('.').unwrap_or(host);
    let Ok(c_host) = std::ffi::CString::new(host) else {
        return Err(());
    };
    let mut address = libc::in_addr { s_addr: 0 };
    // SAFETY: a NUL-terminated string and a valid out-pointer.
    if unsafe { inet_aton(c_host.as_ptr(), &mut address) } == 0 {
        return Err(());
    }
    Ok(IpAddr::V4(Ipv4Addr::from(u32::from_be(address.s_addr))))
}

unsafe extern "C" {
    /// glibc's `inet_aton(3)`, the OS's own reading of IPv4 spellings.
    fn inet_aton(text: *const std::ffi::c_char, address: *mut libc::in_addr) -> std::ffi::c_int;
}

fn sender() -> &'static kait_deliver::Sender {
    static SENDER: std::sync::OnceLock<kait_deliver::Sender> = std::sync::OnceLock::new();
    SENDER.get_or_init(|| {
        kait_deliver::Sender::new(Default::default(), EgressPolicy::new(Vec::new()))
            .expect("the client builds")
    })
}
