//! The L1 tier on a store with no backplane (file): two managers sharing
//! one directory are two nodes. Time is a manual clock, so `l1_expire` is
//! walked through without sleeping.

use std::time::Duration;

use tankard::{CacheManager, Clock, Config, Invalidation};

use crate::conformance::START_MS;

/// Two nodes on one file store, each with an L1, on one manual clock.
struct Nodes {
    a: CacheManager,
    b: CacheManager,
    clock: Clock,
    dir: tempfile::TempDir,
}

fn nodes(extra: &[(&str, &str)]) -> Nodes {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data").display().to_string();
    let clock = Clock::manual(START_MS);
    let node = || {
        let mut pairs = vec![
            ("cache.type".to_owned(), "file".to_owned()),
            ("cache.data_dir".to_owned(), data.clone()),
            ("cache.expire".to_owned(), "60".to_owned()),
            ("cache.l1".to_owned(), "true".to_owned()),
            ("cache.l1_expire".to_owned(), "5".to_owned()),
        ];
        pairs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        CacheManager::with_clock(Config::from_flat(pairs).expect("config"), clock.clone())
            .expect("manager")
    };
    Nodes {
        a: node(),
        b: node(),
        clock,
        dir,
    }
}

async fn read(manager: &CacheManager, key: &str) -> Option<String> {
    let value = manager.namespace("n").get::<String>(key).await.unwrap();
    value.map(|v| (*v).clone())
}

/// Removes every entry file, so only an L1 copy can still answer.
fn wipe_store(nodes: &Nodes) {
    std::fs::remove_dir_all(nodes.dir.path().join("data")).unwrap();
}

#[tokio::test]
async fn an_l1_copy_answers_without_the_store_until_l1_expire() {
    let nodes = nodes(&[]);
    nodes
        .a
        .namespace("n")
        .put("k", "v1".to_string())
        .await
        .unwrap();
    assert_eq!(read(&nodes.b, "k").await.as_deref(), Some("v1"));
    wipe_store(&nodes);
    assert_eq!(
        read(&nodes.b, "k").await.as_deref(),
        Some("v1"),
        "the copy answers without reading the store"
    );
    assert_eq!(
        read(&nodes.a, "k").await.as_deref(),
        Some("v1"),
        "so does the writer's"
    );
    nodes.clock.advance(Duration::from_millis(4_999));
    assert_eq!(read(&nodes.b, "k").await.as_deref(), Some("v1"));
    nodes.clock.advance(Duration::from_millis(1));
    assert_eq!(
        read(&nodes.b, "k").await,
        None,
        "past l1_expire the store answers"
    );
}

#[tokio::test]
async fn without_a_backplane_another_nodes_write_shows_within_l1_expire() {
    let nodes = nodes(&[]);
    nodes
        .a
        .namespace("n")
        .put("k", "v1".to_string())
        .await
        .unwrap();
    assert_eq!(read(&nodes.b, "k").await.as_deref(), Some("v1"));
    nodes
        .a
        .namespace("n")
        .put("k", "v2".to_string())
        .await
        .unwrap();
    assert_eq!(
        read(&nodes.a, "k").await.as_deref(),
        Some("v2"),
        "own writes at once"
    );
    assert_eq!(
        read(&nodes.b, "k").await.as_deref(),
        Some("v1"),
        "no backplane: the copy stands"
    );
    nodes.clock.advance(Duration::from_secs(5));
    assert_eq!(read(&nodes.b, "k").await.as_deref(), Some("v2"));
}

#[tokio::test]
async fn own_removes_clears_and_invalidations_drop_own_copies_at_once() {
    let nodes = nodes(&[("cache.stale", "60")]);
    let ns = nodes.a.namespace("n");
    ns.put("k", "v".to_string()).await.unwrap();
    assert_eq!(read(&nodes.a, "k").await.as_deref(), Some("v"));
    assert!(ns.remove("k").await.unwrap());
    assert_eq!(read(&nodes.a, "k").await, None);

    ns.put("k", "v".to_string()).await.unwrap();
    ns.clear().await.unwrap();
    assert_eq!(read(&nodes.a, "k").await, None);

    ns.put("k", "v".to_string()).await.unwrap();
    nodes
        .a
        .default_region()
        .invalidate(Invalidation::Soft)
        .await
        .unwrap();
    assert_eq!(read(&nodes.a, "k").await, None, "soft: not fresh any more");
    assert_eq!(
        ns.peek::<String>("k")
            .await
            .unwrap()
            .map(|(v, fresh)| ((*v).clone(), fresh)),
        Some(("v".to_string(), false)),
        "the store still serves it stale"
    );

    ns.put("k", "v".to_string()).await.unwrap();
    nodes
        .a
        .default_region()
        .invalidate(Invalidation::Hard)
        .await
        .unwrap();
    assert_eq!(
        ns.peek::<String>("k")
            .await
            .unwrap()
            .map(|(v, _)| (*v).clone()),
        None
    );
}

#[tokio::test]
async fn an_l1_hit_counts_as_a_hit_and_a_regenerated_entry_replaces_the_copy() {
    let nodes = nodes(&[("cache.expire", "10"), ("cache.l1_expire", "60")]);
    let ns = nodes.b.namespace("n");
    let v = ns
        .get_or_create("k", || async { "v1".to_string() })
        .await
        .unwrap();
    assert_eq!(*v, "v1");
    wipe_store(&nodes);
    let v = ns
        .get_or_create::<String, _, _>("k", || async { unreachable!("an L1 hit") })
        .await
        .unwrap();
    assert_eq!(*v, "v1");
    let stats = nodes.b.default_region().stats();
    assert_eq!((stats.misses, stats.hits, stats.creator_calls), (1, 1, 1));
    // A copy never outlives the entry's own freshness, whatever l1_expire.
    nodes.clock.advance(Duration::from_secs(10));
    let v = ns
        .get_or_create("k", || async { "v2".to_string() })
        .await
        .unwrap();
    assert_eq!(*v, "v2");
    assert_eq!(read(&nodes.b, "k").await.as_deref(), Some("v2"));
}
