//! The storage seam: what the engine needs of whatever it protects
//! ([`Storage`]), and what it owns itself ([`Engine`]).
//!
//! The engine never sees a region. A region implements [`Storage`]: it
//! reads and writes one key of one namespace through its tiers, and hands
//! out the [`Engine`] it was built with (single-flight map, creation lock,
//! policy, counters, shutdown signal). Everything here is owned behind
//! `Arc`s, so a regeneration can move into a task that outlives its caller.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Shutdown;
use super::flight::Flights;
use crate::backend::lock::CreationLock;
use crate::clock::Clock;
use crate::entry::{Freshness, Generations};
use crate::error::{Error, Result};
use crate::options::{OnBackendError, Refresh, RegionOptions};
use crate::stats::{Event, Figures};
use crate::tags::Tags;

/// A key of the single-flight map: namespace id and caller's key.
pub(crate) type FlightKey = (u64, Box<str>);

/// What a creator's waiters receive.
pub(crate) type Outcome = std::result::Result<Arc<dyn Any + Send + Sync>, Error>;

/// What a lookup found.
pub(crate) enum Found<T> {
    Fresh(Arc<T>),
    /// Fresh, and due for an early refresh (`early_refresh`).
    Due(Arc<T>),
    Stale(Arc<T>),
    /// Past its stale time, kept by `fail_safe`: a miss, whose value
    /// stands in if the creator fails.
    Expired(Arc<T>),
    Missing,
}

impl<T> Found<T> {
    /// An entry with `value`, as its `freshness` says.
    pub(crate) fn entry(freshness: Freshness, value: Arc<T>) -> Found<T> {
        match freshness {
            Freshness::Fresh => Found::Fresh(value),
            Freshness::Due => Found::Due(value),
            Freshness::Stale => Found::Stale(value),
            Freshness::Expired => Found::Expired(value),
            Freshness::Missing => Found::Missing,
        }
    }
}

/// A lookup's result and the generations to stamp a new entry with
/// (`None` when the store could not tell).
pub(crate) struct Lookup<T> {
    pub(crate) found: Found<T>,
    pub(crate) generations: Option<Generations>,
}

/// What the engine protects: keys grouped in namespaces, each read and
/// written as a whole. A region implements it over its tiers.
pub(crate) trait Storage: Send + Sync + 'static {
    /// One group of keys (a region's namespace).
    type Namespace: Send + Sync + 'static;

    /// The engine this storage was built with.
    fn engine(&self) -> &Engine;

    /// The key of the single-flight map for `key` of `ns`.
    fn flight_key(ns: &Self::Namespace, key: &str) -> FlightKey;

    /// The creation lock's key for `key` of `ns`.
    fn lock_key(ns: &Self::Namespace, key: &str) -> String;

    /// The namespace's name, for logs.
    fn namespace_name(ns: &Self::Namespace) -> &str;

    /// Reads a key: fresh, stale or missing. A store failure is an error
    /// here; the engine decides whether to bypass.
    fn lookup<T>(
        &self,
        ns: &Self::Namespace,
        key: &str,
    ) -> impl Future<Output = Result<Lookup<T>>> + Send
    where
        T: DeserializeOwned + Send + Sync + 'static;

    /// Stores a value created now, which took `cost_us` to make, stamped
    /// with `generations` (read before its creator ran) when given, and
    /// carrying `tags` (checked).
    #[allow(clippy::too_many_arguments)]
    fn store<T>(
        &self,
        ns: &Self::Namespace,
        key: &str,
        value: &Arc<T>,
        expire: Option<Duration>,
        cost_us: u32,
        generations: Option<Generations>,
        tags: &Tags,
    ) -> impl Future<Output = Result<()>> + Send
    where
        T: Serialize + Send + Sync + 'static;
}

/// What the engine owns for one storage: the single-flight map, the
/// creation lock, the policy it follows, its figures (counters and
/// latencies) and the signal that stops its background work.
pub(crate) struct Engine {
    /// The storage's name (a region's), for logs.
    pub(crate) name: String,
    pub(crate) enabled: bool,
    pub(crate) refresh: Refresh,
    pub(crate) wait_timeout: Duration,
    /// With `fail_safe` on, how long a last good value served in place of
    /// a failed creator counts as fresh (`fail_safe_throttle`).
    pub(crate) fail_safe_throttle: Option<Duration>,
    /// `soft_timeout` and `hard_timeout`.
    pub(crate) soft_timeout: Option<Duration>,
    pub(crate) hard_timeout: Option<Duration>,
    on_backend_error: OnBackendError,
    /// `None` for `lock = none`: no single-flight at all.
    pub(crate) lock: Option<Arc<dyn CreationLock>>,
    pub(crate) flights: Arc<Flights<FlightKey, Outcome>>,
    pub(crate) figures: Figures,
    clock: Clock,
    /// Fires when the manager is dropped: background work stops.
    pub(crate) shutdown: Shutdown,
    last_error_log_ms: AtomicU64,
}

impl Engine {
    /// An engine following a region's options, over a store named
    /// `backend` (the label of its metrics).
    pub(crate) fn new(
        options: &RegionOptions,
        backend: &'static str,
        lock: Option<Arc<dyn CreationLock>>,
        clock: Clock,
        shutdown: Shutdown,
    ) -> Engine {
        Engine {
            name: options.name.clone(),
            enabled: options.enabled,
            refresh: options.refresh,
            wait_timeout: options.wait_timeout,
            fail_safe_throttle: (!options.fail_safe.is_zero())
                .then_some(options.fail_safe_throttle),
            soft_timeout: options.soft_timeout,
            hard_timeout: options.hard_timeout,
            on_backend_error: options.on_backend_error,
            lock,
            flights: Arc::new(Flights::new()),
            figures: Figures::new(&options.name, backend, clock.clone()),
            clock,
            shutdown,
            last_error_log_ms: AtomicU64::new(0),
        }
    }

    /// The clock the storage reads.
    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Counts an event off the memory hit path (the hit path counts
    /// through [`Figures::hit`]).
    pub(crate) fn count(&self, event: Event) {
        self.figures.count(event);
    }

    /// Counts a store failure and logs it at most once a second; returns
    /// the error back when the policy says not to bypass.
    pub(crate) fn backend_failed(&self, err: &Error) -> Result<()> {
        self.backend_failed_quietly(err);
        match self.on_backend_error {
            OnBackendError::Bypass => Ok(()),
            _ => Err(err.clone()),
        }
    }

    /// Counts a store failure and logs it at most once a second.
    pub(crate) fn backend_failed_quietly(&self, err: &Error) {
        self.count(Event::BackendError);
        let now_ms = self.clock.now_ms();
        let last = self.last_error_log_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= 1000
            && self
                .last_error_log_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                region = %self.name,
                total = self.figures.snapshot().backend_errors,
                "cache backend failed, running without it: {err}"
            );
        }
    }
}
