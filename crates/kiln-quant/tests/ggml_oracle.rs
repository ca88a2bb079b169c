//! kiln-quant against ggml itself.
//!
//! The fixtures in `tests/fixtures/ggml/` were written by `tests/oracle/gen_fixtures.c`, a small C
//! program linked against llama.cpp's ggml (commit 0c1e570); `tests/oracle/README.md` has the
//! command that regenerates them, their format and their sha256. Every expected value below is
//! ggml's output; nothing is compared with kiln's own output.
//!
//! | test module | checks | against |
//! | --- | --- | --- |
//! | `dequant::*` | [`dequantize`], f32 bit patterns, bit for bit | ggml `to_float` (Q8_K: `dequantize_row_q8_K`) |
//! | `quant::*` | [`quantize`] bytes, bit for bit, for every type kiln has a quantizer for | ggml `from_float_ref` (Q8_K: `quantize_row_q8_K_ref`) |
//! | `required_quantizers_present` | Q4_0, Q4_1, Q5_0, Q8_0 and MXFP4 have a quantizer | — |
//! | `actq::*` | [`quantize_activations`] for every weight type paired with Q8_0 / Q8_1 / Q8_K, bit for bit | ggml-cpu `from_float` or ggml `from_float_ref`, consistently (see below) |
//! | `dot::*` | [`vec_dot`] (dispatching), `Dot::scalar`, `Dot::avx2` and `Dot::vnni` called directly | ggml-cpu `vec_dot`, within a tolerance |
//!
//! NaN policy: dequantize and quantize compare bit patterns, NaNs included. ggml produces NaNs only
//! in the F32/F16/BF16 fixtures, by bit manipulation (F16→F32 keeps the payload and sets the quiet
//! bit; F32→F16 writes 0x7E00 | sign; F32→BF16 writes (bits >> 16) | 0x40), so the payload is part
//! of ggml's behaviour and kiln must reproduce it. The block-format fixtures contain no NaN (every
//! f16/f32 scale field is finite).
//!
//! Dot tolerance: |kiln − ggml| ≤ 1e-5 · scale, where scale = Σ_i (|w_i − o_i| + |o_i|)·|a_i| in
//! f64 over the dequantized weights w, activations a and, for the formats with an offset term
//! (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K), the per-element offset o_i (the weight each element would
//! have with all quants of its block zero): ggml sums the scaled-quant and the offset parts
//! separately, so rounding scales with both. The test computes scale itself (weights through
//! kiln's `dequantize`, activations decoded by hand) and checks it against the one the generator
//! computed from ggml's `to_float`. ggml-cpu's own error against the f64 dot stays below 5e-7 ·
//! scale on every fixture (the generator prints it), so 1e-5 leaves 20× room for a different
//! summation order while a single wrong element of a 4096-element row (≈ scale/4096) still fails.
//! For Q8_1 activations ggml uses the stored `s` (f16 of d·Σq) for the offset term, not Σ a_i;
//! an implementation that recomputes Σ a_i is off by up to 2^-11 of that term and fails here.
//!
//! ggml-cpu's `from_float` for Q8_0 and Q8_1 (its AVX path) is not ggml's reference: it rounds
//! half to even (`_mm256_round_ps`) where `quantize_row_q8_*_ref` rounds half away from zero
//! (`roundf`), and scales by 127/amax instead of 1/(amax/127). The `actq` fixtures hold both
//! outputs, and records where they differ (`halves`: exact .5 ties; `id-split`: products that
//! the two scalings put on different sides of a .5). `quantize_activations` must reproduce one
//! of the two on every record (it may emulate llama.cpp's matmul input or use the reference;
//! a mixture, or a third rounding, fails); the test prints which one it matched. `quantize`
//! itself is always the reference (`quant::q8_0`, `quant::q8_1`, `quant::q8_k`). For Q8_K the x86
//! build's `from_float` is the reference itself, so both are the same bytes.

use std::fmt::Write as _;
use std::path::PathBuf;

use kiln_quant::{GgmlType, dequantize, quantize, quantize_activations, simd, supported_types, traits, vec_dot};

const KIND_DEQUANT: u32 = 1;
const KIND_QUANT: u32 = 2;
const KIND_DOT: u32 = 3;
const KIND_ACTQ: u32 = 4;

/// Relative dot tolerance (see the module docs).
const DOT_REL_TOL: f64 = 1e-5;

/// At most this many failures are spelled out per test (the count of all of them is given).
const MAX_REPORTED: usize = 12;

// ------------------------------------------------------------------------------------------------
// fixture reader (format: tests/oracle/README.md)

struct Record {
    index: usize,
    label: String,
    n_elems: usize,
    fields: Vec<Vec<u8>>,
}

struct Fixture {
    file: String,
    ty: GgmlType,
    aux: GgmlType,
    records: Vec<Record>,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ggml")
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        KIND_DEQUANT => "dequant",
        KIND_QUANT => "quant",
        KIND_DOT => "dot",
        KIND_ACTQ => "actq",
        _ => "?",
    }
}

struct Cursor<'a> {
    file: &'a str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> &'a [u8] {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .unwrap_or_else(|| panic!("{}: truncated at byte {} reading {what} ({n} bytes)", self.file, self.pos));
        let s = &self.buf[self.pos..end];
        self.pos = end;
        s
    }
    fn u32(&mut self, what: &str) -> u32 {
        u32::from_le_bytes(self.take(4, what).try_into().unwrap())
    }
}

fn load(ty: GgmlType, kind: u32) -> Fixture {
    let file = format!("{}.{}.bin", ty.name(), kind_name(kind));
    let path = fixture_dir().join(&file);
    let buf = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (regenerate with tests/oracle/README.md)", path.display()));
    let mut c = Cursor { file: &file, buf: &buf, pos: 0 };
    assert_eq!(c.take(8, "magic"), b"KILNGGML", "{file}: bad magic");
    let version = c.u32("version");
    assert_eq!(version, 1, "{file}: unknown version {version}");
    let k = c.u32("kind");
    assert_eq!(k, kind, "{file}: header says kind {k}, expected {kind}");
    let tid = c.u32("type");
    assert_eq!(tid, ty.id(), "{file}: header says type {tid}, expected {} ({ty})", ty.id());
    let aux_id = c.u32("aux type");
    let aux = GgmlType::from_id(aux_id).unwrap_or_else(|| panic!("{file}: unknown aux type id {aux_id}"));
    let n_records = c.u32("n_records") as usize;
    let n_fields = c.u32("n_fields") as usize;
    let mut records = Vec::with_capacity(n_records);
    for index in 0..n_records {
        let ll = c.u32("label length") as usize;
        let label = String::from_utf8(c.take(ll, "label").to_vec())
            .unwrap_or_else(|_| panic!("{file}: record {index}: label is not UTF-8"));
        let n_elems = c.u32("n_elems") as usize;
        let fields = (0..n_fields)
            .map(|_| {
                let len = c.u32("field length") as usize;
                c.take(len, "field").to_vec()
            })
            .collect();
        records.push(Record { index, label, n_elems, fields });
    }
    assert_eq!(c.pos, buf.len(), "{file}: {} trailing bytes after {n_records} records", buf.len() - c.pos);
    assert!(!records.is_empty(), "{file}: no records");
    let fx = Fixture { file, ty, aux, records };
    check_field_lengths(&fx, kind);
    fx
}

/// Field lengths as ggml wrote them must agree with kiln's layout table.
fn check_field_lengths(fx: &Fixture, kind: u32) {
    for r in &fx.records {
        let rb = |t: GgmlType| {
            t.row_bytes(r.n_elems as u64)
                .unwrap_or_else(|e| panic!("{} record {} '{}': {e}", fx.file, r.index, r.label)) as usize
        };
        let f32s = 4 * r.n_elems;
        let want: Vec<usize> = match kind {
            KIND_DEQUANT => vec![rb(fx.ty), f32s],
            KIND_QUANT => vec![f32s, rb(fx.ty)],
            KIND_ACTQ => vec![f32s, rb(fx.ty), rb(fx.ty)],
            KIND_DOT => vec![rb(fx.ty), rb(fx.aux), 4, 16],
            _ => unreachable!(),
        };
        let got: Vec<usize> = r.fields.iter().map(Vec::len).collect();
        assert_eq!(
            got, want,
            "{} record {} '{}' (n={}): field byte lengths (ggml's) differ from kiln's layout for {}",
            fx.file, r.index, r.label, r.n_elems, fx.ty
        );
    }
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn f64s(b: &[u8]) -> Vec<f64> {
    b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// IEEE binary16 → f32 (exact; independent of the crate under test).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let mag = match exp {
        0 => {
            let v = man as f32 * 2f32.powi(-24); // exact: man < 2^10
            return if sign != 0 { -v } else { v };
        }
        31 => 0x7f80_0000 | (man << 13),
        _ => ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(sign | mag)
}

/// Decodes one row of activations in a vec_dot type, independently of the crate under test.
fn decode_activations(ty: GgmlType, b: &[u8]) -> Vec<f64> {
    match ty {
        GgmlType::F32 => f32s(b).into_iter().map(f64::from).collect(),
        GgmlType::F16 => b.chunks_exact(2).map(|c| f16_to_f32(u16_at(c, 0)) as f64).collect(),
        GgmlType::BF16 => b.chunks_exact(2).map(|c| f32::from_bits((u16_at(c, 0) as u32) << 16) as f64).collect(),
        GgmlType::Q8_0 | GgmlType::Q8_1 => {
            let (bb, qs) = if ty == GgmlType::Q8_0 { (34, 2) } else { (36, 4) };
            b.chunks_exact(bb)
                .flat_map(|blk| {
                    let d = f16_to_f32(u16_at(blk, 0)) as f64;
                    blk[qs..qs + 32].iter().map(move |&q| d * (q as i8) as f64)
                })
                .collect()
        }
        GgmlType::Q8_K => b
            .chunks_exact(292)
            .flat_map(|blk| {
                let d = f32::from_le_bytes(blk[0..4].try_into().unwrap()) as f64;
                blk[4..260].iter().map(move |&q| d * (q as i8) as f64)
            })
            .collect(),
        _ => panic!("no activation decoder for {ty}"),
    }
}

/// Byte range of the quant bits in the formats that have an offset ("min") term.
fn quant_range(ty: GgmlType) -> Option<(usize, usize)> {
    match ty {
        GgmlType::Q4_1 => Some((4, 20)),
        GgmlType::Q5_1 => Some((4, 24)),
        GgmlType::Q2_K => Some((16, 80)),
        GgmlType::Q4_K => Some((16, 144)),
        GgmlType::Q5_K => Some((16, 176)),
        _ => None,
    }
}

/// Names the block field that byte `off` of a block of `ty` belongs to (ggml-common.h).
fn field_name(ty: GgmlType, off: usize) -> &'static str {
    use GgmlType::*;
    let table: &[(usize, &'static str)] = match ty {
        Q4_0 => &[(2, "d"), (18, "qs")],
        Q4_1 => &[(2, "d"), (4, "m"), (20, "qs")],
        Q5_0 => &[(2, "d"), (6, "qh"), (22, "qs")],
        Q5_1 => &[(2, "d"), (4, "m"), (8, "qh"), (24, "qs")],
        Q8_0 => &[(2, "d"), (34, "qs")],
        Q8_1 => &[(2, "d"), (4, "s"), (36, "qs")],
        Q2_K => &[(16, "scales"), (80, "qs"), (82, "d"), (84, "dmin")],
        Q3_K => &[(32, "hmask"), (96, "qs"), (108, "scales"), (110, "d")],
        Q4_K => &[(2, "d"), (4, "dmin"), (16, "scales"), (144, "qs")],
        Q5_K => &[(2, "d"), (4, "dmin"), (16, "scales"), (48, "qh"), (176, "qs")],
        Q6_K => &[(128, "ql"), (192, "qh"), (208, "scales"), (210, "d")],
        Q8_K => &[(4, "d"), (260, "qs"), (292, "bsums")],
        MXFP4 => &[(1, "e"), (17, "qs")],
        _ => &[(usize::MAX, "value")],
    };
    table.iter().find(|(end, _)| off < *end).map_or("?", |(_, n)| n)
}

/// Collects failure lines and panics with all of them (the first `MAX_REPORTED` spelled out).
struct Failures {
    what: String,
    lines: Vec<String>,
    count: usize,
}

impl Failures {
    fn new(what: impl Into<String>) -> Self {
        Failures { what: what.into(), lines: Vec::new(), count: 0 }
    }
    fn push(&mut self, line: String) {
        self.count += 1;
        if self.lines.len() < MAX_REPORTED {
            self.lines.push(line);
        }
    }
    fn finish(self) {
        if self.count > 0 {
            let mut msg = format!("{}: {} failure(s)\n", self.what, self.count);
            for l in &self.lines {
                let _ = writeln!(msg, "  {l}");
            }
            if self.count > self.lines.len() {
                let _ = writeln!(msg, "  … and {} more", self.count - self.lines.len());
            }
            panic!("{msg}");
        }
    }
}

// ------------------------------------------------------------------------------------------------
// dequantize

fn check_dequant(ty: GgmlType) {
    let fx = load(ty, KIND_DEQUANT);
    let be = ty.block_elems();
    let mut fails = Failures::new(format!("dequantize {ty} vs ggml to_float ({})", fx.file));
    for r in &fx.records {
        let want = f32s(&r.fields[1]);
        let mut got = vec![f32::from_bits(0x7fc0_dead); r.n_elems];
        if let Err(e) = dequantize(ty, &r.fields[0], &mut got) {
            fails.push(format!("record {} '{}': dequantize returned error: {e}", r.index, r.label));
            continue;
        }
        let bad: Vec<usize> = (0..r.n_elems).filter(|&i| got[i].to_bits() != want[i].to_bits()).collect();
        if let Some(&i) = bad.first() {
            let (b, j) = (i / be, i % be);
            fails.push(format!(
                "record {} '{}': element {i} (block {b}, index {j}): kiln {:#010x} ({:e}) != ggml {:#010x} ({:e}); \
                 {} of {} elements differ in this record",
                r.index,
                r.label,
                got[i].to_bits(),
                got[i],
                want[i].to_bits(),
                want[i],
                bad.len(),
                r.n_elems
            ));
        }
    }
    fails.finish();
}

// ------------------------------------------------------------------------------------------------
// quantize

fn byte_mismatch(ty: GgmlType, got: &[u8], want: &[u8], input: &[f32]) -> Option<String> {
    let bb = ty.block_bytes();
    let be = ty.block_elems();
    let bad: Vec<usize> = (0..want.len()).filter(|&i| got[i] != want[i]).collect();
    let &i = bad.first()?;
    let (b, off) = (i / bb, i % bb);
    let blocks_bad = {
        let mut v: Vec<usize> = bad.iter().map(|i| i / bb).collect();
        v.dedup();
        v.len()
    };
    let inputs = if be == 1 {
        format!("input {:#010x} ({:e})", input[b].to_bits(), input[b])
    } else {
        let blk = &input[b * be..(b + 1) * be];
        let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
        format!("block input amax {amax:e}")
    };
    Some(format!(
        "block {b} (elements {}..{}), byte {off} of {bb} (field {}): kiln {:#04x} != ggml {:#04x}; {inputs}; \
         {} bytes in {} of {} blocks differ",
        b * be,
        (b + 1) * be,
        field_name(ty, off),
        got[i],
        want[i],
        bad.len(),
        blocks_bad,
        want.len() / bb
    ))
}

fn check_quant(ty: GgmlType) {
    let t = traits(ty).unwrap_or_else(|| panic!("kiln has no traits entry for {ty}"));
    if t.quantize.is_none() {
        eprintln!("quantize {ty}: kiln has no quantizer for this type; nothing to compare (not required)");
        return;
    }
    let fx = load(ty, KIND_QUANT);
    let mut fails = Failures::new(format!("quantize {ty} vs ggml from_float_ref ({})", fx.file));
    for r in &fx.records {
        let x = f32s(&r.fields[0]);
        let want = &r.fields[1];
        let mut got = vec![0xA5u8; want.len()];
        if let Err(e) = quantize(ty, &x, &mut got) {
            fails.push(format!("record {} '{}': quantize returned error: {e}", r.index, r.label));
            continue;
        }
        if let Some(m) = byte_mismatch(ty, &got, want, &x) {
            fails.push(format!("record {} '{}' (n={}): {m}", r.index, r.label, r.n_elems));
        }
    }
    fails.finish();
}

#[test]
fn required_quantizers_present() {
    let missing: Vec<GgmlType> = [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q8_0, GgmlType::MXFP4]
        .into_iter()
        .filter(|&ty| traits(ty).is_none_or(|t| t.quantize.is_none()))
        .collect();
    assert!(missing.is_empty(), "these types must have ggml's reference quantizer, and have none: {missing:?}");
}

// ------------------------------------------------------------------------------------------------
// activation quantization

/// `quantize_activations` must be one of ggml's two activation quantizers for this type, on
/// every record: ggml-cpu's `from_float` (what llama.cpp's matmul feeds its dots) or the
/// reference `from_float_ref`. For Q8_0/Q8_1 the two differ on the `halves` (ties) and `id-split`
/// (127/amax vs 1/(amax/127)) records, so a mixture of the two, or a third rounding, fails.
fn check_actq(act_ty: GgmlType) {
    let fx = load(act_ty, KIND_ACTQ);
    let weights: Vec<GgmlType> =
        supported_types().filter(|&w| traits(w).is_some_and(|t| t.vec_dot_type == act_ty)).collect();
    let mut fails = Failures::new(format!("quantize_activations into {act_ty} vs ggml ({})", fx.file));
    if weights.is_empty() {
        fails.push(format!("no kiln type has vec_dot_type {act_ty}"));
    }
    for &w in &weights {
        // first difference from each of ggml's two quantizers, over all records
        let mut vs_cpu: Option<String> = None;
        let mut vs_ref: Option<String> = None;
        let mut errored = false;
        for r in &fx.records {
            let x = f32s(&r.fields[0]);
            let (cpu, reference) = (&r.fields[1], &r.fields[2]);
            let got = match quantize_activations(w, &x) {
                Ok(g) if g.len() == reference.len() => g,
                Ok(g) => {
                    fails.push(format!(
                        "record {} '{}': quantize_activations({w}) gave {} bytes, ggml {}",
                        r.index,
                        r.label,
                        g.len(),
                        reference.len()
                    ));
                    errored = true;
                    break;
                }
                Err(e) => {
                    fails.push(format!(
                        "record {} '{}': quantize_activations({w}) returned error: {e}",
                        r.index, r.label
                    ));
                    errored = true;
                    break;
                }
            };
            let at = |m: String| format!("record {} '{}' (n={}): {m}", r.index, r.label, r.n_elems);
            if vs_cpu.is_none() {
                vs_cpu = byte_mismatch(act_ty, &got, cpu, &x).map(at);
            }
            if vs_ref.is_none() {
                vs_ref = byte_mismatch(act_ty, &got, reference, &x).map(at);
            }
        }
        if errored {
            continue;
        }
        match (vs_cpu, vs_ref) {
            (None, None) => eprintln!(
                "quantize_activations({w}) → {act_ty}: equals ggml-cpu from_float and from_float_ref (identical here)"
            ),
            (None, Some(_)) => {
                eprintln!("quantize_activations({w}) → {act_ty}: equals ggml-cpu's from_float on every record")
            }
            (Some(_), None) => {
                eprintln!("quantize_activations({w}) → {act_ty}: equals ggml's from_float_ref on every record")
            }
            (Some(c), Some(r)) => fails.push(format!(
                "quantize_activations({w}) matches neither of ggml's {act_ty} quantizers on every record; \
                 first difference from ggml-cpu from_float: {c}; first difference from from_float_ref: {r}"
            )),
        }
    }
    fails.finish();
}

// ------------------------------------------------------------------------------------------------
// dot products

fn check_dot(ty: GgmlType) {
    let fx = load(ty, KIND_DOT);
    let t = traits(ty).unwrap_or_else(|| panic!("kiln has no traits entry for {ty}"));
    assert_eq!(t.vec_dot_type, fx.aux, "{ty}: kiln's vec_dot_type is {}, ggml-cpu's is {}", t.vec_dot_type, fx.aux);
    let d = t.vec_dot.unwrap_or_else(|| panic!("{ty}: kiln has no vec_dot, ggml-cpu has one ({})", fx.file));
    let avx2 = d.avx2.filter(|_| simd::has_avx2_fma());
    if d.avx2.is_some() && avx2.is_none() {
        eprintln!("{ty}: Dot::avx2 exists but this CPU lacks AVX2+FMA (or KILN_NO_SIMD is set); not called directly");
    }
    let vnni = d.vnni.filter(|_| simd::has_avx512_vnni());
    if d.vnni.is_some() && vnni.is_none() {
        eprintln!(
            "{ty}: Dot::vnni exists but this CPU lacks AVX-512 VNNI (or KILN_NO_VNNI/KILN_NO_SIMD is set); not called directly"
        );
    }
    let mut fails = Failures::new(format!("vec_dot {ty} x {} vs ggml-cpu vec_dot ({})", fx.aux, fx.file));
    for r in &fx.records {
        let (w, act) = (&r.fields[0], &r.fields[1]);
        let ggml = f32::from_le_bytes(r.fields[2][..4].try_into().unwrap()) as f64;
        let meta = f64s(&r.fields[3]);
        let (scale_ggml, exact_ggml) = (meta[0], meta[1]);
        let at = format!("record {} '{}' (n={})", r.index, r.label, r.n_elems);

        // tolerance scale, recomputed here in f64 and checked against the generator's
        let mut wd = vec![0f32; r.n_elems];
        if let Err(e) = dequantize(ty, w, &mut wd) {
            fails.push(format!("{at}: dequantize of the weights returned error: {e}"));
            continue;
        }
        let mut od = vec![0f32; r.n_elems];
        if let Some((lo, hi)) = quant_range(ty) {
            let mut z = w.clone();
            for blk in z.chunks_exact_mut(ty.block_bytes()) {
                blk[lo..hi].fill(0);
            }
            dequantize(ty, &z, &mut od).expect("dequantize of zeroed blocks");
        }
        let a = decode_activations(fx.aux, act);
        let scale: f64 =
            (0..r.n_elems).map(|i| ((wd[i] as f64 - od[i] as f64).abs() + (od[i] as f64).abs()) * a[i].abs()).sum();
        if (scale - scale_ggml).abs() > 1e-6 * scale_ggml.abs() + f64::MIN_POSITIVE {
            fails.push(format!(
                "{at}: tolerance scale from kiln's dequantized weights {scale:e} != ggml's {scale_ggml:e} \
                 (dequantize disagrees with ggml on these weights)"
            ));
            continue;
        }
        let tol = DOT_REL_TOL * scale_ggml + 1e-30;

        let mut paths: Vec<(&str, Result<f32, String>)> = vec![
            ("vec_dot (dispatching)", vec_dot(ty, w, act).map_err(|e| e.to_string())),
            ("Dot::scalar", Ok((d.scalar)(w, act))),
        ];
        if let Some(f) = avx2 {
            // SAFETY: AVX2 and FMA were detected at run time (simd::has_avx2_fma).
            paths.push(("Dot::avx2", Ok(unsafe { f(w, act) })));
        }
        if let Some(f) = vnni {
            // SAFETY: AVX2, FMA, F16C and AVX-512 F/VL/BW/VNNI were detected at run time
            // (simd::has_avx512_vnni).
            paths.push(("Dot::vnni", Ok(unsafe { f(w, act) })));
        }
        for (name, res) in paths {
            match res {
                Err(e) => fails.push(format!("{at}: {name} returned error: {e}")),
                Ok(v) => {
                    let diff = (v as f64 - ggml).abs();
                    if diff.is_nan() || diff > tol {
                        fails.push(format!(
                            "{at}: {name}: kiln {v:e} vs ggml-cpu {ggml:e}: |diff| {diff:.3e} > tol {tol:.3e} \
                             (= {DOT_REL_TOL:e} x scale {scale_ggml:.4e}; f64 dot of ggml's values {exact_ggml:e})"
                        ));
                    }
                }
            }
        }
    }
    fails.finish();
}

// ------------------------------------------------------------------------------------------------
// one #[test] per type and kind, so the test list reads as a coverage table

macro_rules! per_type {
    ($check:ident: $($name:ident => $ty:ident),* $(,)?) => {
        $( #[test] fn $name() { super::$check(kiln_quant::GgmlType::$ty) } )*
    };
}

/// `dequantize` against ggml `to_float`. (Q8_1 is absent: ggml defines no dequantization for it.)
mod dequant {
    per_type!(check_dequant:
        f32 => F32, f16 => F16, bf16 => BF16, q4_0 => Q4_0, q4_1 => Q4_1, q5_0 => Q5_0, q5_1 => Q5_1,
        q8_0 => Q8_0, q2_k => Q2_K, q3_k => Q3_K, q4_k => Q4_K, q5_k => Q5_K, q6_k => Q6_K, q8_k => Q8_K,
        mxfp4 => MXFP4,
    );
}

/// `quantize` against ggml `from_float_ref`, for the types kiln has a quantizer for.
mod quant {
    per_type!(check_quant:
        f16 => F16, bf16 => BF16, q4_0 => Q4_0, q4_1 => Q4_1, q5_0 => Q5_0, q5_1 => Q5_1, q8_0 => Q8_0,
        q8_1 => Q8_1, q2_k => Q2_K, q3_k => Q3_K, q4_k => Q4_K, q5_k => Q5_K, q6_k => Q6_K, q8_k => Q8_K,
        mxfp4 => MXFP4,
    );
}

/// `quantize_activations` against ggml (ggml-cpu `from_float` or `from_float_ref`, bit for bit).
mod actq {
    per_type!(check_actq: q8_0 => Q8_0, q8_1 => Q8_1, q8_k => Q8_K);
}

/// `vec_dot` (all paths) against ggml-cpu `vec_dot`.
mod dot {
    per_type!(check_dot:
        f32 => F32, f16 => F16, bf16 => BF16, q4_0 => Q4_0, q4_1 => Q4_1, q5_0 => Q5_0, q5_1 => Q5_1,
        q8_0 => Q8_0, q2_k => Q2_K, q3_k => Q3_K, q4_k => Q4_K, q5_k => Q5_K, q6_k => Q6_K, mxfp4 => MXFP4,
    );
}

/// Every fixture file is read by some test above: a new file without a test, or a test whose file
/// went missing, fails here.
#[test]
fn every_fixture_file_is_checked() {
    let mut expected: Vec<String> = Vec::new();
    let names = |k: &str, ts: &[GgmlType]| ts.iter().map(|t| format!("{}.{k}.bin", t.name())).collect::<Vec<_>>();
    use GgmlType::*;
    expected.extend(names(
        "dequant",
        &[F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, MXFP4],
    ));
    expected.extend(names(
        "quant",
        &[F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, MXFP4],
    ));
    expected.extend(names("actq", &[Q8_0, Q8_1, Q8_K]));
    expected.extend(names("dot", &[F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, MXFP4]));
    expected.sort();
    let mut found: Vec<String> = std::fs::read_dir(fixture_dir())
        .expect("fixture directory")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    found.sort();
    assert_eq!(found, expected, "fixture files on disk vs files the tests read");
}
