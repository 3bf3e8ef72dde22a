//! The few DNS bytes our load generator needs, by hand: a query for `NAME A` and the check of
//! its answer. A generator that builds and parses whole messages through a library would spend
//! its share of the two cores on that; this one patches two id bytes per query and reads a
//! handful of fields of the answer.

/// A query's header: id (patched per query), flags (a plain query, recursion not desired: the
/// hub is authoritative), one question, no other records.
const HEADER: [u8; 12] = [0, 0, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;

/// The query for `name`'s `A` record (`name` in dotted form, a trailing dot or not), id 0; set
/// the id with [`set_id`].
pub fn query(name: &str) -> Result<Vec<u8>, String> {
    let mut q = HEADER.to_vec();
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a DNS name (label {label:?})"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&TYPE_A.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

/// Sets a message's id.
pub fn set_id(message: &mut [u8], id: u16) {
    message[..2].copy_from_slice(&id.to_be_bytes());
}

/// A message's id (`None`: shorter than a header).
pub fn id_of(message: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(message.get(..2)?.try_into().ok()?))
}

/// What an answer to one of our queries said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A response, NOERROR, exactly one answer record, an `A` record.
    Address([u8; 4]),
    /// Anything else; the reason.
    Wrong(&'static str),
}

fn u16_at(m: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(m.get(at..at + 2)?.try_into().ok()?))
}

/// Past the (possibly compressed) name starting at `at`.
fn skip_name(m: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *m.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + l as usize,
        }
    }
}

/// Checks `answer` as the answer to a query for an `A` record of a known name.
pub fn verdict(answer: &[u8]) -> Verdict {
    let Some((flags, questions, answers)) =
        (|| Some((u16_at(answer, 2)?, u16_at(answer, 4)?, u16_at(answer, 6)?)))()
    else {
        return Verdict::Wrong("shorter than a DNS header");
    };
    if flags & 0x8000 == 0 {
        return Verdict::Wrong("not a response");
    }
    if flags & 0x000f != 0 {
        return Verdict::Wrong("response code is not NOERROR");
    }
    if answers != 1 {
        return Verdict::Wrong("not exactly one answer record");
    }
    let mut at = 12;
    for _ in 0..questions {
        match skip_name(answer, at) {
            Some(next) => at = next + 4,
            None => return Verdict::Wrong("truncated question"),
        }
    }
    let record = || -> Option<Verdict> {
        let at = skip_name(answer, at)?;
        let (rtype, class, len) = (
            u16_at(answer, at)?,
            u16_at(answer, at + 2)?,
            u16_at(answer, at + 8)?,
        );
        if rtype != TYPE_A || class != CLASS_IN || len != 4 {
            return Some(Verdict::Wrong("the answer is not an A record"));
        }
        let addr: [u8; 4] = answer.get(at + 10..at + 14)?.try_into().ok()?;
        Some(Verdict::Address(addr))
    };
    record().unwrap_or(Verdict::Wrong("truncated answer record"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer a server would give to `q`: the question echoed, one `A` record pointing back
    /// at it (compressed name), the response code `rcode`.
    fn answer_to(q: &[u8], rcode: u8, addr: [u8; 4]) -> Vec<u8> {
        let mut a = q.to_vec();
        a[2] = 0x84; // QR, AA
        a[3] = rcode;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]);
        a.extend_from_slice(&addr);
        a
    }

    #[test]
    fn a_query_is_the_header_the_labels_and_a_in() {
        let mut q = query("t7.bench.test.").unwrap();
        assert_eq!(q, query("t7.bench.test").unwrap());
        set_id(&mut q, 0xbeef);
        assert_eq!(id_of(&q), Some(0xbeef));
        assert_eq!(
            &q[12..],
            b"\x02t7\x05bench\x04test\x00\x00\x01\x00\x01".as_slice()
        );
        assert_eq!(&q[2..12], &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert!(query("a..b").is_err());
        assert!(query(&"x".repeat(64)).is_err());
    }

    #[test]
    fn only_a_noerror_response_with_one_a_record_is_an_address() {
        let q = query("t1.bench.test").unwrap();
        let good = answer_to(&q, 0, [127, 0, 0, 1]);
        assert_eq!(verdict(&good), Verdict::Address([127, 0, 0, 1]));
        assert!(matches!(
            verdict(&answer_to(&q, 3, [0; 4])),
            Verdict::Wrong(_)
        ));
        assert!(matches!(verdict(&q), Verdict::Wrong("not a response")));
        assert!(matches!(
            verdict(&good[..good.len() - 2]),
            Verdict::Wrong(_)
        ));
        assert!(matches!(verdict(&good[..5]), Verdict::Wrong(_)));
        let mut no_answer = good.clone();
        no_answer[7] = 0;
        assert!(matches!(verdict(&no_answer), Verdict::Wrong(_)));
        let mut aaaa = good;
        let type_at = q.len() + 3;
        aaaa[type_at] = 28;
        assert!(matches!(verdict(&aaaa), Verdict::Wrong(_)));
    }
}
