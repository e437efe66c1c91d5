//! The one implementation of [`Store`], shared by the SQLite and PostgreSQL back ends.
//!
//! Both databases run the same SQL text (sqlx's SQLite driver understands PostgreSQL's `$N`
//! placeholders), so the behaviour is written once here and the contract tests cannot find
//! the two back ends disagreeing. What differs lives in `sqlite.rs` and `postgres.rs`:
//! connection options, migrations and how a write transaction begins. The small adapter at
//! the bottom of this file (`Pool`, `Tx`, `Query`, `Row`) is the only place that knows
//! there are two sqlx drivers.
//!
//! Concurrency rules every method follows:
//! - a write happens in one transaction together with its audit events;
//! - a change that depends on the current state is a conditional `UPDATE ... WHERE <state
//!   it requires> RETURNING ...`, so whichever node runs it second sees zero rows instead of
//!   overwriting (on PostgreSQL the second `UPDATE` waits for the first to commit, then
//!   re-checks its `WHERE` against the new row; on SQLite write transactions are serialised
//!   by `BEGIN IMMEDIATE`);
//! - counters are incremented in SQL, never read-modified-written in Rust.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use chrono::SecondsFormat;
use rusqlite::types::Value;
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::{Postgres, Transaction};

use super::sqlite_engine::{from_sqlite, Engine, SyncMode, WriteJob};

use super::*;
use capf_model::operation::ParseError;

/// A [`Store`] on a SQL database. `B` only selects which `open` constructor exists
/// (see [`super::sqlite::SqliteStore`] and [`super::postgres::PgStore`]).
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

    /// `op` as read while pending, if it can still be performed: a late one is ended here
    /// (timed out, "request late") rather than waiting for the sweeper, so the phone is told
    /// and the record says so.
    async fn still_pending(&self, op: Operation, now: Timestamp) -> Result<Option<Operation>> {
        if op.completes_by > now {
            return Ok(Some(op));
        }
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let cause = FailureCause::UserInitiatedRequestLate;
                    if let Some(ended) =
                        end_operation(tx, op.id, OperationStatus::TimedOut, Some(cause), now)
                            .await?
                    {
                        let detail = format!("deadline {} passed", show_time(op.completes_by));
                        let ev = Ev::new(
                            &ended.device_name,
                            Some(op.id),
                            "operation_timed_out",
                            detail,
                        );
                        write_event(tx, now, ev).await?;
                    }
                    Ok(None)
                })
            })
            .await
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

// ---- columns and row conversion ----

const DEVICE_SELECT: &str = "SELECT name, require_sudi, created_at, failed_auth_count, \
     locked_until, last_attempt_at, last_attempt_source, last_attempt_outcome FROM devices";

const OPERATION_SELECT: &str = "SELECT o.id, d.name AS device_name, o.kind, o.auth_mode, \
     o.auth_string, o.key_spec, o.completes_by, o.status, o.cause, o.keygen_attempts, \
     o.created_at, o.updated_at, o.claimed_by, o.claim_expires_at \
     FROM operations o JOIN devices d ON d.id = o.device_id";

const CERTIFICATE_SELECT: &str = "SELECT c.id, d.name AS device_name, c.operation_id, \
     c.serial_hex, c.subject, c.issuer, c.not_before, c.not_after, c.fingerprint_sha256, \
     c.pem, c.state, c.created_at, c.updated_at \
     FROM certificates c JOIN devices d ON d.id = c.device_id";

const ATTEMPT_SELECT: &str = "SELECT device_name, operation_id, session_id, source_addr, \
     started_at, ended_at, outcome, detail FROM attempts";

const EVENT_SELECT: &str =
    "SELECT id, at, device_name, operation_id, kind, source_addr, detail FROM events";

fn device_name(text: String) -> Result<DeviceName> {
    // Names are validated before they are stored; a name that no longer passes came from
    // somewhere else.
    DeviceName::from_wire(&text)
        .map_err(|e| StoreError::Corrupt(format!("device name {text:?}: {e}")))
}

fn to_u32(value: i64, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value}")))
}

fn device_from_row(row: &Row) -> Result<Device> {
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

fn operation_from_row(row: &Row) -> Result<Operation> {
    let key_text = row.text("key_spec")?;
    let key = key_text
        .parse::<KeySpec>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Operation {
        id: row.int("id")?,
        device_name: device_name(row.text("device_name")?)?,
        kind: row.parse("kind")?,
        auth_mode: row.parse("auth_mode")?,
        auth_string: row.opt_text("auth_string")?.map(AuthString),
        key,
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

fn attempt_from_row(row: &Row) -> Result<Attempt> {
    Ok(Attempt {
        device_name: device_name(row.text("device_name")?)?,
        operation_id: row.opt_int("operation_id")?,
        session_id: to_u32(row.int("session_id")?, "session_id")?,
        source_addr: row.text("source_addr")?,
        started_at: row.time("started_at")?,
        ended_at: row.time("ended_at")?,
        outcome: row.text("outcome")?,
        detail: row.text("detail")?,
    })
}

fn event_from_row(row: &Row) -> Result<Event> {
    Ok(Event {
        id: row.int("id")?,
        at: row.time("at")?,
        device_name: row.opt_text("device_name")?,
        operation_id: row.opt_int("operation_id")?,
        kind: row.text("kind")?,
        source_addr: row.opt_text("source_addr")?,
        detail: row.text("detail")?,
    })
}

fn show_time(t: Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `now + d`, saturating at the latest representable time instead of failing.
fn later(now: Timestamp, d: Duration) -> Timestamp {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn not_pending(op_id: i64) -> StoreError {
    StoreError::NotFound(format!("pending operation {op_id}"))
}

// ---- audit events ----

/// One audit record to write. `detail` is built by this module from non-secret fields only:
/// an authentication string is never formatted into it.
struct Ev<'a> {
    device: Option<&'a str>,
    operation: Option<i64>,
    kind: &'a str,
    source: Option<&'a str>,
    detail: String,
}

impl<'a> Ev<'a> {
    fn new(device: &'a str, operation: Option<i64>, kind: &'a str, detail: String) -> Self {
        Ev {
            device: Some(device),
            operation,
            kind,
            source: None,
            detail,
        }
    }

    fn with_source(mut self, source: &'a str) -> Self {
        self.source = Some(source);
        self
    }

    fn query(&self, at: Timestamp) -> Query {
        query(
            "INSERT INTO events (at, device_name, operation_id, kind, source_addr, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .time(at)
        .opt_text(self.device)
        .opt_int(self.operation)
        .text(self.kind)
        .opt_text(self.source)
        .text(&self.detail)
    }
}

/// The audit record of a token change: its name and scope, never its secret or hash.
fn token_event<'a>(token: &'a ApiToken, kind: &'a str) -> Ev<'a> {
    Ev {
        device: None,
        operation: None,
        kind,
        source: None,
        detail: format!("token {:?} scope={}", token.name, token.scope),
    }
}

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

async fn write_event(tx: &mut Tx<'_>, at: Timestamp, ev: Ev<'_>) -> Result<()> {
    tx.execute(ev.query(at)).await.map(|_| ())
}

// ---- helpers shared by several methods, all inside a caller's transaction ----

/// Creates the device if needed (with its `device_created` event); returns its id.
async fn ensure_device_in(tx: &mut Tx<'_>, name: &DeviceName, now: Timestamp) -> Result<i64> {
    let inserted = tx
        .fetch_optional(
            query(
                "INSERT INTO devices (name, created_at, updated_at) VALUES ($1, $2, $2) \
                 ON CONFLICT (name) DO NOTHING RETURNING id",
            )
            .text(name.as_str())
            .time(now),
        )
        .await?;
    if let Some(row) = inserted {
        write_event(
            tx,
            now,
            Ev::new(
                name.as_str(),
                None,
                "device_created",
                "device created".into(),
            ),
        )
        .await?;
        return row.int("id");
    }
    let row = tx
        .fetch_optional(query("SELECT id FROM devices WHERE name = $1").text(name.as_str()))
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("device {name}")))?;
    row.int("id")
}

/// `RETURNING` of an update of `operations`: the device's id and name, without another
/// statement (each one is a round trip to the database, on SQLite a thread handoff).
const RETURNING_DEVICE: &str = "RETURNING device_id, \
     (SELECT name FROM devices WHERE devices.id = operations.device_id) AS device_name";

/// The device an operation ended by [`end_operation`] belongs to.
struct Ended {
    device_id: i64,
    device_name: String,
}

/// Ends a pending operation held by `claimant` (see [`end_operation_held`]): `NotFound` when
/// it is no longer pending, `ClaimLost`, changing nothing, when another session holds it or
/// nobody does.
async fn end_held(
    tx: &mut Tx<'_>,
    op_id: i64,
    claimant: &str,
    status: OperationStatus,
    cause: Option<FailureCause>,
    now: Timestamp,
) -> Result<Ended> {
    match end_operation_held(tx, op_id, status, cause, now, Some(claimant)).await? {
        Some(ended) => Ok(ended),
        None => Err(fence_refused(tx, op_id, claimant).await),
    }
}

/// Moves a pending operation to a final status: the authentication string is no longer
/// needed and is erased, the claim is released, and (unless it succeeded) a certificate
/// still awaiting confirmation is abandoned. Returns `None`, changing nothing, when the
/// operation does not exist or is no longer pending (another node ended it first).
async fn end_operation(
    tx: &mut Tx<'_>,
    op_id: i64,
    status: OperationStatus,
    cause: Option<FailureCause>,
    now: Timestamp,
) -> Result<Option<Ended>> {
    end_operation_held(tx, op_id, status, cause, now, None).await
}

/// [`end_operation`], and with `held_by` only while that claimant holds the claim: the
/// claim is checked by the same statement that ends the operation, so no other session can
/// claim in between.
async fn end_operation_held(
    tx: &mut Tx<'_>,
    op_id: i64,
    status: OperationStatus,
    cause: Option<FailureCause>,
    now: Timestamp,
    held_by: Option<&str>,
) -> Result<Option<Ended>> {
    let fence = if held_by.is_some() {
        "AND claimed_by = $5"
    } else {
        ""
    };
    let mut q = query(format!(
        "UPDATE operations SET status = $2, cause = $3, auth_string = NULL, \
         claimed_by = NULL, claim_expires_at = NULL, updated_at = $4 \
         WHERE id = $1 AND status = 'pending' {fence} {RETURNING_DEVICE}",
    ))
    .int(op_id)
    .text(status.as_str())
    .opt_text(cause.map(FailureCause::as_str))
    .time(now);
    if let Some(claimant) = held_by {
        q = q.text(claimant);
    }
    let Some(row) = tx.fetch_optional(q).await? else {
        return Ok(None);
    };
    let device_id = row.int("device_id")?;
    let device_name = row.text("device_name")?;
    if status != OperationStatus::Success {
        abandon_awaiting(tx, op_id, &device_name, now).await?;
    }
    Ok(Some(Ended {
        device_id,
        device_name,
    }))
}

/// Certificates of the operation still awaiting confirmation become `Abandoned`.
async fn abandon_awaiting(tx: &mut Tx<'_>, op_id: i64, device: &str, now: Timestamp) -> Result<()> {
    let rows = tx
        .fetch_all(
            query(
                "UPDATE certificates SET state = 'abandoned', updated_at = $2 \
                 WHERE operation_id = $1 AND state = 'awaiting_confirmation' RETURNING id",
            )
            .int(op_id)
            .time(now),
        )
        .await?;
    for row in rows {
        let cert_id = row.int("id")?;
        let detail = format!("certificate {cert_id} issued but never confirmed");
        let ev = Ev::new(device, Some(op_id), "certificate_abandoned", detail);
        write_event(tx, now, ev).await?;
    }
    Ok(())
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
        .ok_or_else(|| StoreError::Unavailable("INSERT returned no id".into()))?;
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
        return Err(StoreError::NotFound(format!(
            "certificate {cert_id} awaiting confirmation for operation {op_id}"
        )));
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

/// Appends an attempt and updates the device's last attempt.
async fn record_attempt_in(tx: &mut Tx<'_>, attempt: &Attempt) -> Result<()> {
    tx.execute(
        query(
            "INSERT INTO attempts (device_name, operation_id, session_id, \
             source_addr, started_at, ended_at, outcome, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .text(attempt.device_name.as_str())
        .opt_int(attempt.operation_id)
        .int(i64::from(attempt.session_id))
        .text(&attempt.source_addr)
        .time(attempt.started_at)
        .time(attempt.ended_at)
        .text(&attempt.outcome)
        .text(&attempt.detail),
    )
    .await?;
    // Nodes may report out of order; the newest attempt wins.
    tx.execute(
        query(
            "UPDATE devices SET last_attempt_at = $2, last_attempt_source = $3, \
             last_attempt_outcome = $4 WHERE name = $1 \
             AND (last_attempt_at IS NULL OR last_attempt_at <= $2)",
        )
        .text(attempt.device_name.as_str())
        .time(attempt.started_at)
        .text(&attempt.source_addr)
        .text(&attempt.outcome),
    )
    .await?;
    Ok(())
}

/// The pending operation of a device (at most one is pending).
fn pending_query(name: &DeviceName) -> Query {
    query(format!(
        "{OPERATION_SELECT} WHERE d.name = $1 AND o.status = 'pending'"
    ))
    .text(name.as_str())
}

async fn operation_by_id(exec: &mut Tx<'_>, op_id: i64) -> Result<Option<Operation>> {
    let sql = format!("{OPERATION_SELECT} WHERE o.id = $1");
    exec.fetch_optional(query(sql).int(op_id))
        .await?
        .as_ref()
        .map(operation_from_row)
        .transpose()
}

/// Why a write fenced by `claimant`'s claim changed nothing: `NotFound` when the operation
/// is no longer pending, `ClaimLost` when it is but the claim is not (or no longer) ours.
async fn fence_refused(tx: &mut Tx<'_>, op_id: i64, claimant: &str) -> StoreError {
    match operation_by_id(tx, op_id).await {
        Ok(Some(op)) if op.status == OperationStatus::Pending => {
            let holder = op.claimed_by.as_deref().unwrap_or("nobody");
            StoreError::ClaimLost(format!(
                "operation {op_id} is held by {holder}, not by {claimant}"
            ))
        }
        Ok(_) => not_pending(op_id),
        Err(e) => e,
    }
}

// ---- many rows per statement (bulk scheduling) ----

/// Rows per multi-row statement. Small on purpose: sqlx's SQLite driver resolves each bound
/// `$N` by scanning the statement's parameter names, so binding costs grow with the square of
/// the parameters per statement (500 rows of 9 columns spent 70% of a bulk import there);
/// 64 rows keep every statement under 600 parameters while 100,000 rows still take only a
/// few thousand statements.
const BATCH: usize = 64;

/// `($1, $2), ($3, $4), ...`: `rows` tuples of `width` placeholders, numbered from `first`.
fn tuples(rows: usize, width: usize, first: usize) -> String {
    let mut sql = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", first + r * width + c));
        }
        sql.push(')');
    }
    sql
}

/// `$first, $first+1, ...` for an `IN (...)` list of `n` values.
fn placeholders(n: usize, first: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes many audit events with multi-row inserts.
async fn write_events(tx: &mut Tx<'_>, at: Timestamp, events: &[Ev<'_>]) -> Result<()> {
    for chunk in events.chunks(BATCH) {
        let mut q = query(format!(
            "INSERT INTO events (at, device_name, operation_id, kind, source_addr, detail) \
             VALUES {}",
            tuples(chunk.len(), 6, 1)
        ));
        for ev in chunk {
            q = q
                .time(at)
                .opt_text(ev.device)
                .opt_int(ev.operation)
                .text(ev.kind)
                .opt_text(ev.source)
                .text(&ev.detail);
        }
        tx.execute(q).await?;
    }
    Ok(())
}

fn describe_operation(op: &NewOperation) -> String {
    format!(
        "kind={} auth_mode={} key={} completes_by={}",
        op.kind,
        op.auth_mode,
        op.key,
        show_time(op.completes_by)
    )
}

/// The authentication string only means something in string mode.
fn stored_auth_string(op: &NewOperation) -> Option<&str> {
    match op.auth_mode {
        AuthMode::String => op.auth_string.as_ref().map(|s| s.0.as_str()),
        _ => None,
    }
}

/// One chunk of [`Store::schedule_many`], inside its transaction. The statements mirror
/// [`Store::schedule`]: create missing devices, touch (and so lock) every device row,
/// supersede pending operations, abandon their unconfirmed certificates, insert the new
/// operations, write the events.
async fn schedule_chunk(tx: &mut Tx<'_>, ops: &[NewOperation], now: Timestamp) -> Result<Vec<i64>> {
    use std::collections::HashMap;

    let n = ops.len();
    let mut events: Vec<Ev<'_>> = Vec::new();

    let mut q = query(format!(
        "INSERT INTO devices (name, created_at, updated_at) VALUES {} \
         ON CONFLICT (name) DO NOTHING RETURNING name",
        tuples(n, 3, 1)
    ));
    for op in ops {
        q = q.text(op.device_name.as_str()).time(now).time(now);
    }
    let created = tx.fetch_all(q).await?;
    let mut created_names = Vec::with_capacity(created.len());
    for row in &created {
        created_names.push(row.text("name")?);
    }

    let mut q = query(format!(
        "UPDATE devices SET updated_at = $1 WHERE name IN ({}) RETURNING id, name",
        placeholders(n, 2)
    ))
    .time(now);
    for op in ops {
        q = q.text(op.device_name.as_str());
    }
    let mut device_ids: HashMap<String, i64> = HashMap::with_capacity(n);
    for row in tx.fetch_all(q).await? {
        device_ids.insert(row.text("name")?, row.int("id")?);
    }
    let mut ids_in_order = Vec::with_capacity(n);
    for op in ops {
        let id = device_ids
            .get(op.device_name.as_str())
            .copied()
            .ok_or_else(|| StoreError::NotFound(format!("device {}", op.device_name)))?;
        ids_in_order.push(id);
    }

    // Without statistics SQLite guesses that `status = 'pending'` selects ten rows and walks
    // every pending operation through operations_by_status_deadline for each chunk, which
    // made an import quadratic in its size. The partial index holds the one pending
    // operation per device that this looks for.
    let pending_index = match tx {
        Tx::Sqlite(_) => " INDEXED BY operations_one_pending_per_device",
        Tx::Postgres(_) => "",
    };
    let mut q = query(format!(
        "UPDATE operations{pending_index} SET status = 'superseded', cause = NULL, \
         auth_string = NULL, claimed_by = NULL, claim_expires_at = NULL, updated_at = $1 \
         WHERE status = 'pending' AND device_id IN ({}) RETURNING id, device_id",
        placeholders(n, 2)
    ))
    .time(now);
    for id in &ids_in_order {
        q = q.int(*id);
    }
    // device id -> superseded operation id
    let mut superseded: HashMap<i64, i64> = HashMap::new();
    for row in tx.fetch_all(q).await? {
        superseded.insert(row.int("device_id")?, row.int("id")?);
    }
    let name_of_op: HashMap<i64, &str> = ops
        .iter()
        .zip(&ids_in_order)
        .filter_map(|(op, dev)| {
            superseded
                .get(dev)
                .map(|old| (*old, op.device_name.as_str()))
        })
        .collect();

    let mut abandoned = Vec::new();
    if !superseded.is_empty() {
        let old_ids: Vec<i64> = superseded.values().copied().collect();
        let mut q = query(format!(
            "UPDATE certificates SET state = 'abandoned', updated_at = $1 \
             WHERE state = 'awaiting_confirmation' AND operation_id IN ({}) \
             RETURNING id, operation_id",
            placeholders(old_ids.len(), 2)
        ))
        .time(now);
        for id in &old_ids {
            q = q.int(*id);
        }
        for row in tx.fetch_all(q).await? {
            abandoned.push((row.int("id")?, row.int("operation_id")?));
        }
    }

    let mut q = query(format!(
        "INSERT INTO operations (device_id, kind, auth_mode, auth_string, key_spec, \
         completes_by, status, created_at, updated_at) VALUES {} RETURNING id, device_id",
        tuples(n, 9, 1)
    ));
    for (op, device_id) in ops.iter().zip(&ids_in_order) {
        q = q
            .int(*device_id)
            .text(op.kind.as_str())
            .text(op.auth_mode.as_str())
            .opt_text(stored_auth_string(op))
            .text(op.key.to_string())
            .time(op.completes_by)
            .text(OperationStatus::Pending.as_str())
            .time(now)
            .time(now);
    }
    let mut new_ops: HashMap<i64, i64> = HashMap::with_capacity(n);
    for row in tx.fetch_all(q).await? {
        new_ops.insert(row.int("device_id")?, row.int("id")?);
    }

    for name in &created_names {
        events.push(Ev::new(
            name,
            None,
            "device_created",
            "device created".into(),
        ));
    }
    for (cert_id, old_op) in &abandoned {
        let device = name_of_op.get(old_op).copied().unwrap_or_default();
        let detail = format!("certificate {cert_id} issued but never confirmed");
        events.push(Ev::new(
            device,
            Some(*old_op),
            "certificate_abandoned",
            detail,
        ));
    }
    let mut op_ids = Vec::with_capacity(n);
    for (op, device_id) in ops.iter().zip(&ids_in_order) {
        let op_id = new_ops
            .get(device_id)
            .copied()
            .ok_or_else(|| StoreError::Unavailable("INSERT returned no id".into()))?;
        let name = op.device_name.as_str();
        if let Some(old_id) = superseded.get(device_id) {
            let detail = format!("superseded by operation {op_id}");
            events.push(Ev::new(name, Some(*old_id), "operation_superseded", detail));
        }
        events.push(Ev::new(
            name,
            Some(op_id),
            "operation_scheduled",
            describe_operation(op),
        ));
        op_ids.push(op_id);
    }
    write_events(tx, now, &events).await?;
    Ok(op_ids)
}

// ---- listings ----

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
            let key_text = row.text("op_key_spec")?;
            Some(Operation {
                id,
                device_name: device.name.clone(),
                kind: row.parse("op_kind")?,
                auth_mode: row.parse("op_auth_mode")?,
                // Listings never carry secrets.
                auth_string: None,
                key: key_text
                    .parse::<KeySpec>()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
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

fn token_from_row(row: &Row) -> Result<ApiToken> {
    Ok(ApiToken {
        name: row.text("name")?,
        token_sha256: row.text("token_sha256")?,
        scope: row.parse("scope")?,
        created_at: row.time("created_at")?,
    })
}

// ---- the Store ----

#[async_trait::async_trait]
impl<B> Store for SqlStore<B> {
    async fn ping(&self) -> Result<()> {
        self.pool.fetch_optional(query("SELECT 1 AS one")).await?;
        Ok(())
    }

    async fn operation_counts(&self) -> Result<Vec<(OperationStatus, u64)>> {
        let rows = self
            .pool
            .fetch_all(query(
                "SELECT status, COUNT(*) AS n FROM operations GROUP BY status ORDER BY status",
            ))
            .await?;
        rows.iter()
            .map(|row| {
                let n = row.int("n")?;
                let n = u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("count {n}")))?;
                Ok((row.parse("status")?, n))
            })
            .collect()
    }

    async fn ensure_device(&self, name: &DeviceName, now: Timestamp) -> Result<Device> {
        let name = name.to_owned();
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let name: &DeviceName = &name;
                    ensure_device_in(tx, name, now).await?;
                    let sql = format!("{DEVICE_SELECT} WHERE name = $1");
                    let row = tx
                        .fetch_optional(query(sql).text(name.as_str()))
                        .await?
                        .ok_or_else(|| StoreError::NotFound(format!("device {name}")))?;
                    let device = device_from_row(&row)?;
                    Ok(device)
                })
            })
            .await
    }

    async fn device(&self, name: &DeviceName) -> Result<Option<Device>> {
        let sql = format!("{DEVICE_SELECT} WHERE name = $1");
        self.pool
            .fetch_optional(query(sql).text(name.as_str()))
            .await?
            .as_ref()
            .map(device_from_row)
            .transpose()
    }

    async fn set_require_sudi(
        &self,
        name: &DeviceName,
        require: bool,
        now: Timestamp,
    ) -> Result<()> {
        let name = name.to_owned();
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let name: &DeviceName = &name;
                    let updated = tx
                        .fetch_optional(
                            query(
                                "UPDATE devices SET require_sudi = $2, updated_at = $3 \
                                 WHERE name = $1 RETURNING id",
                            )
                            .text(name.as_str())
                            .bool(require)
                            .time(now),
                        )
                        .await?;
                    if updated.is_none() {
                        return Err(StoreError::NotFound(format!("device {name}")));
                    }
                    let detail = format!("require_sudi={require}");
                    write_event(
                        tx,
                        now,
                        Ev::new(name.as_str(), None, "device_updated", detail),
                    )
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn schedule(&self, op: NewOperation, now: Timestamp) -> Result<Operation> {
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let name = op.device_name.as_str();
                    let device_id = ensure_device_in(tx, &op.device_name, now).await?;
                    // Touching the device row locks it until commit on PostgreSQL, so two nodes
                    // scheduling for the same device take turns and the second supersedes the first
                    // instead of hitting the one-pending-operation index.
                    tx.execute(
                        query("UPDATE devices SET updated_at = $2 WHERE id = $1")
                            .int(device_id)
                            .time(now),
                    )
                    .await?;
                    let previous = tx
                        .fetch_optional(
                            query(
                                "SELECT id FROM operations \
                                 WHERE device_id = $1 AND status = 'pending'",
                            )
                            .int(device_id),
                        )
                        .await?;
                    let mut superseded = None;
                    if let Some(row) = previous {
                        let old_id = row.int("id")?;
                        if end_operation(tx, old_id, OperationStatus::Superseded, None, now)
                            .await?
                            .is_some()
                        {
                            superseded = Some(old_id);
                        }
                    }
                    let row = tx
                        .fetch_optional(
                            query(
                                "INSERT INTO operations (device_id, kind, auth_mode, auth_string, \
                                 key_spec, completes_by, status, created_at, updated_at) \
                                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) RETURNING id",
                            )
                            .int(device_id)
                            .text(op.kind.as_str())
                            .text(op.auth_mode.as_str())
                            .opt_text(stored_auth_string(&op))
                            .text(op.key.to_string())
                            .time(op.completes_by)
                            .time(now),
                        )
                        .await?
                        .ok_or_else(|| StoreError::Unavailable("INSERT returned no id".into()))?;
                    let op_id = row.int("id")?;
                    if let Some(old_id) = superseded {
                        let detail = format!("superseded by operation {op_id}");
                        let ev = Ev::new(name, Some(old_id), "operation_superseded", detail);
                        write_event(tx, now, ev).await?;
                    }
                    let ev = Ev::new(
                        name,
                        Some(op_id),
                        "operation_scheduled",
                        describe_operation(&op),
                    );
                    write_event(tx, now, ev).await?;
                    let scheduled = operation_by_id(tx, op_id)
                        .await?
                        .ok_or_else(|| StoreError::NotFound(format!("operation {op_id}")))?;
                    Ok(scheduled)
                })
            })
            .await
    }

    async fn schedule_many(&self, ops: &[NewOperation], now: Timestamp) -> Result<Vec<i64>> {
        let ops = ops.to_vec();
        self.pool
            .bulk_transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let ops: &[NewOperation] = &ops;
                    let mut ids = Vec::with_capacity(ops.len());
                    for chunk in ops.chunks(BATCH) {
                        ids.extend(schedule_chunk(tx, chunk, now).await?);
                    }
                    Ok(ids)
                })
            })
            .await
    }

    async fn note_attempt_failure(
        &self,
        op_id: i64,
        held_by: Option<&str>,
        cause: FailureCause,
        now: Timestamp,
    ) -> Result<()> {
        let fence = if held_by.is_some() {
            "AND claimed_by = $4"
        } else {
            ""
        };
        let mut q = query(format!(
            "UPDATE operations SET cause = $2, updated_at = $3 \
             WHERE id = $1 AND status = 'pending' {fence}"
        ))
        .int(op_id)
        .text(cause.as_str())
        .time(now);
        if let Some(claimant) = held_by {
            q = q.text(claimant);
        }
        self.pool.write(q, Durability::Relaxed).await.map(|_| ())
    }

    async fn cancel(&self, name: &DeviceName, now: Timestamp) -> Result<Option<Operation>> {
        let name = name.to_owned();
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let name: &DeviceName = &name;
                    let pending = tx
                        .fetch_optional(
                            query(
                                "SELECT o.id FROM operations o \
                                 JOIN devices d ON d.id = o.device_id \
                                 WHERE d.name = $1 AND o.status = 'pending'",
                            )
                            .text(name.as_str()),
                        )
                        .await?;
                    let Some(row) = pending else {
                        return Ok(None);
                    };
                    let op_id = row.int("id")?;
                    if end_operation(tx, op_id, OperationStatus::Cancelled, None, now)
                        .await?
                        .is_none()
                    {
                        return Ok(None);
                    }
                    let ev = Ev::new(
                        name.as_str(),
                        Some(op_id),
                        "operation_cancelled",
                        "cancelled by an administrator".into(),
                    );
                    write_event(tx, now, ev).await?;
                    let cancelled = operation_by_id(tx, op_id).await?;
                    Ok(cancelled)
                })
            })
            .await
    }

    async fn operation(&self, id: i64) -> Result<Option<Operation>> {
        let sql = format!("{OPERATION_SELECT} WHERE o.id = $1");
        self.pool
            .fetch_optional(query(sql).int(id))
            .await?
            .as_ref()
            .map(operation_from_row)
            .transpose()
    }

    async fn latest_operation(&self, name: &DeviceName) -> Result<Option<Operation>> {
        let sql = format!("{OPERATION_SELECT} WHERE d.name = $1 ORDER BY o.id DESC LIMIT 1");
        self.pool
            .fetch_optional(query(sql).text(name.as_str()))
            .await?
            .as_ref()
            .map(operation_from_row)
            .transpose()
    }

    async fn pending_operation(
        &self,
        name: &DeviceName,
        now: Timestamp,
    ) -> Result<Option<Operation>> {
        let Some(row) = self.pool.fetch_optional(pending_query(name)).await? else {
            return Ok(None);
        };
        self.still_pending(operation_from_row(&row)?, now).await
    }

    async fn device_and_pending_operation(
        &self,
        name: &DeviceName,
        now: Timestamp,
    ) -> Result<Option<(Device, Option<Operation>)>> {
        let device_query = query(format!("{DEVICE_SELECT} WHERE name = $1")).text(name.as_str());
        let (devices, pending) = self
            .pool
            .fetch_pair(device_query, pending_query(name))
            .await?;
        let Some(device) = devices.first() else {
            return Ok(None);
        };
        let device = device_from_row(device)?;
        let op = match pending.first() {
            Some(row) => self.still_pending(operation_from_row(row)?, now).await?,
            None => None,
        };
        Ok(Some((device, op)))
    }

    async fn expire_operations(&self, now: Timestamp) -> Result<u64> {
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let rows = tx
                        .fetch_all(
                            query(
                                "SELECT id, completes_by FROM operations \
                                 WHERE status = 'pending' AND completes_by <= $1 ORDER BY id",
                            )
                            .time(now),
                        )
                        .await?;
                    let cause = FailureCause::UserInitiatedRequestLate;
                    let mut expired = 0;
                    for row in rows {
                        let op_id = row.int("id")?;
                        let deadline = row.time("completes_by")?;
                        if let Some(ended) =
                            end_operation(tx, op_id, OperationStatus::TimedOut, Some(cause), now)
                                .await?
                        {
                            let detail = format!("deadline {} passed", show_time(deadline));
                            let ev = Ev::new(
                                &ended.device_name,
                                Some(op_id),
                                "operation_timed_out",
                                detail,
                            );
                            write_event(tx, now, ev).await?;
                            expired += 1;
                        }
                    }
                    Ok(expired)
                })
            })
            .await
    }

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

    async fn take_over(
        &self,
        op_id: i64,
        from: &str,
        claimant: &str,
        now: Timestamp,
        lease: Duration,
    ) -> Result<bool> {
        let claimed = self
            .claim_for_session(op_id, Some(from), claimant, now, lease, false)
            .await?;
        Ok(claimed.is_some())
    }

    async fn claim_for_session(
        &self,
        op_id: i64,
        from: Option<&str>,
        claimant: &str,
        now: Timestamp,
        lease: Duration,
        count_keygen: bool,
    ) -> Result<Option<u32>> {
        let until = later(now, lease);
        let from = from.map(str::to_owned);
        let claimant = claimant.to_owned();
        self.pool
            .transaction(Durability::Relaxed, move |tx| {
                Box::pin(async move {
                    let from: Option<&str> = from.as_deref();
                    let claimant: &str = &claimant;
                    let claimed = tx
                        .fetch_optional(
                            query(format!(
                                "UPDATE operations SET claimed_by = $2, claim_expires_at = $3, \
                                 updated_at = $4, keygen_attempts = keygen_attempts + $6 \
                                 WHERE id = $1 AND status = 'pending' AND (claimed_by IS NULL \
                                 OR claimed_by = $2 OR claim_expires_at IS NULL \
                                 OR claim_expires_at <= $4 \
                                 OR claimed_by = $5) \
                                 {RETURNING_DEVICE}, keygen_attempts",
                            ))
                            .int(op_id)
                            .text(claimant)
                            .time(until)
                            .time(now)
                            .opt_text(from)
                            .int(i64::from(count_keygen)),
                        )
                        .await?;
                    let Some(row) = claimed else {
                        return Ok(None);
                    };
                    let name = row.text("device_name")?;
                    let attempts = to_u32(row.int("keygen_attempts")?, "keygen_attempts")?;
                    let mut detail = format!("by={claimant} until={}", show_time(until));
                    if let Some(from) = from {
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
            })
            .await
    }

    async fn release(&self, op_id: i64, claimant: &str) -> Result<()> {
        self.pool
            .write(
                query(
                    "UPDATE operations SET claimed_by = NULL, claim_expires_at = NULL \
                     WHERE id = $1 AND claimed_by = $2",
                )
                .int(op_id)
                .text(claimant),
                Durability::Relaxed,
            )
            .await?;
        Ok(())
    }

    async fn renew_claims(&self, prefix: &str, now: Timestamp, lease: Duration) -> Result<u64> {
        // substr/length rather than LIKE: '_' in a node name is no wildcard.
        self.pool
            .write(
                query(
                    "UPDATE operations SET claim_expires_at = $2 \
                     WHERE status = 'pending' AND claimed_by IS NOT NULL \
                     AND substr(claimed_by, 1, length($1)) = $1",
                )
                .text(prefix)
                .time(later(now, lease)),
                Durability::Relaxed,
            )
            .await
    }

    async fn release_claims(&self, prefix: &str) -> Result<u64> {
        self.pool
            .write(
                query(
                    "UPDATE operations SET claimed_by = NULL, claim_expires_at = NULL \
                     WHERE claimed_by IS NOT NULL AND substr(claimed_by, 1, length($1)) = $1",
                )
                .text(prefix),
                Durability::Full,
            )
            .await
    }

    async fn count_keygen_attempt(&self, op_id: i64, now: Timestamp) -> Result<u32> {
        self.pool
            .transaction(Durability::Relaxed, move |tx| {
                Box::pin(async move {
                    let row = tx
                        .fetch_optional(
                            query(format!(
                                "UPDATE operations SET keygen_attempts = keygen_attempts + 1, \
                                 updated_at = $2 WHERE id = $1 AND status = 'pending' \
                                 {RETURNING_DEVICE}, keygen_attempts",
                            ))
                            .int(op_id)
                            .time(now),
                        )
                        .await?
                        .ok_or_else(|| not_pending(op_id))?;
                    let count = to_u32(row.int("keygen_attempts")?, "keygen_attempts")?;
                    let name = row.text("device_name")?;
                    let detail = format!("key generation request {count}");
                    write_event(
                        tx,
                        now,
                        Ev::new(&name, Some(op_id), "keygen_requested", detail),
                    )
                    .await?;
                    Ok(count)
                })
            })
            .await
    }

    async fn fail_operation(
        &self,
        op_id: i64,
        claimant: &str,
        cause: FailureCause,
        now: Timestamp,
    ) -> Result<()> {
        let claimant = claimant.to_owned();
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let failed = OperationStatus::Failed;
                    let ended = end_held(tx, op_id, &claimant, failed, Some(cause), now).await?;
                    let ev = Ev::new(
                        &ended.device_name,
                        Some(op_id),
                        "operation_failed",
                        format!("cause={cause}"),
                    );
                    write_event(tx, now, ev).await?;
                    Ok(())
                })
            })
            .await
    }

    async fn record_issued(
        &self,
        op_id: i64,
        claimant: &str,
        cert: NewCertificate,
        now: Timestamp,
        lease: Duration,
    ) -> Result<i64> {
        let claimant = claimant.to_owned();
        let until = later(now, lease);
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let claimant: &str = &claimant;
                    // The conditional update checks the operation is pending and still ours
                    // and, on PostgreSQL, locks its row until commit: a concurrent claim waits
                    // and then sees the renewed lease. An expired lease that is still ours is
                    // accepted: a lease running out lets another session claim, and only that
                    // claim (which changes `claimed_by`) makes issuing here unsafe.
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
                    let cert_id = insert_certificate(
                        tx,
                        device_id,
                        op_id,
                        &cert,
                        CertState::AwaitingConfirmation,
                        now,
                    )
                    .await?;
                    let detail = format!("certificate {cert_id} {}", describe_certificate(&cert));
                    let ev = Ev::new(&name, Some(op_id), "certificate_issued", detail);
                    write_event(tx, now, ev).await?;
                    Ok(cert_id)
                })
            })
            .await
    }

    async fn confirm_install(
        &self,
        op_id: i64,
        claimant: &str,
        cert_id: i64,
        now: Timestamp,
    ) -> Result<()> {
        let claimant = claimant.to_owned();
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(
                    async move { confirm_install_in(tx, op_id, &claimant, cert_id, now).await },
                )
            })
            .await
    }

    async fn confirm_install_with_attempt(
        &self,
        op_id: i64,
        claimant: &str,
        cert_id: i64,
        now: Timestamp,
        attempt: Attempt,
    ) -> Result<()> {
        let claimant = claimant.to_owned();
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    confirm_install_in(tx, op_id, &claimant, cert_id, now).await?;
                    record_attempt_in(tx, &attempt).await
                })
            })
            .await
    }

    async fn complete_fetch(
        &self,
        op_id: i64,
        claimant: &str,
        cert: Option<NewCertificate>,
        now: Timestamp,
    ) -> Result<()> {
        let claimant = claimant.to_owned();
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let success = OperationStatus::Success;
                    let ended = end_held(tx, op_id, &claimant, success, None, now).await?;
                    let name = ended.device_name.as_str();
                    let detail = match &cert {
                        Some(cert) => {
                            let cert_id = insert_certificate(
                                tx,
                                ended.device_id,
                                op_id,
                                cert,
                                CertState::Fetched,
                                now,
                            )
                            .await?;
                            format!("certificate {cert_id} {}", describe_certificate(cert))
                        }
                        None => "the phone returned no certificate".to_string(),
                    };
                    let ev = Ev::new(name, Some(op_id), "certificate_fetched", detail);
                    write_event(tx, now, ev).await?;
                    let ev = Ev::new(name, Some(op_id), "operation_succeeded", "fetch".into());
                    write_event(tx, now, ev).await?;
                    Ok(())
                })
            })
            .await
    }

    async fn complete_delete(&self, op_id: i64, claimant: &str, now: Timestamp) -> Result<()> {
        let claimant = claimant.to_owned();
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let success = OperationStatus::Success;
                    let ended = end_held(tx, op_id, &claimant, success, None, now).await?;
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
                        None => {
                            "the phone deleted its LSC; none was on record as installed".to_string()
                        }
                    };
                    let ev = Ev::new(name, Some(op_id), "certificate_deleted", detail);
                    write_event(tx, now, ev).await?;
                    let ev = Ev::new(name, Some(op_id), "operation_succeeded", "delete".into());
                    write_event(tx, now, ev).await?;
                    Ok(())
                })
            })
            .await
    }

    async fn current_certificate(&self, name: &DeviceName) -> Result<Option<CertificateRecord>> {
        let sql = format!(
            "{CERTIFICATE_SELECT} WHERE d.name = $1 AND c.state = 'installed' \
             ORDER BY c.id DESC LIMIT 1"
        );
        self.pool
            .fetch_optional(query(sql).text(name.as_str()))
            .await?
            .as_ref()
            .map(certificate_from_row)
            .transpose()
    }

    async fn certificates(&self, name: &DeviceName) -> Result<Vec<CertificateRecord>> {
        let sql = format!("{CERTIFICATE_SELECT} WHERE d.name = $1 ORDER BY c.id DESC");
        let rows = self.pool.fetch_all(query(sql).text(name.as_str())).await?;
        rows.iter().map(certificate_from_row).collect()
    }

    async fn certificate_by_fingerprint(
        &self,
        name: &DeviceName,
        fingerprint_sha256: &str,
    ) -> Result<Option<CertificateRecord>> {
        let sql = format!(
            "{CERTIFICATE_SELECT} WHERE d.name = $1 AND c.fingerprint_sha256 = $2 \
             ORDER BY c.id DESC LIMIT 1"
        );
        let q = query(sql).text(name.as_str()).text(fingerprint_sha256);
        self.pool
            .fetch_optional(q)
            .await?
            .as_ref()
            .map(certificate_from_row)
            .transpose()
    }

    async fn lock_state(&self, name: &DeviceName) -> Result<LockState> {
        let q = query("SELECT failed_auth_count, locked_until FROM devices WHERE name = $1")
            .text(name.as_str());
        match self.pool.fetch_optional(q).await? {
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

    async fn admit_auth_attempt(
        &self,
        name: &DeviceName,
        source_addr: &str,
        now: Timestamp,
        policy: LockoutPolicy,
    ) -> Result<AuthAdmission> {
        let until = later(now, policy.lock_duration);
        let name = name.to_owned();
        let source_addr = source_addr.to_owned();
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let name: &DeviceName = &name;
                    // One statement decides from the row as it is when the statement runs,
                    // so admissions on several nodes each see the previous one's count and
                    // none gets past the one that locks. A lock that has run out (the WHERE
                    // lets only those through) starts the count again.
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
                        .fetch_optional(
                            query("SELECT id FROM devices WHERE name = $1").text(name.as_str()),
                        )
                        .await?;
                    if known.is_none() {
                        return Err(StoreError::NotFound(format!("device {name}")));
                    }
                    write_event(tx, now, locked_attempt_event(name, &source_addr)).await?;
                    Ok(AuthAdmission::Locked)
                })
            })
            .await
    }

    async fn record_auth_failure(
        &self,
        name: &DeviceName,
        ticket: &AuthTicket,
        cause: &str,
        source_addr: &str,
        now: Timestamp,
    ) -> Result<()> {
        let detail = format!("cause={cause}; consecutive failures {}", ticket.failures);
        let Some(until) = ticket.locks_until else {
            let failed =
                Ev::new(name.as_str(), None, "auth_failed", detail).with_source(source_addr);
            return self
                .pool
                .write(failed.query(now), Durability::Full)
                .await
                .map(|_| ());
        };
        let locked_detail = format!(
            "locked until {} after {} consecutive failed authentications",
            show_time(until),
            ticket.failures
        );
        let name = name.as_str().to_owned();
        let source_addr = source_addr.to_owned();
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let failed = Ev::new(&name, None, "auth_failed", detail);
                    write_event(tx, now, failed.with_source(&source_addr)).await?;
                    let locked = Ev::new(&name, None, "device_locked", locked_detail);
                    write_event(tx, now, locked.with_source(&source_addr)).await
                })
            })
            .await
    }

    async fn record_locked_attempt(
        &self,
        name: &DeviceName,
        source_addr: &str,
        now: Timestamp,
    ) -> Result<()> {
        self.pool
            .write(
                locked_attempt_event(name, source_addr).query(now),
                Durability::Relaxed,
            )
            .await
            .map(|_| ())
    }

    async fn record_auth_success(
        &self,
        name: &DeviceName,
        ticket: Option<&AuthTicket>,
        now: Timestamp,
    ) -> Result<()> {
        let name = name.to_owned();
        // Only the lock this very admission set is lifted: its attempt brought the right secret.
        let own_lock = ticket.and_then(|t| t.locks_until);
        self.pool
            .transaction(Durability::Relaxed, move |tx| {
                Box::pin(async move {
                    let name: &DeviceName = &name;
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
                        let ev = Ev::new(
                            name.as_str(),
                            None,
                            "auth_failures_reset",
                            "authenticated; failure count reset".into(),
                        );
                        write_event(tx, now, ev).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn unlock(&self, name: &DeviceName, now: Timestamp) -> Result<()> {
        let name = name.to_owned();
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let name: &DeviceName = &name;
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
                        return Err(StoreError::NotFound(format!("device {name}")));
                    }
                    let ev = Ev::new(
                        name.as_str(),
                        None,
                        "device_unlocked",
                        "lock and failure count cleared".into(),
                    );
                    write_event(tx, now, ev).await?;
                    Ok(())
                })
            })
            .await
    }

    async fn record_attempt(&self, attempt: Attempt) -> Result<()> {
        self.pool
            .transaction(Durability::Relaxed, move |tx| {
                Box::pin(async move { record_attempt_in(tx, &attempt).await })
            })
            .await
    }

    async fn attempts(&self, name: &DeviceName, limit: u32) -> Result<Vec<Attempt>> {
        let mut q = query(format!(
            "{ATTEMPT_SELECT} WHERE device_name = $1 ORDER BY id DESC"
        ))
        .text(name.as_str());
        if limit > 0 {
            q = q.limit(limit);
        }
        let rows = self.pool.fetch_all(q).await?;
        rows.iter().map(attempt_from_row).collect()
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
        let ev = Ev {
            device: device_name.map(DeviceName::as_str),
            operation: operation_id,
            kind,
            source: source_addr,
            detail: detail.to_string(),
        };
        self.pool
            .write(ev.query(now), Durability::Relaxed)
            .await
            .map(|_| ())
    }

    async fn events(&self, filter: EventFilter) -> Result<Vec<Event>> {
        // Only the conditions asked for are in the SQL, so each shape of query gets a plan
        // that can use its index.
        let mut q = query(format!("{EVENT_SELECT} WHERE 1 = 1"));
        if let Some(name) = filter.device_name {
            q = q.and("device_name =", Arg::Text(Some(name)));
        }
        if let Some(since) = filter.since {
            q = q.and("at >=", Arg::Int(Some(to_millis(since))));
        }
        if let Some(after) = filter.after_id {
            q = q.and("id >", Arg::Int(Some(after)));
        }
        q.push_sql(" ORDER BY id");
        if filter.limit > 0 {
            q = q.limit(filter.limit);
        }
        let rows = self.pool.fetch_all(q).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn list_devices(&self, filter: &DeviceFilter) -> Result<Vec<DeviceSummary>> {
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
        let rows = self.pool.fetch_all(q).await?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn create_token(&self, token: &ApiToken, now: Timestamp) -> Result<()> {
        let token = token.to_owned();
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let token: &ApiToken = &token;
                    let inserted = tx
                        .fetch_optional(
                            query(
                                "INSERT INTO api_tokens (name, token_sha256, scope, created_at) \
                                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING id",
                            )
                            .text(&token.name)
                            .text(&token.token_sha256)
                            .text(token.scope.as_str())
                            .time(token.created_at),
                        )
                        .await?;
                    if inserted.is_none() {
                        return Err(StoreError::Conflict(format!(
                            "a token named {:?} already exists",
                            token.name
                        )));
                    }
                    write_event(tx, now, token_event(token, "token_created")).await?;
                    Ok(())
                })
            })
            .await
    }

    async fn bootstrap_token(&self, token: &ApiToken, now: Timestamp) -> Result<bool> {
        let token = token.to_owned();
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let token: &ApiToken = &token;
                    let inserted = tx
                        .fetch_optional(
                            query(
                                "INSERT INTO api_tokens (name, token_sha256, scope, created_at) \
                                 SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM api_tokens) \
                                 ON CONFLICT DO NOTHING RETURNING id",
                            )
                            .text(&token.name)
                            .text(&token.token_sha256)
                            .text(token.scope.as_str())
                            .time(token.created_at),
                        )
                        .await?;
                    if inserted.is_none() {
                        return Ok(false);
                    }
                    write_event(tx, now, token_event(token, "token_created")).await?;
                    Ok(true)
                })
            })
            .await
    }

    async fn token_by_hash(&self, token_sha256: &str) -> Result<Option<ApiToken>> {
        self.pool
            .fetch_optional(
                query(
                    "SELECT name, token_sha256, scope, created_at FROM api_tokens \
                     WHERE token_sha256 = $1",
                )
                .text(token_sha256),
            )
            .await?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    async fn revoke_token(&self, name: &str, now: Timestamp) -> Result<bool> {
        let name = name.to_owned();
        self.pool
            .transaction(Durability::Full, move |tx| {
                Box::pin(async move {
                    let name: &str = &name;
                    let deleted = tx
                        .fetch_optional(
                            query(
                                "DELETE FROM api_tokens WHERE name = $1 \
                                 RETURNING name, token_sha256, scope, created_at",
                            )
                            .text(name),
                        )
                        .await?;
                    let Some(row) = deleted else {
                        return Ok(false);
                    };
                    let token = token_from_row(&row)?;
                    write_event(tx, now, token_event(&token, "token_revoked")).await?;
                    Ok(true)
                })
            })
            .await
    }

    async fn tokens(&self) -> Result<Vec<ApiToken>> {
        let rows = self
            .pool
            .fetch_all(query(
                "SELECT name, token_sha256, scope, created_at FROM api_tokens ORDER BY name",
            ))
            .await?;
        rows.iter().map(token_from_row).collect()
    }
}

// ---- the adapter over the two engines ----

/// The connections of either engine.
pub(crate) enum Pool {
    /// capf's own SQLite threads: reads on a few connections, every write transaction on the
    /// one writer, which commits whatever queued up together (see `sqlite_engine.rs`).
    Sqlite(Engine),
    Postgres(PgPool),
}

/// What a committed write must survive before the caller goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// A power loss: the commit waits for the disk. For everything someone outside is told
    /// about (a certificate sent to a phone, an installed certificate, an admin's change) and
    /// every ended operation.
    Full,
    /// A crash of capf (the operating system still writes it out), not a power loss of the
    /// database host, which may lose the last of these commits. For bookkeeping inside a
    /// session: claims, key-generation counts, attempt history. The log is written in order,
    /// so a lost relaxed commit takes only later commits with it, never leaves a gap, and
    /// the next full commit makes every earlier one durable.
    Relaxed,
}

/// An open write transaction, handed to a transaction body by [`Pool::transaction`].
pub(crate) enum Tx<'c> {
    /// The SQLite writer's connection, inside the transaction the writer opened.
    Sqlite(&'c mut rusqlite::Connection),
    Postgres(Transaction<'static, Postgres>),
}

/// A row of either engine, read by column name.
pub(crate) enum Row {
    Sqlite(LocalRow),
    Postgres(PgRow),
}

/// A SQLite row, copied out of the statement so it can cross back from the engine's thread.
pub(crate) struct LocalRow {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

/// A bind value. Only the types the schema uses.
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(bool),
}

/// SQL text with `$N` placeholders and its arguments in order.
pub(crate) struct Query {
    sql: Cow<'static, str>,
    args: Vec<Arg>,
}

fn query(sql: impl Into<Cow<'static, str>>) -> Query {
    Query {
        sql: sql.into(),
        args: Vec::new(),
    }
}

impl Query {
    fn int(mut self, v: i64) -> Self {
        self.args.push(Arg::Int(Some(v)));
        self
    }

    fn opt_int(mut self, v: Option<i64>) -> Self {
        self.args.push(Arg::Int(v));
        self
    }

    fn text(mut self, v: impl Into<String>) -> Self {
        self.args.push(Arg::Text(Some(v.into())));
        self
    }

    fn opt_text(mut self, v: Option<&str>) -> Self {
        self.args.push(Arg::Text(v.map(str::to_string)));
        self
    }

    fn bool(mut self, v: bool) -> Self {
        self.args.push(Arg::Bool(v));
        self
    }

    fn time(self, t: Timestamp) -> Self {
        self.int(to_millis(t))
    }

    fn opt_time(self, t: Option<Timestamp>) -> Self {
        self.opt_int(t.map(to_millis))
    }

    fn push_sql(&mut self, sql: &str) {
        self.sql.to_mut().push_str(sql);
    }

    /// Appends ` AND <condition> $N` binding `arg` as the next parameter.
    fn and(mut self, condition: &str, arg: Arg) -> Self {
        let n = self.args.len() + 1;
        self.push_sql(&format!(" AND {condition} ${n}"));
        self.args.push(arg);
        self
    }

    fn limit(mut self, limit: u32) -> Self {
        let n = self.args.len() + 1;
        self.push_sql(&format!(" LIMIT ${n}"));
        self.args.push(Arg::Int(Some(i64::from(limit))));
        self
    }

    fn postgres(&self) -> sqlx::query::Query<'_, Postgres, PgArguments> {
        self.args
            .iter()
            .fold(sqlx::query(&self.sql), |q, arg| match arg {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_deref()),
                Arg::Bool(v) => q.bind(*v),
            })
    }

    /// Runs the statement on a SQLite connection to completion and returns its rows.
    fn run_sqlite(&self, conn: &rusqlite::Connection) -> Result<Vec<Row>> {
        let sql = sqlite_placeholders(&self.sql);
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| from_sqlite(&e))?;
        if stmt.parameter_count() != self.args.len() {
            return Err(StoreError::Unavailable(format!(
                "statement takes {} parameters, given {}: {}",
                stmt.parameter_count(),
                self.args.len(),
                self.sql
            )));
        }
        for (i, arg) in self.args.iter().enumerate() {
            let bound = match arg {
                Arg::Int(v) => stmt.raw_bind_parameter(i + 1, v),
                Arg::Text(v) => stmt.raw_bind_parameter(i + 1, v.as_deref()),
                Arg::Bool(v) => stmt.raw_bind_parameter(i + 1, v),
            };
            bound.map_err(|e| from_sqlite(&e))?;
        }
        let columns: Arc<[String]> = stmt.column_names().into_iter().map(String::from).collect();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| from_sqlite(&e))? {
            let values = (0..columns.len())
                .map(|i| row.get::<_, Value>(i))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| from_sqlite(&e))?;
            out.push(Row::Sqlite(LocalRow {
                columns: Arc::clone(&columns),
                values,
            }));
        }
        Ok(out)
    }
}

/// PostgreSQL's `$N` placeholders as SQLite's `?N`, which bind by number; SQLite reads `$N`
/// as a name, and binding by name scans the statement's parameter list every time.
fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// How long one PostgreSQL statement (or a begin or commit) may take. A database that stops
/// answering without closing the connection (a network partition, a hung server) would
/// otherwise hold a phone's session or an API request until TCP gives up, many minutes later;
/// past this the store reports `Unavailable` and the caller ends cleanly (the transaction
/// rolls back when dropped). SQLite is a local file: its engine bounds the wait for the writer
/// instead.
const STATEMENT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

async fn within<T>(
    work: impl std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
) -> Result<T> {
    match tokio::time::timeout(STATEMENT_DEADLINE, work).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer from the database within {} s",
            STATEMENT_DEADLINE.as_secs()
        ))),
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Pool {
    /// Runs `body` in one write transaction and commits it when the body succeeds; an error
    /// from the body rolls its changes back.
    ///
    /// The body is written once for both engines. On PostgreSQL it runs here, each statement
    /// awaiting the server. On SQLite it runs on the writer thread, where every statement
    /// completes at once, so the body never waits: the whole transaction is one hand-off.
    async fn transaction<T, F>(&self, durability: Durability, body: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t, 'c> FnOnce(&'t mut Tx<'c>) -> BoxFuture<'t, Result<T>> + Send + 'static,
    {
        self.run_transaction(durability, false, body).await
    }

    /// [`Pool::transaction`] for a transaction of thousands of statements (a bulk import):
    /// SQLite's writer runs it on its own rather than grouped with sessions' writes.
    async fn bulk_transaction<T, F>(&self, durability: Durability, body: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t, 'c> FnOnce(&'t mut Tx<'c>) -> BoxFuture<'t, Result<T>> + Send + 'static,
    {
        self.run_transaction(durability, true, body).await
    }

    async fn run_transaction<T, F>(&self, durability: Durability, alone: bool, body: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t, 'c> FnOnce(&'t mut Tx<'c>) -> BoxFuture<'t, Result<T>> + Send + 'static,
    {
        match self {
            Pool::Sqlite(engine) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let sync = match durability {
                    Durability::Full => SyncMode::Full,
                    Durability::Relaxed => SyncMode::Normal,
                };
                engine.write(Box::new(SqliteWrite {
                    sync,
                    alone,
                    body: Some(body),
                    result: None,
                    reply,
                }));
                answer.await.map_err(|_| {
                    StoreError::Unavailable("the SQLite writer stopped before answering".into())
                })?
            }
            Pool::Postgres(p) => {
                let mut tx = Tx::Postgres(within(p.begin()).await?);
                if durability == Durability::Relaxed {
                    tx.execute(query("SET LOCAL synchronous_commit TO OFF"))
                        .await?;
                }
                let value = body(&mut tx).await?;
                if let Tx::Postgres(tx) = tx {
                    within(tx.commit()).await?;
                }
                Ok(value)
            }
        }
    }

    /// One statement in a transaction of its own.
    async fn write(&self, q: Query, durability: Durability) -> Result<u64> {
        self.transaction(durability, move |tx| {
            Box::pin(async move { tx.execute(q).await })
        })
        .await
    }

    async fn fetch_optional(&self, q: Query) -> Result<Option<Row>> {
        Ok(self.fetch_all(q).await?.into_iter().next())
    }

    /// Two reads in one hand-off to a SQLite reader (each statement sees what is committed
    /// when it runs, as two separate reads would); on PostgreSQL, one after the other.
    async fn fetch_pair(&self, first: Query, second: Query) -> Result<(Vec<Row>, Vec<Row>)> {
        match self {
            Pool::Sqlite(engine) => {
                engine
                    .read(move |conn| Ok((first.run_sqlite(conn)?, second.run_sqlite(conn)?)))
                    .await
            }
            Pool::Postgres(_) => Ok((self.fetch_all(first).await?, self.fetch_all(second).await?)),
        }
    }

    async fn fetch_all(&self, q: Query) -> Result<Vec<Row>> {
        match self {
            Pool::Sqlite(engine) => engine.read(move |conn| q.run_sqlite(conn)).await,
            Pool::Postgres(p) => Ok(within(q.postgres().fetch_all(p))
                .await?
                .into_iter()
                .map(Row::Postgres)
                .collect()),
        }
    }
}

/// A transaction body queued for the SQLite writer, and where its answer goes.
struct SqliteWrite<T, F> {
    sync: SyncMode,
    alone: bool,
    body: Option<F>,
    result: Option<Result<T>>,
    reply: tokio::sync::oneshot::Sender<Result<T>>,
}

impl<T, F> WriteJob for SqliteWrite<T, F>
where
    T: Send + 'static,
    F: for<'t, 'c> FnOnce(&'t mut Tx<'c>) -> BoxFuture<'t, Result<T>> + Send + 'static,
{
    fn sync(&self) -> SyncMode {
        self.sync
    }

    fn alone(&self) -> bool {
        self.alone
    }

    fn run(&mut self, conn: &mut rusqlite::Connection) -> bool {
        let Some(body) = self.body.take() else {
            return false;
        };
        let mut tx = Tx::Sqlite(conn);
        // A bug in a body must not take the writer thread (and every later write) with it.
        let result =
            catch_unwind(AssertUnwindSafe(|| run_ready(body(&mut tx)))).unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "a write transaction panicked".into(),
                ))
            });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<()>) {
        let answer = match self.result {
            // The body's own error, whatever became of the batch.
            Some(Err(e)) => Err(e),
            Some(Ok(value)) => committed.map(|()| value),
            None => Err(committed
                .err()
                .unwrap_or_else(|| StoreError::Unavailable("the write did not run".into()))),
        };
        // The caller may have given up (its session ended); the change stands regardless,
        // as a commit whose answer was lost would on any database.
        let _ = self.reply.send(answer);
    }
}

/// Polls a SQLite transaction body to its end. Its statements run synchronously on the
/// writer's connection, so it is ready at the first poll; a body that waits on anything else
/// is a bug, reported as an error rather than blocking the writer.
fn run_ready<T>(body: impl Future<Output = Result<T>>) -> Result<T> {
    let mut body = std::pin::pin!(body);
    let mut cx = Context::from_waker(Waker::noop());
    match body.as_mut().poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(StoreError::Unavailable(
            "a SQLite transaction body waited on something other than its connection".into(),
        )),
    }
}

impl Tx<'_> {
    async fn fetch_optional(&mut self, q: Query) -> Result<Option<Row>> {
        Ok(self.fetch_all(q).await?.into_iter().next())
    }

    async fn fetch_all(&mut self, q: Query) -> Result<Vec<Row>> {
        match self {
            Tx::Sqlite(conn) => q.run_sqlite(conn),
            Tx::Postgres(tx) => Ok(within(q.postgres().fetch_all(&mut **tx))
                .await?
                .into_iter()
                .map(Row::Postgres)
                .collect()),
        }
    }

    async fn execute(&mut self, q: Query) -> Result<u64> {
        match self {
            Tx::Sqlite(conn) => {
                q.run_sqlite(conn)?;
                Ok(conn.changes())
            }
            Tx::Postgres(tx) => Ok(within(q.postgres().execute(&mut **tx))
                .await?
                .rows_affected()),
        }
    }
}

impl LocalRow {
    fn value(&self, column: &str) -> Result<&Value> {
        self.columns
            .iter()
            .position(|c| c == column)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| StoreError::Corrupt(format!("no column {column}")))
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Integer(v) => Ok(Some(*v)),
            other => Err(wrong_type(column, "an integer", other)),
        }
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            other => Err(wrong_type(column, "text", other)),
        }
    }
}

fn wrong_type(column: &str, wanted: &str, got: &Value) -> StoreError {
    StoreError::Corrupt(format!(
        "column {column} holds {:?}, expected {wanted}",
        got.data_type()
    ))
}

fn null_in(column: &str) -> StoreError {
    StoreError::Corrupt(format!("column {column} is NULL"))
}

impl Row {
    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        match self {
            Row::Sqlite(r) => r.opt_int(column),
            Row::Postgres(r) => Ok(sqlx::Row::try_get(r, column)?),
        }
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        match self {
            Row::Sqlite(r) => r.opt_text(column),
            Row::Postgres(r) => Ok(sqlx::Row::try_get(r, column)?),
        }
    }

    fn int(&self, column: &str) -> Result<i64> {
        self.opt_int(column)?.ok_or_else(|| null_in(column))
    }

    fn text(&self, column: &str) -> Result<String> {
        self.opt_text(column)?.ok_or_else(|| null_in(column))
    }

    fn bool(&self, column: &str) -> Result<bool> {
        match self {
            // SQLite has no boolean type: the schema stores 0 and 1.
            Row::Sqlite(r) => Ok(r.opt_int(column)?.ok_or_else(|| null_in(column))? != 0),
            Row::Postgres(r) => Ok(sqlx::Row::try_get(r, column)?),
        }
    }

    fn time(&self, column: &str) -> Result<Timestamp> {
        from_millis(self.int(column)?)
    }

    fn opt_time(&self, column: &str) -> Result<Option<Timestamp>> {
        self.opt_int(column)?.map(from_millis).transpose()
    }

    /// A text enum column; unknown text is a corrupt row.
    fn parse<T: FromStr<Err = ParseError>>(&self, column: &str) -> Result<T> {
        parse_column(column, &self.text(column)?)
    }

    fn opt_parse<T: FromStr<Err = ParseError>>(&self, column: &str) -> Result<Option<T>> {
        self.opt_text(column)?
            .map(|s| parse_column(column, &s))
            .transpose()
    }
}

fn parse_column<T: FromStr<Err = ParseError>>(column: &str, text: &str) -> Result<T> {
    text.parse()
        .map_err(|e: ParseError| StoreError::Corrupt(format!("column {column}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::sqlite_placeholders;

    #[test]
    fn placeholders_become_numbered() {
        assert_eq!(
            sqlite_placeholders("UPDATE t SET a = $2 WHERE id = $1 AND b = $10"),
            "UPDATE t SET a = ?2 WHERE id = ?1 AND b = ?10"
        );
        assert_eq!(sqlite_placeholders("SELECT '$' || x"), "SELECT '$' || x");
    }
}
