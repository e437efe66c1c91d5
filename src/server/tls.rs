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
        let on_multi_thread_runtime = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_multi_thread_runtime {
            tokio::task::block_in_place(|| self.0.sign(message))
        } else {
            self.0.sign(message)
        }
    }

    fn scheme(&self) -> SignatureScheme {
        self.0.scheme()
    }
}
