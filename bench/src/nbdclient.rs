//! A minimal blocking NBD client for latency and IOPS measurements.
//!
//! libnbd's tools measure throughput well (nbdcopy) but report no per-request latency; this client
//! does one thing: fixed newstyle handshake with NBD_OPT_GO (simple replies, so both servers do
//! the same work per request), then pipelined 4 KiB reads with their completion times.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pager::nbd::proto::{
    Request, CMD_DISC, CMD_READ, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, IHAVEOPT, INFO_EXPORT,
    NBDMAGIC, OPT_GO, REP_ACK, REP_INFO, SIMPLE_REPLY_MAGIC,
};

use crate::error::{Error, Result};
// Deterministic offsets: the same sequence of reads for both servers.
use crate::synth::Rng;

fn client_err(msg: impl Into<String>) -> Error {
    Error::Client(msg.into())
}

pub struct Client {
    stream: TcpStream,
    pub size: u64,
}

impl Client {
    pub fn connect(addr: SocketAddr, export: &str) -> Result<Client> {
        let io = |e: std::io::Error| client_err(format!("{addr}: {e}"));
        let mut s = TcpStream::connect(addr).map_err(io)?;
        s.set_nodelay(true).map_err(io)?;
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).map_err(io)?;
        if greeting[..8] != NBDMAGIC.to_be_bytes() || greeting[8..16] != IHAVEOPT.to_be_bytes() {
            return Err(client_err("not a newstyle NBD server"));
        }
        s.write_all(&(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).to_be_bytes())
            .map_err(io)?;
        let mut go = Vec::new();
        go.extend_from_slice(&IHAVEOPT.to_be_bytes());
        go.extend_from_slice(&OPT_GO.to_be_bytes());
        go.extend_from_slice(&(4 + export.len() as u32 + 2).to_be_bytes());
        go.extend_from_slice(&(export.len() as u32).to_be_bytes());
        go.extend_from_slice(export.as_bytes());
        go.extend_from_slice(&0u16.to_be_bytes());
        s.write_all(&go).map_err(io)?;
        let mut size = None;
        loop {
            let mut head = [0u8; 20];
            s.read_exact(&mut head).map_err(io)?;
            let kind = u32::from_be_bytes([head[12], head[13], head[14], head[15]]);
            let len = u32::from_be_bytes([head[16], head[17], head[18], head[19]]) as usize;
            let mut data = vec![0u8; len];
            s.read_exact(&mut data).map_err(io)?;
            match kind {
                REP_ACK => break,
                REP_INFO if data.len() >= 12 && data[..2] == INFO_EXPORT.to_be_bytes() => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&data[2..10]);
                    size = Some(u64::from_be_bytes(b));
                }
                REP_INFO => {}
                k if k & (1 << 31) != 0 => {
                    return Err(client_err(format!(
                        "export {export:?} refused: {}",
                        String::from_utf8_lossy(&data)
                    )))
                }
                _ => {}
            }
        }
        let size = size.ok_or_else(|| client_err("server sent no export size"))?;
        Ok(Client { stream: s, size })
    }

    fn send_read(&mut self, cookie: u64, offset: u64, len: u32) -> Result<()> {
        let r = Request {
            flags: 0,
            command: CMD_READ,
            cookie,
            offset,
            len,
        };
        self.stream
            .write_all(&r.encode())
            .map_err(|e| client_err(e.to_string()))
    }

    /// Reads one simple reply with `len` bytes of data; returns its cookie.
    fn recv_read(&mut self, buf: &mut [u8]) -> Result<u64> {
        let mut head = [0u8; 16];
        self.stream
            .read_exact(&mut head)
            .map_err(|e| client_err(e.to_string()))?;
        if head[..4] != SIMPLE_REPLY_MAGIC.to_be_bytes() {
            return Err(client_err("unexpected reply (not a simple reply)"));
        }
        let error = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if error != 0 {
            return Err(client_err(format!("read failed with error {error}")));
        }
        self.stream
            .read_exact(buf)
            .map_err(|e| client_err(e.to_string()))?;
        let mut c = [0u8; 8];
        c.copy_from_slice(&head[8..16]);
        Ok(u64::from_be_bytes(c))
    }

    /// `n` random `block`-sized reads one at a time; returns each latency.
    pub fn latencies(&mut self, n: usize, block: u32, seed: u64) -> Result<Vec<Duration>> {
        let mut rng = Rng::from_state(seed);
        let blocks = self.size / u64::from(block);
        let mut buf = vec![0u8; block as usize];
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let offset = rng.below(blocks) * u64::from(block);
            let t = Instant::now();
            self.send_read(i as u64, offset, block)?;
            self.recv_read(&mut buf)?;
            out.push(t.elapsed());
        }
        Ok(out)
    }

    /// Random `block`-sized reads with `depth` in flight for `duration`; returns completions.
    pub fn pipelined(
        &mut self,
        depth: usize,
        block: u32,
        duration: Duration,
        seed: u64,
    ) -> Result<u64> {
        let mut rng = Rng::from_state(seed);
        let blocks = self.size / u64::from(block);
        let mut buf = vec![0u8; block as usize];
        let mut cookie = 0u64;
        for _ in 0..depth {
            self.send_read(cookie, rng.below(blocks) * u64::from(block), block)?;
            cookie += 1;
        }
        let start = Instant::now();
        let mut done = 0u64;
        while start.elapsed() < duration {
            self.recv_read(&mut buf)?;
            done += 1;
            self.send_read(cookie, rng.below(blocks) * u64::from(block), block)?;
            cookie += 1;
        }
        let elapsed = start.elapsed();
        for _ in 0..depth {
            self.recv_read(&mut buf)?;
        }
        Ok((done as f64 / elapsed.as_secs_f64()) as u64)
    }

    pub fn disconnect(mut self) {
        let r = Request {
            flags: 0,
            command: CMD_DISC,
            cookie: 0,
            offset: 0,
            len: 0,
        };
        let _ = self.stream.write_all(&r.encode());
    }
}
