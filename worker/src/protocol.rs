//! The worker's control protocol: one JSON request per line on a unix socket, one JSON response
//! per line back. Small, human-debuggable (`socat - UNIX:worker.sock`), and enough for a CLI.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::error::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    Ping,
    Add(crate::tenant::TenantSpec),
    Ls,
    Status {
        name: String,
    },
    SwapOut {
        name: String,
    },
    SwapIn {
        name: String,
        /// Restore without the ActiveSet (for comparison).
        #[serde(default)]
        no_activeset: bool,
        /// How to install the ActiveSet this time (the worker's `activeset_install` if absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        install: Option<crate::config::ActiveSetInstall>,
    },
    ActiveSet {
        name: String,
    },
    /// Empties the caches the worker's store holds (for cold-start measurements): `hot`,
    /// `local`, or both when no tier is named.
    Evict {
        #[serde(default)]
        tier: Option<String>,
    },
    /// The worker's page store statistics, with its live tier counters.
    StoreStats,
    /// The store's request counters, read without touching any tier.
    Counters,
    Rm {
        name: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A connection to a running worker.
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    /// Sends one request and waits for its answer. A worker-side failure comes back as
    /// [`Error::Remote`] carrying the worker's message.
    pub async fn call(&self, request: &Request) -> Result<serde_json::Value> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| Error::WorkerNotRunning {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_vec(request).map_err(Error::RequestUnencodable)?;
        line.push(b'\n');
        write
            .write_all(&line)
            .await
            .map_err(|e| Error::io(&self.socket, e))?;
        let mut answer = String::new();
        BufReader::new(read)
            .read_line(&mut answer)
            .await
            .map_err(|e| Error::io(&self.socket, e))?;
        let response: Response =
            serde_json::from_str(&answer).map_err(|source| Error::BadAnswer {
                socket: self.socket.clone(),
                source,
            })?;
        if response.ok {
            Ok(response.result.unwrap_or(serde_json::Value::Null))
        } else {
            Err(Error::Remote(
                response.error.unwrap_or_else(|| "unknown error".into()),
            ))
        }
    }
}
