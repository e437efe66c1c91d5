//! The legacy TLS acceptor (feature `legacy-tls`): OpenSSL at security level 0, for phones
//! whose TLS stack predates TLS 1.2 and ECDHE (79xx, 69xx, 89xx, 99xx: TLS 1.0, RSA key
//! exchange, CBC with SHA-1). rustls does not implement any of that, by design.
//!
//! It serves the same CAPF certificate and key as the rustls listener. Every handshake is
//! logged with its version and cipher by the caller and counted, so operators can see which
//! phones still need it.

use std::pin::Pin;

use openssl::pkey::{Id, PKey};
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslSessionCacheMode, SslVerifyMode,
    SslVersion,
};
use openssl::x509::X509;
use tokio_openssl::SslStream;

use super::stream::{HandshakeError, Inbound, Negotiated, TlsConn};
use super::tls::off_worker;

/// Suites in the server's order of preference. ECDHE first: a phone that offers it keeps
/// forward secrecy even over TLS 1.0. Then RSA key exchange, which is what the old phones
/// have: AES-CBC with SHA-1 (TLS_RSA_WITH_AES_128_CBC_SHA is the one Cisco's own CAPF keeps),
/// and 3DES last for the oldest firmware. Only RSA suites: the CAPF key must be RSA here.
/// TLS 1.3 suites are OpenSSL's defaults.
const CIPHERS: &str = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:\
AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES256-SHA256:\
AES128-SHA:AES256-SHA:DES-CBC3-SHA";

#[derive(Debug, thiserror::Error)]
pub enum LegacyTlsError {
    #[error(
        "legacy TLS needs an RSA CAPF key (old phones use RSA key exchange); this one is not RSA"
    )]
    NotRsa,
    #[error("OpenSSL rejected the legacy TLS setup: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// OpenSSL server context for the CAPF identity.
pub struct LegacyAcceptor {
    context: SslContext,
}

impl LegacyAcceptor {
    pub fn new(cert_der: &[u8], key_pkcs8_der: &[u8]) -> Result<LegacyAcceptor, LegacyTlsError> {
        let cert = X509::from_der(cert_der)?;
        let key = PKey::private_key_from_pkcs8(key_pkcs8_der)?;
        if key.id() != Id::RSA {
            return Err(LegacyTlsError::NotRsa);
        }
        let mut builder = SslContextBuilder::new(SslMethod::tls_server())?;
        // Level 0 first: at the default level (or the system's openssl.cnf, which may say 2)
        // TLS 1.0/1.1, SHA-1 handshake signatures and 3DES are refused.
        builder.set_security_level(0);
        builder.set_min_proto_version(Some(SslVersion::TLS1))?;
        builder.set_max_proto_version(None)?;
        builder.set_cipher_list(CIPHERS)?;
        builder.set_certificate(&cert)?;
        builder.set_private_key(&key)?;
        builder.check_private_key()?;
        builder.set_options(
            SslOptions::CIPHER_SERVER_PREFERENCE
                | SslOptions::NO_COMPRESSION
                | SslOptions::NO_RENEGOTIATION
                // One connection is one session: resumption only costs memory.
                | SslOptions::NO_TICKET
                // With TLS 1.0 CBC, OpenSSL would otherwise send an empty record before each
                // record (the BEAST countermeasure). A CAPF frame must arrive as one record
                // (phones stall on split frames), and BEAST needs attacker-chosen plaintext
                // in the stream, which a CAPF session does not carry.
                | SslOptions::DONT_INSERT_EMPTY_FRAGMENTS,
        );
        builder.set_session_cache_mode(SslSessionCacheMode::OFF);
        builder.set_num_tickets(0)?;
        // Phones authenticate inside the protocol, never with a client certificate.
        builder.set_verify(SslVerifyMode::NONE);
        Ok(LegacyAcceptor {
            context: builder.build(),
        })
    }

    /// Performs the handshake over `stream`.
    ///
    /// OpenSSL does the handshake's private-key operation (RSA decryption of the premaster
    /// secret, or the ECDHE signature) synchronously inside a poll. Each poll of the
    /// handshake runs under `block_in_place` (see [`off_worker`]), which first hands this
    /// worker's other tasks to another thread, so sessions waiting on I/O or the database are
    /// not held up behind the RSA operation. A handshake takes only a few polls.
    pub async fn accept(&self, stream: Inbound) -> Result<(TlsConn, Negotiated), HandshakeError> {
        let ssl = Ssl::new(&self.context).map_err(|e| HandshakeError::Legacy(e.into()))?;
        let mut tls = SslStream::new(ssl, stream).map_err(|e| HandshakeError::Legacy(e.into()))?;
        std::future::poll_fn(|cx| off_worker(|| Pin::new(&mut tls).poll_accept(cx)))
            .await
            .map_err(HandshakeError::Legacy)?;
        let negotiated = Negotiated {
            library: "openssl",
            version: tls.ssl().version_str().to_string(),
            cipher: tls
                .ssl()
                .current_cipher()
                .map(|c| c.name().to_string())
                .unwrap_or_default(),
        };
        Ok((TlsConn::Legacy(Box::new(tls)), negotiated))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read, Write};
    use std::sync::Arc;

    use openssl::ssl::{SslConnector, SslVersion};

    use super::*;
    use crate::server::client_hello::{inspect, Route};
    use capf_pki::ca::identity::{CapfIdentity, CapfKeyAlgorithm, IdentityOptions};

    fn identity(key: CapfKeyAlgorithm) -> CapfIdentity {
        let dir = tempfile::tempdir().unwrap();
        let opts = IdentityOptions {
            key,
            ..IdentityOptions::default()
        };
        CapfIdentity::load_or_create(dir.path(), &opts).unwrap().0
    }

    /// Captures what a client writes; reading always waits, so the handshake stops after
    /// the ClientHello.
    #[derive(Default)]
    struct Capture(Vec<u8>);

    impl Read for Capture {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn openssl_hello(versions: Option<SslVersion>, ciphers: Option<&str>) -> Vec<u8> {
        let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
        if let Some(v) = versions {
            builder.set_security_level(0);
            builder.set_min_proto_version(Some(v)).unwrap();
            builder.set_max_proto_version(Some(v)).unwrap();
        }
        if let Some(c) = ciphers {
            builder.set_cipher_list(c).unwrap();
        }
        let ssl = builder
            .build()
            .configure()
            .unwrap()
            .into_ssl("capf")
            .unwrap();
        let Err(openssl::ssl::HandshakeError::WouldBlock(mid)) = ssl.connect(Capture::default())
        else {
            panic!("the handshake cannot finish without a server")
        };
        mid.get_ref().0.clone()
    }

    #[test]
    fn real_client_hellos_are_routed_by_what_rustls_can_serve() {
        let id = identity(CapfKeyAlgorithm::Rsa2048);
        let config = crate::server::tls::server_config(id.cert_der(), id.key_pkcs8_der()).unwrap();
        let profile = crate::server::tls::modern_profile(&config, id.key_pkcs8_der()).unwrap();

        // Our own phone simulator (rustls).
        let client = crate::pinned::pinned_client_config(id.cert_der().to_vec()).unwrap();
        let mut conn = rustls::ClientConnection::new(
            Arc::new(client),
            rustls::pki_types::ServerName::try_from("capf").unwrap(),
        )
        .unwrap();
        let mut rustls_hello = Vec::new();
        conn.write_tls(&mut rustls_hello).unwrap();
        assert_eq!(profile.route(&inspect(&rustls_hello)), Route::Modern);

        // A current OpenSSL client with its defaults.
        assert_eq!(
            profile.route(&inspect(&openssl_hello(None, None))),
            Route::Modern
        );

        // Legacy phones: TLS 1.0 with RSA key exchange; TLS 1.2 with RSA key exchange only.
        let tls10 = openssl_hello(Some(SslVersion::TLS1), Some("AES128-SHA"));
        assert!(matches!(profile.route(&inspect(&tls10)), Route::Legacy(_)));
        let rsa_kx = openssl_hello(Some(SslVersion::TLS1_2), Some("AES128-SHA:AES256-SHA256"));
        assert!(matches!(
            profile.route(&inspect(&rsa_kx)),
            Route::Legacy(r) if r.contains("cipher suite")
        ));
    }

    #[test]
    fn the_capf_key_must_be_rsa() {
        let id = identity(CapfKeyAlgorithm::default());
        assert!(LegacyAcceptor::new(id.cert_der(), id.key_pkcs8_der()).is_ok());
        let ec = identity(CapfKeyAlgorithm::EcP256);
        assert!(matches!(
            LegacyAcceptor::new(ec.cert_der(), ec.key_pkcs8_der()),
            Err(LegacyTlsError::NotRsa)
        ));
    }
}
