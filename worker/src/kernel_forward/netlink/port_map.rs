//! The elements of the worker's port map (`rules::PORT_MAP`), changed by an nfnetlink batch.
//!
//! A batch is `NFNL_MSG_BATCH_BEGIN`, the element messages, `NFNL_MSG_BATCH_END`, one
//! transaction: all of it applies or none. Each element message asks for an acknowledgement,
//! and the first error the kernel reports is the call's error.

use std::io;
use std::net::Ipv4Addr;

use nix::sys::socket::SockProtocol;

use super::{attr, exchange, message, nest, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST};

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
const NFPROTO_IPV4: u8 = 2;

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
    let statuses = exchange(SockProtocol::NetlinkNetFilter, &batch, changes.len())?;
    match statuses.into_iter().find(|s| *s != 0) {
        Some(status) => Err(io::Error::from_raw_os_error(-status)),
        None => Ok(()),
    }
}

/// The batch: begin, one message per change (sequence numbers from `seq`), end.
fn encode_batch(table: &str, set: &str, changes: &[Change], seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    message(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        &nfgenmsg(0, NFNL_SUBSYS_NFTABLES),
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
            &nfgenmsg(NFPROTO_IPV4, 0),
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
    let end_header = nfgenmsg(0, NFNL_SUBSYS_NFTABLES);
    message(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        end,
        &end_header,
        |_| {},
    );
    out
}

/// The nftables messages' fixed header (`struct nfgenmsg`): the family, a version, and the
/// resource id (a batch's begin and end name the nftables subsystem in it).
fn nfgenmsg(family: u8, res_id: u16) -> [u8; 4] {
    let id = res_id.to_be_bytes();
    [family, 0, id[0], id[1]]
}

fn c_string(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
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
        // Begin, two element messages, end.
        let kinds = super::super::message_kinds(&batch);
        assert_eq!(kinds, [0x10, 0x0a0c, 0x0a0e, 0x11]);
        // The port in network order, the address as its octets.
        let find = |needle: &[u8]| batch.windows(needle.len()).any(|w| w == needle);
        assert!(find(&[6, 0, 1, 0, 0x1b, 0x59]));
        assert!(find(&[8, 0, 1, 0, 10, 200, 109, 102]));
        assert!(find(b"pico_ab\0"));
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
