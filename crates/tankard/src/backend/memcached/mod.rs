//! The memcached backend (`type = "ext:memcached"`, cargo feature
//! `memcached`): entries, generation counters and creation locks on one or
//! more memcached servers, `url = "host:port[;host:port…]"`.
//!
//! # What it owns
//!
//! - **Entries**, under their memcached key (below), with a server TTL of
//!   `expire + stale`, so a stale value is still there to be served while
//!   one caller regenerates it (Beaker's memcached backend sets the TTL to
//!   `expire`, so nothing stale survives).
//! - **Generation counters**: the region's generation (hard invalidation),
//!   its soft-invalidation time, and each namespace's generation (`clear`).
//!   Clearing is one `incr`; nothing is ever flushed, so other data on a
//!   shared server is never touched.
//! - **Creation locks**: `add` with an owner token and a lifetime (see
//!   "Creation lock").
//!
//! # Key layout
//!
//! The keys are the core's (see `key.rs`): the entry
//! `{prefix}{region}:{namespace}#{key}`, the counters `{prefix}{region}!gen`,
//! `{prefix}{region}!soft` and `{prefix}{region}:{namespace}!gen`, the lock
//! `{prefix}{region}:{namespace}!lock#{key}`, each replaced by
//! `{prefix}#{blake3 hex}` when longer than `key_length`. memcached
//! additionally refuses keys over 250 bytes and keys with spaces or control
//! characters, which namespaces and user keys may well contain: such a key
//! is stored as `{prefix}#{blake3 hex of the whole key}` (the same form,
//! so it can never equal an unhashed key), or `#{hex}` if the prefix is
//! itself unusable. The entry records its full key, so even a hash
//! collision would read as a miss, never as another key's value.
//!
//! Counter values are decimal text (what `incr` needs). A counter created by
//! a first `clear` starts at the current unix time in microseconds rather
//! than 1, so a counter that is evicted and created again never comes back
//! to a value that old entries carry. A counter holding anything else
//! (written by another program; `incr` refuses it) reads as missing, so
//! caching goes on, and the next bump restarts it the same way.
//!
//! # Entries over `max_entry_bytes`
//!
//! The `VALUE <key> <flags> <bytes>` header gives a value's length before
//! the value: a longer one is skipped, never read into memory, and the
//! lookup reports it as oversized (a miss, counted as a decode error). Up
//! to 16 MiB it is drained through the connection's 16 KiB read buffer, so
//! the connection stays pooled; beyond, draining would cost more than one
//! reconnect (and could overrun `timeout`), so the connection is closed.
//!
//! # Placement and failures
//!
//! Entries and locks are placed by rendezvous hashing of their memcached
//! key over the servers; a region's three kinds of counters are placed by
//! the region (prefix and name), so they sit together on one server. A
//! lookup is therefore one multi-key `get` per server involved (at most
//! two: the counters' and the entry's), sent in parallel — one round trip.
//!
//! Rendezvous hashing was chosen over a ketama ring: with a handful of
//! servers it is a few multiplications per key, needs no ring to build,
//! spreads keys evenly without virtual nodes, and removing a server moves
//! exactly the keys it held. The hash is FNV-1a plus a SplitMix64
//! finalizer, fixed here so that every process, whatever its Rust version,
//! places every key alike.
//!
//! A server that refuses, resets or times out is marked down for one
//! second; its keys go to the server with the next highest score, and the
//! failed operation is retried there within the same deadline, so a dead
//! node costs a call nothing beyond one refused connection. After the
//! second, the next operation tries it again. Two caveats come with any
//! memcached client that fails over: processes may briefly disagree on
//! which node is down, and a node that returns still holds what it held,
//! so an entry replaced or cleared elsewhere during its absence can
//! reappear until its TTL ends.
//!
//! Every operation is bounded by the region's `timeout` (default 2 s),
//! connection included (a `timeout` too long for the clock means no
//! bound, never a panic), and fails with a timeout error past it; with
//! `on_backend_error = "bypass"` the caller then gets the creator's value.
//!
//! # TTLs
//!
//! The server TTL is the entry's `expire + stale` in whole seconds rounded
//! up, plus one: memcached's clock ticks once a second, so an item given
//! `n` seconds may otherwise vanish almost a second early. Beyond 30 days
//! memcached reads the number as an absolute unix time, so longer TTLs are
//! sent as now + TTL (and as "no expiry" beyond 2038, where the protocol's
//! signed 32-bit field ends; the entry's own header still expires it).
//!
//! # Creation lock
//!
//! `add <lock key> <token>` with a lifetime of `lock_timeout` (rounded up
//! to whole seconds, plus the one-second tick): it succeeds for exactly one
//! caller while the key exists. The token (process id, counter, 128 random
//! bits) identifies the owner:
//!
//! - **Renewal**: while the creator runs, the owner extends the lifetime
//!   every `lock_timeout / 3` with `gets` + `cas` of its own token, which
//!   fails if anyone else took the lock meanwhile. A crashed owner stops
//!   renewing and its lock lapses after `lock_timeout`.
//! - **Where**: renewal and release go to the server the lock was taken
//!   on, not to wherever its key routes by then: a lock taken on a
//!   stand-in while its own server was down would otherwise be left
//!   behind there when that server returns mid-creation.
//! - **Release** is owner-checked: `gets`, compare the token, then
//!   `md <key> C<cas>` (memcached ≥ 1.6), a compare-and-delete that only
//!   deletes if the item is unchanged since the `gets`. memcached has no
//!   text-protocol compare-and-delete; on servers without `md` the lock is
//!   overwritten by a tombstone with `cas` (atomic and owner-checked) and
//!   the tombstone deleted. Either way a holder whose lock expired and was
//!   taken over cannot delete the new owner's lock.
//! - **A lock without expiry** cannot be Tankard's: something else left
//!   it (a `set` with exptime 0). The first waiter to see it gives it
//!   Tankard's lock lifetime (`mg … t` shows no TTL, then `touch`), so it
//!   lapses after `lock_timeout` instead of making every miss on its key
//!   wait `wait_timeout`, forever. Locks that do expire are never touched:
//!   waiters extending a crashed holder's lock would keep it alive.
//! - **Waiters** in other processes poll with `add`, with a jittered
//!   exponential back-off from 2 ms to 10 ms, and give up after
//!   `wait_timeout` (then the dog-pile engine runs the creator itself).
//!   memcached has no notifications, so polling it is; the short cap keeps
//!   a waiter at most 10 ms behind the holder's release, where
//!   dogpile.cache's memcached lock sleeps 100 ms and more between tries.
//!   The cost is bounded: about 130 (at most 200) `add`s a second per waiting
//!   process, because waiters inside one process share one poller (the
//!   single-flight map).
//!
//! # Client
//!
//! The `memcache` crate was considered first. Its 0.21 release offers an
//! async client only in its `exp` module, documented as experimental and
//! liable to change without notice; its default features pull in OpenSSL,
//! and even without them it brings `url`/`idna`, `r2d2` and `rand`; and its
//! router cannot skip a failed server. What this backend needs is ten
//! commands, so [`client`] implements them on tokio: a bounded pool of
//! connections per server, a deadline on every exchange, failure-aware
//! rendezvous hashing, and cancellation safety (a connection whose exchange
//! was interrupted is dropped, never reused). The feature adds no crate,
//! only tokio's `net` and `io-util`.

mod client;
mod lock;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Backend, Loaded, Location, RegionScope, Scope, generation_start};
use crate::backend::lock::CreationLock;
use crate::config::RegionOptions;
use crate::entry::Generations;
use crate::error::{Error, Result};
use client::{
    Client, Item, Keyed, Reply, Request, Verb, deadline_in, exptime, fnv1a, memcached_key, unix_now,
};
use lock::MemcachedLock;

const BACKEND: &str = "memcached";
/// How often a contended soft invalidation retries its `gets`/`cas`.
const CAS_RETRIES: usize = 16;

/// Entries, counters and locks on memcached servers.
#[derive(Debug)]
pub(crate) struct MemcachedBackend {
    client: Arc<Client>,
    lock: Arc<MemcachedLock>,
    prefix: String,
    timeout: Duration,
}

/// A counter's value; a missing or non-numeric one reads as 0.
fn number(item: Option<&Item>) -> u64 {
    item.and_then(|item| std::str::from_utf8(&item.data).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

fn unexpected(operation: &str, reply: Reply) -> Error {
    Error::backend(BACKEND, format!("{operation}: unexpected reply {reply:?}"))
}

/// The memcached store in the registry ([`super::STORES`]).
pub(crate) const SPEC: super::Spec = super::Spec {
    kinds: &[crate::config::BackendKind::Memcached],
    network: true,
    open: |options| MemcachedBackend::open(options).map(|b| Arc::new(b) as Arc<dyn Backend>),
};

impl MemcachedBackend {
    /// A backend for the region's `url`; connects lazily.
    pub(crate) fn open(options: &RegionOptions) -> Result<MemcachedBackend> {
        let client = Arc::new(Client::new(
            options.url.as_deref().unwrap_or_default(),
            options.max_entry_bytes,
        )?);
        Ok(MemcachedBackend {
            lock: Arc::new(MemcachedLock::new(
                client.clone(),
                options.prefix.clone(),
                options.lock_timeout,
                options.timeout,
            )),
            client,
            prefix: options.prefix.clone(),
            timeout: options.timeout,
        })
    }

    fn key<'a>(&self, key: &'a str) -> Cow<'a, str> {
        memcached_key(key, &self.prefix)
    }

    fn deadline(&self) -> Instant {
        deadline_in(self.timeout)
    }

    /// Where a region's counters live: all on one server, chosen by the
    /// region, so that a lookup reaches at most two servers.
    fn counters_route(region: &RegionScope) -> u64 {
        fnv1a(&[region.prefix.as_bytes(), region.region.as_bytes()])
    }

    /// Reads the region's and the namespace's counters, plus `extra` keys,
    /// in one round trip.
    async fn read_with_counters(
        &self,
        scope: &Scope,
        extra: Option<&str>,
        deadline: Instant,
        operation: &'static str,
    ) -> Result<(Generations, Option<Item>)> {
        let region = &scope.region;
        let route = Self::counters_route(region);
        let (generation, soft, namespace) = (
            self.key(&region.generation_key),
            self.key(&region.soft_key),
            self.key(&scope.generation_key),
        );
        let mut keys = Vec::with_capacity(4);
        for key in [&generation, &soft, &namespace] {
            keys.push(Keyed { key, route });
        }
        let extra = extra.map(|key| self.key(key));
        if let Some(entry) = &extra {
            keys.push(Keyed::own(entry));
        }
        let mut items = self.client.get_many(&keys, deadline, operation).await?;
        let entry = if extra.is_some() {
            items.pop().flatten()
        } else {
            None
        };
        Ok((
            Generations {
                region: number(items[0].as_ref()),
                soft_before_ms: number(items[1].as_ref()),
                namespace: number(items[2].as_ref()),
            },
            entry,
        ))
    }

    /// Moves a counter on: `incr`, or create it with `add` if missing
    /// (starting at [`generation_start`]). A counter holding anything but a
    /// number (written by someone else) reads as missing everywhere (see
    /// [`number`]), so it is restarted the same way, with `set`.
    async fn bump(&self, key: &str, route: u64, operation: &'static str) -> Result<()> {
        let deadline = self.deadline();
        let key = self.key(key);
        for _ in 0..2 {
            let verb = match self
                .client
                .run(route, &Request::Incr(&key, 1), deadline, operation)
                .await?
            {
                Reply::Incremented => return Ok(()),
                Reply::NotFound => Verb::Add,
                Reply::NonNumeric => Verb::Set,
                other => return Err(unexpected(operation, other)),
            };
            let start = generation_start().to_string();
            let store = Request::Store {
                verb,
                key: &key,
                exptime: 0,
                data: start.as_bytes(),
            };
            match self.client.run(route, &store, deadline, operation).await? {
                Reply::Stored => return Ok(()),
                // Another process created it just now: increment theirs.
                Reply::NotStored => {}
                other => return Err(unexpected(operation, other)),
            }
        }
        Err(Error::backend(
            BACKEND,
            format!("{operation}: counter {key} keeps vanishing; is the server out of memory?"),
        ))
    }
}

#[async_trait]
impl Backend for MemcachedBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn lock_reach(&self) -> super::LockReach {
        super::LockReach::Network
    }

    async fn load(&self, at: &Location<'_>) -> Result<Loaded> {
        let (generations, entry) = self
            .read_with_counters(at.scope, Some(&at.storage_key), self.deadline(), "load")
            .await?;
        let (bytes, oversized) = match entry {
            Some(Item {
                oversized: Some(size),
                ..
            }) => (None, Some(size)),
            Some(item) => (Some(item.data), None),
            None => (None, None),
        };
        Ok(Loaded {
            generations,
            bytes,
            oversized,
        })
    }

    async fn generations(&self, scope: &Scope) -> Result<Generations> {
        let (generations, _) = self
            .read_with_counters(scope, None, self.deadline(), "generations")
            .await?;
        Ok(generations)
    }

    async fn store(&self, at: &Location<'_>, entry: Vec<u8>, ttl: Option<Duration>) -> Result<()> {
        let key = self.key(&at.storage_key);
        let request = Request::Store {
            verb: Verb::Set,
            key: &key,
            exptime: exptime(ttl, unix_now()),
            data: &entry,
        };
        match self
            .client
            .run(Keyed::own(&key).route, &request, self.deadline(), "store")
            .await?
        {
            Reply::Stored => Ok(()),
            other => Err(unexpected("store", other)),
        }
    }

    async fn remove(&self, at: &Location<'_>) -> Result<bool> {
        let key = self.key(&at.storage_key);
        match self
            .client
            .run(
                Keyed::own(&key).route,
                &Request::Delete(&key),
                self.deadline(),
                "remove",
            )
            .await?
        {
            Reply::Deleted => Ok(true),
            Reply::NotFound => Ok(false),
            other => Err(unexpected("remove", other)),
        }
    }

    async fn bump_namespace(&self, scope: &Scope) -> Result<()> {
        self.bump(
            &scope.generation_key,
            Self::counters_route(&scope.region),
            "clear",
        )
        .await
    }

    async fn bump_region(&self, region: &RegionScope) -> Result<()> {
        self.bump(
            &region.generation_key,
            Self::counters_route(region),
            "invalidate",
        )
        .await
    }

    /// Raises the soft-invalidation time to `at_ms` (never lowers it, even
    /// when processes race): `gets` + `cas`, or `add` when absent.
    async fn soft_invalidate(&self, region: &RegionScope, at_ms: u64) -> Result<()> {
        let deadline = self.deadline();
        let key = self.key(&region.soft_key);
        let route = Self::counters_route(region);
        let value = at_ms.to_string();
        for _ in 0..CAS_RETRIES {
            let verb = match self
                .client
                .run(route, &Request::Gets(&key), deadline, "invalidate")
                .await?
            {
                Reply::Values(mut items) => match items.pop().flatten() {
                    None => Verb::Add,
                    Some(item) if number(Some(&item)) >= at_ms => return Ok(()),
                    Some(item) => Verb::Cas(item.cas),
                },
                other => return Err(unexpected("invalidate", other)),
            };
            let store = Request::Store {
                verb,
                key: &key,
                exptime: 0,
                data: value.as_bytes(),
            };
            match self
                .client
                .run(route, &store, deadline, "invalidate")
                .await?
            {
                Reply::Stored => return Ok(()),
                Reply::NotStored | Reply::Exists | Reply::NotFound => continue,
                other => return Err(unexpected("invalidate", other)),
            }
        }
        Err(Error::backend(
            BACKEND,
            format!("invalidate: {key} changed {CAS_RETRIES} times in a row; try again"),
        ))
    }

    fn creation_lock(&self) -> Arc<dyn CreationLock> {
        self.lock.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{RegionScope, Scope};

    fn server() -> String {
        let url =
            std::env::var("TANKARD_MEMCACHED_URL").unwrap_or_else(|_| "127.0.0.1:21211".into());
        url.split([';', ',']).next().unwrap().trim().to_owned()
    }

    /// Issue 11: `timeout = 10000000000000000000` passed `tankard check`,
    /// then the first call panicked with "overflow when adding duration to
    /// instant" (and the lock wait did the same with `wait_timeout`). Built
    /// at the options level, so it holds whatever bounds the parser sets.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn durations_too_long_for_the_clock_never_panic() {
        let mut options = RegionOptions::defaults("default");
        options.url = Some(server());
        options.prefix = format!("tankard-unit-huge-{}:", lock::tests::unique());
        options.timeout = Duration::MAX;
        options.lock_timeout = Duration::MAX;
        options.wait_timeout = Duration::MAX;
        let backend = MemcachedBackend::open(&options).unwrap();
        let scope = Scope::new(Arc::new(RegionScope::new(&options)), "n");
        let at = scope.locate("k");
        backend
            .store(&at, b"v".to_vec(), Some(Duration::MAX))
            .await
            .unwrap();
        let loaded = backend.load(&at).await.unwrap();
        assert_eq!(loaded.bytes.as_deref(), Some(&b"v"[..]));
        backend.bump_namespace(&scope).await.unwrap();
        backend.bump_region(&scope.region).await.unwrap();
        backend.soft_invalidate(&scope.region, 1).await.unwrap();
        assert!(backend.remove(&at).await.unwrap());

        // A waiter with an endless wait gets the lock once the holder lets go.
        let locks = backend.creation_lock();
        let key = scope.lock_key("k");
        let held = locks.try_acquire(&key).await.unwrap().expect("free lock");
        let waiter = tokio::spawn({
            let (locks, key) = (locks.clone(), key.clone());
            async move { locks.acquire(&key, Duration::MAX).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        held.release().await;
        let taken = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter never took the released lock")
            .unwrap()
            .unwrap()
            .expect("a lock");
        taken.release().await;
    }
}
