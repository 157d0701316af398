//! The SSRF guard: which addresses a webhook may connect to, and the resolver that enforces it.
//!
//! A webhook URL is chosen by a tenant, so without a guard herald could be made to POST to
//! its own admin port, a cloud metadata service or anything else on the private network.
//! Names are resolved once, by [`GuardedResolver`], and every resolved address must be
//! public; only those checked addresses are handed to the connector, so a second, different
//! answer from DNS (rebinding) is never used. IP-literal URLs never reach a resolver, so
//! the channel checks them with [`check_ip`] before sending.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an address is not public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    /// What the range is, e.g. `private address`.
    pub what: &'static str,
    /// The range in CIDR notation, e.g. `10.0.0.0/8`.
    pub range: &'static str,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.what, self.range)
    }
}

const fn blocked(what: &'static str, range: &'static str) -> Blocked {
    Blocked { what, range }
}

/// IPv4 ranges that are not globally reachable, as (network, prefix length, reason).
const V4_BLOCKED: [(Ipv4Addr, u8, Blocked); 11] = [
    (
        Ipv4Addr::new(0, 0, 0, 0),
        8,
        blocked("\"this network\" address", "0.0.0.0/8"),
    ),
    (
        Ipv4Addr::new(10, 0, 0, 0),
        8,
        blocked("private address", "10.0.0.0/8"),
    ),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        blocked("shared (carrier-grade NAT) address", "100.64.0.0/10"),
    ),
    (
        Ipv4Addr::new(127, 0, 0, 0),
        8,
        blocked("loopback address", "127.0.0.0/8"),
    ),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        blocked("link-local address", "169.254.0.0/16"),
    ),
    (
        Ipv4Addr::new(172, 16, 0, 0),
        12,
        blocked("private address", "172.16.0.0/12"),
    ),
    // Protocol assignments (DS-Lite B4/AFTR, NAT64 discovery…): infrastructure, not hosts.
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        blocked("IETF protocol assignment", "192.0.0.0/24"),
    ),
    (
        Ipv4Addr::new(192, 168, 0, 0),
        16,
        blocked("private address", "192.168.0.0/16"),
    ),
    (
        Ipv4Addr::new(198, 18, 0, 0),
        15,
        blocked("benchmarking address", "198.18.0.0/15"),
    ),
    (
        Ipv4Addr::new(224, 0, 0, 0),
        4,
        blocked("multicast address", "224.0.0.0/4"),
    ),
    (
        Ipv4Addr::new(240, 0, 0, 0),
        4,
        blocked("reserved address", "240.0.0.0/4"),
    ),
];

/// IPv6 ranges that are not globally reachable. IPv4-mapped addresses (`::ffff:a.b.c.d`)
/// are checked as the IPv4 address they carry, before this table.
const V6_BLOCKED: [(Ipv6Addr, u8, Blocked); 12] = [
    (
        Ipv6Addr::UNSPECIFIED,
        128,
        blocked("unspecified address", "::/128"),
    ),
    (
        Ipv6Addr::LOCALHOST,
        128,
        blocked("loopback address", "::1/128"),
    ),
    // Deprecated IPv4-compatible addresses (`::a.b.c.d`): nothing public lives there.
    (
        Ipv6Addr::UNSPECIFIED,
        96,
        blocked("IPv4-compatible address", "::/96"),
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        blocked("unique local address", "fc00::/7"),
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        blocked("link-local address", "fe80::/10"),
    ),
    // Deprecated site-local: where it is still configured it is a private network.
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        blocked("site-local address", "fec0::/10"),
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        blocked("multicast address", "ff00::/8"),
    ),
    // NAT64 can reach any IPv4 address, private ones included.
    (
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0),
        96,
        blocked("NAT64 address", "64:ff9b::/96"),
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        blocked("local-use NAT64 address", "64:ff9b:1::/48"),
    ),
    // IPv4-translated (SIIT, `::ffff:0:a.b.c.d`, not the mapped `::ffff:a.b.c.d` handled
    // above): a translator reaches any IPv4 address, private ones included.
    (
        Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0),
        96,
        blocked("IPv4-translated address", "::ffff:0:0:0/96"),
    ),
    // Teredo embeds the server and client IPv4 addresses; like 6to4, refuse it whole.
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        32,
        blocked("Teredo address", "2001::/32"),
    ),
    // 6to4 embeds an IPv4 address; the relay mechanism is deprecated, so block it whole
    // rather than trust the embedded address.
    (
        Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0),
        16,
        blocked("6to4 address", "2002::/16"),
    ),
];

/// `Ok` if `ip` is a public address a webhook may connect to; otherwise the range it is in.
pub fn check_ip(ip: IpAddr) -> Result<(), Blocked> {
    match ip {
        IpAddr::V4(v4) => check_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => check_v4(v4),
            None => check_v6(v6),
        },
    }
}

fn check_v4(ip: Ipv4Addr) -> Result<(), Blocked> {
    let bits = u32::from(ip);
    for (net, len, why) in V4_BLOCKED {
        let mask = u32::MAX << (32 - u32::from(len));
        if bits & mask == u32::from(net) {
            return Err(why);
        }
    }
    Ok(())
}

fn check_v6(ip: Ipv6Addr) -> Result<(), Blocked> {
    let bits = u128::from(ip);
    for (net, len, why) in V6_BLOCKED {
        let mask = u128::MAX << (128 - u32::from(len));
        if bits & mask == u128::from(net) {
            return Err(why);
        }
    }
    Ok(())
}

/// The resolver refused to hand out an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves to {addr}, a {reason}")]
pub struct SsrfRefused {
    pub host: String,
    pub addr: IpAddr,
    pub reason: Blocked,
}

/// The name could not be resolved at all.
#[derive(Debug, thiserror::Error)]
#[error("DNS lookup of {host} failed: {source}")]
pub struct DnsFailed {
    pub host: String,
    #[source]
    pub source: std::io::Error,
}

/// A DNS resolver for reqwest that resolves each name once and, when `guard` is on,
/// refuses the whole name if any of its addresses is not public.
///
/// It is installed even when private networks are allowed (`guard = false`) so that DNS
/// failures always surface as [`DnsFailed`] and can be reported precisely.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub guard: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|source| DnsFailed {
                    host: host.clone(),
                    source,
                })?
                .collect();
            if guard {
                for addr in &addrs {
                    if let Err(reason) = check_ip(addr.ip()) {
                        return Err(Box::new(SsrfRefused {
                            host,
                            addr: addr.ip(),
                            reason,
                        })
                            as Box<dyn std::error::Error + Send + Sync>);
                    }
                }
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ip: &str) -> String {
        let ip: IpAddr = ip.parse().unwrap();
        match check_ip(ip) {
            Ok(()) => "public".to_string(),
            Err(why) => why.to_string(),
        }
    }

    #[test]
    fn classifies_addresses() {
        let cases = [
            // Public.
            ("1.1.1.1", "public"),
            ("8.8.8.8", "public"),
            ("9.255.255.255", "public"),
            ("11.0.0.0", "public"),
            ("100.63.255.255", "public"),
            ("100.128.0.0", "public"),
            ("126.255.255.255", "public"),
            ("128.0.0.0", "public"),
            ("169.253.255.255", "public"),
            ("172.15.255.255", "public"),
            ("172.32.0.0", "public"),
            ("192.167.255.255", "public"),
            ("192.169.0.0", "public"),
            ("198.17.255.255", "public"),
            ("198.20.0.0", "public"),
            ("223.255.255.255", "public"),
            ("2606:4700:4700::1111", "public"),
            ("2001:4860:4860::8888", "public"),
            ("::ffff:8.8.8.8", "public"),
            ("2003::1", "public"),
            ("64:ff9a::1", "public"),
            // IPv4 blocked ranges, at both ends.
            ("0.0.0.0", "\"this network\" address (0.0.0.0/8)"),
            ("0.255.255.255", "\"this network\" address (0.0.0.0/8)"),
            ("10.0.0.5", "private address (10.0.0.0/8)"),
            ("10.255.255.255", "private address (10.0.0.0/8)"),
            (
                "100.64.0.0",
                "shared (carrier-grade NAT) address (100.64.0.0/10)",
            ),
            (
                "100.127.255.255",
                "shared (carrier-grade NAT) address (100.64.0.0/10)",
            ),
            ("127.0.0.1", "loopback address (127.0.0.0/8)"),
            ("127.255.255.254", "loopback address (127.0.0.0/8)"),
            ("169.254.169.254", "link-local address (169.254.0.0/16)"),
            ("172.16.0.0", "private address (172.16.0.0/12)"),
            ("172.31.255.255", "private address (172.16.0.0/12)"),
            ("192.168.1.1", "private address (192.168.0.0/16)"),
            ("198.18.0.0", "benchmarking address (198.18.0.0/15)"),
            ("198.19.255.255", "benchmarking address (198.18.0.0/15)"),
            ("224.0.0.1", "multicast address (224.0.0.0/4)"),
            ("239.255.255.255", "multicast address (224.0.0.0/4)"),
            ("240.0.0.0", "reserved address (240.0.0.0/4)"),
            ("255.255.255.255", "reserved address (240.0.0.0/4)"),
            // IPv4-mapped IPv6 is checked as IPv4 (`is_loopback` alone would miss this).
            ("::ffff:127.0.0.1", "loopback address (127.0.0.0/8)"),
            ("::ffff:10.1.2.3", "private address (10.0.0.0/8)"),
            (
                "::ffff:169.254.169.254",
                "link-local address (169.254.0.0/16)",
            ),
            // IPv6 blocked ranges.
            ("::", "unspecified address (::/128)"),
            ("::1", "loopback address (::1/128)"),
            ("::127.0.0.1", "IPv4-compatible address (::/96)"),
            ("fc00::1", "unique local address (fc00::/7)"),
            ("fdff:ffff::1", "unique local address (fc00::/7)"),
            ("fe80::1", "link-local address (fe80::/10)"),
            ("febf::1", "link-local address (fe80::/10)"),
            ("ff02::1", "multicast address (ff00::/8)"),
            ("64:ff9b::7f00:1", "NAT64 address (64:ff9b::/96)"),
            ("64:ff9b::808:808", "NAT64 address (64:ff9b::/96)"),
            (
                "64:ff9b:1::a00:1",
                "local-use NAT64 address (64:ff9b:1::/48)",
            ),
            ("2002:7f00:1::", "6to4 address (2002::/16)"),
            ("2002:808:808::", "6to4 address (2002::/16)"),
            // IETF protocol assignments (192.0.0.0/24, e.g. DS-Lite's 192.0.0.1).
            ("192.0.0.0", "IETF protocol assignment (192.0.0.0/24)"),
            ("192.0.0.255", "IETF protocol assignment (192.0.0.0/24)"),
            ("192.0.1.0", "public"),
            ("191.255.255.255", "public"),
            // Deprecated site-local: routed as private where still configured.
            ("fec0::1", "site-local address (fec0::/10)"),
            ("feff:ffff::1", "site-local address (fec0::/10)"),
            // IPv4-translated (SIIT, `::ffff:0:a.b.c.d`): a translator would reach any
            // IPv4 address, private ones included, so the range is refused whole.
            (
                "::ffff:0:7f00:1",
                "IPv4-translated address (::ffff:0:0:0/96)",
            ),
            (
                "::ffff:0:808:808",
                "IPv4-translated address (::ffff:0:0:0/96)",
            ),
            // Teredo tunnels to an embedded (possibly private) IPv4 address.
            ("2001::1", "Teredo address (2001::/32)"),
            ("2001:0:ffff:ffff::1", "Teredo address (2001::/32)"),
            ("2001:1::1", "public"),
        ];
        let mut failures = Vec::new();
        for (ip, expect) in cases {
            let got = check(ip);
            if got != expect {
                failures.push(format!("{ip}: expected {expect}, got {got}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[tokio::test]
    async fn the_resolver_refuses_localhost_when_guarding() {
        let err = GuardedResolver { guard: true }
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost must be refused");
        let refused = err.downcast_ref::<SsrfRefused>().expect("an SsrfRefused");
        assert_eq!(refused.host, "localhost");
        assert!(refused.addr.is_loopback(), "{refused}");
    }

    #[tokio::test]
    async fn the_resolver_passes_localhost_when_not_guarding() {
        let addrs: Vec<SocketAddr> = GuardedResolver { guard: false }
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
