//! Where lost queries went: a UDP datagram on loopback is only lost when a socket's receive
//! buffer is full, and the kernel counts those drops per socket (`/proc/net/udp`, its `drops`
//! column) and for the whole machine (`/proc/net/snmp`, `Udp: RcvbufErrors`). Read before and
//! after each load run, they tell a hub that fell behind (drops at its socket) from a load
//! generator that did (drops elsewhere).

/// The machine's UDP receive-buffer drops so far (`None`: not readable).
pub fn receive_buffer_errors() -> Option<u64> {
    snmp_field(
        &std::fs::read_to_string("/proc/net/snmp").ok()?,
        "RcvbufErrors",
    )
}

/// Drops at the IPv4 UDP socket bound to local `port` (`None`: no such socket, or not
/// readable).
pub fn socket_drops(port: u16) -> Option<u64> {
    socket_drops_in(&std::fs::read_to_string("/proc/net/udp").ok()?, port)
}

fn snmp_field(snmp: &str, name: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let at = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

fn socket_drops_in(table: &str, port: u16) -> Option<u64> {
    let suffix = format!(":{port:04X}");
    table.lines().skip(1).find_map(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        if fields.get(1)?.ends_with(&suffix) {
            fields.last()?.parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counters_are_read_from_the_kernels_tables() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 329152 2 168 329329 168 0\n";
        assert_eq!(snmp_field(snmp, "RcvbufErrors"), Some(168));
        assert_eq!(snmp_field(snmp, "Nope"), None);
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
          1: 0100007F:9991 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 12\n\
          2: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0000000000000000 0\n";
        assert_eq!(socket_drops_in(table, 0x9991), Some(12));
        assert_eq!(socket_drops_in(table, 8080), Some(0));
        assert_eq!(socket_drops_in(table, 53), None);
    }

    #[test]
    fn this_machine_has_the_tables() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        assert_eq!(socket_drops(port), Some(0));
        assert!(receive_buffer_errors().is_some());
    }
}
