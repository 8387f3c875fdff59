//! Placeholder serial pool (replaced by the persistent worker pool).

/// Runs tasks on the calling thread.
pub struct ThreadPool {
    threads: usize,
}

impl ThreadPool {
    /// A pool of `threads` (runs serially for now).
    pub fn new(threads: usize) -> ThreadPool {
        ThreadPool {
            threads: threads.max(1),
        }
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(0..tasks)`.
    pub fn parallel_for(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        (0..tasks).for_each(f)
    }
}
