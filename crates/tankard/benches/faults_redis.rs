//! What a Redis fault costs an app, for RELIABILITY.md: 16 tasks call
//! `get_or_create` on 4 hot keys (entries live 1 s, the creator takes
//! 5 ms) against a private `redis-server`, which is
//!
//! - (a) stopped with SIGSTOP for 3 s, then continued;
//! - (b) killed, and restarted on the same port 3 s later.
//!
//! For each: failed calls, the slowest call started during the fault and
//! in the 20 s after it, how long until the hit ratio is back, calls per
//! second during the fault against the same load on a region with
//! `enabled = false` (the creator every call, no cache), and the lock keys
//! left on the server when the load stops.
//!
//! Run with `cargo bench -p tankard --features tankard/redis --bench
//! faults_redis` (needs `redis-server` on the PATH or in /usr/bin; about
//! 55 s). Prints a markdown table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/redis/common.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Kind, PrivateServer, Raw};

const TASKS: usize = 16;
const HOT_KEYS: usize = 4;
const CREATOR: Duration = Duration::from_millis(5);
const WARM: Duration = Duration::from_secs(1);
const FAULT: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(20);
const UNCACHED: Duration = Duration::from_secs(3);
/// The hit ratio is followed in slices this long after the fault.
const SLICE: Duration = Duration::from_millis(250);

/// `timeout` 300 ms (the default is 2 s); `lock_timeout` the default
/// 30 s, so a lock left behind would still be there when the load stops;
/// `wait_timeout` 5 s (default 60 s) so that a build that leaves locks
/// behind still finishes within the minute.
fn config(url: &str, prefix: &str, enabled: bool) -> String {
    format!(
        "[cache]\ntype = \"ext:redis\"\nurl = \"{url}\"\nprefix = \"{prefix}\"\n\
         expire = 1\ntimeout = \"300ms\"\nlock_timeout = \"30s\"\nwait_timeout = \"5s\"\n\
         enabled = {enabled}\n"
    )
}

fn unique_prefix(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bench-{}-{nanos:x}/{what}/", std::process::id())
}

#[derive(Clone, Copy)]
struct Sample {
    start: Instant,
    end: Instant,
    failed: bool,
    /// This call ran the creator (a miss, or a bypass).
    created: bool,
}

/// `TASKS` tasks calling `get_or_create` on `HOT_KEYS` keys in a loop.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
}

impl Load {
    fn start(ns: &tankard::Cache) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..TASKS)
            .map(|task| {
                let (ns, stop) = (ns.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut n = task;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("hot-{}", n % HOT_KEYS);
                        n += 1;
                        let created = AtomicBool::new(false);
                        let start = Instant::now();
                        let result = ns
                            .get_or_create(&key, || async {
                                created.store(true, Ordering::Relaxed);
                                tokio::time::sleep(CREATOR).await;
                                "value".to_string()
                            })
                            .await;
                        samples.push(Sample {
                            start,
                            end: Instant::now(),
                            failed: result.is_err(),
                            created: created.load(Ordering::Relaxed),
                        });
                    }
                    samples
                })
            })
            .collect();
        Load { stop, tasks }
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        for task in self.tasks {
            samples.extend(task.await.unwrap());
        }
        samples
    }
}

fn hit_ratio<'a>(samples: impl Iterator<Item = &'a Sample>) -> Option<f64> {
    let (mut calls, mut hits) = (0usize, 0usize);
    for s in samples {
        calls += 1;
        hits += usize::from(!s.created);
    }
    (calls > 0).then(|| hits as f64 / calls as f64)
}

fn slowest<'a>(samples: impl Iterator<Item = &'a Sample>) -> Duration {
    samples.map(|s| s.end - s.start).max().unwrap_or_default()
}

/// Calls completed per second in `[from, to)`.
fn rate(samples: &[Sample], from: Instant, to: Instant) -> f64 {
    let done = samples
        .iter()
        .filter(|s| s.end >= from && s.end < to)
        .count();
    done as f64 / (to - from).as_secs_f64()
}

/// The lock keys under `prefix`, with their TTLs in ms.
async fn lock_keys(url: &str, prefix: &str) -> Vec<(String, i64)> {
    let mut raw = Raw::connect_url(Kind::Single, url).await;
    let mut cursor = 0u64;
    let mut found = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = raw
            .query(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{{{prefix}*"))
                    .arg("COUNT")
                    .arg(1000),
            )
            .await;
        for key in keys.into_iter().filter(|k| k.contains("!lock#")) {
            let ttl = raw.pttl(&key).await;
            found.push((key, ttl));
        }
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

/// Calls per second of the load on a region with caching disabled: the
/// creator on every call, nothing else.
async fn uncached_rate() -> f64 {
    let server = PrivateServer::start(&[]);
    let config = config(&server.url(), &unique_prefix("uncached"), false);
    let manager =
        tankard::CacheManager::new(tankard::Config::from_toml_str(&config).unwrap()).unwrap();
    let load = Load::start(&manager.namespace("n"));
    tokio::time::sleep(WARM / 2).await;
    let from = Instant::now();
    tokio::time::sleep(UNCACHED).await;
    let to = Instant::now();
    let samples = load.finish().await;
    rate(&samples, from, to)
}

#[derive(Clone, Copy)]
enum Fault {
    Stop,
    Kill,
}

struct Row {
    scenario: &'static str,
    calls: usize,
    failed: usize,
    slowest_during: Duration,
    slowest_after: Duration,
    resumed_after: Option<Duration>,
    hit_ratio_before: f64,
    rate_during: f64,
    locks_left: Vec<(String, i64)>,
}

async fn scenario(fault: Fault) -> Row {
    let mut server = PrivateServer::start(&[]);
    let url = server.url();
    let prefix = unique_prefix("fault");
    let manager = tankard::CacheManager::new(
        tankard::Config::from_toml_str(&config(&url, &prefix, true)).unwrap(),
    )
    .unwrap();
    let load = Load::start(&manager.namespace("n"));
    tokio::time::sleep(WARM).await;

    let faulted = Instant::now();
    match fault {
        Fault::Stop => server.signal("STOP"),
        Fault::Kill => server.kill(),
    }
    tokio::time::sleep(FAULT).await;
    match fault {
        Fault::Stop => server.signal("CONT"),
        // Waits (briefly) for the port: off the async workers' hands.
        Fault::Kill => tokio::task::block_in_place(|| server.spawn()),
    }
    let recovered = Instant::now();
    tokio::time::sleep(AFTER).await;
    let samples = load.finish().await;
    let locks_left = lock_keys(&url, &prefix).await;

    let before: Vec<_> = samples.iter().filter(|s| s.start < faulted).collect();
    let hit_ratio_before = hit_ratio(before.iter().copied()).unwrap_or(0.0);
    let during = samples
        .iter()
        .filter(|s| s.start >= faulted && s.start < recovered);
    let after: Vec<_> = samples.iter().filter(|s| s.start >= recovered).collect();
    // The first slice after which every slice's hit ratio is back within
    // 10 % of the one before the fault.
    let slices = (AFTER.as_millis() / SLICE.as_millis()) as u32;
    let back = |i: u32| {
        let (from, to) = (recovered + SLICE * i, recovered + SLICE * (i + 1));
        hit_ratio(
            after
                .iter()
                .copied()
                .filter(|s| s.start >= from && s.start < to),
        )
        .is_some_and(|r| r >= 0.9 * hit_ratio_before)
    };
    let resumed_after = (0..slices)
        .find(|&i| (i..slices).all(back))
        .map(|i| SLICE * i);
    Row {
        scenario: match fault {
            Fault::Stop => "(a) SIGSTOP 3 s, then SIGCONT",
            Fault::Kill => "(b) killed, restarted 3 s later",
        },
        calls: samples.len(),
        failed: samples.iter().filter(|s| s.failed).count(),
        slowest_during: slowest(during),
        slowest_after: slowest(after.iter().copied()),
        resumed_after,
        hit_ratio_before,
        rate_during: rate(&samples, faulted, recovered),
        locks_left,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (uncached, rows) = runtime.block_on(async {
        let uncached = uncached_rate().await;
        let stop = scenario(Fault::Stop).await;
        let kill = scenario(Fault::Kill).await;
        (uncached, vec![stop, kill])
    });

    println!(
        "\nRedis faults under load: {TASKS} tasks, {HOT_KEYS} hot keys, expire 1 s, creator \
         {CREATOR:?}, timeout 300 ms, lock_timeout 30 s, wait_timeout 5 s, fault {FAULT:?}, \
         then {AFTER:?} observed\n"
    );
    println!(
        "| scenario | calls | failed | slowest call, during | slowest call, {}s after | \
         hit ratio back after | calls/s during (vs uncached {uncached:.0}/s) | lock keys left |",
        AFTER.as_secs()
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in rows {
        let resumed = row.resumed_after.map_or_else(
            || "not within the window".to_owned(),
            |d| {
                format!(
                    "{:.2} s (ratio before: {:.2})",
                    d.as_secs_f64(),
                    row.hit_ratio_before
                )
            },
        );
        let locks = if row.locks_left.is_empty() {
            "0".to_owned()
        } else {
            format!(
                "{} (PTTL ms: {:?})",
                row.locks_left.len(),
                row.locks_left
                    .iter()
                    .map(|(_, ttl)| *ttl)
                    .collect::<Vec<_>>()
            )
        };
        println!(
            "| {} | {} | {} | {:.0} ms | {:.0} ms | {resumed} | {:.0} ({:.2}×) | {locks} |",
            row.scenario,
            row.calls,
            row.failed,
            row.slowest_during.as_secs_f64() * 1e3,
            row.slowest_after.as_secs_f64() * 1e3,
            row.rate_during,
            row.rate_during / uncached,
        );
    }
}
