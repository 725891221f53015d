//! A fixed pool of threads, one per core, serving RSA private-key operations in
//! arrival order. Running dozens of such operations at once on a few cores only
//! time-slices them, so every request finishes late; a FIFO queue in front of one
//! thread per core gives the same throughput with a much shorter latency tail.
//!
//! Idle workers wait on one condition variable and a job wakes one of them. (A
//! channel whose receiver the workers share behind a mutex woke two threads per
//! job when the pool was idle: the one that took the job, and the next one in line
//! for the mutex, only for it to block on the queue again.)

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The queue the workers take jobs from, oldest first.
struct Queue {
    state: Mutex<QueueState>,
    job_or_closed: Condvar,
}

struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The oldest job, waiting for one; `None` once the pool is closed and drained.
    fn next(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state = self
                .job_or_closed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The pool. Dropping it lets the threads finish queued work and exit.
pub struct WorkerPool {
    queue: Arc<Queue>,
}

impl WorkerPool {
    /// Starts `threads` workers (at least one).
    pub fn new(threads: usize) -> Self {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                closed: false,
            }),
            job_or_closed: Condvar::new(),
        });
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("crypto-{i}"))
                .spawn(move || {
                    while let Some(job) = queue.next() {
                        // A panicking job must not take the worker with it.
                        drop(catch_unwind(AssertUnwindSafe(job)));
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start crypto worker {i}: {e}");
            }
        }
        Self { queue }
    }

    /// A pool with one worker per available core.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Queues `f` at once and returns its result when a worker has run it; `None`
    /// if it panicked.
    pub fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> impl std::future::Future<Output = Option<R>> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(f());
        });
        self.queue.lock().jobs.push_back(job);
        self.queue.job_or_closed.notify_one();
        async move { result.await.ok() }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.job_or_closed.notify_all();
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

    #[tokio::test]
    async fn jobs_start_in_arrival_order() {
        let pool = WorkerPool::new(1);
        let (release, gate) = std::sync::mpsc::channel::<()>();
        // The only worker waits on the gate while the others queue behind it.
        let blocked = pool.run(move || gate.recv().is_ok());
        let order = Arc::new(Mutex::new(Vec::new()));
        let queued: Vec<_> = (0..5)
            .map(|i| {
                let order = order.clone();
                pool.run(move || order.lock().unwrap().push(i))
            })
            .collect();
        release.send(()).unwrap();
        assert_eq!(blocked.await, Some(true));
        for job in queued.into_iter().rev() {
            assert_eq!(job.await, Some(()));
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }
}
