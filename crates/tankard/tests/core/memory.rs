//! The memory backend's own promises: it is bounded, by entries or bytes,
//! and hands out the stored `Arc` itself.

use std::sync::Arc;

use crate::conformance::fixture;

#[tokio::test]
async fn bounded_by_entries() {
    let f = fixture("memory", &[("cache.max_entries", "100")]);
    let ns = f.manager.namespace("n");
    for i in 0..2_000u32 {
        ns.put(&i.to_string(), i).await.unwrap();
    }
    let entries = f
        .manager
        .default_region()
        .usage()
        .await
        .unwrap()
        .entries
        .unwrap();
    assert!(entries <= 110, "{entries} entries in a cache of 100");
    assert!(
        entries >= 50,
        "{entries}: the cache still holds recent entries"
    );
}

#[tokio::test]
async fn bounded_by_bytes() {
    let f = fixture("memory", &[("cache.max_bytes", "100000")]);
    let ns = f.manager.namespace("n");
    for i in 0..1_000u32 {
        ns.put(&i.to_string(), vec![7u8; 1_000]).await.unwrap();
    }
    let usage = f.manager.default_region().usage().await.unwrap();
    let bytes = usage.bytes.unwrap();
    assert!(bytes <= 110_000, "{bytes} bytes in a cache of 100000");
    assert!(usage.entries.unwrap() < 110);
}

#[tokio::test]
async fn unbounded_is_impossible() {
    let f = fixture("memory", &[]);
    assert_eq!(
        f.manager.default_region().options().max_entries,
        Some(10_000)
    );
}

#[tokio::test]
async fn values_are_shared_not_copied() {
    let f = fixture("memory", &[]);
    let ns = f.manager.namespace("n");
    let value = Arc::new(vec![1u8; 4096]);
    ns.put_arc("k", value.clone()).await.unwrap();
    let hit = ns
        .get_or_create::<Vec<u8>, _, _>("k", || async { unreachable!() })
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&hit, &value));
    assert!(Arc::ptr_eq(
        &ns.try_get_fresh::<Vec<u8>>("k").unwrap(),
        &value
    ));
}
