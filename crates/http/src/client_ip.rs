//! Who the client is, by address: the socket peer, unless the peer is a trusted proxy, in
//! which case `X-Forwarded-For` is believed as far as the chain of trusted proxies goes.

use std::net::IpAddr;
use std::str::FromStr;

use actix_web::HttpRequest;
use ipnet::IpNet;

/// The proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses a comma-separated list such as `10.0.0.0/8, 192.168.1.7`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = IpNet::from_str(item)
                .or_else(|_| IpAddr::from_str(item).map(IpNet::from))
                .map_err(|_| format!("`{item}` is not an IP address or CIDR block"))?;
            nets.push(canonical_net(net));
        }
        Ok(Self(nets))
    }

    /// Whether `ip` (canonical) is one of the trusted proxies.
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for `req`, canonical: on a dual-stack socket (`[::]`) an IPv4
    /// peer arrives as `::ffff:a.b.c.d`, which is `a.b.c.d` here, for the trusted proxies
    /// and the limits alike; so is each forwarded address.
    pub(crate) fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip().to_canonical();
        if !self.trusts(peer) {
            return Some(peer);
        }
        // Right to left: each trusted hop vouches for the address before it.
        let hops: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Ok(ip) = IpAddr::from_str(hop) else { break };
            client = ip.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        Some(client)
    }
}

/// An IPv4-mapped block (`::ffff:10.0.0.0/104`) as the IPv4 block it is (`10.0.0.0/8`), to
/// match canonical addresses.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map(IpNet::V4).unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

/// The client's full address (after the trusted proxies, canonical): what key allowlists
/// and the audit trail see (the limits group IPv6 by /64 on their own).
pub(crate) fn client_address(req: &actix_web::HttpRequest) -> Option<IpAddr> {
    match req.app_data::<actix_web::web::Data<crate::limits::AbuseLimits>>() {
        Some(limits) => limits.client_ip(req),
        None => req.peer_addr().map(|a| a.ip().to_canonical()),
    }
}

/// Where a request came from, for the audit trail: the client address (as the trusted
/// proxies say, when the limits know them) and the user agent.
pub(crate) fn request_meta(req: &actix_web::HttpRequest) -> account_domain::RequestMeta {
    let ip = client_address(req);
    let user_agent = req.headers().get(actix_web::http::header::USER_AGENT).and_then(|v| v.to_str().ok());
    account_domain::RequestMeta::new(ip, user_agent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn request(peer: &str, forwarded: Option<&str>) -> HttpRequest {
        let mut req = TestRequest::default().peer_addr(format!("{peer}:5000").parse().expect("addr"));
        if let Some(f) = forwarded {
            req = req.insert_header(("x-forwarded-for", f));
        }
        req.to_http_request()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(&request("198.51.100.1", Some("203.0.113.9"))), "198.51.100.1".parse().ok());
    }

    #[test]
    fn a_trusted_proxy_forwards_the_client_address() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7").expect("valid");
        let ip = |peer, fwd| trusted.client_ip(&request(peer, fwd));
        assert_eq!(ip("10.1.2.3", Some("203.0.113.9")), "203.0.113.9".parse().ok());
        // A client cannot spoof past the last untrusted hop.
        assert_eq!(ip("10.1.2.3", Some("1.1.1.1, 203.0.113.9, 192.168.1.7")), "203.0.113.9".parse().ok());
        assert_eq!(ip("192.168.1.8", Some("203.0.113.9")), "192.168.1.8".parse().ok());
        assert_eq!(ip("10.1.2.3", Some("garbage")), "10.1.2.3".parse().ok());
        assert_eq!(ip("10.1.2.3", None), "10.1.2.3".parse().ok());
    }

    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_address_for_the_proxies_and_the_client() {
        let trusted = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8").expect("valid");
        let ip = |peer, fwd| trusted.client_ip(&request(peer, fwd));
        // A dual-stack listener sees an IPv4 proxy as ::ffff:127.0.0.1: still trusted.
        assert_eq!(ip("[::ffff:127.0.0.1]", Some("203.0.113.9")), "203.0.113.9".parse().ok());
        // Forwarded hops are canonical too, trusted or not.
        assert_eq!(ip("[::ffff:127.0.0.1]", Some("203.0.113.9, ::ffff:10.1.2.3")), "203.0.113.9".parse().ok());
        assert_eq!(ip("127.0.0.1", Some("::ffff:203.0.113.9")), "203.0.113.9".parse().ok());
        // An untrusted mapped peer is its IPv4 address.
        assert_eq!(ip("[::ffff:198.51.100.1]", Some("203.0.113.9")), "198.51.100.1".parse().ok());
        // A real IPv6 address is left as it is.
        assert_eq!(ip("[2001:db8::1]", Some("203.0.113.9")), "2001:db8::1".parse().ok());
        // A proxy listed as a mapped address or block is its IPv4 address or block.
        let mapped = TrustedProxies::parse("::ffff:192.0.2.7, ::ffff:10.0.0.0/104").expect("valid");
        assert_eq!(mapped.client_ip(&request("192.0.2.7", Some("203.0.113.9"))), "203.0.113.9".parse().ok());
        assert_eq!(mapped.client_ip(&request("10.9.9.9", Some("203.0.113.9"))), "203.0.113.9".parse().ok());
        assert_eq!(mapped.client_ip(&request("11.0.0.1", Some("203.0.113.9"))), "11.0.0.1".parse().ok());
    }

    #[test]
    fn the_audit_trail_records_the_canonical_address() {
        let req = request("[::ffff:198.51.100.1]", None);
        assert_eq!(request_meta(&req).client_ip(), "198.51.100.1".parse().ok());
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.internal").is_err());
        assert!(TrustedProxies::parse("").is_ok());
    }
}
