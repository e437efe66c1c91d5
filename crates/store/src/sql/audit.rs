//! The audit trail and the attempt history: writing events inside a change's transaction,
//! and reading both back.

use capf_model::device::DeviceName;

use super::adapter::{in_tx, query, tuples, Arg, Durability, Pool, Query, Row, Tx, BATCH};
use super::rows::{device_name, to_u32};
use crate::error::Result;
use crate::records::{to_millis, Attempt, Event, EventFilter, Timestamp};

const ATTEMPT_SELECT: &str = "SELECT device_name, operation_id, session_id, source_addr, \
     started_at, ended_at, outcome, detail FROM attempts";

const EVENT_SELECT: &str =
    "SELECT id, at, device_name, operation_id, kind, source_addr, detail FROM events";

/// One audit record to write. `detail` is built by the store from non-secret fields only:
/// an authentication string is never formatted into it.
pub(super) struct Ev<'a> {
    pub(super) device: Option<&'a str>,
    pub(super) operation: Option<i64>,
    pub(super) kind: &'a str,
    pub(super) source: Option<&'a str>,
    pub(super) detail: String,
}

impl<'a> Ev<'a> {
    pub(super) fn new(
        device: &'a str,
        operation: Option<i64>,
        kind: &'a str,
        detail: String,
    ) -> Self {
        Ev {
            device: Some(device),
            operation,
            kind,
            source: None,
            detail,
        }
    }

    pub(super) fn with_source(mut self, source: &'a str) -> Self {
        self.source = Some(source);
        self
    }

    pub(super) fn query(&self, at: Timestamp) -> Query {
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

pub(super) async fn write_event(tx: &mut Tx<'_>, at: Timestamp, ev: Ev<'_>) -> Result<()> {
    tx.execute(ev.query(at)).await.map(|_| ())
}

/// Writes many audit events with multi-row inserts.
pub(super) async fn write_events(tx: &mut Tx<'_>, at: Timestamp, events: &[Ev<'_>]) -> Result<()> {
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

/// Appends an attempt and updates the device's last attempt.
pub(super) async fn record_attempt_in(tx: &mut Tx<'_>, attempt: &Attempt) -> Result<()> {
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

pub(super) async fn record_attempt(pool: &Pool, attempt: Attempt) -> Result<()> {
    in_tx!(pool, Durability::Relaxed, [], |tx| record_attempt_in(
        tx, &attempt
    )
    .await)
}

pub(super) async fn attempts(pool: &Pool, name: &DeviceName, limit: u32) -> Result<Vec<Attempt>> {
    let mut q = query(format!(
        "{ATTEMPT_SELECT} WHERE device_name = $1 ORDER BY id DESC"
    ))
    .text(name.as_str());
    if limit > 0 {
        q = q.limit(limit);
    }
    let rows = pool.fetch_all(q).await?;
    rows.iter().map(attempt_from_row).collect()
}

pub(super) async fn audit(pool: &Pool, ev: Ev<'_>, now: Timestamp) -> Result<()> {
    pool.write(ev.query(now), Durability::Relaxed)
        .await
        .map(|_| ())
}

pub(super) async fn events(pool: &Pool, filter: EventFilter) -> Result<Vec<Event>> {
    // Only the conditions asked for are in the SQL, so each shape of query gets a plan that
    // can use its index.
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
    let rows = pool.fetch_all(q).await?;
    rows.iter().map(event_from_row).collect()
}
