//! A fixed pool of threads, one per core, serving RSA private-key operations in
//! arrival order. Running dozens of such operations at once on a few cores only
//! time-slices them, so every request finishes late; a FIFO queue in front of one
//! thread per core gives the same throughput with a much shorter latency tail.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The pool. Dropping it lets the threads finish queued work and exit.
pub struct WorkerPool {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl WorkerPool {
    /// Starts `threads` workers (at least one).
    pub fn new(threads: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("crypto-{i}"))
                .spawn(move || loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match next {
                        // A panicking job must not take the worker with it.
                        Ok(job) => drop(catch_unwind(AssertUnwindSafe(job))),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start crypto worker {i}: {e}");
            }
        }
        Self {
            jobs: Mutex::new(jobs),
        }
    }

    /// A pool with one worker per available core.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Runs `f` on a worker and waits for its result; `None` if it panicked.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(f());
        });
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .ok()?;
        result.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_survives_a_panicking_one() {
        let pool = WorkerPool::new(1);
        assert_eq!(pool.run(|| 2 + 2).await, Some(4));
        assert_eq!(pool.run(|| -> u8 { panic!("boom") }).await, None);
        assert_eq!(pool.run(|| "still here").await, Some("still here"));
    }
}
