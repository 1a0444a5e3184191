//! The file backend's own promises: damaged files are misses that get
//! replaced, a deleted or unusable directory never takes the app down,
//! lock files stay bounded, and two managers (two processes' views) share
//! entries, clears and invalidations.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tankard::{CacheManager, Clock, Config, Invalidation};

use crate::conformance::{START_MS, fixture};

fn entry_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&d) else {
            continue;
        };
        for item in read.flatten() {
            let path = item.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "tke") {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn a_corrupt_or_truncated_file_is_a_miss_and_is_replaced() {
    let f = fixture("file", &[]);
    let data = f.dir.path().join("data");
    let ns = f.manager.namespace("n");
    ns.put("k", "good".to_string()).await.unwrap();
    let files = entry_files(&data);
    assert_eq!(files.len(), 1);
    let path = files[0].clone();
    let bytes = std::fs::read(&path).unwrap();

    for damage in [
        bytes[..bytes.len() / 2].to_vec(),
        Vec::new(),
        b"not a tankard entry at all".to_vec(),
        {
            let mut b = bytes.clone();
            let last = b.len() - 1;
            b[last] ^= 0xff;
            b
        },
    ] {
        std::fs::write(&path, &damage).unwrap();
        assert!(ns.get::<String>("k").await.unwrap().is_none());
        let v = ns
            .get_or_create("k", || async { "fresh".to_string() })
            .await
            .unwrap();
        assert_eq!(*v, "fresh");
        assert_ne!(
            std::fs::read(&path).unwrap(),
            damage,
            "the damaged file was replaced"
        );
    }
    assert!(f.manager.default_region().stats().decode_errors >= 4);
}

#[tokio::test]
async fn a_deleted_data_dir_is_recreated_on_the_next_write() {
    let f = fixture("file", &[]);
    let ns = f.manager.namespace("n");
    ns.put("k", 1u8).await.unwrap();
    std::fs::remove_dir_all(f.dir.path()).unwrap();
    assert!(ns.get::<u8>("k").await.unwrap().is_none());
    let v = ns.get_or_create("k", || async { 2u8 }).await.unwrap();
    assert_eq!(*v, 2);
    assert_eq!(*ns.get::<u8>("k").await.unwrap().unwrap(), 2);
    assert_eq!(f.manager.default_region().stats().backend_errors, 0);
}

#[tokio::test]
async fn an_unusable_data_dir_is_bypassed_or_reported() {
    // A directory below a regular file can never be created, even by root.
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let bad = blocker.join("data").display().to_string();
    let manager = CacheManager::new(
        Config::from_flat([("cache.type", "file"), ("cache.data_dir", bad.as_str())]).unwrap(),
    )
    .unwrap();
    let ns = manager.namespace("n");
    for _ in 0..2 {
        let v = ns.get_or_create("k", || async { 5u8 }).await.unwrap();
        assert_eq!(*v, 5, "bypass: the creator's value is returned");
    }
    let stats = manager.default_region().stats();
    assert_eq!(stats.creator_calls, 2);
    assert!(stats.backend_errors >= 2);

    let strict = CacheManager::new(
        Config::from_flat([
            ("cache.type", "file"),
            ("cache.data_dir", bad.as_str()),
            ("cache.on_backend_error", "error"),
        ])
        .unwrap(),
    )
    .unwrap();
    let err = strict
        .namespace("n")
        .get_or_create("k", || async { 5u8 })
        .await
        .unwrap_err();
    assert!(err.is_backend());
    assert!(err.to_string().contains("cache.data_dir"), "{err}");
}

#[tokio::test]
async fn lock_files_do_not_grow_with_keys() {
    let f = fixture("file", &[]);
    let ns = f.manager.namespace("n");
    for i in 0..500 {
        ns.get_or_create(&format!("key-{i}"), || async move { i })
            .await
            .unwrap();
    }
    let locks = std::fs::read_dir(f.dir.path().join("lock"))
        .unwrap()
        .count();
    assert!(locks <= 64, "{locks} lock files for 500 keys");
}

#[tokio::test]
async fn purge_removes_only_dead_entries() {
    let f = fixture("file", &[("cache.expire", "10"), ("cache.stale", "10")]);
    let data = f.dir.path().join("data");
    let ns = f.manager.namespace("n");
    ns.put("old", 1u8).await.unwrap();
    f.clock.advance(Duration::from_secs(15));
    ns.put("new", 2u8).await.unwrap();
    std::fs::write(data.join("ab.tke"), b"junk").unwrap();
    f.clock.advance(Duration::from_secs(6));
    // "old" is past expire + stale; "new" is still fresh; junk is dead.
    assert_eq!(f.manager.default_region().purge_expired().await.unwrap(), 2);
    assert_eq!(entry_files(&data).len(), 1);
    assert_eq!(*ns.get::<u8>("new").await.unwrap().unwrap(), 2);
    let usage = f.manager.default_region().usage().await.unwrap();
    assert_eq!(usage.entries, Some(1));
}

#[tokio::test]
async fn entries_written_with_another_secret_are_misses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let manager = |secret: &str| {
        CacheManager::new(
            Config::from_flat([
                ("cache.type", "file"),
                ("cache.data_dir", data.as_str()),
                ("cache.secret", secret),
            ])
            .unwrap(),
        )
        .unwrap()
    };
    let (a, b) = (manager("one"), manager("two"));
    a.namespace("n").put("k", 1u8).await.unwrap();
    assert_eq!(*a.namespace("n").get::<u8>("k").await.unwrap().unwrap(), 1);
    assert!(b.namespace("n").get::<u8>("k").await.unwrap().is_none());
    assert_eq!(b.default_region().stats().decode_errors, 1);
}

#[tokio::test]
async fn two_managers_share_entries_clears_and_invalidations() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let open = || {
        let config = Config::from_flat([
            ("cache.type", "file"),
            ("cache.data_dir", data.as_str()),
            ("cache.stale", "60"),
        ])
        .unwrap();
        CacheManager::with_clock(config, Clock::manual(START_MS)).unwrap()
    };
    let (one, two) = (open(), open());
    let (n1, n2) = (one.namespace("n"), two.namespace("n"));
    n1.put("k", 1u8).await.unwrap();
    assert_eq!(*n2.get::<u8>("k").await.unwrap().unwrap(), 1);
    n2.clear().await.unwrap();
    assert!(
        n1.get::<u8>("k").await.unwrap().is_none(),
        "a clear elsewhere is seen here"
    );
    n1.put("k", 2u8).await.unwrap();
    two.default_region()
        .invalidate(Invalidation::Soft)
        .await
        .unwrap();
    assert_eq!(
        n1.peek::<u8>("k")
            .await
            .unwrap()
            .map(|(v, fresh)| (*v, fresh)),
        Some((2, false))
    );
    two.default_region()
        .invalidate(Invalidation::Hard)
        .await
        .unwrap();
    assert!(n1.peek::<u8>("k").await.unwrap().is_none());
    // Other namespaces sharing the directory are untouched by a clear.
    one.namespace("other").put("k", 3u8).await.unwrap();
    n2.clear().await.unwrap();
    assert_eq!(
        *two.namespace("other")
            .get::<u8>("k")
            .await
            .unwrap()
            .unwrap(),
        3
    );
}

/// A manager on the fixture's directories, as a second part of the same
/// process (another region, another library) would open them.
fn same_dirs(f: &crate::conformance::Fixture) -> CacheManager {
    let at = |dir: &str| f.dir.path().join(dir).display().to_string();
    let config = Config::from_flat([
        ("cache.type", "file".to_owned()),
        ("cache.data_dir", at("data")),
        ("cache.lock_dir", at("lock")),
    ])
    .unwrap();
    CacheManager::with_clock(config, f.clock.clone()).unwrap()
}

/// DESIGN §5 rule 7: two keys share one of the 64 lock stripes about one
/// time in 64, and a creator that calls `get_or_create` on a key of its own
/// stripe must not wait on the stripe its own process holds (it waited the
/// whole `wait_timeout`, 60 s by default, before stripes were reentrant),
/// whether that key is in its own region or in another manager's.
#[tokio::test]
async fn a_creator_may_call_a_key_on_its_own_stripe_without_waiting() {
    let f = fixture("file", &[]);
    let other = same_dirs(&f);
    let ns = f.manager.namespace("n");
    let elsewhere = other.namespace("n");
    let nested = async {
        for i in 0..300u64 {
            let (inner, elsewhere) = (ns.clone(), elsewhere.clone());
            let outer = ns
                .get_or_create(&format!("a{i}"), || async move {
                    let b = inner
                        .get_or_create(&format!("b{i}"), || async move { i * 2 })
                        .await
                        .unwrap();
                    let c = elsewhere
                        .get_or_create(&format!("c{i}"), || async move { i * 3 })
                        .await
                        .unwrap();
                    *b + *c
                })
                .await
                .unwrap();
            assert_eq!(*outer, i * 5);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), nested)
        .await
        .expect("300 nested calls within 20 s (the default wait_timeout is 60 s)");
    let stats = f.manager.default_region().stats();
    assert_eq!(stats.creator_calls, 600);
    assert_eq!(stats.backend_errors, 0);
    assert_eq!(other.default_region().stats().creator_calls, 300);
}

/// Reentrant stripes still hold one key once per process: two managers of
/// one process (each with its own single-flight map) that miss the same
/// key run one creator, the second waiting for the first's value.
#[tokio::test(start_paused = true)]
async fn two_managers_in_one_process_create_a_key_once() {
    let f = fixture("file", &[]);
    let other = same_dirs(&f);
    let runs = Arc::new(AtomicUsize::new(0));
    let call = |ns: tankard::Cache| {
        let runs = runs.clone();
        async move {
            ns.get_or_create("k", || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                // Paused time: this lets the other caller reach the lock.
                tokio::time::sleep(Duration::from_secs(1)).await;
                7u8
            })
            .await
            .unwrap()
        }
    };
    let (one, two) = tokio::join!(call(f.manager.namespace("n")), call(other.namespace("n")));
    assert_eq!((*one, *two), (7, 7));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one creator for one key");
}
