//! The SQL store (`type = ext:database`; cargo features `postgres`,
//! `mysql`, `sqlite`, or `database` for all three): PostgreSQL,
//! MySQL/MariaDB or SQLite through sqlx, the URL's scheme picking the
//! engine.
//!
//! # Schema
//!
//! One table (`table`, default `tankard_cache`), created with its index
//! when missing, holds one row per key: an entry's row has the entry's
//! bytes (opaque to the database: the format of `entry`) and its expiry;
//! a generation counter, a soft-invalidation time or a tag's time is a
//! row of its own with `counter` set. Every region using the table shares
//! it: keys carry the prefix and region.
//!
//! ```sql
//! -- PostgreSQL                       -- MySQL / MariaDB                    -- SQLite
//! CREATE TABLE tankard_cache (
//!   cache_key  TEXT PRIMARY KEY,      -- VARBINARY(512) (byte-exact keys)   -- TEXT
//!   expires_at BIGINT,                -- epoch ms the row can go; NULL: never
//!   entry      BYTEA,                 -- LONGBLOB                           -- BLOB
//!   counter    BIGINT                 -- counter rows only
//! );
//! CREATE INDEX tankard_cache_expires_at ON tankard_cache (expires_at);
//! ```
//!
//! Keys are the documented storage keys (`key.rs`); one longer than 512
//! bytes (a long namespace's counter, or a `key_length` above 512) is
//! stored as `!db#<blake3 hex>`. `expires_at` is the entry's
//! `expire + stale + fail_safe` on the region's clock: `tankard gc`
//! (`purge_expired`) deletes rows past it, 5 000 at a time, and nothing
//! else ever deletes a row it did not write. A row past its expiry that gc
//! has not reached yet reads as the entry's header says (missing).
//!
//! # One round trip per lookup
//!
//! A lookup reads the entry's row and the region's and namespace's counter
//! rows in one `SELECT … WHERE cache_key IN (…)` (`= ANY($1)` on
//! PostgreSQL), `load_many` every key of the batch in the same query. An
//! entry longer than `max_entry_bytes` comes back as its `length()` only,
//! never read whole into memory: a miss.
//!
//! # Writes
//!
//! An upsert (`ON CONFLICT … DO UPDATE`, `ON DUPLICATE KEY UPDATE`); a
//! counter bump is one upsert too, starting a missing or damaged counter
//! at the current time in µs (as on Redis and memcached), so entries
//! stamped with a counter's earlier values never come back.
//!
//! # Creation locks
//!
//! - **PostgreSQL**: session advisory locks (`pg_try_advisory_lock` on a
//!   64-bit hash of the lock key), each held on a connection of its own
//!   from a separate lock pool for as long as the creator runs, released
//!   with `pg_advisory_unlock` and a `NOTIFY` in one statement. Waiters
//!   in every process `LISTEN` (one listening connection per region) and
//!   retry the moment a release is announced, and at least every 50 ms in
//!   case a notification was lost. A crashed holder's connection closes,
//!   and the server drops its locks with it: none is ever left behind. A
//!   lock connection whose statement failed, timed out or was cancelled
//!   is closed rather than returned to the pool, so a lock taken by a
//!   reply that never arrived dies with it.
//! - **MySQL/MariaDB**: `GET_LOCK(name, 0)` / `RELEASE_LOCK(name)`, with
//!   `name` a hash of the lock key, held on a connection of its own the
//!   same way (the server also frees a closed session's locks). MySQL has
//!   no notifications: waiters poll with a jittered back-off from 2 ms to
//!   10 ms.
//! - **SQLite**: the file store's reentrant `flock` stripes, in `lock_dir`
//!   when set, else beside the database file (`<file>.locks/`): processes
//!   sharing an SQLite file share a host. A blocked waiter sits in a
//!   blocking `flock` and wakes the moment the holder releases.
//!
//! A session lock has no lifetime of its own: it lives as long as its
//! holder's connection, so a creator slower than `lock_timeout` keeps it,
//! and a holder that hangs keeps it until `wait_timeout` sends the
//! waiters to run their creators themselves.
//!
//! # Connections and failures
//!
//! Pools connect lazily (the first operation) and hold at most 16 data
//! connections and 32 lock connections per region (SQLite: 4 and none),
//! closing idle ones after a minute. Every operation, waiting for a
//! pooled connection included, is bounded by `timeout`; a refused, reset
//! or timed-out connection opens the region's circuit breaker, as on
//! every network store. SQLite runs in WAL mode with `busy_timeout` =
//! `timeout`, so writers in several processes queue instead of failing.
//! TLS is not built: connect over loopback, a Unix socket or a tunnel.
//!
//! # URLs
//!
//! `postgres://user[:password]@host[:port]/db` (or `postgresql://`),
//! `mysql://user[:password]@host[:port]/db` (or `mariadb://`), each with
//! sqlx's query options; `sqlite://relative/file.db`,
//! `sqlite:///absolute/file.db` (created when missing).
pub(crate) mod options;

/// Implements `store::Driver` for an engine's driver type: the engine's
/// own methods (`create_table`, `read`) as given, and the statements every
/// engine runs alike from its `Sql` (`upsert`, `delete`, `bump`, `raise`,
/// `purge`, `usage`), binding each key as `|key| …` says (MySQL's keys
/// are bytes). The type has `sql`, `pools` and `lock` fields.
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
macro_rules! driver {
    ($driver:ty, key = |$key:ident| $bind:expr, { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl super::store::Driver for $driver {
            $($own)*

            async fn upsert(
                &self,
                $key: &str,
                expires_at: Option<i64>,
                entry: &[u8],
            ) -> sqlx::Result<()> {
                sqlx::query(&self.sql.upsert)
                    .bind($bind)
                    .bind(expires_at)
                    .bind(entry)
                    .execute(&self.pools.get())
                    .await
                    .map(drop)
            }

            async fn delete(&self, $key: &str) -> sqlx::Result<u64> {
                Ok(sqlx::query(&self.sql.delete)
                    .bind($bind)
                    .execute(&self.pools.get())
                    .await?
                    .rows_affected())
            }

            async fn bump(&self, $key: &str, start: i64) -> sqlx::Result<()> {
                sqlx::query(&self.sql.bump)
                    .bind($bind)
                    .bind(start)
                    .execute(&self.pools.get())
                    .await
                    .map(drop)
            }

            async fn raise(&self, $key: &str, at: i64) -> sqlx::Result<()> {
                sqlx::query(&self.sql.raise)
                    .bind($bind)
                    .bind(at)
                    .execute(&self.pools.get())
                    .await
                    .map(drop)
            }

            async fn purge(&self, now_ms: i64, batch: i64) -> sqlx::Result<u64> {
                Ok(sqlx::query(&self.sql.purge)
                    .bind(now_ms)
                    .bind(batch)
                    .execute(&self.pools.get())
                    .await?
                    .rows_affected())
            }

            async fn usage(&self) -> sqlx::Result<(i64, i64)> {
                sqlx::query_as(&self.sql.usage)
                    .fetch_one(&self.pools.get())
                    .await
            }

            fn lock(&self) -> std::sync::Arc<dyn crate::backend::lock::CreationLock> {
                self.lock.clone()
            }

            fn reset(&self) {
                self.pools.reset();
            }
        }
    };
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod lock;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod store;

/// The SQL store in the registry ([`super::STORES`]). Its reach is the
/// network's whatever the engine: a store's reach is one per `type`, and
/// the URL picks the engine. For SQLite that means `lock = distributed`
/// (its own lock, `flock` stripes) and the breaker are there as for a
/// server; both are right for a file every process of one host opens.
pub(crate) const STORE: super::Store = super::Store {
    kind: crate::options::BackendKind::Database,
    feature: Some("database"),
    reach: super::Reach::Network,
    check: |options| options::DatabaseOptions::read(options).map(drop),
    #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
    open: Some(super::Opener::Shared(store::open)),
    #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
    open: None,
};
