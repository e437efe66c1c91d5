//! The TLS seam of the CAPF listener: which library performs the handshake, and the stream
//! it yields. Everything after the handshake (limits, deadlines, `connection::run`) is the
//! same whichever library served the phone.
//!
//! rustls is the only library in a default build. With the `legacy-tls` feature an OpenSSL
//! acceptor can serve phones that speak only TLS 1.0 with RSA key exchange, either on a
//! listener of its own or behind [`Acceptor::Sniff`] on port 3804 itself.

use std::io;

use tokio::net::TcpStream;

use super::client_hello::{self, Inspect};
#[cfg(feature = "legacy-tls")]
use super::client_hello::{ModernProfile, Route};
#[cfg(feature = "legacy-tls")]
use super::legacy::LegacyAcceptor;
use super::stream::{HandshakeError, Inbound, Negotiated, Replay, TlsConn};
#[cfg(feature = "legacy-tls")]
use std::sync::Arc;

/// How a listener's connections get their TLS.
pub enum Acceptor {
    /// rustls: TLS 1.2 (ECDHE, AEAD) and 1.3. The default and, without the feature, the only
    /// one.
    Rustls(tokio_rustls::TlsAcceptor),
    /// OpenSSL at security level 0, for every client (a legacy listener of its own).
    #[cfg(feature = "legacy-tls")]
    Legacy(Arc<LegacyAcceptor>),
    /// Reads the ClientHello first: rustls for every client it can serve, OpenSSL for the
    /// rest (port 3804 with `--legacy-tls`).
    #[cfg(feature = "legacy-tls")]
    Sniff {
        modern: tokio_rustls::TlsAcceptor,
        profile: ModernProfile,
        legacy: Arc<LegacyAcceptor>,
    },
}

impl Acceptor {
    /// Performs the handshake. The caller bounds it with the handshake deadline, which
    /// therefore covers reading the ClientHello too.
    pub async fn accept(&self, tcp: TcpStream) -> Result<(TlsConn, Negotiated), HandshakeError> {
        match self {
            Acceptor::Rustls(acceptor) => {
                // Read ahead (and replayed) only to say what a refused client offered.
                let (stream, inspected) = read_client_hello(tcp).await?;
                accept_rustls(acceptor, stream, &inspected).await
            }
            #[cfg(feature = "legacy-tls")]
            Acceptor::Legacy(legacy) => legacy.accept(Replay::new(tcp, Vec::new())).await,
            #[cfg(feature = "legacy-tls")]
            Acceptor::Sniff {
                modern,
                profile,
                legacy,
            } => {
                let (stream, inspected) = read_client_hello(tcp).await?;
                match profile.route(&inspected) {
                    Route::Modern => accept_rustls(modern, stream, &inspected).await,
                    Route::Legacy(reason) => {
                        tracing::info!(reason, "client needs legacy TLS");
                        legacy.accept(stream).await
                    }
                }
            }
        }
    }
}

async fn accept_rustls(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: Inbound,
    inspected: &Inspect,
) -> Result<(TlsConn, Negotiated), HandshakeError> {
    let tls = acceptor
        .accept(stream)
        .await
        .map_err(|source| HandshakeError::Refused {
            source,
            offered: client_hello::describe(inspected),
        })?;
    let (_, conn) = tls.get_ref();
    let negotiated = Negotiated {
        library: "rustls",
        version: conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default(),
        cipher: conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default(),
    };
    Ok((TlsConn::Rustls(Box::new(tls)), negotiated))
}

/// Reads until the ClientHello is complete (or shows not to be one), keeping every byte.
async fn read_client_hello(mut tcp: TcpStream) -> Result<(Inbound, Inspect), HandshakeError> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let inspected = client_hello::inspect(&seen);
        // Past the size cap the hello is left to rustls, which refuses what it cannot parse.
        if inspected != Inspect::NeedMore || seen.len() >= client_hello::MAX_HELLO {
            return Ok((Replay::new(tcp, seen), inspected));
        }
        let room = (client_hello::MAX_HELLO - seen.len()).min(chunk.len());
        let n = tcp
            .read(&mut chunk[..room])
            .await
            .map_err(HandshakeError::Sniff)?;
        if n == 0 {
            return Err(HandshakeError::Sniff(io::ErrorKind::UnexpectedEof.into()));
        }
        seen.extend_from_slice(&chunk[..n]);
    }
}

/// Legacy handshakes since start, by negotiated version, so operators can tell whether
/// phones still need the legacy path (and when it can be turned off).
#[derive(Debug, Default)]
pub struct LegacyStats {
    tls1_0: std::sync::atomic::AtomicU64,
    tls1_1: std::sync::atomic::AtomicU64,
    tls1_2: std::sync::atomic::AtomicU64,
    tls1_3: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
}

/// A reading of [`LegacyStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegacyCounts {
    pub tls1_0: u64,
    pub tls1_1: u64,
    pub tls1_2: u64,
    pub tls1_3: u64,
    pub failed: u64,
}

impl LegacyStats {
    /// Counts a handshake the legacy acceptor completed; `version` as OpenSSL names it.
    pub fn record(&self, version: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        match version {
            "TLSv1" => &self.tls1_0,
            "TLSv1.1" => &self.tls1_1,
            "TLSv1.2" => &self.tls1_2,
            _ => &self.tls1_3,
        }
        .fetch_add(1, Relaxed);
    }

    pub fn record_failure(&self) {
        self.failed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn counts(&self) -> LegacyCounts {
        use std::sync::atomic::Ordering::Relaxed;
        LegacyCounts {
            tls1_0: self.tls1_0.load(Relaxed),
            tls1_1: self.tls1_1.load(Relaxed),
            tls1_2: self.tls1_2.load(Relaxed),
            tls1_3: self.tls1_3.load(Relaxed),
            failed: self.failed.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn replay_hands_out_the_prefix_then_the_stream() {
        let (mut tx, rx) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut tx, b" world")
            .await
            .unwrap();
        drop(tx);
        let mut replay = Replay::new(rx, b"hello".to_vec());
        let mut small = [0u8; 3];
        replay.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hel");
        let mut rest = Vec::new();
        replay.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"lo world");
    }

    #[test]
    fn stats_count_by_version() {
        let stats = LegacyStats::default();
        stats.record("TLSv1");
        stats.record("TLSv1");
        stats.record("TLSv1.2");
        stats.record_failure();
        assert_eq!(
            stats.counts(),
            LegacyCounts {
                tls1_0: 2,
                tls1_2: 1,
                failed: 1,
                ..LegacyCounts::default()
            }
        );
    }
}
