//! Malformed and hostile input over live connections never crashes the server and never
//! disturbs a concurrent enrollment.

mod common;

#[path = "common/vectors.rs"]
mod vectors;

use std::time::Duration;

use capf::device::DeviceName;
use capf::keyspec::KeySpec;
use capf::phone::{connect, read_certificate, read_frame, PhoneError};
use capf::proto::{reason, Message};
use capf::store::{AuthMode, NewOperation, OperationKind, OperationStatus};
use chrono::Utc;
use common::db::{engines, TestDb};
use common::server::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the server did after the frame: END_SESSION with a reason, or closed without one.
async fn answer_to(
    server: &TestServer,
    capf_der: &[u8],
    case: &vectors::VectorFrame,
) -> Option<u8> {
    let mut tls = connect(&server.addr, capf_der.to_vec())
        .await
        .expect("connect");
    let (sid, first) = read_frame(&mut tls, Duration::from_secs(5))
        .await
        .expect("AUTH_REQUEST");
    assert!(matches!(first, Message::AuthRequest(_)));
    let mut bytes = case.bytes.clone();
    let expect = case.expect.as_deref().unwrap_or_default();
    if bytes.len() >= 6 {
        let id = if expect == "reject:session-id" {
            sid.wrapping_add(1)
        } else {
            sid
        };
        bytes[2..6].copy_from_slice(&id.to_be_bytes());
    }
    tls.write_all(&bytes).await.unwrap();
    tls.flush().await.unwrap();
    if expect == "reject:truncated-frame" {
        // The peer stops sending: closing our side is what ends the wait quickly.
        let _ = tls.shutdown().await;
    }
    match read_frame(&mut tls, Duration::from_secs(10)).await {
        Ok((_, Message::EndSession(end))) => end.reason,
        Ok((_, other)) => panic!("line {}: unexpected {}", case.line, other.name()),
        Err(PhoneError::Timeout) => {
            panic!("line {}: server neither answered nor closed", case.line)
        }
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_frames_over_live_connections() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::create(&engine, dir.path()).await;
        let server = TestServer::start(dir.path(), &db.url, &["--frame-timeout", "3"]);
        let store = server.store().await;
        let capf_der = read_certificate(&server.capf_pem()).unwrap();

        // An enrollment that runs while the garbage flies; the phone pauses in key generation.
        let device = "SEP0000000000AA";
        let op = store
            .schedule(
                NewOperation {
                    device_name: DeviceName::from_admin(device).unwrap(),
                    kind: OperationKind::Install,
                    auth_mode: AuthMode::Null,
                    auth_string: None,
                    key: KeySpec::Rsa(3072),
                    completes_by: Utc::now() + chrono::Duration::hours(1),
                },
                Utc::now(),
            )
            .await
            .unwrap();
        let phone = {
            let bin = common::server::BIN.to_string();
            let addr = server.addr.clone();
            let cert = server.capf_pem();
            let cwd = dir.path().to_path_buf();
            std::thread::spawn(move || {
                std::process::Command::new(bin)
                    .args(["phone", "--host", &addr, "--capf-cert"])
                    .arg(cert)
                    .arg(device)
                    .current_dir(cwd)
                    .output()
                    .unwrap()
            })
        };

        let file = vectors::load("malformed-frames");
        for case in &file.frames {
            let expect = case.expect.as_deref().unwrap();
            let answer = answer_to(&server, &capf_der, case).await;
            let wanted = match expect {
                // Known-good frames for devices this server does not know.
                "accept" | "accept-skip-unknown" | "reject:bad-device-name" => {
                    Some(reason::UNKNOWN_DEVICE)
                }
                "reject:protocol-id" | "reject:truncated-frame" => None,
                _ => Some(reason::INVALID_ELEMENT),
            };
            assert_eq!(answer, wanted, "line {} ({expect})", case.line);
        }

        // Garbage before the TLS handshake: the connection is dropped.
        let mut tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue, // a TLS alert may come first
                }
            }
        })
        .await;
        assert!(read.is_ok(), "garbage connection not closed");

        // A peer that stops mid-frame is dropped after the frame deadline.
        let mut tls = connect(&server.addr, capf_der.clone()).await.unwrap();
        read_frame(&mut tls, Duration::from_secs(5)).await.unwrap();
        tls.write_all(&[0x55, 0x02, 0x00]).await.unwrap();
        tls.flush().await.unwrap();
        let started = std::time::Instant::now();
        let closed = read_frame(&mut tls, Duration::from_secs(10)).await;
        assert!(
            closed.is_err(),
            "expected the server to close, got {closed:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(9));

        let output = phone.join().unwrap();
        assert!(
            output.status.success(),
            "concurrent enrollment failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            common::status(&*store, op.id).await,
            OperationStatus::Success
        );
        drop(server);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_flood_from_one_address_does_not_stop_another() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(&common::db::Engine::Sqlite, dir.path()).await;
    let server = TestServer::start(
        dir.path(),
        &db.url,
        &["--conn-rate", "2", "--conn-burst", "10"],
    );
    let store = server.store().await;
    let device = "SEP0000000000BB";
    let op = store
        .schedule(
            NewOperation {
                device_name: DeviceName::from_admin(device).unwrap(),
                kind: OperationKind::Install,
                auth_mode: AuthMode::Null,
                auth_string: None,
                key: KeySpec::Ec(capf::keyspec::Curve::P256),
                completes_by: Utc::now() + chrono::Duration::hours(1),
            },
            Utc::now(),
        )
        .await
        .unwrap();

    // 200 connections from 127.0.0.1 as fast as possible: beyond the burst they are closed
    // before any TLS work.
    let mut refused = 0;
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => refused += 1,
            _ => held.push(tcp),
        }
    }
    assert!(refused >= 150, "only {refused} of 200 refused");

    // A phone from another loopback address enrolls meanwhile.
    let (code, text) = server.phone(device, &["--bind", "127.0.0.2"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        common::status(&*store, op.id).await,
        OperationStatus::Success
    );
    drop(held);
}
