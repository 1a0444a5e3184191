//! The L1 tier over memcached, which carries no backplane: two managers
//! on one prefix are two nodes, and `l1_expire` alone bounds how long a
//! node serves its copy of what another node changed. Time is a manual
//! clock shared by both nodes, so the bound is walked through without
//! sleeping.

use std::time::Duration;

use tankard::{Cache, CacheManager, Clock, Invalidation};

use crate::support::{config, servers, unique_prefix, url};

/// Two nodes with an L1 of `l1_expire = 5`, on one manual clock.
fn nodes(tag: &str) -> (CacheManager, CacheManager, Clock) {
    servers();
    let (url, prefix) = (url(), unique_prefix(tag));
    let clock = Clock::manual(Clock::system().now_ms());
    let node = || {
        let options = [
            ("cache.expire", "60"),
            ("cache.stale", "60"),
            ("cache.l1", "true"),
            ("cache.l1_expire", "5"),
        ];
        CacheManager::with_clock(config(&url, &prefix, &options), clock.clone()).unwrap()
    };
    (node(), node(), clock)
}

async fn read(ns: &Cache, key: &str) -> Option<String> {
    let value = ns.get::<String>(key).await.unwrap();
    value.map(|v| (*v).clone())
}

fn held(ns: &Cache, key: &str) -> Option<String> {
    ns.try_get_fresh::<String>(key).map(|v| (*v).clone())
}

/// `key` written by `a`; `b` reads it and keeps a copy.
async fn held_by_both(a: &Cache, b: &Cache, key: &str, value: &str) {
    a.put(key, value.to_owned()).await.unwrap();
    assert_eq!(read(b, key).await.as_deref(), Some(value));
    assert_eq!(held(b, key).as_deref(), Some(value), "B's copy");
}

#[tokio::test]
async fn without_a_backplane_another_nodes_write_shows_within_l1_expire() {
    let (a_node, b_node, clock) = nodes("l1-write");
    let (a, b) = (a_node.namespace("n"), b_node.namespace("n"));
    held_by_both(&a, &b, "k", "v1").await;

    a.put("k", "v2".to_owned()).await.unwrap();
    assert_eq!(
        read(&a, "k").await.as_deref(),
        Some("v2"),
        "own writes at once"
    );
    assert_eq!(held(&a, "k").as_deref(), Some("v2"));
    assert_eq!(
        read(&b, "k").await.as_deref(),
        Some("v1"),
        "no backplane: B's copy stands"
    );
    clock.advance(Duration::from_millis(4_999));
    assert_eq!(read(&b, "k").await.as_deref(), Some("v1"));
    clock.advance(Duration::from_millis(1));
    assert_eq!(held(&b, "k"), None, "past l1_expire the copy is not served");
    assert_eq!(
        read(&b, "k").await.as_deref(),
        Some("v2"),
        "B reads memcached"
    );
    assert_eq!(held(&b, "k").as_deref(), Some("v2"), "and keeps a new copy");
}

#[tokio::test]
async fn without_a_backplane_removes_clears_and_invalidations_show_within_l1_expire() {
    let (a_node, b_node, clock) = nodes("l1-changes");
    let (a, b) = (a_node.namespace("n"), b_node.namespace("n"));
    held_by_both(&a, &b, "removed", "v").await;
    held_by_both(&a, &b, "cleared", "v").await;
    assert!(a.remove("removed").await.unwrap());
    a.clear().await.unwrap();
    assert_eq!(read(&a, "removed").await, None, "own changes at once");
    assert_eq!(read(&a, "cleared").await, None);
    assert_eq!(read(&b, "removed").await.as_deref(), Some("v"));
    assert_eq!(read(&b, "cleared").await.as_deref(), Some("v"));
    clock.advance(Duration::from_secs(5));
    assert_eq!(read(&b, "removed").await, None);
    assert_eq!(read(&b, "cleared").await, None);

    held_by_both(&a, &b, "soft", "v").await;
    a_node
        .default_region()
        .invalidate(Invalidation::Soft)
        .await
        .unwrap();
    assert_eq!(read(&a, "soft").await, None, "stale at once for A");
    assert_eq!(read(&b, "soft").await.as_deref(), Some("v"));
    clock.advance(Duration::from_secs(5));
    assert_eq!(read(&b, "soft").await, None);
    let stale = b.peek::<String>("soft").await.unwrap();
    assert_eq!(
        stale.map(|(v, fresh)| ((*v).clone(), fresh)),
        Some(("v".to_owned(), false)),
        "memcached serves it stale"
    );

    held_by_both(&a, &b, "hard", "v").await;
    a_node
        .default_region()
        .invalidate(Invalidation::Hard)
        .await
        .unwrap();
    assert_eq!(read(&a, "hard").await, None);
    assert_eq!(read(&b, "hard").await.as_deref(), Some("v"));
    clock.advance(Duration::from_secs(5));
    assert!(b.peek::<String>("hard").await.unwrap().is_none());
}
