//! Operations: scheduling one, reading them, and ending them (cancelled, timed out, failed).

use capf_model::device::DeviceName;
use capf_model::operation::{AuthMode, FailureCause, OperationStatus};

use super::adapter::{in_tx, query, Durability, Pool, Tx};
use super::audit::{write_event, Ev};
use super::lifecycle::{
    end_held, end_operation, ensure_device_in, operation_by_id, pending_query, still_pending,
};
use super::rows::{operation_from_row, show_time, OPERATION_SELECT};
use crate::error::{Corrupt, Missing, Result, StoreError, Unavailable};
use crate::records::{NewOperation, Operation, Timestamp};

pub(super) fn describe_operation(op: &NewOperation) -> String {
    format!(
        "kind={} auth_mode={} key={} completes_by={}",
        op.kind,
        op.auth_mode,
        op.key,
        show_time(op.completes_by)
    )
}

/// The authentication string only means something in string mode.
pub(super) fn stored_auth_string(op: &NewOperation) -> Option<&str> {
    match op.auth_mode {
        AuthMode::String => op.auth_string.as_ref().map(|s| s.0.as_str()),
        _ => None,
    }
}

pub(super) fn no_id() -> StoreError {
    Unavailable::Stopped("INSERT returned no id").into()
}

pub(super) async fn operation_counts(pool: &Pool) -> Result<Vec<(OperationStatus, u64)>> {
    let rows = pool
        .fetch_all(query(
            "SELECT status, COUNT(*) AS n FROM operations GROUP BY status ORDER BY status",
        ))
        .await?;
    rows.iter()
        .map(|row| {
            let n = row.int("n")?;
            let n = u64::try_from(n).map_err(|_| Corrupt::OutOfRange {
                what: "count",
                value: n,
            })?;
            Ok((row.parse("status")?, n))
        })
        .collect()
}

pub(super) async fn schedule(pool: &Pool, op: NewOperation, now: Timestamp) -> Result<Operation> {
    in_tx!(pool, Durability::Full, [], |tx| schedule_in(tx, &op, now)
        .await)
}

async fn schedule_in(tx: &mut Tx<'_>, op: &NewOperation, now: Timestamp) -> Result<Operation> {
    let name = op.device_name.as_str();
    let device_id = ensure_device_in(tx, &op.device_name, now).await?;
    // Touching the device row locks it until commit on PostgreSQL, so two nodes scheduling
    // for the same device take turns and the second supersedes the first instead of hitting
    // the one-pending-operation index.
    tx.execute(
        query("UPDATE devices SET updated_at = $2 WHERE id = $1")
            .int(device_id)
            .time(now),
    )
    .await?;
    let previous = tx
        .fetch_optional(
            query("SELECT id FROM operations WHERE device_id = $1 AND status = 'pending'")
                .int(device_id),
        )
        .await?;
    let mut superseded = None;
    if let Some(row) = previous {
        let old_id = row.int("id")?;
        let ended = end_operation(tx, old_id, OperationStatus::Superseded, None, now).await?;
        if ended.is_some() {
            superseded = Some(old_id);
        }
    }
    let row = tx
        .fetch_optional(
            query(
                "INSERT INTO operations (device_id, kind, auth_mode, auth_string, \
                 key_spec, completes_by, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) RETURNING id",
            )
            .int(device_id)
            .text(op.kind.as_str())
            .text(op.auth_mode.as_str())
            .opt_text(stored_auth_string(op))
            .text(op.key.to_string())
            .time(op.completes_by)
            .time(now),
        )
        .await?
        .ok_or_else(no_id)?;
    let op_id = row.int("id")?;
    if let Some(old_id) = superseded {
        let detail = format!("superseded by operation {op_id}");
        let ev = Ev::new(name, Some(old_id), "operation_superseded", detail);
        write_event(tx, now, ev).await?;
    }
    let ev = Ev::new(
        name,
        Some(op_id),
        "operation_scheduled",
        describe_operation(op),
    );
    write_event(tx, now, ev).await?;
    operation_by_id(tx, op_id)
        .await?
        .ok_or_else(|| Missing::Operation(op_id).into())
}

pub(super) async fn note_attempt_failure(
    pool: &Pool,
    op_id: i64,
    held_by: Option<&str>,
    cause: FailureCause,
    now: Timestamp,
) -> Result<()> {
    let fence = if held_by.is_some() {
        "AND claimed_by = $4"
    } else {
        ""
    };
    let mut q = query(format!(
        "UPDATE operations SET cause = $2, updated_at = $3 \
         WHERE id = $1 AND status = 'pending' {fence}"
    ))
    .int(op_id)
    .text(cause.as_str())
    .time(now);
    if let Some(claimant) = held_by {
        q = q.text(claimant);
    }
    pool.write(q, Durability::Relaxed).await.map(|_| ())
}

pub(super) async fn cancel(
    pool: &Pool,
    name: &DeviceName,
    now: Timestamp,
) -> Result<Option<Operation>> {
    in_tx!(pool, Durability::Full, [name], |tx| {
        let pending = tx
            .fetch_optional(
                query(
                    "SELECT o.id FROM operations o JOIN devices d ON d.id = o.device_id \
                     WHERE d.name = $1 AND o.status = 'pending'",
                )
                .text(name.as_str()),
            )
            .await?;
        let Some(row) = pending else {
            return Ok(None);
        };
        let op_id = row.int("id")?;
        let ended = end_operation(tx, op_id, OperationStatus::Cancelled, None, now).await?;
        if ended.is_none() {
            return Ok(None);
        }
        let ev = Ev::new(
            name.as_str(),
            Some(op_id),
            "operation_cancelled",
            "cancelled by an administrator".into(),
        );
        write_event(tx, now, ev).await?;
        operation_by_id(tx, op_id).await
    })
}

pub(super) async fn operation(pool: &Pool, id: i64) -> Result<Option<Operation>> {
    let sql = format!("{OPERATION_SELECT} WHERE o.id = $1");
    pool.fetch_optional(query(sql).int(id))
        .await?
        .as_ref()
        .map(operation_from_row)
        .transpose()
}

pub(super) async fn latest_operation(pool: &Pool, name: &DeviceName) -> Result<Option<Operation>> {
    let sql = format!("{OPERATION_SELECT} WHERE d.name = $1 ORDER BY o.id DESC LIMIT 1");
    pool.fetch_optional(query(sql).text(name.as_str()))
        .await?
        .as_ref()
        .map(operation_from_row)
        .transpose()
}

pub(super) async fn pending_operation(
    pool: &Pool,
    name: &DeviceName,
    now: Timestamp,
) -> Result<Option<Operation>> {
    let Some(row) = pool.fetch_optional(pending_query(name)).await? else {
        return Ok(None);
    };
    still_pending(pool, operation_from_row(&row)?, now).await
}

pub(super) async fn expire_operations(pool: &Pool, now: Timestamp) -> Result<u64> {
    in_tx!(pool, Durability::Full, [], |tx| {
        let rows = tx
            .fetch_all(
                query(
                    "SELECT id, completes_by FROM operations \
                     WHERE status = 'pending' AND completes_by <= $1 ORDER BY id",
                )
                .time(now),
            )
            .await?;
        let cause = FailureCause::UserInitiatedRequestLate;
        let mut expired = 0;
        for row in rows {
            let op_id = row.int("id")?;
            let deadline = row.time("completes_by")?;
            let timed_out = OperationStatus::TimedOut;
            if let Some(ended) = end_operation(tx, op_id, timed_out, Some(cause), now).await? {
                let detail = format!("deadline {} passed", show_time(deadline));
                let ev = Ev::new(
                    &ended.device_name,
                    Some(op_id),
                    "operation_timed_out",
                    detail,
                );
                write_event(tx, now, ev).await?;
                expired += 1;
            }
        }
        Ok(expired)
    })
}

pub(super) async fn fail_operation(
    pool: &Pool,
    op_id: i64,
    claimant: &str,
    cause: FailureCause,
    now: Timestamp,
) -> Result<()> {
    in_tx!(pool, Durability::Full, [claimant], |tx| {
        let failed = OperationStatus::Failed;
        let ended = end_held(tx, op_id, claimant, failed, Some(cause), now).await?;
        let detail = format!("cause={cause}");
        let ev = Ev::new(&ended.device_name, Some(op_id), "operation_failed", detail);
        write_event(tx, now, ev).await
    })
}
