//! Crash safety: `kill -9` the real server at random moments while 300 phones enroll,
//! restart it on the same data, retry the phones that did not finish, and check the database.
//! One kill is not left to chance: it hits while a phone holds its new certificate and has not
//! acknowledged it, the window in which a crash could record an unconfirmed install.
//!
//! What it shows, once every phone has enrolled:
//! - the SQLite file passes `PRAGMA integrity_check` (the PostgreSQL variant, run when
//!   `CAPF_TEST_POSTGRES` is set, kills only capf, not the database server);
//! - every operation is Success, none failed or got lost: an operation interrupted by a crash
//!   stayed pending and completed on a retry;
//! - each device has exactly one installed certificate, issued for its operation; every other
//!   certificate issued to it was abandoned (sent but never confirmed), none is left awaiting
//!   confirmation, and no certificate anywhere is installed for an operation that did not
//!   succeed;
//! - for the phones run with `capf phone --out`, the installed certificate is the very one the
//!   phone stored (the phone writes it before it acknowledges);
//! - the audit trail has every change: scheduled, claimed, one `certificate_issued` per
//!   certificate row, one `certificate_abandoned` per abandoned one, exactly one
//!   `certificate_installed` naming the installed certificate, exactly one
//!   `operation_succeeded`.
//!
//! Loopback only; about half a minute. Every process started here is killed when the test
//! ends, passes or fails (guards kill on drop).

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capf::phone::{connect, read_certificate, read_frame};
use capf_model::device::DeviceName;
use capf_model::keyspec::{Curve, KeySpec};
use capf_model::operation::{CertState, OperationStatus};
use capf_pki::ca::PhoneKey;
use capf_proto::{AuthResponse, KeyGenerateResponse, Message, Reason};
use capf_store::{EventFilter, Store};
use common::api::{admin_token, Api};
use common::db::{engines, Engine, TestDb};
use common::server::{TestServer, BIN};
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

const DEVICES: usize = 300;
/// Of which these enroll with `capf phone --out`, so their stored LSC can be compared.
const SAMPLE: usize = 24;
const MAX_ROUNDS: usize = 10;
/// Claims of a killed server's sessions run out after this; short, so retries need not wait
/// the default 90 s (see `--claim-lease`).
const CLAIM_LEASE_SECS: u64 = 3;
/// Sessions started per second in the first round: the round spans a few seconds, so the
/// kills land while sessions are in flight, and a restart's short outage fails only a few.
const RATE: u32 = 50;
/// The first round's kills happen within this window from its start.
const KILL_WINDOW: Duration = Duration::from_millis(4_600);
/// Longest a phone or bench process may run before the test gives up on it.
const PROCESS_DEADLINE: Duration = Duration::from_secs(120);

/// A child process killed (and reaped) when dropped, whatever happened meanwhile.
struct Guard(Child);

impl Guard {
    /// Waits for the child; kills it and fails the test past `PROCESS_DEADLINE`.
    fn wait(&mut self, what: &str) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("wait for child") {
                return status;
            }
            if started.elapsed() > PROCESS_DEADLINE {
                let _ = self.0.kill();
                let _ = self.0.wait();
                panic!("{what} did not finish in {PROCESS_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port, so the server can be restarted on the same address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn names() -> Vec<String> {
    (0..DEVICES)
        .map(|i| format!("SEP{:012X}", 0xC0A5_0000_0000u64 + i as u64))
        .collect()
}

/// The device whose phone holds its certificate unacknowledged when the server is killed.
const HELD: &str = "SEPC0A5FFFF0001";

/// Devices whose operation has not succeeded yet; fails the test on any operation that
/// ended otherwise (a crash must never fail or lose one).
async fn not_done(store: &dyn Store, names: &[String]) -> Vec<String> {
    let mut left = Vec::new();
    for name in names {
        let device = DeviceName::from_admin(name).unwrap();
        let op = store
            .latest_operation(&device)
            .await
            .expect("read operation")
            .unwrap_or_else(|| panic!("{name}: operation lost"));
        match op.status {
            OperationStatus::Success => {}
            OperationStatus::Pending => left.push(name.clone()),
            other => panic!("{name}: operation {} ended {other:?}", op.id),
        }
    }
    left
}

/// SHA-256 (hex) of the first certificate in a PEM file.
fn pem_fingerprint(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let blocks = pem::parse_many(text).ok()?;
    let cert = blocks.iter().find(|b| b.tag() == "CERTIFICATE")?;
    Some(hex::encode(Sha256::digest(cert.contents())))
}

/// A phone that enrolls up to the certificate and stops there: it has received
/// STORE_CERTIFICATE_REQUEST and not answered. Returns the certificate (DER) and the open
/// connection.
async fn phone_holding_its_certificate(
    addr: &str,
    capf_pem: &Path,
    device: &str,
) -> (Vec<u8>, impl Sized) {
    let capf_der = read_certificate(&capf_pem.to_path_buf()).unwrap();
    let mut tls = connect(addr, capf_der).await.expect("connect");
    let wait = Duration::from_secs(10);
    let (sid, first) = read_frame(&mut tls, wait).await.unwrap();
    assert!(matches!(first, Message::AuthRequest(_)), "{first:?}");
    let send = |message: Message| message.encode(sid).unwrap();
    let auth = send(Message::AuthResponse(AuthResponse {
        reason: Some(Reason::UpdateCertificate),
        version: Some(3),
        device_name: Some(device.to_string()),
        password: Some(String::new()),
        ..Default::default()
    }));
    tls.write_all(&auth).await.unwrap();
    let (_, asked) = read_frame(&mut tls, wait).await.unwrap();
    assert!(matches!(asked, Message::KeyGenerateRequest(_)), "{asked:?}");
    let key = PhoneKey::generate(KeySpec::Ec(Curve::P256)).unwrap();
    let reply = send(Message::KeyGenerateResponse(KeyGenerateResponse {
        public_key: Some(key.spki_der()),
        ..Default::default()
    }));
    tls.write_all(&reply).await.unwrap();
    match read_frame(&mut tls, wait).await.unwrap() {
        (_, Message::StoreCertificateRequest(request)) => {
            let der = request
                .certificate
                .expect("certificate")
                .first()
                .der
                .clone();
            (der, tls)
        }
        (_, other) => panic!("expected STORE_CERTIFICATE_REQUEST, got {other:?}"),
    }
}

/// Runs one round: `capf bench` over the bench devices and `capf phone --out` over the sample
/// ones, while `kills` instants (from the round's start) kill and restart the server.
fn round(
    server: &Arc<Mutex<TestServer>>,
    dir: &Path,
    number: usize,
    bench_devices: &[String],
    sample_devices: &[String],
    kills: &[Duration],
) -> usize {
    let (addr, capf_pem) = {
        let s = server.lock().unwrap();
        (s.addr.clone(), s.capf_pem())
    };
    let started = Instant::now();
    let killer = {
        let server = Arc::clone(server);
        let kills = kills.to_vec();
        std::thread::spawn(move || {
            let mut done = 0;
            for at in kills {
                if let Some(wait) = at.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
                server.lock().unwrap().crash_and_restart();
                done += 1;
            }
            done
        })
    };

    let mut bench = None;
    if !bench_devices.is_empty() {
        let list = dir.join(format!("round-{number}.txt"));
        std::fs::write(&list, bench_devices.join("\n")).unwrap();
        let report = File::create(dir.join(format!("round-{number}.json"))).unwrap();
        let child = Command::new(BIN)
            .arg("bench")
            .args(["--host", &addr])
            .arg("--capf-cert")
            .arg(&capf_pem)
            .arg("--devices")
            .arg(&list)
            .args(["--key", "ec-p256", "--key-pool", "8", "--concurrency", "16"])
            .args(["--rate", &RATE.to_string(), "--think-ms", "150"])
            .args(["--timeout", "10", "--json"])
            .stdout(report)
            .stderr(Stdio::null())
            .spawn()
            .expect("start capf bench");
        bench = Some(Guard(child));
    }

    // The sample phones, a few at a time, spread over the round; each writes the LSC it
    // stores to lsc/<name>.pem (over the one of an earlier attempt).
    let lsc_dir = dir.join("lsc");
    std::fs::create_dir_all(&lsc_dir).unwrap();
    let spacing = KILL_WINDOW / (SAMPLE as u32 + 1);
    let phones: Vec<_> = sample_devices
        .chunks(4)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            let (addr, capf_pem, lsc_dir) = (addr.clone(), capf_pem.clone(), lsc_dir.clone());
            std::thread::spawn(move || {
                for name in chunk {
                    let delay = rand::thread_rng().gen_range(0..300u64);
                    let mut phone = Guard(
                        Command::new(BIN)
                            .arg("phone")
                            .args(["--host", &addr])
                            .arg("--capf-cert")
                            .arg(&capf_pem)
                            .arg("--out")
                            .arg(lsc_dir.join(format!("{name}.pem")))
                            .args(["--timeout", "10"])
                            .args(["--keygen-delay-ms", &delay.to_string()])
                            .arg(&name)
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .spawn()
                            .expect("start capf phone"),
                    );
                    phone.wait("capf phone");
                    std::thread::sleep(spacing);
                }
            })
        })
        .collect();

    if let Some(mut bench) = bench {
        let status = bench.wait("capf bench");
        // 0: all enrolled; 1: some failed (expected while the server is being killed).
        assert!(
            matches!(status.code(), Some(0 | 1)),
            "capf bench could not run: {status}"
        );
        let report = std::fs::read(dir.join(format!("round-{number}.json"))).unwrap();
        let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
        let failures: Vec<String> = report["measured"]["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| format!("{} x{}", e["kind"], e["count"]))
            .collect();
        eprintln!(
            "round {number}: bench {} of {} enrolled; failures: {failures:?}",
            report["measured"]["succeeded"], report["measured"]["attempted"]
        );
    }
    for phone in phones {
        phone.join().expect("sample phones");
    }
    killer.join().expect("killer")
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_enrollments_loses_nothing() {
    for engine in engines() {
        kill_9_during_enrollments(&engine).await;
    }
}

async fn kill_9_during_enrollments(engine: &Engine) {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(engine, dir.path()).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let api_listen = format!("127.0.0.1:{}", free_port());
    let lease = CLAIM_LEASE_SECS.to_string();
    let server = TestServer::start(
        dir.path(),
        &db.url,
        &[
            "--listen",
            &listen,
            "--api-listen",
            &api_listen,
            // Every phone comes from 127.0.0.1.
            "--conn-rate",
            "100000",
            "--conn-burst",
            "100000",
            "--max-sessions-per-address",
            "100000",
            "--claim-lease",
            &lease,
            // An install interrupted by crashes is asked for its key again each time; failing
            // it after three asks is policy, not what this test is about.
            "--keygen-max-attempts",
            "1000",
        ],
    );
    let api = Api::new(&server.api, &admin_token(dir.path()));
    let server = Arc::new(Mutex::new(server));

    // Schedule every install through the admin API (one bulk request).
    let names = names();
    let mut csv = String::from("device,operation,auth_mode,key\n");
    for name in names.iter().map(String::as_str).chain([HELD]) {
        csv.push_str(&format!("{name},install,null,ec-p256\n"));
    }
    let (status, body) = api.csv("", csv).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scheduled"], DEVICES + 1, "{body}");
    let sample: HashSet<String> = names
        .iter()
        .step_by(DEVICES / SAMPLE)
        .take(SAMPLE)
        .cloned()
        .collect();
    assert_eq!(sample.len(), SAMPLE);

    let store = capf_store::open(&capf_store::DatabaseUrl::new(db.url.clone()).unwrap())
        .await
        .expect("open the store");

    // The first kill: a phone has its certificate and has not said it stored it.
    let (addr, capf_pem) = {
        let s = server.lock().unwrap();
        (s.addr.clone(), s.capf_pem())
    };
    let (held_der, connection) = phone_holding_its_certificate(&addr, &capf_pem, HELD).await;
    let held_fingerprint = hex::encode(Sha256::digest(&held_der));
    server.lock().unwrap().crash_and_restart();
    drop(connection);
    let held = DeviceName::from_admin(HELD).unwrap();
    let certs = store.certificates(&held).await.unwrap();
    assert_eq!(certs.len(), 1, "{certs:#?}");
    assert_eq!(certs[0].fingerprint_sha256, held_fingerprint);
    assert_eq!(certs[0].state, CertState::AwaitingConfirmation);
    assert_eq!(store.current_certificate(&held).await.unwrap(), None);
    let op = store.latest_operation(&held).await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Pending);
    let mut killed = 1;

    // 2 to 4 more kills at random moments of the first round, at least 0.5 s apart.
    let mut rng = rand::thread_rng();
    let kill_count = rng.gen_range(2..=4u32);
    let slot = KILL_WINDOW / kill_count;
    let kills: Vec<Duration> = (0..kill_count)
        .map(|i| {
            Duration::from_millis(300)
                + slot * i
                + Duration::from_millis(rng.gen_range(0..slot.as_millis() as u64 - 500))
        })
        .collect();

    // The held device is retried with the others.
    let mut left: Vec<String> = names.iter().cloned().chain([HELD.to_string()]).collect();
    let mut rounds = 0;
    while !left.is_empty() {
        rounds += 1;
        assert!(
            rounds <= MAX_ROUNDS,
            "{} devices still not enrolled after {MAX_ROUNDS} rounds: {:?}",
            left.len(),
            &left[..left.len().min(10)]
        );
        let (sample_now, bench_now): (Vec<String>, Vec<String>) =
            left.iter().cloned().partition(|n| sample.contains(n));
        let kills_now = if rounds == 1 { &kills[..] } else { &[][..] };
        killed += round(
            &server,
            dir.path(),
            rounds,
            &bench_now,
            &sample_now,
            kills_now,
        );
        if !kills_now.is_empty() {
            // Let the claims of the killed sessions run out before the retries.
            tokio::time::sleep(Duration::from_secs(CLAIM_LEASE_SECS + 1)).await;
        }
        left = not_done(&*store, &left).await;
        eprintln!(
            "round {rounds}: {} of {} still pending ({killed} kills so far, {:?})",
            left.len(),
            DEVICES + 1,
            started.elapsed()
        );
    }
    assert_eq!(killed, 1 + kill_count as usize);
    assert!(
        rounds >= 2,
        "no phone was interrupted by the kills: nothing was tested"
    );

    // Stop the last server gracefully, then look at what the crashes left behind.
    server.lock().unwrap().stop();
    drop(store);
    if !db.is_postgres() {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(integrity, "ok");
    }
    let store = capf_store::open(&capf_store::DatabaseUrl::new(db.url.clone()).unwrap())
        .await
        .expect("open the store again");

    let mut abandoned_total = 0;
    let mut compared = 0;
    for name in names.iter().chain([&HELD.to_string()]) {
        let device = DeviceName::from_admin(name).unwrap();
        let op = store.latest_operation(&device).await.unwrap().unwrap();
        assert_eq!(op.status, OperationStatus::Success, "{name}");
        assert_eq!(
            op.claimed_by, None,
            "{name}: claim left on a finished operation"
        );
        let certs = store.certificates(&device).await.unwrap();
        let installed: Vec<_> = certs
            .iter()
            .filter(|c| c.state == CertState::Installed)
            .collect();
        assert_eq!(installed.len(), 1, "{name}: {certs:#?}");
        let installed = installed[0];
        assert_eq!(installed.operation_id, Some(op.id), "{name}");
        let current = store.current_certificate(&device).await.unwrap();
        assert_eq!(current.map(|c| c.id), Some(installed.id), "{name}");
        for cert in &certs {
            assert_eq!(cert.operation_id, Some(op.id), "{name}");
            assert!(
                matches!(cert.state, CertState::Installed | CertState::Abandoned),
                "{name}: certificate {} left {:?}",
                cert.id,
                cert.state
            );
        }
        let abandoned = certs
            .iter()
            .filter(|c| c.state == CertState::Abandoned)
            .count();
        abandoned_total += abandoned;

        // The audit trail: every change has its event.
        let events = store
            .events(EventFilter {
                device_name: Some(name.clone()),
                ..EventFilter::default()
            })
            .await
            .unwrap();
        let mut kinds: HashMap<&str, usize> = HashMap::new();
        for e in events.iter().filter(|e| e.operation_id == Some(op.id)) {
            *kinds.entry(e.kind.as_str()).or_default() += 1;
        }
        let count = |kind: &str| kinds.get(kind).copied().unwrap_or(0);
        assert_eq!(count("operation_scheduled"), 1, "{name}: {kinds:?}");
        assert!(count("operation_claimed") >= 1, "{name}: {kinds:?}");
        assert_eq!(
            count("certificate_issued"),
            certs.len(),
            "{name}: {kinds:?}"
        );
        assert_eq!(
            count("certificate_abandoned"),
            abandoned,
            "{name}: {kinds:?}"
        );
        assert_eq!(count("certificate_installed"), 1, "{name}: {kinds:?}");
        assert_eq!(count("operation_succeeded"), 1, "{name}: {kinds:?}");
        let installed_event = events
            .iter()
            .find(|e| e.kind == "certificate_installed")
            .unwrap();
        assert!(
            installed_event
                .detail
                .starts_with(&format!("certificate {} ", installed.id)),
            "{name}: {}",
            installed_event.detail
        );

        if name == HELD {
            // The certificate the phone never acknowledged was never installed; the retry's
            // was.
            let first = certs
                .iter()
                .find(|c| c.fingerprint_sha256 == held_fingerprint);
            assert_eq!(
                first.map(|c| c.state),
                Some(CertState::Abandoned),
                "{certs:#?}"
            );
            assert_ne!(installed.fingerprint_sha256, held_fingerprint);
        }
        if sample.contains(name) {
            let stored = pem_fingerprint(&dir.path().join("lsc").join(format!("{name}.pem")));
            assert_eq!(
                stored.as_deref(),
                Some(installed.fingerprint_sha256.as_str()),
                "{name}: the installed certificate is not the one the phone stored"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, SAMPLE);

    // Every operation succeeded, so no certificate anywhere is installed for one that did not
    // (each installed one was checked above to belong to its device's operation).
    let counts = store.operation_counts().await.unwrap();
    let other: u64 = counts
        .iter()
        .filter(|(s, _)| *s != OperationStatus::Success)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(other, 0, "{counts:?}");
    eprintln!(
        "{}: {killed} kills, {rounds} rounds, {abandoned_total} certificates issued but \
         abandoned by crashes, {compared} stored LSCs compared, {:?}",
        if db.is_postgres() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        started.elapsed()
    );
    drop(server);
    db.drop_db().await;
}
