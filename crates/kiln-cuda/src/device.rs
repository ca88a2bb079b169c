//! One CUDA device: its context, one stream, the VRAM ledger, kernel modules and checked launches.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::{CUdeviceptr, CUfunction, CUmodule, CUstream};
use cudarc::driver::{CudaContext, result, sys};

use crate::matmul::Launch;
use crate::{CudaError, Result};

/// How much memory kiln may take and how allocations are checked.
#[derive(Clone, Debug, Default)]
pub struct DeviceOptions {
    /// Device ordinal.
    pub ordinal: usize,
    /// The most bytes kiln may hold on the device (`--gpu-memory`): a 141 GB card then behaves like
    /// a smaller one. `None`: whatever the card has free.
    pub cap: Option<u64>,
    /// Fault injection for tests: the allocation with this 1-based index (counted over the
    /// device's life) fails as if the card were full. Also read from `KILN_CUDA_FAIL_ALLOC`.
    pub fail_alloc: Option<u64>,
}

/// A ledger line: what an allocation is for, how many buffers and bytes are live under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub name: String,
    pub buffers: u64,
    pub bytes: u64,
}

/// Every live device allocation, by name.
#[derive(Default)]
struct Ledger {
    lines: BTreeMap<String, (u64, u64)>,
    total: u64,
}

/// Whether the driver library is installed; checked before any cudarc call (which would panic).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// A CUDA device with one stream. Every allocation goes through [`Device::alloc`], which counts it
/// in the ledger under a name and refuses what does not fit under the cap.
pub struct Device {
    ctx: Arc<CudaContext>,
    stream: CUstream,
    arch: String,
    name: String,
    total_mem: u64,
    /// Memory in use on the card when the device was opened (the CUDA context, other processes).
    baseline_used: u64,
    cap: Option<u64>,
    ledger: Mutex<Ledger>,
    allocs: AtomicU64,
    fail_alloc: AtomicU64,
    modules: Mutex<HashMap<&'static str, CUmodule>>,
    functions: Mutex<HashMap<(&'static str, String), Func>>,
}

// SAFETY: the raw stream and module handles are only used with the context bound to the calling
// thread (every entry point binds it), and the driver API is thread-safe.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

/// A kernel function handle, with the byte size of each of its parameters (from the driver), so
/// that every launch is checked against the kernel's signature.
#[derive(Clone, Copy, Debug)]
pub struct Func {
    f: CUfunction,
    name: &'static str,
    params: &'static [usize],
}

// SAFETY: a function handle is an immutable driver object, valid while its module is loaded (for
// the device's life).
unsafe impl Send for Func {}
unsafe impl Sync for Func {}

/// One kernel argument.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Ptr(CUdeviceptr),
    I32(i32),
    I64(i64),
    F32(f32),
}

impl From<&DevBuf> for Arg {
    fn from(b: &DevBuf) -> Arg {
        Arg::Ptr(b.ptr)
    }
}

impl Device {
    /// Opens device `opts.ordinal`: checks that the driver and NVRTC are installed, creates the
    /// context and a stream.
    pub fn new(opts: DeviceOptions) -> Result<Arc<Device>> {
        if !driver_present() {
            return Err(CudaError::MissingLibrary {
                lib: "libcuda.so.1",
                what: "the NVIDIA driver",
                hint: "install the NVIDIA driver (CUDA 13.0 or newer) or run with --device cpu",
            });
        }
        if !crate::nvrtc::available() {
            return Err(CudaError::MissingLibrary {
                lib: "libnvrtc.so.13",
                what: "NVRTC, which compiles kiln's kernels",
                hint: "install the CUDA 13 runtime compiler (e.g. the cuda-nvrtc-13-0 package, or the \
                       nvidia-cuda-nvrtc PyPI wheel's lib folder on LD_LIBRARY_PATH)",
            });
        }
        result::init().map_err(|e| CudaError::NoDevice { ordinal: opts.ordinal, msg: format!("cuInit: {e}") })?;
        let count = result::device::get_count()
            .map_err(|e| CudaError::NoDevice { ordinal: opts.ordinal, msg: e.to_string() })?;
        if opts.ordinal >= count.max(0) as usize {
            return Err(CudaError::NoDevice { ordinal: opts.ordinal, msg: format!("{count} device(s) visible") });
        }
        let ctx = CudaContext::new(opts.ordinal)
            .map_err(|e| CudaError::NoDevice { ordinal: opts.ordinal, msg: e.to_string() })?;
        let (major, minor) = ctx.compute_capability().map_err(|e| CudaError::driver("compute capability", e))?;
        // Hopper's architecture-specific features (wgmma, TMA) need the `a` target.
        let arch = if major == 9 { "sm_90a".to_string() } else { format!("sm_{major}{minor}") };
        let name = ctx.name().map_err(|e| CudaError::driver("device name", e))?;
        let total_mem = ctx.total_mem().map_err(|e| CudaError::driver("total memory", e))? as u64;
        let stream = result::stream::create(result::stream::StreamKind::NonBlocking)
            .map_err(|e| CudaError::driver("stream create", e))?;
        let (free, total) = result::mem_get_info().map_err(|e| CudaError::driver("cuMemGetInfo", e))?;
        let baseline_used = (total - free) as u64;
        let fail = opts.fail_alloc.or_else(|| std::env::var("KILN_CUDA_FAIL_ALLOC").ok().and_then(|v| v.parse().ok()));
        Ok(Arc::new(Device {
            ctx,
            stream,
            arch,
            name,
            total_mem,
            baseline_used,
            cap: opts.cap,
            ledger: Mutex::default(),
            allocs: AtomicU64::new(0),
            fail_alloc: AtomicU64::new(fail.unwrap_or(0)),
            modules: Mutex::default(),
            functions: Mutex::default(),
        }))
    }

    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| CudaError::driver("bind context", e))
    }

    /// The CUDA device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// The device's name, e.g. "NVIDIA H200".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The NVRTC target of this device, e.g. "sm_90a".
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The card's memory in bytes.
    pub fn total_memory(&self) -> u64 {
        self.total_mem
    }

    /// Memory in use on the card when this device was opened (the CUDA context and whatever else
    /// runs there): what kiln's own allocations are measured from.
    pub fn baseline_used(&self) -> u64 {
        self.baseline_used
    }

    /// The cap on what kiln may hold (`--gpu-memory`), if any.
    pub fn cap(&self) -> Option<u64> {
        self.cap
    }

    /// Free and total memory of the card as the driver reports them (`cuMemGetInfo`).
    pub fn mem_info(&self) -> Result<(u64, u64)> {
        self.bind()?;
        let (free, total) = result::mem_get_info().map_err(|e| CudaError::driver("cuMemGetInfo", e))?;
        Ok((free as u64, total as u64))
    }

    /// Bytes kiln may still allocate: under the cap if there is one, and what the card has free.
    pub fn available(&self) -> Result<u64> {
        let (free, _) = self.mem_info()?;
        Ok(match self.cap {
            Some(cap) => cap.saturating_sub(self.used()).min(free),
            None => free,
        })
    }

    /// Fails with [`CudaError::OutOfMemory`] (needed and available bytes) unless `bytes` more fit
    /// now: for a request made of many allocations (a KV cache), checked before the first.
    pub fn check_fits(&self, what: &str, bytes: u64) -> Result<()> {
        let avail = self.available()?;
        if bytes > avail {
            let cap =
                self.cap.map_or(String::new(), |c| format!(" (under --gpu-memory {c} bytes, {} in use)", self.used()));
            return Err(CudaError::OutOfMemory { what: what.to_string(), bytes, free: avail, cap });
        }
        Ok(())
    }

    /// Bytes live in the ledger.
    pub fn used(&self) -> u64 {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// The ledger: live allocations by name, largest first.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        let l = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<LedgerEntry> = l
            .lines
            .iter()
            .filter(|(_, (n, _))| *n > 0)
            .map(|(k, &(buffers, bytes))| LedgerEntry { name: k.clone(), buffers, bytes })
            .collect();
        v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
        v
    }

    /// Allocations made so far (successful or not), for tests that count them.
    pub fn allocations(&self) -> u64 {
        self.allocs.load(Ordering::SeqCst)
    }

    /// Sets (or clears with 0) the fault-injection point: the allocation with this 1-based index,
    /// counted from now, fails as if the card were full.
    pub fn fail_allocation_after(&self, n: u64) {
        let base = self.allocs.load(Ordering::SeqCst);
        self.fail_alloc.store(if n == 0 { 0 } else { base + n }, Ordering::SeqCst);
    }

    fn account(&self, name: &str, bytes: i64) {
        let mut l = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let e = l.lines.entry(name.to_string()).or_insert((0, 0));
        if bytes >= 0 {
            e.0 += 1;
            e.1 += bytes as u64;
            l.total += bytes as u64;
        } else {
            e.0 = e.0.saturating_sub(1);
            e.1 = e.1.saturating_sub(bytes.unsigned_abs());
            l.total = l.total.saturating_sub(bytes.unsigned_abs());
        }
    }

    /// Allocates `bytes` of device memory under the ledger name `what`. Fails with
    /// [`CudaError::OutOfMemory`] (bytes needed and free) when it does not fit under the cap or on
    /// the card, or at the fault-injection point.
    pub fn alloc(self: &Arc<Self>, what: &str, bytes: u64) -> Result<DevBuf> {
        self.bind()?;
        let n = self.allocs.fetch_add(1, Ordering::SeqCst) + 1;
        let oom = |free: u64, cap: String| CudaError::OutOfMemory { what: what.to_string(), bytes, free, cap };
        let cap_note = |c: u64| format!(" (under --gpu-memory {c} bytes, {} in use)", self.used());
        if self.fail_alloc.load(Ordering::SeqCst) == n {
            return Err(oom(0, " (fault injected)".into()));
        }
        if let Some(cap) = self.cap
            && self.used().saturating_add(bytes) > cap
        {
            return Err(oom(cap.saturating_sub(self.used()), cap_note(cap)));
        }
        let size = bytes.max(1) as usize;
        // SAFETY: the context is bound; the pointer is freed once, by `DevBuf::drop`.
        let ptr = match unsafe { result::malloc_sync(size) } {
            Ok(p) => p,
            Err(e) if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                let free = self.mem_info().map(|m| m.0).unwrap_or(0);
                return Err(oom(free, String::new()));
            }
            Err(e) => return Err(CudaError::driver(format!("cuMemAlloc({bytes}) for {what}"), e)),
        };
        self.account(what, bytes as i64);
        Ok(DevBuf { dev: self.clone(), ptr, bytes, name: what.to_string() })
    }

    /// Copies host bytes to `dst + offset`, in stream order. From pageable memory the driver
    /// stages the bytes before returning, so `src` may be reused at once.
    pub fn upload(&self, dst: &DevBuf, offset: u64, src: &[u8]) -> Result<()> {
        if offset + src.len() as u64 > dst.bytes {
            return Err(CudaError::driver(
                "upload",
                format!("{} bytes at {offset} past a {}-byte buffer", src.len(), dst.bytes),
            ));
        }
        self.bind()?;
        // SAFETY: the range is inside the allocation (checked); a pageable source is staged by
        // the driver before this returns.
        unsafe { result::memcpy_htod_async(dst.ptr + offset, src, self.stream) }
            .map_err(|e| CudaError::driver("memcpy host to device", e))
    }

    /// Typed upload of a slice of plain values.
    pub fn upload_slice<T: Copy>(&self, dst: &DevBuf, src: &[T]) -> Result<()> {
        // SAFETY: T is plain data (Copy); viewing it as bytes reads initialized memory.
        let bytes = unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<u8>(), std::mem::size_of_val(src)) };
        self.upload(dst, 0, bytes)
    }

    /// Waits for the stream and copies `dst.len()` values from the start of `src` to the host.
    pub fn download<T: Copy>(&self, src: &DevBuf, dst: &mut [T]) -> Result<()> {
        let bytes = std::mem::size_of_val(dst) as u64;
        if bytes > src.bytes {
            return Err(CudaError::driver("download", format!("{bytes} bytes from a {}-byte buffer", src.bytes)));
        }
        self.bind()?;
        // SAFETY: the range is inside the allocation; the copy completes before return.
        unsafe { result::memcpy_dtoh_async(dst, src.ptr, self.stream) }
            .and_then(|_| unsafe { result::stream::synchronize(self.stream) })
            .map_err(|e| CudaError::driver("memcpy device to host (a kernel before it may have faulted)", e))
    }

    /// Waits until everything queued on the stream has run; reports a kernel fault here.
    pub fn synchronize(&self) -> Result<()> {
        self.bind()?;
        // SAFETY: the stream belongs to this device.
        unsafe { result::stream::synchronize(self.stream) }.map_err(|e| CudaError::driver("stream synchronize", e))
    }

    /// A kernel of `kernels/<file>`: the module is compiled for this device on first use (NVRTC,
    /// cached on disk) and counted in the ledger under "kernel modules".
    pub fn func(self: &Arc<Self>, file: &'static str, name: &str) -> Result<Func> {
        if let Some(f) = self.functions.lock().unwrap_or_else(|p| p.into_inner()).get(&(file, name.to_string())) {
            return Ok(*f);
        }
        let module = self.load(file)?;
        let cname =
            CString::new(name).map_err(|_| CudaError::Launch { kernel: name.into(), msg: "bad name".into() })?;
        // SAFETY: the module stays loaded for the device's life.
        let f = unsafe { result::module::get_function(module, cname) }
            .map_err(|e| CudaError::Launch { kernel: name.into(), msg: format!("not in {file}: {e}") })?;
        // Kernel names and signatures are a fixed, small set: each is kept for the process's life.
        let params: &'static [usize] = Box::leak(param_sizes(f).into_boxed_slice());
        let f = Func { f, name: Box::leak(name.to_string().into_boxed_str()), params };
        self.functions.lock().unwrap_or_else(|p| p.into_inner()).insert((file, name.to_string()), f);
        Ok(f)
    }

    /// Loads `kernels/<file>` (compiling it if the disk cache has no cubin for this device).
    pub fn load(&self, file: &'static str) -> Result<CUmodule> {
        let mut mods = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = mods.get(file) {
            return Ok(*m);
        }
        let image = crate::cache::cached_cubin(file, &self.arch)?;
        self.bind()?;
        let before = result::mem_get_info().map(|m| m.0 as u64).unwrap_or(0);
        // SAFETY: `image` is a cubin NVRTC produced for this device's architecture.
        let m = unsafe { result::module::load_data(image.as_ptr().cast::<c_void>()) }
            .map_err(|e| CudaError::driver(format!("load module {file} for {}", self.arch), e))?;
        let after = result::mem_get_info().map(|m| m.0 as u64).unwrap_or(before);
        // What loading took from the card (cuMemGetInfo moves in pages; at least the image).
        self.account("kernel modules", before.saturating_sub(after).max(image.len() as u64) as i64);
        mods.insert(file, m);
        Ok(m)
    }

    /// Launches `f` on the device's stream and checks that the launch was accepted.
    pub fn launch(&self, f: Func, l: Launch, args: &[Arg]) -> Result<()> {
        if l.grid.0 == 0 || l.grid.1 == 0 || l.grid.2 == 0 {
            return Ok(()); // nothing to do (an empty batch)
        }
        let sizes: Vec<usize> = args
            .iter()
            .map(|a| match a {
                Arg::Ptr(_) | Arg::I64(_) => 8,
                Arg::I32(_) | Arg::F32(_) => 4,
            })
            .collect();
        if sizes != f.params {
            return Err(CudaError::Launch {
                kernel: f.name.into(),
                msg: format!("arguments of {sizes:?} bytes for parameters of {:?} bytes", f.params),
            });
        }
        self.bind()?;
        if trace_launches() {
            eprintln!(
                "KILN_CUDA_TRACE {} grid {:?} block {:?} smem {} args {args:?}",
                f.name, l.grid, l.block, l.shared_bytes
            );
        }
        let mut vals: Vec<Arg> = args.to_vec();
        let mut params: Vec<*mut c_void> = vals
            .iter_mut()
            .map(|a| match a {
                Arg::Ptr(p) => (p as *mut u64).cast::<c_void>(),
                Arg::I32(v) => (v as *mut i32).cast::<c_void>(),
                Arg::I64(v) => (v as *mut i64).cast::<c_void>(),
                Arg::F32(v) => (v as *mut f32).cast::<c_void>(),
            })
            .collect();
        // SAFETY: the function comes from a loaded module; `params` points at live values of the
        // kernel's parameter types (the callers pass them in the kernel's order).
        unsafe { result::launch_kernel(f.f, l.grid, l.block, l.shared_bytes, self.stream, &mut params) }
            .map_err(|e| CudaError::Launch { kernel: f.name.into(), msg: format!("launch {l:?}: {e}") })?;
        if sync_each_launch() {
            self.synchronize().map_err(|e| CudaError::Launch { kernel: f.name.into(), msg: e.to_string() })?;
        }
        Ok(())
    }
}

/// The byte size of each parameter of `f` (`cuFuncGetParamInfo`, CUDA 12.4 and later).
fn param_sizes(f: CUfunction) -> Vec<usize> {
    let mut sizes = Vec::new();
    loop {
        let (mut offset, mut size) = (0usize, 0usize);
        // SAFETY: `f` is a valid function handle; the driver writes two integers.
        let r = unsafe { sys::cuFuncGetParamInfo(f, sizes.len(), &mut offset, &mut size) };
        if r != sys::CUresult::CUDA_SUCCESS {
            return sizes; // past the last parameter
        }
        sizes.push(size);
    }
}

/// `KILN_CUDA_TRACE=1`: print every launch (kernel, geometry, arguments) to stderr.
fn trace_launches() -> bool {
    static S: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *S.get_or_init(|| std::env::var("KILN_CUDA_TRACE").is_ok_and(|v| v == "1"))
}

/// `KILN_CUDA_SYNC=1`: wait after every launch, so a fault is reported at the kernel that made it.
fn sync_each_launch() -> bool {
    static S: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *S.get_or_init(|| std::env::var("KILN_CUDA_SYNC").is_ok_and(|v| v == "1"))
}

impl Drop for Device {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            for (_, m) in self.modules.lock().unwrap_or_else(|p| p.into_inner()).drain() {
                // SAFETY: no buffer or function outlives the device (they hold an Arc to it).
                let _ = unsafe { result::module::unload(m) };
            }
            // SAFETY: the stream was created by this device.
            let _ = unsafe { result::stream::destroy(self.stream) };
        }
    }
}

/// A device allocation, counted in the ledger until dropped.
pub struct DevBuf {
    dev: Arc<Device>,
    ptr: CUdeviceptr,
    bytes: u64,
    name: String,
}

impl DevBuf {
    pub fn ptr(&self) -> CUdeviceptr {
        self.ptr
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The ledger name it is counted under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An argument pointing `offset` bytes into the buffer.
    pub fn at(&self, offset: u64) -> Arg {
        Arg::Ptr(self.ptr + offset)
    }
}

impl std::fmt::Debug for DevBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevBuf({}, {} bytes)", self.name, self.bytes)
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        if self.dev.bind().is_ok() {
            // SAFETY: allocated by `Device::alloc`, freed once here. Freeing synchronizes with
            // work still queued that uses it.
            let _ = unsafe { result::free_sync(self.ptr) };
        }
        self.dev.account(&self.name, -(self.bytes as i64));
    }
}
