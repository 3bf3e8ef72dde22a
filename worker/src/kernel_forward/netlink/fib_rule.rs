//! IPv4 routing policy rules (`ip rule`), added and deleted by rtnetlink messages.
//!
//! Rules are what route a tenant's port into its link with no address rewritten
//! (`kernel_forward::routing`); one is added when a tenant is admitted and deleted when its
//! port is taken back, so both are a message, not an `ip` process. Adding a rule that exists
//! and deleting one that does not are no errors: after a restart the worker cannot know which
//! of its rules the previous one left.

use std::io;
use std::net::Ipv4Addr;

use nix::sys::socket::SockProtocol;

use super::{attr, exchange, message, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};

const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const AF_INET: u8 = 2;
const FR_ACT_TO_TBL: u8 = 1;
const FR_ACT_GOTO: u8 = 2;
const FIB_RULE_INVERT: u32 = 0x2;
const FRA_DST: u16 = 1;
const FRA_SRC: u16 = 2;
const FRA_GOTO: u16 = 4;
const FRA_PRIORITY: u16 = 6;
const FRA_TABLE: u16 = 15;
const FRA_IP_PROTO: u16 = 22;
const FRA_DPORT_RANGE: u16 = 24;
const IPPROTO_TCP: u8 = 6;
const EEXIST: i32 = 17;
const ENOENT: i32 = 2;

/// One rule: what it selects, at which priority, and what it does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Its priority (`pref`): rules are tried from the lowest. Always given, so that a delete
    /// names this rule and no other (without it the kernel deletes the first that matches).
    pub pref: u32,
    /// The source network it selects, if any.
    pub from: Option<(Ipv4Addr, u8)>,
    /// The destination network it selects, if any.
    pub to: Option<(Ipv4Addr, u8)>,
    /// TCP only, and to this port if one is given (`ipproto tcp [dport P]`).
    pub tcp: Option<Option<u16>>,
    /// It applies to what it does not select (`not`).
    pub invert: bool,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Look the route up in this table; on no route, go on with the next rule.
    Table(u32),
    /// Go on at the rule of this priority.
    Goto(u32),
}

/// Adds `rules` (one exchange; those that exist already are no error).
pub fn add(rules: &[Rule]) -> io::Result<()> {
    change(RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, rules, EEXIST)
}

/// Deletes `rules` (one exchange; those that do not exist are no error).
pub fn delete(rules: &[Rule]) -> io::Result<()> {
    change(RTM_DELRULE, 0, rules, ENOENT)
}

fn change(kind: u16, flags: u16, rules: &[Rule], harmless: i32) -> io::Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let messages = encode(kind, NLM_F_REQUEST | NLM_F_ACK | flags, rules);
    let statuses = exchange(SockProtocol::NetlinkRoute, &messages, rules.len())?;
    match statuses.into_iter().find(|s| *s != 0 && *s != -harmless) {
        Some(status) => Err(io::Error::from_raw_os_error(-status)),
        None => Ok(()),
    }
}

/// The messages, one per rule: its header (`struct fib_rule_hdr`) and attributes.
fn encode(kind: u16, flags: u16, rules: &[Rule]) -> Vec<u8> {
    let mut out = Vec::new();
    for (seq, rule) in (1u32..).zip(rules) {
        let (action, table) = match rule.action {
            Action::Table(t) => (FR_ACT_TO_TBL, t),
            Action::Goto(_) => (FR_ACT_GOTO, 0),
        };
        let len = |net: Option<(Ipv4Addr, u8)>| net.map_or(0, |(_, len)| len);
        let flags_word = if rule.invert { FIB_RULE_INVERT } else { 0 };
        let mut header = vec![AF_INET, len(rule.to), len(rule.from), 0];
        // The table in the header only if it fits (local 255, main 254); FRA_TABLE always.
        header.extend_from_slice(&[u8::try_from(table).unwrap_or(0), 0, 0, action]);
        header.extend_from_slice(&flags_word.to_ne_bytes());
        message(&mut out, kind, flags, seq, &header, |m| {
            attr(m, FRA_PRIORITY, &rule.pref.to_ne_bytes());
            if let Some((addr, _)) = rule.to {
                attr(m, FRA_DST, &addr.octets());
            }
            if let Some((addr, _)) = rule.from {
                attr(m, FRA_SRC, &addr.octets());
            }
            if let Some(port) = rule.tcp {
                attr(m, FRA_IP_PROTO, &[IPPROTO_TCP]);
                if let Some(port) = port {
                    let range = [port.to_ne_bytes(), port.to_ne_bytes()].concat();
                    attr(m, FRA_DPORT_RANGE, &range);
                }
            }
            match rule.action {
                Action::Table(t) => attr(m, FRA_TABLE, &t.to_ne_bytes()),
                Action::Goto(pref) => attr(m, FRA_GOTO, &pref.to_ne_bytes()),
            }
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port_rule(pref: u32, port: u16, table: u32) -> Rule {
        Rule {
            pref,
            from: None,
            to: Some((Ipv4Addr::LOCALHOST, 32)),
            tcp: Some(Some(port)),
            invert: false,
            action: Action::Table(table),
        }
    }

    #[test]
    fn a_rule_is_framed_with_its_selectors() {
        let rule = port_rule(60, 7001, 107_001);
        let framed = encode(RTM_NEWRULE, NLM_F_REQUEST, &[rule, rule]);
        assert_eq!(super::super::message_kinds(&framed), [32, 32]);
        let find = |needle: &[u8]| framed.windows(needle.len()).any(|w| w == needle);
        // The header: IPv4, /32 to, no from, no tos, table in FRA_TABLE, to a table.
        assert!(find(&[AF_INET, 32, 0, 0, 0, 0, 0, FR_ACT_TO_TBL]));
        assert!(find(&[8, 0, 1, 0, 127, 0, 0, 1]));
        let mut range = vec![8, 0, 24, 0];
        range.extend_from_slice(&7001u16.to_ne_bytes());
        range.extend_from_slice(&7001u16.to_ne_bytes());
        assert!(find(&range));
        let mut table = vec![8, 0, 15, 0];
        table.extend_from_slice(&107_001u32.to_ne_bytes());
        assert!(find(&table));
    }

    /// Against the kernel (root): on a thread in a network namespace of its own, so that the
    /// host's rules are not touched (`ip`, run from that thread, lists that namespace's).
    #[test]
    fn the_kernel_adds_and_deletes_rules_once_each() {
        let rule = port_rule(61, 7003, 107_003);
        let gate = Rule {
            pref: 41,
            from: None,
            to: Some((Ipv4Addr::new(127, 0, 0, 0), 8)),
            tcp: Some(None),
            invert: true,
            action: Action::Goto(32766),
        };
        let returning = Rule {
            pref: 51,
            from: Some((Ipv4Addr::new(10, 200, 109, 101), 32)),
            to: Some((Ipv4Addr::LOCALHOST, 32)),
            tcp: None,
            invert: false,
            action: Action::Table(107_003),
        };
        let listed = || {
            let out = std::process::Command::new("ip")
                .args(["rule", "show"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let (with, without, after) = std::thread::spawn(move || {
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            add(&[gate, returning, rule])?;
            add(&[rule])?;
            let with = listed();
            delete(&[rule])?;
            delete(&[rule])?;
            let without = listed();
            delete(&[gate, returning])?;
            Ok::<_, io::Error>((with, without, listed()))
        })
        .join()
        .unwrap()
        .unwrap();
        assert!(
            with.contains("61:\tfrom all to 127.0.0.1 ipproto tcp dport 7003 lookup 107003"),
            "{with}"
        );
        assert!(
            with.contains("41:\tnot from all to 127.0.0.0/8 ipproto tcp goto 32766"),
            "{with}"
        );
        assert!(
            with.contains("51:\tfrom 10.200.109.101 to 127.0.0.1 lookup 107003"),
            "{with}"
        );
        assert_eq!(with.matches("dport 7003").count(), 1, "{with}");
        assert!(!without.contains("dport 7003"), "{without}");
        assert!(
            !after.contains("107003") && !after.contains("goto"),
            "{after}"
        );
    }
}
