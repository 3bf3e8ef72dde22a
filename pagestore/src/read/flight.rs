//! Single flight for cold ranged GETs: a reader whose bytes a GET in flight already covers waits
//! for that GET instead of sending its own.
//!
//! The table is keyed by pack; each entry is a byte range being fetched and a channel its result
//! is published on. A reader whose range only overlaps flights waits for them to end and then
//! fetches what they did not bring, so readers of overlapping ranges fetch shared bytes once.
//! The leader of a flight ends it only once the pages it fetched are in the memory tier (a
//! dropped [`FlightGuard`]), so a reader that finds no flight finds the pages.
//!
//! A flight that ended lingers for [`LINGER`] (its bytes held, [`LINGER_BYTES`] at most of all
//! of them): a reader whose range it covers decodes its own pages from those bytes instead of
//! fetching them again. The leader decodes only the pages it wanted, and readers of one pack
//! want different pages of the same bytes (tenants of one program woken together, each with its
//! own pages between the shared ones): one that planned its range just after another's flight
//! ended fetched the same bytes a second time (a 10-tenant wake-up read 6.1-6.4 MB where 4.4
//! sufficed, in some runs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::plan::RangePlan;
use crate::catalog::Location;
use crate::error::Error;
use crate::pack::PackId;
use crate::page::PageId;

/// How long an ended flight's bytes are still served: tenants woken together plan their reads
/// within a few hundred ms of each other.
const LINGER: Duration = Duration::from_secs(2);
/// The most bytes ended flights hold (the oldest go first): 16 of the largest ranges.
const LINGER_BYTES: usize = 64 << 20;

/// A page a reader wants: its position in the reader's list, its id and where it is.
pub(crate) type Wanted = (usize, PageId, Location);

/// What a flight publishes: the range's bytes, or the error every reader of it gets.
pub(crate) type Fetched = std::result::Result<Arc<Vec<u8>>, Arc<Error>>;

struct Flight {
    id: u64,
    start: u64,
    end: u64,
    done: watch::Receiver<Option<Fetched>>,
    /// Closed when the flight ends (its pages are in memory by then).
    ended: watch::Receiver<()>,
    /// When it ended, if it did: it lingers, its bytes still served.
    ended_at: Option<Instant>,
}

impl Flight {
    fn covers(&self, start: u64, end: u64) -> bool {
        self.start <= start && end <= self.end
    }

    /// The bytes it fetched, if it published them.
    fn bytes(&self) -> usize {
        match &*self.done.borrow() {
            Some(Ok(bytes)) => bytes.len(),
            _ => 0,
        }
    }
}

/// What a reader whose range flights in progress overlap (but none covers) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Overlapping {
    /// Waits for them to end, then fetches what they did not bring: shared bytes fetched once.
    Wait,
    /// Fetches its whole range at once, shared bytes again: a read ahead of need. A fill's GET
    /// waited for its turn while faults sent GETs of their own for some of its pages, then
    /// waited for each of those and fetched the rest after them (a chain of round trips behind
    /// a dense tenant's first answer) for a few KiB not fetched twice; a fault's read-ahead,
    /// whose range holds the fault's own page, came a round trip after it.
    Fetch,
}

/// Cold reads in flight (and those that just ended), by pack.
#[derive(Default)]
pub(crate) struct RangeFlights {
    map: Mutex<HashMap<PackId, Vec<Flight>>>,
    next: AtomicU64,
}

/// Ends a flight when its leader is done: it lingers when the leader said its bytes were good
/// ([`FlightGuard::end_keeping_bytes`]), else it is unlisted (a leader dropped before it
/// published, or whose pages failed their checks: its followers and later readers fetch
/// again, never from bytes known bad).
pub(crate) struct FlightGuard<'a> {
    flights: &'a RangeFlights,
    pack: PackId,
    id: u64,
    keep_bytes: bool,
    /// Dropped after the flight ended: wakes the readers of overlapping ranges.
    _ended: watch::Sender<()>,
}

impl FlightGuard<'_> {
    /// Ends the flight, its bytes served for [`LINGER`] more: the leader's pages passed their
    /// checks and are in memory.
    pub(crate) fn end_keeping_bytes(mut self) {
        self.keep_bytes = true;
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut map = self.flights.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = map.get_mut(&self.pack) {
            if let Some(at) = v.iter().position(|f| f.id == self.id) {
                if self.keep_bytes && v[at].bytes() > 0 {
                    v[at].ended_at = Some(now);
                } else {
                    v.swap_remove(at);
                }
            }
        }
        forget_ended(&mut map, now, LINGER);
    }
}

/// Unlists ended flights that ended `kept_for` or longer before `now`, then the oldest while
/// they hold more than [`LINGER_BYTES`].
fn forget_ended(map: &mut HashMap<PackId, Vec<Flight>>, now: Instant, kept_for: Duration) {
    let mut held = 0;
    for flights in map.values_mut() {
        flights.retain(|f| {
            f.ended_at
                .is_none_or(|at| now.duration_since(at) < kept_for)
        });
        held += flights
            .iter()
            .filter(|f| f.ended_at.is_some())
            .map(Flight::bytes)
            .sum::<usize>();
    }
    if held > LINGER_BYTES {
        let mut ended: Vec<(Instant, PackId, u64, usize)> = map
            .iter()
            .flat_map(|(pack, flights)| {
                flights
                    .iter()
                    .filter_map(|f| Some((f.ended_at?, *pack, f.id, f.bytes())))
            })
            .collect();
        ended.sort_unstable_by_key(|e| e.0);
        for (_, pack, id, bytes) in ended {
            if held <= LINGER_BYTES {
                break;
            }
            if let Some(flights) = map.get_mut(&pack) {
                flights.retain(|f| f.id != id);
            }
            held -= bytes;
        }
    }
    map.retain(|_, flights| !flights.is_empty());
}

/// The reader that sends a flight's GET.
pub(crate) struct Leader<'a> {
    // Dropped (cancelled) before it publishes: the flight is unlisted first, then its followers
    // wake (fields drop in order) and try again without finding it.
    guard: FlightGuard<'a>,
    done: watch::Sender<Option<Fetched>>,
}

impl<'a> Leader<'a> {
    /// Publishes the GET's result to the followers; the flight stays listed until the returned
    /// guard is dropped (once the pages are cached).
    pub(crate) fn publish(self, result: Fetched) -> FlightGuard<'a> {
        self.done.send_replace(Some(result));
        self.guard
    }
}

/// A reader that waits for another's GET.
pub(crate) struct Follower {
    done: watch::Receiver<Option<Fetched>>,
    /// The pack offset the flight's bytes start at.
    pub(crate) base: u64,
}

impl Follower {
    /// The flight's result; `None` if its leader was dropped before it finished (try again).
    pub(crate) async fn result(mut self) -> Option<Fetched> {
        match self.done.wait_for(|v| v.is_some()).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        }
    }
}

pub(crate) enum Role<'a> {
    Follower(Follower),
    Leader(Leader<'a>),
    /// GETs in flight overlap the range without covering it: wait for them to end (their
    /// pages are then in memory), and fetch only what they did not bring.
    Overlapping(Vec<watch::Receiver<()>>),
    /// A flight that ended since the reader looked in memory brought some of its pages (or
    /// all): take those from memory and ask again for the rest, by a narrower range. Leading a
    /// GET of the whole range instead fetched those pages a second time (tenants of one program
    /// woken together: one's range of pages all share ended just as another's, the same pages
    /// with its own few between them, was planned).
    InMemory,
}

impl RangeFlights {
    /// Unlists the ended flights kept past [`LINGER`] (pruned otherwise only when the table is
    /// next used).
    pub(crate) fn forget_expired(&self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        forget_ended(&mut map, Instant::now(), LINGER);
    }

    /// Unlists every ended flight (its bytes no longer served).
    pub(crate) fn forget_all_ended(&self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        forget_ended(&mut map, Instant::now(), Duration::ZERO);
    }

    /// Whether a GET in progress brings the page stored `at` (one that ended put its pages in
    /// memory already).
    pub(crate) fn brings(&self, at: &Location) -> bool {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let end = at.offset + u64::from(at.len);
        map.get(&at.pack).is_some_and(|flights| {
            flights
                .iter()
                .any(|f| f.ended_at.is_none() && f.covers(at.offset, end))
        })
    }

    /// Splits wanted pages into those a GET in flight already brings, grouped into one plan per
    /// such flight (its exact range, so that [`Self::join_or_lead`] joins it), and the rest.
    /// Readers of overlapping but different ranges (tenants of one program waking together)
    /// then share the bytes they have in common instead of each fetching them.
    pub(crate) fn split_in_flight(&self, wanted: Vec<Wanted>) -> (Vec<RangePlan>, Vec<Wanted>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        forget_ended(&mut map, Instant::now(), LINGER);
        if map.is_empty() {
            return (Vec::new(), wanted);
        }
        let mut joined: Vec<(u64, RangePlan)> = Vec::new();
        let mut rest = Vec::new();
        for w in wanted {
            let (offset, end) = (w.2.offset, w.2.offset + u64::from(w.2.len));
            let flight = map
                .get(&w.2.pack)
                .and_then(|flights| flights.iter().find(|f| f.covers(offset, end)));
            match flight {
                Some(f) => match joined.iter_mut().find(|(id, _)| *id == f.id) {
                    Some((_, plan)) => plan.pages.push(w),
                    None => joined.push((
                        f.id,
                        RangePlan {
                            pack: w.2.pack,
                            start: f.start,
                            end: f.end,
                            pages: vec![w],
                        },
                    )),
                },
                None => rest.push(w),
            }
        }
        (joined.into_iter().map(|(_, plan)| plan).collect(), rest)
    }

    /// Joins a flight that covers bytes `start..end` of `pack`, or starts one, unless
    /// `some_in_memory` (asked under the table's lock, which a leader ends its flight under)
    /// says any wanted page is in memory by now, or (with `overlapping` [`Overlapping::Wait`])
    /// flights in progress overlap the range.
    pub(crate) fn join_or_lead(
        &self,
        pack: PackId,
        start: u64,
        end: u64,
        overlapping: Overlapping,
        some_in_memory: impl FnOnce() -> bool,
    ) -> Role<'_> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        forget_ended(&mut map, Instant::now(), LINGER);
        let flights = map.get(&pack).map(Vec::as_slice).unwrap_or(&[]);
        let covering = flights.iter().find(|f| f.covers(start, end));
        // Ended ones are not waited for: their pages are in memory already.
        let overlapping: Vec<watch::Receiver<()>> = match overlapping {
            Overlapping::Wait => flights
                .iter()
                .filter(|f| f.ended_at.is_none() && f.start < end && start < f.end)
                .map(|f| f.ended.clone())
                .collect(),
            Overlapping::Fetch => Vec::new(),
        };
        match covering {
            Some(f) => Role::Follower(Follower {
                done: f.done.clone(),
                base: f.start,
            }),
            None if some_in_memory() => Role::InMemory,
            None if !overlapping.is_empty() => Role::Overlapping(overlapping),
            None => {
                let (tx, rx) = watch::channel(None);
                let (ended_tx, ended_rx) = watch::channel(());
                let id = self.next.fetch_add(1, Ordering::Relaxed);
                map.entry(pack).or_default().push(Flight {
                    id,
                    start,
                    end,
                    done: rx,
                    ended: ended_rx,
                    ended_at: None,
                });
                Role::Leader(Leader {
                    guard: FlightGuard {
                        flights: self,
                        pack,
                        id,
                        keep_bytes: false,
                        _ended: ended_tx,
                    },
                    done: tx,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACK: PackId = PackId([7; 32]);

    fn is_leader(role: &Role<'_>) -> bool {
        matches!(role, Role::Leader(_))
    }

    /// A reader whose range no flight covers leads a GET only when none of its pages is in
    /// memory: with some there (brought by a flight that just ended), it narrows first. One
    /// that a flight covers joins it whatever is in memory.
    #[test]
    fn a_reader_leads_a_get_only_for_a_range_none_of_whose_pages_are_in_memory() {
        let flights = RangeFlights::default();
        assert!(matches!(
            flights.join_or_lead(PACK, 0, 100, Overlapping::Wait, || true),
            Role::InMemory
        ));
        assert!(flights.map.lock().unwrap().is_empty(), "nothing listed");

        let leader = flights.join_or_lead(PACK, 0, 100, Overlapping::Wait, || false);
        assert!(is_leader(&leader));
        assert!(matches!(
            flights.join_or_lead(PACK, 10, 90, Overlapping::Wait, || true),
            Role::Follower(_)
        ));
        assert!(matches!(
            flights.join_or_lead(PACK, 50, 150, Overlapping::Wait, || false),
            Role::Overlapping(_)
        ));
        // A fill's GET fetches its range at once, overlaps and all.
        let fill = flights.join_or_lead(PACK, 50, 150, Overlapping::Fetch, || false);
        assert!(is_leader(&fill));
        drop(fill);
        // Beside it, not overlapping.
        let other = flights.join_or_lead(PACK, 100, 200, Overlapping::Wait, || false);
        assert!(is_leader(&other));
        drop((leader, other));
        assert!(
            flights.map.lock().unwrap().is_empty(),
            "both ended, neither published: nothing lingers"
        );
    }

    /// A GET in progress brings the pages it covers; once it ended (its pages in memory) it
    /// brings none, though its bytes linger.
    #[test]
    fn a_get_in_progress_brings_the_pages_it_covers() {
        let flights = RangeFlights::default();
        let at = |offset, len| Location {
            pack: PACK,
            offset,
            len,
            codec: crate::codec::Codec::Lz4,
            slot: crate::codec::Slot::ALONE,
        };
        let leader = lead(&flights, 100, 200);
        assert!(flights.brings(&at(100, 50)));
        assert!(flights.brings(&at(150, 50)));
        assert!(!flights.brings(&at(150, 100)), "only partly covered");
        assert!(!flights.brings(&at(300, 10)));
        let guard = leader.publish(Ok(Arc::new(vec![0; 100])));
        guard.end_keeping_bytes();
        assert!(
            !flights.brings(&at(100, 50)),
            "ended: its pages are in memory"
        );
    }

    fn lead(flights: &RangeFlights, start: u64, end: u64) -> Leader<'_> {
        match flights.join_or_lead(PACK, start, end, Overlapping::Wait, || false) {
            Role::Leader(leader) => leader,
            _ => panic!("not the leader of {start}..{end}"),
        }
    }

    /// An ended flight's bytes serve readers of ranges it covers for a while (no second GET of
    /// the same bytes), and are not waited for by readers of ranges it only overlaps; one whose
    /// pages failed their checks, or whose GET failed, is not kept, and the kept ones go after [`LINGER`] or beyond [`LINGER_BYTES`].
    #[tokio::test]
    async fn an_ended_flight_still_serves_the_bytes_it_fetched_for_a_while() {
        let flights = RangeFlights::default();
        // Its pages failed their checks: its bytes are not served again.
        drop(lead(&flights, 0, 100).publish(Ok(Arc::new(vec![7; 100]))));
        assert!(flights.map.lock().unwrap().is_empty());
        lead(&flights, 0, 100)
            .publish(Ok(Arc::new(vec![7; 100])))
            .end_keeping_bytes();
        let Role::Follower(late) = flights.join_or_lead(PACK, 10, 90, Overlapping::Wait, || false)
        else {
            panic!("a reader of bytes just fetched fetches them again");
        };
        assert_eq!(late.base, 0);
        flights.forget_expired();
        assert_eq!(
            flights.map.lock().unwrap()[&PACK].len(),
            1,
            "kept within LINGER"
        );
        assert_eq!(late.result().await.unwrap().unwrap().len(), 100);
        assert!(is_leader(&flights.join_or_lead(
            PACK,
            50,
            150,
            Overlapping::Wait,
            || false
        )));

        let failed =
            lead(&flights, 200, 300).publish(Err(Arc::new(Error::PageMissing(PageId([1; 32])))));
        failed.end_keeping_bytes();
        assert!(
            is_leader(&flights.join_or_lead(PACK, 210, 290, Overlapping::Wait, || false)),
            "a failure is tried again"
        );

        let mut map = flights.map.lock().unwrap();
        let now = Instant::now();
        forget_ended(&mut map, now, LINGER);
        assert_eq!(
            map[&PACK].iter().filter(|f| f.ended_at.is_some()).count(),
            1
        );
        forget_ended(&mut map, now + LINGER, LINGER);
        assert!(map.is_empty(), "nothing is kept past LINGER");
        drop(map);
        lead(&flights, 0, 100)
            .publish(Ok(Arc::new(vec![7; 100])))
            .end_keeping_bytes();
        flights.forget_all_ended();
        assert!(flights.map.lock().unwrap().is_empty(), "forgotten at once");

        let big = LINGER_BYTES / 4 + 1;
        for i in 0..4u64 {
            let at = i * 1000;
            lead(&flights, at, at + 10)
                .publish(Ok(Arc::new(vec![0; big])))
                .end_keeping_bytes();
        }
        let map = flights.map.lock().unwrap();
        let kept: Vec<u64> = map[&PACK].iter().map(|f| f.start).collect();
        assert_eq!(kept.len(), 3, "the oldest went: {kept:?}");
        assert!(!kept.contains(&0));
    }
}
