//! A loaded model: hyperparameters, bound weights, and the batched forward pass.

use std::sync::Arc;

use kiln_gguf::GgufFile;

use crate::arch::{gemma3, gpt_oss, llama};
use crate::backend::{AttnParams, Backend, WeightData};
use crate::config::{Arch, Config};
use crate::kv::{DEFAULT_BLOCK_SIZE, KvCache, KvLayout, LayerRows, SeqKv, UBATCH};
use crate::{ModelError, Result};

/// Finds tensors by name, checks their shapes, and binds them on the backend.
pub(crate) struct Binder<'a, B: Backend> {
    pub file: &'a GgufFile,
    pub backend: &'a B,
}

impl<B: Backend> Binder<'_, B> {
    /// Binds `name`, which must have exactly `shape` (ggml order).
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<B::Weight> {
        self.opt(name, shape)?.ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    /// Binds `name` if the file has it.
    pub fn opt(&self, name: &str, shape: &[usize]) -> Result<Option<B::Weight>> {
        let Some(t) = self.file.tensor(name) else { return Ok(None) };
        let want: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        if t.shape != want {
            return Err(ModelError::Shape { name: name.to_string(), expected: want, actual: t.shape.clone() });
        }
        let w = WeightData { name, ty: t.ty, shape: &t.shape, bytes: self.file.tensor_data(t) };
        self.backend.weight(w).map(Some)
    }
}

/// What every architecture here shares around its layers: the token embedding, the final norm and
/// the output projection (tied to the embedding when the file has no `output.weight`).
pub(crate) struct Head<W> {
    pub embd: W,
    out_norm: W,
    output: W,
}

impl<W> Head<W> {
    pub fn bind<B: Backend<Weight = W>>(b: &Binder<'_, B>, c: &Config) -> Result<Self> {
        let (e, v) = (c.n_embd, c.n_vocab);
        Ok(Head {
            embd: b.get("token_embd.weight", &[e, v])?,
            out_norm: b.get("output_norm.weight", &[e])?,
            output: match b.opt("output.weight", &[e, v])? {
                Some(w) => w,
                None => b.get("token_embd.weight", &[e, v])?,
            },
        })
    }

    /// Final norm, output projection and soft-capping of the hidden rows `x`.
    pub fn logits<B: Backend<Weight = W>>(&self, be: &B, c: &Config, x: &B::Act, rows: usize) -> Result<B::Act> {
        let mut h = be.act(rows, c.n_embd)?;
        be.rms_norm(x, &self.out_norm, c.n_embd, c.rms_eps, &mut h)?;
        let mut logits = be.act(rows, c.n_vocab)?;
        be.matmul(&h, &self.output, None, &mut logits)?;
        if let Some(cap) = c.final_softcap {
            be.softcap(&mut logits, cap)?;
        }
        Ok(logits)
    }
}

pub(crate) enum ArchWeights<W> {
    Llama(llama::Weights<W>),
    Gemma3(gemma3::Weights<W>),
    GptOss(gpt_oss::Weights<W>),
}

/// One forward call's input: rows of (token, sequence). Each sequence's rows take the next
/// positions after what its KV already holds, in the order they appear. Prefill, decode and mixed
/// batches are all this.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub tokens: Vec<u32>,
    /// Index into the `seqs` slice given to [`Model::forward`], per row.
    pub seq: Vec<usize>,
    /// Rows whose logits are wanted, in the order they are returned.
    pub logits: Vec<usize>,
}

impl Batch {
    /// A single sequence's tokens, with logits for the last one.
    pub fn single(tokens: &[u32]) -> Batch {
        Batch {
            tokens: tokens.to_vec(),
            seq: vec![0; tokens.len()],
            logits: tokens.len().checked_sub(1).into_iter().collect(),
        }
    }
}

/// A model bound to a backend.
pub struct Model<B: Backend> {
    pub config: Config,
    pub backend: B,
    pub(crate) weights: ArchWeights<B::Weight>,
    /// The file the weights come from (the CPU backend borrows its memory map).
    pub file: Arc<GgufFile>,
}

impl<B: Backend> Model<B> {
    /// Reads the hyperparameters and binds every tensor of a supported architecture.
    pub fn load(file: Arc<GgufFile>, backend: B) -> Result<Model<B>> {
        Self::load_layers(file, backend, None)
    }

    /// As [`Model::load`], keeping only the first `n_layers` blocks: the output norm and head read
    /// the last kept block's output, and later blocks' tensors are never bound. For comparing deep
    /// models a few layers at a time (a difference that grows through the depth shows where it
    /// starts). Asking for none, or for more than the file has, is an error.
    pub fn load_truncated(file: Arc<GgufFile>, backend: B, n_layers: usize) -> Result<Model<B>> {
        Self::load_layers(file, backend, Some(n_layers))
    }

    fn load_layers(file: Arc<GgufFile>, backend: B, n_layers: Option<usize>) -> Result<Model<B>> {
        let embd =
            file.tensor("token_embd.weight").ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
        let n_vocab = match embd.shape.as_slice() {
            [_, v] => *v as usize,
            _ => {
                return Err(ModelError::Shape {
                    name: embd.name.clone(),
                    expected: vec![0, 0],
                    actual: embd.shape.clone(),
                });
            }
        };
        let mut config = Config::from_gguf(&file, n_vocab)?;
        if let Some(n) = n_layers {
            if n == 0 || n > config.n_layer {
                let msg = format!("{n} layers asked for, the file has {}", config.n_layer);
                return Err(ModelError::Hparam { key: "block_count".into(), msg });
            }
            config.n_layer = n;
        }
        let binder = Binder { file: &file, backend: &backend };
        let weights = match config.arch {
            Arch::Llama | Arch::Qwen2 => ArchWeights::Llama(llama::Weights::bind(&binder, &config)?),
            Arch::Gemma3 => ArchWeights::Gemma3(gemma3::Weights::bind(&binder, &config)?),
            Arch::GptOss => ArchWeights::GptOss(gpt_oss::Weights::bind(&binder, &config)?),
        };
        Ok(Model { config, backend, weights, file })
    }

    /// A KV cache for one sequence of up to `n_ctx` positions, in blocks of
    /// [`DEFAULT_BLOCK_SIZE`] (sliding-window layers keep only their window).
    pub fn kv_cache(&self, n_ctx: usize) -> Result<KvCache<B>> {
        self.kv_cache_for(n_ctx, 1)
    }

    /// A KV cache with room for `n_ctx` positions in total over at most `n_seq` sequences.
    pub fn kv_cache_for(&self, n_ctx: usize, n_seq: usize) -> Result<KvCache<B>> {
        let c = &self.config;
        let shape = KvLayout {
            n_layer: c.n_layer,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            head_dim_v: c.head_dim_v,
            block_size: DEFAULT_BLOCK_SIZE,
            n_blocks: 0,
        };
        let windows: Vec<Option<usize>> = (0..c.n_layer).map(|il| c.window_for(il)).collect();
        KvCache::new(&self.backend, shape, &windows, n_ctx, n_seq)
    }

    /// Runs the batch and returns the logits of `batch.logits` rows, `n_vocab` each, row-major.
    /// `n_ctx` bounds every sequence's length. Batches longer than [`UBATCH`] rows run in
    /// pieces of at most that many (in order).
    pub fn forward(
        &self,
        kv: &mut KvCache<B>,
        seqs: &mut [&mut SeqKv],
        batch: &Batch,
        n_ctx: usize,
    ) -> Result<Vec<f32>> {
        let n = batch.tokens.len();
        if batch.seq.len() != n {
            return Err(ModelError::Batch(format!("{} tokens but {} sequence indices", n, batch.seq.len())));
        }
        for &id in &batch.tokens {
            if id as usize >= self.config.n_vocab {
                return Err(ModelError::TokenOutOfRange { id, n_vocab: self.config.n_vocab });
            }
        }
        if let Some(&r) = batch.logits.iter().find(|&&r| r >= n) {
            return Err(ModelError::Batch(format!("logits row {r} out of {n} rows")));
        }
        if let Some(&s) = batch.seq.iter().find(|&&s| s >= seqs.len()) {
            return Err(ModelError::Batch(format!("sequence index {s} out of {}", seqs.len())));
        }
        // Every sequence must fit, checked before anything runs.
        let mut end: Vec<usize> = seqs.iter().map(|s| s.len).collect();
        for &s in &batch.seq {
            if end[s] >= n_ctx {
                return Err(ModelError::ContextFull { pos: end[s], n_ctx });
            }
            end[s] += 1;
        }
        kv.check_full(seqs, &end)?;
        let nv = self.config.n_vocab;
        let mut logits = vec![0f32; batch.logits.len() * nv];
        for start in (0..n).step_by(UBATCH) {
            let rows = start..(start + UBATCH).min(n);
            // This piece's logits rows, in the order `batch.logits` asks for them.
            let (want, out): (Vec<usize>, Vec<usize>) =
                batch.logits.iter().enumerate().filter(|(_, r)| rows.contains(r)).map(|(o, &r)| (r - start, o)).unzip();
            let piece =
                Batch { tokens: batch.tokens[rows.clone()].to_vec(), seq: batch.seq[rows].to_vec(), logits: want };
            let got = self.forward_ubatch(kv, seqs, &piece)?;
            for (k, o) in out.into_iter().enumerate() {
                logits[o * nv..(o + 1) * nv].copy_from_slice(&got[k * nv..(k + 1) * nv]);
            }
        }
        Ok(logits)
    }

    /// One piece of [`Model::forward`]: at most [`UBATCH`] checked rows.
    fn forward_ubatch(&self, kv: &mut KvCache<B>, seqs: &mut [&mut SeqKv], batch: &Batch) -> Result<Vec<f32>> {
        // Positions: each sequence continues where its cache ends.
        let mut next: Vec<usize> = seqs.iter().map(|s| s.len).collect();
        let pos: Vec<usize> = batch
            .seq
            .iter()
            .map(|&s| {
                next[s] += 1;
                next[s] - 1
            })
            .collect();
        kv.reserve(seqs, &next)?;
        let logits = {
            let rows = KvCache::<B>::rows(seqs, &batch.seq, &pos);
            match &self.weights {
                ArchWeights::Llama(w) => llama::forward(self, w, kv, &rows, &pos, batch),
                ArchWeights::Gemma3(w) => gemma3::forward(self, w, kv, &rows, &pos, batch),
                ArchWeights::GptOss(w) => gpt_oss::forward(self, w, kv, &rows, &pos, batch),
            }
        };
        // A failed pass leaves the sequences' lengths as they were (their reserved blocks stay
        // theirs and are rewritten by a retry or returned by `KvCache::release`).
        let logits = logits?;
        for (s, len) in seqs.iter_mut().zip(next) {
            s.len = len;
        }
        kv.after_forward(seqs);
        self.backend.to_host(&logits)
    }
}

/// With `KILN_TRACE=DIR`, writes every traced intermediate tensor to `DIR/<name>-<layer>.f32`
/// (little-endian f32, row-major, rows = batch rows) under llama.cpp's names for them, for
/// comparing a forward pass layer by layer with the same tensors taken from llama.cpp (a graph
/// callback: `tests/oracle/dump_tensors.cpp`; docs/COMPARING.md). A later call overwrites a file.
pub(crate) fn trace<B: Backend>(be: &B, name: &str, il: usize, x: &B::Act) -> Result<()> {
    static DIR: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    if let Some(dir) = DIR.get_or_init(|| std::env::var_os("KILN_TRACE").map(Into::into)) {
        let bytes: Vec<u8> = be.to_host(x)?.iter().flat_map(|v| v.to_le_bytes()).collect();
        let path = dir.join(format!("{name}-{il}.f32"));
        if let Err(e) = std::fs::write(&path, bytes) {
            eprintln!("KILN_TRACE: {}: {e}", path.display());
        }
    }
    Ok(())
}

/// Writes a batch's K and V rows into layer `il`'s cache and attends over it: the windowed
/// store and block tables for a sliding-window layer, the full ones otherwise.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend<B: Backend>(
    be: &B,
    kv: &mut KvCache<B>,
    rows: &LayerRows<'_>,
    il: usize,
    k: &B::Act,
    v: &B::Act,
    q: &B::Act,
    p: &AttnParams,
    sinks: Option<&B::Weight>,
    out: &mut B::Act,
) -> Result<()> {
    let (store, li, windowed) = kv.layer(il);
    let rows = if windowed { &rows.windowed } else { &rows.full };
    be.kv_write(store, li, rows, k, v)?;
    be.attention(store, li, rows, q, p, sinks, out)
}
