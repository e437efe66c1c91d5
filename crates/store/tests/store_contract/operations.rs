//! Devices and operations: scheduling (one or many), reading, cancelling, timing out.

use std::sync::Arc;
use std::time::Duration;

use capf_model::keyspec::{Curve, KeySpec};
use capf_model::operation::{AuthMode, CertState, FailureCause, OperationKind, OperationStatus};
use capf_store::{AuthString, NewOperation, Store};

use crate::fixtures::*;

pub(crate) async fn devices(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    let d = dev("SEP001122334455");
    assert_eq!(store.device(&d).await.unwrap(), None);

    // Scheduling creates the device.
    store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    let created = store.device(&d).await.unwrap().unwrap();
    assert_eq!(created.name, d);
    assert!(!created.require_sudi);
    assert_eq!(created.created_at, t(0));
    assert_eq!(created.failed_auth_count, 0);
    assert_eq!(created.locked_until, None);
    assert_eq!(created.last_attempt, None);

    // Scheduling again finds the device and does not create it again.
    store.schedule(install(&d, t(3600)), t(5)).await.unwrap();
    assert_eq!(store.device(&d).await.unwrap().unwrap(), created);
    assert_eq!(count(&event_kinds(&store, &d).await, "device_created"), 1);

    store.set_require_sudi(&d, true, t(10)).await.unwrap();
    assert!(store.device(&d).await.unwrap().unwrap().require_sudi);
    let events = all_events(&store, Some(&d)).await;
    let last = events.last().unwrap();
    assert_eq!(last.kind, "device_updated");
    assert_eq!(last.at, t(10));
    assert!(last.detail.contains("require_sudi=true"));

    let unknown = dev("CSFnobody");
    assert!(is_not_found(
        store.set_require_sudi(&unknown, true, t(11)).await
    ));
    assert_eq!(store.device(&unknown).await.unwrap(), None);
}

pub(crate) async fn schedule_creates_device_and_supersedes(store: Arc<dyn Store>) {
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

pub(crate) async fn no_event_contains_the_auth_string(store: Arc<dyn Store>) {
    let a = dev("SEP001122334455");
    let b = dev("SEP00112233AABB");
    let c = dev("CSFjsmith");

    // Success path.
    let op = store.schedule(install(&a, t(3600)), t(0)).await.unwrap();
    let claimed = store
        .claim_for_session(op.id, None, HOLDER, t(1), LEASE, true)
        .await
        .unwrap();
    assert_eq!(claimed, Some(1));
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

pub(crate) async fn cancel(store: Arc<dyn Store>) {
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

pub(crate) async fn pending_operation_times_out(store: Arc<dyn Store>) {
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

pub(crate) async fn expire_operations(store: Arc<dyn Store>) {
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

pub(crate) async fn note_attempt_failure(store: Arc<dyn Store>) {
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

/// Bulk scheduling leaves the same rows and events as scheduling one at a time: new devices,
/// superseded operations (their unconfirmed certificates abandoned), the new operations.
pub(crate) async fn schedule_many_matches_schedule(store: Arc<dyn Store>) {
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
pub(crate) async fn schedule_many_is_all_or_nothing(store: Arc<dyn Store>) {
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
