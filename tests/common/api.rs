//! Talks HTTP to the admin API of a [`super::server::TestServer`].
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

pub(crate) struct Api {
    pub base: String,
    pub token: String,
    http: reqwest::Client,
}

/// The admin token the server wrote on first start.
pub(crate) fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data").join("admin.token"))
        .expect("admin.token")
        .trim()
        .to_string()
}

impl Api {
    pub(crate) fn new(api_addr: &str, token: &str) -> Api {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        Api {
            base: format!("http://{api_addr}"),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .no_proxy()
                .build()
                .expect("client"),
        }
    }

    /// Any request; `token` None sends no Authorization header.
    pub(crate) async fn raw(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.expect("API request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (
            status,
            headers,
            response.bytes().await.expect("body").to_vec(),
        )
    }

    /// A JSON request with the admin token; the answer as JSON (Null when not JSON).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let (status, _, body) = self
            .raw(Some(&self.token), method, path, "application/json", bytes)
            .await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None).await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub(crate) async fn csv(&self, query: &str, csv: String) -> (u16, Value) {
        let (status, _, body) = self
            .raw(
                Some(&self.token),
                Method::POST,
                &format!("/api/v1/operations/bulk{query}"),
                "text/csv",
                csv.into_bytes(),
            )
            .await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}
