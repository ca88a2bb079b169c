//! The one error type of this crate.

use std::io;

use kiln_quant::GgmlType;

/// Everything that can go wrong reading, querying or writing a GGUF file.
///
/// Reader errors say what was being read and where (`at offset 0x…` is an absolute file offset);
/// tensor errors name the tensor. The enum is `#[non_exhaustive]`: match the variants you handle
/// and keep a catch-all arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// Opening, mapping or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (`open model.gguf`, `write tensor data`, …).
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    // ---- container structure -----------------------------------------------------------------
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: magic {found:02x?} ({}), expected \"GGUF\"", String::from_utf8_lossy(found).escape_debug())]
    BadMagic {
        /// The first four bytes of the file.
        found: [u8; 4],
    },
    /// A version this reader does not read (only 2 and 3 are read; 1 is obsolete).
    #[error("unsupported GGUF version {version}{}", version_hint(*version))]
    UnsupportedVersion {
        /// The version field, read little-endian.
        version: u32,
    },
    /// The version field only makes sense byte-swapped: the file is big-endian.
    #[error(
        "big-endian GGUF file (version field reads {raw:#010x}, which is version {} byte-swapped); only little-endian files are supported",
        raw.swap_bytes()
    )]
    BigEndian {
        /// The version field as read little-endian.
        raw: u32,
    },
    /// Fewer bytes remain than a field needs.
    #[error("{what} at offset {offset:#x}: needs {need} bytes, only {remaining} remain (truncated file?)")]
    Truncated {
        /// What was being read.
        what: String,
        /// Absolute offset of the field.
        offset: u64,
        /// Bytes the field takes.
        need: u64,
        /// Bytes left in the file from `offset`.
        remaining: u64,
    },
    /// A string length larger than the rest of the file.
    #[error("{what} at offset {offset:#x}: string length {len} exceeds remaining {remaining} bytes")]
    StringTooLong {
        /// Which string (key name, value, tensor name).
        what: String,
        /// Absolute offset of the length field.
        offset: u64,
        /// The length the file claims.
        len: u64,
        /// Bytes left after the length field.
        remaining: u64,
    },
    /// An element count (array length, metadata count, tensor count) that cannot fit in the rest
    /// of the file even if every element took its minimum size.
    #[error(
        "{what} at offset {offset:#x}: count {count} exceeds remaining {remaining} bytes (each element takes at least {min_each} bytes)"
    )]
    CountTooLarge {
        /// What is being counted.
        what: String,
        /// Absolute offset of the count field.
        offset: u64,
        /// The count the file claims.
        count: u64,
        /// The smallest encoding of one element, in bytes.
        min_each: u64,
        /// Bytes left after the count field.
        remaining: u64,
    },
    /// A metadata value type id outside 0..=12.
    #[error("{what} at offset {offset:#x}: unknown value type id {id}")]
    UnknownValueType {
        /// Which value.
        what: String,
        /// Absolute offset of the type field.
        offset: u64,
        /// The id found.
        id: u32,
    },
    /// A bool value that is neither 0 nor 1.
    #[error("{what} at offset {offset:#x}: bool byte is {value}, must be 0 or 1")]
    InvalidBool {
        /// Which value.
        what: String,
        /// Absolute offset of the byte.
        offset: u64,
        /// The byte found.
        value: u8,
    },
    /// Arrays of arrays nested deeper than [`MAX_NESTING`](crate::MAX_NESTING).
    #[error("metadata key {key:?}: arrays nested deeper than {max} levels")]
    NestingTooDeep {
        /// The metadata key.
        key: String,
        /// The limit.
        max: usize,
    },
    /// A metadata key of length zero (ggml rejects these).
    #[error("metadata entry {index} at offset {offset:#x}: empty key")]
    EmptyKey {
        /// Position of the entry in the file (0-based).
        index: u64,
        /// Absolute offset of the key.
        offset: u64,
    },
    /// A metadata key or tensor name that is not UTF-8.
    #[error("{what} at offset {offset:#x}: not valid UTF-8")]
    InvalidUtf8 {
        /// Which name.
        what: String,
        /// Absolute offset of the string bytes.
        offset: u64,
    },
    /// The same metadata key twice.
    #[error("metadata key {key:?} at offset {offset:#x}: duplicate key (first at offset {first_offset:#x})")]
    DuplicateKey {
        /// The key.
        key: String,
        /// Absolute offset of the second occurrence.
        offset: u64,
        /// Absolute offset of the first occurrence.
        first_offset: u64,
    },
    /// `general.alignment` has a type other than `u32` (ggml requires `u32`).
    #[error("metadata key \"general.alignment\": must be u32, found {actual}")]
    AlignmentType {
        /// The type found.
        actual: String,
    },
    /// An alignment that is zero or not a power of two.
    #[error("alignment {alignment} is not a non-zero power of two")]
    InvalidAlignment {
        /// The value given.
        alignment: u64,
    },

    // ---- tensor index --------------------------------------------------------------------------
    /// A tensor name of [`MAX_TENSOR_NAME`](crate::MAX_TENSOR_NAME) bytes or more (ggml's limit).
    #[error("tensor {name}: name is {len} bytes, must be shorter than {max}")]
    TensorNameTooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// More than [`MAX_DIMS`](crate::MAX_DIMS) dimensions.
    #[error("tensor {tensor}: {n_dims} dimensions, at most {max} allowed")]
    TooManyDims {
        /// The tensor.
        tensor: String,
        /// Dimensions claimed.
        n_dims: u64,
        /// The limit.
        max: u64,
    },
    /// A dimension ≥ 2⁶³: ggml stores dimensions as `int64_t`, so this is a negative size.
    #[error("tensor {tensor}: dimension {dim} is {value}, which is negative as ggml's int64")]
    NegativeDim {
        /// The tensor.
        tensor: String,
        /// Which dimension (0 = row length).
        dim: usize,
        /// The value found.
        value: u64,
    },
    /// The product of the dimensions does not fit in `i64`.
    #[error("tensor {tensor}: element count of shape {shape:?} overflows int64")]
    ElementCountOverflow {
        /// The tensor.
        tensor: String,
        /// The shape (ggml order).
        shape: Vec<u64>,
    },
    /// A ggml type id this crate does not know (or ggml removed).
    #[error("tensor {tensor}: unknown ggml type id {id}")]
    UnknownTensorType {
        /// The tensor.
        tensor: String,
        /// The id found.
        id: u32,
    },
    /// A row (`shape[0]`) that is not a whole number of the type's blocks.
    #[error(
        "tensor {tensor}: row of {ne0} elements is not a whole number of {ty} blocks ({block_elems} elements each)"
    )]
    PartialBlock {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
        /// Its row length.
        ne0: u64,
        /// Elements per block of `ty`.
        block_elems: usize,
    },
    /// The tensor's byte size does not fit in `u64`/`usize`.
    #[error("tensor {tensor}: byte size of {ty} shape {shape:?} overflows")]
    TensorSizeOverflow {
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
        /// Its shape.
        shape: Vec<u64>,
    },
    /// Two tensors with the same name.
    #[error("tensor {name}: duplicate name (tensors {first_index} and {index})")]
    DuplicateTensor {
        /// The name.
        name: String,
        /// Index of the first occurrence.
        first_index: usize,
        /// Index of the second.
        index: usize,
    },
    /// A tensor offset that is not a multiple of the alignment.
    #[error("tensor {tensor}: offset {offset:#x} is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        /// The tensor.
        tensor: String,
        /// Its offset relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// Tensor data that runs past the end of the file.
    #[error("tensor {tensor}: data {start:#x}..{end:#x} past end of file (size {file_size:#x})")]
    TensorPastEnd {
        /// The tensor.
        tensor: String,
        /// Absolute start of its data (saturated at `u64::MAX`).
        start: u64,
        /// Absolute end of its data (saturated at `u64::MAX`).
        end: u64,
        /// File size.
        file_size: u64,
    },
    /// Two tensors whose data ranges overlap.
    #[error(
        "tensor {second}: data {second_start:#x}..{second_end:#x} overlaps tensor {first} at {first_start:#x}..{first_end:#x}"
    )]
    OverlappingTensors {
        /// The tensor that starts first.
        first: String,
        /// Its absolute start.
        first_start: u64,
        /// Its absolute end.
        first_end: u64,
        /// The tensor that starts inside it.
        second: String,
        /// Its absolute start.
        second_start: u64,
        /// Its absolute end.
        second_end: u64,
    },

    // ---- typed getters -------------------------------------------------------------------------
    /// A required metadata key is absent.
    #[error("metadata key {key:?} not found")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value of another type than the getter reads.
    #[error("metadata key {key:?}: expected {expected}, found {actual}")]
    TypeMismatch {
        /// The key.
        key: String,
        /// What the getter accepts.
        expected: String,
        /// The value's type.
        actual: String,
    },
    /// An integer value that does not fit the getter's type.
    #[error("metadata key {key:?}: value {value} does not fit in {target}")]
    OutOfRange {
        /// The key.
        key: String,
        /// The value, printed.
        value: String,
        /// The getter's type.
        target: &'static str,
    },
    /// A string value that is not UTF-8 (read it as bytes instead).
    #[error("metadata key {key:?}{}: string is not valid UTF-8 (valid up to byte {valid_up_to})", index.map(|i| format!(" element {i}")).unwrap_or_default())]
    NotUtf8 {
        /// The key.
        key: String,
        /// Element index, for string arrays.
        index: Option<usize>,
        /// Length of the valid prefix.
        valid_up_to: usize,
    },

    // ---- writer ---------------------------------------------------------------------------------
    /// A metadata key the writer cannot store (empty).
    #[error("metadata key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A key added to the writer twice.
    #[error("metadata key {key:?} already added")]
    KeyExists {
        /// The key.
        key: String,
    },
    /// A tensor name added to the writer twice.
    #[error("tensor {name} already added")]
    TensorExists {
        /// The name.
        name: String,
    },
    /// Tensor data of the wrong length.
    #[error("tensor {tensor}: expected {expected} bytes of data, got {actual}")]
    TensorDataLength {
        /// The tensor.
        tensor: String,
        /// Bytes its type and shape take (or, streaming, the bytes it still needs).
        expected: u64,
        /// Bytes given.
        actual: u64,
    },
    /// Streaming: data for a tensor other than the one whose turn it is.
    #[error("tensor data out of order: expected data for {expected}, got {got}")]
    TensorOrder {
        /// The tensor whose data comes next (`<none>` when all are written).
        expected: String,
        /// The tensor named by the caller.
        got: String,
    },
    /// The writer finished before every tensor's data was written.
    #[error("tensor {tensor}: only {written} of {expected} data bytes were written")]
    TensorDataIncomplete {
        /// The tensor.
        tensor: String,
        /// Bytes written.
        written: u64,
        /// Bytes it takes.
        expected: u64,
    },
}

fn version_hint(version: u32) -> &'static str {
    match version {
        1 => " (GGUF v1 is obsolete; this reader reads v2 and v3)",
        _ => " (this reader reads v2 and v3)",
    }
}
