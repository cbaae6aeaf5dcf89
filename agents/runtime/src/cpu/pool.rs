//! A fixed team of threads that run one function together, for the
//! parallel steps of a forward pass (matrix products, attention).
//!
//! A token of a 135M-parameter model takes about ten milliseconds and
//! some 150 parallel steps, so handing out a step must cost a microsecond
//! or two, not the tens of microseconds a sleeping thread takes to wake.
//! Workers therefore spin for a short while after each step (the caller's
//! small sequential ops in between take microseconds) and then sleep on a
//! condition variable, so that between tokens and between requests they
//! leave the cores to other processes. General pools (rayon) make each
//! step cost a wake-up once their workers have gone to sleep, which is why
//! this one exists.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker spins for the next step before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped once per step; a worker runs the job when it sees a new value.
    epoch: AtomicUsize,
    /// Workers still running the current step.
    pending: AtomicUsize,
    /// Workers asleep (or about to be) on `wake`.
    sleepers: AtomicUsize,
    stop: AtomicBool,
    panicked: AtomicBool,
    job: UnsafeCell<Option<Job>>,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the caller of `Pool::run` while no
// worker reads it (before the epoch is bumped, after `pending` reaches 0),
// and the job it points to is `Sync`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// `threads` threads in all: the caller of [`Pool::run`] and `threads - 1` workers.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("threads", &self.threads).finish()
    }
}

impl Pool {
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(None),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads)
            .map(|index| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("infer-{index}"))
                    .spawn(move || worker(&shared, index))
                    .expect("cannot start an inference thread")
            })
            .collect();
        Pool {
            shared,
            workers,
            threads,
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on each thread's share of `0..n`: contiguous ranges in
    /// thread order, none empty. Fewer than two items run on the caller
    /// alone (handing out a step would cost more than it saves).
    pub fn split(&self, n: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
        if n < 2 || self.threads == 1 {
            f(0..n);
            return;
        }
        let per = n.div_ceil(self.threads);
        self.run(&|t| {
            let (lo, hi) = ((t * per).min(n), ((t + 1) * per).min(n));
            if lo < hi {
                f(lo..hi);
            }
        });
    }

    /// Runs `f(i)` once on each thread `i` in `0..threads` (0 is the
    /// caller) and returns when all are done. A panic in a worker is
    /// raised here.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 {
            f(0);
            return;
        }
        let s = &*self.shared;
        // SAFETY: the lifetime is erased only for the duration of this
        // call: it returns after every worker has finished with `f`.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        // SAFETY: no worker reads `job` until the epoch changes below.
        unsafe { *s.job.get() = Some(job) };
        s.pending.store(self.threads - 1, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
        while s.pending.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        // SAFETY: every worker is done with the job.
        unsafe { *s.job.get() = None };
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("an inference thread panicked");
        }
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let epoch = s.epoch.load(Ordering::Acquire);
            if epoch != seen {
                seen = epoch;
                break;
            }
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let guard = s.lock.lock().unwrap_or_else(|p| p.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            let guard = s
                .wake
                .wait_while(guard, |_| {
                    s.epoch.load(Ordering::SeqCst) == seen && !s.stop.load(Ordering::SeqCst)
                })
                .unwrap_or_else(|p| p.into_inner());
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            drop(guard);
        }
        // SAFETY: the caller set the job before bumping the epoch and keeps
        // it alive until `pending` reaches 0.
        let job = unsafe { (*s.job.get()).expect("a job is set for each epoch") };
        // SAFETY: see above; the pointee outlives this call.
        let f = unsafe { &*job };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(index))).is_err() {
            s.panicked.store(true, Ordering::SeqCst);
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Items `0..n` shared out among a pool's threads inside one
/// [`Pool::run`]: each thread takes the items of its own contiguous share
/// one at a time, then helps with the shares of the others.
///
/// Each share has its own counter on its own cache line, so taking an item
/// costs an atomic add that stays in the taker's cache; one counter for
/// all threads cost a cross-core transfer per item (about a tenth of a
/// microsecond here, some thousands of times per token). A thread slowed
/// by another process still does not hold the step up: the others finish
/// its share.
#[derive(Debug)]
pub struct Shares {
    n: usize,
    next: Vec<Counter>,
}

/// A counter alone on its cache lines (two, for the adjacent-line prefetcher).
#[derive(Debug)]
#[repr(align(128))]
struct Counter(AtomicUsize);

impl Shares {
    /// `n` items in `threads` shares.
    pub fn new(n: usize, threads: usize) -> Shares {
        let threads = threads.max(1);
        Shares {
            n,
            next: (0..threads)
                .map(|t| Counter(AtomicUsize::new(t * n / threads)))
                .collect(),
        }
    }

    /// The items thread `t` takes: its own share's first, then the others'
    /// (each item goes to exactly one taker).
    pub fn take(&self, t: usize) -> impl Iterator<Item = usize> + '_ {
        let shares = self.next.len();
        (0..shares).flat_map(move |k| {
            let owner = (t + k) % shares;
            let end = (owner + 1) * self.n / shares;
            std::iter::from_fn(move || {
                let i = self.next[owner].0.fetch_add(1, Ordering::Relaxed);
                (i < end).then_some(i)
            })
        })
    }
}

/// A pointer that threads may share to write disjoint parts of one buffer.
#[derive(Debug, Clone, Copy)]
pub struct SharedMut<T>(*mut T, usize);

// SAFETY: users write disjoint indices only (checked by the `write` bound).
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    pub fn new(slice: &mut [T]) -> SharedMut<T> {
        SharedMut(slice.as_mut_ptr(), slice.len())
    }

    /// Writes `value` at `index`.
    ///
    /// # Safety
    /// No other thread may access `index` during the parallel step, and
    /// the slice must outlive the step.
    pub unsafe fn write(&self, index: usize, value: T) {
        assert!(index < self.1, "index {index} out of {}", self.1);
        // SAFETY: in bounds (checked); exclusive by the caller's promise.
        unsafe { self.0.add(index).write(value) }
    }

    /// The sub-slice `[start, end)`, mutable.
    ///
    /// # Safety
    /// No other thread may access that range during the parallel step,
    /// and the slice must outlive the step.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, end: usize) -> &mut [T] {
        assert!(
            start <= end && end <= self.1,
            "range {start}..{end} out of {}",
            self.1
        );
        // SAFETY: in bounds (checked); exclusive by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), end - start) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_hand_out_every_item_once() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            for n in [0, 1, 2, 5, 64, 1000] {
                let taken: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                let shares = Shares::new(n, threads);
                pool.run(&|t| {
                    for i in shares.take(t) {
                        taken[i].fetch_add(1, Ordering::SeqCst);
                    }
                });
                assert!(
                    taken.iter().all(|c| c.load(Ordering::SeqCst) == 1),
                    "{n} items on {threads} threads"
                );
            }
        }
        // A thread that takes nothing leaves its share to the others.
        let shares = Shares::new(10, 2);
        let all: Vec<usize> = shares.take(1).collect();
        assert_eq!(all, [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]);
    }

    #[test]
    fn every_thread_runs_each_step_once_and_steps_do_not_overlap() {
        let pool = Pool::new(3);
        let counts: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        for step in 0..1000 {
            pool.run(&|i| {
                // Each thread sees its own count at `step` before adding.
                assert_eq!(counts[i].load(Ordering::SeqCst), step);
                counts[i].fetch_add(1, Ordering::SeqCst);
            });
        }
        // Long enough for the workers to fall asleep, then wake them.
        std::thread::sleep(Duration::from_millis(5));
        pool.run(&|i| {
            counts[i].fetch_add(1, Ordering::SeqCst);
        });
        for c in &counts {
            assert_eq!(c.load(Ordering::SeqCst), 1001);
        }
    }

    #[test]
    fn split_covers_every_item_once_in_contiguous_ranges() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            for n in [0, 1, 2, 3, 7, 64] {
                let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                let ranges = Mutex::new(Vec::new());
                pool.split(n, &|r| {
                    assert!(!r.is_empty() || n == 0, "an empty share of {n}");
                    for i in r.clone() {
                        seen[i].fetch_add(1, Ordering::Relaxed);
                    }
                    ranges.lock().unwrap().push(r);
                });
                assert!(
                    seen.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                    "{threads} threads, {n} items"
                );
                assert!(ranges.lock().unwrap().len() <= threads.max(1));
            }
        }
    }

    #[test]
    fn a_panicking_worker_is_reported_and_the_pool_keeps_working() {
        let pool = Pool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(&|i| assert_ne!(i, 1, "worker fails"));
        }));
        assert!(r.is_err());
        let hits = AtomicUsize::new(0);
        pool.run(&|_| {
            hits.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }
}
