//! Our own DNS load generator (tokio, UDP), in two shapes:
//! - [`closed_loop`]: K clients, each on its own socket, one query at a time, the next as soon as
//!   the last is answered: the most the hub answers with K queries in flight;
//! - [`paced`]: an open loop at a fixed rate over K sockets, each sending its share on schedule
//!   whatever the answers do: the latency at that rate.
//!
//! Each query asks for a random known name; an answer counts when its id matches and it is a
//! NOERROR with one `A` record. Other answers are errors, and queries unanswered after
//! [`TIMEOUT`] timeouts, both counted apart from the latencies.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::UdpSocket;

use super::wire::{self, Verdict};
use crate::error::{Error, Result};
use crate::restore::percentile;
use crate::synth::Rng;

/// A query unanswered this long is a timeout.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// What one run of the generator measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadFigures {
    /// Sockets (closed loop: clients with one query in flight each).
    pub sockets: usize,
    /// The paced run's rate, queries/s (none for the closed loop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_qps: Option<f64>,
    pub seconds: f64,
    pub sent: u64,
    /// Correct answers (the latencies are theirs).
    pub answered: u64,
    /// Answers that were not a NOERROR with one `A` record.
    pub errors: u64,
    /// Queries unanswered after [`TIMEOUT`].
    pub timeouts: u64,
    /// Correct answers per second of the run.
    pub qps: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// The first wrong answer's reason, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// What one socket's task counted.
#[derive(Default)]
struct Tally {
    sent: u64,
    errors: u64,
    timeouts: u64,
    latencies_us: Vec<f64>,
    first_error: Option<&'static str>,
}

impl Tally {
    fn judge(&mut self, answer: &[u8], sent: Instant) {
        match wire::verdict(answer) {
            Verdict::Address(_) => self.latencies_us.push(sent.elapsed().as_secs_f64() * 1e6),
            Verdict::Wrong(why) => {
                self.errors += 1;
                self.first_error.get_or_insert(why);
            }
        }
    }
}

/// The queries for every known name, id 0.
pub struct Queries(Vec<Vec<u8>>);

impl Queries {
    pub fn new(names: &[String]) -> Result<Queries> {
        names
            .iter()
            .map(|n| wire::query(n).map_err(Error::BadOptions))
            .collect::<Result<Vec<_>>>()
            .map(Queries)
    }

    /// A random one of them, with id `id`, into `buf`.
    fn pick(&self, rng: &mut Rng, id: u16, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(&self.0[rng.below(self.0.len() as u64) as usize]);
        wire::set_id(buf, id);
    }
}

async fn socket(port: u16) -> Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::io("127.0.0.1:0", e))?;
    s.connect(("127.0.0.1", port))
        .await
        .map_err(|e| Error::io(format!("127.0.0.1:{port}"), e))?;
    Ok(s)
}

fn send_failed(port: u16) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::Client(format!("sending a DNS query to 127.0.0.1:{port}: {e}"))
}

/// Adds up the sockets' tallies over a run of `seconds`.
fn figures(tallies: Vec<Tally>, sockets: usize, target: Option<f64>, seconds: f64) -> LoadFigures {
    let mut f = LoadFigures {
        sockets,
        target_qps: target,
        seconds,
        ..LoadFigures::default()
    };
    let mut us = Vec::new();
    for t in tallies {
        f.sent += t.sent;
        f.errors += t.errors;
        f.timeouts += t.timeouts;
        us.extend(t.latencies_us);
        if f.first_error.is_none() {
            f.first_error = t.first_error.map(str::to_string);
        }
    }
    us.sort_by(f64::total_cmp);
    f.answered = us.len() as u64;
    f.qps = f.answered as f64 / seconds.max(1e-9);
    f.mean_us = us.iter().sum::<f64>() / (us.len().max(1) as f64);
    f.p50_us = percentile(&us, 50.0);
    f.p95_us = percentile(&us, 95.0);
    f.p99_us = percentile(&us, 99.0);
    f.max_us = us.last().copied().unwrap_or(0.0);
    f
}

async fn join(tasks: Vec<tokio::task::JoinHandle<Result<Tally>>>) -> Result<Vec<Tally>> {
    let mut tallies = Vec::with_capacity(tasks.len());
    for t in tasks {
        tallies.push(t.await.map_err(|e| Error::Client(e.to_string()))??);
    }
    Ok(tallies)
}

/// `clients` closed-loop clients against `port` for `run`.
pub async fn closed_loop(
    port: u16,
    queries: Arc<Queries>,
    clients: usize,
    run: Duration,
    seed: u64,
) -> Result<LoadFigures> {
    let mut sockets = Vec::with_capacity(clients);
    for _ in 0..clients {
        sockets.push(socket(port).await?);
    }
    let started = Instant::now();
    let end = started + run;
    let tasks = sockets
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let queries = queries.clone();
            tokio::spawn(async move {
                let mut rng = Rng::new(seed ^ ((i as u64) << 32));
                closed_client(&s, port, &queries, &mut rng, end).await
            })
        })
        .collect();
    let tallies = join(tasks).await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(figures(tallies, clients, None, seconds))
}

/// One closed-loop client until `end`.
async fn closed_client(
    s: &UdpSocket,
    port: u16,
    queries: &Queries,
    rng: &mut Rng,
    end: Instant,
) -> Result<Tally> {
    let mut t = Tally::default();
    let (mut query, mut buf) = (Vec::with_capacity(64), vec![0u8; 1500]);
    let mut id: u16 = rng.next_u64() as u16;
    while Instant::now() < end {
        id = id.wrapping_add(1);
        queries.pick(rng, id, &mut query);
        let sent = Instant::now();
        s.send(&query).await.map_err(send_failed(port))?;
        t.sent += 1;
        // Late answers to an earlier (timed-out) query are skipped.
        let answered = tokio::time::timeout(TIMEOUT, async {
            loop {
                let n = s.recv(&mut buf).await?;
                if wire::id_of(&buf[..n]) == Some(id) {
                    return Ok::<usize, std::io::Error>(n);
                }
            }
        })
        .await;
        match answered {
            Ok(Ok(n)) => t.judge(&buf[..n], sent),
            // A refused port (ICMP) is the server gone: an error, not a timeout.
            Ok(Err(_)) => {
                t.errors += 1;
                t.first_error
                    .get_or_insert("no answer: the port refused the query");
            }
            Err(_) => t.timeouts += 1,
        }
    }
    Ok(t)
}

/// An open loop at `rate` queries/s against `port` for `run`, over `sockets` sockets each
/// sending every `sockets`-th query of one schedule. Latency runs from each query's send.
pub async fn paced(
    port: u16,
    queries: Arc<Queries>,
    sockets: usize,
    rate: f64,
    run: Duration,
    seed: u64,
) -> Result<LoadFigures> {
    if rate.is_nan() || rate <= 0.0 {
        return Err(Error::BadOptions(format!(
            "a paced rate of {rate} queries/s"
        )));
    }
    let mut socks = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        socks.push(socket(port).await?);
    }
    let started = Instant::now();
    // Each socket's own schedule: every `sockets / rate` seconds, staggered by `i / rate`.
    let interval = Duration::from_secs_f64(sockets as f64 / rate);
    let tasks = socks
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let queries = queries.clone();
            let first = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::spawn(async move {
                let mut rng = Rng::new(seed ^ ((i as u64) << 32));
                let schedule = Schedule {
                    first,
                    interval,
                    end: started + run,
                };
                paced_socket(&s, port, &queries, &mut rng, schedule).await
            })
        })
        .collect();
    let tallies = join(tasks).await?;
    Ok(figures(tallies, sockets, Some(rate), run.as_secs_f64()))
}

/// When one socket of the paced run sends.
struct Schedule {
    first: Instant,
    interval: Duration,
    end: Instant,
}

/// One socket of the paced run: sends on schedule until `end` (every query that fell due, even
/// if the timer woke late), takes answers as they come, then waits out the last [`TIMEOUT`].
async fn paced_socket(
    s: &UdpSocket,
    port: u16,
    queries: &Queries,
    rng: &mut Rng,
    schedule: Schedule,
) -> Result<Tally> {
    let mut t = Tally::default();
    let (mut query, mut buf) = (Vec::with_capacity(64), vec![0u8; 1500]);
    // Send time of every id in flight; ids in send order, to find the timed-out ones.
    let mut in_flight: HashMap<u16, Instant> = HashMap::new();
    let mut order: VecDeque<u16> = VecDeque::new();
    let mut id: u16 = rng.next_u64() as u16;
    let mut next = schedule.first;
    let drained = schedule.end + TIMEOUT;
    loop {
        let now = Instant::now();
        while next <= now && next < schedule.end {
            id = id.wrapping_add(1);
            queries.pick(rng, id, &mut query);
            s.send(&query).await.map_err(send_failed(port))?;
            t.sent += 1;
            // An id still in flight after 65536 more queries at this socket's rate: a timeout.
            if in_flight.insert(id, Instant::now()).is_some() {
                t.timeouts += 1;
            }
            order.push_back(id);
            next += schedule.interval;
        }
        while let Some(&oldest) = order.front() {
            match in_flight.get(&oldest) {
                Some(sent) if sent.elapsed() < TIMEOUT => break,
                Some(_) => {
                    t.timeouts += 1;
                    in_flight.remove(&oldest);
                }
                None => {}
            }
            order.pop_front();
        }
        let sending = next < schedule.end;
        if (!sending && order.is_empty()) || Instant::now() >= drained {
            break;
        }
        let wake = if sending {
            next
        } else {
            order
                .front()
                .and_then(|i| in_flight.get(i))
                .map_or(drained, |&sent| sent + TIMEOUT)
        };
        tokio::select! {
            got = s.recv(&mut buf) => match got {
                Ok(n) => {
                    let sent = wire::id_of(&buf[..n]).and_then(|i| in_flight.remove(&i));
                    // Unknown ids (late answers of timed-out queries) are dropped.
                    if let Some(sent) = sent {
                        t.judge(&buf[..n], sent);
                    }
                }
                Err(_) => {
                    t.errors += 1;
                    t.first_error.get_or_insert("no answer: the port refused the query");
                }
            },
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    t.timeouts += in_flight.len() as u64;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP server answering every query with one `A` record (the query echoed, flags and
    /// counts set, a compressed answer), except that it ignores every `drop_every`-th one.
    async fn echo_server(drop_every: u64) -> u16 {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = s.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let mut seen = 0u64;
            loop {
                let (n, from) = s.recv_from(&mut buf).await.unwrap();
                seen += 1;
                if drop_every > 0 && seen.is_multiple_of(drop_every) {
                    continue;
                }
                let mut a = buf[..n].to_vec();
                a[2] = 0x84;
                a[7] = 1;
                a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 127, 0, 0, 1]);
                s.send_to(&a, from).await.unwrap();
            }
        });
        port
    }

    fn queries() -> Arc<Queries> {
        let names: Vec<String> = (0..10).map(|i| format!("t{i}.bench.test.")).collect();
        Arc::new(Queries::new(&names).unwrap())
    }

    #[tokio::test]
    async fn the_closed_loop_counts_answers_and_their_latencies() {
        let port = echo_server(0).await;
        let f = closed_loop(port, queries(), 4, Duration::from_millis(200), 1)
            .await
            .unwrap();
        assert!(f.answered > 10, "{f:?}");
        assert_eq!((f.errors, f.timeouts), (0, 0), "{f:?}");
        assert_eq!(f.sent, f.answered);
        assert!(f.p50_us > 0.0 && f.p50_us <= f.p99_us && f.p99_us <= f.max_us);
    }

    #[tokio::test]
    async fn the_paced_loop_keeps_its_rate_and_counts_lost_queries() {
        let port = echo_server(10).await;
        let f = paced(port, queries(), 4, 500.0, Duration::from_millis(400), 2)
            .await
            .unwrap();
        // 200 scheduled; every 10th is never answered.
        assert!((190..=210).contains(&f.sent), "{f:?}");
        assert_eq!(f.sent, f.answered + f.timeouts, "{f:?}");
        assert!((15..=25).contains(&f.timeouts), "{f:?}");
        assert_eq!(f.errors, 0);
    }
}
