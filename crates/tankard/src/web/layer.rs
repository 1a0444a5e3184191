//! The layer that wraps services in [`CachePage`].

use tower_layer::Layer;

use super::service::{CachePage, Settings};
use crate::namespace::Cache;

/// A tower layer that caches whole responses in one namespace: Django's
/// `cache_page`. See the [module docs](crate::web) for what is cached and
/// how requests are keyed.
///
/// The namespace decides the region (backend, stale grace, locks) and,
/// with [`Cache::expire`], how long a page stays fresh.
///
/// ```
/// use axum::{Router, routing::get};
/// use tankard::web::CachePageLayer;
///
/// let config = tankard::Config::from_flat([
///     ("cache.type", "memory"),
///     ("cache.regions", "short_term"),
///     ("cache.short_term.expire", "120"),
/// ])?;
/// let cache = tankard::CacheManager::new(config)?;
/// let layer = CachePageLayer::new(cache.region("short_term")?.namespace("pages"));
/// let app: Router = Router::new().route("/", get(|| async { "home" }).layer(layer));
/// # let _ = app;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct CachePageLayer {
    cache: Cache,
    settings: Settings,
}

impl CachePageLayer {
    /// A layer storing pages in `cache`.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let layer = tankard::web::CachePageLayer::new(cache.namespace("pages"));
    /// assert_eq!(layer.cache().name(), "pages");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(cache: Cache) -> CachePageLayer {
        CachePageLayer {
            cache,
            settings: Settings::default(),
        }
    }

    /// Whether requests carrying `Authorization` may be served from and
    /// stored in the cache (default `false`: they go to the handler). Turn
    /// it on only for routes whose response does not depend on who asks,
    /// or that say `Vary: Authorization`.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let layer = tankard::web::CachePageLayer::new(cache.namespace("pages")).allow_authorization(true);
    /// # let _ = layer;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn allow_authorization(mut self, allow: bool) -> CachePageLayer {
        self.settings.allow_authorization = allow;
        self
    }

    /// The namespace pages are stored in.
    ///
    /// ```
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let layer = tankard::web::CachePageLayer::new(cache.namespace("pages"));
    /// assert_eq!(layer.cache().region_name(), "default");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

impl<S> Layer<S> for CachePageLayer {
    type Service = CachePage<S>;

    fn layer(&self, inner: S) -> CachePage<S> {
        CachePage::with_settings(inner, self.cache.clone(), self.settings)
    }
}
