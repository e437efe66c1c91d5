//! `capf bench` against the real server: every enrollment it reports is an LSC in the
//! database, held sessions survive the measured phase, and nothing fails. Loopback only,
//! bounded in time; the servers and benches started here are killed when done.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capf_store::DeviceFilter;
use common::db::{engines, TestDb};
use common::server::{TestServer, BIN};
use serde_json::Value;

/// Flood limits out of the way: every phone comes from 127.0.0.1.
const UNTHROTTLED: &[&str] = &[
    "--conn-rate",
    "100000",
    "--conn-burst",
    "100000",
    "--max-sessions-per-address",
    "100000",
];

/// Longest a bench may run before the test gives up on it.
const DEADLINE: Duration = Duration::from_secs(240);

/// Runs `capf bench --schedule --json` against `server`; returns its exit code and report.
fn bench(server: &TestServer, args: &[&str]) -> (i32, Value) {
    let mut child = Command::new(BIN)
        .arg("bench")
        .args(["--host", &server.addr])
        .arg("--capf-cert")
        .arg(server.capf_pem())
        .args(["--schedule", "--api", &format!("http://{}", server.api)])
        .arg("--token-file")
        .arg(server.dir.join("data").join("admin.token"))
        .args(["--json", "--timeout", "20"])
        .args(["--server-pid", &server.child.id().to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start capf bench");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for capf bench") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("capf bench {args:?} did not finish in {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let _ = child.stdout.take().unwrap().read_to_string(&mut stdout);
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("capf bench {args:?}: not JSON ({e}):\n{stdout}\n{stderr}"));
    (status.code().unwrap_or(-1), report)
}

/// Devices named `prefix...`: (all of them, those with an LSC).
async fn devices(server: &TestServer, prefix: &str) -> (usize, usize) {
    let store = server.store().await;
    let filter = |has_lsc| DeviceFilter {
        name_prefix: Some(prefix.to_string()),
        has_lsc,
        ..DeviceFilter::default()
    };
    let all = store.list_devices(&filter(None)).await.unwrap().len();
    let with_lsc = store.list_devices(&filter(Some(true))).await.unwrap().len();
    (all, with_lsc)
}

/// A phase with `n` enrollments and nothing else.
fn assert_clean(phase: &Value, n: u64, what: &str) {
    assert_eq!(phase["attempted"], n, "{what}: {phase}");
    assert_eq!(phase["succeeded"], n, "{what}: {phase}");
    assert_eq!(phase["failed"], 0, "{what}: {phase}");
    assert_eq!(phase["errors"], Value::Array(vec![]), "{what}: {phase}");
}

/// Runs `case` on a fresh unthrottled server for every engine.
async fn each_engine<F, Fut>(case: F)
where
    F: Fn(TestServer) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let db = TestDb::create(&engine, dir.path()).await;
        let server = TestServer::start(dir.path(), &db.url, UNTHROTTLED);
        case(server).await;
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_reported_enrollment_is_an_lsc_ec() {
    each_engine(|server| async move {
        let (code, report) = bench(
            &server,
            &["--phones", "300", "--concurrency", "16", "--key", "ec-p256"],
        );
        let measured = &report["measured"];
        assert_eq!(code, 0, "{report}");
        assert_clean(measured, 300, "measured");
        assert!(measured["enrollments_per_second"].as_f64().unwrap() > 0.0);
        for figure in ["server_share", "connect", "handshake"] {
            let p = &measured[figure];
            assert_eq!(p["samples"], 300, "{figure}: {p}");
            let (p50, p99, max) = (
                p["p50_ms"].as_f64(),
                p["p99_ms"].as_f64(),
                p["max_ms"].as_f64(),
            );
            assert!(p50 > Some(0.0) && p50 <= p99 && p99 <= max, "{figure}: {p}");
        }
        assert_eq!(report["key_pool"]["key"], "ec-p256");
        assert_eq!(report["devices"]["scheduled"], 300);
        assert!(report["server"]["rss_before_kib"].as_u64() > Some(0));
        assert!(
            report["server"]["peak_kib"].as_u64() >= report["server"]["rss_after_kib"].as_u64()
        );

        let prefix = report["devices"]["measured_prefix"].as_str().unwrap();
        assert_eq!(devices(&server, prefix).await, (300, 300));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn held_sessions_survive_the_measured_phase() {
    each_engine(|server| async move {
        let (code, report) = bench(
            &server,
            &[
                "--phones",
                "50",
                "--concurrency",
                "8",
                "--key",
                "ec-p256",
                "--hold",
                "20",
            ],
        );
        assert_eq!(code, 0, "{report}");
        assert_clean(&report["measured"], 50, "measured");
        let hold = &report["hold"];
        assert_eq!(hold["requested"], 20, "{hold}");
        assert_eq!(hold["held"], 20, "{hold}");
        assert_eq!(hold["kept_alive"], 20, "{hold}");
        assert_clean(&hold["sessions"], 20, "held");
        assert!(hold["rss_per_held_session_kib"].is_number(), "{hold}");
        assert!(report["server"]["rss_held_kib"].as_u64() > Some(0));

        let measured = report["devices"]["measured_prefix"].as_str().unwrap();
        let held = report["devices"]["held_prefix"].as_str().unwrap();
        assert_ne!(measured, held);
        assert_eq!(devices(&server, measured).await, (50, 50));
        assert_eq!(devices(&server, held).await, (20, 20));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_2048_with_an_authentication_string() {
    each_engine(|server| async move {
        let (code, report) = bench(
            &server,
            &[
                "--phones",
                "50",
                "--concurrency",
                "8",
                "--key",
                "rsa-2048",
                "--key-pool",
                "4",
                "--auth-mode",
                "string",
                "--auth-string",
                "135790",
                "--think-ms",
                "20",
            ],
        );
        assert_eq!(code, 0, "{report}");
        assert_clean(&report["measured"], 50, "measured");
        assert_eq!(report["key_pool"]["keys"], 4);
        let prefix = report["devices"]["measured_prefix"].as_str().unwrap();
        assert_eq!(devices(&server, prefix).await, (50, 50));

        // The same devices again, unscheduled: the bench reports the failures by kind and
        // exits non-zero.
        let file = server.dir.join("devices.txt");
        let names: Vec<String> = (0..5).map(|i| format!("{prefix}{i:07X}")).collect();
        std::fs::write(&file, names.join("\n")).unwrap();
        let out = Command::new(BIN)
            .arg("bench")
            .args(["--host", &server.addr])
            .arg("--capf-cert")
            .arg(server.capf_pem())
            .arg("--devices")
            .arg(&file)
            .args(["--key", "rsa-2048", "--key-pool", "1", "--json"])
            .output()
            .expect("run capf bench");
        assert_eq!(out.status.code(), Some(1));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["measured"]["attempted"], 5);
        assert_eq!(report["measured"]["succeeded"], 0);
        assert_eq!(report["measured"]["errors"][0]["kind"], "end_session_0");
        assert_eq!(report["measured"]["errors"][0]["count"], 5);
    })
    .await;
}
