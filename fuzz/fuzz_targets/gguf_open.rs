//! `GgufFile::from_bytes` on arbitrary input, then every lazy accessor on files that open.
//! The same exercise as `crates/kiln-gguf/tests/fuzz.rs`; see `docs/GGUF.md` for how to run it.
#![no_main]

use std::io::Write;

use kiln_gguf::{GgufFile, GgufWriter, ValueRef};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    let mut sink = std::io::sink();
    for (key, v) in f.metadata() {
        write!(sink, "{key} = {v:.8} : {}", v.type_name()).unwrap();
        assert!(f.get(key).is_some());
        let _ = (
            f.get_u32(key),
            f.get_i64(key),
            f.get_f32(key),
            f.get_f64(key),
            f.get_bool(key),
            f.get_str(key),
        );
        let _ = f.get_opt_str_array(key).map(|a| a.map(|a| a.to_vec_str()));
        walk(v);
    }
    for t in f.tensors() {
        assert_eq!(f.tensor_data(t).len() as u64, t.size, "{}", t.name);
        assert_eq!(f.tensor(&t.name), Some(t));
        assert_eq!(t.offset % f.alignment(), 0);
    }
    // A file that opens can be rewritten and reads back the same.
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.add(k, v.to_value()).unwrap();
    }
    for t in f.tensors() {
        w.add_tensor(t.name.clone(), t.ty, &t.shape, f.tensor_data(t))
            .unwrap();
    }
    if f.alignment() > 1 << 16 {
        // The copy is as large as the alignment (up to 2 GiB): stream it to a sink, which must
        // not allocate the padding (finding oom-a4c0eb…, see tests/fuzz.rs).
        w.write(std::io::sink()).unwrap();
        return;
    }
    let g = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!(f.metadata().len(), g.metadata().len());
    for ((ka, va), (kb, vb)) in f.metadata().zip(g.metadata()) {
        assert_eq!(ka, kb);
        assert_eq!(
            format!("{:?}", va.to_value()),
            format!("{:?}", vb.to_value())
        );
    }
    for (a, b) in f.tensors().iter().zip(g.tensors()) {
        assert_eq!((&a.name, a.ty, &a.shape), (&b.name, b.ty, &b.shape));
        assert_eq!(f.tensor_data(a), g.tensor_data(b));
    }
});

fn walk(v: ValueRef<'_>) {
    if let ValueRef::Array(a) = v {
        let mut n = 0;
        for e in a.iter() {
            walk(e);
            n += 1;
        }
        assert_eq!(n, a.len());
        if let Ok(s) = a.strings() {
            assert_eq!(s.iter().count(), a.len());
        }
        let _ = (
            a.to_vec::<u8>(),
            a.to_vec::<i32>(),
            a.to_vec::<f64>(),
            a.to_vec::<bool>(),
        );
    }
}
