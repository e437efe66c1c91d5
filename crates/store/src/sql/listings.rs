//! Device listings: each device with its latest operation and installed certificate, filtered
//! and paged by name.

use super::adapter::{query, Arg, Pool, Row};
use super::rows::{device_from_row, key_spec, to_u32};
use crate::error::Result;
use crate::records::{to_millis, DeviceFilter, DeviceSummary, LscSummary, Operation, StatusFilter};

const SUMMARY_SELECT: &str = "SELECT d.name, d.require_sudi, d.created_at, \
     d.failed_auth_count, d.locked_until, d.last_attempt_at, d.last_attempt_source, \
     d.last_attempt_outcome, \
     o.id AS op_id, o.kind AS op_kind, o.auth_mode AS op_auth_mode, o.key_spec AS op_key_spec, \
     o.completes_by AS op_completes_by, o.status AS op_status, o.cause AS op_cause, \
     o.keygen_attempts AS op_keygen_attempts, o.created_at AS op_created_at, \
     o.updated_at AS op_updated_at, o.claimed_by AS op_claimed_by, \
     o.claim_expires_at AS op_claim_expires_at, \
     c.serial_hex AS lsc_serial_hex, c.subject AS lsc_subject, \
     c.not_before AS lsc_not_before, c.not_after AS lsc_not_after, \
     c.fingerprint_sha256 AS lsc_fingerprint_sha256 \
     FROM devices d \
     LEFT JOIN operations o ON o.id = \
         (SELECT MAX(id) FROM operations latest WHERE latest.device_id = d.id) \
     LEFT JOIN certificates c ON c.device_id = d.id AND c.state = 'installed' \
     WHERE 1 = 1";

fn summary_from_row(row: &Row) -> Result<DeviceSummary> {
    let device = device_from_row(row)?;
    let operation = match row.opt_int("op_id")? {
        None => None,
        Some(id) => {
            Some(Operation {
                id,
                device_name: device.name.clone(),
                kind: row.parse("op_kind")?,
                auth_mode: row.parse("op_auth_mode")?,
                // Listings never carry secrets.
                auth_string: None,
                key: key_spec(&row.text("op_key_spec")?)?,
                completes_by: row.time("op_completes_by")?,
                status: row.parse("op_status")?,
                cause: row.opt_parse("op_cause")?,
                keygen_attempts: to_u32(row.int("op_keygen_attempts")?, "keygen_attempts")?,
                created_at: row.time("op_created_at")?,
                updated_at: row.time("op_updated_at")?,
                claimed_by: row.opt_text("op_claimed_by")?,
                claim_expires_at: row.opt_time("op_claim_expires_at")?,
            })
        }
    };
    let lsc = match row.opt_text("lsc_serial_hex")? {
        None => None,
        Some(serial_hex) => Some(LscSummary {
            serial_hex,
            subject: row.text("lsc_subject")?,
            not_before: row.time("lsc_not_before")?,
            not_after: row.time("lsc_not_after")?,
            fingerprint_sha256: row.text("lsc_fingerprint_sha256")?,
        }),
    };
    Ok(DeviceSummary {
        device,
        operation,
        lsc,
    })
}

pub(super) async fn list_devices(pool: &Pool, filter: &DeviceFilter) -> Result<Vec<DeviceSummary>> {
    let mut q = query(SUMMARY_SELECT);
    match filter.status {
        None => {}
        Some(StatusFilter::None) => {
            q.push_sql(" AND (o.id IS NULL OR o.status = 'cancelled')");
        }
        Some(StatusFilter::Is(status)) => {
            q = q.and("o.status =", Arg::Text(Some(status.as_str().into())));
        }
    }
    if let Some(kind) = filter.operation {
        q = q.and("o.kind =", Arg::Text(Some(kind.as_str().into())));
    }
    match filter.has_lsc {
        None => {}
        Some(true) => q.push_sql(" AND c.id IS NOT NULL"),
        Some(false) => q.push_sql(" AND c.id IS NULL"),
    }
    if let Some(before) = filter.lsc_expires_before {
        q = q.and("c.not_after <", Arg::Int(Some(to_millis(before))));
    }
    if let Some(prefix) = &filter.name_prefix {
        // substr/length instead of LIKE: LIKE is case-insensitive on SQLite and treats
        // '_' as a wildcard; device names are case-sensitive and may contain '_'.
        let n = q.args.len() + 1;
        q.push_sql(&format!(" AND substr(d.name, 1, length(${n})) = ${n}"));
        q.args.push(Arg::Text(Some(prefix.clone())));
    }
    if let Some(after) = &filter.after_name {
        q = q.and("d.name >", Arg::Text(Some(after.clone())));
    }
    q.push_sql(" ORDER BY d.name");
    if filter.limit > 0 {
        q = q.limit(filter.limit);
    }
    let rows = pool.fetch_all(q).await?;
    rows.iter().map(summary_from_row).collect()
}
