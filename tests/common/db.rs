//! Test databases: a SQLite file in a temporary directory, or a fresh PostgreSQL database
//! on the server named by `CAPF_TEST_POSTGRES` (e.g. `postgres://postgres@127.0.0.1:5432/test`).
#![allow(dead_code)]

use sqlx::Connection;

pub(crate) const POSTGRES_ENV: &str = "CAPF_TEST_POSTGRES";

/// Which engines this run covers: SQLite always, PostgreSQL when the variable names a server.
pub(crate) fn engines() -> Vec<Engine> {
    let mut engines = vec![Engine::Sqlite];
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => engines.push(Engine::Postgres(url)),
        _ => eprintln!("note: {POSTGRES_ENV} is not set: PostgreSQL variants not run"),
    }
    engines
}

#[derive(Clone, Debug)]
pub(crate) enum Engine {
    Sqlite,
    /// Admin URL of the server; each test gets its own database there.
    Postgres(String),
}

impl Engine {
    /// For test output: which engine, without the server's URL.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres(_) => "postgres",
        }
    }
}

/// A database that exists for one test and is dropped after it, pass or fail: a PostgreSQL
/// database when this value goes (or by [`TestDb::drop_db`]), a SQLite file with its
/// temporary directory.
pub(crate) struct TestDb {
    pub url: String,
    /// Admin URL and name of a PostgreSQL database still to drop.
    admin: Option<(String, String)>,
}

impl TestDb {
    pub(crate) async fn create(engine: &Engine, dir: &std::path::Path) -> TestDb {
        match engine {
            Engine::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.join("data").join("capf.db").display()),
                admin: None,
            },
            Engine::Postgres(admin_url) => {
                let name = format!("capf_test_{}", rand::random::<u64>());
                let mut conn = sqlx::PgConnection::connect(admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("{POSTGRES_ENV}={admin_url}: cannot connect: {e}"));
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                let mut url = url::Url::parse(admin_url).expect("postgres url");
                url.set_path(&name);
                TestDb {
                    url: url.to_string(),
                    admin: Some((admin_url.clone(), name)),
                }
            }
        }
    }

    pub(crate) fn is_postgres(&self) -> bool {
        self.admin.is_some()
    }

    /// Drops a PostgreSQL test database now (SQLite files go with their temporary
    /// directory). Dropping the value does the same; this way the test's own runtime does it.
    pub(crate) async fn drop_db(mut self) {
        if let Some((admin, name)) = self.admin.take() {
            drop_database(&admin, &name).await;
        }
    }
}

/// Drops the database, saying so on stderr when it cannot (the test's result stands).
async fn drop_database(admin: &str, name: &str) {
    let dropped = async {
        let mut conn = sqlx::PgConnection::connect(admin).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await?;
        conn.close().await
    };
    if let Err(e) = dropped.await {
        eprintln!("could not drop test database {name}: {e}");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.admin.take() else {
            return;
        };
        // A test that failed (or returned early) still removes its database. Drop cannot
        // await and may run while the test's runtime unwinds: a runtime of our own, on a
        // thread of our own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(drop_database(&admin, &name));
            Ok::<(), String>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test database: {dropped:?}");
        }
    }
}
