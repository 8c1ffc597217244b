//! Who the client is, by address: the socket peer, unless the peer is a trusted proxy, in
//! which case `X-Forwarded-For` is believed as far as the chain of trusted proxies goes. A
//! trusted hop that forwards something that is not an address leaves the client unknown.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use actix_web::HttpRequest;
use ipnet::IpNet;

/// The proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

/// Why a list of trusted proxies was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedProxiesError {
    /// An item that is neither an IP address nor a CIDR block.
    NotAnAddress(String),
    /// A `/0` block (once canonical): it would believe any client's `X-Forwarded-For`.
    EveryAddress(String),
}

/// Where a request came from, as far as the trusted proxies tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The client's address, for allowlists and the audit trail; `None` when a trusted
    /// proxy forwarded something that is not an address.
    pub client: Option<IpAddr>,
    /// The address the limits count the request under: the client's, or the nearest
    /// trusted proxy's when the client is unknown.
    pub counted: IpAddr,
}

impl TrustedProxies {
    /// Parses a comma-separated list such as `10.0.0.0/8, 192.168.1.7`; a `/0` block is
    /// refused (`::ffff:0.0.0.0/96` too, which is `0.0.0.0/0`).
    pub fn parse(list: &str) -> Result<Self, TrustedProxiesError> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = IpNet::from_str(item)
                .or_else(|_| IpAddr::from_str(item).map(IpNet::from))
                .map_err(|_| TrustedProxiesError::NotAnAddress(item.to_owned()))?;
            let net = canonical_net(net);
            if net.prefix_len() == 0 {
                return Err(TrustedProxiesError::EveryAddress(item.to_owned()));
            }
            nets.push(net);
        }
        Ok(Self(nets))
    }

    /// Whether `ip` (canonical) is one of the trusted proxies.
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Where `req` came from (`None` only without a peer address), canonical: on a
    /// dual-stack socket (`[::]`) an IPv4 peer arrives as `::ffff:a.b.c.d`, which is
    /// `a.b.c.d` here, for the trusted proxies and the limits alike; so is each forwarded
    /// address.
    pub(crate) fn origin(&self, req: &HttpRequest) -> Option<Origin> {
        let peer = req.peer_addr()?.ip().to_canonical();
        let known = |ip| Some(Origin { client: Some(ip), counted: ip });
        if !self.trusts(peer) {
            return known(peer);
        }
        // Right to left: each trusted hop vouches for the one before it. Empty list elements
        // are no hop (RFC 9110, 5.6.1); a header value that is not text is one unreadable hop.
        let hops: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .flat_map(|v| v.to_str().unwrap_or("\u{fffd}").split(','))
            .map(str::trim)
            .filter(|hop| !hop.is_empty())
            .collect();
        let mut nearest_trusted = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = hop_address(hop) else {
                // Not the proxy's own address, nor any the client chose: none.
                return Some(Origin { client: None, counted: nearest_trusted });
            };
            let ip = ip.to_canonical();
            if !self.trusts(ip) {
                return known(ip);
            }
            nearest_trusted = ip;
        }
        known(nearest_trusted)
    }
}

/// A forwarded hop's address: `a.b.c.d`, `a.b.c.d:port`, an IPv6 address bare, `[v6]` or
/// `[v6]:port`, as proxies write them. Anything else (`unknown`, an obfuscated name) is none.
fn hop_address(hop: &str) -> Option<IpAddr> {
    IpAddr::from_str(hop)
        .or_else(|_| SocketAddr::from_str(hop).map(|socket| socket.ip()))
        .ok()
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
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

/// The client's full address (after the trusted proxies, canonical), `None` when unknown:
/// what key allowlists and the audit trail see (the limits group IPv6 by /64 on their own).
pub(crate) fn client_address(req: &actix_web::HttpRequest) -> Option<IpAddr> {
    match req.app_data::<actix_web::web::Data<crate::limits::AbuseLimits>>() {
        Some(limits) => limits.origin(req).and_then(|origin| origin.client),
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

    impl TrustedProxies {
        fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
            self.origin(req).and_then(|origin| origin.client)
        }
    }

    fn addr(text: &str) -> IpAddr {
        text.parse().expect("an address")
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
        assert_eq!(ip("10.1.2.3", Some("garbage")), None, "not the proxy: unknown");
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
    fn forwarded_hops_with_a_port_are_read_as_their_address() {
        let trusted = TrustedProxies::parse("127.0.0.1").expect("valid");
        let ip = |fwd| trusted.client_ip(&request("127.0.0.1", Some(fwd)));
        assert_eq!(ip("203.0.113.9:40000"), Some(addr("203.0.113.9")));
        assert_eq!(ip("[2001:db8::7]:443"), Some(addr("2001:db8::7")));
        assert_eq!(ip("[2001:db8::7]"), Some(addr("2001:db8::7")));
        assert_eq!(ip("[::ffff:203.0.113.9]:80"), Some(addr("203.0.113.9")), "canonical");
        // A trusted hop with a port is still trusted, and vouches for the one before it.
        assert_eq!(ip("203.0.113.9, 127.0.0.1:5555"), Some(addr("203.0.113.9")));
        assert_eq!(ip("127.0.0.1:5555"), Some(addr("127.0.0.1")));
    }

    #[test]
    fn an_unreadable_forwarded_hop_leaves_the_client_unknown_and_counted_under_the_nearest_trusted_proxy() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").expect("valid");
        let origin = |peer, fwd: &str| trusted.origin(&request(peer, Some(fwd))).expect("a peer");
        for hop in
            ["unknown", "garbage", "_hidden", "203.0.113.9:99999", "203.0.113.9:", "[203.0.113.9]", "2001:db8::7]"]
        {
            assert_eq!(origin("10.1.2.3", hop), Origin { client: None, counted: addr("10.1.2.3") }, "{hop}");
        }
        // Counted under the trusted hop nearest the unreadable one, whatever lies before it.
        assert_eq!(
            origin("10.1.2.3", "198.51.100.1, unknown, 10.0.0.7"),
            Origin { client: None, counted: addr("10.0.0.7") }
        );
        // Before an untrusted hop, nothing is read at all.
        assert_eq!(origin("10.1.2.3", "unknown, 203.0.113.9").client, Some(addr("203.0.113.9")));
        // Empty list elements are no hop.
        assert_eq!(origin("10.1.2.3", "203.0.113.9, ,").client, Some(addr("203.0.113.9")));
        // An untrusted peer is the client, whatever it forwards.
        assert_eq!(origin("198.51.100.1", "unknown").client, Some(addr("198.51.100.1")));
        // A header value that is not text is an unreadable hop.
        let req = TestRequest::default()
            .peer_addr("10.1.2.3:5000".parse().expect("addr"))
            .insert_header((
                "x-forwarded-for",
                actix_web::http::header::HeaderValue::from_bytes(b"\xff").expect("obs-text"),
            ))
            .to_http_request();
        assert_eq!(trusted.origin(&req), Some(Origin { client: None, counted: addr("10.1.2.3") }));
    }

    #[test]
    fn the_audit_trail_records_no_address_when_the_client_is_unknown() {
        let settings = crate::limits::LimitSettings {
            trusted_proxies: TrustedProxies::parse("127.0.0.1").expect("valid"),
            ..Default::default()
        };
        let limits = actix_web::web::Data::new(crate::limits::AbuseLimits::new(settings));
        let req = |fwd| {
            TestRequest::default()
                .peer_addr("127.0.0.1:5000".parse().expect("addr"))
                .app_data(limits.clone())
                .insert_header(("x-forwarded-for", fwd))
                .to_http_request()
        };
        assert_eq!(request_meta(&req("unknown")).client_ip(), None);
        assert_eq!(request_meta(&req("203.0.113.9:40000")).client_ip(), "203.0.113.9".parse().ok());
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.internal").is_err());
        assert!(TrustedProxies::parse("").is_ok());
    }

    #[test]
    fn a_list_that_would_trust_every_address_is_refused() {
        for list in ["0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96", "10.0.0.0/8, ::/0"] {
            assert!(
                matches!(TrustedProxies::parse(list), Err(TrustedProxiesError::EveryAddress(_))),
                "{list}: {:?}",
                TrustedProxies::parse(list)
            );
        }
        assert!(TrustedProxies::parse("0.0.0.0/1, ::ffff:0.0.0.0/97").is_ok(), "wide, but not everything");
    }
}
