//! Reading the rows several concerns share (devices and operations) back into records, and
//! the small conversions every module needs.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use capf_model::device::DeviceName;
use capf_model::keyspec::KeySpec;

use super::adapter::Row;
use crate::error::{Corrupt, Missing, Result, StoreError};
use crate::records::{AuthString, Device, LastAttempt, Operation, Timestamp};

pub(super) const DEVICE_SELECT: &str = "SELECT name, require_sudi, created_at, \
     failed_auth_count, locked_until, last_attempt_at, last_attempt_source, \
     last_attempt_outcome FROM devices";

pub(super) const OPERATION_SELECT: &str = "SELECT o.id, d.name AS device_name, o.kind, \
     o.auth_mode, o.auth_string, o.key_spec, o.completes_by, o.status, o.cause, \
     o.keygen_attempts, o.created_at, o.updated_at, o.claimed_by, o.claim_expires_at \
     FROM operations o JOIN devices d ON d.id = o.device_id";

pub(super) fn device_name(text: String) -> Result<DeviceName> {
    // Names are validated before they are stored; a name that no longer passes came from
    // somewhere else.
    DeviceName::from_wire(&text).map_err(|source| Corrupt::DeviceName { text, source }.into())
}

pub(super) fn key_spec(text: &str) -> Result<KeySpec> {
    text.parse::<KeySpec>()
        .map_err(|e| Corrupt::KeySpec(e).into())
}

pub(super) fn to_u32(value: i64, what: &'static str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Corrupt::OutOfRange { what, value }.into())
}

pub(super) fn device_from_row(row: &Row) -> Result<Device> {
    let last_attempt = match row.opt_time("last_attempt_at")? {
        Some(at) => Some(LastAttempt {
            at,
            source_addr: row.opt_text("last_attempt_source")?.unwrap_or_default(),
            outcome: row.opt_text("last_attempt_outcome")?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Device {
        name: device_name(row.text("name")?)?,
        require_sudi: row.bool("require_sudi")?,
        created_at: row.time("created_at")?,
        failed_auth_count: to_u32(row.int("failed_auth_count")?, "failed_auth_count")?,
        locked_until: row.opt_time("locked_until")?,
        last_attempt,
    })
}

pub(super) fn operation_from_row(row: &Row) -> Result<Operation> {
    Ok(Operation {
        id: row.int("id")?,
        device_name: device_name(row.text("device_name")?)?,
        kind: row.parse("kind")?,
        auth_mode: row.parse("auth_mode")?,
        auth_string: row.opt_text("auth_string")?.map(AuthString),
        key: key_spec(&row.text("key_spec")?)?,
        completes_by: row.time("completes_by")?,
        status: row.parse("status")?,
        cause: row.opt_parse("cause")?,
        keygen_attempts: to_u32(row.int("keygen_attempts")?, "keygen_attempts")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
        claimed_by: row.opt_text("claimed_by")?,
        claim_expires_at: row.opt_time("claim_expires_at")?,
    })
}

pub(super) fn show_time(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `now + d`, saturating at the latest representable time instead of failing.
pub(super) fn later(now: Timestamp, d: Duration) -> Timestamp {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub(super) fn not_pending(op_id: i64) -> StoreError {
    StoreError::NotFound(Missing::PendingOperation(op_id))
}
