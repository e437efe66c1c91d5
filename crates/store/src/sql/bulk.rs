//! Scheduling many operations in one transaction (a bulk import): the statements of
//! [`super::operations`]' `schedule`, each run once per chunk of rows.

use std::collections::HashMap;

use capf_model::operation::OperationStatus;

use super::adapter::{placeholders, query, tuples, Durability, Pool, Tx, BATCH};
use super::audit::{write_events, Ev};
use super::operations::{describe_operation, no_id, stored_auth_string};
use crate::error::{Missing, Result};
use crate::records::{NewOperation, Timestamp};

/// What superseding does to a pending operation (`$1`: now).
const SUPERSEDE: &str = "status = 'superseded', cause = NULL, auth_string = NULL, \
                         claimed_by = NULL, claim_expires_at = NULL, updated_at = $1";

/// Schedules every operation, all or none; returns their ids in input order.
pub(super) async fn schedule_many(
    pool: &Pool,
    ops: &[NewOperation],
    now: Timestamp,
) -> Result<Vec<i64>> {
    let ops = ops.to_vec();
    pool.bulk_transaction(Durability::Full, move |tx| {
        Box::pin(async move {
            if let Tx::Postgres(_) = tx {
                // Each chunk's statements are prepared once and reused. PostgreSQL would soon
                // settle on a generic plan made while the tables were empty (scan them
                // whole), then keep it while the import makes them grow: quadratic, and the
                // first 100,000-row import on a fresh database ran past the API's deadline.
                tx.execute(query("SET LOCAL plan_cache_mode = force_custom_plan"))
                    .await?;
            }
            let mut ids = Vec::with_capacity(ops.len());
            for chunk in ops.chunks(BATCH) {
                ids.extend(schedule_chunk(tx, chunk, now).await?);
            }
            Ok(ids)
        })
    })
    .await
}

/// One chunk of [`crate::Store::schedule_many`], inside its transaction. The statements mirror
/// [`crate::Store::schedule`]: create missing devices, touch (and so lock) every device row,
/// supersede pending operations, abandon their unconfirmed certificates, insert the new
/// operations, write the events.
async fn schedule_chunk(tx: &mut Tx<'_>, ops: &[NewOperation], now: Timestamp) -> Result<Vec<i64>> {
    let n = ops.len();
    let mut events: Vec<Ev<'_>> = Vec::new();

    let mut q = query(format!(
        "INSERT INTO devices (name, created_at, updated_at) VALUES {} \
         ON CONFLICT (name) DO NOTHING RETURNING name",
        tuples(n, 3, 1)
    ));
    for op in ops {
        q = q.text(op.device_name.as_str()).time(now).time(now);
    }
    let created = tx.fetch_all(q).await?;
    let mut created_names = Vec::with_capacity(created.len());
    for row in &created {
        created_names.push(row.text("name")?);
    }

    let mut q = query(format!(
        "UPDATE devices SET updated_at = $1 WHERE name IN ({}) RETURNING id, name",
        placeholders(n, 2)
    ))
    .time(now);
    for op in ops {
        q = q.text(op.device_name.as_str());
    }
    let mut device_ids: HashMap<String, i64> = HashMap::with_capacity(n);
    for row in tx.fetch_all(q).await? {
        device_ids.insert(row.text("name")?, row.int("id")?);
    }
    let mut ids_in_order = Vec::with_capacity(n);
    for op in ops {
        let id = device_ids
            .get(op.device_name.as_str())
            .copied()
            .ok_or_else(|| Missing::Device(op.device_name.clone()))?;
        ids_in_order.push(id);
    }

    // Without statistics both engines guess that `status = 'pending'` selects few rows and
    // walk every pending operation through operations_by_status_deadline for each chunk,
    // which made an import quadratic in its size (on a fresh PostgreSQL database the first
    // 100,000-row import ran past the API's 60 s deadline). The partial unique index holds
    // the one pending operation per device that this looks for: SQLite is told to use it;
    // PostgreSQL gets a join on a list of device ids, which it answers with one probe of
    // that index per device.
    let sql = match tx {
        Tx::Sqlite(_) => format!(
            "UPDATE operations INDEXED BY operations_one_pending_per_device \
             SET {SUPERSEDE} WHERE status = 'pending' AND device_id IN ({}) \
             RETURNING id, device_id",
            placeholders(n, 2)
        ),
        Tx::Postgres(_) => format!(
            "UPDATE operations o SET {SUPERSEDE} FROM (VALUES {}) AS d (id) \
             WHERE o.device_id = d.id AND o.status = 'pending' RETURNING o.id, o.device_id",
            (2..2 + n)
                .map(|i| format!("(${i}::BIGINT)"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut q = query(sql).time(now);
    for id in &ids_in_order {
        q = q.int(*id);
    }
    // device id -> superseded operation id
    let mut superseded: HashMap<i64, i64> = HashMap::new();
    for row in tx.fetch_all(q).await? {
        superseded.insert(row.int("device_id")?, row.int("id")?);
    }
    let name_of_op: HashMap<i64, &str> = ops
        .iter()
        .zip(&ids_in_order)
        .filter_map(|(op, dev)| {
            superseded
                .get(dev)
                .map(|old| (*old, op.device_name.as_str()))
        })
        .collect();

    let mut abandoned = Vec::new();
    if !superseded.is_empty() {
        let old_ids: Vec<i64> = superseded.values().copied().collect();
        let mut q = query(format!(
            "UPDATE certificates SET state = 'abandoned', updated_at = $1 \
             WHERE state = 'awaiting_confirmation' AND operation_id IN ({}) \
             RETURNING id, operation_id",
            placeholders(old_ids.len(), 2)
        ))
        .time(now);
        for id in &old_ids {
            q = q.int(*id);
        }
        for row in tx.fetch_all(q).await? {
            abandoned.push((row.int("id")?, row.int("operation_id")?));
        }
    }

    let mut q = query(format!(
        "INSERT INTO operations (device_id, kind, auth_mode, auth_string, key_spec, \
         completes_by, status, created_at, updated_at) VALUES {} RETURNING id, device_id",
        tuples(n, 9, 1)
    ));
    for (op, device_id) in ops.iter().zip(&ids_in_order) {
        q = q
            .int(*device_id)
            .text(op.kind.as_str())
            .text(op.auth_mode.as_str())
            .opt_text(stored_auth_string(op))
            .text(op.key.to_string())
            .time(op.completes_by)
            .text(OperationStatus::Pending.as_str())
            .time(now)
            .time(now);
    }
    let mut new_ops: HashMap<i64, i64> = HashMap::with_capacity(n);
    for row in tx.fetch_all(q).await? {
        new_ops.insert(row.int("device_id")?, row.int("id")?);
    }

    for name in &created_names {
        events.push(Ev::new(
            name,
            None,
            "device_created",
            "device created".into(),
        ));
    }
    for (cert_id, old_op) in &abandoned {
        let device = name_of_op.get(old_op).copied().unwrap_or_default();
        let detail = format!("certificate {cert_id} issued but never confirmed");
        events.push(Ev::new(
            device,
            Some(*old_op),
            "certificate_abandoned",
            detail,
        ));
    }
    let mut op_ids = Vec::with_capacity(n);
    for (op, device_id) in ops.iter().zip(&ids_in_order) {
        let op_id = new_ops.get(device_id).copied().ok_or_else(no_id)?;
        let name = op.device_name.as_str();
        if let Some(old_id) = superseded.get(device_id) {
            let detail = format!("superseded by operation {op_id}");
            events.push(Ev::new(name, Some(*old_id), "operation_superseded", detail));
        }
        events.push(Ev::new(
            name,
            Some(op_id),
            "operation_scheduled",
            describe_operation(op),
        ));
        op_ids.push(op_id);
    }
    write_events(tx, now, &events).await?;
    Ok(op_ids)
}
