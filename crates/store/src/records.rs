//! The values the store takes and returns.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use capf_model::device::DeviceName;
use capf_model::keyspec::KeySpec;
use capf_model::operation::{
    AuthMode, CertState, FailureCause, OperationKind, OperationStatus, TokenScope,
};

use crate::error::{Corrupt, Result};

pub type Timestamp = DateTime<Utc>;

/// A device capf knows about.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Device {
    pub name: DeviceName,
    /// Certificate authentication must carry a valid SUDI block.
    pub require_sudi: bool,
    pub created_at: Timestamp,
    /// Consecutive failed authentications since the last success or lock.
    pub failed_auth_count: u32,
    pub locked_until: Option<Timestamp>,
    pub last_attempt: Option<LastAttempt>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LastAttempt {
    pub at: Timestamp,
    pub source_addr: String,
    pub outcome: String,
}

/// An authentication string. Its `Debug` never shows the digits.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthString(pub String);

impl fmt::Debug for AuthString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthString(<redacted>)")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewOperation {
    pub device_name: DeviceName,
    pub kind: OperationKind,
    pub auth_mode: AuthMode,
    /// Required for `AuthMode::String`, ignored otherwise.
    pub auth_string: Option<AuthString>,
    pub key: KeySpec,
    pub completes_by: Timestamp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    pub id: i64,
    pub device_name: DeviceName,
    pub kind: OperationKind,
    pub auth_mode: AuthMode,
    pub auth_string: Option<AuthString>,
    pub key: KeySpec,
    pub completes_by: Timestamp,
    pub status: OperationStatus,
    pub cause: Option<FailureCause>,
    /// How many times a phone was asked to generate a key for this operation.
    pub keygen_attempts: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Node holding the operation for a session in flight, and until when.
    pub claimed_by: Option<String>,
    pub claim_expires_at: Option<Timestamp>,
}

impl Operation {
    /// What its status is worded from (`capf_model::status::describe`).
    pub fn status_of(&self) -> capf_model::status::StatusOf {
        capf_model::status::StatusOf {
            kind: self.kind,
            status: self.status,
            cause: self.cause,
        }
    }
}

/// A certificate to record (issued by us, or fetched from a phone).
#[derive(Clone, Debug, PartialEq)]
pub struct NewCertificate {
    /// Serial as lower-case hex of the unsigned integer, no leading zero bytes.
    pub serial_hex: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    /// SHA-256 of the DER, lower-case hex.
    pub fingerprint_sha256: String,
    pub pem: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CertificateRecord {
    pub id: i64,
    pub device_name: DeviceName,
    pub operation_id: Option<i64>,
    pub serial_hex: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub fingerprint_sha256: String,
    pub pem: String,
    pub state: CertState,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One audit record. `detail` is free text for people; it never holds a secret.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    pub at: Timestamp,
    pub device_name: Option<String>,
    pub operation_id: Option<i64>,
    pub kind: String,
    pub source_addr: Option<String>,
    pub detail: String,
}

/// One connection of a phone, as recorded in the operation's attempt history.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attempt {
    pub device_name: DeviceName,
    pub operation_id: Option<i64>,
    pub session_id: u32,
    pub source_addr: String,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    /// Short machine-readable outcome, e.g. `installed`, `auth_failed`, `no_operation`.
    pub outcome: String,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Consecutive failures that lock the device.
    pub max_failures: u32,
    pub lock_duration: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            max_failures: 10,
            lock_duration: Duration::from_secs(600),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LockState {
    pub failed_auth_count: u32,
    pub locked_until: Option<Timestamp>,
}

/// A credential check admitted by [`Store::admit_auth_attempt`], already counted as a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthTicket {
    /// Consecutive failures including this attempt, should it fail.
    pub failures: u32,
    /// Set when this admission reached the limit and locked the device.
    pub locks_until: Option<Timestamp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthAdmission {
    Admitted(AuthTicket),
    /// Locked: the secret must not be checked.
    Locked,
}

impl LockState {
    pub fn is_locked(&self, now: Timestamp) -> bool {
        self.locked_until.is_some_and(|t| t > now)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFilter {
    pub device_name: Option<String>,
    pub since: Option<Timestamp>,
    /// Return events with id greater than this (cursor).
    pub after_id: Option<i64>,
    pub limit: u32,
}

/// An admin API token as stored: its name, scope and the SHA-256 of its secret.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ApiToken {
    pub name: String,
    #[serde(skip)]
    pub token_sha256: String,
    pub scope: TokenScope,
    pub created_at: Timestamp,
}

/// The installed certificate of a device, without its PEM (for listings and reports).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LscSummary {
    pub serial_hex: String,
    pub subject: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
    pub fingerprint_sha256: String,
}

/// One device as listed: the device, its latest operation and its installed certificate.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSummary {
    pub device: Device,
    pub operation: Option<Operation>,
    pub lsc: Option<LscSummary>,
}

/// Which devices a listing (or a bulk schedule by query) selects. Every condition given must
/// hold. Results come in name order, after `after_name` (the cursor).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceFilter {
    /// Status of the device's latest operation; `None` in the vector matches devices without
    /// an operation (or whose latest was cancelled).
    pub status: Option<StatusFilter>,
    /// Kind of the device's latest operation.
    pub operation: Option<OperationKind>,
    /// Whether the device has an installed LSC.
    pub has_lsc: Option<bool>,
    /// Installed LSC expiring strictly before this time.
    pub lsc_expires_before: Option<Timestamp>,
    /// Device names starting with this text.
    pub name_prefix: Option<String>,
    pub after_name: Option<String>,
    /// At most this many rows (0: no limit).
    pub limit: u32,
}

/// The status part of a [`DeviceFilter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    /// No operation, or the latest one was cancelled.
    None,
    Is(OperationStatus),
}

/// Milliseconds since the Unix epoch, the storage form of every timestamp.
pub(crate) fn to_millis(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> Result<Timestamp> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| Corrupt::Timestamp(ms).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_string_debug_is_redacted() {
        assert!(!format!("{:?}", AuthString("123456".into())).contains("123456"));
    }
}
