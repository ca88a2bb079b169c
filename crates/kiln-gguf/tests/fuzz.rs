//! Mutation fuzzing of the reader: valid files with bytes flipped, inserted, deleted, truncated
//! and length fields overwritten with huge values. Every input must give `Ok` or `Err` — no
//! panic, no hang, and (checked by a counting allocator) no allocation beyond a small multiple of
//! the input size. Files that still open are then exercised through the whole lazy API, whose
//! results must agree with what validation promised, and must survive a write/read round trip.
//!
//! The case count is modest for CI; raise it locally with `PROPTEST_CASES=200000`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;

use kiln_gguf::{GgufFile, GgufWriter, ValueRef};
use proptest::prelude::*;
use proptest::sample::Index;

/// Counts each thread's live heap bytes and their peak (per thread, so tests running in parallel
/// do not disturb each other's measurements).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // `try_with`: the thread-locals may already be gone while a thread shuts down.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        track(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allowed peak heap growth while opening and exercising an input of `len` bytes (which is itself
/// already allocated): a small multiple of the input plus a constant. The densest input, metadata
/// entries of 14 bytes each, peaks at 4.7x (see `densest_inputs_stay_within_the_bound`).
fn alloc_bound(len: usize) -> usize {
    8 * len + (16 << 10)
}

/// Opens `bytes` and, if it opens, walks everything lazily. Returns the file when it opened.
fn exercise(bytes: Vec<u8>) -> Option<GgufFile> {
    let f = GgufFile::from_bytes(bytes).ok()?;
    let mut sink = std::io::sink();
    for (key, v) in f.metadata() {
        write!(sink, "{key} = {v:.8} : {}", v.type_name()).unwrap();
        assert!(f.get(key).is_some());
        let _ = (f.get_u32(key), f.get_i64(key), f.get_f32(key), f.get_f64(key), f.get_bool(key), f.get_str(key));
        let _ = (f.get_opt_str_array(key).map(|a| a.map(|a| a.to_vec_str())), f.get_opt_array(key));
        walk(v, 1);
    }
    for t in f.tensors() {
        // Validation promised every range lies inside the file.
        assert_eq!(f.tensor_data(t).len() as u64, t.size, "{}", t.name);
        assert_eq!(f.tensor(&t.name), Some(t));
        assert!(f.data_offset() + t.offset + t.size <= f.file_size());
        assert_eq!(t.offset % f.alignment(), 0);
    }
    Some(f)
}

/// Every array yields exactly as many elements as it claims, recursively.
fn walk(v: ValueRef<'_>, depth: usize) {
    assert!(depth <= kiln_gguf::MAX_NESTING + 1);
    if let ValueRef::Array(a) = v {
        let mut n = 0;
        for e in a.iter() {
            walk(e, depth + 1);
            n += 1;
        }
        assert_eq!(n, a.len(), "array {}", a.key());
        if let Ok(s) = a.strings() {
            assert_eq!(s.iter().count(), a.len());
        }
        let _ = (a.to_vec::<u8>(), a.to_vec::<i32>(), a.to_vec::<f32>(), a.to_vec::<bool>(), a.to_vec::<u64>());
        if !a.is_empty() {
            assert!(a.get(a.len() - 1).is_some());
        }
    }
}

/// A file that opened must be reproducible: copy it through the writer and reopen.
fn round_trip(f: &GgufFile) {
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.add(k, v.to_value()).unwrap_or_else(|e| panic!("writer refused {k}: {e}"));
    }
    for t in f.tensors() {
        w.add_tensor(t.name.clone(), t.ty, &t.shape, f.tensor_data(t)).unwrap();
    }
    if f.alignment() > 1 << 16 {
        // The copy is legitimately as large as the alignment (up to 2 GiB): stream it to a sink
        // (which must not allocate the padding) instead of reading it back.
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        w.write(std::io::sink()).unwrap();
        let grew = PEAK.with(Cell::get) - base;
        assert!(grew < 1 << 20, "alignment {}: writing grew the heap by {grew} bytes", f.alignment());
        return;
    }
    let g = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let meta = |f: &GgufFile| f.metadata().map(|(k, v)| format!("{k}={:?}", v.to_value())).collect::<Vec<_>>();
    assert_eq!(meta(f), meta(&g));
    for (a, b) in f.tensors().iter().zip(g.tensors()) {
        assert_eq!((&a.name, a.ty, &a.shape, a.size), (&b.name, b.ty, &b.shape, b.size));
        assert_eq!(f.tensor_data(a), g.tensor_data(b));
    }
}

/// Opens and exercises `bytes` under the allocation bound; round-trips it if it opened.
fn check(bytes: Vec<u8>) {
    let len = bytes.len();
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let f = exercise(bytes);
    let grew = (PEAK.with(Cell::get) - base).max(0) as usize;
    assert!(grew <= alloc_bound(len), "input of {len} bytes: peak allocation grew by {grew} bytes");
    if let Some(f) = f {
        round_trip(&f);
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    PutU64(Index, u64),
    PutU32(Index, u32),
}

fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(1 << 63),
        Just((1 << 63) - 1),
        Just(1 << 60),
        Just(1 << 32),
        Just(u64::from(u32::MAX)),
        Just(0),
        0u64..300,
        any::<u64>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 1usize..32).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), interesting_u64()).prop_map(|(i, v)| Mutation::PutU64(i, v)),
        (
            any::<Index>(),
            // Powers of two reach large `general.alignment` values (the libFuzzer finding).
            prop_oneof![Just(u32::MAX), 0u32..50, (0u32..32).prop_map(|s| 1 << s), any::<u32>()]
        )
            .prop_map(|(i, v)| Mutation::PutU32(i, v)),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if b.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(i, x) => {
                let i = i.index(b.len());
                b[i] ^= x;
            }
            Mutation::Insert(i, bytes) => {
                let i = i.index(b.len() + 1);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = i.index(b.len());
                b.drain(i..(i + n).min(b.len()));
            }
            Mutation::Truncate(i) => b.truncate(i.index(b.len())),
            Mutation::PutU64(i, v) => {
                let i = i.index(b.len());
                let end = (i + 8).min(b.len());
                b[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
            }
            Mutation::PutU32(i, v) => {
                let i = i.index(b.len());
                let end = (i + 4).min(b.len());
                b[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
            }
        }
    }
    b
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1000)
}

#[test]
fn seeds_are_valid() {
    for seed in common::seed_files() {
        assert!(exercise(seed.clone()).is_some());
        check(seed);
    }
}

#[test]
fn every_field_position_overwritten_with_huge_values() {
    for seed in common::seed_files() {
        for i in 0..seed.len() {
            for v in [u64::MAX, 1 << 63, 1 << 40, seed.len() as u64] {
                let mut b = seed.clone();
                let end = (i + 8).min(b.len());
                b[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
                check(b);
            }
            for v in [u32::MAX, 9, 13, 64, 1 << 30] {
                let mut b = seed.clone();
                let end = (i + 4).min(b.len());
                b[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
                check(b);
            }
        }
        for len in 0..seed.len() {
            check(seed[..len].to_vec());
        }
    }
}

/// libFuzzer finding `oom-a4c0ebcd4c185d6e6267906b06c1cb555ef3d414`: a valid file whose
/// `general.alignment` is 2^30 (and which has no tensors). Copying it through the writer built the
/// 1 GiB header padding in memory; the writer now streams padding.
#[test]
fn regression_huge_alignment_padding_is_streamed() {
    let input: &[u8] = b"GGUF\x03\0\0\0\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x11\0\0\0\0\0\0\0\
        general.alignment\x04\0\0\0\0\0\0\x40\x02\0\0\0\0\0\0\0\0\x04";
    let f = GgufFile::from_bytes(input.to_vec()).unwrap();
    assert_eq!(f.alignment(), 1 << 30);
    assert_eq!(f.data_offset(), f.file_size());

    struct Count(u64);
    impl Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = GgufWriter::new();
    w.add("general.alignment", f.get("general.alignment").unwrap().to_value()).unwrap();
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = w.write(Count(0)).unwrap();
    let grew = PEAK.with(Cell::get) - base;
    // 57 bytes of header, padded to the alignment, written without allocating the padding.
    assert_eq!(out.0, 1 << 30);
    assert!(grew < 1 << 20, "writing grew the heap by {grew} bytes");
}

#[test]
fn densest_inputs_stay_within_the_bound() {
    // 4000 u8 entries with 1-3 byte keys (14-16 bytes each), then a count claiming as many
    // entries as the bytes could hold, over bytes that are not entries.
    let mut r = common::Raw::header(3, 0, 4000);
    for i in 0..4000u32 {
        r.str(format!("{i:x}")).u32(0).u8(0);
    }
    assert!(exercise(r.build()).is_some());
    check(r.build());
    let n = 4000 * 16 / 13;
    let mut r = common::Raw::header(3, 0, n);
    r.zeros(4000 * 16);
    check(r.build());
    // 4000 scalar tensors with short names (25 bytes of info each; data 4 bytes each).
    let mut r = common::Raw::header(3, 4000, 0);
    for i in 0..4000u64 {
        r.tensor(&format!("{i:x}"), &[], 0, i * 32);
    }
    r.pad(32).zeros(4000 * 32);
    check(r.build());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_never_panic_or_overallocate(
        seed in 0usize..4,
        muts in prop::collection::vec(mutation(), 1..8),
    ) {
        let seeds = common::seed_files();
        check(apply(seeds[seed % seeds.len()].clone(), &muts));
    }

    #[test]
    fn random_bytes_after_a_valid_header(
        version in prop_oneof![Just(2u32), Just(3u32)],
        n_tensors in prop_oneof![0u64..4, any::<u64>()],
        n_kv in prop_oneof![0u64..4, any::<u64>()],
        tail in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut r = common::Raw::header(version, n_tensors, n_kv);
        r.bytes(&tail);
        check(r.build());
    }
}

/// Writes the seed files to `$KILN_GGUF_CORPUS` (a cargo-fuzz corpus folder); see docs/GGUF.md.
#[test]
#[ignore = "writes files; run by hand to seed cargo-fuzz"]
fn write_fuzz_corpus() {
    let dir = std::env::var_os("KILN_GGUF_CORPUS").expect("set KILN_GGUF_CORPUS to the corpus folder");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, seed) in common::seed_files().into_iter().enumerate() {
        std::fs::write(std::path::Path::new(&dir).join(format!("seed-{i}.gguf")), seed).unwrap();
    }
}
