//! The resolved options of one region, and the small enums they use.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The resolved options of one region: the global options overlaid with the
/// region's own. Read them from [`Config::region`](crate::Config::region).
///
/// ```
/// let config = tankard::Config::from_flat([
///     ("cache.type", "memory"),
///     ("cache.regions", "short_term"),
///     ("cache.short_term.expire", "1200"),
/// ])?;
/// let short = config.region("short_term").ok_or("no such region")?;
/// assert_eq!(short.expire, Some(std::time::Duration::from_secs(1200)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RegionOptions {
    /// The region's name; `"default"` for the options used by
    /// [`CacheManager::namespace`](crate::CacheManager::namespace).
    pub name: String,
    /// Key `type`: which backend stores the entries.
    pub backend: BackendKind,
    /// Key `expire`: how long an entry is fresh; `None` = forever. Like every
    /// duration key it takes seconds (`30`, `2.5`) or a unit (`250ms`,
    /// `20m`, `1h`); at most 100 years.
    pub expire: Option<Duration>,
    /// Key `data_dir`: where the file and dbm backends keep entries.
    pub data_dir: Option<PathBuf>,
    /// Key `lock_dir`: where creation locks live (file backend); defaults to
    /// `<data_dir>/.locks`.
    pub lock_dir: Option<PathBuf>,
    /// Key `url`: server address(es) or database URL, validated for the backend.
    pub url: Option<String>,
    /// Key `enabled`: `false` runs the creator every time and stores nothing.
    pub enabled: bool,
    /// Key `key_length`: full keys longer than this are replaced by a hash
    /// (at most 65535, the longest key an entry header holds).
    pub key_length: usize,
    /// Key `starttime`: epoch seconds; entries created before it are stale.
    /// At most 4102444800 (2100-01-01), which catches milliseconds.
    pub starttime: Option<u64>,
    /// Key `stale`: how long past `expire` an entry may still be served stale
    /// while one caller regenerates it (at most 100 years).
    pub stale: Duration,
    /// Key `lock`: which creation lock guards regeneration.
    pub lock: LockMode,
    /// Key `lock_timeout`: how long a distributed creation lock lives without
    /// renewal (at most 24 h).
    pub lock_timeout: Duration,
    /// Key `wait_timeout`: how long a caller waits on another's creation before
    /// running the creator itself (at most 24 h).
    pub wait_timeout: Duration,
    /// Key `timeout`: the limit on one remote backend operation (at most 1 h).
    pub timeout: Duration,
    /// Key `retry_after`: after a backend operation fails for connection
    /// reasons (refused, reset, timed out), how long the region skips its
    /// backend: calls bypass it at once instead of paying a timeout each,
    /// and one probe call per `retry_after` finds it back (default 1 s, at
    /// most 1 h; zero turns the breaker off).
    pub retry_after: Duration,
    /// Key `max_entry_bytes`: the largest entry read or written (default
    /// 16 MiB, at most 1 GiB). A larger value stored is refused with an
    /// error; a larger entry found is a miss, never read whole into memory.
    pub max_entry_bytes: u64,
    /// Key `max_entries`: bound of the memory backend by count (at most 10⁹).
    pub max_entries: Option<u64>,
    /// Key `max_bytes`: bound of the memory backend by encoded size (at most
    /// 1 TiB).
    pub max_bytes: Option<u64>,
    /// Key `secret`: when set, entries are authenticated with HMAC-SHA256.
    pub secret: Option<Secret>,
    /// Key `on_backend_error`: what a failing backend does to a call.
    pub on_backend_error: OnBackendError,
    /// Key `refresh`: who waits for a stale entry's regeneration.
    pub refresh: Refresh,
    /// Key `l1`: an in-process memory tier in front of the region's shared
    /// store; a boolean, default `false`. Only shared types
    /// take it (file, dbm, memcached, redis, redis-cluster, database): on a
    /// `memory` or `null` region it is a config error.
    ///
    /// ```
    /// let config = tankard::Config::from_flat([
    ///     ("cache.type", "file"),
    ///     ("cache.data_dir", "/var/cache/app"),
    ///     ("cache.l1", "true"),
    ///     ("cache.l1_max_entries", "50000"),
    ///     ("cache.l1_expire", "2s"),
    ///     ("cache.backplane", "none"),
    /// ])?;
    /// let options = config.default_options();
    /// assert!(options.l1);
    /// assert_eq!(options.l1_max_entries, 50_000);
    /// assert_eq!(options.l1_expire, Some(std::time::Duration::from_secs(2)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub l1: bool,
    /// Key `l1_max_entries`: the most entries the L1 tier keeps (default
    /// 10 000, at most 10⁹), unless `l1_max_bytes` bounds it by size
    /// instead.
    pub l1_max_entries: u64,
    /// Key `l1_max_bytes`: bounds the L1 tier by encoded size instead of
    /// entry count (at most 1 TiB).
    pub l1_max_bytes: Option<u64>,
    /// Key `l1_expire`: the longest an L1 copy is served without word from
    /// the backplane (a positive duration, at most 100 years). `None`: the
    /// region's `expire` with a backplane, 5 s without one.
    pub l1_expire: Option<Duration>,
    /// Key `backplane`: what carries L1 evictions between processes:
    /// `auto` (default), `none`, or a `redis://`/`rediss://` URL. A URL
    /// needs the `redis` cargo feature (`rediss://` needs `redis-tls`).
    /// Set or not, `l1` decides whether this region keeps an L1 tier, so a
    /// global `backplane` may serve regions with and without one.
    pub backplane: BackplaneSetting,
    /// Key `prefix`: prepended to every key this region writes.
    pub prefix: String,
}

/// The config key of an option of a region, for error messages
/// (`cache.<option>` for the default options).
pub(crate) fn option_key(options: &RegionOptions, option: &str) -> String {
    if options.name == "default" {
        format!("cache.{option}")
    } else {
        format!("cache.{}.{option}", options.name)
    }
}

/// Key `type`: the backend of a region.
///
/// ```
/// let config = tankard::Config::from_flat([("cache.type", "ext:memcached"), ("cache.url", "127.0.0.1:11211")]);
/// # let _ = config;
/// assert_eq!(tankard::config::BackendKind::Memory.as_str(), "memory");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// `memory`: bounded, in-process, typed values, no encoding.
    Memory,
    /// `file`: one file per key under `data_dir`.
    File,
    /// `dbm`: one embedded store file shared by processes.
    Dbm,
    /// `ext:memcached` or `memcached`.
    Memcached,
    /// `ext:redis` or `redis`.
    Redis,
    /// `ext:rediscluster` or `redis-cluster`.
    RedisCluster,
    /// `ext:database` or `database`; the url picks PostgreSQL, SQLite or MySQL.
    Database,
    /// `null`: stores nothing; every call runs the creator.
    Null,
}

impl BackendKind {
    /// The canonical name, as `tankard check` prints it.
    ///
    /// ```
    /// assert_eq!(tankard::config::BackendKind::RedisCluster.as_str(), "redis-cluster");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::File => "file",
            BackendKind::Dbm => "dbm",
            BackendKind::Memcached => "memcached",
            BackendKind::Redis => "redis",
            BackendKind::RedisCluster => "redis-cluster",
            BackendKind::Database => "database",
            BackendKind::Null => "null",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Key `lock`: which creation lock guards regeneration of a key.
///
/// ```
/// assert_eq!(tankard::config::LockMode::default(), tankard::config::LockMode::Auto);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockMode {
    /// The best the backend offers: local for memory, file locks for file
    /// and dbm, distributed for servers.
    #[default]
    Auto,
    /// In-process single-flight only.
    Local,
    /// `flock` on striped lock files in `lock_dir`.
    File,
    /// A lock held in the backend server, with owner token and lifetime.
    Distributed,
    /// No lock at all: every caller that misses runs the creator.
    None,
}

/// Key `on_backend_error`: what a failing backend does to a call.
///
/// ```
/// assert_eq!(tankard::config::OnBackendError::default(), tankard::config::OnBackendError::Bypass);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnBackendError {
    /// Run the creator, return its value, count and log the error.
    #[default]
    Bypass,
    /// Return the error to the caller.
    Error,
}

/// Key `backplane`: what tells other processes to drop their L1 copies
/// when an entry changes.
///
/// ```
/// assert_eq!(tankard::config::BackplaneSetting::default(), tankard::config::BackplaneSetting::Auto);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackplaneSetting {
    /// The region's own Redis or Redis Cluster when its type is one of
    /// those; none otherwise.
    #[default]
    Auto,
    /// No backplane: `l1_expire` alone bounds how stale an L1 copy gets.
    None,
    /// A Redis server (`redis://…`) that carries the region's evictions,
    /// whatever its store.
    Redis(String),
}

/// Key `refresh`: who waits for a stale entry's regeneration.
///
/// With `background`, a creator that can outlive its caller runs in a task
/// of its own: [`Cache::get_or_spawn`](crate::Cache::get_or_spawn) and
/// [`get_or_try_spawn`](crate::Cache::get_or_try_spawn). A creator that
/// borrows from its caller ([`Cache::get_or_create`](crate::Cache::get_or_create))
/// cannot, and regenerates in the caller as with `foreground`.
///
/// The front ends honour it too:
///
/// - the page layer (`tankard::web`, feature `axum`): the request that finds
///   a page stale is answered with it at once (`X-Cache: STALE`), and a task
///   calls the inner service with that request and stores the page under the
///   same rules as a request would (a response that may not be cached is not
///   stored, and the stale page stays);
/// - `#[tankard::cached]` (feature `macros`): an `async fn` that owns its
///   arguments (no reference or lifetime in them, no `self`, no generic
///   parameters) and whose body's future is `Send` reruns its body in a task;
///   every other function regenerates in the caller. The attribute's
///   documentation lists the rules.
///
/// ```
/// assert_eq!(tankard::config::Refresh::default(), tankard::config::Refresh::Foreground);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refresh {
    /// The caller that takes the lock runs the creator and gets the new value.
    #[default]
    Foreground,
    /// Every caller of a stale entry gets the stale value at once, the one
    /// that starts its regeneration too; the creator runs in a task (one
    /// across processes), stores its value, and stops when the manager is
    /// dropped. Its failure is counted and logged; the stale value stays.
    Background,
}

/// Key `secret`: the HMAC key for authenticated entries. Its `Debug` output
/// never shows the key.
///
/// ```
/// let s = tankard::config::Secret::new("hunter2");
/// assert_eq!(format!("{s:?}"), "Secret(..)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(crate) Vec<u8>);

impl Secret {
    /// A secret from its text.
    ///
    /// ```
    /// let _ = tankard::config::Secret::new("hunter2");
    /// ```
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Secret(secret.as_ref().to_vec())
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}
