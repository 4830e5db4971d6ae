//! The client's address, as login throttling counts it: the TCP peer, or, when the peer is a
//! proxy the operator trusts, the right-most `X-Forwarded-For` entry that is not itself a
//! trusted proxy. Without trusted proxies `X-Forwarded-For` is ignored: anyone can write it.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::envelope::ApiError;
use crate::state::AppState;

/// The proxies whose `X-Forwarded-For` is believed (`--trusted-proxy`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Whether `address` is one of them.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|net| net.contains(&address))
    }

    /// Whether none is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// Comma-separated addresses (`10.0.0.5`, `::1`) and CIDR blocks (`10.0.0.0/8`).
    fn from_str(text: &str) -> Result<TrustedProxies, String> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| format!("{entry:?} is neither an IP address nor a CIDR block"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`, how a dual-stack socket shows IPv4
/// peers) is the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The address a request comes from, per [`client_address`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddress(pub(crate) IpAddr);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<ClientAddress, ApiError> {
        // The server is wired with connect info (src/api_server.rs); without it this is a bug,
        // and guessing an address would throttle the wrong people.
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .map_err(ApiError::internal)?;
        Ok(ClientAddress(client_address(
            peer.ip(),
            &parts.headers,
            &state.inner.config.trusted_proxies,
        )))
    }
}

/// The client behind `peer`: `peer` itself unless it is a trusted proxy; then the right-most
/// `X-Forwarded-For` entry that is not a trusted proxy (entries to its left were written by
/// whoever sent the request, so they prove nothing). A trusted proxy that sent no usable entry
/// is the client.
pub(crate) fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return peer;
        };
        hops.extend(text.split(',').map(str::trim));
    }
    for hop in hops.iter().rev() {
        let Ok(address) = hop.parse::<IpAddr>() else {
            // An entry a trusted proxy would not write: stop believing the header here.
            return peer;
        };
        let address = canonical(address);
        if !trusted.contains(address) {
            return address;
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().expect("header value"));
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let none = TrustedProxies::default();
        let lb: TrustedProxies = "10.0.0.0/8, 192.168.1.1".parse().expect("proxies");
        let spoofed = headers(&["1.2.3.4"]);
        assert_eq!(
            client_address(ip("5.6.7.8"), &spoofed, &none),
            ip("5.6.7.8")
        );
        assert_eq!(client_address(ip("5.6.7.8"), &spoofed, &lb), ip("5.6.7.8"));
        assert_eq!(client_address(ip("10.1.2.3"), &spoofed, &lb), ip("1.2.3.4"));
        // The client wrote "9.9.9.9" itself; the proxies appended what they saw.
        let chain = headers(&["9.9.9.9, 1.2.3.4", "192.168.1.1"]);
        assert_eq!(client_address(ip("10.1.2.3"), &chain, &lb), ip("1.2.3.4"));
        assert_eq!(
            client_address(ip("10.1.2.3"), &headers(&[]), &lb),
            ip("10.1.2.3")
        );
        assert_eq!(
            client_address(ip("10.1.2.3"), &headers(&["1.2.3.4, junk"]), &lb),
            ip("10.1.2.3")
        );
        assert_eq!(
            client_address(ip("::ffff:10.1.2.3"), &spoofed, &lb),
            ip("1.2.3.4"),
            "an IPv4 peer on a dual-stack socket"
        );
    }

    #[test]
    fn proxies_parse_addresses_and_blocks() {
        let proxies: TrustedProxies = "127.0.0.1,::1, 10.0.0.0/8".parse().expect("proxies");
        assert!(proxies.contains(ip("127.0.0.1")));
        assert!(proxies.contains(ip("::1")));
        assert!(proxies.contains(ip("10.200.0.1")));
        assert!(!proxies.contains(ip("127.0.0.2")));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.example".parse::<TrustedProxies>().is_err());
        assert!("".parse::<TrustedProxies>().expect("empty").is_empty());
    }
}
