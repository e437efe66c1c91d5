//! Several capf nodes on one PostgreSQL database, and a database that goes away.
//!
//! These run only with `CAPF_TEST_POSTGRES` (CI sets it): SQLite is a one-node store.

mod common;

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capf_model::device::DeviceName;
use capf_model::operation::{AuthMode, CertState, OperationStatus};
use capf_pki::ca::identity::{CapfIdentity, CapfKeyAlgorithm, IdentityOptions};
use common::api::{admin_token, Api};
use common::db::{engines, Engine, TestDb};
use common::server::TestServer;
use common::{install_p256, wait_until_claimed};
use serde_json::json;
use sqlx::Connection;
use tokio::net::{TcpListener, TcpStream};

/// The PostgreSQL server of this run. Every test here is `#[ignore]`d unless the build saw
/// CAPF_TEST_POSTGRES (build.rs), so reaching this without it is a broken setup, not a skip.
fn postgres() -> Engine {
    engines()
        .into_iter()
        .find(|e| matches!(e, Engine::Postgres(_)))
        .expect("CAPF_TEST_POSTGRES was set when these tests were built; set it to run them")
}

fn finish(child: Child) -> (i32, String) {
    let out = child.wait_with_output().expect("wait for capf phone");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Two nodes on one database and one identity (the second starts once the first has made it).
fn two_nodes(dir: &std::path::Path, url: &str, extra: &[&str]) -> (TestServer, TestServer) {
    let mut a_args = vec!["--node-id", "node-a"];
    a_args.extend_from_slice(extra);
    let a = TestServer::start(dir, url, &a_args);
    let mut b_args = vec!["--node-id", "node-b"];
    b_args.extend_from_slice(extra);
    let b = TestServer::start(dir, url, &b_args);
    (a, b)
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(capf_postgres),
    ignore = "needs PostgreSQL: set CAPF_TEST_POSTGRES"
)]
async fn same_phone_on_two_nodes_gets_one_certificate() {
    let engine = postgres();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(&engine, dir.path()).await;
    let (a, b) = two_nodes(dir.path(), &db.url, &[]);
    let api_a = Api::new(&a.api, &admin_token(dir.path()));
    let store = a.store().await;

    // Scheduled through node A's API, served by node B.
    let device = "SEP0000000A0B01";
    let op = json!({"operation": "install", "auth_mode": "null", "key": "ec-p256"});
    let path = format!("/api/v1/devices/{device}/operation");
    assert_eq!(api_a.put(&path, op.clone()).await.0, 200);
    let (code, text) = b.phone(device, &[]);
    assert_eq!(code, 0, "{text}");
    let name = DeviceName::from_admin(device).unwrap();
    assert!(store.current_certificate(&name).await.unwrap().is_some());

    // The phone holds node A in key generation while it also connects to node B: B refuses
    // (END_SESSION 7), A installs, one certificate in all.
    let device = "SEP0000000A0B02";
    let name = DeviceName::from_admin(device).unwrap();
    let path = format!("/api/v1/devices/{device}/operation");
    assert_eq!(api_a.put(&path, op.clone()).await.0, 200);
    let slow = a.slow_phone(device, 3000);
    wait_until_claimed(&*store, &name).await;
    let (code, text) = b.phone(device, &[]);
    assert_eq!(
        code, 2,
        "node B must refuse while node A holds the operation: {text}"
    );
    let (code, text) = finish(slow);
    assert_eq!(code, 0, "{text}");
    let certs = store.certificates(&name).await.unwrap();
    assert_eq!(certs.len(), 1, "{certs:?}");
    assert_eq!(certs[0].state, CertState::Installed);
    let latest = store.latest_operation(&name).await.unwrap().unwrap();
    assert_eq!(latest.status, OperationStatus::Success);
    // The server records an attempt after its END_SESSION, so the phone may exit first.
    wait_until("node A's attempt record", || {
        let store = Arc::clone(&store);
        let name = name.clone();
        async move {
            let attempts = store.attempts(&name, 10).await.unwrap();
            attempts.iter().any(|a| a.outcome == "installed")
        }
    })
    .await;
    let attempts = store.attempts(&name, 10).await.unwrap();
    assert!(
        attempts
            .iter()
            .any(|a| a.outcome == "auth_refused" && a.detail.contains("another session")),
        "{attempts:?}"
    );

    // Both at once, several times: never more than one certificate per operation.
    for round in 0..4 {
        let device = format!("SEP0000000A0C{round:02X}");
        let name = DeviceName::from_admin(&device).unwrap();
        let path = format!("/api/v1/devices/{device}/operation");
        assert_eq!(api_a.put(&path, op.clone()).await.0, 200);
        let one = a.spawn_phone(&device, &[]);
        let two = b.spawn_phone(&device, &[]);
        let (r1, r2) = (finish(one), finish(two));
        let issued = store.certificates(&name).await.unwrap();
        assert_eq!(issued.len(), 1, "round {round}: {issued:?}\n{r1:?}\n{r2:?}");
        assert_eq!(issued[0].state, CertState::Installed);
        let latest = store.latest_operation(&name).await.unwrap().unwrap();
        assert_eq!(latest.status, OperationStatus::Success);
    }
    drop((a, b));
    db.drop_db().await;
}

/// Two nodes started at the same moment on an empty database, each with its own data dir and
/// the same identity (copied before the first start, as deploy/README.md says): both come
/// up, the migrations are applied once, one node creates the admin token and the other says
/// it did not, the token works on both, and each node enrolls a phone.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(capf_postgres),
    ignore = "needs PostgreSQL: set CAPF_TEST_POSTGRES"
)]
async fn two_nodes_start_together_on_an_empty_database() {
    let engine = postgres();
    let root = tempfile::tempdir().unwrap();
    let dirs = [root.path().join("a"), root.path().join("b")];
    let (identity, _) = CapfIdentity::load_or_create(
        &dirs[0].join("certs"),
        &IdentityOptions {
            key: CapfKeyAlgorithm::EcP256,
            ..IdentityOptions::default()
        },
    )
    .unwrap();
    std::fs::create_dir_all(dirs[1].join("certs")).unwrap();
    for file in ["capf.key", "capf.pem"] {
        // fs::copy keeps the key's mode 0600, which capf insists on.
        std::fs::copy(
            dirs[0].join("certs").join(file),
            dirs[1].join("certs").join(file),
        )
        .unwrap();
    }
    let db = TestDb::create(&engine, root.path()).await;

    let together = Arc::new(std::sync::Barrier::new(2));
    let starting: Vec<_> = dirs
        .iter()
        .zip(["node-a", "node-b"])
        .map(|(dir, node)| {
            let (dir, url, together) = (dir.clone(), db.url.clone(), Arc::clone(&together));
            std::thread::spawn(move || {
                together.wait();
                TestServer::start(&dir, &url, &["--node-id", node])
            })
        })
        .collect();
    let nodes: Vec<TestServer> = starting
        .into_iter()
        .map(|t| t.join().expect("both nodes reach listening"))
        .collect();

    // Each migration once, each applied successfully.
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (applied, succeeded): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE success) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    assert_eq!((applied, succeeded), (migrations as i64, migrations as i64));

    // One token, in exactly one data dir; the other node's log says why it has none.
    let store = nodes[0].store().await;
    let tokens = store.tokens().await.unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0].name, "admin");
    let has_token: Vec<bool> = dirs
        .iter()
        .map(|d| d.join("data").join("admin.token").exists())
        .collect();
    assert_eq!(has_token.iter().filter(|h| **h).count(), 1, "{has_token:?}");
    let (with, without) = if has_token[0] { (0, 1) } else { (1, 0) };
    let log = nodes[without].log();
    assert!(log.contains("admin API token not created here"), "{log}");
    let token = admin_token(&dirs[with]);

    // The same identity on both, and each node enrolls a phone scheduled through its own API.
    let pem = identity.cert_pem().to_string();
    let op = json!({"operation": "install", "auth_mode": "null", "key": "ec-p256"});
    for (i, node) in nodes.iter().enumerate() {
        let served = std::fs::read_to_string(node.capf_pem()).unwrap();
        assert_eq!(
            served.trim(),
            pem.trim(),
            "node {i} serves the shared identity"
        );
        let api = Api::new(&node.api, &token);
        let device = format!("SEP0000000A0F{i:02X}");
        let path = format!("/api/v1/devices/{device}/operation");
        assert_eq!(api.put(&path, op.clone()).await.0, 200, "node {i}");
        let (code, text) = node.phone(&device, &[]);
        assert_eq!(code, 0, "node {i}: {text}");
        let name = DeviceName::from_admin(&device).unwrap();
        let latest = store.latest_operation(&name).await.unwrap().unwrap();
        assert_eq!(latest.status, OperationStatus::Success, "node {i}");
    }
    drop(nodes);
    db.drop_db().await;
}

/// Node A (`--node-id node-a` and `extra`) serving a phone that takes `delay_ms` to generate
/// its key, and meanwhile node B's session claims the operation, as it may once node A's
/// lease ran out (node A could not reach the database for longer than the lease, say).
struct ClaimTaken {
    db: TestDb,
    a: TestServer,
    store: Arc<dyn capf_store::Store>,
    name: DeviceName,
    op: i64,
    thief: &'static str,
}

async fn claim_taken_during_keygen(
    engine: &Engine,
    dir: &std::path::Path,
    device: &str,
    delay_ms: u64,
    extra: &[&str],
) -> (ClaimTaken, Child) {
    let db = TestDb::create(engine, dir).await;
    let mut args = vec!["--node-id", "node-a"];
    args.extend_from_slice(extra);
    let a = TestServer::start(dir, &db.url, &args);
    let store = a.store().await;
    let name = DeviceName::from_admin(device).unwrap();
    let op = install_p256(&*store, device, AuthMode::Null, None).await;
    let phone = a.slow_phone(device, delay_ms);
    wait_until_claimed(&*store, &name).await;
    let thief = "node-b/00000000/00000001";
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    assert!(store
        .claim(op, thief, later, Duration::from_secs(90))
        .await
        .unwrap());
    let taken = ClaimTaken {
        db,
        a,
        store,
        name,
        op,
        thief,
    };
    (taken, phone)
}

impl ClaimTaken {
    /// The device's audit trail.
    async fn events(&self) -> Vec<capf_store::Event> {
        self.store
            .events(capf_store::EventFilter {
                device_name: Some(self.name.as_str().to_string()),
                ..Default::default()
            })
            .await
            .unwrap()
    }

    /// The details of the device's `claim_lost` events, once there is one.
    async fn claim_lost_details(&self) -> Vec<String> {
        let details = |events: Vec<capf_store::Event>| -> Vec<String> {
            events
                .into_iter()
                .filter(|e| e.kind == "claim_lost")
                .map(|e| e.detail)
                .collect()
        };
        wait_until("node A's claim_lost event", || async {
            !details(self.events().await).is_empty()
        })
        .await;
        details(self.events().await)
    }

    /// The operation is still pending, held by node B, with no failure noted by node A.
    async fn assert_left_to_the_thief(&self) {
        let now = self.store.operation(self.op).await.unwrap().unwrap();
        assert_eq!(now.status, OperationStatus::Pending);
        assert_eq!(now.claimed_by.as_deref(), Some(self.thief));
        assert_eq!(
            now.cause, None,
            "node A notes no failure on an operation it lost"
        );
    }

    async fn end(self) {
        drop(self.a);
        self.db.drop_db().await;
    }
}

/// A session whose claim another node took while its phone generated a key issues nothing:
/// END_SESSION 7, the attempt and the audit trail say the claim was lost, and the operation
/// is left as the new holder has it.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(capf_postgres),
    ignore = "needs PostgreSQL: set CAPF_TEST_POSTGRES"
)]
async fn a_session_that_lost_its_claim_issues_nothing() {
    let engine = postgres();
    let dir = tempfile::tempdir().unwrap();
    let (taken, phone) =
        claim_taken_during_keygen(&engine, dir.path(), "SEP0000000A0E11", 2000, &[]).await;
    let (code, text) = finish(phone);
    assert_eq!(code, 2, "END_SESSION 7 once the claim is lost: {text}");
    assert!(text.contains("END_SESSION 7"), "{text}");
    assert_eq!(taken.store.certificates(&taken.name).await.unwrap(), []);
    taken.assert_left_to_the_thief().await;
    let lost = taken.claim_lost_details().await;
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0].contains(taken.thief), "{lost:?}");
    wait_until("node A's attempt record", || async {
        !taken
            .store
            .attempts(&taken.name, 10)
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let attempts = taken.store.attempts(&taken.name, 10).await.unwrap();
    assert!(attempts[0].detail.starts_with("claim lost"), "{attempts:?}");
    let events = taken.events().await;
    assert!(!events.iter().any(|e| e.kind == "certificate_issued"));
    taken.end().await;
}

/// A session whose claim another node took, and whose phone then runs out of key-generation
/// time on its last allowed attempt, does not fail the operation the new holder is
/// performing: the failure is not recorded and the audit trail says why.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(capf_postgres),
    ignore = "needs PostgreSQL: set CAPF_TEST_POSTGRES"
)]
async fn a_session_that_lost_its_claim_fails_nothing() {
    let engine = postgres();
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--keygen-timeout", "1", "--keygen-max-attempts", "1"];
    let (taken, phone) =
        claim_taken_during_keygen(&engine, dir.path(), "SEP0000000A0E12", 3000, &extra).await;
    let (_, text) = finish(phone);
    let lost = taken.claim_lost_details().await;
    assert_eq!(lost.len(), 1, "{lost:?}\n{text}");
    assert!(lost[0].contains("failure not recorded"), "{lost:?}");
    assert!(lost[0].contains(taken.thief), "{lost:?}");
    let events = taken.events().await;
    assert!(!events.iter().any(|e| e.kind == "operation_failed"));
    taken.assert_left_to_the_thief().await;
    taken.end().await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(capf_postgres),
    ignore = "needs PostgreSQL: set CAPF_TEST_POSTGRES"
)]
async fn lockout_is_shared_by_the_nodes() {
    let engine = postgres();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(&engine, dir.path()).await;
    let (a, b) = two_nodes(dir.path(), &db.url, &[]);
    let api_b = Api::new(&b.api, &admin_token(dir.path()));
    let device = "SEP0000000A0D01";
    let path = format!("/api/v1/devices/{device}/operation");
    let op = json!({"operation": "install", "auth_mode": "string", "auth_string": "2468",
                    "key": "ec-p256"});
    assert_eq!(api_b.put(&path, op).await.0, 200);
    for i in 0..10 {
        let node = if i % 2 == 0 { &a } else { &b };
        let (code, text) = node.phone(device, &["--auth-string", "1357"]);
        assert_eq!(code, 2, "{text}");
    }
    for node in [&a, &b] {
        let (code, text) = node.phone(device, &["--auth-string", "2468"]);
        assert_eq!(code, 2, "locked on both nodes: {text}");
    }
    let (_, shown) = api_b.get(&format!("/api/v1/devices/{device}")).await;
    assert_eq!(shown["lock"]["locked"], true, "{shown}");
    drop((a, b));
    db.drop_db().await;
}

/// A TCP relay between capf and PostgreSQL that the test can break the way databases break:
/// `cut` as a restart does (every connection dropped, new ones refused), `stall` as a network
/// partition or a hung server does (connections stay open, nothing gets through).
struct Relay {
    port: u16,
    down: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

/// Copies one direction of a link, holding bytes back while the relay is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (down2, stalled2, links2) =
            (Arc::clone(&down), Arc::clone(&stalled), Arc::clone(&links));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if down2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let stalled = Arc::clone(&stalled2);
                let task = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pump(client_read, server_write, Arc::clone(&stalled)),
                        pump(server_read, client_write, stalled),
                    );
                });
                links2.lock().unwrap().push(task.abort_handle());
            }
        });
        Relay {
            port,
            down,
            stalled,
            links,
        }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
        self.stalled.store(false, Ordering::SeqCst);
    }
}

/// Which way the database goes away.
#[derive(Clone, Copy, Debug)]
enum Outage {
    Restart,
    Partition,
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(capf_postgres),
    ignore = "needs PostgreSQL: set CAPF_TEST_POSTGRES"
)]
async fn a_database_restart_loses_nothing() {
    database_outage(Outage::Restart).await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(
    not(capf_postgres),
    ignore = "needs PostgreSQL: set CAPF_TEST_POSTGRES"
)]
async fn a_silent_database_loses_nothing() {
    database_outage(Outage::Partition).await;
}

async fn database_outage(outage: Outage) {
    let engine = postgres();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(&engine, dir.path()).await;
    let direct = url::Url::parse(&db.url).unwrap();
    let upstream = format!(
        "{}:{}",
        direct.host_str().unwrap(),
        direct.port().unwrap_or(5432)
    );
    let relay = Relay::start(upstream).await;
    let mut via_relay = direct.clone();
    via_relay.set_port(Some(relay.port)).unwrap();
    let server = TestServer::start(dir.path(), via_relay.as_str(), &[]);
    let api = Api::new(&server.api, &admin_token(dir.path()));
    let store = capf_store::open(&capf_store::DatabaseUrl::new(db.url.clone()).unwrap())
        .await
        .unwrap();
    let device = "SEP0000000A0E01";
    let name = DeviceName::from_admin(device).unwrap();
    let path = format!("/api/v1/devices/{device}/operation");
    let op = json!({"operation": "install", "auth_mode": "null", "key": "ec-p256"});
    assert_eq!(api.put(&path, op).await.0, 200);

    // A session in key generation when the database goes: it ends with END_SESSION 7.
    let in_flight = server.slow_phone(device, 2000);
    wait_until_claimed(&*store, &name).await;
    match outage {
        Outage::Restart => relay.cut(),
        Outage::Partition => relay.stall(),
    }
    let (code, text) = finish(in_flight);
    assert_eq!(code, 2, "END_SESSION 7 while the database is away: {text}");

    // New sessions end the same way, and the API answers 503 quickly instead of hanging.
    let (code, text) = server.phone(device, &[]);
    assert_eq!(code, 2, "{text}");
    for path in ["/healthz", &format!("/api/v1/devices/{device}")] {
        let started = Instant::now();
        let (status, _, _) = api
            .raw(Some(&api.token), reqwest::Method::GET, path, "", vec![])
            .await;
        assert_eq!(status, 503, "{path}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    let op = store.latest_operation(&name).await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Pending, "nothing lost");

    // The database comes back: the same process serves again.
    relay.restore();
    wait_until("the API", || {
        let api = &api;
        async move { api.get("/healthz").await.0 == 200 }
    })
    .await;
    let (code, text) = server.phone(device, &[]);
    let attempts = store.attempts(&name, 10).await.unwrap();
    assert_eq!(code, 0, "{text}\n{attempts:#?}");
    let op = store.latest_operation(&name).await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Success);
    let certs = store.certificates(&name).await.unwrap();
    assert_eq!(
        certs
            .iter()
            .filter(|c| c.state == CertState::Installed)
            .count(),
        1
    );
    drop(server);
    db.drop_db().await;
}
