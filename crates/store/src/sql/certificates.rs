//! Certificates: issuing one for an install (fenced by the claim), the phone confirming it,
//! fetch and delete results, and reading a device's certificates.

use std::time::Duration;

use capf_model::device::DeviceName;
use capf_model::operation::{CertState, OperationStatus};

use super::adapter::{in_tx, query, Durability, Pool, Row, Tx};
use super::audit::{record_attempt_in, write_event, write_events, Ev};
use super::lifecycle::{abandon_awaiting, end_held, fence_refused, RETURNING_DEVICE};
use super::operations::no_id;
use super::rows::{device_name, later, show_time};
use crate::error::{Missing, Result};
use crate::records::{Attempt, CertificateRecord, NewCertificate, Timestamp};

const CERTIFICATE_SELECT: &str = "SELECT c.id, d.name AS device_name, c.operation_id, \
     c.serial_hex, c.subject, c.issuer, c.not_before, c.not_after, c.fingerprint_sha256, \
     c.pem, c.state, c.created_at, c.updated_at \
     FROM certificates c JOIN devices d ON d.id = c.device_id";

fn certificate_from_row(row: &Row) -> Result<CertificateRecord> {
    Ok(CertificateRecord {
        id: row.int("id")?,
        device_name: device_name(row.text("device_name")?)?,
        operation_id: row.opt_int("operation_id")?,
        serial_hex: row.text("serial_hex")?,
        subject: row.text("subject")?,
        issuer: row.text("issuer")?,
        not_before: row.time("not_before")?,
        not_after: row.time("not_after")?,
        fingerprint_sha256: row.text("fingerprint_sha256")?,
        pem: row.text("pem")?,
        state: row.parse("state")?,
        created_at: row.time("created_at")?,
        updated_at: row.time("updated_at")?,
    })
}

/// Inserts a certificate record in `state`; returns its id.
async fn insert_certificate(
    tx: &mut Tx<'_>,
    device_id: i64,
    op_id: i64,
    cert: &NewCertificate,
    state: CertState,
    now: Timestamp,
) -> Result<i64> {
    let row = tx
        .fetch_optional(
            query(
                "INSERT INTO certificates (device_id, operation_id, serial_hex, subject, \
                 issuer, not_before, not_after, fingerprint_sha256, pem, state, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
                 RETURNING id",
            )
            .int(device_id)
            .int(op_id)
            .text(&cert.serial_hex)
            .text(&cert.subject)
            .text(&cert.issuer)
            .time(cert.not_before)
            .time(cert.not_after)
            .text(&cert.fingerprint_sha256)
            .text(&cert.pem)
            .text(state.as_str())
            .time(now),
        )
        .await?
        .ok_or_else(no_id)?;
    row.int("id")
}

fn describe_certificate(cert: &NewCertificate) -> String {
    format!(
        "serial={} sha256={} subject={:?} not_after={}",
        cert.serial_hex,
        cert.fingerprint_sha256,
        cert.subject,
        show_time(cert.not_after)
    )
}

/// Ends an install the phone confirmed: the operation succeeds (only for the session holding
/// its claim), its certificate is installed and the previous one superseded.
async fn confirm_install_in(
    tx: &mut Tx<'_>,
    op_id: i64,
    claimant: &str,
    cert_id: i64,
    now: Timestamp,
) -> Result<()> {
    let ended = end_held(tx, op_id, claimant, OperationStatus::Success, None, now).await?;
    let name = ended.device_name.as_str();
    // Checked before anything else changes; returning early drops the transaction,
    // which rolls back the status change above.
    let awaiting = tx
        .fetch_optional(
            query(
                "SELECT id FROM certificates WHERE id = $1 AND operation_id = $2 \
                 AND state = 'awaiting_confirmation'",
            )
            .int(cert_id)
            .int(op_id),
        )
        .await?;
    if awaiting.is_none() {
        return Err(Missing::AwaitingCertificate { cert_id, op_id }.into());
    }
    // The previous certificate steps down first: at most one may be installed.
    let previous = tx
        .fetch_all(
            query(
                "UPDATE certificates SET state = 'superseded', updated_at = $2 \
                 WHERE device_id = $1 AND state = 'installed' RETURNING id",
            )
            .int(ended.device_id)
            .time(now),
        )
        .await?;
    let mut events = Vec::with_capacity(previous.len() + 2);
    for row in previous {
        let old_id = row.int("id")?;
        let detail = format!("certificate {old_id} replaced by certificate {cert_id}");
        events.push(Ev::new(name, Some(op_id), "certificate_superseded", detail));
    }
    tx.execute(
        query(
            "UPDATE certificates SET state = 'installed', updated_at = $2 \
             WHERE id = $1",
        )
        .int(cert_id)
        .time(now),
    )
    .await?;
    let detail = format!("certificate {cert_id} confirmed stored by the phone");
    events.push(Ev::new(name, Some(op_id), "certificate_installed", detail));
    events.push(Ev::new(
        name,
        Some(op_id),
        "operation_succeeded",
        "install".into(),
    ));
    write_events(tx, now, &events).await?;
    Ok(())
}

pub(super) async fn record_issued(
    pool: &Pool,
    op_id: i64,
    claimant: &str,
    cert: NewCertificate,
    now: Timestamp,
    lease: Duration,
) -> Result<i64> {
    let until = later(now, lease);
    in_tx!(pool, Durability::Full, [claimant], |tx| {
        // The conditional update checks the operation is pending and still ours and, on
        // PostgreSQL, locks its row until commit: a concurrent claim waits and then sees the
        // renewed lease. An expired lease that is still ours is accepted: a lease running out
        // lets another session claim, and only that claim (which changes `claimed_by`) makes
        // issuing here unsafe.
        let row = tx
            .fetch_optional(
                query(format!(
                    "UPDATE operations SET updated_at = $2, claim_expires_at = $4 \
                     WHERE id = $1 AND status = 'pending' AND claimed_by = $3 \
                     {RETURNING_DEVICE}",
                ))
                .int(op_id)
                .time(now)
                .text(claimant)
                .time(until),
            )
            .await?;
        let Some(row) = row else {
            return Err(fence_refused(tx, op_id, claimant).await);
        };
        let device_id = row.int("device_id")?;
        let name = row.text("device_name")?;
        abandon_awaiting(tx, op_id, &name, now).await?;
        let awaiting = CertState::AwaitingConfirmation;
        let cert_id = insert_certificate(tx, device_id, op_id, &cert, awaiting, now).await?;
        let detail = format!("certificate {cert_id} {}", describe_certificate(&cert));
        let ev = Ev::new(&name, Some(op_id), "certificate_issued", detail);
        write_event(tx, now, ev).await?;
        Ok(cert_id)
    })
}

pub(super) async fn confirm_install(
    pool: &Pool,
    op_id: i64,
    claimant: &str,
    cert_id: i64,
    now: Timestamp,
    attempt: Option<Attempt>,
) -> Result<()> {
    in_tx!(pool, Durability::Full, [claimant], |tx| {
        confirm_install_in(tx, op_id, claimant, cert_id, now).await?;
        match &attempt {
            Some(attempt) => record_attempt_in(tx, attempt).await,
            None => Ok(()),
        }
    })
}

pub(super) async fn complete_fetch(
    pool: &Pool,
    op_id: i64,
    claimant: &str,
    cert: Option<NewCertificate>,
    now: Timestamp,
) -> Result<()> {
    in_tx!(pool, Durability::Full, [claimant], |tx| {
        let success = OperationStatus::Success;
        let ended = end_held(tx, op_id, claimant, success, None, now).await?;
        let name = ended.device_name.as_str();
        let detail = match &cert {
            Some(cert) => {
                let fetched = CertState::Fetched;
                let cert_id =
                    insert_certificate(tx, ended.device_id, op_id, cert, fetched, now).await?;
                format!("certificate {cert_id} {}", describe_certificate(cert))
            }
            None => "the phone returned no certificate".to_string(),
        };
        let events = [
            Ev::new(name, Some(op_id), "certificate_fetched", detail),
            Ev::new(name, Some(op_id), "operation_succeeded", "fetch".into()),
        ];
        write_events(tx, now, &events).await
    })
}

pub(super) async fn complete_delete(
    pool: &Pool,
    op_id: i64,
    claimant: &str,
    now: Timestamp,
) -> Result<()> {
    in_tx!(pool, Durability::Full, [claimant], |tx| {
        let success = OperationStatus::Success;
        let ended = end_held(tx, op_id, claimant, success, None, now).await?;
        let name = ended.device_name.as_str();
        let deleted = tx
            .fetch_all(
                query(
                    "UPDATE certificates SET state = 'deleted', updated_at = $2 \
                     WHERE device_id = $1 AND state = 'installed' RETURNING id",
                )
                .int(ended.device_id)
                .time(now),
            )
            .await?;
        let detail = match deleted.first() {
            Some(row) => format!("certificate {} deleted by the phone", row.int("id")?),
            None => "the phone deleted its LSC; none was on record as installed".to_string(),
        };
        let events = [
            Ev::new(name, Some(op_id), "certificate_deleted", detail),
            Ev::new(name, Some(op_id), "operation_succeeded", "delete".into()),
        ];
        write_events(tx, now, &events).await
    })
}

pub(super) async fn current_certificate(
    pool: &Pool,
    name: &DeviceName,
) -> Result<Option<CertificateRecord>> {
    let sql = format!(
        "{CERTIFICATE_SELECT} WHERE d.name = $1 AND c.state = 'installed' \
         ORDER BY c.id DESC LIMIT 1"
    );
    pool.fetch_optional(query(sql).text(name.as_str()))
        .await?
        .as_ref()
        .map(certificate_from_row)
        .transpose()
}

pub(super) async fn certificates(pool: &Pool, name: &DeviceName) -> Result<Vec<CertificateRecord>> {
    let sql = format!("{CERTIFICATE_SELECT} WHERE d.name = $1 ORDER BY c.id DESC");
    let rows = pool.fetch_all(query(sql).text(name.as_str())).await?;
    rows.iter().map(certificate_from_row).collect()
}
