//! SQLite: the SQL of the store; creation locks are the file store's
//! `flock` stripes, beside the database file.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::Row as _;
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::options::{DatabaseOptions, sqlite_path};
use super::store::{Pools, Row, Sql, bad_url, in_list, pool_options};
use crate::backend::flock::FileLock;
use crate::error::Result;
use crate::options::RegionOptions;

/// The statements, with the table `t` in them.
fn sql(t: &str) -> Sql {
    Sql {
        create: vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (cache_key TEXT PRIMARY KEY, \
                     expires_at INTEGER, entry BLOB, counter INTEGER)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {t}_expires_at ON {t} (expires_at)"),
        ],
        read: format!(
            "SELECT cache_key, counter, CASE WHEN length(entry) <= ? THEN entry END, \
                 length(entry) FROM {t} WHERE cache_key IN "
        ),
        upsert: format!(
            "INSERT INTO {t} (cache_key, expires_at, entry) VALUES (?, ?, ?) \
                 ON CONFLICT (cache_key) DO UPDATE SET expires_at = excluded.expires_at, \
                 entry = excluded.entry, counter = NULL"
        ),
        delete: format!("DELETE FROM {t} WHERE cache_key = ? AND entry IS NOT NULL"),
        bump: format!(
            "INSERT INTO {t} (cache_key, counter) VALUES (?, ?) \
                 ON CONFLICT (cache_key) DO UPDATE SET counter = CASE \
                 WHEN typeof(counter) != 'integer' OR counter <= 0 THEN excluded.counter \
                 ELSE counter + 1 END, entry = NULL, expires_at = NULL"
        ),
        raise: format!(
            "INSERT INTO {t} (cache_key, counter) VALUES (?, ?) \
                 ON CONFLICT (cache_key) DO UPDATE SET \
                 counter = max(CASE WHEN typeof(counter) = 'integer' THEN counter ELSE 0 END, \
                 excluded.counter), entry = NULL, expires_at = NULL"
        ),
        purge: format!(
            "DELETE FROM {t} WHERE cache_key IN \
                 (SELECT cache_key FROM {t} WHERE expires_at <= ? LIMIT ?)"
        ),
        usage: format!(
            "SELECT COUNT(*), COALESCE(SUM(length(entry)), 0) FROM {t} \
                 WHERE entry IS NOT NULL"
        ),
    }
}

/// An SQLite region's pool, statements and lock stripes.
#[derive(Debug)]
pub(super) struct SqliteDriver {
    /// The database file, whose directory is made when missing.
    file: PathBuf,
    pools: Pools<Sqlite>,
    sql: Sql,
    lock: Arc<FileLock>,
}

impl SqliteDriver {
    pub(super) fn open(own: &DatabaseOptions, options: &RegionOptions) -> Result<SqliteDriver> {
        let connect = SqliteConnectOptions::from_str(&own.url)
            .map_err(|err| {
                bad_url(
                    options,
                    &own.url,
                    "SQLite",
                    err,
                    "sqlite://path/to/file.db or sqlite:///abs/path.db",
                )
            })?
            .create_if_missing(true)
            // Readers never wait for the writer, and a writer waits up to
            // `timeout` for another instead of failing at once.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(options.timeout);
        let file = PathBuf::from(sqlite_path(&own.url).unwrap_or_default());
        let lock_dir = match &options.lock_dir {
            Some(dir) => dir.clone(),
            None => PathBuf::from(format!("{}.locks", file.display())),
        };
        let timeout = options.timeout;
        Ok(SqliteDriver {
            file,
            pools: Pools::new(move || pool_options(4, timeout).connect_lazy_with(connect.clone())),
            sql: sql(&own.table),
            lock: Arc::new(FileLock::new(lock_dir)),
        })
    }
}

driver! {
    SqliteDriver, key = |key| key, {
    async fn create_table(&self) -> sqlx::Result<()> {
        // SQLite makes a missing file, not its directory (the file store
        // makes its `data_dir` too).
        if let Some(dir) = self.file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let pool = self.pools.get();
        for statement in &self.sql.create {
            sqlx::query(statement).execute(&pool).await?;
        }
        Ok(())
    }

    async fn read(&self, keys: &[&str], max_entry_bytes: i64) -> sqlx::Result<Vec<Row>> {
        let sql = in_list(&self.sql.read, keys.len());
        let mut query = sqlx::query(&sql).bind(max_entry_bytes);
        for key in keys {
            query = query.bind(*key);
        }
        let rows = query.fetch_all(&self.pools.get()).await?;
        rows.iter()
            .map(|row| {
                Ok(Row {
                    key: row.try_get(0)?,
                    // A counter SQLite holds as anything but an integer
                    // (another tool's write) reads as missing.
                    counter: row.try_get::<Option<i64>, _>(1).unwrap_or(None),
                    entry: row.try_get::<Option<Vec<u8>>, _>(2).unwrap_or(None),
                    length: row.try_get(3)?,
                })
            })
            .collect()
    }

    }
}
