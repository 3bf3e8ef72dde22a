//! The tenants of `pico bench density`: three kinds, each with state of its own that a request
//! writes at registration and every later wake-up checks, over a raw client that times the
//! first byte of the answer (a client library's buffering would blur it).
//!
//! - **counter** (`deploy/apps/counter.py`): `GET /inc` a few times (1-7, by index); each wake-up
//!   is another `GET /inc`, whose answer must be the next count: the state is in the Python
//!   process's memory, so a right answer proves the memory came back.
//! - **redis** (`redis-server --save "" --appendonly no`): a few hundred small keys of data and
//!   `INCRBY wakes K`; each wake-up is `INCR wakes`, which must answer the next count (memory
//!   again: no persistence).
//! - **nginx** (master and one worker, WebDAV `PUT` on): a `PUT /state.txt` of a token of its own;
//!   each wake-up `GET`s it back. nginx keeps no state a request writes in memory: this state is
//!   a file in its working directory, and the check proves the woken nginx serves its own files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use worker::tenant::TenantSpec;

use crate::error::{Error, Result};

/// A kind of tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Counter,
    Redis,
    Nginx,
}

pub const KINDS: [Kind; 3] = [Kind::Counter, Kind::Redis, Kind::Nginx];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Redis => "redis",
            Kind::Nginx => "nginx",
        }
    }

    /// A third of each kind, in turn.
    pub fn of_index(i: usize) -> Kind {
        KINDS[i % KINDS.len()]
    }
}

/// How long one exchange with a tenant may take: a wake-up is held by the worker up to its
/// `hold_timeout_ms` (30 s by default) before the connection is closed.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(40);

/// One tenant of the population, as the benchmark knows it.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub name: String,
    pub kind: Kind,
    pub port: u16,
    /// counter and redis: the count the next wake-up must answer.
    pub next: u64,
    /// nginx: the content of its state file.
    pub token: String,
}

impl Tenant {
    pub fn new(index: usize, port: u16) -> Tenant {
        let kind = Kind::of_index(index);
        let name = format!("d{index:04}-{}", kind.name());
        Tenant {
            token: format!("{name}:{}", index.wrapping_mul(2_654_435_761) % 1_000_003),
            name,
            kind,
            port,
            // Written at registration: 1-7 increments, so neighbours differ.
            next: 0,
        }
    }

    /// Its spec: sandboxed (the default), with `idle_ms` as its idle timeout. nginx gets a
    /// working directory of its own under `apps` (its configuration, page and temp files).
    pub fn spec(&self, repo: &Path, apps: &Path, idle_ms: u64) -> Result<TenantSpec> {
        let port = self.port.to_string();
        let (cmd, workdir): (Vec<String>, Option<PathBuf>) = match self.kind {
            Kind::Counter => (
                vec![
                    "python3".into(),
                    repo.join("deploy/apps/counter.py").display().to_string(),
                    port,
                ],
                None,
            ),
            Kind::Redis => (
                [
                    "redis-server",
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    // Its clients come from its link, not its loopback (`tenant::ClientAddress`).
                    "--protected-mode",
                    "no",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    // Small: one client at a time, no background threads to keep.
                    "--maxclients",
                    "64",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
                None,
            ),
            Kind::Nginx => {
                let dir = apps.join(&self.name);
                let conf = nginx_conf(&dir, self.port)?;
                (
                    vec![
                        "nginx".into(),
                        "-c".into(),
                        conf.display().to_string(),
                        "-p".into(),
                        dir.display().to_string(),
                    ],
                    Some(dir),
                )
            }
        };
        Ok(TenantSpec {
            idle_timeout_ms: Some(idle_ms),
            workdir,
            sandbox: true,
            ..TenantSpec::new(&self.name, self.port, cmd)
        })
    }

    /// The request that gives it its state, once it listens; sets what the first wake-up must
    /// answer.
    pub async fn write_state(&mut self, index: usize, redis_keys: usize) -> Result<()> {
        let times = 1 + (index % 7) as u64;
        match self.kind {
            Kind::Counter => {
                for n in 1..=times {
                    let body = http(self.port, "GET /inc HTTP/1.0\r\nHost: t\r\n\r\n")
                        .await?
                        .body;
                    if body.trim() != n.to_string() {
                        return Err(self.wrong("GET /inc", &n.to_string(), &body));
                    }
                }
            }
            Kind::Redis => {
                let mut cmds = Vec::new();
                for k in 0..redis_keys {
                    let value = format!("{}:{k}:{}", self.name, "x".repeat(400));
                    cmds.push(resp(&["SET", &format!("key:{k}"), &value]));
                }
                cmds.push(resp(&["INCRBY", "wakes", &times.to_string()]));
                let answer = redis(self.port, &cmds.concat(), redis_keys + 1).await?;
                let want = format!(":{times}");
                if answer.last().map(String::as_str) != Some(want.as_str()) {
                    return Err(self.wrong("INCRBY wakes", &want, &format!("{answer:?}")));
                }
            }
            Kind::Nginx => {
                let request = format!(
                    "PUT /state.txt HTTP/1.0\r\nHost: t\r\nContent-Length: {}\r\n\r\n{}",
                    self.token.len(),
                    self.token
                );
                let a = http(self.port, &request).await?;
                if !(a.status.contains(" 201 ") || a.status.contains(" 204 ")) {
                    return Err(self.wrong("PUT /state.txt", "201", &a.status));
                }
            }
        }
        self.next = times + 1;
        Ok(())
    }

    /// One wake-up request: the time from connect to the first byte of the answer, and whether
    /// the answer carried its state (`Err`: no answer at all).
    pub async fn wake(&self) -> Result<Wake> {
        let started = Instant::now();
        let (first, answer) = match self.kind {
            Kind::Counter => {
                let a =
                    http_timed(self.port, "GET /inc HTTP/1.0\r\nHost: t\r\n\r\n", started).await?;
                (a.0, a.1.body.trim().to_string())
            }
            Kind::Redis => {
                let (first, lines) =
                    redis_timed(self.port, &resp(&["INCR", "wakes"]), 1, started).await?;
                (first, lines.concat())
            }
            Kind::Nginx => {
                let a = http_timed(
                    self.port,
                    "GET /state.txt HTTP/1.0\r\nHost: t\r\n\r\n",
                    started,
                )
                .await?;
                (a.0, a.1.body)
            }
        };
        let want = match self.kind {
            Kind::Counter => self.next.to_string(),
            Kind::Redis => format!(":{}", self.next),
            Kind::Nginx => self.token.clone(),
        };
        Ok(Wake {
            first_byte: first,
            right: answer == want,
            answer: if answer == want {
                String::new()
            } else {
                format!(
                    "wanted {want:?}, got {:?}",
                    answer.chars().take(80).collect::<String>()
                )
            },
        })
    }

    /// After a right answer: what the next wake-up must answer.
    pub fn advance(&mut self) {
        if self.kind != Kind::Nginx {
            self.next += 1;
        }
    }

    fn wrong(&self, what: &str, want: &str, got: &str) -> Error {
        Error::Step(
            format!("tenant {} ({what})", self.name),
            format!(
                "wanted {want:?}, got {:?}",
                got.chars().take(120).collect::<String>()
            ),
        )
    }
}

/// The outcome of one wake-up request.
#[derive(Clone, Debug)]
pub struct Wake {
    /// Connect to the first byte of the answer.
    pub first_byte: Duration,
    /// The answer carried the tenant's own state.
    pub right: bool,
    /// What was wrong with it, if anything.
    pub answer: String,
}

/// nginx's configuration in `dir` (made here, with its page and temp directories): WebDAV `PUT`
/// into `dir/www`, every path nginx writes inside `dir` (a sandboxed tenant sees no `/var`).
fn nginx_conf(dir: &Path, port: u16) -> Result<PathBuf> {
    for sub in ["www", "tmp"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    }
    let d = dir.display();
    // As root: CRIU here cannot dump processes of another uid.
    let conf = format!(
        "user root;\ndaemon off;\nmaster_process on;\nworker_processes 1;\n\
         pid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  \
         proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  \
         uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  \
         server {{\n    listen 127.0.0.1:{port};\n    root {d}/www;\n    \
         location / {{ dav_methods PUT; }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// An HTTP answer: its status line and body.
pub struct HttpAnswer {
    pub status: String,
    pub body: String,
}

async fn http(port: u16, request: &str) -> Result<HttpAnswer> {
    Ok(http_timed(port, request, Instant::now()).await?.1)
}

/// One HTTP/1.0 exchange on loopback `port` (the server closes after it); the time from
/// `started` to its first byte.
async fn http_timed(port: u16, request: &str, started: Instant) -> Result<(Duration, HttpAnswer)> {
    let (first, raw) = exchange(port, request.as_bytes(), started, |buf| {
        // HTTP/1.0: the answer ends when the server closes.
        let _ = buf;
        false
    })
    .await?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    Ok((
        first,
        HttpAnswer {
            status: head.lines().next().unwrap_or("").to_string(),
            body: body.to_string(),
        },
    ))
}

/// A redis command in RESP.
fn resp(args: &[&str]) -> String {
    let mut s = format!("*{}\r\n", args.len());
    for a in args {
        s.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s
}

async fn redis(port: u16, commands: &str, answers: usize) -> Result<Vec<String>> {
    Ok(redis_timed(port, commands, answers, Instant::now())
        .await?
        .1)
}

/// Pipelined redis `commands` (each answered by one line: `+OK`, `:N`); the answers' lines,
/// and the time from `started` to the first byte.
async fn redis_timed(
    port: u16,
    commands: &str,
    answers: usize,
    started: Instant,
) -> Result<(Duration, Vec<String>)> {
    let (first, raw) = exchange(port, commands.as_bytes(), started, |buf| {
        buf.iter().filter(|&&b| b == b'\n').count() >= answers
    })
    .await?;
    let text = String::from_utf8_lossy(&raw);
    Ok((first, text.lines().map(|l| l.trim().to_string()).collect()))
}

/// Connects to loopback `port`, writes `request` and reads until `done` (or the server closes);
/// the time from `started` to the first byte read, and all bytes read.
async fn exchange(
    port: u16,
    request: &[u8],
    started: Instant,
    done: impl Fn(&[u8]) -> bool,
) -> Result<(Duration, Vec<u8>)> {
    let io = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        // One write: a request in pieces may reach a server that reads once.
        s.write_all(request).await?;
        let mut out = Vec::new();
        let mut first = None;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(|| started.elapsed());
            out.extend_from_slice(&buf[..n]);
            if done(&out) {
                break;
            }
        }
        match first {
            Some(first) => Ok((first, out)),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed without an answer",
            )),
        }
    };
    match tokio::time::timeout(EXCHANGE_LIMIT, io).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(Error::Client(format!("127.0.0.1:{port}: {e}"))),
        Err(_) => Err(Error::Client(format!(
            "127.0.0.1:{port}: no answer within {EXCHANGE_LIMIT:?}"
        ))),
    }
}

/// `count` loopback ports from `base` on that nobody listens on now (ports in use skipped).
/// They are below the ephemeral range, so the benchmark's own clients never take one.
pub fn ports(base: u16, count: usize) -> Result<Vec<u16>> {
    let mut out = Vec::with_capacity(count);
    let mut port = base;
    while out.len() < count {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            out.push(port);
        }
        port = port
            .checked_add(1)
            .ok_or_else(|| Error::BadOptions(format!("not {count} free ports from {base} on")))?;
    }
    Ok(out)
}
