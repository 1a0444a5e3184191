//! `tankard::blocking` and sync cached functions in every context: no
//! runtime, inside a current-thread runtime, on a multi-thread runtime's
//! worker, in its `block_on` and on its blocking pool; with a creation lock
//! that must be waited for (the file lock's `spawn_blocking` path).

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use tankard::{CacheManager, Config, blocking};

use crate::support::{self, StripeHolder};

const CONTEXTS: usize = 5;

fn dir(ctx: usize) -> PathBuf {
    support::static_dir().join(format!("blocking-{ctx}"))
}

static MANAGERS: LazyLock<Vec<CacheManager>> = LazyLock::new(|| {
    (0..CONTEXTS)
        .map(|ctx| {
            let config = Config::from_flat([
                ("cache.type", "file"),
                ("cache.data_dir", dir(ctx).join("data").to_str().unwrap()),
                ("cache.lock_dir", dir(ctx).join("lock").to_str().unwrap()),
            ])
            .unwrap();
            CacheManager::new(config).unwrap()
        })
        .collect()
});

#[tankard::cached(manager = MANAGERS[ctx])]
fn contended(ctx: usize) -> String {
    format!("made in context {ctx}")
}

/// Calls `contended(ctx)` through `call` on another thread while this
/// thread holds every lock stripe, so the call must wait for the lock on
/// the runtime's blocking pool; then lets it go and checks its value.
fn wait_for_the_lock_in(ctx: usize, call: impl FnOnce() -> String + Send + 'static) {
    let region = MANAGERS[ctx].default_region();
    let holder = StripeHolder::hold(&dir(ctx).join("lock"));
    let waits = region.stats().lock_waits;
    let caller = std::thread::spawn(call);
    // The signal: the caller has found the lock taken and is waiting on it.
    while region.stats().lock_waits == waits {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!caller.is_finished());
    holder.release();
    assert_eq!(caller.join().unwrap(), format!("made in context {ctx}"));
    assert_eq!(
        contended_peek(ctx).unwrap(),
        Some(format!("made in context {ctx}"))
    );
    assert_eq!(region.stats().creator_calls, 1);
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn with_no_runtime() {
    wait_for_the_lock_in(0, || contended(0));
}

#[test]
fn inside_a_current_thread_runtime() {
    wait_for_the_lock_in(1, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { contended(1) })
    });
}

#[test]
fn on_a_multi_thread_runtime_worker() {
    wait_for_the_lock_in(2, || {
        multi_thread().block_on(async { tokio::spawn(async { contended(2) }).await.unwrap() })
    });
}

#[test]
fn in_a_multi_thread_runtime_block_on() {
    wait_for_the_lock_in(3, || multi_thread().block_on(async { contended(3) }));
}

#[test]
fn on_a_runtime_blocking_pool_thread() {
    wait_for_the_lock_in(4, || {
        multi_thread()
            .block_on(async { tokio::task::spawn_blocking(|| contended(4)).await.unwrap() })
    });
}

/// Every method of the blocking twin, on a memory and a file region.
fn exercise(ns: &blocking::Cache) {
    assert_eq!(*ns.get_or_create("a", || 1u32).unwrap(), 1);
    assert_eq!(
        *ns.get_or_create("a", || -> u32 { unreachable!() }).unwrap(),
        1
    );
    assert_eq!(
        *ns.get_or_try_create("b", || "2".parse::<u32>()).unwrap(),
        2
    );
    assert!(
        ns.get_or_try_create("c", || "x".parse::<u32>())
            .unwrap_err()
            .is_creator()
    );
    assert_eq!(ns.get::<u32>("b").unwrap().as_deref(), Some(&2));
    assert_eq!(
        ns.peek::<u32>("b").unwrap().map(|(v, fresh)| (*v, fresh)),
        Some((2, true))
    );
    ns.put("d", 4u32).unwrap();
    assert!(ns.contains::<u32>("d").unwrap());
    assert!(ns.remove("d").unwrap());
    assert!(!ns.contains::<u32>("d").unwrap());
    ns.clear().unwrap();
    assert!(ns.get::<u32>("a").unwrap().is_none());
}

fn both_regions(tag: &str) -> [blocking::Cache; 2] {
    let manager = support::seed(&support::static_dir().join(format!("twin-{tag}")));
    [
        blocking::Cache::new(manager.region("short_term").unwrap().namespace("twin")),
        blocking::Cache::new(manager.region("long_term").unwrap().namespace("twin")),
    ]
}

#[test]
fn the_blocking_twin_works_with_no_runtime() {
    for ns in both_regions("none") {
        exercise(&ns);
    }
}

#[tokio::test]
async fn the_blocking_twin_works_inside_a_current_thread_runtime() {
    for ns in both_regions("current") {
        exercise(&ns);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_twin_works_inside_a_multi_thread_runtime() {
    for ns in both_regions("multi") {
        exercise(&ns);
    }
}

#[test]
fn block_on_runs_any_tankard_future() {
    let manager = support::memory();
    let ns = blocking::Cache::new(manager.namespace("n"));
    ns.put("k", 1u8).unwrap();
    blocking::block_on(
        manager
            .default_region()
            .invalidate(tankard::Invalidation::Hard),
    )
    .unwrap()
    .unwrap();
    assert!(!ns.contains::<u8>("k").unwrap());
}

static NESTED: LazyLock<CacheManager> =
    LazyLock::new(|| support::seed(&support::static_dir().join("nested")));

#[tankard::cached(manager = NESTED, region = "long_term")]
fn outer(n: u32) -> u32 {
    // A sync cached call made while another one is being created on this
    // thread: nested polling of the blocking machinery.
    inner(n) + 1
}

#[tankard::cached(manager = NESTED, region = "long_term")]
fn inner(n: u32) -> u32 {
    n * 10
}

#[tokio::test]
async fn sync_cached_calls_nest() {
    assert_eq!(outer(4), 41);
    assert_eq!(outer(4), 41);
    assert_eq!(inner_peek(4).unwrap(), Some(40));
}

/// `refresh = background` from sync code: the call on a stale entry
/// returns the stale value while the creator, on the blocking pool, is
/// still held; the new value is stored once it is let go.
#[test]
fn get_or_spawn_refreshes_a_stale_entry_in_the_background() {
    let clock = tankard::Clock::manual(1_700_000_000_000);
    let config = tankard::Config::from_flat([
        ("cache.type", "memory"),
        ("cache.expire", "10"),
        ("cache.stale", "60"),
        ("cache.refresh", "background"),
    ])
    .unwrap();
    let manager = tankard::CacheManager::with_clock(config, clock.clone()).unwrap();
    let ns = blocking::Cache::new(manager.namespace("twin"));
    ns.put("k", 1u32).unwrap();
    clock.advance(std::time::Duration::from_secs(11));
    let (release, held) = std::sync::mpsc::channel::<()>();
    let v = ns
        .get_or_spawn("k", move || {
            held.recv().unwrap();
            2u32
        })
        .unwrap();
    assert_eq!(*v, 1, "the stale value, at once");
    release.send(()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ns.get::<u32>("k").unwrap().as_deref() != Some(&2) {
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh never stored"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(manager.default_region().stats().creator_calls, 1);
}
