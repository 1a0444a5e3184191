//! The implementation of the memcached store, built with its cargo feature.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::client::{
    Client, Item, Keyed, Reply, Request, Verb, deadline_in, exptime, fnv1a, memcached_key, unix_now,
};
use super::lock::MemcachedLock;
use crate::backend::lock::CreationLock;
use crate::backend::{Backend, Loaded, Location, RegionScope, Scope, generation_start};
use crate::entry::Generations;
use crate::error::{Error, Result};
use crate::options::RegionOptions;

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

impl MemcachedBackend {
    /// A backend for the region's `url`; connects lazily.
    pub(crate) fn open(options: &RegionOptions) -> Result<MemcachedBackend> {
        let own = super::options::MemcachedOptions::read(options)
            .map_err(|problem| problem.for_region(options))?;
        let client = Arc::new(Client::new(&own.servers, options.max_entry_bytes));
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
        extra: &[&str],
        deadline: Instant,
        operation: &'static str,
    ) -> Result<(Generations, Vec<Option<Item>>)> {
        let region = &scope.region;
        let route = Self::counters_route(region);
        let (generation, soft, namespace) = (
            self.key(&region.generation_key),
            self.key(&region.soft_key),
            self.key(&scope.generation_key),
        );
        let extra: Vec<Cow<'_, str>> = extra.iter().map(|key| self.key(key)).collect();
        let mut keys = Vec::with_capacity(3 + extra.len());
        for key in [&generation, &soft, &namespace] {
            keys.push(Keyed { key, route });
        }
        keys.extend(extra.iter().map(|key| Keyed::own(key)));
        let mut items = self.client.get_many(&keys, deadline, operation).await?;
        let entries = items.split_off(3.min(items.len()));
        Ok((
            Generations {
                region: number(items.first().and_then(Option::as_ref)),
                soft_before_ms: number(items.get(1).and_then(Option::as_ref)),
                namespace: number(items.get(2).and_then(Option::as_ref)),
            },
            entries,
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

    async fn load(&self, at: &Location<'_>) -> Result<Loaded> {
        let mut loaded = self.load_many(std::slice::from_ref(at)).await?;
        Ok(loaded.pop().unwrap_or_default())
    }

    async fn load_many(&self, at: &[Location<'_>]) -> Result<Vec<Loaded>> {
        let Some(first) = at.first() else {
            return Ok(Vec::new());
        };
        let keys: Vec<&str> = at.iter().map(|at| at.storage_key.as_str()).collect();
        let (generations, entries) = self
            .read_with_counters(first.scope, &keys, self.deadline(), "load")
            .await?;
        Ok(entries
            .into_iter()
            .map(|entry| {
                let (bytes, oversized) = match entry {
                    Some(Item {
                        oversized: Some(size),
                        ..
                    }) => (None, Some(size)),
                    Some(item) => (Some(item.data), None),
                    None => (None, None),
                };
                Loaded {
                    generations,
                    bytes,
                    oversized,
                }
            })
            .collect())
    }

    async fn generations(&self, scope: &Scope) -> Result<Generations> {
        let (generations, _) = self
            .read_with_counters(scope, &[], self.deadline(), "generations")
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
        options.prefix = format!("tankard-unit-huge-{}:", super::super::lock::tests::unique());
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
