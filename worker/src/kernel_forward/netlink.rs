//! The elements of the worker's port map, changed by a netlink message of our own.
//!
//! Why: admitting a running tenant and taking its port back happen once per wake/sleep cycle
//! of every tenant; as an `nft` process each cost ~3.5 ms of CPU and 5-9 ms of wall time (the
//! swap-out waits for its withdrawal), as one nfnetlink batch a few microseconds. The table
//! itself (made once at the worker's start) stays nftables text run by `nft`: it is read by
//! people, and made rarely.
//!
//! A batch is `NFNL_MSG_BATCH_BEGIN`, the element messages, `NFNL_MSG_BATCH_END`, one
//! transaction: all of it applies or none. Each element message asks for an acknowledgement,
//! and the first error the kernel reports is the call's error.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 0x2;
const NFPROTO_IPV4: u8 = 2;
const NLMSG_HDRLEN: usize = 16;

/// A change of one element of an `ip` table's map of `inet_service : ipv4_addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The port maps to the address (no error if it already does).
    Add { port: u16, to: Ipv4Addr },
    /// The port leaves the map (an error if it is not in it).
    Delete { port: u16 },
}

/// Applies `changes` to the map `set` of table `ip table`, in one transaction.
pub fn apply(table: &str, set: &str, changes: &[Change]) -> io::Result<()> {
    let batch = encode_batch(table, set, changes, 1);
    let sock = open()?;
    socket::send(sock.as_raw_fd(), &batch, MsgFlags::empty())?;
    let mut acked = 0;
    let mut buf = vec![0u8; 8192];
    while acked < changes.len() {
        let n = socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        for status in acks(&buf[..n]) {
            if status != 0 {
                return Err(io::Error::from_raw_os_error(-status));
            }
            acked += 1;
        }
    }
    Ok(())
}

/// A netlink socket of the netfilter family, bound, whose reads give up after a second (the
/// kernel answers a batch while it is being sent; a lost answer must not hang a swap-out).
fn open() -> io::Result<OwnedFd> {
    let sock = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )?;
    socket::bind(sock.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    socket::setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(1, 0))?;
    Ok(sock)
}

/// The batch: begin, one message per change (sequence numbers from `seq`), end.
fn encode_batch(table: &str, set: &str, changes: &[Change], seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    message(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        |_| {},
    );
    for (i, change) in changes.iter().enumerate() {
        let (kind, flags) = match change {
            Change::Add { .. } => (NFT_MSG_NEWSETELEM, NLM_F_CREATE),
            Change::Delete { .. } => (NFT_MSG_DELSETELEM, 0),
        };
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | kind;
        let flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        message(
            &mut out,
            kind,
            flags,
            seq + 1 + i as u32,
            NFPROTO_IPV4,
            |m| {
                attr(m, NFTA_SET_ELEM_LIST_TABLE, &c_string(table));
                attr(m, NFTA_SET_ELEM_LIST_SET, &c_string(set));
                nest(m, NFTA_SET_ELEM_LIST_ELEMENTS, |m| {
                    nest(m, NFTA_LIST_ELEM, |m| match change {
                        Change::Add { port, to } => {
                            nest(m, NFTA_SET_ELEM_KEY, |m| {
                                attr(m, NFTA_DATA_VALUE, &port.to_be_bytes())
                            });
                            nest(m, NFTA_SET_ELEM_DATA, |m| {
                                attr(m, NFTA_DATA_VALUE, &to.octets())
                            });
                        }
                        Change::Delete { port } => nest(m, NFTA_SET_ELEM_KEY, |m| {
                            attr(m, NFTA_DATA_VALUE, &port.to_be_bytes())
                        }),
                    });
                });
            },
        );
    }
    let end = seq + 1 + changes.len() as u32;
    message(&mut out, NFNL_MSG_BATCH_END, NLM_F_REQUEST, end, 0, |_| {});
    out
}

/// One netlink message: its header, an nfgenmsg (`family`; a batch's begin and end name the
/// nftables subsystem in it), the attributes `body` writes.
fn message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    body: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    let res_id = match kind {
        NFNL_MSG_BATCH_BEGIN | NFNL_MSG_BATCH_END => NFNL_SUBSYS_NFTABLES,
        _ => 0,
    };
    out.extend_from_slice(&[family, 0]);
    out.extend_from_slice(&res_id.to_be_bytes());
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

fn c_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// The statuses (0, or a negative errno) of the acknowledgements in `buf`, one read of the
/// socket; other messages are skipped.
fn acks(mut buf: &[u8]) -> Vec<i32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_framed_and_its_attributes_aligned() {
        let batch = encode_batch(
            "pico_ab",
            "ports",
            &[
                Change::Add {
                    port: 7001,
                    to: Ipv4Addr::new(10, 200, 109, 102),
                },
                Change::Delete { port: 7001 },
            ],
            1,
        );
        // Walk the messages: begin, two element messages, end, each a multiple of 4 long.
        let mut kinds = Vec::new();
        let mut rest = &batch[..];
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            kinds.push(u16::from_ne_bytes([rest[4], rest[5]]));
            rest = &rest[len..];
        }
        assert_eq!(kinds, [0x10, 0x0a0c, 0x0a0e, 0x11]);
        // The port in network order, the address as its octets.
        let find = |needle: &[u8]| batch.windows(needle.len()).any(|w| w == needle);
        assert!(find(&[6, 0, 1, 0, 0x1b, 0x59]));
        assert!(find(&[8, 0, 1, 0, 10, 200, 109, 102]));
        assert!(find(b"pico_ab\0"));
    }

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
        assert_eq!(acks(&buf), [0, -2]);
        assert_eq!(acks(&buf[..20]), Vec::<i32>::new());
    }

    /// Against the kernel, on a table of the test's own (root; nftables from deploy/setup.sh),
    /// not named `pico_*`: a worker starting in another test sweeps those whose worker is gone.
    #[test]
    fn the_kernel_applies_a_batch_and_reports_what_it_refused() {
        let table = format!("nltest_{}", std::process::id());
        let run = |script: &str| testkit::net::nft(script);
        let listed = |table: &str| run(&format!("list map ip {table} ports\n"));
        run(&format!(
            "table ip {table} {{\n map ports {{\n type inet_service : ipv4_addr\n }}\n}}\n"
        ));
        let to = Ipv4Addr::new(10, 200, 109, 102);
        let add = Change::Add { port: 7001, to };
        let delete = Change::Delete { port: 7001 };
        let result = (|| {
            apply(&table, "ports", &[add])?;
            apply(&table, "ports", &[add])?;
            let with = listed(&table);
            apply(&table, "ports", &[delete])?;
            let missing = apply(&table, "ports", &[delete]).expect_err("deleted twice");
            // Taking back a port the map does not hold: added, then deleted, one transaction.
            apply(&table, "ports", &[add, delete])?;
            let without = listed(&table);
            let no_table = apply("nltest_none", "ports", &[add]).expect_err("no table");
            Ok::<_, io::Error>((with, missing, without, no_table))
        })();
        run(&format!("delete table ip {table}\n"));
        let (with, missing, without, no_table) = result.unwrap();
        assert!(with.contains("7001 : 10.200.109.102"), "{with}");
        assert_eq!(missing.raw_os_error(), Some(libc::ENOENT), "{missing}");
        assert!(!without.contains("7001"), "{without}");
        assert_eq!(no_table.raw_os_error(), Some(libc::ENOENT), "{no_table}");
    }
}
