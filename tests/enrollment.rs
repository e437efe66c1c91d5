//! End to end: the real `capf serve` on loopback, enrolled against by the real `capf phone`
//! over real TLS, on SQLite and (with CAPF_TEST_POSTGRES) on PostgreSQL.

mod common;

use std::path::Path;
use std::process::Command;

use capf_model::device::DeviceName;
use capf_model::keyspec::{Curve, KeySpec};
use capf_model::operation::{AuthMode, CertState, OperationKind, OperationStatus};
use capf_pki::ca::phone_key::PhoneKey;
use capf_store::Store;
use common::db::{engines, Engine, TestDb};
use common::schedule;
use common::server::TestServer;
use der::{Decode, Encode};
use x509_cert::Certificate;

const PHONE: &str = "SEP001122334455";

/// The session's attempt record is written after the phone saw END_SESSION: poll briefly.
async fn eventually<T, F, Fut>(query: F) -> Vec<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = capf_store::Result<Vec<T>>>,
{
    for _ in 0..50 {
        let rows = query().await.unwrap();
        if !rows.is_empty() {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("nothing recorded after 5 s")
}

fn name(device: &str) -> DeviceName {
    DeviceName::from_admin(device).unwrap()
}

/// Runs `scenario` once per engine on a fresh server.
async fn each_engine<F, Fut>(extra_args: &[&str], scenario: F)
where
    F: Fn(TestServer, std::sync::Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::create(&engine, dir.path()).await;
        let server = TestServer::start(dir.path(), &db.url, extra_args);
        let store = server.store().await;
        eprintln!(
            "engine: {}",
            if matches!(engine, Engine::Sqlite) {
                "sqlite"
            } else {
                "postgres"
            }
        );
        scenario(server, store).await;
        db.drop_db().await;
    }
}

/// Reads the phone's output file: (LSC DER, key).
fn read_lsc(path: &Path) -> (Vec<u8>, PhoneKey) {
    let text = std::fs::read_to_string(path).unwrap();
    let blocks = pem::parse_many(&text).unwrap();
    let cert = blocks.iter().find(|p| p.tag() == "CERTIFICATE").unwrap();
    let key = blocks.iter().find(|p| p.tag() == "PRIVATE KEY").unwrap();
    (
        cert.contents().to_vec(),
        PhoneKey::from_pem(&pem::encode(key)).unwrap(),
    )
}

/// Checks an LSC against the profile of spec section 6 and capf.pem.
fn check_lsc(server: &TestServer, lsc_file: &Path, device: &str, key: KeySpec) {
    let (der, phone_key) = read_lsc(lsc_file);
    assert_eq!(phone_key.spec(), key);
    let status = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(server.capf_pem())
        .arg(lsc_file)
        .output()
        .expect("openssl verify");
    assert!(
        status.status.success(),
        "openssl verify: {}",
        String::from_utf8_lossy(&status.stdout)
    );

    let cert = Certificate::from_der(&der).unwrap();
    let capf =
        Certificate::from_der(&capf::phone::read_certificate(&server.capf_pem()).unwrap()).unwrap();
    let tbs = &cert.tbs_certificate;
    assert_eq!(
        tbs.issuer.to_der().unwrap(),
        capf.tbs_certificate.subject.to_der().unwrap()
    );
    assert!(
        tbs.subject.to_string().starts_with(&format!("CN={device}"))
            || tbs.subject.to_string().contains(&format!("CN={device}")),
        "{}",
        tbs.subject
    );
    // The key in the certificate is the phone's.
    assert_eq!(
        tbs.subject_public_key_info.to_der().unwrap(),
        phone_key.spki_der()
    );
    // Extensions in the profile's order.
    let exts = tbs.extensions.as_ref().unwrap();
    let oids: Vec<String> = exts.iter().map(|e| e.extn_id.to_string()).collect();
    assert_eq!(oids, ["2.5.29.19", "2.5.29.15", "2.5.29.37", "2.5.29.17"]);
    assert!(exts[0].critical && exts[1].critical && !exts[2].critical && !exts[3].critical);
    // SAN: one URI, the bare device name.
    let san = exts[3].extn_value.as_bytes();
    assert!(san.windows(device.len()).any(|w| w == device.as_bytes()));
    assert_eq!(san[2], 0x86, "SAN holds a uniformResourceIdentifier");
}

#[tokio::test(flavor = "multi_thread")]
async fn install_by_auth_string_rsa2048() {
    each_engine(&[], |server, store| async move {
        let op = schedule(
            &*store,
            PHONE,
            OperationKind::Install,
            AuthMode::String,
            Some("123456"),
            KeySpec::Rsa(2048),
        )
        .await;
        let out = server.dir.join("phone.pem");
        let (code, text) = server.phone(
            PHONE,
            &["--auth-string", "123456", "--out", out.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("certificate installed"), "{text}");
        check_lsc(&server, &out, PHONE, KeySpec::Rsa(2048));

        let op = store.operation(op.id).await.unwrap().unwrap();
        assert_eq!(op.status, OperationStatus::Success);
        assert_eq!(
            op.auth_string, None,
            "the authentication string is consumed"
        );
        let current = store
            .current_certificate(&name(PHONE))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(current.state, CertState::Installed);
        let (der, _) = read_lsc(&out);
        assert_eq!(
            current.fingerprint_sha256,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der))
        );
        let phone = name(PHONE);
        let attempts = eventually(|| store.attempts(&phone, 10)).await;
        assert_eq!(attempts[0].outcome, "installed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn install_by_null_string_ec_p256() {
    each_engine(&[], |server, store| async move {
        let device = "SEP00112233AABB";
        schedule(
            &*store,
            device,
            OperationKind::Install,
            AuthMode::Null,
            None,
            KeySpec::Ec(Curve::P256),
        )
        .await;
        let out = server.dir.join("ec.pem");
        let (code, text) = server.phone(device, &["--out", out.to_str().unwrap()]);
        assert_eq!(code, 0, "{text}");
        check_lsc(&server, &out, device, KeySpec::Ec(Curve::P256));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn troubleshoot_delete_and_nothing_pending() {
    each_engine(&[], |server, store| async move {
        schedule(
            &*store,
            PHONE,
            OperationKind::Install,
            AuthMode::Null,
            None,
            KeySpec::Rsa(2048),
        )
        .await;
        let lsc = server.dir.join("lsc.pem");
        let (code, text) = server.phone(PHONE, &["--out", lsc.to_str().unwrap()]);
        assert_eq!(code, 0, "{text}");
        let (der, _) = read_lsc(&lsc);
        let fingerprint = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&der));

        // Troubleshoot: the phone returns its LSC; the server ends with reason 0.
        let op = schedule(
            &*store,
            PHONE,
            OperationKind::Troubleshoot,
            AuthMode::String,
            Some("4321"),
            KeySpec::Rsa(2048),
        )
        .await;
        let (code, text) = server.phone(
            PHONE,
            &["--auth-string", "4321", "--lsc", lsc.to_str().unwrap()],
        );
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("reason 0"), "{text}");
        assert_eq!(
            common::status(&*store, op.id).await,
            OperationStatus::Success
        );
        let certs = store.certificates(&name(PHONE)).await.unwrap();
        assert!(certs
            .iter()
            .any(|c| c.state == CertState::Fetched && c.fingerprint_sha256 == fingerprint));

        // Nothing pending now: END_SESSION 0.
        let (code, text) = server.phone(PHONE, &["--lsc", lsc.to_str().unwrap()]);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("no pending operation"), "{text}");

        // Delete: the installed LSC is marked deleted.
        let op = schedule(
            &*store,
            PHONE,
            OperationKind::Delete,
            AuthMode::Null,
            None,
            KeySpec::Rsa(2048),
        )
        .await;
        let (code, text) = server.phone(PHONE, &["--lsc", lsc.to_str().unwrap()]);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("certificate deleted"), "{text}");
        assert_eq!(
            common::status(&*store, op.id).await,
            OperationStatus::Success
        );
        assert!(store
            .current_certificate(&name(PHONE))
            .await
            .unwrap()
            .is_none());
        let certs = store.certificates(&name(PHONE)).await.unwrap();
        assert!(certs
            .iter()
            .any(|c| c.state == CertState::Deleted && c.fingerprint_sha256 == fingerprint));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_device_and_wrong_auth_string() {
    each_engine(&[], |server, store| async move {
        let (code, text) = server.phone("SEPAAAAAAAAAAAA", &[]);
        assert_eq!(code, 3, "{text}");
        assert!(text.contains("reason 9"), "{text}");

        let op = schedule(
            &*store,
            PHONE,
            OperationKind::Install,
            AuthMode::String,
            Some("123456"),
            KeySpec::Rsa(2048),
        )
        .await;
        let (code, text) = server.phone(PHONE, &["--auth-string", "654321"]);
        assert_eq!(code, 2, "{text}");
        assert!(text.contains("reason 7"), "{text}");
        let op = store.operation(op.id).await.unwrap().unwrap();
        assert_eq!(op.status, OperationStatus::Pending);
        assert_eq!(
            store
                .lock_state(&name(PHONE))
                .await
                .unwrap()
                .failed_auth_count,
            1
        );
        // The attempt is on record, without the string.
        let events = store
            .events(capf_store::EventFilter {
                device_name: Some(PHONE.into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(events.iter().any(|e| e.kind == "auth_failed"));
        assert!(events
            .iter()
            .all(|e| !e.detail.contains("654321") && !e.detail.contains("123456")));

        // The right string still works afterwards.
        let (code, text) = server.phone(
            PHONE,
            &["--auth-string", "123456", "--no-request-in-progress"],
        );
        assert_eq!(code, 0, "{text}");
        assert_eq!(
            store
                .lock_state(&name(PHONE))
                .await
                .unwrap()
                .failed_auth_count,
            0
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn phone_that_drops_after_the_certificate_can_retry() {
    each_engine(&[], |server, store| async move {
        let op = schedule(
            &*store,
            PHONE,
            OperationKind::Install,
            AuthMode::Null,
            None,
            KeySpec::Ec(Curve::P384),
        )
        .await;
        let (code, text) = server.phone(PHONE, &["--drop-after-certificate"]);
        assert_eq!(code, 4, "{text}");
        // The server noticed the closed connection when it released the session's claim.
        common::wait_until_released(&*store, &name(PHONE)).await;
        assert_eq!(
            common::status(&*store, op.id).await,
            OperationStatus::Pending
        );
        let certs = store.certificates(&name(PHONE)).await.unwrap();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].state, CertState::AwaitingConfirmation);
        assert!(store
            .current_certificate(&name(PHONE))
            .await
            .unwrap()
            .is_none());

        let out = server.dir.join("retry.pem");
        let (code, text) = server.phone(PHONE, &["--out", out.to_str().unwrap()]);
        assert_eq!(code, 0, "{text}");
        assert_eq!(
            common::status(&*store, op.id).await,
            OperationStatus::Success
        );
        let certs = store.certificates(&name(PHONE)).await.unwrap();
        assert_eq!(
            certs
                .iter()
                .filter(|c| c.state == CertState::Installed)
                .count(),
            1
        );
        assert_eq!(
            certs
                .iter()
                .filter(|c| c.state == CertState::Abandoned)
                .count(),
            1
        );
        check_lsc(&server, &out, PHONE, KeySpec::Ec(Curve::P384));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn store_failure_keeps_the_operation_pending() {
    each_engine(&[], |server, store| async move {
        let op = schedule(
            &*store,
            PHONE,
            OperationKind::Install,
            AuthMode::Null,
            None,
            KeySpec::Ec(Curve::P256),
        )
        .await;
        let (code, text) = server.phone(PHONE, &["--fail-store"]);
        assert_eq!(code, 2, "{text}");
        assert_eq!(
            common::status(&*store, op.id).await,
            OperationStatus::Pending
        );
        assert!(store
            .current_certificate(&name(PHONE))
            .await
            .unwrap()
            .is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_identity_and_operations() {
    each_engine(&[], |mut server, store| async move {
        let before = std::fs::read(server.capf_pem()).unwrap();
        let key_before = std::fs::read(server.dir.join("certs/capf.key")).unwrap();
        let op = schedule(
            &*store,
            PHONE,
            OperationKind::Install,
            AuthMode::String,
            Some("2468"),
            KeySpec::Rsa(2048),
        )
        .await;
        server.restart();
        assert_eq!(std::fs::read(server.capf_pem()).unwrap(), before);
        assert_eq!(
            std::fs::read(server.dir.join("certs/capf.key")).unwrap(),
            key_before
        );
        let (code, text) = server.phone(PHONE, &["--auth-string", "2468"]);
        assert_eq!(code, 0, "{text}");
        assert_eq!(
            common::status(&*store, op.id).await,
            OperationStatus::Success
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jabber_version_2_gets_rsa() {
    each_engine(&[], |server, store| async move {
        let device = "CSFJSMITH";
        schedule(
            &*store,
            device,
            OperationKind::Install,
            AuthMode::Null,
            None,
            KeySpec::Rsa(2048),
        )
        .await;
        let out = server.dir.join("csf.pem");
        let (code, text) = server.phone(
            device,
            &[
                "--protocol-version",
                "2",
                "--no-request-in-progress",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{text}");
        check_lsc(&server, &out, device, KeySpec::Rsa(2048));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn capf_certificate_files_and_health_over_http() {
    each_engine(&[], |server, _store| async move {
        let certs = server.dir.join("certs");
        let pem = std::fs::read(certs.join("capf.pem")).unwrap();
        let der = std::fs::read(certs.join("capf.cer")).unwrap();
        let api = server.api.clone();
        let hash_file = std::fs::read_dir(&certs)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .find(|n| n.ends_with(".0"))
            .unwrap();
        let (status, body) = common::server::http_get(&api, "/capf.pem");
        assert_eq!((status, body), (200, pem.clone()));
        let (status, body) = common::server::http_get(&api, "/capf.cer");
        assert_eq!((status, body), (200, der));
        let (status, body) = common::server::http_get(&api, &format!("/{hash_file}"));
        assert_eq!((status, body), (200, pem));
        let (status, _) = common::server::http_get(&api, "/capf.key");
        assert_eq!(status, 404);
        let (status, body) = common::server::http_get(&api, "/healthz");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    })
    .await;
}

/// One `name{labels} value` line of the metrics text, or 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(series))
        .filter_map(|rest| rest.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_happened() {
    each_engine(
        &["--metrics-listen", "127.0.0.1:0"],
        |server, store| async move {
            let metrics = server.metrics.clone().expect("metrics endpoint started");
            let device = "SEP00112233AABB";
            schedule(
                &*store,
                device,
                OperationKind::Install,
                AuthMode::String,
                Some("2468"),
                KeySpec::Ec(Curve::P256),
            )
            .await;
            let (code, text) = server.phone(device, &["--auth-string", "1357"]);
            assert_eq!(code, 2, "{text}");
            let (code, text) = server.phone(device, &["--auth-string", "2468"]);
            assert_eq!(code, 0, "{text}");
            // Not TLS at all: a failed handshake.
            {
                use std::io::Write;
                let mut junk = std::net::TcpStream::connect(&server.addr).unwrap();
                junk.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
                let _ = std::io::Read::read(&mut junk, &mut [0u8; 64]);
            }
            // Sessions are counted after the phone saw END_SESSION: poll briefly.
            let mut text = String::new();
            for _ in 0..50 {
                let (status, body) = common::server::http_get(&metrics, "/metrics");
                assert_eq!(status, 200);
                text = String::from_utf8(body).unwrap();
                if metric(&text, "capf_sessions_total{outcome=\"installed\"}") == 1.0
                    && metric(
                        &text,
                        "capf_tls_handshake_failures_total{kind=\"protocol\"}",
                    ) == 1.0
                {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            for (series, value) in [
                ("capf_sessions_total{outcome=\"installed\"}", 1.0),
                ("capf_sessions_total{outcome=\"auth_refused\"}", 1.0),
                ("capf_sessions_active", 0.0),
                ("capf_enrollments_total{key=\"ec-p256\"}", 1.0),
                ("capf_tls_handshake_failures_total{kind=\"protocol\"}", 1.0),
                ("capf_issuance_seconds_count", 1.0),
                ("capf_operations{status=\"success\"}", 1.0),
                ("capf_lockouts_total", 0.0),
                ("capf_database_errors_total", 0.0),
            ] {
                assert_eq!(metric(&text, series), value, "{series} in\n{text}");
            }
        },
    )
    .await;
}
