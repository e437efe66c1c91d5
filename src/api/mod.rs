//! The HTTP side of capf: health, and the CAPF certificate for the CTL client and TFTP
//! tooling. (The administration API proper grows here.)

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::store::Store;

/// How long a health check waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "the admin API may listen without TLS only on a loopback address; {0} is not one \
         (TLS for the API is not implemented yet)"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// The CAPF certificate files, exactly as written in the certs directory.
#[derive(Debug, Clone)]
pub struct PublishedCertificate {
    pem: Arc<Vec<u8>>,
    der: Arc<Vec<u8>>,
    /// `<hash>.0`, the OpenSSL hash-named copy.
    hash_name: String,
    hash_pem: Arc<Vec<u8>>,
}

impl PublishedCertificate {
    /// Reads capf.pem, capf.cer and `<hash>.0` (blocking file I/O: call off the runtime).
    pub fn read(certs_dir: &Path, subject_hash: &str) -> Result<PublishedCertificate, ApiError> {
        let read = |name: &str| {
            let path = certs_dir.join(name);
            std::fs::read(&path).map_err(|source| ApiError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let hash_name = format!("{subject_hash}.0");
        Ok(PublishedCertificate {
            pem: Arc::new(read("capf.pem")?),
            der: Arc::new(read("capf.cer")?),
            hash_pem: Arc::new(read(&hash_name)?),
            hash_name,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub certificate: PublishedCertificate,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/{file}", get(certificate_file))
        .with_state(state)
}

/// Refuses a non-loopback address: the API would carry bearer tokens in the clear.
pub fn check_listen_address(addr: SocketAddr) -> Result<(), ApiError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(ApiError::NotLoopback(addr))
    }
}

async fn health(State(state): State<ApiState>) -> Response {
    match tokio::time::timeout(HEALTH_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Json(json!({"status": "ok", "database": "ok"})).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "degraded", "database": e.to_string()})),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "degraded", "database": "timed out"})),
        )
            .into_response(),
    }
}

async fn certificate_file(
    State(state): State<ApiState>,
    UrlPath(file): UrlPath<String>,
) -> Response {
    let published = &state.certificate;
    let (body, content_type) = if file == "capf.pem" {
        (&published.pem, "application/x-pem-file")
    } else if file == "capf.cer" {
        (&published.der, "application/pkix-cert")
    } else if file == published.hash_name {
        (&published.hash_pem, "application/x-pem-file")
    } else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    (
        [(header::CONTENT_TYPE, content_type)],
        body.as_ref().clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(check_listen_address("127.0.0.1:3805".parse().unwrap()).is_ok());
        assert!(check_listen_address("[::1]:3805".parse().unwrap()).is_ok());
        assert!(check_listen_address("0.0.0.0:3805".parse().unwrap()).is_err());
        assert!(check_listen_address("192.0.2.1:3805".parse().unwrap()).is_err());
    }
}
