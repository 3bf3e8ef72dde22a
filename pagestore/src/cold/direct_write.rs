//! Writing a new object file around the page cache.
//!
//! An object of the directory cold tier is written once and, on this machine, rarely read back:
//! its pages are in the memory and local tiers. Written through the page cache, every byte is
//! copied into fresh cache pages first, and in a profile of an ingest that copy was a fifth of
//! all CPU time, on the path to the commit. So the block-aligned bulk of the object goes with
//! `O_DIRECT` from a small reused aligned buffer (a cheap copy into memory that is already hot),
//! and only the last partial block through the cache. A filesystem that refuses `O_DIRECT`
//! (tmpfs on older kernels), or any failure of the direct path, gets the plain buffered write:
//! the result is the same file either way. The caller fsyncs.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Alignment of `O_DIRECT` buffers, offsets and lengths: 4096 suits 512-byte and 4 KiB sectors.
const BLOCK: usize = 4096;

/// Bytes written per direct write (the aligned buffer's size).
const SPAN: usize = 1 << 20;

/// Objects smaller than this are written buffered: too little to gain.
const DIRECT_MIN: usize = 64 << 10;

thread_local! {
    /// Each blocking thread's aligned buffer, reused put after put (a fresh one would cost the
    /// page faults the direct write avoids).
    static SPAN_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Creates (or truncates) `path` and writes `data` into it; not fsynced.
pub fn write_new(path: &Path, data: &[u8]) -> std::io::Result<File> {
    if data.len() >= DIRECT_MIN {
        if let Ok(f) = write_direct(path, data) {
            return Ok(f);
        }
    }
    let mut f = File::create(path)?;
    f.write_all(data)?;
    Ok(f)
}

/// The direct path: any error leaves a partial file that [`write_new`] truncates and rewrites.
fn write_direct(path: &Path, data: &[u8]) -> std::io::Result<File> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let bulk = data.len() / BLOCK * BLOCK;
    SPAN_BUF.with(|cell| -> std::io::Result<()> {
        let mut buf = cell.borrow_mut();
        if buf.len() < SPAN + BLOCK {
            buf.resize(SPAN + BLOCK, 0);
        }
        let start = buf.as_ptr().align_offset(BLOCK);
        let aligned = &mut buf[start..start + SPAN];
        for piece in data[..bulk].chunks(SPAN) {
            aligned[..piece.len()].copy_from_slice(piece);
            // A short direct write would leave the next one unaligned: an error, then the
            // buffered path.
            let n = f.write(&aligned[..piece.len()])?;
            if n != piece.len() {
                return Err(std::io::Error::other("short direct write"));
            }
        }
        Ok(())
    })?;
    // The last partial block through the page cache.
    // SAFETY: fcntl on a file descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let rc = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::F_SETFL,
            flags & !libc::O_DIRECT,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    f.write_all(&data[bulk..])?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_every_length_hold_exactly_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0,
            1,
            DIRECT_MIN - 1,
            DIRECT_MIN,
            SPAN,
            SPAN + 1,
            3 * SPAN + BLOCK + 17,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
            let path = dir.path().join(format!("o{len}"));
            // Over an older, longer file: truncated.
            std::fs::write(&path, vec![1u8; len + 5000]).unwrap();
            let f = write_new(&path, &data).unwrap();
            f.sync_all().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), data, "length {len}");
        }
    }
}
