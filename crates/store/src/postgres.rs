//! The PostgreSQL back end: one database shared by every capf node.
//!
//! The behaviour is in `sql.rs`; this file only knows how to connect and migrate.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::error::{BadUrl, Result, StoreError, Unavailable};
use crate::sql::{Pool, SqlStore};
use crate::DatabaseUrl;

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// How long a caller waits for a connection before the store reports `Unavailable`: the API
/// must answer 503 rather than hang when the database is gone.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Query parameters sqlx-postgres 0.8 reads from a URL (`PgConnectOptions::parse_from_url`),
/// besides `options[NAME]`.
const KNOWN_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Parses the URL for sqlx without letting sqlx log: it logs a parameter it does not know
/// with its value (`?sslpassword=...` would put a password in the log) and a malformed
/// `~/.pgpass` line whole. The parameters it ignores are named here instead, values left out.
fn connect_options(url: &DatabaseUrl) -> Result<PgConnectOptions> {
    let silent = tracing::subscriber::NoSubscriber::default();
    let parsed =
        tracing::subscriber::with_default(silent, || PgConnectOptions::from_str(url.expose()));
    let options = parsed.map_err(|e| {
        StoreError::BadUrl(BadUrl::Driver {
            url: url.redacted(),
            source: Arc::new(e),
        })
    })?;
    if let Ok(parsed) = url::Url::parse(url.expose()) {
        for (name, _) in parsed.query_pairs() {
            let known = KNOWN_PARAMETERS.contains(&name.as_ref())
                || (name.starts_with("options[") && name.ends_with(']'));
            if !known {
                tracing::warn!(parameter = %name, "ignoring an unrecognized database URL parameter");
            }
        }
    }
    Ok(options)
}

/// Selects the PostgreSQL constructor of [`SqlStore`].
#[derive(Debug)]
pub enum PgBackend {}

/// A [`crate::Store`] in a PostgreSQL database.
pub type PgStore = SqlStore<PgBackend>;

impl SqlStore<PgBackend> {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &DatabaseUrl) -> Result<PgStore> {
        let options = connect_options(url)?;

        // Several nodes may start at once. sqlx's PostgreSQL migrator (sqlx-postgres 0.8.6,
        // `Migrate::lock` in src/migrate.rs, called first by `Migrator::run_direct`) takes
        // `pg_advisory_lock` keyed on the database name before it reads or applies
        // anything, so the nodes apply migrations one at a time and the later ones find
        // nothing to do. The lock is session-level and is only released if migrating
        // succeeds, so we migrate on a connection of our own and close it afterwards: if a
        // migration fails the connection goes away, and the lock with it, instead of going
        // back to a pool still holding the lock.
        let mut conn = tokio::time::timeout(ACQUIRE_TIMEOUT, options.connect())
            .await
            .map_err(|_| Unavailable::TimedOut(ACQUIRE_TIMEOUT))??;
        let migrated = MIGRATOR.run(&mut conn).await;
        // Best effort: if closing fails the socket is dropped anyway, ending the session.
        let _ = conn.close().await;
        migrated.map_err(|e| StoreError::Migration(Arc::new(e)))?;

        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        tracing::info!(database = %url, "opened PostgreSQL store");
        Ok(SqlStore::from_pool(Pool::Postgres(pool)))
    }
}
