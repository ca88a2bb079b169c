//! Bounds-checked little-endian reading shared by the reader and the lazy value iterators.
//!
//! Every read checks the remaining length first and reports a [`GgufError`] built from a [`Ctx`]
//! only when it fails, so the happy path allocates nothing.

use std::fmt;

use crate::value::ValueType;
use crate::{GgufError, MAX_NESTING};

/// Where the cursor is, for error messages. Rendered only when an error is built.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ctx<'a> {
    /// A header field.
    Header(&'static str),
    /// The key of metadata entry `n` (the key itself is not known yet).
    KeyOf(u64),
    /// The value of a metadata key.
    Key(&'a str),
    /// The name of tensor info `n`.
    TensorNameOf(u64),
    /// The rest of a tensor info.
    Tensor(&'a str),
}

impl fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ctx::Header(field) => write!(f, "header {field}"),
            Ctx::KeyOf(i) => write!(f, "metadata entry {i} key"),
            Ctx::Key(k) => write!(f, "metadata key {k:?}"),
            Ctx::TensorNameOf(i) => write!(f, "tensor info {i} name"),
            Ctx::Tensor(name) => write!(f, "tensor {name}"),
        }
    }
}

impl Ctx<'_> {
    fn key_name(&self) -> String {
        match self {
            Ctx::Key(k) => (*k).to_owned(),
            other => other.to_string(),
        }
    }
}

/// A fixed-size metadata value, decoded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Scalar {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// Decodes a fixed-size value from exactly `ty.fixed_size()` bytes. `None` for strings, arrays
/// and a wrong length. Bools decode as `byte != 0`; callers that validate check 0/1 first.
pub(crate) fn decode_scalar(ty: ValueType, b: &[u8]) -> Option<Scalar> {
    fn arr<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
        b.try_into().ok()
    }
    Some(match ty {
        ValueType::U8 => Scalar::U8(u8::from_le_bytes(arr(b)?)),
        ValueType::I8 => Scalar::I8(i8::from_le_bytes(arr(b)?)),
        ValueType::U16 => Scalar::U16(u16::from_le_bytes(arr(b)?)),
        ValueType::I16 => Scalar::I16(i16::from_le_bytes(arr(b)?)),
        ValueType::U32 => Scalar::U32(u32::from_le_bytes(arr(b)?)),
        ValueType::I32 => Scalar::I32(i32::from_le_bytes(arr(b)?)),
        ValueType::F32 => Scalar::F32(f32::from_le_bytes(arr(b)?)),
        ValueType::Bool => Scalar::Bool(u8::from_le_bytes(arr(b)?) != 0),
        ValueType::U64 => Scalar::U64(u64::from_le_bytes(arr(b)?)),
        ValueType::I64 => Scalar::I64(i64::from_le_bytes(arr(b)?)),
        ValueType::F64 => Scalar::F64(f64::from_le_bytes(arr(b)?)),
        ValueType::String | ValueType::Array => return None,
    })
}

/// An array validated in place: element type, length and the position range of its element bytes
/// in the cursor's buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawArray {
    pub elem: ValueType,
    pub len: usize,
    pub start: usize,
    pub end: usize,
}

/// A read position in a byte buffer. `base` is the absolute file offset of `buf[0]`, for errors.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8], base: u64) -> Self {
        Cursor { buf, pos: 0, base }
    }

    /// Absolute file offset of the position.
    pub fn offset(&self) -> u64 {
        self.base.saturating_add(self.pos as u64)
    }

    /// Bytes left after the position.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes, or a `Truncated` error naming `ctx`.
    pub fn take(&mut self, n: u64, ctx: Ctx<'_>) -> Result<&'a [u8], GgufError> {
        let remaining = self.remaining();
        let slice =
            usize::try_from(n).ok().filter(|&n| n <= remaining).and_then(|n| self.buf.get(self.pos..self.pos + n));
        match slice {
            Some(s) => {
                self.pos += s.len();
                Ok(s)
            }
            None => Err(GgufError::Truncated {
                what: ctx.to_string(),
                offset: self.offset(),
                need: n,
                remaining: remaining as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, ctx: Ctx<'_>) -> Result<[u8; N], GgufError> {
        let b = self.take(N as u64, ctx)?;
        // `take` returned exactly N bytes.
        Ok(b.try_into().unwrap_or([0; N]))
    }

    pub fn u32(&mut self, ctx: Ctx<'_>) -> Result<u32, GgufError> {
        self.array(ctx).map(u32::from_le_bytes)
    }

    pub fn u64(&mut self, ctx: Ctx<'_>) -> Result<u64, GgufError> {
        self.array(ctx).map(u64::from_le_bytes)
    }

    /// A length-prefixed string: returns the absolute offset of its bytes and the bytes.
    pub fn string(&mut self, ctx: Ctx<'_>) -> Result<(u64, &'a [u8]), GgufError> {
        let len_offset = self.offset();
        let len = self.u64(ctx)?;
        let remaining = self.remaining();
        if len > remaining as u64 {
            return Err(GgufError::StringTooLong {
                what: ctx.to_string(),
                offset: len_offset,
                len,
                remaining: remaining as u64,
            });
        }
        let at = self.offset();
        Ok((at, self.take(len, ctx)?))
    }

    /// A value type id.
    pub fn value_type(&mut self, ctx: Ctx<'_>) -> Result<ValueType, GgufError> {
        let offset = self.offset();
        let id = self.u32(ctx)?;
        ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType { what: ctx.to_string(), offset, id })
    }

    /// A fixed-size value of type `ty`, bools checked to be 0 or 1.
    pub fn scalar(&mut self, ty: ValueType, ctx: Ctx<'_>) -> Result<Scalar, GgufError> {
        let size = ty.fixed_size().unwrap_or(0) as u64;
        let offset = self.offset();
        let b = self.take(size, ctx)?;
        if ty == ValueType::Bool {
            check_bools(b, offset, ctx)?;
        }
        Ok(decode_scalar(ty, b).unwrap_or(Scalar::U8(0)))
    }

    /// Reads an array (element type, count, elements), validating every element, and returns
    /// where its elements lie. `depth` is this array's nesting level (1 for a metadata value).
    ///
    /// Work and allocation are bounded by the buffer: the count is checked against the remaining
    /// bytes (every element takes at least one byte) before any element is visited.
    pub fn array_value(&mut self, ctx: Ctx<'_>, depth: usize) -> Result<RawArray, GgufError> {
        if depth > MAX_NESTING {
            return Err(GgufError::NestingTooDeep { key: ctx.key_name(), max: MAX_NESTING });
        }
        let elem = self.value_type(ctx)?;
        let count_offset = self.offset();
        let count = self.u64(ctx)?;
        let min_each = elem.min_size() as u64;
        let remaining = self.remaining() as u64;
        if count > remaining / min_each {
            return Err(GgufError::CountTooLarge {
                what: format!("{ctx} array of {elem}"),
                offset: count_offset,
                count,
                min_each,
                remaining,
            });
        }
        // count <= remaining, so it fits in usize.
        let len = count as usize;
        let start = self.pos;
        match elem.fixed_size() {
            Some(size) => {
                let offset = self.offset();
                let bytes = self.take(count * size as u64, ctx)?;
                if elem == ValueType::Bool {
                    check_bools(bytes, offset, ctx)?;
                }
            }
            None if elem == ValueType::String => self.skip_strings(len, ctx)?,
            None => {
                for _ in 0..len {
                    self.array_value(ctx, depth + 1)?;
                }
            }
        }
        Ok(RawArray { elem, len, start, end: self.pos })
    }

    /// The next length-prefixed string, or `None` (without an error) if it does not fit: the fast
    /// path for iterating strings that were validated at open.
    pub fn next_str(&mut self) -> Option<&'a [u8]> {
        let rest = self.buf.get(self.pos..)?;
        let (len, body) = rest.split_first_chunk::<8>()?;
        let s = body.get(..usize::try_from(u64::from_le_bytes(*len)).ok()?)?;
        self.pos += 8 + s.len();
        Some(s)
    }

    /// Skips `count` length-prefixed strings. A tight loop for vocabularies (hundreds of thousands
    /// of strings); on a bad length it steps back and lets [`string`](Self::string) build the error.
    fn skip_strings(&mut self, count: usize, ctx: Ctx<'_>) -> Result<(), GgufError> {
        let buf = self.buf;
        let mut pos = self.pos;
        for _ in 0..count {
            let next = buf
                .get(pos..)
                .and_then(|rest| rest.first_chunk::<8>().map(|len| (rest.len() - 8, *len)))
                .map(|(after, len)| (after, u64::from_le_bytes(len)))
                .filter(|&(after, len)| len <= after as u64);
            match next {
                Some((_, len)) => pos += 8 + len as usize,
                None => {
                    self.pos = pos;
                    self.string(ctx)?;
                    // Unreachable: `string` fails where the fast path did.
                    return Err(GgufError::Truncated {
                        what: ctx.to_string(),
                        offset: self.offset(),
                        need: 8,
                        remaining: self.remaining() as u64,
                    });
                }
            }
        }
        self.pos = pos;
        Ok(())
    }

    /// The buffer slice `start..end` (empty if out of range).
    pub fn slice(&self, start: usize, end: usize) -> &'a [u8] {
        self.buf.get(start..end).unwrap_or(&[])
    }
}

fn check_bools(b: &[u8], offset: u64, ctx: Ctx<'_>) -> Result<(), GgufError> {
    match b.iter().position(|&v| v > 1) {
        None => Ok(()),
        Some(i) => Err(GgufError::InvalidBool { what: ctx.to_string(), offset: offset + i as u64, value: b[i] }),
    }
}
