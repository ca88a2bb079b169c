//! Writer → reader round trips, and the writer's bytes against files hand-built from the spec.

mod common;

use common::{Raw, f32_bytes, ty};
use kiln_gguf::{
    Array, GgmlType, GgufError, GgufFile, GgufWriter, MAX_NESTING, TensorInfo, Value, ValueRef, ValueType,
};

/// One value of every type, arrays of every element type, and nested arrays (heterogeneous inner
/// element types, empty inner arrays, three levels).
fn all_values() -> Vec<(&'static str, Value)> {
    vec![
        ("u8", Value::U8(255)),
        ("i8", Value::I8(-128)),
        ("u16", Value::U16(65535)),
        ("i16", Value::I16(-32768)),
        ("u32", Value::U32(u32::MAX)),
        ("i32", Value::I32(i32::MIN)),
        ("f32", Value::F32(-0.15625)),
        ("f32.inf", Value::F32(f32::INFINITY)),
        ("bool.t", Value::Bool(true)),
        ("bool.f", Value::Bool(false)),
        ("str", "héllo ✓".into()),
        ("str.empty", "".into()),
        ("str.bytes", Value::String(vec![0xff, 0x00, 0x41])),
        ("u64", Value::U64(u64::MAX)),
        ("i64", Value::I64(i64::MIN)),
        ("f64", Value::F64(std::f64::consts::PI)),
        ("arr.u8", vec![0u8, 1, 255].into()),
        ("arr.i8", vec![-1i8, 0, 127].into()),
        ("arr.u16", vec![1u16, 65535].into()),
        ("arr.i16", vec![-32768i16, 5].into()),
        ("arr.u32", vec![7u32; 5].into()),
        ("arr.i32", vec![-3i32, 0, 3].into()),
        ("arr.f32", vec![0.5f32, -2.25, 1e-30].into()),
        ("arr.bool", vec![true, false, true].into()),
        ("arr.str", vec!["a", "", "ü", "long string with spaces"].into()),
        ("arr.u64", vec![u64::MAX, 0].into()),
        ("arr.i64", vec![i64::MIN, i64::MAX].into()),
        ("arr.f64", vec![1e300f64, -1e-300].into()),
        ("arr.empty", Value::Array(Array::F64(vec![]))),
        (
            "arr.nested",
            vec![Array::from(vec![1i32, 2]), Array::from(vec!["x", "y"]), Array::U8(vec![]), Array::from(vec![true])]
                .into(),
        ),
        (
            "arr.nested3",
            vec![Array::Array(vec![Array::from(vec![1.5f32]), Array::from(vec![2u64, 3])]), Array::Array(vec![])]
                .into(),
        ),
    ]
}

#[test]
fn every_value_type_round_trips() {
    let mut w = GgufWriter::new();
    for (k, v) in all_values() {
        w.add(k, v).unwrap();
    }
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let got: Vec<(String, Value)> = f.metadata().map(|(k, v)| (k.to_owned(), v.to_value())).collect();
    let want: Vec<(String, Value)> = all_values().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    assert_eq!(got, want);

    // Spot checks through the borrowed API.
    assert_eq!(f.get("i16"), Some(ValueRef::I16(-32768)));
    assert_eq!(f.get("str.bytes"), Some(ValueRef::String(b"\xff\x00A")));
    let a = f.get_array("arr.i32").unwrap();
    assert_eq!((a.elem_type(), a.len()), (ValueType::I32, 3));
    assert_eq!(a.to_vec::<i32>().unwrap(), [-3, 0, 3]);
    assert_eq!(a.get(2), Some(ValueRef::I32(3)));
    assert_eq!(a.get(3), None);
    let e = a.to_vec::<u32>().unwrap_err();
    assert_eq!(e.to_string(), r#"metadata key "arr.i32": expected array<u32>, found array<i32>"#);
    let s = f.get_str_array("arr.str").unwrap();
    assert_eq!(s.get(2), Some("ü".as_bytes()));
    assert_eq!(s.iter().len(), 4);
    let nested = f.get_array("arr.nested").unwrap();
    assert_eq!(nested.get(1).unwrap().as_array().unwrap().elem_type(), ValueType::String);
    assert_eq!(format!("{:.2}", f.get("arr.u32").unwrap()), "[7, 7, ... (3 more)]");
    assert_eq!(format!("{}", f.get("arr.str").unwrap()), r#"["a", "", "ü", "long string with spaces"]"#);
}

#[test]
fn writer_bytes_match_a_hand_built_file() {
    // The same file written field by field from the spec.
    let mut r = Raw::header(3, 2, 3);
    r.kv_str("general.architecture", "llama");
    r.kv_u32("general.alignment", 64);
    r.str("tok").u32(ty::ARRAY).u32(ty::ARRAY).u64(2);
    r.u32(ty::I32).u64(1).bytes(&(-7i32).to_le_bytes());
    r.u32(ty::BOOL).u64(2).bytes(&[1, 0]);
    r.tensor("a", &[2, 2], 0, 0).tensor("b", &[32], GgmlType::Q8_0.id(), 64);
    r.pad(64);
    r.bytes(&f32_bytes(&[1.0, 2.0, 3.0, 4.0])).pad(64);
    r.bytes(&[9; 34]).pad(64);

    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama").unwrap();
    w.set_alignment(64).unwrap();
    w.add("tok", vec![Array::I32(vec![-7]), Array::Bool(vec![true, false])]).unwrap();
    w.add_tensor("a", GgmlType::F32, &[2, 2], f32_bytes(&[1.0, 2.0, 3.0, 4.0])).unwrap();
    w.add_tensor("b", GgmlType::Q8_0, &[32], vec![9; 34]).unwrap();
    assert_eq!(w.to_bytes().unwrap(), r.build());
}

#[test]
fn every_tensor_type_has_its_layout_size() {
    let mut w = GgufWriter::new();
    let mut expected = Vec::new();
    let mut offset = 0u64;
    for (i, ty) in GgmlType::ALL.into_iter().enumerate() {
        // Two blocks per row, three rows.
        let shape = [2 * ty.block_elems() as u64, 3];
        let size = (2 * ty.block_bytes() * 3) as u64;
        let data: Vec<u8> = (0..size).map(|b| (b as usize * 31 + i) as u8).collect();
        w.add_tensor(format!("t.{}", ty.name()), ty, &shape, data.clone()).unwrap();
        expected.push((TensorInfo { name: format!("t.{}", ty.name()), ty, shape: shape.to_vec(), offset, size }, data));
        offset = (offset + size).div_ceil(32) * 32;
    }
    let bytes = w.to_bytes().unwrap();
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.tensors().len(), expected.len());
    for (info, data) in &expected {
        let t = f.tensor(&info.name).unwrap();
        assert_eq!(t, info);
        assert_eq!(f.tensor_data(t), &data[..], "{}", info.name);
        assert_eq!((f.data_offset() + t.offset) % 32, 0);
    }
    // The file ends with the last tensor's padding.
    let last = &expected.last().unwrap().0;
    assert_eq!(f.file_size(), f.data_offset() + (last.offset + last.size).div_ceil(32) * 32);
}

#[test]
fn custom_alignment_is_honoured() {
    for align in [1u32, 8, 64, 4096] {
        let mut w = GgufWriter::new();
        w.set_alignment(align).unwrap();
        w.add_tensor("a", GgmlType::F16, &[3], vec![1; 6]).unwrap();
        w.add_tensor("b", GgmlType::I8, &[5], vec![2; 5]).unwrap();
        let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
        let a = u64::from(align);
        assert_eq!(f.alignment(), a);
        assert_eq!(f.data_offset() % a, 0);
        let b = f.tensor("b").unwrap();
        assert_eq!(b.offset, 6u64.div_ceil(a) * a);
        assert_eq!(f.tensor_data(b), [2; 5]);
        // Padding is zeros.
        let pad_start = (f.data_offset() + 6) as usize;
        assert!(f.bytes()[pad_start..(f.data_offset() + b.offset) as usize].iter().all(|&x| x == 0));
    }
}

#[test]
fn streaming_writes_the_same_bytes() {
    let data: Vec<Vec<u8>> = vec![(0..4096u32).map(|i| i as u8).collect(), vec![], vec![7; 34 * 3], vec![5; 4]];
    let specs: [(&str, GgmlType, &[u64]); 4] = [
        ("big", GgmlType::F32, &[1024]),
        ("zero", GgmlType::F32, &[0, 4]),
        ("q", GgmlType::Q8_0, &[32, 3]),
        ("inline", GgmlType::I32, &[1]),
    ];
    let mut one_shot = GgufWriter::new();
    let mut streamed = GgufWriter::new();
    one_shot.add("k", 1u8).unwrap();
    streamed.add("k", 1u8).unwrap();
    for ((name, ty, shape), d) in specs.iter().zip(&data) {
        one_shot.add_tensor(*name, *ty, shape, d.clone()).unwrap();
        if *name == "inline" {
            streamed.add_tensor(*name, *ty, shape, d.clone()).unwrap();
        } else {
            streamed.add_tensor_info(*name, *ty, shape).unwrap();
        }
    }
    let mut s = streamed.begin(Vec::new()).unwrap();
    assert_eq!(s.current().unwrap().name, "big");
    for chunk in data[0].chunks(1000) {
        s.write_data(chunk).unwrap();
    }
    // The zero-byte tensor needed nothing; "q" is next.
    assert_eq!(s.current().unwrap().name, "q");
    let e = s.write_tensor("inline", &data[3]).unwrap_err();
    assert!(matches!(e, GgufError::TensorOrder { .. }), "{e}");
    let e = s.write_data(&[0; 103]).unwrap_err();
    assert!(matches!(e, GgufError::TensorDataLength { expected: 102, actual: 103, .. }), "{e}");
    s.write_tensor("q", &data[2]).unwrap();
    // "inline" was written from memory.
    assert!(s.current().is_none());
    assert_eq!(s.finish().unwrap(), one_shot.to_bytes().unwrap());
}

#[test]
fn streaming_must_complete_every_tensor() {
    let mut w = GgufWriter::new();
    w.add_tensor_info("a", GgmlType::F32, &[4]).unwrap();
    let mut s = w.begin(Vec::new()).unwrap();
    s.write_data(&[0; 10]).unwrap();
    let e = s.finish().unwrap_err();
    assert!(matches!(e, GgufError::TensorDataIncomplete { written: 10, expected: 16, .. }), "{e}");
    let mut w = GgufWriter::new();
    w.add_tensor_info("a", GgmlType::F32, &[4]).unwrap();
    assert!(matches!(w.to_bytes(), Err(GgufError::TensorDataIncomplete { written: 0, .. })));
}

#[test]
fn writer_rejects_what_the_reader_would() {
    let mut w = GgufWriter::new();
    w.add("k", 1u32).unwrap();
    assert!(matches!(w.add("k", 2u32), Err(GgufError::KeyExists { .. })));
    assert!(matches!(w.add("", 2u32), Err(GgufError::InvalidKey { .. })));
    assert!(matches!(w.add("general.alignment", 64u64), Err(GgufError::AlignmentType { .. })));
    assert!(matches!(w.set_alignment(0), Err(GgufError::InvalidAlignment { alignment: 0 })));
    assert!(matches!(w.set_alignment(24), Err(GgufError::InvalidAlignment { alignment: 24 })));
    let mut deep = Array::U8(vec![1]);
    for _ in 0..MAX_NESTING {
        deep = Array::Array(vec![deep]);
    }
    assert!(matches!(w.add("deep", deep), Err(GgufError::NestingTooDeep { .. })));

    w.add_tensor("t", GgmlType::F32, &[2], vec![0; 8]).unwrap();
    assert!(matches!(w.add_tensor("t", GgmlType::F32, &[2], vec![0; 8]), Err(GgufError::TensorExists { .. })));
    assert!(matches!(
        w.add_tensor("u", GgmlType::F32, &[2], vec![0; 7]),
        Err(GgufError::TensorDataLength { expected: 8, actual: 7, .. })
    ));
    assert!(matches!(w.add_tensor_info("u", GgmlType::Q4_K, &[255]), Err(GgufError::PartialBlock { .. })));
    assert!(matches!(w.add_tensor_info("u", GgmlType::F32, &[1; 5]), Err(GgufError::TooManyDims { .. })));
    assert!(matches!(w.add_tensor_info("x".repeat(64), GgmlType::F32, &[1]), Err(GgufError::TensorNameTooLong { .. })));
    assert!(matches!(w.add_tensor_info("u", GgmlType::F32, &[1 << 63]), Err(GgufError::NegativeDim { .. })));
    // Nothing failed was added.
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!((f.metadata().len(), f.tensors().len()), (1, 1));
}

#[test]
fn open_maps_a_file_written_to_disk() {
    let path = std::env::temp_dir().join(format!("kiln-gguf-roundtrip-{}.gguf", std::process::id()));
    let mut w = GgufWriter::new();
    w.add("general.name", "on disk").unwrap();
    w.add_tensor("w", GgmlType::BF16, &[4, 2], (0..16u8).collect::<Vec<_>>()).unwrap();
    let mut expected = GgufWriter::new();
    expected.add("general.name", "on disk").unwrap();
    expected.add_tensor("w", GgmlType::BF16, &[4, 2], (0..16u8).collect::<Vec<_>>()).unwrap();
    w.write_to_path(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let expected = expected.to_bytes().unwrap();
    assert_eq!(f.bytes(), expected);
    assert_eq!(f.tensor_data(f.tensor("w").unwrap()), (0..16u8).collect::<Vec<_>>());
    // Released pages come back from the file: the same bytes (a range past the end is ignored).
    let (offset, len) = (f.data_offset() as usize, f.file_size() as usize - f.data_offset() as usize);
    f.release(offset, len);
    f.release(0, f.file_size() as usize + 1);
    assert_eq!(f.bytes(), expected);
    drop(f);
    std::fs::remove_file(&path).unwrap();
    let e = GgufFile::open(&path).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }), "{e}");
}

#[test]
fn files_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<GgufFile>();
    send_sync::<ValueRef<'static>>();
    send_sync::<GgufError>();
}
