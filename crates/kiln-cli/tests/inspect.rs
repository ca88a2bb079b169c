//! `kiln inspect` on the real test models: snapshots of the human-readable and JSON output, the
//! JSON checked against gguf-py's reader (an independent implementation), and malformed files.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value as Json;

const SMOLLM2: &str = "smollm2-135m-instruct-q4_1";
const GEMMA3: &str = "gemma3-270m-q4_k_m";

fn kiln(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().expect("run kiln")
}

fn inspect(path: &Path, json: bool) -> String {
    let mut args = vec!["inspect".as_ref(), path.as_os_str()];
    if json {
        args.push("--json".as_ref());
    }
    let out = kiln(&args);
    assert!(out.status.success(), "kiln inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    // The cache path differs between machines; the snapshot names the file only.
    let text = String::from_utf8(out.stdout).expect("utf-8 output");
    text.replace(&path.display().to_string(), &format!("<cache>/{}", path.file_name().unwrap().to_string_lossy()))
}

#[test]
fn smollm2_text_snapshot() {
    insta::assert_snapshot!(inspect(&kiln_testkit::model(SMOLLM2), false));
}

#[test]
fn smollm2_json_snapshot() {
    insta::assert_snapshot!(inspect(&kiln_testkit::model(SMOLLM2), true));
}

#[test]
fn gemma3_text_snapshot() {
    insta::assert_snapshot!(inspect(&kiln_testkit::model(GEMMA3), false));
}

#[test]
fn gemma3_json_snapshot() {
    insta::assert_snapshot!(inspect(&kiln_testkit::model(GEMMA3), true));
}

/// gguf-py's view of a file, in the shape of `kiln inspect --json` (arrays: len and first 16).
const GGUF_PY_VIEW: &str = r#"
import json, sys
from gguf import GGUFReader, GGUFValueType as T
names = {T.UINT8: "u8", T.INT8: "i8", T.UINT16: "u16", T.INT16: "i16", T.UINT32: "u32",
         T.INT32: "i32", T.FLOAT32: "f32", T.BOOL: "bool", T.STRING: "string", T.ARRAY: "array",
         T.UINT64: "u64", T.INT64: "i64", T.FLOAT64: "f64"}
r = GGUFReader(sys.argv[1])
meta = []
for f in r.fields.values():
    if f.name.startswith("GGUF."):
        continue  # gguf-py's pseudo-fields for the header
    if f.types[0] == T.ARRAY:
        n = len(f.data)
        shown = n if n <= 64 else 16
        vals = f.contents(slice(0, shown)) if n else []
        meta.append({"key": f.name, "type": "array", "element_type": names[f.types[-1]], "len": n,
                     "values": vals})
    else:
        meta.append({"key": f.name, "type": names[f.types[0]], "value": f.contents()})
tensors = [{"name": t.name, "type": int(t.tensor_type), "shape": [int(d) for d in t.shape],
            "offset": int(t.data_offset) - r.data_offset, "bytes": int(t.n_bytes)} for t in r.tensors]
print(json.dumps({"alignment": r.alignment, "data_offset": r.data_offset, "metadata": meta, "tensors": tensors}))
"#;

fn check_against_gguf_py(name: &str) {
    let path = kiln_testkit::model(name);
    let ours: Json = serde_json::from_str(&inspect(&path, true)).expect("kiln json");
    let theirs: Json =
        serde_json::from_slice(&kiln_testkit::run_python(GGUF_PY_VIEW, &[path.as_os_str()])).expect("gguf-py json");

    assert_eq!(ours["alignment"], theirs["alignment"]);
    assert_eq!(ours["data_offset"], theirs["data_offset"]);
    assert_eq!(ours["file_size"], std::fs::metadata(&path).unwrap().len());

    let (om, tm) = (ours["metadata"].as_array().unwrap(), theirs["metadata"].as_array().unwrap());
    assert_eq!(om.len(), tm.len(), "metadata key count");
    for (o, t) in om.iter().zip(tm) {
        assert_eq!(o["key"], t["key"]);
        assert_eq!(o["type"], t["type"], "type of {}", o["key"]);
        if t["type"] == "array" {
            assert_eq!(o["element_type"], t["element_type"], "{}", o["key"]);
            assert_eq!(o["len"], t["len"], "{}", o["key"]);
            assert_eq!(o["values"], t["values"], "{}", o["key"]);
        } else if t["type"] == "f32" {
            // gguf-py widens f32 to a Python float exactly, as we do.
            assert_eq!(o["value"].as_f64(), t["value"].as_f64(), "{}", o["key"]);
        } else {
            assert_eq!(o["value"], t["value"], "{}", o["key"]);
        }
    }

    let (ot, tt) = (ours["tensors"].as_array().unwrap(), theirs["tensors"].as_array().unwrap());
    assert_eq!(ot.len(), tt.len(), "tensor count");
    let mut params = 0u64;
    for (o, t) in ot.iter().zip(tt) {
        let ty = kiln_quant::GgmlType::from_id(t["type"].as_u64().unwrap() as u32).unwrap();
        assert_eq!(o["name"], t["name"]);
        assert_eq!(o["type"], ty.name(), "{}", o["name"]);
        assert_eq!(o["shape"], t["shape"], "{}", o["name"]);
        assert_eq!(o["offset"], t["offset"], "{}", o["name"]);
        assert_eq!(o["bytes"], t["bytes"], "{}", o["name"]);
        params += t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).product::<u64>();
    }
    assert_eq!(ours["parameters"], params);
}

#[test]
fn smollm2_matches_gguf_py() {
    check_against_gguf_py(SMOLLM2);
}

#[test]
fn gemma3_matches_gguf_py() {
    check_against_gguf_py(GEMMA3);
}

fn expect_bad_input(path: &Path, needle: &str) {
    let out = kiln(&["inspect".as_ref(), path.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
    assert!(stderr.starts_with("kiln: error: "), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
}

#[test]
fn malformed_files_exit_2_with_one_line() {
    let dir = std::env::temp_dir().join(format!("kiln-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = std::fs::read(kiln_testkit::model(SMOLLM2)).unwrap();

    let not_gguf = dir.join("not.gguf");
    std::fs::write(&not_gguf, b"this is not a gguf file at all").unwrap();
    expect_bad_input(&not_gguf, "magic");

    // Cut inside the tensor data: the header parses, the last tensors' data is missing.
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &model[..model.len() - 1000]).unwrap();
    expect_bad_input(&cut, "output_norm.weight");

    // Cut inside the metadata.
    let cut_meta = dir.join("cut-meta.gguf");
    std::fs::write(&cut_meta, &model[..4096]).unwrap();
    expect_bad_input(&cut_meta, "cut-meta.gguf");

    let missing = dir.join("missing.gguf");
    expect_bad_input(&missing, "not a known model");
    std::fs::remove_dir_all(&dir).unwrap();
}
