//! rustls configuration of the CAPF listener.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

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
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert_der.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.to_vec())),
        )?;
    // One connection is one session: tickets only cost a round of writes.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}
