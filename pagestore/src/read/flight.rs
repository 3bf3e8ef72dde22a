//! Single flight for cold ranged GETs: a reader whose bytes a GET in flight already covers waits
//! for that GET instead of sending its own.
//!
//! The table is keyed by pack; each entry is a byte range being fetched and a channel its result
//! is published on. A reader whose range only overlaps flights waits for them to end and then
//! fetches what they did not bring, so readers of overlapping ranges fetch shared bytes once. The leader of a flight removes it only once the pages it fetched are in the
//! memory tier (a dropped [`FlightGuard`]), so a reader that finds no flight finds the pages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::plan::RangePlan;
use crate::catalog::Location;
use crate::error::Error;
use crate::pack::PackId;
use crate::page::PageId;

/// A page a reader wants: its position in the reader's list, its id and where it is.
pub(crate) type Wanted = (usize, PageId, Location);

/// What a flight publishes: the range's bytes, or the error every reader of it gets.
pub(crate) type Fetched = std::result::Result<Arc<Vec<u8>>, Arc<Error>>;

struct Flight {
    id: u64,
    start: u64,
    end: u64,
    done: watch::Receiver<Option<Fetched>>,
    /// Closed when the flight is unlisted (its pages are in memory by then).
    ended: watch::Receiver<()>,
}

/// Cold reads in flight, by pack.
#[derive(Default)]
pub(crate) struct RangeFlights {
    map: Mutex<HashMap<PackId, Vec<Flight>>>,
    next: AtomicU64,
}

/// Removes a flight when its leader is done (or dropped: its followers then try again).
pub(crate) struct FlightGuard<'a> {
    flights: &'a RangeFlights,
    pack: PackId,
    id: u64,
    /// Dropped after the flight is unlisted: wakes the readers of overlapping ranges.
    _ended: watch::Sender<()>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.flights.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = map.get_mut(&self.pack) {
            v.retain(|f| f.id != self.id);
            if v.is_empty() {
                map.remove(&self.pack);
            }
        }
    }
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
    /// A flight that ended just before we looked left every page in the memory tier.
    Cached,
}

impl RangeFlights {
    /// Splits wanted pages into those a GET in flight already brings, grouped into one plan per
    /// such flight (its exact range, so that [`Self::join_or_lead`] joins it), and the rest.
    /// Readers of overlapping but different ranges (tenants of one program waking together)
    /// then share the bytes they have in common instead of each fetching them.
    pub(crate) fn split_in_flight(&self, wanted: Vec<Wanted>) -> (Vec<RangePlan>, Vec<Wanted>) {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.is_empty() {
            return (Vec::new(), wanted);
        }
        let mut joined: Vec<(u64, RangePlan)> = Vec::new();
        let mut rest = Vec::new();
        for w in wanted {
            let (offset, end) = (w.2.offset, w.2.offset + u64::from(w.2.len));
            let flight = map
                .get(&w.2.pack)
                .and_then(|flights| flights.iter().find(|f| f.start <= offset && end <= f.end));
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

    /// Joins a flight that covers bytes `start..end` of `pack`, or starts one, unless `cached`
    /// (asked under the table's lock, which a leader ends its flight under) says every wanted
    /// page is in memory by now.
    pub(crate) fn join_or_lead(
        &self,
        pack: PackId,
        start: u64,
        end: u64,
        cached: impl FnOnce() -> bool,
    ) -> Role<'_> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let flights = map.get(&pack).map(Vec::as_slice).unwrap_or(&[]);
        let covering = flights.iter().find(|f| f.start <= start && end <= f.end);
        let overlapping: Vec<watch::Receiver<()>> = flights
            .iter()
            .filter(|f| f.start < end && start < f.end)
            .map(|f| f.ended.clone())
            .collect();
        match covering {
            Some(f) => Role::Follower(Follower {
                done: f.done.clone(),
                base: f.start,
            }),
            None if cached() => Role::Cached,
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
                });
                Role::Leader(Leader {
                    guard: FlightGuard {
                        flights: self,
                        pack,
                        id,
                        _ended: ended_tx,
                    },
                    done: tx,
                })
            }
        }
    }
}
