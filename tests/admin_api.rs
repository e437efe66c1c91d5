//! The admin API against the real server: tokens and scopes, every validation message,
//! the end-to-end story (schedule by API, enroll with `capf phone`, read the result through
//! the API and the CLI), listing, bulk, deadlines, key-generation limits, unlock, HTTPS.

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

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_scopes() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::create(&engine, dir.path()).await;
        let server = TestServer::start(dir.path(), &db.url, &[]);
        let token_file = dir.path().join("data").join("admin.token");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "admin.token must be private");
        }
        let api = Api::new(&server.api, &admin_token(dir.path()));
        let path = "/api/v1/devices";

        let (status, headers, _) = api.raw(None, Method::GET, path, "", vec![]).await;
        assert_eq!(status, 401);
        assert_eq!(headers["www-authenticate"], "Bearer");
        let wrong = format!("capf_{}", "0".repeat(64));
        for bad in [wrong.as_str(), "nonsense", ""] {
            let (status, _, _) = api.raw(Some(bad), Method::GET, path, "", vec![]).await;
            assert_eq!(status, 401, "token {bad:?}");
        }
        assert_eq!(api.get(path).await.0, 200);

        // A read-only token reads but changes nothing.
        let (code, ro) = token_cli(&server, &["create", "--name", "auditor", "--read-only"]);
        assert_eq!(code, 0);
        assert!(ro.starts_with("capf_"));
        let (code, _) = token_cli(&server, &["create", "--name", "auditor"]);
        assert_ne!(code, 0, "token names are unique");
        let read_only = Api::new(&server.api, &ro);
        assert_eq!(read_only.get(path).await.0, 200);
        let (status, body) = read_only.get("/api/v1/openapi.json").await;
        assert_eq!(status, 200);
        assert!(body["paths"]["/api/v1/devices/{name}/operation"]["put"].is_object());
        let schedule = json!({"operation": "install", "auth_mode": "null"});
        let device_op = "/api/v1/devices/SEP001122334455/operation";
        assert_eq!(read_only.put(device_op, schedule.clone()).await.0, 403);
        let (status, _) = read_only
            .call(Method::POST, "/api/v1/devices/SEP001122334455/unlock", None)
            .await;
        assert_eq!(status, 403);
        let (status, _, _) = read_only
            .raw(
                Some(&ro),
                Method::POST,
                "/api/v1/operations/bulk",
                "text/csv",
                b"device\n".to_vec(),
            )
            .await;
        assert_eq!(status, 403);
        assert_eq!(api.put(device_op, schedule).await.0, 200);

        // Listing tokens shows names and scopes, never secrets; revoking shuts a token out.
        let (code, list) = token_cli(&server, &["list"]);
        assert_eq!(code, 0);
        assert!(
            list.contains("admin\tadmin") && list.contains("auditor\tread_only"),
            "{list}"
        );
        assert!(!list.contains(&ro) && !list.contains(&api.token));
        assert_eq!(token_cli(&server, &["revoke", "auditor"]).0, 0);
        assert_eq!(read_only.get(path).await.0, 401);
        assert_ne!(token_cli(&server, &["revoke", "auditor"]).0, 0);

        // A restart keeps the tokens and does not write a new admin token.
        let before = std::fs::read_to_string(&token_file).unwrap();
        let mut server = server;
        server.restart();
        assert_eq!(std::fs::read_to_string(&token_file).unwrap(), before);
        let api = Api::new(&server.api, &admin_token(dir.path()));
        assert_eq!(api.get(path).await.0, 200);
        drop(server);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_validation_message_and_hostile_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(&common::db::Engine::Sqlite, dir.path()).await;
    let server = TestServer::start(dir.path(), &db.url, &[]);
    let api = Api::new(&server.api, &admin_token(dir.path()));
    let op = "/api/v1/devices/SEP001122334455/operation";
    let string_mode = |extra: Value| {
        let mut body = json!({"operation": "install", "auth_mode": "string"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            string_mode(json!({"auth_string": "12a4"})),
            "auth_string",
            MSG_AUTH_CHARS,
        ),
        (
            string_mode(json!({"auth_string": "123"})),
            "auth_string",
            MSG_AUTH_LENGTH,
        ),
        (
            string_mode(json!({"auth_string": "12345678901"})),
            "auth_string",
            MSG_AUTH_LENGTH,
        ),
        (
            string_mode(json!({"auth_string": "1234", "completes_by": "2020-01-01T00:00:00Z"})),
            "completes_by",
            MSG_COMPLETES_BY_PAST,
        ),
        (
            string_mode(json!({"auth_string": "1234", "completes_by": "next tuesday"})),
            "completes_by",
            MSG_COMPLETES_BY_FORMAT,
        ),
        (string_mode(json!({})), "auth_string", MSG_AUTH_REQUIRED),
        (
            string_mode(json!({"auth_string": "1234", "generate_auth_string": true})),
            "auth_string",
            MSG_AUTH_BOTH,
        ),
        (
            string_mode(json!({"auth_string": "1234", "key": "rsa-512"})),
            "key",
            MSG_KEY,
        ),
        (
            json!({"operation": "install", "auth_mode": "null", "auth_string": "1234"}),
            "auth_string",
            MSG_AUTH_NOT_STRING_MODE,
        ),
        (
            json!({"operation": "reboot", "auth_mode": "null"}),
            "operation",
            MSG_OPERATION,
        ),
        (
            json!({"operation": "install", "auth_mode": "pin"}),
            "auth_mode",
            MSG_AUTH_MODE,
        ),
        (
            json!({"operation": "install", "auth_mode": "null", "colour": 1}),
            "colour",
            "Unknown field.",
        ),
    ];
    for (body, field, message) in cases {
        let (status, answer) = api.put(op, body.clone()).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(
            messages(&answer),
            vec![(field.to_string(), message.to_string())],
            "{body}"
        );
    }
    // A bad device name is reported together with the other fields.
    let (status, answer) = api
        .put(
            "/api/v1/devices/SEP0011/operation",
            json!({"operation": "install", "auth_mode": "string", "auth_string": "x"}),
        )
        .await;
    assert_eq!(status, 422);
    let fields: Vec<String> = messages(&answer).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["device", "auth_string"]);

    // Hostile bodies and parameters: a clear 4xx, never a 500, and the server keeps serving.
    let hostile: Vec<(Method, &str, &str, Vec<u8>)> = vec![
        (Method::PUT, op, "application/json", b"not json".to_vec()),
        (Method::PUT, op, "application/json", b"[1,2,3]".to_vec()),
        (Method::PUT, op, "application/json", vec![0xff, 0xfe, 0x00]),
        (
            Method::PUT,
            op,
            "application/json",
            b"{\"operation\": {\"a\": [[[[[]]]]]}}".to_vec(),
        ),
        (
            Method::PUT,
            "/api/v1/devices/%00%ff/operation",
            "application/json",
            b"{}".to_vec(),
        ),
        (
            Method::PUT,
            "/api/v1/devices/SEP0011223344556/operation",
            "application/json",
            b"{}".to_vec(),
        ),
        (Method::GET, "/api/v1/devices?status=everything", "", vec![]),
        (Method::GET, "/api/v1/devices?limit=0", "", vec![]),
        (
            Method::GET,
            "/api/v1/devices?limit=99999999999999999999",
            "",
            vec![],
        ),
        (
            Method::GET,
            "/api/v1/devices?lsc_expires_before=yesterday",
            "",
            vec![],
        ),
        (Method::GET, "/api/v1/events?after=x", "", vec![]),
        (
            Method::POST,
            "/api/v1/operations/bulk",
            "text/csv",
            b"\xff\xfe,\n\x00".to_vec(),
        ),
        (
            Method::POST,
            "/api/v1/operations/bulk",
            "application/json",
            b"{\"rows\": 1}".to_vec(),
        ),
        (
            Method::POST,
            "/api/v1/operations/bulk?dry_run=maybe",
            "text/csv",
            b"device\n".to_vec(),
        ),
        (
            Method::PATCH,
            "/api/v1/devices/SEP001122334455",
            "application/json",
            b"{\"require_sudi\": 1}".to_vec(),
        ),
    ];
    for (method, path, content_type, body) in hostile {
        let (status, _, answer) = api
            .raw(Some(&api.token), method.clone(), path, content_type, body)
            .await;
        assert!(
            (400..500).contains(&status),
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert_eq!(api.get("/api/v1/devices").await.0, 200);
    drop(server);
    db.drop_db().await;
}

/// Schedule by API, enroll with `capf phone`, see success, the LSC and the audit events
/// through the API and the CLI; then cancel, certificates, report.
#[tokio::test(flavor = "multi_thread")]
async fn end_to_end_story() {
    for engine in engines() {
        let (dir, db, server, api) = started(&engine, &[]).await;
        let device = "SEP00AABBCCDD01";
        let (status, body) = api
            .put(
                &format!("/api/v1/devices/{}/operation", device.to_lowercase()),
                json!({"operation": "install", "auth_mode": "string",
                       "generate_auth_string": true, "key": "ec-p256"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["device"], device, "SEP names are stored upper-case");
        assert_eq!(body["status"]["text"], "Operation Pending");
        let secret = body["auth_string"].as_str().unwrap().to_string();
        assert_eq!(check_auth_string(&secret), None);
        let completes_by = chrono::DateTime::parse_from_rfc3339(
            body["operation"]["completes_by"].as_str().unwrap(),
        )
        .unwrap();
        let days = (completes_by.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
        assert!(
            (167..=168).contains(&days),
            "default window is 7 days: {days} h"
        );
        // The admin sees the string to give the phone user; it is never in listings.
        let (_, shown) = api.get(&format!("/api/v1/devices/{device}")).await;
        assert_eq!(shown["operation"]["auth_string"], secret.as_str());
        let (_, listed) = api.get("/api/v1/devices").await;
        assert!(!listed.to_string().contains(&secret));

        let out = dir.path().join("lsc.pem");
        let (code, text) = server.phone(
            device,
            &["--auth-string", &secret, "--out", out.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{text}");

        // The attempt is recorded as the session ends, which may be just after the phone exits.
        let shown = settled(&api, device).await;
        assert_eq!(shown["status"]["text"], "Upgrade Success");
        assert_eq!(shown["status"]["code"], "success");
        assert!(shown["operation"].get("auth_string").is_none());
        assert_eq!(shown["lock"]["locked"], false);
        assert_eq!(shown["last_attempt"]["outcome"], "installed");
        assert_eq!(shown["last_attempt"]["source_addr"], "127.0.0.1");
        let serial = shown["lsc"]["serial"].as_str().unwrap().to_string();

        let (status, _, pem) = api
            .raw(
                Some(&api.token),
                Method::GET,
                &format!("/api/v1/devices/{device}/certificate"),
                "",
                vec![],
            )
            .await;
        assert_eq!(status, 200);
        let issued = pem::parse(&pem).unwrap();
        let written = std::fs::read(&out).unwrap();
        let written = pem::parse_many(&written).unwrap();
        assert!(written.iter().any(|p| p.contents() == issued.contents()));
        let (_, history) = api
            .get(&format!("/api/v1/devices/{device}/certificates"))
            .await;
        assert_eq!(history[0]["state"], "installed");
        assert_eq!(history[0]["serial"], serial.as_str());

        let (_, events) = api.get(&format!("/api/v1/events?device={device}")).await;
        let kinds: Vec<&str> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        for kind in [
            "device_created",
            "operation_scheduled",
            "operation_claimed",
            "certificate_issued",
            "certificate_installed",
            "operation_succeeded",
        ] {
            assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
        }
        assert!(
            !events.to_string().contains(&secret),
            "audit never holds the string"
        );

        // The CLI tells the same story.
        let (code, text, err) = cli(&server, &["op", "show", device]);
        assert_eq!(code, 0, "{err}");
        assert!(
            text.contains("Upgrade Success") && text.contains(&serial),
            "{text}"
        );
        let (code, trail, err) = cli(&server, &["op", "events", device]);
        assert_eq!(code, 0, "{err}");
        let cli_kinds: Vec<&str> = trail
            .lines()
            .map(|l| l.split_whitespace().nth(2).unwrap_or(""))
            .collect();
        assert_eq!(cli_kinds, kinds, "{trail}");
        assert!(trail.lines().all(|l| l.contains(device)), "{trail}");
        assert!(!trail.contains(&secret), "audit never holds the string");
        let (code, trail, _) = cli(&server, &["op", "events", device, "--json"]);
        assert_eq!(code, 0);
        let first: Value = serde_json::from_str(trail.lines().next().unwrap()).unwrap();
        assert_eq!(first, events["events"][0]);
        let (status, headers, report) = api
            .raw(Some(&api.token), Method::GET, "/api/v1/report", "", vec![])
            .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
        let report = String::from_utf8(report).unwrap();
        assert_eq!(
            report.lines().next().unwrap(),
            "device,lsc_status,lsc_serial,lsc_not_after,operation,status,status_code,cause,\
             completes_by,last_attempt_at,last_attempt_source,last_attempt_outcome"
        );
        let (code, cli_report, _) = cli(&server, &["report"]);
        assert_eq!(code, 0);
        assert_eq!(cli_report, report);
        let line = report.lines().find(|l| l.starts_with(device)).unwrap();
        assert!(
            line.contains(&serial) && line.contains("Upgrade Success"),
            "{line}"
        );

        // From here on the audit trail only grows: events since a moment are the later ones.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mark = chrono::Utc::now();
        let since = mark.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        tokio::time::sleep(Duration::from_millis(20)).await;

        // Cancel through the CLI: the status reads None again, cancelling twice is a 404.
        let (code, _, err) = cli(
            &server,
            &[
                "op",
                "schedule",
                device,
                "--operation",
                "delete",
                "--auth-mode",
                "lsc",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(cli(&server, &["op", "cancel", device]).0, 0);
        let (_, shown) = api.get(&format!("/api/v1/devices/{device}")).await;
        assert_eq!(shown["status"]["text"], "None");
        assert_eq!(shown["status"]["code"], "cancelled");
        let (status, _) = api
            .call(
                Method::DELETE,
                &format!("/api/v1/devices/{device}/operation"),
                None,
            )
            .await;
        assert_eq!(status, 404);
        let (status, later) = api
            .get(&format!("/api/v1/events?device={device}&since={since}"))
            .await;
        assert_eq!(status, 200, "{later}");
        let later = later["events"].as_array().unwrap();
        let later_kinds: Vec<&str> = later.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(later_kinds, ["operation_scheduled", "operation_cancelled"]);
        for e in later {
            let at = chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).unwrap();
            assert!(at >= mark, "{e} is before {since}");
        }
        let (code, trail, err) = cli(&server, &["op", "events", device, "--since", &since]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(trail.lines().count(), 2, "{trail}");
        assert!(trail.contains("operation_cancelled"), "{trail}");
        let (code, _, err) = cli(&server, &["op", "events", device, "--since", "soon"]);
        assert_eq!(code, 2, "a bad time is a field error: {err}");
        assert!(err.contains("since"), "{err}");
        // The phone connecting now has nothing to do.
        let (code, text) = server.phone(device, &["--auth-string", "1234"]);
        assert_eq!(code, 0, "{text}");
        let (_, shown) = api.get(&format!("/api/v1/devices/{device}")).await;
        assert_eq!(shown["lsc"]["serial"], serial.as_str());
        drop(server);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_filters_cursor_and_bulk_by_query() {
    for engine in engines() {
        let (_dir, db, server, api) = started(&engine, &[]).await;
        let rows: Vec<Value> = (0..25)
            .map(|i| {
                json!({"device": format!("SEP0000000000{i:02X}"), "operation": "install",
                       "auth_mode": "null", "key": "ec-p256"})
            })
            .chain((0..5).map(|i| {
                json!({"device": format!("CSFUSER{i}"), "operation": "troubleshoot",
                       "auth_mode": "null"})
            }))
            .collect();
        let (status, body) = bulk_rows(&api, rows).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["scheduled"], 30);
        // Two phones enroll.
        for device in ["SEP000000000000", "SEP000000000001"] {
            let (code, text) = server.phone(device, &[]);
            assert_eq!(code, 0, "{text}");
        }

        let count = |query: &'static str| {
            let api = &api;
            async move {
                let (status, body) = api
                    .get(&format!("/api/v1/devices?limit=1000&{query}"))
                    .await;
                assert_eq!(status, 200, "{query}: {body}");
                body["devices"].as_array().unwrap().len()
            }
        };
        assert_eq!(count("").await, 30);
        assert_eq!(count("status=pending").await, 28);
        assert_eq!(count("status=success").await, 2);
        assert_eq!(count("lsc=present").await, 2);
        assert_eq!(count("lsc=absent").await, 28);
        assert_eq!(count("operation=troubleshoot").await, 5);
        assert_eq!(count("prefix=CSF").await, 5);
        assert_eq!(count("prefix=sep00000000001").await, 9);
        assert_eq!(count("lsc_expires_before=2099-01-01").await, 2);
        assert_eq!(count("lsc_expires_before=2000-01-01").await, 0);
        assert_eq!(count("status=none").await, 0);

        // Pages of 7 cover everything once, in name order.
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/devices?limit=7&cursor={c}"),
                None => "/api/v1/devices?limit=7".to_string(),
            };
            let (_, page) = api.get(&path).await;
            for d in page["devices"].as_array().unwrap() {
                names.push(d["name"].as_str().unwrap().to_string());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names.len(), 30);
        assert_eq!(names, sorted);

        // Bulk by query: renew every device that has an LSC (dry run first).
        let request = json!({"query": {"lsc": "present"}, "operation": "install",
                             "auth_mode": "lsc", "key": "ec-p384", "dry_run": true});
        let (status, body) = api
            .call(
                Method::POST,
                "/api/v1/operations/bulk",
                Some(request.clone()),
            )
            .await;
        assert_eq!(
            (status, body["rows"].as_u64(), body["scheduled"].as_u64()),
            (200, Some(2), Some(0))
        );
        assert_eq!(count("status=pending").await, 28);
        let mut apply = request;
        apply["dry_run"] = json!(false);
        let (status, body) = api
            .call(Method::POST, "/api/v1/operations/bulk", Some(apply))
            .await;
        assert_eq!(
            (status, body["scheduled"].as_u64()),
            (200, Some(2)),
            "{body}"
        );
        assert_eq!(count("status=pending").await, 30);
        let (code, listed, _) = cli(&server, &["op", "list", "--operation", "troubleshoot"]);
        assert_eq!(code, 0);
        assert_eq!(listed.lines().count(), 5, "{listed}");
        drop(server);
        db.drop_db().await;
    }
}

fn generated_csv(n: usize) -> String {
    let mut csv = String::from("device,operation,auth_mode,auth_string,key,completes_by\n");
    for i in 0..n {
        csv.push_str(&format!(
            "SEP{:012X},install,string,{},rsa-2048,\n",
            0x10_0000_0000u64 + i as u64,
            10_000_000 + i
        ));
    }
    csv
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_import_40000_rows_and_a_file_with_bad_rows() {
    for engine in engines() {
        let (dir, db, server, api) = started(&engine, &[]).await;

        let (status, body) = api.csv("", generated_csv(40_000)).await;
        assert_eq!(status, 200, "{}", body["errors"]);
        assert_eq!(body["scheduled"], 40_000);
        let store = server.store().await;
        let pending = store
            .list_devices(&capf_store::DeviceFilter {
                status: Some(capf_store::StatusFilter::Is(
                    capf_model::operation::OperationStatus::Pending,
                )),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(pending.len(), 40_000);

        // A file with bad rows: each reported with its line, nothing applied.
        let bad = "device,operation,auth_mode,auth_string,key,completes_by\n\
                   SEP0000000000A1,install,string,1234,,\n\
                   SEP0000000000A2,install,string,12x4,,\n\
                   SEP0000000000A3,upgrade,null,,rsa-9999,\n\
                   SEP0000000000A4,install,null,,,2001-01-01T00:00:00Z\n\
                   SEP0000000000A1,delete,null,,,\n\
                   NOT A NAME,install,null,,,\n";
        let (status, body) = api.csv("", bad.to_string()).await;
        assert_eq!(status, 422);
        let lines: Vec<(u64, &str)> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["line"].as_u64().unwrap(), e["field"].as_str().unwrap()))
            .collect();
        assert_eq!(
            lines,
            [
                (3, "auth_string"),
                (4, "key"),
                (5, "completes_by"),
                (6, "device"),
                (7, "device")
            ]
        );
        assert_eq!(body["scheduled"], 0);
        let name = capf_model::device::DeviceName::from_admin("SEP0000000000A1").unwrap();
        assert!(
            store.device(&name).await.unwrap().is_none(),
            "nothing applied"
        );
        // The CLI reports the same lines and exits 2; a dry run of a good file changes nothing.
        let file = dir.path().join("bad.csv");
        std::fs::write(&file, bad).unwrap();
        let (code, _, err) = cli(
            &server,
            &["op", "import", file.to_str().unwrap(), "--apply"],
        );
        assert_eq!(code, 2, "{err}");
        for line in ["line 3: auth_string", "line 4: key", "line 7: device"] {
            assert!(err.contains(line), "{line} missing: {err}");
        }
        let good = dir.path().join("good.csv");
        std::fs::write(
            &good,
            "device,operation,auth_mode\nSEP0000000000B1,install,string\nSEP0000000000B2,delete,null\n",
        )
        .unwrap();
        let (code, _, err) = cli(
            &server,
            &[
                "op",
                "import",
                good.to_str().unwrap(),
                "--generate-auth-strings",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("dry run"), "{err}");
        let b1 = capf_model::device::DeviceName::from_admin("SEP0000000000B1").unwrap();
        assert!(store.device(&b1).await.unwrap().is_none());
        let (code, out, err) = cli(
            &server,
            &[
                "op",
                "import",
                good.to_str().unwrap(),
                "--generate-auth-strings",
                "--apply",
            ],
        );
        assert_eq!(code, 0, "{err}");
        let generated: Vec<&str> = out.lines().skip(1).collect();
        assert_eq!(generated.len(), 1, "{out}");
        let (device, secret) = generated[0].split_once(',').unwrap();
        assert_eq!(device, "SEP0000000000B1");
        let op = store
            .pending_operation(&b1, chrono::Utc::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(op.auth_string.unwrap().0, secret);

        // More rows than the 10,000 the CLI once sent per request, every one generated: one
        // import never hands two devices the same string.
        let rows = 12_000;
        let mut csv = String::from("device,operation,auth_mode\n");
        for i in 0..rows {
            csv.push_str(&format!(
                "SEP{:012X},install,string\n",
                0x20_0000_0000u64 + i
            ));
        }
        let big = dir.path().join("generate.csv");
        std::fs::write(&big, csv).unwrap();
        let (code, out, err) = cli(
            &server,
            &[
                "op",
                "import",
                big.to_str().unwrap(),
                "--generate-auth-strings",
                "--apply",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains(&format!("{rows} operations scheduled")),
            "{err}"
        );
        let generated: Vec<(&str, &str)> = out
            .lines()
            .skip(1)
            .map(|l| l.split_once(',').unwrap())
            .collect();
        assert_eq!(generated.len(), rows as usize);
        let strings: std::collections::HashSet<&str> = generated.iter().map(|g| g.1).collect();
        assert_eq!(strings.len(), generated.len(), "a generated string repeats");
        assert!(strings.iter().all(|s| check_auth_string(s).is_none()));
        let (last_device, last_secret) = generated[generated.len() - 1];
        let last = capf_model::device::DeviceName::from_admin(last_device).unwrap();
        let op = store
            .pending_operation(&last, chrono::Utc::now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(op.auth_string.unwrap().0, last_secret);
        drop(server);
        db.drop_db().await;
    }
}

/// The row limit is a clear 422 that applies nothing; a JSON body of a few hundred rows
/// is applied with a distinct generated string for each.
#[tokio::test(flavor = "multi_thread")]
async fn bulk_row_limit_and_json_rows() {
    for engine in engines() {
        let (_dir, db, server, api) = started(&engine, &[]).await;
        let over = capf_server::api::bulk::MAX_ROWS + 1;
        let mut csv = String::from("device,operation,auth_mode\n");
        for i in 0..over {
            csv.push_str(&format!("SEP{:012X},install,null\n", i));
        }
        let (status, body) = api.csv("", csv).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(
            messages(&body),
            [(
                "rows".to_string(),
                "at most 100000 rows per request".to_string()
            )]
        );
        assert_eq!(body["scheduled"], 0);
        let rows: Vec<Value> = (0..over)
            .map(|i| {
                json!({"device": format!("SEP{i:012X}"), "operation": "install",
                            "auth_mode": "null"})
            })
            .collect();
        let (status, body) = bulk_rows(&api, rows).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(messages(&body)[0].0, "rows");
        // A body over the size limit is refused before it is read.
        let (status, _, answer) = api
            .raw(
                Some(&api.token),
                Method::POST,
                "/api/v1/operations/bulk",
                "text/csv",
                vec![b'x'; capf_server::api::bulk::MAX_BODY + 1],
            )
            .await;
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(status, 413, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("32 MiB"),
            "{answer}"
        );
        let (_, listed) = api.get("/api/v1/devices").await;
        assert_eq!(listed["devices"], json!([]), "nothing applied");

        let rows: Vec<Value> = (0..300)
            .map(|i| {
                json!({"device": format!("SEP0000000A{i:04X}"), "operation": "install",
                            "auth_mode": "string", "key": "ec-p256"})
            })
            .collect();
        let (status, body) = api
            .call(
                Method::POST,
                "/api/v1/operations/bulk",
                Some(json!({"rows": rows, "generate_auth_strings": true})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["rows"].as_u64(), body["scheduled"].as_u64()),
            (Some(300), Some(300))
        );
        let strings: std::collections::HashSet<&str> = body["auth_strings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["auth_string"].as_str().unwrap())
            .collect();
        assert_eq!(strings.len(), 300);
        let (_, listed) = api
            .get("/api/v1/devices?status=pending&operation=install&limit=1000")
            .await;
        assert_eq!(listed["devices"].as_array().unwrap().len(), 300);
        let (_, shown) = api.get("/api/v1/devices/SEP0000000A012B").await;
        assert_eq!(shown["operation"]["key"], "ec-p256");
        let secret = shown["operation"]["auth_string"].as_str().unwrap();
        assert!(strings.contains(secret));
        drop(server);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deadline_expiry_and_key_generation_limits() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::create(&engine, dir.path()).await;
        let server = TestServer::start(
            dir.path(),
            &db.url,
            &[
                "--keygen-timeout",
                "1",
                "--keygen-max-attempts",
                "2",
                "--sweep-interval",
                "1",
            ],
        );
        let api = Api::new(&server.api, &admin_token(dir.path()));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
        let late = "SEP00000000DEAD";
        let swept = "SEP00000000BEEF";
        for device in [late, swept] {
            let (status, body) = api
                .put(
                    &format!("/api/v1/devices/{device}/operation"),
                    json!({"operation": "install", "auth_mode": "null", "completes_by": soon}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
        // The sweeper marks both without any phone connecting (its logic against a clock
        // the test moves is in crates/server/tests/sweeper.rs; here, the real process)...
        let shown = wait_for(&api, swept, |v| v["status"]["code"] == "timed_out").await;
        assert_eq!(
            shown["status"]["text"],
            "Upgrade Failed: User Initiated Request Late"
        );
        // ... and a phone connecting after the deadline gets no operation.
        let (code, text) = server.phone(late, &[]);
        assert_eq!(code, 0, "{text}");
        let (_, shown) = api.get(&format!("/api/v1/devices/{late}")).await;
        assert_eq!(shown["status"]["code"], "timed_out");
        assert!(shown["lsc"].is_null());

        // Key generation: 1 s per attempt, 2 attempts.
        let slow = "SEP0000000051A0";
        let (status, _) = api
            .put(
                &format!("/api/v1/devices/{slow}/operation"),
                json!({"operation": "install", "auth_mode": "null", "key": "ec-p256"}),
            )
            .await;
        assert_eq!(status, 200);
        server.phone(slow, &["--stall-keygen"]);
        let shown = wait_for(&api, slow, |v| !v["status"]["cause"].is_null()).await;
        assert_eq!(shown["status"]["code"], "pending");
        assert_eq!(
            shown["status"]["text"],
            "Upgrade Failed: Key Generation Timeout"
        );
        assert_eq!(shown["operation"]["keygen_attempts"], 1);
        server.phone(slow, &["--stall-keygen"]);
        let shown = wait_for(&api, slow, |v| v["status"]["code"] != "pending").await;
        assert_eq!(shown["status"]["code"], "failed");
        assert_eq!(shown["status"]["cause"], "key_generation_timeout");
        assert_eq!(
            shown["status"]["text"],
            "Upgrade Failed: Key Generation Timeout"
        );
        // A third try finds nothing to do; the phone that would now answer gets no LSC.
        let (code, text) = server.phone(slow, &[]);
        assert_eq!(code, 0, "{text}");
        let (_, shown) = api.get(&format!("/api/v1/devices/{slow}")).await;
        assert!(shown["lsc"].is_null());
        drop(server);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_state_and_unlock_through_api_and_cli() {
    for engine in engines() {
        let (_dir, db, server, api) = started(&engine, &["--lockout-failures", "3"]).await;
        let device = "SEP0000000010CC";
        let (status, _) = api
            .put(
                &format!("/api/v1/devices/{device}/operation"),
                json!({"operation": "install", "auth_mode": "string", "auth_string": "2468",
                       "key": "ec-p256"}),
            )
            .await;
        assert_eq!(status, 200);
        server.phone(device, &["--auth-string", "1111"]);
        let (_, shown) = api.get(&format!("/api/v1/devices/{device}")).await;
        assert_eq!(shown["lock"]["failed_auth_count"], 1);
        assert_eq!(
            shown["status"]["text"],
            "Upgrade Failed: Invalid Authentication String"
        );
        assert_eq!(shown["status"]["code"], "pending");
        for _ in 0..2 {
            server.phone(device, &["--auth-string", "1111"]);
        }
        let (_, shown) = api.get(&format!("/api/v1/devices/{device}")).await;
        assert_eq!(shown["lock"]["locked"], true, "{shown}");
        assert!(shown["lock"]["locked_until"].is_string());
        let (code, text) = server.phone(device, &["--auth-string", "2468"]);
        assert_eq!(code, 2, "locked: even the right string is refused: {text}");

        let (code, out, err) = cli(&server, &["unlock", device]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("\"locked\": false"), "{out}");
        let (_, shown) = api.get(&format!("/api/v1/devices/{device}")).await;
        assert_eq!(shown["lock"]["locked"], false);
        assert_eq!(shown["lock"]["failed_auth_count"], 0);
        let (code, text) = server.phone(device, &["--auth-string", "2468"]);
        assert_eq!(code, 0, "{text}");
        let (status, _) = api
            .call(Method::POST, "/api/v1/devices/SEP00000000FFFF/unlock", None)
            .await;
        assert_eq!(status, 404);
        drop(server);
        db.drop_db().await;
    }
}

/// `--api-tls` serves TLS on loopback with what a non-loopback address gets by default,
/// the CAPF identity: the CLI and the CTL client's download work pinned to capf.pem.
#[tokio::test(flavor = "multi_thread")]
async fn https_api_with_the_capf_identity() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(&common::db::Engine::Sqlite, dir.path()).await;
    let mut server = TestServer::start(dir.path(), &db.url, &["--api-tls"]);
    let certs = dir.path().join("certs");
    let (cert, key) = (certs.join("capf.pem"), certs.join("capf.key"));
    let https = format!("https://{}", server.api);
    let op_list = |cert: &std::path::Path| {
        Command::new(BIN)
            .args(["op", "list", "--api", &https])
            .arg("--token-file")
            .arg(dir.path().join("data").join("admin.token"))
            .arg("--api-cert")
            .arg(cert)
            .output()
            .unwrap()
    };
    let out = op_list(&cert);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read(&cert).unwrap();
    let der = pem::parse(&pem).unwrap().into_contents();
    let client = capf::client::ApiClient::new(&https, "", Some(der)).unwrap();
    let fetched = client
        .send(Method::GET, "/capf.pem", &[], None)
        .await
        .unwrap();
    assert_eq!(fetched, pem, "capf.pem over https, byte for byte");
    // Pinned to another certificate, the CLI refuses the server.
    let other = dir.path().join("other.pem");
    let generated = rcgen::generate_simple_self_signed(vec!["capf".into()]).unwrap();
    std::fs::write(&other, generated.cert.pem()).unwrap();
    assert!(!op_list(&other).status.success());
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("HTTP API ready") && l.contains("https")),
        "{log}"
    );
    // Plain HTTP to the TLS port is never answered in HTTP.
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(&server.api).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: capf\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP answered on the TLS port"
    );

    // --api-cert/--api-key name the certificate instead.
    server.stop();
    let server = TestServer::start(
        dir.path(),
        &db.url,
        &[
            "--api-cert",
            cert.to_str().unwrap(),
            "--api-key",
            key.to_str().unwrap(),
        ],
    );
    let https = format!("https://{}", server.api);
    let out = Command::new(BIN)
        .args(["op", "list", "--api", &https])
        .arg("--token-file")
        .arg(dir.path().join("data").join("admin.token"))
        .arg("--api-cert")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
    db.drop_db().await;
}
