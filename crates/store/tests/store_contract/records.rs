//! The attempt history, the audit trail, device listings and admin API tokens.

use std::sync::Arc;

use capf_model::operation::{OperationKind, OperationStatus, TokenScope};
use capf_store::{ApiToken, Attempt, DeviceFilter, EventFilter, StatusFilter, Store, StoreError};
use chrono::TimeDelta;

use crate::fixtures::*;
use crate::harness::TestDb;

pub(crate) async fn attempts(store: Arc<dyn Store>) {
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

pub(crate) async fn audit_and_events(store: Arc<dyn Store>) {
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
    store
        .schedule(op_of(&other, OperationKind::Troubleshoot, t(3600)), t(3))
        .await
        .unwrap();

    let all = all_events(&store, None).await;
    assert_eq!(all.len(), 4);
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
    assert_eq!(all[3].kind, "operation_scheduled");

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

pub(crate) async fn list_devices_filters_and_cursor(db: &TestDb) {
    let store = db.open().await;
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
    // Only scheduling creates devices; a device row without any operation is written by
    // hand.
    db.raw_execute(&format!(
        "INSERT INTO devices (name, created_at, updated_at) VALUES ('{bare}', {ms}, {ms})",
        ms = t(6).timestamp_millis()
    ))
    .await;
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

pub(crate) async fn api_tokens(store: Arc<dyn Store>) {
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
