//! The function-cache hit path: a `#[tankard::cached]` function on a memory
//! region against the `cached` crate's `#[cached]` (and its sharded
//! `#[concurrent_cached]`) and against quick_cache's raw `get` on the same
//! keys; one thread and two; the sync and the async path.
//!
//! ```text
//! cargo bench -p tankard --bench function                  # about 20 s
//! cargo bench -p tankard --bench function -- --breakdown    # quick_cache, namespace hit, key text, whole call
//! BENCH_CALLS=100000 valgrind --tool=callgrind target/release/deps/function-* --only whole
//!                                    # one kind of call (core, quick, floor, empty, async, whole) for a profiler
//! ```
//!
//! Prints nanoseconds per call (per thread) and the ratios the targets are
//! stated in. Plain harness: each case runs a fixed number of calls per
//! thread after a warm-up, three times, and keeps the best run.

// A benchmark may stop on a broken setup.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::{Barrier, LazyLock};
use std::time::{Duration, Instant};

use cached::macros::{cached, concurrent_cached};
use tankard::{CacheManager, Config};

/// Distinct keys cycled through: all cached, well under every bound.
const KEYS: u64 = 1024;
static CALLS: LazyLock<u64> = LazyLock::new(|| {
    std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000_000)
});
const RUNS: usize = 5;

static MANAGER: LazyLock<CacheManager> = LazyLock::new(|| {
    let config = Config::from_flat([("cache.type", "memory"), ("cache.max_entries", "100000")])
        .expect("config");
    CacheManager::new(config).expect("manager")
});

#[tankard::cached(manager = MANAGER)]
fn tankard_sync(n: u64) -> u64 {
    n.wrapping_mul(0x9e37_79b9)
}

#[tankard::cached(manager = MANAGER)]
async fn tankard_async(n: u64) -> u64 {
    n.wrapping_mul(0x9e37_79b9)
}

#[tankard::cached(manager = MANAGER)]
fn tankard_string(name: &str) -> String {
    name.to_uppercase()
}

#[cached(max_size = 100_000)]
fn cached_sync(n: u64) -> u64 {
    n.wrapping_mul(0x9e37_79b9)
}

#[concurrent_cached(max_size = 100_000)]
fn cached_concurrent(n: u64) -> u64 {
    n.wrapping_mul(0x9e37_79b9)
}

static QUICK: LazyLock<quick_cache::sync::Cache<u64, u64>> =
    LazyLock::new(|| quick_cache::sync::Cache::new(100_000));

static QUICK_STR: LazyLock<quick_cache::sync::Cache<String, String>> =
    LazyLock::new(|| quick_cache::sync::Cache::new(100_000));

fn quick_get(n: u64) -> u64 {
    match QUICK.get(&n) {
        Some(v) => v,
        None => {
            let v = n.wrapping_mul(0x9e37_79b9);
            QUICK.insert(n, v);
            v
        }
    }
}

/// The least a cached function over quick_cache can do on a hit, written
/// by hand for this benchmark: check that its state is bound to this
/// manager, look the argument itself up (no key to build), check the
/// entry's epoch and expiry against a clock, count the hit in a
/// thread-local cell. No refresh flag, no value type to check, nothing
/// shared between functions. What this costs over quick_cache's bare `get`
/// is what the wrapping costs in any design that keeps quick_cache.
mod floor {
    use std::cell::Cell;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tankard::CacheManager;

    #[derive(Clone)]
    struct Entry {
        value: u64,
        fresh_until_ms: u64,
        epoch: u64,
    }

    struct Bound {
        /// The manager's address: compared, never followed.
        manager: usize,
        map: quick_cache::sync::Cache<u64, Entry>,
        epoch: AtomicU64,
    }

    static SITE: OnceLock<Bound> = OnceLock::new();
    static NOW_MS: AtomicU64 = AtomicU64::new(1);

    thread_local! {
        static HITS: Cell<u64> = const { Cell::new(0) };
    }

    #[inline(never)]
    pub(crate) fn call(manager: &CacheManager, n: u64) -> u64 {
        if let Some(bound) = SITE.get()
            && bound.manager == std::ptr::from_ref(manager).addr()
            && let Some(entry) = bound.map.get(&n)
            && entry.epoch == bound.epoch.load(Ordering::Acquire)
            && NOW_MS.load(Ordering::Relaxed) < entry.fresh_until_ms
        {
            HITS.with(|hits| hits.set(hits.get() + 1));
            return entry.value;
        }
        miss(manager, n)
    }

    #[cold]
    #[inline(never)]
    fn miss(manager: &CacheManager, n: u64) -> u64 {
        let bound = SITE.get_or_init(|| Bound {
            manager: std::ptr::from_ref(manager).addr(),
            map: quick_cache::sync::Cache::new(100_000),
            epoch: AtomicU64::new(1),
        });
        let value = n.wrapping_mul(0x9e37_79b9);
        let entry = Entry {
            value,
            fresh_until_ms: u64::MAX,
            epoch: bound.epoch.load(Ordering::Acquire),
        };
        bound.map.insert(n, entry);
        value
    }
}

static NAMES: LazyLock<Vec<String>> =
    LazyLock::new(|| (0..KEYS).map(|i| format!("user-{i}")).collect());

fn quick_get_str(name: &str) -> String {
    match QUICK_STR.get(name) {
        Some(v) => v,
        None => {
            let v = name.to_uppercase();
            QUICK_STR.insert(name.to_owned(), v.clone());
            v
        }
    }
}

/// Best-of-`RUNS` nanoseconds per call, each of `threads` threads making
/// `CALLS` calls at once.
fn measure(threads: usize, call: impl Fn(u64) + Sync) -> f64 {
    for i in 0..KEYS {
        call(i);
    }
    let mut best = Duration::MAX;
    for _ in 0..RUNS {
        let barrier = Barrier::new(threads);
        let elapsed = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (call, barrier) = (&call, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let started = Instant::now();
                        let mut k = t as u64 * 97;
                        for _ in 0..*CALLS {
                            call(k);
                            k = (k + 1) % KEYS;
                        }
                        started.elapsed()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("bench thread"))
                .max()
                .unwrap_or_default()
        });
        best = best.min(elapsed);
    }
    best.as_nanos() as f64 / *CALLS as f64
}

/// One thread count's figures, ns per call.
struct Row {
    threads: usize,
    quick: f64,
    floor: f64,
    tankard: f64,
    tankard_async: f64,
    cached: f64,
    concurrent: f64,
    quick_str: f64,
    tankard_str: f64,
}

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`)
    // only check that the cached function works.
    if !std::env::args().any(|a| a.starts_with("--")) {
        assert_eq!(tankard_sync(3), 3u64.wrapping_mul(0x9e37_79b9));
        return;
    }
    if let Some(only) = std::env::args().skip_while(|a| a != "--only").nth(1) {
        // For a profiler: one kind of call, nothing else.
        let (ns, keys) = warm("profile");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        for k in 0..KEYS {
            rt.block_on(tankard_async(k));
        }
        let ns_ns = match only.as_str() {
            "async" => measure(1, |k| {
                black_box(rt_poll(&rt, tankard_async(black_box(k))));
            }),
            "core" => measure(1, |k| {
                black_box(ns.try_get_fresh::<u64>(black_box(&keys[k as usize])));
            }),
            "quick" => measure(1, |k| {
                black_box(quick_get(black_box(k)));
            }),
            "floor" => measure(1, |k| {
                black_box(floor::call(&MANAGER, black_box(k)));
            }),
            "empty" => measure(1, |k| {
                black_box(&keys[k as usize]);
            }),
            _ => measure(1, |k| {
                black_box(tankard_sync(black_box(k)));
            }),
        };
        println!("{only}: {ns_ns:.1} ns");
        return;
    }
    if std::env::args().any(|a| a == "--breakdown") {
        breakdown();
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    for threads in [1, 2] {
        let quick = measure(threads, |k| {
            black_box(quick_get(black_box(k)));
        });
        let tankard = measure(threads, |k| {
            black_box(tankard_sync(black_box(k)));
        });
        let floor = measure(threads, |k| {
            black_box(floor::call(&MANAGER, black_box(k)));
        });
        let tankard_async = measure(threads, |k| {
            // One poll: a memory hit completes without awaiting anything.
            black_box(rt_poll(&rt, tankard_async(black_box(k))));
        });
        let cached = measure(threads, |k| {
            black_box(cached_sync(black_box(k)));
        });
        let concurrent = measure(threads, |k| {
            black_box(cached_concurrent(black_box(k)));
        });
        let quick_str = measure(threads, |k| {
            black_box(quick_get_str(black_box(&NAMES[k as usize])));
        });
        let tankard_str = measure(threads, |k| {
            black_box(tankard_string(black_box(&NAMES[k as usize])));
        });
        rows.push(Row {
            threads,
            quick,
            floor,
            tankard,
            tankard_async,
            cached,
            concurrent,
            quick_str,
            tankard_str,
        });
    }
    println!(
        "function-cache hit, ns per call per thread (best of {RUNS}, {} calls, {KEYS} keys)",
        *CALLS
    );
    println!(
        "{:>7} {:>11} {:>7} {:>13} {:>14} {:>8} {:>18} {:>16} {:>12}",
        "threads",
        "quick_cache",
        "floor",
        "tankard sync",
        "tankard async",
        "cached",
        "concurrent_cached",
        "quick_cache str",
        "tankard str"
    );
    for r in &rows {
        println!(
            "{:>7} {:>11.1} {:>7.1} {:>13.1} {:>14.1} {:>8.1} {:>18.1} {:>16.1} {:>12.1}",
            r.threads,
            r.quick,
            r.floor,
            r.tankard,
            r.tankard_async,
            r.cached,
            r.concurrent,
            r.quick_str,
            r.tankard_str
        );
    }
    println!();
    println!("ratios (tankard sync ÷ reference; < 1 is faster):");
    for r in &rows {
        println!(
            "{} thread(s): vs quick_cache {:.2}x, vs floor {:.2}x (floor vs quick_cache {:.2}x), \
             vs cached {:.2}x, vs concurrent_cached {:.2}x, sync vs async {:.2}x, \
             String key+value vs quick_cache {:.2}x",
            r.threads,
            r.tankard / r.quick,
            r.tankard / r.floor,
            r.floor / r.quick,
            r.tankard / r.cached,
            r.tankard / r.concurrent,
            r.tankard / r.tankard_async,
            r.tankard_str / r.quick_str,
        );
    }
    drop(rt);
}

/// A namespace holding every key's value under its text key, for the
/// namespace API's hit, and the cached function's every key made: the
/// hits `--only` and `--breakdown` measure.
fn warm(namespace: &str) -> (tankard::Cache, Vec<String>) {
    let ns = MANAGER.namespace(namespace);
    let keys: Vec<String> = (0..KEYS).map(|k| k.to_string()).collect();
    let blocking = tankard::blocking::Cache::new(ns.clone());
    for (k, key) in keys.iter().enumerate() {
        blocking.put(key, k as u64).expect("put");
        tankard_sync(k as u64);
    }
    (ns, keys)
}

/// Where a hit's time goes, one thread: quick_cache's own `get`, the
/// namespace API's memory hit (`Cache::try_get_fresh`, key already built),
/// building a text key, and the whole cached call (compact key, typed map,
/// freshness, counter, clone out).
fn breakdown() {
    let (ns, keys) = warm("breakdown");
    let quick = measure(1, |k| {
        black_box(quick_get(black_box(k)));
    });
    let core = measure(1, |k| {
        black_box(ns.try_get_fresh::<u64>(black_box(&keys[k as usize])));
    });
    let encode = measure(1, |k| {
        black_box(tankard::cache_key::encode(&black_box(k)).ok());
    });
    let whole = measure(1, |k| {
        black_box(tankard_sync(black_box(k)));
    });
    println!("quick_cache get (u64 key)                  {quick:6.1} ns");
    println!("namespace memory hit, text key built       {core:6.1} ns");
    println!("text key encoding into a new String        {encode:6.1} ns");
    println!("whole cached call (typed map)              {whole:6.1} ns");
}

/// Awaits a future that a memory hit completes in its first poll.
fn rt_poll<F: std::future::Future>(rt: &tokio::runtime::Runtime, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => rt.block_on(future),
    }
}
