//! [`GgufWriter`]: build a GGUF v3 file, in one go or streaming tensor data of any size.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use kiln_quant::GgmlType;

use crate::tensor::{check_name, tensor_size};
use crate::value::ValueType;
use crate::{DEFAULT_ALIGNMENT, GgufError, MAX_NESTING, TensorInfo};

/// An owned metadata value, for writing.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
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
    /// A string's bytes (UTF-8 by convention; not checked, so invalid files can be made for tests).
    String(Vec<u8>),
    /// An array.
    Array(Array),
    /// `uint64`
    U64(u64),
    /// `int64`
    I64(i64),
    /// `float64`
    F64(f64),
}

/// An owned, homogeneous metadata array. Arrays of arrays hold each inner array with its own
/// element type, as the format allows (llama.cpp's reader rejects arrays of arrays; gguf-py and
/// this crate read them).
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    /// `array<u8>`
    U8(Vec<u8>),
    /// `array<i8>`
    I8(Vec<i8>),
    /// `array<u16>`
    U16(Vec<u16>),
    /// `array<i16>`
    I16(Vec<i16>),
    /// `array<u32>`
    U32(Vec<u32>),
    /// `array<i32>`
    I32(Vec<i32>),
    /// `array<f32>`
    F32(Vec<f32>),
    /// `array<bool>`
    Bool(Vec<bool>),
    /// `array<string>` (bytes of each string)
    String(Vec<Vec<u8>>),
    /// `array<array>`
    Array(Vec<Array>),
    /// `array<u64>`
    U64(Vec<u64>),
    /// `array<i64>`
    I64(Vec<i64>),
    /// `array<f64>`
    F64(Vec<f64>),
}

impl Value {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::U8(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Bool(v) => out.push(u8::from(*v)),
            Value::String(s) => put_str(out, s),
            Value::Array(a) => a.encode(out),
            Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
}

impl Array {
    /// The element type.
    pub fn elem_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether arrays nest at most `MAX_NESTING` levels, counting this one as `level`.
    /// Stops descending at the limit, so the recursion is bounded.
    fn nesting_ok(&self, level: usize) -> bool {
        if level > MAX_NESTING {
            return false;
        }
        match self {
            Array::Array(inner) => inner.iter().all(|a| a.nesting_ok(level + 1)),
            _ => true,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        fn all<T: Copy, const N: usize>(out: &mut Vec<u8>, v: &[T], le: fn(T) -> [u8; N]) {
            out.reserve(v.len() * N);
            for &x in v {
                out.extend_from_slice(&le(x));
            }
        }
        out.extend_from_slice(&self.elem_type().id().to_le_bytes());
        out.extend_from_slice(&(self.len() as u64).to_le_bytes());
        match self {
            Array::U8(v) => out.extend_from_slice(v),
            Array::I8(v) => all(out, v, i8::to_le_bytes),
            Array::U16(v) => all(out, v, u16::to_le_bytes),
            Array::I16(v) => all(out, v, i16::to_le_bytes),
            Array::U32(v) => all(out, v, u32::to_le_bytes),
            Array::I32(v) => all(out, v, i32::to_le_bytes),
            Array::F32(v) => all(out, v, f32::to_le_bytes),
            Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
            Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
            Array::Array(v) => v.iter().for_each(|a| a.encode(out)),
            Array::U64(v) => all(out, v, u64::to_le_bytes),
            Array::I64(v) => all(out, v, i64::to_le_bytes),
            Array::F64(v) => all(out, v, f64::to_le_bytes),
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
}

macro_rules! conversions {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value { Value::$v(v) }
        }
        impl From<Vec<$t>> for Array {
            fn from(v: Vec<$t>) -> Array { Array::$v(v) }
        }
        impl From<&[$t]> for Array {
            fn from(v: &[$t]) -> Array { Array::$v(v.to_vec()) }
        }
        impl From<Vec<$t>> for Value {
            fn from(v: Vec<$t>) -> Value { Value::Array(Array::$v(v)) }
        }
        impl From<&[$t]> for Value {
            fn from(v: &[$t]) -> Value { Value::Array(Array::$v(v.to_vec())) }
        }
    )*};
}

conversions!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, u64 => U64, i64 => I64, f64 => F64);

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.as_bytes().to_vec())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s.into_bytes())
    }
}

impl From<Array> for Value {
    fn from(a: Array) -> Value {
        Value::Array(a)
    }
}

impl From<Vec<Array>> for Array {
    fn from(v: Vec<Array>) -> Array {
        Array::Array(v)
    }
}

impl From<Vec<Array>> for Value {
    fn from(v: Vec<Array>) -> Value {
        Value::Array(Array::Array(v))
    }
}

impl From<Vec<String>> for Array {
    fn from(v: Vec<String>) -> Array {
        Array::String(v.into_iter().map(String::into_bytes).collect())
    }
}

impl From<Vec<&str>> for Array {
    fn from(v: Vec<&str>) -> Array {
        Array::String(v.into_iter().map(|s| s.as_bytes().to_vec()).collect())
    }
}

impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Value {
        Value::Array(v.into())
    }
}

impl From<Vec<&str>> for Value {
    fn from(v: Vec<&str>) -> Value {
        Value::Array(v.into())
    }
}

/// Builds a GGUF v3 file: metadata, a tensor index, then the tensor data.
///
/// Tensors are laid out in the order they are added, each at an offset that is a multiple of the
/// alignment (32, or the `general.alignment` value added as a `u32`), each padded with zeros to the
/// alignment — the layout llama.cpp and gguf-py write. Tensor data can be given up front
/// ([`add_tensor`](Self::add_tensor)) or streamed later in any chunk sizes
/// ([`add_tensor_info`](Self::add_tensor_info) + [`begin`](Self::begin)), so files larger than
/// memory can be written.
///
/// Every key, shape and size is validated when added, by the same rules the reader applies.
#[derive(Debug, Default)]
pub struct GgufWriter {
    kvs: Vec<(String, Value)>,
    keys: HashSet<String>,
    alignment: Option<u64>,
    tensors: Vec<(TensorInfo, Option<Vec<u8>>)>,
    names: HashSet<String>,
}

impl GgufWriter {
    /// An empty file: no metadata, no tensors, alignment 32.
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// The alignment the data will be written with.
    pub fn alignment(&self) -> u64 {
        self.alignment.unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Adds a metadata entry. Keys must be non-empty and unique. `general.alignment` must be a
    /// `u32` non-zero power of two and sets the data alignment.
    pub fn add(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Result<(), GgufError> {
        let key = key.into();
        let value = value.into();
        if key.is_empty() {
            return Err(GgufError::InvalidKey { key, reason: "empty key" });
        }
        if self.keys.contains(&key) {
            return Err(GgufError::KeyExists { key });
        }
        if let Value::Array(a) = &value
            && !a.nesting_ok(1)
        {
            return Err(GgufError::NestingTooDeep { key, max: MAX_NESTING });
        }
        if key == "general.alignment" {
            match value {
                Value::U32(a) if a.is_power_of_two() => self.alignment = Some(a.into()),
                Value::U32(a) => {
                    return Err(GgufError::InvalidAlignment { alignment: a.into() });
                }
                ref other => {
                    let actual = match other {
                        Value::Array(a) => format!("array<{}>", a.elem_type()),
                        v => v.value_type().to_string(),
                    };
                    return Err(GgufError::AlignmentType { actual });
                }
            }
        }
        self.keys.insert(key.clone());
        self.kvs.push((key, value));
        Ok(())
    }

    /// Sets the data alignment by adding `general.alignment` (see [`add`](Self::add)).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<(), GgufError> {
        self.add("general.alignment", Value::U32(alignment))
    }

    /// Adds a tensor whose data will be streamed after [`begin`](Self::begin). `shape` is in ggml
    /// order (`shape[0]` = row length).
    pub fn add_tensor_info(&mut self, name: impl Into<String>, ty: GgmlType, shape: &[u64]) -> Result<(), GgufError> {
        self.push_tensor(name.into(), ty, shape, None)
    }

    /// Adds a tensor with its data, which must be exactly the size its type and shape take.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ty: GgmlType,
        shape: &[u64],
        data: impl Into<Vec<u8>>,
    ) -> Result<(), GgufError> {
        self.push_tensor(name.into(), ty, shape, Some(data.into()))
    }

    fn push_tensor(
        &mut self,
        name: String,
        ty: GgmlType,
        shape: &[u64],
        data: Option<Vec<u8>>,
    ) -> Result<(), GgufError> {
        check_name(&name)?;
        if self.names.contains(&name) {
            return Err(GgufError::TensorExists { name });
        }
        let size = tensor_size(&name, ty, shape)?;
        if let Some(d) = &data
            && d.len() as u64 != size
        {
            return Err(GgufError::TensorDataLength { tensor: name, expected: size, actual: d.len() as u64 });
        }
        self.names.insert(name.clone());
        let info = TensorInfo { name, ty, shape: shape.to_vec(), offset: 0, size };
        self.tensors.push((info, data));
        Ok(())
    }

    /// The tensor index as it will be written (offsets relative to the data section).
    pub fn tensor_infos(&self) -> Result<Vec<TensorInfo>, GgufError> {
        let align = self.alignment();
        let mut offset = 0u64;
        let mut infos = Vec::with_capacity(self.tensors.len());
        for (t, _) in &self.tensors {
            let end = offset.checked_add(t.size).and_then(|e| e.checked_next_multiple_of(align));
            let Some(end) = end else {
                return Err(GgufError::TensorSizeOverflow { tensor: t.name.clone(), ty: t.ty, shape: t.shape.clone() });
            };
            infos.push(TensorInfo { offset, ..t.clone() });
            offset = end;
        }
        Ok(infos)
    }

    fn header(&self, infos: &[TensorInfo]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(infos.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        for (key, value) in &self.kvs {
            put_str(&mut out, key.as_bytes());
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            value.encode(&mut out);
        }
        for t in infos {
            put_str(&mut out, t.name.as_bytes());
            out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for d in &t.shape {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&t.offset.to_le_bytes());
        }
        out
    }

    /// Writes the header, metadata and tensor index to `out` and returns a [`TensorDataWriter`]
    /// that takes the tensor data in order. Tensors added with data are written by it as their
    /// turn comes.
    pub fn begin<W: Write>(self, mut out: W) -> Result<TensorDataWriter<W>, GgufError> {
        let infos = self.tensor_infos()?;
        let header = self.header(&infos);
        out.write_all(&header).map_err(|e| io("write GGUF header", e))?;
        // Padding is streamed, not built in memory: the alignment may be up to 2^31.
        let header_len = header.len() as u64;
        let data_offset = header_len.next_multiple_of(self.alignment());
        write_zeros(&mut out, data_offset - header_len)?;
        let mut w = TensorDataWriter {
            out,
            data: self.tensors.into_iter().map(|(_, d)| d).collect(),
            tensors: infos,
            alignment: self.alignment.unwrap_or(DEFAULT_ALIGNMENT),
            data_offset,
            next: 0,
            written: 0,
        };
        w.advance()?;
        Ok(w)
    }

    /// Writes the whole file; every tensor must have been added with its data.
    pub fn write<W: Write>(self, out: W) -> Result<W, GgufError> {
        self.begin(out)?.finish()
    }

    /// The whole file in memory.
    pub fn to_bytes(self) -> Result<Vec<u8>, GgufError> {
        self.write(Vec::new())
    }

    /// Writes the whole file to `path` (created or truncated).
    pub fn write_to_path(self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|e| io(&format!("create {}", path.display()), e))?;
        let mut out = self.write(BufWriter::new(file))?;
        out.flush().map_err(|e| io(&format!("write {}", path.display()), e))
    }
}

/// Writes `n` zero bytes without allocating them.
fn write_zeros(out: &mut impl Write, n: u64) -> Result<(), GgufError> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let mut left = n;
    while left > 0 {
        let chunk = left.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..chunk]).map_err(|e| io("write padding", e))?;
        left -= chunk as u64;
    }
    Ok(())
}

fn io(context: &str, source: std::io::Error) -> GgufError {
    GgufError::Io { context: context.to_owned(), source }
}

/// Second phase of [`GgufWriter::begin`]: takes the tensor data in index order.
///
/// ```
/// # use kiln_gguf::{GgufWriter, GgufFile};
/// # use kiln_quant::GgmlType;
/// let mut w = GgufWriter::new();
/// w.add_tensor_info("big", GgmlType::F32, &[1024, 4])?;
/// let mut data = w.begin(Vec::new())?;
/// for row in 0..4u32 {
///     let bytes: Vec<u8> = (0..1024).flat_map(|i| ((row * 1024 + i) as f32).to_le_bytes()).collect();
///     data.write_data(&bytes)?; // any chunk size
/// }
/// let file = GgufFile::from_bytes(data.finish()?)?;
/// assert_eq!(file.tensor_data(&file.tensors()[0])[4..8], 1f32.to_le_bytes());
/// # Ok::<(), kiln_gguf::GgufError>(())
/// ```
#[derive(Debug)]
pub struct TensorDataWriter<W: Write> {
    out: W,
    tensors: Vec<TensorInfo>,
    data: Vec<Option<Vec<u8>>>,
    alignment: u64,
    data_offset: u64,
    /// The tensor whose data comes next.
    next: usize,
    /// Bytes of `tensors[next]` already written.
    written: u64,
}

impl<W: Write> TensorDataWriter<W> {
    /// The tensor index as written.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// Absolute offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The tensor whose data is expected next, or `None` when all have been written.
    pub fn current(&self) -> Option<&TensorInfo> {
        self.tensors.get(self.next)
    }

    /// Appends `chunk` to the current tensor's data. When the tensor is complete, its padding is
    /// written and the next tensor becomes current. A chunk longer than what the current tensor
    /// still needs is rejected (nothing is written).
    pub fn write_data(&mut self, chunk: &[u8]) -> Result<(), GgufError> {
        let Some(t) = self.tensors.get(self.next) else {
            return Err(GgufError::TensorDataLength {
                tensor: "<none: all tensors are complete>".into(),
                expected: 0,
                actual: chunk.len() as u64,
            });
        };
        let need = t.size - self.written;
        if chunk.len() as u64 > need {
            return Err(GgufError::TensorDataLength {
                tensor: t.name.clone(),
                expected: need,
                actual: chunk.len() as u64,
            });
        }
        self.out.write_all(chunk).map_err(|e| io(&format!("write data of tensor {}", t.name), e))?;
        self.written += chunk.len() as u64;
        if self.written == t.size {
            self.complete()?;
            self.advance()?;
        }
        Ok(())
    }

    /// Writes the whole data of tensor `name`, which must be the current one.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), GgufError> {
        let Some(t) = self.tensors.get(self.next) else {
            return Err(GgufError::TensorOrder { expected: "<none>".into(), got: name.to_owned() });
        };
        if t.name != name {
            return Err(GgufError::TensorOrder { expected: t.name.clone(), got: name.to_owned() });
        }
        if self.written != 0 || data.len() as u64 != t.size {
            return Err(GgufError::TensorDataLength {
                tensor: t.name.clone(),
                expected: t.size - self.written,
                actual: data.len() as u64,
            });
        }
        self.write_data(data)
    }

    /// Checks that every tensor's data was written, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W, GgufError> {
        if let Some(t) = self.tensors.get(self.next) {
            return Err(GgufError::TensorDataIncomplete {
                tensor: t.name.clone(),
                written: self.written,
                expected: t.size,
            });
        }
        self.out.flush().map_err(|e| io("flush GGUF output", e))?;
        Ok(self.out)
    }

    /// Pads the current (complete) tensor and moves to the next.
    fn complete(&mut self) -> Result<(), GgufError> {
        let size = self.tensors.get(self.next).map_or(0, |t| t.size);
        write_zeros(&mut self.out, size.next_multiple_of(self.alignment) - size)?;
        self.next += 1;
        self.written = 0;
        Ok(())
    }

    /// Writes tensors that need no streaming (data given up front, or zero bytes) until one that
    /// does is current.
    fn advance(&mut self) -> Result<(), GgufError> {
        while let Some(t) = self.tensors.get(self.next) {
            if let Some(data) = self.data.get_mut(self.next).and_then(Option::take) {
                self.out.write_all(&data).map_err(|e| io(&format!("write data of tensor {}", t.name), e))?;
            } else if t.size != 0 {
                return Ok(());
            }
            self.complete()?;
        }
        Ok(())
    }
}
