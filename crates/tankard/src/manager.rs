//! The manager: one per application, holding every configured region and
//! the default options, and the process-wide global the function attribute
//! uses.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::clock::Clock;
use crate::config::Config;
use crate::engine::{Shutdown, ShutdownTrigger};
use crate::error::{Error, Kind, Result};
use crate::namespace::Cache;
use crate::region::Region;

/// The cache manager: Beaker's `CacheManager`. Build one at start-up from
/// a [`Config`]; clones are cheap and share everything.
///
/// ```
/// let config = tankard::Config::from_flat([
///     ("cache.type", "memory"),
///     ("cache.regions", "short_term, long_term"),
///     ("cache.short_term.expire", "120"),
///     ("cache.long_term.expire", "86400"),
/// ])?;
/// let cache = tankard::CacheManager::new(config)?;
/// let hello = cache.region("long_term")?.namespace("views::hello");
/// # let _ = hello;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct CacheManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    default: Region,
    regions: BTreeMap<String, Region>,
    clock: Clock,
    /// Dropped with the last handle: background work stops.
    _shutdown: ShutdownTrigger,
}

impl fmt::Debug for CacheManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheManager")
            .field("default", &self.inner.default)
            .field("regions", &self.inner.regions.values().collect::<Vec<_>>())
            .finish()
    }
}

impl CacheManager {
    /// Opens every region of the configuration. Nothing connects to a
    /// server yet: remote backends connect on first use, so a server that
    /// is down at start-up does not stop the application.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert_eq!(cache.regions().count(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(config: Config) -> Result<CacheManager> {
        CacheManager::with_clock(config, Clock::system())
    }

    /// Like [`new`](CacheManager::new), reading time from `clock`: a
    /// [`Clock::manual`] walks entries through fresh, stale and expired
    /// without sleeping.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// use std::time::Duration;
    /// let clock = tankard::Clock::manual(1_000_000);
    /// let config = tankard::Config::from_flat([("cache.type", "memory"), ("cache.expire", "10")])?;
    /// let cache = tankard::CacheManager::with_clock(config, clock.clone())?;
    /// let ns = cache.namespace("n");
    /// ns.put("k", 1u8).await?;
    /// clock.advance(Duration::from_secs(11));
    /// assert!(ns.get::<u8>("k").await?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_clock(config: Config, clock: Clock) -> Result<CacheManager> {
        clock.start_ticking();
        let (trigger, shutdown) = Shutdown::new();
        let default = Region::open(
            config.default_options().clone(),
            clock.clone(),
            shutdown.clone(),
        )?;
        let mut regions = BTreeMap::new();
        for options in config.regions() {
            regions.insert(
                options.name.clone(),
                Region::open(options.clone(), clock.clone(), shutdown.clone())?,
            );
        }
        Ok(CacheManager {
            inner: Arc::new(Inner {
                config,
                default,
                regions,
                clock,
                _shutdown: trigger,
            }),
        })
    }

    /// A configured region: Beaker's `@cache.region('long_term')`.
    ///
    /// # Errors
    ///
    /// An error naming the region and the configured ones if there is no
    /// such region ([`Error::is_region_not_found`]).
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let err = cache.region("long_term").unwrap_err();
    /// assert_eq!(err.to_string(), r#"no cache region named "long_term": none are configured; list it in cache.regions"#);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn region(&self, name: &str) -> Result<&Region> {
        self.inner.regions.get(name).ok_or_else(|| {
            Error::new(Kind::RegionNotFound {
                name: name.to_owned(),
                configured: self.inner.regions.keys().cloned().collect(),
            })
        })
    }

    /// The region built from the global options, used for namespaces that
    /// name no region.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert_eq!(cache.default_region().name(), "default");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn default_region(&self) -> &Region {
        &self.inner.default
    }

    /// A namespace on the default region: Beaker's `cache.get_cache(name)`
    /// and, with [`Cache::expire`], `@cache.cache(expire=10)`.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("views::hello").expire(std::time::Duration::from_secs(10));
    /// let v = ns.get_or_create("k", || async { 5u8 }).await?;
    /// assert_eq!(*v, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn namespace(&self, name: &str) -> Cache {
        self.inner.default.namespace(name)
    }

    /// The configured regions, by name.
    ///
    /// ```
    /// let config = tankard::Config::from_flat([("cache.type", "memory"), ("cache.regions", "a, b")])?;
    /// let cache = tankard::CacheManager::new(config)?;
    /// let names: Vec<_> = cache.regions().map(|r| r.name().to_owned()).collect();
    /// assert_eq!(names, ["a", "b"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.inner.regions.values()
    }

    /// The configuration the manager was built from.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert!(cache.config().region("x").is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The manager's clock.
    ///
    /// ```
    /// let cache = tankard::CacheManager::with_clock(tankard::Config::memory(), tankard::Clock::manual(5))?;
    /// assert_eq!(cache.clock().now_ms(), 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Forwards to the [`metrics`] recorder what the regions have not
    /// forwarded yet: the hits each thread holds back (it forwards them 64
    /// at a time, and with every other event) and the size of memory
    /// regions.
    ///
    /// Not needed to see the metrics: every count, latency and breaker
    /// change reaches the recorder as it happens. Call it before reading
    /// a recorder when the last few hits matter (a test), or from a timer
    /// to keep memory regions' `tankard_entries` current without traffic.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// cache.publish_metrics();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_metrics(&self) {
        self.inner.default.forward_metrics();
        for region in self.regions() {
            region.forward_metrics();
        }
    }
}

static GLOBAL: OnceLock<CacheManager> = OnceLock::new();

/// Installs the process-wide manager that `#[tankard::cached]` functions
/// use when they name no `manager`.
///
/// Every such function that names a `region` registers it at compile
/// time, and `install` checks them all against `manager` before
/// installing it: a misspelled region, or one missing from the
/// configuration, fails here, at start-up, naming the regions and the
/// functions, instead of leaving those functions to run uncached. (A
/// function that cannot reach its cache panics at its first call in debug
/// builds, and logs once in release builds: see [`cached`](crate::cached)
/// under "When the cache fails".)
///
/// # Errors
///
/// Nothing is installed if it fails:
/// - [`Error::is_region_not_found`]: functions name regions that `manager`
///   lacks; the message lists each with its functions and the configured
///   regions;
/// - [`Error::is_already_installed`]: a manager was installed before
///   (the first one stays).
///
/// ```
/// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
/// tankard::install(cache.clone())?;
/// assert!(tankard::install(cache).unwrap_err().is_already_installed());
/// assert!(tankard::global().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn install(manager: CacheManager) -> Result<()> {
    #[cfg(feature = "macros")]
    {
        let missing = crate::__private::missing_regions(&manager);
        if !missing.is_empty() {
            return Err(Error::new(Kind::RegionsMissing {
                missing,
                configured: manager.inner.regions.keys().cloned().collect(),
            }));
        }
    }
    GLOBAL
        .set(manager)
        .map_err(|_| Error::new(Kind::AlreadyInstalled))
}

/// The manager set by [`install`].
///
/// # Errors
///
/// An error saying to call `install` if none was installed.
///
/// ```
/// // In a fresh process nothing is installed yet.
/// if let Err(err) = tankard::global() {
///     assert!(err.to_string().contains("tankard::install"));
/// }
/// ```
pub fn global() -> Result<&'static CacheManager> {
    GLOBAL.get().ok_or_else(|| Error::new(Kind::NotInstalled))
}
