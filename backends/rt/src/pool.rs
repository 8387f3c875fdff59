//! A persistent, warm worker pool for the CPU runtime's data-parallel kernels.
//!
//! Entering a general-purpose pool (rayon) costs about 20 µs a call and a fresh thread about
//! 80 µs, while a model step runs many kernels of a few microseconds each. So the pool keeps
//! `threads - 1` workers that spin on a generation counter for a short while after each job
//! (dispatch then costs about a microsecond) and park afterwards, so an idle pool burns no CPU.
//!
//! Threads claim task indices from a shared counter, so a thread that runs slower (a vCPU
//! that the host deschedules, or one sharing its core) takes fewer tasks instead of holding
//! up the run, as long as the caller cut its work into more tasks than threads (the GEMM
//! does for large products; attention has a task per query block). Which thread runs a
//! task does not change what the task computes, so a kernel that writes each output from
//! one task is deterministic. There is no global state: each pool owns its workers.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(50);

/// How long a waiting thread spins before it also yields between checks. On an oversubscribed
/// machine the thread it waits for may need this core; pure spinning would then cost a whole
/// `SPIN` (or a time slice) per handoff.
const YIELD_AFTER: Duration = Duration::from_micros(2);

/// The job type as the workers see it; the caller guarantees the borrow outlives the run.
type Job = *const (dyn Fn(usize) + Sync + 'static);

thread_local! {
    /// True while this thread runs a task of some pool: nested calls then run inline.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// A fixed set of warm worker threads that run `parallel_for` jobs together with the caller.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<Worker>,
    /// Serializes concurrent callers: one run holds the pool at a time.
    run_lock: Mutex<()>,
}

struct Worker {
    handle: Option<JoinHandle<()>>,
    thread: thread::Thread,
}

/// State shared between the caller and the workers.
struct Shared {
    threads: usize,
    /// Bumped by the caller to publish a new job (or the stop request).
    generation: AtomicU64,
    /// The current job and its task count; written only while no worker reads them.
    job: UnsafeCell<(Option<Job>, usize)>,
    /// The next unclaimed task of the current job.
    next: AtomicUsize,
    /// Workers that have not finished the current job.
    pending: AtomicUsize,
    stop: AtomicBool,
    /// One flag per worker: set while it is parked (or about to park).
    sleeping: Vec<AtomicBool>,
    /// The first panic payload of the current run, re-raised on the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `job` is written only by the caller holding `run_lock` while every worker is idle
// (pending == 0), and read by workers only between the generation bump (Release/Acquire)
// and their `pending` decrement; the job itself is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw job pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

impl ThreadPool {
    /// A pool of `threads` threads in total, counting the caller: spawns `threads - 1` workers.
    /// `threads` of 0 is treated as 1.
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            threads,
            generation: AtomicU64::new(0),
            job: UnsafeCell::new((None, 0)),
            next: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            sleeping: (1..threads).map(|_| AtomicBool::new(false)).collect(),
            panic: Mutex::new(None),
        });
        let workers = (1..threads)
            .map(|index| {
                let shared = Arc::clone(&shared);
                let handle = thread::Builder::new()
                    .name(format!("kiln-worker-{index}"))
                    .spawn(move || worker_loop(&shared, index))
                    .expect("failed to spawn a kiln worker thread");
                let thread = handle.thread().clone();
                Worker {
                    handle: Some(handle),
                    thread,
                }
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            run_lock: Mutex::new(()),
        }
    }

    /// The number of threads that run tasks, counting the caller.
    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// Runs `f(i)` for every `i` in `0..tasks`, on the caller and the workers, and returns when
    /// all are done. Each task runs once, on whichever thread claims it first. A panic in a
    /// task is re-raised here once the other threads have finished; the thread that panicked
    /// claims no more tasks. Calls from inside a task run inline.
    pub fn parallel_for(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks <= 1 || self.shared.threads == 1 || IN_TASK.with(Cell::get) {
            (0..tasks).for_each(f);
            return;
        }
        let _guard = self
            .run_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // SAFETY: only the lifetime is erased; `run` waits until no worker uses the pointer.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        self.run(job, tasks, f);
    }

    fn run(&self, job: Job, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let shared = &*self.shared;
        // SAFETY: we hold `run_lock` and the previous run ended with pending == 0, so no
        // worker reads `job` now.
        unsafe { *shared.job.get() = (Some(job), tasks) };
        // Published to the workers by the SeqCst generation bump below.
        shared.next.store(0, Ordering::Relaxed);
        shared.pending.store(shared.threads - 1, Ordering::Relaxed);
        shared.generation.fetch_add(1, Ordering::SeqCst);
        self.wake_sleepers();
        let own = run_tasks(f, &shared.next, tasks);
        wait_until_done(&shared.pending);
        // SAFETY: every worker has finished, so nobody reads `job` any more.
        unsafe { *shared.job.get() = (None, 0) };
        let worker_panic = shared
            .panic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(payload) = own.err().or(worker_panic) {
            panic::resume_unwind(payload);
        }
    }

    fn wake_sleepers(&self) {
        for (worker, sleeping) in self.workers.iter().zip(&self.shared.sleeping) {
            if sleeping.load(Ordering::SeqCst) {
                worker.thread.unpark();
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        for worker in &self.workers {
            worker.thread.unpark();
        }
        for worker in &mut self.workers {
            if let Some(handle) = worker.handle.take() {
                // A worker never panics (tasks run under catch_unwind), so ignore the result.
                let _ = handle.join();
            }
        }
    }
}

/// Claims and runs tasks until none are left, catching a panic so the run can finish.
fn run_tasks(
    f: &(dyn Fn(usize) + Sync),
    next: &AtomicUsize,
    tasks: usize,
) -> Result<(), Box<dyn Any + Send>> {
    IN_TASK.with(|t| t.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| loop {
        // Relaxed: the claim only has to be unique; the job's data was published by the
        // generation bump, and results are published by `pending`.
        let task = next.fetch_add(1, Ordering::Relaxed);
        if task >= tasks {
            break;
        }
        f(task);
    }));
    IN_TASK.with(|t| t.set(false));
    result
}

/// The caller's wait for the workers: spins briefly, then yields between checks.
fn wait_until_done(pending: &AtomicUsize) {
    let start = Instant::now();
    while pending.load(Ordering::Acquire) != 0 {
        for _ in 0..16 {
            std::hint::spin_loop();
        }
        if start.elapsed() > YIELD_AFTER {
            thread::yield_now();
        }
    }
}

fn worker_loop(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        seen = wait_for_generation(shared, index, seen);
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: the caller published the job before bumping the generation, and keeps it
        // alive until `pending` reaches zero, which needs our decrement below.
        let (job, tasks) = unsafe { *shared.job.get() };
        if let Some(job) = job {
            // SAFETY: see above; the pointer is valid for the whole run.
            let f = unsafe { &*job };
            if let Err(payload) = run_tasks(f, &shared.next, tasks) {
                let mut slot = shared.panic.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(payload);
            }
        }
        shared.pending.fetch_sub(1, Ordering::Release);
    }
}

/// Spins, then parks, until the generation moves past `seen`; returns the new generation.
fn wait_for_generation(shared: &Shared, index: usize, seen: u64) -> u64 {
    let start = Instant::now();
    loop {
        for _ in 0..16 {
            let now = shared.generation.load(Ordering::Acquire);
            if now != seen {
                return now;
            }
            std::hint::spin_loop();
        }
        let waited = start.elapsed();
        if waited > SPIN {
            break;
        }
        if waited > YIELD_AFTER {
            thread::yield_now();
        }
    }
    let sleeping = &shared.sleeping[index - 1];
    loop {
        // Dekker-style handshake with `wake_sleepers`: both sides store, then load, SeqCst.
        sleeping.store(true, Ordering::SeqCst);
        let now = shared.generation.load(Ordering::SeqCst);
        if now != seen {
            sleeping.store(false, Ordering::Relaxed);
            return now;
        }
        thread::park();
        sleeping.store(false, Ordering::Relaxed);
        let now = shared.generation.load(Ordering::Acquire);
        if now != seen {
            return now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn counts_once(pool: &ThreadPool, tasks: usize) {
        let hits: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
        pool.parallel_for(tasks, &|i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn every_index_runs_exactly_once() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads);
            assert_eq!(pool.threads(), threads);
            for tasks in [0, 1, 2, 3, 7, 64, 1000] {
                for _ in 0..20 {
                    counts_once(&pool, tasks);
                }
            }
        }
    }

    #[test]
    fn a_slow_thread_claims_fewer_tasks() {
        let pool = ThreadPool::new(2);
        let ran_by: Vec<Mutex<Option<thread::ThreadId>>> =
            (0..64).map(|_| Mutex::new(None)).collect();
        pool.parallel_for(64, &|i| {
            if i == 0 {
                // The thread holding task 0 stalls, as a descheduled vCPU would.
                thread::sleep(Duration::from_millis(50));
            }
            *ran_by[i].lock().unwrap() = Some(thread::current().id());
        });
        let stalled = ran_by[0].lock().unwrap().expect("task 0 ran");
        let by_stalled = ran_by
            .iter()
            .filter(|t| *t.lock().unwrap() == Some(stalled))
            .count();
        // A static split would give it 32; claiming leaves it little beyond the stalled task.
        assert!(
            by_stalled < 32,
            "the stalled thread ran {by_stalled} of 64 tasks"
        );
    }

    #[test]
    fn wakes_parked_workers() {
        let pool = ThreadPool::new(3);
        counts_once(&pool, 10);
        thread::sleep(Duration::from_millis(5));
        counts_once(&pool, 10);
    }

    #[test]
    fn nested_call_runs_inline() {
        let pool = ThreadPool::new(2);
        let total = AtomicUsize::new(0);
        pool.parallel_for(4, &|_| {
            pool.parallel_for(5, &|j| {
                total.fetch_add(j + 1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 15);
    }

    #[test]
    fn concurrent_callers_are_serialized() {
        let pool = ThreadPool::new(2);
        thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        counts_once(&pool, 9);
                    }
                });
            }
        });
    }

    #[test]
    fn panic_in_task_reaches_caller_and_pool_survives() {
        let pool = ThreadPool::new(2);
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.parallel_for(4, &|i| {
                if i == 1 {
                    panic!("task {i} failed");
                }
            });
        }));
        let payload = result.expect_err("the worker's panic is re-raised");
        assert_eq!(
            payload.downcast_ref::<String>().map(String::as_str),
            Some("task 1 failed")
        );
        counts_once(&pool, 16);
    }

    #[test]
    fn drop_joins_idle_and_parked_workers() {
        let pool = ThreadPool::new(4);
        counts_once(&pool, 8);
        drop(pool);
        let pool = ThreadPool::new(2);
        counts_once(&pool, 8);
        thread::sleep(Duration::from_millis(2));
        drop(pool);
    }

    #[test]
    fn pool_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ThreadPool>();
    }
}
