//! Certificates: install, fetch and delete flows, and the claim fencing every ending.

use std::sync::Arc;
use std::time::Duration;

use capf_model::device::DeviceName;
use capf_model::operation::{CertState, FailureCause, OperationKind, OperationStatus};
use capf_store::{AuthString, Store, StoreError};

use crate::fixtures::*;

pub(crate) async fn install_flow(store: Arc<dyn Store>) {
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
    let found = all.iter().find(|c| c.id == c2).unwrap();
    assert_eq!(found.device_name, d);
    assert_eq!(found.operation_id, Some(op1.id));
    assert_eq!(found.serial_hex, expected.serial_hex);
    assert_eq!(found.subject, expected.subject);
    assert_eq!(found.issuer, expected.issuer);
    assert_eq!(found.not_before, expected.not_before);
    assert_eq!(found.not_after, expected.not_after);
    assert_eq!(found.fingerprint_sha256, expected.fingerprint_sha256);
    assert_eq!(found.pem, expected.pem);
    assert_eq!(found.state, CertState::Superseded);
    assert_eq!((found.created_at, found.updated_at), (t(2), t(12)));

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
pub(crate) async fn snapshot(
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
pub(crate) async fn record_issued_is_fenced_by_the_claim(store: Arc<dyn Store>) {
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
        Err(StoreError::ClaimLost(lost)) => assert_eq!(lost.holder.as_deref(), Some(b)),
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
pub(crate) async fn confirm_install_is_fenced_by_the_claim(store: Arc<dyn Store>) {
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
pub(crate) async fn endings_are_fenced_by_the_claim(store: Arc<dyn Store>) {
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
        Err(StoreError::ClaimLost(lost)) => assert_eq!(lost.holder.as_deref(), Some(b)),
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
pub(crate) async fn snapshots(
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
pub(crate) async fn concurrent_writes_keep_their_own_outcomes(store: Arc<dyn Store>) {
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

pub(crate) async fn fetch_flow(store: Arc<dyn Store>) {
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

pub(crate) async fn delete_flow(store: Arc<dyn Store>) {
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
