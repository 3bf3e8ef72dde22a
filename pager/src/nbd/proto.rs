//! The NBD wire format: constants, the fixed-size headers, and decoders for what clients send.
//!
//! Everything here is pure (no I/O), so the decoders can be unit-tested and fuzzed on their own.
//! Constants and layouts follow doc/proto.md of the NetworkBlockDevice project; all integers on the
//! wire are big-endian.

use bytes::{BufMut, Bytes, BytesMut};

/// `NBDMAGIC`, the first eight bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: starts the newstyle handshake and every option request.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of a transmission-phase request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Transmission flags.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_FUA: u16 = 1 << 3;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const FLAG_SEND_DF: u16 = 1 << 7;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const OPT_EXTENDED_HEADERS: u32 = 11;

// Option reply types.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
const REP_ERR: u32 = 1 << 31;
pub const REP_ERR_UNSUP: u32 = REP_ERR | 1;
pub const REP_ERR_POLICY: u32 = REP_ERR | 2;
pub const REP_ERR_INVALID: u32 = REP_ERR | 3;
pub const REP_ERR_TLS_REQD: u32 = REP_ERR | 5;
pub const REP_ERR_UNKNOWN: u32 = REP_ERR | 6;
pub const REP_ERR_TOO_BIG: u32 = REP_ERR | 9;

// Info types (NBD_OPT_INFO / NBD_OPT_GO).
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;
pub const CMD_FLAG_PAYLOAD_LEN: u16 = 1 << 5;

// Structured reply chunk flags and types.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) | 1;

// Errors carried in replies (errno values fixed by the protocol).
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const ENOMEM: u32 = 12;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ENOTSUP: u32 = 95;
pub const ESHUTDOWN: u32 = 108;

// `base:allocation` status flags.
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

/// The only metadata context we serve.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The id we give `base:allocation` when a client selects it.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// Length of a request header.
pub const REQUEST_LEN: usize = 28;
/// Length of an option request header (after which `len` bytes of data follow).
pub const OPTION_HEADER_LEN: usize = 16;
/// Largest option payload we read; longer ones are drained and refused with `ERR_TOO_BIG`.
pub const MAX_OPTION_LEN: u32 = 64 * 1024;
/// Largest export name we accept (the spec lets servers refuse names over 4096 bytes).
pub const MAX_NAME_LEN: usize = 4096;
/// Block sizes we advertise: any byte alignment works, pages are best, 32 MiB at most per request.
pub const MIN_BLOCK: u32 = 1;
pub const PREFERRED_BLOCK: u32 = 4096;
pub const MAX_BLOCK: u32 = 32 * 1024 * 1024;

/// Why bytes from a client could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    Truncated,
    /// A magic number was wrong: the peer does not speak NBD (or lost framing).
    BadMagic(u64),
    /// Well-framed but invalid content.
    Invalid(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("truncated"),
            DecodeError::BadMagic(m) => write!(f, "bad magic {m:#x}"),
            DecodeError::Invalid(why) => f.write_str(why),
        }
    }
}

fn be_u16(b: &[u8], at: usize) -> Result<u16, DecodeError> {
    let s = b.get(at..at + 2).ok_or(DecodeError::Truncated)?;
    Ok(u16::from_be_bytes([s[0], s[1]]))
}

fn be_u32(b: &[u8], at: usize) -> Result<u32, DecodeError> {
    let s = b.get(at..at + 4).ok_or(DecodeError::Truncated)?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be_u64(b: &[u8], at: usize) -> Result<u64, DecodeError> {
    let s = b.get(at..at + 8).ok_or(DecodeError::Truncated)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_be_bytes(a))
}

/// An option request header: `IHAVEOPT | option u32 | length u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub len: u32,
}

impl OptionHeader {
    pub fn decode(b: &[u8]) -> Result<OptionHeader, DecodeError> {
        let magic = be_u64(b, 0)?;
        if magic != IHAVEOPT {
            return Err(DecodeError::BadMagic(magic));
        }
        Ok(OptionHeader {
            option: be_u32(b, 8)?,
            len: be_u32(b, 12)?,
        })
    }
}

/// The payload of `NBD_OPT_INFO` / `NBD_OPT_GO`: an export name and the info types asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub infos: Vec<u16>,
}

/// Reads a `u32 length | bytes` string starting at `*at`, advancing `*at`.
fn string_at(b: &[u8], at: &mut usize) -> Result<String, DecodeError> {
    let n = be_u32(b, *at)? as usize;
    if n > MAX_NAME_LEN {
        return Err(DecodeError::Invalid("name longer than 4096 bytes"));
    }
    let start = *at + 4;
    let s = b.get(start..start + n).ok_or(DecodeError::Truncated)?;
    *at = start + n;
    String::from_utf8(s.to_vec()).map_err(|_| DecodeError::Invalid("name is not UTF-8"))
}

impl InfoRequest {
    pub fn decode(b: &[u8]) -> Result<InfoRequest, DecodeError> {
        let mut at = 0;
        let name = string_at(b, &mut at)?;
        let n = be_u16(b, at)? as usize;
        at += 2;
        if b.len() != at + 2 * n {
            return Err(if b.len() < at + 2 * n {
                DecodeError::Truncated
            } else {
                DecodeError::Invalid("trailing bytes after info requests")
            });
        }
        let infos = (0..n)
            .map(|i| be_u16(b, at + 2 * i))
            .collect::<Result<_, _>>()?;
        Ok(InfoRequest { name, infos })
    }
}

/// The payload of `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaContextRequest {
    pub export: String,
    pub queries: Vec<String>,
}

impl MetaContextRequest {
    pub fn decode(b: &[u8]) -> Result<MetaContextRequest, DecodeError> {
        let mut at = 0;
        let export = string_at(b, &mut at)?;
        let n = be_u32(b, at)? as usize;
        at += 4;
        // Each query needs at least its 4-byte length: refuse counts the payload cannot hold.
        if n > (b.len() - at.min(b.len())) / 4 {
            return Err(DecodeError::Truncated);
        }
        let mut queries = Vec::with_capacity(n);
        for _ in 0..n {
            queries.push(string_at(b, &mut at)?);
        }
        if at != b.len() {
            return Err(DecodeError::Invalid(
                "trailing bytes after meta context queries",
            ));
        }
        Ok(MetaContextRequest { export, queries })
    }
}

/// A transmission-phase request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: u16,
    pub cookie: u64,
    pub offset: u64,
    pub len: u32,
}

impl Request {
    pub fn decode(b: &[u8]) -> Result<Request, DecodeError> {
        if b.len() < REQUEST_LEN {
            return Err(DecodeError::Truncated);
        }
        let magic = be_u32(b, 0)?;
        if magic != REQUEST_MAGIC {
            return Err(DecodeError::BadMagic(u64::from(magic)));
        }
        Ok(Request {
            flags: be_u16(b, 4)?,
            command: be_u16(b, 6)?,
            cookie: be_u64(b, 8)?,
            offset: be_u64(b, 16)?,
            len: be_u32(b, 24)?,
        })
    }

    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.command.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    /// Bytes of payload that follow the header on the wire.
    pub fn payload_len(&self) -> u32 {
        if self.command == CMD_WRITE {
            self.len
        } else {
            0
        }
    }
}

/// The server's opening bytes of the fixed newstyle handshake.
pub fn greeting() -> [u8; 18] {
    let mut b = [0u8; 18];
    b[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    b[16..18].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    b
}

/// One option reply: `REPLY_MAGIC | option | type | length | data`.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(20 + data.len());
    b.put_u64(REPLY_MAGIC);
    b.put_u32(option);
    b.put_u32(reply);
    b.put_u32(data.len() as u32);
    b.put_slice(data);
    b.freeze()
}

/// `NBD_REP_INFO` carrying `NBD_INFO_EXPORT`.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b
}

/// `NBD_REP_INFO` carrying `NBD_INFO_BLOCK_SIZE`.
pub fn info_block_size() -> Vec<u8> {
    let mut b = Vec::with_capacity(14);
    b.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    b.extend_from_slice(&MIN_BLOCK.to_be_bytes());
    b.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
    b.extend_from_slice(&MAX_BLOCK.to_be_bytes());
    b
}

/// `NBD_REP_INFO` carrying `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`.
pub fn info_text(kind: u16, text: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(2 + text.len());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(text.as_bytes());
    b
}

/// `NBD_REP_SERVER`: one export in a listing.
pub fn server_entry(name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + name.len());
    b.extend_from_slice(&(name.len() as u32).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b
}

/// `NBD_REP_META_CONTEXT`: a context id and its name.
pub fn meta_context(id: u32, name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + name.len());
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b
}

/// A simple reply header.
pub fn simple_reply(cookie: u64, error: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// A structured reply chunk header; `len` bytes of chunk payload follow.
pub fn chunk_header(b: &mut BytesMut, flags: u16, kind: u16, cookie: u64, len: u32) {
    b.put_u32(STRUCTURED_REPLY_MAGIC);
    b.put_u16(flags);
    b.put_u16(kind);
    b.put_u64(cookie);
    b.put_u32(len);
}

/// An `NBD_REPLY_TYPE_ERROR` chunk (always the last of its reply here).
pub fn error_chunk(b: &mut BytesMut, cookie: u64, error: u32, message: &str) {
    let message = &message.as_bytes()[..message.len().min(1024)];
    chunk_header(
        b,
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        cookie,
        6 + message.len() as u32,
    );
    b.put_u32(error);
    b.put_u16(message.len() as u16);
    b.put_slice(message);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option_bytes(option: u32, data: &[u8]) -> Vec<u8> {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn request_round_trips() {
        let r = Request {
            flags: CMD_FLAG_DF,
            command: CMD_READ,
            cookie: 0xdead_beef,
            offset: 4096,
            len: 512,
        };
        assert_eq!(Request::decode(&r.encode()), Ok(r));
        assert_eq!(r.payload_len(), 0);
        let w = Request {
            command: CMD_WRITE,
            ..r
        };
        assert_eq!(w.payload_len(), 512);
    }

    #[test]
    fn request_needs_its_magic_and_all_28_bytes() {
        let r = Request {
            flags: 0,
            command: CMD_READ,
            cookie: 1,
            offset: 0,
            len: 1,
        }
        .encode();
        for n in 0..REQUEST_LEN {
            assert_eq!(Request::decode(&r[..n]), Err(DecodeError::Truncated));
        }
        let mut bad = r;
        bad[0] ^= 0xff;
        assert!(matches!(
            Request::decode(&bad),
            Err(DecodeError::BadMagic(_))
        ));
    }

    #[test]
    fn option_header_decodes() {
        let b = option_bytes(OPT_GO, b"abc");
        assert_eq!(
            OptionHeader::decode(&b[..16]),
            Ok(OptionHeader {
                option: OPT_GO,
                len: 3
            })
        );
        assert_eq!(OptionHeader::decode(&b[..15]), Err(DecodeError::Truncated));
        assert!(matches!(
            OptionHeader::decode(&[0u8; 16]),
            Err(DecodeError::BadMagic(0))
        ));
    }

    #[test]
    fn info_request_decodes_and_rejects_bad_lengths() {
        let mut b = 3u32.to_be_bytes().to_vec();
        b.extend_from_slice(b"a/b");
        b.extend_from_slice(&2u16.to_be_bytes());
        b.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        b.extend_from_slice(&INFO_NAME.to_be_bytes());
        assert_eq!(
            InfoRequest::decode(&b),
            Ok(InfoRequest {
                name: "a/b".into(),
                infos: vec![INFO_BLOCK_SIZE, INFO_NAME]
            })
        );
        for n in 0..b.len() {
            assert!(InfoRequest::decode(&b[..n]).is_err(), "{n} bytes decoded");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(
            InfoRequest::decode(&long),
            Err(DecodeError::Invalid(_))
        ));
        // A name length far beyond the payload.
        let mut huge = u32::MAX.to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 4]);
        assert!(InfoRequest::decode(&huge).is_err());
    }

    #[test]
    fn meta_context_request_decodes() {
        let mut b = 0u32.to_be_bytes().to_vec();
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&(BASE_ALLOCATION.len() as u32).to_be_bytes());
        b.extend_from_slice(BASE_ALLOCATION.as_bytes());
        assert_eq!(
            MetaContextRequest::decode(&b),
            Ok(MetaContextRequest {
                export: String::new(),
                queries: vec![BASE_ALLOCATION.into()]
            })
        );
        for n in 0..b.len() {
            assert!(MetaContextRequest::decode(&b[..n]).is_err());
        }
        // A query count the payload cannot hold is refused before allocating.
        let mut many = 0u32.to_be_bytes().to_vec();
        many.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            MetaContextRequest::decode(&many),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn greeting_and_replies_have_the_spec_layout() {
        let g = greeting();
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        let r = option_reply(OPT_LIST, REP_ACK, &[]);
        assert_eq!(r.len(), 20);
        assert_eq!(&r[..8], &REPLY_MAGIC.to_be_bytes());
        let s = simple_reply(7, EINVAL);
        assert_eq!(&s[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&s[4..8], &22u32.to_be_bytes());
        let mut c = BytesMut::new();
        error_chunk(&mut c, 9, EIO, "boom");
        assert_eq!(c.len(), 20 + 6 + 4);
    }
}
