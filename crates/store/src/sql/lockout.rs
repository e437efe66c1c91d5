//! Authentication failures and lockout: admitting a credential check (counted as a failure
//! before it happens), recording how it ended, and unlocking.

use capf_model::device::DeviceName;

use super::adapter::{in_tx, query, Durability, Pool};
use super::audit::{write_event, write_events, Ev};
use super::rows::{later, show_time, to_u32};
use crate::error::{Missing, Result};
use crate::records::{AuthAdmission, AuthTicket, LockState, LockoutPolicy, Timestamp};

/// An attempt refused, unchecked, because the device is locked.
fn locked_attempt_event<'a>(name: &'a DeviceName, source_addr: &'a str) -> Ev<'a> {
    Ev::new(
        name.as_str(),
        None,
        "auth_refused_locked",
        "device is locked after repeated authentication failures".into(),
    )
    .with_source(source_addr)
}

pub(super) async fn lock_state(pool: &Pool, name: &DeviceName) -> Result<LockState> {
    let q = query("SELECT failed_auth_count, locked_until FROM devices WHERE name = $1")
        .text(name.as_str());
    match pool.fetch_optional(q).await? {
        Some(row) => Ok(LockState {
            failed_auth_count: to_u32(row.int("failed_auth_count")?, "failed_auth_count")?,
            locked_until: row.opt_time("locked_until")?,
        }),
        None => Ok(LockState {
            failed_auth_count: 0,
            locked_until: None,
        }),
    }
}

pub(super) async fn admit_auth_attempt(
    pool: &Pool,
    name: &DeviceName,
    source_addr: &str,
    now: Timestamp,
    policy: LockoutPolicy,
) -> Result<AuthAdmission> {
    let until = later(now, policy.lock_duration);
    in_tx!(pool, Durability::Full, [name, source_addr], |tx| {
        // One statement decides from the row as it is when the statement runs, so admissions
        // on several nodes each see the previous one's count and none gets past the one that
        // locks. A lock that has run out (the WHERE lets only those through) starts the count
        // again.
        let row = tx
            .fetch_optional(
                query(
                    "UPDATE devices SET \
                     failed_auth_count = CASE WHEN locked_until IS NOT NULL THEN 1 \
                     ELSE failed_auth_count + 1 END, \
                     locked_until = CASE WHEN (CASE WHEN locked_until IS NOT NULL \
                     THEN 1 ELSE failed_auth_count + 1 END) >= $2 THEN $3 \
                     ELSE NULL END, \
                     updated_at = $4 \
                     WHERE name = $1 AND (locked_until IS NULL OR locked_until <= $4) \
                     RETURNING failed_auth_count, locked_until",
                )
                .text(name.as_str())
                .int(i64::from(policy.max_failures))
                .time(until)
                .time(now),
            )
            .await?;
        if let Some(row) = row {
            return Ok(AuthAdmission::Admitted(AuthTicket {
                failures: to_u32(row.int("failed_auth_count")?, "failed_auth_count")?,
                locks_until: row.opt_time("locked_until")?,
            }));
        }
        let known = tx
            .fetch_optional(query("SELECT id FROM devices WHERE name = $1").text(name.as_str()))
            .await?;
        if known.is_none() {
            return Err(Missing::Device(name.clone()).into());
        }
        write_event(tx, now, locked_attempt_event(name, source_addr)).await?;
        Ok(AuthAdmission::Locked)
    })
}

pub(super) async fn record_auth_failure(
    pool: &Pool,
    name: &DeviceName,
    ticket: &AuthTicket,
    cause: &str,
    source_addr: &str,
    now: Timestamp,
) -> Result<()> {
    let detail = format!("cause={cause}; consecutive failures {}", ticket.failures);
    let Some(until) = ticket.locks_until else {
        let failed = Ev::new(name.as_str(), None, "auth_failed", detail).with_source(source_addr);
        return pool
            .write(failed.query(now), Durability::Full)
            .await
            .map(|_| ());
    };
    let locked_detail = format!(
        "locked until {} after {} consecutive failed authentications",
        show_time(until),
        ticket.failures
    );
    in_tx!(pool, Durability::Full, [name, source_addr], |tx| {
        let events = [
            Ev::new(name.as_str(), None, "auth_failed", detail).with_source(source_addr),
            Ev::new(name.as_str(), None, "device_locked", locked_detail).with_source(source_addr),
        ];
        write_events(tx, now, &events).await
    })
}

pub(super) async fn record_locked_attempt(
    pool: &Pool,
    name: &DeviceName,
    source_addr: &str,
    now: Timestamp,
) -> Result<()> {
    let q = locked_attempt_event(name, source_addr).query(now);
    pool.write(q, Durability::Relaxed).await.map(|_| ())
}

pub(super) async fn record_auth_success(
    pool: &Pool,
    name: &DeviceName,
    ticket: Option<&AuthTicket>,
    now: Timestamp,
) -> Result<()> {
    // Only the lock this very admission set is lifted: its attempt brought the right secret.
    let own_lock = ticket.and_then(|t| t.locks_until);
    in_tx!(pool, Durability::Relaxed, [name], |tx| {
        let reset = tx
            .fetch_optional(
                query(
                    "UPDATE devices SET failed_auth_count = 0, \
                     locked_until = CASE WHEN locked_until = $3 THEN NULL \
                     ELSE locked_until END, updated_at = $2 \
                     WHERE name = $1 AND failed_auth_count > 0 RETURNING id",
                )
                .text(name.as_str())
                .time(now)
                .opt_time(own_lock),
            )
            .await?;
        if reset.is_some() {
            let detail = "authenticated; failure count reset".to_string();
            let ev = Ev::new(name.as_str(), None, "auth_failures_reset", detail);
            write_event(tx, now, ev).await?;
        }
        Ok(())
    })
}

pub(super) async fn unlock(pool: &Pool, name: &DeviceName, now: Timestamp) -> Result<()> {
    in_tx!(pool, Durability::Full, [name], |tx| {
        let unlocked = tx
            .fetch_optional(
                query(
                    "UPDATE devices SET failed_auth_count = 0, locked_until = NULL, \
                     updated_at = $2 WHERE name = $1 RETURNING id",
                )
                .text(name.as_str())
                .time(now),
            )
            .await?;
        if unlocked.is_none() {
            return Err(Missing::Device(name.clone()).into());
        }
        let detail = "lock and failure count cleared".to_string();
        let ev = Ev::new(name.as_str(), None, "device_unlocked", detail);
        write_event(tx, now, ev).await
    })
}
