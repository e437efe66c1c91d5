//! The admin API against the real server: tokens and scopes, every validation message,
//! the end-to-end story (schedule by API, enroll with `capf phone`, read the result through
//! the API and the CLI), listing, bulk, deadlines, key-generation limits, unlock, HTTPS.

#[path = "../common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Duration;

use capf_server::api::validate::*;
use common::api::{admin_token, Api};
use common::db::{engines, Engine, TestDb};
use common::server::{TestServer, BIN};
use reqwest::Method;
use serde_json::{json, Value};

fn cli(server: &TestServer, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--api", &format!("http://{}", server.api)])
        .arg("--token-file")
        .arg(server.dir.join("data").join("admin.token"))
        .current_dir(&server.dir)
        .output()
        .expect("run capf");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn token_cli(server: &TestServer, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(server.dir.join("data"))
        .args(["--database-url", &server.database_url])
        .output()
        .expect("run capf token");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// The device once `ready` holds (the server records a session's end just after closing
/// it, so right after the phone exits the record may still be on its way).
async fn wait_for(api: &Api, device: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let mut shown = Value::Null;
    for _ in 0..200 {
        let (status, body) = api.get(&format!("/api/v1/devices/{device}")).await;
        assert_eq!(status, 200);
        shown = body;
        if ready(&shown) {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{device}: never reached the expected state: {shown}");
}

async fn settled(api: &Api, device: &str) -> Value {
    wait_for(api, device, |v| !v["last_attempt"].is_null()).await
}

/// A fresh server on `engine` with `args`, and an admin API client holding its first token.
async fn started(engine: &Engine, args: &[&str]) -> (tempfile::TempDir, TestDb, TestServer, Api) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(engine, dir.path()).await;
    let server = TestServer::start(dir.path(), &db.url, args);
    let api = Api::new(&server.api, &admin_token(dir.path()));
    (dir, db, server, api)
}

/// Posts JSON rows to the bulk endpoint.
async fn bulk_rows(api: &Api, rows: Vec<Value>) -> (u16, Value) {
    api.call(
        Method::POST,
        "/api/v1/operations/bulk",
        Some(json!({ "rows": rows })),
    )
    .await
}

fn messages(body: &Value) -> Vec<(String, String)> {
    body["fields"]
        .as_array()
        .or_else(|| body["errors"].as_array())
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["field"].as_str().unwrap_or("").to_string(),
                f["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

// The tests, by concern.
mod access;
mod bulk;
mod story;
mod validation;
