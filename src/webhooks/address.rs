//! Which addresses a webhook may be sent to. Refused unless allow-listed
//! (`WEBHOOK_ALLOWED_CIDRS`): every range that is not the public internet,
//! as Svix refuses them, so an endpoint cannot point the dispatcher at the
//! cluster's own services, the cloud's metadata address, or the host.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Refused ranges, IPv4, with the name an error gives.
const REFUSED_V4: [(&str, &str); 16] = [
    ("0.0.0.0/8", "\"this network\""),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
];

/// Refused ranges, IPv6. IPv4-mapped and NAT64 addresses reach IPv4 hosts
/// (the translator's, or the dispatcher's own stack's), so they are
/// refused whole rather than judged by the IPv4 address inside.
const REFUSED_V6: [(&str, &str); 14] = [
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("::/96", "IPv4-compatible"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
];

/// An address outside what webhooks may reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{address} is a {range} address ({cidr}); webhooks are not sent there unless WEBHOOK_ALLOWED_CIDRS allows it")]
pub struct RefusedAddress {
    pub address: IpAddr,
    pub range: &'static str,
    pub cidr: &'static str,
}

/// The refused ranges and the operator's exceptions.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl fmt::Debug for AddressPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.allowed).finish()
    }
}

impl AddressPolicy {
    /// Comma-separated CIDRs (`10.20.0.0/16,fd00::/8`); empty for none.
    pub fn parse(setting: &str, value: &str) -> Result<Self, String> {
        let allowed = value
            .split(',')
            .map(str::trim)
            .filter(|cidr| !cidr.is_empty())
            .map(|cidr| {
                cidr.parse::<IpNet>()
                    .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("{setting}: `{cidr}` is not a CIDR (10.0.0.0/8, fd00::/8)")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { allowed })
    }

    pub fn check(&self, address: IpAddr) -> Result<(), RefusedAddress> {
        if self.allowed.iter().any(|net| net.contains(&address)) {
            return Ok(());
        }
        match refused_range(address) {
            Some((cidr, range)) => Err(RefusedAddress {
                address,
                range,
                cidr,
            }),
            None => Ok(()),
        }
    }
}

fn refused_range(address: IpAddr) -> Option<(&'static str, &'static str)> {
    match address {
        IpAddr::V4(v4) => REFUSED_V4
            .iter()
            .find(|(cidr, _)| contains_v4(cidr, v4))
            .copied(),
        IpAddr::V6(v6) => REFUSED_V6
            .iter()
            .find(|(cidr, _)| contains_v6(cidr, v6))
            .copied(),
    }
}

fn contains_v4(cidr: &str, address: Ipv4Addr) -> bool {
    cidr.parse::<Ipv4Net>()
        .is_ok_and(|net| net.contains(&address))
}

fn contains_v6(cidr: &str, address: Ipv6Addr) -> bool {
    cidr.parse::<Ipv6Net>()
        .is_ok_and(|net| net.contains(&address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(address: &str) -> bool {
        AddressPolicy::default()
            .check(address.parse().expect("address"))
            .is_err()
    }

    #[test]
    fn every_range_that_is_not_the_internet_is_refused() {
        for address in [
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "2002:a00:1::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(refused(address), "{address} should be refused");
        }
        for address in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "100.128.0.1"] {
            assert!(!refused(address), "{address} should be allowed");
        }
    }

    #[test]
    fn the_allow_list_opens_its_ranges_only() {
        let policy =
            AddressPolicy::parse("WEBHOOK_ALLOWED_CIDRS", "127.0.0.0/8, ::1").expect("cidrs");
        assert!(policy.check("127.0.0.1".parse().expect("ip")).is_ok());
        assert!(policy.check("::1".parse().expect("ip")).is_ok());
        assert!(policy.check("10.0.0.1".parse().expect("ip")).is_err());
        let error = AddressPolicy::parse("WEBHOOK_ALLOWED_CIDRS", "10.0.0.0/33").expect_err("bad");
        assert!(error.contains("WEBHOOK_ALLOWED_CIDRS"), "{error}");
    }

    #[test]
    fn a_refusal_names_the_range() {
        let error = AddressPolicy::default()
            .check("169.254.169.254".parse().expect("ip"))
            .expect_err("link-local");
        assert_eq!(error.range, "link-local");
        assert!(error.to_string().contains("WEBHOOK_ALLOWED_CIDRS"));
    }
}
