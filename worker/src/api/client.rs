//! The API's client: one HTTP/1.1 exchange per call, over the worker's unix socket (the CLI) or
//! TCP with the bearer token (a control plane). A request becomes its route through the same
//! table the server routes by (`routes`); a failure comes back as [`Error::Remote`] with the
//! worker's message unchanged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tracing::debug;

use crate::api::routes::{call_of, HttpCall, Verb};
use crate::error::{Error, Result};
use crate::protocol::Request;

/// A way to reach a running worker.
pub struct Client {
    endpoint: Endpoint,
}

enum Endpoint {
    Unix(PathBuf),
    Tcp { addr: SocketAddr, token: String },
}

impl Client {
    /// The worker serving its API on the unix socket `socket`.
    pub fn new(socket: &Path) -> Client {
        Client {
            endpoint: Endpoint::Unix(socket.to_path_buf()),
        }
    }

    /// The worker serving its API on TCP at `addr` (`api_listen`), with its bearer token.
    pub fn tcp(addr: SocketAddr, token: impl Into<String>) -> Client {
        Client {
            endpoint: Endpoint::Tcp {
                addr,
                token: token.into(),
            },
        }
    }

    /// Sends one request and waits for its answer. A worker-side failure comes back as
    /// [`Error::Remote`] carrying the worker's message.
    pub async fn call(&self, request: &Request) -> Result<serde_json::Value> {
        let call = call_of(request)?;
        let (status, body) = match &self.endpoint {
            Endpoint::Unix(socket) => {
                let stream = UnixStream::connect(socket).await.map_err(|source| {
                    Error::WorkerNotRunning {
                        socket: socket.clone(),
                        source,
                    }
                })?;
                self.exchange(stream, call, None).await?
            }
            Endpoint::Tcp { addr, token } => {
                let stream =
                    TcpStream::connect(addr)
                        .await
                        .map_err(|source| Error::WorkerUnreachable {
                            addr: *addr,
                            source,
                        })?;
                // One small request and its answer: no reason to wait for more to send.
                let _ = stream.set_nodelay(true);
                self.exchange(stream, call, Some(token)).await?
            }
        };
        answer_of(status, &body, &self.describe())
    }

    /// Where the worker is, for errors.
    fn describe(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(socket) => format!("the worker on {}", socket.display()),
            Endpoint::Tcp { addr, .. } => format!("the worker on {addr}"),
        }
    }

    /// Sends `call` on `stream` and reads the whole answer.
    async fn exchange<S>(
        &self,
        stream: S,
        call: HttpCall,
        token: Option<&str>,
    ) -> Result<(StatusCode, Bytes)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let method = match call.verb {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Delete => Method::DELETE,
        };
        let host = match &self.endpoint {
            Endpoint::Unix(_) => "localhost".to_string(),
            Endpoint::Tcp { addr, .. } => addr.to_string(),
        };
        let exchange = Exchange {
            method,
            path_and_query: &call.path_and_query,
            host: &host,
            body: call.body,
            content_type: "application/json",
            token,
        };
        exchange.send(stream, &self.describe()).await
    }
}

/// One HTTP/1.1 request with an optional body (JSON, or pages: `content_type`), and its whole
/// answer: what a [`Client`] sends a worker, and what a worker sends its hub ([`call_json`]) or
/// a peer ([`call_bytes`]).
struct Exchange<'a> {
    method: Method,
    path_and_query: &'a str,
    host: &'a str,
    body: Option<Vec<u8>>,
    content_type: &'static str,
    token: Option<&'a str>,
}

impl Exchange<'_> {
    /// Connects to `what` at `addr` over `transport` and sends the request: the answer, and the
    /// peer's name for errors.
    async fn send_to(
        self,
        what: &'static str,
        addr: SocketAddr,
        transport: &Transport,
    ) -> Result<(StatusCode, Bytes, String)> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| Error::PeerUnreachable { addr, what, source })?;
        // One request and its answer: no reason to wait for more to send.
        let _ = stream.set_nodelay(true);
        let peer = format!("{what} on {transport:?}://{addr}");
        let (status, answer) = match &transport.tls {
            None => self.send(stream, &peer).await?,
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| Error::Tls(format!("{peer}: {e}")))?;
                self.send(stream, &peer).await?
            }
        };
        Ok((status, answer, peer))
    }

    /// Sends the request on `stream` to `peer` (named in errors) and reads the whole answer.
    async fn send<S>(self, stream: S, peer: &str) -> Result<(StatusCode, Bytes)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http_error = |source| Error::Http {
            peer: peer.to_string(),
            source,
        };
        let mut builder = axum::http::Request::builder()
            .method(self.method)
            .uri(self.path_and_query)
            .header(HOST, self.host);
        if self.body.is_some() {
            builder = builder.header(CONTENT_TYPE, self.content_type);
        }
        if let Some(token) = self.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = builder
            .body(Full::new(Bytes::from(self.body.unwrap_or_default())))
            .map_err(Error::RequestUnbuildable)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
        // The connection is driven beside the exchange, and ends when `sender` is dropped.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "API connection ended");
            }
        });
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http_error)?
            .to_bytes();
        Ok((status, body))
    }
}

/// How a client reaches an API of the cluster (the hub's): plain HTTP, or HTTPS trusting one CA
/// (`pager::tls`). The server is checked against the address it is reached at (the
/// certificate names that IP address).
#[derive(Clone, Default)]
pub struct Transport {
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Transport {
    /// Plain HTTP.
    pub fn plain() -> Transport {
        Transport::default()
    }

    /// HTTPS trusting the certificates in `ca` (PEM); plain HTTP when `None`.
    pub fn trusting(ca: Option<&Path>) -> Result<Transport> {
        let Some(ca) = ca else {
            return Ok(Transport::plain());
        };
        let config = pager::tls::client_config(ca).map_err(Error::Tls)?;
        Ok(Transport {
            tls: Some(Arc::new(config)),
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_tls() { "https" } else { "http" })
    }
}

/// `method path` on the HTTP API of `what` (e.g. "the hub") at `addr` over `transport`, with
/// bearer `token` and an optional JSON `body`: the answer's JSON, or the peer's `{"error"}`
/// message as [`Error::RemotePeer`]. The same HTTP as a worker's API, for APIs of its kind that
/// are not a worker's.
pub async fn call_json(
    what: &'static str,
    addr: SocketAddr,
    transport: &Transport,
    token: &str,
    method: Method,
    path_and_query: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value> {
    let exchange = Exchange {
        method,
        path_and_query,
        host: &addr.to_string(),
        body: body.map(|b| b.to_string().into_bytes()),
        content_type: "application/json",
        token: Some(token),
    };
    let (status, answer, peer) = exchange.send_to(what, addr, transport).await?;
    answer_of(status, &answer, &peer).map_err(|e| from_peer(e, peer))
}

/// `POST path` of binary `body` to the API of `what` at `addr`, with bearer `token`: the
/// answer's bytes, or the peer's `{"error"}` message as [`Error::RemotePeer`] (the peer tier's
/// page requests, which are not JSON).
pub async fn call_bytes(
    what: &'static str,
    addr: SocketAddr,
    token: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<Bytes> {
    let exchange = Exchange {
        method: Method::POST,
        path_and_query: path,
        host: &addr.to_string(),
        body: Some(body),
        content_type: "application/octet-stream",
        token: Some(token),
    };
    let (status, answer, peer) = exchange.send_to(what, addr, &Transport::plain()).await?;
    if status.is_success() {
        return Ok(answer);
    }
    Err(from_peer(failure_of(status, &answer), peer))
}

/// The worker-side message of `e` as a peer's (other errors as they are).
fn from_peer(e: Error, peer: String) -> Error {
    match e {
        Error::Remote(message) => Error::RemotePeer { peer, message },
        e => e,
    }
}

/// The result an answer carries: its JSON on success, the worker's message as
/// [`Error::Remote`] otherwise.
fn answer_of(status: StatusCode, body: &[u8], worker: &str) -> Result<serde_json::Value> {
    if status.is_success() {
        if body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        return serde_json::from_slice(body).map_err(|source| Error::BadAnswer {
            peer: worker.to_string(),
            source,
        });
    }
    Err(failure_of(status, body))
}

/// A failed answer as [`Error::Remote`]: its `{"error"}` message, else its status and body.
fn failure_of(status: StatusCode, body: &[u8]) -> Error {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("HTTP {status}: {}", String::from_utf8_lossy(body).trim()));
    Error::Remote(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_values_or_the_workers_message() {
        let ok = answer_of(StatusCode::OK, br#"{"a":1}"#, "w").unwrap();
        assert_eq!(ok, serde_json::json!({"a": 1}));
        assert_eq!(
            answer_of(StatusCode::OK, b"null", "w").unwrap(),
            serde_json::Value::Null
        );
        match answer_of(
            StatusCode::CONFLICT,
            br#"{"error":"tenant c is busy"}"#,
            "w",
        ) {
            Err(Error::Remote(m)) => assert_eq!(m, "tenant c is busy"),
            other => panic!("{other:?}"),
        }
        match answer_of(StatusCode::BAD_GATEWAY, b"upstream down", "w") {
            Err(Error::Remote(m)) => assert_eq!(m, "HTTP 502 Bad Gateway: upstream down"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            answer_of(StatusCode::OK, b"<html>", "w"),
            Err(Error::BadAnswer { .. })
        ));
    }
}
