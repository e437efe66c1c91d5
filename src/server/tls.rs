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
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
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
    Ok(Arc::new(config))
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
