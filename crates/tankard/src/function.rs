//! What `#[tankard::cached]` expands to. Not a public API: the attribute is.
//!
//! Every cached function (and each of its companions) holds a static
//! [`Site`]: its namespace, region and expiry, and the [`Cache`] handle they
//! resolve to, bound on first use. A call then goes:
//!
//! 1. [`take_refresh`]: whether `<fn>_refresh` called it;
//! 2. [`start`]: resolve the handle (a pointer compare once bound), write
//!    the key into a thread-local buffer, and try the memory fast path
//!    ([`Cache::try_get_fresh`]): a hit allocates nothing and awaits nothing;
//! 3. a `finish_*` function: the hit's clone, or the slow path through
//!    [`Cache::get_or_try_create`] (on a private runtime for sync functions,
//!    see [`crate::blocking`]).
//!
//! # What a call returns when the cache fails
//!
//! - `Result<T, E>` functions return cache failures as `E::from(tankard::Error)`:
//!   a region that is not configured, no installed manager, a key that does
//!   not encode, a backend error with `on_backend_error = "error"`. The body
//!   does not run.
//! - `T` and `Option<T>` functions have no error channel: the body runs
//!   without the cache and the failure is logged at error level, once per
//!   function for set-up failures (region, manager, key), at most once a
//!   second for others. The companions (`<fn>_peek`, …) return the error.
//! - Once the body has produced a value, that value is returned even if it
//!   cannot be stored (encoding failed, backend down); the failure is logged
//!   and counted by the region.

#![allow(missing_docs, missing_debug_implementations)]

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache_key::CacheKey;
pub use crate::cache_key::KeyWriter;
use crate::error::{Error, Kind, Result};
use crate::manager::CacheManager;
use crate::namespace::Cache;
use crate::region::Region;

/// Lets `std::io::Result` functions be cached: a cache failure becomes an
/// `io::Error` of kind `Other` whose source is the `tankard::Error`.
impl From<Error> for std::io::Error {
    fn from(err: Error) -> std::io::Error {
        std::io::Error::other(err)
    }
}

/// How a site names its namespace.
#[derive(Clone, Copy, Debug)]
pub enum Namespace {
    /// `module::function`, or the attribute's `namespace = "…"`.
    Fixed(&'static str),
    /// A method's: `module::<Type>::function`, with the implementing type
    /// given at each call (a generic impl's instantiations differ).
    OfSelf {
        module: &'static str,
        function: &'static str,
    },
}

/// One cached function's configuration and resolved handle.
pub struct Site {
    namespace: Namespace,
    region: Option<&'static str>,
    expire: Option<u64>,
    bound: OnceLock<Bound>,
    setup_logged: AtomicBool,
    last_log_ms: AtomicU64,
}

struct Bound {
    /// The manager's default region: its identity (each manager has its own).
    manager: Region,
    self_type: Option<&'static str>,
    cache: Cache,
}

impl Bound {
    #[inline]
    fn matches(&self, manager: &CacheManager, self_type: Option<&'static str>) -> bool {
        Arc::ptr_eq(&self.manager.inner, &manager.default_region().inner)
            && self.self_type == self_type
    }
}

impl Site {
    pub const fn new(
        namespace: Namespace,
        region: Option<&'static str>,
        expire: Option<u64>,
    ) -> Site {
        Site {
            namespace,
            region,
            expire,
            bound: OnceLock::new(),
            setup_logged: AtomicBool::new(false),
            last_log_ms: AtomicU64::new(0),
        }
    }

    /// The cache handle for `manager`: the bound one (no clone), or a fresh
    /// one when the call uses another manager than the first call did.
    #[inline]
    fn resolve(
        &'static self,
        manager: &CacheManager,
        self_type: Option<&'static str>,
    ) -> Result<Cow<'static, Cache>> {
        if let Some(bound) = self.bound.get() {
            if bound.matches(manager, self_type) {
                return Ok(Cow::Borrowed(&bound.cache));
            }
            return self.open(manager, self_type).map(Cow::Owned);
        }
        let bound = Bound {
            manager: manager.default_region().clone(),
            self_type,
            cache: self.open(manager, self_type)?,
        };
        match self.bound.set(bound) {
            Ok(()) => match self.bound.get() {
                Some(bound) => Ok(Cow::Borrowed(&bound.cache)),
                None => self.open(manager, self_type).map(Cow::Owned),
            },
            // Another thread bound it first, maybe to another manager.
            Err(ours) => match self.bound.get() {
                Some(bound) if bound.matches(manager, self_type) => Ok(Cow::Borrowed(&bound.cache)),
                _ => Ok(Cow::Owned(ours.cache)),
            },
        }
    }

    fn open(&self, manager: &CacheManager, self_type: Option<&'static str>) -> Result<Cache> {
        let region = match self.region {
            Some(name) => manager.region(name)?,
            None => manager.default_region(),
        };
        let cache = match (self.namespace, self_type) {
            (Namespace::Fixed(name), _) => region.namespace(name),
            (Namespace::OfSelf { module, function }, Some(ty)) => {
                region.namespace(&format!("{module}::<{ty}>::{function}"))
            }
            (Namespace::OfSelf { module, function }, None) => {
                region.namespace(&format!("{module}::{function}"))
            }
        };
        Ok(match self.expire {
            Some(seconds) => cache.expire(seconds),
            None => cache,
        })
    }

    fn name(&self) -> String {
        match self.namespace {
            Namespace::Fixed(name) => name.to_owned(),
            Namespace::OfSelf { module, function } => format!("{module}::{function}"),
        }
    }

    /// Logs a failure that made a call run without the cache.
    #[cold]
    fn report(&self, err: &Error) {
        let setup = err.is_config()
            || err.is_region_not_found()
            || err.is_encode()
            || matches!(err.kind(), Kind::NotInstalled);
        if setup {
            if !self.setup_logged.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    function = %self.name(),
                    "#[tankard::cached] function runs without its cache: {err}"
                );
            }
            return;
        }
        let now_ms = coarsetime::Clock::now_since_epoch().as_millis();
        let last = self.last_log_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= 1000
            && self
                .last_log_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                function = %self.name(),
                "#[tankard::cached] function ran without its cache: {err}"
            );
        }
    }
}

struct Local {
    key: RefCell<String>,
    refresh: Cell<bool>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            key: RefCell::new(String::new()),
            refresh: Cell::new(false),
        }
    };
}

/// Whether the call was made by `<fn>_refresh`; clears the flag, so calls
/// made by the function's body are ordinary calls.
#[inline]
pub fn take_refresh() -> bool {
    LOCAL
        .try_with(|local| local.refresh.replace(false))
        .unwrap_or(false)
}

fn set_refresh(on: bool) {
    let _ = LOCAL.try_with(|local| local.refresh.set(on));
}

/// Runs `call` (a cached function's call) in refresh mode.
pub fn refresh_blocking<R>(call: impl FnOnce() -> R) -> R {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            set_refresh(false);
        }
    }
    set_refresh(true);
    let _clear = Clear;
    call()
}

/// Awaits `call` (a cached async function's future) in refresh mode: the
/// flag is set only around the first poll, where the function reads it.
pub async fn refresh<F: Future>(call: F) -> F::Output {
    let mut call = std::pin::pin!(call);
    let mut first = true;
    std::future::poll_fn(move |cx| {
        if first {
            first = false;
            set_refresh(true);
            let poll = call.as_mut().poll(cx);
            set_refresh(false);
            poll
        } else {
            call.as_mut().poll(cx)
        }
    })
    .await
}

/// Turns the attribute's `manager = …` into a manager reference.
#[diagnostic::on_unimplemented(
    message = "`manager = ...` must be a `tankard::CacheManager`",
    label = "not a `tankard::CacheManager`",
    note = "give a CacheManager, a reference to one, or an Arc, Box or LazyLock holding one"
)]
pub trait ManagerRef {
    fn manager_ref(&self) -> &CacheManager;
}

impl ManagerRef for CacheManager {
    #[inline]
    fn manager_ref(&self) -> &CacheManager {
        self
    }
}

impl<M: ManagerRef + ?Sized> ManagerRef for &M {
    #[inline]
    fn manager_ref(&self) -> &CacheManager {
        (**self).manager_ref()
    }
}

impl<M: ManagerRef + ?Sized> ManagerRef for Arc<M> {
    #[inline]
    fn manager_ref(&self) -> &CacheManager {
        (**self).manager_ref()
    }
}

impl<M: ManagerRef + ?Sized> ManagerRef for Box<M> {
    #[inline]
    fn manager_ref(&self) -> &CacheManager {
        (**self).manager_ref()
    }
}

impl<M: ManagerRef, F: FnOnce() -> M> ManagerRef for LazyLock<M, F> {
    #[inline]
    fn manager_ref(&self) -> &CacheManager {
        (**self).manager_ref()
    }
}

#[inline]
pub fn manager<M: ManagerRef + ?Sized>(manager: &M) -> Result<&CacheManager> {
    Ok(manager.manager_ref())
}

#[inline]
pub fn global() -> Result<&'static CacheManager> {
    crate::manager::global()
}

#[inline]
pub fn key_arg<K: CacheKey + ?Sized>(out: &mut KeyWriter<'_>, value: &K) {
    out.arg(value);
}

/// Fixes an async body's output type, so `?` inside it knows its target.
#[inline(always)]
pub fn body_async<R, F, Fut>(body: F) -> F
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = R>,
{
    body
}

/// What a cached function's value type must be.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the value of a #[tankard::cached] function",
    label = "needs Clone + Serialize + DeserializeOwned + Send + Sync + 'static",
    note = "the cache stores the value (encoded with serde on shared backends) and hands out clones of it"
)]
pub trait CachedValue: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> CachedValue for T {}

/// What a cached `Result` function's error type must be.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` of a #[tankard::cached] function must implement `From<tankard::Error>` and `Display`",
    label = "cache failures are returned as this type",
    note = "add a variant with `#[from] tankard::Error`, or use `tankard::Error`, `anyhow::Error` or `Box<dyn std::error::Error + Send + Sync>`"
)]
pub trait CacheError: From<Error> + fmt::Display {}

impl<E: From<Error> + fmt::Display> CacheError for E {}

/// The first half of a call: a hit, or what the slow path needs. Kept
/// two words wide so the hit path moves nothing else around.
pub struct Start<V>(Begun<V>);

enum Begun<V> {
    Hit(Arc<V>),
    Slow(Box<Slow>),
}

struct Slow {
    site: &'static Site,
    state: SlowState,
}

enum SlowState {
    Miss(Call),
    Unavailable(Error),
}

struct Call {
    cache: Cow<'static, Cache>,
    key: String,
    refresh: bool,
}

impl<V> Start<V> {
    #[cold]
    fn slow(site: &'static Site, state: SlowState) -> Start<V> {
        Start(Begun::Slow(Box::new(Slow { site, state })))
    }
}

#[inline]
pub fn start<V, K>(
    site: &'static Site,
    manager: Result<&CacheManager>,
    self_type: Option<&'static str>,
    refresh: bool,
    key: K,
) -> Start<V>
where
    V: Send + Sync + 'static,
    K: FnOnce(&mut KeyWriter<'_>),
{
    let cache = match manager.and_then(|manager| site.resolve(manager, self_type)) {
        Ok(cache) => cache,
        Err(err) => return Start::slow(site, SlowState::Unavailable(err)),
    };
    let mut parts = Some((cache, key));
    // This thread's key buffer, or a new one if it is in use (a `CacheKey`
    // impl that calls a cached function) or gone (thread teardown).
    let reused = LOCAL.try_with(|local| {
        let mut buf = local.key.try_borrow_mut().ok()?;
        let (cache, key) = parts.take()?;
        buf.clear();
        let start = lookup(site, cache, refresh, key, &mut buf);
        if buf.capacity() > 4096 {
            // One huge key must not pin its memory for the thread's life.
            *buf = String::new();
        }
        Some(start)
    });
    if let Ok(Some(start)) = reused {
        return start;
    }
    match parts.take() {
        Some((cache, key)) => lookup(site, cache, refresh, key, &mut String::new()),
        None => unreachable!("the key buffer closure returns what it takes"),
    }
}

#[inline]
fn lookup<V, K>(
    site: &'static Site,
    cache: Cow<'static, Cache>,
    refresh: bool,
    key: K,
    buf: &mut String,
) -> Start<V>
where
    V: Send + Sync + 'static,
    K: FnOnce(&mut KeyWriter<'_>),
{
    let mut writer = KeyWriter::new(buf);
    key(&mut writer);
    if let Err(err) = writer.finish() {
        return Start::slow(site, SlowState::Unavailable(err));
    }
    #[cfg(feature = "memory")]
    if !refresh && let Some(value) = cache.try_get_fresh::<V>(buf) {
        return Start(Begun::Hit(value));
    }
    Start::slow(
        site,
        SlowState::Miss(Call {
            cache,
            key: buf.clone(),
            refresh,
        }),
    )
}

/// What a creator "fails" with when there is nothing to store: the
/// leader's own error (its waiters get the text; it keeps the original),
/// or an `Option` body's `None`.
#[derive(Debug)]
enum Outcome {
    LeaderFailed(String),
    NoneReturned,
    RanTwice,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::LeaderFailed(message) => f.write_str(message),
            Outcome::NoneReturned => f.write_str("the function returned None, which is not cached"),
            Outcome::RanTwice => f.write_str("a cached function's body was asked to run twice"),
        }
    }
}

impl std::error::Error for Outcome {}

impl Call {
    async fn store<V: CachedValue>(&self, site: &Site, value: &V) {
        if let Err(err) = self.cache.put(&self.key, value.clone()).await {
            site.report(&err);
        }
    }
}

pub async fn finish_async<V, F, Fut>(start: Start<V>, body: F) -> V
where
    V: CachedValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = V>,
{
    let slow = match start.0 {
        Begun::Hit(value) => return V::clone(&value),
        Begun::Slow(slow) => *slow,
    };
    // Boxed: the slow paths' futures would otherwise make every call's
    // future (and every future awaiting one) as large as the biggest of them.
    match slow.state {
        SlowState::Unavailable(err) => {
            slow.site.report(&err);
            Box::pin(body()).await
        }
        SlowState::Miss(call) => Box::pin(miss(slow.site, call, body)).await,
    }
}

async fn miss<V, F, Fut>(site: &'static Site, call: Call, body: F) -> V
where
    V: CachedValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = V>,
{
    if call.refresh {
        let value = body().await;
        call.store(site, &value).await;
        return value;
    }
    let mut body = Some(body);
    let mut kept = None;
    let (body_slot, kept_slot) = (&mut body, &mut kept);
    let result = call
        .cache
        .get_or_try_create(&call.key, move || async move {
            let body = body_slot.take().ok_or(Outcome::RanTwice)?;
            let value = body().await;
            *kept_slot = Some(value.clone());
            Ok::<V, Outcome>(value)
        })
        .await;
    match (result, kept) {
        // This caller ran the body: its own value, whatever became of storing it.
        (_, Some(value)) => value,
        (Ok(value), None) => V::clone(&value),
        (Err(err), None) => {
            if !err.is_creator_panic() {
                site.report(&err);
            }
            match body.take() {
                Some(body) => body().await,
                None => unreachable!("a body that ran either kept its value or unwound"),
            }
        }
    }
}

pub async fn finish_result_async<V, E, F, Fut>(start: Start<V>, body: F) -> Result<V, E>
where
    V: CachedValue,
    E: CacheError,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let slow = match start.0 {
        Begun::Hit(value) => return Ok(V::clone(&value)),
        Begun::Slow(slow) => *slow,
    };
    match slow.state {
        SlowState::Unavailable(err) => Err(E::from(err)),
        SlowState::Miss(call) => Box::pin(miss_result(slow.site, call, body)).await,
    }
}

async fn miss_result<V, E, F, Fut>(site: &'static Site, call: Call, body: F) -> Result<V, E>
where
    V: CachedValue,
    E: CacheError,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    if call.refresh {
        let value = body().await?;
        call.store(site, &value).await;
        return Ok(value);
    }
    let mut kept = None;
    let mut failed = None;
    let (kept_slot, failed_slot) = (&mut kept, &mut failed);
    let result = call
        .cache
        .get_or_try_create(&call.key, move || async move {
            match body().await {
                Ok(value) => {
                    *kept_slot = Some(value.clone());
                    Ok(value)
                }
                Err(err) => {
                    let shared = Outcome::LeaderFailed(err.to_string());
                    *failed_slot = Some(err);
                    Err(shared)
                }
            }
        })
        .await;
    match (result, kept, failed) {
        (_, Some(value), _) => Ok(value),
        (_, None, Some(err)) => Err(err),
        (Ok(value), None, None) => Ok(V::clone(&value)),
        (Err(err), None, None) => Err(E::from(err)),
    }
}

pub async fn finish_option_async<V, F, Fut>(start: Start<V>, body: F) -> Option<V>
where
    V: CachedValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Option<V>>,
{
    let slow = match start.0 {
        Begun::Hit(value) => return Some(V::clone(&value)),
        Begun::Slow(slow) => *slow,
    };
    match slow.state {
        SlowState::Unavailable(err) => {
            slow.site.report(&err);
            Box::pin(body()).await
        }
        SlowState::Miss(call) => Box::pin(miss_option(slow.site, call, body)).await,
    }
}

async fn miss_option<V, F, Fut>(site: &'static Site, call: Call, body: F) -> Option<V>
where
    V: CachedValue,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Option<V>>,
{
    if call.refresh {
        let value = body().await;
        match &value {
            Some(value) => call.store(site, value).await,
            // No value to keep: the old one must not outlive the refresh.
            None => {
                if let Err(err) = call.cache.remove(&call.key).await {
                    site.report(&err);
                }
            }
        }
        return value;
    }
    let mut body = Some(body);
    let mut kept = None;
    let mut got_none = false;
    let (body_slot, kept_slot, none_slot) = (&mut body, &mut kept, &mut got_none);
    let result = call
        .cache
        .get_or_try_create(&call.key, move || async move {
            let body = body_slot.take().ok_or(Outcome::RanTwice)?;
            match body().await {
                Some(value) => {
                    *kept_slot = Some(value.clone());
                    Ok(value)
                }
                None => {
                    *none_slot = true;
                    Err(Outcome::NoneReturned)
                }
            }
        })
        .await;
    if got_none {
        return None;
    }
    match (result, kept) {
        (_, Some(value)) => Some(value),
        (Ok(value), None) => Some(V::clone(&value)),
        // The leader we waited on got None.
        (Err(err), None)
            if matches!(err.creator_error::<Outcome>(), Some(Outcome::NoneReturned)) =>
        {
            None
        }
        (Err(err), None) => {
            if !err.is_creator_panic() {
                site.report(&err);
            }
            match body.take() {
                Some(body) => body().await,
                None => unreachable!("a body that ran either kept its value or unwound"),
            }
        }
    }
}

pub fn finish_blocking<V, F>(start: Start<V>, body: F) -> V
where
    V: CachedValue,
    F: FnOnce() -> V,
{
    let slow = match start.0 {
        Begun::Hit(value) => return V::clone(&value),
        Begun::Slow(slow) => *slow,
    };
    let site = slow.site;
    match slow.state {
        SlowState::Unavailable(err) => {
            site.report(&err);
            body()
        }
        SlowState::Miss(call) => match crate::blocking::runtime() {
            Ok(handle) => {
                crate::blocking::run_on(handle, miss(site, call, move || async move { body() }))
            }
            Err(err) => {
                site.report(&err);
                body()
            }
        },
    }
}

pub fn finish_result_blocking<V, E, F>(start: Start<V>, body: F) -> Result<V, E>
where
    V: CachedValue,
    E: CacheError,
    F: FnOnce() -> Result<V, E>,
{
    let slow = match start.0 {
        Begun::Hit(value) => return Ok(V::clone(&value)),
        Begun::Slow(slow) => *slow,
    };
    match slow.state {
        SlowState::Unavailable(err) => Err(E::from(err)),
        SlowState::Miss(call) => {
            let handle = crate::blocking::runtime().map_err(E::from)?;
            crate::blocking::run_on(
                handle,
                miss_result(slow.site, call, move || async move { body() }),
            )
        }
    }
}

pub fn finish_option_blocking<V, F>(start: Start<V>, body: F) -> Option<V>
where
    V: CachedValue,
    F: FnOnce() -> Option<V>,
{
    let slow = match start.0 {
        Begun::Hit(value) => return Some(V::clone(&value)),
        Begun::Slow(slow) => *slow,
    };
    let site = slow.site;
    match slow.state {
        SlowState::Unavailable(err) => {
            site.report(&err);
            body()
        }
        SlowState::Miss(call) => match crate::blocking::runtime() {
            Ok(handle) => crate::blocking::run_on(
                handle,
                miss_option(site, call, move || async move { body() }),
            ),
            Err(err) => {
                site.report(&err);
                body()
            }
        },
    }
}

/// A companion's target: the handle and the key of one argument list.
pub struct Located {
    cache: Cow<'static, Cache>,
    key: String,
}

pub fn locate<K>(
    site: &'static Site,
    manager: Result<&CacheManager>,
    self_type: Option<&'static str>,
    key: K,
) -> Result<Located>
where
    K: FnOnce(&mut KeyWriter<'_>),
{
    let cache = site.resolve(manager?, self_type)?;
    let mut buf = String::new();
    let mut writer = KeyWriter::new(&mut buf);
    key(&mut writer);
    writer.finish()?;
    Ok(Located { cache, key: buf })
}

impl Located {
    pub async fn remove(self) -> Result<bool> {
        self.cache.remove(&self.key).await
    }

    pub async fn set<V: CachedValue>(self, value: &V) -> Result<()> {
        self.cache.put(&self.key, value.clone()).await
    }

    pub async fn peek<V: CachedValue>(self) -> Result<Option<V>> {
        Ok(self
            .cache
            .get::<V>(&self.key)
            .await?
            .map(|value| V::clone(&value)))
    }

    pub fn remove_blocking(self) -> Result<bool> {
        crate::blocking::block_on(self.remove())?
    }

    pub fn set_blocking<V: CachedValue>(self, value: &V) -> Result<()> {
        crate::blocking::block_on(self.set(value))?
    }

    pub fn peek_blocking<V: CachedValue>(self) -> Result<Option<V>> {
        crate::blocking::block_on(self.peek())?
    }
}
