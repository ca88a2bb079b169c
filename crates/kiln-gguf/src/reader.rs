//! [`GgufFile`]: open, validate, and query a GGUF file.

use std::fmt;
use std::fs::File;
use std::path::Path;

use kiln_quant::GgmlType;
use memmap2::Mmap;

use crate::raw::{Ctx, Cursor, RawArray, Scalar};
use crate::tensor::{MAX_DIMS, check_name, tensor_size};
use crate::value::{ArrayRef, StrArray, ValueRef, ValueType};
use crate::{DEFAULT_ALIGNMENT, GgufError, TensorInfo};

/// The bytes of a file: a read-only memory map or an owned buffer.
enum Storage {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A metadata value as stored after validation: scalars decoded, strings and arrays as byte
/// ranges into the file.
#[derive(Clone, Copy, Debug)]
enum RawValue {
    Scalar(Scalar),
    String { start: usize, end: usize },
    Array(RawArray),
}

#[derive(Debug)]
struct Kv {
    key: Box<str>,
    /// Absolute offset of the entry (its key length field).
    offset: u64,
    value: RawValue,
}

/// A validated GGUF file (v2 or v3, little-endian).
///
/// Opening checks the whole container — header, every metadata value (arrays walked element by
/// element), every tensor info, and every tensor's data range — so that nothing later can fail or
/// panic on a malformed file. Metadata is decoded lazily; tensor data is borrowed from the memory
/// map without copying.
pub struct GgufFile {
    storage: Storage,
    version: u32,
    alignment: u64,
    data_offset: u64,
    kvs: Vec<Kv>,
    /// Indices into `kvs`, sorted by key.
    kv_index: Vec<usize>,
    tensors: Vec<TensorInfo>,
    /// Indices into `tensors`, sorted by name.
    tensor_index: Vec<usize>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("file_size", &self.file_size())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("metadata", &self.kvs.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and validates the file at `path`.
    ///
    /// The map is read-only and private to this process; as with any memory-mapped file, another
    /// process truncating or rewriting the file while it is open is not supported.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io = |what: &str, source| GgufError::Io { context: format!("{what} {}", path.display()), source };
        let file = File::open(path).map_err(|e| io("open", e))?;
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        if len == 0 {
            // Mapping an empty file fails on some platforms; an empty buffer gives the same error.
            return Self::from_bytes(Vec::new());
        }
        // SAFETY: the map is read-only; the usual memory-map caveat (the file must not be changed
        // underneath us) is documented on this function.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io("memory-map", e))?;
        Self::from_storage(Storage::Mmap(map))
    }

    /// Validates a file held in memory (tests, fuzzing, files fetched over the network).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        Self::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile, GgufError> {
        let p = parse(storage.bytes())?;
        Ok(GgufFile {
            storage,
            version: p.version,
            alignment: p.alignment,
            data_offset: p.data_offset,
            kvs: p.kvs,
            kv_index: p.kv_index,
            tensors: p.tensors,
            tensor_index: p.tensor_index,
        })
    }

    /// The format version (2 or 3; they share one encoding).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment: `general.alignment`, or 32.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the tensor data section: the end of the tensor infos rounded up to the
    /// alignment. (In a file without tensors, clamped to the file size.)
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Hints that bytes `offset..offset + len` of the file will not be read again soon, for a
    /// caller that has copied them elsewhere: on a memory map (Unix) their pages leave this
    /// process's resident memory (`MADV_DONTNEED`; the page cache may keep them), and a later read
    /// maps them again from the file, so [`GgufFile::bytes`] still returns the same bytes. The
    /// range is widened to whole pages. Does nothing for a file held in memory, on other
    /// platforms, or for a range outside the file; a refused hint is ignored.
    pub fn release(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        if let Storage::Mmap(m) = &self.storage
            && offset.checked_add(len).is_some_and(|end| end <= m.len())
        {
            // SAFETY: the map is shared, read-only and backed by the file: dropping its pages
            // cannot change what a later read returns (the pages are read back from the file);
            // it is only unsound on private or anonymous maps, whose contents it discards.
            #[allow(unsafe_code)]
            let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) };
        }
        #[cfg(not(unix))]
        let _ = (offset, len);
    }

    fn value_ref<'a>(&'a self, kv: &'a Kv) -> ValueRef<'a> {
        let bytes = self.bytes();
        match kv.value {
            RawValue::Scalar(s) => ValueRef::from_scalar(s),
            RawValue::String { start, end } => ValueRef::String(bytes.get(start..end).unwrap_or(&[])),
            RawValue::Array(a) => {
                ValueRef::Array(ArrayRef::new(&kv.key, a.elem, a.len, bytes.get(a.start..a.end).unwrap_or(&[]), 1))
            }
        }
    }

    /// All metadata entries in file order.
    pub fn metadata(&self) -> impl ExactSizeIterator<Item = (&str, ValueRef<'_>)> {
        self.kvs.iter().map(|kv| (&*kv.key, self.value_ref(kv)))
    }

    /// The value of `key`, if present (O(log n)).
    pub fn get(&self, key: &str) -> Option<ValueRef<'_>> {
        let i = self.kv_index.binary_search_by(|&i| (*self.kvs[i].key).cmp(key)).ok()?;
        Some(self.value_ref(&self.kvs[self.kv_index[i]]))
    }

    fn require(&self, key: &str) -> Result<ValueRef<'_>, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey { key: key.to_owned() })
    }

    fn int<T: TryFrom<i128>>(&self, key: &str, target: &'static str) -> Result<T, GgufError> {
        let v = self.require(key)?;
        let i = v.as_i128().ok_or_else(|| mismatch(key, format!("{target} (or another integer type)"), &v))?;
        T::try_from(i).map_err(|_| GgufError::OutOfRange { key: key.to_owned(), value: i.to_string(), target })
    }

    /// An integer value as `u32`. Any integer type is accepted if the value fits exactly
    /// (converters write counts as u32, u64 or i32 interchangeably); floats, bools and strings
    /// are [`GgufError::TypeMismatch`], values out of range [`GgufError::OutOfRange`].
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.int(key, "u32")
    }

    /// An integer value as `u64` (any integer type that fits, as [`get_u32`](Self::get_u32)).
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.int(key, "u64")
    }

    /// An integer value as `i32` (any integer type that fits, as [`get_u32`](Self::get_u32)).
    pub fn get_i32(&self, key: &str) -> Result<i32, GgufError> {
        self.int(key, "i32")
    }

    /// An integer value as `i64` (any integer type that fits, as [`get_u32`](Self::get_u32)).
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        self.int(key, "i64")
    }

    /// An `f32` value. Only `f32` is accepted (an `f64` would lose precision silently).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.require(key)? {
            ValueRef::F32(v) => Ok(v),
            v => Err(mismatch(key, "f32".into(), &v)),
        }
    }

    /// A float value as `f64`: `f64`, or `f32` widened.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        match self.require(key)? {
            ValueRef::F32(v) => Ok(v.into()),
            ValueRef::F64(v) => Ok(v),
            v => Err(mismatch(key, "f64 or f32".into(), &v)),
        }
    }

    /// A `bool` value (only `bool`).
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.require(key)? {
            ValueRef::Bool(v) => Ok(v),
            v => Err(mismatch(key, "bool".into(), &v)),
        }
    }

    /// A string value; [`GgufError::NotUtf8`] if it is not UTF-8 (read it with [`get`](Self::get)
    /// as bytes then).
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.require(key)? {
            ValueRef::String(b) => std::str::from_utf8(b).map_err(|e| GgufError::NotUtf8 {
                key: key.to_owned(),
                index: None,
                valid_up_to: e.valid_up_to(),
            }),
            v => Err(mismatch(key, "string".into(), &v)),
        }
    }

    /// An array value of any element type.
    pub fn get_array(&self, key: &str) -> Result<ArrayRef<'_>, GgufError> {
        match self.require(key)? {
            ValueRef::Array(a) => Ok(a),
            v => Err(mismatch(key, "array".into(), &v)),
        }
    }

    /// A string array value (`array<string>`), decoded lazily.
    pub fn get_str_array(&self, key: &str) -> Result<StrArray<'_>, GgufError> {
        match self.require(key)? {
            ValueRef::Array(a) => a.strings(),
            v => Err(mismatch(key, "array<string>".into(), &v)),
        }
    }

    /// [`get_u32`](Self::get_u32), with `Ok(None)` for a missing key.
    pub fn get_opt_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.opt(key, Self::get_u32)
    }

    /// [`get_u64`](Self::get_u64), with `Ok(None)` for a missing key.
    pub fn get_opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.opt(key, Self::get_u64)
    }

    /// [`get_i32`](Self::get_i32), with `Ok(None)` for a missing key.
    pub fn get_opt_i32(&self, key: &str) -> Result<Option<i32>, GgufError> {
        self.opt(key, Self::get_i32)
    }

    /// [`get_i64`](Self::get_i64), with `Ok(None)` for a missing key.
    pub fn get_opt_i64(&self, key: &str) -> Result<Option<i64>, GgufError> {
        self.opt(key, Self::get_i64)
    }

    /// [`get_f32`](Self::get_f32), with `Ok(None)` for a missing key.
    pub fn get_opt_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.opt(key, Self::get_f32)
    }

    /// [`get_f64`](Self::get_f64), with `Ok(None)` for a missing key.
    pub fn get_opt_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.opt(key, Self::get_f64)
    }

    /// [`get_bool`](Self::get_bool), with `Ok(None)` for a missing key.
    pub fn get_opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.opt(key, Self::get_bool)
    }

    /// [`get_str`](Self::get_str), with `Ok(None)` for a missing key.
    pub fn get_opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.opt(key, Self::get_str)
    }

    /// [`get_array`](Self::get_array), with `Ok(None)` for a missing key.
    pub fn get_opt_array(&self, key: &str) -> Result<Option<ArrayRef<'_>>, GgufError> {
        self.opt(key, Self::get_array)
    }

    /// [`get_str_array`](Self::get_str_array), with `Ok(None)` for a missing key.
    pub fn get_opt_str_array(&self, key: &str) -> Result<Option<StrArray<'_>>, GgufError> {
        self.opt(key, Self::get_str_array)
    }

    fn opt<'a, T>(
        &'a self,
        key: &str,
        get: impl FnOnce(&'a Self, &str) -> Result<T, GgufError>,
    ) -> Result<Option<T>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => get(self, key).map(Some),
        }
    }

    /// The tensor index, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name` (O(log n)).
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let i = self.tensor_index.binary_search_by(|&i| self.tensors[i].name.as_str().cmp(name)).ok()?;
        Some(&self.tensors[self.tensor_index[i]])
    }

    /// The data of `t`, borrowed from the file. `t` should come from this file's index (all of
    /// whose ranges were checked at open); an info whose range lies outside the file yields an
    /// empty slice.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let range = || {
            let start = usize::try_from(self.data_offset.checked_add(t.offset)?).ok()?;
            let end = start.checked_add(usize::try_from(t.size).ok()?)?;
            self.bytes().get(start..end)
        };
        range().unwrap_or(&[])
    }
}

fn mismatch(key: &str, expected: String, actual: &ValueRef<'_>) -> GgufError {
    GgufError::TypeMismatch { key: key.to_owned(), expected, actual: actual.type_name() }
}

/// Everything `parse` learns about a file.
struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: u64,
    kvs: Vec<Kv>,
    kv_index: Vec<usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: Vec<usize>,
}

/// Smallest encoding of a metadata entry: key length (8) + type (4) + a one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest encoding of a tensor info: name length (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

fn parse(bytes: &[u8]) -> Result<Parsed, GgufError> {
    let mut c = Cursor::new(bytes, 0);

    // Header.
    let magic = c.take(4, Ctx::Header("magic"))?;
    if magic != b"GGUF" {
        let mut found = [0; 4];
        found.copy_from_slice(magic);
        return Err(GgufError::BadMagic { found });
    }
    let version = c.u32(Ctx::Header("version"))?;
    if version != 0 && version & 0xffff == 0 {
        return Err(GgufError::BigEndian { raw: version });
    }
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion { version });
    }
    let n_tensors = count(&mut c, Ctx::Header("tensor count"), MIN_TENSOR_INFO_BYTES)?;
    let n_kv = count(&mut c, Ctx::Header("metadata count"), MIN_KV_BYTES)?;

    // Metadata. Counts were bounded by the file size above, so reserving is safe.
    let mut kvs = Vec::with_capacity(n_kv);
    for i in 0..n_kv as u64 {
        let offset = c.offset();
        let (key_at, key) = c.string(Ctx::KeyOf(i))?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey { index: i, offset });
        }
        let key = std::str::from_utf8(key)
            .map_err(|_| GgufError::InvalidUtf8 { what: Ctx::KeyOf(i).to_string(), offset: key_at })?;
        let ctx = Ctx::Key(key);
        let ty = c.value_type(ctx)?;
        let value = match ty {
            ValueType::String => {
                let (at, s) = c.string(ctx)?;
                // The cursor's base is 0, so absolute offsets are buffer positions.
                let start = at as usize;
                RawValue::String { start, end: start + s.len() }
            }
            ValueType::Array => RawValue::Array(c.array_value(ctx, 1)?),
            ty => RawValue::Scalar(c.scalar(ty, ctx)?),
        };
        kvs.push(Kv { key: key.into(), offset, value });
    }
    let kv_index = sorted_index(&kvs, |kv| &kv.key);
    if let Some((first, second)) = first_duplicate(&kv_index, |i| &kvs[i].key) {
        let (a, b) = (&kvs[first], &kvs[second]);
        return Err(GgufError::DuplicateKey { key: b.key.to_string(), offset: b.offset, first_offset: a.offset });
    }

    // Alignment: ggml requires general.alignment to be a u32 power of two.
    let alignment = match kv_index.binary_search_by(|&i| (*kvs[i].key).cmp("general.alignment")) {
        Err(_) => DEFAULT_ALIGNMENT,
        Ok(i) => match kvs[kv_index[i]].value {
            RawValue::Scalar(Scalar::U32(a)) => u64::from(a),
            RawValue::Scalar(s) => {
                return Err(GgufError::AlignmentType { actual: ValueRef::from_scalar(s).type_name() });
            }
            RawValue::String { .. } => {
                return Err(GgufError::AlignmentType { actual: "string".into() });
            }
            RawValue::Array(a) => {
                return Err(GgufError::AlignmentType { actual: format!("array<{}>", a.elem) });
            }
        },
    };
    if !alignment.is_power_of_two() {
        return Err(GgufError::InvalidAlignment { alignment });
    }

    // Tensor infos. Re-bound the count now that the metadata has been consumed.
    let n_tensors_left = c.remaining() as u64 / MIN_TENSOR_INFO_BYTES;
    if n_tensors as u64 > n_tensors_left {
        return Err(GgufError::CountTooLarge {
            what: "header tensor count".into(),
            offset: 8,
            count: n_tensors as u64,
            min_each: MIN_TENSOR_INFO_BYTES,
            remaining: c.remaining() as u64,
        });
    }
    let mut tensors = Vec::with_capacity(n_tensors);
    for i in 0..n_tensors as u64 {
        tensors.push(tensor_info(&mut c, i)?);
    }
    let tensor_index = sorted_index(&tensors, |t| &t.name);
    if let Some((first_index, index)) = first_duplicate(&tensor_index, |i| &tensors[i].name) {
        return Err(GgufError::DuplicateTensor { name: tensors[index].name.clone(), first_index, index });
    }

    // Data section and tensor ranges.
    let file_size = bytes.len() as u64;
    let info_end = c.offset();
    let data_offset = info_end.checked_next_multiple_of(alignment).unwrap_or(u64::MAX);
    let data_offset = if tensors.is_empty() { data_offset.min(file_size) } else { data_offset };
    check_ranges(&tensors, alignment, data_offset, file_size)?;

    Ok(Parsed { version, alignment, data_offset, kvs, kv_index, tensors, tensor_index })
}

/// A header count, bounded so that every counted item could at least take `min_each` bytes of
/// what remains (so allocating `count` entries is bounded by the file size).
fn count(c: &mut Cursor<'_>, ctx: Ctx<'_>, min_each: u64) -> Result<usize, GgufError> {
    let offset = c.offset();
    let n = c.u64(ctx)?;
    let remaining = c.remaining() as u64;
    if n > remaining / min_each {
        return Err(GgufError::CountTooLarge { what: ctx.to_string(), offset, count: n, min_each, remaining });
    }
    Ok(n as usize)
}

fn tensor_info(c: &mut Cursor<'_>, i: u64) -> Result<TensorInfo, GgufError> {
    let (name_at, name) = c.string(Ctx::TensorNameOf(i))?;
    let name = std::str::from_utf8(name)
        .map_err(|_| GgufError::InvalidUtf8 { what: Ctx::TensorNameOf(i).to_string(), offset: name_at })?;
    check_name(name)?;
    let ctx = Ctx::Tensor(name);
    let n_dims = c.u32(ctx)?;
    if n_dims as usize > MAX_DIMS {
        return Err(GgufError::TooManyDims { tensor: name.to_owned(), n_dims: n_dims.into(), max: MAX_DIMS as u64 });
    }
    let mut shape = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        shape.push(c.u64(ctx)?);
    }
    let id = c.u32(ctx)?;
    let offset = c.u64(ctx)?;
    let ty = GgmlType::from_id(id).ok_or_else(|| GgufError::UnknownTensorType { tensor: name.to_owned(), id })?;
    let size = tensor_size(name, ty, &shape)?;
    Ok(TensorInfo { name: name.to_owned(), ty, shape, offset, size })
}

/// Every tensor offset is aligned, every data range lies inside the file, and no two non-empty
/// ranges overlap. (ggml additionally requires the tensors to be packed in file order; this
/// reader accepts any order and gaps.)
fn check_ranges(tensors: &[TensorInfo], alignment: u64, data_offset: u64, file_size: u64) -> Result<(), GgufError> {
    let mut ranges = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        if t.offset % alignment != 0 {
            return Err(GgufError::MisalignedTensor { tensor: t.name.clone(), offset: t.offset, alignment });
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.size));
        match end {
            Some(end) if end <= file_size => {
                if t.size > 0 {
                    ranges.push((end - t.size, end, i));
                }
            }
            _ => {
                return Err(GgufError::TensorPastEnd {
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_size,
                });
            }
        }
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        let ((a_start, a_end, a), (b_start, b_end, b)) = (w[0], w[1]);
        if b_start < a_end {
            return Err(GgufError::OverlappingTensors {
                first: tensors[a].name.clone(),
                first_start: a_start,
                first_end: a_end,
                second: tensors[b].name.clone(),
                second_start: b_start,
                second_end: b_end,
            });
        }
    }
    Ok(())
}

/// Indices of `items` sorted by `key` (stable: equal keys keep file order).
fn sorted_index<T, K: Ord + ?Sized>(items: &[T], key: impl Fn(&T) -> &K) -> Vec<usize> {
    let mut index: Vec<usize> = (0..items.len()).collect();
    index.sort_by(|&a, &b| key(&items[a]).cmp(key(&items[b])));
    index
}

/// Among entries whose keys repeat, the (first occurrence, repeat) pair whose repeat comes first
/// in the file — the duplicate a sequential reader would meet first.
fn first_duplicate<'a, K: Eq + ?Sized + 'a>(index: &[usize], key: impl Fn(usize) -> &'a K) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    let mut group_first = 0;
    for w in 0..index.len() {
        if w > 0 && key(index[w]) == key(index[w - 1]) {
            // Stable sort: within a group indices increase, so `index[group_first]` is the first
            // occurrence and `index[w]` a later one; the second member is the earliest repeat.
            if w == group_first + 1 && best.is_none_or(|(_, r)| index[w] < r) {
                best = Some((index[group_first], index[w]));
            }
        } else {
            group_first = w;
        }
    }
    best
}
