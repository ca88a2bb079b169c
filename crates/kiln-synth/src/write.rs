//! Streams a synthetic model's tensors through `kiln-gguf`'s writer.
//!
//! Each tensor is made in chunks of rows; every chunk has its own random stream (see
//! [`chunk_seed`]), so chunks are made in parallel (rayon) and the file is still a pure function
//! of the seed. Q8_0 and MXFP4 blocks are drawn directly (random codes under a scale that gives
//! the asked standard deviation), which is what makes a 12 GB gpt-oss-20b-shaped file quick to
//! write; other types are quantized from normal values with `kiln-quant`'s reference quantizers.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result, ensure};
use half::f16;
use kiln_gguf::{GgmlType, GgufWriter, Value};
use rayon::prelude::*;

use crate::rng::{Rng, chunk_seed};

/// One tensor to write: name, type, ggml shape (`shape[0]` = row length), value distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub ty: GgmlType,
    pub shape: Vec<u64>,
    pub mean: f32,
    pub std: f32,
}

impl TensorSpec {
    pub fn new(name: String, ty: GgmlType, shape: &[u64], mean: f32, std: f32) -> TensorSpec {
        TensorSpec { name, ty, shape: shape.to_vec(), mean, std }
    }
}

/// The metadata every transformer file starts with: architecture, name, and
/// `[layers, context, hidden, feed-forward, heads, KV heads, head dim]` under `ARCH.*`.
pub(crate) fn header(arch: &str, name: &str, dims: [usize; 7]) -> Vec<(String, Value)> {
    let [layers, ctx, hidden, ff, heads, kv_heads, head_dim] = dims.map(|x| Value::U32(x as u32));
    let a = |k: &str| format!("{arch}.{k}");
    vec![
        ("general.architecture".into(), arch.into()),
        ("general.type".into(), "model".into()),
        ("general.name".into(), name.into()),
        (a("block_count"), layers),
        (a("context_length"), ctx),
        (a("embedding_length"), hidden),
        (a("feed_forward_length"), ff),
        (a("attention.head_count"), heads),
        (a("attention.head_count_kv"), kv_heads),
        (a("attention.key_length"), head_dim.clone()),
        (a("attention.value_length"), head_dim),
    ]
}

/// The checks every transformer shape shares: at least one layer and one head, an even head
/// dim, whole query-head groups per KV head, and rows of every tensor group (`(what, type, row
/// length)`) made of whole blocks of its type.
pub(crate) fn check_shape(
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    groups: &[(&str, GgmlType, usize)],
) -> Result<()> {
    ensure!(layers >= 1 && heads >= 1 && kv_heads >= 1, "empty shape");
    ensure!(head_dim >= 2 && head_dim.is_multiple_of(2), "head dim {head_dim} must be even");
    ensure!(heads.is_multiple_of(kv_heads), "heads {heads} not a multiple of kv heads {kv_heads}");
    for &(what, ty, n) in groups {
        ensure!(
            n.is_multiple_of(ty.block_elems()),
            "{what}: row length {n} is not a multiple of {}'s block of {}",
            ty.name(),
            ty.block_elems()
        );
    }
    Ok(())
}

/// A whole synthetic model: metadata, tensor table (in file order) and seed.
#[derive(Clone, Debug)]
pub struct SynthModel {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorSpec>,
    pub seed: u64,
}

/// Elements per chunk (rounded to whole rows).
const CHUNK_ELEMS: usize = 1 << 20;

/// Standard deviation of a uniform int8 code in [−127, 127].
const Q8_CODE_STD: f32 = 73.6;
/// RMS of a uniform 4-bit E2M1 code as ggml stores it (doubled table {0,1,2,3,4,6,8,12}).
const MXFP4_CODE_RMS: f64 = 5.852;

impl SynthModel {
    fn writer(&self) -> Result<GgufWriter> {
        let mut w = GgufWriter::new();
        for (k, v) in &self.metadata {
            w.add(k.clone(), v.clone())?;
        }
        for s in &self.tensors {
            w.add_tensor_info(s.name.clone(), s.ty, &s.shape)?;
        }
        Ok(w)
    }

    /// Writes the file to `out`.
    pub fn write<W: Write>(&self, out: W) -> Result<W> {
        let mut data = self.writer()?.begin(out)?;
        let batch = rayon::current_num_threads().max(1) * 2;
        for s in &self.tensors {
            let row = s.shape[0] as usize;
            let rows: usize = s.shape[1..].iter().map(|&d| d as usize).product();
            let per_chunk = (CHUNK_ELEMS / row).max(1);
            let chunks = rows.div_ceil(per_chunk);
            for first in (0..chunks).step_by(batch) {
                let last = (first + batch).min(chunks);
                let made: Vec<Vec<u8>> = (first..last)
                    .into_par_iter()
                    .map(|c| {
                        let n = per_chunk.min(rows - c * per_chunk);
                        chunk_bytes(s, n * row, Rng::new(chunk_seed(self.seed, &s.name, c as u64)))
                    })
                    .collect::<Result<_>>()?;
                for bytes in made {
                    data.write_data(&bytes)?;
                }
            }
        }
        Ok(data.finish()?)
    }

    /// The whole file in memory.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.write(Vec::new())
    }

    /// Writes the file to `path`; returns its size.
    pub fn write_file(&self, path: &Path) -> Result<u64> {
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        let mut out = self.write(BufWriter::with_capacity(1 << 22, file))?;
        out.flush()?;
        Ok(std::fs::metadata(path)?.len())
    }
}

/// `n` values of tensor `s` (a whole number of rows) in its type.
fn chunk_bytes(s: &TensorSpec, n: usize, mut rng: Rng) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; s.ty.row_bytes(n as u64)? as usize];
    match s.ty {
        GgmlType::Q8_0 if s.mean == 0.0 => {
            let d = f16::from_f32(s.std / Q8_CODE_STD).to_le_bytes();
            for block in bytes.chunks_exact_mut(34) {
                block[..2].copy_from_slice(&d);
                rng.fill_bytes(&mut block[2..]);
                for q in &mut block[2..] {
                    if *q == 0x80 {
                        *q = 0x81; // −128 → −127: codes symmetric like ggml's quantizer makes them
                    }
                }
            }
        }
        GgmlType::MXFP4 if s.mean == 0.0 => {
            // value = code × 2^(e − 128); pick e so that the values' RMS is about `std`
            let e = (128.0 + (s.std as f64 / MXFP4_CODE_RMS).log2()).round();
            ensure!((1.0..=254.0).contains(&e), "{}: std {} out of MXFP4's range", s.name, s.std);
            for block in bytes.chunks_exact_mut(17) {
                rng.fill_bytes(&mut block[1..]);
                block[0] = e as u8 - (block[1] & 1); // scales vary by a factor of two
            }
        }
        ty => {
            let mut vals = vec![0f32; n];
            rng.fill_normal(&mut vals, s.mean, s.std);
            if ty == GgmlType::F32 {
                for (d, v) in bytes.chunks_exact_mut(4).zip(&vals) {
                    d.copy_from_slice(&v.to_le_bytes());
                }
            } else {
                kiln_quant::quantize(ty, &vals, &mut bytes).with_context(|| format!("quantizing {}", s.name))?;
            }
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rms_of(ty: GgmlType, std: f32) -> f64 {
        let s = TensorSpec { name: "t".into(), ty, shape: vec![256, 64], mean: 0.0, std };
        let bytes = chunk_bytes(&s, 256 * 64, Rng::new(5)).unwrap();
        let mut vals = vec![0f32; 256 * 64];
        kiln_quant::dequantize(ty, &bytes, &mut vals).unwrap();
        (vals.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / vals.len() as f64).sqrt()
    }

    #[test]
    fn direct_blocks_have_the_asked_spread() {
        for ty in [GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::F16, GgmlType::BF16] {
            let r = rms_of(ty, 0.02);
            assert!((r / 0.02 - 1.0).abs() < 0.1, "{ty:?}: rms {r}");
        }
        // MXFP4: scales of 2^k only, and half the blocks at half scale: within a factor of ~1.5
        let r = rms_of(GgmlType::MXFP4, 0.02);
        assert!(r > 0.02 / 1.6 && r < 0.02 * 1.6, "mxfp4 rms {r}");
    }
}
