//! SIGHUP reloads the settings that may change while serving, from the config file, all or
//! nothing. Against the real binary, on loopback: the lockout threshold, which the store
//! applies, on each engine; flood control and config validation, which never reach the store,
//! on SQLite.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use capf_model::device::DeviceName;
use capf_model::keyspec::{Curve, KeySpec};
use capf_model::operation::{AuthMode, OperationKind, OperationStatus};
use chrono::Utc;
use common::db::{engines, TestDb};
use common::schedule;
use common::server::TestServer;

fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("data").join("capf.db").display())
}

/// Wrong authentication strings for `device`; each is refused.
fn wrong_strings(server: &TestServer, device: &str, count: u32) {
    for i in 0..count {
        let (code, text) = server.phone(device, &["--auth-string", &format!("{:06}", 900000 + i)]);
        assert_eq!(code, 2, "{text}");
    }
}

/// A server on `url` whose config file allows 10 failures, and a pending install for
/// `device` with the authentication string 123456.
async fn string_install_with_lockout_10(
    dir: &std::path::Path,
    url: &str,
    device: &str,
) -> (
    TestServer,
    std::sync::Arc<dyn capf_store::Store>,
    DeviceName,
    capf_store::Operation,
) {
    let server = TestServer::start_with_config(dir, url, &[], "lockout_failures = 10\n");
    let store = server.store().await;
    let op = schedule(
        &*store,
        device,
        OperationKind::Install,
        AuthMode::String,
        Some("123456"),
        KeySpec::Ec(Curve::P256),
    )
    .await;
    (server, store, DeviceName::from_admin(device).unwrap(), op)
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn lockout_threshold_and_log_filter_change_on_sighup() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::create(&engine, dir.path()).await;
        lockout_threshold_and_log_filter_change(dir.path(), &db.url).await;
        db.drop_db().await;
    }
}

async fn lockout_threshold_and_log_filter_change(dir: &std::path::Path, url: &str) {
    let device = "SEP0000000E0001";
    let (server, store, name, op) = string_install_with_lockout_10(dir, url, device).await;

    // Ten allowed: two wrong strings do not lock.
    wrong_strings(&server, device, 2);
    let lock = store.lock_state(&name).await.unwrap();
    assert_eq!(lock.failed_auth_count, 2);
    assert!(!lock.is_locked(Utc::now()), "{lock:?}");
    store.unlock(&name, Utc::now()).await.unwrap();

    // Two allowed from now on; settings read only at start are named, not applied.
    let done = server.reload(
        "lockout_failures = 2\nclaim_lease = 45\nnode_id = \"elsewhere\"\n\
         log_filter = \"info,capf_server::server=warn\"\n",
    );
    assert!(done.contains("reload done"), "{done}");
    assert!(done.contains("lockout_failures: 10 -> 2"), "{done}");
    assert!(
        done.contains("log_filter: info -> info,capf_server::server=warn"),
        "{done}"
    );
    let log = server.log();
    for setting in ["claim_lease", "node_id"] {
        assert!(
            log.contains(&format!(
                "SIGHUP: {setting} changed but needs a restart; the running value stays in force"
            )),
            "no restart warning for {setting}:\n{log}"
        );
    }
    let connections = count(&log, "TLS handshake done");
    assert!(connections >= 2, "{log}");

    wrong_strings(&server, device, 2);
    let lock = store.lock_state(&name).await.unwrap();
    assert!(lock.is_locked(Utc::now()), "{lock:?}");
    // Locked: the right string is refused too.
    let (code, text) = server.phone(device, &["--auth-string", "123456"]);
    assert_eq!(code, 2, "{text}");
    assert_eq!(
        common::status(&*store, op.id).await,
        OperationStatus::Pending
    );

    // The session lines of capf_server::server are filtered out now; capf_server::service's are not.
    let log = server.log();
    assert_eq!(count(&log, "TLS handshake done"), connections, "{log}");
    assert!(log.contains("device locked: attempt refused"), "{log}");

    // And back: no change is a reload too.
    let done = server.reload("lockout_failures = 2\nlog_filter = \"info\"\n");
    assert!(
        done.contains("log_filter: info,capf_server::server=warn -> info"),
        "{done}"
    );
    let done = server.reload("lockout_failures = 2\nlog_filter = \"info\"\n");
    assert!(done.contains("reload done; no setting changed"), "{done}");
}

/// Opens `n` connections at once from 127.0.0.1 and tells which the server let through:
/// it closes refused ones before any TLS, while admitted ones wait for a ClientHello.
fn probe(addr: &str, n: usize) -> (Vec<TcpStream>, usize) {
    let streams: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // Long enough for the server to have closed every refused one.
    std::thread::sleep(Duration::from_millis(400));
    let mut admitted = Vec::new();
    let mut refused = 0;
    for mut stream in streams {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                admitted.push(stream)
            }
            _ => refused += 1,
        }
    }
    (admitted, refused)
}

/// Lets the connections of a probe go, and the server notice.
fn release(streams: Vec<TcpStream>) {
    drop(streams);
    std::thread::sleep(Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread")]
async fn flood_control_and_session_caps_change_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    // The handshake deadline outlasts each probe, so admitted connections stay open.
    let server = TestServer::start_with_config(
        dir.path(),
        &sqlite_url(dir.path()),
        &["--handshake-timeout", "20"],
        "",
    );

    // Defaults: 50/s with a burst of 500, 2000 sessions per address.
    let (held, refused) = probe(&server.addr, 6);
    assert_eq!((held.len(), refused), (6, 0));
    release(held);

    // A rate of 1/s with a burst of 2: of six at once, two (a third if a second passes).
    let done = server.reload("conn_rate = 1\nconn_burst = 2\n");
    assert!(done.contains("conn_rate: 50 -> 1"), "{done}");
    assert!(done.contains("conn_burst: 500 -> 2"), "{done}");
    let (held, refused) = probe(&server.addr, 6);
    assert!((2..=3).contains(&held.len()), "{} admitted", held.len());
    assert_eq!(held.len() + refused, 6);
    release(held);

    // Two sessions per address: the rate is no longer in the way (a fresh limiter).
    let done = server.reload("max_sessions_per_address = 2\n");
    assert!(
        done.contains("max_sessions_per_address: 2000 -> 2"),
        "{done}"
    );
    let (held, refused) = probe(&server.addr, 4);
    assert_eq!((held.len(), refused), (2, 2));

    // Sessions in flight are not cut by a lower cap; new ones wait for room under it.
    let done = server.reload("max_sessions = 1\n");
    assert!(done.contains("max_sessions: 20000 -> 1"), "{done}");
    assert!(
        done.contains("max_sessions_per_address: 2 -> 2000"),
        "{done}"
    );
    let (more, refused) = probe(&server.addr, 1);
    assert_eq!((more.len(), refused), (0, 1));
    for stream in &held {
        let mut byte = [0u8; 1];
        let mut stream = stream;
        assert!(
            stream.read(&mut byte).is_err(),
            "a session in flight was closed"
        );
    }
    release(held);
    let (held, refused) = probe(&server.addr, 3);
    assert_eq!((held.len(), refused), (1, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_config_is_refused_whole_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let device = "SEP0000000E0003";
    let url = sqlite_url(dir.path());
    let (server, store, name, op) = string_install_with_lockout_10(dir.path(), &url, device).await;

    // A valid lockout next to an invalid validity: neither is applied.
    let refused = server.reload("lockout_failures = 2\nlsc_validity_days = 5000\n");
    assert!(refused.contains("reload refused"), "{refused}");
    assert!(refused.contains("lsc_validity_days"), "{refused}");
    // Not TOML at all; an unknown setting.
    let refused = server.reload("lockout_failures = = 2\n");
    assert!(refused.contains("reload refused"), "{refused}");
    let refused = server.reload("lockout_failures = 2\nlockout_falures = 3\n");
    assert!(refused.contains("reload refused"), "{refused}");

    // Still ten allowed: two wrong strings do not lock, and the right one enrolls.
    wrong_strings(&server, device, 2);
    let lock = store.lock_state(&name).await.unwrap();
    assert!(!lock.is_locked(Utc::now()), "{lock:?}");
    let (code, text) = server.phone(device, &["--auth-string", "123456"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        common::status(&*store, op.id).await,
        OperationStatus::Success
    );

    // Fixed, the file is taken.
    let done = server.reload("lockout_failures = 2\n");
    assert!(done.contains("lockout_failures: 10 -> 2"), "{done}");
}
