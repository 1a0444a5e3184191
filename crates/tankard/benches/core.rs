//! Memory and file hit paths against the references measured in the same
//! run (`scripts/bench` prints the table; numbers go to BENCHMARKS.md):
//!
//! - memory region hit through `get_or_create` (async, polled once) and
//!   through `try_get_fresh` (sync) vs quick_cache's `get` and moka's `get`
//!   on the same 10k-key working set, 1 thread and 2 threads;
//! - a memory hit on an entry with two tags vs one on an untagged entry
//!   (`tagged`);
//! - file region hit vs `std::fs::read` of the same bytes;
//! - the memory hits again with a `metrics` recorder installed (the
//!   Prometheus exporter's), which Tankard's counters and sampled hit
//!   latencies then reach as they happen (`recorder`; run last, as a
//!   global recorder stays for the process).
//!
//! A plain harness: each figure is the median of 7 rounds of at least
//! 200 ms, in nanoseconds per operation.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

const KEYS: usize = 10_000;
const ROUNDS: usize = 7;

/// Median ns/op of `op` run over every key, on `threads` threads at once.
fn measure(threads: usize, op: impl Fn(&str) + Sync) -> f64 {
    let keys: Vec<String> = (0..KEYS)
        .map(|i| format!("key-{}", (i * 7919) % KEYS))
        .collect();
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let mut ops = 0usize;
        while start.elapsed() < Duration::from_millis(200) {
            std::thread::scope(|s| {
                for t in 0..threads {
                    let keys = &keys;
                    let op = &op;
                    s.spawn(move || {
                        for k in keys.iter().skip(t) {
                            op(k);
                        }
                    });
                }
            });
            ops += KEYS * threads;
        }
        // Per-op latency as each thread sees it: total time over ops per thread.
        rounds.push(start.elapsed().as_nanos() as f64 / (ops / threads) as f64);
    }
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn row(name: &str, ns: f64, reference: Option<(&str, f64)>) {
    match reference {
        Some((what, base)) => println!("| {name} | {ns:.1} ns | {:.2}× {what} |", ns / base),
        None => println!("| {name} | {ns:.1} ns | reference |"),
    }
}

fn memory(threads: usize) {
    let (q, m, t_async, t_sync) = memory_hits(threads);
    println!("\n**Memory hit, 10k keys, {threads} thread(s)**\n");
    println!("| path | per op | ratio |\n|---|---|---|");
    row("quick_cache `get`", q, None);
    row("moka `get`", m, Some(("quick_cache", q)));
    row(
        "tankard `get_or_create` (async, hit)",
        t_async,
        Some(("quick_cache", q)),
    );
    row(
        "tankard `try_get_fresh` (sync)",
        t_sync,
        Some(("quick_cache", q)),
    );
    println!(
        "\nTankard async hit vs moka: {:.2}×; sync hit vs moka: {:.2}×",
        t_async / m,
        t_sync / m
    );
}

/// Issue 13's goal: a hit on a tagged entry against a hit on an untagged
/// one, on one memory region, measured in turn in the same run.
fn memory_tagged(threads: usize) {
    let value = Arc::new("v".repeat(100));
    let config =
        tankard::Config::from_flat([("cache.type", "memory"), ("cache.max_entries", "40000")])
            .expect("config");
    let manager = tankard::CacheManager::new(config).expect("manager");
    let plain = manager.namespace("plain");
    let tagged = manager
        .namespace("tagged")
        .tags(["user:42", "users"])
        .expect("tags");
    for i in 0..KEYS {
        let key = format!("key-{i}");
        for ns in [&plain, &tagged] {
            ns.put_arc(&key, value.clone())
                .now_or_never()
                .expect("memory put is immediate")
                .expect("put");
        }
    }
    fn hit(ns: &tankard::Cache) -> impl Fn(&str) + Sync + '_ {
        move |k: &str| {
            let hit = ns
                .get_or_create::<String, _, _>(k, || async { unreachable!("every key is cached") })
                .now_or_never();
            black_box(hit);
        }
    }
    let untagged = measure(threads, hit(&plain));
    let with_tags = measure(threads, hit(&tagged));
    println!("\n**Memory hit, tagged vs untagged entry, 10k keys, {threads} thread(s)**\n");
    println!("| path | per op | ratio |\n|---|---|---|");
    row("untagged entry `get_or_create` (hit)", untagged, None);
    row(
        "entry with 2 tags `get_or_create` (hit)",
        with_tags,
        Some(("untagged", untagged)),
    );
}

/// The memory hits with a Prometheus recorder installed: the figures
/// reach it as they happen (hits 64 at a time per thread, one hit in 64
/// timed).
fn memory_recorded(threads: usize) {
    let (q, _, t_async, t_sync) = memory_hits(threads);
    println!("\n**Memory hit with a metrics recorder, 10k keys, {threads} thread(s)**\n");
    println!("| path | per op | ratio |\n|---|---|---|");
    row("quick_cache `get`", q, None);
    row(
        "tankard `get_or_create` (async, hit), recorder on",
        t_async,
        Some(("quick_cache", q)),
    );
    row(
        "tankard `try_get_fresh` (sync), recorder on",
        t_sync,
        Some(("quick_cache", q)),
    );
}

/// quick_cache, moka, and Tankard's async and sync memory hits, ns/op.
fn memory_hits(threads: usize) -> (f64, f64, f64, f64) {
    let value = Arc::new("v".repeat(100));
    let quick: quick_cache::sync::Cache<String, Arc<String>> =
        quick_cache::sync::Cache::new(KEYS * 2);
    let moka: moka::sync::Cache<String, Arc<String>> = moka::sync::Cache::new((KEYS * 2) as u64);
    let config =
        tankard::Config::from_flat([("cache.type", "memory"), ("cache.max_entries", "20000")])
            .expect("config");
    let manager = tankard::CacheManager::new(config).expect("manager");
    let ns = manager.namespace("bench");
    for i in 0..KEYS {
        let key = format!("key-{i}");
        quick.insert(key.clone(), value.clone());
        moka.insert(key.clone(), value.clone());
        ns.put_arc(&key, value.clone())
            .now_or_never()
            .expect("memory put is immediate")
            .expect("put");
    }
    let q = measure(threads, |k| {
        black_box(quick.get(k));
    });
    let m = measure(threads, |k| {
        black_box(moka.get(k));
    });
    let t_async = measure(threads, |k| {
        let hit = ns
            .get_or_create::<String, _, _>(k, || async { unreachable!("every key is cached") })
            .now_or_never();
        black_box(hit);
    });
    let t_sync = measure(threads, |k| {
        black_box(ns.try_get_fresh::<String>(k));
    });
    (q, m, t_async, t_sync)
}

fn file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data").display().to_string();
    let config =
        tankard::Config::from_flat([("cache.type", "file"), ("cache.data_dir", data.as_str())])
            .expect("config");
    let manager = tankard::CacheManager::new(config).expect("manager");
    let ns = manager.namespace("bench");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let value = "v".repeat(100);
    const FILE_KEYS: usize = 1_000;
    runtime.block_on(async {
        for i in 0..FILE_KEYS {
            ns.put(&format!("key-{i}"), value.clone())
                .await
                .expect("put");
        }
    });
    // The same bytes as plain files, for the reference read.
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).expect("dir");
    for i in 0..FILE_KEYS {
        std::fs::write(plain.join(format!("key-{i}")), vec![b'v'; 160]).expect("write");
    }
    let keys: Vec<String> = (0..FILE_KEYS).map(|i| format!("key-{i}")).collect();
    let time = |op: &dyn Fn(&str)| {
        let mut rounds = Vec::new();
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let mut ops = 0;
            while start.elapsed() < Duration::from_millis(200) {
                for k in &keys {
                    op(k);
                }
                ops += keys.len();
            }
            rounds.push(start.elapsed().as_nanos() as f64 / ops as f64);
        }
        rounds.sort_by(f64::total_cmp);
        rounds[ROUNDS / 2]
    };
    let read = time(&|k| {
        black_box(std::fs::read(plain.join(k)).expect("read"));
    });
    let hit = time(&|k| {
        let v = runtime.block_on(ns.get_or_create::<String, _, _>(k, || async { unreachable!() }));
        black_box(v.expect("hit"));
    });
    println!("\n**File hit, 1k keys, 100-byte values, 1 thread**\n");
    println!("| path | per op | ratio |\n|---|---|---|");
    row("`std::fs::read` of the same bytes", read, None);
    row(
        "tankard file `get_or_create` (hit)",
        hit,
        Some(("fs::read", read)),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks one part.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wants = |part: &str| filter.as_deref().is_none_or(|f| part.contains(f));
    if wants("memory") {
        memory(1);
        memory(2);
    }
    if wants("tagged") {
        memory_tagged(1);
        memory_tagged(2);
    }
    if wants("file") {
        file();
    }
    if wants("recorder") {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder");
        memory_recorded(1);
        memory_recorded(2);
    }
}
