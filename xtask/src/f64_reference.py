"""Float64 forward pass over gguf-py's dequantized weights: the second reference of the kiln-model
llama.cpp tests (see crates/kiln-model/tests/fixtures/llamacpp/README.md).

Run by `cargo xtask f64-reference`, which passes: the GGUF path, the output folder, then fixture
files. For every fixture it teacher-forces `prompt_ids + generated_ids[:-1]` through one causal
forward pass in float64 (no activation quantization, no f16 KV cache, exact softmax and GELU) and
compares each step's row with llama.cpp's logits stored in the fixture, at the fixture's 40 top ids
and 256 probe ids. It writes `<out>/<fixture name>` (small JSON) and prints one summary line per
fixture.

Architectures: `llama` (RMSNorm, RoPE "normal", GQA, SwiGLU, tied or separate output) and `gemma3`
(embeddings times sqrt(n_embd), pre/post norms, per-head q/k RMSNorm, NeoX RoPE with base 10000 on
sliding-window layers, a window on five of every six layers, GELU-tanh GeGLU, attention scale
1/sqrt(head_dim)), as llama.cpp's `src/models/llama.cpp` and `gemma3.cpp` build them.
"""

import json
import math
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def meta(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise KeyError(key)
        return default
    v = f.parts[f.data[0]]
    if f.types[0].name == "STRING":
        return bytes(v).decode()
    return v.item() if v.size == 1 else v.tolist()


class Model:
    def __init__(self, path):
        self.r = GGUFReader(path)
        self.t = {t.name: t for t in self.r.tensors}
        self.arch = meta(self.r, "general.architecture")
        if self.arch not in ("llama", "gemma3"):
            raise SystemExit(f"unsupported architecture {self.arch!r}")
        k = lambda s: f"{self.arch}.{s}"
        self.n_layer = meta(self.r, k("block_count"))
        self.n_embd = meta(self.r, k("embedding_length"))
        self.n_head = meta(self.r, k("attention.head_count"))
        self.n_head_kv = meta(self.r, k("attention.head_count_kv"), self.n_head)
        self.head_dim = meta(self.r, k("attention.key_length"), self.n_embd // self.n_head)
        self.n_rot = meta(self.r, k("rope.dimension_count"), self.head_dim)
        self.eps = meta(self.r, k("attention.layer_norm_rms_epsilon"))
        self.rope_base = meta(self.r, k("rope.freq_base"), 10000.0)
        self.window = meta(self.r, k("attention.sliding_window"), 0) if self.arch == "gemma3" else 0
        self.cache = {}

    def w(self, name):
        """A whole tensor, dequantized, as float64 (rows × row length)."""
        if name not in self.cache:
            t = self.t[name]
            self.cache[name] = dequantize(t.data, t.tensor_type).astype(np.float64)
        return self.cache[name]

    def rows(self, name, ids):
        """Rows `ids` of a matrix (the embedding), dequantized, as float64."""
        t = self.t[name]
        return dequantize(t.data[np.asarray(ids)], t.tensor_type).astype(np.float64).reshape(len(ids), -1)

    def output_name(self):
        return "output.weight" if "output.weight" in self.t else "token_embd.weight"

    def rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos, base, neox):
        # x: (n, heads, head_dim)
        half = self.n_rot // 2
        inv = base ** (-2.0 * np.arange(half) / self.n_rot)
        ang = pos[:, None].astype(np.float64) * inv[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        y = x.copy()
        if neox:
            a, b = x[..., :half], x[..., half:self.n_rot]
            y[..., :half], y[..., half:self.n_rot] = a * c - b * s, a * s + b * c
        else:
            a, b = x[..., 0:self.n_rot:2], x[..., 1:self.n_rot:2]
            y[..., 0:self.n_rot:2], y[..., 1:self.n_rot:2] = a * c - b * s, a * s + b * c
        return y

    def attention(self, q, k, v, window):
        # q: (n, H, d), k/v: (n, Hkv, d); causal, optionally a sliding window.
        n = q.shape[0]
        group = self.n_head // self.n_head_kv
        scale = 1.0 / math.sqrt(self.head_dim)
        i = np.arange(n)[:, None]
        j = np.arange(n)[None, :]
        mask = j <= i
        if window:
            mask &= (i - j) < window
        out = np.empty((n, self.n_head, v.shape[2]))
        for h in range(self.n_head):
            kh, vh = k[:, h // group], v[:, h // group]
            s = (q[:, h] @ kh.T) * scale
            s = np.where(mask, s, -np.inf)
            s = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, h] = (s / s.sum(axis=1, keepdims=True)) @ vh
        return out.reshape(n, -1)

    def forward(self, ids, out_rows, out_ids):
        """Final hidden states at `out_rows`, projected onto the vocabulary rows `out_ids`."""
        n = len(ids)
        pos = np.arange(n)
        x = self.rows("token_embd.weight", ids)
        gemma = self.arch == "gemma3"
        if gemma:
            x = x * math.sqrt(self.n_embd)
        H, Hkv, d = self.n_head, self.n_head_kv, self.head_dim
        for il in range(self.n_layer):
            p = lambda s: self.w(f"blk.{il}.{s}")
            swa = gemma and self.window and il % 6 < 5
            h = self.rms(x, p("attn_norm.weight"))
            q = (h @ p("attn_q.weight").T).reshape(n, H, d)
            k = (h @ p("attn_k.weight").T).reshape(n, Hkv, d)
            v = (h @ p("attn_v.weight").T).reshape(n, Hkv, -1)
            if gemma:
                q = self.rms(q, p("attn_q_norm.weight"))
                k = self.rms(k, p("attn_k_norm.weight"))
            base = 10000.0 if swa else self.rope_base
            q = self.rope(q, pos, base, neox=gemma)
            k = self.rope(k, pos, base, neox=gemma)
            a = self.attention(q, k, v, self.window if swa else 0) @ p("attn_output.weight").T
            if gemma:
                a = self.rms(a, p("post_attention_norm.weight"))
            x = x + a
            h = self.rms(x, p("ffn_norm.weight"))
            g = h @ p("ffn_gate.weight").T
            u = h @ p("ffn_up.weight").T
            if gemma:
                act = 0.5 * g * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (g + 0.044715 * g ** 3)))
            else:
                act = g / (1.0 + np.exp(-g))
            f = (act * u) @ p("ffn_down.weight").T
            if gemma:
                f = self.rms(f, p("post_ffw_norm.weight"))
            x = x + f
        hs = self.rms(x[out_rows], self.w("output_norm.weight"))
        return hs @ self.rows(self.output_name(), out_ids).T


def main():
    model_path, out_dir, fixtures = sys.argv[1], sys.argv[2], sys.argv[3:]
    m = Model(model_path)
    os.makedirs(out_dir, exist_ok=True)
    for path in fixtures:
        fx = json.load(open(path))
        prompt, gen, probe = fx["prompt_ids"], fx["generated_ids"], fx["probe_ids"]
        seq = prompt + gen[:-1]
        rows = [len(prompt) - 1 + i for i in range(len(gen))]
        ids = sorted({i for st in fx["steps"] for i, _ in st["top"]} | set(probe))
        col = {t: c for c, t in enumerate(ids)}
        logits = m.forward(seq, rows, ids)
        steps = []
        for r, st in enumerate(fx["steps"]):
            rng = st["max"] - st["min"]
            pairs = [(i, v) for i, v in st["top"]] + list(zip(probe, st["probe"]))
            diffs = [abs(logits[r, col[i]] - v) for i, v in pairs]
            worst = int(np.argmax(diffs))
            top5 = [i for i, _ in st["top"][:5]]
            steps.append({
                "disagreement": float(f"{diffs[worst] / rng:.4g}"),
                "max_abs": float(f"{diffs[worst]:.4g}"),
                "worst_id": pairs[worst][0],
                "top5_f64": [[i, float(f"{logits[r, col[i]]:.6g}")] for i in top5],
            })
        name = os.path.basename(path)
        doc = {
            "schema": 1,
            "generator": "cargo xtask f64-reference (xtask/src/f64_reference.py)",
            "fixture": name,
            "model": fx["model"],
            "model_sha256": fx["model_sha256"],
            "steps": steps,
        }
        text = json.dumps(doc, indent=None, separators=(", ", ": "))
        # One step per line, like the llama.cpp fixtures.
        text = text.replace(', "steps": [{', ',\n"steps": [\n{').replace("}, {", "},\n{")
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text + "\n")
        d = [s["disagreement"] for s in steps]
        print(f"{fx['model']}/{name}: {len(steps)} steps, llama.cpp vs f64 {min(d) * 100:.2f}%..{max(d) * 100:.2f}% of range "
              f"(median {sorted(d)[len(d) // 2] * 100:.2f}%)", flush=True)


if __name__ == "__main__":
    main()
