//! What several changes do inside their transaction: create a device, end an operation (and
//! abandon its unconfirmed certificate), read an operation back, and tell why a write fenced
//! by a claim changed nothing.

use capf_model::device::DeviceName;
use capf_model::operation::{FailureCause, OperationStatus};

use super::adapter::{in_tx, query, Durability, Pool, Query, Tx};
use super::audit::{write_event, Ev};
use super::rows::{not_pending, operation_from_row, show_time, OPERATION_SELECT};
use crate::error::{ClaimLost, Missing, Result, StoreError};
use crate::records::{Operation, Timestamp};

/// Creates the device if needed (with its `device_created` event); returns its id.
pub(super) async fn ensure_device_in(
    tx: &mut Tx<'_>,
    name: &DeviceName,
    now: Timestamp,
) -> Result<i64> {
    let inserted = tx
        .fetch_optional(
            query(
                "INSERT INTO devices (name, created_at, updated_at) VALUES ($1, $2, $2) \
                 ON CONFLICT (name) DO NOTHING RETURNING id",
            )
            .text(name.as_str())
            .time(now),
        )
        .await?;
    if let Some(row) = inserted {
        write_event(
            tx,
            now,
            Ev::new(
                name.as_str(),
                None,
                "device_created",
                "device created".into(),
            ),
        )
        .await?;
        return row.int("id");
    }
    let row = tx
        .fetch_optional(query("SELECT id FROM devices WHERE name = $1").text(name.as_str()))
        .await?
        .ok_or_else(|| Missing::Device(name.clone()))?;
    row.int("id")
}

/// `RETURNING` of an update of `operations`: the device's id and name, without another
/// statement (each one is a round trip to the database, on SQLite a thread handoff).
pub(super) const RETURNING_DEVICE: &str = "RETURNING device_id, \
     (SELECT name FROM devices WHERE devices.id = operations.device_id) AS device_name";

/// The device an operation ended by [`end_operation`] belongs to.
pub(super) struct Ended {
    pub(super) device_id: i64,
    pub(super) device_name: String,
}

/// Ends a pending operation held by `claimant` (see [`end_operation_held`]): `NotFound` when
/// it is no longer pending, `ClaimLost`, changing nothing, when another session holds it or
/// nobody does.
pub(super) async fn end_held(
    tx: &mut Tx<'_>,
    op_id: i64,
    claimant: &str,
    status: OperationStatus,
    cause: Option<FailureCause>,
    now: Timestamp,
) -> Result<Ended> {
    match end_operation_held(tx, op_id, status, cause, now, Some(claimant)).await? {
        Some(ended) => Ok(ended),
        None => Err(fence_refused(tx, op_id, claimant).await),
    }
}

/// Moves a pending operation to a final status: the authentication string is no longer
/// needed and is erased, the claim is released, and (unless it succeeded) a certificate
/// still awaiting confirmation is abandoned. Returns `None`, changing nothing, when the
/// operation does not exist or is no longer pending (another node ended it first).
pub(super) async fn end_operation(
    tx: &mut Tx<'_>,
    op_id: i64,
    status: OperationStatus,
    cause: Option<FailureCause>,
    now: Timestamp,
) -> Result<Option<Ended>> {
    end_operation_held(tx, op_id, status, cause, now, None).await
}

/// [`end_operation`], and with `held_by` only while that claimant holds the claim: the
/// claim is checked by the same statement that ends the operation, so no other session can
/// claim in between.
pub(super) async fn end_operation_held(
    tx: &mut Tx<'_>,
    op_id: i64,
    status: OperationStatus,
    cause: Option<FailureCause>,
    now: Timestamp,
    held_by: Option<&str>,
) -> Result<Option<Ended>> {
    let fence = if held_by.is_some() {
        "AND claimed_by = $5"
    } else {
        ""
    };
    let mut q = query(format!(
        "UPDATE operations SET status = $2, cause = $3, auth_string = NULL, \
         claimed_by = NULL, claim_expires_at = NULL, updated_at = $4 \
         WHERE id = $1 AND status = 'pending' {fence} {RETURNING_DEVICE}",
    ))
    .int(op_id)
    .text(status.as_str())
    .opt_text(cause.map(FailureCause::as_str))
    .time(now);
    if let Some(claimant) = held_by {
        q = q.text(claimant);
    }
    let Some(row) = tx.fetch_optional(q).await? else {
        return Ok(None);
    };
    let device_id = row.int("device_id")?;
    let device_name = row.text("device_name")?;
    if status != OperationStatus::Success {
        abandon_awaiting(tx, op_id, &device_name, now).await?;
    }
    Ok(Some(Ended {
        device_id,
        device_name,
    }))
}

/// Certificates of the operation still awaiting confirmation become `Abandoned`.
pub(super) async fn abandon_awaiting(
    tx: &mut Tx<'_>,
    op_id: i64,
    device: &str,
    now: Timestamp,
) -> Result<()> {
    let rows = tx
        .fetch_all(
            query(
                "UPDATE certificates SET state = 'abandoned', updated_at = $2 \
                 WHERE operation_id = $1 AND state = 'awaiting_confirmation' RETURNING id",
            )
            .int(op_id)
            .time(now),
        )
        .await?;
    for row in rows {
        let cert_id = row.int("id")?;
        let detail = format!("certificate {cert_id} issued but never confirmed");
        let ev = Ev::new(device, Some(op_id), "certificate_abandoned", detail);
        write_event(tx, now, ev).await?;
    }
    Ok(())
}

/// The pending operation of a device (at most one is pending).
pub(super) fn pending_query(name: &DeviceName) -> Query {
    query(format!(
        "{OPERATION_SELECT} WHERE d.name = $1 AND o.status = 'pending'"
    ))
    .text(name.as_str())
}

pub(super) async fn operation_by_id(exec: &mut Tx<'_>, op_id: i64) -> Result<Option<Operation>> {
    let sql = format!("{OPERATION_SELECT} WHERE o.id = $1");
    exec.fetch_optional(query(sql).int(op_id))
        .await?
        .as_ref()
        .map(operation_from_row)
        .transpose()
}

/// Why a write fenced by `claimant`'s claim changed nothing: `NotFound` when the operation
/// is no longer pending, `ClaimLost` when it is but the claim is not (or no longer) ours.
pub(super) async fn fence_refused(tx: &mut Tx<'_>, op_id: i64, claimant: &str) -> StoreError {
    match operation_by_id(tx, op_id).await {
        Ok(Some(op)) if op.status == OperationStatus::Pending => StoreError::ClaimLost(ClaimLost {
            op_id,
            holder: op.claimed_by,
            claimant: claimant.to_string(),
        }),
        Ok(_) => not_pending(op_id),
        Err(e) => e,
    }
}

/// `op` as read while pending, if it can still be performed: a late one is ended here (timed
/// out, "request late") rather than waiting for the sweeper, so the phone is told and the
/// record says so.
pub(super) async fn still_pending(
    pool: &Pool,
    op: Operation,
    now: Timestamp,
) -> Result<Option<Operation>> {
    if op.completes_by > now {
        return Ok(Some(op));
    }
    in_tx!(pool, Durability::Full, [], |tx| {
        let cause = FailureCause::UserInitiatedRequestLate;
        let ended = end_operation(tx, op.id, OperationStatus::TimedOut, Some(cause), now).await?;
        if let Some(ended) = ended {
            let detail = format!("deadline {} passed", show_time(op.completes_by));
            let ev = Ev::new(
                &ended.device_name,
                Some(op.id),
                "operation_timed_out",
                detail,
            );
            write_event(tx, now, ev).await?;
        }
        Ok(None)
    })
}
