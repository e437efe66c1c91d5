//! The HTTP side of capf: the admin API (`/api/v1/...`, bearer tokens), health, and the
//! CAPF certificate for the CTL client and TFTP tooling (unauthenticated).

pub mod access;
pub mod bulk;
pub mod devices;
pub mod filters;
pub mod openapi;
pub mod problem;
pub mod tls;
pub mod unique;
pub mod validate;
pub mod views;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;

use crate::config::LiveConfig;
use capf_model::clock::Clock;
use capf_store::Store;

/// How long a health check waits for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest an API request may take (a 100,000-row bulk included) before it answers 503.
const REQUEST_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
    /// Where the default key and operation window come from (SIGHUP may change them).
    pub live: Arc<LiveConfig>,
    /// Where "now" comes from: deadlines, listings' expiry views, lock states.
    pub clock: Arc<dyn Clock>,
}

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/v1/devices", get(devices::list_devices))
        .route(
            "/api/v1/devices/{name}",
            get(devices::get_device).patch(devices::patch_device),
        )
        .route(
            "/api/v1/devices/{name}/operation",
            put(devices::put_operation).delete(devices::delete_operation),
        )
        .route(
            "/api/v1/devices/{name}/certificate",
            get(devices::certificate),
        )
        .route(
            "/api/v1/devices/{name}/certificates",
            get(devices::certificates),
        )
        .route("/api/v1/devices/{name}/unlock", post(devices::unlock))
        .route("/api/v1/events", get(devices::events))
        .route("/api/v1/report", get(bulk::report))
        .route(
            "/api/v1/operations/bulk",
            post(bulk::bulk).layer(DefaultBodyLimit::max(bulk::MAX_BODY)),
        )
        .route("/api/v1/openapi.json", get(openapi_document))
        .layer(middleware::from_fn(deadline));
    Router::new()
        .merge(api)
        .route("/healthz", get(health))
        .route("/{file}", get(certificate_file))
        .with_state(state)
}

/// Whether the API may listen on `addr` without TLS: only on loopback, where bearer tokens
/// never cross a network.
pub fn plain_http_allowed(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// How the API is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiTransport {
    PlainHttp,
    /// TLS with the CAPF certificate and key.
    TlsCapfIdentity,
    /// TLS with this certificate chain and key (PEM files).
    TlsFiles(PathBuf, PathBuf),
}

/// Decides the API's transport: TLS whenever certificate files are given, TLS is asked for,
/// or the address is beyond loopback; the CAPF identity unless files are given.
pub fn transport(
    listen: SocketAddr,
    tls_asked: bool,
    files: Option<(PathBuf, PathBuf)>,
) -> ApiTransport {
    match files {
        Some((cert, key)) => ApiTransport::TlsFiles(cert, key),
        None if tls_asked || !plain_http_allowed(listen) => ApiTransport::TlsCapfIdentity,
        None => ApiTransport::PlainHttp,
    }
}

/// A request the database cannot answer in time gets 503, never a hang.
async fn deadline(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(request)).await {
        Ok(response) => response,
        Err(_) => problem::Problem::Unavailable.into_response(),
    }
}

async fn openapi_document(_access: access::ReadAccess) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::json(),
    )
        .into_response()
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
        assert!(plain_http_allowed("127.0.0.1:3805".parse().unwrap()));
        assert!(plain_http_allowed("[::1]:3805".parse().unwrap()));
        assert!(!plain_http_allowed("0.0.0.0:3805".parse().unwrap()));
        assert!(!plain_http_allowed("192.0.2.1:3805".parse().unwrap()));
    }

    #[test]
    fn tls_beyond_loopback_or_when_asked() {
        let loopback = "127.0.0.1:3805".parse().unwrap();
        let wide = "0.0.0.0:3805".parse().unwrap();
        let files = Some((PathBuf::from("api.pem"), PathBuf::from("api.key")));
        assert_eq!(transport(loopback, false, None), ApiTransport::PlainHttp);
        assert_eq!(
            transport(loopback, true, None),
            ApiTransport::TlsCapfIdentity
        );
        assert_eq!(transport(wide, false, None), ApiTransport::TlsCapfIdentity);
        for (addr, asked) in [(loopback, false), (wide, false), (wide, true)] {
            assert!(matches!(
                transport(addr, asked, files.clone()),
                ApiTransport::TlsFiles(..)
            ));
        }
    }

    #[test]
    fn openapi_names_every_route() {
        let doc = openapi::json();
        for path in [
            "/api/v1/devices",
            "/api/v1/devices/{name}",
            "/api/v1/devices/{name}/operation",
            "/api/v1/devices/{name}/certificate",
            "/api/v1/devices/{name}/certificates",
            "/api/v1/devices/{name}/unlock",
            "/api/v1/events",
            "/api/v1/report",
            "/api/v1/operations/bulk",
        ] {
            assert!(doc.contains(&format!("\"{path}\"")), "{path} missing");
        }
        assert!(doc.contains("bearer"));
    }
}
