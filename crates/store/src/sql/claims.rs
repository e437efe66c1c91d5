//! Claims: which session holds a pending operation, until when. A claim is a conditional
//! update, so two sessions (on one node or several) cannot both hold an operation.

use std::time::Duration;

use super::adapter::{in_tx, query, Durability, Pool};
use super::audit::{write_events, Ev};
use super::lifecycle::RETURNING_DEVICE;
use super::rows::{later, show_time, to_u32};
use crate::error::Result;
use crate::records::Timestamp;

pub(super) async fn claim_for_session(
    pool: &Pool,
    op_id: i64,
    from: Option<&str>,
    claimant: &str,
    now: Timestamp,
    lease: Duration,
    count_keygen: bool,
) -> Result<Option<u32>> {
    let until = later(now, lease);
    let from = from.map(str::to_owned);
    in_tx!(pool, Durability::Relaxed, [claimant], |tx| {
        let claimed = tx
            .fetch_optional(
                query(format!(
                    "UPDATE operations SET claimed_by = $2, claim_expires_at = $3, \
                     updated_at = $4, keygen_attempts = keygen_attempts + $6 \
                     WHERE id = $1 AND status = 'pending' AND (claimed_by IS NULL \
                     OR claimed_by = $2 OR claim_expires_at IS NULL \
                     OR claim_expires_at <= $4 OR claimed_by = $5) \
                     {RETURNING_DEVICE}, keygen_attempts",
                ))
                .int(op_id)
                .text(claimant)
                .time(until)
                .time(now)
                .opt_text(from.as_deref())
                .int(i64::from(count_keygen)),
            )
            .await?;
        let Some(row) = claimed else {
            return Ok(None);
        };
        let name = row.text("device_name")?;
        let attempts = to_u32(row.int("keygen_attempts")?, "keygen_attempts")?;
        let mut detail = format!("by={claimant} until={}", show_time(until));
        if let Some(from) = &from {
            detail.push_str(&format!(" from={from}"));
        }
        let mut events = vec![Ev::new(&name, Some(op_id), "operation_claimed", detail)];
        if count_keygen {
            let detail = format!("key generation request {attempts}");
            events.push(Ev::new(&name, Some(op_id), "keygen_requested", detail));
        }
        write_events(tx, now, &events).await?;
        Ok(Some(attempts))
    })
}

pub(super) async fn release(pool: &Pool, op_id: i64, claimant: &str) -> Result<()> {
    let q = query(
        "UPDATE operations SET claimed_by = NULL, claim_expires_at = NULL \
         WHERE id = $1 AND claimed_by = $2",
    )
    .int(op_id)
    .text(claimant);
    pool.write(q, Durability::Relaxed).await.map(|_| ())
}

pub(super) async fn renew_claims(
    pool: &Pool,
    prefix: &str,
    now: Timestamp,
    lease: Duration,
) -> Result<u64> {
    // substr/length rather than LIKE: '_' in a node name is no wildcard.
    let q = query(
        "UPDATE operations SET claim_expires_at = $2 \
         WHERE status = 'pending' AND claimed_by IS NOT NULL \
         AND substr(claimed_by, 1, length($1)) = $1",
    )
    .text(prefix)
    .time(later(now, lease));
    pool.write(q, Durability::Relaxed).await
}

pub(super) async fn release_claims(pool: &Pool, prefix: &str) -> Result<u64> {
    let q = query(
        "UPDATE operations SET claimed_by = NULL, claim_expires_at = NULL \
         WHERE claimed_by IS NOT NULL AND substr(claimed_by, 1, length($1)) = $1",
    )
    .text(prefix);
    pool.write(q, Durability::Full).await
}
