//! Claims: who holds a pending operation, taking over, renewing and releasing.

use std::sync::Arc;
use std::time::Duration;

use capf_model::operation::{FailureCause, OperationStatus};
use capf_store::Store;

use crate::fixtures::*;

pub(crate) async fn claim_and_release(store: Arc<dyn Store>) {
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
pub(crate) async fn take_over_a_claim(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    let lease = Duration::from_secs(90);
    assert!(store.claim(op.id, "n/1/a", t(0), lease).await.unwrap());
    // Only from the holder.
    assert!(!take_over(&store, op.id, "n/1/x", "n/1/b", t(1), lease)
        .await
        .unwrap());
    assert!(take_over(&store, op.id, "n/1/a", "n/1/b", t(2), lease)
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
    assert!(take_over(&store, op.id, "n/1/a", "n/1/c", t(3), lease)
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
    assert!(!take_over(&store, op.id, "n/1/c", "n/1/d", t(5), lease)
        .await
        .unwrap());
}

/// A run exiting with sessions cut short frees their operations, and only theirs.
pub(crate) async fn release_claims_of_a_run(store: Arc<dyn Store>) {
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
pub(crate) async fn renew_claims_of_a_node(store: Arc<dyn Store>) {
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

pub(crate) async fn keygen_attempts_and_failure(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    // A session counts its key generation requests with its claim.
    let count_as = |holder, now| store.claim_for_session(op.id, None, holder, now, LEASE, true);
    assert_eq!(count_as(HOLDER, t(1)).await.unwrap(), Some(1));
    assert_eq!(count_as(HOLDER, t(2)).await.unwrap(), Some(2));
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
    assert_eq!(count_as(HOLDER, t(6)).await.unwrap(), None);
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

/// The claim a session takes once authenticated (the production path): who may take it,
/// the key-generation count it carries, and the fence it sets for what sessions write next.
pub(crate) async fn claim_for_session_from_pending_to_fenced(store: Arc<dyn Store>) {
    let d = dev("SEP001122334455");
    let lease = Duration::from_secs(30);
    let claim = |op_id, from, claimant, now, count| {
        store.claim_for_session(op_id, from, claimant, now, lease, count)
    };

    // No such operation.
    assert_eq!(
        claim(1_000_000, None, "n/1/a", t(0), true).await.unwrap(),
        None
    );

    // Pending and unclaimed: claimed until now + lease, nothing counted.
    let op = store.schedule(install(&d, t(3600)), t(0)).await.unwrap();
    assert_eq!(
        claim(op.id, None, "n/1/a", t(1), false).await.unwrap(),
        Some(0)
    );
    let held = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(held.claimed_by.as_deref(), Some("n/1/a"));
    assert_eq!(held.claim_expires_at, Some(t(31)));
    assert_eq!((held.keygen_attempts, held.updated_at), (0, t(1)));

    // The holder claims again, counting a key generation request: the lease is renewed.
    assert_eq!(
        claim(op.id, None, "n/1/a", t(2), true).await.unwrap(),
        Some(1)
    );
    let held = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(held.claim_expires_at, Some(t(32)));
    assert_eq!(held.keygen_attempts, 1);

    // Another session while the lease is live: refused, nothing changes, nothing counted;
    // naming a `from` that does not hold the operation changes nothing either.
    let before = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(
        claim(op.id, None, "n/2/b", t(10), true).await.unwrap(),
        None
    );
    assert_eq!(
        claim(op.id, Some("n/1/x"), "n/2/b", t(11), true)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.operation(op.id).await.unwrap().unwrap(), before);

    // The lease ran out at t(32): another session takes the operation, counting.
    assert_eq!(
        claim(op.id, None, "n/2/b", t(32), true).await.unwrap(),
        Some(2)
    );
    let held = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(held.claimed_by.as_deref(), Some("n/2/b"));
    assert_eq!(held.claim_expires_at, Some(t(62)));

    // Fencing afterwards: the first session may no longer write anything.
    assert!(is_claim_lost(
        store
            .record_issued(op.id, "n/1/a", cert(1), t(33), LEASE)
            .await
    ));
    assert!(is_claim_lost(
        store
            .fail_operation(op.id, "n/1/a", FailureCause::InvalidMic, t(33))
            .await
    ));
    let issued = store
        .record_issued(op.id, "n/2/b", cert(1), t(34), LEASE)
        .await
        .unwrap();

    // A session of the same node takes over from `from` while its lease is live.
    assert_eq!(
        claim(op.id, Some("n/2/b"), "n/2/c", t(35), false)
            .await
            .unwrap(),
        Some(2)
    );
    assert!(is_claim_lost(
        store.confirm_install(op.id, "n/2/b", issued, t(36)).await
    ));
    store
        .confirm_install(op.id, "n/2/c", issued, t(36))
        .await
        .unwrap();

    // Ended: nobody claims it again, with or without `from`, however late.
    assert_eq!(
        claim(op.id, None, "n/2/c", t(37), true).await.unwrap(),
        None
    );
    assert_eq!(
        claim(op.id, Some("n/2/c"), "n/3/d", t(999), true)
            .await
            .unwrap(),
        None
    );
    let done = store.operation(op.id).await.unwrap().unwrap();
    assert_eq!(done.status, OperationStatus::Success);
    assert_eq!((done.claimed_by, done.keygen_attempts), (None, 2));

    let events = all_events(&store, Some(&d)).await;
    let claimed: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "operation_claimed")
        .collect();
    assert_eq!(claimed.len(), 4);
    assert!(claimed.iter().all(|e| e.operation_id == Some(op.id)));
    assert!(claimed[3].detail.contains("by=n/2/c"), "{:?}", claimed[3]);
    assert!(claimed[3].detail.contains("from=n/2/b"), "{:?}", claimed[3]);
    let kinds = event_kinds(&store, &d).await;
    assert_eq!(count(&kinds, "keygen_requested"), 2);
}

/// However an operation ended, no session can claim it.
pub(crate) async fn claim_for_session_refuses_final_operations(store: Arc<dyn Store>) {
    let lease = Duration::from_secs(30);
    let (a, b, c, e) = (
        dev("SEP00000000000A"),
        dev("SEP00000000000B"),
        dev("SEP00000000000C"),
        dev("SEP00000000000E"),
    );
    let cancelled = store.schedule(install(&a, t(3600)), t(0)).await.unwrap();
    store.cancel(&a, t(1)).await.unwrap();
    let superseded = store.schedule(install(&b, t(3600)), t(0)).await.unwrap();
    store.schedule(install(&b, t(3600)), t(1)).await.unwrap();
    let failed = store.schedule(install(&c, t(3600)), t(0)).await.unwrap();
    hold(&store, failed.id, t(1)).await;
    store
        .fail_operation(failed.id, HOLDER, FailureCause::InvalidMic, t(2))
        .await
        .unwrap();
    let late = store.schedule(install(&e, t(10)), t(0)).await.unwrap();
    assert_eq!(store.expire_operations(t(10)).await.unwrap(), 1);

    for (op, status) in [
        (&cancelled, OperationStatus::Cancelled),
        (&superseded, OperationStatus::Superseded),
        (&failed, OperationStatus::Failed),
        (&late, OperationStatus::TimedOut),
    ] {
        let claimed = store
            .claim_for_session(op.id, None, "n/9/z", t(20), lease, true)
            .await
            .unwrap();
        assert_eq!(claimed, None, "{status:?}");
        let now = store.operation(op.id).await.unwrap().unwrap();
        assert_eq!(
            (now.status, now.claimed_by, now.keygen_attempts),
            (status, None, 0)
        );
    }
}
