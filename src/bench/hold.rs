//! Held sessions: phones that connect, authenticate, get KEY_GENERATE_REQUEST, answer
//! REQUEST_IN_PROGRESS and then keep the server waiting, as thousands of phones generating
//! RSA keys after a mass reschedule do. They show what an open session costs the server in
//! memory, and the measured phase that runs meanwhile shows whether new phones are still
//! served quickly.
//!
//! Release completes them: each held phone sends its key and finishes its enrollment. That
//! proves the server kept every session's state intact (a held session "kept alive" is one
//! that enrolled after its release), and it leaves the server as a real fleet would, with
//! one LSC per device, rather than with a burst of sessions cut at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use indicatif::ProgressBar;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::keypool::KeyPool;
use super::outcome::{Failure, Outcome};
use super::phones::Phones;
use super::stats::{PhaseReport, Recorder};
use crate::phone::{KeySource, PhoneError};
use capf_model::keyspec::KeySpec;
use capf_pki::ca::phone_key::PhoneKey;

/// What a held session tells the bench while it opens.
enum Event {
    /// It is in the key-generation wait.
    Held,
    /// It ended before getting there.
    Ended,
}

/// The key source of a held session: reports that the session is held, waits for the
/// release, then hands out a pooled key.
struct HoldKeys {
    pool: Arc<KeyPool>,
    events: mpsc::UnboundedSender<Event>,
    release: watch::Receiver<bool>,
    /// Frees a slot for the next session to open, once this one is held.
    opening: Mutex<Option<OwnedSemaphorePermit>>,
    held: AtomicBool,
}

#[async_trait::async_trait]
impl KeySource for HoldKeys {
    async fn key(&self, spec: KeySpec) -> Result<Arc<PhoneKey>, PhoneError> {
        if !self.held.swap(true, Ordering::SeqCst) {
            drop(
                self.opening
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .take(),
            );
            let _ = self.events.send(Event::Held);
        }
        let mut release = self.release.clone();
        // An error means the bench dropped its sender: nobody will release, go on.
        let _ = release.wait_for(|go| *go).await;
        self.pool.key(spec).await
    }
}

impl Drop for HoldKeys {
    fn drop(&mut self) {
        if !self.held.load(Ordering::SeqCst) {
            let _ = self.events.send(Event::Ended);
        }
    }
}

/// Sessions opened and held.
pub(super) struct Holding {
    release: watch::Sender<bool>,
    tasks: JoinSet<Outcome>,
    requested: u64,
    held: u64,
    open_wall: std::time::Duration,
}

/// Opens one held session per name, at most `concurrency` opening at a time; returns once
/// every session is held or has ended.
pub(super) async fn open(
    phones: &Arc<Phones>,
    names: Vec<String>,
    concurrency: usize,
    progress: &ProgressBar,
) -> Holding {
    let started = Instant::now();
    let (release, release_rx) = watch::channel(false);
    let (events, mut events_rx) = mpsc::unbounded_channel();
    let opening = Arc::new(Semaphore::new(concurrency.max(1)));
    let requested = names.len() as u64;
    let mut tasks = JoinSet::new();
    for name in names {
        let phones = Arc::clone(phones);
        let opening = Arc::clone(&opening);
        let events = events.clone();
        let release = release_rx.clone();
        tasks.spawn(async move {
            let permit = opening.acquire_owned().await.ok();
            let keys = HoldKeys {
                pool: Arc::clone(phones.pool()),
                events,
                release,
                opening: Mutex::new(permit),
                held: AtomicBool::new(false),
            };
            // Dropping `keys` reports the session as ended if it was never held, even if
            // the task panicked.
            phones.session(&name, &keys, false).await
        });
    }
    drop(events);
    let (mut held, mut ended) = (0u64, 0u64);
    while held + ended < requested {
        match events_rx.recv().await {
            Some(Event::Held) => held += 1,
            Some(Event::Ended) => {
                ended += 1;
                progress.set_message(format!("{ended} failed"));
            }
            // Every session has reported; cannot happen before the count is reached.
            None => break,
        }
        progress.inc(1);
    }
    Holding {
        release,
        tasks,
        requested,
        held,
        open_wall: started.elapsed(),
    }
}

impl Holding {
    /// Sessions in the key-generation wait.
    pub(super) fn held(&self) -> u64 {
        self.held
    }

    pub(super) fn requested(&self) -> u64 {
        self.requested
    }

    pub(super) fn open_wall(&self) -> std::time::Duration {
        self.open_wall
    }

    /// Lets every held session send its key and finish; returns the outcomes of all the
    /// held sessions (those that failed while opening included).
    pub(super) async fn release(mut self, progress: &ProgressBar) -> PhaseReport {
        let started = Instant::now();
        let _ = self.release.send(true);
        let mut recorder = Recorder::default();
        while let Some(done) = self.tasks.join_next().await {
            let outcome =
                done.unwrap_or_else(|e| Outcome::failed(Failure::Internal, e.to_string()));
            recorder.record(outcome, None);
            progress.inc(1);
        }
        recorder.phase(started.elapsed())
    }
}
