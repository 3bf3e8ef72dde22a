//! Loopback clients shared by the benchmarks and, through `testkit`, the tests: a free port to
//! start a server on, and a minimal HTTP GET. Minimal on purpose: a benchmark should not depend
//! on a client library's buffering or connection reuse.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crate::error::{Error, Result};

/// How long [`http_get`] waits for an answer. The longest the copies had (the first answer
/// after a restore from the cold tier may be slow; it is a measurement, not a failure).
const HTTP_READ_LIMIT: Duration = Duration::from_secs(30);

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("127.0.0.1:0", e))?;
    Ok(l.local_addr()
        .map_err(|e| Error::io("127.0.0.1:0", e))?
        .port())
}

/// `GET path` over HTTP/1.0 on loopback `port`; the body of a `200` answer.
pub fn http_get(port: u16, path: &str) -> Result<String> {
    let url = || format!("http://127.0.0.1:{port}{path}");
    let answer = || -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(HTTP_READ_LIMIT))?;
        // One write: a request in pieces may reach a server that reads once, answers and closes.
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    let out = answer().map_err(|source| Error::HttpGet { url: url(), source })?;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(body.to_string())
        }
        _ => Err(Error::BadHttpAnswer {
            url: url(),
            answer: out.chars().take(200).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot server on a free port answering `answer` to the first request.
    fn serve_once(answer: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            // The whole request: closing with some of it unread would reset the connection.
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            conn.write_all(answer.as_bytes()).unwrap();
        });
        port
    }

    #[test]
    fn a_200_answer_gives_its_body() {
        let port = serve_once("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n42");
        assert_eq!(http_get(port, "/inc").unwrap(), "42");
    }

    #[test]
    fn another_status_or_no_http_at_all_is_an_error_naming_the_url() {
        let port = serve_once("HTTP/1.0 404 Not Found\r\n\r\nnope");
        let e = http_get(port, "/x").unwrap_err().to_string();
        assert!(e.contains(&format!("http://127.0.0.1:{port}/x")), "{e}");
        let port = serve_once("hello 200 \r\n\r\nbody");
        assert!(matches!(
            http_get(port, "/"),
            Err(Error::BadHttpAnswer { .. })
        ));
    }

    #[test]
    fn a_free_port_has_no_listener() {
        let port = free_port().unwrap();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
