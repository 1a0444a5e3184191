//! The L1 tier and background refresh against their references, in one
//! run (issue 12's speed targets):
//!
//! - an L1 hit (Redis region with `l1 = true`) against a memory-region hit
//!   (target ≤ 1.1×) and against a Redis hit without L1 (target ≥ 100×
//!   faster);
//! - 64 concurrent callers on a hot key set: Redis + L1 against the raw
//!   client's `GET` (target ≥ 10×);
//! - cross-node invalidation: from a `clear` on node A until node B's next
//!   read misses, p50 and p99 over 1 000 trials (target p99 ≤ 5 ms on
//!   loopback). The two nodes are two managers in this process, each with
//!   its own connections and backplane subscription;
//! - background refresh: a caller's latency on a stale entry against a
//!   hit's, on Redis without L1 (target ≤ 2×).
//!
//! Run with `cargo bench -p tankard --features redis --bench l1` after
//! `scripts/services`. Short rounds of each side alternate and the median
//! round counts, so a noisy neighbour hurts both alike.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tankard::{CacheManager, Config};

const REDIS_DEFAULT: &str = "redis://127.0.0.1:26379/";
const ROUNDS: usize = 15;
const CONCURRENCY: usize = 64;
const HOT_KEYS: usize = 64;
const THROUGHPUT_WINDOW: Duration = Duration::from_millis(250);
const TRIALS: usize = 1000;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index]
}

fn unique_prefix(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bench-{}-{nanos:x}/{what}/", std::process::id())
}

fn redis_manager(url: &str, prefix: &str, extra: &str) -> CacheManager {
    let toml = format!(
        "[cache]\ntype = \"ext:redis\"\nurl = \"{url}\"\nprefix = \"{prefix}\"\nexpire = 3600\n{extra}"
    );
    CacheManager::new(Config::from_toml_str(&toml).unwrap()).unwrap()
}

/// Waits until the region's L1 holds `key` (the backplane subscription is
/// live and a read has taken a copy).
async fn until_in_l1(cache: &tankard::Cache, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = cache.get::<String>(key).await.unwrap();
        if cache.try_get_fresh::<String>(key).is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "the L1 never came up");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Mean time of one call, over `n` calls.
async fn per_call<F, Fut>(n: usize, mut call: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    for _ in 0..n {
        call().await;
    }
    start.elapsed().as_secs_f64() / n as f64
}

/// Calls per second of `CONCURRENCY` tasks calling in a loop.
async fn throughput<F, Fut>(call: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|task| {
            let (stop, count, call) = (stop.clone(), count.clone(), call.clone());
            tokio::spawn(async move {
                let mut i = task;
                while !stop.load(Ordering::Relaxed) {
                    call(i % HOT_KEYS).await;
                    i += 1;
                    count.fetch_add(1, Ordering::Relaxed);
                    // An L1 hit never waits, so without this a task would
                    // never hand its worker back to the scheduler, which
                    // then could not drive the timer that ends the window.
                    if i % 32 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = count.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(THROUGHPUT_WINDOW).await;
    let done = (count.load(Ordering::Relaxed) - before) as f64;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    done / elapsed
}

struct Row {
    name: String,
    tankard: String,
    reference: String,
    ratio: String,
    target: &'static str,
}

async fn hit_rows(url: &str) -> Vec<Row> {
    let l1 = redis_manager(url, &unique_prefix("l1"), "l1 = true\n");
    let plain = redis_manager(url, &unique_prefix("plain"), "");
    let memory = CacheManager::new(Config::memory()).unwrap();
    let value = "x".repeat(128);
    let (l1_ns, plain_ns, memory_ns) = (
        l1.namespace("bench"),
        plain.namespace("bench"),
        memory.namespace("bench"),
    );
    for ns in [&l1_ns, &plain_ns, &memory_ns] {
        ns.put("hit", value.clone()).await.unwrap();
    }
    until_in_l1(&l1_ns, "hit").await;
    let hit = |ns: &tankard::Cache| {
        let ns = ns.clone();
        move || {
            let ns = ns.clone();
            async move {
                let got: Arc<String> = ns
                    .get_or_create("hit", || async { unreachable!("a hit") })
                    .await
                    .unwrap();
                assert_eq!(got.len(), 128);
            }
        }
    };
    let (mut ours, mut mem, mut remote) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(per_call(100_000, hit(&l1_ns)).await);
        mem.push(per_call(100_000, hit(&memory_ns)).await);
        remote.push(per_call(500, hit(&plain_ns)).await);
    }
    let (ours, mem, remote) = (median(ours), median(mem), median(remote));
    assert_eq!(l1.default_region().stats().backend_errors, 0);
    vec![
        Row {
            name: "L1 hit (Redis + l1) vs memory-region hit".into(),
            tankard: format!("{:.1} ns", ours * 1e9),
            reference: format!("{:.1} ns", mem * 1e9),
            ratio: format!("{:.2}×", ours / mem),
            target: "≤ 1.1×",
        },
        Row {
            name: "L1 hit vs Redis hit without L1".into(),
            tankard: format!("{:.1} ns", ours * 1e9),
            reference: format!("{:.1} µs", remote * 1e6),
            ratio: format!("{:.0}× faster", remote / ours),
            target: "≥ 100× faster",
        },
    ]
}

async fn throughput_row(url: &str) -> Row {
    let prefix = unique_prefix("hot");
    let l1 = redis_manager(url, &prefix, "l1 = true\n");
    let ns = l1.namespace("bench");
    let value = "x".repeat(128);
    let client = redis::Client::open(url).unwrap();
    let raw = client.get_multiplexed_async_connection().await.unwrap();
    for key in 0..HOT_KEYS {
        ns.put(&key.to_string(), value.clone()).await.unwrap();
        redis::cmd("SET")
            .arg(format!("{prefix}raw{key}"))
            .arg(&value)
            .query_async::<()>(&mut raw.clone())
            .await
            .unwrap();
    }
    until_in_l1(&ns, "0").await;
    let keys: Arc<Vec<String>> = Arc::new((0..HOT_KEYS).map(|k| k.to_string()).collect());
    let raw_keys: Arc<Vec<String>> =
        Arc::new((0..HOT_KEYS).map(|k| format!("{prefix}raw{k}")).collect());
    let ours_call = {
        let (ns, keys) = (ns.clone(), keys.clone());
        move |i: usize| {
            let (ns, keys) = (ns.clone(), keys.clone());
            async move {
                let got: Arc<String> = ns
                    .get_or_create(&keys[i], || async { unreachable!("a hit") })
                    .await
                    .unwrap();
                assert_eq!(got.len(), 128);
            }
        }
    };
    let raw_call = move |i: usize| {
        let (mut raw, raw_keys) = (raw.clone(), raw_keys.clone());
        async move {
            let got: Vec<u8> = redis::cmd("GET")
                .arg(&raw_keys[i])
                .query_async(&mut raw)
                .await
                .unwrap();
            assert_eq!(got.len(), 128);
        }
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(throughput(ours_call.clone()).await);
        theirs.push(throughput(raw_call.clone()).await);
    }
    let (ours, theirs) = (median(ours), median(theirs));
    Row {
        name: format!("{CONCURRENCY} callers, {HOT_KEYS} hot keys: Redis + L1 vs raw GET"),
        tankard: format!("{ours:.0} ops/s"),
        reference: format!("{theirs:.0} ops/s"),
        ratio: format!("{:.1}×", ours / theirs),
        target: "≥ 10×",
    }
}

async fn invalidation_row(url: &str) -> Row {
    let prefix = unique_prefix("coherence");
    let a = redis_manager(url, &prefix, "l1 = true\n");
    let b = redis_manager(url, &prefix, "l1 = true\n");
    let (ns_a, ns_b) = (a.namespace("bench"), b.namespace("bench"));
    let mut times = Vec::with_capacity(TRIALS);
    for trial in 0..TRIALS {
        ns_a.put("k", trial.to_string()).await.unwrap();
        until_in_l1(&ns_b, "k").await;
        let start = Instant::now();
        ns_a.clear().await.unwrap();
        while ns_b.try_get_fresh::<String>("k").is_some() {
            tokio::task::yield_now().await;
        }
        times.push(start.elapsed().as_secs_f64());
    }
    let p50 = percentile(&mut times, 0.5);
    let p99 = percentile(&mut times, 0.99);
    Row {
        name: format!("cross-node invalidation: A clears, until B misses ({TRIALS} trials)"),
        tankard: format!("p50 {:.2} ms, p99 {:.2} ms", p50 * 1e3, p99 * 1e3),
        reference: "—".into(),
        ratio: "—".into(),
        target: "p99 ≤ 5 ms",
    }
}

async fn background_row(url: &str) -> Row {
    let clock = tankard::Clock::manual(1_700_000_000_000);
    let toml = format!(
        "[cache]\ntype = \"ext:redis\"\nurl = \"{url}\"\nprefix = \"{}\"\nexpire = 10\nstale = 3600\nrefresh = \"background\"\n",
        unique_prefix("refresh")
    );
    let manager =
        CacheManager::with_clock(Config::from_toml_str(&toml).unwrap(), clock.clone()).unwrap();
    let ns = manager.namespace("bench");
    let value = "x".repeat(128);
    let (mut stale, mut hit) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS * 20 {
        let key = round.to_string();
        ns.put(&key, value.clone()).await.unwrap();
        let start = Instant::now();
        let got: Arc<String> = ns
            .get_or_spawn(&key, || async { unreachable!("a hit") })
            .await
            .unwrap();
        hit.push(start.elapsed().as_secs_f64());
        assert_eq!(got.len(), 128);
        clock.advance(Duration::from_secs(11));
        let fresh = value.clone();
        let start = Instant::now();
        let got: Arc<String> = ns
            .get_or_spawn(&key, move || async move { fresh })
            .await
            .unwrap();
        stale.push(start.elapsed().as_secs_f64());
        assert_eq!(got.len(), 128);
    }
    let (stale, hit) = (median(stale), median(hit));
    Row {
        name: "background refresh: a call on a stale entry vs a hit (Redis)".into(),
        tankard: format!("{:.1} µs", stale * 1e6),
        reference: format!("{:.1} µs", hit * 1e6),
        ratio: format!("{:.2}×", stale / hit),
        target: "≤ 2×",
    }
}

fn main() {
    let url = std::env::var("TANKARD_REDIS_URL").unwrap_or_else(|_| REDIS_DEFAULT.into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows = runtime.block_on(async {
        let mut rows = hit_rows(&url).await;
        rows.push(throughput_row(&url).await);
        rows.push(invalidation_row(&url).await);
        rows.push(background_row(&url).await);
        rows
    });
    println!("\nL1 tier and background refresh (same server, same run)\n");
    println!("| measurement | tankard | reference | ratio | target |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            row.name, row.tankard, row.reference, row.ratio, row.target
        );
    }
}
