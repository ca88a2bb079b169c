//! Metadata values as they lie in the file: [`ValueType`], borrowed [`ValueRef`]s, and lazy
//! views of arrays ([`ArrayRef`], [`StrArray`]).
//!
//! Arrays are validated when the file is opened but decoded only when asked: opening a file with
//! a 200,000-token vocabulary allocates nothing per token.

use std::fmt;
use std::marker::PhantomData;

use crate::GgufError;
use crate::raw::{Ctx, Cursor, Scalar, decode_scalar};
use crate::writer::{Array, Value};

/// A metadata value type, numbered as in the GGUF spec (`gguf_type` in ggml's `gguf.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum ValueType {
    /// `uint8`
    U8 = 0,
    /// `int8`
    I8 = 1,
    /// `uint16`
    U16 = 2,
    /// `int16`
    I16 = 3,
    /// `uint32`
    U32 = 4,
    /// `int32`
    I32 = 5,
    /// `float32`
    F32 = 6,
    /// `bool`, one byte, 0 or 1
    Bool = 7,
    /// length-prefixed byte string (UTF-8 by convention)
    String = 8,
    /// element type, length, elements
    Array = 9,
    /// `uint64`
    U64 = 10,
    /// `int64`
    I64 = 11,
    /// `float64`
    F64 = 12,
}

impl ValueType {
    /// Every value type, in id order.
    pub const ALL: [ValueType; 13] = {
        use ValueType::*;
        [U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64]
    };

    /// The type with GGUF id `id`, or `None` for ids outside 0..=12.
    pub fn from_id(id: u32) -> Option<ValueType> {
        Self::ALL.get(usize::try_from(id).ok()?).copied()
    }

    /// The GGUF id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Short name: `u8 i8 u16 i16 u32 i32 f32 bool string array u64 i64 f64`.
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }

    /// Encoded size of a fixed-size type; `None` for strings and arrays.
    pub fn fixed_size(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// Smallest encoding of one value of this type (a string is at least its 8-byte length, an
    /// array at least its 4-byte type and 8-byte length).
    pub(crate) fn min_size(self) -> usize {
        match self {
            ValueType::String => 8,
            ValueType::Array => 12,
            t => t.fixed_size().unwrap_or(1),
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value borrowed from the file.
///
/// Strings are raw bytes: GGUF says UTF-8 but ggml does not check, so a file with an invalid
/// string still opens; [`ValueRef::as_str`] and the typed getters check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueRef<'a> {
    /// `uint8`
    U8(u8),
    /// `int8`
    I8(i8),
    /// `uint16`
    U16(u16),
    /// `int16`
    I16(i16),
    /// `uint32`
    U32(u32),
    /// `int32`
    I32(i32),
    /// `float32`
    F32(f32),
    /// `bool`
    Bool(bool),
    /// string bytes, without the length prefix
    String(&'a [u8]),
    /// an array (possibly of arrays)
    Array(ArrayRef<'a>),
    /// `uint64`
    U64(u64),
    /// `int64`
    I64(i64),
    /// `float64`
    F64(f64),
}

impl<'a> ValueRef<'a> {
    pub(crate) fn from_scalar(s: Scalar) -> ValueRef<'a> {
        match s {
            Scalar::U8(v) => ValueRef::U8(v),
            Scalar::I8(v) => ValueRef::I8(v),
            Scalar::U16(v) => ValueRef::U16(v),
            Scalar::I16(v) => ValueRef::I16(v),
            Scalar::U32(v) => ValueRef::U32(v),
            Scalar::I32(v) => ValueRef::I32(v),
            Scalar::F32(v) => ValueRef::F32(v),
            Scalar::Bool(v) => ValueRef::Bool(v),
            Scalar::U64(v) => ValueRef::U64(v),
            Scalar::I64(v) => ValueRef::I64(v),
            Scalar::F64(v) => ValueRef::F64(v),
        }
    }

    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            ValueRef::U8(_) => ValueType::U8,
            ValueRef::I8(_) => ValueType::I8,
            ValueRef::U16(_) => ValueType::U16,
            ValueRef::I16(_) => ValueType::I16,
            ValueRef::U32(_) => ValueType::U32,
            ValueRef::I32(_) => ValueType::I32,
            ValueRef::F32(_) => ValueType::F32,
            ValueRef::Bool(_) => ValueType::Bool,
            ValueRef::String(_) => ValueType::String,
            ValueRef::Array(_) => ValueType::Array,
            ValueRef::U64(_) => ValueType::U64,
            ValueRef::I64(_) => ValueType::I64,
            ValueRef::F64(_) => ValueType::F64,
        }
    }

    /// The type as errors print it: `u32`, `string`, `array<string>`, `array<array>`.
    pub fn type_name(&self) -> String {
        match self {
            ValueRef::Array(a) => format!("array<{}>", a.elem_type()),
            v => v.value_type().name().to_owned(),
        }
    }

    /// The value of any integer type, widened to `i128` (lossless); `None` for other types.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            ValueRef::U8(v) => v.into(),
            ValueRef::I8(v) => v.into(),
            ValueRef::U16(v) => v.into(),
            ValueRef::I16(v) => v.into(),
            ValueRef::U32(v) => v.into(),
            ValueRef::I32(v) => v.into(),
            ValueRef::U64(v) => v.into(),
            ValueRef::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The string, if this is a string and valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            ValueRef::String(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The string bytes, if this is a string.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            ValueRef::String(b) => Some(b),
            _ => None,
        }
    }

    /// The array, if this is one.
    pub fn as_array(&self) -> Option<ArrayRef<'a>> {
        match self {
            ValueRef::Array(a) => Some(*a),
            _ => None,
        }
    }

    /// An owned copy, e.g. to copy metadata into a [`GgufWriter`](crate::GgufWriter).
    pub fn to_value(&self) -> Value {
        match *self {
            ValueRef::U8(v) => Value::U8(v),
            ValueRef::I8(v) => Value::I8(v),
            ValueRef::U16(v) => Value::U16(v),
            ValueRef::I16(v) => Value::I16(v),
            ValueRef::U32(v) => Value::U32(v),
            ValueRef::I32(v) => Value::I32(v),
            ValueRef::F32(v) => Value::F32(v),
            ValueRef::Bool(v) => Value::Bool(v),
            ValueRef::String(b) => Value::String(b.to_vec()),
            ValueRef::Array(a) => Value::Array(a.to_array()),
            ValueRef::U64(v) => Value::U64(v),
            ValueRef::I64(v) => Value::I64(v),
            ValueRef::F64(v) => Value::F64(v),
        }
    }
}

/// Prints scalars plainly, strings quoted and escaped (invalid UTF-8 replaced), arrays as
/// `[a, b, …]`. A precision limits the array elements shown: `{:.3}` prints
/// `[1, 2, 3, ... (97 more)]`.
impl fmt::Display for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueRef::U8(v) => write!(f, "{v}"),
            ValueRef::I8(v) => write!(f, "{v}"),
            ValueRef::U16(v) => write!(f, "{v}"),
            ValueRef::I16(v) => write!(f, "{v}"),
            ValueRef::U32(v) => write!(f, "{v}"),
            ValueRef::I32(v) => write!(f, "{v}"),
            ValueRef::F32(v) => write!(f, "{v}"),
            ValueRef::Bool(v) => write!(f, "{v}"),
            ValueRef::String(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            ValueRef::U64(v) => write!(f, "{v}"),
            ValueRef::I64(v) => write!(f, "{v}"),
            ValueRef::F64(v) => write!(f, "{v}"),
            ValueRef::Array(a) => {
                let limit = f.precision().unwrap_or(usize::MAX);
                f.write_str("[")?;
                for (i, v) in a.iter().enumerate() {
                    if i == limit {
                        return write!(f, ", ... ({} more)]", a.len() - i);
                    }
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match f.precision() {
                        Some(p) => write!(f, "{v:.p$}")?,
                        None => write!(f, "{v}")?,
                    }
                }
                f.write_str("]")
            }
        }
    }
}

/// A metadata array, validated but not decoded. Copy is cheap (a few words).
#[derive(Clone, Copy)]
pub struct ArrayRef<'a> {
    key: &'a str,
    elem: ValueType,
    len: usize,
    data: &'a [u8],
    depth: usize,
}

impl PartialEq for ArrayRef<'_> {
    /// Same element type, length and encoded elements (the key is not compared).
    fn eq(&self, other: &Self) -> bool {
        self.elem == other.elem && self.len == other.len && self.data == other.data
    }
}

impl fmt::Debug for ArrayRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayRef")
            .field("key", &self.key)
            .field("elem", &self.elem)
            .field("len", &self.len)
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl<'a> ArrayRef<'a> {
    /// `data` holds exactly the `len` encoded elements, already validated; `depth` is the
    /// array's nesting level.
    pub(crate) fn new(key: &'a str, elem: ValueType, len: usize, data: &'a [u8], depth: usize) -> Self {
        ArrayRef { key, elem, len, data, depth }
    }

    /// The metadata key this array belongs to (nested arrays report their outermost key).
    pub fn key(&self) -> &'a str {
        self.key
    }

    /// The element type.
    pub fn elem_type(&self) -> ValueType {
        self.elem
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded elements, little-endian, as they lie in the file (for string arrays, each with
    /// its 8-byte length prefix).
    pub fn raw_bytes(&self) -> &'a [u8] {
        self.data
    }

    /// Iterates over the elements, decoding each as it is reached.
    pub fn iter(&self) -> ArrayIter<'a> {
        ArrayIter { array: *self, cursor: Cursor::new(self.data, 0), left: self.len }
    }

    /// Element `i`: O(1) for fixed-size element types, O(i) for strings and arrays (which must be
    /// walked); iterate instead of indexing those in a loop.
    pub fn get(&self, i: usize) -> Option<ValueRef<'a>> {
        if i >= self.len {
            return None;
        }
        match self.elem.fixed_size() {
            Some(size) => {
                let b = self.data.get(i * size..(i + 1) * size)?;
                decode_scalar(self.elem, b).map(ValueRef::from_scalar)
            }
            None => self.iter().nth(i),
        }
    }

    fn mismatch(&self, expected: String) -> GgufError {
        GgufError::TypeMismatch { key: self.key.to_owned(), expected, actual: format!("array<{}>", self.elem) }
    }

    /// Decodes every element into a `Vec<T>`. The element type must be exactly `T`'s
    /// (`array<i32>` for `i32`, …); there is no conversion.
    pub fn to_vec<T: ArrayElement>(&self) -> Result<Vec<T>, GgufError> {
        Ok(self.values::<T>()?.collect())
    }

    /// Iterates over the elements as `T` (exactly the element type, as for [`to_vec`](Self::to_vec)).
    pub fn values<T: ArrayElement>(&self) -> Result<Values<'a, T>, GgufError> {
        if self.elem != T::TYPE {
            return Err(self.mismatch(format!("array<{}>", T::TYPE)));
        }
        Ok(Values { chunks: self.data.chunks_exact(T::SIZE), _t: PhantomData })
    }

    /// This array as strings; an error unless the element type is `string`.
    pub fn strings(&self) -> Result<StrArray<'a>, GgufError> {
        if self.elem != ValueType::String {
            return Err(self.mismatch("array<string>".to_owned()));
        }
        Ok(StrArray { key: self.key, len: self.len, data: self.data })
    }

    /// An owned copy.
    pub fn to_array(&self) -> Array {
        fn all<'a, T: ArrayElement>(a: &ArrayRef<'a>) -> Vec<T> {
            a.values::<T>().map(|v| v.collect()).unwrap_or_default()
        }
        match self.elem {
            ValueType::U8 => Array::U8(all(self)),
            ValueType::I8 => Array::I8(all(self)),
            ValueType::U16 => Array::U16(all(self)),
            ValueType::I16 => Array::I16(all(self)),
            ValueType::U32 => Array::U32(all(self)),
            ValueType::I32 => Array::I32(all(self)),
            ValueType::F32 => Array::F32(all(self)),
            ValueType::Bool => Array::Bool(all(self)),
            ValueType::U64 => Array::U64(all(self)),
            ValueType::I64 => Array::I64(all(self)),
            ValueType::F64 => Array::F64(all(self)),
            ValueType::String => Array::String(
                StrArray { key: self.key, len: self.len, data: self.data }.iter().map(<[u8]>::to_vec).collect(),
            ),
            ValueType::Array => Array::Array(self.iter().filter_map(|v| v.as_array()).map(|a| a.to_array()).collect()),
        }
    }
}

impl<'a> IntoIterator for ArrayRef<'a> {
    type Item = ValueRef<'a>;
    type IntoIter = ArrayIter<'a>;
    fn into_iter(self) -> ArrayIter<'a> {
        self.iter()
    }
}

/// Iterator over the elements of an [`ArrayRef`].
pub struct ArrayIter<'a> {
    array: ArrayRef<'a>,
    cursor: Cursor<'a>,
    left: usize,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = ValueRef<'a>;

    fn next(&mut self) -> Option<ValueRef<'a>> {
        if self.left == 0 {
            return None;
        }
        // The elements were validated when the file was opened, so these reads succeed; should
        // one fail anyway, the iteration ends instead of panicking.
        let ctx = Ctx::Key(self.array.key);
        let v = match self.array.elem {
            ValueType::String => ValueRef::String(self.cursor.next_str()?),
            ValueType::Array => {
                let depth = self.array.depth + 1;
                let raw = self.cursor.array_value(ctx, depth).ok()?;
                let data = self.cursor.slice(raw.start, raw.end);
                ValueRef::Array(ArrayRef::new(self.array.key, raw.elem, raw.len, data, depth))
            }
            ty => ValueRef::from_scalar(self.cursor.scalar(ty, ctx).ok()?),
        };
        self.left -= 1;
        Some(v)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for ArrayIter<'_> {}

/// A fixed-size type a numeric or bool array can be decoded to (`u8 i8 u16 i16 u32 i32 f32 bool
/// u64 i64 f64`).
pub trait ArrayElement: Copy + sealed::Sealed {
    /// The GGUF element type that decodes to `Self`.
    const TYPE: ValueType;
    /// Encoded size in bytes.
    const SIZE: usize;
    /// Decodes one element from exactly `SIZE` little-endian bytes.
    fn decode(b: &[u8]) -> Self;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! array_element {
    ($($t:ty => $vt:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl ArrayElement for $t {
            const TYPE: ValueType = ValueType::$vt;
            const SIZE: usize = size_of::<$t>();
            fn decode(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().unwrap_or_default())
            }
        }
    )*};
}

array_element!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    u64 => U64, i64 => I64, f64 => F64);

impl sealed::Sealed for bool {}
impl ArrayElement for bool {
    const TYPE: ValueType = ValueType::Bool;
    const SIZE: usize = 1;
    fn decode(b: &[u8]) -> Self {
        b.first().is_some_and(|&v| v != 0)
    }
}

/// Iterator over a numeric array's elements as `T`.
pub struct Values<'a, T> {
    chunks: std::slice::ChunksExact<'a, u8>,
    _t: PhantomData<T>,
}

impl<T: ArrayElement> Iterator for Values<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.chunks.next().map(T::decode)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl<T: ArrayElement> ExactSizeIterator for Values<'_, T> {}

/// A string array, decoded lazily (e.g. `tokenizer.ggml.tokens`).
///
/// Iteration is sequential (each string is prefixed by its length); [`to_vec_str`](Self::to_vec_str)
/// collects an indexable `Vec<&str>` in one pass when random access is needed.
#[derive(Clone, Copy, Debug)]
pub struct StrArray<'a> {
    key: &'a str,
    len: usize,
    data: &'a [u8],
}

impl<'a> StrArray<'a> {
    /// Number of strings.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The strings as raw bytes.
    pub fn iter(&self) -> StrIter<'a> {
        StrIter { cursor: Cursor::new(self.data, 0), left: self.len }
    }

    /// The strings as `&str`; an element that is not UTF-8 yields [`GgufError::NotUtf8`] with its
    /// index.
    pub fn iter_str(&self) -> impl ExactSizeIterator<Item = Result<&'a str, GgufError>> + 'a {
        let key = self.key;
        self.iter().enumerate().map(move |(i, b)| {
            std::str::from_utf8(b).map_err(|e| GgufError::NotUtf8 {
                key: key.to_owned(),
                index: Some(i),
                valid_up_to: e.valid_up_to(),
            })
        })
    }

    /// All strings as `&str` (one allocation for the vector; none per string).
    pub fn to_vec_str(&self) -> Result<Vec<&'a str>, GgufError> {
        self.iter_str().collect()
    }

    /// All strings as byte slices.
    pub fn to_vec_bytes(&self) -> Vec<&'a [u8]> {
        self.iter().collect()
    }

    /// String `i`, in O(i) (walks the array).
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.iter().nth(i)
    }
}

impl<'a> IntoIterator for StrArray<'a> {
    type Item = &'a [u8];
    type IntoIter = StrIter<'a>;
    fn into_iter(self) -> StrIter<'a> {
        self.iter()
    }
}

/// Iterator over a [`StrArray`]'s strings as bytes.
pub struct StrIter<'a> {
    cursor: Cursor<'a>,
    left: usize,
}

impl<'a> Iterator for StrIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        // Validated at open; a failure ends the iteration rather than panicking.
        let s = self.cursor.next_str()?;
        self.left -= 1;
        Some(s)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for StrIter<'_> {}
