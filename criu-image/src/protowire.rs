//! Protobuf's wire format, the little of it that CRIU's image files and its RPC use, written
//! and read by hand: a few varint, length-delimited and fixed fields do not warrant a protobuf
//! toolchain (encoding as in <https://protobuf.dev/programming-guides/encoding/>). The pagemap
//! rewriting ([`crate::pagemap`]) and the worker's restore requests to a warm CRIU both go
//! through it.

use crate::error::{Error, Result};

pub const VARINT: u64 = 0;
pub const FIXED64: u64 = 1;
pub const LEN: u64 = 2;
pub const FIXED32: u64 = 5;

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn put_key(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

/// An unsigned varint field (`uint32`, `uint64`, an enum).
pub fn put_uint(out: &mut Vec<u8>, field: u64, v: u64) {
    put_key(out, field, VARINT);
    put_varint(out, v);
}

/// An `int32` field: negative values are sign-extended to 64 bits, as protobuf encodes them.
pub fn put_int32(out: &mut Vec<u8>, field: u64, v: i32) {
    put_uint(out, field, i64::from(v) as u64);
}

pub fn put_bool(out: &mut Vec<u8>, field: u64, v: bool) {
    put_uint(out, field, u64::from(v));
}

/// A length-delimited field: bytes, a string or an embedded message.
pub fn put_bytes(out: &mut Vec<u8>, field: u64, v: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

/// One field's value.
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed32 or fixed64 field (skipped: nothing here reads one).
    Fixed,
}

/// Reads the fields of one message off a buffer, in order.
pub struct Fields<'a> {
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(buf: &'a [u8]) -> Fields<'a> {
        Fields { buf }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or(Error::VarintPastEnd)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(Error::VarintTooLong)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::FieldPastEnd { len: n as u64 });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field number and value; `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            VARINT => Value::Varint(self.varint()?),
            LEN => {
                let n = self.varint()?;
                Value::Bytes(
                    self.take(usize::try_from(n).map_err(|_| Error::FieldPastEnd { len: n })?)?,
                )
            }
            FIXED64 => {
                self.take(8)?;
                Value::Fixed
            }
            FIXED32 => {
                self.take(4)?;
                Value::Fixed
            }
            wire => return Err(Error::WireType(wire)),
        };
        Ok(Some((key >> 3, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_written_are_read_back() {
        let mut msg = Vec::new();
        put_uint(&mut msg, 1, 300);
        put_int32(&mut msg, 2, -1);
        put_bytes(&mut msg, 68, b"/i");
        put_bool(&mut msg, 48, true);
        let mut fields = Fields::new(&msg);
        let mut got = Vec::new();
        while let Some((field, value)) = fields.next_field().unwrap() {
            got.push(match value {
                Value::Varint(v) => (field, v.to_string()),
                Value::Bytes(b) => (field, String::from_utf8_lossy(b).into_owned()),
                Value::Fixed => (field, "fixed".into()),
            });
        }
        let want = [
            (1, "300"),
            (2, &u64::MAX.to_string()[..]),
            (68, "/i"),
            (48, "1"),
        ];
        assert_eq!(
            got,
            want.map(|(f, v)| (f, v.to_string())).to_vec(),
            "in order"
        );
        assert!(
            Fields::new(&[0x08, 0x80]).next_field().is_err(),
            "cut short"
        );
    }
}
