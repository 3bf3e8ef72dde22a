//! The kinds of tenant in the corpus, and the traffic each gets between checkpoints.
//!
//! Each kind is a real program with its own content per tenant (seeded, so every tenant differs
//! and every run is the same): a Python content site, redis-server holding data, and nginx serving
//! its own page. Clients here are minimal on purpose: a benchmark should not depend on a client
//! library's buffering to decide what the server's heap looks like.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::net::http_get;

/// The Python tenant's program, written into each tenant's directory.
const WEBAPP_PY: &str = include_str!("../../apps/webapp.py");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Python,
    Redis,
    Nginx,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Python, Kind::Redis, Kind::Nginx];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Python => "python",
            Kind::Redis => "redis",
            Kind::Nginx => "nginx",
        }
    }
}

/// How tenants are launched: with the kernel's address-space randomisation, or deterministic
/// (ASLR off, fixed hash seeds: `pico tenant add --deterministic`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Default,
    Deterministic,
}

impl Layout {
    pub const ALL: [Layout; 2] = [Layout::Default, Layout::Deterministic];

    pub fn name(self) -> &'static str {
        match self {
            Layout::Default => "default",
            Layout::Deterministic => "deterministic",
        }
    }
}

/// A small deterministic generator (xorshift64*), so content is seeded without a crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "alpha", "harbor", "lantern", "meadow", "quartz", "river", "summit", "thistle", "violet",
    "willow", "copper", "ember", "falcon", "garnet", "hollow", "island", "juniper", "kestrel",
    "maple", "nectar", "orchid", "pebble", "raven", "saffron", "tundra", "umber", "vessel",
];

/// `n` words of seeded text.
pub fn text(rng: &mut Rng, n: usize) -> String {
    let mut s = String::with_capacity(n * 7);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len())]);
    }
    s
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Writes whatever the tenant needs into `cwd` and returns its command line.
pub fn prepare(kind: Kind, cwd: &Path, port: u16, seed: u64) -> Result<Vec<String>> {
    let s = |x: &str| x.to_string();
    match kind {
        Kind::Python => {
            let app = cwd.join("webapp.py");
            write_file(&app, WEBAPP_PY)?;
            Ok(vec![
                s("python3"),
                app.display().to_string(),
                port.to_string(),
                seed.to_string(),
            ])
        }
        Kind::Redis => Ok(vec![
            s("redis-server"),
            s("--port"),
            port.to_string(),
            s("--bind"),
            s("127.0.0.1"),
            s("--save"),
            s(""),
            s("--appendonly"),
            s("no"),
            s("--dir"),
            cwd.display().to_string(),
        ]),
        Kind::Nginx => {
            let www = cwd.join("www");
            let tmp = cwd.join("tmp");
            for d in [&www, &tmp] {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
            }
            let mut rng = Rng::new(seed);
            let mut page = format!("<html><head><title>site {seed}</title></head><body>\n");
            for _ in 0..40 {
                page.push_str(&format!("<p>{}</p>\n", text(&mut rng, 120)));
            }
            page.push_str("</body></html>\n");
            write_file(&www.join("index.html"), &page)?;
            let c = cwd.display();
            // `user root;`: CRIU here cannot dump workers running as another uid (see design.md).
            let conf = format!(
                "user root;\ndaemon off;\nworker_processes 1;\npid {c}/nginx.pid;\n\
                 error_log {c}/error.log;\nevents {{ worker_connections 64; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {c}/tmp/body;\n\
                 proxy_temp_path {c}/tmp/proxy;\n  fastcgi_temp_path {c}/tmp/fastcgi;\n\
                 uwsgi_temp_path {c}/tmp/uwsgi;\n  scgi_temp_path {c}/tmp/scgi;\n\
                 server {{\n    listen 127.0.0.1:{port};\n    root {c}/www;\n  }}\n}}\n"
            );
            let conf_path = cwd.join("nginx.conf");
            write_file(&conf_path, &conf)?;
            Ok(vec![
                s("nginx"),
                s("-e"),
                format!("{c}/error.log"),
                s("-p"),
                format!("{c}/"),
                s("-c"),
                conf_path.display().to_string(),
            ])
        }
    }
}

/// Fills a freshly started tenant with its own data.
pub fn populate(kind: Kind, port: u16, seed: u64) -> Result<()> {
    match kind {
        Kind::Python => http_get(port, "/add?n=100").map(|_| ()),
        Kind::Redis => {
            let mut rng = Rng::new(seed);
            let commands: Vec<Vec<String>> = (0..3000)
                .map(|i| {
                    vec![
                        "SET".into(),
                        format!("article:{seed}:{i}"),
                        text(&mut rng, 40),
                    ]
                })
                .collect();
            redis(port, &commands)
        }
        Kind::Nginx => http_get(port, "/").map(|_| ()),
    }
}

/// The traffic a tenant gets between two checkpoints (generation `generation` is next).
pub fn traffic(kind: Kind, port: u16, seed: u64, generation: u32) -> Result<()> {
    let mut rng = Rng::new(seed ^ (u64::from(generation) << 32));
    match kind {
        Kind::Python => {
            http_get(port, "/add?n=10")?;
            for _ in 0..20 {
                http_get(port, &format!("/article/{}", rng.below(400)))?;
                http_get(port, "/inc")?;
            }
            Ok(())
        }
        Kind::Redis => {
            let mut commands = Vec::new();
            for i in 0..200 {
                commands.push(vec![
                    "SET".into(),
                    format!("session:{generation}:{i}"),
                    text(&mut rng, 20),
                ]);
                commands.push(vec!["INCR".into(), format!("hits:{}", rng.below(50))]);
            }
            redis(port, &commands)
        }
        Kind::Nginx => {
            for _ in 0..20 {
                http_get(port, "/")?;
            }
            Ok(())
        }
    }
}

fn client_error(what: String, e: std::io::Error) -> Error {
    Error::ToolFailed {
        command: what,
        status: "client error".into(),
        stderr: e.to_string(),
    }
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(s)
}

/// Sends redis commands pipelined and waits for one single-line reply each (SET, INCR).
pub fn redis(port: u16, commands: &[Vec<String>]) -> Result<()> {
    let what = || format!("redis 127.0.0.1:{port}");
    let run = || -> std::io::Result<()> {
        let mut s = connect(port)?;
        let mut buf = Vec::new();
        for c in commands {
            buf.extend_from_slice(format!("*{}\r\n", c.len()).as_bytes());
            for a in c {
                buf.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        }
        s.write_all(&buf)?;
        let mut lines = 0;
        let mut chunk = [0u8; 8192];
        while lines < commands.len() {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::other("redis closed the connection"));
            }
            if chunk[..n].starts_with(b"-") {
                return Err(std::io::Error::other(
                    String::from_utf8_lossy(&chunk[..n]).to_string(),
                ));
            }
            lines += chunk[..n].iter().filter(|&&b| b == b'\n').count();
        }
        Ok(())
    };
    run().map_err(|e| client_error(what(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_text_differs_by_seed_and_repeats_by_seed() {
        let a = text(&mut Rng::new(1), 50);
        let b = text(&mut Rng::new(2), 50);
        assert_ne!(a, b);
        assert_eq!(a, text(&mut Rng::new(1), 50));
        assert_eq!(a.split(' ').count(), 50);
    }

    #[test]
    fn nginx_config_runs_as_root_on_its_port() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = prepare(Kind::Nginx, dir.path(), 18080, 3).unwrap();
        assert_eq!(cmd[0], "nginx");
        let conf = std::fs::read_to_string(dir.path().join("nginx.conf")).unwrap();
        assert!(conf.starts_with("user root;"));
        assert!(conf.contains("listen 127.0.0.1:18080;"));
        assert!(dir.path().join("www/index.html").exists());
    }
}
