//! Threads for a session's CPU-bound steps (verifying a phone's signatures, checking its key
//! and signing its LSC), one per core, off the async workers.
//!
//! Why not tokio's blocking pool: it grows a thread per waiting job, up to 512. When
//! thousands of phones held in the key-generation wait answer at once (a rollout's
//! thundering herd), hundreds of threads then sign side by side on two cores: each signature
//! takes as long as all of them together, and every thread holds its stack and buffers. Here
//! the jobs queue instead and run a core's worth at a time, oldest first (10,000 held RSA
//! sessions released at once: 3,700-3,900 enrollments/s instead of 3,100, and 55 MiB less
//! peak memory; BENCHMARKS.md).

use crossbeam_channel::{Receiver, Sender};

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug)]
pub struct CryptoPool {
    /// `None` when no thread could be started: jobs then go to tokio's blocking pool.
    jobs: Option<Sender<Job>>,
}

impl CryptoPool {
    /// A pool of `threads` threads (at least one). The threads end once the pool is dropped
    /// and the queued jobs have run.
    pub fn start(threads: usize) -> CryptoPool {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        let started = (0..threads.max(1))
            .filter(|i| {
                let queue: Receiver<Job> = queue.clone();
                std::thread::Builder::new()
                    .name(format!("capf-crypto{i}"))
                    .spawn(move || queue.into_iter().for_each(|job| job()))
                    .is_ok()
            })
            .count();
        if started == 0 {
            tracing::warn!("no crypto thread could be started; using tokio's blocking pool");
        }
        CryptoPool {
            jobs: (started > 0).then_some(jobs),
        }
    }

    /// One thread per core the process may use.
    pub fn per_core() -> CryptoPool {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        CryptoPool::start(cores)
    }

    /// Runs `f` on the pool. `None` when it panicked (the thread carries on).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let Some(jobs) = &self.jobs else {
            return tokio::task::spawn_blocking(f).await.ok();
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A panic must not take the thread down with it; the caller sees `None`.
            if let Ok(value) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                let _ = tx.send(value);
            }
        });
        jobs.send(job).ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn runs_jobs_off_the_caller_and_survives_a_panic() {
        let pool = CryptoPool::start(1);
        let caller = std::thread::current().id();
        let ran_on = pool.run(|| std::thread::current().id()).await.unwrap();
        assert_ne!(ran_on, caller);
        assert_eq!(pool.run(|| -> u32 { panic!("boom") }).await, None);
        // The one thread is still there.
        assert_eq!(pool.run(|| 7).await, Some(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn runs_at_most_its_size_at_once() {
        let pool = Arc::new(CryptoPool::start(2));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
            tasks.spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            assert_eq!(done.unwrap(), Some(()));
        }
        let most = most.load(Ordering::SeqCst);
        assert!(
            (1..=2).contains(&most),
            "{most} jobs ran at once on a pool of 2"
        );
    }
}
