//! Certificate authentication and the lockout, end to end with the real binaries.

mod common;

use capf_model::device::DeviceName;
use capf_model::keyspec::{Curve, KeySpec};
use capf_model::operation::{AuthMode, OperationStatus};
use chrono::Utc;
use common::db::{engines, TestDb};
use common::server::TestServer;
use common::{install_p256, schedule_install};

#[tokio::test(flavor = "multi_thread")]
async fn lsc_precedence_re_enrollment_and_foreign_lsc() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::create(&engine, dir.path()).await;
        let server = TestServer::start(dir.path(), &db.url, &[]);
        let store = server.store().await;
        let (a, b) = ("SEP00112233AABB", "SEP0011223344CC");
        for device in [a, b] {
            install_p256(&*store, device, AuthMode::Null, None).await;
            let out = dir.path().join(format!("{device}.pem"));
            let (code, text) = server.phone(device, &["--out", out.to_str().unwrap()]);
            assert_eq!(code, 0, "{text}");
        }
        let lsc_a = dir.path().join(format!("{a}.pem"));

        // Re-enrollment authenticated by the device's own LSC.
        let op = schedule_install(&*store, a, AuthMode::Lsc, None, KeySpec::Ec(Curve::P384)).await;
        let renewed = dir.path().join("renewed.pem");
        let (code, text) = server.phone(
            a,
            &[
                "--lsc",
                lsc_a.to_str().unwrap(),
                "--cert-auth",
                "--out",
                renewed.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{text}");
        assert_eq!(common::status(&*store, op).await, OperationStatus::Success);

        // Device B presenting A's valid LSC (signed correctly with A's key) is refused.
        let op = install_p256(&*store, b, AuthMode::Lsc, None).await;
        let (code, text) = server.phone(b, &["--lsc", renewed.to_str().unwrap(), "--cert-auth"]);
        assert_eq!(code, 2, "{text}");
        assert_eq!(common::status(&*store, op).await, OperationStatus::Pending);

        // A's superseded LSC no longer authenticates A.
        let op = install_p256(&*store, a, AuthMode::Lsc, None).await;
        let (code, text) = server.phone(a, &["--lsc", lsc_a.to_str().unwrap(), "--cert-auth"]);
        assert_eq!(code, 2, "{text}");
        assert_eq!(common::status(&*store, op).await, OperationStatus::Pending);
        drop(server);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_wrong_strings_lock_the_device_across_a_restart() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::create(&engine, dir.path()).await;
        let mut server = TestServer::start(dir.path(), &db.url, &[]);
        let store = server.store().await;
        let device = "SEP001122334455";
        let name = DeviceName::from_admin(device).unwrap();
        let op = install_p256(&*store, device, AuthMode::String, Some("123456")).await;
        for i in 0..10 {
            let (code, text) =
                server.phone(device, &["--auth-string", &format!("{:06}", 200000 + i)]);
            assert_eq!(code, 2, "{text}");
        }
        let lock = store.lock_state(&name).await.unwrap();
        assert!(lock.is_locked(Utc::now()), "{lock:?}");

        // Locked: even the right string is refused, and it survives a restart.
        let (code, text) = server.phone(device, &["--auth-string", "123456"]);
        assert_eq!(code, 2, "{text}");
        server.restart();
        let (code, text) = server.phone(device, &["--auth-string", "123456"]);
        assert_eq!(code, 2, "{text}");
        assert_eq!(common::status(&*store, op).await, OperationStatus::Pending);
        let events = store
            .events(capf_store::EventFilter {
                device_name: Some(device.into()),
                limit: 0,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            events.iter().filter(|e| e.kind == "auth_failed").count(),
            10
        );
        assert!(events.iter().any(|e| e.kind == "device_locked"));
        assert!(
            events
                .iter()
                .filter(|e| e.kind == "auth_refused_locked")
                .count()
                >= 2
        );
        assert!(events.iter().all(|e| !e.detail.contains("123456")));

        // The window's end is tested in process, with a clock the test moves
        // (crates/server/tests/lockout.rs); here the admin's unlock lets the right string in.
        assert!(lock.locked_until.is_some());
        store.unlock(&name, Utc::now()).await.unwrap();
        let (code, text) = server.phone(device, &["--auth-string", "123456"]);
        assert_eq!(code, 0, "{text}");
        assert_eq!(common::status(&*store, op).await, OperationStatus::Success);
        drop(server);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn guesses_sent_at_once_are_checked_at_most_the_lockout_number() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::create(&engine, dir.path()).await;
        let server = TestServer::start(dir.path(), &db.url, &["--lockout-failures", "3"]);
        let store = server.store().await;
        let device = "SEP0011223344DD";
        let op = install_p256(&*store, device, AuthMode::String, Some("123456")).await;
        // Twelve wrong guesses at once.
        let guesses: Vec<String> = (0..12).map(|i| format!("{:06}", 300000 + i)).collect();
        let phones: Vec<_> = guesses
            .iter()
            .map(|g| server.spawn_phone(device, &["--auth-string", g]))
            .collect();
        for phone in phones {
            let out = phone.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{text}");
            assert!(text.contains("reason 7"), "{text}");
        }
        let events = store
            .events(capf_store::EventFilter {
                device_name: Some(device.into()),
                limit: 0,
                ..Default::default()
            })
            .await
            .unwrap();
        let kinds = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
        let succeeded = common::status(&*store, op).await == OperationStatus::Success;
        // At most three secrets were ever compared; every other phone was turned away unchecked.
        assert_eq!(
            kinds("auth_failed") + usize::from(succeeded),
            3,
            "{events:#?}"
        );
        assert_eq!(kinds("auth_refused_locked"), 9, "{events:#?}");
        assert!(events.iter().all(|e| !e.detail.contains("123456")));
        drop(server);
        db.drop_db().await;
    }
}

fn vector_cert(name: &str) -> String {
    format!("{}/tests/vectors/certs/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread")]
async fn mic_authentication_with_sudi_and_trust_reload() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::create(&engine, dir.path()).await;
        // No manufacturer CA yet: the stand-in MIC is untrusted.
        let server = TestServer::start(dir.path(), &db.url, &[]);
        let store = server.store().await;
        let device = "SEP001122334455";
        let name = DeviceName::from_admin(device).unwrap();
        let op = schedule_install(&*store, device, AuthMode::Mic, None, KeySpec::Rsa(2048)).await;
        let mic = vector_cert("mic.pem");
        let sudi = vector_cert("sudi.pem");
        let args = [
            "--lsc",
            mic.as_str(),
            "--cert-auth",
            "--sudi",
            sudi.as_str(),
        ];
        let (code, text) = server.phone(device, &args);
        assert_eq!(code, 2, "untrusted MIC accepted: {text}");
        assert_eq!(common::status(&*store, op).await, OperationStatus::Pending);

        // The admin drops the manufacturer CA in and sends SIGHUP.
        let trust = dir.path().join("certs/mic-trust");
        std::fs::create_dir_all(&trust).unwrap();
        std::fs::copy(
            vector_cert("mic-root.pem"),
            trust.join("test-manufacturing-ca.pem"),
        )
        .unwrap();
        let pid = server.child.id().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
        let mut accepted = false;
        for _ in 0..20 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            // Each refusal counts toward the lockout; stay well under it.
            store.unlock(&name, Utc::now()).await.unwrap();
            let (code, _) = server.phone(device, &args);
            if code == 0 {
                accepted = true;
                break;
            }
        }
        assert!(accepted, "MIC not accepted after SIGHUP");
        assert_eq!(common::status(&*store, op).await, OperationStatus::Success);

        // A device that requires SUDI is refused without it, accepted with it.
        store
            .set_require_sudi(&name, true, Utc::now())
            .await
            .unwrap();
        let op = schedule_install(&*store, device, AuthMode::Mic, None, KeySpec::Rsa(2048)).await;
        let (code, text) = server.phone(device, &["--lsc", mic.as_str(), "--cert-auth"]);
        assert_eq!(code, 2, "{text}");
        let (code, text) = server.phone(device, &args);
        assert_eq!(code, 0, "{text}");
        assert_eq!(common::status(&*store, op).await, OperationStatus::Success);

        // MIC precedence refuses the LSC the device now has.
        let op = schedule_install(&*store, device, AuthMode::Mic, None, KeySpec::Rsa(2048)).await;
        let lsc = dir.path().join(format!("{device}.pem"));
        let (code, text) = server.phone(
            device,
            &[
                "--lsc",
                lsc.to_str().unwrap(),
                "--cert-auth",
                "--sudi",
                sudi.as_str(),
            ],
        );
        assert_eq!(code, 2, "{text}");
        assert_eq!(common::status(&*store, op).await, OperationStatus::Pending);
        drop(server);
        db.drop_db().await;
    }
}
