//! A typed way to build a [`Config`] in code: no option names or values
//! spelled as strings, and the same checks as a file gets (the builder
//! writes the options it is given in the config's own syntax and parses
//! them, so a value a file could not hold is refused the same way, naming
//! the same key).

use std::path::Path;
use std::time::Duration;

use super::{
    BackendKind, BackplaneSetting, Config, EarlyRefresh, LockMode, OnBackendError, Refresh,
};
use crate::error::Result;

/// Builds a [`Config`]: the options every region starts from, then each
/// region's own. Made by [`Config::builder`].
///
/// ```
/// use std::time::Duration;
/// use tankard::config::BackendKind;
///
/// let config = tankard::Config::builder()
///     .defaults(|all| all.backend(BackendKind::File).data_dir("/var/cache/app"))
///     .region("short_term", |r| r.backend(BackendKind::Memory).expire(Duration::from_secs(1200)))
///     .region("long_term", |r| r.expire(Duration::from_secs(24 * 3600)))
///     .build()?;
/// let short = config.region("short_term").ok_or("no short_term")?;
/// let long = config.region("long_term").ok_or("no long_term")?;
/// assert_eq!(short.backend, BackendKind::Memory);
/// assert_eq!(long.backend, BackendKind::File);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct ConfigBuilder {
    pairs: Vec<(String, String)>,
    regions: Vec<String>,
}

impl ConfigBuilder {
    /// Sets options every region starts from (Beaker's `cache.<option>`).
    ///
    /// ```
    /// let config = tankard::Config::builder()
    ///     .defaults(|all| all.enabled(false))
    ///     .build()?;
    /// assert!(!config.default_options().enabled);
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn defaults(mut self, options: impl FnOnce(RegionBuilder) -> RegionBuilder) -> Self {
        let built = options(RegionBuilder::under("cache."));
        self.pairs.extend(built.pairs);
        self
    }

    /// Adds a region and sets its own options on top of the defaults
    /// (Beaker's `cache.<region>.<option>`).
    ///
    /// ```
    /// let config = tankard::Config::builder().region("r", |r| r).build()?;
    /// assert!(config.region("r").is_some());
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn region(
        mut self,
        name: &str,
        options: impl FnOnce(RegionBuilder) -> RegionBuilder,
    ) -> Self {
        let built = options(RegionBuilder::under(&format!("cache.{name}.")));
        self.regions.push(name.to_owned());
        self.pairs.extend(built.pairs);
        self
    }

    /// The config, checked as a file would be.
    ///
    /// # Errors
    ///
    /// The errors of [`Config::from_flat`], naming the key a file would
    /// use (`cache.short_term.url`, say).
    ///
    /// ```
    /// let err = tankard::Config::builder()
    ///     .region("r", |r| r.backend(tankard::config::BackendKind::Redis))
    ///     .build()
    ///     .unwrap_err();
    /// assert!(err.is_config());
    /// assert!(err.to_string().starts_with("cache.r.url: missing"), "{err}");
    /// ```
    pub fn build(self) -> Result<Config> {
        let regions = (!self.regions.is_empty())
            .then(|| ("cache.regions".to_owned(), self.regions.join(", ")));
        Config::from_flat(regions.into_iter().chain(self.pairs))
    }
}

/// One region's options (or everybody's), each a typed setter. Given to the
/// closures of [`ConfigBuilder::defaults`] and [`ConfigBuilder::region`].
#[derive(Debug)]
#[must_use]
pub struct RegionBuilder {
    prefix: String,
    pairs: Vec<(String, String)>,
}

/// A duration in the config's syntax, exactly: whole seconds and up to
/// nine decimals.
fn duration(d: Duration) -> String {
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($arg:ident: $ty:ty) => $render:expr;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(self, $arg: $ty) -> Self {
                self.set(stringify!($name), $render)
            }
        )*
    };
}

impl RegionBuilder {
    fn under(prefix: &str) -> RegionBuilder {
        RegionBuilder {
            prefix: prefix.to_owned(),
            pairs: Vec::new(),
        }
    }

    fn set(mut self, option: &str, value: String) -> Self {
        self.pairs.push((format!("{}{option}", self.prefix), value));
        self
    }

    /// `type`: which store keeps the region's entries.
    ///
    /// ```
    /// let config = tankard::Config::builder()
    ///     .defaults(|all| all.backend(tankard::config::BackendKind::Null))
    ///     .build()?;
    /// assert_eq!(config.default_options().backend, tankard::config::BackendKind::Null);
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn backend(self, kind: BackendKind) -> Self {
        self.set("type", kind.as_str().to_owned())
    }

    /// `expire`: how long an entry is fresh; not calling it means forever.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = tankard::Config::builder()
    ///     .defaults(|all| all.expire(Duration::from_millis(1500)))
    ///     .build()?;
    /// assert_eq!(config.default_options().expire, Some(Duration::from_millis(1500)));
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn expire(self, expire: Duration) -> Self {
        self.set("expire", duration(expire))
    }

    /// `data_dir`: where the file store keeps entries.
    ///
    /// ```
    /// let config = tankard::Config::builder()
    ///     .defaults(|all| all.backend(tankard::config::BackendKind::File).data_dir("/tmp/c"))
    ///     .build()?;
    /// assert_eq!(config.default_options().data_dir.as_deref(), Some(std::path::Path::new("/tmp/c")));
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn data_dir(self, dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref().display().to_string();
        self.set("data_dir", dir)
    }

    /// `lock_dir`: where `flock` creation locks live.
    ///
    /// ```
    /// let _ = tankard::Config::builder().defaults(|all| all.lock_dir("/tmp/locks")).build()?;
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn lock_dir(self, dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref().display().to_string();
        self.set("lock_dir", dir)
    }

    /// `url`: the store's server(s), as its store reads them
    /// (`host:port;host:port` for memcached, `redis://…`).
    ///
    /// ```
    /// let _ = tankard::Config::builder().defaults(|all| all.url("redis://127.0.0.1:6379")).build()?;
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn url(self, url: &str) -> Self {
        self.set("url", url.to_owned())
    }

    /// `table`: the SQL table of a `database` region (default
    /// `tankard_cache`), created when missing.
    ///
    /// ```
    /// use tankard::config::BackendKind;
    /// let config = tankard::Config::builder()
    ///     .defaults(|all| all.backend(BackendKind::Database).url("sqlite://cache.db").table("app_cache"))
    ///     .build();
    /// # #[cfg(feature = "sqlite")]
    /// assert_eq!(config?.default_options().table.as_deref(), Some("app_cache"));
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn table(self, table: &str) -> Self {
        self.set("table", table.to_owned())
    }

    /// `secret`: authenticate entries with HMAC-SHA256.
    ///
    /// ```
    /// let config = tankard::Config::builder().defaults(|all| all.secret("hunter2")).build()?;
    /// assert!(config.default_options().secret.is_some());
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn secret(self, secret: &str) -> Self {
        self.set("secret", secret.to_owned())
    }

    /// `prefix`: prepended to every key the region writes.
    ///
    /// ```
    /// let config = tankard::Config::builder().defaults(|all| all.prefix("app:")).build()?;
    /// assert_eq!(config.default_options().prefix, "app:");
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn prefix(self, prefix: &str) -> Self {
        self.set("prefix", prefix.to_owned())
    }

    /// `lock`: which creation lock guards regeneration.
    ///
    /// ```
    /// let config = tankard::Config::builder()
    ///     .defaults(|all| all.lock(tankard::config::LockMode::Local))
    ///     .build()?;
    /// assert_eq!(config.default_options().lock, tankard::config::LockMode::Local);
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn lock(self, mode: LockMode) -> Self {
        let mode = match mode {
            LockMode::Auto => "auto",
            LockMode::Local => "local",
            LockMode::File => "file",
            LockMode::Distributed => "distributed",
            LockMode::None => "none",
        };
        self.set("lock", mode.to_owned())
    }

    /// `on_backend_error`: what a failing backend does to a call.
    ///
    /// ```
    /// let config = tankard::Config::builder()
    ///     .defaults(|all| all.on_backend_error(tankard::config::OnBackendError::Error))
    ///     .build()?;
    /// assert_eq!(config.default_options().on_backend_error, tankard::config::OnBackendError::Error);
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn on_backend_error(self, policy: OnBackendError) -> Self {
        let policy = match policy {
            OnBackendError::Bypass => "bypass",
            OnBackendError::Error => "error",
        };
        self.set("on_backend_error", policy.to_owned())
    }

    /// `refresh`: who waits for a stale entry's regeneration.
    ///
    /// ```
    /// let config = tankard::Config::builder()
    ///     .defaults(|all| all.refresh(tankard::config::Refresh::Background))
    ///     .build()?;
    /// assert_eq!(config.default_options().refresh, tankard::config::Refresh::Background);
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn refresh(self, refresh: Refresh) -> Self {
        let refresh = match refresh {
            Refresh::Foreground => "foreground",
            Refresh::Background => "background",
        };
        self.set("refresh", refresh.to_owned())
    }

    /// `early_refresh`: renew entries before they expire.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tankard::config::EarlyRefresh;
    /// let config = tankard::Config::builder()
    ///     .defaults(|all| all.expire(Duration::from_secs(60)).early_refresh(EarlyRefresh::At(0.8)))
    ///     .build()?;
    /// assert_eq!(config.default_options().early_refresh, EarlyRefresh::At(0.8));
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn early_refresh(self, early: EarlyRefresh) -> Self {
        let early = match early {
            EarlyRefresh::Off => "off".to_owned(),
            EarlyRefresh::At(fraction) => fraction.to_string(),
            EarlyRefresh::XFetch => "xfetch".to_owned(),
        };
        self.set("early_refresh", early)
    }

    /// `backplane`: what carries L1 evictions between processes.
    ///
    /// ```
    /// use tankard::config::BackplaneSetting;
    /// let config = tankard::Config::builder()
    ///     .defaults(|all| all.backplane(BackplaneSetting::None))
    ///     .build()?;
    /// assert_eq!(config.default_options().backplane, BackplaneSetting::None);
    /// # Ok::<(), tankard::Error>(())
    /// ```
    pub fn backplane(self, backplane: BackplaneSetting) -> Self {
        let backplane = match backplane {
            BackplaneSetting::Auto => "auto".to_owned(),
            BackplaneSetting::None => "none".to_owned(),
            BackplaneSetting::Redis(url) => url,
        };
        self.set("backplane", backplane)
    }

    setters! {
        /// `stale`: how long past `expire` an entry may be served stale.
        stale(stale: Duration) => duration(stale);
        /// `lock_timeout`: the lifetime of a distributed creation lock.
        lock_timeout(timeout: Duration) => duration(timeout);
        /// `wait_timeout`: how long a caller waits on another's creation.
        wait_timeout(timeout: Duration) => duration(timeout);
        /// `timeout`: the limit on one remote backend operation.
        timeout(timeout: Duration) => duration(timeout);
        /// `retry_after`: how long a failed backend is skipped.
        retry_after(pause: Duration) => duration(pause);
        /// `fail_safe`: how long past `expire + stale` entries are kept.
        fail_safe(keep: Duration) => duration(keep);
        /// `fail_safe_throttle`: how long a fail-safe value counts as fresh.
        fail_safe_throttle(throttle: Duration) => duration(throttle);
        /// `soft_timeout`: how long a caller with a stale value waits.
        soft_timeout(timeout: Duration) => duration(timeout);
        /// `hard_timeout`: how long any caller waits for a creator.
        hard_timeout(timeout: Duration) => duration(timeout);
        /// `l1_expire`: the longest an L1 copy is served unannounced.
        l1_expire(bound: Duration) => duration(bound);
        /// `enabled`: `false` runs the creator every time.
        enabled(on: bool) => on.to_string();
        /// `l1`: an in-process tier in front of a shared store.
        l1(on: bool) => on.to_string();
        /// `key_length`: longer keys are hashed.
        key_length(length: usize) => length.to_string();
        /// `starttime`: epoch seconds before which entries are stale.
        starttime(epoch_seconds: u64) => epoch_seconds.to_string();
        /// `max_entry_bytes`: the largest entry read or written.
        max_entry_bytes(bytes: u64) => bytes.to_string();
        /// `max_entries`: the memory store's bound by count.
        max_entries(entries: u64) => entries.to_string();
        /// `max_bytes`: the memory store's bound by size.
        max_bytes(bytes: u64) => bytes.to_string();
        /// `l1_max_entries`: the L1 tier's bound by count.
        l1_max_entries(entries: u64) => entries.to_string();
        /// `l1_max_bytes`: the L1 tier's bound by size.
        l1_max_bytes(bytes: u64) => bytes.to_string();
        /// `early_refresh_beta`: XFetch's β.
        early_refresh_beta(beta: f64) => beta.to_string();
    }
}
