//! Outages, on memcached processes each test starts itself (the shared
//! servers are never stopped): a node killed, every node killed and
//! restarted, a node frozen.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tankard::CacheManager;

use crate::support::{OwnServers, Raw, config, entry_key, unique_prefix};

fn manager(own: &OwnServers, prefix: &str, timeout: &str) -> CacheManager {
    CacheManager::new(config(
        &own.url(),
        prefix,
        &[("cache.expire", "300"), ("cache.timeout", timeout)],
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_keys_move_to_the_others_and_calls_keep_succeeding() {
    let mut own = OwnServers::start(3);
    let prefix = unique_prefix("nodedown");
    let cache = manager(&own, &prefix, "1s");
    let ns = cache.namespace("n");
    let runs = AtomicUsize::new(0);
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    let pass = |round: &'static str| {
        let (ns, runs, keys) = (&ns, &runs, &keys);
        async move {
            for key in keys {
                let value = ns
                    .get_or_create(key, || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        format!("{key}@{round}")
                    })
                    .await
                    .expect("call failed");
                assert!(value.starts_with(&format!("{key}@")));
            }
        }
    };
    pass("first").await;
    pass("hit").await;
    assert_eq!(runs.load(Ordering::SeqCst), 30);

    let victim = own.addr(0);
    let on_victim = keys
        .iter()
        .filter(|k| {
            Raw::connect(&victim)
                .unwrap()
                .get(&entry_key(&prefix, "n", k))
                .is_some()
        })
        .count();
    assert!(on_victim > 0, "no key landed on {victim}");
    own.kill(0);

    pass("after-kill").await;
    // Only the dead node's keys were made again, on the remaining nodes...
    assert_eq!(runs.load(Ordering::SeqCst), 30 + on_victim);
    let hits_before = cache.default_region().stats().hits;
    pass("moved").await;
    // ...where they are hits from now on.
    assert_eq!(runs.load(Ordering::SeqCst), 30 + on_victim);
    assert_eq!(cache.default_region().stats().hits - hits_before, 30);
    assert_eq!(cache.default_region().stats().backend_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_down_bypasses_and_the_cache_returns_when_they_do() {
    let mut own = OwnServers::start(2);
    let prefix = unique_prefix("alldown");
    let cache = manager(&own, &prefix, "500ms");
    let region = cache.default_region();
    let ns = cache.namespace("n");
    let runs = AtomicUsize::new(0);
    let call = || {
        ns.get_or_create("k", || async {
            let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
            format!("run-{n}")
        })
    };
    assert_eq!(*call().await.unwrap(), "run-1");
    assert_eq!(*call().await.unwrap(), "run-1");

    own.kill(0);
    own.kill(1);
    for n in 2..=6 {
        // With bypass, each call returns its own creator's value.
        assert_eq!(*call().await.unwrap(), format!("run-{n}"));
    }
    let errors = region.stats().backend_errors;
    assert!(errors >= 5, "backend errors not counted: {errors}");

    own.restart(0);
    own.restart(1);
    // Same manager: once the failed nodes' back-off ends, values are stored
    // and served again.
    let started = Instant::now();
    loop {
        let before = runs.load(Ordering::SeqCst);
        call().await.unwrap();
        let hits = region.stats().hits;
        call().await.unwrap();
        if region.stats().hits > hits && runs.load(Ordering::SeqCst) == before + 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the cache was not used again after the servers returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_cannot_hang_a_call() {
    let own = OwnServers::start(2);
    let prefix = unique_prefix("frozen");
    let cache = manager(&own, &prefix, "200ms");
    let ns = cache.namespace("n");
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    for key in &keys {
        ns.put(key, format!("cached-{key}")).await.unwrap();
    }
    let frozen = own.addr(0);
    assert!(
        keys.iter().any(|k| Raw::connect(&frozen)
            .unwrap()
            .get(&entry_key(&prefix, "n", k))
            .is_some()),
        "no key landed on {frozen}"
    );
    own.freeze(0); // SIGSTOP: the kernel still accepts, nobody answers
    for key in &keys {
        let value = tokio::time::timeout(
            Duration::from_secs(10),
            ns.get_or_create(key, || async { format!("made-{key}") }),
        )
        .await
        .expect("a call hung on the frozen node")
        .unwrap();
        assert!(value.ends_with(key.as_str()), "{value}");
    }
    assert!(cache.default_region().stats().backend_errors >= 1);
    own.thaw(0);
}
