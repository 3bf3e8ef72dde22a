//! The tenants `pico bench restore` measures, each with a real client check of its first
//! correct answer.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::net::http_get;
use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum App {
    /// `deploy/apps/counter.py`: a Python web app keeping a counter in memory.
    Counter,
    /// redis-server holding ~100 MB of data.
    Redis,
    /// nginx (master + worker) serving a page.
    Nginx,
    /// The counter app with a large random heap that requests do not touch.
    LargeHeap,
    /// `deploy/apps/nodemap.js`: node holding a Map of [`NODE_MAP_ENTRIES`] objects, which
    /// every request walks whole.
    NodeMap,
    /// `deploy/apps/pydict.py`: Python holding a dict of [`PY_DICT_ENTRIES`] ints, whose values
    /// every request walks.
    PyDict,
}

pub const ALL: [App; 6] = [
    App::Counter,
    App::Redis,
    App::Nginx,
    App::LargeHeap,
    App::NodeMap,
    App::PyDict,
];

/// Entries of node-map's Map (~100 MB resident).
pub const NODE_MAP_ENTRIES: u32 = 200_000;
/// Entries of py-dict's dict (~120 MB resident).
pub const PY_DICT_ENTRIES: u32 = 1_000_000;

impl App {
    pub fn name(self) -> &'static str {
        match self {
            App::Counter => "counter",
            App::Redis => "redis",
            App::Nginx => "nginx",
            App::LargeHeap => "large-heap",
            App::NodeMap => "node-map",
            App::PyDict => "py-dict",
        }
    }

    pub fn parse(s: &str) -> Option<App> {
        ALL.into_iter().find(|a| a.name() == s)
    }

    /// The command line that starts the app on `port`, with its files under `dir`.
    pub fn command(self, port: u16, dir: &Path, repo: &Path) -> Result<Vec<String>, Error> {
        let port_s = port.to_string();
        let script = |name: &str| repo.join("deploy/apps").join(name).display().to_string();
        Ok(match self {
            App::Counter | App::LargeHeap => vec!["python3".into(), script("counter.py"), port_s],
            App::NodeMap => vec![
                "node".into(),
                script("nodemap.js"),
                port_s,
                NODE_MAP_ENTRIES.to_string(),
            ],
            App::PyDict => vec![
                "python3".into(),
                script("pydict.py"),
                port_s,
                PY_DICT_ENTRIES.to_string(),
            ],
            App::Redis => [
                "redis-server",
                "--port",
                &port_s,
                "--bind",
                "127.0.0.1",
                // Its clients come from its link, not its loopback (`tenant::ClientAddress`).
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            App::Nginx => {
                let www = dir.join("www");
                std::fs::create_dir_all(&www).map_err(|e| Error::io(&www, e))?;
                std::fs::write(www.join("index.html"), "pico nginx tenant\n")
                    .map_err(|e| Error::io(&www, e))?;
                // As root: CRIU here cannot dump processes of another uid.
                let conf = format!(
                    "user root;\ndaemon off;\nmaster_process on;\nworker_processes 1;\n\
                     pid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                     events {{ worker_connections 64; }}\n\
                     http {{ access_log off; server {{ listen 127.0.0.1:{port}; root {d}/www; }} }}\n",
                    d = dir.display()
                );
                let path = dir.join("nginx.conf");
                std::fs::write(&path, conf).map_err(|e| Error::io(&path, e))?;
                vec![
                    "nginx".into(),
                    "-c".into(),
                    path.display().to_string(),
                    "-p".into(),
                    dir.display().to_string(),
                ]
            }
        })
    }

    /// Gives the app its state once it listens.
    pub fn prepare(self, port: u16, heap_mb: u32) -> Result<(), Error> {
        match self {
            App::Counter | App::Nginx => Ok(()),
            // Built at start; a few walks first, so that the checkpoint holds the walk compiled
            // (node's first walks run in its interpreter: 65, 48, then 18 ms here).
            App::NodeMap | App::PyDict => {
                for _ in 0..5 {
                    if !self.probe(port)? {
                        let answer = http_get(port, "/").unwrap_or_else(|e| e.to_string());
                        return Err(Error::Step(
                            format!("{} prepare", self.name()),
                            format!("wrong answer {answer:?}, expected {:?}", self.expected()),
                        ));
                    }
                }
                Ok(())
            }
            App::LargeHeap => http_get(port, &format!("/ballast?mb={heap_mb}")).map(|_| ()),
            App::Redis => load_redis(port),
        }
    }

    /// One request with a real client; Ok(true) when the answer is the right one.
    pub fn probe(self, port: u16) -> Result<bool, Error> {
        Ok(match self {
            App::Counter | App::LargeHeap => http_get(port, "/inc")
                .map(|b| b.trim().parse::<u64>().is_ok())
                .unwrap_or(false),
            App::Nginx => http_get(port, "/")
                .map(|b| b.contains("pico nginx tenant"))
                .unwrap_or(false),
            App::NodeMap | App::PyDict => http_get(port, "/")
                .map(|b| b.trim() == self.expected())
                .unwrap_or(false),
            App::Redis => {
                let out = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "GET", "key:777"])
                    .output()
                    .map_err(|e| Error::Step("redis-cli".into(), e.to_string()))?;
                String::from_utf8_lossy(&out.stdout).trim() == redis_value(777)
            }
        })
    }

    /// What a walk of the whole Map or dict answers (empty for the other apps).
    fn expected(self) -> String {
        match self {
            App::NodeMap => node_map_answer(NODE_MAP_ENTRIES),
            App::PyDict => py_dict_answer(PY_DICT_ENTRIES),
            _ => String::new(),
        }
    }
}

/// nodemap.js's answer: "COUNT WEIGHTS LABELS", entry `i` weighing `i % 1000` with the label
/// `"entry-" + i`.
fn node_map_answer(entries: u32) -> String {
    let (mut weights, mut labels) = (0u64, 0u64);
    for i in 0..entries {
        weights += u64::from(i % 1000);
        labels += format!("entry-{i}").len() as u64;
    }
    format!("{entries} {weights} {labels}")
}

/// pydict.py's answer: "COUNT SUM", the value of key `i` being `1000 + i % 1000`.
fn py_dict_answer(entries: u32) -> String {
    let sum: u64 = (0..entries).map(|i| 1000 + u64::from(i % 1000)).sum();
    format!("{entries} {sum}")
}

/// Keys and values: 100,000 keys of ~1 KB, ~100 MB in redis.
const REDIS_KEYS: u32 = 100_000;

fn redis_value(i: u32) -> String {
    format!("{i:08}-{}", "v".repeat(1000))
}

fn load_redis(port: u16) -> Result<(), Error> {
    let mut child = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| Error::Step("redis-cli".into(), e.to_string()))?;
    {
        let stdin = child
            .stdin
            .as_mut()
            .ok_or_else(|| Error::Step("redis-cli".into(), "no stdin".into()))?;
        let mut buf = std::io::BufWriter::new(stdin);
        for i in 0..REDIS_KEYS {
            let (k, v) = (format!("key:{i}"), redis_value(i));
            write!(
                buf,
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .map_err(|e| Error::Step("redis-cli".into(), e.to_string()))?;
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::Step("redis-cli".into(), e.to_string()))?;
    if !status.success() {
        return Err(Error::Step("redis-cli --pipe".into(), status.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_answers_are_what_the_apps_answered_when_run_by_hand() {
        // `curl 127.0.0.1:PORT/` of `node nodemap.js PORT` and `python3 pydict.py PORT`.
        assert_eq!(node_map_answer(200_000), "200000 99900000 2288890");
        assert_eq!(py_dict_answer(1_000_000), "1000000 1499500000");
    }

    #[test]
    fn every_app_parses_from_its_name() {
        for app in ALL {
            assert_eq!(App::parse(app.name()), Some(app));
        }
    }
}
