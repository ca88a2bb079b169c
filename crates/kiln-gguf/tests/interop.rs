//! Interoperability with gguf-py (`gguf==0.19.0`, llama.cpp's Python GGUF library), the
//! independent reference: files gguf-py writes must read back as gguf-py describes them, and files
//! this crate writes must read in gguf-py as we wrote them.
//!
//! Values cross as JSON; strings travel as hex so that arbitrary bytes compare exactly.

use std::ffi::OsStr;
use std::path::PathBuf;

use kiln_gguf::{Array, GgmlType, GgufError, GgufFile, GgufWriter, Value, ValueRef, ValueType};
use kiln_testkit::run_python;
use serde_json::{Value as Json, json};

fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kiln-gguf-interop-{}-{tag}.gguf", std::process::id()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A value as the Python scripts print it: `{"type": "u32" | "array<i32>" | …, "value": …}`
/// with strings as `{"hex": …}` and arrays as lists.
fn value_json(v: &ValueRef<'_>) -> Json {
    match *v {
        ValueRef::U8(x) => json!(x),
        ValueRef::I8(x) => json!(x),
        ValueRef::U16(x) => json!(x),
        ValueRef::I16(x) => json!(x),
        ValueRef::U32(x) => json!(x),
        ValueRef::I32(x) => json!(x),
        ValueRef::F32(x) => json!(f64::from(x)),
        ValueRef::Bool(x) => json!(x),
        ValueRef::String(b) => json!({ "hex": hex(b) }),
        ValueRef::Array(a) => Json::Array(a.iter().map(|e| value_json(&e)).collect()),
        ValueRef::U64(x) => json!(x),
        ValueRef::I64(x) => json!(x),
        ValueRef::F64(x) => json!(x),
    }
}

const PY_WRITE: &str = r#"
import json, sys
import numpy as np
import gguf
from gguf import GGUFValueType as T, GGMLQuantizationType as Q

path, alignment = sys.argv[1], int(sys.argv[2])
w = gguf.GGUFWriter(path, "llama")
kv = []  # (key, type name, value) in the order written; the writer adds general.architecture first
kv.append(("general.architecture", "string", {"hex": b"llama".hex()}))
if alignment != 32:
    w.add_custom_alignment(alignment)
    kv.append(("general.alignment", "u32", alignment))
def add(key, tname, vtype, value, sub=None, shown=None):
    w.add_key_value(key, value, vtype, sub_type=sub)
    kv.append((key, tname, value if shown is None else shown))
def hexs(s): return {"hex": s.encode() .hex() if isinstance(s, str) else s.hex()}
add("v.u8", "u8", T.UINT8, 200)
add("v.i8", "i8", T.INT8, -100)
add("v.u16", "u16", T.UINT16, 60000)
add("v.i16", "i16", T.INT16, -30000)
add("v.u32", "u32", T.UINT32, 4000000000)
add("v.i32", "i32", T.INT32, -2000000000)
add("v.f32", "f32", T.FLOAT32, -1.75)
add("v.bool", "bool", T.BOOL, True)
add("v.str", "string", T.STRING, "gguf-py ✓", shown=hexs("gguf-py ✓"))
add("v.bytes", "string", T.STRING, b"\xff\xfe", shown=hexs(b"\xff\xfe"))
add("v.u64", "u64", T.UINT64, 2**64 - 1)
add("v.i64", "i64", T.INT64, -2**63)
add("v.f64", "f64", T.FLOAT64, 2.5e-300)
for name, t in [("u8", T.UINT8), ("i8", T.INT8), ("u16", T.UINT16), ("i16", T.INT16), ("u32", T.UINT32),
                ("i32", T.INT32), ("u64", T.UINT64), ("i64", T.INT64)]:
    add("a." + name, "array<" + name + ">", T.ARRAY, [0, 1, 2, 3], sub=t)
add("a.f32", "array<f32>", T.ARRAY, [0.5, -1.25, 3.0], sub=T.FLOAT32)
add("a.f64", "array<f64>", T.ARRAY, [1e200, -0.125], sub=T.FLOAT64)
add("a.bool", "array<bool>", T.ARRAY, [True, False, True], sub=T.BOOL)
toks = ["<s>", "</s>", "hello", " world", "ü"]
add("a.str", "array<string>", T.ARRAY, toks, sub=T.STRING, shown=[hexs(s) for s in toks])
nested = [[1, 2, 3], ["x", "yz"], [True], [0.5]]
add("a.nested", "array<array>", T.ARRAY, nested,
    shown=[[1, 2, 3], [hexs("x"), hexs("yz")], [True], [0.5]])

rng = np.random.default_rng(7)
tensors = []
def tensor(name, arr, qtype, raw=None):
    if raw is None:
        w.add_tensor(name, arr)
    else:
        w.add_tensor(name, arr, raw_dtype=raw)
    tensors.append((name, int(qtype), arr))
tensor("f32", rng.standard_normal((3, 8)).astype(np.float32), Q.F32)
tensor("f16", rng.standard_normal((2, 64)).astype(np.float16), Q.F16)
tensor("one_dim", np.arange(5, dtype=np.float32), Q.F32)
tensor("i32", np.arange(-6, 6, dtype=np.int32).reshape(4, 3), Q.I32)
x = rng.standard_normal((4, 64)).astype(np.float32)
for q in [Q.Q8_0, Q.Q4_0, Q.MXFP4, Q.BF16]:
    tensor(q.name.lower(), gguf.quants.quantize(x, q), q, raw=q)
tensor("q4_k", rng.integers(0, 256, (2, 2 * 144), dtype=np.uint8), Q.Q4_K, raw=Q.Q4_K)
tensor("q6_k", rng.integers(0, 256, (1, 210), dtype=np.uint8), Q.Q6_K, raw=Q.Q6_K)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

r = gguf.GGUFReader(path)
by_name = {t.name: t for t in r.tensors}
out = {
    "alignment": alignment,
    "data_offset": int(r.data_offset),
    "kv": [{"key": k, "type": t, "value": v} for k, t, v in kv],
    "tensors": [],
}
for name, qtype, arr in tensors:
    rt = by_name[name]
    out["tensors"].append({
        "name": name, "type": qtype,
        "shape": [int(d) for d in rt.shape],          # ggml order, as stored
        "numpy_shape": list(arr.shape),                # row-major, reversed
        "offset": int(rt.data_offset) - int(r.data_offset),
        "hex": arr.tobytes().hex(),                    # the bytes gguf-py was given
    })
print(json.dumps(out))
"#;

/// (a) gguf-py writes, we read.
#[test]
fn reads_files_written_by_gguf_py() {
    for alignment in [32u32, 64] {
        let path = temp_path(&format!("pywrite-{alignment}"));
        let out = run_python(PY_WRITE, &[path.as_os_str(), OsStr::new(&alignment.to_string())]);
        let want: Json = serde_json::from_slice(&out).unwrap();
        let f = GgufFile::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();

        assert_eq!(f.version(), 3);
        assert_eq!(f.alignment(), u64::from(alignment));
        assert_eq!(f.data_offset(), want["data_offset"].as_u64().unwrap());

        let got_kv: Vec<Json> =
            f.metadata().map(|(k, v)| json!({ "key": k, "type": v.type_name(), "value": value_json(&v) })).collect();
        assert_eq!(Json::Array(got_kv), want["kv"]);

        let want_tensors = want["tensors"].as_array().unwrap();
        assert_eq!(f.tensors().len(), want_tensors.len());
        for (t, w) in f.tensors().iter().zip(want_tensors) {
            assert_eq!(t.name, w["name"].as_str().unwrap());
            assert_eq!(u64::from(t.ty.id()), w["type"].as_u64().unwrap(), "{}", t.name);
            let shape: Vec<u64> = serde_json::from_value(w["shape"].clone()).unwrap();
            assert_eq!(t.shape, shape, "{}", t.name);
            // ggml order is numpy's reversed (for quantized types numpy's last axis is bytes).
            if matches!(t.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::I32) {
                let mut np: Vec<u64> = serde_json::from_value(w["numpy_shape"].clone()).unwrap();
                np.reverse();
                assert_eq!(t.shape, np);
            }
            assert_eq!(t.offset, w["offset"].as_u64().unwrap(), "{}", t.name);
            assert_eq!(hex(f.tensor_data(t)), w["hex"].as_str().unwrap(), "{}", t.name);
        }
    }
}

const PY_READ: &str = r#"
import json, sys
import gguf
from gguf import GGUFValueType as T

r = gguf.GGUFReader(sys.argv[1])
def leaf(field, idx, t):
    part = field.parts[idx]
    if t == T.STRING:
        return {"hex": bytes(part).hex()}
    v = part.tolist()[0]
    return v
kv = []
for name, f in r.fields.items():
    if name.startswith("GGUF."):
        continue
    types = [int(t) for t in f.types]
    if f.types[0] == T.ARRAY:
        # gguf-py flattens nested arrays: the leaf type is the last one it recorded.
        leaves = [leaf(f, i, f.types[-1]) for i in f.data]
    else:
        leaves = [leaf(f, f.data[0], f.types[0])]
    kv.append({"key": name, "types": types, "leaves": leaves})
tensors = [{
    "name": t.name, "type": int(t.tensor_type), "shape": [int(d) for d in t.shape],
    "n_elements": int(t.n_elements), "n_bytes": int(t.n_bytes),
    "offset": int(t.data_offset) - int(r.data_offset), "hex": t.data.tobytes().hex(),
} for t in r.tensors]
print(json.dumps({"alignment": int(r.alignment), "data_offset": int(r.data_offset), "kv": kv, "tensors": tensors}))
"#;

/// gguf-py's view of a value: its type list (outer type, then the types of the first element,
/// recursively — what `GGUFReader` records) and its leaves, flattened.
fn py_view(v: &Value) -> (Vec<u32>, Vec<Json>) {
    fn types(v: &Value, out: &mut Vec<u32>) {
        out.push(v.value_type().id());
        if let Value::Array(a) = v
            && let Some(first) = elements(a).into_iter().next()
        {
            types(&first, out);
        }
    }
    fn leaves(v: &Value, out: &mut Vec<Json>) {
        match v {
            Value::Array(a) => elements(a).iter().for_each(|e| leaves(e, out)),
            Value::String(s) => out.push(json!({ "hex": hex(s) })),
            Value::U8(x) => out.push(json!(x)),
            Value::I8(x) => out.push(json!(x)),
            Value::U16(x) => out.push(json!(x)),
            Value::I16(x) => out.push(json!(x)),
            Value::U32(x) => out.push(json!(x)),
            Value::I32(x) => out.push(json!(x)),
            Value::F32(x) => out.push(json!(f64::from(*x))),
            Value::Bool(x) => out.push(json!(x)),
            Value::U64(x) => out.push(json!(x)),
            Value::I64(x) => out.push(json!(x)),
            Value::F64(x) => out.push(json!(x)),
        }
    }
    fn elements(a: &Array) -> Vec<Value> {
        match a {
            Array::U8(v) => v.iter().map(|&x| x.into()).collect(),
            Array::I8(v) => v.iter().map(|&x| x.into()).collect(),
            Array::U16(v) => v.iter().map(|&x| x.into()).collect(),
            Array::I16(v) => v.iter().map(|&x| x.into()).collect(),
            Array::U32(v) => v.iter().map(|&x| x.into()).collect(),
            Array::I32(v) => v.iter().map(|&x| x.into()).collect(),
            Array::F32(v) => v.iter().map(|&x| x.into()).collect(),
            Array::Bool(v) => v.iter().map(|&x| x.into()).collect(),
            Array::String(v) => v.iter().map(|s| Value::String(s.clone())).collect(),
            Array::Array(v) => v.iter().map(|a| Value::Array(a.clone())).collect(),
            Array::U64(v) => v.iter().map(|&x| x.into()).collect(),
            Array::I64(v) => v.iter().map(|&x| x.into()).collect(),
            Array::F64(v) => v.iter().map(|&x| x.into()).collect(),
        }
    }
    let (mut t, mut l) = (Vec::new(), Vec::new());
    types(v, &mut t);
    leaves(v, &mut l);
    (t, l)
}

/// (b) We write, gguf-py reads.
#[test]
fn gguf_py_reads_files_we_write() {
    let values: Vec<(&str, Value)> = vec![
        ("general.architecture", "llama".into()),
        ("general.alignment", Value::U32(64)),
        ("u8", Value::U8(7)),
        ("i8", Value::I8(-7)),
        ("u16", Value::U16(700)),
        ("i16", Value::I16(-700)),
        ("u32", Value::U32(70_000)),
        ("i32", Value::I32(-70_000)),
        ("f32", Value::F32(0.1)),
        ("bool", Value::Bool(false)),
        ("str", "kiln ✓".into()),
        ("u64", Value::U64(1 << 60)),
        ("i64", Value::I64(-(1 << 60))),
        ("f64", Value::F64(-1e-10)),
        ("a.u8", vec![1u8, 2, 3].into()),
        ("a.i16", vec![-1i16, 1].into()),
        ("a.u32", vec![1u32, 2].into()),
        ("a.i32", vec![-1i32, 5, 9].into()),
        ("a.f32", vec![1.5f32, -0.25].into()),
        ("a.bool", vec![true, false].into()),
        ("a.str", vec!["a", "", "ü"].into()),
        ("a.u64", vec![u64::MAX].into()),
        ("a.i64", vec![i64::MIN].into()),
        ("a.f64", vec![0.5f64].into()),
        ("a.empty", Value::Array(Array::I32(vec![]))),
        ("a.nested", vec![Array::from(vec![1i32, 2]), Array::from(vec![3i32]), Array::I32(vec![])].into()),
        ("a.nested.mixed", vec![Array::from(vec!["p", "q"]), Array::from(vec!["r"])].into()),
    ];
    let mut w = GgufWriter::new();
    for (k, v) in &values {
        w.add(*k, v.clone()).unwrap();
    }
    // Every type gguf-py sizes as ggml does (it gives Q8_1 40-byte blocks and lacks Q2_0).
    let mut tensors = Vec::new();
    for (i, ty) in GgmlType::ALL.into_iter().filter(|t| !matches!(t, GgmlType::Q8_1 | GgmlType::Q2_0)).enumerate() {
        let shape = vec![ty.block_elems() as u64, 1 + (i % 3) as u64];
        let size = ty.row_bytes(shape[0]).unwrap() * shape[1];
        let data: Vec<u8> = (0..size).map(|b| (b as usize * 13 + i * 7) as u8).collect();
        w.add_tensor(format!("t.{}", ty.name()), ty, &shape, data.clone()).unwrap();
        tensors.push((format!("t.{}", ty.name()), ty, shape, data));
    }
    let path = temp_path("ourwrite");
    let offsets: Vec<u64> = w.tensor_infos().unwrap().iter().map(|t| t.offset).collect();
    w.write_to_path(&path).unwrap();
    let out = run_python(PY_READ, &[path.as_os_str()]);
    let data_offset = GgufFile::open(&path).unwrap().data_offset();
    std::fs::remove_file(&path).unwrap();
    let got: Json = serde_json::from_slice(&out).unwrap();

    assert_eq!(got["alignment"], 64);
    assert_eq!(got["data_offset"].as_u64().unwrap(), data_offset);
    let kv = got["kv"].as_array().unwrap();
    assert_eq!(kv.len(), values.len());
    for ((key, v), g) in values.iter().zip(kv) {
        let (types, leaves) = py_view(v);
        assert_eq!(g["key"], *key);
        assert_eq!(g["types"], json!(types), "{key}");
        assert_eq!(g["leaves"], Json::Array(leaves), "{key}");
    }
    let pt = got["tensors"].as_array().unwrap();
    assert_eq!(pt.len(), tensors.len());
    for (((name, ty, shape, data), g), offset) in tensors.iter().zip(pt).zip(&offsets) {
        assert_eq!(g["name"], name.as_str());
        assert_eq!(g["type"], ty.id());
        assert_eq!(g["shape"], json!(shape), "{name}");
        assert_eq!(g["n_elements"], shape.iter().product::<u64>());
        assert_eq!(g["n_bytes"], data.len(), "{name}");
        assert_eq!(g["offset"], *offset, "{name}");
        assert_eq!(g["hex"], hex(data), "{name}");
    }
    // And the value types of the flat entries line up with ValueType's numbering.
    assert_eq!(kv[2]["types"], json!([ValueType::U8.id()]));
}

/// gguf-py writes big-endian files on request; we must say so rather than misread them.
#[test]
fn rejects_big_endian_file_from_gguf_py() {
    let path = temp_path("bigendian");
    run_python(
        r#"
import sys, numpy as np, gguf
w = gguf.GGUFWriter(sys.argv[1], "llama", endianess=gguf.GGUFEndian.BIG)
w.add_uint32("x", 1)
w.add_tensor("t", np.arange(4, dtype=np.float32))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
"#,
        &[path.as_os_str()],
    );
    let e = GgufFile::open(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(e, GgufError::BigEndian { raw: 0x0300_0000 }), "{e}");
}
