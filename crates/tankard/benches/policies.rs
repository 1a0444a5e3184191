//! Freshness policies under a read-heavy load (issue 13's speed goals),
//! in one run:
//!
//! - 64 callers read one hot key in a loop for several expiry periods; its
//!   creator takes 50 ms. With `early_refresh = 0.8` the key is renewed in
//!   a task before it expires, so no caller ever waits for the creator:
//!   the p99 caller latency should stay within 2× a hit's, with one
//!   creator run per period. Without it, the callers that arrive at each
//!   expiry wait the creator's 50 ms (the miss spike), shown for
//!   comparison.
//!
//! Run with `cargo bench -p tankard --bench policies`. No server needed:
//! a memory region, as the policy's cost is the engine's, not a store's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CALLERS: usize = 64;
const EXPIRE_MS: u64 = 500;
const PERIODS: u64 = 8;
const CREATOR: Duration = Duration::from_millis(50);

struct Run {
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
    creator_runs: u64,
    calls: usize,
}

async fn run(early_refresh: &str) -> Run {
    let config = tankard::Config::from_flat([
        ("cache.type", "memory"),
        ("cache.expire", &format!("{EXPIRE_MS}ms")),
        ("cache.early_refresh", early_refresh),
    ])
    .unwrap();
    let manager = tankard::CacheManager::new(config).unwrap();
    let cache = manager.namespace("hot");
    let runs = Arc::new(AtomicU64::new(0));
    let creator = |runs: Arc<AtomicU64>| {
        move || async move {
            runs.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(CREATOR).await;
            "report".repeat(16)
        }
    };
    cache
        .get_or_spawn("k", creator(runs.clone()))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let (cache, stop, runs) = (cache.clone(), stop.clone(), runs.clone());
        callers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(200_000);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let value = cache
                    .get_or_spawn("k", creator(runs.clone()))
                    .await
                    .unwrap();
                latencies.push(started.elapsed());
                assert!(!value.is_empty());
                // Other work between reads: a read-heavy app, not a spin.
                tokio::task::yield_now().await;
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_millis(EXPIRE_MS * PERIODS)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for caller in callers {
        all.extend(caller.await.unwrap());
    }
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Run {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: *all.last().unwrap(),
        creator_runs: runs.load(Ordering::Relaxed),
        calls: all.len(),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "\n{CALLERS} callers on one hot key, expire {EXPIRE_MS} ms, creator {} ms, {PERIODS} periods\n",
        CREATOR.as_millis()
    );
    println!("| early_refresh | calls | p50 | p99 | p99.9 | max | creator runs | p99 ÷ p50 |");
    println!("|---|---|---|---|---|---|---|---|");
    for setting in ["0.8", "xfetch", "off"] {
        let run = runtime.block_on(run(setting));
        println!(
            "| {setting} | {} | {:?} | {:?} | {:?} | {:?} | {} | {:.1}× |",
            run.calls,
            run.p50,
            run.p99,
            run.p999,
            run.max,
            run.creator_runs,
            run.p99.as_secs_f64() / run.p50.as_secs_f64()
        );
    }
}
