//! The one public error type, [`Error`], and the internal kinds behind it.
//!
//! `Error` is opaque and cheap to clone (an `Arc` inside), so that every
//! caller waiting on one creator can be handed the same failure. Ask it what
//! went wrong with the `is_*()` predicates; walk [`std::error::Error::source`]
//! for the cause. No dependency's error type appears in the public API:
//! backend client errors are carried as sources, never as `From` impls.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// A `Result` whose error is Tankard's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Tankard.
///
/// # Example
///
/// ```
/// let err = tankard::Config::from_flat([("cache.expire", "soon")]).unwrap_err();
/// assert!(err.is_config());
/// assert_eq!(
///     err.to_string(),
///     r#"cache.expire: "soon" is not a duration; expected a number of seconds ("30", "2.5") or a number with a unit ("250ms", "20m", "1h")"#
/// );
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: Kind,
    source: Option<Arc<dyn StdError + Send + Sync>>,
    /// The backend could not be reached: see [`Error::is_connection_failure`].
    connection_failure: bool,
}

/// What kind of failure an [`Error`] is. Internal: the public face is the
/// predicates on `Error`.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// A configuration key had a bad value, or a key was unknown.
    Config(ConfigError),
    /// A backend could not be reached or answered with an error.
    #[cfg_attr(
        not(any(feature = "file", feature = "memcached", feature = "redis")),
        allow(dead_code)
    )]
    Backend {
        backend: &'static str,
        message: String,
    },
    /// An operation against a backend took longer than its timeout.
    #[cfg_attr(not(any(feature = "redis", feature = "memcached")), allow(dead_code))]
    Timeout {
        backend: &'static str,
        operation: &'static str,
    },
    /// The backend was not asked: a recent connection failure opened its
    /// circuit breaker (`retry_after`), so calls step around it at once.
    #[cfg_attr(not(any(feature = "memcached", feature = "redis")), allow(dead_code))]
    Unavailable { backend: &'static str },
    /// An entry larger than `max_entry_bytes` was refused.
    TooLarge { size: u64, max: u64 },
    /// The creator returned an error; the source is the creator's own error.
    Creator,
    /// The creator panicked; callers waiting on it receive this.
    CreatorPanicked { message: String },
    /// A caller waited `hard_timeout` for a creator and had no last good
    /// value to fall back on.
    CreatorTimeout { after: std::time::Duration },
    /// The task a creator finished in ended without a value: the manager
    /// was dropped (its background work stops) or its runtime shut down.
    ShutDown,
    /// A value could not be encoded for a shared backend.
    Encode { message: String },
    /// A region was asked for that the configuration does not define.
    RegionNotFound {
        name: String,
        configured: Vec<String>,
    },
    /// The global manager was used before `tankard::install`.
    NotInstalled,
    /// `tankard::install` was given a manager that lacks regions which
    /// `#[tankard::cached]` functions name: each region with the functions.
    #[cfg_attr(not(feature = "macros"), allow(dead_code))]
    RegionsMissing {
        missing: Vec<(String, Vec<String>)>,
        configured: Vec<String>,
    },
    /// `tankard::install` was called after a manager was installed.
    AlreadyInstalled,
    /// A tag was empty or longer than [`MAX_TAG_LEN`](crate::MAX_TAG_LEN)
    /// bytes, or an entry was given more than [`MAX_TAGS`](crate::MAX_TAGS).
    BadTag { tag: String, problem: &'static str },
}

/// A configuration problem: names the key, the value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("{key}: {value:?} {problem}; expected {expected}")]
    BadValue {
        key: String,
        value: String,
        problem: String,
        expected: String,
    },
    #[error("{key}: unknown option{hint}")]
    UnknownKey { key: String, hint: String },
    #[error(
        "{key}: region {region:?} is not listed in cache.regions ({listed}); add it there or remove the key"
    )]
    UnlistedRegion {
        key: String,
        region: String,
        listed: String,
    },
    /// A value that needs a cargo feature the build lacks: a backend type,
    /// or a `backplane` URL. The key says which, so the message does not.
    #[error(
        "{key}: {value:?} needs the cargo feature \"{feature}\" of tankard; enable it with `tankard = {{ features = [\"{feature}\"] }}`"
    )]
    FeatureMissing {
        key: String,
        value: String,
        feature: &'static str,
    },
    #[error("{key}: {message}")]
    Missing { key: String, message: String },
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                source: None,
                connection_failure: false,
            }),
        }
    }

    pub(crate) fn with_source(
        kind: Kind,
        source: impl Into<Arc<dyn StdError + Send + Sync>>,
    ) -> Self {
        Error {
            inner: Arc::new(Inner {
                kind,
                source: Some(source.into()),
                connection_failure: false,
            }),
        }
    }

    pub(crate) fn kind(&self) -> &Kind {
        &self.inner.kind
    }

    pub(crate) fn config(err: ConfigError) -> Self {
        Error::new(Kind::Config(err))
    }

    #[cfg_attr(
        not(any(feature = "file", feature = "memcached", feature = "redis")),
        allow(dead_code)
    )]
    pub(crate) fn backend(backend: &'static str, message: impl Into<String>) -> Self {
        Error::new(Kind::Backend {
            backend,
            message: message.into(),
        })
    }

    #[cfg_attr(
        not(any(feature = "file", feature = "memcached", feature = "redis")),
        allow(dead_code)
    )]
    pub(crate) fn backend_source(
        backend: &'static str,
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Error::with_source(
            Kind::Backend {
                backend,
                message: message.into(),
            },
            Arc::new(source) as Arc<dyn StdError + Send + Sync>,
        )
    }

    #[cfg_attr(not(any(feature = "memcached", feature = "redis")), allow(dead_code))]
    pub(crate) fn unavailable(backend: &'static str) -> Self {
        Error::new(Kind::Unavailable { backend })
    }

    pub(crate) fn too_large(size: u64, max: u64) -> Self {
        Error::new(Kind::TooLarge { size, max })
    }

    #[cfg_attr(not(any(feature = "redis", feature = "memcached")), allow(dead_code))]
    pub(crate) fn timeout(backend: &'static str, operation: &'static str) -> Self {
        Error::new(Kind::Timeout { backend, operation })
    }

    /// Marks a backend error as a connection failure: the server could not
    /// be reached (refused, reset, closed, timed out, no connection to be
    /// had), as opposed to a server that answered, even with an error. Only
    /// such failures open the backend's circuit breaker (`retry_after`).
    /// The backend that turns its client's errors into ours decides, since
    /// only it knows (a memcached node that failed over to another is no
    /// reason to skip the whole region).
    #[cfg_attr(not(any(feature = "memcached", feature = "redis")), allow(dead_code))]
    pub(crate) fn into_connection_failure(mut self) -> Self {
        match Arc::get_mut(&mut self.inner) {
            // A fresh error, as everywhere this is called: no copy.
            Some(inner) => inner.connection_failure = true,
            None => {
                self.inner = Arc::new(Inner {
                    kind: self.inner.kind.clone(),
                    source: self.inner.source.clone(),
                    connection_failure: true,
                });
            }
        }
        self
    }

    /// Whether the backend could not be reached (see
    /// [`into_connection_failure`](Error::into_connection_failure)): what
    /// opens the circuit breaker. An error reply, a value of the wrong
    /// type, an entry that does not decode or is too large say the server
    /// is fine, and are not.
    #[cfg_attr(not(any(feature = "memcached", feature = "redis")), allow(dead_code))]
    pub(crate) fn is_connection_failure(&self) -> bool {
        self.inner.connection_failure
    }

    /// The configuration was invalid: a bad value, an unknown key, a backend
    /// whose cargo feature is off, or a config file that could not be read.
    ///
    /// ```
    /// let err = tankard::Config::from_flat([("cache.type", "floppy")]).unwrap_err();
    /// assert!(err.is_config());
    /// ```
    pub fn is_config(&self) -> bool {
        matches!(self.kind(), Kind::Config(_))
    }

    /// A backend failed: unreachable, refused, or answered with an error.
    ///
    /// With `on_backend_error = "bypass"` (the default) such failures never
    /// reach `get_or_create`'s caller; they are counted instead.
    ///
    /// ```
    /// let err = tankard::Config::from_flat([("cache.type", "floppy")]).unwrap_err();
    /// assert!(!err.is_backend());
    /// ```
    pub fn is_backend(&self) -> bool {
        matches!(
            self.kind(),
            Kind::Backend { .. } | Kind::Timeout { .. } | Kind::Unavailable { .. }
        )
    }

    /// The backend was skipped without being asked: a connection failure
    /// within the last `retry_after` opened its circuit breaker. Also
    /// [`is_backend`](Error::is_backend).
    ///
    /// ```
    /// let err = tankard::Config::from_flat([("cache.type", "floppy")]).unwrap_err();
    /// assert!(!err.is_unavailable());
    /// ```
    pub fn is_unavailable(&self) -> bool {
        matches!(self.kind(), Kind::Unavailable { .. })
    }

    /// The cache shut down under the call: its manager was dropped (which
    /// stops its background work) or its runtime stopped while the call
    /// waited for a creator running in a task (`soft_timeout`,
    /// `hard_timeout`).
    ///
    /// ```
    /// let err = tankard::Config::from_flat([("cache.type", "floppy")]).unwrap_err();
    /// assert!(!err.is_shut_down());
    /// ```
    pub fn is_shut_down(&self) -> bool {
        matches!(self.kind(), Kind::ShutDown)
    }

    /// A value was larger than the region's `max_entry_bytes` once encoded;
    /// nothing was stored.
    ///
    /// ```
    /// let err = tankard::Config::from_flat([("cache.type", "floppy")]).unwrap_err();
    /// assert!(!err.is_too_large());
    /// ```
    pub fn is_too_large(&self) -> bool {
        matches!(self.kind(), Kind::TooLarge { .. })
    }

    /// A backend operation took longer than its timeout, or a caller
    /// waited `hard_timeout` for a creator with no last good value to fall
    /// back on (the creator goes on, and stores its value when it is done,
    /// if it could be handed to a task).
    ///
    /// ```
    /// let err = tankard::Config::from_flat([("cache.type", "floppy")]).unwrap_err();
    /// assert!(!err.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind(),
            Kind::Timeout { .. } | Kind::CreatorTimeout { .. }
        )
    }

    /// The creator failed (returned an error or panicked). The creator's own
    /// error is the [`source`](std::error::Error::source); get it typed with
    /// [`Error::creator_error`].
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("docs");
    /// let err = ns
    ///     .get_or_try_create("k", || async { Err::<u32, _>(std::fmt::Error) })
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.is_creator());
    /// assert!(err.creator_error::<std::fmt::Error>().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_creator(&self) -> bool {
        matches!(self.kind(), Kind::Creator | Kind::CreatorPanicked { .. })
    }

    /// The creator panicked. The panicking caller sees the panic itself;
    /// callers that were waiting on it receive this error.
    ///
    /// ```
    /// let err = tankard::Config::from_flat([("cache.type", "floppy")]).unwrap_err();
    /// assert!(!err.is_creator_panic());
    /// ```
    pub fn is_creator_panic(&self) -> bool {
        matches!(self.kind(), Kind::CreatorPanicked { .. })
    }

    /// A value could not be encoded for a shared backend. The value was still
    /// returned to the creator's caller where possible; nothing was stored.
    ///
    /// ```
    /// let err = tankard::Config::from_flat([("cache.type", "floppy")]).unwrap_err();
    /// assert!(!err.is_encode());
    /// ```
    pub fn is_encode(&self) -> bool {
        matches!(self.kind(), Kind::Encode { .. })
    }

    /// A region was asked for that the configuration does not define.
    /// [`tankard::install`](crate::install) fails with such an error too,
    /// when `#[tankard::cached]` functions name regions its manager lacks.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let err = cache.region("long_term").unwrap_err();
    /// assert!(err.is_region_not_found());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_region_not_found(&self) -> bool {
        matches!(
            self.kind(),
            Kind::RegionNotFound { .. } | Kind::RegionsMissing { .. }
        )
    }

    /// [`tankard::install`](crate::install) was called when a manager was
    /// already installed; the first one stays.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// tankard::install(cache.clone())?;
    /// assert!(tankard::install(cache).unwrap_err().is_already_installed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_already_installed(&self) -> bool {
        matches!(self.kind(), Kind::AlreadyInstalled)
    }

    /// A tag was refused: empty, longer than
    /// [`MAX_TAG_LEN`](crate::MAX_TAG_LEN) bytes, or one too many for an
    /// entry ([`MAX_TAGS`](crate::MAX_TAGS)). Nothing was stored or
    /// invalidated.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let err = cache.default_region().invalidate_tag("").await.unwrap_err();
    /// assert!(err.is_bad_tag());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_bad_tag(&self) -> bool {
        matches!(self.kind(), Kind::BadTag { .. })
    }

    /// The creator's own error, if this error is one and it has type `E`.
    ///
    /// ```
    /// let err = tankard::Config::from_flat([("cache.type", "floppy")]).unwrap_err();
    /// assert!(err.creator_error::<std::io::Error>().is_none());
    /// ```
    pub fn creator_error<E: StdError + 'static>(&self) -> Option<&E> {
        match self.kind() {
            Kind::Creator => self.inner.source.as_deref()?.downcast_ref::<E>(),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            Kind::Config(err) => fmt::Display::fmt(err, f),
            Kind::Backend { backend, message } => write!(f, "{backend} backend: {message}"),
            Kind::Timeout { backend, operation } => write!(
                f,
                "{backend} backend: {operation} timed out; raise cache.timeout or check the server"
            ),
            Kind::Unavailable { backend } => write!(
                f,
                "{backend} backend: skipped after a recent connection failure; \
                 it is tried again after cache.retry_after"
            ),
            Kind::TooLarge { size, max } => write!(
                f,
                "the entry is {size} bytes, over cache.max_entry_bytes ({max}); nothing was stored"
            ),
            Kind::Creator => match &self.inner.source {
                Some(source) => write!(f, "the creator failed: {source}"),
                None => f.write_str("the creator failed"),
            },
            Kind::CreatorPanicked { message } => {
                write!(f, "the creator panicked while others waited on it: {message}")
            }
            Kind::CreatorTimeout { after } => write!(
                f,
                "the creator did not finish within hard_timeout ({after:?}) and there was no last good value to serve; raise hard_timeout, or set fail_safe"
            ),
            Kind::ShutDown => f.write_str(
                "the cache shut down (its manager was dropped, or its runtime stopped) before the creator's task finished",
            ),
            Kind::Encode { message } => write!(
                f,
                "the value could not be encoded for the cache ({message}); nothing was stored"
            ),
            Kind::RegionNotFound { name, configured } => {
                if configured.is_empty() {
                    write!(
                        f,
                        "no cache region named {name:?}: none are configured; list it in cache.regions"
                    )
                } else {
                    write!(
                        f,
                        "no cache region named {name:?}; configured regions: {}",
                        configured.join(", ")
                    )
                }
            }
            Kind::NotInstalled => f.write_str(
                "no global cache manager: call tankard::install(manager) at start-up, or pass manager = ... to the attribute",
            ),
            Kind::RegionsMissing {
                missing,
                configured,
            } => {
                f.write_str("#[tankard::cached] functions name cache regions the manager does not configure: ")?;
                for (i, (region, functions)) in missing.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{region:?} (by {})", functions.join(", "))?;
                }
                if configured.is_empty() {
                    f.write_str("; none are configured")?;
                } else {
                    write!(f, "; configured regions: {}", configured.join(", "))?;
                }
                f.write_str(
                    ". List them in cache.regions, or correct the attribute's region = \"...\"",
                )
            }
            Kind::BadTag { tag, problem } => write!(f, "tag {tag:?} {problem}"),
            Kind::AlreadyInstalled => f.write_str(
                "a global cache manager is already installed: tankard::install is called once, at start-up",
            ),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        if self.inner.connection_failure {
            d.field("connection_failure", &true);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.inner.source {
            Some(source) => Some(&**source as &(dyn StdError + 'static)),
            None => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(err: ConfigError) -> Self {
        Error::config(err)
    }
}

impl Error {
    pub(crate) fn creator_boxed(err: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        let boxed: Box<dyn StdError + Send + Sync> = err.into();
        Error::with_source(
            Kind::Creator,
            Arc::<dyn StdError + Send + Sync>::from(boxed),
        )
    }
}
