//! Several stores on one database (restarts, nodes racing), damaged rows, and how a database that cannot be reached surfaces.

use sqlx::Connection;
use std::time::Duration;

use capf_model::operation::OperationStatus;
use capf_store::{AuthAdmission, DatabaseUrl, LockoutPolicy, StoreError};

use crate::fixtures::*;
use crate::harness::TestDb;

pub(crate) async fn restart_keeps_everything(db: &TestDb) {
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

pub(crate) async fn two_nodes_race(db: &TestDb) {
    let nodes = [db.open().await, db.open().await];

    // Many sessions on both nodes claim one operation at the same instant: one wins.
    let d = dev("SEP001122334455");
    let op = nodes[0].schedule(install(&d, t(3600)), t(0)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let store = nodes[i % 2].clone();
        tasks.spawn(async move {
            let claimant = format!("node-{i}");
            let claimed = store
                .claim(op.id, &claimant, t(1), Duration::from_secs(60))
                .await?;
            Ok::<_, StoreError>(claimed.then_some(claimant))
        });
    }
    let mut winners = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Some(winner) = result.unwrap().unwrap() {
            winners.push(winner);
        }
    }
    assert_eq!(winners.len(), 1);
    let winner = winners.remove(0);
    assert_eq!(
        count(&event_kinds(&nodes[1], &d).await, "operation_claimed"),
        1
    );

    // Thirty guesses sent at once, spread across both nodes: exactly ten are admitted to be
    // checked, the tenth locks, the other twenty are refused unchecked.
    let victim = dev("SEP00112233AABB");
    known_device(&nodes[1], &victim, t(0)).await;
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
        let winner = winner.clone();
        tasks.spawn(async move {
            let expired = store.expire_operations(t(20)).await?;
            let lease = Duration::from_secs(60);
            let counted = store
                .claim_for_session(op.id, None, &winner, t(20), lease, true)
                .await?;
            assert!(counted.is_some());
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

pub(crate) async fn corrupt_rows_are_reported(db: &TestDb) {
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
