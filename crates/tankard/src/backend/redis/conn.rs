//! The connection to Redis or a Redis Cluster: opened lazily, bounded in
//! time, and carrying the pub/sub wake-ups of the creation lock.
//!
//! [`Link`] is shared by a region's backend, its creation lock and the
//! lock's renewal tasks. It holds the client (no network yet) and opens the
//! connection on first use, so `CacheManager::new` stays synchronous and a
//! server that is down at start-up fails calls (bypassed by default), not
//! the app. Both connection kinds reconnect by themselves afterwards: the
//! standalone one is redis' `ConnectionManager`, the cluster one the
//! cluster client's own node repair.
//!
//! Every operation goes through [`Link::run`], which applies the region's
//! `timeout` to the whole operation, connecting included, and turns a
//! client error into the crate's [`Error`] (the client's error stays
//! reachable as its source, never in the public API).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, PushInfo, PushKind, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::{Notify, OnceCell};

use crate::error::{Error, Result};

/// Every critical section below leaves the map consistent, so a poisoned
/// lock's data is still good.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The client a [`Link`] connects with.
// One per region, built once and never moved on a hot path: boxing the
// larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Target {
    /// One server (`ext:redis`).
    Single(::redis::Client),
    /// A cluster, from its seed nodes (`ext:rediscluster`).
    Cluster(ClusterClient),
}

/// An open connection; clones share it (both kinds multiplex).
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A region's connection, opened on first use and shared by its backend,
/// its creation lock and the lock's renewal tasks.
pub(super) struct Link {
    /// `"redis"` or `"redis-cluster"`, for errors.
    pub(super) name: &'static str,
    target: Target,
    conn: OnceCell<Conn>,
    /// The region's `timeout`: the limit on every operation.
    pub(super) timeout: Duration,
    /// Lock waiters to wake when a lock-release message arrives.
    pub(super) wakeups: Arc<Wakeups>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("name", &self.name)
            .field("connected", &self.conn.initialized())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Link {
    pub(super) fn new(
        name: &'static str,
        target: Target,
        timeout: Duration,
        wakeups: Arc<Wakeups>,
    ) -> Link {
        Link {
            name,
            target,
            conn: OnceCell::new(),
            timeout,
            wakeups,
        }
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// The connection, opening it on first use. A failed opening leaves the
    /// cell empty, so the next call tries again.
    async fn connection(&self) -> RedisResult<Conn> {
        self.conn
            .get_or_try_init(|| async {
                match &self.target {
                    Target::Single(client) => {
                        let wakeups = self.wakeups.clone();
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(self.timeout))
                            .set_response_timeout(Some(self.timeout))
                            // Few, short retries: every failed call starts a
                            // new reconnection anyway, and a long backoff
                            // would delay using a server that came back.
                            .set_number_of_retries(1)
                            .set_min_delay(Duration::from_millis(50))
                            .set_max_delay(Duration::from_millis(500))
                            .set_push_sender(move |info: PushInfo| {
                                wakeups.on_push(info);
                                Ok::<(), RedisError>(())
                            })
                            .set_automatic_resubscription();
                        // Lazy: it connects on the first command, and this
                        // needs the runtime we are now running in.
                        ConnectionManager::new_lazy_with_config(client.clone(), config)
                            .map(Conn::Single)
                    }
                    Target::Cluster(client) => {
                        client.get_async_connection().await.map(Conn::Cluster)
                    }
                }
            })
            .await
            .cloned()
    }

    /// Runs one operation on the connection, within the region's timeout.
    pub(super) async fn run<T, F, Fut>(&self, op: &'static str, work: F) -> Result<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempt = async {
            let conn = self.connection().await?;
            work(conn).await
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(self.error(op, err)),
            Err(_) => Err(Error::timeout(self.name, op).into_connection_failure()),
        }
    }

    /// Runs one command.
    pub(super) async fn query<T: ::redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T> {
        self.run(
            op,
            |mut conn| async move { cmd.query_async(&mut conn).await },
        )
        .await
    }

    /// Runs a pipeline: its commands in one write, their replies in one
    /// read. On a cluster every command must be in one slot.
    pub(super) async fn pipeline(&self, op: &'static str, pipe: &Pipeline) -> Result<Vec<Value>> {
        self.run(
            op,
            |mut conn| async move { pipe.query_async(&mut conn).await },
        )
        .await
    }

    /// Runs one script invocation (EVALSHA, loading the script on NOSCRIPT).
    pub(super) async fn script<T: ::redis::FromRedisValue>(
        &self,
        op: &'static str,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        self.run(op, |mut conn| async move {
            invocation.invoke_async(&mut conn).await
        })
        .await
    }

    pub(super) fn error(&self, op: &'static str, err: RedisError) -> Error {
        let hint = if err.is_io_error() || err.is_connection_refusal() {
            "; is the server running? (for the tests: scripts/services)"
        } else {
            ""
        };
        let unreachable = unreachable(&err);
        let error = Error::backend_source(self.name, format!("{op} failed: {err}{hint}"), err);
        if unreachable {
            error.into_connection_failure()
        } else {
            error
        }
    }

    /// Subscribes to a lock's release channel (sharded on a cluster, so the
    /// subscription lives on the node that owns the lock's slot).
    pub(super) async fn subscribe(&self, channel: &str) -> Result<()> {
        self.run("subscribe", |conn| async move {
            match conn {
                Conn::Single(mut c) => c.subscribe(channel).await,
                Conn::Cluster(mut c) => c.ssubscribe(channel).await,
            }
        })
        .await
    }

    pub(super) async fn unsubscribe(&self, channel: &str) -> Result<()> {
        self.run("unsubscribe", |conn| async move {
            match conn {
                Conn::Single(mut c) => c.unsubscribe(channel).await,
                Conn::Cluster(mut c) => c.sunsubscribe(channel).await,
            }
        })
        .await
    }
}

/// Whether a client error means the server could not be reached, which
/// opens the region's circuit breaker: the socket failed (refused, reset,
/// closed, timed out), the cluster client has no connection to the node,
/// or the server says it cannot serve at all for now (a cluster or master
/// down, a dataset still loading). Error replies, wrong types and
/// replies that do not parse come from a server that answered.
fn unreachable(err: &RedisError) -> bool {
    use ::redis::{ErrorKind, ServerErrorKind};
    matches!(
        err.kind(),
        ErrorKind::Io
            | ErrorKind::ClusterConnectionNotFound
            | ErrorKind::Server(
                ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
            )
    )
}

/// Lock waiters by release channel. The connection's push messages land in
/// [`Wakeups::on_push`], which wakes the waiters of that channel.
#[derive(Debug, Default)]
pub(super) struct Wakeups {
    channels: Mutex<HashMap<Vec<u8>, Channel>>,
}

#[derive(Debug)]
struct Channel {
    notify: Arc<Notify>,
    waiters: usize,
}

impl Wakeups {
    /// Registers interest in a channel: its `Notify`, and whether this is
    /// the first interest (the caller then subscribes).
    pub(super) fn register(&self, channel: &str) -> (Arc<Notify>, bool) {
        let mut channels = lock(&self.channels);
        let entry = channels
            .entry(channel.as_bytes().to_vec())
            .or_insert_with(|| Channel {
                notify: Arc::new(Notify::new()),
                waiters: 0,
            });
        entry.waiters += 1;
        (entry.notify.clone(), entry.waiters == 1)
    }

    /// Drops one interest; `true` if it was the last (the caller then
    /// unsubscribes).
    pub(super) fn unregister(&self, channel: &str) -> bool {
        let mut channels = lock(&self.channels);
        let Some(entry) = channels.get_mut(channel.as_bytes()) else {
            return false;
        };
        entry.waiters = entry.waiters.saturating_sub(1);
        if entry.waiters == 0 {
            channels.remove(channel.as_bytes());
            return true;
        }
        false
    }

    /// Called by the connection for every push message; must not block.
    pub(super) fn on_push(&self, info: PushInfo) {
        match info.kind {
            PushKind::Message | PushKind::SMessage => {
                let Some(Value::BulkString(channel)) = info.data.first() else {
                    return;
                };
                if let Some(entry) = lock(&self.channels).get(channel) {
                    entry.notify.notify_waiters();
                }
            }
            // Subscriptions may be gone: let every waiter retry now rather
            // than at its next poll.
            PushKind::Disconnection => {
                for entry in lock(&self.channels).values() {
                    entry.notify.notify_waiters();
                }
            }
            _ => {}
        }
    }
}
