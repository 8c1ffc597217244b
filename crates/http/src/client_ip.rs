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
            nets.push(net);
        }
        Ok(Self(nets))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for `req`.
    pub(crate) fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
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
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        Some(client)
    }
}

/// Where a request came from, for the audit trail: the client address (as the trusted
/// proxies say, when the limits know them) and the user agent.
pub(crate) fn request_meta(req: &actix_web::HttpRequest) -> account_domain::RequestMeta {
    let ip = match req.app_data::<actix_web::web::Data<crate::limits::AbuseLimits>>() {
        Some(limits) => limits.client_ip(req),
        None => req.peer_addr().map(|a| a.ip()),
    };
    let user_agent = req.headers().get(actix_web::http::header::USER_AGENT).and_then(|v| v.to_str().ok());
    account_domain::RequestMeta::new(ip.map(|ip| ip.to_string()), user_agent)
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
    fn bad_lists_are_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.internal").is_err());
        assert!(TrustedProxies::parse("").is_ok());
    }
}
