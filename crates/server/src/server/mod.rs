//! The CAPF listener: accepts TCP connections on port 3804 (and on a legacy TLS listener,
//! when configured), wraps them in TLS under a handshake deadline in a task of their own,
//! and runs one session per connection.

pub mod acceptor;
pub mod client_hello;
pub mod connection;
pub mod gate;
#[cfg(feature = "legacy-tls")]
pub mod legacy;
pub mod session_ids;
pub mod stream;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::config::LiveSettings;
use crate::service::{Service, ServiceSession, SessionContext};
use acceptor::{Acceptor, LegacyCounts, LegacyStats};
use gate::ConnectionGate;
use session_ids::SessionIds;

/// Pending connections the kernel may queue; a tiny backlog drops SYNs under load.
const ACCEPT_BACKLOG: u32 = 4096;
/// How often the flood-control state is trimmed and refusals are reported.
const GATE_HOUSEKEEPING: Duration = Duration::from_secs(60);

/// Binds the CAPF listener.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ACCEPT_BACKLOG as i32)?;
    TcpListener::from_std(socket.into())
}

/// The global cap on sessions served at once. A counter rather than a semaphore, so a
/// reload can lower the cap below the sessions in flight: they finish, and new connections
/// are refused until the count is under the new cap.
#[derive(Debug)]
struct SessionSlots {
    used: AtomicUsize,
    max: AtomicUsize,
}

/// One session's place under the cap; freed when dropped.
struct Slot(Arc<SessionSlots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SessionSlots {
    fn new(max: usize) -> Arc<SessionSlots> {
        Arc::new(SessionSlots {
            used: AtomicUsize::new(0),
            max: AtomicUsize::new(max.max(1)),
        })
    }

    fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let max = self.max.load(Ordering::Acquire);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < max).then_some(used + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(self)))
    }
}

/// Everything a connection task needs. Every listener (port 3804, a legacy TLS listener)
/// shares one: the same flood gate, session caps, session ids and deadlines apply whichever
/// listener and TLS library a phone comes through.
pub struct Server {
    pub service: Arc<Service>,
    session_ids: Arc<SessionIds>,
    slots: Arc<SessionSlots>,
    gate: Arc<ConnectionGate>,
    legacy: LegacyStats,
}

impl Server {
    /// A server under the service's current live settings.
    pub fn new(service: Arc<Service>) -> Server {
        let live = service.live.current();
        Server {
            service,
            session_ids: Arc::new(SessionIds::default()),
            slots: SessionSlots::new(live.max_sessions),
            gate: ConnectionGate::new(live.gate()),
            legacy: LegacyStats::default(),
        }
    }

    /// Applies reloaded flood control and session cap to the connections that come next.
    /// (Deadlines need nothing here: each session reads them from the service at its start.)
    pub fn apply(&self, live: &LiveSettings) {
        self.gate.set_limits(live.gate());
        self.slots
            .max
            .store(live.max_sessions.max(1), Ordering::Release);
    }

    /// Handshakes the legacy (OpenSSL) acceptor has done since start.
    pub fn legacy_counts(&self) -> LegacyCounts {
        self.legacy.counts()
    }

    /// Logs the legacy handshake counts (at shutdown, and when they change).
    pub fn log_legacy_counts(&self) {
        let c = self.legacy.counts();
        info!(
            tls1_0 = c.tls1_0,
            tls1_1 = c.tls1_1,
            tls1_2 = c.tls1_2,
            tls1_3 = c.tls1_3,
            failed = c.failed,
            "legacy TLS handshakes since start"
        );
    }

    /// Trims the flood-control state and reports refusals and legacy handshakes until
    /// `shutdown` is cancelled. One task for all listeners.
    pub async fn housekeeping(self: Arc<Self>, shutdown: CancellationToken) {
        let mut housekeeping = tokio::time::interval(GATE_HOUSEKEEPING);
        let mut refused_before = 0;
        let mut legacy_before = LegacyCounts::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = housekeeping.tick() => {}
            }
            self.gate.forget_idle();
            let refused = self.gate.refused();
            if refused > refused_before {
                warn!(
                    count = refused - refused_before,
                    "connections refused by flood control"
                );
                refused_before = refused;
            }
            let legacy = self.legacy.counts();
            if legacy != legacy_before {
                self.log_legacy_counts();
                legacy_before = legacy;
            }
        }
    }

    /// Accepts on `listener` until `shutdown` is cancelled, handshaking with `acceptor`;
    /// connection tasks are tracked in `tasks` so the caller can let them drain.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        acceptor: Arc<Acceptor>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Checked before any TLS work, so a flood costs us an accept and a close.
            let admitted = match self.gate.admit(peer.ip()) {
                Ok(admitted) => admitted,
                Err(refusal) => {
                    self.service.metrics.connection_refused(refusal.as_str());
                    debug!(%peer, reason = refusal.as_str(), "connection refused");
                    drop(stream);
                    continue;
                }
            };
            let Some(slot) = self.slots.try_take() else {
                self.service.metrics.connection_refused("too_many_sessions");
                warn!(%peer, "too many sessions: connection closed");
                drop(stream);
                continue;
            };
            let server = Arc::clone(&self);
            let acceptor = Arc::clone(&acceptor);
            tasks.spawn(async move {
                server.handle(stream, peer, &acceptor).await;
                drop(slot);
                drop(admitted);
            });
        }
    }

    async fn handle(&self, stream: TcpStream, peer: SocketAddr, acceptor: &Acceptor) {
        // Frames are small and latency-bound: without NODELAY a delayed ACK stalls the
        // exchange by tens of milliseconds.
        let _ = stream.set_nodelay(true);
        let id = self.session_ids.allocate();
        // Read once: a reload during this session does not change its deadlines or policy.
        let live = self.service.live.current();
        let span = info_span!("session", id = format_args!("{:08x}", id.get()), %peer, device = tracing::field::Empty);
        // Three lines per session at info (handshake, certificate issued, session ended): a
        // rollout of tens of thousands of phones stays readable, and each line costs CPU on
        // the busiest path. The protocol messages themselves are logged at debug.
        async move {
            debug!("new phone connection");
            // The deadline covers the whole handshake, reading the ClientHello included.
            let handshake =
                tokio::time::timeout(live.handshake_timeout, acceptor.accept(stream)).await;
            let (mut tls, negotiated) = match handshake {
                Ok(Ok(established)) => established,
                Ok(Err(e)) => {
                    if e.is_legacy() {
                        self.legacy.record_failure();
                    }
                    self.service.metrics.handshake_failed(e.kind());
                    warn!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    self.service.metrics.handshake_failed("timeout");
                    warn!("TLS handshake timed out");
                    return;
                }
            };
            if negotiated.is_legacy() {
                self.legacy.record(&negotiated.version);
                info!(
                    version = %negotiated.version,
                    cipher = %negotiated.cipher,
                    "legacy TLS handshake done (OpenSSL)"
                );
            } else {
                info!(
                    version = %negotiated.version,
                    suite = %negotiated.cipher,
                    "TLS handshake done"
                );
            }
            self.service.metrics.session_started();
            let limits = live.limits();
            let mut session = ServiceSession::new(
                &self.service,
                SessionContext::new(id.get(), peer, live, self.service.clock.now()),
            );
            let outcome = connection::run(&mut tls, &mut session, id.get(), &limits).await;
            self.service.metrics.session_ended(outcome.as_str());
            info!(
                outcome = outcome.as_str(),
                detail = outcome.detail(),
                "session ended"
            );
        }
        .instrument(span)
        .await
    }
}
