//! A TCP proxy that makes a loopback object store behave like a remote one.
//!
//! Each direction of each connection is a delay line: bytes are forwarded `delay` after they
//! arrived (propagation: a request/response pays it once each way, and pipelined bytes pay it only
//! once), then paced to `bytes_per_sec` (serialization: a per-connection bandwidth, as S3 gives
//! ~100 MB/s per connection). Defaults model S3 from EC2 in the same region: 20 ms each way,
//! 100 MB/s. This kernel has no netem, so the proxy is how benchmarks get a real cold tier.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkModel {
    /// One-way delay added to every byte.
    pub delay: Duration,
    /// Bandwidth of each direction of each connection.
    pub bytes_per_sec: u64,
}

impl Default for LinkModel {
    fn default() -> Self {
        LinkModel {
            delay: Duration::from_millis(20),
            bytes_per_sec: 100_000_000,
        }
    }
}

/// A running proxy; stops when dropped.
pub struct LatencyProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl LatencyProxy {
    /// Listens on `listen` (port 0 picks one) and forwards every connection to `upstream`.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        model: LinkModel,
    ) -> std::io::Result<LatencyProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    match TcpStream::connect(upstream).await {
                        Ok(server) => relay(client, server, model).await,
                        Err(e) => {
                            tracing::warn!(%upstream, error = %e, "proxy cannot reach upstream")
                        }
                    }
                });
            }
        });
        Ok(LatencyProxy { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, model: LinkModel) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(pipe(cr, sw, model), pipe(sr, cw, model));
}

/// One direction: a reader stamps chunks as they arrive, a writer releases each `delay` later,
/// paced to the bandwidth.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    model: LinkModel,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    quick_ack(from.as_ref());
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        // When the link is next free to start sending.
        let mut link_free = Instant::now();
        while let Some((arrived, chunk)) = rx.recv().await {
            let start = (arrived + model.delay).max(link_free);
            let serialize = if model.bytes_per_sec == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(chunk.len() as f64 / model.bytes_per_sec as f64)
            };
            link_free = start + serialize;
            tokio::time::sleep_until(link_free).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Acknowledges what arrives on `stream` at once, not up to 40 ms later (Linux's delayed ACK;
/// the mode lapses, so it is set again after every read). A server that writes a response's
/// header and body apart without `TCP_NODELAY` (Garage 2.5 does) holds the body until the
/// header is acknowledged: on a reused connection each GET waited ~40 ms for that, a stall of
/// the loopback's, not of the link modelled.
fn quick_ack(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we hold, with a c_int option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_round_trip_pays_the_delay_each_way() {
        let upstream = echo_server().await;
        let model = LinkModel {
            delay: Duration::from_millis(30),
            bytes_per_sec: 0,
        };
        let proxy = LatencyProxy::start("127.0.0.1:0".parse().unwrap(), upstream, model)
            .await
            .unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let started = std::time::Instant::now();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        let rtt = started.elapsed();
        assert_eq!(&buf, b"ping");
        assert!(rtt >= Duration::from_millis(60), "rtt {rtt:?}");
        assert!(rtt < Duration::from_millis(500), "rtt {rtt:?}");
    }

    #[tokio::test]
    async fn bandwidth_is_paced_per_connection() {
        let upstream = echo_server().await;
        let model = LinkModel {
            delay: Duration::ZERO,
            bytes_per_sec: 10_000_000,
        };
        let proxy = LatencyProxy::start("127.0.0.1:0".parse().unwrap(), upstream, model)
            .await
            .unwrap();
        let s = TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let data = vec![7u8; 2_000_000];
        let started = std::time::Instant::now();
        let send = tokio::spawn(async move { w.write_all(&data).await.unwrap() });
        let mut got = vec![0u8; 2_000_000];
        r.read_exact(&mut got).await.unwrap();
        send.await.unwrap();
        // 2 MB each way at 10 MB/s, pipelined: at least 0.2 s.
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "{:?}",
            started.elapsed()
        );
    }
}
