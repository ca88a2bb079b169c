//! Hand-built GGUF bytes, written field by field from the spec (not with the crate's writer), so
//! that tests can make well-formed files to compare the writer against and malformed ones the
//! writer refuses to produce.
#![allow(dead_code)]

/// Value type ids from the GGUF spec.
pub mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// A byte buffer with little-endian GGUF field writers.
#[derive(Clone, Default)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    /// `GGUF`, version, tensor count, metadata count.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw::default();
        r.bytes(b"GGUF").u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    /// Length-prefixed string.
    pub fn str(&mut self, s: impl AsRef<[u8]>) -> &mut Self {
        let s = s.as_ref();
        self.u64(s.len() as u64).bytes(s)
    }
    /// A metadata entry: key, type, then the raw value bytes.
    pub fn kv(&mut self, key: &str, ty: u32, value: &[u8]) -> &mut Self {
        self.str(key).u32(ty).bytes(value)
    }
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.kv(key, ty::U32, &v.to_le_bytes())
    }
    pub fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        let mut b = (v.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(v.as_bytes());
        self.kv(key, ty::STRING, &b)
    }
    /// A tensor info: name, n_dims, dims, type id, offset.
    pub fn tensor(&mut self, name: &str, dims: &[u64], type_id: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(type_id).u64(offset)
    }
    /// Zero padding up to a multiple of `align`.
    pub fn pad(&mut self, align: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn build(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// f32 values as little-endian bytes.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Valid files to mutate in the fuzz tests: metadata of every type (nested arrays, a vocabulary),
/// tensors of several types, a custom alignment, a v2 file, and a metadata-only file.
pub fn seed_files() -> Vec<Vec<u8>> {
    use kiln_gguf::{Array, GgmlType, GgufWriter, Value};
    let mut seeds = Vec::new();

    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama").unwrap();
    w.add("u8", 1u8).unwrap();
    w.add("i8", -1i8).unwrap();
    w.add("u16", 2u16).unwrap();
    w.add("i16", -2i16).unwrap();
    w.add("u32", 3u32).unwrap();
    w.add("i32", -3i32).unwrap();
    w.add("f32", 0.5f32).unwrap();
    w.add("bool", true).unwrap();
    w.add("str", "hello").unwrap();
    w.add("u64", 4u64).unwrap();
    w.add("i64", -4i64).unwrap();
    w.add("f64", 0.25f64).unwrap();
    w.add("tokens", vec!["<s>", "a", "bc", "", "déf"]).unwrap();
    w.add("types", vec![1i32, 2, 3, 1, 1]).unwrap();
    w.add("flags", vec![true, false]).unwrap();
    w.add("nested", vec![Array::from(vec![1u16, 2]), Array::from(vec!["x"]), Array::Array(vec![Array::U8(vec![9])])])
        .unwrap();
    w.add("bytes", Value::String(vec![0xff, 0])).unwrap();
    w.add_tensor("tok_embd.weight", GgmlType::F32, &[4, 2], vec![1; 32]).unwrap();
    w.add_tensor("blk.0.ffn.weight", GgmlType::Q4_K, &[256, 1], vec![2; 144]).unwrap();
    w.add_tensor("blk.0.exp.weight", GgmlType::MXFP4, &[32, 2, 1], vec![3; 34]).unwrap();
    w.add_tensor("empty", GgmlType::F16, &[0], vec![]).unwrap();
    seeds.push(w.to_bytes().unwrap());

    let mut w = GgufWriter::new();
    w.set_alignment(64).unwrap();
    for (i, ty) in [GgmlType::F16, GgmlType::Q8_0, GgmlType::Q6_K, GgmlType::I8, GgmlType::BF16].into_iter().enumerate()
    {
        let shape = [ty.block_elems() as u64, 2];
        let size = ty.row_bytes(shape[0]).unwrap() as usize * 2;
        w.add_tensor(format!("t{i}"), ty, &shape, vec![i as u8; size]).unwrap();
    }
    seeds.push(w.to_bytes().unwrap());

    // A v2 file: same encoding, version 2.
    let mut w = GgufWriter::new();
    w.add("general.name", "v2").unwrap();
    w.add("list", vec![1.0f64, 2.0]).unwrap();
    w.add_tensor("s", GgmlType::F32, &[], vec![0; 4]).unwrap();
    let mut v2 = w.to_bytes().unwrap();
    v2[4] = 2;
    seeds.push(v2);

    // Metadata only, with a custom alignment (the data offset is clamped to the file size).
    let mut w = GgufWriter::new();
    w.set_alignment(128).unwrap();
    w.add("general.name", "no tensors").unwrap();
    w.add("scores", vec![0.5f32, -1.0]).unwrap();
    seeds.push(w.to_bytes().unwrap());
    seeds
}
