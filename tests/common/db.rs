//! Test databases: a SQLite file in a temporary directory, or a fresh PostgreSQL database
//! on the server named by `CAPF_TEST_POSTGRES` (e.g. `postgres://postgres@127.0.0.1:5432/test`).
#![allow(dead_code)]

use sqlx::Connection;

pub const POSTGRES_ENV: &str = "CAPF_TEST_POSTGRES";

/// Which engines this run covers: SQLite always, PostgreSQL when the variable names a server.
pub fn engines() -> Vec<Engine> {
    let mut engines = vec![Engine::Sqlite];
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => engines.push(Engine::Postgres(url)),
        _ => eprintln!("note: {POSTGRES_ENV} is not set: PostgreSQL variants not run"),
    }
    engines
}

#[derive(Clone, Debug)]
pub enum Engine {
    Sqlite,
    /// Admin URL of the server; each test gets its own database there.
    Postgres(String),
}

/// A database that exists for one test and is dropped after it.
pub struct TestDb {
    pub url: String,
    admin: Option<(String, String)>,
}

impl TestDb {
    pub async fn create(engine: &Engine, dir: &std::path::Path) -> TestDb {
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

    pub fn is_postgres(&self) -> bool {
        self.admin.is_some()
    }

    /// Drops a PostgreSQL test database (SQLite files go with their temporary directory).
    pub async fn drop_db(self) {
        if let Some((admin, name)) = self.admin {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
        }
    }
}
