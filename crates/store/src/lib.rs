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

use capf_model::device::DeviceName;
use capf_model::operation::{FailureCause, OperationStatus};

mod database_url;
mod error;
pub mod postgres;
mod records;
mod sql;
pub mod sqlite;
mod sqlite_engine;

pub use database_url::{redact_url, DatabaseUrl};
pub use error::{BadUrl, ClaimLost, Conflict, Corrupt, Missing, Result, StoreError, Unavailable};
pub use records::*;
pub use sql::SqlStore;

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
    /// `now + lease`, as a session does once authenticated, in one transaction. Succeeds only
    /// if the operation is still pending and unclaimed, already held by the same claimant, its
    /// lease expired, or (with `from`) it is held by `from`: a node taking over the claim of
    /// one of its own sessions that has ended but whose release has not reached the database
    /// yet. Audit `operation_claimed` on success. With `count_keygen` it also counts a key
    /// generation request sent to the phone (audit `keygen_requested`).
    ///
    /// `None` when the operation could not be claimed; otherwise its key-generation attempts,
    /// this one included when counted.
    async fn claim_for_session(
        &self,
        op_id: i64,
        from: Option<&str>,
        claimant: &str,
        now: Timestamp,
        lease: Duration,
        count_keygen: bool,
    ) -> Result<Option<u32>>;
    /// [`Store::claim_for_session`] without `from` or counting: whether `claimant` holds the
    /// operation now.
    async fn claim(
        &self,
        op_id: i64,
        claimant: &str,
        now: Timestamp,
        lease: Duration,
    ) -> Result<bool> {
        let claimed = self
            .claim_for_session(op_id, None, claimant, now, lease, false)
            .await?;
        Ok(claimed.is_some())
    }
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
