//! The SQL store's [`Backend`]: what every engine shares (keys, counters,
//! timeouts, error kinds, the table's creation); the SQL of each engine is
//! its [`Driver`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};

use super::options::{DatabaseOptions, Engine};
use crate::backend::lock::CreationLock;
use crate::backend::{
    Backend, Loaded, Location, Purged, RegionScope, Scope, Usage, generation_start,
};
use crate::entry::{self, Generations};
use crate::error::{Error, Result};
use crate::key;
use crate::options::RegionOptions;

/// The longest key stored as it is; longer ones are stored by their hash
/// (MySQL's primary key is `VARBINARY(512)`).
pub(super) const MAX_KEY: usize = 512;

/// Rows `purge_expired` deletes per statement: small enough that no
/// statement holds its locks for long, large enough that 100 000 rows take
/// 20 round trips.
pub(super) const PURGE_BATCH: i64 = 5_000;

/// An engine's statements, with the table's name in them.
#[derive(Debug)]
pub(super) struct Sql {
    /// `CREATE … IF NOT EXISTS` of the table and its index.
    pub(super) create: Vec<String>,
    /// Up to the `IN` list (`= ANY($1)` on PostgreSQL).
    pub(super) read: String,
    pub(super) upsert: String,
    pub(super) delete: String,
    pub(super) bump: String,
    pub(super) raise: String,
    pub(super) purge: String,
    pub(super) usage: String,
}

/// The config error for a URL the engine's client refuses.
pub(super) fn bad_url(
    options: &RegionOptions,
    url: &str,
    client: &str,
    err: sqlx::Error,
    expected: &str,
) -> Error {
    Error::config(crate::error::ConfigError::BadValue {
        key: crate::options::option_key(options, "url"),
        value: crate::backend::redis::options::redact(url),
        problem: format!("is not usable by the {client} client: {err}"),
        expected: expected.to_owned(),
    })
}

/// One row as a lookup reads it.
#[derive(Clone, Debug, Default)]
pub(super) struct Row {
    pub(super) key: String,
    /// Set on counter rows.
    pub(super) counter: Option<i64>,
    /// The entry, unless it is longer than `max_entry_bytes`.
    pub(super) entry: Option<Vec<u8>>,
    /// The entry's length, read without the entry.
    pub(super) length: Option<i64>,
}

/// One engine's SQL. Every method is one statement (one round trip); the
/// store around it bounds each by `timeout` and creates the table first.
#[async_trait]
pub(super) trait Driver: Send + Sync + fmt::Debug + 'static {
    /// Creates the table and its index when missing.
    async fn create_table(&self) -> sqlx::Result<()>;
    /// The rows of `keys` (those that exist), each entry read only when
    /// at most `max_entry_bytes` long.
    async fn read(&self, keys: &[&str], max_entry_bytes: i64) -> sqlx::Result<Vec<Row>>;
    /// Writes an entry's row (upsert).
    async fn upsert(&self, key: &str, expires_at: Option<i64>, entry: &[u8]) -> sqlx::Result<()>;
    /// Deletes an entry's row; how many were deleted.
    async fn delete(&self, key: &str) -> sqlx::Result<u64>;
    /// Adds one to a counter, or starts it at `start` when it is missing,
    /// not positive, or not a counter.
    async fn bump(&self, key: &str, start: i64) -> sqlx::Result<()>;
    /// Raises a counter to `at`, never lowers it.
    async fn raise(&self, key: &str, at: i64) -> sqlx::Result<()>;
    /// Deletes at most `batch` rows expired at `now_ms`; how many.
    async fn purge(&self, now_ms: i64, batch: i64) -> sqlx::Result<u64>;
    /// The entries in the table and their bytes.
    async fn usage(&self) -> sqlx::Result<(i64, i64)>;
    /// The engine's creation lock.
    fn lock(&self) -> Arc<dyn CreationLock>;
    /// Drops every pooled connection (the server went away).
    fn reset(&self);
}

/// A region stored in an SQL table.
pub(crate) struct DatabaseBackend {
    name: &'static str,
    driver: Arc<dyn Driver>,
    /// Set once the table is known to exist; cleared when a statement
    /// finds it gone (dropped by hand), so the next one makes it again.
    created: AtomicBool,
    timeout: Duration,
    max_entry_bytes: u64,
    fail_safe_ms: u64,
    region_gen_key: String,
    region_soft_key: String,
}

impl fmt::Debug for DatabaseBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseBackend")
            .field("driver", &self.driver)
            .finish_non_exhaustive()
    }
}

/// Opens a database region. No connection is made here: the first
/// operation connects, and creates the table when missing.
pub(crate) fn open(options: &RegionOptions) -> Result<Arc<dyn Backend>> {
    let own = DatabaseOptions::read(options).map_err(|problem| problem.for_region(options))?;
    let driver: Arc<dyn Driver> = match own.engine {
        #[cfg(feature = "postgres")]
        Engine::Postgres => Arc::new(super::postgres::PgDriver::open(&own, options)?),
        #[cfg(feature = "mysql")]
        Engine::MySql => Arc::new(super::mysql::MySqlDriver::open(&own, options)?),
        #[cfg(feature = "sqlite")]
        Engine::Sqlite => Arc::new(super::sqlite::SqliteDriver::open(&own, options)?),
        // `read` refuses an engine this build lacks.
        #[allow(unreachable_patterns)]
        other => {
            return Err(Error::backend(
                "database",
                format!("the {} engine is not built", other.feature()),
            ));
        }
    };
    let region = RegionScope::new(options);
    Ok(Arc::new(DatabaseBackend {
        name: own.engine.feature(),
        driver,
        created: AtomicBool::new(false),
        timeout: options.timeout,
        max_entry_bytes: options.max_entry_bytes,
        fail_safe_ms: crate::clock::millis(options.fail_safe),
        region_gen_key: region.generation_key,
        region_soft_key: region.soft_key,
    }))
}

/// A key as stored: itself, or its hash when longer than [`MAX_KEY`] or
/// holding a NUL (which PostgreSQL's `TEXT` refuses).
pub(super) fn row_key(key: &str) -> Cow<'_, str> {
    if key.len() <= MAX_KEY && !key.contains('\0') {
        Cow::Borrowed(key)
    } else {
        // A limit of 0: always the hash.
        Cow::Owned(key::limit_length("!db", key.to_owned(), 0))
    }
}

/// `statement` followed by an `IN` list of `n` `?` placeholders.
#[cfg(any(feature = "mysql", feature = "sqlite"))]
pub(super) fn in_list(statement: &str, n: usize) -> String {
    let mut sql = String::with_capacity(statement.len() + 2 + n * 3);
    sql.push_str(statement);
    sql.push('(');
    for at in 0..n {
        sql.push_str(if at == 0 { "?" } else { ", ?" });
    }
    sql.push(')');
    sql
}

/// Whether a statement failed because the table is not there (PostgreSQL
/// 42P01, MySQL 42S02, SQLite's "no such table").
fn table_missing(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("42P01" | "42S02"))
                || db.message().starts_with("no such table")
        }
        _ => false,
    }
}

/// Our error for an sqlx error in `operation`: a connection failure (which
/// opens the breaker) when the server could not be reached or is going
/// away, a plain backend error when it answered.
pub(super) fn sql_error(backend: &'static str, operation: &str, err: sqlx::Error) -> Error {
    let connection = connection_lost(&err)
        || matches!(
            err,
            sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
        );
    let error = Error::backend_source(backend, format!("{operation}: {err}"), err);
    if connection {
        error.into_connection_failure()
    } else {
        error
    }
}

/// A counter as read: absent, not positive (damaged), or not a counter
/// all read as 0, as on the other stores; the next bump restarts it.
fn counter(row: Option<&Row>) -> u64 {
    row.and_then(|row| row.counter)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

impl DatabaseBackend {
    /// Runs one statement within `timeout`, creating the table first if
    /// this process has not yet.
    async fn run<T>(
        &self,
        operation: &'static str,
        statement: impl Future<Output = sqlx::Result<T>>,
    ) -> Result<T> {
        let work = async {
            // Two first calls at once both create: `IF NOT EXISTS` makes
            // that harmless.
            if !self.created.load(Ordering::Acquire) {
                self.create_table().await?;
                self.created.store(true, Ordering::Release);
            }
            statement.await.map_err(|err| {
                if connection_lost(&err) {
                    self.driver.reset();
                }
                if table_missing(&err) {
                    self.created.store(false, Ordering::Release);
                }
                sql_error(self.name, operation, err)
            })
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(self.name, operation).into_connection_failure()),
        }
    }

    /// `CREATE TABLE IF NOT EXISTS`, tried twice: PostgreSQL can fail one
    /// of two processes creating the same table at once (a unique
    /// violation in its catalog), and the second try then finds it.
    async fn create_table(&self) -> Result<()> {
        match self.driver.create_table().await {
            Ok(()) => Ok(()),
            Err(sqlx::Error::Database(_)) => self
                .driver
                .create_table()
                .await
                .map_err(|err| sql_error(self.name, "create table", err)),
            Err(err) => Err(sql_error(self.name, "create table", err)),
        }
    }

    /// The rows of the three counters and `entries`, in one statement.
    async fn read(
        &self,
        ns_gen_key: &str,
        entries: &[Cow<'_, str>],
    ) -> Result<(Generations, HashMap<String, Row>)> {
        let region_gen = row_key(&self.region_gen_key);
        let region_soft = row_key(&self.region_soft_key);
        let ns_gen = row_key(ns_gen_key);
        let mut keys: Vec<&str> = vec![&region_gen, &region_soft, &ns_gen];
        keys.extend(entries.iter().map(|key| &**key));
        let max = i64::try_from(self.max_entry_bytes).unwrap_or(i64::MAX);
        let rows = self.run("read", self.driver.read(&keys, max)).await?;
        let rows: HashMap<String, Row> = rows.into_iter().map(|r| (r.key.clone(), r)).collect();
        let generations = Generations {
            region: counter(rows.get(&*region_gen)),
            soft_before_ms: counter(rows.get(&*region_soft)),
            namespace: counter(rows.get(&*ns_gen)),
        };
        Ok((generations, rows))
    }

    /// The entry of `key` in rows read by [`Self::read`].
    fn loaded(&self, generations: Generations, row: Option<Row>) -> Loaded {
        let Some(row) = row else {
            return Loaded {
                generations,
                ..Loaded::default()
            };
        };
        let length = row.length.and_then(|n| u64::try_from(n).ok());
        match (row.entry, length) {
            (_, Some(length)) if length > self.max_entry_bytes => Loaded {
                generations,
                bytes: None,
                oversized: Some(length),
            },
            (Some(bytes), _) if bytes.len() as u64 <= self.max_entry_bytes => Loaded {
                generations,
                bytes: Some(bytes),
                oversized: None,
            },
            _ => Loaded {
                generations,
                ..Loaded::default()
            },
        }
    }
}

#[async_trait]
impl Backend for DatabaseBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn load(&self, at: &Location<'_>) -> Result<Loaded> {
        let key = row_key(&at.storage_key);
        let (generations, mut rows) = self
            .read(&at.scope.generation_key, std::slice::from_ref(&key))
            .await?;
        Ok(self.loaded(generations, rows.remove(&*key)))
    }

    async fn load_many(&self, at: &[Location<'_>]) -> Result<Vec<Loaded>> {
        let Some(first) = at.first() else {
            return Ok(Vec::new());
        };
        let keys: Vec<Cow<'_, str>> = at.iter().map(|at| row_key(&at.storage_key)).collect();
        let (generations, rows) = self.read(&first.scope.generation_key, &keys).await?;
        Ok(keys
            .iter()
            // Cloned, not moved: a key may be asked for twice.
            .map(|key| self.loaded(generations, rows.get(&**key).cloned()))
            .collect())
    }

    async fn generations(&self, scope: &Scope) -> Result<Generations> {
        Ok(self.read(&scope.generation_key, &[]).await?.0)
    }

    async fn store(&self, at: &Location<'_>, entry: Vec<u8>, ttl: Option<Duration>) -> Result<()> {
        // The expiry on the region's clock, from the entry's own header (a
        // test's manual clock included), so that `purge_expired(now)`
        // compares like with like.
        let expires_at = ttl.map(|ttl| {
            let until = entry::peek_meta(&entry)
                .map(|meta| meta.kept_until_ms(self.fail_safe_ms))
                .unwrap_or_else(|| {
                    (generation_start() / 1000).saturating_add(crate::clock::millis(ttl))
                });
            i64::try_from(until).unwrap_or(i64::MAX)
        });
        let key = row_key(&at.storage_key);
        self.run("write", self.driver.upsert(&key, expires_at, &entry))
            .await
    }

    async fn remove(&self, at: &Location<'_>) -> Result<bool> {
        let key = row_key(&at.storage_key);
        Ok(self.run("remove", self.driver.delete(&key)).await? > 0)
    }

    async fn bump_namespace(&self, scope: &Scope) -> Result<()> {
        self.bump("clear", &scope.generation_key).await
    }

    async fn bump_region(&self, _region: &RegionScope) -> Result<()> {
        // One backend serves one region: its keys were computed at open.
        self.bump("invalidate", &self.region_gen_key).await
    }

    async fn soft_invalidate(&self, _region: &RegionScope, at_ms: u64) -> Result<()> {
        let key = row_key(&self.region_soft_key);
        let at = i64::try_from(at_ms).unwrap_or(i64::MAX);
        self.run("soft invalidate", self.driver.raise(&key, at))
            .await
    }

    fn creation_lock(&self) -> Arc<dyn CreationLock> {
        self.driver.lock()
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<Purged> {
        self.purge_expired_with(now_ms, &|_| {}).await
    }

    async fn purge_expired_with(
        &self,
        now_ms: u64,
        progress: &(dyn for<'p> Fn(&'p Purged) + Send + Sync),
    ) -> Result<Purged> {
        // The region asks for what was stale `fail_safe` ago; a row's
        // `expires_at` already counts `fail_safe`, so it is compared with
        // the time itself.
        let now = i64::try_from(now_ms.saturating_add(self.fail_safe_ms)).unwrap_or(i64::MAX);
        let mut purged = Purged::default();
        loop {
            let deleted = self
                .run("purge", self.driver.purge(now, PURGE_BATCH))
                .await?;
            purged.entries += deleted;
            if deleted < PURGE_BATCH as u64 {
                return Ok(purged);
            }
            progress(&purged);
        }
    }

    async fn usage(&self) -> Result<Usage> {
        let (entries, bytes) = self.run("usage", self.driver.usage()).await?;
        Ok(Usage {
            entries: u64::try_from(entries).ok(),
            bytes: u64::try_from(bytes).ok(),
            ..Usage::default()
        })
    }
}

impl DatabaseBackend {
    async fn bump(&self, operation: &'static str, counter_key: &str) -> Result<()> {
        let key = row_key(counter_key);
        let start = i64::try_from(generation_start()).unwrap_or(i64::MAX);
        self.run(operation, self.driver.bump(&key, start)).await
    }
}

/// A driver's pool, made on first use and replaced whole after a
/// connection failure.
///
/// Made on first use because sqlx starts a pool's upkeep tasks when the
/// pool is made, which needs a runtime, and a manager is made by a plain
/// function that may run outside one. Replaced because once a server
/// restarts, every idle connection in the pool is dead, and without a
/// test before each use (a round trip per lookup) each would fail one
/// operation in turn, each failure opening the breaker for another
/// `retry_after`. A new pool connects afresh; the old one closes in the
/// background.
pub(super) struct Pools<DB: sqlx::Database> {
    current: std::sync::Mutex<Option<sqlx::Pool<DB>>>,
    make: Box<dyn Fn() -> sqlx::Pool<DB> + Send + Sync>,
}

impl<DB: sqlx::Database> Pools<DB> {
    pub(super) fn new(make: impl Fn() -> sqlx::Pool<DB> + Send + Sync + 'static) -> Pools<DB> {
        Pools {
            current: std::sync::Mutex::new(None),
            make: Box::new(make),
        }
    }

    /// The pool to use now (a cheap handle), made if there is none.
    pub(super) fn get(&self) -> sqlx::Pool<DB> {
        crate::sync::lock(&self.current)
            .get_or_insert_with(|| (self.make)())
            .clone()
    }

    /// Drops the pool after a connection failure (the next use makes a
    /// new one), closing its connections in the background.
    pub(super) fn reset(&self) {
        let old = crate::sync::lock(&self.current).take();
        if let (Some(old), Ok(runtime)) = (old, tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move { old.close().await });
        }
    }
}

impl<DB: sqlx::Database> fmt::Debug for Pools<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pools").finish_non_exhaustive()
    }
}

/// Whether an sqlx error means the connection it came on is dead (the
/// server went away or restarted), rather than a busy pool or a refusal.
pub(super) fn connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
        _ => false,
    }
}

/// The pool settings every engine shares: lazy, bounded by `timeout`, no
/// test round trip before each use (see [`Pools`]).
pub(super) fn pool_options<DB: sqlx::Database>(
    max_connections: u32,
    timeout: Duration,
) -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(timeout)
        .idle_timeout(Duration::from_secs(60))
        .test_before_acquire(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_stored_by_their_hash() {
        assert_eq!(row_key("r:n#k"), "r:n#k");
        let long = "x".repeat(MAX_KEY + 1);
        let stored = row_key(&long);
        assert!(
            stored.starts_with("!db#") && stored.len() == 4 + 64,
            "{stored}"
        );
        assert_eq!(row_key(&"y".repeat(MAX_KEY)).len(), MAX_KEY);
        assert!(row_key("r:n#a\0b").starts_with("!db#"));
    }
}
