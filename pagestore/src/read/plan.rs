//! The cold-read planner: which ranged GETs fetch a set of wanted pages.
//!
//! A cold request costs ~20 ms on S3 whatever its size, so the pages one read wants from a pack
//! are grouped and neighbours merged into one ranged GET; a cap on the range keeps one slow
//! request from holding up a whole restore. Pure: no I/O, tested below.

use std::collections::BTreeMap;

use crate::catalog::Location;
use crate::pack::PackId;
use crate::page::PageId;

/// Two wanted pages of one pack at most this far apart are fetched by one request: reading a few
/// unneeded KiB is cheaper than a second round trip.
pub const MAX_GAP: u64 = 64 << 10;
/// No merged request is larger than this, so one slow request does not hold up a whole restore.
pub const MAX_RANGE: u64 = 4 << 20;

/// One ranged GET of a pack and the wanted pages it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangePlan {
    pub pack: PackId,
    pub start: u64,
    pub end: u64,
    /// (position in the caller's list, page, where it is)
    pub pages: Vec<(usize, PageId, Location)>,
}

/// Groups wanted pages by pack and merges neighbours into ranges of at most [`MAX_RANGE`].
pub fn plan_ranges(wanted: Vec<(usize, PageId, Location)>) -> Vec<RangePlan> {
    plan_ranges_within(wanted, MAX_RANGE)
}

/// [`plan_ranges`] with ranges of at most `max_range` bytes (a page larger than that alone is
/// a range of its own).
pub fn plan_ranges_within(
    wanted: Vec<(usize, PageId, Location)>,
    max_range: u64,
) -> Vec<RangePlan> {
    let mut by_pack: BTreeMap<PackId, Vec<(usize, PageId, Location)>> = BTreeMap::new();
    for w in wanted {
        by_pack.entry(w.2.pack).or_default().push(w);
    }
    let mut out = Vec::new();
    for (pack, mut pages) in by_pack {
        pages.sort_by_key(|p| p.2.offset);
        let mut current: Option<RangePlan> = None;
        for p in pages {
            let (start, end) = (p.2.offset, p.2.offset + u64::from(p.2.len));
            match current.as_mut() {
                Some(r) if start <= r.end + MAX_GAP && end.max(r.end) - r.start <= max_range => {
                    r.end = r.end.max(end);
                    r.pages.push(p);
                }
                _ => {
                    out.extend(current.take());
                    current = Some(RangePlan {
                        pack,
                        start,
                        end,
                        pages: vec![p],
                    });
                }
            }
        }
        out.extend(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    fn loc(pack: u8, offset: u64, len: u32) -> Location {
        Location {
            pack: PackId([pack; 32]),
            offset,
            len,
            codec: Codec::Lz4,
            slot: crate::codec::Slot::ALONE,
        }
    }

    #[test]
    fn neighbours_merge_and_far_pages_do_not() {
        let p = |i: usize, l: Location| (i, PageId([i as u8 + 1; 32]), l);
        let plans = plan_ranges(vec![
            p(0, loc(1, 16, 1000)),
            p(1, loc(2, 16, 1000)),
            p(2, loc(1, 1016, 500)),
            p(3, loc(1, 3100 + MAX_GAP + 1, 100)),
            p(4, loc(1, 3000, 100)),
        ]);
        assert_eq!(plans.len(), 3);
        assert_eq!((plans[0].start, plans[0].end), (16, 3100));
        assert_eq!(
            plans[0].pages.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![0, 2, 4]
        );
        assert_eq!(plans[1].pages.len(), 1);
        assert_eq!(plans[1].start, 3100 + MAX_GAP + 1);
        assert_eq!(plans[2].pack, PackId([2; 32]));
    }

    #[test]
    fn ranges_are_capped() {
        let wanted = (0..2000u64)
            .map(|i| (i as usize, PageId([7; 32]), loc(1, 16 + i * 4096, 4096)))
            .collect();
        let plans = plan_ranges(wanted);
        assert!(plans.iter().all(|r| r.end - r.start <= MAX_RANGE));
        assert_eq!(plans.iter().map(|r| r.pages.len()).sum::<usize>(), 2000);
        assert_eq!(plans.len(), (2000 * 4096u64).div_ceil(MAX_RANGE) as usize);
        let wanted = (0..2000u64)
            .map(|i| (i as usize, PageId([7; 32]), loc(1, 16 + i * 4096, 4096)))
            .collect();
        let plans = plan_ranges_within(wanted, 1 << 20);
        assert!(plans.iter().all(|r| r.end - r.start <= 1 << 20));
        assert_eq!(plans.len(), (2000 * 4096u64).div_ceil(1 << 20) as usize);
    }
}
