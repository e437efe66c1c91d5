//! The threads that own capf's SQLite connections: one writer and a few readers.
//!
//! Why not sqlx's SQLite driver: it runs each connection on a thread of its own and hands that
//! thread every statement (and every row) through a channel, so each statement costs two
//! thread switches and a session's write transactions queue statement by statement on the one
//! writer connection. Measured with `capf bench`, that hand-off was most of the server's time.
//! Here a whole transaction crosses to the writer thread in one hand-off and runs there
//! without waiting, and the writer commits the transactions that queued up meanwhile together
//! (group commit: one fsync for many sessions), each in a savepoint of its own so one
//! failing body undoes only its own changes.
//!
//! The engine knows nothing about the schema: jobs come from `sql.rs`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::error::{BadUrl, Corrupt, Result, StoreError, Unavailable};

/// How many queued write transactions one commit may carry. Enough that a burst of sessions
/// shares one fsync; small enough that a batch is a few milliseconds of work.
const MAX_BATCH: usize = 64;

/// A queued write older than this is refused rather than run: its caller's deadline has the
/// same length, and a write must never commit after its caller was told it failed.
const QUEUE_DEADLINE: Duration = Duration::from_secs(10);

/// How long a connection waits for another process's lock (a backup tool, `sqlite3` in a
/// shell) before SQLITE_BUSY. capf itself never waits on its own connections.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the writer must reach before a batch's callers go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SyncMode {
    /// `synchronous = FULL`: the WAL is on disk.
    Full,
    /// `synchronous = NORMAL`: in the operating system's hands.
    Normal,
}

/// One write transaction's body, run on the writer thread inside the batch's transaction.
pub(crate) trait WriteJob: Send {
    fn sync(&self) -> SyncMode;
    /// A large transaction (a bulk import) runs in a batch of its own, without a savepoint:
    /// inside a savepoint every statement's own savepoint costs time in proportion to the
    /// pages already changed, which made a 40,000-row import four times slower.
    fn alone(&self) -> bool {
        false
    }
    /// Runs the body; returns whether it succeeded (its savepoint is kept) or failed (its
    /// savepoint is rolled back). Keeps the body's result until [`WriteJob::finish`].
    fn run(&mut self, conn: &mut Connection) -> bool;
    /// Hands the caller its result once the batch's commit outcome is known (or the error
    /// that kept the job from running).
    fn finish(self: Box<Self>, commit: Result<()>);
}

type ReadJob = Box<dyn FnOnce(&mut Connection) + Send>;

struct Queued {
    at: Instant,
    job: Box<dyn WriteJob>,
}

/// The running threads. Dropping the engine (or [`Engine::close`]) lets them finish what is
/// queued and exit.
pub(crate) struct Engine {
    writer: Mutex<Option<Sender<Queued>>>,
    readers: Mutex<Option<Sender<ReadJob>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Engine {
    /// Opens one writer and `readers` reader connections on `path` (an existing, migrated
    /// database in WAL mode) and starts their threads.
    pub(crate) fn start(path: &Path, readers: usize) -> Result<Engine> {
        let writer_conn = open(path)?;
        let (write_tx, write_rx) = mpsc::channel::<Queued>();
        let mut threads = vec![spawn("capf-sqlite-w", move || {
            write_loop(writer_conn, write_rx)
        })?];
        let (read_tx, read_rx) = mpsc::channel::<ReadJob>();
        let read_rx = Arc::new(Mutex::new(read_rx));
        for i in 0..readers.max(1) {
            let conn = open(path)?;
            let rx = Arc::clone(&read_rx);
            threads.push(spawn(&format!("capf-sqlite-r{i}"), move || {
                read_loop(conn, rx)
            })?);
        }
        Ok(Engine {
            writer: Mutex::new(Some(write_tx)),
            readers: Mutex::new(Some(read_tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Queues a write transaction; the job's `finish` reports the outcome.
    pub(crate) fn write(&self, job: Box<dyn WriteJob>) {
        let queued = Queued {
            at: Instant::now(),
            job,
        };
        let refused = match lock(&self.writer).as_ref() {
            Some(tx) => tx.send(queued).err().map(|e| e.0),
            None => Some(queued),
        };
        if let Some(queued) = refused {
            queued.job.finish(Err(closed()));
        }
    }

    /// Runs `read` on a reader connection.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let result = catch_unwind(AssertUnwindSafe(|| read(conn)))
                .unwrap_or_else(|_| Err(Unavailable::Stopped("a read panicked").into()));
            let _ = reply.send(result);
        });
        match lock(&self.readers).as_ref() {
            Some(tx) => tx.send(job).map_err(|_| closed())?,
            None => return Err(closed()),
        }
        answer.await.map_err(|_| closed())?
    }

    /// Stops taking work, lets the threads finish what is queued, and waits for them.
    pub(crate) async fn close(&self) {
        lock(&self.writer).take();
        lock(&self.readers).take();
        let threads = std::mem::take(&mut *lock(&self.threads));
        // Joining blocks: not on an async worker.
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The threads end on their own once the senders are gone; nothing to wait for.
        lock(&self.writer).take();
        lock(&self.readers).take();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a thread panicked while holding it; the data (a sender, a
    // list of handles) is still sound.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn closed() -> StoreError {
    Unavailable::Stopped("the SQLite store is closed").into()
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| {
            StoreError::from(Unavailable::Io {
                what: "starting a SQLite thread".into(),
                source: Arc::new(e),
            })
        })
}

/// Opens a connection with the settings every capf connection has.
fn open(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(from_sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(from_sqlite)?;
    // The schema's statements, bulk import's chunk sizes included, fit comfortably.
    conn.set_prepared_statement_cache_capacity(256);
    // temp_store: the savepoint each write runs in keeps its undo pages in memory, not in a
    // temporary file. cache_size (KiB when negative): the hot part of a database of tens of
    // thousands of devices stays in the connection instead of being re-read from the
    // operating system's cache at every statement.
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA journal_mode = WAL; \
         PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32768;",
    )
    .map_err(from_sqlite)?;
    Ok(conn)
}

/// The file a `sqlite://` URL names, as `open` expects it.
pub(crate) fn file_of(options: &sqlx::sqlite::SqliteConnectOptions) -> Result<PathBuf> {
    let path = options.get_filename();
    let name = path.to_string_lossy();
    // sqlx names its in-memory databases `file:sqlx-in-memory-N`.
    if name.is_empty() || name.contains(":memory:") || name.contains("sqlx-in-memory") {
        return Err(StoreError::BadUrl(BadUrl::InMemory));
    }
    Ok(path.to_path_buf())
}

pub(crate) fn from_sqlite(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => Corrupt::Sqlite(Arc::new(e)).into(),
        other => Unavailable::Sqlite(Arc::new(other)).into(),
    }
}

fn read_loop(mut conn: Connection, jobs: Arc<Mutex<Receiver<ReadJob>>>) {
    loop {
        // The lock is held only while waiting, so one idle reader waits and the others queue
        // behind it; a job runs with the lock released.
        let next = lock(&jobs).recv();
        match next {
            Ok(job) => job(&mut conn),
            Err(_) => return,
        }
    }
}

fn write_loop(mut conn: Connection, jobs: Receiver<Queued>) {
    let mut current = SyncMode::Full;
    // A job taken off the queue that must wait for the next batch.
    let mut held: Option<Queued> = None;
    loop {
        let first = match held.take() {
            Some(q) => q,
            None => match jobs.recv() {
                Ok(q) => q,
                Err(_) => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && !batch[0].job.alone() {
            match jobs.try_recv() {
                Ok(next) if next.job.alone() => {
                    held = Some(next);
                    break;
                }
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (late, batch): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|q| q.at.elapsed() > QUEUE_DEADLINE);
        for q in late {
            q.job
                .finish(Err(Unavailable::Queued(QUEUE_DEADLINE).into()));
        }
        if batch.is_empty() {
            continue;
        }
        let wanted = if batch.iter().any(|q| q.job.sync() == SyncMode::Full) {
            SyncMode::Full
        } else {
            SyncMode::Normal
        };
        for (job, committed) in run_batch(&mut conn, &mut current, wanted, batch) {
            job.finish(committed);
        }
    }
}

/// Runs a batch in one transaction, each job in a savepoint, and commits it once. Returns
/// each job with whether its changes were committed.
fn run_batch(
    conn: &mut Connection,
    current: &mut SyncMode,
    wanted: SyncMode,
    batch: Vec<Queued>,
) -> Vec<(Box<dyn WriteJob>, Result<()>)> {
    if let Err(e) = begin(conn, current, wanted) {
        return batch.into_iter().map(|q| (q.job, Err(e.clone()))).collect();
    }
    let mut jobs = Vec::with_capacity(batch.len());
    let mut lost = None;
    // A job on its own needs no savepoint: if it fails, the whole transaction rolls back.
    let alone = batch.len() == 1;
    for q in batch {
        let mut job = q.job;
        if lost.is_some() {
            jobs.push((job, Err(rolled_back())));
            continue;
        }
        let kept = if alone {
            if job.run(conn) {
                Ok(())
            } else {
                // The job reports its own error; nothing of the batch may be committed.
                lost = Some(rolled_back());
                Ok(())
            }
        } else {
            step(conn, "SAVEPOINT job").and_then(|()| {
                if job.run(conn) {
                    step(conn, "RELEASE job")
                } else {
                    // The job reports its own error; this only undoes its changes.
                    step(conn, "ROLLBACK TO job").and_then(|()| step(conn, "RELEASE job"))
                }
            })
        };
        // Some errors (disk full, I/O) make SQLite roll the whole transaction back by itself:
        // what the batch did so far is gone, and nothing more may run outside it.
        if conn.is_autocommit() {
            lost = Some(rolled_back());
        }
        jobs.push((job, kept));
    }
    let commit = match lost {
        Some(e) => {
            if !conn.is_autocommit() {
                let _ = step(conn, "ROLLBACK");
            }
            Err(e)
        }
        None => {
            let commit = step(conn, "COMMIT");
            if commit.is_err() {
                // Leaves the connection usable for the next batch.
                let _ = step(conn, "ROLLBACK");
            }
            commit
        }
    };
    jobs.into_iter()
        .map(|(job, kept)| {
            let committed = kept.and_then(|()| match &commit {
                Ok(()) => Ok(()),
                Err(e) => Err(e.clone()),
            });
            (job, committed)
        })
        .collect()
}

fn begin(conn: &mut Connection, current: &mut SyncMode, wanted: SyncMode) -> Result<()> {
    if *current != wanted {
        // Only outside a transaction does this change what the next commit waits for.
        let pragma = match wanted {
            SyncMode::Full => "PRAGMA synchronous = FULL",
            SyncMode::Normal => "PRAGMA synchronous = NORMAL",
        };
        conn.execute_batch(pragma).map_err(from_sqlite)?;
        *current = wanted;
    }
    // IMMEDIATE takes the write lock up front: another process (a backup) waits or fails
    // here, before any body ran.
    step(conn, "BEGIN IMMEDIATE")
}

fn step(conn: &Connection, sql: &str) -> Result<()> {
    let mut stmt = conn.prepare_cached(sql).map_err(from_sqlite)?;
    stmt.execute([]).map(|_| ()).map_err(from_sqlite)
}

fn rolled_back() -> StoreError {
    Unavailable::Stopped("SQLite rolled the write transaction back (see the log)").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inserts `value` into `t`, then fails if `fail` (after its insert, which must be undone).
    struct Insert {
        value: i64,
        fail: bool,
        pause: Duration,
        alone: bool,
        reply: Option<std::sync::mpsc::Sender<(i64, Result<()>)>>,
        ran: Option<bool>,
    }

    impl WriteJob for Insert {
        fn sync(&self) -> SyncMode {
            SyncMode::Full
        }

        fn alone(&self) -> bool {
            self.alone
        }

        fn run(&mut self, conn: &mut Connection) -> bool {
            std::thread::sleep(self.pause);
            let ok = conn
                .execute("INSERT INTO t (v) VALUES (?1)", [self.value])
                .is_ok()
                && !self.fail;
            self.ran = Some(ok);
            ok
        }

        fn finish(self: Box<Self>, committed: Result<()>) {
            let outcome = match self.ran {
                Some(true) => committed,
                Some(false) => Err(Unavailable::Stopped("refused").into()),
                None => committed.and(Err(Unavailable::Stopped("did not run").into())),
            };
            if let Some(reply) = self.reply {
                let _ = reply.send((self.value, outcome));
            }
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER NOT NULL)")
            .unwrap();
        (dir, path)
    }

    /// Queues one job per `(value, fails, alone)` while the first holds the writer for 200 ms,
    /// so the rest queue up behind it; returns each value with whether its write succeeded.
    fn run_jobs(path: &Path, jobs: &[(i64, bool, bool)]) -> Vec<(i64, bool)> {
        let engine = Engine::start(path, 1).unwrap();
        let (reply, answers) = std::sync::mpsc::channel();
        for (i, &(value, fail, alone)) in jobs.iter().enumerate() {
            engine.write(Box::new(Insert {
                value,
                fail,
                pause: if i == 0 {
                    Duration::from_millis(200)
                } else {
                    Duration::ZERO
                },
                alone,
                reply: Some(reply.clone()),
                ran: None,
            }));
        }
        drop(reply);
        let mut outcomes: Vec<(i64, bool)> = answers.iter().map(|(v, r)| (v, r.is_ok())).collect();
        outcomes.sort();
        outcomes
    }

    #[test]
    fn a_batch_commits_its_good_jobs_and_undoes_the_failed_ones() {
        let (_dir, path) = setup();
        let jobs: Vec<_> = (0..12).map(|v| (v, v % 3 == 2, false)).collect();
        let expected: Vec<(i64, bool)> = (0..12).map(|v| (v, v % 3 != 2)).collect();
        assert_eq!(run_jobs(&path, &jobs), expected);
        let committed: Vec<i64> = (0..12).filter(|v| v % 3 != 2).collect();
        assert_eq!(stored(&path), committed);
    }

    #[tokio::test]
    async fn reads_see_committed_writes_and_a_closed_engine_refuses_work() {
        let (_dir, path) = setup();
        let engine = Engine::start(&path, 2).unwrap();
        let (reply, answers) = std::sync::mpsc::channel();
        engine.write(Box::new(Insert {
            value: 7,
            fail: false,
            pause: Duration::ZERO,
            alone: false,
            reply: Some(reply),
            ran: None,
        }));
        let (_, committed) = tokio::task::spawn_blocking(move || answers.recv().unwrap())
            .await
            .unwrap();
        committed.unwrap();
        let n = engine
            .read(|conn| {
                conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0))
                    .map_err(from_sqlite)
            })
            .await
            .unwrap();
        assert_eq!(n, 1);

        engine.close().await;
        let refused = engine.read(|_| Ok(())).await;
        assert!(matches!(refused, Err(StoreError::Unavailable(_))));
        let (reply, answers) = std::sync::mpsc::channel();
        engine.write(Box::new(Insert {
            value: 8,
            fail: false,
            pause: Duration::ZERO,
            alone: false,
            reply: Some(reply),
            ran: None,
        }));
        assert!(matches!(
            answers.recv().unwrap().1,
            Err(StoreError::Unavailable(_))
        ));
    }

    fn stored(path: &Path) -> Vec<i64> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        let values = stmt
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        values
    }

    #[test]
    fn bulk_jobs_run_alone_and_a_failed_one_leaves_nothing() {
        let (_dir, path) = setup();
        // 1 and 3 are bulk jobs (3 fails) queued among ordinary ones; 5 fails in a batch.
        let jobs: Vec<_> = (0..6)
            .map(|v| (v, v == 3 || v == 5, v == 1 || v == 3))
            .collect();
        assert_eq!(
            run_jobs(&path, &jobs),
            [
                (0, true),
                (1, true),
                (2, true),
                (3, false),
                (4, true),
                (5, false)
            ]
        );
        assert_eq!(stored(&path), [0, 1, 2, 4]);
    }

    #[test]
    fn memory_urls_are_refused() {
        use std::str::FromStr;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite::memory:").unwrap();
        assert!(matches!(file_of(&options), Err(StoreError::BadUrl(_))));
    }
}
