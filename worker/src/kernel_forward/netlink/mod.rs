//! Netlink messages of our own, for the two changes made once per wake/sleep cycle of every
//! tenant: an element of the worker's nftables port map ([`port_map`]) and a routing policy
//! rule ([`fib_rule`]).
//!
//! Why not `nft` or `ip`: each is a process, ~3.5 ms of CPU and 5-9 ms of wall time, and a
//! swap-out waits for its port to be taken back; a netlink message is a few microseconds. What
//! is made once (the worker's table, a tenant's link) stays text run by `nft` and `ip`: it is
//! read by people, and made rarely.
//!
//! Here: the framing both families share (a message, its attributes), a socket whose reads give
//! up after a second, and the acknowledgements, one per message that asks for one.

pub mod fib_rule;
pub mod port_map;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_HDRLEN: usize = 16;

/// Sends `messages` (framed by [`message`]) on a socket of `protocol` and reads the statuses of
/// the `acks` acknowledgements they ask for (0, or a negative errno), in order.
fn exchange(protocol: SockProtocol, messages: &[u8], acks: usize) -> io::Result<Vec<i32>> {
    let sock = open(protocol)?;
    socket::send(sock.as_raw_fd(), messages, MsgFlags::empty())?;
    let mut statuses = Vec::with_capacity(acks);
    let mut buf = vec![0u8; 8192];
    while statuses.len() < acks {
        let n = socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        statuses.extend(read_acks(&buf[..n]));
    }
    Ok(statuses)
}

/// A netlink socket of `protocol`, bound, whose reads give up after a second (the kernel
/// answers while the messages are being sent; a lost answer must not hang a swap-out).
fn open(protocol: SockProtocol) -> io::Result<OwnedFd> {
    let sock = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        protocol,
    )?;
    socket::bind(sock.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    socket::setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(1, 0))?;
    Ok(sock)
}

/// One netlink message: its header, the family's fixed header `fixed`, the attributes `body`
/// writes.
fn message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    fixed: &[u8],
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(fixed);
    body(out);
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    pad(out);
}

fn nest(out: &mut Vec<u8>, kind: u16, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    body(out);
    let len = (out.len() - start) as u16;
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The statuses (0, or a negative errno) of the acknowledgements in `buf`, one read of the
/// socket; other messages are skipped.
fn read_acks(mut buf: &[u8]) -> Vec<i32> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
            let e = &buf[NLMSG_HDRLEN..NLMSG_HDRLEN + 4];
            out.push(i32::from_ne_bytes([e[0], e[1], e[2], e[3]]));
        }
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

/// The messages of `framed`, walked by their lengths: each one's type, and each a multiple of 4
/// long (tests of both families).
#[cfg(test)]
fn message_kinds(framed: &[u8]) -> Vec<u16> {
    let mut kinds = Vec::new();
    let mut rest = framed;
    while !rest.is_empty() {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        assert_eq!(len % 4, 0);
        kinds.push(u16::from_ne_bytes([rest[4], rest[5]]));
        rest = &rest[len..];
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_are_read_with_their_status() {
        let mut buf = Vec::new();
        for status in [0i32, -2] {
            buf.extend_from_slice(&36u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&[0; 10]);
            buf.extend_from_slice(&status.to_ne_bytes());
            buf.extend_from_slice(&[0; 16]);
        }
        assert_eq!(read_acks(&buf), [0, -2]);
        assert_eq!(read_acks(&buf[..20]), Vec::<i32>::new());
    }
}
