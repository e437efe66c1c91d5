//! The values and steps the contract tests share.

use std::sync::Arc;
use std::time::Duration;

use capf_model::device::DeviceName;
use capf_model::keyspec::{Curve, KeySpec};
use capf_model::operation::{AuthMode, OperationKind};
use capf_store::{
    AuthAdmission, AuthString, AuthTicket, EventFilter, LockoutPolicy, NewCertificate,
    NewOperation, Store, StoreError, Timestamp,
};
use chrono::{TimeDelta, TimeZone, Utc};

pub(crate) const SECRET: &str = "1234567";

pub(crate) fn t(secs: i64) -> Timestamp {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap() + TimeDelta::seconds(secs)
}

pub(crate) fn dev(name: &str) -> DeviceName {
    DeviceName::from_admin(name).unwrap()
}

pub(crate) fn install(device: &DeviceName, completes_by: Timestamp) -> NewOperation {
    NewOperation {
        device_name: device.clone(),
        kind: OperationKind::Install,
        auth_mode: AuthMode::String,
        auth_string: Some(AuthString(SECRET.into())),
        key: KeySpec::Rsa(2048),
        completes_by,
    }
}

pub(crate) fn op_of(
    device: &DeviceName,
    kind: OperationKind,
    completes_by: Timestamp,
) -> NewOperation {
    NewOperation {
        device_name: device.clone(),
        kind,
        auth_mode: AuthMode::Null,
        auth_string: None,
        key: KeySpec::Ec(Curve::P256),
        completes_by,
    }
}

pub(crate) fn cert(n: u8) -> NewCertificate {
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

pub(crate) async fn event_kinds(store: &Arc<dyn Store>, device: &DeviceName) -> Vec<String> {
    all_events(store, Some(device))
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

pub(crate) async fn all_events(
    store: &Arc<dyn Store>,
    device: Option<&DeviceName>,
) -> Vec<capf_store::Event> {
    store
        .events(EventFilter {
            device_name: device.map(|d| d.as_str().to_string()),
            ..EventFilter::default()
        })
        .await
        .unwrap()
}

pub(crate) fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| *k == kind).count()
}

pub(crate) fn is_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::NotFound(_)))
}

pub(crate) fn is_claim_lost<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::ClaimLost(_)))
}

/// The session that performs an operation in these tests, and its lease.
pub(crate) const HOLDER: &str = "node-a";

pub(crate) const LEASE: Duration = Duration::from_secs(60);

/// A whole install by [`HOLDER`]: claimed, certificate `cert(n)` issued, then confirmed, at
/// the three times given; returns the certificate's id.
pub(crate) async fn install_held(
    store: &Arc<dyn Store>,
    op_id: i64,
    n: u8,
    at: [Timestamp; 3],
) -> i64 {
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
pub(crate) async fn last_attempt(
    store: &Arc<dyn Store>,
    d: &DeviceName,
) -> capf_store::LastAttempt {
    store
        .device(d)
        .await
        .unwrap()
        .unwrap()
        .last_attempt
        .unwrap()
}

/// Claims the operation for [`HOLDER`] at `at`, as a session does before it issues.
pub(crate) async fn hold(store: &Arc<dyn Store>, op_id: i64, at: Timestamp) {
    assert!(store.claim(op_id, HOLDER, at, LEASE).await.unwrap());
}

/// One admitted check that fails, recorded as the service records it.
pub(crate) async fn fail_once(
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

pub(crate) fn admitted(admission: AuthAdmission) -> AuthTicket {
    match admission {
        AuthAdmission::Admitted(ticket) => ticket,
        AuthAdmission::Locked => panic!("admission refused: device locked"),
    }
}

/// Makes `d` a known device without a pending operation (only scheduling creates devices):
/// schedules an operation and cancels it at once. Returns the device.
pub(crate) async fn known_device(
    store: &Arc<dyn Store>,
    d: &DeviceName,
    at: Timestamp,
) -> capf_store::Device {
    store
        .schedule(install(d, at + TimeDelta::hours(1)), at)
        .await
        .unwrap();
    store.cancel(d, at).await.unwrap().unwrap();
    store.device(d).await.unwrap().unwrap()
}

/// A session of the node that ran `from` takes over its claim (see
/// [`Store::claim_for_session`]); whether it holds the operation now.
pub(crate) async fn take_over(
    store: &Arc<dyn Store>,
    op_id: i64,
    from: &str,
    claimant: &str,
    now: Timestamp,
    lease: Duration,
) -> Result<bool, StoreError> {
    let claimed = store
        .claim_for_session(op_id, Some(from), claimant, now, lease, false)
        .await?;
    Ok(claimed.is_some())
}
