//! Faults under load and hostile keys: a private `redis-server` stopped
//! (SIGSTOP) or killed and restarted while 16 tasks hammer a few hot
//! keys; damaged generation counters, oversized and foreign-typed values
//! at entry keys, and a lock left without a TTL on the shared servers.
//!
//! The load tests assert what an app needs from a cache whose server
//! fails: no call fails (`on_backend_error = bypass`), no call waits
//! longer than the configured limits allow, caching resumes once the
//! server is back, and no lock is left behind to block a key afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tankard::Invalidation;

use crate::common::{
    Kind, PrivateServer, Raw, counted, entry_key, lock_key, manager, toml, unique_prefix,
};

both!(
    damaged_counters_do_not_switch_caching_off_and_a_bump_repairs_them,
    oversized_and_foreign_typed_values_are_a_counted_miss,
    a_lock_without_ttl_is_given_lock_timeout,
);

/// The per-operation limit of the load tests.
const TIMEOUT: Duration = Duration::from_millis(300);

/// The most Redis operations one call makes on its slowest path: a miss
/// whose lock is taken elsewhere reads, tries the lock, waits for it
/// (subscribe and take at once), reads again, reads the generations when
/// the reads failed, stores and releases. Each is bounded by `timeout`.
/// The circuit breaker (`retry_after`) only makes operations skip, so the
/// bound below holds with and without it; with it, calls are far faster.
const OPS_PER_CALL: u32 = 7;

/// The creator's own time in the load tests.
const CREATOR: Duration = Duration::from_millis(5);

/// For a shared, busy 2-core machine: scheduling, not Tankard.
const SLACK: Duration = Duration::from_secs(2);

/// The longest any call may take in the load tests.
fn call_bound() -> Duration {
    TIMEOUT * OPS_PER_CALL + CREATOR + SLACK
}

const TASKS: usize = 16;
const HOT_KEYS: usize = 4;

/// A region on a private server for the load tests: entries live 1 s so
/// misses (and so lock takes) keep coming; `lock_timeout` is the default
/// 30 s, so a lock left behind would outlive the test; `wait_timeout` is
/// short enough that a test of a broken build ends in seconds, and still
/// longer than [`call_bound`], so a call held up by a left-behind lock
/// fails the latency check.
fn load_config(url: &str, prefix: &str) -> String {
    format!(
        "[cache]\ntype = \"ext:redis\"\nurl = \"{url}\"\nprefix = \"{prefix}\"\n\
         expire = 1\ntimeout = \"300ms\"\nlock_timeout = \"30s\"\nwait_timeout = \"8s\"\n"
    )
}

/// One call of the load: when it started, how long it took, whether it
/// failed.
#[derive(Clone, Copy, Debug)]
struct Sample {
    start: Instant,
    took: Duration,
    failed: bool,
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
                        let value = format!("value of {key}");
                        n += 1;
                        let start = Instant::now();
                        let result = ns
                            .get_or_create(&key, || async move {
                                tokio::time::sleep(CREATOR).await;
                                value
                            })
                            .await;
                        samples.push(Sample {
                            start,
                            took: start.elapsed(),
                            failed: result.is_err(),
                        });
                        // Keep the call rate sane on 2 shared cores.
                        tokio::time::sleep(Duration::from_millis(1)).await;
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

/// Hits over hits + misses between two snapshots of a region's counters.
fn hit_ratio(before: &tankard::Stats, after: &tankard::Stats) -> f64 {
    let hits = after.hits - before.hits;
    let misses = after.misses - before.misses;
    hits as f64 / (hits + misses).max(1) as f64
}

/// The lock keys under `prefix` on the server.
async fn lock_keys(raw: &mut Raw, prefix: &str) -> Vec<String> {
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
        found.extend(keys.into_iter().filter(|k| k.contains("!lock#")));
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

/// Waits (bounded) until no lock key of `prefix` is left; panics naming
/// those that stay, with their TTLs.
async fn assert_no_lock_left(raw: &mut Raw, prefix: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = lock_keys(raw, prefix).await;
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            let mut ttls = Vec::new();
            for key in &left {
                ttls.push((key.clone(), raw.pttl(key).await));
            }
            panic!("lock keys left behind {within:?} after the load stopped: {ttls:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the load tests check on the calls made: none failed, none took
/// longer than [`call_bound`]; returns the slowest (for the log).
fn check_calls(samples: &[Sample], what: &str) -> Duration {
    assert!(!samples.is_empty(), "{what}: no calls made");
    let failed = samples.iter().filter(|s| s.failed).count();
    assert_eq!(
        failed,
        0,
        "{what}: {failed} of {} calls failed",
        samples.len()
    );
    let slowest = samples.iter().map(|s| s.took).max().unwrap_or_default();
    let over: Vec<_> = samples
        .iter()
        .filter(|s| s.took > call_bound())
        .map(|s| s.took)
        .collect();
    assert!(
        over.is_empty(),
        "{what}: {} calls took longer than {:?} (timeout {TIMEOUT:?} × {OPS_PER_CALL} operations \
         + creator + slack): {over:?}",
        over.len(),
        call_bound()
    );
    slowest
}

/// Lets the load run `for`, then returns the hit ratio over that time.
async fn hit_ratio_over(region: &tankard::Region, r#for: Duration) -> f64 {
    let before = region.stats();
    tokio::time::sleep(r#for).await;
    hit_ratio(&before, &region.stats())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_under_load_costs_bounded_calls_and_leaves_no_lock() {
    let server = PrivateServer::start(&[]);
    let prefix = unique_prefix("sigstop");
    let cache = manager(&load_config(&server.url(), &prefix));
    let region = cache.default_region();
    let ns = cache.namespace("n");

    let load = Load::start(&ns);
    let warm = hit_ratio_over(region, Duration::from_secs(1)).await;
    assert!(warm > 0.5, "hit ratio before the fault: {warm}");

    // Stopped, the server keeps its sockets open and answers nothing;
    // the commands sent meanwhile (lock takes among them) run when it
    // resumes.
    server.signal("STOP");
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.signal("CONT");
    let resumed = Instant::now();

    // Long enough for every key to expire and be recreated since the
    // resume: a lock taken by a lost request would be met here.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = hit_ratio_over(region, Duration::from_millis(1500)).await;
    let samples = load.finish().await;

    let during: Vec<_> = samples
        .iter()
        .filter(|s| s.start >= stopped && s.start < resumed)
        .copied()
        .collect();
    let slowest = check_calls(&samples, "SIGSTOP under load");
    let slowest_during = check_calls(&during, "calls started while stopped");
    assert!(
        after > 0.5,
        "caching did not resume after SIGCONT: hit ratio {after}"
    );
    assert!(region.stats().backend_errors > 0, "the fault went unseen");

    let mut raw = Raw::connect_url(Kind::Single, &server.url()).await;
    assert_no_lock_left(&mut raw, &prefix, Duration::from_secs(3)).await;
    eprintln!(
        "SIGSTOP 2 s under {TASKS} tasks: {} calls ({} while stopped), slowest {slowest:?} \
         (while stopped {slowest_during:?}), hit ratio {warm:.2} before, {after:.2} after",
        samples.len(),
        during.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_server_under_load_costs_bounded_calls_and_leaves_no_lock() {
    let mut server = PrivateServer::start(&[]);
    let prefix = unique_prefix("sigkill");
    let cache = manager(&load_config(&server.url(), &prefix));
    let region = cache.default_region();
    let ns = cache.namespace("n");

    let load = Load::start(&ns);
    let warm = hit_ratio_over(region, Duration::from_secs(1)).await;
    assert!(warm > 0.5, "hit ratio before the fault: {warm}");

    server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Same port, same manager: the connection comes back by itself.
    server.spawn();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let after = hit_ratio_over(region, Duration::from_millis(1500)).await;
    let samples = load.finish().await;

    let slowest = check_calls(&samples, "kill and restart under load");
    assert!(
        after > 0.5,
        "caching did not resume after the restart: hit ratio {after}"
    );
    assert!(region.stats().backend_errors > 0, "the fault went unseen");
    let mut raw = Raw::connect_url(Kind::Single, &server.url()).await;
    assert_no_lock_left(&mut raw, &prefix, Duration::from_secs(3)).await;
    eprintln!(
        "kill + restart under {TASKS} tasks: {} calls, slowest {slowest:?}, \
         hit ratio {warm:.2} before, {after:.2} after",
        samples.len()
    );
}

async fn damaged_counters_do_not_switch_caching_off_and_a_bump_repairs_them(kind: Kind) {
    let prefix = unique_prefix("damaged-gen");
    let cache = manager(&toml(kind, &prefix, ""));
    let region = cache.default_region();
    let ns = cache.namespace("n");
    let mut raw = Raw::connect(kind).await;
    let region_gen = format!("{{{prefix}default}}!gen");
    let soft = format!("{{{prefix}default}}!soft");
    let namespace_gen = format!("{{{prefix}default:n}}!gen");

    // Damaged every way a counter can be: not a number, a negative
    // number, another type.
    raw.set(&soft, b"soft?").await;
    raw.set(&namespace_gen, b"-3").await;
    raw.query::<i64>(redis::cmd("HSET").arg(&region_gen).arg("f").arg("v"))
        .await;

    let runs = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let value = ns.get_or_create("k", counted(&runs, "v1")).await.unwrap();
        assert_eq!(*value, "v1");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "caching was switched off");
    assert_eq!(region.stats().backend_errors, 0);
    assert_eq!(region.stats().hits, 2);

    // Each bump works and leaves a whole number past the clock in µs.
    let restarted = |value: Option<Vec<u8>>| {
        let text = String::from_utf8(value.expect("the counter is set")).unwrap();
        text.parse::<u64>().is_ok_and(|n| n > 1_600_000_000_000_000)
    };
    ns.clear().await.unwrap();
    assert!(restarted(raw.get(&namespace_gen).await));
    assert!(
        ns.get::<String>("k").await.unwrap().is_none(),
        "clear did not clear"
    );
    region.invalidate(Invalidation::Hard).await.unwrap();
    assert!(restarted(raw.get(&region_gen).await));
    region.invalidate(Invalidation::Soft).await.unwrap();
    let soft_ms: u64 = String::from_utf8(raw.get(&soft).await.unwrap())
        .unwrap()
        .parse()
        .unwrap();
    assert!(soft_ms > 1_600_000_000_000, "soft time {soft_ms}");

    // Repaired, the region caches as before.
    let value = ns.get_or_create("k", counted(&runs, "v2")).await.unwrap();
    assert_eq!(*value, "v2");
    let value = ns.get_or_create("k", counted(&runs, "v3")).await.unwrap();
    assert_eq!(*value, "v2");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(region.stats().backend_errors, 0);
}

async fn oversized_and_foreign_typed_values_are_a_counted_miss(kind: Kind) {
    let prefix = unique_prefix("oversized");
    let cache = manager(&toml(kind, &prefix, "max_entry_bytes = 4096"));
    let region = cache.default_region();
    let ns = cache.namespace("n");
    let mut raw = Raw::connect(kind).await;

    raw.set(&entry_key(&prefix, "n", "big"), &vec![b'x'; 64 * 1024])
        .await;
    assert!(ns.get::<String>("big").await.unwrap().is_none());
    assert_eq!(region.stats().decode_errors, 1);
    // A miss like any other: the creator's value replaces it.
    let value = ns
        .get_or_create("big", || async { "small".to_string() })
        .await
        .unwrap();
    assert_eq!(*value, "small");
    assert_eq!(*ns.get::<String>("big").await.unwrap().unwrap(), "small");

    // A list where an entry belongs: a plain miss, not a failure.
    raw.query::<i64>(
        redis::cmd("RPUSH")
            .arg(entry_key(&prefix, "n", "list"))
            .arg("a"),
    )
    .await;
    assert!(ns.get::<String>("list").await.unwrap().is_none());
    let value = ns
        .get_or_create("list", || async { "mine".to_string() })
        .await
        .unwrap();
    assert_eq!(*value, "mine");
    assert_eq!(*ns.get::<String>("list").await.unwrap().unwrap(), "mine");
    assert_eq!(region.stats().backend_errors, 0);
}

/// Bytes the server has sent to all its clients so far.
async fn bytes_sent(raw: &mut Raw) -> u64 {
    let info: String = raw.query(redis::cmd("INFO").arg("stats")).await;
    info.lines()
        .find_map(|line| line.strip_prefix("total_net_output_bytes:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("INFO stats has total_net_output_bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_value_is_never_read_whole() {
    // A server of our own: its byte counter sees no other test's traffic.
    let server = PrivateServer::start(&[]);
    let prefix = unique_prefix("never-whole");
    let cache = manager(&crate::common::toml_for(
        "ext:redis",
        &server.url(),
        &prefix,
        "max_entry_bytes = 65536",
    ));
    let ns = cache.namespace("n");
    let mut raw = Raw::connect_url(Kind::Single, &server.url()).await;
    let huge = 8 << 20;
    raw.set(&entry_key(&prefix, "n", "huge"), &vec![b'x'; huge])
        .await;

    let before = bytes_sent(&mut raw).await;
    assert!(ns.get::<String>("huge").await.unwrap().is_none());
    let sent = bytes_sent(&mut raw).await - before;
    assert!(
        sent < 1 << 20,
        "a lookup of an {huge}-byte value made the server send {sent} bytes"
    );
    assert_eq!(cache.default_region().stats().decode_errors, 1);
}

async fn a_lock_without_ttl_is_given_lock_timeout(kind: Kind) {
    let prefix = unique_prefix("no-ttl");
    // Were the lock left as found, a caller would wait all of wait_timeout.
    let cache = manager(&toml(
        kind,
        &prefix,
        "lock_timeout = \"1s\"\nwait_timeout = \"60s\"",
    ));
    let mut raw = Raw::connect(kind).await;
    let lock = lock_key(&prefix, "n", "k");
    raw.set(&lock, b"left by something else").await;
    assert_eq!(raw.pttl(&lock).await, -1);

    let runs = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let value = tokio::time::timeout(
        Duration::from_secs(20),
        cache.namespace("n").get_or_create("k", counted(&runs, "v")),
    )
    .await
    .expect("a lock without TTL held the call up")
    .unwrap();
    assert_eq!(*value, "v");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let took = started.elapsed();
    // lock_timeout, plus polling and a busy machine's slack.
    assert!(took < Duration::from_secs(6), "took {took:?}");
    // Taken over after its new lifetime, and released by its new owner.
    let exists: i64 = raw.query(redis::cmd("EXISTS").arg(&lock)).await;
    assert_eq!(exists, 0);
    assert_eq!(cache.default_region().stats().backend_errors, 0);
}
