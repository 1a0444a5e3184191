//! What others leave on the servers (issue 11): an entry larger than
//! `max_entry_bytes`, garbage in every generation counter, a lock key
//! without expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tankard::{CacheManager, Invalidation};

use crate::support::{
    OwnServers, Raw, config, entry_key, find, lock_key, servers, unique_prefix, url,
};

fn text(value: Option<Arc<String>>) -> Option<String> {
    value.map(|v| (*v).clone())
}

/// An entry over `max_entry_bytes` (here a real 8 MiB entry, written by a
/// process with a larger limit, and 8 MiB of foreign bytes) is a miss
/// counted as a decode error, found from the `VALUE` header, and skipped
/// on the same connection, which keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_over_max_entry_bytes_is_a_counted_miss_and_the_connection_stays() {
    // memcached refuses items over 1 MiB unless told otherwise.
    let own = OwnServers::start_with(1, &["-I", "16m", "-m", "64"]);
    let addr = own.addr(0);
    let prefix = unique_prefix("oversized");
    let writer =
        CacheManager::new(config(&own.url(), &prefix, &[("cache.expire", "300")])).unwrap();
    writer
        .namespace("n")
        .put("k", "x".repeat(8 << 20))
        .await
        .unwrap();
    Raw::connect(&addr)
        .unwrap()
        .set(&entry_key(&prefix, "n", "raw"), &vec![0xab; 8 << 20], 300);

    let reader = CacheManager::new(config(
        &own.url(),
        &prefix,
        &[
            ("cache.expire", "300"),
            ("cache.max_entry_bytes", "1048576"),
        ],
    ))
    .unwrap();
    let region = reader.default_region();
    let ns = reader.namespace("n");
    // One connection in the pool; from here on every call can reuse it.
    assert_eq!(text(ns.get("absent").await.unwrap()), None);
    let connections = || Raw::connect(&addr).unwrap().stat("total_connections");
    let before = connections();

    let found = ns.get::<String>("k").await.unwrap();
    assert!(
        found.is_none(),
        "an entry over max_entry_bytes was read ({} bytes)",
        found.map_or(0, |v| v.len())
    );
    assert_eq!(region.stats().decode_errors, 1);
    assert_eq!(text(ns.get("raw").await.unwrap()), None);
    assert_eq!(region.stats().decode_errors, 2);
    let made = ns
        .get_or_create("k", || async { "small".to_string() })
        .await
        .unwrap();
    assert_eq!(*made, "small");
    assert_eq!(text(ns.get("k").await.unwrap()).as_deref(), Some("small"));
    assert_eq!(region.stats().backend_errors, 0);
    // Only the connection asking was opened: the oversized values were
    // drained on the backend's pooled connection, which then served on.
    assert_eq!(connections() - before, 1, "the backend opened a connection");
}

/// Garbage at a generation counter (memcached's `incr` refuses it) reads
/// as a missing counter: caching goes on, and the next bump restarts the
/// counter past the wall clock in µs, as after an eviction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_generation_counters_keeps_caching_on_and_the_next_bump_repairs_it() {
    let servers = servers();
    let prefix = unique_prefix("garbage-gen");
    let cache = CacheManager::new(config(&url(), &prefix, &[("cache.expire", "300")])).unwrap();
    let region = cache.default_region();
    let ns = cache.namespace("n");
    // The counters all live on one server: find it through one of them.
    ns.clear().await.unwrap();
    let namespace_counter = format!("{prefix}default:n!gen");
    let held = find(&servers, &namespace_counter);
    assert_eq!(held.len(), 1, "{held:?}");
    let server = &held[0].0;
    let counters = [
        namespace_counter,
        format!("{prefix}default!gen"),
        format!("{prefix}default!soft"),
    ];
    let read = |key: &str| Raw::connect(server).unwrap().get(key);
    for counter in &counters {
        Raw::connect(server)
            .unwrap()
            .set(counter, b"not a number \xff", 0);
    }

    let runs = AtomicUsize::new(0);
    let call = |tag: &'static str| {
        let runs = &runs;
        ns.get_or_create("k", move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tag.to_string()
        })
    };
    for _ in 0..20 {
        assert_eq!(*call("first").await.unwrap(), "first");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "caching went off");
    assert_eq!(region.stats().backend_errors, 0);

    // Each kind of bump repairs its counter and does its job.
    for (counter, how) in counters.iter().zip(["clear", "hard", "soft"]) {
        let before = runs.load(Ordering::SeqCst);
        match how {
            "clear" => ns.clear().await.unwrap(),
            "hard" => region.invalidate(Invalidation::Hard).await.unwrap(),
            _ => region.invalidate(Invalidation::Soft).await.unwrap(),
        }
        let value = read(counter).expect("counter gone");
        let value: u64 = String::from_utf8_lossy(&value)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{how} left {counter} unrepaired: {value:?}"));
        // µs since the epoch for the generations; the soft time is in ms.
        assert!(value > 1_600_000_000_000, "{counter} = {value}");
        call(how).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), before + 1, "{how} not seen");
        assert_eq!(
            *call("unused").await.unwrap(),
            how,
            "not cached after {how}"
        );
    }
    assert_eq!(region.stats().backend_errors, 0);
}

/// A lock key with no expiry, left by anything but Tankard, is given the
/// lifetime of a Tankard lock by the first waiter that sees it: the miss
/// waits about `lock_timeout`, not `wait_timeout`, and nothing stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_without_expiry_left_by_someone_else_lapses_after_lock_timeout() {
    let servers = servers();
    let prefix = unique_prefix("immortal-lock");
    let wait_timeout = Duration::from_secs(20);
    let cache = CacheManager::new(config(
        &url(),
        &prefix,
        &[
            ("cache.expire", "300"),
            ("cache.lock_timeout", "1s"),
            ("cache.wait_timeout", "20s"),
        ],
    ))
    .unwrap();
    let ns = cache.namespace("n");
    let lock = lock_key(&prefix, "n", "k");
    // Which server holds the key's lock: look while the creator holds it.
    let server = ns
        .get_or_create("k", || async { find(&servers, &lock).pop().unwrap().0 })
        .await
        .unwrap();
    assert!(ns.remove("k").await.unwrap());
    Raw::connect(&server)
        .unwrap()
        .set(&lock, b"left-by-someone-else", 0);

    let started = Instant::now();
    let made = ns
        .get_or_create("k", || async { "made".to_string() })
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(*made, "made");
    assert!(
        find(&servers, &lock).is_empty(),
        "the lock without expiry is still there"
    );
    // lock_timeout, plus memcached's rounding up and one-second tick, plus
    // slack; far below wait_timeout.
    assert!(
        waited < wait_timeout / 2,
        "the miss waited {waited:?}: the foreign lock was not given a lifetime"
    );
    eprintln!(
        "memcached: a miss behind a lock without expiry waited {waited:?} (lock_timeout 1 s)"
    );
}

/// Issue 11: `timeout = 10000000000000000000` passed `tankard check`, then
/// the first call panicked ("overflow when adding duration to instant"),
/// and the lock wait did the same with `wait_timeout`. A config is either
/// refused at parse time or works: every call, and a wait on another
/// manager's lock, with each duration at that value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_too_long_for_the_clock_are_refused_or_work() {
    servers();
    let prefix = unique_prefix("huge-durations");
    let huge = "10000000000000000000";
    let mut managers = Vec::new();
    for _ in 0..2 {
        let mut pairs = vec![
            ("cache.type", "ext:memcached".to_owned()),
            ("cache.url", url()),
            ("cache.prefix", prefix.clone()),
            ("cache.expire", "300".to_owned()),
        ];
        for key in ["cache.timeout", "cache.wait_timeout", "cache.lock_timeout"] {
            pairs.push((key, huge.to_owned()));
        }
        match tankard::Config::from_flat(pairs) {
            Ok(config) => managers.push(CacheManager::new(config).unwrap()),
            Err(err) => {
                assert!(err.is_config(), "{err}");
                eprintln!("durations of {huge} s are refused at parse time now: {err}");
                return;
            }
        }
    }
    let (first, second) = (managers[0].namespace("n"), managers[1].namespace("n"));
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let creating = tokio::spawn({
        let first = first.clone();
        async move {
            first
                .get_or_create("k", || async move {
                    let _ = wait.await;
                    "made".to_string()
                })
                .await
        }
    });
    let lock = lock_key(&prefix, "n", "k");
    let servers = servers();
    let started = Instant::now();
    while find(&servers, &lock).is_empty() {
        assert!(!creating.is_finished(), "{:?}", creating.await);
        assert!(started.elapsed() < Duration::from_secs(10), "no lock taken");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The second manager waits on the first one's lock, with no end set.
    let waiting = tokio::spawn(async move {
        second
            .get_or_create("k", || async { "second".to_string() })
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    go.send(()).unwrap();
    let (made, waited) = tokio::time::timeout(Duration::from_secs(20), async {
        (creating.await.unwrap(), waiting.await.unwrap())
    })
    .await
    .expect("a call hung");
    assert_eq!(*made.unwrap(), "made");
    assert_eq!(*waited.unwrap(), "made");
    first.put("p", "v".to_string()).await.unwrap();
    assert_eq!(text(first.get("p").await.unwrap()).as_deref(), Some("v"));
    first.clear().await.unwrap();
    managers[0]
        .default_region()
        .invalidate(Invalidation::Soft)
        .await
        .unwrap();
    assert!(find(&servers, &lock).is_empty());
}
