//! The order in which a short-lived client (`edgeray status`) tries a node's advertised
//! addresses: pure logic, no sockets.
//!
//! mDNS announces every address of a board, IPv6 link-local ones included, and resolves them
//! piecemeal (a first answer may hold only `fe80::…`). A link-local address is only dialable
//! with its interface (scope id) and from an IPv6 socket; IPv4 is what a LAN of boards reliably
//! routes. So: IPv4 first, then routable IPv6, then link-local IPv6 with a scope; link-local
//! without a scope, unspecified and multicast addresses are dropped; duplicates once; and IPv6
//! only when the client has an IPv6 socket.

use std::net::{IpAddr, SocketAddr};

/// Rank of an address in the dial order (0 IPv4, 1 routable IPv6, 2 scoped link-local);
/// `None` = never dial it (or not without IPv6, when `ipv6` is false).
fn rank(addr: &SocketAddr, ipv6: bool) -> Option<u8> {
    let ip = addr.ip();
    if ip.is_unspecified() || ip.is_multicast() || addr.port() == 0 {
        return None;
    }
    let SocketAddr::V6(v6) = addr else {
        return Some(0);
    };
    if v6.ip().to_ipv4_mapped().is_some() {
        return Some(0);
    }
    let r = if is_link_local(ip) {
        if v6.scope_id() == 0 {
            return None;
        }
        2
    } else {
        1
    };
    ipv6.then_some(r)
}

/// Whether `ip` is an IPv6 link-local (`fe80::/10`) address.
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

/// The addresses of `addrs` worth dialing, in the order to dial them (see the module docs);
/// `ipv6`: whether the client can dial IPv6 at all. IPv4-mapped IPv6 addresses count as IPv4
/// and are returned as plain IPv4. Stable within a rank (the announcer's order is kept).
pub fn dial_order(addrs: &[SocketAddr], ipv6: bool) -> Vec<SocketAddr> {
    let mut ranked: Vec<(u8, SocketAddr)> = Vec::new();
    for a in addrs {
        let Some(r) = rank(a, ipv6) else { continue };
        let a = match a {
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
                None => *a,
            },
            v4 => *v4,
        };
        if !ranked.iter().any(|(_, b)| *b == a) {
            ranked.push((r, a));
        }
    }
    ranked.sort_by_key(|(r, _)| *r);
    ranked.into_iter().map(|(_, a)| a).collect()
}

/// The addresses of `fresh` not yet in `tried`, in dial order: what to try when mDNS resolves a
/// node again with more addresses.
pub fn untried(fresh: &[SocketAddr], tried: &[SocketAddr], ipv6: bool) -> Vec<SocketAddr> {
    dial_order(fresh, ipv6)
        .into_iter()
        .filter(|a| !tried.contains(a))
        .collect()
}

/// Why an address was left out: for the `tried` list of an error message.
pub fn skipped_reason(addr: &SocketAddr, ipv6: bool) -> Option<&'static str> {
    if rank(addr, true).is_none() {
        return Some(if is_link_local(addr.ip()) {
            "link-local without a scope id"
        } else {
            "not dialable"
        });
    }
    if rank(addr, ipv6).is_none() {
        return Some("no IPv6 socket on this host");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddrV6};

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ll(scope: u32) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(
            "fe80::ff:fe00:2".parse::<Ipv6Addr>().unwrap(),
            7070,
            0,
            scope,
        ))
    }

    #[test]
    fn ipv4_first_then_routable_then_scoped_link_local() {
        // The lab failure: the link-local address came first.
        let got = dial_order(
            &[
                ll(2),
                a("[2001:db8::2]:7070"),
                a("10.0.0.2:7070"),
                a("10.0.1.2:7070"),
            ],
            true,
        );
        assert_eq!(
            got,
            vec![
                a("10.0.0.2:7070"),
                a("10.0.1.2:7070"),
                a("[2001:db8::2]:7070"),
                ll(2)
            ]
        );
    }

    #[test]
    fn link_local_without_scope_and_junk_are_dropped() {
        let got = dial_order(
            &[
                ll(0),
                a("0.0.0.0:7070"),
                a("[ff02::fb]:7070"),
                a("10.0.0.2:0"),
                ll(3),
            ],
            true,
        );
        assert_eq!(got, vec![ll(3)]);
        assert_eq!(
            skipped_reason(&ll(0), true),
            Some("link-local without a scope id")
        );
        assert_eq!(
            skipped_reason(&a("0.0.0.0:7070"), true),
            Some("not dialable")
        );
        assert_eq!(skipped_reason(&ll(3), true), None);
    }

    #[test]
    fn without_ipv6_only_ipv4_remains() {
        let addrs = [ll(2), a("[2001:db8::2]:7070"), a("[::ffff:10.0.0.9]:7070")];
        assert_eq!(dial_order(&addrs, false), vec![a("10.0.0.9:7070")]);
        assert_eq!(
            skipped_reason(&ll(2), false),
            Some("no IPv6 socket on this host")
        );
        assert!(dial_order(&[ll(2)], false).is_empty());
    }

    #[test]
    fn duplicates_once_mapped_equals_plain() {
        let got = dial_order(
            &[
                a("10.0.0.2:7070"),
                a("[::ffff:10.0.0.2]:7070"),
                a("10.0.0.2:7070"),
            ],
            true,
        );
        assert_eq!(got, vec![a("10.0.0.2:7070")]);
    }

    #[test]
    fn a_second_resolution_yields_only_new_addresses() {
        let first = dial_order(&[ll(2)], true);
        let more = untried(&[ll(2), a("10.0.0.2:7070")], &first, true);
        assert_eq!(more, vec![a("10.0.0.2:7070")]);
        assert!(untried(&[ll(2)], &first, true).is_empty());
    }
}
