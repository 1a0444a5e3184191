//! The blocking twin of the async API, for code with no async runtime of
//! its own: [`Cache`] mirrors [`crate::Cache`] method for method, and
//! [`block_on`] runs any other Tankard future (a region's `invalidate`, …).
//! Sync `#[tankard::cached]` functions use the same machinery.
//!
//! ```
//! use tankard::blocking;
//!
//! let manager = tankard::CacheManager::new(tankard::Config::memory())?;
//! let squares = blocking::Cache::new(manager.namespace("squares"));
//! let nine = squares.get_or_create("3", || 3u64 * 3)?;
//! assert_eq!(*nine, 9);
//! assert!(squares.contains::<u64>("3")?);
//! blocking::block_on(manager.default_region().invalidate(tankard::Invalidation::Hard))??;
//! assert!(!squares.contains::<u64>("3")?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Where it runs
//!
//! - A **fresh value in a memory region** is returned by
//!   [`Cache::try_get_fresh`] on the calling thread: no runtime, no
//!   waiting, no allocation.
//! - Everything else polls the future **on the calling thread**, parking it
//!   while the future waits. Timers, sockets, `spawn_blocking` (the file
//!   backend's lock waits) and spawned tasks (lock releases, connection
//!   drivers) go to a private single-threaded tokio runtime that a
//!   background thread, `tankard-blocking`, drives; it starts on the first
//!   call that needs it. Because the caller's own thread only polls, the
//!   values and borrowed arguments never need to be `Send` or `'static`.
//! - **Called from inside a tokio runtime**, the call blocks the calling
//!   thread like any blocking call, but never panics with "cannot block
//!   inside a runtime": on a multi-thread runtime it runs inside
//!   [`tokio::task::block_in_place`], so the worker's other tasks move to
//!   another thread; on a current-thread runtime the runtime's tasks wait
//!   until the call returns.
//!
//! One pattern can still deadlock, as it would with any blocking call: on a
//! current-thread runtime, a task that holds a key's creation (an async
//! `get_or_create` whose creator is suspended) and a blocking call on the
//! same key from the same thread. Keep one key either async or blocking
//! there, or use a multi-thread runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::engine::{Creator, Local, Owned};
use crate::error::{Error, Result};

/// Runs a future to completion from sync code, in any context (see the
/// [module docs](self)).
///
/// # Errors
///
/// An error only if the private runtime could not start (the system
/// refused a thread); the future's own output is returned as it is.
///
/// ```
/// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
/// let removed = tankard::blocking::block_on(manager.namespace("n").remove("k"))??;
/// assert!(!removed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn block_on<F: Future>(future: F) -> Result<F::Output> {
    Ok(run_on(runtime()?, future))
}

static RUNTIME: OnceLock<std::result::Result<Handle, String>> = OnceLock::new();

/// The private runtime's handle, starting it on first use.
pub(crate) fn runtime() -> Result<&'static Handle> {
    RUNTIME
        .get_or_init(start_runtime)
        .as_ref()
        .map_err(|message| Error::backend("blocking", message.clone()))
}

fn start_runtime() -> std::result::Result<Handle, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("tankard-blocking")
        .build()
        .map_err(|err| format!("cannot start the blocking runtime: {err}"))?;
    let handle = runtime.handle().clone();
    thread::Builder::new()
        .name("tankard-blocking".to_owned())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .map_err(|err| format!("cannot start the blocking runtime's thread: {err}"))?;
    Ok(handle)
}

/// Polls `future` on this thread with `handle`'s context entered.
pub(crate) fn run_on<F: Future>(handle: &Handle, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let on_multi_thread = matches!(
        Handle::try_current().map(|current| current.runtime_flavor()),
        Ok(RuntimeFlavor::MultiThread)
    );
    if on_multi_thread {
        // `block_in_place` refuses some contexts that still report a
        // multi-thread handle (a LocalSet, a handle entered by hand inside a
        // current-thread runtime); it refuses before running the closure, so
        // the future is intact and parking the thread is the fallback.
        let mut started = false;
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tokio::task::block_in_place(|| {
                started = true;
                park_on(handle, future.as_mut())
            })
        }));
        match attempt {
            Ok(output) => return output,
            Err(panic) if started => std::panic::resume_unwind(panic),
            Err(_) => {}
        }
    }
    park_on(handle, future.as_mut())
}

struct Signal {
    woken: AtomicBool,
    thread: Thread,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

fn park_on<F: Future>(handle: &Handle, mut future: Pin<&mut F>) -> F::Output {
    let _context = handle.enter();
    // A flag per call: a nested call on this thread may consume the
    // thread's unpark token, never this call's wake-up.
    let signal = Arc::new(Signal {
        woken: AtomicBool::new(false),
        thread: thread::current(),
    });
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        while !signal.woken.swap(false, Ordering::Acquire) {
            thread::park();
        }
    }
}

/// A namespace with blocking methods: [`crate::Cache`]'s twin. Cheap to
/// clone; build it from any namespace.
///
/// ```
/// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
/// let ns = tankard::blocking::Cache::new(manager.namespace("views::hello"));
/// ns.put("greeting", "hi".to_string())?;
/// assert_eq!(ns.get::<String>("greeting")?.as_deref().map(String::as_str), Some("hi"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Cache {
    inner: crate::Cache,
}

impl From<crate::Cache> for Cache {
    fn from(inner: crate::Cache) -> Cache {
        Cache { inner }
    }
}

impl Cache {
    /// The blocking face of `cache`.
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("n"));
    /// assert_eq!(ns.name(), "n");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(cache: crate::Cache) -> Cache {
        Cache { inner: cache }
    }

    /// The async face of the same namespace.
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("n"));
    /// assert_eq!(ns.as_async().name(), "n");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn as_async(&self) -> &crate::Cache {
        &self.inner
    }

    /// The same namespace with another expiry for what it stores, or
    /// `None` for never (see [`crate::Cache::expire`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("n")).expire(Duration::from_secs(10));
    /// assert_eq!(ns.as_async().expiry(), Some(Duration::from_secs(10)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn expire(self, expire: impl Into<Option<std::time::Duration>>) -> Cache {
        Cache {
            inner: self.inner.expire(expire),
        }
    }

    /// The same namespace, tagging what it stores with `tags` (see
    /// [`crate::Cache::tags`]); a bad tag is an error. A region's
    /// [`invalidate_tag`](crate::Region::invalidate_tag) runs here with
    /// [`block_on`].
    ///
    /// ```
    /// use tankard::blocking;
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = blocking::Cache::new(manager.namespace("n"));
    /// ns.clone().tags(["team:7"])?.put("ann", 1u8)?;
    /// blocking::block_on(manager.default_region().invalidate_tag("team:7"))??;
    /// assert!(!ns.contains::<u8>("ann")?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn tags<I, S>(self, tags: I) -> Result<Cache>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(Cache {
            inner: self.inner.tags(tags)?,
        })
    }

    /// The namespace's name.
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// assert_eq!(tankard::blocking::Cache::new(manager.namespace("n")).name(), "n");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Returns the cached value, or runs `creator` once (across threads
    /// and processes) and caches its result; see
    /// [`crate::Cache::get_or_create`] for what concurrent callers see.
    /// A fresh value of a memory region is returned without any runtime.
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("squares"));
    /// assert_eq!(*ns.get_or_create("4", || 16u32)?, 16);
    /// assert_eq!(*ns.get_or_create("4", || -> u32 { unreachable!() })?, 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_or_create<T, F>(&self, key: &str, creator: F) -> Result<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> T,
    {
        self.read(key, Local(move || async move { Ok(creator()) }))
    }

    /// Like [`get_or_create`](Cache::get_or_create) for a fallible
    /// creator; see [`crate::Cache::get_or_try_create`].
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("parse"));
    /// assert_eq!(*ns.get_or_try_create("42", || "42".parse::<u32>())?, 42);
    /// assert!(ns.get_or_try_create("x", || "x".parse::<u32>()).unwrap_err().is_creator());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_or_try_create<T, E, F>(&self, key: &str, creator: F) -> Result<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
        F: FnOnce() -> std::result::Result<T, E>,
    {
        self.read(
            key,
            Local(move || async move { creator().map_err(Error::creator_boxed) }),
        )
    }

    /// [`get_or_create`](Cache::get_or_create) for a creator that owns what
    /// it needs (`Send + 'static`), so that with `refresh = background` a
    /// stale entry is answered at once and regenerated in a task; see
    /// [`crate::Cache::get_or_spawn`]. The creator runs on tokio's blocking
    /// pool (`spawn_blocking`), on a miss too, never on a runtime's own
    /// threads.
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("squares"));
    /// let n = 5u32;
    /// assert_eq!(*ns.get_or_spawn("5", move || n * n)?, 25);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_or_spawn<T, F>(&self, key: &str, creator: F) -> Result<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.read(
            key,
            Owned(move || async move { Ok(off_the_runtime(creator).await) }),
        )
    }

    /// The values under `keys`, the missing ones made by one call of
    /// `creator`; see [`crate::Cache::get_or_create_many`].
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("squares"));
    /// let squares = ns.get_or_create_many(&["2", "3"], |missing| {
    ///     missing.iter().map(|n| n.parse::<u32>().map_or(0, |n| n * n)).collect()
    /// })?;
    /// assert_eq!((*squares[0], *squares[1]), (4, 9));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_or_create_many<T, K, F>(&self, keys: &[K], creator: F) -> Result<Vec<Arc<T>>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        K: AsRef<str>,
        F: Fn(Vec<String>) -> Vec<T>,
    {
        block_on(
            self.inner
                .get_or_create_many(keys, |missing| std::future::ready(creator(missing))),
        )?
    }

    /// The fresh value of a memory region, without waiting for anything;
    /// see [`crate::Cache::try_get_fresh`].
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("n"));
    /// ns.put("k", 7u8)?;
    /// assert_eq!(ns.try_get_fresh::<u8>("k").as_deref(), Some(&7));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "memory")]
    #[inline]
    pub fn try_get_fresh<T: Send + Sync + 'static>(&self, key: &str) -> Option<Arc<T>> {
        self.inner.try_get_fresh(key)
    }

    /// The fresh value under `key`, if any. Runs nothing.
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("n"));
    /// assert!(ns.get::<String>("k")?.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get<T>(&self, key: &str) -> Result<Option<Arc<T>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        block_on(self.inner.get(key))?
    }

    /// The value under `key`, fresh or stale, with `true` when fresh; see
    /// [`crate::Cache::peek`].
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("n"));
    /// ns.put("k", 1u8)?;
    /// assert_eq!(ns.peek::<u8>("k")?.map(|(v, fresh)| (*v, fresh)), Some((1, true)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peek<T>(&self, key: &str) -> Result<Option<(Arc<T>, bool)>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        block_on(self.inner.peek(key))?
    }

    /// Whether a fresh value is stored under `key` (as type `T`).
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("n"));
    /// ns.put("k", 1u8)?;
    /// assert!(ns.contains::<u8>("k")?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn contains<T>(&self, key: &str) -> Result<bool>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        block_on(self.inner.contains::<T>(key))?
    }

    /// Stores a value under `key`, replacing what was there.
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("n"));
    /// ns.put("k", vec![1, 2, 3])?;
    /// assert_eq!(*ns.get::<Vec<i32>>("k")?.ok_or("missing")?, [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put<T>(&self, key: &str, value: T) -> Result<()>
    where
        T: Serialize + Send + Sync + 'static,
    {
        block_on(self.inner.put(key, value))?
    }

    /// Stores a shared value under `key`; see [`crate::Cache::put_arc`].
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("n"));
    /// let big = std::sync::Arc::new(vec![0u8; 1024]);
    /// ns.put_arc("k", big.clone())?;
    /// assert!(std::sync::Arc::ptr_eq(&ns.get::<Vec<u8>>("k")?.ok_or("missing")?, &big));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_arc<T>(&self, key: &str, value: Arc<T>) -> Result<()>
    where
        T: Serialize + Send + Sync + 'static,
    {
        block_on(self.inner.put_arc(key, value))?
    }

    /// Removes the value under `key`; `true` if there was one.
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("n"));
    /// ns.put("k", 1u8)?;
    /// assert!(ns.remove("k")?);
    /// assert!(!ns.remove("k")?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove(&self, key: &str) -> Result<bool> {
        block_on(self.inner.remove(key))?
    }

    /// Removes every value in the namespace, in every process sharing the
    /// backend; see [`crate::Cache::clear`].
    ///
    /// ```
    /// let manager = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = tankard::blocking::Cache::new(manager.namespace("n"));
    /// ns.put("k", 1u8)?;
    /// ns.clear()?;
    /// assert!(!ns.contains::<u8>("k")?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        block_on(self.inner.clear())?
    }
}

impl Cache {
    /// The sync read path: a fresh value from memory without entering any
    /// runtime, else the async read path's engine, run to completion.
    fn read<T, C>(&self, key: &str, creator: C) -> Result<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        C: Creator<T>,
    {
        #[cfg(feature = "memory")]
        if let Some(value) = self.inner.try_get_fresh::<T>(key) {
            return Ok(value);
        }
        block_on(self.inner.create(key, creator))?
    }
}

/// Runs a sync creator on tokio's blocking pool, so a task that owns it
/// never stalls a runtime thread; a panic continues in the awaiting task.
async fn off_the_runtime<T, F>(creator: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(creator).await {
        Ok(value) => value,
        Err(err) => match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // The runtime is shutting down: nobody is left to hand it to.
            Err(err) => panic!("a creator's blocking task was cancelled: {err}"),
        },
    }
}
