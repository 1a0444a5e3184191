//! A region: its tiers (an in-process memory tier, a shared store, or
//! both), its expiry, stale grace, lock policy and counters, shared by
//! every namespace inside it (Beaker's cache regions).
//!
//! The four shapes are one struct: a memory region has only the memory
//! tier, a shared region only the shared store, a shared region with
//! `l1 = true` both ([`l1`] says how the two stay coherent), and
//! `type = null` neither.

#[cfg(feature = "memory")]
pub(crate) mod l1;

#[cfg(feature = "memory")]
use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::backplane::{Backplane, Eviction, Message};
use crate::backend::lock::{CreationLock, LocalOnly};
use crate::backend::{
    Backend, BreakerState, Location, Opened, Purged, Reach, RegionScope, Scope, Usage,
};
use crate::clock::Clock;
use crate::engine::{Engine, FlightKey, Shutdown, Storage};
pub(crate) use crate::engine::{Found, Lookup};
use crate::entry::{self, Early, EntryMeta, Freshness, Generations, ReadPolicy};
use crate::error::{ConfigError, Error, Kind, Result};
use crate::namespace::Cache;
use crate::options::{EarlyRefresh, LockMode, RegionOptions, option_key};
#[cfg(feature = "memory")]
use crate::stats::HitSample;
use crate::stats::{Event, Latencies, Stats};
use crate::sync::lock;
use crate::tags::{StampTable, TagList, Tags};

#[cfg(feature = "memory")]
use crate::backend::memory::{MemKeyRef, MemoryStore, NO_EPOCH, encoded_len};
#[cfg(feature = "memory")]
use l1::MemoryTier;

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
    /// Set before the first tagged entry of the namespace is stamped: only
    /// such namespaces' epochs move on when a tag's stamp does, so a tag
    /// invalidation costs untagged namespaces nothing.
    pub(crate) tagged: AtomicBool,
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
    /// The memory tier: a memory region's store, or the L1 of a shared one.
    #[cfg(feature = "memory")]
    pub(crate) l1: Option<MemoryTier>,
    /// The shared store (`None` for memory and null regions).
    pub(crate) l2: Option<Arc<dyn Backend>>,
    /// What carries this region's L1 evictions to other processes.
    backplane: Option<Arc<dyn Backplane>>,
    /// This region instance's id on the backplane: its own messages come
    /// back to it and are ignored.
    origin: u64,
    /// The region itself, for the backplane's listener (held weakly).
    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    me: Weak<RegionInner>,
    /// The dog-pile engine protecting this region's entries.
    pub(crate) engine: Engine,
    pub(crate) clock: Clock,
    scope: Arc<RegionScope>,
    /// Where the shared store keeps the region's tag stamps.
    tag_scope: Scope,
    /// The tag stamps this process has seen (see [`StampTable`]): a memory
    /// region's own, an L1's check of its copies; unused otherwise.
    stamps: StampTable,
    pub(crate) namespaces: Mutex<HashMap<String, Arc<NamespaceState>>>,
    /// Memory regions' generations (shared backends keep theirs in the backend).
    generation: AtomicU64,
    soft_before_ms: AtomicU64,
    start_ms: u64,
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
    pub(crate) fn open(options: RegionOptions, clock: Clock, shutdown: Shutdown) -> Result<Region> {
        let Opened {
            reach,
            shared: l2,
            memory,
        } = crate::backend::open(&options, &clock)?;
        let lock: Option<Arc<dyn CreationLock>> = match (options.lock, &l2) {
            (LockMode::None, _) => None,
            (LockMode::Local, _) | (LockMode::Auto, None) => Some(Arc::new(LocalOnly)),
            (LockMode::Auto, Some(backend)) => Some(backend.creation_lock()),
            (LockMode::File, Some(backend)) if reach == Reach::Host => {
                Some(backend.creation_lock())
            }
            #[cfg(feature = "file")]
            (LockMode::File, _) => match &options.lock_dir {
                Some(dir) => Some(Arc::new(crate::backend::flock::FileLock::new(dir.clone()))),
                None => {
                    return Err(Error::config(ConfigError::Missing {
                        key: option_key(&options, "lock_dir"),
                        message: "missing; lock = file needs a lock directory".to_owned(),
                    }));
                }
            },
            (LockMode::Distributed, Some(backend)) if reach == Reach::Network => {
                Some(backend.creation_lock())
            }
            (mode, l2) => {
                let value = format!("{mode:?}").to_lowercase();
                let name = l2.as_ref().map_or(options.backend.as_str(), |b| b.name());
                return Err(lock_error(&options, &value, name));
            }
        };
        let backplane = match &l2 {
            Some(l2) if options.l1 => crate::backend::open_backplane(&options, Some(l2))?,
            _ => None,
        };
        #[cfg(feature = "memory")]
        let l1 = open_memory_tier(&options, memory, l2.is_some(), backplane.is_some());
        // Without the feature no store opens as memory; an L1 needs it.
        #[cfg(not(feature = "memory"))]
        if options.l1 && l2.is_some() || memory {
            return Err(feature_missing(&options, "memory"));
        }
        let backend = backend_name(&options, l2.as_ref());
        let scope = Arc::new(RegionScope::new(&options));
        Ok(Region {
            inner: Arc::new_cyclic(|me| RegionInner {
                tag_scope: scope.tag_scope(),
                stamps: StampTable::default(),
                scope,
                start_ms: options.starttime.map_or(0, |s| s.saturating_mul(1000)),
                #[cfg(feature = "memory")]
                l1,
                l2,
                backplane,
                origin: origin_id(),
                me: me.clone(),
                engine: Engine::new(&options, backend, lock, clock.clone(), shutdown),
                options,
                clock,
                namespaces: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
                soft_before_ms: AtomicU64::new(0),
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
        backend_name(&self.inner.options, self.inner.l2.as_ref())
    }

    /// Whether the region keeps its entries only inside this process (a
    /// `memory` region): no other process, `tankard` included, can reach
    /// them. A shared region with `l1 = true` is not: its L1 holds copies.
    ///
    /// ```
    /// let config = tankard::Config::from_flat([
    ///     ("cache.type", "memory"),
    ///     ("cache.regions", "disk"),
    ///     ("cache.disk.type", "file"),
    ///     ("cache.disk.data_dir", "/tmp/tankard-doc-in-process"),
    /// ])?;
    /// let cache = tankard::CacheManager::new(config)?;
    /// assert!(cache.default_region().in_process());
    /// assert!(!cache.region("disk")?.in_process());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn in_process(&self) -> bool {
        #[cfg(feature = "memory")]
        return self.inner.l2.is_none() && self.inner.l1.is_some();
        #[cfg(not(feature = "memory"))]
        false
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
                        tagged: AtomicBool::new(false),
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
        if let Some(backend) = &inner.l2 {
            match how {
                Invalidation::Soft => backend.soft_invalidate(&inner.scope, now_ms).await?,
                Invalidation::Hard => backend.bump_region(&inner.scope).await?,
            }
        }
        // The memory tier's own generations: a memory region's truth, an
        // L1's copies (which, no longer fresh, fall through to the store).
        match how {
            Invalidation::Soft => {
                inner.soft_before_ms.fetch_max(now_ms, Ordering::AcqRel);
                inner.next_epochs();
            }
            Invalidation::Hard => inner.drop_local(),
        }
        inner.publish(Eviction::Region).await;
        Ok(())
    }

    /// Hides every entry that carries `tag` (see
    /// [`Cache::tags`](crate::Cache::tags) and
    /// [`CreatorContext::add_tag`](crate::CreatorContext::add_tag)), in
    /// every process that shares the region's store, with one write: the
    /// tag's stamp, the time now. An entry created at or before the stamp
    /// of one of its tags is missing (`get_or_create` makes it anew).
    /// Other processes' L1 copies are dropped through the backplane, or
    /// within `l1_expire` without one. Untagged entries are not touched.
    ///
    /// A tag that is empty or longer than [`MAX_TAG_LEN`](crate::MAX_TAG_LEN)
    /// bytes is an error ([`Error::is_bad_tag`]).
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let users = cache.namespace("users");
    /// users.clone().tags(["team:7"])?.put("ann", "Ann".to_string()).await?;
    /// users.put("bob", "Bob".to_string()).await?;
    /// cache.default_region().invalidate_tag("team:7").await?;
    /// assert!(!users.contains::<String>("ann").await?);
    /// assert!(users.contains::<String>("bob").await?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        crate::tags::check(tag)?;
        let inner = &self.inner;
        // The clock entries are created by: one created before this call
        // has a creation time at or before the stamp, so it is hidden.
        let now_ms = inner.clock.recent_ms();
        if let Some(backend) = &inner.l2 {
            let at = inner.tag_scope.locate_tag(tag);
            let record = inner.stamp_record(&at, now_ms)?;
            backend.store_tag_stamp(&at, record).await?;
        }
        inner.raise_stamp(tag, now_ms);
        inner
            .publish(Eviction::Tag {
                tag: tag.to_owned(),
                at_ms: now_ms,
            })
            .await;
        Ok(())
    }

    /// A snapshot of the region's counters, in this process.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert_eq!(cache.default_region().stats().hits, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.inner.engine.figures.snapshot()
    }

    /// The region's latency histograms since it opened, in this process:
    /// memory hits (a 1-in-64 sample), reads through the shared store,
    /// creator runs. See [`Latencies`].
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert_eq!(cache.default_region().latency().creator.count(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn latency(&self) -> Latencies {
        self.inner.engine.figures.latency()
    }

    /// [`latency`](Self::latency) over the last 30 to 60 seconds (two
    /// alternating 30-second windows of the region's clock).
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert_eq!(cache.default_region().recent_latency().lookup().quantile(0.5), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recent_latency(&self) -> Latencies {
        self.inner.engine.figures.recent_latency()
    }

    /// The state of the circuit breaker in front of the region's store;
    /// `None` for a store without one (memory, file, null).
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert_eq!(cache.default_region().breaker(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn breaker(&self) -> Option<BreakerState> {
        self.inner.l2.as_ref().and_then(|backend| backend.breaker())
    }

    /// Whether the region has a memory tier (a memory region, or an L1).
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn has_memory_tier(&self) -> bool {
        #[cfg(feature = "memory")]
        return self.inner.l1.is_some();
        #[cfg(not(feature = "memory"))]
        false
    }

    /// Forwards to the `metrics` recorder the hits this process's threads
    /// held back (each forwards its own 64 at a time), and the size of a
    /// memory region.
    pub(crate) fn forward_metrics(&self) {
        let figures = &self.inner.engine.figures;
        figures.forward_all();
        #[cfg(feature = "memory")]
        if let Some(memory) = self.inner.memory_only() {
            figures.usage(
                Some(memory.len()),
                memory.by_bytes().then(|| memory.weight()),
            );
        }
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
        let usage = self.read_usage().await?;
        // Whoever reads it (a dashboard, `tankard stats`) keeps the
        // recorder's `tankard_entries` and `tankard_bytes` current.
        self.inner.engine.figures.usage(usage.entries, usage.bytes);
        Ok(usage)
    }

    async fn read_usage(&self) -> Result<Usage> {
        if let Some(backend) = &self.inner.l2 {
            return backend.usage().await;
        }
        #[cfg(feature = "memory")]
        if let Some(memory) = self.inner.memory_only() {
            return Ok(Usage {
                entries: Some(memory.len()),
                bytes: memory.by_bytes().then(|| memory.weight()),
                ..Usage::default()
            });
        }
        Ok(Usage {
            entries: Some(0),
            bytes: Some(0),
            ..Usage::default()
        })
    }

    /// Removes entries that can no longer be served, even as stale, and
    /// says how many. Servers expire entries themselves; the file, dbm
    /// and memory backends need this (`tankard gc` calls it). On the file
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
        self.purge_expired_with(|_| {}).await
    }

    /// [`purge_expired`](Region::purge_expired), calling `progress` with
    /// what has been removed so far as it goes: after each batch on an SQL
    /// store, which deletes a few thousand rows a statement (`tankard gc`
    /// shows it), once at the end elsewhere.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let purged = cache
    ///     .default_region()
    ///     .purge_expired_with(|so_far| println!("{} removed so far", so_far.entries))
    ///     .await?;
    /// assert_eq!(purged.entries, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn purge_expired_with(
        &self,
        progress: impl Fn(&Purged) + Send + Sync,
    ) -> Result<Purged> {
        // The stores purge what was stale before the time given: with
        // `fail_safe`, an entry lives that much past its stale time.
        let now_ms = self
            .inner
            .clock
            .now_ms()
            .saturating_sub(crate::clock::millis(self.inner.options.fail_safe));
        #[cfg(feature = "memory")]
        let l1_purged = match &self.inner.l1 {
            Some(tier) => tier.store.purge_expired(now_ms),
            None => 0,
        };
        #[cfg(not(feature = "memory"))]
        let l1_purged = 0;
        let purged = match &self.inner.l2 {
            Some(backend) => backend.purge_expired_with(now_ms, &progress).await,
            // An L1's copies are not the region's entries: only a memory
            // region counts what its tier dropped.
            None => Ok(Purged {
                entries: l1_purged,
                ..Purged::default()
            }),
        };
        if let Ok(purged) = &purged {
            progress(purged);
        }
        purged
    }
}

#[cfg(not(feature = "memory"))]
fn feature_missing(options: &RegionOptions, feature: &'static str) -> Error {
    Error::config(ConfigError::FeatureMissing {
        key: option_key(options, "type"),
        value: options.backend.as_str().to_owned(),
        feature,
    })
}

/// A region's memory tier: the whole store of a memory region, the L1 of
/// a shared one with `l1 = true`, or none.
#[cfg(feature = "memory")]
fn open_memory_tier(
    options: &RegionOptions,
    memory: bool,
    shared: bool,
    backplane: bool,
) -> Option<MemoryTier> {
    match (shared, memory) {
        (false, true) => Some(MemoryTier::memory(MemoryStore::new(
            options.max_entries,
            options.max_bytes,
        ))),
        (true, _) if options.l1 => {
            let store = MemoryStore::new(Some(options.l1_max_entries), options.l1_max_bytes);
            Some(MemoryTier::l1(
                store,
                l1_bound(options, backplane),
                backplane,
            ))
        }
        _ => None,
    }
}

/// How long an L1 copy may be served (DESIGN §4, `l1_expire`): as set;
/// else the region's `expire` with a backplane (which drops copies as
/// they change), 5 s without one.
#[cfg(feature = "memory")]
fn l1_bound(options: &RegionOptions, backplane: bool) -> Duration {
    const WITHOUT_BACKPLANE: Duration = Duration::from_secs(5);
    match (options.l1_expire, backplane) {
        (Some(bound), _) => bound,
        (None, true) => options.expire.unwrap_or(Duration::MAX),
        (None, false) => WITHOUT_BACKPLANE,
    }
}

/// The name of a region's store: its shared store's, or its `type`'s.
fn backend_name(options: &RegionOptions, l2: Option<&Arc<dyn Backend>>) -> &'static str {
    match l2 {
        Some(backend) => backend.name(),
        None => options.backend.as_str(),
    }
}

/// A random id for one region instance on the backplane.
fn origin_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

impl RegionInner {
    /// Moves every namespace's epoch on, after a region invalidation.
    fn next_epochs(&self) {
        for ns in lock(&self.namespaces).values() {
            ns.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Whether this region keeps tag stamps in memory: it has a memory
    /// tier (a memory region's entries, or L1 copies) to check with them.
    fn keeps_stamps(&self) -> bool {
        #[cfg(feature = "memory")]
        return self.l1.is_some();
        #[cfg(not(feature = "memory"))]
        false
    }

    /// Moves a tag's stamp in this process's table (an invalidation here
    /// or elsewhere, or a stamp read from the store). When it moved, the
    /// memory tier's entries in namespaces that hold tagged ones take the
    /// full check (their epochs move on), and any L1 copy being taken
    /// right now is dropped once stored (it may predate the stamp).
    pub(crate) fn raise_stamp(&self, tag: &str, at_ms: u64) {
        if !self.keeps_stamps() || !self.stamps.raise(tag, at_ms) {
            return;
        }
        // After the raise: a namespace marked later stamps its entry after
        // reading the new stamp (see `stamp`).
        for ns in lock(&self.namespaces).values() {
            if ns.tagged.load(Ordering::SeqCst) {
                ns.epoch.fetch_add(1, Ordering::AcqRel);
            }
        }
        #[cfg(feature = "memory")]
        if let Some(tier) = &self.l1 {
            tier.note_eviction();
        }
    }

    /// Whether one of `tags` hides a memory-tier entry created at
    /// `created_ms`, by the stamps this process has seen.
    #[cfg(feature = "memory")]
    #[inline]
    pub(crate) fn hidden_here(&self, tags: &Tags, created_ms: u64) -> bool {
        tags.as_deref()
            .is_some_and(|tags| self.stamps.hides(tags, created_ms))
    }

    /// A tag's stamp record as stored: an entry of the unit type, created
    /// at the stamp, that never expires (so `gc` keeps it).
    fn stamp_record(&self, at: &Location<'_>, at_ms: u64) -> Result<Vec<u8>> {
        let meta = EntryMeta {
            created_ms: at_ms,
            fresh_until_ms: u64::MAX,
            stale_until_ms: u64::MAX,
            region_gen: 0,
            namespace_gen: 0,
            cost_us: 0,
            refresh_at_ms: u64::MAX,
        };
        entry::encode(
            &at.storage_key,
            &meta,
            &(),
            &[],
            self.options.secret.as_ref(),
        )
        .map_err(|err| {
            Error::new(Kind::Encode {
                message: err.to_string(),
            })
        })
    }

    /// Which of `entries` (each an entry's tags and creation time, read
    /// from the shared store) their tags' stamps hide: one read of every
    /// tag's stamp from the store, whatever the number of entries. A stamp
    /// record that does not open (damaged, foreign, another secret) counts
    /// as no invalidation.
    pub(crate) async fn hidden_in_store(
        &self,
        backend: &Arc<dyn Backend>,
        ns: &NamespaceState,
        entries: &[(&[Box<str>], u64)],
    ) -> Result<Vec<bool>> {
        let mut tags: Vec<&str> = entries
            .iter()
            .flat_map(|(tags, _)| tags.iter().map(|tag| &**tag))
            .collect();
        tags.sort_unstable();
        tags.dedup();
        if tags.is_empty() {
            return Ok(vec![false; entries.len()]);
        }
        let at: Vec<Location<'_>> = tags
            .iter()
            .map(|tag| self.tag_scope.locate_tag(tag))
            .collect();
        let records =
            round_trip(&self.options.name, ns, "tags", backend.load_tag_stamps(&at)).await?;
        let mut stamps: HashMap<&str, u64> = HashMap::with_capacity(tags.len());
        for ((tag, at), record) in tags.iter().zip(&at).zip(records) {
            let Some(record) = record else { continue };
            let secret = self.options.secret.as_ref();
            match entry::open(&at.storage_key, &record, secret) {
                Ok(raw) if raw.type_tag == entry::type_tag::<()>() => {
                    stamps.insert(tag, raw.meta.created_ms);
                    // An L1 learns of other processes' invalidations here
                    // too, backplane or not.
                    self.raise_stamp(tag, raw.meta.created_ms);
                }
                _ => {
                    self.count(Event::DecodeError);
                    tracing::debug!(region = %self.options.name, tag, "tag stamp ignored: it does not open");
                }
            }
        }
        Ok(entries
            .iter()
            .map(|(tags, created_ms)| {
                tags.iter()
                    .any(|tag| stamps.get(&**tag).is_some_and(|stamp| created_ms <= stamp))
            })
            .collect())
    }

    /// Makes every entry of the memory tier missing: a memory region's
    /// hard invalidation, and an L1 emptied.
    pub(crate) fn drop_local(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.next_epochs();
    }

    /// Counts an event off the memory hit path.
    pub(crate) fn count(&self, event: Event) {
        self.engine.count(event);
    }

    /// Starts a memory hit (the hit path: see [`Figures`](crate::stats)).
    #[cfg(feature = "memory")]
    #[inline(always)]
    pub(crate) fn start_hit(&self) -> HitSample {
        self.engine.figures.start_hit()
    }

    /// Counts a memory hit started with [`start_hit`](Self::start_hit).
    #[cfg(feature = "memory")]
    #[inline(always)]
    pub(crate) fn hit(&self, sample: HitSample) {
        self.engine.figures.hit(sample);
    }

    #[inline]
    pub(crate) fn read_policy(&self) -> ReadPolicy {
        ReadPolicy {
            now_ms: self.clock.recent_ms(),
            start_ms: self.start_ms,
            fail_safe_ms: crate::clock::millis(self.options.fail_safe),
            early: match self.options.early_refresh {
                EarlyRefresh::Off => Early::Off,
                EarlyRefresh::At(fraction) => Early::At(fraction),
                EarlyRefresh::XFetch => Early::XFetch {
                    beta: self.options.early_refresh_beta,
                    chance: -self.clock.random().ln(),
                },
            },
        }
    }

    /// The memory tier of a memory region (not an L1's).
    #[cfg(feature = "memory")]
    #[inline]
    pub(crate) fn memory_only(&self) -> Option<&MemoryStore> {
        match &self.l1 {
            Some(tier) if !tier.is_l1() => Some(&tier.store),
            _ => None,
        }
    }

    /// [`publish`](Self::publish) for one key of one namespace.
    #[cfg(feature = "memory")]
    async fn publish_key(&self, ns: &NamespaceState, key: &str) {
        self.publish(Eviction::Key {
            namespace: ns.scope.namespace.clone(),
            key: key.to_owned(),
        })
        .await;
    }

    /// Tells the other processes' L1s what changed, if this region has
    /// an L1 and a backplane. A failure is counted and logged, never
    /// returned: the change itself is made, and the others' copies still
    /// end within `l1_expire` (or sooner: a lost backplane empties them).
    ///
    /// Only changes that reached the shared store come here, and each is
    /// announced even while this process's own subscription is lost: a
    /// subscription can drop alone (killed, cut by the server's pub/sub
    /// output limit, refused on reconnecting) while the store answers and
    /// the other processes' subscriptions are live, their copies now
    /// overtaken; unannounced, those would be served for all of
    /// `l1_expire`.
    async fn publish(&self, eviction: Eviction) {
        let Some(backplane) = &self.backplane else {
            return;
        };
        let message = Message {
            origin: self.origin,
            region: self.options.name.clone(),
            eviction,
        };
        if let Err(err) = backplane.publish(&message).await {
            self.backend_failed_quietly(&err);
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
        cost_us: u32,
        generations: Option<Generations>,
        tags: &Tags,
    ) -> (EntryMeta, u64) {
        self.stamp(ns, expire, self.options.stale, cost_us, generations, tags)
    }

    #[cfg(feature = "memory")]
    fn stamp(
        &self,
        ns: &NamespaceState,
        expire: Option<Duration>,
        stale: Duration,
        cost_us: u32,
        generations: Option<Generations>,
        tags: &Tags,
    ) -> (EntryMeta, u64) {
        // Marked before the epoch is read: a tag's stamp raised after this
        // moves the epoch on (`raise_stamp`); one raised before shows in
        // the table read below.
        if tags.is_some() && !ns.tagged.load(Ordering::Relaxed) {
            ns.tagged.store(true, Ordering::SeqCst);
        }
        // The epoch first: a change after this read moves it on, and one
        // before it shows in the generations read next.
        let epoch = ns.epoch.load(Ordering::Acquire);
        let current = self.memory_generations(ns);
        let mut meta = EntryMeta::new(
            self.clock.recent_ms(),
            expire,
            stale,
            generations.unwrap_or(current),
        );
        let policy = ReadPolicy {
            now_ms: meta.created_ms,
            ..self.read_policy()
        };
        meta.cost_us = cost_us;
        meta.refresh_at_ms = policy.earliest().refresh_at_ms(&meta);
        match meta.freshness(&current, &policy) {
            Freshness::Fresh if !self.hidden_here(tags, meta.created_ms) => (meta, epoch),
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
        tags: &Tags,
    ) -> bool {
        if epoch == ns.epoch.load(Ordering::Acquire) {
            // Not `fresh_until_ms`: past `refresh_at_ms` the engine starts
            // an early refresh (without the policy the two are equal).
            return self.clock.recent_ms() < meta.refresh_at_ms;
        }
        self.fresh_after_invalidation(ns, meta, tags)
    }

    /// [`fresh_in_memory`](Self::fresh_in_memory) for an entry stamped
    /// before the namespace's last invalidation (or never fresh under an
    /// epoch): the whole rule. Kept out of line, so a hit does not carry it.
    #[cfg(feature = "memory")]
    #[cold]
    #[inline(never)]
    fn fresh_after_invalidation(&self, ns: &NamespaceState, meta: &EntryMeta, tags: &Tags) -> bool {
        // Not `Due`: the engine starts its early refresh.
        meta.freshness(&self.memory_generations(ns), &self.read_policy()) == Freshness::Fresh
            && !self.hidden_here(tags, meta.created_ms)
    }

    /// A memory region's lookup: fresh, stale or missing, with no await
    /// and no allocation. `None` if the region is not a memory region.
    #[cfg(feature = "memory")]
    #[inline]
    pub(crate) fn lookup_memory<T: Send + Sync + 'static>(
        &self,
        ns: &NamespaceState,
        key: &str,
    ) -> Option<Lookup<T>> {
        let memory = self.memory_only()?;
        let generations = self.memory_generations(ns);
        let found = match memory.get(&MemKeyRef {
            namespace: ns.id,
            key,
        }) {
            None => Found::Missing,
            Some(entry) => match entry.meta.freshness(&generations, &self.read_policy()) {
                Freshness::Missing => Found::Missing,
                _ if self.hidden_here(&entry.tags, entry.meta.created_ms) => Found::Missing,
                freshness => match entry.value.downcast::<T>() {
                    Ok(value) => Found::entry(freshness, value),
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

    /// The hit path of the memory tier (a memory region's store, or a live
    /// L1): the fresh value or `None`, with no `Lookup` built.
    #[cfg(feature = "memory")]
    #[inline]
    pub(crate) fn fresh_memory<T: Send + Sync + 'static>(
        &self,
        ns: &NamespaceState,
        key: &str,
    ) -> Option<Arc<T>> {
        let tier = self.l1.as_ref()?;
        if !tier.live() {
            self.start_listening(tier);
            return None;
        }
        // Checked where `get` left it: moving the entry out first reads it
        // back in wider loads than `get` stored it with, a store-forwarding
        // stall on every hit (as on a function's typed map).
        let found = tier.store.get(&MemKeyRef {
            namespace: ns.id,
            key,
        });
        let entry = found.as_ref()?;
        if !self.fresh_in_memory(ns, &entry.meta, entry.epoch, &entry.tags) {
            return None;
        }
        found?.value.downcast::<T>().ok()
    }

    /// Starts the backplane's listener, once, from inside a runtime (the
    /// region may have been opened outside one). Until its subscription is
    /// live the L1 stays off.
    #[cfg(feature = "memory")]
    #[cold]
    #[inline(never)]
    fn start_listening(&self, tier: &MemoryTier) {
        let Some(backplane) = &self.backplane else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() || !tier.claim_listening() {
            return;
        }
        let me: Weak<dyn crate::backend::backplane::Listener> = self.me.clone();
        backplane.listen(&self.options.name, self.origin, me);
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
        let Some(backend) = &self.l2 else {
            return Ok(Lookup {
                found: Found::Missing,
                generations: Some(Generations::default()),
            });
        };
        #[cfg(feature = "memory")]
        let l1 = match &self.l1 {
            Some(tier) => match self.fresh_memory::<T>(ns, key) {
                Some(value) => {
                    return Ok(Lookup {
                        found: Found::Fresh(value),
                        generations: None,
                    });
                }
                // Read before the store is: see `l1`'s docs.
                None => tier
                    .live()
                    .then(|| (tier, tier.before(), self.memory_generations(ns))),
            },
            None => None,
        };
        let at = ns.scope.locate(key);
        let started = std::time::Instant::now();
        let loaded = match round_trip(&self.options.name, ns, "load", backend.load(&at)).await {
            Ok(loaded) => loaded,
            Err(err) => return self.lookup_through_outage(ns, key, err),
        };
        if let Some(size) = loaded.oversized {
            self.count(Event::DecodeError);
            tracing::debug!(
                region = %self.options.name,
                key = %at.storage_key,
                "entry ignored: {size} bytes, over max_entry_bytes ({})",
                self.options.max_entry_bytes,
            );
        }
        let (mut found, _meta, tags) = match &loaded.bytes {
            None => (Found::Missing, None, None),
            Some(bytes) => self.decode(&at, bytes, &loaded.generations),
        };
        // A tagged entry costs one more round trip: its tags' stamps.
        if let (Some(entry_tags), Some(meta)) = (&tags, &_meta) {
            let hidden = self
                .hidden_in_store(backend, ns, &[(entry_tags, meta.created_ms)])
                .await?;
            if hidden.first() == Some(&true) {
                found = Found::Missing;
            }
        }
        self.engine.figures.shared_lookup(started.elapsed());
        #[cfg(feature = "memory")]
        if let (Some((tier, before, generations)), Found::Fresh(value), Some(meta)) =
            (l1, &found, _meta)
        {
            let size = loaded.bytes.as_ref().map_or(0, |b| b.len() as u64);
            self.keep_copy(
                tier,
                ns,
                key,
                value,
                &meta,
                size,
                before,
                generations,
                &tags,
            );
        }
        Ok(Lookup {
            found,
            generations: Some(loaded.generations),
        })
    }

    /// A lookup whose shared store failed: with `fail_safe`, while the
    /// store cannot be reached, this process's L1 copies stand in for it
    /// (the failure is counted here, and returned if the region says
    /// `raise`). A copy still fresh is served; an older one kept by
    /// `fail_safe` is the last good value, handed out if the creator fails
    /// too. Anything else is the failure itself.
    fn lookup_through_outage<T>(
        &self,
        ns: &NamespaceState,
        key: &str,
        err: Error,
    ) -> Result<Lookup<T>>
    where
        T: Send + Sync + 'static,
    {
        #[cfg(feature = "memory")]
        if self.through_outage(&err)
            && let Some(tier) = self.l1.as_ref().filter(|tier| tier.is_l1())
            && let Some(entry) = tier.store.get(&MemKeyRef {
                namespace: ns.id,
                key,
            })
        {
            let freshness = entry
                .meta
                .freshness(&self.memory_generations(ns), &self.read_policy());
            if freshness != Freshness::Missing
                && let Ok(value) = entry.value.downcast::<T>()
            {
                self.engine.backend_failed(&err)?;
                return Ok(Lookup {
                    found: Found::entry(freshness, value),
                    generations: None,
                });
            }
        }
        #[cfg(not(feature = "memory"))]
        let _ = (ns, key);
        Err(err)
    }

    /// Whether the L1 stands in for the shared store after `err`: the
    /// region keeps last good values (`fail_safe`) and the store could not
    /// be reached (an error reply or a bad entry says it is up).
    #[cfg(feature = "memory")]
    fn through_outage(&self, err: &Error) -> bool {
        !self.options.fail_safe.is_zero() && (err.is_connection_failure() || err.is_unavailable())
    }

    /// The fresh values of several keys of one namespace (`None` for a
    /// key with none): the memory tier first, then the shared store for the
    /// rest in one [`Backend::load_many`], so one round trip per server.
    /// Backend failures are errors here; the caller decides whether to
    /// bypass. Copies are not kept in the L1 (a lookup of one key does that).
    pub(crate) async fn get_many<T>(
        &self,
        ns: &NamespaceState,
        keys: &[&str],
    ) -> Result<Vec<Option<Arc<T>>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let mut found: Vec<Option<Arc<T>>> = vec![None; keys.len()];
        let mut wanted = Vec::with_capacity(keys.len());
        // Without the memory tier every key goes to the shared store.
        #[cfg_attr(not(feature = "memory"), allow(unused_variables))]
        for (index, key) in keys.iter().enumerate() {
            #[cfg(feature = "memory")]
            if let Some(lookup) = self.lookup_memory::<T>(ns, key) {
                if let Found::Fresh(value) | Found::Due(value) = lookup.found {
                    found[index] = Some(value);
                }
                continue;
            }
            #[cfg(feature = "memory")]
            if let Some(value) = self.fresh_memory::<T>(ns, key) {
                found[index] = Some(value);
                continue;
            }
            wanted.push(index);
        }
        let Some(backend) = self.l2.as_ref().filter(|_| !wanted.is_empty()) else {
            return Ok(found);
        };
        let at: Vec<Location<'_>> = wanted.iter().map(|&i| ns.scope.locate(keys[i])).collect();
        let loaded = backend.load_many(&at).await?;
        let mut tagged: Vec<(usize, TagList, u64)> = Vec::new();
        for ((index, at), loaded) in wanted.into_iter().zip(&at).zip(loaded) {
            if loaded.oversized.is_some() {
                self.count(Event::DecodeError);
            }
            if let Some(bytes) = &loaded.bytes
                && let (Found::Fresh(value) | Found::Due(value), meta, tags) =
                    self.decode::<T>(at, bytes, &loaded.generations)
            {
                found[index] = Some(value);
                if let (Some(tags), Some(meta)) = (tags, meta) {
                    tagged.push((index, tags, meta.created_ms));
                }
            }
        }
        // The tagged ones' stamps, all in one more round trip.
        if !tagged.is_empty() {
            let entries: Vec<(&[Box<str>], u64)> = tagged
                .iter()
                .map(|(_, tags, created_ms)| (&tags[..], *created_ms))
                .collect();
            let hidden = self.hidden_in_store(backend, ns, &entries).await?;
            for ((index, _, _), hidden) in tagged.iter().zip(hidden) {
                if hidden {
                    found[*index] = None;
                }
            }
        }
        Ok(found)
    }

    /// Keeps a fresh value read from the shared store in the L1, for as
    /// long as it stays fresh there and `l1_expire` allows.
    #[cfg(feature = "memory")]
    #[allow(clippy::too_many_arguments)]
    fn keep_copy<T: Send + Sync + 'static>(
        &self,
        tier: &MemoryTier,
        ns: &NamespaceState,
        key: &str,
        value: &Arc<T>,
        meta: &EntryMeta,
        size: u64,
        before: l1::Before,
        generations: Generations,
        tags: &Tags,
    ) {
        let now_ms = self.clock.recent_ms();
        // Up to the point where the entry may be due for an early refresh.
        let due_ms = self.read_policy().earliest().refresh_at_ms(meta);
        let left = Duration::from_millis(due_ms.saturating_sub(now_ms));
        let expire = tier.bound.map_or(left, |bound| bound.min(left));
        self.put_copy(
            tier,
            ns,
            key,
            value,
            Some(expire),
            Some(generations),
            size,
            before,
            tags,
            meta.created_ms,
        );
    }

    /// Stores an L1 copy fresh for `expire`, stamped with `generations`
    /// (read before the shared store was) or the current ones, then drops
    /// it again if any key was evicted since `before`: see `l1`'s docs.
    #[cfg(feature = "memory")]
    #[allow(clippy::too_many_arguments)]
    fn put_copy<T: Send + Sync + 'static>(
        &self,
        tier: &MemoryTier,
        ns: &NamespaceState,
        key: &str,
        value: &Arc<T>,
        expire: Option<Duration>,
        generations: Option<Generations>,
        size: u64,
        before: l1::Before,
        tags: &Tags,
        created_ms: u64,
    ) {
        let (mut meta, mut epoch) = self.stamp(ns, expire, Duration::ZERO, 0, generations, tags);
        // A copy is kept only until its entry is due for an early refresh
        // (its callers shorten `expire` to that point): it never starts one
        // itself, the shared store's entry does.
        meta.refresh_at_ms = meta.fresh_until_ms;
        // A tagged copy is as old as its entry, so that a stamp that hides
        // the entry hides the copy, even one that arrives after it is
        // taken (read after `stamp` marked the namespace).
        if tags.is_some() {
            meta.created_ms = meta.created_ms.min(created_ms);
            if self.hidden_here(tags, meta.created_ms) {
                return;
            }
            if epoch != NO_EPOCH && meta.created_ms <= self.soft_before_ms.load(Ordering::Acquire) {
                epoch = NO_EPOCH;
            }
        }
        let at = MemKeyRef {
            namespace: ns.id,
            key,
        };
        tier.store.insert(
            MemKeyRef {
                namespace: ns.id,
                key,
            },
            value.clone() as Arc<dyn Any + Send + Sync>,
            meta,
            epoch,
            tags.clone(),
            || size,
        );
        tier.recheck(&at, before);
    }

    /// How long an L1 copy of an entry made now is kept: up to the point
    /// where the entry may be due for an early refresh, which then reads
    /// the shared store's entry.
    #[cfg(feature = "memory")]
    fn until_due(&self, expire: Option<Duration>, cost_us: u32) -> Option<Duration> {
        let now_ms = self.clock.recent_ms();
        let mut meta = EntryMeta::new(now_ms, expire, Duration::ZERO, Generations::default());
        meta.cost_us = cost_us;
        let due_ms = self.read_policy().earliest().refresh_at_ms(&meta);
        expire.map(|_| Duration::from_millis(due_ms.saturating_sub(now_ms)))
    }

    /// Puts a value just written to the shared store in the L1 (replacing
    /// any copy, and any copy being taken), and tells the other processes.
    #[cfg(feature = "memory")]
    #[allow(clippy::too_many_arguments)]
    async fn replace_copy<T>(
        &self,
        ns: &NamespaceState,
        key: &str,
        value: &Arc<T>,
        expire: Option<Duration>,
        cost_us: u32,
        size: u64,
        tags: &Tags,
        created_ms: u64,
    ) where
        T: Send + Sync + 'static,
    {
        let Some(tier) = &self.l1 else { return };
        let at = MemKeyRef {
            namespace: ns.id,
            key,
        };
        tier.evict(&at);
        if tier.live() {
            let expire = self.copy_expire(tier, expire, cost_us);
            let before = tier.before();
            self.put_copy(
                tier, ns, key, value, expire, None, size, before, tags, created_ms,
            );
        }
        self.publish_key(ns, key).await;
    }

    /// Keeps a copy of a value the shared store could not take, whether or
    /// not the tier is live: see [`store`](Self::store).
    #[cfg(feature = "memory")]
    #[allow(clippy::too_many_arguments)]
    fn keep_through_outage<T>(
        &self,
        ns: &NamespaceState,
        key: &str,
        value: &Arc<T>,
        expire: Option<Duration>,
        cost_us: u32,
        tags: &Tags,
        created_ms: u64,
    ) where
        T: Serialize + Send + Sync + 'static,
    {
        let Some(tier) = &self.l1 else { return };
        let expire = self.copy_expire(tier, expire, cost_us);
        let before = tier.before();
        let size = encoded_len(&**value);
        self.put_copy(
            tier, ns, key, value, expire, None, size, before, tags, created_ms,
        );
    }

    /// How long an L1 copy of a value made now is served: until its entry
    /// is due for an early refresh, and never past `l1_expire`.
    #[cfg(feature = "memory")]
    fn copy_expire(
        &self,
        tier: &MemoryTier,
        expire: Option<Duration>,
        cost_us: u32,
    ) -> Option<Duration> {
        match (self.until_due(expire, cost_us), tier.bound) {
            (Some(expire), Some(bound)) => Some(expire.min(bound)),
            (expire, bound) => expire.or(bound),
        }
    }

    /// Decodes an entry read from the shared store: what it holds, and its
    /// metadata and tags when it is not missing (its tags' stamps are the
    /// caller's to check).
    fn decode<T: DeserializeOwned>(
        &self,
        at: &Location<'_>,
        bytes: &[u8],
        generations: &Generations,
    ) -> (Found<T>, Option<EntryMeta>, Tags) {
        let raw = match entry::open(&at.storage_key, bytes, self.options.secret.as_ref()) {
            Ok(raw) => raw,
            Err(err) => {
                self.count(Event::DecodeError);
                tracing::debug!(region = %self.options.name, key = %at.storage_key, "entry ignored: {err}");
                return (Found::Missing, None, None);
            }
        };
        let freshness = raw.meta.freshness(generations, &self.read_policy());
        if freshness == Freshness::Missing {
            return (Found::Missing, None, None);
        }
        match entry::decode_payload::<T>(&raw) {
            Ok(value) => (
                Found::entry(freshness, Arc::new(value)),
                Some(raw.meta),
                raw.tag_set(),
            ),
            Err(err) => {
                self.count(Event::DecodeError);
                tracing::debug!(region = %self.options.name, key = %at.storage_key, "entry ignored: {err}");
                (Found::Missing, None, None)
            }
        }
    }

    /// Stores a value created now. `generations` are those read before the
    /// creator ran, so a `clear` that happened meanwhile hides this entry.
    /// `cost_us` is what the value took to make (0 when it was put).
    /// `tags` are checked ones.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store<T>(
        &self,
        ns: &NamespaceState,
        key: &str,
        value: &Arc<T>,
        expire: Option<Duration>,
        cost_us: u32,
        generations: Option<Generations>,
        tags: &Tags,
    ) -> Result<()>
    where
        T: Serialize + Send + Sync + 'static,
    {
        // The clock lookups read: an entry must never look fresh to a
        // lookup that read the time before the entry was made.
        let now_ms = self.clock.recent_ms();
        #[cfg(feature = "memory")]
        if let Some(memory) = self.memory_only() {
            let (meta, epoch) = self.memory_stamp(ns, expire, cost_us, generations, tags);
            memory.insert(
                MemKeyRef {
                    namespace: ns.id,
                    key,
                },
                value.clone() as Arc<dyn Any + Send + Sync>,
                meta,
                epoch,
                tags.clone(),
                || encoded_len(&**value),
            );
            let figures = &self.engine.figures;
            if figures.usage_due() {
                figures.usage(
                    Some(memory.len()),
                    memory.by_bytes().then(|| memory.weight()),
                );
            }
            return Ok(());
        }
        let Some(backend) = &self.l2 else {
            return Ok(());
        };
        // The write to the shared store: the entry's size and creation
        // time once stored, for the L1's copy.
        let stored: Result<(u64, u64)> = async {
            let generations = match generations {
                Some(generations) => generations,
                None => backend.generations(&ns.scope).await?,
            };
            let mut meta = EntryMeta::new(now_ms, expire, self.options.stale, generations);
            meta.cost_us = cost_us;
            let at = ns.scope.locate(key);
            let bytes = entry::encode(
                &at.storage_key,
                &meta,
                &**value,
                crate::tags::slice(tags),
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
            round_trip(
                &self.options.name,
                ns,
                "store",
                backend.store(
                    &at,
                    bytes,
                    meta.ttl(now_ms, crate::clock::millis(self.options.fail_safe)),
                ),
            )
            .await
            .map(|()| (size, meta.created_ms))
        }
        .await;
        #[cfg(feature = "memory")]
        if self.l1.is_some() {
            match &stored {
                &Ok((size, created_ms)) => {
                    self.replace_copy(ns, key, value, expire, cost_us, size, tags, created_ms)
                        .await;
                }
                // With `fail_safe`, a value made while the store cannot be
                // reached is kept here (the last good value, and a
                // fail-safe value's throttle, must outlive the outage), for
                // at most `l1_expire`, and told to nobody: the others'
                // copies still match the store.
                Err(err) if self.through_outage(err) => {
                    self.keep_through_outage(ns, key, value, expire, cost_us, tags, now_ms);
                }
                // The shared entry did not change, so the other processes'
                // copies still match it; this process keeps none of a value
                // the store does not hold.
                Err(_) => self.evict_copy(ns, key, false).await,
            }
        }
        stored.map(drop)
    }

    /// Drops a key's L1 copy here and, with `publish`, in the other
    /// processes.
    #[cfg(feature = "memory")]
    async fn evict_copy(&self, ns: &NamespaceState, key: &str, publish: bool) {
        let Some(tier) = &self.l1 else { return };
        tier.evict(&MemKeyRef {
            namespace: ns.id,
            key,
        });
        if !publish {
            return;
        }
        self.publish_key(ns, key).await;
    }

    pub(crate) async fn remove(&self, ns: &NamespaceState, key: &str) -> Result<bool> {
        #[cfg(feature = "memory")]
        if let Some(memory) = self.memory_only() {
            return Ok(memory.remove(&MemKeyRef {
                namespace: ns.id,
                key,
            }));
        }
        let Some(backend) = &self.l2 else {
            return Ok(false);
        };
        let removed = backend.remove(&ns.scope.locate(key)).await;
        #[cfg(feature = "memory")]
        self.evict_copy(ns, key, removed.is_ok()).await;
        removed
    }

    pub(crate) async fn clear(&self, ns: &NamespaceState) -> Result<()> {
        if let Some(backend) = &self.l2 {
            backend.bump_namespace(&ns.scope).await?;
        }
        ns.generation.fetch_add(1, Ordering::AcqRel);
        ns.epoch.fetch_add(1, Ordering::AcqRel);
        self.publish(Eviction::Namespace {
            namespace: ns.scope.namespace.clone(),
        })
        .await;
        Ok(())
    }

    /// Counts a backend failure and logs it at most once a second per
    /// region; returns the error back when the region says not to bypass.
    pub(crate) fn backend_failed(&self, err: &Error) -> Result<()> {
        self.engine.backend_failed(err)
    }

    /// Counts a backend failure and logs it at most once a second.
    pub(crate) fn backend_failed_quietly(&self, err: &Error) {
        self.engine.backend_failed_quietly(err);
    }
}

/// One operation on the shared store, in a `tankard.backend` span (at
/// trace level: it is on the path of every shared-store hit).
async fn round_trip<T>(
    region: &str,
    ns: &NamespaceState,
    op: &'static str,
    operation: impl Future<Output = Result<T>>,
) -> Result<T> {
    let span = tracing::trace_span!(
        "tankard.backend",
        region,
        namespace = %ns.scope.namespace,
        op,
        outcome = tracing::field::Empty,
    );
    let result = tracing::Instrument::instrument(operation, span.clone()).await;
    span.record("outcome", if result.is_ok() { "ok" } else { "error" });
    result
}

/// The engine sees a region through this seam only: one key of one
/// namespace, read and written through the region's tiers.
impl Storage for RegionInner {
    type Namespace = NamespaceState;

    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn flight_key(ns: &NamespaceState, key: &str) -> FlightKey {
        (ns.id, Box::from(key))
    }

    fn lock_key(ns: &NamespaceState, key: &str) -> String {
        ns.scope.lock_key(key)
    }

    fn namespace_name(ns: &NamespaceState) -> &str {
        &ns.scope.namespace
    }

    fn lookup<T>(
        &self,
        ns: &NamespaceState,
        key: &str,
    ) -> impl Future<Output = Result<Lookup<T>>> + Send
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        RegionInner::lookup(self, ns, key)
    }

    fn store<T>(
        &self,
        ns: &NamespaceState,
        key: &str,
        value: &Arc<T>,
        expire: Option<Duration>,
        cost_us: u32,
        generations: Option<Generations>,
        tags: &Tags,
    ) -> impl Future<Output = Result<()>> + Send
    where
        T: Serialize + Send + Sync + 'static,
    {
        RegionInner::store(self, ns, key, value, expire, cost_us, generations, tags)
    }
}
