//! Serving a router over HTTP/1.1 (plain or TLS) with the limits every listener of capf
//! needs, so that no HTTP client can take the CAPF port down:
//!
//! - a cap on connections at once: beyond it a connection is closed as soon as it is
//!   accepted, so the descriptors HTTP clients hold never exceed the cap;
//! - a TLS handshake deadline;
//! - a header deadline (hyper's `header_read_timeout`): a request's headers must arrive
//!   within it, however slowly they trickle (slowloris), and a kept-alive connection that
//!   sends no new request within it is closed;
//! - a write-stall deadline: a client that stops reading its response is dropped.
//!
//! `axum::serve` sets none of these and offers no way to, hence this loop over hyper's
//! connection builder (the shape of axum's own "serve with hyper" example).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// The limits of one HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time for a request's headers, and for the next request on a kept-alive connection.
    pub header_timeout: Duration,
    /// Time a response may wait for the client to read it, and a TLS handshake may take.
    pub stall_timeout: Duration,
}

/// How long connections in flight may take to finish after shutdown.
const DRAIN: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of descriptors and the like), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown`, then lets connections in flight finish
/// their request (for at most a few seconds). `name` labels the log lines.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut warned_full = false;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(listener = name, error = %e, "HTTP accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // At the cap: closed at once, as the CAPF listener does beyond --max-sessions.
            // Held in the backlog instead, a flood would fill it and leave every later
            // client, the monitoring system's included, hanging in connect.
            if !warned_full {
                warn!(listener = name, max = limits.max_connections, %peer,
                      "HTTP connection cap reached; further connections closed at once");
                warned_full = true;
            }
            drop(tcp);
            continue;
        };
        if slots.available_permits() * 2 >= limits.max_connections {
            warned_full = false;
        }
        let _ = tcp.set_nodelay(true);
        let (tls, router, shutdown) = (tls.clone(), router.clone(), shutdown.clone());
        connections.spawn(async move {
            let _slot = slot;
            connection(name, tcp, peer, tls, router, limits, shutdown).await;
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        debug!(
            listener = name,
            "HTTP connections still open at shutdown were dropped"
        );
    }
}

async fn connection(
    name: &'static str,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let (io, stall) = Watched::new(tcp);
    match tls {
        None => http(name, io, peer, stall, router, limits, shutdown).await,
        Some(acceptor) => {
            match tokio::time::timeout(limits.stall_timeout, acceptor.accept(io)).await {
                Ok(Ok(tls)) => http(name, tls, peer, stall, router, limits, shutdown).await,
                Ok(Err(e)) => debug!(listener = name, %peer, error = %e, "TLS handshake failed"),
                Err(_) => debug!(listener = name, %peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn http<Io>(
    name: &'static str,
    io: Io,
    peer: SocketAddr,
    stall: Arc<StallClock>,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(listener = name, %peer, error = %e, "HTTP connection ended");
                }
                return;
            }
            _ = shutdown.cancelled(), if !draining => {
                // Finishes the request in flight, then closes.
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = stall.expired(limits.stall_timeout) => {
                debug!(listener = name, %peer, "client stopped reading; connection dropped");
                return;
            }
        }
    }
}

/// When the connection's writes started waiting on the client (0: they are not).
#[derive(Debug)]
struct StallClock {
    origin: Instant,
    since_ms: AtomicU64,
}

impl StallClock {
    fn stalled(&self) {
        if self.since_ms.load(Ordering::Relaxed) == 0 {
            // +1 so that a stall in the first millisecond is not "none".
            let now = self.origin.elapsed().as_millis() as u64 + 1;
            self.since_ms.store(now, Ordering::Relaxed);
        }
    }

    fn progressed(&self) {
        self.since_ms.store(0, Ordering::Relaxed);
    }

    /// Resolves once a write has waited `limit` without progress.
    async fn expired(&self, limit: Duration) {
        loop {
            let since = self.since_ms.load(Ordering::Relaxed);
            let check_at = if since == 0 {
                Instant::now() + limit
            } else {
                let deadline = self.origin + Duration::from_millis(since - 1) + limit;
                if deadline <= Instant::now() {
                    return;
                }
                deadline
            };
            tokio::time::sleep_until(check_at).await;
        }
    }
}

/// A TCP stream that notes when writing to the peer stops making progress.
struct Watched {
    inner: TcpStream,
    stall: Arc<StallClock>,
}

impl Watched {
    fn new(inner: TcpStream) -> (Watched, Arc<StallClock>) {
        let stall = Arc::new(StallClock {
            origin: Instant::now(),
            since_ms: AtomicU64::new(0),
        });
        let watched = Watched {
            inner,
            stall: Arc::clone(&stall),
        };
        (watched, stall)
    }

    fn note<T>(&self, poll: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match &poll {
            Poll::Pending => self.stall.stalled(),
            Poll::Ready(_) => self.stall.progressed(),
        }
        poll
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
