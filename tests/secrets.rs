//! The database password stays out of what `capf serve` prints: its help, its log while it
//! runs, and its error when the database cannot be reached.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capf_model::operation::{AuthMode, OperationStatus};
use common::db::{engines, Engine, TestDb};
use common::install_p256;
use common::server::{TestServer, BIN};

/// Every spelling of a secret these tests put in a URL.
const SECRETS: &[&str] = &["s3cretPW", "s3cretQP", "s3cretSSL"];

/// `base` with a password in its user info and in `?password=`, and an `sslpassword` that
/// sqlx does not know (it would log its value when it ignores it).
fn with_passwords(base: &str) -> String {
    let mut url = url::Url::parse(base).expect("database url");
    url.set_password(Some("s3cretPW"))
        .expect("url takes a password");
    url.query_pairs_mut()
        .append_pair("password", "s3cretQP")
        .append_pair("sslpassword", "s3cretSSL")
        .append_pair("application_name", "capf-secrets-test");
    url.to_string()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
    }
}

#[test]
fn help_does_not_show_the_database_url_of_the_environment() {
    let url = with_passwords("postgres://capf@127.0.0.1:9/capf");
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .env("CAPF_DATABASE_URL", &url)
        .output()
        .expect("run capf serve --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("CAPF_DATABASE_URL"), "{help}");
    assert_no_secret("capf serve --help", &help);
}

/// The database does not answer: capf names it in its error, password masked.
#[test]
fn unreachable_database_error_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: bound, then closed again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let url = with_passwords(&format!("postgres://capf@127.0.0.1:{port}/capf"));
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--certs-dir")
        .arg(dir.path().join("certs"))
        .args(["--capf-key", "ec-p256", "--log-filter", "debug"])
        .env("CAPF_DATABASE_URL", &url)
        .env_remove("CAPF_LOG")
        // Files, not pipes: nobody reads a pipe while the test waits for the exit.
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
        .spawn()
        .expect("start capf serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for capf serve") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("capf serve did not give up on an unreachable database within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = [out_path, err_path]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<String>();
    assert!(!status.success(), "{output}");
    assert!(output.contains("opening database"), "{output}");
    assert!(output.contains("***"), "the URL is shown, masked: {output}");
    // The parameter sqlx ignores is named, its value is not.
    assert!(output.contains("sslpassword"), "{output}");
    assert_no_secret("capf serve's output", &output);
}

/// A node on PostgreSQL, logging at debug level, serves a phone: nothing it logs from start
/// to stop holds the password.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_node_never_logs_the_password() {
    let Some(engine) = engines()
        .into_iter()
        .find(|e| matches!(e, Engine::Postgres(_)))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(&engine, dir.path()).await;
    // PostgreSQL on the test machine trusts loopback: the passwords are carried, not needed.
    let url = with_passwords(&db.url);
    let mut server = TestServer::start(
        dir.path(),
        &url,
        &["--log-filter", "debug", "--capf-key", "ec-p256"],
    );
    let store = server.store().await;
    let device = "SEP0000000D0B01";
    let op = install_p256(&*store, device, AuthMode::Null, None).await;
    let (code, text) = server.phone(device, &[]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(common::status(&*store, op).await, OperationStatus::Success);
    assert!(server.stop().success());

    let log = server.log();
    assert!(log.contains("opening database"), "{log}");
    assert!(log.contains("certificate issued"), "{log}");
    assert_no_secret("the server log", &log);
    drop(server);
    db.drop_db().await;
}
