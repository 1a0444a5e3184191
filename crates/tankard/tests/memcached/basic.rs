//! One process against the shared servers: the cache operations, stale
//! serving, invalidation seen by a second manager, damaged entries and
//! counters, an evicted counter, keys memcached refuses, TTLs, and the
//! seed's configuration.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tankard::{CacheManager, Clock, Invalidation};

use crate::support::{Raw, config, entry_key, find, lock_key, servers, unique_prefix, url};

fn text(value: Option<Arc<String>>) -> Option<String> {
    value.map(|v| (*v).clone())
}

/// The remaining server lifetime of `key`, found on whichever server holds it.
fn remaining_secs(servers: &[String], key: &str) -> i64 {
    let holders = find(servers, key);
    assert_eq!(holders.len(), 1, "{key} should be on exactly one server");
    Raw::connect(&holders[0].0)
        .unwrap()
        .remaining_secs(key)
        .expect("item exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_put_remove_contains_clear_and_nothing_is_flushed() {
    let servers = servers();
    let prefix = unique_prefix("ops");
    // Data of someone else on the same servers: nothing we do may touch it.
    let bystander = format!("{prefix}bystander");
    for server in &servers {
        Raw::connect(server)
            .unwrap()
            .set(&bystander, b"still here", 300);
    }
    let cache = CacheManager::new(config(&url(), &prefix, &[("cache.expire", "300")])).unwrap();
    assert_eq!(cache.default_region().backend_name(), "memcached");
    let (a, b) = (cache.namespace("a"), cache.namespace("b"));

    assert_eq!(text(a.get("k").await.unwrap()), None);
    a.put("k", "v1".to_string()).await.unwrap();
    assert_eq!(text(a.get("k").await.unwrap()).as_deref(), Some("v1"));
    assert!(a.contains::<String>("k").await.unwrap());
    assert_eq!(find(&servers, &entry_key(&prefix, "a", "k")).len(), 1);
    assert!(a.remove("k").await.unwrap());
    assert!(!a.remove("k").await.unwrap());
    assert!(!a.contains::<String>("k").await.unwrap());

    a.put("k1", "a1".to_string()).await.unwrap();
    a.put("k2", "a2".to_string()).await.unwrap();
    b.put("k1", "b1".to_string()).await.unwrap();
    a.clear().await.unwrap();
    assert!(!a.contains::<String>("k1").await.unwrap());
    assert!(!a.contains::<String>("k2").await.unwrap());
    assert_eq!(text(b.get("k1").await.unwrap()).as_deref(), Some("b1"));
    // Writes after a clear are visible; a second clear bumps again.
    a.put("k1", "after".to_string()).await.unwrap();
    assert_eq!(text(a.get("k1").await.unwrap()).as_deref(), Some("after"));
    a.clear().await.unwrap();
    assert!(!a.contains::<String>("k1").await.unwrap());

    let runs = AtomicUsize::new(0);
    for _ in 0..3 {
        let value = a
            .get_or_create("made", || async {
                runs.fetch_add(1, Ordering::SeqCst);
                "made once".to_string()
            })
            .await
            .unwrap();
        assert_eq!(*value, "made once");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    cache
        .default_region()
        .invalidate(Invalidation::Hard)
        .await
        .unwrap();
    assert!(!b.contains::<String>("k1").await.unwrap());
    assert!(!a.contains::<String>("made").await.unwrap());

    for server in &servers {
        assert_eq!(
            Raw::connect(server).unwrap().get(&bystander).as_deref(),
            Some(&b"still here"[..]),
            "clear or invalidation touched foreign data on {server}"
        );
    }
    let stats = cache.default_region().stats();
    assert_eq!(stats.backend_errors, 0);
    assert_eq!(stats.decode_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_value_is_served_after_expiry_while_one_caller_regenerates() {
    let servers = servers();
    let prefix = unique_prefix("stale");
    let clock = Clock::manual(Clock::system().now_ms());
    let cache = CacheManager::with_clock(
        config(
            &url(),
            &prefix,
            &[("cache.expire", "10"), ("cache.stale", "60")],
        ),
        clock.clone(),
    )
    .unwrap();
    let ns = cache.namespace("n");
    ns.put("k", "old".to_string()).await.unwrap();

    // The server keeps it for expire + stale (70 s, +1 for memcached's tick),
    // not just expire as Beaker does.
    let remaining = remaining_secs(&servers, &entry_key(&prefix, "n", "k"));
    assert!((65..=71).contains(&remaining), "server TTL {remaining}");

    clock.advance(Duration::from_secs(11));
    let peeked = ns.peek::<String>("k").await.unwrap().unwrap();
    assert_eq!((peeked.0.as_str(), peeked.1), ("old", false));

    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let leader = tokio::spawn({
        let ns = ns.clone();
        async move {
            ns.get_or_create("k", || async move {
                let _ = wait.await;
                "new".to_string()
            })
            .await
        }
    });
    // The leader holds the distributed lock while it regenerates.
    let lock = lock_key(&prefix, "n", "k");
    for _ in 0..500 {
        if !find(&servers, &lock).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(find(&servers, &lock).len(), 1, "no creation lock taken");

    let served = ns
        .get_or_create::<String, _, _>("k", || async { panic!("a second creator ran") })
        .await
        .unwrap();
    assert_eq!(*served, "old");
    go.send(()).unwrap();
    assert_eq!(*leader.await.unwrap().unwrap(), "new");
    assert_eq!(text(ns.get("k").await.unwrap()).as_deref(), Some("new"));
    assert!(find(&servers, &lock).is_empty(), "lock not released");
    let stats = cache.default_region().stats();
    assert_eq!((stats.stale_served, stats.creator_calls), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_and_hard_invalidation_and_clear_are_seen_by_a_second_manager() {
    servers();
    let prefix = unique_prefix("inval");
    let options = [("cache.expire", "300"), ("cache.stale", "300")];
    let first = CacheManager::new(config(&url(), &prefix, &options)).unwrap();
    let second = CacheManager::new(config(&url(), &prefix, &options)).unwrap();
    let (n1, n2) = (first.namespace("n"), second.namespace("n"));

    n1.put("k", "v1".to_string()).await.unwrap();
    let seen = n2.peek::<String>("k").await.unwrap().unwrap();
    assert_eq!((seen.0.as_str(), seen.1), ("v1", true));

    first
        .default_region()
        .invalidate(Invalidation::Soft)
        .await
        .unwrap();
    let seen = n2.peek::<String>("k").await.unwrap().unwrap();
    assert_eq!(
        (seen.0.as_str(), seen.1),
        ("v1", false),
        "soft invalidation not seen"
    );
    let regenerated = n2
        .get_or_create("k", || async { "v2".to_string() })
        .await
        .unwrap();
    assert_eq!(*regenerated, "v2");
    let seen = n1.peek::<String>("k").await.unwrap().unwrap();
    assert_eq!((seen.0.as_str(), seen.1), ("v2", true));

    first
        .default_region()
        .invalidate(Invalidation::Hard)
        .await
        .unwrap();
    assert!(
        n2.peek::<String>("k").await.unwrap().is_none(),
        "hard invalidation not seen"
    );

    n2.put("k", "v3".to_string()).await.unwrap();
    assert!(n1.contains::<String>("k").await.unwrap());
    n1.clear().await.unwrap();
    assert!(!n2.contains::<String>("k").await.unwrap(), "clear not seen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_under_a_key_is_a_counted_miss() {
    let servers = servers();
    let prefix = unique_prefix("junk");
    let cache = CacheManager::new(config(&url(), &prefix, &[("cache.expire", "300")])).unwrap();
    let ns = cache.namespace("n");
    let key = entry_key(&prefix, "n", "k");
    // On every server, so whichever the backend picks holds junk.
    for server in &servers {
        Raw::connect(server)
            .unwrap()
            .set(&key, b"\x00\xffnot a tankard entry", 300);
    }
    assert!(ns.get::<String>("k").await.unwrap().is_none());
    assert!(cache.default_region().stats().decode_errors >= 1);
    let value = ns
        .get_or_create("k", || async { "fresh".to_string() })
        .await
        .unwrap();
    assert_eq!(*value, "fresh");
    assert_eq!(text(ns.get("k").await.unwrap()).as_deref(), Some("fresh"));

    // A counter with junk in it reads as 0 and is restarted by the next clear.
    let counter = format!("{prefix}default:n!gen");
    for server in &servers {
        Raw::connect(server).unwrap().set(&counter, b"junk", 300);
    }
    ns.clear().await.unwrap();
    assert!(!ns.contains::<String>("k").await.unwrap());
    assert_eq!(cache.default_region().stats().backend_errors, 0);
}

/// memcached evicts what it likes, generation counters included: the next
/// `clear` must start the counter past every value it held, or the
/// entries of an earlier clear come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_generation_never_brings_back_cleared_entries() {
    let servers = servers();
    let prefix = unique_prefix("evicted-gen");
    let cache = CacheManager::new(config(&url(), &prefix, &[("cache.expire", "300")])).unwrap();
    let ns = cache.namespace("n");
    let counter = format!("{prefix}default:n!gen");
    let read_counter = || -> u64 {
        let held = find(&servers, &counter);
        assert_eq!(held.len(), 1, "the counter lives on one server: {held:?}");
        String::from_utf8_lossy(&held[0].1).trim().parse().unwrap()
    };

    ns.clear().await.unwrap();
    ns.put("k", "before the second clear".to_string())
        .await
        .unwrap();
    ns.clear().await.unwrap();
    assert_eq!(text(ns.get("k").await.unwrap()), None);
    let before = read_counter();
    for server in &servers {
        Raw::connect(server).unwrap().delete(&counter);
    }
    ns.clear().await.unwrap();
    assert_eq!(
        text(ns.get("k").await.unwrap()),
        None,
        "an entry cleared before the eviction came back"
    );
    let restarted = read_counter();
    assert!(
        restarted > before && restarted > 1_600_000_000_000_000,
        "restarted at {restarted} (was {before}), not at the current time in µs"
    );
    assert_eq!(cache.default_region().stats().backend_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_memcached_refuses_still_work_and_stay_distinct() {
    servers();
    let prefix = unique_prefix("keys");
    let cache = CacheManager::new(config(&url(), &prefix, &[("cache.expire", "300")])).unwrap();
    let long = "x".repeat(400);
    let long_spaced = "a b".repeat(100);
    let keys = [
        "with space",
        "with_space",
        "tab\there",
        "new\nline\r\n",
        "\u{e9}t\u{e9} \u{2713}",
        long.as_str(),
        long_spaced.as_str(),
        "",
    ];
    for ns_name in ["plain", "name space\twith\ncontrols"] {
        let ns = cache.namespace(ns_name);
        for (i, key) in keys.iter().enumerate() {
            ns.put(key, format!("{ns_name}/{i}")).await.unwrap();
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(
                text(ns.get(key).await.unwrap()),
                Some(format!("{ns_name}/{i}")),
                "key {key:?} in namespace {ns_name:?}"
            );
        }
        let runs = AtomicUsize::new(0);
        for _ in 0..2 {
            ns.get_or_create(&format!("{long} made"), || async {
                runs.fetch_add(1, Ordering::SeqCst);
                1u32
            })
            .await
            .unwrap();
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
    let stats = cache.default_region().stats();
    assert_eq!((stats.backend_errors, stats.decode_errors), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_past_30_days_and_tiny_ttls_are_stored_right() {
    let servers = servers();
    let prefix = unique_prefix("ttl");
    const DAY: i64 = 86_400;
    // 40 days: memcached would read the plain number as a 1970 timestamp
    // and drop the item at once.
    let cache = CacheManager::new(config(&url(), &prefix, &[("cache.expire", "3456000")])).unwrap();
    let ns = cache.namespace("n");
    ns.put("long", "kept".to_string()).await.unwrap();
    // memcached turns an absolute time into its own clock through a
    // wall-clock reading taken at its start, so allow it some drift.
    const DRIFT: i64 = 120;
    let remaining = remaining_secs(&servers, &entry_key(&prefix, "n", "long"));
    assert!(
        (40 * DAY - DRIFT..=40 * DAY + DRIFT).contains(&remaining),
        "server TTL {remaining}"
    );
    assert_eq!(text(ns.get("long").await.unwrap()).as_deref(), Some("kept"));

    let longer = ns
        .clone()
        .expire(std::time::Duration::from_secs(45 * DAY as u64));
    longer.put("longer", "kept".to_string()).await.unwrap();
    let remaining = remaining_secs(&servers, &entry_key(&prefix, "n", "longer"));
    assert!(
        (45 * DAY - DRIFT..=45 * DAY + DRIFT).contains(&remaining),
        "server TTL {remaining}"
    );

    // Expiring at once with no stale grace still gets a real TTL, never 0
    // (which memcached reads as "forever").
    let instant = ns.clone().expire(std::time::Duration::from_secs(0));
    instant.put("tiny", "x".to_string()).await.unwrap();
    let remaining = remaining_secs(&servers, &entry_key(&prefix, "n", "tiny"));
    assert!((1..=2).contains(&remaining), "server TTL {remaining}");

    // No expiry at all: no server TTL either.
    let forever = ns.clone().expire(None);
    forever.put("forever", "x".to_string()).await.unwrap();
    let key = entry_key(&prefix, "n", "forever");
    assert_eq!(remaining_secs(&servers, &key), -1);
    for (server, _) in find(&servers, &key) {
        Raw::connect(&server).unwrap().delete(&key);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_second_configuration_runs_against_local_memcached() {
    let servers = servers();
    let first = servers[0].clone();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let lock = dir.path().join("lock");
    let seed = |url: &str| {
        tankard::Config::from_flat([
            ("cache.type", "file"),
            ("cache.data_dir", data.to_str().unwrap()),
            ("cache.lock_dir", lock.to_str().unwrap()),
            ("cache.regions", "short_term, long_term"),
            ("cache.short_term.type", "ext:memcached"),
            ("cache.short_term.url", url),
            ("cache.short_term.expire", "1200"),
            ("cache.long_term.type", "file"),
            ("cache.long_term.expire", "86400"),
        ])
    };
    let err = seed("127.0.0.1.11211").unwrap_err();
    assert!(err.is_config());
    assert!(
        err.to_string().contains("is not a memcached address"),
        "{err}"
    );

    let cache = CacheManager::new(seed(&first).unwrap()).unwrap();
    let short = cache.region("short_term").unwrap();
    assert_eq!(short.backend_name(), "memcached");
    assert_eq!(cache.region("long_term").unwrap().backend_name(), "file");
    // The seed's keys carry no prefix: a namespace of this run's own keeps
    // runs apart on the shared server.
    let namespace = format!("views::goodbye::{}", unique_prefix("seed"));
    let goodbye = short.namespace(&namespace);
    let runs = AtomicUsize::new(0);
    let mut pages = Vec::new();
    for _ in 0..2 {
        let page = goodbye
            .get_or_create("goodbye", || async {
                runs.fetch_add(1, Ordering::SeqCst);
                format!("Bye world, its {:?}", std::time::SystemTime::now())
            })
            .await
            .unwrap();
        pages.push(page);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(pages[0], pages[1]);
    let key = format!("short_term:{namespace}#goodbye");
    let mut raw = Raw::connect(&first).unwrap();
    assert!(raw.get(&key).is_some(), "entry not on {first}");
    let remaining = raw.remaining_secs(&key).unwrap();
    assert!((1195..=1201).contains(&remaining), "server TTL {remaining}");
    raw.delete(&key);

    let hello = cache.region("long_term").unwrap().namespace("views::hello");
    let page = hello
        .get_or_create("hello", || async { "Hello world".to_string() })
        .await
        .unwrap();
    assert_eq!(*page, "Hello world");
}
