//! The one implementation of [`Store`], shared by the SQLite and PostgreSQL back ends.
//!
//! Both databases run the same SQL text (PostgreSQL's `$N` placeholders, which `adapter`
//! hands to SQLite as `?N`), so the behaviour is written once here and the contract tests
//! cannot find the two back ends disagreeing. What differs lives in `sqlite.rs` and
//! `postgres.rs`: connection options, migrations and how a write transaction begins. The
//! adapter (`adapter.rs`: `Pool`, `Tx`, `Query`, `Row`) is the only place that knows there
//! are two engines; the other modules hold the SQL of one concern each, and this file only
//! routes each [`Store`] method to its module.
//!
//! Concurrency rules every method follows:
//! - a write happens in one transaction (written with [`adapter::in_tx!`]) together with its
//!   audit events;
//! - a change that depends on the current state is a conditional `UPDATE ... WHERE <state
//!   it requires> RETURNING ...`, so whichever node runs it second sees zero rows instead of
//!   overwriting (on PostgreSQL the second `UPDATE` waits for the first to commit, then
//!   re-checks its `WHERE` against the new row; on SQLite write transactions are serialised
//!   by `BEGIN IMMEDIATE`);
//! - counters are incremented in SQL, never read-modified-written in Rust.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use capf_model::device::DeviceName;
use capf_model::operation::{FailureCause, OperationStatus};

use crate::error::Result;
use crate::records::{
    ApiToken, Attempt, AuthAdmission, AuthTicket, CertificateRecord, Device, DeviceFilter,
    DeviceSummary, Event, EventFilter, LockState, LockoutPolicy, NewCertificate, NewOperation,
    Operation, Timestamp,
};
use crate::Store;

mod adapter;
mod audit;
mod bulk;
mod certificates;
mod claims;
mod devices;
mod lifecycle;
mod listings;
mod lockout;
mod operations;
mod rows;
mod tokens;

pub(crate) use adapter::Pool;

/// A [`Store`] on a SQL database. `B` only selects which `open` constructor exists
/// (see [`crate::sqlite::SqliteStore`] and [`crate::postgres::PgStore`]).
pub struct SqlStore<B> {
    pool: Pool,
    backend: PhantomData<fn() -> B>,
}

impl<B> SqlStore<B> {
    pub(crate) fn from_pool(pool: Pool) -> Self {
        SqlStore {
            pool,
            backend: PhantomData,
        }
    }

    /// Closes every connection of the pool (waits for the ones in use to be returned).
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(engine) => engine.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

// Written by hand: the sqlx pools' own `Debug` prints their connect options, password
// included.
impl<B> fmt::Debug for SqlStore<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match &self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        };
        f.debug_struct("SqlStore")
            .field("backend", &backend)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<B> Store for SqlStore<B> {
    async fn ping(&self) -> Result<()> {
        let one = adapter::query("SELECT 1 AS one");
        self.pool.fetch_optional(one).await.map(|_| ())
    }

    async fn operation_counts(&self) -> Result<Vec<(OperationStatus, u64)>> {
        operations::operation_counts(&self.pool).await
    }

    // ---- devices ----

    async fn device(&self, name: &DeviceName) -> Result<Option<Device>> {
        devices::device(&self.pool, name).await
    }

    async fn device_and_pending_operation(
        &self,
        name: &DeviceName,
        now: Timestamp,
    ) -> Result<Option<(Device, Option<Operation>)>> {
        devices::device_and_pending_operation(&self.pool, name, now).await
    }

    async fn set_require_sudi(
        &self,
        name: &DeviceName,
        require: bool,
        now: Timestamp,
    ) -> Result<()> {
        devices::set_require_sudi(&self.pool, name, require, now).await
    }

    // ---- operations ----

    async fn schedule(&self, op: NewOperation, now: Timestamp) -> Result<Operation> {
        operations::schedule(&self.pool, op, now).await
    }

    async fn schedule_many(&self, ops: &[NewOperation], now: Timestamp) -> Result<Vec<i64>> {
        bulk::schedule_many(&self.pool, ops, now).await
    }

    async fn note_attempt_failure(
        &self,
        op_id: i64,
        held_by: Option<&str>,
        cause: FailureCause,
        now: Timestamp,
    ) -> Result<()> {
        operations::note_attempt_failure(&self.pool, op_id, held_by, cause, now).await
    }

    async fn cancel(&self, name: &DeviceName, now: Timestamp) -> Result<Option<Operation>> {
        operations::cancel(&self.pool, name, now).await
    }

    async fn operation(&self, id: i64) -> Result<Option<Operation>> {
        operations::operation(&self.pool, id).await
    }

    async fn latest_operation(&self, name: &DeviceName) -> Result<Option<Operation>> {
        operations::latest_operation(&self.pool, name).await
    }

    async fn pending_operation(
        &self,
        name: &DeviceName,
        now: Timestamp,
    ) -> Result<Option<Operation>> {
        operations::pending_operation(&self.pool, name, now).await
    }

    async fn expire_operations(&self, now: Timestamp) -> Result<u64> {
        operations::expire_operations(&self.pool, now).await
    }

    async fn fail_operation(
        &self,
        op_id: i64,
        claimant: &str,
        cause: FailureCause,
        now: Timestamp,
    ) -> Result<()> {
        operations::fail_operation(&self.pool, op_id, claimant, cause, now).await
    }

    // ---- claims ----

    async fn claim_for_session(
        &self,
        op_id: i64,
        from: Option<&str>,
        claimant: &str,
        now: Timestamp,
        lease: Duration,
        count_keygen: bool,
    ) -> Result<Option<u32>> {
        let pool = &self.pool;
        claims::claim_for_session(pool, op_id, from, claimant, now, lease, count_keygen).await
    }

    async fn release(&self, op_id: i64, claimant: &str) -> Result<()> {
        claims::release(&self.pool, op_id, claimant).await
    }

    async fn renew_claims(&self, prefix: &str, now: Timestamp, lease: Duration) -> Result<u64> {
        claims::renew_claims(&self.pool, prefix, now, lease).await
    }

    async fn release_claims(&self, prefix: &str) -> Result<u64> {
        claims::release_claims(&self.pool, prefix).await
    }

    // ---- certificates ----

    async fn record_issued(
        &self,
        op_id: i64,
        claimant: &str,
        cert: NewCertificate,
        now: Timestamp,
        lease: Duration,
    ) -> Result<i64> {
        certificates::record_issued(&self.pool, op_id, claimant, cert, now, lease).await
    }

    async fn confirm_install(
        &self,
        op_id: i64,
        claimant: &str,
        cert_id: i64,
        now: Timestamp,
    ) -> Result<()> {
        certificates::confirm_install(&self.pool, op_id, claimant, cert_id, now, None).await
    }

    async fn confirm_install_with_attempt(
        &self,
        op_id: i64,
        claimant: &str,
        cert_id: i64,
        now: Timestamp,
        attempt: Attempt,
    ) -> Result<()> {
        let attempt = Some(attempt);
        certificates::confirm_install(&self.pool, op_id, claimant, cert_id, now, attempt).await
    }

    async fn complete_fetch(
        &self,
        op_id: i64,
        claimant: &str,
        cert: Option<NewCertificate>,
        now: Timestamp,
    ) -> Result<()> {
        certificates::complete_fetch(&self.pool, op_id, claimant, cert, now).await
    }

    async fn complete_delete(&self, op_id: i64, claimant: &str, now: Timestamp) -> Result<()> {
        certificates::complete_delete(&self.pool, op_id, claimant, now).await
    }

    async fn current_certificate(&self, name: &DeviceName) -> Result<Option<CertificateRecord>> {
        certificates::current_certificate(&self.pool, name).await
    }

    async fn certificates(&self, name: &DeviceName) -> Result<Vec<CertificateRecord>> {
        certificates::certificates(&self.pool, name).await
    }

    // ---- authentication failures and lockout ----

    async fn lock_state(&self, name: &DeviceName) -> Result<LockState> {
        lockout::lock_state(&self.pool, name).await
    }

    async fn admit_auth_attempt(
        &self,
        name: &DeviceName,
        source_addr: &str,
        now: Timestamp,
        policy: LockoutPolicy,
    ) -> Result<AuthAdmission> {
        lockout::admit_auth_attempt(&self.pool, name, source_addr, now, policy).await
    }

    async fn record_auth_failure(
        &self,
        name: &DeviceName,
        ticket: &AuthTicket,
        cause: &str,
        source_addr: &str,
        now: Timestamp,
    ) -> Result<()> {
        lockout::record_auth_failure(&self.pool, name, ticket, cause, source_addr, now).await
    }

    async fn record_locked_attempt(
        &self,
        name: &DeviceName,
        source_addr: &str,
        now: Timestamp,
    ) -> Result<()> {
        lockout::record_locked_attempt(&self.pool, name, source_addr, now).await
    }

    async fn record_auth_success(
        &self,
        name: &DeviceName,
        ticket: Option<&AuthTicket>,
        now: Timestamp,
    ) -> Result<()> {
        lockout::record_auth_success(&self.pool, name, ticket, now).await
    }

    async fn unlock(&self, name: &DeviceName, now: Timestamp) -> Result<()> {
        lockout::unlock(&self.pool, name, now).await
    }

    // ---- attempts and audit ----

    async fn record_attempt(&self, attempt: Attempt) -> Result<()> {
        audit::record_attempt(&self.pool, attempt).await
    }

    async fn attempts(&self, name: &DeviceName, limit: u32) -> Result<Vec<Attempt>> {
        audit::attempts(&self.pool, name, limit).await
    }

    async fn audit(
        &self,
        device_name: Option<&DeviceName>,
        operation_id: Option<i64>,
        kind: &str,
        source_addr: Option<&str>,
        detail: &str,
        now: Timestamp,
    ) -> Result<()> {
        let ev = audit::Ev {
            device: device_name.map(DeviceName::as_str),
            operation: operation_id,
            kind,
            source: source_addr,
            detail: detail.to_string(),
        };
        audit::audit(&self.pool, ev, now).await
    }

    async fn events(&self, filter: EventFilter) -> Result<Vec<Event>> {
        audit::events(&self.pool, filter).await
    }

    // ---- listings ----

    async fn list_devices(&self, filter: &DeviceFilter) -> Result<Vec<DeviceSummary>> {
        listings::list_devices(&self.pool, filter).await
    }

    // ---- admin API tokens ----

    async fn create_token(&self, token: &ApiToken, now: Timestamp) -> Result<()> {
        tokens::create_token(&self.pool, token, now).await
    }

    async fn bootstrap_token(&self, token: &ApiToken, now: Timestamp) -> Result<bool> {
        tokens::bootstrap_token(&self.pool, token, now).await
    }

    async fn token_by_hash(&self, token_sha256: &str) -> Result<Option<ApiToken>> {
        tokens::token_by_hash(&self.pool, token_sha256).await
    }

    async fn revoke_token(&self, name: &str, now: Timestamp) -> Result<bool> {
        tokens::revoke_token(&self.pool, name, now).await
    }

    async fn tokens(&self) -> Result<Vec<ApiToken>> {
        tokens::tokens(&self.pool).await
    }
}
