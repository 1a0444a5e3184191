//! What a Redis outage costs a call, against the same call on a region
//! with caching switched off (`enabled = false`), in one run (issue 11,
//! DESIGN §5 rule 8):
//!
//! - **dead** (connection refused: the port of a killed private
//!   `redis-server`), once the circuit breaker is open: the per-call cost
//!   of `get_or_create` (target ≤ 1.1× the disabled call), for an empty
//!   creator (the breaker's whole overhead, in ns) and for a creator that
//!   works 50 µs (a cheap uncached call);
//! - **hung** (a private `redis-server` SIGSTOPped), 16 callers calling
//!   for a few seconds: every call's latency; target: no call longer than
//!   `timeout` plus the creator's time.
//!
//! The breaker keeps its default `retry_after` (1 s), so the runs include
//! the one probe a second it sends. Run with
//! `cargo bench -p tankard --features redis --bench breaker`; it needs
//! `redis-server` (scripts/services installs it) and takes about 30 s.
//! Rounds of the two regions alternate and the median round counts, so a
//! noisy neighbour hurts both alike.

#![allow(clippy::unwrap_used, clippy::expect_used)]

// Only `PrivateServer` is used here.
#[allow(dead_code, unused_imports)]
#[path = "../tests/redis/common.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::PrivateServer;
use tankard::{Cache, CacheManager, Config};

const TIMEOUT: Duration = Duration::from_millis(300);
const ROUNDS: usize = 15;
const CALLS: usize = 2000;
const HUNG_CALLERS: usize = 16;
const HUNG_FOR: Duration = Duration::from_secs(4);
const KEYS: [&str; 8] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn manager(url: &str, extra: &str) -> CacheManager {
    let toml = format!(
        "[cache]\ntype = \"ext:redis\"\nurl = \"{url}\"\nprefix = \"bench-breaker-{}/\"\n\
         expire = 60\ntimeout = \"{}ms\"\n{extra}\n",
        std::process::id(),
        TIMEOUT.as_millis()
    );
    CacheManager::new(Config::from_toml_str(&toml).unwrap()).unwrap()
}

/// Work that takes `time` of CPU: a creator's cost that does not depend on
/// the timer's resolution.
fn work(time: Duration) -> u64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < time {
        n = black_box(n.wrapping_add(1));
    }
    n
}

/// Mean time of one `get_or_create` over [`CALLS`] sequential calls.
async fn per_call(ns: &Cache, creator: Duration) -> f64 {
    let started = Instant::now();
    for i in 0..CALLS {
        let value = ns
            .get_or_create(KEYS[i % KEYS.len()], || async move { work(creator) })
            .await
            .unwrap();
        black_box(value);
    }
    started.elapsed().as_secs_f64() / CALLS as f64
}

struct Row {
    name: String,
    tankard: String,
    reference: String,
    ratio: String,
    target: String,
}

fn fmt_time(seconds: f64) -> String {
    if seconds < 1e-6 {
        format!("{:.0} ns", seconds * 1e9)
    } else if seconds < 1e-3 {
        format!("{:.1} µs", seconds * 1e6)
    } else {
        format!("{:.1} ms", seconds * 1e3)
    }
}

/// Per-call rows for a region whose server is down, against the same
/// calls on a region with caching disabled.
async fn per_call_rows(what: &str, down: &CacheManager, disabled: &CacheManager) -> Vec<Row> {
    let (down_ns, disabled_ns) = (down.namespace("bench"), disabled.namespace("bench"));
    // The first call fails and opens the breaker; then warm both.
    per_call(&down_ns, Duration::ZERO).await;
    per_call(&disabled_ns, Duration::ZERO).await;
    let mut rows = Vec::new();
    for creator in [Duration::ZERO, Duration::from_micros(50)] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            ours.push(per_call(&down_ns, creator).await);
            theirs.push(per_call(&disabled_ns, creator).await);
        }
        let (ours, theirs) = (median(ours), median(theirs));
        rows.push(Row {
            name: format!(
                "Redis {what}, breaker open: get_or_create, creator {} µs",
                creator.as_micros()
            ),
            tankard: fmt_time(ours),
            reference: fmt_time(theirs),
            ratio: format!("{:.2}× (+{})", ours / theirs, fmt_time(ours - theirs)),
            target: "≤ 1.1×".into(),
        });
    }
    let stats = down.default_region().stats();
    assert_eq!(stats.hits, 0, "a server that is down served a hit");
    assert!(stats.backend_errors > 0);
    rows
}

/// Every call's latency, [`HUNG_CALLERS`] callers calling for
/// [`HUNG_FOR`] on a region whose server hangs, from the moment it hangs.
async fn hung_latency_row(hung: &CacheManager) -> Row {
    let ns = hung.namespace("callers");
    let creator = Duration::from_micros(50);
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..HUNG_CALLERS)
        .map(|caller| {
            let (ns, stop) = (ns.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("c{caller}-{}", KEYS[i % KEYS.len()]);
                    i += 1;
                    let started = Instant::now();
                    let value = ns
                        .get_or_create(&key, || async move { work(creator) })
                        .await
                        .unwrap();
                    black_box(value);
                    latencies.push(started.elapsed());
                    // Let the other callers run on these two threads.
                    tokio::task::yield_now().await;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(HUNG_FOR).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(caller.await.unwrap());
    }
    latencies.sort();
    let worst = *latencies.last().unwrap();
    let waited = latencies.iter().filter(|l| **l >= TIMEOUT / 2).count();
    // A call that paid a second timeout would take at least this long.
    let twice = latencies.iter().filter(|l| **l >= TIMEOUT * 3 / 2).count();
    let limit = TIMEOUT + creator;
    Row {
        name: format!(
            "Redis hung (SIGSTOP), {HUNG_CALLERS} callers for {} s from the moment it hangs, \
             creator {} µs: slowest call ({} calls; {waited} waited a timeout: the first of \
             each caller, then one probe a second; {twice} waited more than one; median {})",
            HUNG_FOR.as_secs(),
            creator.as_micros(),
            latencies.len(),
            fmt_time(latencies[latencies.len() / 2].as_secs_f64()),
        ),
        tankard: fmt_time(worst.as_secs_f64()),
        reference: "—".into(),
        ratio: format!(
            "{:.3}× the limit",
            worst.as_secs_f64() / limit.as_secs_f64()
        ),
        target: format!(
            "≤ timeout + creator ({}), + timer and scheduling slack",
            fmt_time(limit.as_secs_f64())
        ),
    }
}

async fn rows() -> Vec<Row> {
    let mut dead = PrivateServer::start(&[]);
    dead.kill();
    let disabled = manager(&dead.url(), "enabled = false");
    let mut rows = per_call_rows("dead (refused)", &manager(&dead.url(), ""), &disabled).await;

    let hung = PrivateServer::start(&[]);
    let (callers, sequential) = (manager(&hung.url(), ""), manager(&hung.url(), ""));
    // Connected before it hangs, as an app's would be.
    callers.namespace("warm").put("k", 1u8).await.unwrap();
    sequential.namespace("warm").put("k", 1u8).await.unwrap();
    hung.signal("STOP");
    rows.push(hung_latency_row(&callers).await);
    rows.extend(per_call_rows("hung (SIGSTOP)", &sequential, &disabled).await);
    hung.signal("CONT");
    rows
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rows = runtime.block_on(rows());

    println!("\nA Redis outage vs the same call with caching disabled (same run)\n");
    println!("| measurement | tankard | enabled = false | ratio | target |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} |",
            row.name, row.tankard, row.reference, row.ratio, row.target
        );
    }
}
