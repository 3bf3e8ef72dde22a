//! The PROXY protocol v2 header: how a tenant behind the worker learns its client's address.
//!
//! Every connection reaches a tenant through the worker, into the tenant's network namespace, so
//! the tenant sees a peer of the worker's (its link's or its loopback address:
//! `tenant::ClientAddress`), not the client. A tenant whose spec asks for it (`proxy_protocol`) gets, as
//! the first bytes of each connection, the binary header of HAProxy's PROXY protocol version 2
//! (<https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>, section 2.2) naming the
//! client's address and port and the worker's public address and port it connected to. nginx
//! (`listen ... proxy_protocol`), HAProxy, and most proxy-aware servers read it.

use std::net::{IpAddr, SocketAddr};

/// The 12 bytes every v2 header starts with.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY (the connection was relayed for the addresses given).
const VERSION_2_PROXY: u8 = 0x21;
/// Address family and transport: TCP over IPv4, TCP over IPv6.
const TCP_OVER_IPV4: u8 = 0x11;
const TCP_OVER_IPV6: u8 = 0x21;

/// The header of a connection from `client` to the worker's `public` address. A v4 and a v6
/// address together are both given as IPv6 (the v4 one mapped).
pub fn encode(client: SocketAddr, public: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(VERSION_2_PROXY);
    match (client.ip(), public.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(TCP_OVER_IPV4);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(TCP_OVER_IPV6);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(src).octets());
            out.extend_from_slice(&v6(dst).octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&public.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_connection_is_28_bytes_with_addresses_and_ports_in_network_order() {
        let h = encode(
            "192.0.2.10:51234".parse().unwrap(),
            "198.51.100.1:8080".parse().unwrap(),
        );
        let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
        want.extend_from_slice(&[192, 0, 2, 10, 198, 51, 100, 1]);
        want.extend_from_slice(&[0xc8, 0x22, 0x1f, 0x90]);
        assert_eq!(h, want);
    }

    #[test]
    fn ipv6_and_a_mix_of_families_are_given_as_ipv6() {
        let h = encode(
            "[2001:db8::1]:443".parse().unwrap(),
            "[::1]:80".parse().unwrap(),
        );
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0x00, 0x24]);
        assert_eq!(&h[48..52], &[0x01, 0xbb, 0x00, 0x50]);
        let mixed = encode("192.0.2.10:1".parse().unwrap(), "[::1]:80".parse().unwrap());
        assert_eq!(mixed[13], 0x21);
        // ::ffff:192.0.2.10
        assert_eq!(&mixed[16 + 10..16 + 16], &[0xff, 0xff, 192, 0, 2, 10]);
    }
}
