//! PostgreSQL: the SQL of the store, and advisory locks woken by
//! `LISTEN`/`NOTIFY`.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, Postgres};

use super::lock::{LockConn, Pace, Session, SessionLock, Wakeups, lock_error};
use super::options::DatabaseOptions;
use super::store::{Pools, Row, Sql, bad_url, pool_options, sql_error};
use crate::backend::lock::{HeldLock, LockGuard};
use crate::error::{Error, Result};
use crate::options::RegionOptions;

const NAME: &str = "postgres";

/// How often a waiter tries again when no release is announced.
const POLL: Duration = Duration::from_millis(50);

/// The statements, with the table `t` in them.
fn sql(t: &str) -> Sql {
    Sql {
        create: vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (cache_key TEXT PRIMARY KEY, \
                     expires_at BIGINT, entry BYTEA, counter BIGINT)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {t}_expires_at ON {t} (expires_at)"),
        ],
        read: format!(
            "SELECT cache_key, counter, CASE WHEN length(entry) <= $2 THEN entry END, \
                 length(entry) FROM {t} WHERE cache_key = ANY($1)"
        ),
        upsert: format!(
            "INSERT INTO {t} (cache_key, expires_at, entry) VALUES ($1, $2, $3) \
                 ON CONFLICT (cache_key) DO UPDATE SET expires_at = EXCLUDED.expires_at, \
                 entry = EXCLUDED.entry, counter = NULL"
        ),
        delete: format!("DELETE FROM {t} WHERE cache_key = $1 AND entry IS NOT NULL"),
        bump: format!(
            "INSERT INTO {t} (cache_key, counter) VALUES ($1, $2) \
                 ON CONFLICT (cache_key) DO UPDATE SET counter = CASE \
                 WHEN {t}.counter IS NULL OR {t}.counter <= 0 THEN EXCLUDED.counter \
                 ELSE {t}.counter + 1 END, entry = NULL, expires_at = NULL"
        ),
        raise: format!(
            "INSERT INTO {t} (cache_key, counter) VALUES ($1, $2) \
                 ON CONFLICT (cache_key) DO UPDATE SET \
                 counter = GREATEST(COALESCE({t}.counter, 0), EXCLUDED.counter), \
                 entry = NULL, expires_at = NULL"
        ),
        purge: format!(
            "DELETE FROM {t} WHERE cache_key IN \
                 (SELECT cache_key FROM {t} WHERE expires_at <= $1 LIMIT $2)"
        ),
        usage: format!(
            "SELECT COUNT(*), COALESCE(SUM(length(entry)), 0)::BIGINT FROM {t} \
                 WHERE entry IS NOT NULL"
        ),
    }
}

/// A PostgreSQL region's pools and statements.
#[derive(Debug)]
pub(super) struct PgDriver {
    pools: Pools<Postgres>,
    sql: Sql,
    /// Whether the table and its index exist: DDL is run only when not,
    /// since `CREATE INDEX IF NOT EXISTS` takes a lock that waits for
    /// every write in flight, even when the index is there.
    exists: String,
    lock: Arc<SessionLock<PgSession>>,
}

impl PgDriver {
    pub(super) fn open(own: &DatabaseOptions, options: &RegionOptions) -> Result<PgDriver> {
        let connect = PgConnectOptions::from_str(&own.url).map_err(|err| {
            bad_url(
                options,
                &own.url,
                "PostgreSQL",
                err,
                "postgres://user[:password]@host[:port]/db",
            )
        })?;
        let timeout = options.timeout;
        let data = connect.clone();
        Ok(PgDriver {
            pools: Pools::new(move || pool_options(16, timeout).connect_lazy_with(data.clone())),
            sql: sql(&own.table),
            exists: format!(
                "SELECT to_regclass('{t}') IS NOT NULL AND to_regclass('{t}_expires_at') IS NOT NULL",
                t = own.table
            ),
            lock: Arc::new(SessionLock(PgSession {
                pools: Pools::new(move || {
                    pool_options(32, timeout).connect_lazy_with(connect.clone())
                }),
                timeout,
                channel: format!("{}_locks", own.table.to_ascii_lowercase()),
                wakeups: Arc::default(),
                listening: Arc::default(),
            })),
        })
    }
}

driver! {
    PgDriver, key = |key| key, {
    async fn create_table(&self) -> sqlx::Result<()> {
        let pool = self.pools.get();
        if sqlx::query_scalar::<_, bool>(&self.exists)
            .fetch_one(&pool)
            .await?
        {
            return Ok(());
        }
        for statement in &self.sql.create {
            sqlx::query(statement).execute(&pool).await?;
        }
        Ok(())
    }

    async fn read(&self, keys: &[&str], max_entry_bytes: i64) -> sqlx::Result<Vec<Row>> {
        let rows = sqlx::query(&self.sql.read)
            .bind(keys)
            .bind(max_entry_bytes)
            .fetch_all(&self.pools.get())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Row {
                    key: row.try_get(0)?,
                    counter: row.try_get(1)?,
                    entry: row.try_get(2)?,
                    length: row.try_get::<Option<i32>, _>(3)?.map(i64::from),
                })
            })
            .collect()
    }

    }
}

/// Advisory locks on connections of their own, and the listener that
/// wakes their waiters.
#[derive(Debug)]
pub(super) struct PgSession {
    pools: Pools<Postgres>,
    timeout: Duration,
    /// The `NOTIFY` channel releases are announced on (payload: the id).
    channel: String,
    wakeups: Arc<Wakeups>,
    /// Whether a listener task runs (it clears this when it ends, so the
    /// next waiter starts another: its runtime may have shut down).
    listening: Arc<AtomicBool>,
}

impl Drop for PgSession {
    fn drop(&mut self) {
        // Ends the listener (its `recv` returns when the pool closes) and
        // the idle connections.
        self.pools.reset();
    }
}

#[async_trait]
impl Session for PgSession {
    async fn attempt(&self, id: i64) -> Result<Option<LockGuard>> {
        // The pool's own wait is bounded by `timeout` (its acquire timeout).
        let conn = self.pools.get().acquire().await;
        let mut conn = LockConn::new(conn.map_err(|err| lock_error(NAME, err))?);
        let taken = match conn.get() {
            Some(c) => {
                let take = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                    .bind(id)
                    .fetch_one(c);
                tokio::time::timeout(self.timeout, take).await
            }
            None => Ok(Ok(false)),
        };
        // On an error or a timeout `conn` is dropped, which closes it.
        match taken {
            Ok(Ok(true)) => Ok(Some(LockGuard::new(PgHeld {
                conn: Some(conn),
                id,
                channel: self.channel.clone(),
                timeout: self.timeout,
            }))),
            Ok(Ok(false)) => {
                conn.back();
                Ok(None)
            }
            Ok(Err(err)) => Err(sql_error(NAME, "take lock", err)),
            Err(_) => Err(Error::timeout(NAME, "take lock").into_connection_failure()),
        }
    }

    fn wakeups(&self) -> Option<Arc<Wakeups>> {
        if !self.listening.swap(true, Ordering::AcqRel)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(listen(
                self.pools.get(),
                self.channel.clone(),
                Arc::downgrade(&self.wakeups),
                Listening(self.listening.clone()),
            ));
        }
        Some(self.wakeups.clone())
    }

    fn pace(&self) -> Pace {
        Pace::Notified(POLL)
    }
}

/// Listens for releases on `channel` and wakes their waiters, until the
/// lock pool closes or the region is gone. Reconnects after a failure;
/// every waiter is woken then, since releases may have been missed.
async fn listen(pool: PgPool, channel: String, wakeups: Weak<Wakeups>, _running: Listening) {
    while !pool.is_closed() && wakeups.strong_count() > 0 {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listener.await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::debug!("cannot listen on {channel}: {err}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Some(wakeups) = wakeups.upgrade() {
            wakeups.wake_all();
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    let Some(wakeups) = wakeups.upgrade() else {
                        return;
                    };
                    if let Ok(id) = notification.payload().parse::<i64>() {
                        wakeups.wake(id);
                    }
                }
                // The connection dropped and was made again.
                Ok(None) => match wakeups.upgrade() {
                    Some(wakeups) => wakeups.wake_all(),
                    None => return,
                },
                Err(err) => {
                    tracing::debug!("lost the listener on {channel}: {err}");
                    break;
                }
            }
        }
    }
}

/// Clears a session's `listening` flag when its listener task ends or is
/// dropped with its runtime.
struct Listening(Arc<AtomicBool>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A held advisory lock and the connection it lives on.
struct PgHeld {
    conn: Option<LockConn<Postgres>>,
    id: i64,
    channel: String,
    timeout: Duration,
}

impl HeldLock for PgHeld {
    fn release(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        let conn = self.conn.take();
        let (id, channel, timeout) = (self.id, std::mem::take(&mut self.channel), self.timeout);
        Box::pin(async move {
            let Some(mut conn) = conn else { return };
            let unlock = async {
                match conn.get() {
                    // The notification goes out when the statement commits,
                    // after the unlock.
                    Some(c) => sqlx::query("SELECT pg_advisory_unlock($1), pg_notify($2, $3)")
                        .bind(id)
                        .bind(&channel)
                        .bind(id.to_string())
                        .fetch_one(c)
                        .await
                        .and_then(|row| row.try_get::<bool, _>(0))
                        .map(Some),
                    None => Ok(None),
                }
            };
            match tokio::time::timeout(timeout, unlock).await {
                // Unlocked: the connection holds nothing and goes back.
                Ok(Ok(Some(true))) => conn.back(),
                // Not ours any more, or unknown: closing the session frees
                // whatever it holds.
                Ok(Ok(_)) | Ok(Err(_)) | Err(_) => drop(conn),
            }
        })
    }
}
