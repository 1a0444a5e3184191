//! Engines, configurations and a raw client for the database tests.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{MySqlPool, PgPool, SqlitePool};
use tokio::sync::{RwLock, RwLockReadGuard};

/// Which database a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Engine {
    Postgres,
    MySql,
    Sqlite,
}

/// Held shared by every test on a shared server, alone by those that stop
/// and restart one.
pub(crate) static SERVERS: RwLock<()> = RwLock::const_new(());

/// The shared servers, up for the whole of the caller's test.
pub(crate) async fn server() -> RwLockReadGuard<'static, ()> {
    SERVERS.read().await
}

impl Engine {
    fn var(self) -> &'static str {
        match self {
            Engine::Postgres => "TANKARD_POSTGRES_URL",
            Engine::MySql => "TANKARD_MYSQL_URL",
            Engine::Sqlite => unreachable!("SQLite has no server"),
        }
    }

    /// The database's URL: the server's, or a file in `dir`.
    pub(crate) fn url(self, dir: &tempfile::TempDir) -> String {
        match self {
            Engine::Sqlite => format!("sqlite://{}", dir.path().join("cache.db").display()),
            server => std::env::var(server.var()).unwrap_or_else(|_| {
                panic!(
                    "{} is not set: run scripts/services and source its env",
                    server.var()
                )
            }),
        }
    }

    /// The `scripts/services` name of its server.
    pub(crate) fn service(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::MySql => "mariadb",
            Engine::Sqlite => unreachable!("SQLite has no server"),
        }
    }

    /// A blob literal in the engine's SQL.
    pub(crate) fn blob(self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self {
            Engine::Postgres => format!("'\\x{hex}'::bytea"),
            Engine::MySql | Engine::Sqlite => format!("X'{hex}'"),
        }
    }
}

/// A key prefix (or table suffix) no other test or run uses.
pub(crate) fn unique(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t{}_{nanos:x}_{}_{test}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A config of the default region on `engine`, with `extra` TOML lines.
pub(crate) fn toml(engine: Engine, dir: &tempfile::TempDir, prefix: &str, extra: &str) -> String {
    format!(
        "[cache]\ntype = \"ext:database\"\nurl = \"{}\"\nprefix = \"{prefix}/\"\nexpire = 60\n{extra}\n",
        engine.url(dir)
    )
}

pub(crate) fn manager(toml: &str) -> tankard::CacheManager {
    tankard::CacheManager::new(tankard::Config::from_toml_str(toml).unwrap()).unwrap()
}

/// The row key of an entry of the default region.
pub(crate) fn entry_key(prefix: &str, namespace: &str, key: &str) -> String {
    format!("{prefix}/default:{namespace}#{key}")
}

/// A plain client of the same database, for looking behind the store's back.
pub(crate) enum Raw {
    Pg(PgPool),
    My(MySqlPool),
    Lite(SqlitePool),
}

impl Raw {
    pub(crate) async fn connect(engine: Engine, dir: &tempfile::TempDir) -> Raw {
        let url = engine.url(dir);
        match engine {
            Engine::Postgres => Raw::Pg(PgPool::connect(&url).await.unwrap()),
            Engine::MySql => Raw::My(MySqlPool::connect(&url).await.unwrap()),
            Engine::Sqlite => Raw::Lite(SqlitePool::connect(&url).await.unwrap()),
        }
    }

    pub(crate) async fn execute(&self, sql: &str) -> u64 {
        match self {
            Raw::Pg(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
            Raw::My(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
            Raw::Lite(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .unwrap()
                .rows_affected(),
        }
    }

    pub(crate) async fn count(&self, sql: &str) -> i64 {
        match self {
            Raw::Pg(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
            Raw::My(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
            Raw::Lite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        }
    }
}
