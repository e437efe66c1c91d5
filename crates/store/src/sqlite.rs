//! The SQLite back end: one database file, for a single node.
//!
//! The behaviour is in `sql.rs` and the threads that run it in `sqlite_engine.rs`; this file
//! only knows how to open and migrate the file safely.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::error::{BadUrl, Result, StoreError, Unavailable};
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
        if let Some(dir) = options.get_filename().parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| Unavailable::Io {
                    what: format!("creating {}", dir.display()),
                    source: Arc::new(e),
                })?;
            }
        }
        // Migrations run through sqlx's migrator, on a connection of their own; then capf's
        // own threads take the file over (see `sqlite_engine.rs` for why).
        let file = file_of(&options)?;
        let migrate = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
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
