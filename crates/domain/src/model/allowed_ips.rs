//! The addresses a key may be used from.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

/// 1 to 32 addresses or CIDR blocks, IPv4 or IPv6, normalised (an IPv4-mapped IPv6 address
/// is its IPv4 address; a single address is a /32 or /128), with no host bits set and no
/// duplicates. A key without one works from anywhere. Behind one thin pointer: most keys
/// have none, and each cached key holds the field (a `Vec` would cost it 16 bytes more).
#[derive(Clone, PartialEq, Eq)]
#[allow(clippy::box_collection)]
pub struct AllowedIps(Box<Vec<IpNet>>);

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AllowedIpsError {
    #[error("must hold at most {max} addresses or blocks", max = AllowedIps::MAX)]
    TooMany,
    #[error("must hold IP addresses or CIDR blocks, such as 203.0.113.7 or 2001:db8::/32")]
    NotAnAddress,
    #[error("must hold blocks with no host bits set, such as 10.0.0.0/8 rather than 10.1.2.3/8")]
    HostBitsSet,
    #[error("must not hold the same address or block twice")]
    Duplicate,
}

/// The allowlist a request gives a new key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NewKeyAllowlist {
    /// Not mentioned: the creating key's own allowlist (an operator, who has none, gives
    /// none: anywhere).
    #[default]
    Creators,
    /// `null` or `[]`: the key works from anywhere.
    Anywhere,
    Only(AllowedIps),
}

/// What a change of a key asks of its allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowlistChange {
    /// Not mentioned: as it is.
    #[default]
    Unchanged,
    /// `null` or `[]`: the key works from anywhere.
    Anywhere,
    Only(AllowedIps),
}

impl AllowedIps {
    pub const MAX: usize = 32;

    /// Parses a list as a client sends it; an empty list means "anywhere" (`None`).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Option<Self>, AllowedIpsError> {
        if items.len() > Self::MAX {
            return Err(AllowedIpsError::TooMany);
        }
        let mut nets: Vec<IpNet> = Vec::with_capacity(items.len());
        for item in items {
            let net = parse_one(item.as_ref())?;
            if nets.contains(&net) {
                return Err(AllowedIpsError::Duplicate);
            }
            nets.push(net);
        }
        Ok((!nets.is_empty()).then(|| Self(Box::new(nets))))
    }

    /// Whether a client at `ip` may use the key.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether every address this list allows, `outer` allows too.
    pub fn is_within(&self, outer: &AllowedIps) -> bool {
        self.0.iter().all(|net| outer.0.iter().any(|o| o.contains(net)))
    }

    /// Each block as shown: a single address without its prefix length.
    pub fn items(&self) -> Vec<String> {
        self.0.iter().map(show).collect()
    }
}

fn parse_one(text: &str) -> Result<IpNet, AllowedIpsError> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(text.parse::<IpAddr>().map_err(|_| AllowedIpsError::NotAnAddress)?),
    };
    if net.trunc() != net {
        return Err(AllowedIpsError::HostBitsSet);
    }
    Ok(canonical(net))
}

/// An IPv4-mapped IPv6 block (`::ffff:0:0/96` and narrower) as the IPv4 block it is.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    }
}

fn show(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

impl fmt::Debug for AllowedIps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.items()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> AllowedIps {
        AllowedIps::parse(items).expect("valid").expect("not empty")
    }

    #[test]
    fn addresses_and_blocks_are_normalised_and_checked() {
        let ips = list(&["203.0.113.7", "10.0.0.0/8", "2001:db8::/32", "::ffff:192.0.2.1"]);
        assert_eq!(ips.items(), ["203.0.113.7", "10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]);
        assert_eq!(AllowedIps::parse::<&str>(&[]), Ok(None), "an empty list is anywhere");
        assert_eq!(AllowedIps::parse(&["10.1.2.3/8"]), Err(AllowedIpsError::HostBitsSet));
        assert_eq!(AllowedIps::parse(&["2001:db8::1/32"]), Err(AllowedIpsError::HostBitsSet));
        assert_eq!(AllowedIps::parse(&["1.2.3.4", "1.2.3.4/32"]), Err(AllowedIpsError::Duplicate));
        assert_eq!(AllowedIps::parse(&["192.0.2.1", "::ffff:192.0.2.1"]), Err(AllowedIpsError::Duplicate));
        assert_eq!(AllowedIps::parse(&["example.com"]), Err(AllowedIpsError::NotAnAddress));
        assert_eq!(AllowedIps::parse(&["10.0.0.0/33"]), Err(AllowedIpsError::NotAnAddress));
        let many: Vec<String> = (0..33).map(|i| format!("10.0.0.{i}")).collect();
        assert_eq!(AllowedIps::parse(&many), Err(AllowedIpsError::TooMany));
    }

    #[test]
    fn a_list_allows_its_addresses_and_the_mapped_form_of_its_ipv4_ones() {
        let ips = list(&["10.0.0.0/8", "2001:db8::/32"]);
        for ok in ["10.1.2.3", "::ffff:10.1.2.3", "2001:db8::5"] {
            assert!(ips.allows(ok.parse().expect("ip")), "{ok}");
        }
        for no in ["11.0.0.1", "2001:db9::1", "::1"] {
            assert!(!ips.allows(no.parse().expect("ip")), "{no}");
        }
    }

    #[test]
    fn a_list_is_within_another_when_every_block_is() {
        let outer = list(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(list(&["10.1.0.0/16", "2001:db8:1::1"]).is_within(&outer));
        assert!(!list(&["10.0.0.0/7"]).is_within(&outer));
        assert!(!list(&["10.1.0.0/16", "192.0.2.1"]).is_within(&outer));
    }
}
