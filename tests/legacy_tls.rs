//! Legacy TLS end to end: the real `capf serve` on loopback, and a TLS client of its own
//! (OpenSSL, not the server's code) forced to what old phones speak: TLS 1.0, RSA key
//! exchange, AES128-SHA. It verifies the server against capf.pem and enrolls through the
//! phone simulator's protocol logic.
#![cfg(feature = "legacy-tls")]

mod common;

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use capf::phone::{PhoneOptions, PhoneReport};
use capf_model::device::DeviceName;
use capf_model::keyspec::KeySpec;
use capf_model::operation::{AuthMode, CertState, OperationKind, OperationStatus};
use capf_store::Store;
use common::db::{Engine, TestDb};
use common::schedule;
use common::server::TestServer;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

const STEP: Duration = Duration::from_secs(20);

/// What 79xx-generation phones offer.
const OLD_PHONE: (SslVersion, &str) = (SslVersion::TLS1, "AES128-SHA");

async fn start(extra_args: &[&str]) -> (tempfile::TempDir, TestServer, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(&Engine::Sqlite, dir.path()).await;
    let server = TestServer::start(dir.path(), &db.url, extra_args);
    let store = server.store().await;
    (dir, server, store)
}

/// Connects with exactly one TLS version and cipher list, trusting capf.pem (no host name:
/// phones match none). Err is the handshake's refusal.
async fn legacy_connect(
    addr: &str,
    capf_pem: &Path,
    (version, ciphers): (SslVersion, &str),
) -> Result<SslStream<TcpStream>, String> {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
    // Level 0, or this OpenSSL 3 client would refuse TLS 1.0 itself.
    builder.set_security_level(0);
    builder.set_min_proto_version(Some(version)).unwrap();
    builder.set_max_proto_version(Some(version)).unwrap();
    builder.set_cipher_list(ciphers).unwrap();
    builder.set_ca_file(capf_pem).unwrap();
    builder.set_verify(SslVerifyMode::PEER);
    let ssl = builder
        .build()
        .configure()
        .unwrap()
        .verify_hostname(false)
        .use_server_name_indication(false)
        .into_ssl("capf")
        .unwrap();
    let tcp = tokio::time::timeout(STEP, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let mut tls = SslStream::new(ssl, tcp).unwrap();
    match tokio::time::timeout(STEP, Pin::new(&mut tls).connect()).await {
        Ok(Ok(())) => Ok(tls),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => panic!("legacy handshake with {addr} timed out"),
    }
}

fn version_and_cipher(tls: &SslStream<TcpStream>) -> (String, String) {
    (
        tls.ssl().version_str().to_string(),
        tls.ssl()
            .current_cipher()
            .map(|c| c.name().to_string())
            .unwrap_or_default(),
    )
}

/// Schedules an install, enrolls over `tls` and checks that the LSC is recorded.
async fn enroll(
    server: &TestServer,
    store: &dyn Store,
    device: &str,
    tls: SslStream<TcpStream>,
) -> PhoneReport {
    let op = schedule(
        store,
        device,
        OperationKind::Install,
        AuthMode::String,
        Some("2468"),
        KeySpec::Rsa(2048),
    )
    .await;
    let mut opts = PhoneOptions::new("unused", server.capf_pem(), device);
    opts.auth_string = Some("2468".into());
    opts.timeout = STEP;
    let report = capf::phone::run_on_stream(&opts, tls).await.expect("phone");
    assert!(report.succeeded(), "{}", report.summary());
    assert_eq!(report.operation, Some("install"));
    let lsc = pem::parse(report.lsc_pem.as_deref().expect("an LSC")).unwrap();
    let current = store
        .current_certificate(&DeviceName::from_admin(device).unwrap())
        .await
        .unwrap()
        .expect("the LSC is recorded");
    assert_eq!(current.state, CertState::Installed);
    assert_eq!(
        current.fingerprint_sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(lsc.contents()))
    );
    assert_eq!(common::status(store, op.id).await, OperationStatus::Success);
    report
}

fn server_log(server: &TestServer) -> String {
    std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn tls10_phone_enrolls_on_port_3804_beside_modern_phones() {
    let (_dir, mut server, store) = start(&["--legacy-tls"]).await;

    let tls = legacy_connect(&server.addr, &server.capf_pem(), OLD_PHONE)
        .await
        .expect("a TLS 1.0 phone is served on the main port");
    assert_eq!(
        version_and_cipher(&tls),
        ("TLSv1".to_string(), "AES128-SHA".to_string())
    );
    enroll(&server, &*store, "SEP0011223344A1", tls).await;

    // TLS 1.2 with RSA key exchange only (no ECDHE): rustls cannot, OpenSSL takes it.
    let tls = legacy_connect(
        &server.addr,
        &server.capf_pem(),
        (SslVersion::TLS1_2, "AES256-SHA256"),
    )
    .await
    .expect("an RSA-key-exchange TLS 1.2 client is served");
    assert_eq!(
        version_and_cipher(&tls),
        ("TLSv1.2".to_string(), "AES256-SHA256".to_string())
    );
    drop(tls);

    // A modern phone on the same port still gets rustls.
    let (code, text) = server.phone("SEP0011223344A2", &[]);
    assert_eq!(code, 3, "unknown device, over rustls: {text}");

    let stopped = server.stop();
    assert!(stopped.success());
    let log = server_log(&server);
    assert!(
        log.contains("legacy TLS handshake done (OpenSSL) version=TLSv1 cipher=AES128-SHA"),
        "{log}"
    );
    assert!(log.contains("TLS handshake done version=TLSv1_3"), "{log}");
    assert!(
        log.contains(
            "legacy TLS handshakes since start tls1_0=1 tls1_1=0 tls1_2=1 tls1_3=0 failed=0"
        ),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls10_phone_enrolls_on_a_legacy_listener_of_its_own() {
    let (_dir, server, store) = start(&["--legacy-tls-listen", "127.0.0.1:0"]).await;
    let legacy = server
        .legacy
        .clone()
        .expect("the legacy listener's address");

    // The main port stays rustls only.
    let refused = legacy_connect(&server.addr, &server.capf_pem(), OLD_PHONE).await;
    assert!(refused.is_err(), "TLS 1.0 on the rustls port");

    let tls = legacy_connect(&legacy, &server.capf_pem(), OLD_PHONE)
        .await
        .expect("TLS 1.0 on the legacy listener");
    assert_eq!(
        version_and_cipher(&tls),
        ("TLSv1".to_string(), "AES128-SHA".to_string())
    );
    enroll(&server, &*store, "SEP0011223344B1", tls).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tls10_phone_is_refused_without_legacy_tls() {
    let (_dir, server, _store) = start(&[]).await;
    assert!(server.legacy.is_none());
    for legacy in [
        OLD_PHONE,
        (SslVersion::TLS1_1, "AES128-SHA"),
        (SslVersion::TLS1_2, "AES128-SHA:AES256-SHA256"),
    ] {
        let refused = legacy_connect(&server.addr, &server.capf_pem(), legacy).await;
        assert!(refused.is_err(), "{legacy:?} was served by rustls");
    }
    // The same client with modern parameters is served: the refusals were about legacy TLS.
    let modern = legacy_connect(
        &server.addr,
        &server.capf_pem(),
        (SslVersion::TLS1_2, "ECDHE-RSA-AES128-GCM-SHA256"),
    )
    .await;
    assert!(modern.is_ok(), "{:?}", modern.err());
    // The operator sees why and what the phone offered.
    let log = server_log(&server);
    assert!(
        log.lines().any(|l| l.contains("TLS handshake failed")
            && l.contains("the client sent a ClientHello offering versions [up to 0301]")
            && l.contains("suites [002f")),
        "{log}"
    );
}

/// A TLS 1.0 ClientHello offering only TLS_RSA_WITH_AES_128_CBC_SHA, no extensions.
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![3, 1];
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0, 2, 0x00, 0x2f]);
    body.extend_from_slice(&[1, 0]); // null compression
    let mut hello = vec![1, 0, 0, body.len() as u8];
    hello.extend_from_slice(&body);
    let mut record = vec![22, 3, 1, 0, hello.len() as u8];
    record.extend_from_slice(&hello);
    record
}

/// Seconds until the server closes a connection that stops after sending `bytes`.
async fn closed_after(addr: &str, bytes: &[u8]) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let started = std::time::Instant::now();
    let mut sink = [0u8; 4096];
    let closed = async {
        // Whatever the server sends (its first flight) is read and ignored.
        while !matches!(tcp.read(&mut sink).await, Ok(0) | Err(_)) {}
    };
    tokio::time::timeout(STEP, closed)
        .await
        .expect("the server kept a stalled handshake open");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn stalled_handshakes_end_at_the_deadline_on_the_legacy_path() {
    let (_dir, server, _store) = start(&["--legacy-tls", "--handshake-timeout", "1"]).await;
    // Stalled inside the ClientHello (before a library is chosen) and after a legacy
    // ClientHello (inside OpenSSL's handshake): both end at the handshake deadline.
    for bytes in [&[22u8, 3, 1, 0][..], &tls10_client_hello()] {
        let waited = closed_after(&server.addr, bytes).await;
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    }
    // The connection closes as the handshake future is dropped, just before the line is
    // logged: give the log a moment.
    let mut log = String::new();
    for _ in 0..50 {
        log = server_log(&server);
        if log.matches("TLS handshake timed out").count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        log.contains("reason=\"offers neither TLS 1.2 nor TLS 1.3\""),
        "{log}"
    );
    assert_eq!(log.matches("TLS handshake timed out").count(), 2, "{log}");
}
