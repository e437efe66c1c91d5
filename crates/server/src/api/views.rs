//! What the API answers: plain serialisable views of the store's records.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use capf_model::operation::OperationStatus;
use capf_model::status::{self, StatusView};
use capf_store::{CertificateRecord, Device, DeviceSummary, Event, LscSummary, Operation};

#[derive(Debug, Serialize, ToSchema)]
pub struct OperationView {
    pub id: i64,
    /// install, delete or troubleshoot.
    pub operation: &'static str,
    /// string, null, lsc or mic.
    pub auth_mode: &'static str,
    /// Key the phone must generate, e.g. rsa-2048 or ec-p256.
    pub key: String,
    pub completes_by: DateTime<Utc>,
    /// pending, success, failed, timed_out, cancelled or superseded.
    pub status: &'static str,
    /// Why it failed (or why its last attempt failed, while pending).
    pub cause: Option<&'static str>,
    pub keygen_attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The authentication string of a pending operation, shown to admin tokens only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_string: Option<String>,
}

impl OperationView {
    /// `show_secret`: include the authentication string (admin callers, pending only).
    pub fn new(op: &Operation, show_secret: bool) -> OperationView {
        let auth_string = if show_secret && op.status == OperationStatus::Pending {
            op.auth_string.as_ref().map(|s| s.0.clone())
        } else {
            None
        };
        OperationView {
            id: op.id,
            operation: op.kind.as_str(),
            auth_mode: op.auth_mode.as_str(),
            key: op.key.to_string(),
            completes_by: op.completes_by,
            status: op.status.as_str(),
            cause: op.cause.map(|c| c.as_str()),
            keygen_attempts: op.keygen_attempts,
            created_at: op.created_at,
            updated_at: op.updated_at,
            auth_string,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LscView {
    pub serial: String,
    pub subject: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// SHA-256 of the DER, hex.
    pub fingerprint_sha256: String,
}

impl From<&LscSummary> for LscView {
    fn from(c: &LscSummary) -> LscView {
        LscView {
            serial: c.serial_hex.clone(),
            subject: c.subject.clone(),
            not_before: c.not_before,
            not_after: c.not_after,
            fingerprint_sha256: c.fingerprint_sha256.clone(),
        }
    }
}

impl From<&CertificateRecord> for LscView {
    fn from(c: &CertificateRecord) -> LscView {
        LscView {
            serial: c.serial_hex.clone(),
            subject: c.subject.clone(),
            not_before: c.not_before,
            not_after: c.not_after,
            fingerprint_sha256: c.fingerprint_sha256.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LockView {
    /// Refusing every attempt until `locked_until`.
    pub locked: bool,
    pub locked_until: Option<DateTime<Utc>>,
    /// Consecutive failed authentications since the last success or lock.
    pub failed_auth_count: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub at: DateTime<Utc>,
    pub source_addr: String,
    pub outcome: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceView {
    pub name: String,
    pub require_sudi: bool,
    pub created_at: DateTime<Utc>,
    /// CUCM's Certificate Operation Status of the latest operation.
    pub status: StatusView,
    /// The latest operation (pending or not).
    pub operation: Option<OperationView>,
    /// The installed LSC.
    pub lsc: Option<LscView>,
    pub lock: LockView,
    pub last_attempt: Option<AttemptView>,
}

impl DeviceView {
    pub fn new(
        device: &Device,
        operation: Option<&Operation>,
        lsc: Option<LscView>,
        show_secret: bool,
        now: DateTime<Utc>,
    ) -> DeviceView {
        DeviceView {
            name: device.name.as_str().to_string(),
            require_sudi: device.require_sudi,
            created_at: device.created_at,
            status: status::describe(operation.map(Operation::status_of)),
            operation: operation.map(|op| OperationView::new(op, show_secret)),
            lsc,
            lock: LockView {
                locked: device.locked_until.is_some_and(|t| t > now),
                locked_until: device.locked_until.filter(|t| *t > now),
                failed_auth_count: device.failed_auth_count,
            },
            last_attempt: device.last_attempt.as_ref().map(|a| AttemptView {
                at: a.at,
                source_addr: a.source_addr.clone(),
                outcome: a.outcome.clone(),
            }),
        }
    }

    pub fn from_summary(s: &DeviceSummary, now: DateTime<Utc>) -> DeviceView {
        DeviceView::new(
            &s.device,
            s.operation.as_ref(),
            s.lsc.as_ref().map(LscView::from),
            false,
            now,
        )
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleResponse {
    pub device: String,
    pub operation: OperationView,
    pub status: StatusView,
    /// The generated authentication string, when one was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_string: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateView {
    pub id: i64,
    pub operation_id: Option<i64>,
    pub serial: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub fingerprint_sha256: String,
    /// awaiting_confirmation, installed, superseded, deleted, abandoned or fetched.
    pub state: &'static str,
    pub created_at: DateTime<Utc>,
    pub pem: String,
}

impl From<&CertificateRecord> for CertificateView {
    fn from(c: &CertificateRecord) -> CertificateView {
        CertificateView {
            id: c.id,
            operation_id: c.operation_id,
            serial: c.serial_hex.clone(),
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            not_before: c.not_before,
            not_after: c.not_after,
            fingerprint_sha256: c.fingerprint_sha256.clone(),
            state: c.state.as_str(),
            created_at: c.created_at,
            pem: c.pem.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub device: Option<String>,
    pub operation_id: Option<i64>,
    pub kind: String,
    pub source_addr: Option<String>,
    pub detail: String,
}

impl From<Event> for EventView {
    fn from(e: Event) -> EventView {
        EventView {
            id: e.id,
            at: e.at,
            device: e.device_name,
            operation_id: e.operation_id,
            kind: e.kind,
            source_addr: e.source_addr,
            detail: e.detail,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
    /// Pass as `after` for the next page; absent when this page was not full.
    pub next_after: Option<i64>,
}
