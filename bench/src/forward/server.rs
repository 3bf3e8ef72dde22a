//! The server both sides of `pico bench forward` talk to: nginx, one master and one worker
//! process, serving a small and a large file from a tmpfs. The same configuration runs as the
//! worker's tenant (in its namespaces, behind its public port) and directly on the host.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::{Error, Result};

/// The files served, in a directory of their own on a tmpfs (no disk on either side), removed
/// when dropped.
pub struct Site {
    pub root: PathBuf,
    pub small_bytes: u64,
    pub large_bytes: u64,
}

pub const SMALL_PATH: &str = "/small.html";
pub const LARGE_PATH: &str = "/large.bin";

/// Bytes written to the large file per write.
const CHUNK: usize = 1 << 20;

impl Site {
    /// Writes `small_bytes` of text and `large_bytes` of a byte pattern under `root`.
    pub fn create(root: &Path, small_bytes: u64, large_bytes: u64) -> Result<Site> {
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let site = Site {
            root: root.to_path_buf(),
            small_bytes,
            large_bytes,
        };
        let small = root.join(&SMALL_PATH[1..]);
        let text: Vec<u8> = b"pico forward\n"
            .iter()
            .copied()
            .cycle()
            .take(small_bytes as usize)
            .collect();
        std::fs::write(&small, text).map_err(|e| Error::io(&small, e))?;
        let large = root.join(&LARGE_PATH[1..]);
        let mut f = std::fs::File::create(&large).map_err(|e| Error::io(&large, e))?;
        let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
        let mut left = large_bytes;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            f.write_all(&chunk[..n]).map_err(|e| Error::io(&large, e))?;
            left -= n as u64;
        }
        Ok(site)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The nginx command line serving `site` on loopback `port`, with its configuration, pid file
/// and error log under `dir`. Kept-alive connections last the whole run (nginx would close one
/// after 1000 requests by default); `sendfile` as a static site has it.
pub fn nginx_command(site: &Site, dir: &Path, port: u16) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // As root: the worker's tenants run as root here (CRIU cannot dump another uid).
    let conf = format!(
        "user root;\ndaemon off;\nmaster_process on;\nworker_processes 1;\n\
         pid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  keepalive_requests 10000000;\n  \
         keepalive_timeout 600s;\n  default_type application/octet-stream;\n  \
         server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n",
        d = dir.display(),
        root = site.root.display(),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| Error::io(&path, e))?;
    Ok(vec![
        "nginx".into(),
        "-c".into(),
        path.display().to_string(),
        "-p".into(),
        dir.display().to_string(),
    ])
}

/// The baseline: the same nginx started straight on the host; its process tree is ended when
/// dropped.
pub struct DirectServer(Child);

impl DirectServer {
    pub fn start(cmd: &[String], dir: &Path) -> Result<DirectServer> {
        let log_path = dir.join("nginx.log");
        let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
        let log2 = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let (program, args) = cmd
            .split_first()
            .ok_or_else(|| Error::BadOptions("an empty server command".into()))?;
        Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map(DirectServer)
            .map_err(|source| Error::ToolMissing {
                tool: program.clone(),
                source,
            })
    }
}

impl Drop for DirectServer {
    fn drop(&mut self) {
        worker::process::kill_tree_blocking(self.0.id());
        let _ = self.0.wait();
    }
}

/// `nginx -v`'s line (nginx prints it on stderr).
pub fn nginx_version() -> String {
    Command::new("nginx")
        .arg("-v")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_else(|| "nginx: not found".into())
}
