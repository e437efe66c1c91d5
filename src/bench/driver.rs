//! The measured phase: starts the phones' sessions, at most `concurrency` at a time, either
//! as fast as slots free up (closed loop: the figure is the server's capacity) or on an
//! open-loop schedule of `rate` per second (the figure is the latency at that rate).
//!
//! In open loop a session that could not start on time (every slot busy) starts late; that
//! lateness is reported as `start_lag`, because the latency of a session that waited for a
//! slot would otherwise hide the server's overload (coordinated omission).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use indicatif::ProgressBar;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::outcome::{Failure, Outcome};
use super::phones::Phones;
use super::stats::{PhaseReport, Recorder};

#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    pub concurrency: usize,
    /// Sessions started per second; `None`: closed loop.
    pub rate: Option<f64>,
}

/// A poisoned lock only means another session's task panicked while recording; the
/// figures recorded so far are still good.
pub(super) fn lock(recorder: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    recorder
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs one session per name; returns the phase's figures.
pub(super) async fn run(
    phones: &Arc<Phones>,
    names: Vec<String>,
    pace: Pace,
    progress: &ProgressBar,
) -> PhaseReport {
    let slots = Arc::new(Semaphore::new(pace.concurrency.max(1)));
    let recorder = Arc::new(Mutex::new(Recorder::default()));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for (i, name) in names.into_iter().enumerate() {
        let due = pace
            .rate
            .map(|rate| started + Duration::from_secs_f64(i as f64 / rate));
        if let Some(due) = due {
            tokio::time::sleep_until(due).await;
        }
        // The semaphore is never closed, so this only waits for a free slot.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let lag = due.map(|due| Instant::now().saturating_duration_since(due));
        // Finished tasks are collected as we go, so the set stays as small as the
        // concurrency.
        while let Some(done) = tasks.try_join_next() {
            record_panic(done, &recorder, progress);
        }
        let phones = Arc::clone(phones);
        let recorder = Arc::clone(&recorder);
        let progress = progress.clone();
        tasks.spawn(async move {
            let outcome = phones.session(&name, phones.pool().as_ref(), true).await;
            drop(slot);
            let enrolled = outcome.is_enrolled();
            let mut recorder = lock(&recorder);
            recorder.record(outcome, lag);
            if !enrolled {
                progress.set_message(format!("{} failed", recorder.failed()));
            }
            progress.inc(1);
        });
    }
    while let Some(done) = tasks.join_next().await {
        record_panic(done, &recorder, progress);
    }
    let wall = started.elapsed();
    let recorder = std::mem::take(&mut *lock(&recorder));
    recorder.phase(wall)
}

/// A session task that panicked recorded nothing: count it, so it cannot vanish.
fn record_panic(
    done: Result<(), tokio::task::JoinError>,
    recorder: &Mutex<Recorder>,
    progress: &ProgressBar,
) {
    if let Err(e) = done {
        lock(recorder).record(Outcome::failed(Failure::Internal, e.to_string()), None);
        progress.inc(1);
    }
}
