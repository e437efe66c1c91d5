//! rustls configuration of the CAPF listener.

use std::sync::Arc;

use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer,
};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls::{ServerConfig, SignatureAlgorithm, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("TLS configuration rejected the CAPF certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Server config for the CAPF identity: TLS 1.2 and 1.3, no client certificates (phones
/// authenticate inside the protocol).
pub fn server_config(
    cert_der: &[u8],
    key_pkcs8_der: &[u8],
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(prefer_sha256_suites(
        rustls::crypto::aws_lc_rs::default_provider(),
    ));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.to_vec()));
    let signing_key = provider.key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(
        vec![CertificateDer::from(cert_der.to_vec())],
        Arc::new(OffWorkerKey(signing_key)),
    );
    certified.keys_match()?;
    let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    // One connection is one session: tickets only cost a round of writes.
    config.send_tls13_tickets = 0;
    // Our order, not the client's: see `prefer_sha256_suites`.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// Puts the AES-128-GCM/SHA-256 suites first (then the rest in the provider's order).
///
/// Every handshake runs its key schedule through the suite's hash: SHA-256 runs on the CPU's
/// SHA extensions where SHA-384 cannot, which made SHA-384 the largest single item of a
/// handshake's CPU in the server's profile. AES-128-GCM protects a session of a few
/// kilobytes as well as AES-256 does; clients that offer only other suites still get them.
fn prefer_sha256_suites(
    mut provider: rustls::crypto::CryptoProvider,
) -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite as C;
    let rank = |suite: &rustls::SupportedCipherSuite| match suite.suite() {
        C::TLS13_AES_128_GCM_SHA256
        | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        _ => 1,
    };
    // A stable sort keeps the provider's order within each rank.
    provider.cipher_suites.sort_by_key(rank);
    provider
}

/// The CAPF key, signing handshakes off the async workers.
///
/// The handshake's signature is its one expensive step (about a millisecond with RSA-2048)
/// and rustls makes it synchronously inside the connection's task. On a multi-threaded
/// runtime it runs under `block_in_place`, which hands the worker's other tasks to another
/// thread first, so sessions waiting on I/O or the database are not held up behind it.
#[derive(Debug)]
struct OffWorkerKey(Arc<dyn SigningKey>);

impl SigningKey for OffWorkerKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        self.0
            .choose_scheme(offered)
            .map(|inner| Box::new(OffWorkerSigner(inner)) as Box<dyn rustls::sign::Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        self.0.public_key()
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.0.algorithm()
    }
}

#[derive(Debug)]
struct OffWorkerSigner(Box<dyn rustls::sign::Signer>);

impl rustls::sign::Signer for OffWorkerSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        off_worker(|| self.0.sign(message))
    }

    fn scheme(&self) -> SignatureScheme {
        self.0.scheme()
    }
}

/// Runs `f`, a short CPU-bound step inside a poll (a handshake's private-key operation),
/// under `block_in_place` on a multi-threaded runtime: the worker's other tasks move to
/// another thread first instead of waiting behind it. Elsewhere (current-thread runtime,
/// tests) `f` just runs, as `block_in_place` would panic there.
pub(crate) fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    let on_multi_thread_runtime = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_multi_thread_runtime {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// What the rustls config serves, for routing ClientHellos on a sniffing listener: the
/// suites usable with the CAPF key, the key-exchange groups, and the signature schemes the
/// CAPF key can make, all taken from the same provider and key as [`server_config`].
#[cfg(feature = "legacy-tls")]
pub fn modern_profile(
    config: &ServerConfig,
    key_pkcs8_der: &[u8],
) -> Result<super::client_hello::ModernProfile, TlsSetupError> {
    use rustls::ProtocolVersion;
    let provider = config.crypto_provider();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.to_vec()));
    let key = provider.key_provider.load_private_key(key)?;
    let mut profile = super::client_hello::ModernProfile::default();
    for suite in provider
        .cipher_suites
        .iter()
        .filter(|s| s.usable_for_signature_algorithm(key.algorithm()))
    {
        let id = u16::from(suite.suite());
        if suite.version().version == ProtocolVersion::TLSv1_3 {
            profile.tls13_suites.push(id);
        } else {
            profile.tls12_suites.push(id);
        }
    }
    profile.groups = provider
        .kx_groups
        .iter()
        .map(|g| u16::from(g.name()))
        .collect();
    use SignatureScheme as S;
    for scheme in [
        S::RSA_PKCS1_SHA256,
        S::RSA_PKCS1_SHA384,
        S::RSA_PKCS1_SHA512,
        S::RSA_PSS_SHA256,
        S::RSA_PSS_SHA384,
        S::RSA_PSS_SHA512,
        S::ECDSA_NISTP256_SHA256,
        S::ECDSA_NISTP384_SHA384,
        S::ECDSA_NISTP521_SHA512,
        S::ED25519,
    ] {
        if key.choose_scheme(&[scheme]).is_some() {
            profile.tls12_schemes.push(u16::from(scheme));
            // TLS 1.3 dropped PKCS#1 v1.5 signatures in the handshake.
            if !matches!(
                scheme,
                S::RSA_PKCS1_SHA256 | S::RSA_PKCS1_SHA384 | S::RSA_PKCS1_SHA512
            ) {
                profile.tls13_schemes.push(u16::from(scheme));
            }
        }
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{ClientConfig, ClientConnection, ServerConnection};

    /// Runs a handshake in memory between a default rustls client (which lists AES-256 first)
    /// and the CAPF server config; returns the suite negotiated.
    fn negotiated_suite(tls12_only: bool) -> rustls::CipherSuite {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["capf.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let server = server_config(cert.der(), &key.serialize_der()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
            &[&rustls::version::TLS12]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client =
            ClientConnection::new(Arc::new(client), "capf.test".try_into().unwrap()).unwrap();
        let mut server = ServerConnection::new(server).unwrap();
        for _ in 0..10 {
            let mut bytes = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut bytes).unwrap();
            }
            server.read_tls(&mut bytes.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut bytes = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut bytes).unwrap();
            }
            client.read_tls(&mut bytes.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                return server.negotiated_cipher_suite().unwrap().suite();
            }
        }
        panic!("handshake did not complete");
    }

    #[test]
    fn the_server_prefers_the_sha256_suites() {
        assert_eq!(
            negotiated_suite(false),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        assert_eq!(
            negotiated_suite(true),
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        );
    }
}
