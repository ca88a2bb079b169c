//! A loaded model: hyperparameters, bound weights, and the batched forward pass.

use std::sync::Arc;

use kiln_gguf::GgufFile;

use crate::arch::{gemma3, gpt_oss, llama};
use crate::backend::{Backend, RowKv, WeightData};
use crate::config::{Arch, Config};
use crate::kv::{DEFAULT_BLOCK_SIZE, KvCache, KvLayout, SeqKv};
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
    pub fn logits<B: Backend<Weight = W>>(&self, be: &B, c: &Config, x: &B::Act, rows: usize) -> B::Act {
        let mut h = be.act(rows, c.n_embd);
        be.rms_norm(x, &self.out_norm, c.n_embd, c.rms_eps, &mut h);
        let mut logits = be.act(rows, c.n_vocab);
        be.matmul(&h, &self.output, None, &mut logits);
        if let Some(cap) = c.final_softcap {
            be.softcap(&mut logits, cap);
        }
        logits
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
        let config = Config::from_gguf(&file, n_vocab)?;
        let binder = Binder { file: &file, backend: &backend };
        let weights = match config.arch {
            Arch::Llama | Arch::Qwen2 => ArchWeights::Llama(llama::Weights::bind(&binder, &config)?),
            Arch::Gemma3 => ArchWeights::Gemma3(gemma3::Weights::bind(&binder, &config)?),
            Arch::GptOss => ArchWeights::GptOss(gpt_oss::Weights::bind(&binder, &config)?),
        };
        Ok(Model { config, backend, weights, file })
    }

    /// A KV cache with room for `n_ctx` positions in total, in blocks of [`DEFAULT_BLOCK_SIZE`].
    pub fn kv_cache(&self, n_ctx: usize) -> Result<KvCache<B>> {
        let c = &self.config;
        let layout = KvLayout {
            n_layer: c.n_layer,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            head_dim_v: c.head_dim_v,
            block_size: DEFAULT_BLOCK_SIZE,
            n_blocks: n_ctx.div_ceil(DEFAULT_BLOCK_SIZE),
        };
        KvCache::new(&self.backend, layout)
    }

    /// Runs the batch and returns the logits of `batch.logits` rows, `n_vocab` each, row-major.
    /// `n_ctx` bounds every sequence's length.
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
        if n == 0 {
            return Ok(Vec::new());
        }
        for &id in &batch.tokens {
            if id as usize >= self.config.n_vocab {
                return Err(ModelError::TokenOutOfRange { id, n_vocab: self.config.n_vocab });
            }
        }
        if let Some(&r) = batch.logits.iter().find(|&&r| r >= n) {
            return Err(ModelError::Batch(format!("logits row {r} out of {n} rows")));
        }
        // Positions: each sequence continues where its cache ends.
        let mut next: Vec<usize> = seqs.iter().map(|s| s.len).collect();
        let mut pos = Vec::with_capacity(n);
        for &s in &batch.seq {
            let p = next
                .get_mut(s)
                .ok_or_else(|| ModelError::Batch(format!("sequence index {s} out of {}", seqs.len())))?;
            if *p >= n_ctx {
                return Err(ModelError::ContextFull { pos: *p, n_ctx });
            }
            pos.push(*p);
            *p += 1;
        }
        // Reserve KV blocks for every sequence before touching anything.
        let needed: usize = seqs
            .iter()
            .zip(&next)
            .map(|(s, &len)| len.div_ceil(kv.layout.block_size).saturating_sub(s.blocks.len()))
            .sum();
        if needed > kv.free_blocks() {
            return Err(ModelError::KvExhausted { needed, free: kv.free_blocks() });
        }
        for (s, &len) in seqs.iter_mut().zip(&next) {
            kv.reserve(s, len)?;
        }
        let rows: Vec<RowKv<'_>> =
            batch.seq.iter().zip(&pos).map(|(&s, &p)| RowKv { blocks: &seqs[s].blocks, pos: p }).collect();
        let logits = match &self.weights {
            ArchWeights::Llama(w) => llama::forward(self, w, kv, &rows, &pos, batch),
            ArchWeights::Gemma3(w) => gemma3::forward(self, w, kv, &rows, &pos, batch),
            ArchWeights::GptOss(w) => gpt_oss::forward(self, w, kv, &rows, &pos, batch),
        };
        drop(rows);
        for (s, len) in seqs.iter_mut().zip(next) {
            s.len = len;
        }
        Ok(self.backend.to_host(&logits))
    }
}
