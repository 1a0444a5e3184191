//! The SQL store (`type = ext:database`) against real databases: the
//! PostgreSQL and MariaDB servers `scripts/services` starts (on 25432 and
//! 23306; TANKARD_POSTGRES_URL / TANKARD_MYSQL_URL), and SQLite files in
//! temporary directories. The conformance suite runs on them too
//! (`tests/core/conformance.rs`); these are what only a database has:
//! processes sharing it, holders killed, the server restarted, rows
//! damaged behind the store's back, and `gc` on many rows.
//!
//! Every test writes under its own key prefix (or file, or table), so
//! runs never see each other's data. The outage tests stop and restart
//! the shared servers, so every test that uses one holds [`common::server`]
//! shared and those hold it alone.

// Tests may unwrap: a panic is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/stampede.rs"]
mod stampede;
stampede::child_entry!();

mod common;

/// Declares each listed test (an `async fn(Engine)` in scope) once per
/// engine: `<name>::postgres`, `<name>::mysql`, `<name>::sqlite`.
macro_rules! engines {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Engine::Postgres).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mysql() {
                    super::$name($crate::common::Engine::MySql).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Engine::Sqlite).await
                }
            }
        )*
    };
}

mod multiprocess;
mod outage;
mod rows;
