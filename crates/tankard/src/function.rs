//! What `#[tankard::cached]` expands to. Not a public API: the attribute is.
//!
//! Every cached function (and each of its companions) holds a static
//! [`Site`]: its namespace, region and expiry, and the [`Cache`] handle they
//! resolve to, bound on first use. A call then goes:
//!
//! 1. [`take_refresh`]: whether `<fn>_refresh` called it;
//! 2. [`start`]: resolve the handle (a pointer compare once bound), write
//!    the key on the stack, and, on a memory region, look in the
//!    function's typed map (`TypedCache`): a hit clones the value out,
//!    allocates nothing and awaits nothing;
//! 3. a `finish_*` function: the hit's clone, or the slow path through the
//!    dog-pile engine on the namespace or the typed map (on a private
//!    runtime for sync functions, see [`crate::blocking`]).
//!
//! An `async fn` that owns its arguments has its body expanded as a
//! function of its own and goes through `finish_spawnable_*`: there,
//! [`Probe`] tells at compile time whether the body's future is `Send +
//! 'static`, and if so a stale result on a `refresh = background` region
//! is regenerated in a task ([`Spawnable`]). Other bodies run in the
//! caller (`Caller`).
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
//!   No manager, or no region, panics instead in a debug build
//!   (`Site::cannot_cache`): nothing else would show it.
//! - Once the body has produced a value, that value is returned even if it
//!   cannot be stored (encoding failed, backend down); the failure is logged
//!   and counted by the region.

#![allow(missing_docs, missing_debug_implementations)]

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use futures_util::TryFutureExt;
use futures_util::future::{BoxFuture, Either};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::cache_key::KeyWriter;
use crate::cache_key::{CacheKey, KeyBuf, Word, WordKey};
use crate::engine::{Creator, Declined};
use crate::error::{Error, Kind, Result};
use crate::manager::CacheManager;
use crate::namespace::Cache;
#[cfg(feature = "memory")]
use crate::namespace::typed::TypedCache;
use crate::region::Region;
use crate::stats::Event;

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
    /// A call that cannot reach its cache panics: set in debug builds of
    /// functions with no error channel (see [`Site::cannot_cache`]).
    strict: bool,
    bound: OnceLock<Bound>,
    setup_logged: AtomicBool,
    last_log_ms: AtomicU64,
}

struct Bound {
    /// The manager's default region: its identity (each manager has its own).
    manager: Region,
    self_type: Option<&'static str>,
    cache: Cache,
    /// The function's [`TypedCache`] on a memory region.
    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    typed: Option<Box<dyn Any + Send + Sync>>,
}

/// A call's cache: the site's bound one, or one opened for this call (a
/// call through another manager or implementing type than the first).
enum Handle<V: 'static> {
    Bound(&'static Bound),
    Opened(Box<Opened<V>>),
}

struct Opened<V> {
    cache: Cache,
    #[cfg(feature = "memory")]
    typed: Option<TypedCache<V>>,
    #[cfg(not(feature = "memory"))]
    typed: std::marker::PhantomData<V>,
}

impl<V: CachedValue> Handle<V> {
    #[inline]
    fn cache(&self) -> &Cache {
        match self {
            Handle::Bound(bound) => &bound.cache,
            Handle::Opened(opened) => &opened.cache,
        }
    }

    #[cfg(feature = "memory")]
    #[inline]
    fn typed(&self) -> Option<&TypedCache<V>> {
        match self {
            Handle::Bound(bound) => bound.typed(),
            Handle::Opened(opened) => opened.typed.as_ref(),
        }
    }

    /// An empty key for this handle: compact for a typed map.
    #[inline]
    fn new_key(&self) -> KeyBuf {
        #[cfg(feature = "memory")]
        if let Some(typed) = self.typed() {
            return typed.new_key();
        }
        KeyBuf::new()
    }

    fn opened(cache: Cache) -> Handle<V> {
        Handle::Opened(Box::new(Opened {
            #[cfg(feature = "memory")]
            typed: TypedCache::of(&cache),
            #[cfg(not(feature = "memory"))]
            typed: std::marker::PhantomData,
            cache,
        }))
    }
}

impl Bound {
    #[cfg(feature = "memory")]
    #[inline]
    fn typed<V: CachedValue>(&self) -> Option<&TypedCache<V>> {
        self.typed.as_ref()?.downcast_ref()
    }

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
        strict: bool,
    ) -> Site {
        Site {
            namespace,
            region,
            expire,
            strict,
            bound: OnceLock::new(),
            setup_logged: AtomicBool::new(false),
            last_log_ms: AtomicU64::new(0),
        }
    }

    /// The cache handle for `manager`: the bound one (no clone), or a fresh
    /// one when the call uses another manager than the first call did.
    #[inline]
    fn resolve<V: CachedValue>(
        &'static self,
        manager: &CacheManager,
        self_type: Option<&'static str>,
    ) -> Result<Handle<V>> {
        if let Some(bound) = self.bound.get() {
            if bound.matches(manager, self_type) {
                return Ok(Handle::Bound(bound));
            }
            return self.open(manager, self_type).map(Handle::opened);
        }
        self.bind::<V>(manager, self_type)
    }

    #[cold]
    fn bind<V: CachedValue>(
        &'static self,
        manager: &CacheManager,
        self_type: Option<&'static str>,
    ) -> Result<Handle<V>> {
        let cache = self.open(manager, self_type)?;
        let bound = Bound {
            manager: manager.default_region().clone(),
            self_type,
            #[cfg(feature = "memory")]
            typed: TypedCache::<V>::of(&cache)
                .map(|typed| Box::new(typed) as Box<dyn Any + Send + Sync>),
            #[cfg(not(feature = "memory"))]
            typed: None,
            cache,
        };
        match self.bound.set(bound) {
            Ok(()) => match self.bound.get() {
                Some(bound) => Ok(Handle::Bound(bound)),
                None => self.open(manager, self_type).map(Handle::opened),
            },
            // Another thread bound it first, maybe to another manager.
            Err(ours) => match self.bound.get() {
                Some(bound) if bound.matches(manager, self_type) => Ok(Handle::Bound(bound)),
                _ => Ok(Handle::opened(ours.cache)),
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
            Some(seconds) => cache.expire(std::time::Duration::from_secs(seconds)),
            None => cache,
        })
    }

    fn name(&self) -> String {
        match self.namespace {
            Namespace::Fixed(name) => name.to_owned(),
            Namespace::OfSelf { module, function } => format!("{module}::{function}"),
        }
    }

    /// A call that cannot reach its cache at all: no manager is installed,
    /// or the manager lacks the function's region. Nothing else would tell:
    /// a function with no error channel runs uncached, as fast as its body,
    /// and `tankard::install` can only check the regions. So a strict site
    /// (a debug build of such a function) panics, at the caller's line for
    /// a sync function (`#[track_caller]` all the way from the wrapper);
    /// otherwise the call is counted as a backend error of the manager's
    /// default region, when there is a manager, and [`Site::report`] logs
    /// it once.
    #[cold]
    #[track_caller]
    fn cannot_cache(&self, err: &Error, manager: Option<&CacheManager>) {
        if !matches!(err.kind(), Kind::NotInstalled | Kind::RegionNotFound { .. }) {
            return;
        }
        if panics_when_uncached(self.strict) {
            panic!(
                "#[tankard::cached] function {} cannot use its cache: {err}\n\
                 (a debug build panics here; a release build runs the function without its cache and logs this once)",
                self.name()
            );
        }
        if let Some(manager) = manager {
            manager.default_region().inner.count(Event::BackendError);
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

/// Set by [`release_behaviour_for_tests`].
static RELEASE_BEHAVIOUR: AtomicBool = AtomicBool::new(false);

/// Whether a strict site's uncached call panics: what decides between the
/// debug and the release behaviour.
fn panics_when_uncached(strict: bool) -> bool {
    strict && !RELEASE_BEHAVIOUR.load(Ordering::Relaxed)
}

/// Test hook: from now on, in this whole process, calls that cannot reach
/// their cache behave as in a release build (run uncached, log once,
/// count) even where the debug build would panic. Tankard's tests of the
/// release behaviour call it in a child process of their own.
pub fn release_behaviour_for_tests() {
    RELEASE_BEHAVIOUR.store(true, Ordering::Relaxed);
}

/// A `#[tankard::cached]` function that names a region and uses the
/// global manager: [`crate::install`] checks that its manager has the
/// region. The attribute submits one per such function, at compile time.
#[derive(Debug)]
pub struct Registration {
    region: &'static str,
    function: &'static str,
}

impl Registration {
    pub const fn new(region: &'static str, function: &'static str) -> Registration {
        Registration { region, function }
    }
}

pub use inventory;

inventory::collect!(Registration);

/// The regions that registered functions name and `manager` lacks, each
/// with the functions naming it, sorted.
///
/// Functions in rustdoc's merged doctests are left out: edition 2024
/// compiles a crate's doctests into one binary (modules
/// `doctest_bundle_<edition>::__doctest_<n>`) and runs each in a process
/// of its own, so every doctest would be checked against the regions of
/// all the others. A doctest that shows this check is a `standalone_crate`
/// one; the first-call panic still covers merged ones.
pub(crate) fn missing_regions(manager: &CacheManager) -> Vec<(String, Vec<String>)> {
    let mut missing: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for registration in inventory::iter::<Registration> {
        if registration.function.starts_with("doctest_bundle_")
            || manager.region(registration.region).is_ok()
        {
            continue;
        }
        let functions = missing.entry(registration.region).or_default();
        if !functions.iter().any(|f| f == registration.function) {
            functions.push(registration.function.to_owned());
        }
    }
    missing
        .into_iter()
        .map(|(region, mut functions)| {
            functions.sort();
            (region.to_owned(), functions)
        })
        .collect()
}

thread_local! {
    /// Set by `<fn>_refresh` around the call it makes.
    static REFRESH: Cell<bool> = const { Cell::new(false) };
}

/// Whether the call was made by `<fn>_refresh`; clears the flag, so calls
/// made by the function's body are ordinary calls.
#[inline]
pub fn take_refresh() -> bool {
    REFRESH
        .try_with(|refresh| refresh.replace(false))
        .unwrap_or(false)
}

fn set_refresh(on: bool) {
    let _ = REFRESH.try_with(|refresh| refresh.set(on));
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

/// What a cached function's value type must be. Generated code does not
/// ask for it directly: see [`ValueOf`].
pub trait CachedValue: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> CachedValue for T {}

/// A cached function's value type, checked once.
///
/// Each function gets a hidden sibling, `fn __tankard_<name>_value() ->
/// impl ValueOf<V = T>`, and every generated call takes its marker. An
/// unsuitable `T` is then one error at that sibling (per missing trait,
/// naming the derive to add), not one at each of the dozen generic calls
/// that need `T: CachedValue`: those only need the opaque type to be
/// `ValueOf`, which its signature promises. The marker is zero-sized, so
/// the calls compile to what they would be with `T` itself.
pub trait ValueOf {
    type V: CachedValue;
}

/// The marker behind [`ValueOf`].
pub struct Value<V>(PhantomData<fn() -> V>);

impl<V> Value<V> {
    #[inline(always)]
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Value<V> {
        Value(PhantomData)
    }
}

/// What a marker stands for; no bounds, so that the one impl of
/// [`ValueOf`] is a blanket one (the compiler then does not print it as
/// "the trait is implemented for `Value<V>`" under every error).
pub trait Marks {
    type Marked;
}

impl<V> Marks for Value<V> {
    type Marked = V;
}

impl<T: Marks> ValueOf for T
where
    T::Marked: ValueClone + ValueSerialize + ValueDeserialize + ValueSend + ValueSync + 'static,
{
    type V = T::Marked;
}

// One trait per requirement, each saying what to add: the compiler reports
// the first unmet bound of the impl above by its own message, where
// serde's traits would print a list of every type that does implement them.
// `do_not_recommend` keeps it at our trait instead of the serde one behind.

#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the value of a #[tankard::cached] function: it is not `Clone`",
    label = "add `#[derive(Clone)]` to `{Self}`",
    note = "each call returns a clone of the cached value; wrap a large value in an `Arc`"
)]
pub trait ValueClone: Clone {}
#[diagnostic::do_not_recommend]
impl<T: Clone> ValueClone for T {}

#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the value of a #[tankard::cached] function: it is not `serde::Serialize`",
    label = "add `#[derive(serde::Serialize)]` to `{Self}`",
    note = "shared backends (file, memcached, Redis) store the value encoded with serde"
)]
pub trait ValueSerialize: Serialize {}
#[diagnostic::do_not_recommend]
impl<T: Serialize> ValueSerialize for T {}

#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the value of a #[tankard::cached] function: it is not `serde::Deserialize`",
    label = "add `#[derive(serde::Deserialize)]` to `{Self}`",
    note = "shared backends (file, memcached, Redis) read the value back with serde, into an owned value"
)]
pub trait ValueDeserialize: DeserializeOwned {}
#[diagnostic::do_not_recommend]
impl<T: DeserializeOwned> ValueDeserialize for T {}

#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the value of a #[tankard::cached] function: it is not `Send`",
    label = "the cache hands this value to other threads",
    note = "use `Arc` instead of `Rc`; a `Mutex` or an atomic instead of `Cell` or `RefCell`"
)]
pub trait ValueSend: Send {}
#[diagnostic::do_not_recommend]
impl<T: Send> ValueSend for T {}

#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the value of a #[tankard::cached] function: it is not `Sync`",
    label = "the cache shares this value between threads",
    note = "use `Arc` instead of `Rc`; a `Mutex` or an atomic instead of `Cell` or `RefCell`"
)]
pub trait ValueSync: Sync {}
#[diagnostic::do_not_recommend]
impl<T: Sync> ValueSync for T {}

/// What a cached `Result` function's error type must be.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` of a #[tankard::cached] function must implement `From<tankard::Error>` and `Display`",
    label = "cache failures are returned as this type",
    note = "add a variant with `#[from] tankard::Error`, or use `tankard::Error`, `anyhow::Error` or `Box<dyn std::error::Error + Send + Sync>`"
)]
pub trait CacheError: From<Error> + fmt::Display {}

impl<E: From<Error> + fmt::Display> CacheError for E {}

/// The first half of a call: a hit, or what the slow path needs. The
/// slow path is boxed so the hit path moves nothing else around.
pub struct Start<M: ValueOf>(Begun<M::V>);

enum Begun<V: 'static> {
    /// Answered on the calling thread: only a memory region can.
    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    Hit(V),
    Slow(Box<Slow<V>>),
}

struct Slow<V: 'static> {
    site: &'static Site,
    state: SlowState<V>,
}

enum SlowState<V: 'static> {
    Miss(Call<V>),
    Unavailable(Error),
}

/// A miss: the handle and the key of one argument list (compact if the
/// handle has a typed map, see [`KeyBuf`]).
struct Call<V: 'static> {
    handle: Handle<V>,
    key: KeyBuf,
    refresh: bool,
}

impl<M: ValueOf> Start<M> {
    #[cold]
    fn slow(site: &'static Site, state: SlowState<M::V>) -> Start<M> {
        Start(Begun::Slow(Box::new(Slow { site, state })))
    }

    /// A call that cannot reach its cache: the site decides whether that
    /// panics (see [`Site::cannot_cache`]).
    #[cold]
    #[track_caller]
    fn unavailable(site: &'static Site, err: Error, manager: Option<&CacheManager>) -> Start<M> {
        site.cannot_cache(&err, manager);
        Start::slow(site, SlowState::Unavailable(err))
    }

    /// A miss on a word key: the key's text is written only now, for the
    /// slow path.
    #[cold]
    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    fn miss_with<K: FnOnce(&mut KeyWriter<'_>)>(
        site: &'static Site,
        handle: Handle<M::V>,
        word: Option<WordKey>,
        key: K,
        refresh: bool,
    ) -> Start<M> {
        let mut buf = handle.new_key();
        match write_key(&mut buf, word, key) {
            Ok(()) => Start::miss(site, handle, buf, refresh),
            Err(err) => Start::slow(site, SlowState::Unavailable(err)),
        }
    }

    #[cold]
    fn miss(site: &'static Site, handle: Handle<M::V>, key: KeyBuf, refresh: bool) -> Start<M> {
        Start::slow(
            site,
            SlowState::Miss(Call {
                handle,
                key,
                refresh,
            }),
        )
    }
}

/// The first half of a call. `value` is the function's [`ValueOf`]
/// marker. `#[track_caller]`, like a sync wrapper: a call that cannot
/// reach its cache panics at the caller's line in debug builds.
#[inline]
#[track_caller]
pub fn start<M, K, const N: usize>(
    value: M,
    site: &'static Site,
    manager: Result<&CacheManager>,
    self_type: Option<&'static str>,
    refresh: bool,
    words: [Option<Word>; N],
    key: K,
) -> Start<M>
where
    M: ValueOf,
    K: FnOnce(&mut KeyWriter<'_>),
{
    let _ = value;
    // Taken apart first: a `Result` still whole at the end of the hit
    // path is tested again there, for a drop that cannot happen.
    let manager = match manager {
        Ok(manager) => manager,
        Err(err) => return Start::unavailable(site, err, None),
    };
    // The hit path: a bound site on a memory region.
    #[cfg(feature = "memory")]
    if let Some(bound) = site.bound.get()
        && bound.matches(manager, self_type)
        && let Some(typed) = bound.typed::<M::V>()
    {
        let word = WordKey::of(words);
        if let Some(found) = &word {
            if !refresh && let Some(value) = typed.fresh_word(found) {
                return Start(Begun::Hit(value));
            }
            return Start::miss_with(site, Handle::Bound(bound), word, key, refresh);
        }
        let mut buf = typed.new_key();
        if let Err(err) = write_key(&mut buf, None, key) {
            return Start::slow(site, SlowState::Unavailable(err));
        }
        if !refresh && let Some(value) = typed.fresh(&typed.key(&buf)) {
            return Start(Begun::Hit(value));
        }
        return Start::miss(site, Handle::Bound(bound), buf, refresh);
    }
    // `WordKey::of` again rather than once above: computed up front, the
    // key escapes into this call and stays in memory, and the hit path
    // tests its presence at run time instead of at compile time.
    start_slow(site, manager, self_type, refresh, WordKey::of(words), key)
}

/// [`start`] for every other case: the first call, a call through another
/// manager or implementing type, a region that is not in memory.
#[track_caller]
fn start_slow<M, K>(
    site: &'static Site,
    manager: &CacheManager,
    self_type: Option<&'static str>,
    refresh: bool,
    word: Option<WordKey>,
    key: K,
) -> Start<M>
where
    M: ValueOf,
    K: FnOnce(&mut KeyWriter<'_>),
{
    let handle = match site.resolve::<M::V>(manager, self_type) {
        Ok(handle) => handle,
        Err(err) => return Start::unavailable(site, err, Some(manager)),
    };
    let mut buf = handle.new_key();
    if let Err(err) = write_key(&mut buf, word, key) {
        return Start::slow(site, SlowState::Unavailable(err));
    }
    #[cfg(feature = "memory")]
    if !refresh
        && let Some(typed) = handle.typed()
        && let Some(value) = typed.fresh(&typed.key(&buf))
    {
        return Start(Begun::Hit(value));
    }
    Start::miss(site, handle, buf, refresh)
}

/// Writes an argument list's key into `buf`; `word` is the same key as
/// words, when it is one.
#[inline]
fn write_key<K: FnOnce(&mut KeyWriter<'_>)>(
    buf: &mut KeyBuf,
    word: Option<WordKey>,
    key: K,
) -> Result<()> {
    buf.set_word(word);
    let mut writer = KeyWriter::new(buf);
    key(&mut writer);
    writer.finish()
}

#[inline]
pub fn word_of<K: CacheKey + ?Sized>(value: &K) -> Option<Word> {
    value.word()
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
            Outcome::NoneReturned => f.write_str(NONE_RETURNED.0),
            Outcome::RanTwice => f.write_str("a cached function's body was asked to run twice"),
        }
    }
}

impl std::error::Error for Outcome {}

impl Outcome {
    /// The creator error it becomes: an `Option` body's `None` is declined
    /// (nothing went wrong, so no creator error is counted).
    fn into_error(self) -> Error {
        match self {
            Outcome::NoneReturned => Error::creator_boxed(NONE_RETURNED),
            failed => Error::creator_boxed(failed),
        }
    }
}

const NONE_RETURNED: Declined = Declined("the function returned None, which is not cached");

impl<V: CachedValue> Call<V> {
    /// The dog-pile engine on this call's key, in the typed map if there
    /// is one. `local` runs the body in the caller; on a stale key with
    /// `refresh = background`, `body` goes to a task instead when it can
    /// (see [`Body::spawn`]), and `finish` turns its output into what is
    /// stored.
    async fn get_or_create<B, R, L, Fut>(
        &self,
        body: &mut Option<B>,
        local: L,
        finish: fn(R) -> Result<V, Outcome>,
    ) -> Result<Arc<V>>
    where
        B: Body<R>,
        L: FnOnce(B) -> Fut,
        Fut: Future<Output = Result<V, Outcome>>,
    {
        let creator = MissCreator {
            body,
            local,
            finish,
        };
        #[cfg(feature = "memory")]
        if let Some(typed) = self.handle.typed() {
            return typed
                .get_or_create(&self.key.text(), &self.key, creator)
                .await;
        }
        self.handle
            .cache()
            .get_or_create_with(&self.key.text(), creator)
            .await
    }

    async fn store(&self, site: &Site, value: &V) {
        if let Err(err) = put(&self.handle, &self.key, value).await {
            site.report(&err);
        }
    }
}

/// The creator of a miss: `local` runs the body in the caller, and
/// [`Body::spawn`] makes it a task. A struct rather than closures: a
/// closure over a borrowed slot is given a signature for every lifetime,
/// which the check that a caller's future is `Send` then fails on (the
/// "implementation of `FnOnce` is not general enough" error).
struct MissCreator<'b, B, L, R, V> {
    body: &'b mut Option<B>,
    local: L,
    finish: fn(R) -> Result<V, Outcome>,
}

impl<B, L, Fut, R, V> Creator<V> for MissCreator<'_, B, L, R, V>
where
    B: Body<R>,
    L: FnOnce(B) -> Fut,
    Fut: Future<Output = Result<V, Outcome>>,
    V: 'static,
{
    type Future = Either<
        futures_util::future::MapErr<Fut, fn(Outcome) -> Error>,
        futures_util::future::Ready<Result<V>>,
    >;

    fn create(self) -> Self::Future {
        match self.body.take() {
            Some(body) => Either::Left(
                (self.local)(body).map_err(Outcome::into_error as fn(Outcome) -> Error),
            ),
            None => Either::Right(futures_util::future::ready(Err(
                Outcome::RanTwice.into_error()
            ))),
        }
    }

    fn spawnable(self) -> std::result::Result<BoxFuture<'static, Result<V>>, Self> {
        match B::spawn(self.body, self.finish) {
            Some(task) => Ok(task),
            None => Err(self),
        }
    }
}

async fn put<V: CachedValue>(handle: &Handle<V>, key: &KeyBuf, value: &V) -> Result<()> {
    put_tagged(handle, key, value, &None).await
}

/// [`put`] with the entry's tags (`_set` of a function with `tags = …`).
async fn put_tagged<V: CachedValue>(
    handle: &Handle<V>,
    key: &KeyBuf,
    value: &V,
    tags: &crate::tags::Tags,
) -> Result<()> {
    #[cfg(feature = "memory")]
    if let Some(typed) = handle.typed() {
        typed.put_tagged(&typed.key(key), value.clone(), tags);
        return Ok(());
    }
    let mut cache = handle.cache().clone();
    cache.tags = tags.clone();
    cache.put(&key.text(), value.clone()).await
}

async fn remove<V: CachedValue>(handle: &Handle<V>, key: &KeyBuf) -> Result<bool> {
    #[cfg(feature = "memory")]
    if let Some(typed) = handle.typed() {
        return Ok(typed.remove(&typed.key(key)));
    }
    handle.cache().remove(&key.text()).await
}

/// A boxed body (or creator) that can run in a task of its own.
pub type Task<R> = BoxFuture<'static, R>;

/// What a spawnable function's `__tankard_spawner` returns: its body as a
/// task when it can be one (see [`Probe`]), else `None`.
pub type Spawner<A, R> = Option<Box<dyn Fn(A) -> Task<R> + Send + Sync>>;

/// Tells, at compile time, whether a body can run in a task: `call`
/// takes the function's arguments as a tuple and returns the body's
/// future. Through autoref specialization, `(&Probe::new(call)).spawner()`
/// resolves to [`ViaOwned`] when that future is `Send + 'static`, and to
/// [`ViaLocal`] otherwise. Both are decided on concrete types: the
/// attribute uses it only on functions without type parameters, and
/// `call` is a function item (a closure's `Send` is not known yet when
/// the method is chosen).
pub struct Probe<F, A, R>(F, PhantomData<fn(A) -> R>);

impl<F, A, R> Probe<F, A, R> {
    #[inline]
    pub fn new(call: F) -> Probe<F, A, R> {
        Probe(call, PhantomData)
    }
}

pub trait ViaOwned<A, R> {
    fn spawner(&self) -> Spawner<A, R>;
}

impl<F, A, R, Fut> ViaOwned<A, R> for Probe<F, A, R>
where
    F: Fn(A) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    A: 'static,
    R: 'static,
{
    fn spawner(&self) -> Spawner<A, R> {
        let call = self.0;
        // A function item is zero-sized: boxing it allocates nothing.
        Some(Box::new(move |args| Box::pin(call(args))))
    }
}

pub trait ViaLocal<A, R> {
    fn spawner(&self) -> Spawner<A, R>;
}

impl<F, A, R> ViaLocal<A, R> for &Probe<F, A, R> {
    fn spawner(&self) -> Spawner<A, R> {
        None
    }
}

/// A cached function's body, ready to run.
trait Body<R>: Sized {
    type Future: Future<Output = R>;

    /// Runs it in the caller.
    fn run(self) -> Self::Future;

    /// The owned half of a miss's creator: the body, taken out of its
    /// slot, as a task whose output `finish` turns into what the engine
    /// stores; or `None`, the body left in place, when it cannot outlive
    /// its caller (it borrows from it, or is not `Send`).
    fn spawn<V: 'static>(
        slot: &mut Option<Self>,
        finish: fn(R) -> Result<V, Outcome>,
    ) -> Option<BoxFuture<'static, Result<V>>>;
}

/// A body that runs in its caller only: a closure over the arguments.
struct Caller<F>(F);

impl<R, F, Fut> Body<R> for Caller<F>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = R>,
{
    type Future = Fut;

    fn run(self) -> Fut {
        (self.0)()
    }

    fn spawn<V: 'static>(
        _: &mut Option<Self>,
        _: fn(R) -> Result<V, Outcome>,
    ) -> Option<BoxFuture<'static, Result<V>>> {
        None
    }
}

/// The body of an `async fn` that owns its arguments: `call(args)` in the
/// caller, or in a task when `spawner` (the function's `Probe`) says the
/// body is `Send + 'static`. Asked only for a stale key on a region with
/// `refresh = background`.
/// `call` and `spawner` are function items: zero-sized, so a call's
/// future carries nothing but the arguments, as a closure's would.
pub struct Spawnable<A, C, S> {
    args: A,
    call: C,
    spawner: S,
}

#[inline]
pub fn spawnable<A, C, S>(args: A, call: C, spawner: S) -> Spawnable<A, C, S> {
    Spawnable {
        args,
        call,
        spawner,
    }
}

impl<R, A, C, Fut, S> Body<R> for Spawnable<A, C, S>
where
    C: FnOnce(A) -> Fut,
    Fut: Future<Output = R>,
    S: Fn() -> Spawner<A, R>,
    R: 'static,
{
    type Future = Fut;

    fn run(self) -> Fut {
        (self.call)(self.args)
    }

    fn spawn<V: 'static>(
        slot: &mut Option<Self>,
        finish: fn(R) -> Result<V, Outcome>,
    ) -> Option<BoxFuture<'static, Result<V>>> {
        let spawner = (slot.as_ref()?.spawner)()?;
        let body = slot.take()?;
        let task = spawner(body.args);
        Some(Box::pin(async move {
            finish(task.await).map_err(Outcome::into_error)
        }))
    }
}

fn plain_outcome<V>(value: V) -> Result<V, Outcome> {
    Ok(value)
}

fn result_outcome<V, E: fmt::Display>(result: Result<V, E>) -> Result<V, Outcome> {
    result.map_err(|err| Outcome::LeaderFailed(err.to_string()))
}

fn option_outcome<V>(value: Option<V>) -> Result<V, Outcome> {
    value.ok_or(Outcome::NoneReturned)
}

pub async fn finish_async<M, F, Fut>(start: Start<M>, body: F) -> M::V
where
    M: ValueOf,
    F: FnOnce() -> Fut,
    Fut: Future<Output = M::V>,
{
    match start.0 {
        Begun::Hit(value) => value,
        // Boxed, the whole slow path: its state would otherwise make every
        // call's future (and every future awaiting one) as large as itself,
        // and a hit would move it around. The benchmark's async function:
        // a 240-byte future and 38.6 ns a hit before, 80 bytes and 35.8 ns
        // after.
        Begun::Slow(slow) => Box::pin(slow_async(slow, Caller(body))).await,
    }
}

/// [`finish_async`] for a body that may run in a task (see [`Spawnable`]).
/// The same hit path, written out rather than shared through another
/// `async fn`, which would nest its state machine inside this one.
pub async fn finish_spawnable_async<M, A, C, Fut, S>(
    start: Start<M>,
    body: Spawnable<A, C, S>,
) -> M::V
where
    M: ValueOf,
    C: FnOnce(A) -> Fut,
    Fut: Future<Output = M::V>,
    S: Fn() -> Spawner<A, M::V>,
{
    match start.0 {
        Begun::Hit(value) => value,
        Begun::Slow(slow) => Box::pin(slow_async(slow, body)).await,
    }
}

async fn slow_async<V, B>(slow: Box<Slow<V>>, body: B) -> V
where
    V: CachedValue,
    B: Body<V>,
{
    let Slow { site, state } = *slow;
    match state {
        SlowState::Unavailable(err) => {
            site.report(&err);
            body.run().await
        }
        SlowState::Miss(call) => miss(site, call, body).await,
    }
}

async fn miss<V, B>(site: &'static Site, call: Call<V>, body: B) -> V
where
    V: CachedValue,
    B: Body<V>,
{
    if call.refresh {
        let value = body.run().await;
        call.store(site, &value).await;
        return value;
    }
    let mut body = Some(body);
    let mut kept = None;
    let kept_slot = &mut kept;
    let result = call
        .get_or_create(
            &mut body,
            move |body: B| async move {
                let value = body.run().await;
                *kept_slot = Some(value.clone());
                Ok::<V, Outcome>(value)
            },
            plain_outcome,
        )
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
                Some(body) => body.run().await,
                None => unreachable!("a body that ran either kept its value or unwound"),
            }
        }
    }
}

pub async fn finish_result_async<M, E, F, Fut>(start: Start<M>, body: F) -> Result<M::V, E>
where
    M: ValueOf,
    E: CacheError,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<M::V, E>>,
{
    match start.0 {
        Begun::Hit(value) => Ok(value),
        Begun::Slow(slow) => Box::pin(slow_result_async(slow, Caller(body))).await,
    }
}

/// [`finish_result_async`] for a body that may run in a task (see [`Spawnable`]).
pub async fn finish_spawnable_result_async<M, E, A, C, Fut, S>(
    start: Start<M>,
    body: Spawnable<A, C, S>,
) -> Result<M::V, E>
where
    M: ValueOf,
    E: CacheError + 'static,
    C: FnOnce(A) -> Fut,
    Fut: Future<Output = Result<M::V, E>>,
    S: Fn() -> Spawner<A, Result<M::V, E>>,
{
    match start.0 {
        Begun::Hit(value) => Ok(value),
        Begun::Slow(slow) => Box::pin(slow_result_async(slow, body)).await,
    }
}

async fn slow_result_async<V, E, B>(slow: Box<Slow<V>>, body: B) -> Result<V, E>
where
    V: CachedValue,
    E: CacheError,
    B: Body<Result<V, E>>,
{
    let Slow { site, state } = *slow;
    match state {
        SlowState::Unavailable(err) => Err(E::from(err)),
        SlowState::Miss(call) => miss_result(site, call, body).await,
    }
}

async fn miss_result<V, E, B>(site: &'static Site, call: Call<V>, body: B) -> Result<V, E>
where
    V: CachedValue,
    E: CacheError,
    B: Body<Result<V, E>>,
{
    if call.refresh {
        let value = body.run().await?;
        call.store(site, &value).await;
        return Ok(value);
    }
    let mut body = Some(body);
    let mut kept = None;
    let mut failed = None;
    let (kept_slot, failed_slot) = (&mut kept, &mut failed);
    let result = call
        .get_or_create(
            &mut body,
            move |body: B| async move {
                match body.run().await {
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
            },
            result_outcome,
        )
        .await;
    match (result, kept, failed) {
        (_, Some(value), _) => Ok(value),
        (_, None, Some(err)) => Err(err),
        (Ok(value), None, None) => Ok(V::clone(&value)),
        (Err(err), None, None) => Err(E::from(err)),
    }
}

pub async fn finish_option_async<M, F, Fut>(start: Start<M>, body: F) -> Option<M::V>
where
    M: ValueOf,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Option<M::V>>,
{
    match start.0 {
        Begun::Hit(value) => Some(value),
        Begun::Slow(slow) => Box::pin(slow_option_async(slow, Caller(body))).await,
    }
}

/// [`finish_option_async`] for a body that may run in a task (see [`Spawnable`]).
pub async fn finish_spawnable_option_async<M, A, C, Fut, S>(
    start: Start<M>,
    body: Spawnable<A, C, S>,
) -> Option<M::V>
where
    M: ValueOf,
    C: FnOnce(A) -> Fut,
    Fut: Future<Output = Option<M::V>>,
    S: Fn() -> Spawner<A, Option<M::V>>,
{
    match start.0 {
        Begun::Hit(value) => Some(value),
        Begun::Slow(slow) => Box::pin(slow_option_async(slow, body)).await,
    }
}

async fn slow_option_async<V, B>(slow: Box<Slow<V>>, body: B) -> Option<V>
where
    V: CachedValue,
    B: Body<Option<V>>,
{
    let Slow { site, state } = *slow;
    match state {
        SlowState::Unavailable(err) => {
            site.report(&err);
            body.run().await
        }
        SlowState::Miss(call) => miss_option(site, call, body).await,
    }
}

async fn miss_option<V, B>(site: &'static Site, call: Call<V>, body: B) -> Option<V>
where
    V: CachedValue,
    B: Body<Option<V>>,
{
    if call.refresh {
        let value = body.run().await;
        match &value {
            Some(value) => call.store(site, value).await,
            // No value to keep: the old one must not outlive the refresh.
            None => {
                if let Err(err) = remove(&call.handle, &call.key).await {
                    site.report(&err);
                }
            }
        }
        return value;
    }
    let mut body = Some(body);
    let mut kept = None;
    let mut got_none = false;
    let (kept_slot, none_slot) = (&mut kept, &mut got_none);
    let result = call
        .get_or_create(
            &mut body,
            move |body: B| async move {
                match body.run().await {
                    Some(value) => {
                        *kept_slot = Some(value.clone());
                        Ok(value)
                    }
                    None => {
                        *none_slot = true;
                        Err(Outcome::NoneReturned)
                    }
                }
            },
            option_outcome,
        )
        .await;
    if got_none {
        return None;
    }
    match (result, kept) {
        (_, Some(value)) => Some(value),
        (Ok(value), None) => Some(V::clone(&value)),
        // The leader we waited on got None.
        (Err(err), None) if err.creator_error::<Declined>().is_some() => None,
        (Err(err), None) => {
            if !err.is_creator_panic() {
                site.report(&err);
            }
            match body.take() {
                Some(body) => body.run().await,
                None => unreachable!("a body that ran either kept its value or unwound"),
            }
        }
    }
}

#[inline]
pub fn finish_blocking<M, F>(start: Start<M>, body: F) -> M::V
where
    M: ValueOf,
    F: FnOnce() -> M::V,
{
    match start.0 {
        Begun::Hit(value) => value,
        Begun::Slow(slow) => slow_blocking(*slow, body),
    }
}

fn slow_blocking<V, F>(slow: Slow<V>, body: F) -> V
where
    V: CachedValue,
    F: FnOnce() -> V,
{
    let site = slow.site;
    match slow.state {
        SlowState::Unavailable(err) => {
            site.report(&err);
            body()
        }
        SlowState::Miss(call) => match crate::blocking::runtime() {
            Ok(handle) => crate::blocking::run_on(
                handle,
                miss(site, call, Caller(move || async move { body() })),
            ),
            Err(err) => {
                site.report(&err);
                body()
            }
        },
    }
}

#[inline]
pub fn finish_result_blocking<M, E, F>(start: Start<M>, body: F) -> Result<M::V, E>
where
    M: ValueOf,
    E: CacheError,
    F: FnOnce() -> Result<M::V, E>,
{
    match start.0 {
        Begun::Hit(value) => Ok(value),
        Begun::Slow(slow) => slow_result_blocking(*slow, body),
    }
}

fn slow_result_blocking<V, E, F>(slow: Slow<V>, body: F) -> Result<V, E>
where
    V: CachedValue,
    E: CacheError,
    F: FnOnce() -> Result<V, E>,
{
    match slow.state {
        SlowState::Unavailable(err) => Err(E::from(err)),
        SlowState::Miss(call) => {
            let handle = crate::blocking::runtime().map_err(E::from)?;
            crate::blocking::run_on(
                handle,
                miss_result(slow.site, call, Caller(move || async move { body() })),
            )
        }
    }
}

#[inline]
pub fn finish_option_blocking<M, F>(start: Start<M>, body: F) -> Option<M::V>
where
    M: ValueOf,
    F: FnOnce() -> Option<M::V>,
{
    match start.0 {
        Begun::Hit(value) => Some(value),
        Begun::Slow(slow) => slow_option_blocking(*slow, body),
    }
}

fn slow_option_blocking<V, F>(slow: Slow<V>, body: F) -> Option<V>
where
    V: CachedValue,
    F: FnOnce() -> Option<V>,
{
    let site = slow.site;
    match slow.state {
        SlowState::Unavailable(err) => {
            site.report(&err);
            body()
        }
        SlowState::Miss(call) => match crate::blocking::runtime() {
            Ok(handle) => crate::blocking::run_on(
                handle,
                miss_option(site, call, Caller(move || async move { body() })),
            ),
            Err(err) => {
                site.report(&err);
                body()
            }
        },
    }
}

/// A companion's target: the handle and the key of one argument list.
pub struct Located<M: ValueOf> {
    handle: Handle<M::V>,
    key: KeyBuf,
    /// What `set` tags the entry with (`tags = …`).
    tags: crate::tags::Tags,
}

pub fn locate<M, K, const N: usize>(
    value: M,
    site: &'static Site,
    manager: Result<&CacheManager>,
    self_type: Option<&'static str>,
    words: [Option<Word>; N],
    key: K,
) -> Result<Located<M>>
where
    M: ValueOf,
    K: FnOnce(&mut KeyWriter<'_>),
{
    let _ = value;
    let handle = site.resolve::<M::V>(manager?, self_type)?;
    let mut buf = handle.new_key();
    write_key(&mut buf, WordKey::of(words), key)?;
    Ok(Located {
        handle,
        key: buf,
        tags: None,
    })
}

impl<M: ValueOf> Located<M> {
    pub async fn remove(self) -> Result<bool> {
        remove(&self.handle, &self.key).await
    }

    /// The same target, whose `set` tags the entry with `tags` (checked).
    pub fn tagged<I: IntoIterator<Item = String>>(mut self, tags: I) -> Result<Located<M>> {
        self.tags = crate::tags::collect(tags)?;
        Ok(self)
    }

    pub async fn set(self, value: &M::V) -> Result<()> {
        put_tagged(&self.handle, &self.key, value, &self.tags).await
    }

    pub async fn peek(self) -> Result<Option<M::V>> {
        #[cfg(feature = "memory")]
        if let Some(typed) = self.handle.typed() {
            return Ok(typed.get(&typed.key(&self.key)));
        }
        Ok(self
            .handle
            .cache()
            .get::<M::V>(&self.key.text())
            .await?
            .map(|value| <M::V as Clone>::clone(&value)))
    }

    pub fn remove_blocking(self) -> Result<bool> {
        crate::blocking::block_on(self.remove())?
    }

    pub fn set_blocking(self, value: &M::V) -> Result<()> {
        crate::blocking::block_on(self.set(value))?
    }

    pub fn peek_blocking(self) -> Result<Option<M::V>> {
        crate::blocking::block_on(self.peek())?
    }
}
