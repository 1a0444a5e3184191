//! A region: one backend with its expiry, stale grace, lock policy and
//! counters, shared by every namespace inside it (Beaker's cache regions).

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{Backend, Location, Purged, RegionScope, Scope, Usage};
use crate::clock::Clock;
use crate::config::{BackendKind, LockMode, OnBackendError, Refresh, RegionOptions, option_key};
use crate::dogpile::flight::Flights;
use crate::dogpile::lock::{CreationLock, LocalOnly};
use crate::entry::{self, EntryMeta, Freshness, Generations, ReadPolicy};
use crate::error::{ConfigError, Error, Kind, Result};
use crate::namespace::Cache;
use crate::stats::{Counters, Event, Stats};
use crate::sync::lock;

#[cfg(feature = "memory")]
use crate::backend::memory::{MemKeyRef, MemoryStore, NO_EPOCH, encoded_len};

/// How [`Region::invalidate`] treats the region's entries.
///
/// ```
/// # tokio_test::block_on(async {
/// use tankard::Invalidation;
/// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
/// cache.default_region().invalidate(Invalidation::Soft).await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// Every entry becomes stale: still served while one caller regenerates it.
    Soft,
    /// Every entry becomes missing at once.
    Hard,
}

/// Where a region keeps its entries.
pub(crate) enum Store {
    #[cfg(feature = "memory")]
    Memory(MemoryStore),
    Shared(Arc<dyn Backend>),
    /// `type = null`: nothing is kept.
    Null,
}

/// A key of the single-flight map: namespace id and caller's key.
pub(crate) type FlightKey = (u64, Box<str>);
/// What a creator's waiters receive.
pub(crate) type Outcome = std::result::Result<Arc<dyn Any + Send + Sync>, Error>;

/// One namespace's identity inside its region.
#[derive(Debug)]
pub(crate) struct NamespaceState {
    pub(crate) id: u64,
    pub(crate) scope: Scope,
    /// The namespace generation, for memory regions (shared backends keep it in the backend).
    pub(crate) generation: AtomicU64,
    /// Moves on after every change that can make a memory entry of this
    /// namespace less than fresh (its clear, the region's invalidations),
    /// so a hit on an entry stamped with the current epoch only needs to
    /// check its expiry.
    pub(crate) epoch: AtomicU64,
}

/// What a lookup found.
pub(crate) enum Found<T> {
    Fresh(Arc<T>),
    Stale(Arc<T>),
    Missing,
}

/// A lookup's result and the generations to stamp a new entry with
/// (`None` when the backend could not tell).
pub(crate) struct Lookup<T> {
    pub(crate) found: Found<T>,
    pub(crate) generations: Option<Generations>,
}

/// A named cache region. Get one from
/// [`CacheManager::region`](crate::CacheManager::region); clones share
/// everything.
///
/// ```
/// let config = tankard::Config::from_flat([
///     ("cache.type", "memory"),
///     ("cache.regions", "short_term"),
///     ("cache.short_term.expire", "120"),
/// ])?;
/// let cache = tankard::CacheManager::new(config)?;
/// let region = cache.region("short_term")?;
/// assert_eq!(region.name(), "short_term");
/// assert_eq!(region.backend_name(), "memory");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Region {
    pub(crate) inner: Arc<RegionInner>,
}

pub(crate) struct RegionInner {
    pub(crate) options: RegionOptions,
    pub(crate) store: Store,
    /// `None` for `lock = none`: no single-flight at all.
    pub(crate) lock: Option<Arc<dyn CreationLock>>,
    pub(crate) flights: Flights<FlightKey, Outcome>,
    pub(crate) counters: Counters,
    pub(crate) clock: Clock,
    scope: Arc<RegionScope>,
    namespaces: Mutex<HashMap<String, Arc<NamespaceState>>>,
    /// Memory regions' generations (shared backends keep theirs in the backend).
    generation: AtomicU64,
    soft_before_ms: AtomicU64,
    start_ms: u64,
    last_error_log_ms: AtomicU64,
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("name", &self.inner.options.name)
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

fn lock_error(options: &RegionOptions, value: &str, backend: &str) -> Error {
    Error::config(ConfigError::BadValue {
        key: option_key(options, "lock"),
        value: value.to_owned(),
        problem: format!("is not available for the {backend} backend"),
        expected: "auto, local, file (with lock_dir) or none".to_owned(),
    })
}

impl Region {
    pub(crate) fn open(options: RegionOptions, clock: Clock) -> Result<Region> {
        let store = open_store(&options, &clock)?;
        let lock: Option<Arc<dyn CreationLock>> = match (options.lock, &store) {
            (LockMode::None, _) => None,
            (LockMode::Local, _) | (LockMode::Auto, Store::Null) => Some(Arc::new(LocalOnly)),
            #[cfg(feature = "memory")]
            (LockMode::Auto, Store::Memory(_)) => Some(Arc::new(LocalOnly)),
            (LockMode::Auto, Store::Shared(backend)) => Some(backend.creation_lock()),
            (LockMode::File, Store::Shared(backend)) if backend.name() == "file" => {
                Some(backend.creation_lock())
            }
            #[cfg(feature = "file")]
            (LockMode::File, _) => match &options.lock_dir {
                Some(dir) => Some(Arc::new(crate::dogpile::file_lock::FileLock::new(
                    dir.clone(),
                ))),
                None => {
                    return Err(Error::config(ConfigError::Missing {
                        key: option_key(&options, "lock_dir"),
                        message: "missing; lock = file needs a lock directory".to_owned(),
                    }));
                }
            },
            (LockMode::Distributed, Store::Shared(backend))
                if !matches!(backend.name(), "file" | "dbm") =>
            {
                Some(backend.creation_lock())
            }
            (mode, store) => {
                let value = format!("{mode:?}").to_lowercase();
                return Err(lock_error(&options, &value, store_name(store)));
            }
        };
        if options.refresh == Refresh::Background {
            tracing::warn!(
                region = %options.name,
                "{} = background is not built yet: the caller that regenerates a stale \
                 value waits for it, as with foreground (every other caller still gets \
                 the stale value at once)",
                option_key(&options, "refresh"),
            );
        }
        Ok(Region {
            inner: Arc::new(RegionInner {
                scope: Arc::new(RegionScope::new(&options)),
                start_ms: options.starttime.map_or(0, |s| s.saturating_mul(1000)),
                options,
                store,
                lock,
                flights: Flights::new(),
                counters: Counters::new(),
                clock,
                namespaces: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
                soft_before_ms: AtomicU64::new(0),
                last_error_log_ms: AtomicU64::new(0),
            }),
        })
    }

    /// The region's name (`"default"` for the manager's default options).
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert_eq!(cache.default_region().name(), "default");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.options.name
    }

    /// The region's resolved options.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert!(cache.default_region().options().enabled);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn options(&self) -> &RegionOptions {
        &self.inner.options
    }

    /// The backend's name: `memory`, `file`, `memcached`, `redis`, …
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert_eq!(cache.default_region().backend_name(), "memory");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn backend_name(&self) -> &'static str {
        store_name(&self.inner.store)
    }

    /// A namespace in this region: Beaker's `get_cache_region(...)` /
    /// `cache.get_cache(namespace)`. Cheap; keep it around where you can.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let hello = cache.default_region().namespace("views::hello");
    /// hello.put("greeting", "hi".to_string()).await?;
    /// assert_eq!(hello.get::<String>("greeting").await?.as_deref().map(String::as_str), Some("hi"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn namespace(&self, name: &str) -> Cache {
        let state = {
            let mut namespaces = lock(&self.inner.namespaces);
            let next_id = namespaces.len() as u64;
            namespaces
                .entry(name.to_owned())
                .or_insert_with(|| {
                    Arc::new(NamespaceState {
                        id: next_id,
                        scope: Scope::new(self.inner.scope.clone(), name),
                        generation: AtomicU64::new(0),
                        epoch: AtomicU64::new(0),
                    })
                })
                .clone()
        };
        Cache::new(self.inner.clone(), state)
    }

    /// Invalidates every entry in the region, in every process that shares
    /// its backend: `Soft` makes them stale (served while one caller
    /// regenerates), `Hard` makes them missing. One write, whatever the size.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// use tankard::Invalidation;
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("n");
    /// ns.put("k", 1u8).await?;
    /// cache.default_region().invalidate(Invalidation::Hard).await?;
    /// assert!(!ns.contains::<u8>("k").await?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn invalidate(&self, how: Invalidation) -> Result<()> {
        let inner = &self.inner;
        let now_ms = inner.clock.now_ms();
        match (&inner.store, how) {
            (Store::Shared(backend), Invalidation::Soft) => {
                backend.soft_invalidate(&inner.scope, now_ms).await
            }
            (Store::Shared(backend), Invalidation::Hard) => backend.bump_region(&inner.scope).await,
            (_, Invalidation::Soft) => {
                inner.soft_before_ms.fetch_max(now_ms, Ordering::AcqRel);
                inner.next_epochs();
                Ok(())
            }
            (_, Invalidation::Hard) => {
                inner.generation.fetch_add(1, Ordering::AcqRel);
                inner.next_epochs();
                Ok(())
            }
        }
    }

    /// A snapshot of the region's counters.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert_eq!(cache.default_region().stats().hits, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// How many entries and bytes the backend holds, where it can tell.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// cache.namespace("n").put("k", 1u8).await?;
    /// assert_eq!(cache.default_region().usage().await?.entries, Some(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn usage(&self) -> Result<Usage> {
        match &self.inner.store {
            #[cfg(feature = "memory")]
            Store::Memory(memory) => Ok(Usage {
                entries: Some(memory.len()),
                bytes: memory.by_bytes().then(|| memory.weight()),
                ..Usage::default()
            }),
            Store::Shared(backend) => backend.usage().await,
            Store::Null => Ok(Usage {
                entries: Some(0),
                bytes: Some(0),
                ..Usage::default()
            }),
        }
    }

    /// Removes entries that can no longer be served, even as stale, and
    /// says how many. Servers expire entries themselves; the file and
    /// memory backends need this (`tankard gc` calls it). On the file
    /// backend it also removes the temporary files of writers that crashed
    /// mid-write, once they are 10 minutes old (a live writer renames its
    /// file within milliseconds).
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert_eq!(cache.default_region().purge_expired().await?.entries, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn purge_expired(&self) -> Result<Purged> {
        let now_ms = self.inner.clock.now_ms();
        match &self.inner.store {
            #[cfg(feature = "memory")]
            Store::Memory(memory) => Ok(Purged {
                entries: memory.purge_expired(now_ms),
                ..Purged::default()
            }),
            Store::Shared(backend) => backend.purge_expired(now_ms).await,
            Store::Null => Ok(Purged::default()),
        }
    }
}

fn store_name(store: &Store) -> &'static str {
    match store {
        #[cfg(feature = "memory")]
        Store::Memory(_) => "memory",
        Store::Shared(backend) => backend.name(),
        Store::Null => "null",
    }
}

fn feature_missing(options: &RegionOptions, feature: &'static str) -> Error {
    Error::config(ConfigError::FeatureMissing {
        key: option_key(options, "type"),
        value: options.backend.as_str().to_owned(),
        feature,
    })
}

fn open_store(options: &RegionOptions, clock: &Clock) -> Result<Store> {
    match options.backend {
        #[cfg(feature = "memory")]
        BackendKind::Memory => Ok(Store::Memory(MemoryStore::new(
            options.max_entries,
            options.max_bytes,
        ))),
        #[cfg(not(feature = "memory"))]
        BackendKind::Memory => Err(feature_missing(options, "memory")),
        #[cfg(feature = "file")]
        BackendKind::File => {
            let data_dir = options.data_dir.clone().ok_or_else(|| {
                Error::config(ConfigError::Missing {
                    key: option_key(options, "data_dir"),
                    message: "missing; the file backend needs a directory".to_owned(),
                })
            })?;
            let lock_dir = options
                .lock_dir
                .clone()
                .unwrap_or_else(|| data_dir.join(".locks"));
            Ok(Store::Shared(Arc::new(
                crate::backend::file::FileBackend::new(data_dir, lock_dir, options.max_entry_bytes),
            )))
        }
        #[cfg(not(feature = "file"))]
        BackendKind::File => Err(feature_missing(options, "file")),
        BackendKind::Null => Ok(Store::Null),
        other => match crate::backend::open_remote(options, clock) {
            Some(backend) => Ok(Store::Shared(backend?)),
            None => Err(feature_missing(
                options,
                match other {
                    BackendKind::Dbm => "dbm",
                    BackendKind::Memcached => "memcached",
                    BackendKind::Redis | BackendKind::RedisCluster => "redis",
                    _ => "database",
                },
            )),
        },
    }
}

impl RegionInner {
    /// Moves every namespace's epoch on, after a region invalidation.
    fn next_epochs(&self) {
        for ns in lock(&self.namespaces).values() {
            ns.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    #[inline(always)]
    pub(crate) fn count(&self, event: Event) {
        self.counters.add(event);
    }

    #[inline]
    pub(crate) fn read_policy(&self) -> ReadPolicy {
        ReadPolicy {
            now_ms: self.clock.recent_ms(),
            start_ms: self.start_ms,
        }
    }

    #[cfg(feature = "memory")]
    #[inline]
    pub(crate) fn memory_generations(&self, ns: &NamespaceState) -> Generations {
        Generations {
            region: self.generation.load(Ordering::Acquire),
            soft_before_ms: self.soft_before_ms.load(Ordering::Acquire),
            namespace: ns.generation.load(Ordering::Acquire),
        }
    }

    /// The metadata of a memory entry created now, stamped with
    /// `generations` (read before its creator ran) or the current ones,
    /// and the namespace epoch it is fresh under ([`NO_EPOCH`] if it is
    /// not fresh even now).
    #[cfg(feature = "memory")]
    pub(crate) fn memory_stamp(
        &self,
        ns: &NamespaceState,
        expire: Option<Duration>,
        generations: Option<Generations>,
    ) -> (EntryMeta, u64) {
        // The epoch first: a change after this read moves it on, and one
        // before it shows in the generations read next.
        let epoch = ns.epoch.load(Ordering::Acquire);
        let current = self.memory_generations(ns);
        let meta = EntryMeta::new(
            self.clock.recent_ms(),
            expire,
            self.options.stale,
            generations.unwrap_or(current),
        );
        let policy = ReadPolicy {
            now_ms: meta.created_ms,
            start_ms: self.start_ms,
        };
        match meta.freshness(&current, &policy) {
            Freshness::Fresh => (meta, epoch),
            _ => (meta, NO_EPOCH),
        }
    }

    /// Whether a memory entry is fresh. While the namespace's epoch is the
    /// one the entry was stamped with, nothing has happened to it but time.
    #[cfg(feature = "memory")]
    #[inline(always)]
    pub(crate) fn fresh_in_memory(
        &self,
        ns: &NamespaceState,
        meta: &EntryMeta,
        epoch: u64,
    ) -> bool {
        if epoch == ns.epoch.load(Ordering::Acquire) {
            return self.clock.recent_ms() < meta.fresh_until_ms;
        }
        self.fresh_after_invalidation(ns, meta)
    }

    /// [`fresh_in_memory`](Self::fresh_in_memory) for an entry stamped
    /// before the namespace's last invalidation (or never fresh under an
    /// epoch): the whole rule. Kept out of line, so a hit does not carry it.
    #[cfg(feature = "memory")]
    #[cold]
    #[inline(never)]
    fn fresh_after_invalidation(&self, ns: &NamespaceState, meta: &EntryMeta) -> bool {
        meta.freshness(&self.memory_generations(ns), &self.read_policy()) == Freshness::Fresh
    }

    /// The memory fast path: no await, no allocation. `None` if the region
    /// is not a memory region.
    #[cfg(feature = "memory")]
    #[inline]
    pub(crate) fn lookup_memory<T: Send + Sync + 'static>(
        &self,
        ns: &NamespaceState,
        key: &str,
    ) -> Option<Lookup<T>> {
        let Store::Memory(memory) = &self.store else {
            return None;
        };
        let generations = self.memory_generations(ns);
        let found = match memory.get(&MemKeyRef {
            namespace: ns.id,
            key,
        }) {
            None => Found::Missing,
            Some(entry) => match entry.meta.freshness(&generations, &self.read_policy()) {
                Freshness::Missing => Found::Missing,
                freshness => match entry.value.downcast::<T>() {
                    Ok(value) if freshness == Freshness::Fresh => Found::Fresh(value),
                    Ok(value) => Found::Stale(value),
                    Err(_) => {
                        self.count(Event::DecodeError);
                        Found::Missing
                    }
                },
            },
        };
        Some(Lookup {
            found,
            generations: Some(generations),
        })
    }

    /// The hit path of a memory region: the fresh value or `None`, with no
    /// `Lookup` built.
    #[cfg(feature = "memory")]
    #[inline]
    pub(crate) fn fresh_memory<T: Send + Sync + 'static>(
        &self,
        ns: &NamespaceState,
        key: &str,
    ) -> Option<Arc<T>> {
        let Store::Memory(memory) = &self.store else {
            return None;
        };
        // Checked where `get` left it: moving the entry out first reads it
        // back in wider loads than `get` stored it with, a store-forwarding
        // stall on every hit (as on a function's typed map).
        let found = memory.get(&MemKeyRef {
            namespace: ns.id,
            key,
        });
        let entry = found.as_ref()?;
        if !self.fresh_in_memory(ns, &entry.meta, entry.epoch) {
            return None;
        }
        found?.value.downcast::<T>().ok()
    }

    /// Reads a key: fresh, stale or missing. Backend failures are errors
    /// here; the caller decides whether to bypass.
    pub(crate) async fn lookup<T>(&self, ns: &NamespaceState, key: &str) -> Result<Lookup<T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        #[cfg(feature = "memory")]
        if let Some(lookup) = self.lookup_memory(ns, key) {
            return Ok(lookup);
        }
        let Store::Shared(backend) = &self.store else {
            return Ok(Lookup {
                found: Found::Missing,
                generations: Some(Generations::default()),
            });
        };
        let at = ns.scope.locate(key);
        let loaded = backend.load(&at).await?;
        if let Some(size) = loaded.oversized {
            self.count(Event::DecodeError);
            tracing::debug!(
                region = %self.options.name,
                key = %at.storage_key,
                "entry ignored: {size} bytes, over max_entry_bytes ({})",
                self.options.max_entry_bytes,
            );
        }
        let found = match loaded.bytes {
            None => Found::Missing,
            Some(bytes) => self.decode(&at, &bytes, &loaded.generations),
        };
        Ok(Lookup {
            found,
            generations: Some(loaded.generations),
        })
    }

    fn decode<T: DeserializeOwned>(
        &self,
        at: &Location<'_>,
        bytes: &[u8],
        generations: &Generations,
    ) -> Found<T> {
        let raw = match entry::open(&at.storage_key, bytes, self.options.secret.as_ref()) {
            Ok(raw) => raw,
            Err(err) => {
                self.count(Event::DecodeError);
                tracing::debug!(region = %self.options.name, key = %at.storage_key, "entry ignored: {err}");
                return Found::Missing;
            }
        };
        let freshness = raw.meta.freshness(generations, &self.read_policy());
        if freshness == Freshness::Missing {
            return Found::Missing;
        }
        match entry::decode_payload::<T>(&raw) {
            Ok(value) if freshness == Freshness::Fresh => Found::Fresh(Arc::new(value)),
            Ok(value) => Found::Stale(Arc::new(value)),
            Err(err) => {
                self.count(Event::DecodeError);
                tracing::debug!(region = %self.options.name, key = %at.storage_key, "entry ignored: {err}");
                Found::Missing
            }
        }
    }

    /// Stores a value created now. `generations` are those read before the
    /// creator ran, so a `clear` that happened meanwhile hides this entry.
    pub(crate) async fn store<T>(
        &self,
        ns: &NamespaceState,
        key: &str,
        value: &Arc<T>,
        expire: Option<Duration>,
        generations: Option<Generations>,
    ) -> Result<()>
    where
        T: Serialize + Send + Sync + 'static,
    {
        // The clock lookups read: an entry must never look fresh to a
        // lookup that read the time before the entry was made.
        let now_ms = self.clock.recent_ms();
        match &self.store {
            #[cfg(feature = "memory")]
            Store::Memory(memory) => {
                let (meta, epoch) = self.memory_stamp(ns, expire, generations);
                memory.insert(
                    MemKeyRef {
                        namespace: ns.id,
                        key,
                    },
                    value.clone() as Arc<dyn Any + Send + Sync>,
                    meta,
                    epoch,
                    || encoded_len(&**value),
                );
                Ok(())
            }
            Store::Shared(backend) => {
                let generations = match generations {
                    Some(generations) => generations,
                    None => backend.generations(&ns.scope).await?,
                };
                let meta = EntryMeta::new(now_ms, expire, self.options.stale, generations);
                let at = ns.scope.locate(key);
                let bytes = entry::encode(
                    &at.storage_key,
                    &meta,
                    &**value,
                    self.options.secret.as_ref(),
                )
                .map_err(|err| {
                    Error::new(Kind::Encode {
                        message: err.to_string(),
                    })
                })?;
                let size = bytes.len() as u64;
                if size > self.options.max_entry_bytes {
                    return Err(Error::too_large(size, self.options.max_entry_bytes));
                }
                backend.store(&at, bytes, meta.ttl(now_ms)).await
            }
            Store::Null => Ok(()),
        }
    }

    pub(crate) async fn remove(&self, ns: &NamespaceState, key: &str) -> Result<bool> {
        match &self.store {
            #[cfg(feature = "memory")]
            Store::Memory(memory) => Ok(memory.remove(&MemKeyRef {
                namespace: ns.id,
                key,
            })),
            Store::Shared(backend) => backend.remove(&ns.scope.locate(key)).await,
            Store::Null => Ok(false),
        }
    }

    pub(crate) async fn clear(&self, ns: &NamespaceState) -> Result<()> {
        match &self.store {
            Store::Shared(backend) => backend.bump_namespace(&ns.scope).await,
            _ => {
                ns.generation.fetch_add(1, Ordering::AcqRel);
                ns.epoch.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
        }
    }

    /// Counts a backend failure and logs it at most once a second per
    /// region; returns the error back when the region says not to bypass.
    pub(crate) fn backend_failed(&self, err: &Error) -> Result<()> {
        self.count(Event::BackendError);
        let now_ms = self.clock.now_ms();
        let last = self.last_error_log_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= 1000
            && self
                .last_error_log_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                region = %self.options.name,
                total = self.counters.snapshot().backend_errors,
                "cache backend failed, running without it: {err}"
            );
        }
        match self.options.on_backend_error {
            OnBackendError::Bypass => Ok(()),
            _ => Err(err.clone()),
        }
    }
}
