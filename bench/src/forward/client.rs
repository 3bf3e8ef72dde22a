//! The benchmark's HTTP/1.1 client: one request at a time, timed from the request's first byte
//! (or the connect) to the answer's last byte. Hand-written so that both sides of the
//! comparison pay exactly the same client costs: no pooling, no buffering of its own, and a body
//! read straight into one scratch buffer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long one read may wait: a stuck server fails the run instead of hanging it.
const READ_LIMIT: Duration = Duration::from_secs(30);

/// Scratch buffer of a transfer: large enough that a read is never the client's bottleneck.
const TRANSFER_BUFFER: usize = 256 * 1024;

/// Scratch buffer of a small request: the head and a small body fit in one read.
const SMALL_BUFFER: usize = 16 * 1024;

/// The body length of a `200` answer's head (status line and headers, without the blank line);
/// the answer must carry a `Content-Length` (nginx's static files do).
pub fn parse_head(head: &[u8]) -> std::result::Result<u64, String> {
    let head =
        std::str::from_utf8(head).map_err(|_| "the answer's head is not UTF-8".to_string())?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut words = status.split(' ');
    if !words.next().is_some_and(|v| v.starts_with("HTTP/1.")) || words.next() != Some("200") {
        return Err(format!("not a 200 answer: {status:?}"));
    }
    lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .ok_or_else(|| "the answer has no Content-Length".to_string())?
        .1
        .trim()
        .parse()
        .map_err(|_| "the answer's Content-Length is not a number".to_string())
}

/// Reads one whole answer from `stream` (never a byte past its body, so that the next answer on
/// a kept-alive connection starts clean); its body length.
pub fn read_answer(stream: &mut impl Read, buf: &mut [u8]) -> std::io::Result<u64> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut filled = 0;
    let head_end = loop {
        if filled == buf.len() {
            return Err(invalid("the answer's head does not fit the buffer".into()));
        }
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // The blank line may straddle two reads: look a little before the new bytes too.
        let from = filled.saturating_sub(3);
        filled += n;
        if let Some(at) = buf[from..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break from + at;
        }
    };
    let length = parse_head(&buf[..head_end]).map_err(invalid)?;
    let early = (filled - head_end - 4) as u64;
    if early > length {
        return Err(invalid(format!(
            "{early} bytes came after a body of {length} (an answer nobody asked for)"
        )));
    }
    let mut left = length - early;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = stream.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        left -= n as u64;
    }
    Ok(length)
}

fn request(path: &str, close: bool) -> Vec<u8> {
    let connection = if close { "close" } else { "keep-alive" };
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\n\r\n")
        .into_bytes()
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(READ_LIMIT))?;
    Ok(s)
}

/// Names the request in an I/O error.
fn failed(port: u16, path: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::HttpGet {
        url: format!("http://127.0.0.1:{port}{path}"),
        source,
    }
}

/// Checks a body's length against the file served.
fn check(port: u16, path: &str, got: u64, expected: u64) -> Result<()> {
    if got == expected {
        return Ok(());
    }
    Err(Error::Client(format!(
        "http://127.0.0.1:{port}{path}: a body of {got} bytes, {expected} expected"
    )))
}

/// `warmup` untimed then `n` timed requests for `path` on one kept-alive connection.
pub fn keep_alive(
    port: u16,
    path: &str,
    expected: u64,
    warmup: usize,
    n: usize,
) -> Result<Vec<Duration>> {
    let err = failed(port, path);
    let mut stream = connect(port).map_err(&err)?;
    let req = request(path, false);
    let mut buf = vec![0u8; SMALL_BUFFER];
    let mut samples = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let started = Instant::now();
        stream.write_all(&req).map_err(&err)?;
        let got = read_answer(&mut stream, &mut buf).map_err(&err)?;
        let took = started.elapsed();
        check(port, path, got, expected)?;
        if i >= warmup {
            samples.push(took);
        }
    }
    Ok(samples)
}

/// `warmup` untimed then `n` timed requests for `path`, each on a connection of its own, timed
/// from the connect to the answer's last byte.
pub fn per_connection(
    port: u16,
    path: &str,
    expected: u64,
    warmup: usize,
    n: usize,
) -> Result<Vec<Duration>> {
    let err = failed(port, path);
    let req = request(path, true);
    let mut buf = vec![0u8; SMALL_BUFFER];
    let mut samples = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let started = Instant::now();
        let mut stream = connect(port).map_err(&err)?;
        stream.write_all(&req).map_err(&err)?;
        let got = read_answer(&mut stream, &mut buf).map_err(&err)?;
        let took = started.elapsed();
        check(port, path, got, expected)?;
        if i >= warmup {
            samples.push(took);
        }
    }
    Ok(samples)
}

/// One request for the large file on a fresh connection, timed from the connect to the body's
/// last byte.
pub fn transfer(port: u16, path: &str, expected: u64) -> Result<Duration> {
    let err = failed(port, path);
    let mut buf = vec![0u8; TRANSFER_BUFFER];
    let started = Instant::now();
    let mut stream = connect(port).map_err(&err)?;
    stream.write_all(&request(path, true)).map_err(&err)?;
    let got = read_answer(&mut stream, &mut buf).map_err(&err)?;
    let took = started.elapsed();
    check(port, path, got, expected)?;
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader handing out its bytes in the given pieces, as a socket may.
    struct Pieces(Vec<Vec<u8>>);

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some(piece) = self.0.first_mut() else {
                return Ok(0);
            };
            let n = piece.len().min(buf.len());
            buf[..n].copy_from_slice(&piece[..n]);
            piece.drain(..n);
            if piece.is_empty() {
                self.0.remove(0);
            }
            Ok(n)
        }
    }

    fn pieces(parts: &[&str]) -> Pieces {
        Pieces(parts.iter().map(|p| p.as_bytes().to_vec()).collect())
    }

    #[test]
    fn the_head_gives_the_body_length() {
        let head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length: 12";
        assert_eq!(parse_head(head), Ok(12));
        assert!(parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nServer: x").is_err());
        assert!(parse_head(b"SSH-2.0 200 x").is_err());
    }

    #[test]
    fn an_answer_is_read_to_its_last_byte_and_no_further() {
        let mut s = pieces(&[
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r",
            "\n\r\nhel",
            "lo",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ]);
        let mut buf = vec![0u8; 64];
        assert_eq!(read_answer(&mut s, &mut buf).unwrap(), 5);
        assert_eq!(read_answer(&mut s, &mut buf).unwrap(), 2);
        assert_eq!(
            read_answer(&mut s, &mut buf).unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn a_body_larger_than_the_buffer_is_read_in_pieces() {
        let body = "x".repeat(1000);
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{body}");
        let mut buf = vec![0u8; 100];
        assert_eq!(
            read_answer(&mut pieces(&[&answer]), &mut buf).unwrap(),
            1000
        );
        let short = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert!(read_answer(&mut pieces(&[short]), &mut buf).is_err());
        let extra = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nabc";
        assert!(read_answer(&mut pieces(&[extra]), &mut buf).is_err());
    }
}
