//! The workspace: device buffers reused across steps. A buffer goes back to the pool when its
//! activation is dropped, and a step of the same shape takes the same buffers again, so after the
//! first step of a shape a forward pass allocates nothing. Sizes are rounded up (to 1/8 of a power
//! of two) so that prefill chunks of varying length share buffers; when an allocation does not fit,
//! the idle buffers are returned to the device and it is tried once more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiln_cuda::{Arg, CudaError, DevBuf, Device};

use crate::{ModelError, Result};

pub(super) struct ActPool {
    dev: Arc<Device>,
    idle: Mutex<HashMap<u64, Vec<DevBuf>>>,
}

/// A buffer of the pool, returned to it on drop.
pub(super) struct Pooled {
    buf: Option<DevBuf>,
    pool: Arc<ActPool>,
}

impl Pooled {
    pub fn buf(&self) -> &DevBuf {
        self.buf.as_ref().expect("present until drop")
    }

    pub fn arg(&self) -> Arg {
        Arg::from(self.buf())
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).entry(b.bytes()).or_default().push(b);
        }
    }
}

/// `bytes` rounded up to a multiple of 1/8 of its power of two (at least 256).
fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256);
    let step = (b.next_power_of_two() / 8).max(256);
    b.div_ceil(step) * step
}

impl ActPool {
    pub fn new(dev: Arc<Device>) -> ActPool {
        ActPool { dev, idle: Mutex::default() }
    }

    /// A buffer of at least `bytes`, counted under `what` when it has to be allocated.
    pub fn take(self: &Arc<Self>, what: &str, bytes: u64) -> Result<Pooled> {
        let class = size_class(bytes);
        if let Some(b) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&class).and_then(Vec::pop) {
            return Ok(Pooled { buf: Some(b), pool: self.clone() });
        }
        let buf = match self.dev.alloc(what, class) {
            Err(CudaError::OutOfMemory { .. }) if self.has_idle() => {
                self.trim();
                self.dev.alloc(what, class)
            }
            r => r,
        }
        .map_err(ModelError::Cuda)?;
        Ok(Pooled { buf: Some(buf), pool: self.clone() })
    }

    fn has_idle(&self) -> bool {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).values().any(|v| !v.is_empty())
    }

    /// Frees every idle buffer.
    pub fn trim(&self) {
        let drained: Vec<DevBuf> =
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).drain().flat_map(|(_, v)| v).collect();
        drop(drained);
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_round_up_within_an_eighth() {
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(1000), 1024);
        assert_eq!(size_class(4097), 4096 + 1024);
        for b in [300u64, 5000, 123_456, 7_777_777, 1 << 30] {
            let c = size_class(b);
            assert!(c >= b && c - b <= c / 8 + 256, "{b} -> {c}");
        }
    }
}
