//! Who may do what: tokens and scopes, device locks, the HTTPS API.

use super::*;

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

/// Finding 14: a password in `--api` is refused without being printed (it would otherwise go
/// out as Basic authentication and answer 401), and a token file others can read is warned
/// about.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_keeps_url_passwords_and_token_files_private() {
    let (_dir, _db, server, _api) = started(&Engine::Sqlite, &[]).await;
    let token_file = server.dir.join("data").join("admin.token");
    let out = Command::new(BIN)
        .args(["op", "list"])
        .args(["--api", &format!("http://admin:hunter2@{}", server.api)])
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .expect("run capf");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("must not carry a user name or password"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, stderr) = cli(&server, &["op", "list"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("readable by other users"), "{stderr}");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, stderr) = cli(&server, &["op", "list"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("readable by other users"), "{stderr}");
}
