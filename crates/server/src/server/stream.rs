//! The streams of the CAPF listener's TLS seam: the TCP stream a handshake runs over
//! ([`Replay`], which hands back bytes read ahead to inspect the ClientHello) and the
//! established stream it yields ([`TlsConn`]), whichever library made it. Both acceptors
//! (`acceptor` for rustls, `legacy` for OpenSSL) build on these, so neither imports the other.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The TCP stream a handshake runs over. Bytes read ahead to inspect the ClientHello are
/// kept and handed out again first, so the chosen library sees the stream from its start.
/// Without read-ahead (every listener that does not sniff) the prefix is empty.
pub struct Replay<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Replay<S> {
    pub fn new(inner: S, prefix: Vec<u8>) -> Replay<S> {
        Replay {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this.prefix.get(this.pos..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                // Replayed in full: give the memory back for the session's lifetime.
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What every handshake runs over.
pub type Inbound = Replay<TcpStream>;

/// An established TLS stream, whichever library made it.
pub enum TlsConn {
    Rustls(Box<tokio_rustls::server::TlsStream<Inbound>>),
    #[cfg(feature = "legacy-tls")]
    Legacy(Box<tokio_openssl::SslStream<Inbound>>),
}

/// What was negotiated, for the logs.
#[derive(Debug, Clone)]
pub struct Negotiated {
    /// `"rustls"` or `"openssl"`.
    pub library: &'static str,
    pub version: String,
    pub cipher: String,
}

impl Negotiated {
    pub fn is_legacy(&self) -> bool {
        self.library == "openssl"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// rustls refused the client (or the connection broke during its handshake).
    #[error("{source}; the client sent {offered}")]
    Refused { source: io::Error, offered: String },
    /// OpenSSL (the legacy acceptor) refused the client.
    #[cfg(feature = "legacy-tls")]
    #[error("legacy TLS (OpenSSL): {0}")]
    Legacy(openssl::ssl::Error),
    /// The connection broke while the ClientHello was being read.
    #[error("reading the ClientHello: {0}")]
    Sniff(io::Error),
}

impl HandshakeError {
    /// For metrics: `protocol` when the peer spoke no TLS we accept, `legacy` when OpenSSL
    /// refused it, `io` when the connection broke.
    pub fn kind(&self) -> &'static str {
        match self {
            HandshakeError::Refused { source, .. }
                if source.kind() == io::ErrorKind::InvalidData =>
            {
                "protocol"
            }
            #[cfg(feature = "legacy-tls")]
            HandshakeError::Legacy(_) => "legacy",
            _ => "io",
        }
    }

    /// Whether the legacy acceptor had the connection (counted with legacy handshakes).
    pub fn is_legacy(&self) -> bool {
        match self {
            #[cfg(feature = "legacy-tls")]
            HandshakeError::Legacy(_) => true,
            _ => false,
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsConn::Rustls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(feature = "legacy-tls")]
            TlsConn::Legacy(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TlsConn::Rustls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            #[cfg(feature = "legacy-tls")]
            TlsConn::Legacy(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsConn::Rustls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(feature = "legacy-tls")]
            TlsConn::Legacy(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsConn::Rustls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(feature = "legacy-tls")]
            TlsConn::Legacy(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
