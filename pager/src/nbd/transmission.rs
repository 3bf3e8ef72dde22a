//! The transmission phase of one connection: requests in, replies out, out of order.
//!
//! One reader loop decodes requests (and WRITE payloads) and hands each to its own task, so a slow
//! cold-tier fetch never holds up the requests behind it; at most [`MAX_IN_FLIGHT`] run at once.
//! Each task builds its whole reply as a list of buffers (headers plus cached pages, never copied)
//! and writes it with vectored writes under the connection's write lock, so replies never
//! interleave. Anything that breaks framing (bad magic, truncated header, a WRITE too large to
//! buffer) closes this connection only; a bad request that keeps framing gets the protocol's error.

use std::io::IoSlice;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, Semaphore};
use tracing::{debug, warn};

use super::export::{Export, Page, Piece};
use super::handshake::Negotiated;
use super::proto::*;
use crate::error::{Error, Result};

/// Requests one connection may have in flight.
pub const MAX_IN_FLIGHT: usize = 64;
/// Memory the requests in flight on one connection may hold (payloads and read data), in KiB:
/// two maximum-size requests, so 64 of them cannot pin 2 GiB.
pub const MAX_IN_FLIGHT_KIB: u32 = 2 * MAX_BLOCK / 1024;
/// Immediate replies batched into one write at most.
const MAX_BATCH_BYTES: usize = 256 * 1024;

const KNOWN_FLAGS: u16 =
    CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_DF | CMD_FLAG_REQ_ONE | CMD_FLAG_FAST_ZERO;

/// Serves requests until the client disconnects (NBD_CMD_DISC or EOF) or breaks framing.
pub async fn serve<R, W>(reader: R, writer: W, export: Arc<Export>, neg: Negotiated) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let out = Arc::new(Mutex::new(writer));
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let memory = Arc::new(Semaphore::new(MAX_IN_FLIGHT_KIB as usize));
    let neg = Arc::new(neg);
    // Immediate replies not yet sent: while more requests sit in the read buffer (a pipelining
    // client), replies are batched into one vectored write; a lone request is answered at once.
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_bytes = 0;
    loop {
        if !pending.is_empty()
            && (reader.buffer().len() < REQUEST_LEN || pending_bytes >= MAX_BATCH_BYTES)
        {
            let mut w = out.lock().await;
            let sent = write_all_vectored(&mut *w, &pending).await;
            pending.clear();
            pending_bytes = 0;
            if let Err(e) = sent {
                debug!(error = %e, "could not send a reply; client gone");
                break;
            }
        }
        let mut head = [0u8; REQUEST_LEN];
        match reader.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                debug!("client closed the connection without NBD_CMD_DISC");
                break;
            }
            Err(e) => return Err(socket(e)),
        }
        let req =
            Request::decode(&head).map_err(|e| Error::NbdProtocol(format!("request: {e}")))?;
        if req.command == CMD_DISC {
            // Let every request in flight finish and send its reply first.
            let mut w = out.lock().await;
            let _ = write_all_vectored(&mut *w, &pending).await;
            drop(w);
            let _all = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
            debug!("client disconnected");
            break;
        }
        let payload_len = req.payload_len();
        if payload_len > MAX_BLOCK {
            return Err(Error::NbdProtocol(format!(
                "WRITE of {payload_len} bytes exceeds the {MAX_BLOCK}-byte maximum"
            )));
        }
        if payload_len == 0 {
            if let Some(reply) = immediate(&export, &neg, req) {
                pending_bytes += reply.iter().map(Bytes::len).sum::<usize>();
                pending.extend(reply);
                continue;
            }
        }
        // A request holds up to its length in memory (payload, or pages read for the reply):
        // take that much of the connection's budget before reading its payload.
        let kib = match req.command {
            CMD_READ | CMD_WRITE => req.len.min(MAX_BLOCK).div_ceil(1024).max(1),
            _ => 1,
        };
        let closed = |_| Error::NbdProtocol("request slots closed".into());
        let memory_permit = memory
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(closed)?;
        let permit = slots.clone().acquire_owned().await.map_err(closed)?;
        let payload = if payload_len > 0 {
            let mut buf = vec![0u8; payload_len as usize];
            reader.read_exact(&mut buf).await.map_err(socket)?;
            Some(buf)
        } else {
            None
        };
        let (export, neg, out) = (export.clone(), neg.clone(), out.clone());
        tokio::spawn(async move {
            let reply = handle(&export, &neg, req, payload).await;
            let mut w = out.lock().await;
            if let Err(e) = write_all_vectored(&mut *w, &reply).await {
                debug!(error = %e, "could not send a reply; client gone");
            }
            drop((permit, memory_permit));
        });
    }
    let mut w = out.lock().await;
    let _ = w.shutdown().await;
    Ok(())
}

fn socket(source: std::io::Error) -> Error {
    Error::NbdSocket {
        during: "reading a request",
        source,
    }
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    bufs: &[Bytes],
) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| IoSlice::new(b))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    w.flush().await
}

fn in_range(offset: u64, len: u32, size: u64) -> bool {
    offset
        .checked_add(u64::from(len))
        .is_some_and(|end| end <= size)
}

/// Why a read or block status request must be refused, if it must.
fn refuse(neg: &Negotiated, req: Request, size: u64) -> Option<(u32, &'static str)> {
    if req.flags & !KNOWN_FLAGS != 0 {
        return Some((EINVAL, "unknown command flags"));
    }
    match req.command {
        CMD_READ if req.flags & CMD_FLAG_DF != 0 && !neg.structured => {
            Some((EINVAL, "NBD_CMD_FLAG_DF needs structured replies"))
        }
        CMD_READ if !in_range(req.offset, req.len, size) => {
            Some((EINVAL, "read beyond the end of the export"))
        }
        CMD_READ if req.len > MAX_BLOCK => {
            Some((EINVAL, "read larger than the maximum block size"))
        }
        CMD_BLOCK_STATUS if !neg.structured || !neg.base_allocation => {
            Some((EINVAL, "no metadata context negotiated"))
        }
        CMD_BLOCK_STATUS if req.len == 0 || !in_range(req.offset, req.len, size) => {
            Some((EINVAL, "block status range is empty or beyond the end"))
        }
        _ => None,
    }
}

/// The reply to a request that needs no waiting: refusals, block status, and reads wholly in
/// memory. `None`: the request must wait for the store (or is a write): give it a task.
fn immediate(export: &Export, neg: &Negotiated, req: Request) -> Option<Vec<Bytes>> {
    if !matches!(req.command, CMD_READ | CMD_BLOCK_STATUS) {
        return None;
    }
    if let Some((code, msg)) = refuse(neg, req, export.size()) {
        return Some(error_reply(neg, req, code, msg));
    }
    if req.command == CMD_BLOCK_STATUS {
        return Some(block_status_reply(export, req));
    }
    if req.len == 0 {
        return Some(ok_empty(neg, req));
    }
    let pieces = export.read_now(req.offset, u64::from(req.len))?;
    Some(read_reply(neg, req, pieces))
}

fn block_status_reply(export: &Export, req: Request) -> Vec<Bytes> {
    let extents = export.extents(
        req.offset,
        u64::from(req.len),
        req.flags & CMD_FLAG_REQ_ONE != 0,
    );
    let mut b = BytesMut::with_capacity(24 + 8 * extents.len());
    chunk_header(
        &mut b,
        REPLY_FLAG_DONE,
        REPLY_TYPE_BLOCK_STATUS,
        req.cookie,
        4 + 8 * extents.len() as u32,
    );
    b.put_u32(BASE_ALLOCATION_ID);
    for (len, zero) in extents {
        b.put_u32(len as u32);
        b.put_u32(if zero { STATE_HOLE | STATE_ZERO } else { 0 });
    }
    vec![b.freeze()]
}

/// Builds the complete reply to one request.
async fn handle(
    export: &Export,
    neg: &Negotiated,
    req: Request,
    payload: Option<Vec<u8>>,
) -> Vec<Bytes> {
    let err = |code: u32, msg: &str| error_reply(neg, req, code, msg);
    if let Some((code, msg)) = refuse(neg, req, export.size()) {
        return err(code, msg);
    }
    let size = export.size();
    match req.command {
        CMD_READ => {
            if req.len == 0 {
                return ok_empty(neg, req);
            }
            match export.read(req.offset, u64::from(req.len)).await {
                Ok(pieces) => read_reply(neg, req, pieces),
                Err(e) => {
                    warn!(export = export.name(), offset = req.offset, len = req.len, error = %e, "read failed");
                    err(EIO, "read from the page store failed")
                }
            }
        }
        CMD_WRITE | CMD_WRITE_ZEROES | CMD_TRIM => {
            if !export.writable() {
                return err(EPERM, "export is read-only");
            }
            if !in_range(req.offset, req.len, size) {
                return err(ENOSPC, "write beyond the end of the export");
            }
            if req.flags & CMD_FLAG_FAST_ZERO != 0 && req.command == CMD_WRITE_ZEROES {
                // Zeroing is as fast as it gets here, but we do not advertise fast zero.
                return err(ENOTSUP, "fast zero not offered");
            }
            let data = payload.as_deref();
            match export.write(req.offset, data, u64::from(req.len)).await {
                Ok(()) => simple(req, 0),
                Err(e) => {
                    warn!(export = export.name(), error = %e, "write failed");
                    err(EIO, "write failed")
                }
            }
        }
        CMD_FLUSH => match export.flush().await {
            Ok(_) => simple(req, 0),
            Err(e) => {
                warn!(export = export.name(), error = %e, "flush failed: nothing committed");
                err(EIO, "flush failed")
            }
        },
        CMD_BLOCK_STATUS => block_status_reply(export, req),
        CMD_CACHE => simple(req, 0),
        _ => err(EINVAL, "unknown command"),
    }
}

fn simple(req: Request, code: u32) -> Vec<Bytes> {
    vec![Bytes::copy_from_slice(&simple_reply(req.cookie, code))]
}

fn ok_empty(neg: &Negotiated, req: Request) -> Vec<Bytes> {
    if neg.structured {
        let mut b = BytesMut::with_capacity(20);
        chunk_header(&mut b, REPLY_FLAG_DONE, REPLY_TYPE_NONE, req.cookie, 0);
        vec![b.freeze()]
    } else {
        simple(req, 0)
    }
}

fn error_reply(neg: &Negotiated, req: Request, code: u32, msg: &str) -> Vec<Bytes> {
    debug!(
        command = req.command,
        offset = req.offset,
        len = req.len,
        code,
        msg,
        "request refused"
    );
    if neg.structured && matches!(req.command, CMD_READ | CMD_BLOCK_STATUS) {
        let mut b = BytesMut::with_capacity(32 + msg.len());
        error_chunk(&mut b, req.cookie, code, msg);
        vec![b.freeze()]
    } else {
        simple(req, code)
    }
}

fn slice(p: &Piece) -> Bytes {
    p.page.bytes().slice(p.from..p.from + p.len)
}

/// A successful read: plain data after a simple reply, or structured chunks where runs of zero
/// pages become holes (unless the client asked for one unfragmented data chunk).
fn read_reply(neg: &Negotiated, req: Request, pieces: Vec<Piece>) -> Vec<Bytes> {
    if !neg.structured {
        let mut out = Vec::with_capacity(pieces.len() + 1);
        out.push(Bytes::copy_from_slice(&simple_reply(req.cookie, 0)));
        out.extend(pieces.iter().map(slice));
        return out;
    }
    let whole = req.flags & CMD_FLAG_DF != 0;
    // Group into runs: (is_hole, first piece, last piece exclusive, bytes).
    let mut runs: Vec<(bool, usize, usize, u64)> = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let hole = !whole && matches!(p.page, Page::Zero);
        match runs.last_mut() {
            Some((h, _, end, n)) if *h == hole => {
                *end = i + 1;
                *n += p.len as u64;
            }
            _ => runs.push((hole, i, i + 1, p.len as u64)),
        }
    }
    let mut out = Vec::with_capacity(pieces.len() + 2 * runs.len());
    let mut offset = req.offset;
    let last = runs.len().saturating_sub(1);
    for (k, (hole, from, to, n)) in runs.into_iter().enumerate() {
        let flags = if k == last { REPLY_FLAG_DONE } else { 0 };
        let mut h = BytesMut::with_capacity(32);
        if hole {
            chunk_header(&mut h, flags, REPLY_TYPE_OFFSET_HOLE, req.cookie, 12);
            h.put_u64(offset);
            h.put_u32(n as u32);
            out.push(h.freeze());
        } else {
            chunk_header(
                &mut h,
                flags,
                REPLY_TYPE_OFFSET_DATA,
                req.cookie,
                8 + n as u32,
            );
            h.put_u64(offset);
            out.push(h.freeze());
            out.extend(pieces[from..to].iter().map(slice));
        }
        offset += n;
    }
    out
}
