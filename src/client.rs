//! A small client of capf's admin API, for the CLI (and `capf bench`).

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the capf API at {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("capf API answered {status}: {message}")]
    Api {
        status: StatusCode,
        message: String,
        body: Value,
    },
    #[error("{0}")]
    Setup(String),
}

impl ClientError {
    /// The API refused the request's content (422).
    pub fn is_validation(&self) -> bool {
        matches!(self, ClientError::Api { status, .. } if *status == StatusCode::UNPROCESSABLE_ENTITY)
    }
}

/// Talks to one capf API with one bearer token.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

// Never print the token.
impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// `pinned_cert_der`: for an https API, the certificate to trust (the CAPF certificate
    /// unless the API has its own).
    pub fn new(
        base: &str,
        token: &str,
        pinned_cert_der: Option<Vec<u8>>,
    ) -> Result<ApiClient, ClientError> {
        // A user name or password in the URL would go out as Basic authentication beside the
        // token (the API answers 401) and be printed with every error: refused, and the URL
        // quoted without it.
        let parsed = url::Url::parse(base)
            .map_err(|e| ClientError::Setup(format!("--api is not a URL: {e}")))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(ClientError::Setup(format!(
                "--api {}: the URL must not carry a user name or password; the API takes a \
                 token (--token-file)",
                capf_store::redact_url(base)
            )));
        }
        // reqwest is built without a crypto provider of its own: it uses the process default,
        // the same aws-lc-rs provider as everything else in capf.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .connect_timeout(Duration::from_secs(10))
            .no_proxy();
        if let Some(der) = pinned_cert_der {
            let config = capf_server::pinned::pinned_client_config(der)
                .map_err(|e| ClientError::Setup(format!("TLS setup: {e}")))?;
            builder = builder.use_preconfigured_tls(config);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(format!("HTTP client setup: {e}")))?;
        Ok(ApiClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
        })
    }

    /// Reads a token file (first line), warning on stderr when other users may read it.
    pub fn read_token(path: &Path) -> Result<String, ClientError> {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                eprintln!(
                    "warning: {} holds an API token and is readable by other users (mode \
                     {mode:o}); chmod 600 it",
                    path.display()
                );
            }
        }
        std::fs::read_to_string(path)
            .map(|s| s.lines().next().unwrap_or("").trim().to_string())
            .map_err(|e| {
                ClientError::Setup(format!(
                    "cannot read the API token from {}: {e} (give --token or --token-file)",
                    path.display()
                ))
            })
    }

    /// Sends a request; returns the body of a 2xx answer, or the API's error.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .query(query);
        if let Some((content_type, bytes)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        let http_err = |source| ClientError::Http {
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(http_err)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http_err)?.to_vec();
        if status.is_success() {
            return Ok(bytes);
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let message = body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(ClientError::Api {
            status,
            message,
            body,
        })
    }

    /// A request with an optional JSON body, answered with JSON.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let body = body.map(|v| ("application/json", v.to_string().into_bytes()));
        let bytes = self.send(method, path, query, body).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Setup(format!("the API answered something not JSON: {e}")))
    }

    pub async fn schedule(&self, device: &str, request: &Value) -> Result<Value, ClientError> {
        let path = format!("/api/v1/devices/{device}/operation");
        self.json(Method::PUT, &path, &[], Some(request)).await
    }

    /// Bulk CSV import; returns the API's result whether it accepted the rows or not.
    pub async fn bulk_csv(
        &self,
        csv: Vec<u8>,
        dry_run: bool,
        generate_auth_strings: bool,
    ) -> Result<Value, ClientError> {
        let query = [
            ("dry_run".to_string(), dry_run.to_string()),
            (
                "generate_auth_strings".to_string(),
                generate_auth_strings.to_string(),
            ),
        ];
        let sent = self
            .send(
                Method::POST,
                "/api/v1/operations/bulk",
                &query,
                Some(("text/csv", csv)),
            )
            .await;
        match sent {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Setup(format!("unexpected answer: {e}"))),
            // Row errors come back as 422 with the same body.
            Err(ClientError::Api { status, body, .. })
                if status == StatusCode::UNPROCESSABLE_ENTITY && body.get("errors").is_some() =>
            {
                Ok(body)
            }
            Err(e) => Err(e),
        }
    }
}
