//! The SQLite back end: one database file, for a single node.
//!
//! The behaviour is in `sql.rs` and the threads that run it in `sqlite_engine.rs`; this file
//! only knows how to open and migrate the file safely.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::error::{BadUrl, Corrupt, Result, StoreError, Unavailable};
use crate::sql::{Pool, SqlStore};
use crate::sqlite_engine::{file_of, Engine};
use crate::DatabaseUrl;

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Selects the SQLite constructor of [`SqlStore`].
#[derive(Debug)]
pub enum SqliteBackend {}

/// A [`crate::Store`] in a SQLite file.
pub type SqliteStore = SqlStore<SqliteBackend>;

impl SqlStore<SqliteBackend> {
    /// Opens (creating it and its directory if needed) and migrates the database file.
    pub async fn open(url: &DatabaseUrl) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url.expose())
            .map_err(|e| {
                StoreError::BadUrl(BadUrl::Driver {
                    url: url.redacted(),
                    source: Arc::new(e),
                })
            })?
            .create_if_missing(true)
            // WAL lets readers run while one connection writes.
            .journal_mode(SqliteJournalMode::Wal)
            // FULL syncs the WAL at every commit: once a change is acknowledged it survives
            // a power loss (NORMAL, the usual WAL choice, may lose the last commits).
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // How long a connection waits for another one's write lock before SQLITE_BUSY.
            .busy_timeout(Duration::from_secs(5));
        let file = file_of(&options)?;
        let path = file.clone();
        tokio::task::spawn_blocking(move || private_files(&path))
            .await
            .map_err(|_| Unavailable::Stopped("preparing the SQLite file panicked"))??;
        // Migrations run through sqlx's migrator, on a connection of their own; then capf's
        // own threads take the file over (see `sqlite_engine.rs` for why).
        let migrate = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(damaged)?;
        // A damaged file (truncated, overwritten) is refused here, at start, rather than
        // answering 503 to everything once running.
        let check: std::result::Result<Vec<String>, sqlx::Error> =
            sqlx::query_scalar("PRAGMA quick_check")
                .fetch_all(&migrate)
                .await;
        match check {
            Ok(lines) if lines.len() == 1 && lines[0] == "ok" => {}
            Ok(lines) => {
                migrate.close().await;
                return Err(StoreError::Corrupt(Corrupt::Integrity(lines.join("; "))));
            }
            Err(e) => {
                migrate.close().await;
                return Err(damaged(e));
            }
        }
        // A SQLite database has one node, so the migrator's missing lock does not matter.
        let migrated = MIGRATOR
            .run(&migrate)
            .await
            .map_err(|e| StoreError::Migration(Arc::new(e)));
        migrate.close().await;
        migrated?;
        // Reads: a few connections, which WAL lets proceed during a write; bulk listings
        // should not hold up a phone's lookups.
        let engine = tokio::task::spawn_blocking(move || Engine::start(&file, 4))
            .await
            .map_err(|_| Unavailable::Stopped("opening the SQLite store panicked"))??;
        tracing::info!(database = %url, "opened SQLite store");
        Ok(SqlStore::from_pool(Pool::Sqlite(engine)))
    }
}

/// SQLite's "damaged file" answers (SQLITE_CORRUPT, SQLITE_NOTADB) as [`Corrupt`]; the
/// rest as they come.
fn damaged(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if matches!(db.code().as_deref(), Some("11" | "26")) {
            return StoreError::Corrupt(Corrupt::Integrity(db.message().to_string()));
        }
    }
    e.into()
}

/// The database holds pending authentication strings: its directory (when created here) is
/// 0700 and the file and its WAL, shared-memory and journal files are 0600, whoever starts
/// capf and whatever its umask. SQLite gives the files it creates later the mode of the
/// database file, so making that file first, private, covers them.
fn private_files(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let io = |what: String| {
        move |e: std::io::Error| {
            StoreError::Unavailable(Unavailable::Io {
                what,
                source: Arc::new(e),
            })
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io(format!("creating {}", dir.display())))?;
        }
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("creating {}", path.display())))?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = std::path::PathBuf::from(name);
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(io(format!("making {} private", file.display())))?;
            }
            _ => {}
        }
    }
    Ok(())
}
