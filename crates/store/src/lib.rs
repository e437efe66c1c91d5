//! Persistent state: devices, their scheduled certificate operation, attempts, issued
//! certificates and the audit trail.
//!
//! One trait, [`Store`], with a SQLite and a PostgreSQL implementation. Both use runtime
//! queries and store timestamps as Unix milliseconds (`BIGINT`) and enums as text, so the two
//! schemas stay alike and one contract test suite (`tests/store_contract.rs`) holds them to
//! the same behaviour. Every state change is written in one transaction together with its
//! audit event: if the event cannot be written, the change does not happen.
//!
//! Multi-node safety comes from conditional updates (claim an operation only while it is
//! pending and unclaimed or its lease expired), never from in-process locks.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use capf_model::device::DeviceName;
use capf_model::keyspec::KeySpec;
use capf_model::operation::{
    AuthMode, CertState, FailureCause, OperationKind, OperationStatus, TokenScope,
};

pub mod postgres;
mod sql;
pub mod sqlite;
mod sqlite_engine;

pub use sql::SqlStore;

pub type Timestamp = DateTime<Utc>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed; the caller should retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// A row read back holds a value this build does not understand.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("invalid database url: {0}")]
    BadUrl(String),
    /// The change would break a uniqueness rule (e.g. a token name already in use).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The session no longer holds the operation's claim: another session took it over
    /// (after this one's lease ran out), so this one must not issue or complete anything.
    #[error("claim lost: {0}")]
    ClaimLost(String),
}

impl From<capf_model::operation::ParseError> for StoreError {
    fn from(e: capf_model::operation::ParseError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound("row".into()),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(e.to_string())
            }
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

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

/// A certificate to record (issued by us, or fetched from a phone).
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

/// Everything the service does with its database.
///
/// Times are passed in by the caller (never read from the clock inside the store), so tests
/// control them and all nodes agree on what "now" meant for a change.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Cheap round trip, for health checks.
    async fn ping(&self) -> Result<()>;
    /// How many operations have each status (only statuses that occur), for metrics.
    async fn operation_counts(&self) -> Result<Vec<(OperationStatus, u64)>>;

    // ---- devices ----

    /// Creates the device if it does not exist (audit `device_created`), returns it.
    async fn ensure_device(&self, name: &DeviceName, now: Timestamp) -> Result<Device>;
    async fn device(&self, name: &DeviceName) -> Result<Option<Device>>;
    /// What authenticating a phone needs first, read together (one round trip on SQLite's
    /// readers): the device, if known, and its pending operation as [`Store::pending_operation`]
    /// returns it (a late one is timed out here too).
    async fn device_and_pending_operation(
        &self,
        name: &DeviceName,
        now: Timestamp,
    ) -> Result<Option<(Device, Option<Operation>)>>;
    /// Sets the per-device "require SUDI" policy (audit `device_updated`).
    async fn set_require_sudi(
        &self,
        name: &DeviceName,
        require: bool,
        now: Timestamp,
    ) -> Result<()>;

    // ---- operations ----

    /// Schedules an operation, creating the device if needed. A pending operation of the
    /// device becomes `Superseded`. Audit `operation_scheduled` (and `operation_superseded`).
    async fn schedule(&self, op: NewOperation, now: Timestamp) -> Result<Operation>;
    /// Schedules many operations in one transaction: all or none. Same effects and audit
    /// events as [`Store::schedule`] for each; device names must be distinct. Returns the new
    /// operation ids in input order.
    async fn schedule_many(&self, ops: &[NewOperation], now: Timestamp) -> Result<Vec<i64>>;
    /// Notes why the latest attempt at a pending operation failed, without ending it (the
    /// phone may try again). No audit event: the attempt record and the failure's own event
    /// tell the story. With `held_by`, only while that claimant holds the operation (a
    /// session that lost its claim notes nothing on the new holder's operation); a note
    /// that applies to nothing is not an error.
    async fn note_attempt_failure(
        &self,
        op_id: i64,
        held_by: Option<&str>,
        cause: FailureCause,
        now: Timestamp,
    ) -> Result<()>;
    /// Cancels the device's pending operation, if any (audit `operation_cancelled`).
    async fn cancel(&self, name: &DeviceName, now: Timestamp) -> Result<Option<Operation>>;
    async fn operation(&self, id: i64) -> Result<Option<Operation>>;
    /// The device's most recent operation, whatever its status.
    async fn latest_operation(&self, name: &DeviceName) -> Result<Option<Operation>>;
    /// The device's pending operation if it can still be performed. A pending operation whose
    /// `completes_by` is not after `now` is marked `TimedOut` with cause
    /// `UserInitiatedRequestLate` (audit `operation_timed_out`) and `None` is returned.
    async fn pending_operation(
        &self,
        name: &DeviceName,
        now: Timestamp,
    ) -> Result<Option<Operation>>;
    /// Marks every pending operation whose deadline passed as timed out; returns how many.
    async fn expire_operations(&self, now: Timestamp) -> Result<u64>;
    /// Claims a pending operation for `claimant` (one session: `<node>/<session id>`) until
    /// `now + lease`. Succeeds only if the operation is still pending and unclaimed, already
    /// held by the same claimant, or its lease expired. Audit `operation_claimed` on success.
    async fn claim(
        &self,
        op_id: i64,
        claimant: &str,
        now: Timestamp,
        lease: Duration,
    ) -> Result<bool>;
    /// Like [`Store::claim`], and also succeeds when the operation is held by `from`: a node
    /// taking over the claim of one of its own sessions that has ended but whose release has
    /// not reached the database yet. Audit `operation_claimed` on success.
    async fn take_over(
        &self,
        op_id: i64,
        from: &str,
        claimant: &str,
        now: Timestamp,
        lease: Duration,
    ) -> Result<bool>;
    /// What a session does once authenticated, in one transaction: [`Store::claim`] (or with
    /// `from`, [`Store::take_over`]), and with `count_keygen` also
    /// [`Store::count_keygen_attempt`]. `None` when the operation could not be claimed;
    /// otherwise its key-generation attempts, this one included when counted.
    async fn claim_for_session(
        &self,
        op_id: i64,
        from: Option<&str>,
        claimant: &str,
        now: Timestamp,
        lease: Duration,
        count_keygen: bool,
    ) -> Result<Option<u32>>;
    /// Releases a claim held by `claimant` (no-op otherwise). No audit event.
    async fn release(&self, op_id: i64, claimant: &str) -> Result<()>;
    /// Extends to `now + lease` every claim on a pending operation whose claimant starts with
    /// `prefix` (a node's `<node>/`): the node's heartbeat. Claims of a node that died are not
    /// renewed and run out, so another node can serve the phone. No audit event.
    async fn renew_claims(&self, prefix: &str, now: Timestamp, lease: Duration) -> Result<u64>;
    /// Releases every claim whose claimant starts with `prefix`: a node run exiting with
    /// sessions cut short, so their phones' retries need not wait for the leases to run out.
    /// No audit event (the attempts record how those sessions ended).
    async fn release_claims(&self, prefix: &str) -> Result<u64>;
    /// Counts a key generation request sent to the phone; returns the new count.
    async fn count_keygen_attempt(&self, op_id: i64, now: Timestamp) -> Result<u32>;
    /// Ends a pending operation as `Failed` with a cause (audit `operation_failed`), fenced
    /// like [`Store::record_issued`]: `ClaimLost`, changing nothing, unless `claimant` still
    /// holds the claim (a session that lost it must not fail the operation its new holder
    /// is performing).
    async fn fail_operation(
        &self,
        op_id: i64,
        claimant: &str,
        cause: FailureCause,
        now: Timestamp,
    ) -> Result<()>;

    // ---- certificates ----

    /// Records a certificate issued for an install operation as `AwaitingConfirmation`
    /// (audit `certificate_issued`), and renews the claim to `now + lease` so it lasts until
    /// the phone confirms. An earlier certificate of the same operation still awaiting
    /// confirmation becomes `Abandoned`. The operation stays pending.
    ///
    /// Fenced by the claim: only while `claimant` still holds it, even if its lease ran out
    /// (nobody else claimed meanwhile, so nobody else can have issued). `ClaimLost`, changing
    /// nothing, when another session holds it or nobody does; `NotFound` when the operation
    /// is no longer pending.
    async fn record_issued(
        &self,
        op_id: i64,
        claimant: &str,
        cert: NewCertificate,
        now: Timestamp,
        lease: Duration,
    ) -> Result<i64>;
    /// The phone confirmed it stored certificate `cert_id`: it becomes `Installed`, the
    /// device's previously installed certificate `Superseded`, the operation `Success`, its
    /// authentication string is cleared and its claim released; one transaction, audit
    /// `certificate_installed` and `operation_succeeded`. Fenced like
    /// [`Store::record_issued`]: `ClaimLost`, changing nothing, unless `claimant` still
    /// holds the claim.
    async fn confirm_install(
        &self,
        op_id: i64,
        claimant: &str,
        cert_id: i64,
        now: Timestamp,
    ) -> Result<()>;
    /// [`Store::confirm_install`] and [`Store::record_attempt`] of the session that installed,
    /// in one transaction: the install's last write also ends its attempt history.
    async fn confirm_install_with_attempt(
        &self,
        op_id: i64,
        claimant: &str,
        cert_id: i64,
        now: Timestamp,
        attempt: Attempt,
    ) -> Result<()>;
    /// The phone answered a fetch: `Some` records the certificate it returned as `Fetched`;
    /// either way the operation succeeds (audit `certificate_fetched`,
    /// `operation_succeeded`). Fenced like [`Store::record_issued`].
    async fn complete_fetch(
        &self,
        op_id: i64,
        claimant: &str,
        cert: Option<NewCertificate>,
        now: Timestamp,
    ) -> Result<()>;
    /// The phone deleted its LSC: the device's installed certificate becomes `Deleted`, the
    /// operation succeeds (audit `certificate_deleted`, `operation_succeeded`). Fenced like
    /// [`Store::record_issued`].
    async fn complete_delete(&self, op_id: i64, claimant: &str, now: Timestamp) -> Result<()>;
    /// The device's installed certificate, if any.
    async fn current_certificate(&self, name: &DeviceName) -> Result<Option<CertificateRecord>>;
    /// Every certificate of the device, newest first.
    async fn certificates(&self, name: &DeviceName) -> Result<Vec<CertificateRecord>>;
    /// A certificate of this device with this SHA-256 fingerprint, in any state.
    async fn certificate_by_fingerprint(
        &self,
        name: &DeviceName,
        fingerprint_sha256: &str,
    ) -> Result<Option<CertificateRecord>>;

    // ---- authentication failures and lockout ----

    /// Current failure count and lock of a device (zero and `None` if unknown).
    async fn lock_state(&self, name: &DeviceName) -> Result<LockState>;
    /// Admits one credential check, counting it as a failure before it happens, atomically
    /// (safe across sessions and nodes): concurrent guesses cannot all slip in before the
    /// failure that locks is recorded, so at most `policy.max_failures` secrets are ever checked
    /// per lock window. The admission that brings the count to `max_failures` locks the device
    /// until `now + lock_duration`; a lock that has expired starts the count again. A locked
    /// device is not admitted: the attempt is audited (`auth_refused_locked`, with the source
    /// address) and `Locked` returned. An unknown device is `NotFound`.
    async fn admit_auth_attempt(
        &self,
        name: &DeviceName,
        source_addr: &str,
        now: Timestamp,
        policy: LockoutPolicy,
    ) -> Result<AuthAdmission>;
    /// The admitted check failed: audits `auth_failed` with the cause and source address (and
    /// `device_locked` when this attempt's admission locked the device). The count was taken
    /// at admission.
    async fn record_auth_failure(
        &self,
        name: &DeviceName,
        ticket: &AuthTicket,
        cause: &str,
        source_addr: &str,
        now: Timestamp,
    ) -> Result<()>;
    /// Records an attempt refused because the device is locked (audit `auth_refused_locked`).
    async fn record_locked_attempt(
        &self,
        name: &DeviceName,
        source_addr: &str,
        now: Timestamp,
    ) -> Result<()>;
    /// Resets the failure count after a successful authentication (no audit event when it
    /// was already zero). With the ticket of the check that succeeded, a lock that this very
    /// admission set is lifted too (the right secret came with the tenth attempt); a lock set
    /// by another attempt stays.
    async fn record_auth_success(
        &self,
        name: &DeviceName,
        ticket: Option<&AuthTicket>,
        now: Timestamp,
    ) -> Result<()>;
    /// Clears lock and count (audit `device_unlocked`).
    async fn unlock(&self, name: &DeviceName, now: Timestamp) -> Result<()>;

    // ---- attempts and audit ----

    /// Appends to the attempt history and updates the device's last attempt.
    async fn record_attempt(&self, attempt: Attempt) -> Result<()>;
    async fn attempts(&self, name: &DeviceName, limit: u32) -> Result<Vec<Attempt>>;
    /// Appends a standalone audit event (for happenings that change no other row).
    async fn audit(
        &self,
        device_name: Option<&DeviceName>,
        operation_id: Option<i64>,
        kind: &str,
        source_addr: Option<&str>,
        detail: &str,
        now: Timestamp,
    ) -> Result<()>;
    /// Audit events in id order.
    async fn events(&self, filter: EventFilter) -> Result<Vec<Event>>;

    // ---- listings ----

    /// Devices matching the filter, in name order.
    async fn list_devices(&self, filter: &DeviceFilter) -> Result<Vec<DeviceSummary>>;

    // ---- admin API tokens ----

    /// Stores a new token (audit `token_created`); `Conflict` if the name is taken.
    async fn create_token(&self, token: &ApiToken, now: Timestamp) -> Result<()>;
    /// Stores `token` only if there is no token at all (first start, safe when several nodes
    /// start at once); returns whether it was stored.
    async fn bootstrap_token(&self, token: &ApiToken, now: Timestamp) -> Result<bool>;
    async fn token_by_hash(&self, token_sha256: &str) -> Result<Option<ApiToken>>;
    /// Deletes the token of that name (audit `token_revoked`); returns whether it existed.
    async fn revoke_token(&self, name: &str, now: Timestamp) -> Result<bool>;
    async fn tokens(&self) -> Result<Vec<ApiToken>>;
}

/// Opens the store named by a database URL (`sqlite://path` or `postgres://...`), creating
/// and migrating it.
pub async fn open(url: &DatabaseUrl) -> Result<std::sync::Arc<dyn Store>> {
    if url.is_postgres() {
        Ok(std::sync::Arc::new(postgres::PgStore::open(url).await?))
    } else {
        Ok(std::sync::Arc::new(sqlite::SqliteStore::open(url).await?))
    }
}

/// A database URL whose `Debug`/`Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Result<DatabaseUrl> {
        let url = url.into();
        if url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://")
        {
            Ok(DatabaseUrl(url))
        } else {
            Err(StoreError::BadUrl(
                "expected sqlite://PATH or postgres://USER@HOST/DB".into(),
            ))
        }
    }

    /// A SQLite database file.
    pub fn sqlite_file(path: &std::path::Path) -> DatabaseUrl {
        DatabaseUrl(format!("sqlite://{}", path.display()))
    }

    pub fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres")
    }

    /// The full URL, password included: only for handing to the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced, for logs (see [`redact_url`]).
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

/// Whether a URL query parameter carries a secret. sqlx takes the password from
/// `?password=` as well as from the user info, libpq's `sslpassword` unlocks a client key;
/// anything else named like a password or token is masked too, since a log line is no
/// place to find out it mattered. Names are compared without case, `-` or `_`.
fn is_secret_param(name: &str) -> bool {
    let name: String = name
        .chars()
        .filter(|c| !matches!(c, '-' | '_'))
        .flat_map(char::to_lowercase)
        .collect();
    ["password", "passwd", "pwd", "secret", "token"]
        .iter()
        .any(|word| name.contains(word))
}

/// A database URL fit for logs: the user info's password and every secret-bearing query
/// parameter (see [`is_secret_param`]) become `***`. A URL that does not parse is hidden
/// whole: where its password starts cannot be told.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparseable database url>".into();
    };
    let mut masked = false;
    if parsed.password().is_some() {
        // Fails only for URLs that cannot have user info, which then have no password.
        masked = parsed.set_password(Some("***")).is_ok();
    }
    if parsed.query_pairs().any(|(name, _)| is_secret_param(&name)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret_param(&name) {
                    "***".to_string()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
        masked = true;
    }
    if masked {
        parsed.to_string()
    } else {
        // Unchanged, byte for byte: the URL crate's normal form may differ from the text.
        url.to_string()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Milliseconds since the Unix epoch, the storage form of every timestamp.
pub fn to_millis(t: Timestamp) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> Result<Timestamp> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_hides_password() {
        let url = DatabaseUrl::new("postgres://capf:s3cret@db.example:5432/capf").unwrap();
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(!url.to_string().contains("s3cret"));
        assert!(url.expose().contains("s3cret"));
        assert!(DatabaseUrl::new("mysql://x").is_err());
    }

    #[test]
    fn database_url_hides_secret_query_parameters() {
        for text in [
            "postgres://capf@db/capf?password=s3cret",
            "postgres://capf@db/capf?PassWord=s3cret&application_name=capf",
            "postgres://capf@db/capf?sslmode=require&sslpassword=s3cret",
            "postgres://capf@db/capf?ssl-password=s3cret",
            "postgres://capf@db/capf?pass%77ord=s3cret",
            "postgresql://capf:s3cret@db/capf?password=s3cret&password=s3cret",
            "postgres://capf@db/capf?auth_token=s3cret",
        ] {
            let url = DatabaseUrl::new(text).unwrap();
            for shown in [url.to_string(), format!("{url:?}"), url.redacted()] {
                assert!(!shown.contains("s3cret"), "{text} shown as {shown}");
                assert!(shown.contains("***"), "{text} shown as {shown}");
            }
            assert_eq!(url.expose(), text);
        }
        // What is not secret stays readable.
        let url = DatabaseUrl::new("postgres://capf:pw@db/capf?sslmode=require&user=capf").unwrap();
        assert_eq!(
            url.redacted(),
            "postgres://capf:***@db/capf?sslmode=require&user=capf"
        );
        let url = DatabaseUrl::new("postgres://capf@db:5432/capf?sslmode=disable").unwrap();
        assert_eq!(url.redacted(), url.expose());
        let url = DatabaseUrl::sqlite_file(std::path::Path::new("./data/capf.db"));
        assert_eq!(url.redacted(), "sqlite://./data/capf.db");
    }

    #[test]
    fn unparseable_database_url_is_hidden_whole() {
        let url = DatabaseUrl::new("postgres://capf:s3cret@[db/capf").unwrap();
        assert_eq!(url.redacted(), "<unparseable database url>");
        assert!(!format!("{url:?}").contains("s3cret"));
    }

    #[test]
    fn auth_string_debug_is_redacted() {
        assert!(!format!("{:?}", AuthString("123456".into())).contains("123456"));
    }
}
