//! Authentication failures and lockout, and the reads and writes that start and end an enrollment.

use std::sync::Arc;
use std::time::Duration;

use capf_model::operation::{FailureCause, OperationStatus};
use capf_store::{Attempt, AuthAdmission, AuthTicket, LockState, LockoutPolicy, Store};

use crate::fixtures::*;

pub(crate) async fn lockout(store: Arc<dyn Store>) {
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
    known_device(&store, &d, t(0)).await;
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
pub(crate) async fn reads_and_writes_of_the_enrollment_path(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let ghost = dev("SEP0000DEADBEEF");
    assert_eq!(
        store
            .device_and_pending_operation(&ghost, t(0))
            .await
            .unwrap(),
        None
    );
    let device = known_device(&store, &d, t(0)).await;
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
