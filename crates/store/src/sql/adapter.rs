//! The only place that knows there are two engines: `Pool` (the connections), `Tx` (an open
//! write transaction), `Query` (SQL text and its arguments) and `Row` (a result row read by
//! column name), and [`in_tx!`], the one way a store method runs a write transaction.

use std::borrow::Cow;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rusqlite::types::Value;
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::{Postgres, Transaction};

use capf_model::operation::ParseError;

use crate::error::{Corrupt, Result, StoreError, Unavailable};
use crate::records::{from_millis, to_millis, Timestamp};
use crate::sqlite_engine::{from_sqlite, Engine, SyncMode, WriteJob};

/// Runs `body` as one write transaction on `pool` and awaits its result:
/// `in_tx!(pool, Durability::Full, [name, claimant], |tx| { ... })`.
///
/// The body must not borrow from the caller (on SQLite it runs on the writer thread), so the
/// values named in `[...]` are copied first (`to_owned`); inside the body each name is a
/// reference to its copy. Anything else the body uses is moved into it.
macro_rules! in_tx {
    ($pool:expr, $durability:expr, [$($owned:ident),* $(,)?], |$tx:ident| $body:expr) => {{
        $(let $owned = $owned.to_owned();)*
        $pool
            .transaction($durability, move |$tx| {
                Box::pin(async move {
                    $(let $owned = &$owned;)*
                    $body
                })
            })
            .await
    }};
}
pub(super) use in_tx;

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
    pub(super) args: Vec<Arg>,
}

pub(super) fn query(sql: impl Into<Cow<'static, str>>) -> Query {
    Query {
        sql: sql.into(),
        args: Vec::new(),
    }
}

impl Query {
    pub(super) fn int(mut self, v: i64) -> Self {
        self.args.push(Arg::Int(Some(v)));
        self
    }

    pub(super) fn opt_int(mut self, v: Option<i64>) -> Self {
        self.args.push(Arg::Int(v));
        self
    }

    pub(super) fn text(mut self, v: impl Into<String>) -> Self {
        self.args.push(Arg::Text(Some(v.into())));
        self
    }

    pub(super) fn opt_text(mut self, v: Option<&str>) -> Self {
        self.args.push(Arg::Text(v.map(str::to_string)));
        self
    }

    pub(super) fn bool(mut self, v: bool) -> Self {
        self.args.push(Arg::Bool(v));
        self
    }

    pub(super) fn time(self, t: Timestamp) -> Self {
        self.int(to_millis(t))
    }

    pub(super) fn opt_time(self, t: Option<Timestamp>) -> Self {
        self.opt_int(t.map(to_millis))
    }

    pub(super) fn push_sql(&mut self, sql: &str) {
        self.sql.to_mut().push_str(sql);
    }

    /// Appends ` AND <condition> $N` binding `arg` as the next parameter.
    pub(super) fn and(mut self, condition: &str, arg: Arg) -> Self {
        let n = self.args.len() + 1;
        self.push_sql(&format!(" AND {condition} ${n}"));
        self.args.push(arg);
        self
    }

    pub(super) fn limit(mut self, limit: u32) -> Self {
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
        let mut stmt = conn.prepare_cached(&sql).map_err(from_sqlite)?;
        if stmt.parameter_count() != self.args.len() {
            return Err(Unavailable::Parameters {
                expected: stmt.parameter_count(),
                given: self.args.len(),
                sql: self.sql.to_string(),
            }
            .into());
        }
        for (i, arg) in self.args.iter().enumerate() {
            let bound = match arg {
                Arg::Int(v) => stmt.raw_bind_parameter(i + 1, v),
                Arg::Text(v) => stmt.raw_bind_parameter(i + 1, v.as_deref()),
                Arg::Bool(v) => stmt.raw_bind_parameter(i + 1, v),
            };
            bound.map_err(from_sqlite)?;
        }
        let columns: Arc<[String]> = stmt.column_names().into_iter().map(String::from).collect();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(from_sqlite)? {
            let values = (0..columns.len())
                .map(|i| row.get::<_, Value>(i))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(from_sqlite)?;
            out.push(Row::Sqlite(LocalRow {
                columns: Arc::clone(&columns),
                values,
            }));
        }
        Ok(out)
    }
}

/// Rows per multi-row statement. Small on purpose: sqlx's SQLite driver resolves each bound
/// `$N` by scanning the statement's parameter names, so binding costs grow with the square of
/// the parameters per statement (500 rows of 9 columns spent 70% of a bulk import there);
/// 64 rows keep every statement under 600 parameters while 100,000 rows still take only a
/// few thousand statements.
pub(super) const BATCH: usize = 64;

/// `($1, $2), ($3, $4), ...`: `rows` tuples of `width` placeholders, numbered from `first`.
pub(super) fn tuples(rows: usize, width: usize, first: usize) -> String {
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
pub(super) fn placeholders(n: usize, first: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
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
const STATEMENT_DEADLINE: Duration = Duration::from_secs(10);

async fn within<T>(
    work: impl std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
) -> Result<T> {
    match tokio::time::timeout(STATEMENT_DEADLINE, work).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Unavailable::TimedOut(STATEMENT_DEADLINE).into()),
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
    pub(super) async fn transaction<T, F>(&self, durability: Durability, body: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'t, 'c> FnOnce(&'t mut Tx<'c>) -> BoxFuture<'t, Result<T>> + Send + 'static,
    {
        self.run_transaction(durability, false, body).await
    }

    /// [`Pool::transaction`] for a transaction of thousands of statements (a bulk import):
    /// SQLite's writer runs it on its own rather than grouped with sessions' writes.
    pub(super) async fn bulk_transaction<T, F>(&self, durability: Durability, body: F) -> Result<T>
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
                    StoreError::from(Unavailable::Stopped(
                        "the SQLite writer stopped before answering",
                    ))
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
    pub(super) async fn write(&self, q: Query, durability: Durability) -> Result<u64> {
        self.transaction(durability, move |tx| {
            Box::pin(async move { tx.execute(q).await })
        })
        .await
    }

    pub(super) async fn fetch_optional(&self, q: Query) -> Result<Option<Row>> {
        Ok(self.fetch_all(q).await?.into_iter().next())
    }

    /// Two reads in one hand-off to a SQLite reader (each statement sees what is committed
    /// when it runs, as two separate reads would); on PostgreSQL, one after the other.
    pub(super) async fn fetch_pair(
        &self,
        first: Query,
        second: Query,
    ) -> Result<(Vec<Row>, Vec<Row>)> {
        match self {
            Pool::Sqlite(engine) => {
                engine
                    .read(move |conn| Ok((first.run_sqlite(conn)?, second.run_sqlite(conn)?)))
                    .await
            }
            Pool::Postgres(_) => Ok((self.fetch_all(first).await?, self.fetch_all(second).await?)),
        }
    }

    pub(super) async fn fetch_all(&self, q: Query) -> Result<Vec<Row>> {
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
        let result = catch_unwind(AssertUnwindSafe(|| run_ready(body(&mut tx))))
            .unwrap_or_else(|_| Err(Unavailable::Stopped("a write transaction panicked").into()));
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
                .unwrap_or_else(|| Unavailable::Stopped("the write did not run").into())),
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
        Poll::Pending => Err(Unavailable::Stopped(
            "a SQLite transaction body waited on something other than its connection",
        )
        .into()),
    }
}

impl Tx<'_> {
    pub(super) async fn fetch_optional(&mut self, q: Query) -> Result<Option<Row>> {
        Ok(self.fetch_all(q).await?.into_iter().next())
    }

    pub(super) async fn fetch_all(&mut self, q: Query) -> Result<Vec<Row>> {
        match self {
            Tx::Sqlite(conn) => q.run_sqlite(conn),
            Tx::Postgres(tx) => Ok(within(q.postgres().fetch_all(&mut **tx))
                .await?
                .into_iter()
                .map(Row::Postgres)
                .collect()),
        }
    }

    pub(super) async fn execute(&mut self, q: Query) -> Result<u64> {
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
            .ok_or_else(|| Corrupt::NoColumn(column.to_string()).into())
    }

    pub(super) fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Integer(v) => Ok(Some(*v)),
            other => Err(wrong_type(column, "an integer", other)),
        }
    }

    pub(super) fn opt_text(&self, column: &str) -> Result<Option<String>> {
        match self.value(column)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            other => Err(wrong_type(column, "text", other)),
        }
    }
}

fn wrong_type(column: &str, wanted: &'static str, got: &Value) -> StoreError {
    StoreError::Corrupt(Corrupt::WrongType {
        column: column.to_string(),
        found: format!("{:?}", got.data_type()),
        wanted,
    })
}

fn null_in(column: &str) -> StoreError {
    StoreError::Corrupt(Corrupt::Null(column.to_string()))
}

impl Row {
    pub(super) fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        match self {
            Row::Sqlite(r) => r.opt_int(column),
            Row::Postgres(r) => Ok(sqlx::Row::try_get(r, column)?),
        }
    }

    pub(super) fn opt_text(&self, column: &str) -> Result<Option<String>> {
        match self {
            Row::Sqlite(r) => r.opt_text(column),
            Row::Postgres(r) => Ok(sqlx::Row::try_get(r, column)?),
        }
    }

    pub(super) fn int(&self, column: &str) -> Result<i64> {
        self.opt_int(column)?.ok_or_else(|| null_in(column))
    }

    pub(super) fn text(&self, column: &str) -> Result<String> {
        self.opt_text(column)?.ok_or_else(|| null_in(column))
    }

    pub(super) fn bool(&self, column: &str) -> Result<bool> {
        match self {
            // SQLite has no boolean type: the schema stores 0 and 1.
            Row::Sqlite(r) => Ok(r.opt_int(column)?.ok_or_else(|| null_in(column))? != 0),
            Row::Postgres(r) => Ok(sqlx::Row::try_get(r, column)?),
        }
    }

    pub(super) fn time(&self, column: &str) -> Result<Timestamp> {
        from_millis(self.int(column)?)
    }

    pub(super) fn opt_time(&self, column: &str) -> Result<Option<Timestamp>> {
        self.opt_int(column)?.map(from_millis).transpose()
    }

    /// A text enum column; unknown text is a corrupt row.
    pub(super) fn parse<T: FromStr<Err = ParseError>>(&self, column: &str) -> Result<T> {
        parse_column(column, &self.text(column)?)
    }

    pub(super) fn opt_parse<T: FromStr<Err = ParseError>>(
        &self,
        column: &str,
    ) -> Result<Option<T>> {
        self.opt_text(column)?
            .map(|s| parse_column(column, &s))
            .transpose()
    }
}

fn parse_column<T: FromStr<Err = ParseError>>(column: &str, text: &str) -> Result<T> {
    text.parse().map_err(|source: ParseError| {
        StoreError::Corrupt(Corrupt::Enum {
            column: column.to_string(),
            source,
        })
    })
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
