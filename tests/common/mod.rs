pub(crate) mod api;
pub(crate) mod db;
pub(crate) mod server;

use capf_model::device::DeviceName;
use capf_model::keyspec::KeySpec;
use std::time::{Duration, Instant};

use capf_model::operation::{AuthMode, OperationKind};
use capf_store::{AuthString, NewOperation, Operation, Store};
use chrono::Utc;

/// Schedules an operation through the store, due in a week.
#[allow(dead_code)]
pub(crate) async fn schedule(
    store: &dyn Store,
    device: &str,
    kind: OperationKind,
    mode: AuthMode,
    auth: Option<&str>,
    key: KeySpec,
) -> Operation {
    store
        .schedule(
            NewOperation {
                device_name: DeviceName::from_admin(device).unwrap(),
                kind,
                auth_mode: mode,
                auth_string: auth.map(|s| AuthString(s.into())),
                key,
                completes_by: Utc::now() + chrono::Duration::days(7),
            },
            Utc::now(),
        )
        .await
        .unwrap()
}

/// Schedules an install through the store (see [`schedule`]); returns its id.
#[allow(dead_code)]
pub(crate) async fn schedule_install(
    store: &dyn Store,
    device: &str,
    mode: AuthMode,
    auth: Option<&str>,
    key: KeySpec,
) -> i64 {
    schedule(store, device, OperationKind::Install, mode, auth, key)
        .await
        .id
}

/// Schedules an install of an EC P-256 key, the tests' usual phone; returns its id.
#[allow(dead_code)]
pub(crate) async fn install_p256(
    store: &dyn Store,
    device: &str,
    mode: AuthMode,
    auth: Option<&str>,
) -> i64 {
    let key = KeySpec::Ec(capf_model::keyspec::Curve::P256);
    schedule_install(store, device, mode, auth, key).await
}

/// The status of an operation, which must exist.
#[allow(dead_code)]
pub(crate) async fn status(store: &dyn Store, id: i64) -> capf_model::operation::OperationStatus {
    store
        .operation(id)
        .await
        .expect("read operation")
        .expect("operation exists")
        .status
}

/// Waits (up to 20 s) until a session has claimed the device's latest operation, e.g. while
/// a [`server::TestServer::slow_phone`] is in key generation.
#[allow(dead_code)]
pub(crate) async fn wait_until_claimed(store: &dyn Store, device: &DeviceName) {
    wait_for_claim(store, device, true).await
}

/// Waits (up to 20 s) until no session holds the device's latest operation: the server has
/// ended the session and released its claim.
#[allow(dead_code)]
pub(crate) async fn wait_until_released(store: &dyn Store, device: &DeviceName) {
    wait_for_claim(store, device, false).await
}

async fn wait_for_claim(store: &dyn Store, device: &DeviceName, claimed: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let op = store
            .latest_operation(device)
            .await
            .expect("read operation");
        if op.is_some_and(|o| o.claimed_by.is_some() == claimed) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the operation of {device:?} was not {} within 20 s",
            if claimed { "claimed" } else { "released" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
