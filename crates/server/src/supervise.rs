//! Background tasks that must not die quietly. The sweeper, the claim heartbeat, the flood
//! gate's housekeeping and the SIGHUP reloader each run for the life of the service; a panic
//! in one of them used to end that task alone, unnoticed, while the server went on without
//! deadlines being marked or claims renewed. Each now runs under [`supervise`]: a panic is
//! logged at error level and the task is started again after a pause, until shutdown.

use std::any::Any;
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Pause before a task that panicked is started again, so a task that panics at once does
/// not spin.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Runs the task `make()` builds until it returns or `shutdown` is cancelled; a panic is
/// logged with the task's `name` and the task is built and started again after
/// [`RESTART_DELAY`]. The handle ends when the task has returned (it should return once
/// `shutdown` is cancelled) or when shutdown comes during a restart pause.
pub fn supervise<F, Fut>(name: &'static str, shutdown: CancellationToken, make: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match tokio::spawn(make()).await {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    let message = panic_message(e.into_panic());
                    error!(task = name, panic = %message, "background task panicked; restarting it");
                }
                // Cancelled: the runtime is shutting down.
                Err(_) => return,
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RESTART_DELAY) => {}
            }
            info!(task = name, "background task restarted");
        }
    })
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(not a text)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_task_that_panics_is_restarted_after_the_pause() {
        let runs = Arc::new(AtomicU32::new(0));
        let shutdown = CancellationToken::new();
        let counted = Arc::clone(&runs);
        let stop = shutdown.clone();
        let handle = supervise("test", shutdown.clone(), move || {
            let runs = Arc::clone(&counted);
            let stop = stop.clone();
            async move {
                // The first two runs panic; the third waits for shutdown like a real task.
                if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
                stop.cancelled().await;
            }
        });
        tokio::time::sleep(RESTART_DELAY / 2).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "restarted before the pause");
        tokio::time::sleep(RESTART_DELAY * 2).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(!handle.is_finished());
        shutdown.cancel();
        handle.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_the_pause_stops_the_restarts() {
        let runs = Arc::new(AtomicU32::new(0));
        let shutdown = CancellationToken::new();
        let counted = Arc::clone(&runs);
        let handle = supervise("test", shutdown.clone(), move || {
            let runs = Arc::clone(&counted);
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                panic!("always");
            }
        });
        tokio::task::yield_now().await;
        shutdown.cancel();
        handle.await.unwrap();
        tokio::time::sleep(RESTART_DELAY * 3).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn panic_messages_are_read() {
        assert_eq!(panic_message(Box::new("a")), "a");
        assert_eq!(panic_message(Box::new(String::from("b"))), "b");
        assert_eq!(panic_message(Box::new(3)), "(not a text)");
    }
}
