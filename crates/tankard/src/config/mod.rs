//! Configuration: Beaker's flat options map, TOML files and INI-style
//! `key = value` files, resolved into one [`RegionOptions`] per region.
//!
//! Every region starts from all the global `cache.<opt>` options (the url
//! too, which Beaker forgets), then applies its own `cache.<region>.<opt>`
//! keys. Every error names the key, the value and what was expected.

mod builder;
mod de;
mod parse;

pub use builder::{ConfigBuilder, RegionBuilder};

pub use crate::options::{
    BackendKind, BackplaneSetting, EarlyRefresh, LockMode, OnBackendError, Refresh, RegionOptions,
    Secret,
};

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::Result;

/// A parsed and validated configuration: the global options and one
/// [`RegionOptions`] per configured region.
///
/// Build it from Beaker's flat map, a TOML file, or an INI-style file; all
/// three take the same keys. See the crate docs' "Configuration" table.
///
/// ```
/// // The seed post's configuration, with its `127.0.0.1.11211` typo fixed.
/// let config = tankard::Config::from_flat([
///     ("cache.type", "file"),
///     ("cache.data_dir", "cache/data"),
///     ("cache.lock_dir", "cache/lock"),
///     ("cache.regions", "short_term, long_term"),
///     ("cache.short_term.type", "ext:memcached"),
///     ("cache.short_term.url", "127.0.0.1:11211"),
///     ("cache.short_term.expire", "1200"),
///     ("cache.long_term.type", "file"),
///     ("cache.long_term.expire", "86400"),
/// ]);
/// # #[cfg(feature = "memcached")]
/// assert!(config.is_ok());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub(crate) default: RegionOptions,
    pub(crate) regions: BTreeMap<String, RegionOptions>,
}

impl Config {
    /// A typed builder: options set by method, with no option names or
    /// values written as strings, checked as a file is.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = tankard::Config::builder()
    ///     .region("short_term", |r| r.expire(Duration::from_secs(1200)))
    ///     .build()?;
    /// let short = config.region("short_term").ok_or("no short_term")?;
    /// assert_eq!(short.expire, Some(Duration::from_secs(1200)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Parses Beaker's flat options: keys `cache.<opt>` (or
    /// `beaker.cache.<opt>`) and `cache.<region>.<opt>`.
    ///
    /// Keys may come in any order: every listed region is built from all the
    /// global options first and its own keys second, so a region's override
    /// wins wherever it appears, and `cache.regions` may follow the keys it
    /// allows. When the same key is given twice the last one wins, as it
    /// would in the Python dict this map stands for.
    ///
    /// # Errors
    ///
    /// A configuration error naming the key as written (with `beaker.cache.`
    /// if that was used), the value and what was expected: a key without the
    /// prefix, an unknown option (with a "did you mean" hint), a region key
    /// for a region missing from `cache.regions`, a value that does not
    /// coerce or is past its key's largest (named in the error: every
    /// duration and number is bounded, so that no setting can overflow
    /// later), a url that does not fit the region's backend, a missing
    /// `url`/`data_dir`, or a backend whose cargo feature is off. Value and
    /// url errors are reported before missing features, so a typo reads the
    /// same whatever features are compiled in.
    ///
    /// ```
    /// let err = tankard::Config::from_flat([("cache.expir", "10")]).unwrap_err();
    /// assert_eq!(err.to_string(), "cache.expir: unknown option; did you mean `expire`?");
    /// ```
    ///
    /// ```
    /// let config = tankard::Config::from_flat([("cache.type", "memory"), ("cache.expire", "10")])?;
    /// assert_eq!(config.default_options().expire, Some(std::time::Duration::from_secs(10)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_flat<I, K, V>(pairs: I) -> Result<Config>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        parse::from_flat(pairs)
    }

    /// Parses a TOML document with a `[cache]` table; regions are sub-tables.
    ///
    /// `[beaker.cache]` is accepted too, and other top-level tables are left
    /// to the rest of the app. Scalars are turned into the text a flat map
    /// would hold (`expire = 60` is `expire = "60"`) and checked exactly as
    /// [`Config::from_flat`] checks them; only `regions` may be an array.
    /// Errors name the dotted path, e.g. `cache.short_term.expire`.
    ///
    /// # Errors
    ///
    /// Everything [`Config::from_flat`] rejects, a TOML syntax error (with
    /// `<toml>` as the file name, and the line and column), and a document
    /// without a `[cache]` table. A number too large for TOML itself
    /// (`expire = 99999999999999999999`) is reported under its key, as a
    /// flat map's would be. An empty `[cache]` table is accepted with a
    /// warning (`tracing`): it leaves every option at its default.
    ///
    /// ```
    /// let config = tankard::Config::from_toml_str(r#"
    ///     [cache]
    ///     type = "memory"
    ///     regions = ["short_term"]
    ///     [cache.short_term]
    ///     expire = 120
    /// "#)?;
    /// assert!(config.region("short_term").is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_toml_str(text: &str) -> Result<Config> {
        parse::from_toml_str(text)
    }

    /// Reads and parses a TOML file (see [`Config::from_toml_str`]).
    ///
    /// # Errors
    ///
    /// As [`Config::from_toml_str`], with the file's path in syntax errors;
    /// a file that cannot be read is an error naming the path, with the OS
    /// error as its [`source`](std::error::Error::source).
    ///
    /// ```
    /// let err = tankard::Config::from_toml_file("/no/such/tankard.toml").unwrap_err();
    /// assert!(err.is_config());
    /// ```
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Config> {
        parse::from_toml_file(path.as_ref())
    }

    /// Parses INI-style `key = value` lines as Beaker reads them from a Paste
    /// deploy file: `#` and `;` start comments, `[section]` headers are
    /// ignored, and keys without the `cache.`/`beaker.cache.` prefix are
    /// skipped (they belong to the rest of the app).
    ///
    /// # Errors
    ///
    /// Everything [`Config::from_flat`] rejects, and a line that is neither
    /// blank, a comment, a section header nor `key = value` (named by its
    /// line number: such a line is more likely a typo than another reader's
    /// syntax).
    ///
    /// Two things parse but log a warning (`tracing`), since they are
    /// rarely meant: text with no cache key at all (every option stays at
    /// its default), and an option set twice, under either prefix or in
    /// two sections (the later line wins, as in [`Config::from_flat`]).
    ///
    /// ```
    /// let config = tankard::Config::from_ini_str("
    ///     [app:main]
    ///     use = egg:myapp
    ///     beaker.cache.type = memory
    ///     beaker.cache.expire = 60
    /// ")?;
    /// assert_eq!(config.default_options().expire, Some(std::time::Duration::from_secs(60)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_ini_str(text: &str) -> Result<Config> {
        parse::from_ini_str(text)
    }

    /// Reads a config file: TOML when the name ends in `.toml`, INI-style
    /// `key = value` lines otherwise.
    ///
    /// # Errors
    ///
    /// As [`Config::from_toml_file`] or [`Config::from_ini_str`].
    ///
    /// ```
    /// let err = tankard::Config::from_file("/no/such/tankard.ini").unwrap_err();
    /// assert!(err.is_config());
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config> {
        parse::from_file(path.as_ref())
    }

    /// A configuration with only the default memory backend and no regions.
    ///
    /// ```
    /// let config = tankard::Config::memory();
    /// assert_eq!(config.default_options().backend, tankard::config::BackendKind::Memory);
    /// ```
    pub fn memory() -> Config {
        Config {
            default: RegionOptions::defaults("default"),
            regions: BTreeMap::new(),
        }
    }

    /// The options used for namespaces outside any region
    /// ([`CacheManager::namespace`](crate::CacheManager::namespace)).
    ///
    /// ```
    /// assert!(tankard::Config::memory().default_options().enabled);
    /// ```
    pub fn default_options(&self) -> &RegionOptions {
        &self.default
    }

    /// The resolved options of a configured region.
    ///
    /// ```
    /// assert!(tankard::Config::memory().region("long_term").is_none());
    /// ```
    pub fn region(&self, name: &str) -> Option<&RegionOptions> {
        self.regions.get(name)
    }

    /// The configured regions, sorted by name.
    ///
    /// ```
    /// assert_eq!(tankard::Config::memory().regions().count(), 0);
    /// ```
    pub fn regions(&self) -> impl Iterator<Item = &RegionOptions> {
        self.regions.values()
    }
}
