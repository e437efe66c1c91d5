//! Where each contract test runs: a SQLite file in a temporary directory, or a PostgreSQL
//! database of its own.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use capf_store::{DatabaseUrl, Store};
use sqlx::Connection;

pub(crate) const PG_ENV: &str = "CAPF_TEST_POSTGRES";

/// A database for one test: a SQLite file or a PostgreSQL database of its own.
pub(crate) struct TestDb {
    pub(crate) url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgDatabase>,
}

/// A PostgreSQL database created for a test, dropped when the test ends (pass or fail).
pub(crate) struct PgDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop cannot await, and the test's runtime may be unwinding: use a runtime of our
        // own on a thread of our own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&sql)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

pub(crate) static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    pub(crate) async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory that does not exist yet: opening must create it.
        let path = dir.path().join("state").join("capf.db");
        TestDb {
            url: DatabaseUrl::sqlite_file(&path),
            _dir: Some(dir),
            pg: None,
        }
    }

    /// `None` (after saying so) when PostgreSQL tests are not enabled.
    pub(crate) async fn postgres(test: &str) -> Option<TestDb> {
        let Ok(admin_url) = std::env::var(PG_ENV) else {
            // Straight to stderr: the harness captures `println!` and `eprintln!` and shows
            // them only when a test fails, and a variant that did not run must say so in
            // every run.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED (PostgreSQL) postgres::{test}: set {PG_ENV}=postgres://... to run"
            );
            return None;
        };
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{PG_ENV} is set but PostgreSQL is unreachable: {e}"));
        let name = format!(
            "capf_test_{}_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed),
            test
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.expect("close admin connection");
        let pg = PgDatabase {
            admin_url: admin_url.clone(),
            name: name.clone(),
        };
        let mut url = url::Url::parse(&admin_url).expect("admin url");
        url.set_path(&format!("/{name}"));
        Some(TestDb {
            url: DatabaseUrl::new(url.to_string()).expect("database url"),
            _dir: None,
            pg: Some(pg),
        })
    }

    /// A new store (a new pool: another "node") on this database.
    pub(crate) async fn open(&self) -> Arc<dyn Store> {
        capf_store::open(&self.url).await.expect("open store")
    }

    /// Runs SQL behind the store's back, to damage rows.
    pub(crate) async fn raw_execute(&self, sql: &str) {
        if self.pg.is_some() {
            let mut conn = sqlx::PgConnection::connect(self.url.expose())
                .await
                .expect("raw connection");
            sqlx::query(sql).execute(&mut conn).await.expect("raw sql");
        } else {
            let mut conn = sqlx::SqliteConnection::connect(self.url.expose())
                .await
                .expect("raw connection");
            sqlx::query(sql).execute(&mut conn).await.expect("raw sql");
        }
    }
}
