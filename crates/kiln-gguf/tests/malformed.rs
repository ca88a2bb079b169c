//! Hand-built malformed files, one per error class: each must be rejected with its own variant
//! (and, where the message is part of the contract, its exact text). Offsets are hand-computed
//! from the field layout in the GGUF spec.

mod common;

use common::{Raw, f32_bytes, ty};
use kiln_gguf::{GgmlType, GgufError, GgufFile, MAX_NESTING, ValueRef};

fn err(bytes: Vec<u8>) -> GgufError {
    GgufFile::from_bytes(bytes).expect_err("file must be rejected")
}

fn ok(bytes: Vec<u8>) -> GgufFile {
    GgufFile::from_bytes(bytes).unwrap_or_else(|e| panic!("file must open: {e}"))
}

/// A file with one metadata entry (built by `kv`) and nothing else.
fn one_kv(kv: impl FnOnce(&mut Raw)) -> Vec<u8> {
    let mut r = Raw::header(3, 0, 1);
    kv(&mut r);
    r.build()
}

/// A file with the given tensor infos (name, dims, type id, offset) and `data` bytes after the
/// 32-aligned header.
fn with_tensors(tensors: &[(&str, &[u64], u32, u64)], data: usize) -> Vec<u8> {
    let mut r = Raw::header(3, tensors.len() as u64, 0);
    for &(name, dims, id, off) in tensors {
        r.tensor(name, dims, id, off);
    }
    r.pad(32).zeros(data);
    r.build()
}

// ---- header ---------------------------------------------------------------------------------

#[test]
fn bad_magic() {
    let mut b = Raw::header(3, 0, 0).build();
    b[..4].copy_from_slice(b"GGML");
    let e = err(b);
    assert!(matches!(e, GgufError::BadMagic { found } if &found == b"GGML"), "{e}");
    assert_eq!(e.to_string(), r#"not a GGUF file: magic [47, 47, 4d, 4c] (GGML), expected "GGUF""#);
}

#[test]
fn unsupported_versions() {
    for v in [0, 1, 4, 0x0001_0001] {
        let e = err(Raw::header(v, 0, 0).build());
        assert!(matches!(e, GgufError::UnsupportedVersion { version } if version == v), "{v}: {e}");
    }
    assert!(err(Raw::header(1, 0, 0).build()).to_string().contains("v1 is obsolete"));
    // v2 and v3 share one encoding: both open.
    assert_eq!(ok(Raw::header(2, 0, 0).build()).version(), 2);
    assert_eq!(ok(Raw::header(3, 0, 0).build()).version(), 3);
}

#[test]
fn big_endian_version_is_detected() {
    // A big-endian v3 file stores its version as 00 00 00 03, which reads 0x03000000 little-endian.
    let mut b = Raw::header(3, 0, 0).build();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    let e = err(b);
    assert!(matches!(e, GgufError::BigEndian { raw: 0x0300_0000 }), "{e}");
    assert!(e.to_string().contains("version 3 byte-swapped"), "{e}");
}

#[test]
fn truncated_header() {
    for len in [0, 3, 6, 12, 20] {
        let b = Raw::header(3, 0, 0).build()[..len].to_vec();
        let e = err(b);
        assert!(matches!(e, GgufError::Truncated { .. }), "{len}: {e}");
    }
    let e = err(b"GGUF\x03\x00".to_vec());
    assert_eq!(e.to_string(), "header version at offset 0x4: needs 4 bytes, only 2 remain (truncated file?)");
}

#[test]
fn counts_larger_than_the_file() {
    let e = err(Raw::header(3, 0, u64::MAX).build());
    assert!(matches!(e, GgufError::CountTooLarge { count: u64::MAX, offset: 16, .. }), "{e}");
    let e = err(Raw::header(3, 1 << 60, 0).build());
    assert!(matches!(e, GgufError::CountTooLarge { count, offset: 8, .. } if count == 1 << 60), "{e}");
    // A tensor count that fits the bytes after the header but not after the metadata.
    let mut r = Raw::header(3, 2, 1);
    r.kv_str("k", "a string long enough to cover two tensor infos' minimum size");
    let e = err(r.build());
    assert!(matches!(e, GgufError::CountTooLarge { count: 2, .. }), "{e}");
}

// ---- metadata -------------------------------------------------------------------------------

#[test]
fn huge_string_lengths() {
    // Key length: the example message of the error docs.
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).zeros(120);
    let e = err(r.build());
    assert!(matches!(e, GgufError::StringTooLong { offset: 24, len: u64::MAX, remaining: 120, .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "metadata entry 0 key at offset 0x18: string length 18446744073709551615 exceeds remaining 120 bytes"
    );
    // Value length: key "x" (8 + 1 bytes) and type (4) put the length at 24 + 13 = 0x25.
    let e = err(one_kv(|r| {
        r.str("x").u32(ty::STRING).u64(u64::MAX).zeros(120);
    }));
    assert_eq!(
        e.to_string(),
        "metadata key \"x\" at offset 0x25: string length 18446744073709551615 exceeds remaining 120 bytes"
    );
    // One byte more than remains.
    let e = err(one_kv(|r| {
        r.str("x").u32(ty::STRING).u64(11).zeros(10);
    }));
    assert!(matches!(e, GgufError::StringTooLong { len: 11, remaining: 10, .. }), "{e}");
}

#[test]
fn huge_array_counts_are_rejected_before_walking() {
    // 2^63 u8 elements, 2^60 strings (8 bytes each at least), 2^59 arrays (12 bytes each).
    for (elem, count, min_each) in
        [(ty::U8, 1u64 << 63, 1), (ty::STRING, 1 << 60, 8), (ty::ARRAY, 1 << 59, 12), (ty::U64, u64::MAX, 8)]
    {
        let e = err(one_kv(|r| {
            r.str("arr").u32(ty::ARRAY).u32(elem).u64(count).zeros(64);
        }));
        assert!(
            matches!(e, GgufError::CountTooLarge { count: c, min_each: m, remaining: 64, offset: 43, .. } if c == count && m == min_each),
            "{e}"
        );
    }
    // 8 empty strings need 64 bytes: exactly enough is fine, one byte less is not.
    let b = one_kv(|r| {
        r.str("arr").u32(ty::ARRAY).u32(ty::STRING).u64(8).zeros(64);
    });
    assert_eq!(ok(b.clone()).get_str_array("arr").unwrap().to_vec_str().unwrap(), vec![""; 8]);
    let e = err(b[..b.len() - 1].to_vec());
    assert!(matches!(e, GgufError::CountTooLarge { count: 8, .. }), "{e}");
    // Element lengths inside a string array are checked too.
    let e = err(one_kv(|r| {
        r.str("arr").u32(ty::ARRAY).u32(ty::STRING).u64(2).str("ok").u64(1 << 40).zeros(8);
    }));
    assert!(matches!(e, GgufError::StringTooLong { len, .. } if len == 1 << 40), "{e}");
}

#[test]
fn truncated_values() {
    let e = err(one_kv(|r| {
        r.str("x").u32(ty::U64).bytes(&[1, 2, 3]);
    }));
    assert!(
        matches!(&e, GgufError::Truncated { what, offset: 37, need: 8, remaining: 3 } if what == "metadata key \"x\""),
        "{e}"
    );
    // Array header cut short.
    let e = err(one_kv(|r| {
        r.str("x").u32(ty::ARRAY).u32(ty::U32).bytes(&[1, 0]);
    }));
    assert!(matches!(e, GgufError::Truncated { need: 8, remaining: 2, .. }), "{e}");
    // Metadata count says 2, file holds 1 (the count bound passes: 14+ bytes remain).
    let mut r = Raw::header(3, 0, 2);
    r.kv_str("a", "0123456789abcdef");
    let e = err(r.build());
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
}

#[test]
fn unknown_value_types() {
    let e = err(one_kv(|r| {
        r.str("x").u32(13).u64(0);
    }));
    assert!(matches!(e, GgufError::UnknownValueType { id: 13, offset: 33, .. }), "{e}");
    let e = err(one_kv(|r| {
        r.str("x").u32(ty::ARRAY).u32(0xdead).u64(0);
    }));
    assert!(matches!(e, GgufError::UnknownValueType { id: 0xdead, offset: 37, .. }), "{e}");
}

#[test]
fn bools_must_be_zero_or_one() {
    let e = err(one_kv(|r| {
        r.kv("b", ty::BOOL, &[2]);
    }));
    assert!(matches!(e, GgufError::InvalidBool { value: 2, offset: 37, .. }), "{e}");
    let e = err(one_kv(|r| {
        r.str("b").u32(ty::ARRAY).u32(ty::BOOL).u64(3).bytes(&[1, 0, 0xff]);
    }));
    assert!(matches!(e, GgufError::InvalidBool { value: 0xff, offset: 51, .. }), "{e}");
    let f = ok(one_kv(|r| {
        r.str("b").u32(ty::ARRAY).u32(ty::BOOL).u64(3).bytes(&[1, 0, 1]);
    }));
    assert_eq!(f.get_array("b").unwrap().to_vec::<bool>().unwrap(), [true, false, true]);
}

#[test]
fn keys_empty_non_utf8_and_duplicate() {
    let e = err(one_kv(|r| {
        r.kv("", ty::U8, &[0]);
    }));
    assert!(matches!(e, GgufError::EmptyKey { index: 0, offset: 24 }), "{e}");
    let e = err(one_kv(|r| {
        r.str(b"\xffkey").u32(ty::U8).u8(0);
    }));
    assert!(matches!(e, GgufError::InvalidUtf8 { offset: 32, .. }), "{e}");

    // Entries: "a" at 24 (8+1+4+4 = 17 bytes), "b" at 41, "a" again at 58.
    let mut r = Raw::header(3, 0, 3);
    r.kv_u32("a", 1).kv_u32("b", 2).kv_u32("a", 3);
    let e = err(r.build());
    assert!(matches!(&e, GgufError::DuplicateKey { key, offset: 58, first_offset: 24 } if key == "a"), "{e}");
}

#[test]
fn alignment_rules() {
    for bad in [0u32, 3, 48] {
        let mut r = Raw::header(3, 0, 1);
        r.kv_u32("general.alignment", bad);
        let e = err(r.build());
        assert!(matches!(e, GgufError::InvalidAlignment { alignment } if alignment == bad as u64), "{e}");
    }
    let mut r = Raw::header(3, 0, 1);
    r.kv("general.alignment", ty::U64, &64u64.to_le_bytes());
    let e = err(r.build());
    assert!(matches!(&e, GgufError::AlignmentType { actual } if actual == "u64"), "{e}");

    // Alignment 64: data section and offsets follow it; an offset of 32 is misaligned.
    let build = |offset: u64| {
        let mut r = Raw::header(3, 2, 1);
        r.kv_u32("general.alignment", 64).tensor("a", &[4], 0, 0).tensor("b", &[4], 0, offset);
        r.pad(64).zeros(128);
        r.build()
    };
    let f = ok(build(64));
    assert_eq!((f.alignment(), f.data_offset() % 64), (64, 0));
    let e = err(build(32));
    assert!(matches!(&e, GgufError::MisalignedTensor { tensor, offset: 32, alignment: 64 } if tensor == "b"), "{e}");
}

#[test]
fn nesting_depth_is_bounded() {
    fn nested(levels: usize) -> Raw {
        let mut r = Raw::header(3, 0, 1);
        r.str("deep").u32(ty::ARRAY);
        for _ in 1..levels {
            r.u32(ty::ARRAY).u64(1);
        }
        r.u32(ty::U8).u64(1).u8(7);
        r
    }
    let f = ok(nested(MAX_NESTING).build());
    let mut v = f.get("deep").unwrap();
    let mut depth = 0;
    while let ValueRef::Array(a) = v {
        depth += 1;
        v = a.get(0).unwrap();
    }
    assert_eq!((depth, v), (MAX_NESTING, ValueRef::U8(7)));
    let e = err(nested(MAX_NESTING + 1).build());
    assert!(matches!(&e, GgufError::NestingTooDeep { key, max } if key == "deep" && *max == MAX_NESTING), "{e}");
}

#[test]
fn arrays_of_arrays_keep_their_own_element_types() {
    // [[1u16, 2u16], ["x"], []] — inner arrays of different types, as the spec allows.
    let f = ok(one_kv(|r| {
        r.str("aa").u32(ty::ARRAY).u32(ty::ARRAY).u64(3);
        r.u32(ty::U16).u64(2).bytes(&[1, 0, 2, 0]);
        r.u32(ty::STRING).u64(1).str("x");
        r.u32(ty::F64).u64(0);
    }));
    let a = f.get_array("aa").unwrap();
    let inner: Vec<_> = a.iter().map(|v| v.as_array().unwrap()).collect();
    assert_eq!(inner[0].to_vec::<u16>().unwrap(), [1, 2]);
    assert_eq!(inner[1].strings().unwrap().to_vec_str().unwrap(), ["x"]);
    assert!(inner[2].is_empty());
    assert_eq!(format!("{}", f.get("aa").unwrap()), r#"[[1, 2], ["x"], []]"#);
    // Typed views of the outer array are type errors naming the key, not panics.
    let e = a.to_vec::<u16>().unwrap_err();
    assert!(
        matches!(&e, GgufError::TypeMismatch { key, actual, .. } if key == "aa" && actual == "array<array>"),
        "{e}"
    );
    assert!(matches!(f.get_str_array("aa"), Err(GgufError::TypeMismatch { .. })));
}

// ---- strings and getters ------------------------------------------------------------------------

#[test]
fn non_utf8_strings_open_and_fail_only_when_read_as_str() {
    let mut r = Raw::header(3, 0, 2);
    r.kv("s", ty::STRING, &[2, 0, 0, 0, 0, 0, 0, 0, b'a', 0xc3]);
    r.str("arr").u32(ty::ARRAY).u32(ty::STRING).u64(2).str("ok").str(b"\xff");
    let f = ok(r.build());
    assert_eq!(f.get("s"), Some(ValueRef::String(b"a\xc3")));
    let e = f.get_str("s").unwrap_err();
    assert!(matches!(&e, GgufError::NotUtf8 { key, index: None, valid_up_to: 1 } if key == "s"), "{e}");
    let arr = f.get_str_array("arr").unwrap();
    assert_eq!(arr.to_vec_bytes(), [&b"ok"[..], &b"\xff"[..]]);
    let e = arr.to_vec_str().unwrap_err();
    assert!(matches!(e, GgufError::NotUtf8 { index: Some(1), valid_up_to: 0, .. }), "{e}");
}

#[test]
fn typed_getters() {
    let mut r = Raw::header(3, 0, 8);
    r.kv("u8", ty::U8, &[200]);
    r.kv("neg", ty::I32, &(-5i32).to_le_bytes());
    r.kv("big", ty::U64, &(1u64 << 40).to_le_bytes());
    r.kv("i64", ty::I64, &(-1i64 << 40).to_le_bytes());
    r.kv("f32", ty::F32, &1.5f32.to_le_bytes());
    r.kv("f64", ty::F64, &0.1f64.to_le_bytes());
    r.kv("t", ty::BOOL, &[1]);
    r.kv_str("s", "text");
    let f = ok(r.build());
    // Integers convert when the value fits exactly.
    assert_eq!(f.get_u32("u8").unwrap(), 200);
    assert_eq!(f.get_i64("neg").unwrap(), -5);
    assert_eq!(f.get_u64("big").unwrap(), 1 << 40);
    assert_eq!(f.get_i64("i64").unwrap(), -1 << 40);
    let e = f.get_u32("neg").unwrap_err();
    assert!(matches!(&e, GgufError::OutOfRange { key, value, target: "u32" } if key == "neg" && value == "-5"), "{e}");
    assert!(matches!(f.get_u32("big"), Err(GgufError::OutOfRange { .. })));
    assert!(matches!(f.get_i32("i64"), Err(GgufError::OutOfRange { .. })));
    // Floats: f32 only for get_f32; get_f64 widens f32.
    assert_eq!(f.get_f32("f32").unwrap(), 1.5);
    assert_eq!(f.get_f64("f32").unwrap(), 1.5);
    assert_eq!(f.get_f64("f64").unwrap(), 0.1);
    let e = f.get_f32("f64").unwrap_err();
    assert_eq!(e.to_string(), r#"metadata key "f64": expected f32, found f64"#);
    assert!(matches!(f.get_u32("f32"), Err(GgufError::TypeMismatch { .. })));
    assert!(f.get_bool("t").unwrap());
    assert!(matches!(f.get_bool("u8"), Err(GgufError::TypeMismatch { .. })));
    assert_eq!(f.get_str("s").unwrap(), "text");
    assert!(matches!(f.get_array("s"), Err(GgufError::TypeMismatch { .. })));
    // Missing keys.
    let e = f.get_u32("nope").unwrap_err();
    assert_eq!(e.to_string(), r#"metadata key "nope" not found"#);
    assert_eq!(f.get_opt_u32("nope").unwrap(), None);
    assert_eq!(f.get_opt_str("s").unwrap(), Some("text"));
    assert!(f.get_opt_f32("s").is_err());
    // Metadata comes back in file order.
    let keys: Vec<&str> = f.metadata().map(|(k, _)| k).collect();
    assert_eq!(keys, ["u8", "neg", "big", "i64", "f32", "f64", "t", "s"]);
}

// ---- tensor index -------------------------------------------------------------------------------

#[test]
fn unknown_tensor_types() {
    for id in [4u32, 5, 31, 36, 43, u32::MAX] {
        let e = err(with_tensors(&[("t", &[32], id, 0)], 256));
        assert!(matches!(&e, GgufError::UnknownTensorType { tensor, id: i } if tensor == "t" && *i == id), "{e}");
    }
}

#[test]
fn dimension_rules() {
    let e = err(with_tensors(&[("t", &[1, 1, 1, 1, 1], 0, 0)], 64));
    assert!(matches!(e, GgufError::TooManyDims { n_dims: 5, max: 4, .. }), "{e}");
    // n_dims itself huge: rejected before reading dims.
    let mut r = Raw::header(3, 1, 0);
    r.str("t").u32(u32::MAX).zeros(64);
    assert!(matches!(err(r.build()), GgufError::TooManyDims { n_dims: 0xffff_ffff, .. }));

    let e = err(with_tensors(&[("t", &[4, u64::MAX], 0, 0)], 64));
    assert!(matches!(e, GgufError::NegativeDim { dim: 1, value: u64::MAX, .. }), "{e}");
    let e = err(with_tensors(&[("t", &[1 << 32, 1 << 32], 0, 0)], 64));
    assert!(matches!(e, GgufError::ElementCountOverflow { .. }), "{e}");
    let e = err(with_tensors(&[("t", &[1 << 62], 0, 0)], 64));
    assert!(matches!(e, GgufError::TensorSizeOverflow { ty: GgmlType::F32, .. }), "{e}");

    // ggml allows zero-sized dimensions (0 bytes) and 0 dimensions (a scalar, 1 element).
    let f = ok(with_tensors(&[("empty", &[0, 5], 0, 0), ("scalar", &[], 0, 0)], 32));
    let (empty, scalar) = (f.tensor("empty").unwrap(), f.tensor("scalar").unwrap());
    assert_eq!((empty.size, empty.n_elements()), (0, 0));
    assert_eq!((scalar.size, scalar.n_elements()), (4, 1));
    assert_eq!(f.tensor_data(scalar).len(), 4);
}

#[test]
fn rows_must_be_whole_blocks() {
    // Q4_0 (id 2) has 32-element blocks.
    let e = err(with_tensors(&[("q", &[33, 2], 2, 0)], 256));
    assert!(matches!(e, GgufError::PartialBlock { ty: GgmlType::Q4_0, ne0: 33, block_elems: 32, .. }), "{e}");
    assert_eq!(e.to_string(), "tensor q: row of 33 elements is not a whole number of q4_0 blocks (32 elements each)");
    let f = ok(with_tensors(&[("q", &[64, 2], 2, 0)], 256));
    assert_eq!(f.tensor("q").unwrap().size, 4 * 18);
}

#[test]
fn tensor_names() {
    let e = err(with_tensors(&[("a", &[4], 0, 0), ("a", &[4], 0, 32)], 64));
    assert!(matches!(&e, GgufError::DuplicateTensor { name, first_index: 0, index: 1 } if name == "a"), "{e}");
    let long = "x".repeat(64);
    let e = err(with_tensors(&[(&long, &[4], 0, 0)], 64));
    assert!(matches!(e, GgufError::TensorNameTooLong { len: 64, max: 64, .. }), "{e}");
    assert!(GgufFile::from_bytes(with_tensors(&[(&long[..63], &[4], 0, 0)], 64)).is_ok());
    let mut r = Raw::header(3, 1, 0);
    r.str(b"\xfe").u32(1).u64(4).u32(0).u64(0).pad(32).zeros(16);
    assert!(matches!(err(r.build()), GgufError::InvalidUtf8 { offset: 32, .. }));
}

#[test]
fn truncated_tensor_info() {
    let b = with_tensors(&[("t", &[4, 4], 0, 0)], 64);
    // Cut inside the second dimension: header 24 + name 9 + n_dims 4 + dim 8 + 3 bytes.
    let e = err(b[..48].to_vec());
    assert!(
        matches!(&e, GgufError::Truncated { what, offset: 45, need: 8, remaining: 3 } if what == "tensor t"),
        "{e}"
    );
}

#[test]
fn tensor_data_past_end_of_file() {
    // Info: 24 header + 8+19 name + 4 + 2×8 dims + 4 type + 8 offset = 83, data at 96 = 0x60.
    // 1024×1 f32 = 4096 bytes, but only 100 follow: file size 196 = 0xc4.
    let e = err(with_tensors(&[("blk.3.attn_q.weight", &[1024, 1], 0, 0)], 100));
    assert_eq!(e.to_string(), "tensor blk.3.attn_q.weight: data 0x60..0x1060 past end of file (size 0xc4)");
    // An offset so large the end overflows is reported, not wrapped.
    let e = err(with_tensors(&[("t", &[4], 0, u64::MAX - 31)], 64));
    assert!(matches!(e, GgufError::TensorPastEnd { end: u64::MAX, .. }), "{e}");
    // A zero-byte tensor may sit exactly at the end of the file.
    assert!(GgufFile::from_bytes(with_tensors(&[("t", &[0], 0, 32)], 32)).is_ok());
}

#[test]
fn overlapping_and_unordered_tensors() {
    // 16 f32 = 64 bytes at 0 and at 32 overlap.
    let e = err(with_tensors(&[("a", &[16], 0, 0), ("b", &[16], 0, 32)], 128));
    assert!(matches!(&e, GgufError::OverlappingTensors { first, second, .. } if first == "a" && second == "b"), "{e}");
    // Out of order with a gap is accepted (ggml insists on packed order; this reader need not).
    let mut r = Raw::header(3, 2, 0);
    r.tensor("late", &[4], 0, 64).tensor("early", &[4], 0, 0).pad(32);
    let base = r.len();
    r.bytes(&f32_bytes(&[1.0, 2.0, 3.0, 4.0])).zeros(48).bytes(&f32_bytes(&[5.0, 6.0, 7.0, 8.0]));
    let f = ok(r.build());
    assert_eq!(f.data_offset(), base as u64);
    assert_eq!(f.tensor_data(f.tensor("early").unwrap()), f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
    assert_eq!(f.tensor_data(f.tensor("late").unwrap()), f32_bytes(&[5.0, 6.0, 7.0, 8.0]));
    assert_eq!(f.tensors()[0].name, "late");
}

#[test]
fn file_without_tensors() {
    // 24 + 8+1+4+4 = 41 bytes, no padding written: data offset is clamped to the file size.
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("a", 1);
    let f = ok(r.build());
    assert_eq!((f.file_size(), f.data_offset()), (41, 41));
    r.pad(32);
    let f = ok(r.build());
    assert_eq!(f.data_offset(), 64);
}

/// The example messages quoted in docs/GGUF.md.
#[test]
fn documented_messages() {
    let msg = |b: Vec<u8>| err(b).to_string();
    assert_eq!(
        msg(one_kv(|r| {
            r.str("x").u32(13).u64(0);
        })),
        "metadata key \"x\" at offset 0x21: unknown value type id 13"
    );
    assert_eq!(
        msg(one_kv(|r| {
            r.kv("b", ty::BOOL, &[2]);
        })),
        "metadata key \"b\" at offset 0x25: bool byte is 2, must be 0 or 1"
    );
    assert_eq!(
        msg(one_kv(|r| {
            r.kv("", ty::U8, &[0]);
        })),
        "metadata entry 0 at offset 0x18: empty key"
    );
    let mut r = Raw::header(3, 0, 3);
    r.kv_u32("a", 1).kv_u32("b", 2).kv_u32("a", 3);
    assert_eq!(msg(r.build()), "metadata key \"a\" at offset 0x3a: duplicate key (first at offset 0x18)");
    let mut r = Raw::header(3, 0, 1);
    r.kv("general.alignment", ty::U64, &64u64.to_le_bytes());
    assert_eq!(msg(r.build()), "metadata key \"general.alignment\": must be u32, found u64");
    let mut r = Raw::header(3, 0, 1);
    r.kv_u32("general.alignment", 48);
    assert_eq!(msg(r.build()), "alignment 48 is not a non-zero power of two");
    let mut r = Raw::header(3, 1, 0);
    r.str(b"\xfe").u32(1).u64(4).u32(0).u64(0).pad(32).zeros(16);
    assert_eq!(msg(r.build()), "tensor info 0 name at offset 0x20: not valid UTF-8");
    assert_eq!(msg(with_tensors(&[("t", &[1, 1, 1, 1, 1], 0, 0)], 64)), "tensor t: 5 dimensions, at most 4 allowed");
    assert_eq!(
        msg(with_tensors(&[("t", &[4, u64::MAX], 0, 0)], 64)),
        "tensor t: dimension 1 is 18446744073709551615, which is negative as ggml's int64"
    );
    assert_eq!(
        msg(with_tensors(&[("t", &[1 << 32, 1 << 32], 0, 0)], 64)),
        "tensor t: element count of shape [4294967296, 4294967296] overflows int64"
    );
    assert_eq!(msg(with_tensors(&[("t", &[32], 4, 0)], 256)), "tensor t: unknown ggml type id 4");
    assert_eq!(
        msg(one_kv(|r| {
            r.str("arr").u32(ty::ARRAY).u32(ty::U8).u64(1 << 63).zeros(64);
        })),
        "metadata key \"arr\" array of u8 at offset 0x2b: count 9223372036854775808 exceeds remaining 64 bytes (each element takes at least 1 bytes)"
    );
    assert_eq!(
        msg(with_tensors(&[("t", &[1 << 62], 0, 0)], 64)),
        "tensor t: byte size of f32 shape [4611686018427387904] overflows"
    );
    assert_eq!(
        msg(with_tensors(&[("a", &[4], 0, 0), ("a", &[4], 0, 32)], 64)),
        "tensor a: duplicate name (tensors 0 and 1)"
    );
    // Two infos of 33 bytes after the 24-byte header end at 90: data at 0x60.
    assert_eq!(
        msg(with_tensors(&[("a", &[16], 0, 0), ("b", &[16], 0, 32)], 128)),
        "tensor b: data 0x80..0xc0 overlaps tensor a at 0x60..0xa0"
    );
    assert_eq!(
        msg(Raw::header(1, 0, 0).build()),
        "unsupported GGUF version 1 (GGUF v1 is obsolete; this reader reads v2 and v3)"
    );
    let mut b = Raw::header(3, 0, 0).build();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert_eq!(
        msg(b),
        "big-endian GGUF file (version field reads 0x03000000, which is version 3 byte-swapped); only little-endian files are supported"
    );
}
