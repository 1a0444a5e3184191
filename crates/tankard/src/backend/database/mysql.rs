//! MySQL and MariaDB: the SQL of the store, and `GET_LOCK` locks that
//! waiters poll for.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use sqlx::Row as _;
use sqlx::mysql::{MySql, MySqlConnectOptions};

use super::lock::{LockConn, Pace, Session, SessionLock, Wakeups, lock_error};
use super::options::DatabaseOptions;
use super::store::{Pools, Row, Sql, bad_url, in_list, pool_options, sql_error};
use crate::backend::lock::{HeldLock, LockGuard};
use crate::error::{Error, Result};
use crate::options::RegionOptions;

const NAME: &str = "mysql";

/// The first and the longest pause between a waiter's attempts.
const FIRST_POLL: Duration = Duration::from_millis(2);
const MAX_POLL: Duration = Duration::from_millis(10);

/// The statements, with the table `t` in them.
fn sql(t: &str) -> Sql {
    Sql {
        // VARBINARY: keys compare byte by byte, whatever the server's
        // collation (a case-insensitive one would merge `A` and `a`).
        create: vec![format!(
            "CREATE TABLE IF NOT EXISTS {t} (cache_key VARBINARY(512) NOT NULL PRIMARY KEY, \
                 expires_at BIGINT NULL, entry LONGBLOB NULL, counter BIGINT NULL, \
                 INDEX {t}_expires_at (expires_at))"
        )],
        // The `IN` list is appended per call.
        read: format!(
            "SELECT cache_key, counter, CASE WHEN LENGTH(entry) <= ? THEN entry END, \
                 LENGTH(entry) FROM {t} WHERE cache_key IN "
        ),
        upsert: format!(
            "INSERT INTO {t} (cache_key, expires_at, entry) VALUES (?, ?, ?) \
                 ON DUPLICATE KEY UPDATE expires_at = VALUES(expires_at), \
                 entry = VALUES(entry), counter = NULL"
        ),
        delete: format!("DELETE FROM {t} WHERE cache_key = ? AND entry IS NOT NULL"),
        bump: format!(
            "INSERT INTO {t} (cache_key, counter) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE counter = IF(counter IS NULL OR counter <= 0, \
                 VALUES(counter), counter + 1), entry = NULL, expires_at = NULL"
        ),
        raise: format!(
            "INSERT INTO {t} (cache_key, counter) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE counter = GREATEST(COALESCE(counter, 0), \
                 VALUES(counter)), entry = NULL, expires_at = NULL"
        ),
        purge: format!("DELETE FROM {t} WHERE expires_at <= ? LIMIT ?"),
        usage: format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(LENGTH(entry)), 0) AS SIGNED) FROM {t} \
                 WHERE entry IS NOT NULL"
        ),
    }
}

/// A MySQL or MariaDB region's pools and statements.
#[derive(Debug)]
pub(super) struct MySqlDriver {
    pools: Pools<MySql>,
    sql: Sql,
    lock: Arc<SessionLock<MySqlSession>>,
}

impl MySqlDriver {
    pub(super) fn open(own: &DatabaseOptions, options: &RegionOptions) -> Result<MySqlDriver> {
        let connect = MySqlConnectOptions::from_str(&own.url).map_err(|err| {
            bad_url(
                options,
                &own.url,
                "MySQL",
                err,
                "mysql://user[:password]@host[:port]/db",
            )
        })?;
        let timeout = options.timeout;
        let data = connect.clone();
        Ok(MySqlDriver {
            pools: Pools::new(move || pool_options(16, timeout).connect_lazy_with(data.clone())),
            sql: sql(&own.table),
            lock: Arc::new(SessionLock(MySqlSession {
                pools: Pools::new(move || {
                    pool_options(32, timeout).connect_lazy_with(connect.clone())
                }),
                timeout,
                prefix: own.table.clone(),
            })),
        })
    }
}

driver! {
    MySqlDriver, key = |key| key.as_bytes(), {
    async fn create_table(&self) -> sqlx::Result<()> {
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
            query = query.bind(key.as_bytes());
        }
        let rows = query.fetch_all(&self.pools.get()).await?;
        rows.iter()
            .map(|row| {
                let key: Vec<u8> = row.try_get(0)?;
                Ok(Row {
                    // Keys are ours, so UTF-8; a foreign one matches none.
                    key: String::from_utf8(key).unwrap_or_default(),
                    counter: row.try_get(1)?,
                    entry: row.try_get(2)?,
                    length: row.try_get(3)?,
                })
            })
            .collect()
    }

    }
}

/// `GET_LOCK` locks on connections of their own.
#[derive(Debug)]
pub(super) struct MySqlSession {
    pools: Pools<MySql>,
    timeout: Duration,
    /// Starts every lock name, so two tables' locks never meet.
    prefix: String,
}

impl MySqlSession {
    /// The lock's name: at most 64 characters, as the server requires.
    fn name(&self, id: i64) -> String {
        let prefix = &self.prefix[..self.prefix.len().min(40)];
        format!("{prefix}:{id:016x}")
    }
}

#[async_trait]
impl Session for MySqlSession {
    async fn attempt(&self, id: i64) -> Result<Option<LockGuard>> {
        let name = self.name(id);
        // The pool's own wait is bounded by `timeout` (its acquire timeout).
        let conn = self.pools.get().acquire().await;
        let mut conn = LockConn::new(conn.map_err(|err| lock_error(NAME, err))?);
        // 1 taken; 0 held elsewhere; NULL an error.
        let taken = match conn.get() {
            Some(c) => {
                let take = sqlx::query_scalar::<_, Option<i64>>("SELECT GET_LOCK(?, 0)")
                    .bind(&name)
                    .fetch_one(c);
                tokio::time::timeout(self.timeout, take).await
            }
            None => Ok(Ok(None)),
        };
        // On an error or a timeout `conn` is dropped, which closes it.
        match taken {
            Ok(Ok(Some(1))) => Ok(Some(LockGuard::new(MySqlHeld {
                conn: Some(conn),
                name,
                timeout: self.timeout,
            }))),
            Ok(Ok(_)) => {
                conn.back();
                Ok(None)
            }
            Ok(Err(err)) => Err(sql_error(NAME, "take lock", err)),
            Err(_) => Err(Error::timeout(NAME, "take lock").into_connection_failure()),
        }
    }

    fn wakeups(&self) -> Option<Arc<Wakeups>> {
        None
    }

    fn pace(&self) -> Pace {
        Pace::Polled(FIRST_POLL, MAX_POLL)
    }
}

/// A held `GET_LOCK` and the connection it lives on.
struct MySqlHeld {
    conn: Option<LockConn<MySql>>,
    name: String,
    timeout: Duration,
}

impl HeldLock for MySqlHeld {
    fn release(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        let conn = self.conn.take();
        let (name, timeout) = (std::mem::take(&mut self.name), self.timeout);
        Box::pin(async move {
            let Some(mut conn) = conn else { return };
            let release = async {
                match conn.get() {
                    Some(c) => sqlx::query("SELECT RELEASE_LOCK(?)")
                        .bind(&name)
                        .fetch_one(c)
                        .await
                        .and_then(|row| row.try_get::<Option<i64>, _>(0)),
                    None => Ok(None),
                }
            };
            match tokio::time::timeout(timeout, release).await {
                // Released: the connection holds nothing and goes back.
                Ok(Ok(Some(1))) => conn.back(),
                // Not ours, or unknown: closing the session frees it.
                _ => drop(conn),
            }
        })
    }
}
