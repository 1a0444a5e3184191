//! The resolved options of one region, and the small enums they use: the
//! vocabulary every layer reads (stores, engine, region), below the parser
//! in `config`, which reaches up to the stores to check their options.
//! Public as `tankard::config::*`.

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
    /// Key `data_dir`: where the file backend keeps entries, and where the
    /// dbm backend puts the region's LMDB environment.
    pub data_dir: Option<PathBuf>,
    /// Key `lock_dir`: where creation locks live (file and dbm backends); defaults to
    /// `<data_dir>/.locks`.
    pub lock_dir: Option<PathBuf>,
    /// Key `url`: server address(es), checked by the region's store.
    pub url: Option<String>,
    /// Key `table`: the SQL table of a `database` region (default
    /// `tankard_cache`), created when missing; letters, digits and `_`.
    pub table: Option<String>,
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
    /// Key `max_bytes`: bound of the memory backend by encoded size, and
    /// the LMDB map size of a dbm region (default 1 GiB, at least 256 KiB;
    /// at most 1 TiB).
    pub max_bytes: Option<u64>,
    /// Key `secret`: when set, entries are authenticated with HMAC-SHA256.
    pub secret: Option<Secret>,
    /// Key `on_backend_error`: what a failing backend does to a call.
    pub on_backend_error: OnBackendError,
    /// Key `refresh`: who waits for a stale entry's regeneration.
    pub refresh: Refresh,
    /// Key `early_refresh`: renew a steadily read entry before it expires.
    pub early_refresh: EarlyRefresh,
    /// Key `early_refresh_beta`: XFetch's β (default 1.0, above 0 and at
    /// most 1000): above 1 renews earlier, below 1 later.
    pub early_refresh_beta: f64,
    /// Key `soft_timeout`: with a stale value (or a `fail_safe` one) at
    /// hand, the longest a caller waits for the creator before it gets that
    /// value; the creator goes on and stores its result (at most 24 h,
    /// below `hard_timeout`; `None`: no limit).
    ///
    /// ```
    /// let config = tankard::Config::from_flat([
    ///     ("cache.type", "memory"),
    ///     ("cache.soft_timeout", "100ms"),
    ///     ("cache.hard_timeout", "2s"),
    /// ])?;
    /// let options = config.default_options();
    /// assert_eq!(options.soft_timeout, Some(std::time::Duration::from_millis(100)));
    /// assert_eq!(options.hard_timeout, Some(std::time::Duration::from_secs(2)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub soft_timeout: Option<Duration>,
    /// Key `hard_timeout`: the longest any caller waits for a creator,
    /// stale value or not: then it gets the last good value if `fail_safe`
    /// kept one, else an error ([`Error::is_timeout`](crate::Error::is_timeout)).
    /// A creator that can run in a task (`get_or_spawn`, the page layer,
    /// cached async functions with owned arguments) finishes there and
    /// stores its value; a borrowing one is dropped (at most 24 h).
    pub hard_timeout: Option<Duration>,
    /// Key `fail_safe`: how long past `expire + stale` an entry is kept, to
    /// be served when its creator fails or panics (default 0: off; at most
    /// 100 years; needs `expire`). Stores keep entries that much longer.
    ///
    /// ```
    /// let config = tankard::Config::from_flat([
    ///     ("cache.type", "memory"),
    ///     ("cache.expire", "1m"),
    ///     ("cache.fail_safe", "1h"),
    ///     ("cache.fail_safe_throttle", "10s"),
    /// ])?;
    /// let options = config.default_options();
    /// assert_eq!(options.fail_safe, std::time::Duration::from_secs(3600));
    /// assert_eq!(options.fail_safe_throttle, std::time::Duration::from_secs(10));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fail_safe: Duration,
    /// Key `fail_safe_throttle`: once a creator has failed and its last good
    /// value was served instead, how long that value counts as fresh
    /// before the creator is tried again (default 30 s; at most 24 h; not
    /// zero, which would retry a failing creator on every call).
    pub fail_safe_throttle: Duration,
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
    /// `dbm`: an LMDB environment per region under `data_dir`, shared by
    /// the processes of one host (cargo feature `dbm`).
    Dbm,
    /// `ext:memcached` or `memcached`.
    Memcached,
    /// `ext:redis` or `redis`.
    Redis,
    /// `ext:rediscluster` or `redis-cluster`.
    RedisCluster,
    /// `ext:database` or `database`: Beaker's SQL store, on PostgreSQL,
    /// MySQL/MariaDB or SQLite as its `url` says (cargo features
    /// `postgres`, `mysql`, `sqlite`).
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
    /// The best the backend offers: local for memory, file locks for the file
    /// store, distributed for servers.
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

/// Key `early_refresh`: whether an entry is renewed before it expires, so
/// that a key read steadily never expires in front of a caller.
///
/// With a fraction `f` (`early_refresh = 0.8`), the first call past `f` of
/// an entry's fresh life gets the current value at once and starts one
/// refresh in a task (one across processes: it takes the region's creation
/// lock). Every later caller keeps getting the current value until the
/// refreshed one is stored. The refresh needs a creator that owns what it
/// needs ([`Cache::get_or_spawn`](crate::Cache::get_or_spawn) and
/// [`get_or_try_spawn`](crate::Cache::get_or_try_spawn), the page layer,
/// `#[tankard::cached]` async functions with owned arguments); a borrowing
/// creator is left alone until the entry expires. Needs `expire`.
///
/// With `xfetch`, each read decides by itself, with no lock and no
/// coordination, following Vattani, Chierichetti and Lowenstein (VLDB
/// 2015): it renews the entry when `now − δ·β·ln(r) ≥ expiry`, where δ is
/// what the entry's value took to make (measured when it was made, and
/// stored in the entry), β is `early_refresh_beta` and r a random number
/// in (0, 1]. So an entry that is expensive to make is renewed earlier, and
/// the chance that some read renews it rises smoothly as expiry nears. An
/// entry that was `put` (δ = 0) is not renewed early.
///
/// ```
/// let config = tankard::Config::from_flat([
///     ("cache.type", "memory"),
///     ("cache.expire", "60"),
///     ("cache.early_refresh", "0.8"),
/// ])?;
/// assert_eq!(config.default_options().early_refresh, tankard::config::EarlyRefresh::At(0.8));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum EarlyRefresh {
    /// `off` (default): an entry is regenerated when it expires.
    #[default]
    Off,
    /// A fraction above 0 and below 1 of an entry's fresh life, past which
    /// the first call starts its refresh.
    At(f64),
    /// XFetch: renewal with a probability that rises as expiry nears,
    /// scaled by what the entry cost to make and `early_refresh_beta`.
    XFetch,
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
