//! GGUF container: a validating, memory-mapped reader and a streaming writer.
//!
//! [GGUF] is the file format of llama.cpp: a header, typed key/value metadata, a tensor index
//! (name, ggml type, shape, offset) and the tensor data, aligned. This crate reads versions 2 and
//! 3 (little-endian) and writes version 3. It knows nothing about models or quantization math; the
//! byte size of each tensor type comes from [`kiln_quant::GgmlType`]'s layout table.
//!
//! * [`GgufFile`] maps a file (or takes a buffer) and validates **everything** at open: every
//!   count and length against the bytes that remain, every metadata value (arrays walked element by
//!   element, bools 0/1, nesting ≤ [`MAX_NESTING`]), every tensor's shape, type, alignment and data
//!   range, duplicate keys and names, overlapping data. Malformed input is a [`GgufError`] naming
//!   what and where — never a panic, a hang or an allocation larger than a small multiple of the
//!   file. After that, queries cannot fail on the file's structure.
//! * Metadata is decoded lazily: arrays are stored as (element type, length, byte range), so a
//!   200,000-token vocabulary costs one validation walk, not 200,000 allocations. Typed getters
//!   ([`GgufFile::get_u32`], [`GgufFile::get_str`], [`GgufFile::get_str_array`], …) return errors
//!   naming the key and the expected and actual types.
//! * Tensor data is a zero-copy `&[u8]` slice of the map ([`GgufFile::tensor_data`]).
//! * [`GgufWriter`] writes metadata of every type (nested arrays included) and tensors, either with
//!   their data in memory or streamed afterwards in any chunk sizes ([`TensorDataWriter`]).
//!
//! See `docs/GGUF.md` in the repository for the full list of checks.
//!
//! # Example
//!
//! ```
//! use kiln_gguf::{GgufFile, GgufWriter, ValueRef};
//! use kiln_quant::GgmlType;
//!
//! // Write a small file into memory.
//! let mut w = GgufWriter::new();
//! w.add("general.architecture", "llama")?;
//! w.add("llama.context_length", 4096u32)?;
//! w.add("tokenizer.ggml.tokens", vec!["<s>", "hello", "world"])?;
//! let weights: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].iter().flat_map(|x| x.to_le_bytes()).collect();
//! w.add_tensor("output.weight", GgmlType::F32, &[3, 2], weights.clone())?; // 2 rows of 3
//! let bytes = w.to_bytes()?;
//!
//! // Read it back (GgufFile::open(path) memory-maps a file instead).
//! let f = GgufFile::from_bytes(bytes)?;
//! assert_eq!(f.version(), 3);
//! assert_eq!(f.get_str("general.architecture")?, "llama");
//! assert_eq!(f.get_u64("llama.context_length")?, 4096); // any integer type that fits
//! assert_eq!(f.get("llama.context_length"), Some(ValueRef::U32(4096)));
//! let tokens = f.get_str_array("tokenizer.ggml.tokens")?.to_vec_str()?;
//! assert_eq!(tokens, ["<s>", "hello", "world"]);
//!
//! let t = f.tensor("output.weight").expect("tensor is present");
//! assert_eq!((t.ty, t.shape.as_slice(), t.n_elements()), (GgmlType::F32, &[3u64, 2][..], 6));
//! assert_eq!(f.tensor_data(t), &weights[..]);
//! assert_eq!((f.data_offset() + t.offset) % f.alignment(), 0);
//!
//! // Errors name the key and both types.
//! let err = f.get_u32("general.architecture").unwrap_err();
//! assert_eq!(err.to_string(),
//!     r#"metadata key "general.architecture": expected u32 (or another integer type), found string"#);
//! # Ok::<(), kiln_gguf::GgufError>(())
//! ```
//!
//! [GGUF]: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod raw;
mod reader;
mod tensor;
mod value;
mod writer;

pub use error::GgufError;
pub use kiln_quant::GgmlType;
pub use reader::GgufFile;
pub use tensor::{MAX_DIMS, MAX_TENSOR_NAME, TensorInfo};
pub use value::{ArrayElement, ArrayIter, ArrayRef, StrArray, StrIter, ValueRef, ValueType, Values};
pub use writer::{Array, GgufWriter, TensorDataWriter, Value};

/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Deepest nesting of arrays of arrays accepted (a plain array is level 1).
pub const MAX_NESTING: usize = 64;
