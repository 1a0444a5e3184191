//! axum integration (feature `axum`): the manager as application state,
//! [`CachePageLayer`], a tower layer that caches whole responses like
//! Django's `cache_page`, and [`dashboard`], the operator's page with
//! `/stats` and `/metrics`.
//!
//! # The manager in the state
//!
//! Keep the [`CacheManager`] in the app's state; with axum's
//! `#[derive(FromRef)]` on the state, handlers take it as an argument
//! directly (this module implements the extractor for any state the manager
//! can be taken from):
//!
//! ```
//! use axum::{Router, extract::FromRef, routing::get};
//! use tankard::CacheManager;
//!
//! #[derive(Clone, FromRef)]
//! struct AppState {
//!     cache: CacheManager,
//!     greeting: String,
//! }
//!
//! async fn hello(cache: CacheManager) -> String {
//!     let ns = cache.namespace("views::hello");
//!     match ns.get_or_create("fetch_data", || async { "Hello world".to_string() }).await {
//!         Ok(page) => page.to_string(),
//!         Err(err) => err.to_string(),
//!     }
//! }
//!
//! let state = AppState {
//!     cache: CacheManager::new(tankard::Config::memory())?,
//!     greeting: "hi".into(),
//! };
//! let app: Router = Router::new().route("/hello", get(hello)).with_state(state);
//! # let _ = app;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Caching whole pages
//!
//! [`CachePageLayer`] wraps a route (or a whole router) and stores its
//! responses in one namespace:
//!
//! - only `GET` and `HEAD` requests, and only `200 OK` responses, are cached;
//! - the key is the method, the `Host`, the path and the query, plus the
//!   values of the request headers the response names in `Vary` (the layer
//!   learns them from the first response, as Django does); `Vary: *` is
//!   never cached;
//! - a response with `Set-Cookie`, or with `Cache-Control: private`,
//!   `no-store` or `no-cache`, is never stored, nor a `text/event-stream`;
//! - a request carrying `Authorization` goes straight to the handler unless
//!   [`CachePageLayer::allow_authorization`] says otherwise;
//! - responses go out with `X-Cache: HIT`, `MISS` (the handler ran for this
//!   request) or `STALE` (a page past its expiry, or made before a soft
//!   invalidation, served while another request regenerates it);
//! - the dog-pile rules of the namespace apply: a burst of requests on a
//!   cold route runs the handler once, and the others are handed its page;
//! - on a region with `refresh = background`, the request that finds a page
//!   stale is answered with it at once too (`STALE`), and a task calls the
//!   inner service with that request and stores the new page (or, if the
//!   response may not be stored, nothing: the stale page stays). A route
//!   that varies keeps its stale list of headers, which each variant's
//!   refresh checks against the handler's answer.
//!
//! A response the layer refuses to store counts as a creator call in the
//! region's [`Stats`](crate::Stats), not as a creator error: the handler
//! ran, nothing went wrong, and nothing was cached.
//! Cached bodies are buffered in full, so put the layer only on routes whose
//! responses are finite.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tankard::web::CachePageLayer;
//!
//! let cache = tankard::CacheManager::new(tankard::Config::memory())?;
//! let pages = cache.namespace("pages").expire(std::time::Duration::from_secs(60));
//! let app: Router = Router::new()
//!     .route("/hello", get(|| async { "Hello world" }))
//!     .layer(CachePageLayer::new(pages));
//! # let _ = app;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Watching it run
//!
//! [`dashboard`] is a [`Router`](axum::Router) with the operator's page
//! (`/`), the figures as JSON (`/stats`) and in Prometheus' text format
//! (`/metrics`); mount it where your admin pages live:
//!
//! ```
//! use axum::Router;
//!
//! let cache = tankard::CacheManager::new(tankard::Config::memory())?;
//! let app: Router = Router::new().nest("/admin/cache", tankard::web::dashboard(cache));
//! # let _ = app;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dashboard;
mod future;
mod layer;
mod page;
mod service;

use std::convert::Infallible;

use axum_core::extract::{FromRef, FromRequestParts};
use http::request::Parts;

use crate::manager::CacheManager;

pub use dashboard::dashboard;
pub use future::ResponseFuture;
pub use layer::CachePageLayer;
pub use service::CachePage;

/// The manager as an extractor: a handler may take a [`CacheManager`]
/// argument whenever the app's state holds one (`FromRef`).
///
/// ```
/// use axum::{Router, routing::get};
///
/// async fn regions(cache: tankard::CacheManager) -> String {
///     cache.regions().map(|r| r.name().to_owned()).collect::<Vec<_>>().join(",")
/// }
///
/// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
/// let app: Router = Router::new().route("/regions", get(regions)).with_state(cache);
/// # let _ = app;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<S> FromRequestParts<S> for CacheManager
where
    CacheManager: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(CacheManager::from_ref(state))
    }
}
