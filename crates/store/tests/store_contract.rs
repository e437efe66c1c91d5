//! The `Store` contract, written once and run against every back end.
//!
//! SQLite runs on a fresh file in a temporary directory. PostgreSQL runs only when
//! `CAPF_TEST_POSTGRES` names an admin URL (e.g. `postgres://postgres@127.0.0.1:5432/test`):
//! each test then creates its own database and drops it afterwards. When the variable is
//! set the server must be reachable: a connection failure fails the test.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capf_model::device::DeviceName;
use capf_model::keyspec::{Curve, KeySpec};
use capf_model::operation::{
    AuthMode, CertState, FailureCause, OperationKind, OperationStatus, TokenScope,
};
use capf_store::{
    ApiToken, Attempt, AuthAdmission, AuthString, AuthTicket, DatabaseUrl, DeviceFilter,
    EventFilter, LockState, LockoutPolicy, NewCertificate, NewOperation, StatusFilter, Store,
    StoreError, Timestamp,
};
use chrono::{TimeDelta, TimeZone, Utc};
use sqlx::Connection;

// ---- harness ----

const PG_ENV: &str = "CAPF_TEST_POSTGRES";

/// A database for one test: a SQLite file or a PostgreSQL database of its own.
struct TestDb {
    url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgDatabase>,
}

/// A PostgreSQL database created for a test, dropped when the test ends (pass or fail).
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop cannot await, and the test's runtime may be unwinding: use a runtime of our
        // own on a thread of our own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&sql)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory that does not exist yet: opening must create it.
        let path = dir.path().join("state").join("capf.db");
        TestDb {
            url: DatabaseUrl::sqlite_file(&path),
            _dir: Some(dir),
            pg: None,
        }
    }

    /// `None` (after saying so) when PostgreSQL tests are not enabled.
    async fn postgres(test: &str) -> Option<TestDb> {
        let Ok(admin_url) = std::env::var(PG_ENV) else {
            println!("{test}: PostgreSQL variant NOT RUN ({PG_ENV} is not set)");
            return None;
        };
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{PG_ENV} is set but PostgreSQL is unreachable: {e}"));
        let name = format!(
            "capf_test_{}_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed),
            test
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.expect("close admin connection");
        let pg = PgDatabase {
            admin_url: admin_url.clone(),
            name: name.clone(),
        };
        let mut url = url::Url::parse(&admin_url).expect("admin url");
        url.set_path(&format!("/{name}"));
        Some(TestDb {
            url: DatabaseUrl::new(url.to_string()).expect("database url"),
            _dir: None,
            pg: Some(pg),
        })
    }

    /// A new store (a new pool: another "node") on this database.
    async fn open(&self) -> Arc<dyn Store> {
        capf_store::open(&self.url).await.expect("open store")
    }

    /// Runs SQL behind the store's back, to damage rows.
    async fn raw_execute(&self, sql: &str) {
        if self.pg.is_some() {
            let mut conn = sqlx::PgConnection::connect(self.url.expose())
                .await
                .expect("raw connection");
            sqlx::query(sql).execute(&mut conn).await.expect("raw sql");
        } else {
            let mut conn = sqlx::SqliteConnection::connect(self.url.expose())
                .await
                .expect("raw connection");
            sqlx::query(sql).execute(&mut conn).await.expect("raw sql");
        }
    }
}

/// Every test in `store: [...]` takes a fresh store; every test in `db: [...]` takes the
/// database, to open several stores on it.
macro_rules! contract {
    (store: [$($store_test:ident),* $(,)?], db: [$($db_test:ident),* $(,)?] $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $store_test() {
                    let db = super::TestDb::sqlite().await;
                    super::$store_test(db.open().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $db_test() {
                    let db = super::TestDb::sqlite().await;
                    super::$db_test(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $store_test() {
                    let Some(db) = super::TestDb::postgres(stringify!($store_test)).await
                    else {
                        return;
                    };
                    super::$store_test(db.open().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $db_test() {
                    let Some(db) = super::TestDb::postgres(stringify!($db_test)).await else {
                        return;
                    };
                    super::$db_test(&db).await;
                }
            )*
        }
    };
}

contract!(
    store: [
        devices,
        schedule_creates_device_and_supersedes,
        no_event_contains_the_auth_string,
        cancel,
        pending_operation_times_out,
        expire_operations,
        claim_and_release,
        take_over_a_claim,
        release_claims_of_a_run,
        renew_claims_of_a_node,
        keygen_attempts_and_failure,
        install_flow,
        record_issued_is_fenced_by_the_claim,
        confirm_install_is_fenced_by_the_claim,
        endings_are_fenced_by_the_claim,
        reads_and_writes_of_the_enrollment_path,
        concurrent_writes_keep_their_own_outcomes,
        fetch_flow,
        delete_flow,
        lockout,
        attempts,
        audit_and_events,
        schedule_many_matches_schedule,
        schedule_many_is_all_or_nothing,
        note_attempt_failure,
        list_devices_filters_and_cursor,
        api_tokens,
    ],
    db: [restart_keeps_everything, two_nodes_race, corrupt_rows_are_reported],
);

// ---- fixtures ----

const SECRET: &str = "1234567";

fn t(secs: i64) -> Timestamp {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap() + TimeDelta::seconds(secs)
}

fn dev(name: &str) -> DeviceName {
    DeviceName::from_admin(name).unwrap()
}

fn install(device: &DeviceName, completes_by: Timestamp) -> NewOperation {
    NewOperation {
        device_name: device.clone(),
        kind: OperationKind::Install,
        auth_mode: AuthMode::String,
        auth_string: Some(AuthString(SECRET.into())),
        key: KeySpec::Rsa(2048),
        completes_by,
    }
}

fn op_of(device: &DeviceName, kind: OperationKind, completes_by: Timestamp) -> NewOperation {
    NewOperation {
        device_name: device.clone(),
        kind,
        auth_mode: AuthMode::Null,
        auth_string: None,
        key: KeySpec::Ec(Curve::P256),
        completes_by,
    }
}

fn cert(n: u8) -> NewCertificate {
    NewCertificate {
        serial_hex: format!("{n:02x}a1b2c3"),
        subject: format!("CN=SEP00112233445{n:X}"),
        issuer: "CN=CAPF-test".into(),
        not_before: t(i64::from(n)),
        not_after: t(i64::from(n) + 365 * 86_400),
        fingerprint_sha256: format!("{n:064x}"),
        pem: format!("-----BEGIN CERTIFICATE-----\nMIIB{n}\n-----END CERTIFICATE-----\n"),
    }
}

async fn event_kinds(store: &Arc<dyn Store>, device: &DeviceName) -> Vec<String> {
    all_events(store, Some(device))
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

async fn all_events(store: &Arc<dyn Store>, device: Option<&DeviceName>) -> Vec<capf_store::Event> {
    store
        .events(EventFilter {
            device_name: device.map(|d| d.as_str().to_string()),
            ..EventFilter::default()
        })
        .await
        .unwrap()
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

fn is_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::NotFound(_)))
}

fn is_claim_lost<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::ClaimLost(_)))
}

/// The session that performs an operation in these tests, and its lease.
const HOLDER: &str = "node-a";
const LEASE: Duration = Duration::from_secs(60);

/// A whole install by [`HOLDER`]: claimed, certificate `cert(n)` issued, then confirmed, at
/// the three times given; returns the certificate's id.
async fn install_held(store: &Arc<dyn Store>, op_id: i64, n: u8, at: [Timestamp; 3]) -> i64 {
    hold(store, op_id, at[0]).await;
    let cert_id = store
        .record_issued(op_id, HOLDER, cert(n), at[1], LEASE)
        .await
        .unwrap();
    store
        .confirm_install(op_id, HOLDER, cert_id, at[2])
        .await
        .unwrap();
    cert_id
}

/// The device's last attempt, which must exist.
async fn last_attempt(store: &Arc<dyn Store>, d: &DeviceName) -> capf_store::LastAttempt {
    store
        .device(d)
        .await
        .unwrap()
        .unwrap()
        .last_attempt
        .unwrap()
}

/// Claims the operation for [`HOLDER`] at `at`, as a session does before it issues.
async fn hold(store: &Arc<dyn Store>, op_id: i64, at: Timestamp) {
    assert!(store.claim(op_id, HOLDER, at, LEASE).await.unwrap());
}

// ---- the contract ----

async fn devices(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    let d = dev("SEP001122334455");
    assert_eq!(store.device(&d).await.unwrap(), None);

    let created = store.ensure_device(&d, t(0)).await.unwrap();
    assert_eq!(created.name, d);
    assert!(!created.require_sudi);
    assert_eq!(created.created_at, t(0));
    assert_eq!(created.failed_auth_count, 0);
    assert_eq!(created.locked_until, None);
    assert_eq!(created.last_attempt, None);

    // Idempotent: the second call finds the device and records nothing.
    let again = store.ensure_device(&d, t(5)).await.unwrap();
    assert_eq!(again, created);
    assert_eq!(event_kinds(&store, &d).await, ["device_created"]);

    store.set_require_sudi(&d, true, t(10)).await.unwrap();
    assert!(store.device(&d).await.unwrap().unwrap().require_sudi);
    let events = all_events(&store, Some(&d)).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].kind, "device_updated");
    assert_eq!(events[1].at, t(10));
    assert!(events[1].detail.contains("require_sudi=true"));

    let unknown = dev("CSFnobody");
    assert!(is_not_found(
        store.set_require_sudi(&unknown, true, t(11)).await
    ));
    assert_eq!(store.device(&unknown).await.unwrap(), None);
}

async fn schedule_creates_device_and_supersedes(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let op1 = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    assert_eq!(op1.device_name, d);
    assert_eq!(op1.kind, OperationKind::Install);
    assert_eq!(op1.auth_mode, AuthMode::String);
    assert_eq!(op1.auth_string, Some(AuthString(SECRET.into())));
    assert_eq!(op1.key, KeySpec::Rsa(2048));
    assert_eq!(op1.completes_by, t(3600));
    assert_eq!(op1.status, OperationStatus::Pending);
    assert_eq!(op1.cause, None);
    assert_eq!(op1.keygen_attempts, 0);
    assert_eq!((op1.created_at, op1.updated_at), (t(0), t(0)));
    assert_eq!((op1.claimed_by.clone(), op1.claim_expires_at), (None, None));
    assert!(store.device(&d).await.unwrap().is_some());
    assert_eq!(store.operation(op1.id).await.unwrap(), Some(op1.clone()));

    // Not string mode: an authentication string given anyway is not kept.
    let mut second = op_of(&d, OperationKind::Delete, t(7200));
    second.auth_string = Some(AuthString("999999".into()));
    let op2 = store.schedule(second, t(10)).await.unwrap();
    assert_ne!(op2.id, op1.id);
    assert_eq!(op2.auth_mode, AuthMode::Null);
    assert_eq!(op2.auth_string, None);
    assert_eq!(op2.key, KeySpec::Ec(Curve::P256));

    let old = store.operation(op1.id).await.unwrap().unwrap();
    assert_eq!(old.status, OperationStatus::Superseded);
    assert_eq!(old.auth_string, None);
    assert_eq!(old.updated_at, t(10));
    assert_eq!(
        store.pending_operation(&d, t(20)).await.unwrap(),
        Some(op2.clone())
    );
    assert_eq!(store.latest_operation(&d).await.unwrap(), Some(op2.clone()));

    let events = all_events(&store, Some(&d)).await;
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "device_created",
            "operation_scheduled",
            "operation_superseded",
            "operation_scheduled"
        ]
    );
    assert_eq!(events[1].operation_id, Some(op1.id));
    assert_eq!(events[2].operation_id, Some(op1.id));
    assert_eq!(events[3].operation_id, Some(op2.id));
    assert!(events[1].detail.contains("rsa-2048"));

    let nobody = dev("CSFnobody");
    assert_eq!(store.operation(op2.id + 1000).await.unwrap(), None);
    assert_eq!(store.latest_operation(&nobody).await.unwrap(), None);
    assert_eq!(store.pending_operation(&nobody, t(0)).await.unwrap(), None);
}

async fn no_event_contains_the_auth_string(store: Arc<dyn Store>) {
    let a = dev("SEP001122334455");
    let b = dev("SEP00112233AABB");
    let c = dev("CSFjsmith");

    // Success path.
    let op = store.schedule(install(&a, t(3600)), t(0)).await.unwrap();
    assert!(store
        .claim(op.id, "node-a", t(1), Duration::from_secs(60))
        .await
        .unwrap());
    store.count_keygen_attempt(op.id, t(2)).await.unwrap();
    let cert_id = store
        .record_issued(op.id, HOLDER, cert(1), t(3), LEASE)
        .await
        .unwrap();
    store
        .confirm_install(op.id, HOLDER, cert_id, t(4))
        .await
        .unwrap();
    assert_eq!(
        store.operation(op.id).await.unwrap().unwrap().auth_string,
        None
    );

    // Failure, supersede, cancel and time-out paths.
    let op = store.schedule(install(&b, t(3600)), t(5)).await.unwrap();
    fail_once(&store, &b, "invalid_auth_string", "192.0.2.7:50000", t(6)).await;
    hold(&store, op.id, t(6)).await;
    store
        .fail_operation(op.id, HOLDER, FailureCause::InvalidAuthString, t(7))
        .await
        .unwrap();
    assert_eq!(
        store.operation(op.id).await.unwrap().unwrap().auth_string,
        None
    );
    store.schedule(install(&c, t(3600)), t(8)).await.unwrap();
    store.schedule(install(&c, t(3600)), t(9)).await.unwrap();
    store.cancel(&c, t(10)).await.unwrap();
    store.schedule(install(&b, t(20)), t(11)).await.unwrap();
    assert_eq!(store.pending_operation(&b, t(30)).await.unwrap(), None);

    let events = all_events(&store, None).await;
    assert!(events.len() >= 15, "expected a full trail, got {events:?}");
    for e in &events {
        let text = format!(
            "{} {} {} {:?}",
            e.kind,
            e.detail,
            e.source_addr.clone().unwrap_or_default(),
            e.device_name
        );
        assert!(!text.contains(SECRET), "event leaks the auth string: {e:?}");
    }
}

async fn cancel(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    assert_eq!(store.cancel(&d, t(0)).await.unwrap(), None);

    let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    let cancelled = store.cancel(&d, t(5)).await.unwrap().unwrap();
    assert_eq!(cancelled.id, op.id);
    assert_eq!(cancelled.status, OperationStatus::Cancelled);
    assert_eq!(cancelled.updated_at, t(5));
    assert_eq!(cancelled.auth_string, None);

    assert_eq!(store.cancel(&d, t(6)).await.unwrap(), None);
    assert_eq!(store.pending_operation(&d, t(7)).await.unwrap(), None);
    assert!(!store
        .claim(op.id, "node-a", t(8), Duration::from_secs(60))
        .await
        .unwrap());
    let events = all_events(&store, Some(&d)).await;
    let last = events.last().unwrap();
    assert_eq!(last.kind, "operation_cancelled");
    assert_eq!(last.operation_id, Some(op.id));
    assert_eq!(
        count(&event_kinds(&store, &d).await, "operation_cancelled"),
        1
    );
}

async fn pending_operation_times_out(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let op = store.schedule(install(&d, t(60)), t(0)).await.unwrap();
    assert_eq!(
        store
            .pending_operation(&d, t(59))
            .await
            .unwrap()
            .map(|o| o.id),
        Some(op.id)
    );
    // A deadline that is not after `now` has passed.
    assert_eq!(store.pending_operation(&d, t(60)).await.unwrap(), None);
    let late = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(late.status, OperationStatus::TimedOut);
    assert_eq!(late.cause, Some(FailureCause::UserInitiatedRequestLate));
    assert_eq!(late.updated_at, t(60));
    assert_eq!(late.auth_string, None);

    assert_eq!(store.pending_operation(&d, t(61)).await.unwrap(), None);
    let events = all_events(&store, Some(&d)).await;
    let timed_out: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "operation_timed_out")
        .collect();
    assert_eq!(timed_out.len(), 1);
    assert_eq!(timed_out[0].operation_id, Some(op.id));
    assert_eq!(timed_out[0].at, t(60));
}

async fn expire_operations(store: Arc<dyn Store>) {
    let a = dev("SEP0000000000AA");
    let b = dev("SEP0000000000BB");
    let c = dev("SEP0000000000CC");
    let op_a = store.schedule(install(&a, t(30)), t(0)).await.unwrap();
    let op_b = store.schedule(install(&b, t(40)), t(0)).await.unwrap();
    let op_c = store.schedule(install(&c, t(100)), t(0)).await.unwrap();
    // A certificate sent but never confirmed before the deadline.
    hold(&store, op_a.id, t(20)).await;
    let issued = store
        .record_issued(op_a.id, HOLDER, cert(1), t(20), LEASE)
        .await
        .unwrap();

    assert_eq!(store.expire_operations(t(10)).await.unwrap(), 0);
    assert_eq!(store.expire_operations(t(40)).await.unwrap(), 2);
    for (op, status) in [
        (&op_a, OperationStatus::TimedOut),
        (&op_b, OperationStatus::TimedOut),
        (&op_c, OperationStatus::Pending),
    ] {
        let now = store.operation(op.id).await.unwrap().unwrap();
        assert_eq!(now.status, status, "operation {}", op.id);
    }
    assert_eq!(
        store.operation(op_a.id).await.unwrap().unwrap().cause,
        Some(FailureCause::UserInitiatedRequestLate)
    );
    let certs = store.certificates(&a).await.unwrap();
    assert_eq!(certs[0].id, issued);
    assert_eq!(certs[0].state, CertState::Abandoned);
    assert_eq!(
        count(&event_kinds(&store, &a).await, "operation_timed_out"),
        1
    );
    assert_eq!(
        count(&event_kinds(&store, &a).await, "certificate_abandoned"),
        1
    );
    assert_eq!(
        count(&event_kinds(&store, &b).await, "operation_timed_out"),
        1
    );
    assert_eq!(
        count(&event_kinds(&store, &c).await, "operation_timed_out"),
        0
    );

    assert_eq!(store.expire_operations(t(40)).await.unwrap(), 0);
    assert_eq!(store.expire_operations(t(100)).await.unwrap(), 1);
}

async fn claim_and_release(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    let lease = Duration::from_secs(30);

    assert!(store.claim(op.id, "node-a", t(0), lease).await.unwrap());
    let held = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(held.claimed_by.as_deref(), Some("node-a"));
    assert_eq!(held.claim_expires_at, Some(t(30)));

    assert!(!store.claim(op.id, "node-b", t(10), lease).await.unwrap());
    // The holder may renew.
    assert!(store.claim(op.id, "node-a", t(10), lease).await.unwrap());
    assert!(!store.claim(op.id, "node-b", t(39), lease).await.unwrap());
    // Lease ran out at t(40).
    assert!(store.claim(op.id, "node-b", t(40), lease).await.unwrap());

    // Only the holder's release counts.
    store.release(op.id, "node-a").await.unwrap();
    assert!(!store.claim(op.id, "node-a", t(41), lease).await.unwrap());
    store.release(op.id, "node-b").await.unwrap();
    let released = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(
        (released.claimed_by, released.claim_expires_at),
        (None, None)
    );
    assert!(store.claim(op.id, "node-a", t(42), lease).await.unwrap());

    let kinds = event_kinds(&store, &d).await;
    assert_eq!(count(&kinds, "operation_claimed"), 4);

    store
        .fail_operation(
            op.id,
            "node-a",
            FailureCause::PhoneCommunicationFailure,
            t(43),
        )
        .await
        .unwrap();
    let failed = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(failed.claimed_by, None);
    assert!(!store.claim(op.id, "node-a", t(44), lease).await.unwrap());
    assert!(!store
        .claim(op.id + 1000, "node-a", t(44), lease)
        .await
        .unwrap());
}

/// A node takes over the claim of one of its ended sessions; that session's late release
/// then releases nothing.
async fn take_over_a_claim(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    let lease = Duration::from_secs(90);
    assert!(store.claim(op.id, "n/1/a", t(0), lease).await.unwrap());
    // Only from the holder.
    assert!(!store
        .take_over(op.id, "n/1/x", "n/1/b", t(1), lease)
        .await
        .unwrap());
    assert!(store
        .take_over(op.id, "n/1/a", "n/1/b", t(2), lease)
        .await
        .unwrap());
    store.release(op.id, "n/1/a").await.unwrap();
    let held = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(held.claimed_by.as_deref(), Some("n/1/b"));
    assert_eq!(held.claim_expires_at, Some(t(92)));
    let kinds = event_kinds(&store, &d).await;
    assert_eq!(count(&kinds, "operation_claimed"), 2);
    // A free operation can be taken "over" too: it is a claim.
    store.release(op.id, "n/1/b").await.unwrap();
    assert!(store
        .take_over(op.id, "n/1/a", "n/1/c", t(3), lease)
        .await
        .unwrap());
    // Never an ended operation.
    store
        .fail_operation(
            op.id,
            "n/1/c",
            FailureCause::PhoneCommunicationFailure,
            t(4),
        )
        .await
        .unwrap();
    assert!(!store
        .take_over(op.id, "n/1/c", "n/1/d", t(5), lease)
        .await
        .unwrap());
}

/// A run exiting with sessions cut short frees their operations, and only theirs.
async fn release_claims_of_a_run(store: Arc<dyn Store>) {
    let lease = Duration::from_secs(90);
    let (a, b) = (dev("SEP00000000000A"), dev("SEP00000000000B"));
    let op_a = store.schedule(install(&a, t(3600)), t(0)).await.unwrap();
    let op_b = store.schedule(install(&b, t(3600)), t(0)).await.unwrap();
    assert!(store.claim(op_a.id, "n/1/a", t(0), lease).await.unwrap());
    assert!(store.claim(op_b.id, "n/10/b", t(0), lease).await.unwrap());
    assert_eq!(store.release_claims("n/1/").await.unwrap(), 1);
    let freed = store.operation(op_a.id).await.unwrap().unwrap();
    assert_eq!((freed.claimed_by, freed.claim_expires_at), (None, None));
    assert_eq!(freed.status, OperationStatus::Pending);
    let other = store.operation(op_b.id).await.unwrap().unwrap();
    assert_eq!(other.claimed_by.as_deref(), Some("n/10/b"));
}

/// A node renews its sessions' claims; a dead node's claims run out.
async fn renew_claims_of_a_node(store: Arc<dyn Store>) {
    let lease = Duration::from_secs(90);
    let (a, b, c) = (
        dev("SEP00000000000A"),
        dev("SEP00000000000B"),
        dev("SEP00000000000C"),
    );
    let op_a = store.schedule(install(&a, t(3600)), t(0)).await.unwrap();
    let op_b = store.schedule(install(&b, t(3600)), t(0)).await.unwrap();
    let op_c = store.schedule(install(&c, t(3600)), t(0)).await.unwrap();
    assert!(store
        .claim(op_a.id, "node_1/0000000a", t(0), lease)
        .await
        .unwrap());
    assert!(store
        .claim(op_b.id, "node_1/0000000b", t(0), lease)
        .await
        .unwrap());
    // "node-1" must not match "node_1" ('_' is no wildcard) nor "node_10" (prefix ends at '/').
    assert!(store
        .claim(op_c.id, "nodex1/0000000c", t(0), lease)
        .await
        .unwrap());
    // Another session of the same node cannot take a held operation.
    assert!(!store
        .claim(op_a.id, "node_1/000000ff", t(1), lease)
        .await
        .unwrap());

    assert_eq!(
        store.renew_claims("node_1/", t(60), lease).await.unwrap(),
        2
    );
    assert_eq!(
        store.renew_claims("node-1/", t(60), lease).await.unwrap(),
        0
    );
    let renewed = store.operation(op_a.id).await.unwrap().unwrap();
    assert_eq!(renewed.claim_expires_at, Some(t(150)));
    assert_eq!(renewed.claimed_by.as_deref(), Some("node_1/0000000a"));
    // nodex1 died: at t(100) its claim has run out and another node takes over; node_1's hold.
    assert!(store
        .claim(op_c.id, "node_2/00000001", t(100), lease)
        .await
        .unwrap());
    assert!(!store
        .claim(op_a.id, "node_2/00000002", t(100), lease)
        .await
        .unwrap());
    // Ended operations are not renewed.
    store
        .fail_operation(
            op_b.id,
            "node_1/0000000b",
            FailureCause::PhoneCommunicationFailure,
            t(101),
        )
        .await
        .unwrap();
    assert_eq!(
        store.renew_claims("node_1/", t(102), lease).await.unwrap(),
        1
    );
}

async fn keygen_attempts_and_failure(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    assert_eq!(store.count_keygen_attempt(op.id, t(1)).await.unwrap(), 1);
    assert_eq!(store.count_keygen_attempt(op.id, t(2)).await.unwrap(), 2);
    let counted = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(counted.keygen_attempts, 2);
    assert_eq!(counted.updated_at, t(2));
    assert_eq!(count(&event_kinds(&store, &d).await, "keygen_requested"), 2);

    hold(&store, op.id, t(3)).await;
    store
        .fail_operation(op.id, HOLDER, FailureCause::KeyGenerationTimeout, t(5))
        .await
        .unwrap();
    let failed = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(failed.status, OperationStatus::Failed);
    assert_eq!(failed.cause, Some(FailureCause::KeyGenerationTimeout));
    assert_eq!(failed.auth_string, None);
    assert_eq!(failed.keygen_attempts, 2);
    let events = all_events(&store, Some(&d)).await;
    let last = events.last().unwrap();
    assert_eq!(last.kind, "operation_failed");
    assert_eq!(last.operation_id, Some(op.id));
    assert!(last.detail.contains("key_generation_timeout"));

    // A final operation cannot be counted on or failed again.
    assert!(is_not_found(store.count_keygen_attempt(op.id, t(6)).await));
    assert!(is_not_found(
        store
            .fail_operation(op.id, HOLDER, FailureCause::InvalidMic, t(6))
            .await
    ));
    assert!(is_not_found(
        store
            .fail_operation(op.id + 1000, HOLDER, FailureCause::InvalidMic, t(6))
            .await
    ));
    assert_eq!(
        store.operation(op.id).await.unwrap().unwrap().cause,
        Some(FailureCause::KeyGenerationTimeout)
    );
}

async fn install_flow(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let op1 = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    assert!(store
        .claim(op1.id, "node-a", t(0), Duration::from_secs(60))
        .await
        .unwrap());

    let c1 = store
        .record_issued(op1.id, HOLDER, cert(1), t(1), LEASE)
        .await
        .unwrap();
    let certs = store.certificates(&d).await.unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].state, CertState::AwaitingConfirmation);
    assert_eq!(certs[0].operation_id, Some(op1.id));
    assert_eq!(
        store.operation(op1.id).await.unwrap().unwrap().status,
        OperationStatus::Pending
    );
    assert_eq!(store.current_certificate(&d).await.unwrap(), None);

    // The phone asks again: the first certificate is abandoned.
    let c2 = store
        .record_issued(op1.id, HOLDER, cert(2), t(2), LEASE)
        .await
        .unwrap();
    let states: Vec<_> = store
        .certificates(&d)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    assert_eq!(
        states,
        [
            (c2, CertState::AwaitingConfirmation),
            (c1, CertState::Abandoned)
        ]
    );

    // Confirming an abandoned certificate changes nothing at all.
    assert!(is_not_found(
        store.confirm_install(op1.id, HOLDER, c1, t(3)).await
    ));
    let still = store.operation(op1.id).await.unwrap().unwrap();
    assert_eq!(still.status, OperationStatus::Pending);
    assert_eq!(still.auth_string, Some(AuthString(SECRET.into())));
    assert_eq!(store.current_certificate(&d).await.unwrap(), None);

    store
        .confirm_install(op1.id, HOLDER, c2, t(3))
        .await
        .unwrap();
    let done = store.operation(op1.id).await.unwrap().unwrap();
    assert_eq!(done.status, OperationStatus::Success);
    assert_eq!(done.auth_string, None);
    assert_eq!((done.claimed_by, done.claim_expires_at), (None, None));
    let current = store.current_certificate(&d).await.unwrap().unwrap();
    assert_eq!(current.id, c2);
    assert_eq!(current.state, CertState::Installed);
    assert!(is_not_found(
        store.confirm_install(op1.id, HOLDER, c2, t(4)).await
    ));
    assert!(is_not_found(
        store
            .record_issued(op1.id, HOLDER, cert(9), t(4), LEASE)
            .await
    ));
    assert!(is_not_found(
        store
            .record_issued(op1.id + 1000, HOLDER, cert(9), t(4), LEASE)
            .await
    ));

    // A second install replaces the first certificate.
    let op2 = store.schedule(install(&d, t(7200)), t(10)).await.unwrap();
    let c3 = install_held(&store, op2.id, 3, [t(10), t(11), t(12)]).await;
    assert_eq!(store.current_certificate(&d).await.unwrap().unwrap().id, c3);
    let all = store.certificates(&d).await.unwrap();
    let states: Vec<_> = all.iter().map(|c| (c.id, c.state)).collect();
    assert_eq!(
        states,
        [
            (c3, CertState::Installed),
            (c2, CertState::Superseded),
            (c1, CertState::Abandoned)
        ]
    );

    // Every field survives the round trip.
    let expected = cert(2);
    let found = store
        .certificate_by_fingerprint(&d, &expected.fingerprint_sha256)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, c2);
    assert_eq!(found.device_name, d);
    assert_eq!(found.operation_id, Some(op1.id));
    assert_eq!(found.serial_hex, expected.serial_hex);
    assert_eq!(found.subject, expected.subject);
    assert_eq!(found.issuer, expected.issuer);
    assert_eq!(found.not_before, expected.not_before);
    assert_eq!(found.not_after, expected.not_after);
    assert_eq!(found.pem, expected.pem);
    assert_eq!(found.state, CertState::Superseded);
    assert_eq!((found.created_at, found.updated_at), (t(2), t(12)));
    assert_eq!(
        store
            .certificate_by_fingerprint(&d, &cert(7).fingerprint_sha256)
            .await
            .unwrap(),
        None
    );
    let other = dev("SEP00112233AABB");
    store.ensure_device(&other, t(13)).await.unwrap();
    assert_eq!(
        store
            .certificate_by_fingerprint(&other, &expected.fingerprint_sha256)
            .await
            .unwrap(),
        None
    );

    let kinds = event_kinds(&store, &d).await;
    assert_eq!(count(&kinds, "certificate_issued"), 3);
    assert_eq!(count(&kinds, "certificate_abandoned"), 1);
    assert_eq!(count(&kinds, "certificate_installed"), 2);
    assert_eq!(count(&kinds, "certificate_superseded"), 1);
    assert_eq!(count(&kinds, "operation_succeeded"), 2);
    let issued = all_events(&store, Some(&d))
        .await
        .into_iter()
        .find(|e| e.kind == "certificate_issued")
        .unwrap();
    assert!(issued.detail.contains(&cert(1).fingerprint_sha256));
}

/// The operation as it stands, its device's certificates (id, state) and how many audit
/// events the device has: what a refused write must leave as it was.
async fn snapshot(
    store: &Arc<dyn Store>,
    op_id: i64,
    d: &DeviceName,
) -> (capf_store::Operation, Vec<(i64, CertState)>, usize) {
    let op = store.operation(op_id).await.unwrap().unwrap();
    let certs = store.certificates(d).await.unwrap();
    let certs = certs.into_iter().map(|c| (c.id, c.state)).collect();
    (op, certs, all_events(store, Some(d)).await.len())
}

/// A session records the certificate it issued only while it holds the operation's claim:
/// past its lease too, as long as nobody else claimed, but never once another session took
/// the claim over (its node lost the database for longer than the lease, say).
async fn record_issued_is_fenced_by_the_claim(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let lease = Duration::from_secs(30);
    let (a, b) = ("n/1/a", "n/2/b");
    let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();

    // Nobody holds it: refused, nothing written.
    let before = snapshot(&store, op.id, &d).await;
    let refused = store.record_issued(op.id, a, cert(1), t(1), lease).await;
    assert!(is_claim_lost(refused), "unclaimed");
    assert_eq!(snapshot(&store, op.id, &d).await, before);

    // The holder, past its lease with nobody else in: accepted, and the lease renewed from
    // then, so nobody can claim before the phone confirms.
    assert!(store.claim(op.id, a, t(1), lease).await.unwrap());
    let c1 = store
        .record_issued(op.id, a, cert(1), t(40), lease)
        .await
        .unwrap();
    let held = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(held.claimed_by.as_deref(), Some(a));
    assert_eq!(held.claim_expires_at, Some(t(70)));
    assert!(!store.claim(op.id, b, t(69), lease).await.unwrap());

    // a's lease runs out and b claims: a's next certificate is refused and changes nothing.
    assert!(store.claim(op.id, b, t(70), lease).await.unwrap());
    let before = snapshot(&store, op.id, &d).await;
    match store.record_issued(op.id, a, cert(2), t(71), lease).await {
        Err(StoreError::ClaimLost(why)) => assert!(why.contains(b), "{why}"),
        other => panic!("expected ClaimLost, got {other:?}"),
    }
    assert_eq!(snapshot(&store, op.id, &d).await, before);
    assert_eq!(before.1, [(c1, CertState::AwaitingConfirmation)]);
    assert_eq!(before.0.claimed_by.as_deref(), Some(b));

    // b, the holder now, issues: a's unconfirmed certificate is abandoned.
    let c2 = store
        .record_issued(op.id, b, cert(2), t(72), lease)
        .await
        .unwrap();
    let (_, certs, _) = snapshot(&store, op.id, &d).await;
    assert_eq!(
        certs,
        [
            (c2, CertState::AwaitingConfirmation),
            (c1, CertState::Abandoned)
        ]
    );

    // A claim released (its session ended) is not held either.
    store.release(op.id, b).await.unwrap();
    assert!(is_claim_lost(
        store.record_issued(op.id, b, cert(3), t(73), lease).await
    ));
    // Once the operation ended, it is gone for everyone.
    store.cancel(&d, t(74)).await.unwrap();
    assert!(is_not_found(
        store.record_issued(op.id, b, cert(3), t(75), lease).await
    ));
}

/// The install is confirmed only by the session holding the claim; a session whose claim
/// was taken over gets `ClaimLost` and the operation stays the new holder's.
async fn confirm_install_is_fenced_by_the_claim(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let lease = Duration::from_secs(30);
    let (a, b) = ("n/1/a", "n/2/b");
    let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    assert!(store.claim(op.id, a, t(0), lease).await.unwrap());
    let c1 = store
        .record_issued(op.id, a, cert(1), t(1), lease)
        .await
        .unwrap();

    // b takes over once a's lease ran out; a's phone then confirms: refused.
    assert!(store.claim(op.id, b, t(31), lease).await.unwrap());
    let before = snapshot(&store, op.id, &d).await;
    assert!(is_claim_lost(
        store.confirm_install(op.id, a, c1, t(32)).await
    ));
    assert_eq!(snapshot(&store, op.id, &d).await, before);
    assert_eq!(before.0.status, OperationStatus::Pending);
    assert_eq!(before.0.claimed_by.as_deref(), Some(b));
    assert_eq!(store.current_certificate(&d).await.unwrap(), None);

    // b issues its own certificate: a cannot confirm that one either, b can (past its lease,
    // with nobody else in).
    let c2 = store
        .record_issued(op.id, b, cert(2), t(33), lease)
        .await
        .unwrap();
    assert!(is_claim_lost(
        store.confirm_install(op.id, a, c2, t(34)).await
    ));
    store.confirm_install(op.id, b, c2, t(100)).await.unwrap();
    let done = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(done.status, OperationStatus::Success);
    assert_eq!((done.claimed_by, done.claim_expires_at), (None, None));
    assert_eq!(store.current_certificate(&d).await.unwrap().unwrap().id, c2);
    assert!(is_not_found(
        store.confirm_install(op.id, b, c2, t(101)).await
    ));
}

/// Fetch, delete and failure end the operation only for the session holding its claim, like
/// an install's confirmation: a session whose claim was taken over (its node lost the
/// database for longer than the lease) gets `ClaimLost`, writes nothing, and leaves the
/// operation to the new holder. Its notes on the operation are dropped too.
async fn endings_are_fenced_by_the_claim(store: Arc<dyn Store>) {
    let lease = Duration::from_secs(30);
    let (a, b) = ("n/1/a", "n/2/b");
    let d = dev("SEP001122334455");
    let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    let installed = install_held(&store, op.id, 1, [t(0), t(1), t(2)]).await;

    // Each kind of operation: a claims, b takes over once a's lease ran out at t(40).
    let del = store
        .schedule(op_of(&d, OperationKind::Delete, t(3600)), t(10))
        .await
        .unwrap();
    let fetch_dev = dev("SEP00112233AABB");
    let fetch = store
        .schedule(
            op_of(&fetch_dev, OperationKind::Troubleshoot, t(3600)),
            t(10),
        )
        .await
        .unwrap();
    let fail_dev = dev("CSFjsmith");
    let fail = store
        .schedule(install(&fail_dev, t(3600)), t(10))
        .await
        .unwrap();
    let ops = [(del.id, &d), (fetch.id, &fetch_dev), (fail.id, &fail_dev)];
    for (id, _) in ops {
        assert!(store.claim(id, a, t(10), lease).await.unwrap());
        assert!(store.claim(id, b, t(40), lease).await.unwrap());
    }
    let before: Vec<_> = snapshots(&store, &ops).await;

    assert!(is_claim_lost(store.complete_delete(del.id, a, t(41)).await));
    match store
        .complete_fetch(fetch.id, a, Some(cert(7)), t(41))
        .await
    {
        Err(StoreError::ClaimLost(why)) => assert!(why.contains(b), "{why}"),
        other => panic!("expected ClaimLost, got {other:?}"),
    }
    assert!(is_claim_lost(
        store
            .fail_operation(fail.id, a, FailureCause::KeyGenerationTimeout, t(41))
            .await
    ));
    store
        .note_attempt_failure(fail.id, Some(a), FailureCause::KeyGenerationFailed, t(41))
        .await
        .unwrap();
    assert_eq!(snapshots(&store, &ops).await, before);
    for (id, _) in ops {
        let op = store.operation(id).await.unwrap().unwrap();
        assert_eq!(op.status, OperationStatus::Pending);
        assert_eq!((op.claimed_by.as_deref(), op.cause), (Some(b), None));
    }
    assert_eq!(
        store.current_certificate(&d).await.unwrap().unwrap().id,
        installed,
        "the refused deletion deleted nothing"
    );

    // The holder's endings go through.
    store.complete_delete(del.id, b, t(42)).await.unwrap();
    store
        .complete_fetch(fetch.id, b, Some(cert(7)), t(42))
        .await
        .unwrap();
    store
        .note_attempt_failure(fail.id, Some(b), FailureCause::KeyGenerationFailed, t(42))
        .await
        .unwrap();
    let noted = store.operation(fail.id).await.unwrap().unwrap();
    assert_eq!(noted.cause, Some(FailureCause::KeyGenerationFailed));
    store
        .fail_operation(fail.id, b, FailureCause::KeyGenerationTimeout, t(43))
        .await
        .unwrap();
    for (id, _) in ops {
        let op = store.operation(id).await.unwrap().unwrap();
        assert_ne!(op.status, OperationStatus::Pending);
        assert_eq!(op.claimed_by, None);
    }
    assert_eq!(store.current_certificate(&d).await.unwrap(), None);
    assert_eq!(store.certificates(&fetch_dev).await.unwrap().len(), 1);

    // Ended is ended, for the old holder and the new alike.
    for who in [a, b] {
        assert!(is_not_found(
            store.complete_delete(del.id, who, t(44)).await
        ));
        assert!(is_not_found(
            store.complete_fetch(fetch.id, who, None, t(44)).await
        ));
        assert!(is_not_found(
            store
                .fail_operation(fail.id, who, FailureCause::InvalidMic, t(44))
                .await
        ));
    }
}

/// [`snapshot`] of each operation and its device.
async fn snapshots(
    store: &Arc<dyn Store>,
    ops: &[(i64, &DeviceName)],
) -> Vec<(capf_store::Operation, Vec<(i64, CertState)>, usize)> {
    let mut all = Vec::new();
    for (id, d) in ops {
        all.push(snapshot(store, *id, d).await);
    }
    all
}

/// Many sessions' writes at once, half of them refused: each caller gets its own answer, and
/// a refused write changes nothing while the others around it stand. (SQLite's writer
/// commits queued transactions together; a failing one must not take its neighbours along.)
async fn concurrent_writes_keep_their_own_outcomes(store: Arc<dyn Store>) {
    let mut issued = Vec::new();
    for i in 0..48u32 {
        let d = dev(&format!("SEP0011223{i:05X}"));
        let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
        hold(&store, op.id, t(0)).await;
        let c = store
            .record_issued(op.id, HOLDER, cert(1), t(1), LEASE)
            .await
            .unwrap();
        issued.push((d, op.id, c));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (d, op_id, c)) in issued.iter().cloned().enumerate() {
        let store = store.clone();
        tasks.spawn(async move {
            // Odd ones confirm a certificate that does not exist: refused after the
            // operation's status change, which must be undone.
            let cert_id = if i % 2 == 0 { c } else { c + 10_000 };
            let result = store.confirm_install(op_id, HOLDER, cert_id, t(2)).await;
            (i, d, op_id, result)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, d, op_id, result) = joined.unwrap();
        let op = store.operation(op_id).await.unwrap().unwrap();
        if i % 2 == 0 {
            result.unwrap();
            assert_eq!(op.status, OperationStatus::Success, "{d}");
            assert!(store.current_certificate(&d).await.unwrap().is_some());
        } else {
            assert!(is_not_found(result), "{d}");
            assert_eq!(op.status, OperationStatus::Pending, "{d}");
            assert_eq!(store.current_certificate(&d).await.unwrap(), None);
            assert!(!event_kinds(&store, &d)
                .await
                .contains(&"operation_succeeded".to_string()));
        }
    }
}

async fn fetch_flow(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let op = store
        .schedule(op_of(&d, OperationKind::Troubleshoot, t(3600)), t(0))
        .await
        .unwrap();
    hold(&store, op.id, t(1)).await;
    store
        .complete_fetch(op.id, HOLDER, Some(cert(7)), t(5))
        .await
        .unwrap();
    assert_eq!(
        store.operation(op.id).await.unwrap().unwrap().status,
        OperationStatus::Success
    );
    let certs = store.certificates(&d).await.unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].state, CertState::Fetched);
    assert_eq!(certs[0].operation_id, Some(op.id));
    assert_eq!(certs[0].fingerprint_sha256, cert(7).fingerprint_sha256);
    // A fetched certificate is not the device's installed LSC.
    assert_eq!(store.current_certificate(&d).await.unwrap(), None);

    let op2 = store
        .schedule(op_of(&d, OperationKind::Troubleshoot, t(3600)), t(10))
        .await
        .unwrap();
    hold(&store, op2.id, t(10)).await;
    store
        .complete_fetch(op2.id, HOLDER, None, t(11))
        .await
        .unwrap();
    assert_eq!(
        store.operation(op2.id).await.unwrap().unwrap().status,
        OperationStatus::Success
    );
    assert_eq!(store.certificates(&d).await.unwrap().len(), 1);
    assert!(is_not_found(
        store.complete_fetch(op2.id, HOLDER, None, t(12)).await
    ));

    let events = all_events(&store, Some(&d)).await;
    let fetched: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "certificate_fetched")
        .collect();
    assert_eq!(fetched.len(), 2);
    assert_eq!(fetched[0].operation_id, Some(op.id));
    assert!(fetched[0].detail.contains(&cert(7).fingerprint_sha256));
    assert_eq!(fetched[1].operation_id, Some(op2.id));
    assert!(fetched[1].detail.contains("no certificate"));
    assert_eq!(
        count(&event_kinds(&store, &d).await, "operation_succeeded"),
        2
    );
}

async fn delete_flow(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    hold(&store, op.id, t(0)).await;
    let c = store
        .record_issued(op.id, HOLDER, cert(1), t(1), LEASE)
        .await
        .unwrap();
    store.confirm_install(op.id, HOLDER, c, t(2)).await.unwrap();

    let del = store
        .schedule(op_of(&d, OperationKind::Delete, t(3600)), t(10))
        .await
        .unwrap();
    hold(&store, del.id, t(10)).await;
    store.complete_delete(del.id, HOLDER, t(20)).await.unwrap();
    assert_eq!(store.current_certificate(&d).await.unwrap(), None);
    let record = store.certificates(&d).await.unwrap().remove(0);
    assert_eq!((record.id, record.state), (c, CertState::Deleted));
    assert_eq!(record.updated_at, t(20));
    assert_eq!(
        store.operation(del.id).await.unwrap().unwrap().status,
        OperationStatus::Success
    );
    assert!(is_not_found(
        store.complete_delete(del.id, HOLDER, t(21)).await
    ));

    // Deleting when nothing is on record still succeeds, and says so.
    let del2 = store
        .schedule(op_of(&d, OperationKind::Delete, t(3600)), t(30))
        .await
        .unwrap();
    hold(&store, del2.id, t(30)).await;
    store.complete_delete(del2.id, HOLDER, t(31)).await.unwrap();
    let events = all_events(&store, Some(&d)).await;
    let deleted: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "certificate_deleted")
        .collect();
    assert_eq!(deleted.len(), 2);
    assert_eq!(deleted[0].operation_id, Some(del.id));
    assert!(deleted[0].detail.contains(&c.to_string()));
    assert_eq!(deleted[1].operation_id, Some(del2.id));
    assert_eq!(
        count(&event_kinds(&store, &d).await, "operation_succeeded"),
        3
    );
}

/// One admitted check that fails, recorded as the service records it.
async fn fail_once(
    store: &Arc<dyn Store>,
    d: &DeviceName,
    cause: &str,
    addr: &str,
    now: Timestamp,
) {
    let ticket = admitted(
        store
            .admit_auth_attempt(d, addr, now, LockoutPolicy::default())
            .await
            .unwrap(),
    );
    store
        .record_auth_failure(d, &ticket, cause, addr, now)
        .await
        .unwrap();
}

fn admitted(admission: AuthAdmission) -> AuthTicket {
    match admission {
        AuthAdmission::Admitted(ticket) => ticket,
        AuthAdmission::Locked => panic!("admission refused: device locked"),
    }
}

async fn lockout(store: Arc<dyn Store>) {
    let policy = LockoutPolicy {
        max_failures: 3,
        lock_duration: Duration::from_secs(60),
    };
    let zero = LockState {
        failed_auth_count: 0,
        locked_until: None,
    };
    let addr = "198.51.100.5:40001";
    let ticket = |failures, locks_until| AuthTicket {
        failures,
        locks_until,
    };

    // Unknown devices have nothing to protect: not admitted, not created.
    let ghost = dev("SEP0000DEADBEEF");
    assert_eq!(store.lock_state(&ghost).await.unwrap(), zero);
    assert!(is_not_found(
        store.admit_auth_attempt(&ghost, addr, t(0), policy).await
    ));
    assert_eq!(store.device(&ghost).await.unwrap(), None);

    let d = dev("SEP001122334455");
    store.ensure_device(&d, t(0)).await.unwrap();
    let admit = |now| store.admit_auth_attempt(&d, addr, now, policy);
    let fail =
        |ticket, now| store.record_auth_failure(&d, ticket, "invalid_auth_string", addr, now);

    // The count is taken at admission, before the check; a failure only audits.
    let first = admitted(admit(t(1)).await.unwrap());
    assert_eq!(first, ticket(1, None));
    assert_eq!(store.lock_state(&d).await.unwrap().failed_auth_count, 1);
    fail(&first, t(1)).await.unwrap();
    assert_eq!(store.lock_state(&d).await.unwrap().failed_auth_count, 1);
    let second = admitted(admit(t(2)).await.unwrap());
    assert_eq!(second, ticket(2, None));
    fail(&second, t(2)).await.unwrap();

    // The admission that reaches max_failures locks at once, before its check completes,
    // so a guess racing it is refused unchecked (and audited).
    let third = admitted(admit(t(3)).await.unwrap());
    assert_eq!(third, ticket(3, Some(t(63))));
    let locked = LockState {
        failed_auth_count: 3,
        locked_until: Some(t(63)),
    };
    assert_eq!(store.lock_state(&d).await.unwrap(), locked);
    assert!(locked.is_locked(t(62)) && !locked.is_locked(t(63)));
    assert_eq!(admit(t(3)).await.unwrap(), AuthAdmission::Locked);
    let last = all_events(&store, Some(&d)).await.pop().unwrap();
    assert_eq!(last.kind, "auth_refused_locked");
    assert_eq!(last.source_addr.as_deref(), Some(addr));
    fail(&third, t(3)).await.unwrap();
    assert_eq!(
        store.device(&d).await.unwrap().unwrap().locked_until,
        Some(t(63))
    );

    let events = all_events(&store, Some(&d)).await;
    let failed: Vec<_> = events.iter().filter(|e| e.kind == "auth_failed").collect();
    assert_eq!(failed.len(), 3);
    for e in &failed {
        assert_eq!(e.source_addr.as_deref(), Some(addr));
        assert!(e.detail.contains("invalid_auth_string"), "{e:?}");
    }
    let lock_events: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "device_locked")
        .collect();
    assert_eq!(lock_events.len(), 1);
    assert_eq!(lock_events[0].at, t(3));
    assert_eq!(lock_events[0].source_addr.as_deref(), Some(addr));

    store.record_locked_attempt(&d, addr, t(4)).await.unwrap();
    let last = all_events(&store, Some(&d)).await.pop().unwrap();
    assert_eq!(last.kind, "auth_refused_locked");
    assert_eq!(last.source_addr.as_deref(), Some(addr));
    assert_eq!(admit(t(62)).await.unwrap(), AuthAdmission::Locked);

    // When the window has run out the count starts again.
    let after_lock = admitted(admit(t(63)).await.unwrap());
    assert_eq!(after_lock, ticket(1, None));
    assert_eq!(
        store.lock_state(&d).await.unwrap(),
        LockState {
            failed_auth_count: 1,
            locked_until: None,
        }
    );
    fail(&after_lock, t(63)).await.unwrap();

    store.unlock(&d, t(64)).await.unwrap();
    assert_eq!(store.lock_state(&d).await.unwrap(), zero);
    assert_eq!(
        all_events(&store, Some(&d)).await.pop().unwrap().kind,
        "device_unlocked"
    );
    assert!(is_not_found(store.unlock(&ghost, t(64)).await));

    // Success resets the count.
    let right = admitted(admit(t(65)).await.unwrap());
    assert_eq!(right, ticket(1, None));
    store
        .record_auth_success(&d, Some(&right), t(65))
        .await
        .unwrap();
    assert_eq!(store.lock_state(&d).await.unwrap(), zero);
    let before = all_events(&store, Some(&d)).await;
    assert_eq!(before.last().unwrap().kind, "auth_failures_reset");
    // Already zero: nothing to record.
    store.record_auth_success(&d, None, t(66)).await.unwrap();
    assert_eq!(all_events(&store, Some(&d)).await.len(), before.len());

    // The right secret with the attempt that locked: that attempt's own lock is lifted.
    for now in [t(67), t(68)] {
        let wrong = admitted(admit(now).await.unwrap());
        store
            .record_auth_failure(&d, &wrong, "invalid_auth_string", addr, now)
            .await
            .unwrap();
    }
    let right = admitted(admit(t(69)).await.unwrap());
    assert_eq!(right, ticket(3, Some(t(129))));
    store
        .record_auth_success(&d, Some(&right), t(69))
        .await
        .unwrap();
    assert_eq!(store.lock_state(&d).await.unwrap(), zero);

    // A lock that another, concurrent attempt set stays when an earlier one succeeds.
    let right = admitted(admit(t(70)).await.unwrap());
    let racing = [admit(t(70)).await.unwrap(), admit(t(70)).await.unwrap()];
    assert_eq!(admitted(racing[1]), ticket(3, Some(t(130))));
    store
        .record_auth_success(&d, Some(&right), t(70))
        .await
        .unwrap();
    assert_eq!(
        store.lock_state(&d).await.unwrap(),
        LockState {
            failed_auth_count: 0,
            locked_until: Some(t(130)),
        }
    );
    assert_eq!(admit(t(71)).await.unwrap(), AuthAdmission::Locked);
}

/// The combined read that starts an authentication, and the confirmation that writes the
/// session's attempt with it, agree with their separate counterparts.
async fn reads_and_writes_of_the_enrollment_path(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let ghost = dev("SEP0000DEADBEEF");
    assert_eq!(
        store
            .device_and_pending_operation(&ghost, t(0))
            .await
            .unwrap(),
        None
    );
    let device = store.ensure_device(&d, t(0)).await.unwrap();
    assert_eq!(
        store.device_and_pending_operation(&d, t(0)).await.unwrap(),
        Some((device.clone(), None))
    );
    let op = store.schedule(install(&d, t(3600)), t(1)).await.unwrap();
    let (read_device, pending) = store
        .device_and_pending_operation(&d, t(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read_device, store.device(&d).await.unwrap().unwrap());
    assert_eq!(pending, store.pending_operation(&d, t(2)).await.unwrap());
    assert_eq!(pending.unwrap().id, op.id);

    // Confirmed with its attempt: both written, together.
    hold(&store, op.id, t(3)).await;
    let c = store
        .record_issued(op.id, HOLDER, cert(1), t(4), LEASE)
        .await
        .unwrap();
    let attempt = Attempt {
        device_name: d.clone(),
        operation_id: Some(op.id),
        session_id: 77,
        source_addr: "192.0.2.77".into(),
        started_at: t(3),
        ended_at: t(5),
        outcome: "installed".into(),
        detail: "installed".into(),
    };
    // Refused by the fence: neither the operation nor the history changes.
    assert!(is_claim_lost(
        store
            .confirm_install_with_attempt(op.id, "node-b", c, t(5), attempt.clone())
            .await
    ));
    assert_eq!(store.attempts(&d, 0).await.unwrap(), []);
    store
        .confirm_install_with_attempt(op.id, HOLDER, c, t(5), attempt.clone())
        .await
        .unwrap();
    assert_eq!(
        store.operation(op.id).await.unwrap().unwrap().status,
        OperationStatus::Success
    );
    assert_eq!(store.current_certificate(&d).await.unwrap().unwrap().id, c);
    assert_eq!(
        store.attempts(&d, 0).await.unwrap(),
        std::slice::from_ref(&attempt)
    );
    let last = last_attempt(&store, &d).await;
    assert_eq!(
        (last.at, last.outcome.as_str()),
        (attempt.started_at, "installed")
    );

    // Late: the combined read times the operation out, as pending_operation does.
    let late = store.schedule(install(&d, t(10)), t(6)).await.unwrap();
    let (_, pending) = store
        .device_and_pending_operation(&d, t(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pending, None);
    let late = store.operation(late.id).await.unwrap().unwrap();
    assert_eq!(late.status, OperationStatus::TimedOut);
    assert_eq!(late.cause, Some(FailureCause::UserInitiatedRequestLate));
}

async fn attempts(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    let attempt = |session_id, started: i64, op_id, outcome: &str| Attempt {
        device_name: d.clone(),
        operation_id: op_id,
        session_id,
        source_addr: format!("192.0.2.{session_id}:5000"),
        started_at: t(started),
        ended_at: t(started + 2),
        outcome: outcome.into(),
        detail: format!("session {session_id}"),
    };
    let a1 = attempt(1, 10, None, "no_operation");
    let a2 = attempt(2, 20, Some(op.id), "auth_failed");
    // Reported late by a slower node: older than a2.
    let a3 = attempt(3, 15, Some(op.id), "phone_disconnected");
    for a in [&a1, &a2, &a3] {
        store.record_attempt(a.clone()).await.unwrap();
    }
    assert_eq!(
        store.attempts(&d, 0).await.unwrap(),
        [a3.clone(), a2.clone(), a1.clone()]
    );
    assert_eq!(store.attempts(&d, 2).await.unwrap(), [a3, a2.clone()]);

    let last = last_attempt(&store, &d).await;
    assert_eq!(last.at, a2.started_at);
    assert_eq!(last.source_addr, a2.source_addr);
    assert_eq!(last.outcome, a2.outcome);

    // A device capf does not know: the attempt is kept, no device appears.
    let ghost = dev("SEP0000DEADBEEF");
    let g = Attempt {
        device_name: ghost.clone(),
        ..attempt(4, 30, None, "unknown_device")
    };
    store.record_attempt(g.clone()).await.unwrap();
    assert_eq!(store.attempts(&ghost, 10).await.unwrap(), [g]);
    assert_eq!(store.device(&ghost).await.unwrap(), None);
    assert_eq!(store.attempts(&d, 10).await.unwrap().len(), 3);
}

async fn audit_and_events(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let other = dev("CSFjsmith");
    store
        .audit(
            Some(&d),
            None,
            "admin_note",
            Some("192.0.2.1"),
            "report exported",
            t(1),
        )
        .await
        .unwrap();
    store
        .audit(None, Some(42), "capf_started", None, "node-a", t(2))
        .await
        .unwrap();
    store.ensure_device(&other, t(3)).await.unwrap();

    let all = all_events(&store, None).await;
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(all[0].kind, "admin_note");
    assert_eq!(all[0].at, t(1));
    assert_eq!(all[0].device_name.as_deref(), Some(d.as_str()));
    assert_eq!(all[0].operation_id, None);
    assert_eq!(all[0].source_addr.as_deref(), Some("192.0.2.1"));
    assert_eq!(all[0].detail, "report exported");
    assert_eq!(all[1].kind, "capf_started");
    assert_eq!(all[1].device_name, None);
    assert_eq!(all[1].operation_id, Some(42));
    assert_eq!(all[2].kind, "device_created");

    let by_device = all_events(&store, Some(&d)).await;
    assert_eq!(by_device, all[..1]);
    let since = store
        .events(EventFilter {
            since: Some(t(2)),
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(since, all[1..]);
    let after = store
        .events(EventFilter {
            after_id: Some(all[0].id),
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(after, all[1..]);
    let combined = store
        .events(EventFilter {
            device_name: Some(other.as_str().into()),
            since: Some(t(1)),
            after_id: Some(all[0].id),
            limit: 5,
        })
        .await
        .unwrap();
    assert_eq!(combined, all[2..]);

    // Paging with the cursor visits every event once, in order.
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .events(EventFilter {
                after_id: cursor,
                limit: 2,
                ..EventFilter::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 2);
        cursor = Some(last.id);
        paged.extend(page);
    }
    assert_eq!(paged, all);
}

/// Bulk scheduling leaves the same rows and events as scheduling one at a time: new devices,
/// superseded operations (their unconfirmed certificates abandoned), the new operations.
async fn schedule_many_matches_schedule(store: Arc<dyn Store>) {
    let (a, b, c) = (
        dev("SEP00000000000A"),
        dev("SEP00000000000B"),
        dev("CSFbulk"),
    );
    // b already has a pending operation with an issued, unconfirmed certificate.
    let old = store.schedule(install(&b, t(3600)), t(0)).await.unwrap();
    hold(&store, old.id, t(0)).await;
    let cert_id = store
        .record_issued(old.id, HOLDER, cert(1), t(1), LEASE)
        .await
        .unwrap();
    let ops = vec![
        install(&a, t(7200)),
        op_of(&b, OperationKind::Delete, t(7200)),
        op_of(&c, OperationKind::Troubleshoot, t(7200)),
    ];
    let ids = store.schedule_many(&ops, t(10)).await.unwrap();
    assert_eq!(ids.len(), 3);
    for (id, op) in ids.iter().zip(&ops) {
        let stored = store.operation(*id).await.unwrap().unwrap();
        assert_eq!(stored.device_name, op.device_name);
        assert_eq!(stored.kind, op.kind);
        assert_eq!(stored.auth_mode, op.auth_mode);
        assert_eq!(stored.auth_string, op.auth_string);
        assert_eq!(stored.key, op.key);
        assert_eq!(stored.completes_by, op.completes_by);
        assert_eq!(stored.status, OperationStatus::Pending);
        assert_eq!(stored.created_at, t(10));
        let pending = store
            .pending_operation(&op.device_name, t(11))
            .await
            .unwrap();
        assert_eq!(pending.map(|p| p.id), Some(*id));
    }
    let old = store.operation(old.id).await.unwrap().unwrap();
    assert_eq!(old.status, OperationStatus::Superseded);
    assert_eq!(old.auth_string, None, "the old string is erased");
    let certs = store.certificates(&b).await.unwrap();
    assert_eq!(
        (certs[0].id, certs[0].state),
        (cert_id, CertState::Abandoned)
    );

    assert_eq!(
        event_kinds(&store, &a).await,
        ["device_created", "operation_scheduled"]
    );
    let b_events = all_events(&store, Some(&b)).await;
    let b_kinds: Vec<&str> = b_events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        b_kinds,
        [
            "device_created",
            "operation_scheduled",
            "operation_claimed",
            "certificate_issued",
            "certificate_abandoned",
            "operation_superseded",
            "operation_scheduled",
        ]
    );
    let superseded = b_events
        .iter()
        .find(|e| e.kind == "operation_superseded")
        .unwrap();
    assert_eq!(superseded.operation_id, Some(old.id));
    assert_eq!(
        superseded.detail,
        format!("superseded by operation {}", ids[1])
    );
    let scheduled = b_events.last().unwrap();
    assert_eq!(scheduled.operation_id, Some(ids[1]));
    assert!(scheduled
        .detail
        .starts_with("kind=delete auth_mode=null key=ec-p256"));
    for e in all_events(&store, None).await {
        assert!(!e.detail.contains(SECRET));
    }

    // More rows than one statement takes (the store batches them).
    let many: Vec<NewOperation> = (0..1200)
        .map(|i| install(&dev(&format!("SEP{:012X}", 0x5000 + i)), t(7200)))
        .collect();
    let ids = store.schedule_many(&many, t(20)).await.unwrap();
    assert_eq!(ids.len(), 1200);
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 1200, "one new operation per row");
    let last = store.operation(ids[1199]).await.unwrap().unwrap();
    assert_eq!(last.device_name, many[1199].device_name);
    assert!(store.schedule_many(&[], t(30)).await.unwrap().is_empty());
}

/// A bulk that fails half-way changes nothing (the same device twice breaks the one-pending
/// rule inside the transaction).
async fn schedule_many_is_all_or_nothing(store: Arc<dyn Store>) {
    let a = dev("SEP00000000000A");
    let twice = vec![
        install(&dev("SEP00000000000C"), t(60)),
        install(&a, t(60)),
        install(&a, t(60)),
    ];
    assert!(store.schedule_many(&twice, t(0)).await.is_err());
    assert_eq!(store.device(&dev("SEP00000000000C")).await.unwrap(), None);
    assert_eq!(store.device(&a).await.unwrap(), None);
    assert!(all_events(&store, None).await.is_empty());
}

async fn note_attempt_failure(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    store
        .note_attempt_failure(op.id, None, FailureCause::InvalidAuthString, t(5))
        .await
        .unwrap();
    let noted = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(noted.status, OperationStatus::Pending, "still performable");
    assert_eq!(noted.cause, Some(FailureCause::InvalidAuthString));
    assert_eq!(noted.updated_at, t(5));
    // Success clears the cause.
    install_held(&store, op.id, 1, [t(6), t(6), t(7)]).await;
    let done = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!((done.status, done.cause), (OperationStatus::Success, None));
    // Noting on an ended operation changes nothing.
    store
        .note_attempt_failure(op.id, None, FailureCause::InvalidMic, t(8))
        .await
        .unwrap();
    assert_eq!(store.operation(op.id).await.unwrap().unwrap().cause, None);
}

async fn list_devices_filters_and_cursor(store: Arc<dyn Store>) {
    // with_lsc: installed LSC expiring at cert(n).not_after; pending: install pending;
    // cancelled; bare: no operation at all; CSF_x: softphone with '_' in its name.
    let with_lsc = dev("SEP0000000000A1");
    let op = store
        .schedule(install(&with_lsc, t(3600)), t(0))
        .await
        .unwrap();
    install_held(&store, op.id, 2, [t(0), t(1), t(2)]).await;
    let pending = dev("SEP0000000000A2");
    store
        .schedule(install(&pending, t(3600)), t(3))
        .await
        .unwrap();
    let cancelled = dev("SEP0000000000B1");
    store
        .schedule(install(&cancelled, t(3600)), t(4))
        .await
        .unwrap();
    store.cancel(&cancelled, t(5)).await.unwrap();
    let bare = dev("SEP0000000000B2");
    store.ensure_device(&bare, t(6)).await.unwrap();
    let soft = dev("CSF_x");
    store
        .schedule(op_of(&soft, OperationKind::Troubleshoot, t(3600)), t(7))
        .await
        .unwrap();

    let names = |filter: DeviceFilter| {
        let store = Arc::clone(&store);
        async move {
            store
                .list_devices(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.device.name.as_str().to_string())
                .collect::<Vec<_>>()
        }
    };
    let all = names(DeviceFilter::default()).await;
    assert_eq!(all.len(), 5);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "name order");

    let summary = store
        .list_devices(&DeviceFilter {
            name_prefix: Some("SEP0000000000A1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(summary.len(), 1);
    let s = &summary[0];
    let op = s.operation.as_ref().unwrap();
    assert_eq!(
        (op.status, op.kind),
        (OperationStatus::Success, OperationKind::Install)
    );
    assert_eq!(op.auth_string, None, "listings carry no secret");
    let lsc = s.lsc.as_ref().unwrap();
    assert_eq!(lsc.serial_hex, cert(2).serial_hex);
    assert_eq!(lsc.not_after, cert(2).not_after);

    let pending_only = names(DeviceFilter {
        status: Some(StatusFilter::Is(OperationStatus::Pending)),
        ..Default::default()
    })
    .await;
    assert_eq!(pending_only, ["CSF_x", "SEP0000000000A2"]);
    let none = names(DeviceFilter {
        status: Some(StatusFilter::None),
        ..Default::default()
    })
    .await;
    assert_eq!(none, ["SEP0000000000B1", "SEP0000000000B2"]);
    let troubleshoot = names(DeviceFilter {
        operation: Some(OperationKind::Troubleshoot),
        ..Default::default()
    })
    .await;
    assert_eq!(troubleshoot, ["CSF_x"]);
    let has = names(DeviceFilter {
        has_lsc: Some(true),
        ..Default::default()
    })
    .await;
    assert_eq!(has, ["SEP0000000000A1"]);
    assert_eq!(
        names(DeviceFilter {
            has_lsc: Some(false),
            ..Default::default()
        })
        .await
        .len(),
        4
    );
    let expiring = |before| DeviceFilter {
        lsc_expires_before: Some(before),
        ..Default::default()
    };
    assert_eq!(
        names(expiring(cert(2).not_after + TimeDelta::seconds(1)))
            .await
            .len(),
        1
    );
    assert!(
        names(expiring(cert(2).not_after)).await.is_empty(),
        "strictly before"
    );
    // Prefixes are literal and case-sensitive: '_' is no wildcard, "csf" is not "CSF".
    let prefix = |p: &str| DeviceFilter {
        name_prefix: Some(p.into()),
        ..Default::default()
    };
    assert_eq!(names(prefix("SEP0000000000B")).await.len(), 2);
    assert_eq!(names(prefix("CSF_")).await, ["CSF_x"]);
    assert!(names(prefix("CSFx")).await.is_empty());
    assert!(names(prefix("csf")).await.is_empty());
    // Combined filters, then the cursor.
    let combined = names(DeviceFilter {
        name_prefix: Some("SEP".into()),
        has_lsc: Some(false),
        status: Some(StatusFilter::None),
        ..Default::default()
    })
    .await;
    assert_eq!(combined, ["SEP0000000000B1", "SEP0000000000B2"]);
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = names(DeviceFilter {
            after_name: after.clone(),
            limit: 2,
            ..Default::default()
        })
        .await;
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        seen.extend(page);
    }
    assert_eq!(seen, all);
}

async fn api_tokens(store: Arc<dyn Store>) {
    let token = |name: &str, hash: &str, scope| ApiToken {
        name: name.into(),
        token_sha256: hash.into(),
        scope,
        created_at: t(0),
    };
    let admin = token("admin", &"a".repeat(64), TokenScope::Admin);
    assert!(store.bootstrap_token(&admin, t(0)).await.unwrap());
    // Only the very first token is bootstrapped, whatever its name.
    let other = token("admin2", &"b".repeat(64), TokenScope::Admin);
    assert!(!store.bootstrap_token(&other, t(1)).await.unwrap());
    assert_eq!(store.tokens().await.unwrap(), vec![admin.clone()]);

    let ro = token("auditor", &"c".repeat(64), TokenScope::ReadOnly);
    store.create_token(&ro, t(2)).await.unwrap();
    let clash = token("auditor", &"d".repeat(64), TokenScope::Admin);
    assert!(matches!(
        store.create_token(&clash, t(3)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.token_by_hash(&"c".repeat(64)).await.unwrap(),
        Some(ro.clone())
    );
    assert_eq!(store.token_by_hash(&"d".repeat(64)).await.unwrap(), None);
    assert!(store.revoke_token("auditor", t(4)).await.unwrap());
    assert!(!store.revoke_token("auditor", t(5)).await.unwrap());
    assert_eq!(store.token_by_hash(&"c".repeat(64)).await.unwrap(), None);
    let kinds: Vec<String> = all_events(&store, None)
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["token_created", "token_created", "token_revoked"]);
    for e in all_events(&store, None).await {
        assert!(!e.detail.contains(&"a".repeat(64)) && !e.detail.contains(&"c".repeat(64)));
    }
}

async fn restart_keeps_everything(db: &TestDb) {
    let d = dev("SEP001122334455");
    let (op, cert_id, events_before) = {
        let store = db.open().await;
        let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
        let cert_id = install_held(&store, op.id, 1, [t(0), t(1), t(2)]).await;
        fail_once(&store, &d, "invalid_lsc", "192.0.2.9:1", t(3)).await;
        store.set_require_sudi(&d, true, t(4)).await.unwrap();
        (op, cert_id, all_events(&store, None).await)
    };

    // A new process: migrations run again (and find nothing to do), the data is there.
    let store = db.open().await;
    let device = store.device(&d).await.unwrap().unwrap();
    assert!(device.require_sudi);
    assert_eq!(device.failed_auth_count, 1);
    let again = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(again.status, OperationStatus::Success);
    assert_eq!(again.created_at, op.created_at);
    assert_eq!(
        store.current_certificate(&d).await.unwrap().unwrap().id,
        cert_id
    );
    assert_eq!(all_events(&store, None).await, events_before);

    // New rows continue after the old ones.
    store
        .audit(Some(&d), None, "restarted", None, "", t(5))
        .await
        .unwrap();
    let events = all_events(&store, None).await;
    assert!(events.last().unwrap().id > events_before.last().unwrap().id);
}

async fn two_nodes_race(db: &TestDb) {
    let nodes = [db.open().await, db.open().await];

    // Many sessions on both nodes claim one operation at the same instant: one wins.
    let d = dev("SEP001122334455");
    let op = nodes[0].schedule(install(&d, t(3600)), t(0)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let store = nodes[i % 2].clone();
        tasks.spawn(async move {
            store
                .claim(op.id, &format!("node-{i}"), t(1), Duration::from_secs(60))
                .await
        });
    }
    let mut wins = 0;
    while let Some(result) = tasks.join_next().await {
        if result.unwrap().unwrap() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(
        count(&event_kinds(&nodes[1], &d).await, "operation_claimed"),
        1
    );

    // Thirty guesses sent at once, spread across both nodes: exactly ten are admitted to be
    // checked, the tenth locks, the other twenty are refused unchecked.
    let victim = dev("SEP00112233AABB");
    nodes[1].ensure_device(&victim, t(0)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let store = nodes[i % 2].clone();
        let victim = victim.clone();
        tasks.spawn(async move {
            let addr = "203.0.113.9:1000";
            let policy = LockoutPolicy::default();
            let admission = store
                .admit_auth_attempt(&victim, addr, t(2), policy)
                .await?;
            if let AuthAdmission::Admitted(ticket) = admission {
                store
                    .record_auth_failure(&victim, &ticket, "invalid_auth_string", addr, t(2))
                    .await?;
            }
            Ok::<_, StoreError>(admission)
        });
    }
    let mut counts = Vec::new();
    let mut refused = 0;
    while let Some(result) = tasks.join_next().await {
        match result.unwrap().unwrap() {
            AuthAdmission::Admitted(ticket) => {
                counts.push(ticket.failures);
                assert_eq!(ticket.locks_until.is_some(), ticket.failures == 10);
            }
            AuthAdmission::Locked => refused += 1,
        }
    }
    counts.sort_unstable();
    assert_eq!(counts, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(refused, 20);
    let state = nodes[0].lock_state(&victim).await.unwrap();
    assert_eq!(state.failed_auth_count, 10);
    assert_eq!(state.locked_until, Some(t(602)));
    let kinds = event_kinds(&nodes[0], &victim).await;
    assert_eq!(count(&kinds, "auth_failed"), 10);
    assert_eq!(count(&kinds, "device_locked"), 1);
    assert_eq!(count(&kinds, "auth_refused_locked"), 20);

    // Administrators on both nodes scheduling at once: one operation stays pending.
    let busy = dev("CSFjsmith");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = nodes[i % 2].clone();
        let busy = busy.clone();
        tasks.spawn(async move { store.schedule(install(&busy, t(3600)), t(3)).await });
    }
    let mut ids = Vec::new();
    while let Some(result) = tasks.join_next().await {
        ids.push(result.unwrap().unwrap().id);
    }
    let mut statuses = Vec::new();
    for id in &ids {
        statuses.push(nodes[0].operation(*id).await.unwrap().unwrap().status);
    }
    let pending = statuses
        .iter()
        .filter(|s| **s == OperationStatus::Pending)
        .count();
    let superseded = statuses
        .iter()
        .filter(|s| **s == OperationStatus::Superseded)
        .count();
    assert_eq!((pending, superseded), (1, 7));
    assert_eq!(
        count(&event_kinds(&nodes[1], &busy).await, "device_created"),
        1
    );

    // Sweepers on both nodes (they read, then write) each end every late operation once
    // between them, while sessions keep writing.
    let mut late = Vec::new();
    for i in 0..12 {
        let name = dev(&format!("SEP0000000001{i:02}"));
        late.push(
            nodes[0]
                .schedule(install(&name, t(10)), t(4))
                .await
                .unwrap()
                .id,
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = nodes[i % 2].clone();
        let victim = victim.clone();
        tasks.spawn(async move {
            let expired = store.expire_operations(t(20)).await?;
            store.count_keygen_attempt(op.id, t(20)).await?;
            let addr = "203.0.113.9:1";
            let policy = LockoutPolicy::default();
            if let AuthAdmission::Admitted(ticket) = store
                .admit_auth_attempt(&victim, addr, t(20), policy)
                .await?
            {
                store
                    .record_auth_failure(&victim, &ticket, "invalid_mic", addr, t(20))
                    .await?;
            }
            Ok::<u64, StoreError>(expired)
        });
    }
    let mut expired = 0;
    while let Some(result) = tasks.join_next().await {
        expired += result.unwrap().unwrap();
    }
    assert_eq!(expired, 12);
    for id in late {
        let op = nodes[1].operation(id).await.unwrap().unwrap();
        assert_eq!(op.status, OperationStatus::TimedOut);
        let timed_out = all_events(&nodes[1], Some(&op.device_name))
            .await
            .into_iter()
            .filter(|e| e.kind == "operation_timed_out")
            .count();
        assert_eq!(timed_out, 1);
    }
    assert_eq!(
        nodes[0]
            .operation(op.id)
            .await
            .unwrap()
            .unwrap()
            .keygen_attempts,
        8
    );
}

async fn corrupt_rows_are_reported(db: &TestDb) {
    let store = db.open().await;
    let a = dev("SEP0000000000AA");
    let b = dev("SEP0000000000BB");
    let op_a = store.schedule(install(&a, t(3600)), t(0)).await.unwrap();
    let op_b = store.schedule(install(&b, t(3600)), t(0)).await.unwrap();
    db.raw_execute(&format!(
        "UPDATE operations SET kind = 'reboot' WHERE id = {}",
        op_a.id
    ))
    .await;
    db.raw_execute(&format!(
        "UPDATE operations SET key_spec = 'rsa-512' WHERE id = {}",
        op_b.id
    ))
    .await;
    assert!(matches!(
        store.operation(op_a.id).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        store.latest_operation(&b).await,
        Err(StoreError::Corrupt(_))
    ));
    // Other rows are unaffected.
    assert!(store.device(&a).await.unwrap().is_some());
}

// ---- outside the contract: how failures to reach a database surface ----

#[tokio::test]
async fn unreachable_postgres_is_unavailable() {
    // Port 1 on the loopback: nothing listens, the connection is refused at once.
    let url = DatabaseUrl::new("postgres://capf:s3cret@127.0.0.1:1/capf").unwrap();
    let started = std::time::Instant::now();
    let err = capf_store::open(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(!err.to_string().contains("s3cret"));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn sqlite_file_that_cannot_be_created_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, b"x").unwrap();
    let url = DatabaseUrl::sqlite_file(&blocker.join("capf.db"));
    let err = capf_store::open(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn sqlite_file_is_in_wal_mode() {
    let db = TestDb::sqlite().await;
    let _store = db.open().await;
    let mut conn = sqlx::SqliteConnection::connect(db.url.expose())
        .await
        .unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}
