//! A namespace: one group of keys inside a region, and the API a caller
//! uses (`get_or_create`, `get`, `put`, `remove`, `contains`, `clear`).
//! [`typed`] is the same for one value type on a memory region, which is
//! what cached functions use there.

#[cfg(feature = "memory")]
// Used by `#[tankard::cached]` only.
#[cfg_attr(not(feature = "macros"), allow(dead_code))]
pub(crate) mod typed;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::{self, Creator, Local, Owned};
use crate::error::{Error, Result};
use crate::region::{Found, NamespaceState, RegionInner};
use crate::tags::Tags;

/// One namespace inside a region: Beaker's `Cache` object. Cheap to clone;
/// clones share the region.
///
/// Values are returned as `Arc<T>`: a memory hit hands out the stored value
/// itself, without copying or decoding it.
///
/// # Concurrent calls on the same key
///
/// [`get_or_create`](Cache::get_or_create) follows the dog-pile rules:
///
/// - a **fresh** value is returned without touching any lock;
/// - on a **miss**, exactly one caller runs the creator. Other callers in
///   this process wait for it and are handed its value (no polling);
///   callers in other processes sharing the backend wait on the region's
///   creation lock and then read the stored value;
/// - a **stale** value (past `expire` but within `stale`, or
///   soft-invalidated) is returned at once to every caller but one, which
///   regenerates it;
/// - if the creator **fails**, its error is returned to the caller and to
///   everyone waiting on it, nothing is stored, and the next call tries
///   again; if it **panics**, the panic continues in its own caller and the
///   waiters get an error for which [`Error::is_creator_panic`] is true;
///   if its caller is **cancelled** (the future dropped), one of the
///   waiters takes over and runs its own creator.
///
/// ```
/// # tokio_test::block_on(async {
/// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
/// let ns = cache.namespace("views::hello");
/// let v = ns.get_or_create("greeting", || async { "hello".to_string() }).await?;
/// assert_eq!(*v, "hello");
/// // Second call: a hit; the creator does not run.
/// let v = ns.get_or_create::<String, _, _>("greeting", || async { unreachable!() }).await?;
/// assert_eq!(*v, "hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Cache {
    pub(crate) region: Arc<RegionInner>,
    pub(crate) ns: Arc<NamespaceState>,
    expire: Option<Option<Duration>>,
    /// The tags of what this handle stores ([`Cache::tags`]).
    pub(crate) tags: Tags,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("region", &self.region.options.name)
            .field("namespace", &self.ns.scope.namespace)
            .field("expire", &self.expiry())
            .field("tags", &self.tags)
            .finish()
    }
}

impl Cache {
    fn call<'a, T>(&'a self, key: &'a str) -> engine::Call<'a, T, RegionInner> {
        engine::Call {
            tags: self.tags.clone(),
            ..engine::Call::new(&self.region, &self.ns, key, self.expiry())
        }
    }

    pub(crate) fn new(region: Arc<RegionInner>, ns: Arc<NamespaceState>) -> Cache {
        Cache {
            region,
            ns,
            expire: None,
            tags: None,
        }
    }

    /// The same namespace with another expiry for what it stores (Beaker's
    /// `cache.cache(expire=10)`): a [`Duration`], or `None` for entries that
    /// never expire. A zero duration makes an entry stale at once (useful
    /// with `stale`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let plain = cache.namespace("views::hello").expire(Duration::from_secs(10));
    /// assert_eq!(plain.expiry(), Some(Duration::from_secs(10)));
    /// let forever = cache.namespace("n").expire(None);
    /// assert_eq!(forever.expiry(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn expire(mut self, expire: impl Into<Option<Duration>>) -> Cache {
        self.expire = Some(expire.into());
        self
    }

    /// The same namespace, tagging what it stores (`put`, `get_or_create`)
    /// with `tags`, in place of this handle's tags, so that
    /// [`Region::invalidate_tag`](crate::Region::invalidate_tag) can hide
    /// it. Reads see every entry, tagged or not. A creator may add tags of
    /// its own ([`CreatorContext::add_tag`](crate::CreatorContext::add_tag)).
    ///
    /// A tag that is empty or longer than [`MAX_TAG_LEN`](crate::MAX_TAG_LEN)
    /// bytes, or more than [`MAX_TAGS`](crate::MAX_TAGS) of them, is an
    /// error ([`Error::is_bad_tag`](crate::Error::is_bad_tag)).
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let pages = cache.namespace("pages");
    /// pages.clone().tags(["user:42", "home"])?.put("/u/42", "<p>Ann</p>".to_string()).await?;
    /// cache.default_region().invalidate_tag("user:42").await?;
    /// assert!(pages.get::<String>("/u/42").await?.is_none());
    /// assert!(pages.clone().tags([""]).unwrap_err().is_bad_tag());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tags<I, S>(mut self, tags: I) -> Result<Cache>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.tags = crate::tags::collect(tags)?;
        Ok(self)
    }

    /// How long what this handle stores stays fresh: its own
    /// [`expire`](Cache::expire), else the region's; `None`: forever.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert_eq!(cache.namespace("n").expiry(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn expiry(&self) -> Option<Duration> {
        self.expire.unwrap_or(self.region.options.expire)
    }

    /// The namespace's name.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert_eq!(cache.namespace("views::hello").name(), "views::hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.ns.scope.namespace
    }

    /// The name of the region the namespace is in.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert_eq!(cache.namespace("n").region_name(), "default");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn region_name(&self) -> &str {
        &self.region.options.name
    }

    /// Returns the cached value, or runs `creator` once (across callers
    /// and processes) and caches its result. See "Concurrent calls on the
    /// same key" above.
    ///
    /// The error is a backend error only with `on_backend_error = "error"`;
    /// by default a failing backend is bypassed and the creator's value
    /// returned.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("squares");
    /// let nine = ns.get_or_create("3", || async { 3u64 * 3 }).await?;
    /// assert_eq!(*nine, 9);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn get_or_create<T, F, Fut>(&self, key: &str, creator: F) -> Result<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.get_or_create_with(key, Local(|| async { Ok(creator().await) }))
            .await
    }

    /// Like [`get_or_create`](Cache::get_or_create) for a fallible
    /// creator: an `Err` is returned (wrapped, see
    /// [`Error::creator_error`]) to this caller and every caller waiting on
    /// it, and nothing is stored.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("parse");
    /// let n = ns.get_or_try_create("42", || async { "42".parse::<u32>() }).await?;
    /// assert_eq!(*n, 42);
    /// let err = ns.get_or_try_create("x", || async { "x".parse::<u32>() }).await.unwrap_err();
    /// assert!(err.creator_error::<std::num::ParseIntError>().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn get_or_try_create<T, E, F, Fut>(&self, key: &str, creator: F) -> Result<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Into<Box<dyn StdError + Send + Sync>>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        self.get_or_create_with(
            key,
            Local(|| async { creator().await.map_err(Error::creator_boxed) }),
        )
        .await
    }

    /// [`get_or_create`](Cache::get_or_create) for a creator that owns what
    /// it needs (the bounds of `tokio::spawn`), so it can run in a task of
    /// its own when the caller need not wait for it: with
    /// `refresh = background`, every caller of a stale entry, the one that
    /// starts its regeneration too, gets the stale value at once while a
    /// task regenerates it (one task across processes; its failure is
    /// counted and logged, and the stale value stays). On a miss the
    /// caller waits, as with `get_or_create`. With a borrowing creator,
    /// `get_or_create` regenerates in the caller even with
    /// `refresh = background`.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("users");
    /// let id = 7u32;
    /// let name = ns.get_or_spawn("7", move || async move { format!("user {id}") }).await?;
    /// assert_eq!(*name, "user 7");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn get_or_spawn<T, F, Fut>(&self, key: &str, creator: F) -> Result<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.get_or_create_with(key, Owned(|| async move { Ok(creator().await) }))
            .await
    }

    /// [`get_or_try_create`](Cache::get_or_try_create) for a creator that
    /// can run in a task of its own: see [`get_or_spawn`](Cache::get_or_spawn).
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("parse");
    /// let n = ns.get_or_try_spawn("42", || async { "42".parse::<u32>() }).await?;
    /// assert_eq!(*n, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn get_or_try_spawn<T, E, F, Fut>(&self, key: &str, creator: F) -> Result<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Into<Box<dyn StdError + Send + Sync>>,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
    {
        self.get_or_create_with(
            key,
            Owned(|| async move { creator().await.map_err(Error::creator_boxed) }),
        )
        .await
    }

    /// The read path of every front end (these methods, [`blocking`],
    /// cached functions): a fresh value from memory (a memory region's or
    /// an L1's) at once, else the dog-pile engine with `creator`, a
    /// creator in the engine's own terms (see [`engine::Creator`]).
    ///
    /// [`blocking`]: crate::blocking
    #[inline]
    pub(crate) async fn get_or_create_with<T, C>(&self, key: &str, creator: C) -> Result<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        C: Creator<T>,
    {
        #[cfg(feature = "memory")]
        if let Some(value) = self.try_get_fresh::<T>(key) {
            return Ok(value);
        }
        self.create(key, creator).await
    }

    /// [`get_or_create_with`](Cache::get_or_create_with) past its hit: the
    /// engine, for a front end that has looked in memory already (the
    /// sync API, which must look before it enters a runtime).
    pub(crate) async fn create<T, C>(&self, key: &str, creator: C) -> Result<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        C: Creator<T>,
    {
        // Boxed: the miss path's state machine is large, and inlining it
        // would make every hit move it around (measured: +180 ns a hit).
        Box::pin(engine::get_or_create(self.call(key), creator)).await
    }

    /// [`get_or_create_with`](Cache::get_or_create_with) that also says
    /// whether the value is a stale one, served while another caller,
    /// process or task regenerates it. No fast path of its own: the page
    /// layer has tried the memory hit already, and the dog-pile engine
    /// reads a fresh value first anyway.
    #[cfg(feature = "axum")]
    pub(crate) async fn get_or_create_served<T, C>(
        &self,
        key: &str,
        creator: C,
    ) -> (Result<Arc<T>>, bool)
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        C: Creator<T>,
    {
        let served_stale = std::sync::atomic::AtomicBool::new(false);
        let call = engine::Call {
            served_stale: Some(&served_stale),
            ..self.call(key)
        };
        let result = Box::pin(engine::get_or_create(call, creator)).await;
        (result, served_stale.into_inner())
    }

    /// Whether a stale entry's regeneration goes to a task (`refresh =
    /// background`).
    #[cfg(feature = "axum")]
    pub(crate) fn refreshes_in_background(&self) -> bool {
        self.region.options.refresh == crate::options::Refresh::Background
    }

    /// The fresh value of a memory region, without waiting for anything:
    /// `None` on a miss, a stale value, or a region that is not in memory.
    /// This is the whole hit path of a memory region: a hash lookup with a
    /// borrowed key and an `Arc` clone.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("n");
    /// assert_eq!(ns.try_get_fresh::<u8>("k"), None);
    /// ns.put("k", 7u8).await?;
    /// assert_eq!(ns.try_get_fresh::<u8>("k").as_deref(), Some(&7));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "memory")]
    #[inline]
    pub fn try_get_fresh<T: Send + Sync + 'static>(&self, key: &str) -> Option<Arc<T>> {
        if !self.region.options.enabled {
            return None;
        }
        let sample = self.region.start_hit();
        let value = self.region.fresh_memory::<T>(&self.ns, key)?;
        self.region.hit(sample);
        Some(value)
    }

    /// The fresh value under `key`, if any. Runs nothing.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("n");
    /// assert!(ns.get::<String>("k").await?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn get<T>(&self, key: &str) -> Result<Option<Arc<T>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        Ok(match self.peek::<T>(key).await? {
            Some((value, true)) => Some(value),
            _ => None,
        })
    }

    /// The fresh values of several keys, in their order (`None` for a key
    /// with no fresh value), in one round trip per server: a Redis
    /// pipeline, one multi-key `get` per memcached server, the file store's
    /// reads at once. Runs nothing and counts nothing, like [`get`](Cache::get).
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("users");
    /// ns.put("1", "ada".to_string()).await?;
    /// ns.put("3", "grace".to_string()).await?;
    /// let names = ns.get_many::<String, _>(&["1", "2", "3"]).await?;
    /// let names: Vec<Option<&str>> = names.iter().map(|n| n.as_deref().map(String::as_str)).collect();
    /// assert_eq!(names, [Some("ada"), None, Some("grace")]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn get_many<T, K>(&self, keys: &[K]) -> Result<Vec<Option<Arc<T>>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
        K: AsRef<str>,
    {
        if !self.region.options.enabled || keys.is_empty() {
            return Ok(vec![None; keys.len()]);
        }
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        match self.region.get_many::<T>(&self.ns, &keys).await {
            Ok(found) => Ok(found),
            Err(err) => self
                .region
                .backend_failed(&err)
                .map(|()| vec![None; keys.len()]),
        }
    }

    /// The values under `keys`, in their order, with the missing ones made
    /// by one call of `creator` (dogpile.cache's `get_or_create_multi`,
    /// Caffeine's `getAll`). `creator` gets the keys to make, in the order
    /// given, and returns one value for each, in that order.
    ///
    /// The dog-pile rules hold for each key: a fresh value is returned as
    /// it is; a stale one is served while another caller regenerates it;
    /// a key that another caller or process is creating is awaited, not
    /// created twice. `creator` is called once for the keys this call can
    /// claim, and again, for one key by itself, only if the caller that was
    /// creating that key gave up (it was cancelled, or the wait for its
    /// lock ran out).
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let users = cache.namespace("users");
    /// users.put("1", "ada".to_string()).await?;
    /// let names = users
    ///     .get_or_create_many(&["1", "2", "3"], |missing| async move {
    ///         // One query for the missing ids: here, "2" and "3".
    ///         assert_eq!(missing, ["2", "3"]);
    ///         missing.iter().map(|id| format!("user {id}")).collect()
    ///     })
    ///     .await?;
    /// let names: Vec<&str> = names.iter().map(|name| name.as_str()).collect();
    /// assert_eq!(names, ["ada", "user 2", "user 3"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn get_or_create_many<T, K, F, Fut>(
        &self,
        keys: &[K],
        creator: F,
    ) -> Result<Vec<Arc<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        K: AsRef<str>,
        F: Fn(Vec<String>) -> Fut,
        Fut: Future<Output = Vec<T>>,
    {
        self.get_or_try_create_many(keys, |missing| {
            let made = creator(missing);
            async move { Ok::<_, std::convert::Infallible>(made.await) }
        })
        .await
    }

    /// [`get_or_create_many`](Cache::get_or_create_many) for a fallible
    /// creator: its error fails the call, and is handed to the callers
    /// waiting on any of its keys, as [`get_or_try_create`]'s is. A creator
    /// that returns another number of values than it was given keys fails
    /// the same way.
    ///
    /// [`get_or_try_create`]: Cache::get_or_try_create
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("parsed");
    /// let parsed = ns
    ///     .get_or_try_create_many(&["1", "2"], |missing| async move {
    ///         missing.iter().map(|text| text.parse::<u32>()).collect::<Result<Vec<_>, _>>()
    ///     })
    ///     .await?;
    /// assert_eq!((*parsed[0], *parsed[1]), (1, 2));
    /// let failed = ns
    ///     .get_or_try_create_many(&["x"], |missing| async move {
    ///         missing.iter().map(|text| text.parse::<u32>()).collect::<Result<Vec<_>, _>>()
    ///     })
    ///     .await;
    /// assert!(failed.unwrap_err().is_creator());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn get_or_try_create_many<T, K, E, F, Fut>(
        &self,
        keys: &[K],
        creator: F,
    ) -> Result<Vec<Arc<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        K: AsRef<str>,
        E: Into<Box<dyn StdError + Send + Sync>>,
        F: Fn(Vec<String>) -> Fut,
        Fut: Future<Output = std::result::Result<Vec<T>, E>>,
    {
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        let creator = |missing| {
            let made = creator(missing);
            async move { made.await.map_err(Error::creator_boxed) }
        };
        Box::pin(engine::get_or_create_many(
            &self.region,
            &self.ns,
            &keys,
            self.expiry(),
            &self.tags,
            creator,
        ))
        .await
    }

    /// The value under `key`, fresh or stale, with `true` when fresh.
    /// Runs nothing and counts nothing.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("n");
    /// ns.put("k", 1u8).await?;
    /// assert_eq!(ns.peek::<u8>("k").await?.map(|(v, fresh)| (*v, fresh)), Some((1, true)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn peek<T>(&self, key: &str) -> Result<Option<(Arc<T>, bool)>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        if !self.region.options.enabled {
            return Ok(None);
        }
        match self.region.lookup::<T>(&self.ns, key).await {
            Ok(lookup) => Ok(match lookup.found {
                Found::Fresh(value) | Found::Due(value) => Some((value, true)),
                Found::Stale(value) => Some((value, false)),
                Found::Expired(_) | Found::Missing => None,
            }),
            Err(err) => self.region.backend_failed(&err).map(|()| None),
        }
    }

    /// Whether a fresh value is stored under `key` (as type `T`).
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("n");
    /// ns.put("k", 1u8).await?;
    /// assert!(ns.contains::<u8>("k").await?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn contains<T>(&self, key: &str) -> Result<bool>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        Ok(self.get::<T>(key).await?.is_some())
    }

    /// Stores a value under `key`, replacing what was there.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("n");
    /// ns.put("k", vec![1, 2, 3]).await?;
    /// assert_eq!(ns.get::<Vec<i32>>("k").await?.as_deref(), Some(&vec![1, 2, 3]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn put<T>(&self, key: &str, value: T) -> Result<()>
    where
        T: Serialize + Send + Sync + 'static,
    {
        self.put_arc(key, Arc::new(value)).await
    }

    /// Stores a shared value under `key` without copying it into memory
    /// regions.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("n");
    /// let big = std::sync::Arc::new(vec![0u8; 1024]);
    /// ns.put_arc("k", big.clone()).await?;
    /// let hit = ns.get::<Vec<u8>>("k").await?.ok_or("missing")?;
    /// assert!(std::sync::Arc::ptr_eq(&hit, &big));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn put_arc<T>(&self, key: &str, value: Arc<T>) -> Result<()>
    where
        T: Serialize + Send + Sync + 'static,
    {
        if !self.region.options.enabled {
            return Ok(());
        }
        match self
            .region
            .store(&self.ns, key, &value, self.expiry(), 0, None, &self.tags)
            .await
        {
            Ok(()) => Ok(()),
            // The value's fault, not the backend's: the caller hears of it.
            Err(err) if err.is_encode() || err.is_too_large() => Err(err),
            Err(err) => self.region.backend_failed(&err),
        }
    }

    /// Removes the value under `key`; `true` if there was one.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("n");
    /// ns.put("k", 1u8).await?;
    /// assert!(ns.remove("k").await?);
    /// assert!(!ns.remove("k").await?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn remove(&self, key: &str) -> Result<bool> {
        match self.region.remove(&self.ns, key).await {
            Ok(removed) => Ok(removed),
            Err(err) => self.region.backend_failed(&err).map(|()| false),
        }
    }

    /// Removes every value in the namespace, in every process sharing the
    /// backend, with one write (the namespace's generation moves on; old
    /// entries expire on their own). Nothing outside the namespace is touched.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let (a, b) = (cache.namespace("a"), cache.namespace("b"));
    /// a.put("k", 1u8).await?;
    /// b.put("k", 2u8).await?;
    /// a.clear().await?;
    /// assert!(!a.contains::<u8>("k").await?);
    /// assert!(b.contains::<u8>("k").await?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn clear(&self) -> Result<()> {
        self.region.clear(&self.ns).await
    }
}
