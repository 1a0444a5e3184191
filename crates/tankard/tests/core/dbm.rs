//! The LMDB store's own promises (`type = dbm`): options checked with the
//! key named, a full map evicts expired entries and then says it is full,
//! damaged and oversized rows are misses, `gc` and `stats`, and several
//! managers of one process share one environment.

#[cfg(feature = "dbm")]
use std::path::{Path, PathBuf};
#[cfg(feature = "dbm")]
use std::time::Duration;

use tankard::Config;
#[cfg(feature = "dbm")]
use tankard::{CacheManager, Clock, Invalidation};

#[cfg(feature = "dbm")]
use crate::conformance::{START_MS, fixture};

fn err(result: tankard::Result<Config>) -> String {
    result.unwrap_err().to_string()
}

#[test]
fn options_are_checked_with_the_key_named() {
    assert_eq!(
        err(Config::from_flat([
            ("cache.regions", "r"),
            ("cache.r.type", "dbm")
        ])),
        "cache.r.data_dir: missing; the dbm backend needs data_dir = \"<directory>\" \
         (its LMDB environment goes there)"
    );
    assert_eq!(
        err(Config::from_flat([
            ("cache.regions", "r"),
            ("cache.r.type", "dbm"),
            ("cache.r.data_dir", "/tmp/x"),
            ("cache.r.max_bytes", "4096"),
        ])),
        "cache.r.max_bytes: \"4096\" is too small for an LMDB map (max_bytes is the dbm \
         region's map size); expected at least 262144 (256 KiB); the default is 1 GiB"
    );
    let built = Config::from_flat([("cache.type", "dbm"), ("cache.data_dir", "/tmp/x")]);
    if cfg!(feature = "dbm") {
        built.unwrap();
    } else {
        assert_eq!(
            err(built),
            "cache.type: \"dbm\" needs the cargo feature \"dbm\" of tankard; \
             enable it with `tankard = { features = [\"dbm\"] }`"
        );
    }
}

#[cfg(feature = "dbm")]
fn environments(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data)
        .unwrap()
        .flatten()
        .map(|item| item.path())
        .filter(|path| path.extension().is_some_and(|e| e == "lmdb"))
        .collect()
}

#[cfg(feature = "dbm")]
#[tokio::test]
async fn one_environment_per_region_in_data_dir() {
    let f = fixture(
        "dbm",
        &[("cache.regions", "a, b"), ("cache.b.prefix", "other/")],
    );
    for region in ["a", "b"] {
        f.manager
            .region(region)
            .unwrap()
            .namespace("n")
            .put("k", region.to_string())
            .await
            .unwrap();
    }
    let data = f.dir.path().join("data");
    let envs = environments(&data);
    assert_eq!(envs.len(), 2, "{envs:?}");
    for env in envs {
        assert!(env.join("data.mdb").is_file() && env.join("lock.mdb").is_file());
    }
    for region in ["a", "b"] {
        let ns = f.manager.region(region).unwrap().namespace("n");
        assert_eq!(*ns.get::<String>("k").await.unwrap().unwrap(), region);
    }
}

/// A value of about 16 KiB with a marker the test can find on disk.
#[cfg(feature = "dbm")]
fn big(marker: &str) -> String {
    format!("{marker}{}", "x".repeat(16 * 1024))
}

#[cfg(feature = "dbm")]
#[tokio::test]
async fn a_full_map_evicts_expired_entries_then_says_it_is_full() {
    let f = fixture(
        "dbm",
        &[
            ("cache.max_bytes", "262144"),
            ("cache.expire", "10"),
            ("cache.stale", "0"),
            ("cache.on_backend_error", "error"),
        ],
    );
    let ns = f.manager.namespace("n");
    // Fresh entries fill the map: the write that does not fit fails and
    // says why, and nothing crashes.
    let mut stored = 0;
    let full = loop {
        match ns.put(&format!("old-{stored}"), big("old")).await {
            Ok(()) => stored += 1,
            Err(err) => break err,
        }
        assert!(stored < 100, "256 KiB never filled up");
    };
    assert!(stored >= 4, "only {stored} entries of 16 KiB fit");
    assert!(full.is_backend(), "{full}");
    let message = full.to_string();
    assert!(
        message.contains("is full") && message.contains("cache.max_bytes"),
        "{message}"
    );
    // Every one of them still reads.
    for i in 0..stored {
        assert!(
            ns.get::<String>(&format!("old-{i}"))
                .await
                .unwrap()
                .is_some()
        );
    }
    // A full map still takes an invalidation and clears (small writes).
    f.manager
        .default_region()
        .invalidate(Invalidation::Soft)
        .await
        .unwrap();
    f.manager.namespace("other").clear().await.unwrap();
    ns.clear().await.unwrap();
    assert!(ns.get::<String>("old-0").await.unwrap().is_none());

    // Once they have expired, a write that finds the map full evicts them
    // and is stored. (Not quite as many fit again at once: LMDB reuses the
    // pages a commit frees only two commits later, and an entry of several
    // pages needs a run of free ones.)
    f.clock.advance(Duration::from_secs(11));
    let mut fresh = 0;
    while fresh < stored {
        match ns.put(&format!("new-{fresh}"), big("new")).await {
            Ok(()) => fresh += 1,
            Err(err) => {
                assert!(err.to_string().contains("is full"), "{err}");
                break;
            }
        }
    }
    assert!(fresh >= stored / 2, "{fresh} of {stored} fit again");
    for i in 0..fresh {
        assert!(
            ns.get::<String>(&format!("new-{i}"))
                .await
                .unwrap()
                .is_some()
        );
    }
    let usage = f.manager.default_region().usage().await.unwrap();
    assert_eq!(
        usage.entries,
        Some(fresh as u64),
        "every expired entry was evicted"
    );
}

#[cfg(feature = "dbm")]
#[tokio::test]
async fn a_full_map_does_not_take_a_bypassing_app_down() {
    let f = fixture("dbm", &[("cache.max_bytes", "262144")]);
    let ns = f.manager.namespace("n");
    for i in 0..40 {
        let v = ns
            .get_or_create(&format!("k-{i}"), || async move { big(&i.to_string()) })
            .await
            .unwrap();
        assert!(v.starts_with(&i.to_string()));
    }
    assert!(f.manager.default_region().stats().backend_errors > 0);
}

/// Overwrites every copy of `marker` in the environment's data file (no
/// process of the test has it open): the row is still there, its bytes
/// are not what was written.
#[cfg(feature = "dbm")]
fn damage_on_disk(data: &Path, marker: &[u8]) -> usize {
    let envs = environments(data);
    let file = envs[0].join("data.mdb");
    let mut bytes = std::fs::read(&file).unwrap();
    let mut found = 0;
    let mut at = 0;
    while let Some(offset) = bytes[at..]
        .windows(marker.len())
        .position(|window| window == marker)
    {
        let start = at + offset;
        bytes[start] ^= 0x20;
        found += 1;
        at = start + marker.len();
    }
    std::fs::write(&file, bytes).unwrap();
    found
}

#[cfg(feature = "dbm")]
#[tokio::test]
async fn a_damaged_row_is_a_miss_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = || {
        Config::from_flat([
            ("cache.type", "dbm"),
            ("cache.data_dir", data.display().to_string().as_str()),
        ])
        .unwrap()
    };
    {
        let manager = CacheManager::new(config()).unwrap();
        manager
            .namespace("n")
            .put("k", "marker-value-1234".to_string())
            .await
            .unwrap();
    } // the last manager closes the environment
    assert!(damage_on_disk(&data, b"marker-value-1234") >= 1);

    let manager = CacheManager::new(config()).unwrap();
    let ns = manager.namespace("n");
    assert!(ns.get::<String>("k").await.unwrap().is_none());
    assert_eq!(manager.default_region().stats().decode_errors, 1);
    let v = ns
        .get_or_create("k", || async { "fresh".to_string() })
        .await
        .unwrap();
    assert_eq!(*v, "fresh");
    assert_eq!(*ns.get::<String>("k").await.unwrap().unwrap(), "fresh");
    // gc removes a damaged row like an expired one.
    ns.put("other", "marker-value-5678".to_string())
        .await
        .unwrap();
    drop(ns);
    drop(manager);
    assert!(damage_on_disk(&data, b"marker-value-5678") >= 1);
    let manager = CacheManager::new(config()).unwrap();
    let purged = manager.default_region().purge_expired().await.unwrap();
    assert_eq!(purged.entries, 1);
    assert_eq!(
        manager.default_region().usage().await.unwrap().entries,
        Some(1)
    );
}

#[cfg(feature = "dbm")]
#[tokio::test]
async fn an_entry_over_max_entry_bytes_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let manager = |max: &str| {
        CacheManager::new(
            Config::from_flat([
                ("cache.type", "dbm"),
                ("cache.data_dir", data.as_str()),
                ("cache.max_entry_bytes", max),
            ])
            .unwrap(),
        )
        .unwrap()
    };
    // Two managers of one process: one environment, two limits.
    let (large, small) = (manager("1048576"), manager("4096"));
    large.namespace("n").put("k", big("big")).await.unwrap();
    assert!(
        large
            .namespace("n")
            .get::<String>("k")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        small
            .namespace("n")
            .get::<String>("k")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(small.default_region().stats().decode_errors, 1);
    // Storing one is refused, saying so.
    let err = small
        .namespace("n")
        .put("k2", big("big"))
        .await
        .unwrap_err();
    assert!(err.is_too_large(), "{err}");
    // And gc takes it for dead where it is oversized.
    assert_eq!(
        small
            .default_region()
            .purge_expired()
            .await
            .unwrap()
            .entries,
        1
    );
}

#[cfg(feature = "dbm")]
#[tokio::test]
async fn purge_removes_only_dead_entries_and_usage_counts_them() {
    let f = fixture("dbm", &[("cache.expire", "10"), ("cache.stale", "10")]);
    let ns = f.manager.namespace("n");
    ns.put("old", 1u8).await.unwrap();
    f.clock.advance(Duration::from_secs(15));
    ns.put("new", 2u8).await.unwrap();
    let usage = f.manager.default_region().usage().await.unwrap();
    assert_eq!(usage.entries, Some(2));
    assert!(usage.bytes.unwrap() > 0);
    f.clock.advance(Duration::from_secs(6));
    // "old" is past expire + stale; "new" is still fresh.
    let region = f.manager.default_region();
    assert_eq!(region.purge_expired().await.unwrap().entries, 1);
    assert_eq!(*ns.get::<u8>("new").await.unwrap().unwrap(), 2);
    assert_eq!(region.usage().await.unwrap().entries, Some(1));
}

#[cfg(feature = "dbm")]
#[tokio::test]
async fn fail_safe_entries_outlive_their_stale_window_in_gc() {
    let f = fixture(
        "dbm",
        &[
            ("cache.expire", "10"),
            ("cache.stale", "0"),
            ("cache.fail_safe", "60"),
        ],
    );
    let ns = f.manager.namespace("n");
    ns.put("k", 1u8).await.unwrap();
    f.clock.advance(Duration::from_secs(30));
    let region = f.manager.default_region();
    assert_eq!(region.purge_expired().await.unwrap().entries, 0);
    f.clock.advance(Duration::from_secs(41));
    assert_eq!(region.purge_expired().await.unwrap().entries, 1);
}

#[cfg(feature = "dbm")]
#[tokio::test]
async fn managers_of_one_process_share_one_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let open = || {
        let config = Config::from_flat([
            ("cache.type", "dbm"),
            ("cache.data_dir", data.as_str()),
            ("cache.stale", "60"),
        ])
        .unwrap();
        CacheManager::with_clock(config, Clock::manual(START_MS)).unwrap()
    };
    let (one, two) = (open(), open());
    let (n1, n2) = (one.namespace("n"), two.namespace("n"));
    n1.put("k", 1u32).await.unwrap();
    assert_eq!(*n2.get::<u32>("k").await.unwrap().unwrap(), 1);
    n2.clear().await.unwrap();
    assert!(n1.get::<u32>("k").await.unwrap().is_none());
    n1.put("k", 2u32).await.unwrap();
    two.default_region()
        .invalidate(Invalidation::Hard)
        .await
        .unwrap();
    assert!(n1.get::<u32>("k").await.unwrap().is_none());
    n1.put("k", 3u32).await.unwrap();
    two.default_region()
        .invalidate(Invalidation::Soft)
        .await
        .unwrap();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    // Soft-invalidated: served stale while one caller regenerates.
    let v = n1
        .get_or_create("k", || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            4u32
        })
        .await
        .unwrap();
    assert_eq!(*v, 4, "the regenerating caller gets the new value");
    assert_eq!(calls.into_inner(), 1);
    // Dropping one manager leaves the other's environment open, and the
    // environment opens again once both are gone.
    drop((n1, one));
    assert_eq!(*n2.get::<u32>("k").await.unwrap().unwrap(), 4);
    drop((n2, two));
    let three = open();
    assert_eq!(
        *three.namespace("n").get::<u32>("k").await.unwrap().unwrap(),
        4
    );
}

#[cfg(feature = "dbm")]
#[tokio::test]
async fn an_unusable_data_dir_is_bypassed_or_reported() {
    crate::file::unusable_data_dir_is_bypassed_or_reported("dbm").await;
}

/// Stripes are reentrant on dbm too (DESIGN §5 rule 7): the same
/// `flock` stripes as the file store.
#[cfg(feature = "dbm")]
#[tokio::test]
async fn a_creator_may_call_a_key_on_its_own_stripe_without_waiting() {
    crate::file::creator_calls_a_key_on_its_own_stripe("dbm").await;
}

#[cfg(feature = "dbm")]
#[tokio::test(start_paused = true)]
async fn two_managers_in_one_process_create_a_key_once() {
    crate::file::two_managers_create_a_key_once("dbm").await;
}
