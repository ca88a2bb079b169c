//! GPU memory exhaustion, driven by the device's fault-injection point (the N-th allocation fails
//! as if the card were full) and by the `--gpu-memory` cap: at load, at KV growth and in the middle
//! of a forward pass each failure is a typed out-of-memory error, everything the failed operation
//! took is returned (the ledger and `cuMemGetInfo` read the same before and after), and the next
//! operation succeeds. And 1,000 short generations in one process leak nothing. Needs a GPU.
#![cfg(feature = "cuda")]

use std::sync::Arc;

use kiln_cuda::{Device, DeviceOptions};
use kiln_model::{Batch, CudaBackend, Model, SeqKv};

fn tiny_gpt_oss() -> Arc<kiln_gguf::GgufFile> {
    let bytes = kiln_synth::GptOss::tiny().model().unwrap().to_bytes().unwrap();
    Arc::new(kiln_gguf::GgufFile::from_bytes(bytes).unwrap())
}

/// (ledger bytes, free bytes on the card).
fn memory(dev: &Device) -> (u64, u64) {
    (dev.used(), dev.mem_info().unwrap().0)
}

fn same_memory(what: &str, before: (u64, u64), after: (u64, u64)) {
    println!("CASE oom {what:<44} ledger {} -> {} bytes, free {} -> {} bytes", before.0, after.0, before.1, after.1);
    assert_eq!(before.0, after.0, "{what}: the ledger does not read as before");
    // cuMemGetInfo moves in 2 MiB pages.
    assert!(before.1.abs_diff(after.1) <= 2 << 20, "{what}: the card's free memory does not read as before");
}

fn generate(m: &Model<CudaBackend>, n: usize) -> kiln_model::Result<Vec<u32>> {
    let mut kv = m.kv_cache(64)?;
    let mut s = SeqKv::default();
    let mut logits = m.forward(&mut kv, &mut [&mut s], &Batch::single(&[1, 2, 3, 4, 5, 6, 7, 8]), 64)?;
    let mut out = vec![];
    for _ in 0..n {
        let id = (0..logits.len()).fold(0, |b, j| if logits[j] > logits[b] { j } else { b }) as u32;
        out.push(id);
        logits = m.forward(&mut kv, &mut [&mut s], &Batch::single(&[id]), 64)?;
    }
    Ok(out)
}

fn device() -> Arc<Device> {
    let dev = Device::new(DeviceOptions::default()).unwrap();
    // Kernel modules load once per device: load them now so they are in "before".
    CudaBackend::new(dev.clone(), None).warm_up().unwrap();
    dev
}

#[test]
fn failed_loads_free_everything_and_the_next_load_works() {
    let file = tiny_gpt_oss();
    let dev = device();
    let before = memory(&dev);
    // How many allocations a whole load makes.
    let n_allocs = {
        let probe = Device::new(DeviceOptions::default()).unwrap();
        let base = probe.allocations();
        drop(Model::load(file.clone(), CudaBackend::new(probe.clone(), None)).unwrap());
        probe.allocations() - base
    };
    assert!(n_allocs > 10, "a load makes {n_allocs} allocations");
    for k in [1, 2, n_allocs / 2, n_allocs] {
        dev.fail_allocation_after(k);
        let err = Model::load(file.clone(), CudaBackend::new(dev.clone(), None)).err().expect("the load must fail");
        assert!(err.is_out_of_memory(), "allocation {k} of {n_allocs}: {err}");
        assert!(err.to_string().contains("bytes needed"), "{err}");
        same_memory(&format!("load failing at allocation {k}/{n_allocs}"), before, memory(&dev));
    }
    dev.fail_allocation_after(0);
    let m = Model::load(file, CudaBackend::new(dev.clone(), None)).unwrap();
    assert_eq!(generate(&m, 4).unwrap().len(), 4);
}

#[test]
fn kv_growth_and_mid_step_failures_fail_one_request() {
    let dev = device();
    let m = Model::load(tiny_gpt_oss(), CudaBackend::new(dev.clone(), None)).unwrap();
    let want = generate(&m, 6).unwrap();
    m.backend.trim();
    let before = memory(&dev);
    // KV cache allocation.
    dev.fail_allocation_after(1);
    let err = m.kv_cache(64).err().expect("the KV allocation must fail");
    assert!(err.is_out_of_memory(), "{err}");
    same_memory("KV cache allocation failing", before, memory(&dev));
    // A forward pass whose k-th workspace allocation fails (the workspace is empty after trim).
    for k in [1, 3, 7] {
        let mut kv = m.kv_cache(64).unwrap();
        let mut s = SeqKv::default();
        let with_kv = memory(&dev);
        dev.fail_allocation_after(k);
        let err = m.forward(&mut kv, &mut [&mut s], &Batch::single(&[1, 2, 3]), 64).expect_err("the pass must fail");
        assert!(err.is_out_of_memory(), "{err}");
        assert_eq!(s.len, 0, "a failed pass leaves the sequence as it was");
        dev.fail_allocation_after(0);
        m.backend.trim();
        same_memory(&format!("forward failing at allocation {k}"), with_kv, memory(&dev));
        kv.release(&mut s);
    }
    same_memory("after the failures, KV dropped", before, memory(&dev));
    assert_eq!(generate(&m, 6).unwrap(), want, "the next generation succeeds, unchanged");
}

#[test]
fn a_cap_refuses_what_does_not_fit_with_the_numbers() {
    let file = tiny_gpt_oss();
    let tensor_bytes: u64 = file.tensors().iter().map(|t| file.tensor_data(t).len() as u64).sum();
    let cap = tensor_bytes / 2;
    let dev = Device::new(DeviceOptions { cap: Some(cap), ..DeviceOptions::default() }).unwrap();
    let err = Model::load(file.clone(), CudaBackend::new(dev.clone(), None))
        .err()
        .expect("half the weights' bytes is too little");
    let msg = err.to_string();
    println!("CASE cap   {cap}-byte cap for {tensor_bytes} bytes of tensors: {msg}");
    assert!(err.is_out_of_memory() && msg.contains("--gpu-memory"), "{msg}");
    assert_eq!(dev.used(), 0);
}

#[test]
fn a_thousand_generations_leak_nothing() {
    let dev = device();
    let m = Model::load(tiny_gpt_oss(), CudaBackend::new(dev.clone(), None)).unwrap();
    let first = generate(&m, 3).unwrap();
    let before = memory(&dev);
    for i in 0..1000 {
        assert_eq!(generate(&m, 3).unwrap(), first, "generation {i}");
    }
    same_memory("1,000 generations", before, memory(&dev));
}
