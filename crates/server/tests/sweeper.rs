//! The deadline sweeper against a real SQLite file, with a clock the test moves: an
//! operation is marked timed out exactly when the clock passes its deadline, not before.

use capf_model::clock::{Clock, ManualClock};
use capf_model::device::DeviceName;
use capf_model::keyspec::KeySpec;
use capf_model::operation::{AuthMode, FailureCause, OperationKind, OperationStatus};
use capf_server::app::sweep_once;
use capf_store::{DatabaseUrl, NewOperation};
use chrono::{DateTime, TimeDelta};

#[tokio::test]
async fn an_operation_times_out_when_the_clock_passes_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let store = capf_store::open(&DatabaseUrl::sqlite_file(&dir.path().join("capf.db")))
        .await
        .unwrap();
    let start = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
    let clock = ManualClock::new(start);
    let device = DeviceName::from_admin("SEP00000000BEEF").unwrap();
    let op = store
        .schedule(
            NewOperation {
                device_name: device.clone(),
                kind: OperationKind::Install,
                auth_mode: AuthMode::Null,
                auth_string: None,
                key: KeySpec::Rsa(2048),
                completes_by: start + TimeDelta::seconds(10),
            },
            clock.now(),
        )
        .await
        .unwrap();

    // A second before the deadline the operation still stands.
    clock.advance(TimeDelta::seconds(9));
    assert_eq!(sweep_once(store.as_ref(), &clock).await, 0);
    let now = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(now.status, OperationStatus::Pending);

    // At the deadline the sweeper marks it, with CUCM's cause, once.
    clock.advance(TimeDelta::seconds(1));
    assert_eq!(sweep_once(store.as_ref(), &clock).await, 1);
    let swept = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(swept.status, OperationStatus::TimedOut);
    assert_eq!(swept.cause, Some(FailureCause::UserInitiatedRequestLate));
    assert_eq!(
        capf_model::status::describe(Some(swept.status_of())).text,
        "Upgrade Failed: User Initiated Request Late"
    );
    assert_eq!(sweep_once(store.as_ref(), &clock).await, 0);
}
