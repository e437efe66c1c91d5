//! SIGTERM: stop accepting, let sessions in flight finish up to the drain deadline, exit 0;
//! a second SIGTERM exits at once. Against the real binary on SQLite and (with
//! CAPF_TEST_POSTGRES) on PostgreSQL, where releasing the claims on the way out matters most:
//! another node serves the phone's retry.

mod common;

use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capf_model::device::DeviceName;
use capf_model::keyspec::{Curve, KeySpec};
use capf_model::operation::{AuthMode, OperationKind, OperationStatus};
use capf_store::Store;
use common::db::{engines, Engine, TestDb};
use common::server::TestServer;
use common::{schedule, wait_until_claimed};

fn sigterm(server: &TestServer) {
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
}

/// Waits up to `limit` for the server to exit.
fn exit_within(server: &mut TestServer, limit: Duration) -> (ExitStatus, Duration) {
    let started = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "server still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn scheduled(server: &TestServer, device: &str) -> (Arc<dyn Store>, DeviceName) {
    let store = server.store().await;
    schedule(
        &*store,
        device,
        OperationKind::Install,
        AuthMode::Null,
        None,
        KeySpec::Ec(Curve::P256),
    )
    .await;
    (store, DeviceName::from_admin(device).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_the_session_in_flight_and_exits_0() {
    for engine in engines() {
        drains_the_session_in_flight(&engine).await;
    }
}

async fn drains_the_session_in_flight(engine: &Engine) {
    eprintln!("engine: {}", engine.name());
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(engine, dir.path()).await;
    let mut server = TestServer::start(dir.path(), &db.url, &[]);
    let device = "SEP0000000D0001";
    let (store, name) = scheduled(&server, device).await;
    let phone = server.slow_phone(device, 1500);
    wait_until_claimed(&*store, &name).await;

    sigterm(&server);
    // No new connections once the signal is handled.
    let mut refused = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(&server.addr).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused, "still accepting after SIGTERM");

    let out = phone.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (status, _) = exit_within(&mut server, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    let op = store.latest_operation(&name).await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Success);
    drop(server);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_deadline_and_second_sigterm_end_sessions_without_losing_them() {
    for engine in engines() {
        deadline_and_second_sigterm(&engine).await;
    }
}

async fn deadline_and_second_sigterm(engine: &Engine) {
    eprintln!("engine: {}", engine.name());
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(engine, dir.path()).await;
    let url = db.url.clone();

    // The drain deadline: a phone slower than it does not hold the exit up.
    let mut server = TestServer::start(dir.path(), &url, &["--drain-timeout", "1"]);
    let device = "SEP0000000D0002";
    let (store, name) = scheduled(&server, device).await;
    // Slower than the deadline by far, not more: the test waits for the phone to give up.
    let phone = server.slow_phone(device, 4000);
    wait_until_claimed(&*store, &name).await;
    sigterm(&server);
    let (status, took) = exit_within(&mut server, Duration::from_secs(6));
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(900),
        "left before the deadline: {took:?}"
    );
    let out = phone.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0), "the phone cannot have finished");
    // The cut session's operation is pending and free for the phone's retry.
    let op = store.latest_operation(&name).await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Pending);
    assert_eq!(op.claimed_by, None, "released on the way out");
    drop(store);

    // A second SIGTERM: at once, though the drain deadline is long.
    let mut server = TestServer::start(dir.path(), &url, &["--drain-timeout", "60"]);
    let store = server.store().await;
    let phone = server.slow_phone(device, 4000);
    // The operation is still pending: the first session's end lost nothing.
    wait_until_claimed(&*store, &name).await;
    sigterm(&server);
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&server);
    let (status, took) = exit_within(&mut server, Duration::from_secs(3));
    assert_eq!(status.code(), Some(0), "after {took:?}");
    let _ = phone.wait_with_output();
    let op = store.latest_operation(&name).await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Pending, "nothing lost");
    assert_eq!(op.claimed_by, None, "released on the way out");

    // The phone's next try is served at once.
    let server = TestServer::start(dir.path(), &url, &[]);
    let (code, text) = server.phone(device, &[]);
    assert_eq!(code, 0, "{text}");
    let op = store.latest_operation(&name).await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Success);
    drop(server);
    db.drop_db().await;
}
