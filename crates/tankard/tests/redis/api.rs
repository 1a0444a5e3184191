//! The cache API on Redis and Redis Cluster: reads, writes, expiry, stale
//! values, invalidation seen by another manager (another process's view),
//! damaged entries and secrets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tankard::Invalidation;

use crate::common::{Kind, Raw, entry_key, manager, toml, unique_prefix};

both!(
    put_get_remove_contains_clear,
    get_or_create_runs_the_creator_once_then_hits,
    server_ttl_is_expire_plus_stale,
    stale_values_survive_expiry,
    invalidation_is_seen_by_another_manager,
    damaged_or_foreign_bytes_are_a_counted_miss,
    a_wrong_secret_is_a_miss,
    long_keys_are_hashed_in_their_namespace_slot,
    an_evicted_generation_never_brings_back_cleared_entries,
);

async fn put_get_remove_contains_clear(kind: Kind) {
    let prefix = unique_prefix("basic");
    let cache = manager(&toml(kind, &prefix, ""));
    let ns = cache.namespace("views::hello");

    assert!(ns.get::<String>("k").await.unwrap().is_none());
    ns.put("k", "v1".to_string()).await.unwrap();
    assert_eq!(*ns.get::<String>("k").await.unwrap().unwrap(), "v1");
    assert!(ns.contains::<String>("k").await.unwrap());

    // The entry really is on the server, under the documented key.
    let mut raw = Raw::connect(kind).await;
    assert!(
        raw.get(&entry_key(&prefix, "views::hello", "k"))
            .await
            .is_some()
    );

    assert!(ns.remove("k").await.unwrap());
    assert!(!ns.remove("k").await.unwrap());
    assert!(!ns.contains::<String>("k").await.unwrap());

    ns.put("a", 1u32).await.unwrap();
    ns.put("b", 2u32).await.unwrap();
    let other = cache.namespace("views::other");
    other.put("a", 3u32).await.unwrap();
    ns.clear().await.unwrap();
    assert!(!ns.contains::<u32>("a").await.unwrap());
    assert!(!ns.contains::<u32>("b").await.unwrap());
    // Clearing one namespace leaves the others alone.
    assert_eq!(*other.get::<u32>("a").await.unwrap().unwrap(), 3);
    // And the namespace works again after a clear.
    ns.put("a", 4u32).await.unwrap();
    assert_eq!(*ns.get::<u32>("a").await.unwrap().unwrap(), 4);
    assert_eq!(cache.default_region().stats().backend_errors, 0);
    assert_eq!(
        cache.default_region().backend_name(),
        match kind {
            Kind::Single => "redis",
            Kind::Cluster => "redis-cluster",
        }
    );
}

async fn get_or_create_runs_the_creator_once_then_hits(kind: Kind) {
    let cache = manager(&toml(kind, &unique_prefix("goc"), ""));
    let ns = cache.namespace("n");
    let runs = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let runs = runs.clone();
        let value = ns
            .get_or_create("k", || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                vec![1u8, 2, 3]
            })
            .await
            .unwrap();
        assert_eq!(*value, [1, 2, 3]);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let stats = cache.default_region().stats();
    assert_eq!((stats.misses, stats.hits, stats.creator_calls), (1, 2, 1));

    // A second manager (another process's view) hits without creating.
    let again = manager(&toml(
        kind,
        cache.default_region().options().prefix.as_str(),
        "",
    ));
    let value = again
        .namespace("n")
        .get_or_create("k", || async { vec![9u8] })
        .await
        .unwrap();
    assert_eq!(*value, [1, 2, 3]);
    assert_eq!(again.default_region().stats().creator_calls, 0);
}

async fn server_ttl_is_expire_plus_stale(kind: Kind) {
    let prefix = unique_prefix("ttl");
    let cache = manager(&toml(kind, &prefix, "stale = 5"));
    let ns = cache
        .namespace("n")
        .expire(std::time::Duration::from_secs(10));
    ns.put("k", 1u8).await.unwrap();
    let forever = cache.namespace("n").expire(None);
    forever.put("forever", 1u8).await.unwrap();

    let mut raw = Raw::connect(kind).await;
    let pttl = raw.pttl(&entry_key(&prefix, "n", "k")).await;
    assert!(
        (14_000..=15_000).contains(&pttl),
        "PTTL {pttl} is not 10 s + 5 s"
    );
    // No expiry: no server TTL either.
    assert_eq!(raw.pttl(&entry_key(&prefix, "n", "forever")).await, -1);
}

async fn stale_values_survive_expiry(kind: Kind) {
    let prefix = unique_prefix("stale");
    let cache = manager(&toml(kind, &prefix, "stale = 60"));
    // Expired the moment it is written: only the stale grace keeps it.
    let expired = cache.namespace("n").expire(Duration::ZERO);
    expired.put("k", "old".to_string()).await.unwrap();
    let ns = cache.namespace("n");
    let (value, fresh) = ns.peek::<String>("k").await.unwrap().unwrap();
    assert_eq!((value.as_str(), fresh), ("old", false));
    assert!(!ns.contains::<String>("k").await.unwrap());

    // A real expiry: fresh for 1 s, then stale, and still on the server.
    let short = cache
        .namespace("n")
        .expire(std::time::Duration::from_secs(1));
    short.put("short", "v".to_string()).await.unwrap();
    assert!(short.contains::<String>("short").await.unwrap());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (value, fresh) = ns.peek::<String>("short").await.unwrap().unwrap();
    assert_eq!((value.as_str(), fresh), ("v", false));

    // The one caller that finds it stale regenerates it.
    let value = ns
        .get_or_create("k", || async { "new".to_string() })
        .await
        .unwrap();
    assert_eq!(*value, "new");
    assert!(ns.contains::<String>("k").await.unwrap());
}

async fn invalidation_is_seen_by_another_manager(kind: Kind) {
    let config = toml(kind, &unique_prefix("inval"), "stale = 60");
    let (one, two) = (manager(&config), manager(&config));
    let (ns1, ns2) = (one.namespace("n"), two.namespace("n"));

    ns1.put("k", "v1".to_string()).await.unwrap();
    assert_eq!(*ns2.get::<String>("k").await.unwrap().unwrap(), "v1");

    // Soft: still readable, but stale, in the other manager.
    tokio::time::sleep(Duration::from_millis(2)).await;
    two.default_region()
        .invalidate(Invalidation::Soft)
        .await
        .unwrap();
    let (value, fresh) = ns1.peek::<String>("k").await.unwrap().unwrap();
    assert_eq!((value.as_str(), fresh), ("v1", false));
    let value = ns1
        .get_or_create("k", || async { "v2".to_string() })
        .await
        .unwrap();
    assert_eq!(*value, "v2");
    assert_eq!(*ns2.get::<String>("k").await.unwrap().unwrap(), "v2");

    // Hard: gone at once for everyone.
    one.default_region()
        .invalidate(Invalidation::Hard)
        .await
        .unwrap();
    assert!(ns2.peek::<String>("k").await.unwrap().is_none());
    assert!(ns1.peek::<String>("k").await.unwrap().is_none());

    // A namespace clear in one manager is seen by the other.
    ns2.put("c", 1u8).await.unwrap();
    assert!(ns1.contains::<u8>("c").await.unwrap());
    ns1.clear().await.unwrap();
    assert!(!ns2.contains::<u8>("c").await.unwrap());
}

async fn damaged_or_foreign_bytes_are_a_counted_miss(kind: Kind) {
    let prefix = unique_prefix("junk");
    let cache = manager(&toml(kind, &prefix, ""));
    let ns = cache.namespace("n");
    let mut raw = Raw::connect(kind).await;

    // Someone else's value under our key.
    raw.set(&entry_key(&prefix, "n", "foreign"), b"not a tankard entry")
        .await;
    assert!(ns.get::<String>("foreign").await.unwrap().is_none());
    assert_eq!(cache.default_region().stats().decode_errors, 1);

    // One of ours, truncated.
    ns.put("cut", "value".to_string()).await.unwrap();
    let key = entry_key(&prefix, "n", "cut");
    let bytes = raw.get(&key).await.unwrap();
    raw.set(&key, &bytes[..bytes.len() - 1]).await;
    assert!(ns.get::<String>("cut").await.unwrap().is_none());
    assert_eq!(cache.default_region().stats().decode_errors, 2);

    // A miss like any other: the creator runs and replaces it.
    let value = ns
        .get_or_create("foreign", || async { "mine".to_string() })
        .await
        .unwrap();
    assert_eq!(*value, "mine");
    assert_eq!(*ns.get::<String>("foreign").await.unwrap().unwrap(), "mine");
    assert_eq!(cache.default_region().stats().backend_errors, 0);
}

async fn a_wrong_secret_is_a_miss(kind: Kind) {
    let prefix = unique_prefix("secret");
    let writer = manager(&toml(kind, &prefix, "secret = \"one\""));
    let reader = manager(&toml(kind, &prefix, "secret = \"two\""));
    let same = manager(&toml(kind, &prefix, "secret = \"one\""));
    writer.namespace("n").put("k", 7u64).await.unwrap();

    assert!(
        reader
            .namespace("n")
            .get::<u64>("k")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(reader.default_region().stats().decode_errors, 1);
    assert_eq!(
        *same.namespace("n").get::<u64>("k").await.unwrap().unwrap(),
        7
    );
}

async fn long_keys_are_hashed_in_their_namespace_slot(kind: Kind) {
    let prefix = unique_prefix("long");
    let cache = manager(&toml(kind, &prefix, ""));
    let ns = cache.namespace("n");
    let long_a = "a".repeat(400);
    let long_b = format!("{}b", "a".repeat(399));
    ns.put(&long_a, 1u8).await.unwrap();
    ns.put(&long_b, 2u8).await.unwrap();
    assert_eq!(*ns.get::<u8>(&long_a).await.unwrap().unwrap(), 1);
    assert_eq!(*ns.get::<u8>(&long_b).await.unwrap().unwrap(), 2);

    // Stored under `{T}!h#<blake3 of the whole key>`, in the namespace's slot.
    let mut raw = Raw::connect(kind).await;
    let tag = format!("{{{prefix}default:n}}");
    let mut stored = Vec::new();
    for key in [&long_a, &long_b] {
        let whole = format!("{tag}#{key}");
        let hashed = format!("{tag}!h#{}", blake3::hash(whole.as_bytes()).to_hex());
        stored.push(
            raw.get(&hashed)
                .await
                .unwrap_or_else(|| panic!("no {hashed}")),
        );
    }
    assert_ne!(stored[0], stored[1]);
}

/// If the server evicts a generation counter, the next `clear` must not
/// land on a value that entries from before an earlier clear carry (a
/// plain `INCR` would restart at 1 and bring them back).
async fn an_evicted_generation_never_brings_back_cleared_entries(kind: Kind) {
    let prefix = unique_prefix("evicted-gen");
    let cache = manager(&toml(kind, &prefix, ""));
    let ns = cache.namespace("n");
    let mut raw = Raw::connect(kind).await;
    let generation = format!("{{{prefix}default:n}}!gen");

    ns.clear().await.unwrap();
    ns.put("k", "before the second clear".to_string())
        .await
        .unwrap();
    ns.clear().await.unwrap();
    assert!(ns.get::<String>("k").await.unwrap().is_none());
    let before: u64 = raw.query(redis::cmd("GET").arg(&generation)).await;
    // Evicted, as a server under memory pressure may do. No pause: the
    // counter restarts in microseconds, past where it stood a moment ago.
    raw.query::<i64>(redis::cmd("DEL").arg(&generation)).await;
    ns.clear().await.unwrap();
    assert!(
        ns.get::<String>("k").await.unwrap().is_none(),
        "an entry cleared before the eviction came back"
    );
    let restarted: u64 = raw.query(redis::cmd("GET").arg(&generation)).await;
    assert!(
        restarted > before && restarted > 1_600_000_000_000_000,
        "restarted at {restarted} (was {before}), not at the current time in µs"
    );
}
