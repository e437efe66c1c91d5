//! HTTPS for the admin API when it listens beyond loopback: its rustls configuration and
//! key files. The handshakes themselves run in `crate::http`, under its deadlines and cap.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum ApiTlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: no certificate in the file")]
    NoCertificate(String),
    #[error("{0}: no private key in the file")]
    NoKey(String),
    #[error("TLS configuration of the API rejected the certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// TLS 1.2/1.3 server config for the API from DER certificate chain and key.
pub fn config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, ApiTlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads a PEM certificate chain and key (blocking: call off the runtime).
pub fn load_pem(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ApiTlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ApiTlsError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(ApiTlsError::NoCertificate(cert.display().to_string()));
    }
    capf_pki::ca::identity::check_key_permissions(key).map_err(|e| ApiTlsError::Read {
        path: key.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let key_pem = read(key)?;
    let key_der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| ApiTlsError::NoKey(key.display().to_string()))?;
    Ok((chain, key_der))
}
