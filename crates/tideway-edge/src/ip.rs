//! Client addresses: sets of CIDR ranges, and who the client is when proxies stand in front.
//!
//! An [`IpSet`] turns a list of ranges into sorted, merged intervals per address family, so a
//! lookup is a binary search however long the list (a deny list of thousands of ranges costs
//! the same as one of ten). IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack
//! listener reports for IPv4 clients) are looked up as the IPv4 address they carry.
//!
//! # X-Forwarded-For
//!
//! Each proxy appends the address it received the request from, so the header reads
//! `client, proxy1, proxy2` and the TCP peer is the last proxy. Only the entries appended by
//! proxies we trust are worth anything; a client can write anything to the left of them. So:
//!
//! 1. If the TCP peer is not a trusted proxy, the peer is the client; the header is ignored.
//! 2. Otherwise walk the header from the right: the first entry that is not itself a trusted
//!    proxy is the client. Several `X-Forwarded-For` headers count as one list, in order.
//! 3. An entry that does not parse ends the walk: the client is the last trusted address seen
//!    (a proxy we trust would not have written garbage, so it came from further left).
//! 4. If every entry is a trusted proxy, the leftmost is the client.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::HeaderMap;
use ipnet::IpNet;

/// A set of addresses given as CIDR ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    /// Sorted, non-overlapping, non-adjacent inclusive ranges.
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    /// Parses `10.0.0.0/8`, `2001:db8::/32` or plain addresses. A range with host bits set
    /// (`10.1.2.3/8`) is refused: it is more often a typo than a way to write `10.0.0.0/8`.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<IpSet, String> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut problems = Vec::new();
        for item in items {
            let item = item.as_ref().trim();
            let net = match item.parse::<IpNet>() {
                Ok(net) => {
                    if net.trunc() != net {
                        problems.push(format!(
                            "{item:?} has host bits set (did you mean {}?)",
                            net.trunc()
                        ));
                        continue;
                    }
                    net
                }
                Err(_) => match item.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        problems.push(format!("{item:?} is not an address or CIDR range"));
                        continue;
                    }
                },
            };
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => {
                    // An IPv4-mapped range is stored as the IPv4 range it maps.
                    if let Some(mapped) = n.network().to_ipv4_mapped()
                        && n.prefix_len() >= 96
                    {
                        let last = n.broadcast().to_ipv4_mapped().unwrap_or(mapped);
                        v4.push((u32::from(mapped), u32::from(last)));
                    } else {
                        v6.push((u128::from(n.network()), u128::from(n.broadcast())));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(IpSet {
            v4: merge(v4),
            v6: merge(v6),
        })
    }

    /// Whether no range is in the set.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` is in one of the ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(v4) => find(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => find(&self.v6, u128::from(v6)),
        }
    }
}

fn merge<T: Ord + Copy + Step>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1.next_or_max() => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => out.push((start, end)),
        }
    }
    out.shrink_to_fit();
    out
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    ranges
        .binary_search_by(|&(start, end)| {
            if end < x {
                Ordering::Less
            } else if start > x {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        })
        .is_ok()
}

trait Step {
    fn next_or_max(self) -> Self;
}

impl Step for u32 {
    fn next_or_max(self) -> Self {
        self.saturating_add(1)
    }
}

impl Step for u128 {
    fn next_or_max(self) -> Self {
        self.saturating_add(1)
    }
}

/// The address a request came from, as decided by [`Edge::client_ip`](crate::Edge::client_ip)
/// from the TCP peer, the trusted proxies and `X-Forwarded-For`. Only that method makes one, so
/// a caller cannot hand the peer address to [`Edge::admit`](crate::Edge::admit) by mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(IpAddr);

impl ClientIp {
    pub(crate) fn new(ip: IpAddr) -> Self {
        ClientIp(ip.to_canonical())
    }

    /// The address.
    pub fn ip(self) -> IpAddr {
        self.0
    }
}

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The client behind `peer`, believing `X-Forwarded-For` only as far as `trusted` proxies
/// vouch for it (see the module docs).
pub(crate) fn client_ip(trusted: &IpSet, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else {
            return client;
        };
        for entry in value.rsplit(',') {
            let Some(ip) = parse_forwarded_entry(entry.trim()) else {
                return client;
            };
            client = ip.to_canonical();
            if !trusted.contains(client) {
                return client;
            }
        }
    }
    client
}

/// An `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:443`.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (host, port) = entry.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The rate-limit key of an address: IPv4 as is, IPv6 cut to its first `v6_prefix` bits.
pub(crate) fn masked(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sets_match_ranges_and_merge() {
        let set = IpSet::parse(&[
            "10.0.0.0/8",
            "10.1.0.0/16",
            "192.168.1.7",
            "11.0.0.0/8",
            "2001:db8::/32",
        ])
        .unwrap();
        assert_eq!(
            set.v4.len(),
            2,
            "10/8 and 11/8 merge, 10.1/16 is inside: {set:?}"
        );
        for yes in [
            "10.0.0.0",
            "10.255.255.255",
            "11.3.4.5",
            "192.168.1.7",
            "2001:db8::1",
        ] {
            assert!(set.contains(ip(yes)), "{yes}");
        }
        for no in [
            "9.255.255.255",
            "12.0.0.0",
            "192.168.1.8",
            "2001:db9::1",
            "::1",
        ] {
            assert!(!set.contains(ip(no)), "{no}");
        }
        assert!(
            set.contains(ip("::ffff:10.2.3.4")),
            "IPv4-mapped is looked up as IPv4"
        );
        let all = IpSet::parse(&["0.0.0.0/0", "::/0"]).unwrap();
        assert!(all.contains(ip("255.255.255.255")) && all.contains(ip("ffff::1")));
    }

    #[test]
    fn bad_ranges_are_reported_together() {
        let err = IpSet::parse(&["10.1.2.3/8", "nonsense", "10.0.0.0/33"]).unwrap_err();
        assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
        assert!(err.contains("\"nonsense\""), "{err}");
        assert!(err.contains("10.0.0.0/33"), "{err}");
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_through_trusted_proxies() {
        let trusted = IpSet::parse(&["10.0.0.0/8"]).unwrap();
        // Untrusted peer: the header is a lie until proven otherwise.
        assert_eq!(
            client_ip(&trusted, ip("203.0.113.9"), &xff(&["1.1.1.1"])),
            ip("203.0.113.9")
        );
        // Trusted peer: the entry it appended is the client...
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.1"), &xff(&["6.6.6.6, 198.51.100.4"])),
            ip("198.51.100.4"),
            "the spoofed leftmost entry is not believed"
        );
        // ...walking past further trusted hops, across several headers.
        assert_eq!(
            client_ip(
                &trusted,
                ip("10.0.0.1"),
                &xff(&["6.6.6.6, 198.51.100.4", "10.2.2.2:4431", "10.3.3.3"])
            ),
            ip("198.51.100.4")
        );
        // Garbage ends the walk at the last trusted hop.
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.1"), &xff(&["1.1.1.1, junk, 10.9.9.9"])),
            ip("10.9.9.9")
        );
        // All trusted: the leftmost.
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.1"), &xff(&["10.5.5.5, 10.9.9.9"])),
            ip("10.5.5.5")
        );
        // No header: the peer.
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        // Bracketed IPv6 with port.
        assert_eq!(
            client_ip(&trusted, ip("10.0.0.1"), &xff(&["[2001:db8::7]:443"])),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn ipv6_keys_are_prefixes() {
        assert_eq!(masked(ip("2001:db8:1:2:3:4:5:6"), 64), ip("2001:db8:1:2::"));
        assert_eq!(masked(ip("192.0.2.1"), 64), ip("192.0.2.1"));
        assert_eq!(masked(ip("::ffff:192.0.2.1"), 64), ip("192.0.2.1"));
    }
}
