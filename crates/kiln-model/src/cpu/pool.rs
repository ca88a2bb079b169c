//! A small thread pool for the forward pass, tuned for latency.
//!
//! A decode step runs a few hundred short parallel loops (one per matrix product). rayon parks its
//! idle workers, and waking them costs tens of microseconds each time — more than a small matrix
//! product takes. This pool's workers spin on an epoch counter while work keeps coming and only
//! park after a quiet spell, as ggml's CPU thread pool does. The calling thread takes tasks too.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_millis(2);

/// One parallel loop: tasks `0..n` handed out one at a time.
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    done: AtomicUsize,
}

struct Shared {
    epoch: AtomicU64,
    job: AtomicPtr<Job>,
    /// Workers currently holding a job pointer.
    active: AtomicUsize,
    stop: std::sync::atomic::AtomicBool,
    park: Mutex<()>,
    wake: Condvar,
}

/// The pool. Dropping it stops the workers.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

// SAFETY: the job's closure is `Sync` and only called while `Pool::run` keeps it alive (see run).
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Pool {
    /// A pool of `threads` threads in all: the caller plus `threads - 1` workers.
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            active: AtomicUsize::new(0),
            stop: std::sync::atomic::AtomicBool::new(false),
            park: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads)
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("kiln-cpu-{i}"))
                    .spawn(move || worker(&s))
                    .expect("spawn CPU worker thread")
            })
            .collect();
        Pool { shared, workers, threads }
    }

    /// Threads that take part in a loop.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(0) … f(n-1)` across the pool and returns when all have finished.
    pub fn run<F: Fn(usize) + Sync>(&self, n: usize, f: F) {
        if n == 0 {
            return;
        }
        if n == 1 || self.threads == 1 {
            (0..n).for_each(f);
            return;
        }
        let f: &(dyn Fn(usize) + Sync) = &f;
        // SAFETY (lifetime erasure): the pointer is published below and withdrawn before this
        // function returns; `active` tells when no worker can still reach it.
        let f: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        let job = Job { f, n, next: AtomicUsize::new(0), done: AtomicUsize::new(0) };
        let s = &*self.shared;
        s.job.store(&job as *const Job as *mut Job, SeqCst);
        s.epoch.fetch_add(1, SeqCst);
        {
            let _g = s.park.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        run_tasks(&job);
        while job.done.load(SeqCst) < n {
            std::hint::spin_loop();
        }
        s.job.store(std::ptr::null_mut(), SeqCst);
        while s.active.load(SeqCst) != 0 {
            std::hint::spin_loop();
        }
    }
}

fn run_tasks(job: &Job) {
    loop {
        let i = job.next.fetch_add(1, SeqCst);
        if i >= job.n {
            return;
        }
        // SAFETY: the closure outlives the job (Pool::run waits for `done` and `active`).
        unsafe { (*job.f)(i) };
        job.done.fetch_add(1, SeqCst);
    }
}

fn worker(s: &Shared) {
    let mut seen = s.epoch.load(SeqCst);
    let mut idle_since = Instant::now();
    loop {
        if s.stop.load(SeqCst) {
            return;
        }
        let e = s.epoch.load(SeqCst);
        if e != seen {
            seen = e;
            s.active.fetch_add(1, SeqCst);
            let p = s.job.load(SeqCst);
            if !p.is_null() {
                // SAFETY: `active` > 0 keeps Pool::run from returning (and the job from being
                // dropped) until we are done with it; a null check after the increment rules out a
                // job that was already withdrawn.
                run_tasks(unsafe { &*p });
            }
            s.active.fetch_sub(1, SeqCst);
            idle_since = Instant::now();
            continue;
        }
        if idle_since.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        let g = s.park.lock().unwrap_or_else(|e| e.into_inner());
        if s.epoch.load(SeqCst) == seen && !s.stop.load(SeqCst) {
            let _ = s.wake.wait_timeout(g, Duration::from_millis(100));
        }
        idle_since = Instant::now();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        {
            let _g = self.shared.park.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A raw pointer that tasks of one `Pool::run` share to write disjoint parts of a slice.
pub(crate) struct SyncPtr<T>(pub *mut T);
impl<T> Clone for SyncPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SyncPtr<T> {}
// SAFETY: only used to write disjoint elements from different tasks of one loop.
unsafe impl<T: Send> Send for SyncPtr<T> {}
unsafe impl<T: Send> Sync for SyncPtr<T> {}

impl Pool {
    /// Runs `f(index, chunk)` over the `chunk`-long pieces of `data` in parallel.
    pub fn chunks_mut<T: Send, F: Fn(usize, &mut [T]) + Sync>(&self, data: &mut [T], chunk: usize, f: F) {
        let chunk = chunk.max(1);
        let len = data.len();
        let n = len.div_ceil(chunk);
        let p = SyncPtr(data.as_mut_ptr());
        self.run(n, move |i| {
            let p = p;
            let start = i * chunk;
            let end = (start + chunk).min(len);
            // SAFETY: chunks [start, end) are disjoint for distinct i and inside `data`, which the
            // caller borrows mutably for the whole loop.
            let s = unsafe { std::slice::from_raw_parts_mut(p.0.add(start), end - start) };
            f(i, s);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_exactly_once() {
        let pool = Pool::new(4);
        for n in [0, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.run(n, |i| {
                hits[i].fetch_add(1, SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "n = {n}");
        }
    }

    #[test]
    fn many_short_loops_and_a_parked_pool() {
        let pool = Pool::new(3);
        let total = AtomicUsize::new(0);
        for round in 0..2000 {
            pool.run(5, |i| {
                total.fetch_add(i + round, SeqCst);
            });
        }
        let expected: usize = (0..2000).map(|r| (0..5).map(|i| i + r).sum::<usize>()).sum();
        assert_eq!(total.load(SeqCst), expected);
        std::thread::sleep(SPIN * 3);
        let after = AtomicUsize::new(0);
        pool.run(64, |_| {
            after.fetch_add(1, SeqCst);
        });
        assert_eq!(after.load(SeqCst), 64);
    }
}
